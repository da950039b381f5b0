"""Reports of ``occo eval detect`` and ``occo eval segment``: JSON objects and CSV text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from occo.data.version import OCCO_VERSION
from occo.eval.detect_rows import DetectRowResult
from occo.eval.detection import PROTOCOL, ClassScore
from occo.eval.report import best_of, json_number
from occo.eval.segmentation import SegmentRowResult

#: Columns of the detection report, per class and for all classes.
AP_KEYS = ("AP50", "AP50_95", "AP75")


def _ap(score: ClassScore) -> dict[str, Any]:
    return {
        **{key: json_number(getattr(score, key)) for key in AP_KEYS},
        "objects": score.objects,
        "detections": score.detections,
    }


def detection_best(results: Sequence[DetectRowResult], classes: Sequence[str]) -> dict[str, list]:
    """Best rows per column: ``CLASS/AP50`` ..., and ``all/AP50`` ..."""
    best = {}
    for cls in [*classes, "all"]:
        for key in AP_KEYS:
            best[f"{cls}/{key}"] = best_of(
                {
                    r.row.name: getattr(
                        r.scores.all if cls == "all" else r.scores.classes[cls], key
                    )
                    for r in results
                }
            )
    return best


def detection_report(
    results: Sequence[DetectRowResult], classes: Sequence[str], max_dets: int
) -> dict[str, Any]:
    """The JSON of ``occo eval detect --json``.

    ``{"rows": [{"name", "classes": {CLASS: {"AP50", "AP50_95", ...}}, "all": {...}, ...}],
    "classes", "protocol", "best"}``; AP values are null where undefined (a class
    without ground-truth objects).
    """
    rows = []
    for r in results:
        rows.append(
            {
                "name": r.row.name,
                "path": str(r.row.path),
                "kind": r.row.kind,
                "modality": r.row.modality,
                "origin": r.row.origin,
                "labels": str(r.truth.path),
                "labels_format": r.truth.format,
                "images": r.scores.images,
                "classes": {c: _ap(r.scores.classes[c]) for c in classes},
                "all": _ap(r.scores.all),
                "unlabelled_images": r.unlabelled,
                "labels_without_images": len(r.labels_without_images),
                "predictions_without_images": len(r.predictions_without_images),
                "clipped_boxes": r.clipped,
                "detector": {"cached": r.cached, "computed": r.computed, "seconds": r.seconds}
                if r.row.kind == "images"
                else None,
            }
        )
    return {
        "format": "occo-eval-detect",
        "occo_version": OCCO_VERSION,
        "protocol": PROTOCOL.format(max_dets=max_dets),
        "classes": list(classes),
        "rows": rows,
        "best": detection_best(results, classes),
    }


def _csv(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    return buffer.getvalue()


def _cell(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def detection_csv(results: Sequence[DetectRowResult], classes: Sequence[str]) -> str:
    """One line per row and class (and ``all``): row,class,AP50,AP50_95,AP75,objects,detections."""
    lines = []
    for r in results:
        for cls in [*classes, "all"]:
            score = r.scores.all if cls == "all" else r.scores.classes[cls]
            lines.append(
                [r.row.name, cls, *(_cell(getattr(score, k)) for k in AP_KEYS), score.objects,
                 score.detections]
            )  # fmt: skip
    return _csv(["row", "class", *AP_KEYS, "objects", "detections"], lines)


# ----------------------------------------------------------------------------- segmentation

#: How the numbers are made, for tables and JSON.
SEGMENT_PROTOCOL = (
    "one confusion matrix over all images of a row; IoU = TP/(TP+FP+FN) per class; "
    "mIoU = mean over scored classes present in ground truth or prediction; pixels whose "
    "ground truth is the ignore index ({ignore}) are left out"
)


def segmentation_best(
    results: Sequence[SegmentRowResult], classes: Mapping[int, str]
) -> dict[str, list]:
    best = {
        name: best_of({r.row.name: r.confusion.iou(c) for r in results})
        for c, name in classes.items()
    }
    best["mIoU"] = best_of({r.row.name: r.miou(list(classes)) for r in results})
    return best


def segmentation_report(
    results: Sequence[SegmentRowResult], classes: Mapping[int, str], ignore_index: int | None
) -> dict[str, Any]:
    """The JSON of ``occo eval segment --json``.

    ``{"rows": [{"name", "classes": {CLASS: {"IoU", "index", ...}}, "mIoU", "confusion"}],
    "classes", "ignore_index", "protocol", "best"}``; IoU is null for a class in neither
    ground truth nor prediction. ``confusion`` is the matrix of the scored classes plus a
    last row/column "other" (every other value), rows = ground truth.
    """
    ids = list(classes)
    rows = []
    for r in results:
        per_class = {}
        for c, name in classes.items():
            tp, fp, fn = r.confusion.counts(c)
            per_class[name] = {
                "IoU": json_number(r.confusion.iou(c)),
                "index": c,
                "truth_pixels": tp + fn,
                "TP": tp,
                "FP": fp,
                "FN": fn,
            }
        rows.append(
            {
                "name": r.row.name,
                "path": str(r.row.path),
                "kind": r.row.kind,
                "modality": r.row.modality,
                "origin": r.row.origin,
                "images": r.images,
                "classes": per_class,
                "mIoU": json_number(r.miou(ids)),
                "ignored_pixels": r.confusion.ignored,
                "missing_predictions": len(r.missing_predictions),
                "predictions_without_labels": len(r.predictions_without_labels),
                "confusion": _reduced_confusion(r, ids),
                "segmenter": {"cached": r.cached, "computed": r.computed, "seconds": r.seconds}
                if r.row.kind == "images"
                else None,
            }
        )
    return {
        "format": "occo-eval-segment",
        "occo_version": OCCO_VERSION,
        "protocol": SEGMENT_PROTOCOL.format(ignore=ignore_index),
        "classes": {name: c for c, name in classes.items()},
        "ignore_index": ignore_index,
        "rows": rows,
        "best": segmentation_best(results, classes),
    }


def _reduced_confusion(result: SegmentRowResult, ids: Sequence[int]) -> list[list[int]]:
    """The matrix over the scored classes plus one "other" class (all remaining values)."""
    matrix = result.confusion.matrix
    index = {c: k for k, c in enumerate(ids)}
    target = np.array([index.get(i, len(ids)) for i in range(matrix.shape[0])], np.int64)
    out = np.zeros((len(ids) + 1, len(ids) + 1), np.int64)
    np.add.at(out, (target[:, None], target[None, :]), matrix)
    return out.tolist()


def segmentation_csv(results: Sequence[SegmentRowResult], classes: Mapping[int, str]) -> str:
    """One line per row and class (and ``mIoU``): row,class,index,IoU,TP,FP,FN."""
    lines = []
    for r in results:
        for c, name in classes.items():
            tp, fp, fn = r.confusion.counts(c)
            lines.append([r.row.name, name, c, _cell(r.confusion.iou(c)), tp, fp, fn])
        lines.append([r.row.name, "mIoU", "", _cell(r.miou(list(classes))), "", "", ""])
    return _csv(["row", "class", "index", "IoU", "TP", "FP", "FN"], lines)
