"""Exact tiled inference: windows reproduce the whole image's FIFN output."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from occo.models.blocks import upsample_to
from occo.models.config import FIFNConfig
from occo.models.fifn import fold_batchnorm
from occo.models.tiling import (
    FusionContext,
    axis_spans,
    fusion_contexts,
    level_slice,
    receptive_margin,
    tiled_forward,
    upsample_window,
    window_forward,
)
from tests.helpers import TINY_FIFN, random_fifn

THREE_LEVELS = FIFNConfig(widths=(4, 8, 8), heads=(1, 2, 2))
_SWITCHES = ("spatial_enhancement", "cross_channel", "cross_attention")
#: Every combination of the FIFB switches but the full network (the network ablations).
ABLATED = [
    dataclasses.replace(THREE_LEVELS, **dict(zip(_SWITCHES, flags, strict=True)))
    for flags in itertools.product((True, False), repeat=3)
    if not all(flags)
]




def _inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    pairs = torch.rand(2, batch, 1, height + 4, width + 4, generator=g)
    return tuple(F.avg_pool2d(x, 5, stride=1) for x in pairs)


def test_receptive_margin_of_the_release_network():
    assert receptive_margin(4) == (32, 80)
    assert receptive_margin(3) == (16, 36)


@pytest.mark.parametrize("length, core, align", [(203, 40, 8), (100, 24, 8), (61, 16, 4)])
def test_axis_spans_partition_and_align(length, core, align):
    spans = axis_spans(length, core, margin=2 * align, align=align)
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (_, _, _, end), (_, _, start, _) in zip(spans, spans[1:], strict=False):
        assert end == start  # cores tile the axis without gaps or overlap
    for win_start, win_end, core_start, core_end in spans:
        assert win_start % align == 0 and win_start <= core_start < core_end <= win_end
        assert core_end - core_start >= align  # a short last core is merged
    # Each level's cores partition that level too (pooling floors the last pixels).
    for level in range(3):
        pieces = [level_slice(span, length, level) for span in spans]
        covered = [s.stop - s.start for s in pieces]
        assert all(c > 0 for c in covered) and sum(covered) == length >> level


def test_upsample_window_matches_whole_upsampling():
    g = torch.Generator().manual_seed(1)
    deep = torch.rand(2, 3, 13, 17, generator=g)
    whole = upsample_to(deep, (27, 35))  # odd sizes: reflection-padded by one
    torch.testing.assert_close(upsample_window(deep, (27, 35), (0, 0), (13, 17)), whole)
    # A window from row 4 / col 6 of the deep map to its end: the whole map's samples.
    part = upsample_window(deep[..., 4:, 6:], (27 - 8, 35 - 12), (4, 6), (13, 17))
    torch.testing.assert_close(part[..., 2:, 2:], whole[..., 10:, 14:])


@pytest.mark.parametrize(
    "config, size, tile",
    [
        (TINY_FIFN, (203, 261), 40),  # odd sizes, several windows both ways
        (TINY_FIFN, (100, 171), 24),  # short last cores merged on both axes
        (THREE_LEVELS, (97, 130), 20),
    ],
)
def test_tiled_forward_equals_whole(config, size, tile):
    model = random_fifn(config=config)
    vi, ir = _inputs(2, *size)
    with torch.inference_mode():
        whole = model(vi, ir)
        tiled = tiled_forward(model, vi, ir, tile)
        # The inference copy with folded BatchNorms, channels_last, tiles as well.
        folded = fold_batchnorm(model).to(memory_format=torch.channels_last)
        tiled_folded = tiled_forward(folded, vi, ir, tile)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiled_folded, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", ABLATED, ids=lambda c: "-".join(c.ablations))
def test_tiled_forward_equals_whole_for_every_ablation(config):
    model = random_fifn(config=config)
    vi, ir = _inputs(1, 61, 97, seed=2)
    with torch.inference_mode():
        whole = model(vi, ir)
        tiled = tiled_forward(fold_batchnorm(model), vi, ir, 16)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_contexts_from_windows_equal_whole_image_ones():
    model = random_fifn(config=TINY_FIFN)
    vi, ir = _inputs(1, 150, 190, seed=3)
    with torch.inference_mode():
        tiled = fusion_contexts(model, vi, ir, core=24, margin=32)
        whole = fusion_contexts(model, vi, ir, core=512, margin=32)  # one window
    for a, b in zip(tiled, whole, strict=True):
        for name in ("w_x", "w_y", "context_x", "context_y"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [TINY_FIFN, THREE_LEVELS], ids=["4 levels", "3 levels"])
def test_margin_covers_the_receptive_field(config):
    # With the FIFB contexts held fixed the network is local: the input pixels an output
    # pixel depends on (non-zero gradient) lie within the margin, which is not far over.
    model = random_fifn(config=config)
    size = 176
    vi, ir = _inputs(1, size, size, seed=4)
    with torch.no_grad():
        contexts = fusion_contexts(model, vi, ir, core=512, margin=32)
    contexts = [FusionContext(*(t.detach() for t in vars(c).values())) for c in contexts]
    margin = receptive_margin(config.levels)[1]
    reach = 0
    whole = (0, size, 0, size)
    for row, col in [(88, 88), (89, 87), (85, 91), (91, 90), (95, 95)]:
        vi_g, ir_g = vi.clone().requires_grad_(), ir.clone().requires_grad_()
        window_forward(model, vi_g, ir_g, contexts, whole, whole)[0, 0, row, col].backward()
        support = (vi_g.grad.abs() + ir_g.grad.abs())[0, 0].nonzero()
        reach = max(reach, (support - torch.tensor([row, col])).abs().max().item())
    assert 0.75 * margin <= reach <= margin
