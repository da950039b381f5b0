"""Building blocks of FIFN: encoder levels, the Feature Interaction Fusion Block, decoder steps.

Every block reproduces the authors' released computation under occo's own
module names; ``models.checkpoint`` maps the release's key names onto these.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

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
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(x)), inplace=True)


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C); a free view when ``x`` is channels_last."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def from_tokens(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W) in channels_last layout (a view of contiguous tokens)."""
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def pointwise(tokens: Tensor, layer: nn.Module) -> Tensor:
    """A 1x1 ``nn.Conv2d`` (or ``nn.Linear``) applied to tokens (B, N, Cin) -> (B, N, Cout)."""
    return F.linear(tokens, layer.weight.flatten(1), layer.bias)


def linear_of_concat(a: Tensor, b: Tensor, layer: nn.Module) -> Tensor:
    """``layer(cat((a, b), -1))`` as two accumulating GEMMs, without the concat.

    Args:
        a: (B, N, Ca) tokens.
        b: (B, N, Cb) tokens.
        layer: ``nn.Linear`` or 1x1 ``nn.Conv2d`` with Ca + Cb inputs.

    Returns:
        (B, N, Cout).
    """
    weight, bias = layer.weight.flatten(1), layer.bias  # (Cout, Ca + Cb)
    split = a.shape[-1]
    a2, b2 = a.reshape(-1, split), b.reshape(-1, b.shape[-1])
    if bias is not None:
        out = torch.addmm(bias, a2, weight[:, :split].t())
    else:
        out = torch.mm(a2, weight[:, :split].t())
    # GEMM accumulating in place (beta = 1). In-place ops escape autocast: match dtypes.
    out.addmm_(b2.to(out.dtype), weight[:, split:].t().to(out.dtype))  # (B*N, Cout)
    return out.view(*a.shape[:-1], -1)


def linear_of_scaled(tokens: Tensor, scale: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(scale * tokens)`` with the per-sample channel scale folded into the weight.

    Args:
        tokens: (B, N, C).
        scale: (B, 1, C) per-sample channel weights.
        layer: ``nn.Linear(C, Cout)``.

    Returns:
        (B, N, Cout).
    """
    weight = layer.weight * scale  # (B, Cout, C): one small matrix per sample
    return torch.baddbmm(layer.bias, tokens, weight.transpose(1, 2))


def token_max(tokens: Tensor) -> Tensor:
    """(B, N, C) -> (B, C) maximum over the tokens.

    Under autograd ``max().values``: its backward sends the gradient to one token, as the
    release's adaptive max pooling does, in one scatter (amax's backward splits it among
    ties in four passes over the tokens, several times slower in training). Otherwise
    ``amax``, which skips the indices and is ten times faster.
    """
    if torch.is_grad_enabled() and tokens.requires_grad:
        return tokens.max(dim=1).values
    return tokens.amax(dim=1)


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
        """Args: x, y: (B, N, C) tokens. Returns: (w_x, w_y), each (B, 1, C)."""
        return self.from_stats(torch.cat((x.mean(1), y.mean(1), token_max(x), token_max(y)), 1))

    def from_stats(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        """Weights from precomputed statistics (tiled inference gathers them tile by tile).

        Args:
            stats: (B, 4C): mean of x, mean of y, max of x, max of y over all tokens.

        Returns:
            (w_x, w_y), each (B, 1, C).
        """
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(stats))))  # (B, 2C)
        w_x, w_y = weights[:, None, :].chunk(2, dim=-1)
        return w_x, w_y


class SpatialWeights(nn.Module):
    """A per-pixel weight: Conv1x1(C, C) -> ReLU -> Conv1x1(C, 1) -> Sigmoid.

    The release applies ONE such module to both modalities (its second one is never used),
    so FIFB holds a single instance. 1x1 convolutions act on tokens as linear maps.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, 1, 1)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, N, C) -> (B, N, 1)
        hidden = F.relu(pointwise(tokens, self.conv1), inplace=True)
        return torch.sigmoid(pointwise(hidden, self.conv2))


def _no_autocast(device_type: str):
    return (
        torch.autocast(device_type, enabled=False)
        if device_type in ("cpu", "cuda")
        else nullcontext()
    )


def _head_contexts(full: Tensor, heads: int) -> Tensor:
    """softmax_rows(block_h * d^-0.5) of the diagonal (d x d) blocks of (B, C, C) ``full``."""
    b, c, _ = full.shape
    d = c // heads
    blocks = torch.diagonal(full.view(b, heads, d, heads, d), dim1=1, dim2=3)  # (B, d, d, heads)
    return (blocks.permute(0, 3, 1, 2) * d**-0.5).softmax(dim=-2)


