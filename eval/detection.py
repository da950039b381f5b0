"""Detection scores with the COCO protocol, computed by pycocotools (never by hand).

The ground truth and the predictions of one table row are turned into in-memory COCO
objects (image ids 1..N in stem order, category ids 1..K in class order) and evaluated
with ``COCOeval`` for boxes: IoU thresholds 0.50:0.05:0.95, 101 recall points, all
object sizes, at most ``max_dets`` detections per image (COCO: 100). Per class, AP@.5
is the area under the interpolated precision-recall curve at IoU 0.5 and AP@[.5:.95]
its mean over the ten thresholds; pycocotools keeps the ``max_dets`` best detections per
image and class (occo's detectors also keep at most ``max_dets`` per image); the row's value ("all") is the mean over the classes
that have ground-truth objects, which is COCO's summary number. A class without
objects has no AP (NaN); a class with objects and no correct detection has AP 0.
Crowd boxes (COCO ``iscrowd``) are neither found nor missed, as in COCO.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from occo.data.annotations import ImageBoxes
from occo.data.classes import name_key
from occo.data.errors import OccoError

#: How the numbers are made, for tables and JSON.
PROTOCOL = (
    "COCO protocol (pycocotools COCOeval, bbox): AP@[.5:.95] = mean AP over IoU 0.50:0.05:0.95, "
    "AP50 at IoU 0.5; 101-point interpolated precision; all object sizes; up to {max_dets} "
    "detections per image and class; 'all' = mean over classes with ground-truth objects"
)


@dataclass
class ClassScore:
    """Scores of one class (or of all classes) over a set of images."""

    AP50: float = math.nan
    """Average precision at IoU 0.5 (NaN without ground-truth objects)."""
    AP75: float = math.nan
    """Average precision at IoU 0.75."""
    AP50_95: float = math.nan
    """Mean average precision over IoU 0.50:0.05:0.95."""
    objects: int = 0
    """Ground-truth objects (crowd boxes not counted)."""
    detections: int = 0
    """Predicted boxes scored (after the per-image cap)."""


@dataclass
class DetectionScores:
    """COCO scores of one row."""

    classes: dict[str, ClassScore] = field(default_factory=dict)
    """Per class, in class order."""
    all: ClassScore = field(default_factory=ClassScore)
    """Mean over classes with objects; counts summed."""
    images: int = 0
    """Images scored (those without objects included)."""


def _quiet():
    """pycocotools prints progress on stdout, which must stay clean for ``--json``."""
    return contextlib.redirect_stdout(io.StringIO())


def coco_dataset(
    sizes: Mapping[str, tuple[int, int]],
    ground_truth: Mapping[str, ImageBoxes],
    classes: Sequence[str],
) -> tuple[dict, dict[str, int], dict[str, int]]:
    """The ground truth as a COCO dataset dict.

    Args:
        sizes: stem -> ``(H, W)`` of every image scored (its order sets the image ids).
        ground_truth: stem -> boxes in pixels; missing stems have no objects.
        classes: the classes scored; boxes of other classes are left out.

    Returns:
        The dataset, stem -> image id, class key -> category id.
    """
    image_ids = {stem: i for i, stem in enumerate(sorted(sizes), 1)}
    category_ids = {name_key(name): k for k, name in enumerate(classes, 1)}
    annotations = []
    for stem, image_id in image_ids.items():
        boxes = ground_truth.get(stem)
        if boxes is None:
            continue
        for box, label, crowd in zip(boxes.boxes, boxes.labels, boxes.crowd, strict=True):
            category = category_ids.get(name_key(label))
            if category is None:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(crowd),
                }
            )
    dataset = {
        "images": [
            {"id": image_id, "file_name": stem, "height": sizes[stem][0], "width": sizes[stem][1]}
            for stem, image_id in image_ids.items()
        ],
        "categories": [{"id": k, "name": name} for k, name in enumerate(classes, 1)],
        "annotations": annotations,
    }
    return dataset, image_ids, category_ids


def coco_result_list(
    predictions: Mapping[str, ImageBoxes],
    image_ids: Mapping[str, int],
    category_ids: Mapping[str, int],
) -> list[dict]:
    """Predictions of the scored images and classes as a COCO results list (others left out)."""
    results = []
    for stem, boxes in predictions.items():
        image_id = image_ids.get(stem)
        if image_id is None:
            continue
        scores = boxes.scores if boxes.scores is not None else np.ones(len(boxes))
        for box, label, score in zip(boxes.boxes, boxes.labels, scores, strict=True):
            category = category_ids.get(name_key(label))
            if category is None:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


class DetectionInputError(OccoError, ValueError):
    """Boxes or confidences that cannot be scored (NaN, infinite): the message names them."""


def check_finite(boxes: Mapping[str, ImageBoxes], what: str) -> None:
    """Refuse NaN or infinite coordinates and confidences: COCOeval would rank them silently.

    Args:
        boxes: stem -> boxes (with or without scores).
        what: how the boxes are named in the message (``prediction``...).

    Raises:
        DetectionInputError: names the image, the entry and the value.
    """
    for stem, entry in boxes.items():
        bad = ~np.isfinite(entry.boxes).all(axis=1)
        if entry.scores is not None:
            bad |= ~np.isfinite(entry.scores)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            score = "" if entry.scores is None else f", confidence {entry.scores[i]}"
            raise DetectionInputError(
                f"{what} {i} of image {stem} is not finite (box {entry.boxes[i].tolist()}{score}); "
                "fix or remove it"
            )


def run_cocoeval(dataset: dict, results: list[dict], max_dets: int = 100):
    """``COCOeval`` (bbox) evaluated and accumulated, all object sizes, quietly.

    Returns:
        The ``COCOeval`` object; ``eval["precision"]`` has shape (10 IoUs, 101 recalls,
        K classes, 1 area range, 1 max-dets setting).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # loadRes cannot take an empty list: an empty result set, built the same way
            found = COCO()
            found.dataset = {**dataset, "annotations": []}
            found.createIndex()
        evaluator = COCOeval(truth, found, iouType="bbox")
        evaluator.params.imgIds = sorted(truth.getImgIds())
        evaluator.params.catIds = sorted(truth.getCatIds())
        evaluator.params.areaRng = [[0.0, 1e10]]  # the "all" range only: sizes are not reported
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [int(max_dets)]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan


