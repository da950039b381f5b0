"""Exact tiled inference of FIFN: the whole image's output, computed in windows.

FIFN is local (each output pixel depends on a bounded neighbourhood) except for three
things, and tiles must reproduce them to give the untiled result:

1. each FIFB's channel weights come from the mean and max of its features over the image;
2. each FIFB's attention context sums its queries' Gram matrices over the image;
3. the decoder's bilinear upsampling (align_corners=True) places samples by the whole
   feature map's size.

So tiled inference makes three passes over windows of the image:

1. encoders only: per-level sums and maxima over each window's core -> channel weights;
2. encoders again: queries on each core with those weights -> summed Gram matrices ->
   attention contexts (the two together are each FIFB's :class:`FusionContext`);
3. the whole network with those contexts and upsampling in image coordinates, keeping
   each window's core.

A network ablation (FIFNConfig switches) without channel weights or without cross attention
skips the pass it does not need. Cores partition the image. Each window adds :func:`receptive_margin` pixels of context
around its core, so the core's output is the whole image's up to float summation order
(1e-6 relative). Windows start at multiples of 2^(levels-1) px so that max pooling sees the
image's own grid. The cost is about twice the untiled compute plus the margins' overlap.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from occo.models.blocks import FusionContext, context_from_gram, gram, pad_to, to_tokens
from occo.models.fifn import FIFN

#: One axis of a window: (window start, window end, core start, core end) in pixels.
Span = tuple[int, int, int, int]


def receptive_margin(levels: int) -> tuple[int, int]:
    """Context in pixels, per side, that fixes FIFN's values at a pixel exactly.

    A level-l feature reaches ``r`` input px beyond its own 2^l x 2^l footprint: two 3x3
    convolutions per encoder level add 2 * 2^l, pooling adds nothing, FIFB's depthwise 3x3
    adds 2^l, the align_corners x2 upsampling reads up to 1.5 deeper pixels (3 * 2^l), and
    each decoder step's two 3x3 convolutions add 2 * 2^l.

    Args:
        levels: FIFN's encoder levels.

    Returns:
        (encoder reach, network reach), each rounded up to a multiple of 2^(levels-1).
        The default 4-level FIFN gives (32, 80).
    """
    align = 2 ** (levels - 1)
    reach = sum(2 * 2**level for level in range(levels))  # the encoders
    encoder = reach
    reach += 2 ** (levels - 1)  # the deepest FIFB's depthwise convolution
    reach += sum(5 * 2**level for level in range(levels - 1))  # upsampling + convs per step
    return -(-encoder // align) * align, -(-reach // align) * align


def axis_spans(length: int, core: int, margin: int, align: int) -> list[Span]:
    """Windows along one axis: cores of ``core`` px (the last one longer, up to
    ``core + align - 1``) each widened by ``margin`` px, clipped to the image.

    Args:
        length: the image's size along the axis.
        core: core size, a multiple of ``align``.
        margin: context per side, a multiple of ``align``.
        align: window starts are multiples of this.

    Returns:
        One (window start, window end, core start, core end) per window; cores partition
        [0, length).
    """
    starts = list(range(0, length, core))
    # A last core shorter than align would be empty at the deepest level: merge it.
    if len(starts) > 1 and length - starts[-1] < align:
        starts.pop()
    ends = starts[1:] + [length]
    return [
        (max(0, s - margin), min(length, e + margin), s, e)
        for s, e in zip(starts, ends, strict=True)
    ]


def level_slice(span: Span, length: int, level: int) -> slice:
    """The core of a window in the window's own coordinates at encoder level ``level``."""
    win_start, _, core_start, core_end = span
    # Pooling floors: the image's last level-l pixel belongs to the core that ends at length.
    end = length >> level if core_end == length else core_end >> level
    return slice((core_start - win_start) >> level, end - (win_start >> level))


