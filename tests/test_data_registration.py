"""The cross-modal registration estimate, `occo check`, and the check inside `occo fuse`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import write_image_atomic
from occo.data.registration import estimate_registration
from occo.models.checkpoint import save_weights
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN

runner = CliRunner()


def scene(seed: int = 0, size: tuple[int, int] = (240, 320)) -> tuple[np.ndarray, np.ndarray]:
    """A visible image and an infrared rendering of the same shapes that shares no
    intensities with it: inverted, squared, another texture, other noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    shapes = np.zeros((h, w), np.float32)
    for _ in range(40):
        value = float(rng.uniform(0.2, 1.0))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(
                shapes,
                (x, y),
                (x + int(rng.integers(8, 50)), y + int(rng.integers(8, 50))),
                value,
                -1,
            )
        else:
            cv2.circle(shapes, (x, y), int(rng.integers(5, 25)), value, -1)
    shapes = cv2.GaussianBlur(shapes, (0, 0), 1.2)
    vi = np.clip(40 + 180 * shapes + rng.normal(0, 6, (h, w)), 0, 255)
    ir = np.clip(230 - 200 * shapes**2 + rng.normal(0, 10, (h, w)), 0, 255)
    color = np.dstack([vi, 0.8 * vi, 0.6 * vi + 30])
    return ir.astype(np.uint8), np.clip(color, 0, 255).astype(np.uint8)


def move(image: np.ndarray, dx: float, dy: float, angle: float = 0.0, scale: float = 1.0):
    """The image's content moved: a pixel at p goes to M p (rotation/scale about the centre)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_registered_pair_is_not_flagged():
    ir, vi = scene(1)
    estimate = estimate_registration(ir, vi)
    assert estimate.displacement_px < 1.5, estimate
    assert not estimate.misaligned()


@pytest.mark.parametrize(
    ("dx", "dy", "angle", "scale"),
    [(14, -9, 0.0, 1.0), (-30, 4, 0.0, 1.0), (0, 0, 4.0, 1.0), (3, 2, 0.0, 1.05)],
    ids=["shift", "large-shift", "rotation", "scale"],
)
def test_known_misalignment_is_measured(dx, dy, angle, scale):
    ir, vi = scene(2)
    estimate = estimate_registration(move(ir, dx, dy, angle, scale), vi)
    h, w = ir.shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    applied = np.linalg.norm(corners @ matrix[:, :2].T + matrix[:, 2] - corners, axis=1).max()
    assert estimate.misaligned(), estimate
    assert estimate.displacement_px == pytest.approx(applied, rel=0.15, abs=1.5)
    assert estimate.rotation_deg == pytest.approx(angle, abs=0.5)
    assert estimate.scale == pytest.approx(scale, abs=0.01)


def _dataset(tmp_path):
    pairs = {"aligned": (0, 0, 0.0), "shifted": (22, -6, 0.0), "rotated": (0, 0, 5.0)}
    for seed, (stem, (dx, dy, angle)) in enumerate(pairs.items()):
        ir, vi = scene(10 + seed)
        write_image_atomic(tmp_path / "ir" / f"{stem}.png", move(ir, dx, dy, angle))
        write_image_atomic(tmp_path / "vi" / f"{stem}.png", vi)
    return tmp_path / "ir", tmp_path / "vi"


def test_check_command_json_and_table(tmp_path):
    ir_dir, vi_dir = _dataset(tmp_path)
    result = runner.invoke(app, ["check", str(ir_dir), str(vi_dir), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    verdicts = {p["stem"]: p["misaligned"] for p in record["pairs"]}
    assert verdicts == {"aligned": False, "rotated": True, "shifted": True}
    shifted = next(p for p in record["pairs"] if p["stem"] == "shifted")
    assert shifted["displacement_px"] == pytest.approx(np.hypot(22, 6), abs=1.5)
    assert record["threshold_px"] == 10 and record["misaligned"] == 2
    strict = runner.invoke(app, ["check", str(ir_dir), str(vi_dir), "--threshold", "40"])
    assert strict.exit_code == 0 and "0 of 3 pair(s) misaligned by more than 40 px" in strict.stdout


def test_fuse_warns_about_misaligned_pairs_and_records_them(tmp_path):
    ir_dir, vi_dir = _dataset(tmp_path)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval())
    out = tmp_path / "fused"
    result = runner.invoke(app, ["fuse", str(ir_dir), str(vi_dir), str(out), "--weights",
                                 str(weights), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "shifted: the infrared image is displaced about 23 px" in result.output
    assert "2 of 3 fused pair(s) look misaligned" in result.output
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["registration"]["misaligned"] == ["rotated", "shifted"]
    assert set(manifest["registration"]["pairs"]) == {"aligned", "rotated", "shifted"}
    off = runner.invoke(app, ["fuse", str(ir_dir), str(vi_dir), str(tmp_path / "off"), "--weights",
                              str(weights), "--device", "cpu", "--misaligned-px", "0"])  # fmt: skip
    assert off.exit_code == 0 and "misaligned" not in off.output
