"""LRRNet (Li et al., "LRRNet: a novel representation learning guided fusion network for
infrared and visible images", TPAMI 2023), as its authors released it.

Each image goes through its own learned low-rank representation encoder: a 3x3 conv to
``2n`` codes, soft-thresholded, then ``blocks`` unrolled LISTA-style updates
``Z <- soft(lam_z Z + D^T (x - D Z), theta)`` (``D``, ``D^T``: 3x3 convs). The first
``n`` codes are the low-rank part, the rest the sparse part; each part is mapped back to
an image by a 3x3 conv, the two modalities' low-rank maps (and sparse maps) are merged
by a 3x3 conv on their concatenation (``fusion="cat"``, the release) or on their sum
(``"add"``), and the fused image is the sum of the two. Every conv pads by reflection.

The authors' test script (``testing_fusion_lrr.py``) reads both images with OpenCV as
gray (a colour visible image becomes OpenCV gray), min-max normalises each input image,
calls ``model(ir, vi)`` and saves the output min-max normalised to 0..255, truncated to
uint8 (occo rounds: about 0.5 grey level). It writes gray for a colour visible image;
occo's default puts the visible chroma back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from occo.models.peers import cv2color
from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)

# The release's epsilon of its min-max normalisations, on 0..255 images.
_EPSILON = 1e-5


@dataclass(frozen=True)
class LRRNetConfig(JsonConfig):
    """LRRNet settings; the defaults are the released network's (``LRR_NET(s=3, n=128,
    channel=1, stride=1, num_block=4, fusion_type='cat')``)."""

    filters: int = 128
    """``n``: codes per part (the encoders have ``2n``: low-rank and sparse)."""
    kernel: int = 3
    """``s``: size of every conv kernel (odd)."""
    blocks: int = 4
    """Unrolled LRR updates per encoder."""
    fusion: str = "cat"
    """How the decoder merges the modalities' maps: "cat" (concatenate) or "add"."""

    def __post_init__(self) -> None:
        for name in ("filters", "kernel", "blocks"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.filters < 1 or self.blocks < 0 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(
                "LRRNetConfig needs filters >= 1, blocks >= 0 and an odd kernel, got "
                f"{self.filters}, {self.blocks}, {self.kernel}"
            )
        if self.fusion not in ("cat", "add"):
            raise ValueError(f"LRRNetConfig.fusion must be 'cat' or 'add', got {self.fusion!r}")


class _Conv(nn.Conv2d):
    """A conv that pads by reflection (as every conv of the release does)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2, padding_mode="reflect")


def _soft(x: Tensor, threshold: Tensor) -> Tensor:
    """sign(x) max(|x| - threshold, 0), one threshold per channel ((1, C))."""
    return torch.sign(x) * (x.abs() - threshold.view(1, -1, 1, 1)).clamp_min(0)


class _Update(nn.Module):
    """One unrolled update ``soft(lam_z Z + D^T (x - D Z), theta)``."""

    def __init__(self, codes: int, kernel: int) -> None:
        super().__init__()
        self.to_image = _Conv(codes, 1, kernel)  # D
        self.to_codes = _Conv(1, codes, kernel)  # D^T

    def forward(self, x: Tensor, z: Tensor, theta: Tensor, lam_z: Tensor) -> Tensor:
        return _soft(lam_z * z + self.to_codes(x - self.to_image(z)), theta)


class _Encoder(nn.Module):
    """Learned low-rank representation of one image: (low-rank, sparse) codes."""

    def __init__(self, config: LRRNetConfig) -> None:
        super().__init__()
        codes = 2 * config.filters
        self.filters = config.filters
        self.stem = _Conv(1, codes, config.kernel)
        self.theta = nn.Parameter(torch.rand(1, codes))
        self.lam_z = nn.Parameter(torch.rand(1, 1))
        self.updates = nn.ModuleList(_Update(codes, config.kernel) for _ in range(config.blocks))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = _soft(self.stem(x), self.theta)
        for update in self.updates:
            z = update(x, z, self.theta, self.lam_z)
        return z[:, : self.filters], z[:, self.filters :]


class _Decoder(nn.Module):
    def __init__(self, config: LRRNetConfig) -> None:
        super().__init__()
        n, k = config.filters, config.kernel
        self.cat = config.fusion == "cat"
        self.low_ir, self.sparse_ir = _Conv(n, 1, k), _Conv(n, 1, k)
        self.low_vi, self.sparse_vi = _Conv(n, 1, k), _Conv(n, 1, k)
        merged = 2 if self.cat else 1
        self.merge_low, self.merge_sparse = _Conv(merged, 1, k), _Conv(merged, 1, k)

    def _merge(self, conv: nn.Module, a: Tensor, b: Tensor) -> Tensor:
        return conv(torch.cat((a, b), 1) if self.cat else a + b)

    def forward(self, low_ir: Tensor, sparse_ir: Tensor, low_vi: Tensor, sparse_vi: Tensor) -> Tensor:
        low = self._merge(self.merge_low, self.low_ir(low_ir), self.low_vi(low_vi))
        sparse = self._merge(self.merge_sparse, self.sparse_ir(sparse_ir), self.sparse_vi(sparse_vi))
        return low + sparse


def _normalize_input(x: Tensor) -> Tensor:
    # The release's utils.normalize_tensor on 0..255 images: (x - min) / (max - min + 1e-5).
    flat = x.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo + _EPSILON / 255)


class LRRNet(nn.Module):
    """LRRNet; ``forward`` min-max normalises each input image (as the authors' test
    does) and returns the decoder's raw fused map (``finish`` min-max normalises it).

    Args:
        config: the network's sizes (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "lrrnet"

    def __init__(self, config: LRRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LRRNetConfig()
        self.encoder_ir = _Encoder(config)
        self.encoder_vi = _Encoder(config)
        self.decoder = _Decoder(config)

    def fuse_normalized(self, vi: Tensor, ir: Tensor) -> Tensor:
        """The network on already normalised inputs (local: tiles of it are exact)."""
        low_ir, sparse_ir = self.encoder_ir(ir)
        low_vi, sparse_vi = self.encoder_vi(vi)
        return self.decoder(low_ir, sparse_ir, low_vi, sparse_vi)  # (B, 1, H, W)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        return self.fuse_normalized(_normalize_input(vi_y), _normalize_input(ir))


def _finish(raw: Tensor, config: LRRNetConfig) -> Tensor:
    # The release's save_image: (x - min) / (max - min + 1e-5) per image.
    flat = raw.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1, 1)
    return ((raw - lo) / (hi - lo + _EPSILON)).clamp(0, 1)


def _margin(config: LRRNetConfig) -> int:
    # Stem + two convs per update, then the decoder's part conv and merge conv.
    return (config.kernel // 2) * (1 + 2 * config.blocks + 2)


def _tiled_forward(model: LRRNet, vi_y: Tensor, ir: Tensor, tile: int) -> Tensor:
    # The inputs' min-max is over the whole image; the network after it is local.
    from occo.models.tiling import local_tiled_forward

    return local_tiled_forward(
        model.fuse_normalized, _normalize_input(vi_y), _normalize_input(ir), tile,
        _margin(model.config),
    )


_RELEASE_PARTS = {
    "conv_W00.conv2d": "stem",
    "lamj": "theta",
    "lamz": "lam_z",
    "conv_Wdz.conv2d": "to_image",
    "conv_Wdtz.conv2d": "to_codes",
    "conv_ReZx.conv2d": "low_ir",
    "conv_ReUx.conv2d": "sparse_ir",
    "conv_ReZy.conv2d": "low_vi",
    "conv_ReUy.conv2d": "sparse_vi",
    "conv_ReL.conv2d": "merge_low",
    "conv_ReH.conv2d": "merge_sparse",
}


def _release_to_occo(key: str) -> str:
    # get_ls1 encodes the first argument (infrared), get_ls2 the second (visible).
    key = key.replace("get_ls1.", "encoder_ir.").replace("get_ls2.", "encoder_vi.")
    for release, ours in _RELEASE_PARTS.items():
        key = key.replace(release, ours)
    for i in range(64):
        key = key.replace(f".lrrblock{i}.", f".updates.{i}.")
    return key


def _read_release(path):
    loaded = load_torch_release(path, "LRRNet")
    state = rename(tensor_dict(loaded, path, "LRRNet"), _release_to_occo)
    blocks = len({k.split(".")[2] for k in state if k.startswith("encoder_ir.updates.")})
    stem = state.get("encoder_ir.stem.weight")
    merge = state.get("decoder.merge_low.weight")
    config = LRRNetConfig()
    if stem is not None and merge is not None:
        config = LRRNetConfig(
            filters=stem.shape[0] // 2, kernel=stem.shape[-1], blocks=blocks,
            fusion="cat" if merge.shape[1] == 2 else "add",
        )
    return config, fit_state(LRRNet(config), state, path, "LRRNet")


def _memory_scale(config: LRRNetConfig, element_size: int) -> float:
    # Full-resolution codes: one encoder's finished 2n beside the other's 2n and its
    # update's 2n, against FIFN's 57.5 planes.
    return 6 * config.filters / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="lrrnet",
        config_class=LRRNetConfig,
        build=LRRNet,
        finish=_finish,
        luminance=cv2color.imread_gray,
        authors_color=False,
        receptive_margin=_margin,
        tiled_forward=_tiled_forward,
        min_size=lambda config: config.kernel // 2 + 1,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/hli1221/imagefusion-LRRNet/raw/"
            "e489fc325ea6acb9b7327b1de2c0cc4a09172ba4/model/"
            "final_lrr_net_lam2_1.5_wir_3.0_lam3_gram_2000_epoch_4_block_4.model",
            sha256="1de9dd8dee9b650ce69c74ea53e3b9a6b749222f1059a689aabf28f68ee63e29",
            filename="final_lrr_net_lam2_1.5_wir_3.0_lam3_gram_2000_epoch_4_block_4.model",
            licence="not stated (no LICENSE file)",
            trained_on="KAIST (infrared and visible pairs, 128x128 crops)",
        ),
        info=MethodInfo(
            title="LRRNet: a novel representation learning guided fusion network for "
            "infrared and visible images",
            venue="TPAMI 2023",
            code_url="https://github.com/hli1221/imagefusion-LRRNet",
            code_licence="not stated",
            color="fuses the visible image as OpenCV reads a PNG as gray (libpng, truncated); occo puts the visible "
            "Cb/Cr back",
            authors_output="gray for a colour visible image; uint8 truncated (occo "
            "rounds: about 0.5 grey level)",
        ),
    )
)
