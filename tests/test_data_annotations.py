"""Box annotations: YOLO, VOC and COCO read to the same boxes; predictions; errors name files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from occo.data.annotations import (
    AnnotationError,
    ImageBoxes,
    clip_boxes,
    coco_results,
    parse_coco_results,
    read_boxes,
)
from occo.data.classes import ClassTableError, merge_class_names, select_class_names
from tests import eval_tiny as tiny


def _expected(stem: str) -> tuple[list, list]:
    items = tiny.BOXES.get(stem, [])
    return [list(map(float, b[1:])) for b in items], [b[0] for b in items]


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_formats_read_the_same_boxes(tmp_path, fmt):
    if fmt == "yolo":
        found = read_boxes(tiny.write_yolo(tmp_path / "yolo"))
        assert found.class_table == tmp_path / "yolo" / "classes.txt"
    elif fmt == "voc":
        found = read_boxes(tiny.write_voc(tmp_path / "voc"))
    else:
        found = read_boxes(tiny.write_coco(tmp_path / "coco" / "gt.json"))
        assert read_boxes(tmp_path / "coco").format == "coco"  # a folder with one .json
    assert found.format == fmt
    for stem in tiny.STEMS:
        boxes, clipped = found.get(stem, tiny.SIZE)
        expected, labels = _expected(stem)
        np.testing.assert_allclose(boxes.boxes, np.reshape(expected, (-1, 4)), atol=1e-6)
        assert boxes.labels == labels and clipped == 0 and boxes.scores is None
    assert set(tiny.STEMS[:2]) <= set(found.stems())


def test_yolo_needs_class_table_and_size(tmp_path):
    folder = tiny.write_yolo(tmp_path / "labels")
    (folder / "classes.txt").unlink()
    with pytest.raises(AnnotationError, match="--class-names"):
        read_boxes(folder)
    (tmp_path / "classes.txt").write_text("0 person\n1 bicycle\n2 car\n")  # one folder up (MSRS)
    found = read_boxes(folder)
    assert found.classes == tiny.CLASSES
    with pytest.raises(ValueError, match="image size"):
        found.get("0000")
    (folder / "0000.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(AnnotationError, match=r"0000.txt:1: class 7 is not in the class table"):
        read_boxes(folder)


def test_voc_unknown_class_lists_known(tmp_path):
    folder = tiny.write_voc(tmp_path / "voc")
    table = {0: "person", 1: "car"}
    with pytest.raises(AnnotationError, match="unknown class 'bicycle' .known: person, car"):
        read_boxes(folder, table)
    assert read_boxes(folder).classes == ["bicycle", "car", "person"]  # names found, sorted


def test_clipping_counts_boxes(tmp_path):
    boxes = ImageBoxes([[-5, 2, 10, 8], [50, 30, 70, 50], [60, 0, 70, 5], [1, 1, 3, 3]], ["a"] * 4)
    clipped, count = clip_boxes(boxes, (40, 56))
    assert count == 3  # two cut at the border, one entirely outside (dropped)
    np.testing.assert_array_equal(clipped.boxes, [[0, 2, 10, 8], [50, 30, 56, 40], [1, 1, 3, 3]])


def test_predictions_yolo_and_coco_results(tmp_path):
    truth = read_boxes(tiny.write_yolo(tmp_path / "gt"))
    scores = {s: [0.9 - 0.1 * i for i in range(len(b))] for s, b in tiny.BOXES.items()}
    yolo = read_boxes(
        tiny.write_yolo(tmp_path / "pred", scores=scores), predictions=True, reference=truth
    )
    boxes, _ = yolo.get("0001", tiny.SIZE)
    np.testing.assert_allclose(boxes.scores, scores["0001"])
    with pytest.raises(AnnotationError, match="confidence column"):
        read_boxes(tmp_path / "gt", predictions=True)

    # YOLOv5 --save-json: image_id int(stem) for numeric stems, category_id = class index
    results = [
        {"image_id": 1, "category_id": 2, "bbox": [20, 10, 30, 16], "score": 0.5},
        {"image_id": "0000", "category_id": 0, "bbox": [4, 6, 10, 24], "score": 0.7},
        {"image_id": 99, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.1},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    found = read_boxes(path, predictions=True, reference=truth, stems=tiny.STEMS)
    assert found.get("0001")[0].labels == ["car"] and found.get("0000")[0].labels == ["person"]
    np.testing.assert_allclose(found.get("0001")[0].boxes, [[20, 10, 50, 26]])
    assert "99" in found.stems()  # an unknown image: the caller lists it
    with pytest.raises(AnnotationError, match="COCO results list"):
        read_boxes(path)

    # against COCO ground truth, ids are the dataset's
    coco = read_boxes(tiny.write_coco(tmp_path / "gt.json"))
    path.write_text(
        json.dumps([{"image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1}])
    )
    found = read_boxes(path, predictions=True, reference=coco)
    assert found.stems() == ["0001"] and found.get("0001")[0].labels == ["car"]


def test_coco_results_round_trip():
    boxes = {"a": ImageBoxes([[1.234, 2, 10.5, 20]], ["car"], [0.123456789])}
    record = coco_results(boxes, ["person", "car"])
    assert record == [
        {"image_id": "a", "category_id": 2, "category_name": "car", "bbox": [1.23, 2.0, 9.27, 18.0],
         "score": 0.12346}
    ]  # fmt: skip
    back = parse_coco_results(record, "cache.json").get("a")[0]
    np.testing.assert_allclose(back.boxes, [[1.23, 2, 10.5, 20]])


def test_select_and_merge_class_names():
    assert select_class_names("Car, PERSON", ["person", "bicycle", "car"]) == ["person", "car"]
    assert select_class_names(None, ["a", "b"]) == ["a", "b"]
    with pytest.raises(ClassTableError, match="unknown class 'truck' .known: person, car"):
        select_class_names("truck", ["person", "car"])
    assert merge_class_names([["person", "car"], ["Car", "bus"]]) == ["person", "car", "bus"]
