"""`occo eval segment`: the confusion matrix against a direct count, map rows, zero-shot rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occo.data.fused import write_fuse_manifest
from occo.data.io import write_image_atomic
from occo.eval.segmentation import ConfusionMatrix, paint_class_map
from tests import eval_tiny as tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    from occo.cli.app import app

    return app


def test_confusion_matrix_against_direct_count():
    rng = np.random.default_rng(0)
    confusion = ConfusionMatrix(ignore_index=255)
    pairs = []
    for _ in range(3):
        truth = rng.integers(0, 5, (17, 23)).astype(np.uint8)
        truth[rng.random(truth.shape) < 0.1] = 255
        guess = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 7, truth.shape))
        guess = guess.astype(np.uint8)
        confusion.update(truth, guess)
        pairs.append((truth, guess))
    direct = np.zeros((256, 256), np.int64)
    for truth, guess in pairs:
        for t, g in zip(truth.ravel(), guess.ravel(), strict=True):
            if t != 255:
                direct[t, g] += 1
    n = confusion.matrix.shape[0]
    np.testing.assert_array_equal(confusion.matrix, direct[:n, :n])
    assert direct[n:].sum() == 0 and direct[:, n:].sum() == 0
    assert confusion.ignored == sum(int((t == 255).sum()) for t, _ in pairs)
    for c in range(5):
        tp = sum(int(((t == c) & (g == c)).sum()) for t, g in pairs)
        fp = sum(int(((t != c) & (t != 255) & (g == c)).sum()) for t, g in pairs)
        fn = sum(int(((t == c) & (g != c)).sum()) for t, g in pairs)
        assert confusion.counts(c) == (tp, fp, fn)
        assert confusion.iou(c) == pytest.approx(tp / (tp + fp + fn), abs=1e-15)
    assert math.isnan(confusion.iou(9))  # in neither truth nor prediction


def test_paint_class_map_best_score_wins():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    labels = paint_class_map((4, 4), masks, [2, 1], np.array([0.9, 0.5]), background=0)
    np.testing.assert_array_equal(labels[:, 0], [2, 2, 1, 0])


def _maps(tmp_path: Path) -> tuple[Path, Path, Path]:
    truth = np.zeros((8, 10), np.uint8)
    truth[1:4, 1:5] = 2  # person
    truth[5:8, 4:9] = 1  # car
    truth[0, :] = 255  # unlabelled border
    noisy = truth.copy()
    noisy[0, :] = 0
    noisy[1:4, 1:3] = 0  # half the person missed
    for stem in ("a", "b"):
        write_image_atomic(tmp_path / "labels" / f"{stem}.png", truth)
        write_image_atomic(tmp_path / "perfect" / f"{stem}.png", np.where(truth == 255, 7, truth))
        write_image_atomic(tmp_path / "noisy" / f"{stem}.png", noisy)
    return tmp_path / "labels", tmp_path / "perfect", tmp_path / "noisy"


def test_map_rows_table_json_csv(app, tmp_path):
    labels, perfect, noisy = _maps(tmp_path)
    names = tmp_path / "classes.txt"
    names.write_text("unlabelled\ncar\nperson\n")
    result = runner.invoke(
        app, ["eval", "segment", str(perfect), str(noisy), "--labels", str(labels), "--class-names",
              str(names), "--json", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    perfect_row, noisy_row = report["rows"]
    assert perfect_row["mIoU"] == 1.0 and perfect_row["ignored_pixels"] == 2 * 10
    assert report["ignore_index"] == 255 and "ignore index (255)" in report["protocol"]
    assert noisy_row["classes"]["person"]["IoU"] == pytest.approx(6 / 12)
    assert noisy_row["classes"]["car"]["IoU"] == 1.0
    background_iou = (2 * 43) / (2 * 43 + 2 * 6)  # 70 scored pixels - 12 person - 15 car
    assert noisy_row["classes"]["unlabelled"]["IoU"] == pytest.approx(background_iou)
    assert noisy_row["mIoU"] == pytest.approx((0.5 + 1 + background_iou) / 3)
    assert report["best"]["mIoU"] == ["perfect"]
    assert noisy_row["confusion"][2] == [12, 0, 12, 0]  # person row: 12 missed, 12 right

    csv_path = tmp_path / "iou.csv"
    table = runner.invoke(
        app, ["eval", "segment", str(perfect), str(noisy), "--labels", str(labels), "--classes",
              "1,2", "--csv", str(csv_path), "--show", str(tmp_path / "show")],
    )  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "mIoU" in table.stdout and "class 1" in table.stdout
    assert csv_path.read_text().splitlines()[0] == "row,class,index,IoU,TP,FP,FN"
    assert (tmp_path / "show" / "noisy" / "b.png").is_file()


def test_map_rows_errors(app, tmp_path):
    labels, perfect, _ = _maps(tmp_path)
    write_image_atomic(perfect / "a.png", np.zeros((5, 5), np.uint8))
    wrong = runner.invoke(app, ["eval", "segment", str(perfect), "--labels", str(labels), "-q"])
    assert "predictions must have the size of the images" in str(wrong.exception)
    write_fuse_manifest(perfect, labels, labels)
    fused = runner.invoke(app, ["eval", "segment", str(perfect), "--labels", str(labels), "-q"])
    assert "--segmenter" in str(fused.exception)


def test_zero_shot_rows_end_to_end(app, tmp_path_factory, tmp_path, monkeypatch):
    models = tiny.tiny_models(tmp_path_factory)
    gdino, sam = models["gdino"], models["sam"]
    ir = tiny.write_images(tmp_path / "ir", seed=1)
    vi = tiny.write_images(tmp_path / "vi", seed=2)
    fused = tiny.write_images(tmp_path / "fused", seed=3)
    write_fuse_manifest(fused, ir, vi)
    for stem in tiny.STEMS:
        labels = np.zeros(tiny.SIZE, np.uint8)
        for name, x0, y0, x1, y1 in tiny.BOXES.get(stem, []):
            labels[y0:y1, x0:x1] = tiny.CLASSES.index(name) + 1
        write_image_atomic(tmp_path / "labels" / f"{stem}.png", labels)
    names = tmp_path / "classes.txt"
    names.write_text("background\nperson\nbicycle\ncar\n")
    args = ["eval", "segment", str(fused), "--labels", str(tmp_path / "labels"), "--class-names",
            str(names), "--classes", "person,car", "--segmenter", str(sam), "--detector", str(gdino),
            "--box-threshold", "0.5", "--device", "cpu", "--cache", str(tmp_path / "cache"), "--json",
            "-q"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert [r["name"] for r in report["rows"]] == ["infrared", "visible", "fused"]
    assert all(r["segmenter"]["computed"] == 3 and r["images"] == 3 for r in report["rows"])
    assert set(report["rows"][2]["classes"]) == {"person", "car"}
    maps = sorted((tmp_path / "cache").glob("fused-*/*.png"))
    assert len(maps) == 3

    import occo.masks.segmenter as segmenter

    monkeypatch.setattr(segmenter, "load_segmenter", lambda *a, **k: pytest.fail("cache unused"))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows"][2]["classes"] == report["rows"][2]["classes"]


def test_binary_0_255_masks_score_255_as_the_object_class(app, tmp_path):
    """occo's own `masks export` writes 0/255 PNGs: the default ignore value 255 would drop
    the object class, so such label maps are detected and 255 is scored."""
    rng = np.random.default_rng(0)
    labels, pred = tmp_path / "labels", tmp_path / "pred"
    for stem in ("a", "b"):
        mask = np.where(rng.random((12, 16)) > 0.6, 255, 0).astype(np.uint8)
        write_image_atomic(labels / f"{stem}.png", mask)
        write_image_atomic(pred / f"{stem}.png", mask)
    result = runner.invoke(app, ["eval", "segment", str(pred), "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    assert "hold only 0 and 255" in result.output
    report = json.loads(result.stdout)
    assert report["ignore_index"] is None
    assert report["rows"][0]["ignored_pixels"] == 0 and report["rows"][0]["mIoU"] == 1.0
    explicit = runner.invoke(app, ["eval", "segment", str(pred), "--labels", str(labels),
                                   "--json", "--ignore-index", "255", "-q"])  # fmt: skip
    assert json.loads(explicit.stdout)["ignore_index"] == 255
