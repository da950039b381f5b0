"""Checks shared by the peer network tests (tests/test_peers_*.py): the Fuser's call
sequence, random-weight behaviour (odd sizes, batching, folding, tiling, ONNX) and the
golden crops of tests/data/peers (the authors' own test script's output)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from occo.data.io import read_image
from occo.data.normalize import compose_color, luminance, prepare_pair, to_uint8
from occo.models.registry import get_network

PEERS_DATA = Path(__file__).resolve().parent / "data" / "peers"


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random parameters and BatchNorm statistics (so folding has something to fold)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.3)
    return model.eval()


def fuse_arrays(
    name: str, model, ir: np.ndarray, vi: np.ndarray, authors_output: bool = False
) -> np.ndarray:
    """One pair through ``model`` the way occo's Fuser runs a registered network."""
    spec = get_network(name)
    pair = prepare_pair(ir, vi)
    vi_t, ir_t = pair.vi[None], pair.ir[None]
    with torch.inference_mode():
        y = spec.luminance(vi_t) if spec.luminance else luminance(vi_t)
        fused = spec.finish(model(y, ir_t), model.config).clamp(0, 1)
        gray = vi_t.shape[1] == 1 or (authors_output and not spec.authors_color)
        out = fused if gray else (spec.compose or compose_color)(fused, vi_t)
    return to_uint8(out[0])


def golden_diff(
    name: str, weights: Path, golden: str, vi_name: str, inputs: str = "tno01"
) -> np.ndarray:
    """occo - authors (signed, int32) on the TNO crop (RGB order), occo with
    ``authors_output``; a gray occo output is compared with the OpenCV gray of an
    authors' three-channel file."""
    import cv2

    spec = get_network(name)
    config, state = spec.read_release(weights)
    model = spec.make(config)
    model.load_state_dict(state)
    model.eval()
    folder = PEERS_DATA / inputs
    ours = fuse_arrays(
        name, model, read_image(folder / "ir.png"), read_image(folder / vi_name), True
    )
    theirs = read_image(PEERS_DATA / name / golden)
    if ours.ndim == 2 and theirs.ndim == 3:
        theirs = cv2.cvtColor(theirs, cv2.COLOR_RGB2GRAY)
    assert ours.shape == theirs.shape
    return ours.astype(np.int32) - theirs.astype(np.int32)


def check_random_network(name: str, config, sizes=((37, 53), (48, 64))) -> None:
    """Forward/finish on odd sizes and batches, fold exactness, tiling exactness (or its
    refusal), and ONNX export equal to PyTorch."""
    spec = get_network(name)
    model = randomize(spec.make(config))
    torch.manual_seed(0)
    for h, w in sizes:
        vi, ir = torch.rand(2, 1, h, w), torch.rand(2, 1, h, w)
        with torch.inference_mode():
            raw = model(vi, ir)
            assert raw.shape == (2, 1, h, w)
            fused = spec.finish(raw, config)
            assert fused.shape == (2, 1, h, w)
            assert float(fused.min()) >= 0 and float(fused.max()) <= 1
            single = model(vi[1:], ir[1:])
            torch.testing.assert_close(single, raw[1:], atol=1e-5, rtol=1e-4)
            folded = spec.fold(model)
            torch.testing.assert_close(folded(vi, ir), raw, atol=1e-4, rtol=1e-4)
    margin = spec.receptive_margin(config)
    if margin is not None:
        from occo.models.tiling import local_tiled_forward

        h, w = 70, 90
        vi, ir = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
        with torch.inference_mode():
            whole = model(vi, ir)
            if spec.tiled_forward is not None:
                tiled = spec.tiled_forward(model, vi, ir, 24)
            else:
                tiled = local_tiled_forward(model, vi, ir, 24, margin, spec.size_multiple(config))
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-4)
    if spec.onnx:
        import onnxruntime

        vi, ir = torch.rand(1, 1, 37, 45), torch.rand(1, 1, 37, 45)
        buffer = io.BytesIO()
        torch.onnx.export(
            model, (vi, ir), buffer, input_names=["vi_y", "ir"], output_names=["raw"],
            dynamic_axes={k: {0: "b", 2: "h", 3: "w"} for k in ("vi_y", "ir", "raw")},
            opset_version=17, dynamo=False,
        )
        session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        for h, w in ((37, 45), (50, 66)):
            vi, ir = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
            (out,) = session.run(None, {"vi_y": vi.numpy(), "ir": ir.numpy()})
            with torch.inference_mode():
                expected = model(vi, ir).numpy()
            np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)
