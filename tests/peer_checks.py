"""Checks every peer network's test runs (tests/test_peers_*.py): random-weight forward,
finish and compose, exact tiling at the registered margin, ONNX export, and the golden
crops (tests/data/peers/: a 65x49 crop of TNO pair 01, CC BY 4.0, with a colourised
visible version, and each method's authors' output for it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occo.data.normalize import compose_color, luminance, prepare_pair, to_uint8
from occo.models.tiling import local_tiled_forward

PEERS_DATA = Path(__file__).resolve().parent / "data" / "peers"


def random_net(spec, config=None, seed: int = 0):
    """``spec``'s network with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return spec.make(config).eval()


def random_pair(batch: int, height: int, width: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, height, width, generator=g), torch.rand(
        batch, 1, height, width, generator=g
    )


@torch.inference_mode()
def check_forward_finish(spec, net, height: int, width: int) -> None:
    """Shapes at an odd size, batch independence, the finished luminance in [0, 1], and
    composition for a gray and a colour visible image."""
    vi_y, ir = random_pair(2, height, width)
    raw = net(vi_y, ir)
    assert raw.shape == (2, 1, height, width)
    single = net(vi_y[1:], ir[1:])
    torch.testing.assert_close(raw[1:], single, atol=1e-5, rtol=1e-4)
    fused = spec.finish(raw, net.config)
    assert fused.shape == raw.shape and fused.min() >= 0 and fused.max() <= 1
    compose = spec.compose or compose_color
    gray = compose(fused, vi_y)
    assert gray.shape == (2, 1, height, width) and 0 <= gray.min() and gray.max() <= 1
    rgb = torch.rand(2, 3, height, width)
    color = compose(fused, rgb)
    assert color.shape == (2, 3, height, width) and 0 <= color.min() and color.max() <= 1


@torch.inference_mode()
def check_tiling(spec, net, height: int, width: int, tile: int, tight: bool = True) -> None:
    """Tiles with the registered margin equal the whole image; with one pixel less they
    do not (``tight``: the margin is the exact reach, not a safe overestimate; checked in
    float64, where a far pixel's small influence stands out of the rounding)."""
    margin = spec.receptive_margin(net.config)
    assert margin is not None
    align = spec.size_multiple(net.config)
    vi_y, ir = random_pair(1, height, width)
    whole = net(vi_y, ir)
    tiled = local_tiled_forward(net, vi_y, ir, tile, margin, align)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-4)
    if tight and align == 1:
        net64, vi64, ir64 = net.double(), vi_y.double(), ir.double()
        whole = net64(vi64, ir64)
        exact = (local_tiled_forward(net64, vi64, ir64, tile, margin, align) - whole).abs().max()
        short = (
            (local_tiled_forward(net64, vi64, ir64, tile, margin - 1, align) - whole).abs().max()
        )
        net.float()
        assert exact < 1e-12 and short > 1e-10, (float(exact), float(short))


def check_fold(spec, net, height: int = 21, width: int = 19) -> None:
    vi_y, ir = random_pair(1, height, width)
    with torch.inference_mode():
        torch.testing.assert_close(spec.fold(net)(vi_y, ir), net(vi_y, ir), atol=1e-5, rtol=1e-4)


def check_onnx(spec, net, trace=(1, 24, 20), run=(2, 29, 37)) -> None:
    """``torch.onnx.export`` (tracing, opset 17, dynamic batch and size) then onnxruntime
    on another size, against PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert spec.onnx
    model = spec.fold(net).eval()
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        random_pair(*trace),
        buffer,
        input_names=["vi_y", "ir"],
        output_names=["raw"],
        dynamic_axes={"vi_y": axes, "ir": axes, "raw": axes},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    vi_y, ir = random_pair(*run)
    (got,) = session.run(None, {"vi_y": vi_y.numpy(), "ir": ir.numpy()})
    with torch.inference_mode():
        want = net(vi_y, ir)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-3)


def read_golden(name: str) -> tuple[np.ndarray, ...]:
    """The golden inputs (ir, gray vi, colour vi) and a method's outputs (gray, colour)."""

    def read(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path))

    inputs = PEERS_DATA / "inputs"
    return (
        read(inputs / "ir.png"),
        read(inputs / "vi.png"),
        read(inputs / "vi_color.png"),
        read(PEERS_DATA / name / "gray.png"),
        read(PEERS_DATA / name / "color.png"),
    )


@torch.inference_mode()
def fuse_arrays(spec, net, ir: np.ndarray, vi: np.ndarray, authors: bool = False) -> np.ndarray:
    """One pair as occo's Fuser runs a registered network (folded, finished, composed);
    ``authors``: the authors' output (gray fused luminance where they save gray)."""
    pair = prepare_pair(ir, vi)
    vi_t, ir_t = pair.vi[None], pair.ir[None]
    y = spec.luminance(vi_t) if spec.luminance else luminance(vi_t)
    raw = spec.fold(net)(y, ir_t)
    fused = spec.finish(raw, net.config)
    if authors and not spec.authors_color:
        return to_uint8(fused[0])
    return to_uint8((spec.compose or compose_color)(fused, vi_t)[0])


def grey_levels_apart(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, float]:
    """Max and mean |difference| (a gray result against an RGB file: per channel)."""
    if ours.ndim == 2 and theirs.ndim == 3:
        ours = ours[..., None]
    assert ours.shape[:2] == theirs.shape[:2]
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    return int(diff.max()), float(diff.mean())


def check_golden(
    spec, weights: Path, name: str, max_diff: int = 1, mean_diff: float = 0.55, color: bool = True
):
    """The released weights, read by ``spec.read_release``, reproduce the authors' output
    on the golden crop (gray and, with ``color``, colour visible)."""
    config, state = spec.read_release(weights)
    net = spec.make(config).eval()
    net.load_state_dict(state, strict=True)
    ir, vi, vi_color, want_gray, want_color = read_golden(name)
    cases = ((vi, want_gray), (vi_color, want_color)) if color else ((vi, want_gray),)
    for vi_in, want in cases:
        got = fuse_arrays(spec, net, ir, vi_in, authors=True)
        worst, mean = grey_levels_apart(got, want)
        assert worst <= max_diff and mean <= mean_diff, (worst, mean)
    return net