def efficient_context(keys: Tensor, values: Tensor, heads: int) -> Tensor:
    """Per-head context of linear ("efficient") attention: softmax_rows(K^T V * d^-0.5).

    Args:
        keys: (B, N, C).
        values: (B, N, C).
        heads: number of heads; d = C / heads.

    Returns:
        (B, heads, d, d), softmax taken over the first d axis (over keys' channels).
    """
    # K^T V sums over all N pixels: in fp16 it can overflow (N = 307k at 640x480), so it is
    # formed in float32. One (C x C) GEMM for all heads, then its diagonal blocks: far
    # faster than per-head (d x N) @ (N x d) products, and C x C is tiny.
    with _no_autocast(keys.device.type):
        return _head_contexts(keys.float().transpose(1, 2) @ values.float(), heads)


def projected_context(tokens: Tensor, kv: nn.Linear, heads: int) -> Tensor:
    """``efficient_context(*kv(tokens).chunk(2, -1), heads)`` without forming K and V.

    With K = X W_k^T and V = X W_v^T (no bias), K^T V = W_k (X^T X) W_v^T: one (C x C)
    Gram matrix over the N tokens replaces the (N x 2C) projection and its strided copies.

    Args:
        tokens: (B, N, C).
        kv: bias-free ``nn.Linear(C, 2C)``, keys then values.
        heads: number of heads.

    Returns:
        (B, heads, d, d), as :func:`efficient_context`.
    """
    return context_from_gram(gram(tokens), kv, heads)


def gram(tokens: Tensor) -> Tensor:
    """(B, N, C) -> (B, C, C) float32 X^T X, summed over the N tokens (see efficient_context)."""
    with _no_autocast(tokens.device.type):
        x = tokens.float()
        return x.transpose(1, 2) @ x


def context_from_gram(xtx: Tensor, kv: nn.Linear, heads: int) -> Tensor:
    """Per-head contexts W_k (X^T X) W_v^T from a Gram matrix (see projected_context).

    Args:
        xtx: (B, C, C) float32 X^T X of the query tokens; tiled inference sums it tile by tile.
        kv: bias-free ``nn.Linear(C, 2C)``, keys then values.
        heads: number of heads.

    Returns:
        (B, heads, d, d) float32.
    """
    with _no_autocast(xtx.device.type):
        w_k, w_v = kv.weight.float().chunk(2, dim=0)  # (C, C) each
        return _head_contexts(w_k @ xtx.float() @ w_v.t(), heads)


def block_diagonal(context: Tensor) -> Tensor:
    """(B, heads, d, d) per-head contexts -> (B, C, C) block-diagonal matrix."""
    b, heads, d, _ = context.shape
    # A product with the identity over heads, not a copy into a diagonal view: the same
    # values exactly, and ONNX export traces it (it drops in-place copies into views).
    eye = torch.eye(heads, dtype=context.dtype, device=context.device)
    out = context[:, :, :, None, :] * eye[None, :, None, :, None]  # (B, h, d, h, d)
    return out.reshape(b, heads * d, heads * d)


def attend(query: Tensor, context: Tensor) -> Tensor:
    """Apply per-head contexts to query tokens (heads merged back to C).

    Args:
        query: (B, N, C) tokens, used as queries without projection.
        context: (B, heads, d, d) from :func:`efficient_context`.

    Returns:
        (B, N, C): per head h, query[..., h] @ context[:, h].
    """
    # One GEMM with the block-diagonal (C x C) matrix of the heads' contexts.
    return torch.bmm(query, block_diagonal(context))


