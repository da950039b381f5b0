"""`occo eval detect`: COCO scores with known answers, formats agree, detectors run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occo.data.annotations import ImageBoxes
from occo.data.fused import write_fuse_manifest
from occo.eval.detection import score_detections
from tests import eval_tiny as tiny

runner = CliRunner()
SIZES = {stem: tiny.SIZE for stem in tiny.STEMS}


@pytest.fixture(scope="module")
def app():
    from occo.cli.app import app

    return app


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return tiny.tiny_models(tmp_path_factory)


def _truth() -> dict[str, ImageBoxes]:
    return {
        s: ImageBoxes([b[1:] for b in items], [b[0] for b in items])
        for s, items in tiny.BOXES.items()
    }


def _as_predictions(truth, score=0.9, shift=0.0) -> dict[str, ImageBoxes]:
    return {
        s: ImageBoxes(b.boxes + [shift, 0, shift, 0], b.labels, np.full(len(b), score))
        for s, b in truth.items()
    }


def test_known_answers():
    truth = _truth()
    perfect = score_detections(SIZES, truth, _as_predictions(truth), tiny.CLASSES)
    for cls in tiny.CLASSES:
        assert perfect.classes[cls].AP50 == pytest.approx(1.0)
        assert perfect.classes[cls].AP50_95 == pytest.approx(1.0)
    assert perfect.all.AP50_95 == pytest.approx(1.0) and perfect.all.objects == 5

    # 2.5 px to the right on 10 px-wide boxes... every box shifted to IoU 0.6 exactly:
    # a w-wide box moved by w/4 overlaps 0.75w over a union of 1.25w.
    shifted = {
        s: ImageBoxes(
            b.boxes + np.outer((b.boxes[:, 2] - b.boxes[:, 0]) / 4, [1, 0, 1, 0]),
            b.labels,
            np.full(len(b), 0.9),
        )
        for s, b in truth.items()
    }
    moved = score_detections(SIZES, truth, shifted, tiny.CLASSES)
    assert moved.all.AP50 == pytest.approx(1.0) and moved.all.AP75 == 0.0
    assert 0 < moved.all.AP50_95 < 0.5

    # a class with objects and no detections scores 0; a class without objects has no AP
    no_bikes = {s: b.only(["person", "car"]) for s, b in _as_predictions(truth).items()}
    missed = score_detections(SIZES, truth, no_bikes, tiny.CLASSES + ["dog"])
    assert missed.classes["bicycle"].AP50 == 0.0 and missed.classes["person"].AP50 == pytest.approx(
        1
    )
    assert math.isnan(missed.classes["dog"].AP50) and missed.classes["dog"].objects == 0
    assert missed.all.AP50 == pytest.approx(2 / 3)  # mean over the three classes with objects

    # images without objects count: a confident false positive there costs precision
    fp = _as_predictions(truth)
    fp["0002"] = ImageBoxes([[1, 1, 9, 9]], ["person"], [0.95])
    spoiled = score_detections(SIZES, truth, fp, ["person"])
    assert spoiled.classes["person"].AP50 == pytest.approx(0.75)  # 3 TP after 1 FP: P = 3/4
    fp["0002"] = ImageBoxes([[1, 1, 9, 9]], ["person"], [0.05])  # ranked last: no harm
    assert score_detections(SIZES, truth, fp, ["person"]).classes["person"].AP50 == pytest.approx(1)
    only_labelled = {s: SIZES[s] for s in tiny.BOXES}
    assert score_detections(only_labelled, truth, fp, ["person"]).images == 2


def test_matches_pycocotools_called_directly():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    truth, found = {}, {}
    sizes = {f"{i:03d}": (60, 80) for i in range(12)}
    for stem in sizes:
        xy = rng.uniform(0, 50, (4, 2))
        boxes = np.hstack([xy, xy + rng.uniform(5, 25, (4, 2))])
        labels = list(rng.choice(["person", "car"], 4))
        truth[stem] = ImageBoxes(boxes, labels)
        jitter = boxes + rng.normal(0, 2.5, boxes.shape)
        found[stem] = ImageBoxes(jitter[:3], labels[:3], rng.uniform(0, 1, 3))
    ours = score_detections(sizes, truth, found, ["person", "car"])

    ids = {s: i for i, s in enumerate(sorted(sizes), 1)}
    cats = {"person": 1, "car": 2}
    gt = COCO()
    gt.dataset = {
        "images": [{"id": ids[s], "height": 60, "width": 80} for s in sizes],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": n, "image_id": ids[s], "category_id": cats[lab], "bbox": [x0, y0, x1 - x0, y1 - y0],
             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            for n, (s, (x0, y0, x1, y1), lab) in enumerate(
                ((s, box, lab) for s, b in truth.items() for box, lab in zip(b.boxes, b.labels, strict=True)), 1
            )
        ],
    }  # fmt: skip
    gt.createIndex()
    dt = gt.loadRes(
        [
            {"image_id": ids[s], "category_id": cats[lab], "bbox": [x0, y0, x1 - x0, y1 - y0],
             "score": float(sc)}
            for s, b in found.items()
            for (x0, y0, x1, y1), lab, sc in zip(b.boxes, b.labels, b.scores, strict=True)
        ]
    )  # fmt: skip
    evaluator = COCOeval(gt, dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert ours.all.AP50_95 == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert ours.all.AP50 == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours.all.AP75 == pytest.approx(evaluator.stats[2], abs=1e-12)
    assert 0.05 < ours.all.AP50_95 < 0.95  # a case where ranking and matching matter


def _detect(app, *args: str) -> dict:
    result = runner.invoke(app, ["eval", "detect", *args, "-q", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_formats_give_identical_scores(app, tmp_path):
    images = tiny.write_images(tmp_path / "images")
    scores = {s: [0.8, 0.6, 0.3][: len(b)] for s, b in tiny.BOXES.items()}
    moved = {
        s: [(n, x0 + 1, y0, x1 + 3, y1 - 2) for n, x0, y0, x1, y1 in items]
        for s, items in tiny.BOXES.items()
    }
    preds = tiny.write_yolo(tmp_path / "preds", moved, scores=scores)
    table = tmp_path / "classes.txt"
    (preds / "classes.txt").rename(table)  # YOLO class indices need a table beside VOC/COCO
    labels = {
        "yolo": tiny.write_yolo(tmp_path / "yolo"),
        "voc": tiny.write_voc(tmp_path / "voc"),
        "coco": tiny.write_coco(tmp_path / "coco.json"),
    }
    reports = {
        fmt: _detect(
            app,
            str(preds),
            "--labels",
            str(path),
            "--images",
            str(images),
            "--class-names",
            str(table),
        )
        for fmt, path in labels.items()
    }
    rows = {fmt: report["rows"][0] for fmt, report in reports.items()}
    assert rows["yolo"]["classes"] == rows["voc"]["classes"] == rows["coco"]["classes"]
    assert rows["yolo"]["all"] == rows["voc"]["all"] == rows["coco"]["all"]
    assert 0 < rows["yolo"]["all"]["AP50_95"] < rows["yolo"]["all"]["AP50"] <= 1
    assert rows["yolo"]["images"] == 3 and rows["yolo"]["unlabelled_images"] == 1
    assert set(rows["yolo"]["classes"]["person"]) >= {"AP50", "AP50_95"}


def _fused_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A fuse output folder with a manifest naming infrared and visible folders; YOLO labels."""
    ir = tiny.write_images(tmp_path / "ir", seed=1)
    vi = tiny.write_images(tmp_path / "vi", seed=2)
    fused = tiny.write_images(tmp_path / "fused", seed=3)
    write_fuse_manifest(fused, ir, vi, pairs=3)
    return fused, tiny.write_yolo(tmp_path / "labels")


