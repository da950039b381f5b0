"""Building blocks of FIFN: encoder levels, the Feature Interaction Fusion Block, decoder steps.

Every block reproduces the authors' released computation (FACTS section 1) under occo's own
module names; ``models.checkpoint`` maps the release's key names onto these.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """One encoder level: (Conv3x3 -> BatchNorm -> ReLU) twice.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class ChannelWeights(nn.Module):
    """Per-channel weights of both modalities from their joint global statistics.

    concat(x, y) -> [avg pool, max pool] -> Linear(4C, 4C) -> ReLU -> Linear(4C, 2C) ->
    Sigmoid, split into one C-vector per modality.

    Args:
        channels: C, the channels of each modality.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4 * channels, 4 * channels)
        self.fc2 = nn.Linear(4 * channels, 2 * channels)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x, y: (B, C, H, W). Returns: (w_x, w_y), each (B, C, 1, 1)."""
        both = torch.cat((x, y), dim=1)  # (B, 2C, H, W)
        stats = torch.cat((both.mean(dim=(2, 3)), both.amax(dim=(2, 3))), dim=1)  # (B, 4C)
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(stats))))  # (B, 2C)
        w_x, w_y = weights[:, :, None, None].chunk(2, dim=1)
        return w_x, w_y


class SpatialWeights(nn.Module):
    """A per-pixel weight map: Conv1x1(C, C) -> ReLU -> Conv1x1(C, 1) -> Sigmoid.

    The release applies ONE such module to both modalities (its second one is never used),
    so FIFB holds a single instance.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, 1, H, W)
        return torch.sigmoid(self.conv2(F.relu(self.conv1(x))))


def efficient_context(kv: Tensor, heads: int) -> Tensor:
    """Per-head context of linear ("efficient") attention: softmax_rows(K^T V * d^-0.5).

    Args:
        kv: (B, N, 2C) keys then values, as produced by a Linear(C, 2C).
        heads: number of heads; d = C / heads.

    Returns:
        (B, heads, d, d), softmax taken over the first d axis (over keys' channels).
    """
    b, n, two_c = kv.shape
    d = two_c // (2 * heads)
    k, v = kv.reshape(b, n, 2, heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
    # K^T V sums over all N pixels: in fp16 it can overflow (N = 307k at 640x480), so the
    # context is always formed in float32; it is tiny (d x d) and cheap.
    device = kv.device.type
    no_autocast = (
        torch.autocast(device, enabled=False) if device in ("cpu", "cuda") else nullcontext()
    )
    with no_autocast:
        context = k.float().transpose(-2, -1) @ v.float()  # (B, heads, d, d)
        return (context * d**-0.5).softmax(dim=-2)


def attend(query: Tensor, context: Tensor) -> Tensor:
    """Apply a per-head context to query tokens and merge the heads.

    Args:
        query: (B, N, C) tokens, used as queries without projection.
        context: (B, heads, d, d) from :func:`efficient_context`.

    Returns:
        (B, N, C).
    """
    b, n, c = query.shape
    heads, d = context.shape[1], context.shape[2]
    q = query.reshape(b, n, heads, d).transpose(1, 2)  # (B, heads, N, d)
    out = q @ context.to(q.dtype)  # (B, heads, N, d)
    return out.transpose(1, 2).reshape(b, n, c)


class CrossAttention(nn.Module):
    """Linear-complexity cross attention: each modality's queries read the other's context.

    Args:
        channels: C.
        heads: heads; must divide C.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.kv_vi = nn.Linear(channels, 2 * channels, bias=False)
        self.kv_ir = nn.Linear(channels, 2 * channels, bias=False)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x, y: (B, N, C) tokens. Returns: (x attends y, y attends x), each (B, N, C)."""
        context_x = efficient_context(self.kv_vi(x), self.heads)
        context_y = efficient_context(self.kv_ir(y), self.heads)
        return attend(x, context_y), attend(y, context_x)


class MergeBlock(nn.Module):
    """Merge the two modalities' tokens back into one feature map.

    BN(Conv1x1(2C, C, no bias)(z) + BN(Conv1x1(C, C)(ReLU(DWConv3x3(Conv1x1(2C, C)(z)))))).

    Args:
        channels: C, the output channels (input is 2C).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self.reduce = nn.Conv2d(2 * channels, channels, 1)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.bn_main = nn.BatchNorm2d(channels)
        self.bn_out = nn.BatchNorm2d(channels)

    def forward(self, z: Tensor) -> Tensor:  # (B, 2C, H, W) -> (B, C, H, W)
        main = self.bn_main(self.pointwise(F.relu(self.depthwise(self.reduce(z)))))
        return self.bn_out(self.shortcut(z) + main)


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, height, width)


