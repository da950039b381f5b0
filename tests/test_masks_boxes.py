"""`occo masks gen --boxes`: masks from YOLO/VOC/COCO boxes, filled or through SAM (no detector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occo.masks.boxes import fill_boxes
from occo.masks.store import SettingsMismatchError, open_mask_store
from tests import eval_tiny as tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    from occo.cli.app import app

    return app


def _dataset(tmp_path: Path) -> Path:
    tiny.write_images(tmp_path / "ds" / "ir", seed=1)
    tiny.write_images(tmp_path / "ds" / "vi", seed=2)
    return tmp_path / "ds"


def _filled(stem: str, classes=None) -> np.ndarray:
    mask = np.zeros(tiny.SIZE, np.uint8)
    for name, x0, y0, x1, y1 in tiny.BOXES.get(stem, []):
        if classes is None or name in classes:
            mask[y0:y1, x0:x1] = 1
    return mask


def _gen(app, dataset: Path, *args: str):
    return runner.invoke(app, ["masks", "gen", str(dataset), "-q", *args])


def test_fill_boxes_pixel_centres():
    mask = fill_boxes((6, 8), np.array([[1, 1, 3, 4], [5.4, 0.2, 5.6, 0.4], [-3, 4, 2, 9]]))
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 1:3] = 1  # integer box: exactly its pixels
    expected[0, 5] = 1  # thinner than a pixel: still marks one
    expected[4:6, 0:2] = 1  # partly outside: clipped
    np.testing.assert_array_equal(mask, expected)


def test_yolo_voc_coco_give_the_same_masks_equal_to_filled_boxes(app, tmp_path):
    dataset = _dataset(tmp_path)
    annotations = {
        "yolo": tiny.write_yolo(tmp_path / "yolo"),
        "voc": tiny.write_voc(tmp_path / "voc"),
        "coco": tiny.write_coco(tmp_path / "coco.json"),
    }
    stores = {}
    for fmt, path in annotations.items():
        stores[fmt] = tmp_path / f"{fmt}.h5"
        result = _gen(app, dataset, "--boxes", str(path), "--out", str(stores[fmt]))
        assert result.exit_code == 0, result.output
    readers = {fmt: open_mask_store(path) for fmt, path in stores.items()}
    for stem in tiny.STEMS:
        for reader in readers.values():
            ir, vi = reader.read(stem)
            np.testing.assert_array_equal(ir, _filled(stem))
            np.testing.assert_array_equal(vi, _filled(stem))
        pair = readers["voc"].read_pair(stem)
        assert pair.ir.labels == [b[0] for b in tiny.BOXES.get(stem, [])]
        np.testing.assert_allclose(
            pair.vi.boxes, [b[1:] for b in tiny.BOXES.get(stem, [])] or np.zeros((0, 4))
        )
        assert pair.ir.source == f"{stem}.png"
    settings = readers["yolo"].settings
    assert settings["source"] == "annotations" and settings["box_format"] == "yolo"
    assert settings["segmenter"] == "none (filled boxes)"
    assert settings["boxes_ir_dir"] == str(annotations["yolo"].resolve())


def test_per_modality_classes_missing_and_clipped(app, tmp_path):
    dataset = _dataset(tmp_path)
    ir_boxes = tiny.write_yolo(tmp_path / "labels" / "infrared")
    vi_only = {"0001": [("car", 40, 30, 70, 50)], "9999": [("person", 1, 1, 4, 4)]}
    vi_boxes = tiny.write_yolo(tmp_path / "labels" / "visible", vi_only)
    result = _gen(
        app,
        dataset,
        "--boxes-ir",
        str(ir_boxes),
        "--boxes-vi",
        str(vi_boxes),
        "--classes",
        "person",
    )
    assert result.exit_code == 0, result.output
    assert "have no annotation" in result.output and "9999" in result.output
    reader = open_mask_store(dataset / "masks.h5")
    assert reader.settings["classes"] == ["person"]
    ir, vi = reader.read("0001")
    np.testing.assert_array_equal(ir, _filled("0001", ["person"]))
    assert not vi.any()  # the visible car is not a chosen class; 0000 and 0002 have no file
    all_classes = _gen(
        app, dataset, "--boxes-ir", str(ir_boxes), "--boxes-vi", str(vi_boxes), "--out",
        str(tmp_path / "all.h5"),
    )  # fmt: skip
    assert (
        all_classes.exit_code == 0
        and "clipped to the image: infrared 0, visible 1" in all_classes.output
    )
    car = open_mask_store(tmp_path / "all.h5").read_pair("0001").vi
    np.testing.assert_array_equal(car.boxes, [[40, 30, 56, 40]])

    # the settings of a store record the classes: other classes are another store
    clash = _gen(app, dataset, "--boxes-ir", str(ir_boxes), "--boxes-vi", str(vi_boxes))
    assert isinstance(clash.exception, SettingsMismatchError)
    again = _gen(
        app,
        dataset,
        "--boxes-ir",
        str(ir_boxes),
        "--boxes-vi",
        str(vi_boxes),
        "--classes",
        "person",
    )
    assert again.exit_code == 0 and "nothing to do" in again.output
    wrong = _gen(app, dataset, "--boxes", str(ir_boxes), "--classes", "truck")
    assert wrong.exit_code == 1 and "unknown class 'truck'" in wrong.output
    both = _gen(app, dataset, "--boxes", str(ir_boxes), "--boxes-vi", str(vi_boxes))
    assert both.exit_code == 1 and "not both" in both.output


def test_boxes_prompt_sam_without_a_detector(app, tmp_path_factory, tmp_path, monkeypatch):
    import occo.masks.detector as detector
    import occo.masks.segmenter as segmenter

    sam = tiny.tiny_models(tmp_path_factory)["sam"]
    dataset = _dataset(tmp_path)
    seen = []
    original = segmenter.HFSamSegmenter._masks_for_boxes

    def spy(self, embedding, geometry, boxes):
        seen.append(boxes.cpu().numpy().copy())
        return original(self, embedding, geometry, boxes)

    def no_detector(*_a, **_k):
        raise AssertionError("no detector may run when boxes come from annotations")

    monkeypatch.setattr(segmenter.HFSamSegmenter, "_masks_for_boxes", spy)
    monkeypatch.setattr(detector.GroundingDinoDetector, "__init__", no_detector)
    labels = tiny.write_voc(tmp_path / "voc")
    result = _gen(app, dataset, "--boxes", str(labels), "--segmenter", str(sam), "--device", "cpu")
    assert result.exit_code == 0, result.output
    prompted = np.concatenate(seen)
    expected = [b[1:] for stem in ("0000", "0001") for b in tiny.BOXES[stem]]
    np.testing.assert_allclose(
        np.unique(prompted, axis=0), np.unique(np.array(expected, np.float32), axis=0)
    )  # every box reached SAM, on both modalities
    assert len(prompted) == 2 * len(expected)
    reader = open_mask_store(dataset / "masks.h5")
    assert reader.settings["segmenter"] == str(sam.resolve())
    assert not reader.read("0002")[0].any()  # no boxes: SAM not asked, mask empty
