"""`occo fuse` and `occo convert` end to end on a few generated pairs with a tiny FIFN."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.errors import OccoError
from occo.data.io import read_image, write_image_atomic
from occo.models.checkpoint import save_weights
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN, release_state_dict


@pytest.fixture
def dataset(tmp_path):
    """ir/ and vi/: 4 good pairs; a size mismatch, an unreadable file, a lone file, a tiny pair."""
    rng = np.random.default_rng(0)
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"

    def img(*shape):
        return rng.integers(0, 256, size=shape, dtype=np.uint8)

    write_image_atomic(ir_dir / "a.png", img(40, 52))
    write_image_atomic(vi_dir / "a.jpg", img(40, 52, 3))  # colour visible
    write_image_atomic(ir_dir / "b.png", img(33, 47))
    write_image_atomic(vi_dir / "b.png", img(33, 47))  # gray visible, odd size
    write_image_atomic(ir_dir / "c.png", np.dstack([img(24, 30)] * 3))  # gray content as RGB
    write_image_atomic(vi_dir / "c.png", img(24, 30, 3))
    ir16 = rng.integers(7000, 9000, size=(26, 34)).astype(np.uint16)  # raw 16-bit thermal
    write_image_atomic(ir_dir / "d.png", ir16)
    write_image_atomic(vi_dir / "d.png", img(26, 34, 3))
    write_image_atomic(ir_dir / "tiny.png", img(6, 30))  # below FIFN's 8 px minimum
    write_image_atomic(vi_dir / "tiny.png", img(6, 30))
    write_image_atomic(ir_dir / "big.png", img(20, 30))
    write_image_atomic(vi_dir / "big.png", img(40, 60, 3))  # twice the IR size
    write_image_atomic(ir_dir / "bad.png", img(20, 20))
    (vi_dir / "bad.png").write_bytes(b"not an image")
    write_image_atomic(ir_dir / "lonely.png", img(20, 20))
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval(), metadata={"source": "test"})
    return ir_dir, vi_dir, weights


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _fuse(*args):
    return CliRunner().invoke(
        app, ["fuse", *map(str, args), "--device", "cpu", "--batch-size", "2"]
    )


def test_fuse_end_to_end(dataset, tmp_path):
    ir_dir, vi_dir, weights = dataset
    before = _digest(ir_dir), _digest(vi_dir)
    out = tmp_path / "fused"
    result = _fuse(ir_dir, vi_dir, out, "--weights", weights)
    assert result.exit_code == 1, result.output  # some pairs failed
    assert (_digest(ir_dir), _digest(vi_dir)) == before  # inputs untouched
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png", "d.png"]
    assert read_image(out / "a.png").shape == (40, 52, 3)  # colour kept
    assert read_image(out / "b.png").shape == (33, 47)  # gray in, gray out
    assert read_image(out / "c.png").shape == (24, 30, 3)
    assert read_image(out / "d.png").shape == (26, 34, 3)  # 16-bit infrared input
    text = result.output
    assert "--resize-vi" in text  # the size mismatch says what to do
    for stem in ("big", "bad", "lonely", "tiny"):
        assert f"{stem}:" in text
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["format"] == "occo-fuse"
    assert manifest["pairs"] == 4 and manifest["stems"] == ["a", "b", "c", "d"]
    assert manifest["ir_dir"] == str(ir_dir.resolve()) and manifest["weights"] == str(
        weights.resolve()
    )
    assert sorted(manifest["failures"]) == ["bad", "big", "lonely", "tiny"]
    assert manifest["settings"]["batch_size"] == 2 and manifest["timings"]["total"] > 0
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries

    # A second run skips what exists; --resize-vi rescues the mismatched pair.
    stamp = (out / "a.png").stat().st_mtime_ns
    again = _fuse(ir_dir, vi_dir, out, "--weights", weights, "--resize-vi")
    assert "4 already there" in again.output
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert read_image(out / "big.png").shape == (20, 30, 3)
    redo = _fuse(ir_dir, vi_dir, out, "--weights", weights, "--overwrite", "--tile", "16")
    assert "fused 4 pair(s)" in redo.output and (out / "a.png").stat().st_mtime_ns != stamp


def test_fuse_refuses_output_inside_inputs(dataset):
    ir_dir, vi_dir, weights = dataset
    for out in (ir_dir, ir_dir / "fused", vi_dir / "x"):
        result = _fuse(ir_dir, vi_dir, out, "--weights", weights)
        assert result.exit_code == 1 and "inside the input folder" in result.output
    assert not (ir_dir / "fused").exists()


def test_fuse_without_weights_says_how_to_get_them(dataset, tmp_path, monkeypatch):
    import occo.models.checkpoint

    monkeypatch.setattr(occo.models.checkpoint, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    ir_dir, vi_dir, _ = dataset
    result = _fuse(ir_dir, vi_dir, tmp_path / "out")
    assert isinstance(result.exception, OccoError)
    assert "occo convert" in str(result.exception) and "occo train" in str(result.exception)


def test_convert_then_fuse(dataset, tmp_path):
    ir_dir, vi_dir, _ = dataset
    torch.save({"state_dict": release_state_dict(TINY_FIFN.widths)}, tmp_path / "occo.pth")
    dst = tmp_path / "release.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        app, ["convert", str(tmp_path / "occo.pth"), str(dst), "--heads", "2,2,4,1"]
    )
    assert result.exit_code == 0, result.output
    assert "dropped 16 unused tensors" in result.output and "space_weight2" in result.output
    again = runner.invoke(app, ["convert", str(tmp_path / "occo.pth"), str(dst)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    fused = _fuse(ir_dir, vi_dir, tmp_path / "out", "--weights", dst)
    assert (tmp_path / "out" / "a.png").is_file() and "converted from occo.pth" in fused.output


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch):
    import builtins
    import io

    import occo.runtime as host_module

    def fake_open(flags):
        def opener(path, *args, **kwargs):
            if str(path) != "/proc/cpuinfo":
                raise AssertionError(path)
            if flags is None:
                raise OSError("no procfs")
            return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")

        return opener

    for flags, expected in (("fpu avx2 avx512f", False), ("avx512f amx_bf16", True), (None, None)):
        monkeypatch.setattr(builtins, "open", fake_open(flags))
        assert host_module.cpu_has_native_bf16() is expected


def test_amp_on_a_cpu_without_bf16_warns(dataset, tmp_path, monkeypatch):
    import occo.runtime as host_module

    ir_dir, vi_dir, weights = dataset
    monkeypatch.setattr(host_module, "cpu_has_native_bf16", lambda: False)
    out = tmp_path / "fused"
    result = _fuse(ir_dir, vi_dir, out, "--weights", weights, "--amp")
    assert "no bf16 instructions" in result.stderr
    assert (out / "a.png").is_file()  # still fuses, only slower
    monkeypatch.setattr(host_module, "cpu_has_native_bf16", lambda: True)
    quiet = _fuse(ir_dir, vi_dir, tmp_path / "again", "--weights", weights, "--amp")
    assert "no bf16 instructions" not in quiet.stderr
