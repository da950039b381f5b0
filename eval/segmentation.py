"""Segmentation scores: one confusion matrix over the whole set, per-class IoU and mIoU.

Protocol (the usual one for MSRS/FMB-style benchmarks): ground truth and prediction are
class-index maps of equal size; pixels whose ground truth is the ignore index are left
out everywhere; all other pixels add one count to ``matrix[truth, prediction]``, summed
over every image of the set (not averaged per image). For a class c,
``IoU = TP / (TP + FP + FN)`` with ``TP = matrix[c, c]``, ``FN`` = the rest of row c and
``FP`` = the rest of column c. A predicted value that is not a scored class is simply a
wrong prediction. mIoU is the mean IoU over the scored classes; a class absent from both
ground truth and prediction has no IoU (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occo.data.errors import OccoError
from occo.data.io import read_image
from occo.data.pairing import list_images
from occo.eval.rows import Row

#: Ground-truth value that marks pixels not to score (Cityscapes/MMSeg convention).
DEFAULT_IGNORE_INDEX = 255
#: Classes scored without a class table: a 16-bit map's 65535 would otherwise ask for a
#: 65536 x 65536 matrix (32 GiB); indices are checked against this before allocating.
MAX_CLASSES = 1024


class SegmentationError(OccoError, ValueError):
    """A class map that cannot be scored: the message names the files."""


class ClassIndexError(SegmentationError):
    """A ground-truth value that is not a class of the table (nor the ignore index)."""


class ConfusionMatrix:
    """Pixel counts ``matrix[truth, prediction]`` accumulated over a set of images.

    Args:
        ignore_index: ground-truth value left out of every count (None: none).
        num_classes: classes of the class table (indices 0..num_classes-1); None: at most
            :data:`MAX_CLASSES`. A ground-truth value beyond is an error; a predicted one
            is a wrong prediction, counted in one column past the classes.
    """

    def __init__(
        self, ignore_index: int | None = DEFAULT_IGNORE_INDEX, num_classes: int | None = None
    ) -> None:
        self.ignore_index = ignore_index
        self.limit = int(num_classes) if num_classes else MAX_CLASSES
        self.matrix = np.zeros((0, 0), np.int64)
        self.ignored = 0
        """Pixels left out for their ignore-index ground truth."""

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Add one image's pixels.

        Args:
            truth: ``(H, W)`` non-negative integer class indices.
            prediction: ``(H, W)`` of the same size.
        """
        if truth.shape != prediction.shape:
            raise ValueError(f"shapes differ: {truth.shape} vs {prediction.shape}")
        truth = truth.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        if self.ignore_index is not None:
            keep = truth != self.ignore_index
            self.ignored += int(truth.size - keep.sum())
            truth, prediction = truth[keep], prediction[keep]
        if truth.size == 0:
            return
        top = int(truth.max())
        if top >= self.limit:  # before allocating anything of that size
            table = (
                f"the class table has classes 0..{self.limit - 1}"
                if self.limit != MAX_CLASSES
                else f"occo scores class indices 0..{MAX_CLASSES - 1} without --class-names"
            )
            raise ClassIndexError(
                f"pixel value {top} is not a class index ({table}); if it marks unlabelled "
                f"pixels pass --ignore-index {top}"
            )
        prediction = np.minimum(prediction, self.limit)  # not a class: a wrong prediction
        size = max(top, int(prediction.max())) + 1
        self._grow(size)
        n = self.matrix.shape[0]
        counts = np.bincount(truth * n + prediction, minlength=n * n)
        self.matrix += counts.reshape(n, n)

    def _grow(self, size: int) -> None:
        n = self.matrix.shape[0]
        if size > n:
            self.matrix = np.pad(self.matrix, ((0, size - n), (0, size - n)))

    def counts(self, cls: int) -> tuple[int, int, int]:
        """``(TP, FP, FN)`` of one class."""
        self._grow(cls + 1)
        tp = int(self.matrix[cls, cls])
        return tp, int(self.matrix[:, cls].sum()) - tp, int(self.matrix[cls, :].sum()) - tp

    def iou(self, cls: int) -> float:
        """IoU of one class; NaN when it is in neither ground truth nor prediction."""
        tp, fp, fn = self.counts(cls)
        union = tp + fp + fn
        return tp / union if union else math.nan

    def truth_pixels(self, cls: int) -> int:
        self._grow(cls + 1)
        return int(self.matrix[cls, :].sum())

    def classes_present(self) -> list[int]:
        """Classes with ground-truth pixels."""
        return [int(c) for c in np.flatnonzero(self.matrix.sum(axis=1))]