def attended_output(
    residual: Tensor, spatial: Tensor, query: Tensor, context: Tensor, layer: nn.Linear
) -> Tensor:
    """``residual + layer(cat((spatial, attend(query, context)), -1))``, attention folded in.

    attend(q, ctx) @ W_a^T = q @ (blockdiag(ctx) @ W_a^T): one small (C x Cout) matrix per
    sample, so the attended tokens (B, N, C) are never formed (saves a GEMM and a pass).

    Args:
        residual: (B, N, Cout).
        spatial: (B, N, C).
        query: (B, N, C).
        context: (B, heads, d, d).
        layer: ``nn.Linear(2C, Cout)``.

    Returns:
        (B, N, Cout).
    """
    c = spatial.shape[-1]
    weight = layer.weight  # (Cout, 2C): spatial part, then attention part
    out = residual + layer.bias.to(residual.dtype)  # a new (B, N, Cout) tensor
    folded = block_diagonal(context) @ weight[:, c:].t().to(context.dtype)  # (B, C, Cout)
    spatial_gemm = (spatial.reshape(-1, c).to(out.dtype), weight[:, :c].t().to(out.dtype))
    query_gemm = (query.to(out.dtype), folded.to(out.dtype))
    if torch.onnx.is_in_onnx_export():
        # The exporter drops in-place updates of a view: the same sums, out of place.
        out = torch.addmm(out.reshape(-1, out.shape[-1]), *spatial_gemm).view_as(out)
        return torch.baddbmm(out, *query_gemm)
    # GEMMs accumulating in place. In-place ops escape autocast: match dtypes.
    out.view(-1, out.shape[-1]).addmm_(*spatial_gemm)
    return out.baddbmm_(*query_gemm)


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

    def contexts(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each modality's attention context, for the other's queries to read.

        The attended tokens themselves, ``attend(x, context_y)`` and ``attend(y,
        context_x)``, are never formed: FIFB folds them into its output projections
        (:func:`attended_output`).

        Args:
            x, y: (B, N, C) visible and infrared queries.

        Returns:
            ``(context_x, context_y)``, each (B, heads, d, d).
        """
        return projected_context(x, self.kv_vi, self.heads), projected_context(
            y, self.kv_ir, self.heads
        )


class MergeBlock(nn.Module):
    """Merge the two modalities' tokens back into one feature map.

    With z = concat(x, y) on channels:
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

    def forward(self, x: Tensor, y: Tensor, height: int, width: int) -> Tensor:
        """Args: x, y: (B, H*W, C) tokens. Returns: (B, C, H, W), channels_last."""
        shortcut = from_tokens(linear_of_concat(x, y, self.shortcut), height, width)
        reduced = from_tokens(linear_of_concat(x, y, self.reduce), height, width)
        main = F.relu(self.depthwise(reduced), inplace=True)
        main = self.bn_main(from_tokens(pointwise(to_tokens(main), self.pointwise), height, width))
        return self.bn_out(shortcut + main)


@dataclass(frozen=True)
class FusionContext:
    """The whole-image quantities of one FIFB: everything in it that is not per pixel."""

    w_x: Tensor | None
    """(B, 1, C) visible channel weights, from statistics over all pixels; None without
    cross-channel weights."""
    w_y: Tensor | None
    """(B, 1, C) infrared channel weights; None without cross-channel weights."""
    context_x: Tensor | None
    """(B, heads, d, d) attention context of the visible queries (read by the infrared);
    None without cross attention."""
    context_y: Tensor | None
    """(B, heads, d, d) attention context of the infrared queries (read by the visible);
    None without cross attention."""


class FIFB(nn.Module):
    """Feature Interaction Fusion Block: fuses one level's visible and infrared features.

    Channel and spatial re-weighting, cross attention between the channel-weighted
    modalities, a residual LayerNorm per modality, then a convolutional merge. Works on
    tokens (B, H*W, C), which are free views of channels_last feature maps.

    The three switches remove one part each for the paper's network ablations; the
    parameters of the other parts keep their names and shapes.

    Args:
        channels: C of each modality's feature map.
        heads: attention heads (must divide C).
        spatial_enhancement: False: no spatial weights (``s = tokens``).
        cross_channel: False: no channel weights (queries from the unweighted tokens).
        cross_attention: False: no cross attention; each modality's own queries stand where
            the attended tokens were, so the output projection keeps its shape.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        spatial_enhancement: bool = True,
        cross_channel: bool = True,
        cross_attention: bool = True,
    ) -> None:
        super().__init__()
        self.channel_weights = ChannelWeights(channels) if cross_channel else None
        self.spatial_weights = SpatialWeights(channels) if spatial_enhancement else None
        self.proj_vi = nn.Linear(channels, channels)
        self.proj_ir = nn.Linear(channels, channels)
        self.attention = CrossAttention(channels, heads) if cross_attention else None
        self.out_proj_vi = nn.Linear(2 * channels, channels)
        self.out_proj_ir = nn.Linear(2 * channels, channels)
        self.norm_vi = nn.LayerNorm(channels)
        self.norm_ir = nn.LayerNorm(channels)
        self.merge = MergeBlock(channels)

    def forward(self, x: Tensor, y: Tensor, context: FusionContext | None = None) -> Tensor:
        """Fuse a level.

        Args:
            x: (B, C, H, W) visible features.
            y: (B, C, H, W) infrared features.
            context: the block's whole-image quantities; None = compute them from x and y.
                Tiled inference passes those of the whole image (see models.tiling).

        Returns:
            (B, C, H, W) fused features (channels_last).
        """
        height, width = x.shape[-2:]
        x = to_tokens(x.contiguous(memory_format=torch.channels_last))  # (B, N, C)
        y = to_tokens(y.contiguous(memory_format=torch.channels_last))
        if context is not None:
            w_x, w_y = context.w_x, context.w_y
        elif self.channel_weights is not None:
            w_x, w_y = self.channel_weights(x, y)  # (B, 1, C) each
        else:
            w_x = w_y = None
        if self.spatial_weights is not None:
            s_x = self.spatial_weights(x) * x  # (B, N, C); one spatial module for both
            s_y = self.spatial_weights(y) * y
        else:
            s_x, s_y = x, y
        q_x, q_y = self.queries(x, y, w_x, w_y)
        if self.attention is None:  # each modality keeps its own queries
            out_x = self.norm_vi(x + linear_of_concat(s_x, q_x, self.out_proj_vi))
            out_y = self.norm_ir(y + linear_of_concat(s_y, q_y, self.out_proj_ir))
            return self.merge(out_x, out_y, height, width)
        # Cross attention (x's queries read y's context and vice versa), folded into the
        # output projections: see CrossAttention and attended_output.
        if context is None:
            context_x, context_y = self.attention.contexts(q_x, q_y)
        else:
            context_x, context_y = context.context_x, context.context_y
        out_x = self.norm_vi(attended_output(x, s_x, q_x, context_y, self.out_proj_vi))
        out_y = self.norm_ir(attended_output(y, s_y, q_y, context_x, self.out_proj_ir))
        return self.merge(out_x, out_y, height, width)

    def queries(
        self, x: Tensor, y: Tensor, w_x: Tensor | None, w_y: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Attention queries relu(proj(w * tokens)) of both modalities.

        Args:
            x, y: (B, N, C) tokens.
            w_x, w_y: (B, 1, C) channel weights, or None (without cross-channel weights:
                relu(proj(tokens))).

        Returns:
            (q_x, q_y), each (B, N, C).
        """
        if w_x is None or w_y is None:
            q_x = F.relu(pointwise(x, self.proj_vi), inplace=True)
            q_y = F.relu(pointwise(y, self.proj_ir), inplace=True)
            return q_x, q_y
        q_x = F.relu(linear_of_scaled(x, w_x, self.proj_vi), inplace=True)  # proj(w_x * x)
        q_y = F.relu(linear_of_scaled(y, w_y, self.proj_ir), inplace=True)
        return q_x, q_y


class _CatChannels(torch.autograd.Function):
    """torch.cat on channels whose backward hands each input a dense gradient.

    cat's own backward returns channel slices of the output's gradient: strided tensors
    on which BatchNorm's and bilinear upsampling's CPU backward kernels fall to slow
    generic paths (10x slower for BatchNorm at 256 x 256). One copy per input is cheaper.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.split = a.shape[1]
        ctx.formats = tuple(_memory_format(t) for t in (a, b))
        return torch.cat((a, b), dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        grad_a, grad_b = grad[:, : ctx.split], grad[:, ctx.split :]
        return (
            grad_a.contiguous(memory_format=ctx.formats[0]),
            grad_b.contiguous(memory_format=ctx.formats[1]),
        )


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def cat_channels(a: Tensor, b: Tensor) -> Tensor:
    """``torch.cat((a, b), 1)`` of (B, Ca, H, W) and (B, Cb, H, W); see _CatChannels."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _CatChannels.apply(a, b)
    return torch.cat((a, b), dim=1)


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
    return pad_to(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True), size)


def pad_to(up: Tensor, size: tuple[int, int]) -> Tensor:
    """Reflection-pad an upsampled (B, C, h, w) map to ``size``, as the release does."""
    dh, dw = size[0] - up.shape[-2], size[1] - up.shape[-1]
    # Under ONNX export the sizes are symbolic: always pad (by zero where even), so the
    # exported graph handles odd and even sizes alike.
    if dh or dw or torch.onnx.is_in_onnx_export():
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
        return self.merge(skip, upsample_to(deep, skip.shape[-2:]))

    def merge(self, skip: Tensor, up: Tensor) -> Tensor:
        """The convolutions, on the skip and the already upsampled deeper map (B, Cd, H, W)."""
        x = cat_channels(skip, up)
        x = F.relu(self.conv1(x), inplace=True)
        return F.relu(self.conv2(x), inplace=True)