def test_zero_shot_grounding_dino_end_to_end_and_cache(app, models, tmp_path, monkeypatch):
    fused, labels = _fused_dataset(tmp_path)
    cache = tmp_path / "cache"
    args = [str(fused), "--labels", str(labels), "--detector", str(models["gdino"]),
            "--device", "cpu", "--cache", str(cache), "-b", "2"]  # fmt: skip
    first = _detect(app, *args)
    names = [row["name"] for row in first["rows"]]
    assert names == ["infrared", "visible", "fused"]  # sources from the manifest come first
    assert all(row["detector"]["computed"] == 3 for row in first["rows"])
    assert all(row["all"]["detections"] > 0 for row in first["rows"])  # random queries fire
    assert first["classes"] == tiny.CLASSES and "pycocotools" in first["protocol"]
    results = sorted(cache.glob("*.json"))
    assert len([p for p in results if not p.name.endswith(".state.json")]) == 3
    cached = json.loads(next(p for p in results if p.name.startswith("fused-")).read_text())
    assert cached and {"image_id", "category_id", "bbox", "score"} <= set(cached[0])
    assert {d["category_name"] for d in cached} <= set(tiny.CLASSES)

    import occo.eval.detectors as detectors

    def no_model(*_a, **_k):
        raise AssertionError("the detector must not run when the cache holds the detections")

    monkeypatch.setattr(detectors, "load_detector", no_model)
    again = _detect(app, *args)
    assert [r["classes"] for r in again["rows"]] == [r["classes"] for r in first["rows"]]
    assert all(row["detector"]["cached"] == 3 for row in again["rows"])
    # per-modality ground truth (ground truth is not part of the cache key)
    ir_labels = tiny.write_yolo(tmp_path / "labels-ir", {"0000": tiny.BOXES["0000"][:1]})
    split = _detect(app, *args, "--labels-ir", str(ir_labels))
    assert split["rows"][0]["labels"] == str(ir_labels) and split["rows"][0]["all"]["objects"] == 1
    assert split["rows"][1]["labels"] == split["rows"][2]["labels"] == str(labels)
    # other settings never read that cache: the detector is needed again
    other = runner.invoke(app, ["eval", "detect", *args, "--score-threshold", "0.2", "-q"])
    assert isinstance(other.exception, AssertionError)
    alone = _detect(app, *args, "--no-sources")
    assert [row["name"] for row in alone["rows"]] == ["fused"]


