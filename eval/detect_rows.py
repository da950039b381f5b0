"""``occo eval detect`` as a library: ground truth per row, detections (cached), COCO scores.

Each row's image set is its images (image rows), else ``images`` (a folder given for
prediction rows), else the images a COCO or VOC ground truth records with their sizes.
Images without ground truth count as images without objects; ground truth without an
image, and predictions without an image, are reported and left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from occo.data.annotations import BoxSet, ImageBoxes, read_boxes
from occo.data.errors import OccoError
from occo.data.io import read_image_size
from occo.eval.detection import DetectionScores, score_detections
from occo.eval.rowcache import RowCache, fingerprint
from occo.eval.rows import INFRARED, VISIBLE, Row


class GroundTruthError(OccoError, ValueError):
    """A row without ground truth, or without the image sizes its ground truth needs."""


@dataclass
class GroundTruth:
    """Ground-truth box sets: one for every row, or one per modality."""

    default: BoxSet | None = None
    """``--labels``: fused rows, and source rows without their own."""
    infrared: BoxSet | None = None
    """``--labels-ir``: infrared rows."""
    visible: BoxSet | None = None
    """``--labels-vi``: visible rows."""

    def for_row(self, row: Row) -> BoxSet:
        own = {INFRARED: self.infrared, VISIBLE: self.visible}.get(row.modality)
        found = own or self.default
        if found is None:
            option = {INFRARED: "--labels-ir", VISIBLE: "--labels-vi"}.get(row.modality, "--labels")
            raise GroundTruthError(
                f"no ground truth for row '{row.name}' ({row.modality}): pass {option} DIR or --labels DIR"
            )
        return found

    def sets(self) -> list[BoxSet]:
        return [s for s in (self.default, self.infrared, self.visible) if s is not None]


@dataclass
class DetectRowResult:
    """One row's scores and what was left out, for the report."""

    row: Row
    """The row."""
    truth: BoxSet
    """The ground truth it was scored against."""
    scores: DetectionScores
    """COCO scores."""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Stem -> ``(H, W)`` of the images scored."""
    ground_truth: dict[str, ImageBoxes] = field(default_factory=dict)
    """Stem -> ground-truth boxes in pixels (clipped)."""
    predictions: dict[str, ImageBoxes] = field(default_factory=dict)
    """Stem -> predicted boxes in pixels."""
    images_dir: dict[str, Path] = field(default_factory=dict)
    """Stem -> image file, where known (for overlays)."""
    unlabelled: int = 0
    """Images without a ground-truth entry (no objects)."""
    labels_without_images: list[str] = field(default_factory=list)
    """Ground-truth stems that are not among the row's images."""
    predictions_without_images: list[str] = field(default_factory=list)
    """Predicted stems (or unknown COCO image ids) that are not among the images."""
    clipped: int = 0
    """Ground-truth boxes clipped or dropped at the image border."""
    cached: int = 0
    """Images whose detections came from the cache."""
    computed: int = 0
    """Images the detector ran on."""
    seconds: float = 0.0
    """Detector wall time."""


def image_sizes(images: Mapping[str, Path]) -> dict[str, tuple[int, int]]:
    """Stem -> ``(H, W)`` from the image headers."""
    return {stem: read_image_size(path) for stem, path in images.items()}


def row_sizes(
    row: Row, truth: BoxSet, images: Mapping[str, Path] | None
) -> tuple[dict[str, tuple[int, int]], dict[str, Path]]:
    """The image set of a row with sizes, and the image files where known."""
    if row.kind == "images":
        return image_sizes(row.images), dict(row.images)
    if images:
        return image_sizes(images), dict(images)
    if truth.format in ("coco", "voc") and truth.sizes and len(truth.sizes) == len(truth.entries):
        return dict(truth.sizes), {}
    raise GroundTruthError(
        f"row '{row.name}' holds predictions only and the ground truth {truth.path} does not "
        "record image sizes; pass --images DIR (the images the predictions were made on)"
    )


def truth_boxes(
    truth: BoxSet, sizes: Mapping[str, tuple[int, int]]
) -> tuple[dict[str, ImageBoxes], int, int, list[str]]:
    """Ground truth of the image set in pixels.

    Returns:
        Stem -> boxes, boxes clipped, images without an entry, entries without an image.
    """
    boxes, clipped = {}, 0
    for stem, size in sizes.items():
        boxes[stem], n = truth.get(stem, size)
        clipped += n
    unlabelled = sum(1 for stem in sizes if stem not in truth)
    orphans = [stem for stem in truth.stems() if stem not in sizes]
    return boxes, clipped, unlabelled, orphans


