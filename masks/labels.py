"""Object masks from semantic label maps instead of models (MSRS, FMB and kin).

Such datasets ship one label map per pair (class index per pixel, aligned with both
images); the pixels of the chosen classes (person, car) form the object mask, the same
for both modalities. Boxes are the connected components of each chosen class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from occo.data.classes import ClassTableError, parse_classes, read_class_names
from occo.data.io import read_image
from occo.data.pairing import list_images
from occo.masks.store import ModalityMasks, PairMasks

# The class-table helpers live in occo.data.classes (shared with box annotations).
__all__ = [
    "LabelMapError",
    "LabelMaskSource",
    "class_boxes",
    "mask_from_labels",
    "parse_classes",
    "read_class_names",
]

#: Class indices of person and car in MSRS label maps (0 is unlabelled).
MSRS_PERSON_CAR = (2, 1)


class LabelMapError(ClassTableError):
    """A label map is missing, not a class-index image, or not the size of its pair."""


def mask_from_labels(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Pixels of the given classes.

    Args:
        labels: ``(H, W)`` integer class-index map.
        classes: class indices that count as objects.

    Returns:
        ``(H, W)`` uint8 mask, values 0/1.
    """
    return np.isin(labels, np.asarray(classes)).astype(np.uint8)


def class_boxes(
    labels: np.ndarray, classes: Sequence[int], names: dict[int, str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """One box per connected component (8-neighbour) of each chosen class.

    Args:
        labels: ``(H, W)`` class-index map.
        classes: the object classes.
        names: class index -> name for the box labels; default ``"class C"``.

    Returns:
        ``(N, 4)`` float32 boxes x0 y0 x1 y1 (x1, y1 exclusive) and ``N`` labels.
    """
    names = names or {}
    boxes, labels_out = [], []
    for cls in classes:
        region = (labels == cls).astype(np.uint8)
        if not region.any():
            continue
        count, _, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        for x, y, w, h, _area in stats[1:count]:  # row 0 is the background
            boxes.append((x, y, x + w, y + h))
            labels_out.append(names.get(cls, f"class {cls}"))
    return np.asarray(boxes, np.float32).reshape(-1, 4), labels_out


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file."""
    return tuple(read_image(path).shape[:2])  # type: ignore[return-value]


class LabelMaskSource:
    """Masks from label maps ``LABELS/<stem>.*``.

    Args:
        labels_dir: folder of class-index maps named like the pairs.
        classes: class indices that count as objects (MSRS: car 1, person 2).
        names: class index -> name, used as the boxes' labels.
    """

    def __init__(
        self, labels_dir: str | Path, classes: Sequence[int], names: dict[int, str] | None = None
    ) -> None:
        self.labels_dir = Path(labels_dir)
        self.names = dict(names or {})
        self.classes = sorted({int(c) for c in classes})
        if not self.classes:
            raise ValueError("give the object classes with --classes, e.g. --classes 1,2")
        self.files = list_images(self.labels_dir)
        self.settings = {"source": "labels", "classes": self.classes}

    def setup(self) -> None:
        """Nothing to load."""

    def warnings(self) -> list[str]:
        """Nothing to say after a run (every mismatch is an error)."""
        return []

    def check(self, stems: Sequence[str]) -> None:
        """Fail early, naming the first pairs without a label map."""
        missing = [stem for stem in stems if stem not in self.files]
        if missing:
            raise LabelMapError(
                f"{len(missing)} pair(s) have no label map in {self.labels_dir} (first: {missing[0]}); "
                f"label maps must share the pairs' file stems"
            )

    def load(self, pairs: Sequence[tuple[str, Path, Path]]) -> list[tuple]:
        loaded = []
        for stem, ir, vi in pairs:
            self.check([stem])
            path = self.files[stem]
            labels = read_image(path)
            if labels.ndim != 2:
                raise LabelMapError(
                    f"label map {path} has colour channels; expected a one-channel class-index image"
                )
            sizes = {"infrared": image_size(Path(ir)), "visible": image_size(Path(vi))}
            for name, size in sizes.items():
                if size != labels.shape:
                    raise LabelMapError(
                        f"label map {path} is {labels.shape[1]}x{labels.shape[0]} but the {name} image "
                        f"is {size[1]}x{size[0]}; label maps must be aligned with their pair"
                    )
            loaded.append((stem, labels, Path(ir).name, Path(vi).name))
        return loaded

    def process(self, loaded: list[tuple]) -> list[PairMasks]:
        results = []
        for stem, labels, ir_name, vi_name in loaded:
            mask = mask_from_labels(labels, self.classes)
            boxes, names = class_boxes(labels, self.classes, self.names)
            scores = np.ones(len(boxes), np.float32)
            results.append(
                PairMasks(
                    stem=stem,
                    ir=ModalityMasks(mask, boxes, scores, names, ir_name),
                    vi=ModalityMasks(mask, boxes, scores, names, vi_name),
                )
            )
        return results