def read_class_map(path: Path, what: str) -> np.ndarray:
    """A one-channel class-index image (8 or 16 bit)."""
    labels = read_image(path)
    if labels.ndim != 2:
        raise SegmentationError(
            f"{what} {path} has colour channels; expected a one-channel class-index image "
            "(a colour palette PNG is read as its indices)"
        )
    return labels


@dataclass
class SegmentRowResult:
    """One row's confusion matrix and what was left out."""

    row: Row
    """The row."""
    confusion: ConfusionMatrix
    """Pixel counts over the row's images."""
    images: int = 0
    """Images scored."""
    stems: list[str] = field(default_factory=list)
    """Stems scored."""
    missing_predictions: list[str] = field(default_factory=list)
    """Labelled images without a prediction (left out)."""
    predictions_without_labels: list[str] = field(default_factory=list)
    """Predictions without a label map (left out)."""
    maps: dict[str, Path] = field(default_factory=dict)
    """Stem -> predicted class map file (for overlays)."""
    cached: int = 0
    """Images whose zero-shot maps came from the cache."""
    computed: int = 0
    """Images segmented in this run."""
    seconds: float = 0.0
    """Model wall time."""
    recomputed: list[str] = field(default_factory=list)
    """Stems whose cached class map was damaged (unreadable) and was made again."""

    def iou(self, classes: Sequence[int]) -> dict[int, float]:
        return {c: self.confusion.iou(c) for c in classes}

    def miou(self, classes: Sequence[int]) -> float:
        values = [v for v in self.iou(classes).values() if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan


def score_maps(
    row: Row,
    labels: Mapping[str, Path],
    predictions: Mapping[str, Path],
    ignore_index: int | None,
    num_classes: int | None = None,
) -> SegmentRowResult:
    """Accumulate the confusion matrix of predicted maps against label maps, by stem.

    ``num_classes``: the class table's size (see :class:`ConfusionMatrix`).

    Raises:
        SegmentationError: a map of another size, or a label value that is not a class
            (named with its file).
    """
    result = SegmentRowResult(row, ConfusionMatrix(ignore_index, num_classes))
    result.missing_predictions = [s for s in labels if s not in predictions]
    result.predictions_without_labels = [s for s in predictions if s not in labels]
    for stem in labels:
        if stem not in predictions:
            continue
        truth = read_class_map(labels[stem], "label map")
        guess = read_class_map(predictions[stem], "predicted map")
        if truth.shape != guess.shape:
            raise SegmentationError(
                f"predicted map {predictions[stem]} is {guess.shape[1]}x{guess.shape[0]} but its "
                f"label map {labels[stem]} is {truth.shape[1]}x{truth.shape[0]}; predictions must "
                "have the size of the images"
            )
        try:
            result.confusion.update(truth, guess)
        except ClassIndexError as exc:
            raise SegmentationError(f"label map {labels[stem]}: {exc}") from None
        result.stems.append(stem)
    result.images = len(result.stems)
    result.maps = {s: predictions[s] for s in result.stems}
    return result


def paint_class_map(
    shape: tuple[int, int],
    masks: np.ndarray,
    classes: Sequence[int],
    scores: np.ndarray,
    background: int,
) -> np.ndarray:
    """A class-index map from per-box masks: higher scores win where masks overlap.

    Args:
        shape: ``(H, W)``.
        masks: ``(N, H, W)`` bool, one per box.
        classes: ``N`` class indices.
        scores: ``(N,)`` box scores.
        background: index of pixels under no mask.

    Returns:
        ``(H, W)`` uint8 (uint16 when an index exceeds 255) class map.
    """
    dtype = np.uint8 if max([background, *classes]) <= 255 else np.uint16
    labels = np.full(shape, background, dtype)
    for i in np.argsort(scores, kind="stable"):  # lowest first: the best box paints last
        labels[masks[i]] = classes[i]
    return labels


class ZeroShotSegmenter:
    """Detector boxes per class prompting SAM: class-index maps for named classes.

    Args:
        detector: a loaded :mod:`occo.eval.detectors` detector (labels are class names).
        segmenter: a loaded :class:`occo.masks.segmenter.BoxSegmenter`.
        class_index: class name -> index in the label maps.
        background: index of pixels under no box's mask.
    """

    def __init__(
        self, detector, segmenter, class_index: Mapping[str, int], background: int
    ) -> None:
        self.detector = detector
        self.segmenter = segmenter
        self.class_index = dict(class_index)
        self.background = int(background)

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        detections = self.detector.detect(images)
        masks = self.segmenter.segment_each(images, [d.boxes for d in detections])
        return [
            paint_class_map(
                image.shape[:2],
                mask,
                [self.class_index[label] for label in found.labels],
                found.scores if found.scores is not None else np.ones(len(found)),
                self.background,
            )
            for image, mask, found in zip(images, masks, detections, strict=True)
        ]


def segment_row(
    row: Row,
    labels: Mapping[str, Path],
    segmenter: Callable[[], ZeroShotSegmenter],
    cache,
    ignore_index: int | None,
    batch_size: int = 2,
    progress: Callable[[str, int, int], None] | None = None,
    num_classes: int | None = None,
) -> SegmentRowResult:
    """Segment a row's labelled images zero-shot (cached class maps), then score them.

    Args:
        row: an image row.
        labels: stem -> label map.
        segmenter: loads the models (called once, only when some image is not cached).
        cache: the row's :class:`occo.eval.rowcache.RowCache` (kind ``segmentations``).
        ignore_index: ground-truth value left out.
        batch_size: images per batch.
        progress: ``progress(row_name, done, total)``.
    """
    from occo.eval.detectors import load_rgb
    from occo.eval.rowcache import fingerprint

    wanted = {s: p for s, p in row.images.items() if s in labels}
    prints = {stem: fingerprint(path) for stem, path in wanted.items()}
    done = cache.load_maps(prints)
    damaged = sorted(s for s in done if not _readable_map(cache.map_path(s)))
    done -= set(damaged)  # a damaged cache entry is made again, never a failure of every rerun
    todo = [s for s in wanted if s not in done]
    start = time.perf_counter()
    if todo:
        model = segmenter()
        finished = sorted(done)
        if progress is not None:
            progress(row.name, len(finished), len(wanted))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            maps = model.segment([load_rgb(wanted[s]) for s in chunk])
            finished += chunk
            cache.save_maps(dict(zip(chunk, maps, strict=True)), finished, prints)
            if progress is not None:
                progress(row.name, len(finished), len(wanted))
    result = score_maps(
        row, labels, {s: cache.map_path(s) for s in wanted}, ignore_index, num_classes
    )
    result.recomputed = damaged
    result.missing_predictions = [s for s in labels if s not in row.images]
    result.predictions_without_labels = [s for s in row.images if s not in labels]
    result.cached, result.computed = len(done), len(todo)
    result.seconds = time.perf_counter() - start if todo else 0.0
    return result


def _readable_map(path: Path) -> bool:
    """Whether a cached class map still reads as one (a damaged file is made again)."""
    try:
        read_class_map(path, "cached class map")
    except (OccoError, OSError):
        return False
    return True


def label_maps(folder: Path) -> dict[str, Path]:
    """Stem -> label map of a folder (class-index images)."""
    maps = list_images(folder)
    if not maps:
        raise SegmentationError(f"no label maps in {folder} (png, tif, ... class-index images)")
    return maps