class FIFB(nn.Module):
    """Feature Interaction Fusion Block: fuses one level's visible and infrared features.

    Channel and spatial re-weighting, cross attention between the channel-weighted
    modalities, a residual LayerNorm per modality, then a convolutional merge.

    Args:
        channels: C of each modality's feature map.
        heads: attention heads (must divide C).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.channel_weights = ChannelWeights(channels)
        self.spatial_weights = SpatialWeights(channels)
        self.proj_vi = nn.Linear(channels, channels)
        self.proj_ir = nn.Linear(channels, channels)
        self.attention = CrossAttention(channels, heads)
        self.out_proj_vi = nn.Linear(2 * channels, channels)
        self.out_proj_ir = nn.Linear(2 * channels, channels)
        self.norm_vi = nn.LayerNorm(channels)
        self.norm_ir = nn.LayerNorm(channels)
        self.merge = MergeBlock(channels)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Fuse a level.

        Args:
            x: (B, C, H, W) visible features.
            y: (B, C, H, W) infrared features.

        Returns:
            (B, C, H, W) fused features.
        """
        height, width = x.shape[-2:]
        w_x, w_y = self.channel_weights(x, y)  # (B, C, 1, 1) each
        s_x = to_tokens(self.spatial_weights(x) * x)  # (B, N, C)
        s_y = to_tokens(self.spatial_weights(y) * y)
        q_x = F.relu(self.proj_vi(to_tokens(w_x * x)))
        q_y = F.relu(self.proj_ir(to_tokens(w_y * y)))
        a_x, a_y = self.attention(q_x, q_y)  # (B, N, C) each
        out_x = self.norm_vi(to_tokens(x) + self.out_proj_vi(torch.cat((s_x, a_x), dim=-1)))
        out_y = self.norm_ir(to_tokens(y) + self.out_proj_ir(torch.cat((s_y, a_y), dim=-1)))
        merged = from_tokens(torch.cat((out_x, out_y), dim=-1), height, width)  # (B, 2C, H, W)
        return self.merge(merged)


def upsample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear x2 upsampling (align_corners=True), reflection-padded up to ``size``.

    Odd sizes lose a pixel when pooled; the release pads the difference back, splitting it
    with the extra pixel on the right/bottom.

    Args:
        x: (B, C, h, w).
        size: (H, W) of the skip feature, H in {2h, 2h + 1}, W likewise.

    Returns:
        (B, C, H, W).
    """
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
    dh, dw = size[0] - up.shape[-2], size[1] - up.shape[-1]
    if dh or dw:
        up = F.pad(up, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="reflect")
    return up


class UpBlock(nn.Module):
    """One decoder step: upsample the deeper map, concat [skip, up], (Conv3x3 -> ReLU) x2.

    Args:
        skip_channels: channels of the skip feature (and of the output).
        deep_channels: channels of the deeper feature.
    """

    def __init__(self, skip_channels: int, deep_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(skip_channels + deep_channels, skip_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(skip_channels, skip_channels, 3, padding=1)

    def forward(self, skip: Tensor, deep: Tensor) -> Tensor:
        """Args: skip (B, Cs, H, W), deep (B, Cd, H//2, W//2). Returns: (B, Cs, H, W)."""
        x = torch.cat((skip, upsample_to(deep, skip.shape[-2:])), dim=1)
        return F.relu(self.conv2(F.relu(self.conv1(x))))