def _axis_taps(count: int, start: int, full: int, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps of ``count`` x2-upsampled samples from global sample ``2 * start``.

    Places samples as ``F.interpolate(scale_factor=2, align_corners=True)`` does on a map of
    ``full`` samples (same float32 formula), indexed into a window of ``size`` samples that
    starts at ``start``. Taps outside the window are clamped: they only feed the margin.
    """
    scale = torch.tensor(full - 1, dtype=torch.float32) / (2 * full - 1) if full > 1 else 0.0
    src = torch.arange(2 * start, 2 * start + count, dtype=torch.float32) * scale
    first = src.long()  # src >= 0, so truncation is floor
    frac = src - first
    second = torch.where(first < full - 1, first + 1, first)
    return (first - start).clamp(0, size - 1), (second - start).clamp(0, size - 1), frac


def upsample_window(
    x: Tensor, size: tuple[int, int], start: tuple[int, int], full: tuple[int, int]
) -> Tensor:
    """``upsample_to`` of a whole feature map, restricted to one window of it.

    Args:
        x: (B, C, h, w) window of a (B, C, full[0], full[1]) map, at rows/cols ``start``.
        size: (H, W) of the matching skip window, H in {2h, 2h + 1} (+1 only where the
            window reaches the image's end), W likewise.
        start: the window's first row and column in the whole map.
        full: the whole map's (rows, cols).

    Returns:
        (B, C, H, W): the whole upsampled map's rows/cols from 2 * start on.
    """
    h, w = x.shape[-2:]
    row0, row1, row_frac = _axis_taps(2 * h, start[0], full[0], h)
    col0, col1, col_frac = _axis_taps(2 * w, start[1], full[1], w)
    device, dtype = x.device, x.dtype
    col_frac = col_frac.to(device, dtype)
    row_frac = row_frac.to(device, dtype)[:, None]
    # Columns, then rows: the same products and sums as PyTorch's bilinear kernel.
    cols = x[..., col0.to(device)] * (1 - col_frac) + x[..., col1.to(device)] * col_frac
    up = cols[..., row0.to(device), :] * (1 - row_frac) + cols[..., row1.to(device), :] * row_frac
    return pad_to(up.contiguous(memory_format=torch.channels_last), size)


def _windows(height: int, width: int, core: int, margin: int, align: int):
    rows = axis_spans(height, core, margin, align)
    cols = axis_spans(width, core, margin, align)
    return [(r, c) for r in rows for c in cols]


def _crop(x: Tensor, rows: Span, cols: Span) -> Tensor:
    return x[..., rows[0] : rows[1], cols[0] : cols[1]]


def _core_levels(model: FIFN, vi_y: Tensor, ir: Tensor, rows: Span, cols: Span) -> Iterator:
    """Encoder features of the window's core, per level: (level, x_core, y_core)."""
    height, width = vi_y.shape[-2:]
    window = model.encoder_levels(_crop(vi_y, rows, cols), _crop(ir, rows, cols))
    for level, (x, y) in enumerate(window):
        r, c = level_slice(rows, height, level), level_slice(cols, width, level)
        yield level, x[..., r, c], y[..., r, c]


def fusion_contexts(
    model: FIFN, vi_y: Tensor, ir: Tensor, core: int, margin: int
) -> list[FusionContext]:
    """Every FIFB's whole-image quantities, gathered window by window (passes 1 and 2).

    Args:
        model: the network (eval mode).
        vi_y: (B, 1, H, W) visible luminance.
        ir: (B, 1, H, W) infrared.
        core: core size, a multiple of 2^(levels-1).
        margin: encoder context per side (``receptive_margin(levels)[0]``).

    Returns:
        One context per level, each batched over B.
    """
    height, width = vi_y.shape[-2:]
    windows = _windows(height, width, core, margin, 2 ** (model.config.levels - 1))
    # Blocks without channel weights or cross attention (network ablations) need no pass.
    if any(fifb.channel_weights is not None for fifb in model.fusion):
        weights = _channel_weights(model, vi_y, ir, windows)
    else:
        weights = [(None, None)] * len(model.fusion)
    grams_x: dict[int, Tensor] = {}
    grams_y: dict[int, Tensor] = {}
    if any(fifb.attention is not None for fifb in model.fusion):
        for rows, cols in windows:  # pass 2: the queries' Gram matrices over the cores
            for level, x, y in _core_levels(model, vi_y, ir, rows, cols):
                fifb = model.fusion[level]
                q_x, q_y = fifb.queries(to_tokens(x), to_tokens(y), *weights[level])
                _accumulate(grams_x, level, gram(q_x), torch.add)
                _accumulate(grams_y, level, gram(q_y), torch.add)
    contexts = []
    for level, fifb in enumerate(model.fusion):
        attn = fifb.attention
        context_x = context_y = None
        if attn is not None:
            context_x = context_from_gram(grams_x[level], attn.kv_vi, attn.heads)
            context_y = context_from_gram(grams_y[level], attn.kv_ir, attn.heads)
        contexts.append(FusionContext(*weights[level], context_x=context_x, context_y=context_y))
    return contexts


def _channel_weights(
    model: FIFN, vi_y: Tensor, ir: Tensor, windows: list[tuple[Span, Span]]
) -> list[tuple[Tensor | None, Tensor | None]]:
    """Each FIFB's channel weights from statistics gathered over the cores (pass 1)."""
    height, width = vi_y.shape[-2:]
    sums: dict[int, Tensor] = {}
    maxima: dict[int, Tensor] = {}
    for rows, cols in windows:
        for level, x, y in _core_levels(model, vi_y, ir, rows, cols):
            part_sum = torch.cat([t.sum((2, 3), dtype=torch.float32) for t in (x, y)], 1)
            part_max = torch.cat([t.amax((2, 3)).float() for t in (x, y)], 1)
            _accumulate(sums, level, part_sum, torch.add)
            _accumulate(maxima, level, part_max, torch.maximum)
    weights: list[tuple[Tensor | None, Tensor | None]] = []
    for level, fifb in enumerate(model.fusion):
        if fifb.channel_weights is None:
            weights.append((None, None))
            continue
        means = sums[level] / ((height >> level) * (width >> level))
        stats = torch.cat((means, maxima[level]), 1)  # (B, 4C), as ChannelWeights orders them
        weights.append(fifb.channel_weights.from_stats(stats.to(vi_y.dtype)))
    return weights


def _accumulate(store: dict[int, Tensor], level: int, value: Tensor, combine) -> None:
    store[level] = combine(store[level], value) if level in store else value


def window_forward(
    model: FIFN,
    vi_y: Tensor,
    ir: Tensor,
    contexts: list[FusionContext],
    rows: Span,
    cols: Span,
) -> Tensor:
    """The network on one window, with the whole image's FIFB contexts (pass 3).

    Args:
        model: the network.
        vi_y, ir: (B, 1, H, W) whole inputs.
        contexts: from :func:`fusion_contexts`.
        rows, cols: the window (starts multiples of 2^(levels-1)).

    Returns:
        (B, 1, h, w) raw output over the whole window; only its core is exact.
    """
    height, width = vi_y.shape[-2:]
    window_vi, window_ir = _crop(vi_y, rows, cols), _crop(ir, rows, cols)
    fused = [
        fifb(x, y, context)
        for fifb, context, (x, y) in zip(
            model.fusion, contexts, model.encoder_levels(window_vi, window_ir), strict=True
        )
    ]
    deep = fused[-1]
    for up, level in zip(model.decoder, reversed(range(len(fused) - 1)), strict=True):
        deeper = level + 1  # upsample in the deeper level's whole-map coordinates
        start = (rows[0] >> deeper, cols[0] >> deeper)
        full = (height >> deeper, width >> deeper)
        deep = up.merge(fused[level], upsample_window(deep, fused[level].shape[-2:], start, full))
    return model.head(deep)


def tiled_forward(model: FIFN, vi_y: Tensor, ir: Tensor, tile: int) -> Tensor:
    """``model(vi_y, ir)`` computed in windows of about ``tile`` px plus context.

    Peak memory is that of one window (tile + 2 * receptive margin px per side) over the
    batch, plus the output.

    Args:
        model: the network (eval mode; BatchNorms may be folded).
        vi_y: (B, 1, H, W) visible luminance in [0, 1].
        ir: (B, 1, H, W) infrared in [0, 1].
        tile: core size in px; rounded up to a multiple of 2^(levels-1).

    Returns:
        (B, 1, H, W) raw fused luminance, as the untiled forward (not normalised).
    """
    model.check_inputs(vi_y, ir)  # windows of a too-small image would fail deep inside
    levels = model.config.levels
    align = 2 ** (levels - 1)
    core = -(-tile // align) * align
    encoder_margin, margin = receptive_margin(levels)
    height, width = vi_y.shape[-2:]
    contexts = fusion_contexts(model, vi_y, ir, core, encoder_margin)
    out: Tensor | None = None
    for rows, cols in _windows(height, width, core, margin, align):  # pass 3
        result = window_forward(model, vi_y, ir, contexts, rows, cols)
        if out is None:
            out = result.new_empty(*result.shape[:2], height, width)
        r, c = level_slice(rows, height, 0), level_slice(cols, width, 0)
        out[..., rows[2] : rows[3], cols[2] : cols[3]] = result[..., r, c]
    assert out is not None
    return out


def local_tiled_forward(
    model, vi_y: Tensor, ir: Tensor, tile: int, margin: int, align: int = 1
) -> Tensor:
    """Tiled forward pass of a local network (every output pixel depends on at most
    ``margin`` px around it, nothing global): each window is the core plus ``margin`` px
    of context per side, clipped to the image, and only its core is kept. Windows clip at
    the image's edge where the network's own padding applies, so the result equals the
    whole image's up to float summation order.

    Args:
        model: ``model(vi_y, ir) -> (B, 1, h, w)`` for windows of any size.
        vi_y: (B, 1, H, W) visible luminance.
        ir: (B, 1, H, W) infrared.
        tile: core size in px (rounded down to a multiple of ``align``).
        margin: the network's receptive reach per side (rounded up to ``align``).
        align: windows start at multiples of this (pooling strides).

    Returns:
        (B, 1, H, W) raw output.
    """
    height, width = ir.shape[-2:]
    core = max(align, tile // align * align)
    margin = -(-margin // align) * align
    out = None
    for rows, cols in _windows(height, width, core, margin, align):
        window = model(_crop(vi_y, rows, cols), _crop(ir, rows, cols))
        if out is None:
            out = window.new_empty((*window.shape[:2], height, width))
        r0, c0 = rows[2] - rows[0], cols[2] - cols[0]
        out[..., rows[2] : rows[3], cols[2] : cols[3]] = window[
            ..., r0 : r0 + rows[3] - rows[2], c0 : c0 + cols[3] - cols[2]
        ]
    return out
