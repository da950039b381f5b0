"""ONNX export checked against PyTorch, the onnxruntime engine, and `occo fuse --backend`."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import read_image, write_image_atomic
from occo.models.checkpoint import save_weights
from occo.models.onnx_engine import MissingDependencyError, require_onnxruntime
from tests.helpers import TINY_FIFN, random_fifn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from occo.models import export as export_module  # noqa: E402
from occo.models.onnx_engine import OnnxEngine  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-weights FIFN saved as occo weights and exported with `occo export`."""
    folder = tmp_path_factory.mktemp("export")
    model = random_fifn(3)
    weights = folder / "tiny.safetensors"
    save_weights(weights, model, metadata={"source": "random test weights"})
    path = folder / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", str(weights), str(path)])
    assert result.exit_code == 0, result.output
    return model, weights, path, result.output


def test_export_round_trips_random_weights_at_odd_sizes(exported):
    model, _, path, output = exported
    assert "wrote" in output and "max error" in output
    engine = OnnxEngine(path, device="cpu")
    assert engine.config == TINY_FIFN and engine.static_size is None
    g = torch.Generator().manual_seed(0)
    for batch, height, width in [(1, 9, 13), (3, 27, 41), (1, 8, 8), (2, 50, 17)]:
        vi_y = torch.rand(batch, 1, height, width, generator=g)
        ir = torch.rand(batch, 1, height, width, generator=g)
        with torch.inference_mode():
            expected = model(vi_y, ir)
        got = engine(vi_y, ir)
        assert got.shape == expected.shape
        spread = (expected.amax() - expected.amin()).item()
        assert (got - expected).abs().max().item() <= 1e-5 * spread
    with pytest.raises(ValueError, match="too small"):
        engine(torch.rand(1, 1, 6, 20), torch.rand(1, 1, 6, 20))


def test_export_metadata_and_interface(exported):
    _, weights, path, _ = exported
    proto = onnx.load(str(path))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta["occo_format"] == "occo-fifn-onnx"
    assert meta["config"] == TINY_FIFN.to_json()
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads(meta["provenance"])["source"] == "random test weights"
    assert meta["output"] == "raw" and meta["precision"] == "float32"
    assert json.loads(meta["verification"])["tolerance"] == export_module.TOLERANCE["float32"]
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in proto.graph.input}  # fmt: skip
    assert inputs == {
        "vi_y": ["batch", 1, "height", "width"],
        "ir": ["batch", 1, "height", "width"],
    }
    assert [v.name for v in proto.graph.output] == ["fused_y"]
    assert all(v.doc_string for v in proto.graph.input)


def test_failed_check_writes_nothing(exported, tmp_path, monkeypatch):
    _, _, path, _ = exported
    # The graph of one network checked against another: the check must catch it.
    monkeypatch.setattr(export_module, "_trace_to_onnx", lambda *a, **k: path.read_bytes())
    other = random_fifn(4)
    target = tmp_path / "new.onnx"
    shapes = [(1, 9, 11)]
    with pytest.raises(export_module.ExportError, match="nothing written"):
        export_module.export_onnx(other, target, check_shapes=shapes)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"previous")
    with pytest.raises(export_module.ExportError):
        export_module.export_onnx(other, existing, overwrite=True, check_shapes=shapes)
    assert existing.read_bytes() == b"previous"


def test_static_fp16_export(tmp_path):
    model = random_fifn(5)
    path = tmp_path / "static16.onnx"
    report = export_module.export_onnx(model, path, static_size=(24, 40), fp16=True, minmax=True)
    assert report.precision == "float16" and report.output == "minmax"
    assert [(c.height, c.width) for c in report.checks] == [(24, 40)]
    assert all(c.passed for c in report.checks)
    engine = OnnxEngine(path, device="cpu")
    assert engine.static_size == (24, 40) and engine.output == "minmax"
    vi_y, ir = torch.rand(2, 1, 24, 40), torch.rand(2, 1, 24, 40)
    got = engine(vi_y, ir)
    from occo.models.fifn import minmax_normalize

    with torch.inference_mode():
        expected = minmax_normalize(model(vi_y, ir))
    assert (got - expected).abs().max().item() <= export_module.TOLERANCE["float16"]
    with pytest.raises(ValueError, match="exported for 40x24"):
        engine(torch.rand(1, 1, 24, 42), torch.rand(1, 1, 24, 42))


