"""SAGE's fusion network (Wu et al., "Every SAM drop counts", CVPR 2025), as released.

SAGE trains a large SAM-guided teacher and distils it into a small sub-network; only the
sub-network runs at test time (the authors' ``test.py`` with ``model_sub/model.py``). It is
a two-level U-Net on the concatenated visible Y and infrared: five stages of three
conv3x3-BatchNorm-LeakyReLU, two 2x2 max pools, bilinear upsampling to the skip's size,
1x1 conv-BN-LeakyReLU merges and a conv3x3 + tanh head.

The authors' script reads both images with ``cv2.imread``, feeds the visible image's
8-bit OpenCV YCrCb luminance and the OpenCV gray infrared (each / 255), puts the fused Y
together with the visible image's 8-bit OpenCV Cr/Cb, converts to RGB with
``YCrCb2RGB`` and saves with ``torchvision.utils.save_image`` (clamped, rounded). A
gray visible image is three-channel after ``cv2.imread``, so the authors write an almost
gray RGB image (neutral chroma 128/255); occo writes the gray fused Y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.peers import cv2color
from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    fold_conv_batchnorm,
    register_network,
)

# occo's stage names -> the release's (model_sub/model.py).
_RELEASE_NAMES = {
    "enc1": "module1",
    "enc2": "module2",
    "enc3": "module3",
    "merge4": "adjust_channels4",
    "dec4": "module4",
    "merge5": "adjust_channels5",
    "dec5": "module5",
    "head": "final_decoder",
}


@dataclass(frozen=True)
class SAGEConfig(JsonConfig):
    """SAGE sub-network settings; the defaults are the released network's."""

    dim: int = 32
    """Channels of every stage."""
    negative_slope: float = 0.01
    """Slope of the LeakyReLUs."""

    def __post_init__(self) -> None:
        if int(self.dim) < 1:
            raise ValueError(f"SAGEConfig.dim must be positive, got {self.dim}")
        object.__setattr__(self, "dim", int(self.dim))


def _stage(cin: int, dim: int, slope: float, convs: int = 3, kernel: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(cin if i == 0 else dim, dim, kernel, padding=kernel // 2),
            nn.BatchNorm2d(dim),
            nn.LeakyReLU(slope),
        ]
    return nn.Sequential(*layers)


class SAGE(nn.Module):
    """SAGE's test-time sub-network; ``forward`` returns its tanh output (nominally
    [-1, 1]; the authors use it directly as the fused Y).

    Args:
        config: widths (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "sage"

    def __init__(self, config: SAGEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SAGEConfig()
        dim, slope = config.dim, config.negative_slope
        self.enc1 = _stage(2, dim, slope)
        self.enc2 = _stage(dim, dim, slope)
        self.enc3 = _stage(dim, dim, slope)
        self.merge4 = _stage(2 * dim, dim, slope, convs=1, kernel=1)
        self.dec4 = _stage(dim, dim, slope)
        self.merge5 = _stage(2 * dim, dim, slope, convs=1, kernel=1)
        self.dec5 = _stage(dim, dim, slope)
        self.head = nn.Sequential(nn.Conv2d(dim, 1, 3, padding=1), nn.Tanh())

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        x1 = self.enc1(torch.cat((vi_y, ir), 1))  # (B, dim, H, W)
        x2 = self.enc2(F.max_pool2d(x1, 2))  # (B, dim, H//2, W//2)
        x3 = self.enc3(F.max_pool2d(x2, 2))  # (B, dim, H//4, W//4)
        up = F.interpolate(x3, size=x2.shape[-2:], mode="bilinear", align_corners=False)
        x4 = self.dec4(self.merge4(torch.cat((up, x2), 1)))
        up = F.interpolate(x4, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        x5 = self.dec5(self.merge5(torch.cat((up, x1), 1)))
        return self.head(x5)  # (B, 1, H, W)


def _finish(raw: Tensor, config: SAGEConfig) -> Tensor:
    # The tanh output is the fused Y as is; saving clamps it.
    return raw.clamp(0, 1)


def _compose(fused_y: Tensor, vi: Tensor) -> Tensor:
    """The authors' colour: fused Y with the visible image's 8-bit OpenCV Cr/Cb, their
    float YCrCb -> RGB, clamped. A gray visible image stays gray (occo's output)."""
    if vi.shape[1] == 1:
        return fused_y
    cr, cb = cv2color.ycrcb_chroma(vi)
    return cv2color.ycrcb_to_rgb(fused_y, cr, cb)


def _read_release(path):
    loaded = load_torch_release(path, "SAGE")
    state = tensor_dict(loaded, path, "SAGE")
    inverse = {release: ours for ours, release in _RELEASE_NAMES.items()}

    def rule(key: str) -> str:
        head, _, rest = key.partition(".")
        return f"{inverse.get(head, head)}.{rest}"

    config = SAGEConfig()
    return config, fit_state(SAGE(config), rename(state, rule), path, "SAGE")


def _memory_scale(config: SAGEConfig, element_size: int) -> float:
    # Planes per level (dim at full, half and quarter size) against FIFN's 57.5.
    return config.dim * (1 + 1 / 4 + 1 / 16) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="sage",
        config_class=SAGEConfig,
        build=SAGE,
        finish=_finish,
        luminance=cv2color.ycrcb_y,
        compose=_compose,
        # Local in principle, but the bilinear upsampling to the skip's size uses the scale
        # in/out of the whole image's (odd) sizes, so windows would not match the whole
        # image: tiles are refused.
        receptive_margin=lambda config: None,
        size_multiple=lambda config: 4,
        min_size=lambda config: 4,
        fold=fold_conv_batchnorm,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/RollingPlain/SAGE_IVIF/raw/"
            "377fdbef6b8b6ccbd1139358ad66bb41ea084dc1/checkpoints/checkpoints.pt",
            sha256="ecfde477ca4cd65401f207d5dc91ce6c475a49891d768dbdb7a66366255ee836",
            filename="checkpoints.pt",
            licence="MIT (SAGE_IVIF, (c) 2025 Guanyao Wu)",
            trained_on="FMB (distilled from a SAM ViT-B + X-Decoder guided teacher)",
        ),
        info=MethodInfo(
            title="Every SAM drop counts: embracing semantic priors for multi-modality "
            "image fusion and beyond (SAGE, distilled sub-network)",
            venue="CVPR 2025",
            code_url="https://github.com/RollingPlain/SAGE_IVIF",
            code_licence="MIT",
            color="fuses visible Y (OpenCV 8-bit YCrCb); the visible image's OpenCV Cr/Cb "
            "put back, as the authors save it",
            authors_output="colour; a gray visible image gives a near-gray RGB file "
            "(neutral chroma 128/255); occo writes gray",
        ),
    )
)