def test_closed_set_detr_show_and_outputs(app, models, tmp_path):
    fused, labels = _fused_dataset(tmp_path)
    args = [str(fused), "--labels", str(labels), "--detector", str(models["detr"]), "--device",
            "cpu", "--cache", str(tmp_path / "cache"), "--no-sources"]  # fmt: skip
    report = _detect(app, *args, "--classes", "person,car", "--show", str(tmp_path / "show"))
    row = report["rows"][0]
    assert list(row["classes"]) == ["person", "car"] and row["detector"]["computed"] == 3
    assert row["all"]["detections"] > 0  # a random DETR fires on its queries
    sheet = tmp_path / "show" / "fused" / "0001.png"
    assert sheet.is_file()
    again = runner.invoke(app, ["eval", "detect", *args, "--show", str(tmp_path / "show"), "-q"])
    assert again.exit_code == 1 and "--overwrite" in again.output  # never replaces silently

    labels_dog = tmp_path / "labels2"
    tiny.write_yolo(labels_dog)
    (labels_dog / "classes.txt").write_text("person\nbicycle\ntruck\n")
    unknown = runner.invoke(app, ["eval", "detect", *args[:1], "--labels", str(labels_dog),
                                  *args[3:], "-q"])  # fmt: skip
    assert "does not know truck" in str(unknown.exception)  # the CLI prints it as one line
    assert "person, bicycle, car, dog" in str(unknown.exception)

    into_input = runner.invoke(app, ["eval", "detect", *args, "--csv", str(fused / "x.csv")])
    assert into_input.exit_code == 1 and "inside the input folder" in into_input.output
    csv_path = tmp_path / "det.csv"
    table = runner.invoke(app, ["eval", "detect", *args, "--csv", str(csv_path), "-q"])
    assert table.exit_code == 0 and "AP50" in table.stdout and "pycocotools" in table.stdout
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "row,class,AP50,AP50_95,AP75,objects,detections" and len(lines) == 1 + 4


def test_missing_model_and_bad_rows(app, tmp_path):
    fused, labels = _fused_dataset(tmp_path)
    missing = runner.invoke(
        app, ["eval", "detect", str(fused), "--labels", str(labels), "--device", "cpu",
              "--detector", "nobody/no-such-detector", "--cache", str(tmp_path / "c"), "-q"],
    )  # fmt: skip
    assert missing.exit_code != 0
    assert "hf download nobody/no-such-detector" in str(missing.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(app, ["eval", "detect", str(empty), "--labels", str(labels)])
    assert "no images and no predictions" in str(nothing.exception)
    no_truth = runner.invoke(app, ["eval", "detect", str(fused)])
    assert no_truth.exit_code == 1 and "--labels" in no_truth.output
