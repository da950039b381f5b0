"""Downstream detection inside ``occo compare``: one detector on every method's fused images.

The ground truth of a dataset is, in order, ``--labels DATASET=PATH``, the dataset's
``labels/fusion`` (MSRS's boxes for the fused image), or its ``labels/`` when the label
files lie there directly (one set for both modalities). The detector is any
``occo eval detect --detector`` (a transformers detector id or folder, or
``yolov5:FILE.pt``), loaded once; detections are cached in ``OUT/detect-cache`` per
method x dataset, keyed by the images and the detector settings (a rerun scores without
detecting). Scores are pycocotools' (:mod:`occo.eval.detection`): mAP@.5 and
mAP@[.5:.95] over the classes with objects, and AP@.5 per class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from occo.data.errors import OccoError

#: Columns over all classes; a class's AP@.5 is ``AP50 <class>``.
MAP50 = "mAP50"
MAP50_95 = "mAP50-95"
CLASS_PREFIX = "AP50 "
#: Ground-truth folders inside a dataset, tried in order (the fused image's boxes first).
LABEL_FOLDERS = ("labels/fusion", "labels")
LABEL_SUFFIXES = (".txt", ".xml", ".json")


class CompareDetectError(OccoError, ValueError):
    """Detection settings that cannot score a dataset (one line: what and what to do)."""


def is_detection_column(column: str) -> bool:
    """Whether a compare column is a detection score (all are higher-is-better)."""
    return column in (MAP50, MAP50_95) or column.startswith(CLASS_PREFIX)


def find_labels(root: Path) -> Path | None:
    """The dataset's ground truth for fused images, or None."""
    for name in LABEL_FOLDERS:
        folder = root / name
        if folder.is_dir() and any(
            p.suffix.lower() in LABEL_SUFFIXES and p.name != "classes.txt"
            for p in folder.iterdir()
            if p.is_file()
        ):
            return folder
    return None


@dataclass
class DatasetTruth:
    """One dataset's ground truth and the classes scored."""

    path: Path
    """The labels (folder or COCO JSON)."""
    boxes: object
    """The :class:`occo.data.annotations.BoxSet`."""
    classes: list[str]
    """Classes scored, in the labels' order."""


@dataclass
class Detection:
    """The detector shared by every method x dataset of a comparison (loaded on first use)."""

    model: str
    """``--detector``: transformers id or folder, or ``yolov5:FILE.pt``."""
    device: str
    """Where it runs."""
    cache: Path
    """Detection cache folder."""
    batch_size: int = 4
    """Images per forward pass."""
    truths: dict[str, DatasetTruth] = field(default_factory=dict)
    """Dataset name -> its ground truth (datasets without labels are absent)."""
    _loaded: object | None = None
    _config: object | None = None

    def truth_for(self, root: Path, name: str, given: Path | None) -> DatasetTruth | None:
        """Read (once) the ground truth of a dataset; None when it has none."""
        from occo.data.annotations import read_boxes
        from occo.data.classes import merge_class_names

        if name in self.truths:
            return self.truths[name]
        path = Path(given) if given is not None else find_labels(root)
        if path is None:
            return None
        if not path.exists():
            raise CompareDetectError(f"--labels {name}={path}: no such file or folder")
        boxes = read_boxes(path)
        classes = list(merge_class_names([boxes.classes]))
        if not classes:
            raise CompareDetectError(f"{path} names no class; pass --labels {name}=OTHER")
        self.truths[name] = DatasetTruth(path, boxes, classes)
        return self.truths[name]

    def score(self, method: str, dataset: str, images: dict[str, Path],
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, float]:  # fmt: skip
        """``{mAP50, mAP50-95, "AP50 <class>"...}`` of one method's fused images."""
        from occo.eval.detect_rows import GroundTruth, evaluate_rows
        from occo.eval.detectors import DetectorConfig, detector_settings, load_detector
        from occo.eval.rows import Row
        from occo.runtime import resolve_device

        truth = self.truths[dataset]
        if self._config is None:
            try:
                self._config = DetectorConfig(self.model)
            except ValueError as exc:
                raise CompareDetectError(f"--detector {self.model}: {exc}") from None
        settings = detector_settings(self._config, truth.classes)

        def load():
            if self._loaded is None:
                try:
                    self._loaded = load_detector(
                        self._config, truth.classes, resolve_device(self.device)
                    )
                except OccoError as exc:  # no use going on: every method needs it
                    raise CompareDetectError(f"--detector {self.model}: {exc}") from None
            return self._loaded

        row = Row(f"{dataset}-{method}", Path(next(iter(images.values()))).parent, "images",
                  images=dict(images))  # fmt: skip
        result = evaluate_rows([row], GroundTruth(default=truth.boxes), truth.classes,
                               detector=load, detector_settings=settings, cache_dir=self.cache,
                               batch_size=self.batch_size, progress=progress)[0]  # fmt: skip
        scores = result.scores
        values = {MAP50: scores.all.AP50, MAP50_95: scores.all.AP50_95}
        for name in truth.classes:
            per_class = scores.classes.get(name)
            values[CLASS_PREFIX + name] = per_class.AP50 if per_class is not None else float("nan")
        return values


def detection_columns(classes: Sequence[str]) -> list[str]:
    """The columns of a dataset scored with these classes, in table order."""
    return [MAP50, MAP50_95, *(CLASS_PREFIX + c for c in classes)]
