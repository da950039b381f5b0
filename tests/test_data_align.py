"""Alignment before fusion (data.align), `occo align`, and `occo check`'s residual."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.align import AlignSettings, align_arrays, align_pair, matrix_displacement
from occo.data.io import read_image, read_png_text, write_image_atomic
from tests.test_data_registration import move, scene

runner = CliRunner()


def _matrix(shape, dx, dy, angle, scale) -> np.ndarray:
    h, w = shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    return matrix


@pytest.mark.parametrize(
    ("dx", "dy", "angle", "scale"),
    [(14.3, -9.6, 0.0, 1.0), (0.0, 0.0, 5.0, 1.0), (2.0, 3.0, 0.0, 1.04), (20, -12, -6.0, 0.97)],
    ids=["shift", "rotation", "scale", "combined"],
)
def test_known_transform_is_recovered_to_a_fraction_of_a_pixel(dx, dy, angle, scale):
    # scene(): the infrared is the visible inverted and squared (other polarity, other
    # contrast, other noise): only the edges' orientations are shared.
    ir, vi = scene(2)
    applied = _matrix(ir.shape, dx, dy, angle, scale)
    result = align_pair(move(ir, dx, dy, angle, scale), vi)
    assert result.left_alone is None, result.left_alone
    error = matrix_displacement(result.matrix - applied + np.eye(2, 3), ir.shape)
    assert error < 0.6, (error, result.record())
    assert result.rotation_deg == pytest.approx(angle, abs=0.15)
    assert result.scale == pytest.approx(scale, abs=0.003)
    # The warped image is the original again, inside the frame (its border is filled).
    inner = (slice(40, -40), slice(40, -40))
    before = np.abs(move(ir, dx, dy, angle, scale).astype(float) - ir)[inner].mean()
    after = np.abs(result.ir.astype(float) - ir)[inner].mean()
    assert after < 0.35 * before, (before, after)
    assert result.residual_px is not None and result.residual_px < 0.6


def test_registered_pair_is_left_alone():
    ir, vi = scene(1)
    result = align_pair(ir, vi)
    assert result.left_alone is not None and result.left_alone.startswith("already aligned")
    assert result.ir is ir and np.array_equal(result.matrix, np.eye(2, 3))
    assert result.displacement_px < 1.0
    record = json.loads(json.dumps(result.record()))
    assert record["aligned"] is False and record["border_fraction"] == 0


@pytest.mark.parametrize("kind", ["noise", "flat", "other-scene"])
def test_unreliable_pairs_are_left_alone(kind):
    rng = np.random.default_rng(3)
    _, vi = scene(1)
    ir = {
        "noise": rng.integers(0, 256, vi.shape[:2]).astype(np.uint8),
        "flat": (100 + rng.integers(0, 3, vi.shape[:2])).astype(np.uint8),
        "other-scene": scene(7)[0],
    }[kind]
    result = align_pair(ir, vi)
    assert result.left_alone is not None and "unreliable" in result.left_alone, result.left_alone
    assert result.ir is ir and result.residual_px is None


def test_a_failed_estimate_of_a_structured_pair_is_refined_from_no_transform():
    # A large scale change defeats the estimate's correlation (it then finds nothing,
    # agreement under the floor) while the coarse-to-fine refinement still recovers it.
    from dataclasses import replace

    from occo.data.registration import estimate_registration

    ir, vi = scene(2)
    applied = _matrix(ir.shape, 0.0, 0.0, 0.0, 1.05)
    moved = move(ir, 0.0, 0.0, 0.0, 1.05)
    failed = replace(estimate_registration(moved, vi), agreement=0.05, shift_px=(0.0, 0.0),
                     rotation_deg=0.0, scale=1.0)  # fmt: skip
    assert not failed.reliable
    result = align_pair(moved, vi, estimate=failed)
    assert result.left_alone is None, result.left_alone
    assert matrix_displacement(result.matrix - applied + np.eye(2, 3), ir.shape) < 0.6


def test_colour_16_bit_infrared_keeps_its_type_and_gets_no_dark_frame():
    ir, vi = scene(4)
    ir16 = np.dstack([ir, ir, ir]).astype(np.uint16) * 257
    moved = move(ir16, 24, -16)
    result = align_pair(moved, vi)
    assert result.ir.dtype == np.uint16 and result.ir.shape == ir16.shape
    assert 0.05 < result.border_fraction < 0.2
    left, top, right, bottom = result.border_px
    # Content moved right and up: the infrared has nothing for the right and top edges.
    assert right >= 20 and top >= 12 and left <= 2 and bottom <= 2, result.border_px
    filled = result.ir[:12, 30:-30].astype(float).mean()  # inside the filled band
    assert filled > 0.5 * ir16.astype(float).mean()  # not black
    replicate = align_pair(moved, vi, AlignSettings(border="replicate"))
    assert np.array_equal(replicate.matrix, result.matrix)


def test_align_arrays_never_raises_for_a_pair():
    image, record = align_arrays(np.zeros((1, 40), np.uint8), np.zeros((1, 40), np.uint8))
    assert image.shape == (1, 40) and record["aligned"] is False and "too small" in record["error"]
    ir, vi = scene(5)
    aligned, record = align_arrays(move(ir, 9, 4), vi)
    assert record["aligned"] and json.dumps(record)
    assert np.abs(np.array(record["matrix"])[:, 2] - (9, 4)).max() < 0.5


def _folders(tmp_path):
    for seed, (stem, shift) in enumerate({"a": (12, -7), "b": (0, 0)}.items()):
        ir, vi = scene(20 + seed)
        write_image_atomic(tmp_path / "ir" / f"{stem}.png", move(ir, *shift))
        write_image_atomic(tmp_path / "vi" / f"{stem}.png", vi)
    return tmp_path / "ir", tmp_path / "vi", tmp_path / "aligned"


def test_align_command_writes_resumes_and_refuses_to_overwrite(tmp_path):
    ir_dir, vi_dir, out = _folders(tmp_path)
    result = runner.invoke(app, ["align", str(ir_dir), str(vi_dir), str(out)])
    assert result.exit_code == 0, result.output
    assert "1 of 2 infrared image(s) warped" in result.output
    manifest = json.loads((out / "occo-align.json").read_text())
    assert manifest["aligned"] == ["a"] and list(manifest["left_alone"]) == ["b"]
    assert np.abs(np.array(manifest["pairs"]["a"]["matrix"])[:, 2] - (12, -7)).max() < 0.5
    assert read_image(out / "b.png").tobytes() == read_image(ir_dir / "b.png").tobytes()
    recorded = json.loads(read_png_text(out / "a.png")["occo-align"])
    assert recorded["alignment"]["aligned"] and recorded["settings"]["model"] == "similarity"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}

    again = runner.invoke(app, ["align", str(ir_dir), str(vi_dir), str(out)])
    assert again.exit_code == 0 and "resuming: 2 of 2" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert json.loads((out / "occo-align.json").read_text())["aligned"] == ["a"]

    other = runner.invoke(app, ["align", str(ir_dir), str(vi_dir), str(out), "--min-px", "0.5"])
    assert (
        other.exit_code == 1 and "made otherwise" in other.output and "--overwrite" in other.output
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    replaced = runner.invoke(app, ["align", str(ir_dir), str(vi_dir), str(out), "--min-px", "0.5",
                                   "--overwrite"])  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert (
        json.loads((out / "occo-align.json").read_text())["settings"]["min_displacement_px"] == 0.5
    )

    inside = runner.invoke(app, ["align", str(ir_dir), str(vi_dir), str(ir_dir / "x")])
    assert inside.exit_code == 1 and "inside the input folder" in inside.output


def test_align_folder_is_the_library_call_under_the_command(tmp_path):
    from occo.data.align_folder import AlignEvents, AlignFolderError, align_folder

    ir_dir, vi_dir, out = _folders(tmp_path)
    seen: list[tuple[str, bool]] = []
    events = AlignEvents(pair=lambda stem, record, error: seen.append((stem, record["aligned"])))
    result = align_folder(ir_dir, vi_dir, out, residual=False, events=events)
    assert result.aligned == ["a"] and list(result.left_alone) == ["b"] and not result.failed
    assert sorted(seen) == [("a", True), ("b", False)] and result.manifest == out / "occo-align.json"
    again = align_folder(ir_dir, vi_dir, out, residual=False)
    assert again.resumed == 2 and again.aligned == ["a"]
    with pytest.raises(AlignFolderError, match="made otherwise"):  # other settings
        align_folder(ir_dir, vi_dir, out, AlignSettings(min_displacement_px=0.5), residual=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignFolderError, match="no pairs"):
        align_folder(ir_dir, tmp_path / "empty", tmp_path / "elsewhere")

def test_check_json_has_the_residual_and_a_tiny_pair_fails_alone(tmp_path):
    ir_dir, vi_dir, _ = _folders(tmp_path)
    write_image_atomic(ir_dir / "thin.png", np.zeros((1, 64), np.uint8))
    write_image_atomic(vi_dir / "thin.png", np.zeros((1, 64), np.uint8))
    result = runner.invoke(app, ["check", str(ir_dir), str(vi_dir), "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    record = json.loads(result.stdout)
    assert "too small" in record["failed"]["thin"]
    pairs = {p["stem"]: p for p in record["pairs"]}
    assert set(pairs) == {"a", "b"}
    assert pairs["a"]["alignment"]["aligned"] and pairs["a"]["residual_px"] < 0.6
    assert pairs["a"]["displacement_px"] > 10
    assert not pairs["b"]["alignment"]["aligned"] and pairs["b"]["residual_px"] < 1.0


def test_fuse_folder_aligns_records_and_resumes_only_with_align(tmp_path):
    import torch

    from occo.data.errors import OccoError
    from occo.models.checkpoint import save_weights
    from occo.models.fifn import FIFN
    from occo.models.fusing import FuseSettings, fuse_folder
    from tests.helpers import TINY_FIFN

    ir, vi = scene(30)
    for folder, image in (("ir", move(ir, 14, -8)), ("vi", vi), ("ir0", ir), ("vi0", vi)):
        write_image_atomic(tmp_path / folder / "p.png", image)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval())
    settings = FuseSettings(weights=weights, device="cpu", align=True)
    notes: list[str] = []
    from occo.models.fusing import FuseEvents

    events = FuseEvents(note=notes.append, warn=notes.append)
    out = tmp_path / "aligned"
    result = fuse_folder(tmp_path / "ir", tmp_path / "vi", out, settings, events)
    assert result.fused == 1 and not result.failures
    assert any("--align: 1 of 1 infrared image(s) warped" in line for line in notes), notes
    record = json.loads(read_png_text(out / "p.png")["occo-align"])
    assert record["aligned"] and np.abs(np.array(record["matrix"])[:, 2] - (14, -8)).max() < 0.5
    assert json.loads(read_png_text(out / "p.png")["occo-fuse"])["align"] is True
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["alignment"]["aligned"] == ["p"]

    again = fuse_folder(tmp_path / "ir", tmp_path / "vi", out, settings)
    assert again.skipped == 1 and again.fused == 0
    # Made by another alignment algorithm: other pixels, so no resume.
    from occo.data import align as align_module

    provenance = json.loads(read_png_text(out / "p.png")["occo-fuse"])
    assert provenance["align_algorithm"] == align_module.ALGORITHM_VERSION
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(align_module, "ALGORITHM_VERSION", align_module.ALGORITHM_VERSION + 1)
        with pytest.raises(OccoError):
            fuse_folder(tmp_path / "ir", tmp_path / "vi", out, settings)
    with pytest.raises(OccoError, match="align"):
        fuse_folder(
            tmp_path / "ir", tmp_path / "vi", out, FuseSettings(weights=weights, device="cpu")
        )

    # Against the fused image of the registered pair, the aligned one is far closer.
    plain = tmp_path / "plain"
    fuse_folder(
        tmp_path / "ir", tmp_path / "vi", plain, FuseSettings(weights=weights, device="cpu")
    )
    reference = tmp_path / "reference"
    fuse_folder(
        tmp_path / "ir0", tmp_path / "vi0", reference, FuseSettings(weights=weights, device="cpu")
    )
    truth = read_image(reference / "p.png").astype(float)[20:-20, 20:-20]
    error = {name: np.abs(read_image(folder / "p.png").astype(float)[20:-20, 20:-20] - truth).mean()
             for name, folder in (("aligned", out), ("plain", plain))}  # fmt: skip
    assert error["aligned"] < 0.5 * error["plain"], error

    # Alignment comes before the network: tiled, the aligned pair fuses as it does whole.
    tiled = tmp_path / "tiled"
    fuse_folder(tmp_path / "ir", tmp_path / "vi", tiled,
                FuseSettings(weights=weights, device="cpu", align=True, tile=128))  # fmt: skip
    assert json.loads(read_png_text(tiled / "p.png")["occo-align"])["matrix"] == record["matrix"]
    whole = read_image(out / "p.png").astype(int)
    assert np.abs(read_image(tiled / "p.png").astype(int) - whole).max() <= 1


# --- videos: one transform per stream, or one every N frames --------------------------------


def _frames(n: int, dx: float = 14, dy: float = -8):
    """n frame pairs of one scene, the infrared displaced by (dx, dy), a little noise each."""
    ir, vi = scene(11)
    rng = np.random.default_rng(0)
    moved = move(ir, dx, dy)
    noisy = [
        np.clip(moved + rng.normal(0, 2, moved.shape), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    return noisy, [vi] * n, ir


def test_stream_aligner_estimates_once_and_warps_every_frame():
    from occo.data.align_stream import StreamAligner

    irs, vis, truth = _frames(4)
    aligner = StreamAligner()
    out = [aligner.align(k, ir, vi) for k, (ir, vi) in enumerate(zip(irs, vis, strict=True))]
    assert len(aligner.records) == 1 and aligner.records[0]["from_frame"] == 0
    assert aligner.records[0]["used"] and aligner.warped_frames == 4
    matrix = np.array(aligner.records[0]["matrix"])
    assert np.abs(matrix[:, 2] - (14, -8)).max() < 0.5
    inner = (slice(30, -30), slice(30, -30))
    for frame, before in zip(out, irs, strict=True):  # every frame warped back, not only the first
        after_error = np.abs(frame.astype(float) - truth)[inner].mean()
        assert after_error < 0.4 * np.abs(before.astype(float) - truth)[inner].mean()
    summary = json.loads(json.dumps(aligner.summary()))
    assert summary["every"] is None and summary["warped_frames"] == 4


def test_stream_aligner_every_n_frames_and_an_unreliable_stream():
    from occo.data.align_stream import UNDECIDED_RETRY_FRAMES, StreamAligner

    irs, vis, _ = _frames(7)
    aligner = StreamAligner(every=3)
    for k, (ir, vi) in enumerate(zip(irs, vis, strict=True)):
        aligner.align(k, ir, vi)
    assert [r["from_frame"] for r in aligner.records] == [0, 3, 6]

    rng = np.random.default_rng(5)
    _, vi = scene(1)
    noise = rng.integers(0, 256, vi.shape[:2]).astype(np.uint8)
    blind = StreamAligner()
    frames = UNDECIDED_RETRY_FRAMES + 2
    assert all(blind.align(k, noise, vi) is noise for k in range(frames))
    assert [r["from_frame"] for r in blind.records] == [0, UNDECIDED_RETRY_FRAMES]
    assert not any(r["used"] for r in blind.records) and blind.warped_frames == 0
    with pytest.raises(ValueError, match="every"):
        StreamAligner(every=0)


def test_fuse_video_with_align_records_the_transform(tmp_path):
    import torch

    from occo.models.checkpoint import save_weights
    from occo.models.fifn import FIFN
    from tests.helpers import TINY_FIFN

    irs, vis, _ = _frames(3)
    for k, (ir, vi) in enumerate(zip(irs, vis, strict=True)):
        write_image_atomic(tmp_path / "ir" / f"{k:04d}.png", ir)
        write_image_atomic(tmp_path / "vi" / f"{k:04d}.png", vi)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval())
    common = ["--weights", str(weights), "--device", "cpu"]
    out = tmp_path / "out.mkv"
    bad = runner.invoke(app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"), str(out),
                              *common, "--align-every", "2"])  # fmt: skip
    assert bad.exit_code == 1 and "needs --align" in bad.output and not out.exists()
    folders = runner.invoke(app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"),
                                  str(tmp_path / "png"), *common, "--align", "--align-every", "2"])  # fmt: skip
    assert folders.exit_code == 1 and "for videos" in folders.output
    result = runner.invoke(app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"), str(out),
                                 *common, "--align", "--align-every", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--align: 3 of 3 infrared frames warped" in result.output, result.output
    record = json.loads((tmp_path / "out.mkv.occo-fuse.json").read_text())
    alignment = record["alignment"]
    assert alignment["every"] == 2 and [e["from_frame"] for e in alignment["estimates"]] == [0, 2]
    assert np.abs(np.array(alignment["estimates"][0]["matrix"])[:, 2] - (14, -8)).max() < 0.5
    assert record["settings"]["align"] is True
