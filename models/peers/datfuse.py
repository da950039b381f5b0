"""DATFuse (Tang et al., IEEE TCSVT 2023: dual attention transformer), as released.

A 5x5 conv-BN-ReLU on the (infrared, visible) pair, a residual dual-attention block (a
two-pass 3x3 conv-BN "FEM" weighted by channel attention over the global average and by
a spatial attention map), two Swin blocks with 1-pixel windows, the same dual-attention
block again (shared weights) and a 1x1 conv to tanh. Two quirks of the release are kept
because its weights were trained with them: the Swin blocks see the feature map through
``x.view(B, H, W, C)`` of a (B, C, H, W) tensor (so each "token" is 16 consecutive values
of the flattened maps, not one pixel's channels), and with one-pixel windows attention
reduces to its value projection. The channel attention's global average makes the output
depend on the whole image: no exact tiling. The authors' ``Test.py`` reads both images as
PIL gray, infrared first, and writes ``(out * 255).astype(uint8)``: truncated, and not
clamped (a negative output wraps around; occo clamps to 0).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.peers.densefuse import pil_luma
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)


@dataclass(frozen=True)
class DATFuseConfig(JsonConfig):
    """DATFuse's sizes; the defaults are the released network's (model_10.pth)."""

    width: int = 16
    """Feature channels (and the Swin blocks' token length)."""
    depth: int = 2
    """Swin blocks."""
    mlp_ratio: float = 4.0
    """Hidden width of the Swin blocks' MLP relative to ``width``."""
    reduction: int = 4
    """Channel reduction inside the channel and spatial attentions."""

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.reduction) < 1 or self.width % self.reduction:
            raise ValueError(
                "DATFuseConfig needs positive sizes with width a multiple of reduction, got "
                f"width={self.width}, depth={self.depth}, reduction={self.reduction}"
            )


class _ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel)
        self.bn = nn.BatchNorm2d(cout)
        self.pad = kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(F.pad(x, (self.pad,) * 4, mode="replicate")))


class _TwoPass(_ConvBN):
    """The release's FEM: the same conv-BN twice, with a ReLU between."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.relu(super().forward(x)))


class _ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class _SpatialAttention(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        mid = channels // reduction
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, 1, 3, padding=1),
            nn.BatchNorm2d(1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _TokenAttention(nn.Module):
    """Attention over one-token windows: softmax of a single score is 1, so the output is
    the projected value (the query and key thirds of ``qkv`` are loaded but unused)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        value = F.linear(x, self.qkv.weight[2 * dim :], self.qkv.bias[2 * dim :])
        return self.proj(value)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _TokenAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class _Blocks(nn.Module):
    def __init__(self, dim: int, depth: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_SwinBlock(dim, mlp_ratio) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.reshape(b, h * w, c)  # the release's x.view(B, H, W, C) of (B, C, H, W)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens.reshape(b, c, h, w)


class DATFuse(nn.Module):
    """DATFuse; ``forward`` returns the tanh output in (-1, 1).

    Args:
        config: sizes (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "datfuse"

    def __init__(self, config: DATFuseConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DATFuseConfig()
        self.convolutional = _ConvBN(2, c.width, 5)
        self.fem = _TwoPass(c.width, c.width, 3)
        self.cam = _ChannelAttention(c.width, c.reduction)
        self.sam = _SpatialAttention(c.width, c.reduction)
        self.basicLayer = _Blocks(c.width, c.depth, c.mlp_ratio)
        self.out = nn.Conv2d(c.width, 1, 1)

    def _dual_attention(self, x: Tensor) -> Tensor:
        fem = self.fem(x)
        return fem * self.cam(fem) + fem * self.sam(fem)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        stem = F.relu(self.convolutional(torch.cat((ir, vi_y), 1)))  # infrared first
        encoded = F.relu(self._dual_attention(stem) + stem)
        decoded = self.fem(self.basicLayer(encoded))
        decoded = decoded * self.cam(decoded) + decoded * self.sam(decoded) + decoded
        return torch.tanh(self.out(decoded))


def _finish(raw: Tensor, config: DATFuseConfig) -> Tensor:
    return raw.clamp(0, 1)  # the release writes out * 255 as uint8 without clamping


def fold_batchnorm(model: DATFuse) -> DATFuse:
    """An inference copy with the BatchNorms folded into their convs."""
    folded = copy.deepcopy(model).eval()
    for block in (folded.convolutional, folded.fem):
        block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
    body = folded.sam.body
    for conv, bn in ((0, 1), (3, 4)):
        body[conv], body[bn] = fuse_conv_bn_eval(body[conv], body[bn]), nn.Identity()
    return folded


def _release_key(key: str) -> str | None:
    # Unused by the forward pass: the patch embedding's norm, and the relative position
    # bias of one-token windows (softmax over one score is 1 whatever the bias).
    if key.startswith("patch_embed.") or ".relative_position_" in key:
        return None
    return key.replace("convolutional_out.conv.", "out.")


def _read_release(path):
    loaded = load_torch_release(path, "DATFuse")
    state = rename(tensor_dict(loaded, path, "DATFuse", entry="state_dict"), _release_key)
    config = DATFuseConfig()
    return config, fit_state(DATFuse(config), state, path, "DATFuse")


register_network(
    NetworkSpec(
        name="datfuse",
        config_class=DATFuseConfig,
        build=DATFuse,
        finish=_finish,
        receptive_margin=lambda config: None,  # channel attention over the global average
        min_size=lambda config: 2,
        luminance=pil_luma,
        authors_color=False,
        fold=fold_batchnorm,
        memory_scale=lambda config, element_size: 4 * config.width / 57.5 * element_size / 4,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/tthinking/DATFuse/raw/"
            "0cd93f15fb5552c7aef79b7be56726c863d6c5ba/model_10.pth",
            sha256="075b636954cbd425fc29be808bcfb42232e29b203f054c2a637ed301300d5a1d",
            filename="datfuse_model_10.pth",
            licence="not stated",
            trained_on="infrared-visible pairs (see the paper; epoch 10 of the authors' run)",
        ),
        info=MethodInfo(
            title="DATFuse: infrared and visible image fusion via dual attention transformer",
            venue="IEEE TCSVT 2023",
            code_url="https://github.com/tthinking/DATFuse",
            code_licence="not stated",
            color="fuses the visible image's PIL gray; occo puts the visible Cb/Cr back",
            authors_output="gray; uint8 truncated and not clamped (occo rounds and clamps)",
        ),
    )
)