def test_missing_onnxruntime_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if absent
    with pytest.raises(MissingDependencyError, match=r'pip install "occo\[onnx\]"'):
        require_onnxruntime()


def _pairs(folder):
    rng = np.random.default_rng(1)

    def img(*shape):
        return rng.integers(0, 256, size=shape, dtype=np.uint8)

    write_image_atomic(folder / "ir" / "a.png", img(40, 52))
    write_image_atomic(folder / "vi" / "a.png", img(40, 52, 3))  # colour
    write_image_atomic(folder / "ir" / "b.png", img(33, 47))
    write_image_atomic(folder / "vi" / "b.png", img(33, 47))  # gray, odd size
    write_image_atomic(
        folder / "ir" / "c.png", rng.integers(7000, 9000, (26, 34)).astype(np.uint16)
    )
    write_image_atomic(folder / "vi" / "c.png", img(26, 34, 3))  # 16-bit infrared
    write_image_atomic(folder / "ir" / "tiny.png", img(6, 30))  # below FIFN's minimum
    write_image_atomic(folder / "vi" / "tiny.png", img(6, 30))
    return folder / "ir", folder / "vi"


def test_fuse_backend_onnxruntime_gives_the_same_pngs(exported, tmp_path):
    """Tolerance: within 1 grey level of the PyTorch backend (measured: equal here)."""
    _, weights, path, _ = exported
    ir_dir, vi_dir = _pairs(tmp_path)
    runs = {}
    for backend, model in (("torch", weights), ("onnxruntime", path)):
        out = tmp_path / backend
        result = CliRunner().invoke(
            app,
            ["fuse", str(ir_dir), str(vi_dir), str(out), "--weights", str(model),
             "--backend", backend, "--device", "cpu", "--batch-size", "2"],
        )  # fmt: skip
        assert result.exit_code == 1, result.output  # the tiny pair fails on both
        assert "tiny" in result.output and "too small" in result.output
        runs[backend] = out
    names = sorted(p.name for p in runs["torch"].glob("*.png"))
    assert names == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in runs["onnxruntime"].glob("*.png")) == names
    for name in names:
        a, b = (read_image(runs[k] / name).astype(int) for k in ("torch", "onnxruntime"))
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, name
    manifest = json.loads((runs["onnxruntime"] / "occo-fuse.json").read_text())
    assert manifest["settings"]["backend"] == "onnxruntime"
    assert manifest["settings"]["providers"] == ["CPUExecutionProvider"]
    assert manifest["weights"] == str(path.resolve()) and manifest["pairs"] == 3


def test_onnxruntime_backend_refuses_torch_only_options(exported, tmp_path):
    _, _, path, _ = exported
    ir_dir, vi_dir = _pairs(tmp_path)
    for extra, message in ((["--tile", "64"], "--tile needs --backend torch"),
                           (["--amp"], "--amp applies to --backend torch")):  # fmt: skip
        result = CliRunner().invoke(
            app,
            ["fuse", str(ir_dir), str(vi_dir), str(tmp_path / "out"), "--weights", str(path),
             "--backend", "onnxruntime", *extra],
        )  # fmt: skip
        assert result.exit_code == 1 and message in result.output
    result = CliRunner().invoke(
        app, ["fuse", str(ir_dir), str(vi_dir), str(tmp_path / "out"), "--weights", str(path)]
    )
    assert result.exit_code == 1 and "--backend onnxruntime" in result.output
    assert not (tmp_path / "out").exists()