def score_detections(
    sizes: Mapping[str, tuple[int, int]],
    ground_truth: Mapping[str, ImageBoxes],
    predictions: Mapping[str, ImageBoxes],
    classes: Sequence[str],
    max_dets: int = 100,
) -> DetectionScores:
    """COCO AP per class and over all classes for one row.

    Args:
        sizes: stem -> ``(H, W)`` of every image scored; images without ground truth
            count as images without objects, predictions on other images are ignored.
        ground_truth: stem -> boxes in pixels.
        predictions: stem -> boxes in pixels with scores.
        classes: the classes scored, in report order.
        max_dets: detections kept per image, best first (COCO: 100).

    Returns:
        The :class:`DetectionScores`.
    """
    if not classes:
        raise ValueError("no classes to score")
    if max_dets < 1:
        raise ValueError("--max-dets must be >= 1")
    check_finite(ground_truth, "ground-truth box")
    check_finite(predictions, "prediction")
    dataset, image_ids, category_ids = coco_dataset(sizes, ground_truth, classes)
    results = coco_result_list(predictions, image_ids, category_ids)
    evaluator = run_cocoeval(dataset, results, max_dets)
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    thresholds = evaluator.params.iouThrs
    t50 = int(np.argmin(np.abs(thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(thresholds - 0.75)))
    kept = _kept_detections(evaluator, len(classes))
    scores = DetectionScores(images=len(sizes))
    for k, name in enumerate(classes):
        objects = sum(
            1 for a in dataset["annotations"] if a["category_id"] == k + 1 and not a["iscrowd"]
        )
        scores.classes[name] = ClassScore(
            AP50=_mean_defined(precision[t50, :, k]),
            AP75=_mean_defined(precision[t75, :, k]),
            AP50_95=_mean_defined(precision[:, :, k]),
            objects=objects,
            detections=kept[k],
        )
    scores.all = ClassScore(
        AP50=_mean_defined(precision[t50]),
        AP75=_mean_defined(precision[t75]),
        AP50_95=_mean_defined(precision),
        objects=sum(c.objects for c in scores.classes.values()),
        detections=sum(kept),
    )
    return scores


def _kept_detections(evaluator, classes: int) -> list[int]:
    """Detections per class that COCOeval scored (at most max_dets per image and class)."""
    counts = [0] * classes
    for entry in evaluator.evalImgs:
        if entry is not None:
            counts[evaluator.params.catIds.index(entry["category_id"])] += len(entry["dtIds"])
    return counts
