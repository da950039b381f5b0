"""IFCNN (Zhang et al., Information Fusion 2020), as its authors released it.

Each source image goes through ImageNet ResNet-101's first conv (7x7, 64 channels, kept
frozen; stride 1 here) and a 3x3 conv-BN-ReLU, all replicate-padded; the features are
fused element-wise (max for IFCNN-MAX, the infrared-visible model; mean or sum for the
other two files), then a 3x3 conv-BN-ReLU and a 1x1 conv give 3 channels. The authors'
infrared-visible test (``IFCNN_Main.py``, ``IV`` set) feeds both images as 3-channel
[0, 1] tensors (gray replicated; no mean/std normalisation), clamps the output to [0, 1],
truncates to uint8 and saves OpenCV's gray of it. occo feeds the visible luminance
replicated (for a colour visible image the authors would feed its RGB: occo's NetworkSpec
takes one luminance channel) and takes the gray of the 3 output channels with OpenCV's
coefficients.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from occo.models.peers.common import fit_state, load_torch_release, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)

_RULES = ("max", "mean", "sum")
#: cv2.COLOR_RGB2GRAY's weights.
_GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class IFCNNConfig(JsonConfig):
    """IFCNN's fusion rule and width; the defaults are IFCNN-MAX's."""

    rule: str = "max"
    """Element-wise fusion of the two feature maps: "max" (IFCNN-MAX, for infrared-visible),
    "mean" (IFCNN-MEAN) or "sum" (IFCNN-SUM); it must match the weight file."""
    width: int = 64
    """Feature channels (ResNet-101's conv1 gives 64)."""

    def __post_init__(self) -> None:
        if self.rule not in _RULES:
            raise ValueError(
                f"IFCNNConfig.rule must be one of {', '.join(_RULES)}, got {self.rule!r}"
            )
        if self.width < 1:
            raise ValueError(f"IFCNNConfig.width must be positive, got {self.width}")


class _ConvBN(nn.Module):
    """Replicate pad, 3x3 conv without bias, BatchNorm, ReLU (the release's ConvBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))))


class IFCNN(nn.Module):
    """IFCNN for a luminance pair; ``forward`` returns the gray (OpenCV's weights) of its
    3 output channels clamped to [0, 1], as the authors save it.

    Args:
        config: fusion rule and width (default: IFCNN-MAX's).
    """

    #: Registry name (occo.models.registry).
    network_name = "ifcnn"

    def __init__(self, config: IFCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or IFCNNConfig()
        self.conv1 = nn.Conv2d(3, config.width, 7, bias=False)
        self.conv2 = _ConvBN(config.width)
        self.conv3 = _ConvBN(config.width)
        self.conv4 = nn.Conv2d(config.width, 3, 1)

    def features(self, image: Tensor) -> Tensor:
        """(B, 1 or 3, H, W) in [0, 1] -> (B, width, H, W); gray is replicated to 3 channels."""
        x = F.pad(image.expand(-1, 3, -1, -1), (3, 3, 3, 3), mode="replicate")
        return self.conv2(self.conv1(x))

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        vi, inf = self.features(vi_y), self.features(ir)
        rule = self.config.rule
        fused = torch.maximum(vi, inf) if rule == "max" else vi + inf
        if rule == "mean":
            fused = fused / 2
        rgb = self.conv4(self.conv3(fused)).clamp(0, 1)
        return _GRAY[0] * rgb[:, 0:1] + _GRAY[1] * rgb[:, 1:2] + _GRAY[2] * rgb[:, 2:3]


def _finish(raw: Tensor, config: IFCNNConfig) -> Tensor:
    return raw.clamp(0, 1)  # forward already clamps and takes the gray


def fold_batchnorm(model: IFCNN) -> IFCNN:
    """An inference copy with each BatchNorm folded into the conv before it."""
    folded = copy.deepcopy(model).eval()
    for block in (folded.conv2, folded.conv3):
        block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
    return folded


def _read_release(path):
    loaded = load_torch_release(path, "IFCNN")
    state = tensor_dict(loaded, path, "IFCNN", entry="state_dict")
    # Saved before BatchNorm counted its batches.
    for block in ("conv2", "conv3"):
        if f"{block}.bn.weight" in state:
            state.setdefault(f"{block}.bn.num_batches_tracked", torch.tensor(0))
    # The three released files share names and shapes; the file name says the rule.
    name = Path(path).name.upper()
    rule = "mean" if "MEAN" in name else "sum" if "SUM" in name else "max"
    config = IFCNNConfig(rule=rule)
    return config, fit_state(IFCNN(config), state, path, "IFCNN")


def _memory_scale(config: IFCNNConfig, element_size: int) -> float:
    # Rough: a few full-resolution 64-channel maps at once.
    return 3 * config.width / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="ifcnn",
        config_class=IFCNNConfig,
        build=IFCNN,
        finish=_finish,
        # The authors feed the visible image's RGB (IFCNN_Main.py): the network takes it.
        luminance=lambda rgb: rgb,
        # 7x7 conv1, then three 3x3 convs deep (conv2, conv3), 1x1 conv4.
        receptive_margin=lambda config: 5,
        fold=fold_batchnorm,
        authors_color=False,
        memory_scale=_memory_scale,
        # Exported graphs take one visible channel; IFCNN takes the RGB of colour images.
        onnx=False,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/uzeful/IFCNN/raw/"
            "8fe59c2b1553e52acc793986208ca479d134a8da/Code/snapshots/IFCNN-MAX.pth",
            sha256="6022b44c88a2f0367ba9b08fcdf0d663745d9a966fca0ee1f41867797b6ff53f",
            filename="IFCNN-MAX.pth",
            licence="not stated",
            trained_on="multi-focus image pairs made from NYU-D2 (conv1 from ImageNet ResNet-101)",
        ),
        info=MethodInfo(
            title="IFCNN: a general image fusion framework based on convolutional neural network",
            venue="Information Fusion 2020",
            code_url="https://github.com/uzeful/IFCNN",
            code_licence="not stated",
            color="fuses the visible Y replicated to 3 channels (the authors would feed a colour "
            "visible image's RGB); gray of the 3 outputs; occo puts the visible Cb/Cr back",
            authors_output="gray (OpenCV gray of the truncated 3-channel output)",
        ),
    )
)