ProgressFn = Callable[[str, int, int], None]


def evaluate_rows(
    rows: Sequence[Row],
    truth: GroundTruth,
    classes: Sequence[str],
    *,
    detector: Callable[[], object] | None = None,
    detector_settings: Mapping[str, object] | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 4,
    images: Mapping[str, Path] | None = None,
    class_names: Mapping[int, str] | None = None,
    max_dets: int = 100,
    progress: ProgressFn | None = None,
    save_every: float = 60.0,
) -> list[DetectRowResult]:
    """Score every row.

    Args:
        rows: from :func:`occo.eval.rows.plan_rows` (``outputs="predictions"``).
        truth: the ground truth per modality.
        classes: classes scored.
        detector: called once, when the first image row needs detections, to load the
            detector (:func:`occo.eval.detectors.load_detector`).
        detector_settings: what keys the cache (:func:`occo.eval.detectors.detector_settings`).
        cache_dir: cache folder for image rows' detections.
        batch_size: images per forward pass.
        images: the images of prediction rows (``--images``).
        class_names: class table for YOLO predictions and COCO-results category ids.
        max_dets: detections kept per image and class in scoring (COCO: 100).
        progress: ``progress(row_name, done, total)`` while detecting.
        save_every: seconds between cache saves while detecting (and once at the end).

    Returns:
        One result per row, in order.
    """
    loaded = None
    results = []
    for row in rows:
        gt = truth.for_row(row)
        sizes, files = row_sizes(row, gt, images)
        boxes, clipped, unlabelled, orphans = truth_boxes(gt, sizes)
        result = DetectRowResult(
            row, gt, DetectionScores(), sizes, boxes, images_dir=files, clipped=clipped,
            unlabelled=unlabelled, labels_without_images=orphans,
        )  # fmt: skip
        if row.kind == "predictions":
            found = read_boxes(
                row.path, class_names, predictions=True, reference=gt, stems=list(sizes)
            )
            result.predictions = {s: found.get(s, sizes[s])[0] for s in found.stems() if s in sizes}
            result.predictions_without_images = [s for s in found.stems() if s not in sizes]
            result.predictions_without_images += found.unmatched
        else:
            if cache_dir is None or detector_settings is None or detector is None:
                raise ValueError("image rows need a detector, its settings and a cache folder")
            cache = RowCache(cache_dir, row.name, row.path, detector_settings)
            prints = {stem: fingerprint(path) for stem, path in row.images.items()}
            have = cache.load_detections(prints)
            todo = [(s, p) for s, p in row.images.items() if s not in have]
            result.cached, result.computed = len(have), len(todo)
            if todo:
                if loaded is None:
                    loaded = detector()
                have, result.seconds = _detect_row(
                    row, loaded, todo, have, cache, prints, batch_size, progress, save_every
                )
            result.predictions = have
        result.scores = score_detections(
            sizes, result.ground_truth, result.predictions, classes, max_dets
        )
        results.append(result)
    return results


def _detect_row(
    row: Row,
    detector,
    todo: list[tuple[str, Path]],
    have: dict[str, ImageBoxes],
    cache: RowCache,
    prints: dict[str, str],
    batch_size: int,
    progress: ProgressFn | None,
    save_every: float,
) -> tuple[dict[str, ImageBoxes], float]:
    """Run the detector on the images not cached; save to the cache now and then and at the end."""
    from occo.eval.detectors import run_detector

    found = dict(have)
    total, last_save = len(row.images), time.monotonic()
    start = time.perf_counter()
    if progress is not None:
        progress(row.name, len(found), total)

    def on_batch(batch: dict[str, ImageBoxes]) -> None:
        nonlocal last_save
        found.update(batch)
        if time.monotonic() - last_save > save_every:
            found.update(cache.save_detections(found, prints))
            last_save = time.monotonic()
        if progress is not None:
            progress(row.name, len(found), total)

    run_detector(detector, todo, batch_size, on_batch)
    seconds = time.perf_counter() - start
    return cache.save_detections(found, prints), seconds
