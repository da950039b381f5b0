"""Hostile and malformed inputs: issue 27, causes 4, 8, 9 and 10 (annotations, class maps,
configs, checkpoints).

Each test crafts its file itself. Before the fix each one gave a raw traceback, a huge
allocation or a silent wrong answer; now each is refused in one line that names the file
(and the line or entry), or, where the input is fine (a byte-order mark), read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from occo.data.annotations import AnnotationError, ImageBoxes, read_boxes
from occo.data.errors import OccoError
from occo.data.io import write_image_atomic


def _one_line(exc: BaseException, *words: str) -> None:
    text = str(exc)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


def _coco(path: Path, **changes) -> Path:
    record = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8]}],
    }
    record.update(changes)
    path.write_text(json.dumps(record))
    return path


# --- cause 4: bounds checked before allocating -------------------------------------------------


def test_a_16_bit_label_pixel_of_65535_is_refused_before_any_matrix(tmp_path):
    from occo.eval.rows import Row
    from occo.eval.segmentation import SegmentationError, score_maps

    truth = np.zeros((8, 8), np.uint16)
    truth[3, 4] = 65535  # one pixel: 65536 x 65536 int64 counts (32 GiB) before the fix
    write_image_atomic(tmp_path / "labels" / "a.png", truth)
    write_image_atomic(tmp_path / "preds" / "a.png", np.zeros((8, 8), np.uint16))
    row = Row("preds", tmp_path / "preds", "maps")
    with pytest.raises(SegmentationError) as caught:
        score_maps(row, {"a": tmp_path / "labels" / "a.png"}, {"a": tmp_path / "preds" / "a.png"},
                   ignore_index=255, num_classes=9)  # fmt: skip
    _one_line(caught.value, str(tmp_path / "labels" / "a.png"), "65535", "--ignore-index")


def test_a_predicted_value_beyond_the_classes_is_a_wrong_prediction_not_a_huge_matrix():
    from occo.eval.segmentation import ConfusionMatrix

    confusion = ConfusionMatrix(ignore_index=None, num_classes=3)
    truth = np.array([[0, 1], [2, 2]], np.uint16)
    confusion.update(truth, np.array([[0, 65535], [2, 2]], np.uint16))
    assert confusion.matrix.shape == (4, 4)  # the classes and one "no class" column
    assert confusion.iou(1) == 0.0 and confusion.iou(2) == 1.0


@pytest.mark.parametrize(
    "values, words",
    [
        ({"widths": [100000, 100000], "heads": [1, 1]}, ["4096"]),
        ({"widths": [4] * 9, "heads": [1] * 9}, ["9 levels", "8"]),
        ({"widths": [1e20, 8], "heads": [1, 1]}, ["4096"]),
        ({"in_channels": 10**9}, ["in_channels"]),
    ],
)
def test_network_sizes_are_bounded_before_building(values, words):
    from occo.models.config import FIFNConfig

    with pytest.raises(ValueError) as caught:
        FIFNConfig.from_dict(values)
    _one_line(caught.value, *words)


def test_yaml_numbers_like_crop_1e20_are_refused(tmp_path):
    from occo.train.config import ConfigError, TrainConfig, load_config_file

    for text, word in (("crop: 1e20\n", "crop"), ("lr: .inf\n", "lr"),
                       ("model: {widths: [100000, 100000], heads: [1, 1]}\n", "4096")):  # fmt: skip
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError) as caught:
            TrainConfig().replace(load_config_file(tmp_path / "c.yaml"))
        _one_line(caught.value, word)


# --- cause 8: malformed files, one line each ---------------------------------------------------


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"images": [{"id": 1, "file_name": "a.png", "width": [1], "height": 24}]}, ["width [1]"]),
        ({"annotations": None}, ["'annotations' must be a list"]),
        ({"categories": {"id": 1}}, ["'categories' must be a list"]),
    ],
)
def test_malformed_coco_is_one_line(tmp_path, changes, words):
    path = _coco(tmp_path / "gt.json", **changes)
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path)
    _one_line(caught.value, str(path), *words)


def test_json_nested_100k_deep_is_one_line(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path)
    _one_line(caught.value, str(path), "nested too deeply")


def test_weights_metadata_config_nested_100k_deep_is_a_value_error():
    from occo.models.config import FIFNConfig

    with pytest.raises(ValueError, match="nested too deeply"):  # what load_weights reports
        FIFNConfig.from_json('{"widths": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_results_with_a_score_that_is_not_a_number(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": "a", "category_name": "person",
                                 "bbox": [1, 1, 4, 4], "score": "high"}]))  # fmt: skip
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path, predictions=True)
    _one_line(caught.value, str(path), "result 0", "score must be a number", "'high'")


def test_yaml_objective_as_a_plain_value_is_one_line(tmp_path):
    from occo.train.config import ConfigError, TrainConfig, load_config_file

    (tmp_path / "c.yaml").write_text("objective: pixel\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig().replace(load_config_file(tmp_path / "c.yaml"))
    _one_line(caught.value, "objective must be a mapping", "'pixel'")


# --- cause 9: non-finite numbers ----------------------------------------------------------------


def _yolo(tmp_path: Path, line: str) -> Path:
    folder = tmp_path / "labels"
    folder.mkdir(exist_ok=True)
    (folder / "classes.txt").write_text("person\n")
    (folder / "a.txt").write_text("0 0.5 0.5 0.2 0.2 0.9\n" + line + "\n")
    return folder


@pytest.mark.parametrize(
    "line", ["0 0.5 0.5 inf inf 0.9", "0 nan 0.5 0.2 0.2 0.9", "0 0.5 0.5 0.2 0.2 nan",
             "0 0.5 0.5 0.2 0.2 -inf"],  # fmt: skip
)
def test_non_finite_yolo_values_are_refused_with_file_and_line(tmp_path, line):
    folder = _yolo(tmp_path, line)
    with pytest.raises(AnnotationError) as caught:
        read_boxes(folder, predictions=True)
    _one_line(caught.value, f"{folder / 'a.txt'}:2", "non-finite")


def test_an_infinite_coco_box_is_refused_not_a_full_image_mask(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(
        '{"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],'
        ' "categories": [{"id": 1, "name": "person"}],'
        ' "annotations": [{"id": 7, "image_id": 1, "category_id": 1,'
        ' "bbox": [0, 0, Infinity, Infinity]}]}'
    )
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path)
    _one_line(caught.value, str(path), "annotation 7", "non-finite")


def test_a_nan_voc_box_is_refused(tmp_path):
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "a.xml").write_text(
        "<annotation><object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>nan</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(AnnotationError) as caught:
        read_boxes(tmp_path / "voc")
    _one_line(caught.value, "a.xml", "<xmax>", "not a finite number")


def test_nan_confidences_are_refused_by_the_scorer():
    from occo.eval.detection import score_detections

    truth = {"a": ImageBoxes([[1, 1, 5, 5]], ["person"])}
    guesses = {"a": ImageBoxes([[1, 1, 5, 5]], ["person"], scores=[math.nan])}
    with pytest.raises(OccoError) as caught:
        score_detections({"a": (8, 8)}, truth, guesses, ["person"])
    _one_line(caught.value, "image a", "not finite")


# --- cause 10: BOM, pickles, shared category ids, a damaged cached map --------------------------


def test_a_yolo_file_with_a_byte_order_mark_is_read(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "classes.txt").write_text("person\n")
    (folder / "a.txt").write_bytes("\ufeff0 0.5 0.5 0.25 0.5\n".encode())
    boxes, _ = read_boxes(folder).get("a", (8, 8))
    assert boxes.labels == ["person"] and boxes.boxes.tolist() == [[3.0, 2.0, 5.0, 6.0]]


def test_coco_categories_sharing_an_id_are_refused(tmp_path):
    path = _coco(tmp_path / "gt.json",
                 categories=[{"id": 1, "name": "person"}, {"id": 1, "name": "car"}])  # fmt: skip
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path)
    _one_line(caught.value, str(path), "'person' and 'car' share the id 1")


def test_resume_from_a_pickle_is_one_line_without_torchs_advice(tmp_path):
    import torch

    from occo.train.state import TrainingError, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "occo", "run": Path("runs/a")}, path)  # a Python object, not tensors
    with pytest.raises(TrainingError) as caught:
        load_checkpoint(path)
    _one_line(caught.value, str(path), "pickle")
    assert "weights_only" not in str(caught.value)


def test_a_damaged_cached_class_map_is_made_again(tmp_path):
    from occo.eval.rowcache import RowCache, fingerprint
    from occo.eval.rows import Row
    from occo.eval.segmentation import segment_row

    image = tmp_path / "row" / "a.png"
    write_image_atomic(image, np.full((8, 8, 3), 100, np.uint8))
    label = tmp_path / "labels" / "a.png"
    write_image_atomic(label, np.ones((8, 8), np.uint8))
    cache = RowCache(tmp_path / "cache", "row", tmp_path / "row", {"k": 1}, "segmentations")
    cache.save_maps({"a": np.ones((8, 8), np.uint8)}, ["a"], {"a": fingerprint(image)})
    cache.map_path("a").write_bytes(b"\x89PNG\r\n\x1a\n truncated by a full disk")

    class Segmenter:
        calls = 0

        def segment(self, images):
            Segmenter.calls += 1
            return [np.ones(i.shape[:2], np.uint8) for i in images]

    row = Row("row", tmp_path / "row", "images", images={"a": image})
    result = segment_row(row, {"a": label}, Segmenter, cache, ignore_index=255)
    assert result.recomputed == ["a"] and Segmenter.calls == 1
    assert result.confusion.iou(1) == 1.0
    again = segment_row(row, {"a": label}, Segmenter, cache, ignore_index=255)  # now cached
    assert again.recomputed == [] and again.cached == 1 and Segmenter.calls == 1


def test_a_cache_state_nested_100k_deep_is_redone_not_a_traceback(tmp_path):
    from occo.eval.rowcache import RowCache

    cache = RowCache(tmp_path / "cache", "row", tmp_path, {"classes": ["person"]})
    cache.state_path.parent.mkdir(parents=True)
    cache.state_path.write_text("[" * 100_000 + "]" * 100_000)
    assert cache.done({"a": "1:2"}) == set()
