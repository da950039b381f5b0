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

from occo.data.errors import OccoError
from occo.data.io import read_image
from occo.data.pairing import list_images
from occo.masks.store import ModalityMasks, PairMasks

#: Class indices of person and car in MSRS label maps (0 is unlabelled).
MSRS_PERSON_CAR = (2, 1)


class LabelMapError(OccoError, ValueError):
    """A label map is missing, not a class-index image, or not the size of its pair."""


def _name_key(name: str) -> str:
    """Class names compare case- and separator-insensitively ("Car stop" = "car_stop")."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())


def read_class_names(path: str | Path) -> dict[int, str]:
    """A dataset's class table from a text file.

    Two layouts: one name per line, line N (from 0) naming class N; or ``ID NAME`` lines
    (``ID: NAME`` and ``ID,NAME`` too) for tables with gaps. ``#`` starts a comment.

    Args:
        path: the text file.

    Returns:
        Class index -> name.

    Raises:
        LabelMapError: unreadable, empty, or a name or index given twice.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"cannot read class names from {path}: {exc}") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    numbered = [e for e in entries if e]
    explicit = bool(numbered) and all(
        e.replace(":", " ").replace(",", " ").split()[0].isdigit() for e in numbered
    )
    table: dict[int, str] = {}
    if explicit:
        for entry in numbered:
            index, _, name = entry.replace(":", " ").replace(",", " ").partition(" ")
            table[int(index)] = name.strip()
    else:  # line N names class N; blank lines are unnamed classes
        table = {i: e for i, e in enumerate(entries) if e}
    keys = [_name_key(name) for name in table.values()]
    if not table or any(not k for k in keys):
        raise LabelMapError(f"{path} names no classes: write one name per line, or ID NAME lines")
    if len(set(keys)) != len(keys):
        raise LabelMapError(f"{path} names a class twice")
    return table


def parse_classes(text: str, names: dict[int, str] | None = None) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; with a class table, names too: ``"person,car"`` (sorted, unique).

    Args:
        text: comma-separated class indices and/or names.
        names: class index -> name (:func:`read_class_names`), needed for names.

    Raises:
        ValueError: a part is neither a non-negative index nor a known name.
    """
    lookup = {_name_key(name): index for index, name in (names or {}).items()}
    classes = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            classes.add(int(part))
        elif not lookup:
            raise ValueError(
                f"--classes: '{part}' is a class name; give the dataset's class table with "
                "--class-names FILE (one name per line, line N = class N), or use indices like 1,2"
            )
        elif _name_key(part) in lookup:
            classes.add(lookup[_name_key(part)])
        else:
            known = ", ".join(names.values())  # type: ignore[union-attr]
            raise ValueError(f"--classes: unknown class '{part}' (known: {known})")
    if not classes:
        raise ValueError(f"--classes must name classes, like 1,2 or person,car (got '{text}')")
    return sorted(classes)


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
