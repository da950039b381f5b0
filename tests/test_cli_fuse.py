"""`occo fuse` and `occo convert` end to end on a few generated pairs with a tiny FIFN."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import file_sha256, folder_lock, read_image, read_png_text, write_image_atomic
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
    for stem in ("big", "bad", "tiny"):
        assert text.count(f"failed: {stem}:") == 1  # each failure said once, as it happens
    assert text.count("lonely.png has no visible partner") == 1
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
    assert result.exit_code == 1
    assert "occo convert" in result.output and "occo train" in result.output


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


@pytest.fixture
def clean_pairs(tmp_path):
    """ir/ and vi/ with three good pairs, and two different tiny weight files."""
    rng = np.random.default_rng(1)
    ir_dir, vi_dir = tmp_path / "src" / "ir", tmp_path / "src" / "vi"
    for stem in ("p1", "p2", "p3"):
        write_image_atomic(ir_dir / f"{stem}.png", rng.integers(0, 256, (24, 32), dtype=np.uint8))
        write_image_atomic(
            vi_dir / f"{stem}.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        )
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"w{seed}.safetensors"
        save_weights(path, FIFN(TINY_FIFN).eval(), metadata={"source": f"seed {seed}"})
        weights.append(path)
    return ir_dir, vi_dir, weights


def test_rerun_with_other_weights_is_refused_and_changes_nothing(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, w1) = clean_pairs
    out = tmp_path / "fused"
    assert _fuse(ir_dir, vi_dir, out, "--weights", w0).exit_code == 0
    before = _digest(out)
    again = _fuse(ir_dir, vi_dir, out, "--weights", w0)  # same settings: nothing to do
    assert again.exit_code == 0 and "3 already there" in again.output
    other = _fuse(ir_dir, vi_dir, out, "--weights", w1)
    assert other.exit_code == 1
    message = [line for line in other.output.splitlines() if line.startswith("error:")]
    assert len(message) == 1  # one line
    assert "other settings" in message[0] and "weights_sha256" in message[0]
    assert "--overwrite" in message[0]
    manifest_after = json.loads((out / "occo-fuse.json").read_text())
    assert manifest_after["provenance"]["weights_sha256"] == file_sha256(w0)
    assert _digest(out) == {k: v for k, v in before.items()}  # manifest and images untouched
    redo = _fuse(ir_dir, vi_dir, out, "--weights", w1, "--overwrite")
    assert redo.exit_code == 0 and "fused 3 pair(s)" in redo.output
    record = json.loads(read_png_text(out / "p1.png")["occo-fuse"])
    assert record["weights_sha256"] == file_sha256(w1) and record["vi"] == "p1.png"


def test_a_file_occo_did_not_write_is_never_taken_as_done(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, _) = clean_pairs
    out = tmp_path / "fused"
    stray = np.full((24, 32), 7, dtype=np.uint8)
    write_image_atomic(out / "p2.png", stray)  # e.g. another method's image
    result = _fuse(ir_dir, vi_dir, out, "--weights", w0)
    assert result.exit_code == 1 and "did not write" in result.output
    assert not (out / "p1.png").exists()  # refused before any work
    assert (read_image(out / "p2.png") == stray).all()
    # The manifest of a later run lists only what occo made, never a stray file.
    write_image_atomic(out / "extra.png", stray)
    assert _fuse(ir_dir, vi_dir, out, "--weights", w0, "--overwrite").exit_code == 0
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert sorted(manifest["outputs"]) == ["p1", "p2", "p3"]


def test_two_image_files_fuse_one_pair(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, _) = clean_pairs
    out = tmp_path / "one"
    result = _fuse(ir_dir / "p2.png", vi_dir / "p2.png", out, "--weights", w0)
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.glob("*.png")] == ["p2.png"]
    mixed = _fuse(ir_dir / "p2.png", vi_dir, tmp_path / "x", "--weights", w0)
    assert mixed.exit_code == 1 and "two folders or two image files" in mixed.output


def test_nested_folders_are_counted_and_said(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, _) = clean_pairs
    (ir_dir / "night").mkdir()
    (vi_dir / "night").mkdir()
    result = _fuse(ir_dir, vi_dir, tmp_path / "fused", "--weights", w0)
    assert result.exit_code == 0
    assert "2 subfolder(s) not searched" in result.stderr


def test_training_checkpoint_points_to_the_run_weights(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, _) = clean_pairs
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    torch.save({"format": "occo-train-checkpoint", "model": {}}, run / "checkpoint.pt")
    (run / "best.safetensors").write_bytes(w0.read_bytes())
    result = _fuse(ir_dir, vi_dir, tmp_path / "fused", "--weights", run / "checkpoint.pt")
    assert result.exit_code == 1
    message = result.output
    assert "training checkpoint" in message and str(run / "best.safetensors") in message


def test_a_busy_output_folder_is_refused_and_stale_temporaries_cleaned(clean_pairs, tmp_path):
    ir_dir, vi_dir, (w0, _) = clean_pairs
    out = tmp_path / "fused"
    out.mkdir()
    (out / ".p1.png.abcd1234.tmp").write_bytes(b"")  # left by a killed run
    with folder_lock(out, "occo fuse"):
        busy = _fuse(ir_dir, vi_dir, out, "--weights", w0)
    assert busy.exit_code == 1 and "busy" in busy.output
    assert (out / ".p1.png.abcd1234.tmp").exists()  # not touched while another run holds it
    result = _fuse(ir_dir, vi_dir, out, "--weights", w0)
    assert result.exit_code == 0 and "removed 1 temporary file" in result.stderr
    assert not list(out.glob(".*.tmp"))


def test_ctrl_c_says_what_was_done_and_how_to_resume(clean_pairs, tmp_path, monkeypatch):
    from occo.models.fuser import FileFuser

    ir_dir, vi_dir, (w0, _) = clean_pairs
    real_run = FileFuser.run

    def interrupted_run(self, jobs):
        for count, outcome in enumerate(real_run(self, jobs), 1):
            yield outcome
            if count == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(FileFuser, "run", interrupted_run)
    out = tmp_path / "fused"
    result = _fuse(ir_dir, vi_dir, out, "--weights", w0)
    assert result.exit_code == 130
    assert "interrupted:" in result.stderr and "run the same command again" in result.stderr
    monkeypatch.setattr(FileFuser, "run", real_run)
    resumed = _fuse(ir_dir, vi_dir, out, "--weights", w0)
    assert resumed.exit_code == 0 and "already there" in resumed.output
    assert sorted(p.name for p in out.glob("*.png")) == ["p1.png", "p2.png", "p3.png"]
