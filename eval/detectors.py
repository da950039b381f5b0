"""Object detectors for downstream evaluation, loaded with ``from_pretrained(ID or DIR)``.

Three kinds, chosen from the model's config (or the ``yolov5:`` prefix):

- zero-shot: Grounding DINO prompted with the class names (``"person . car ."``); every
  query gets a score per class (mean over the class's tokens), and each (query, class)
  above the score threshold is a detection, as mmdetection evaluates Grounding DINO.
- closed-set: any ``AutoModelForObjectDetection`` (DETR, Deformable DETR, RT-DETR,
  YOLOS, ...) whose ``id2label`` names the classes; its own post-processing gives boxes,
  labels and scores; labels of other classes are dropped.
- YOLOv5: ``yolov5:PATH``, an Ultralytics YOLOv5 ``.pt`` read without running its pickle
  and run as Ultralytics' val.py does (:mod:`occo.eval.yolov5`); COCO names matched by name.

All keep at most ``max_dets`` detections per image (best first) and run batched, in
float16 autocast on GPU when asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occo.data.annotations import ImageBoxes
from occo.data.classes import ClassTableError, name_key
from occo.data.io import read_image
from occo.eval.yolov5 import YoloSettings, YoloV5Detector, checkpoint_path, file_fingerprint
from occo.masks.detector import (
    DEFAULT_DETECTOR,
    GroundingDinoDetector,
    ModelLoadError,
    autocast,
    image_processor_on_device,
    load_pretrained,
    model_source,
    to_rgb8,
)
from occo.masks.generate import DTYPES

#: ``model_type`` values of text-prompted detectors occo drives with class names.
ZERO_SHOT_TYPES = frozenset({"grounding-dino", "mm-grounding-dino"})


@dataclass
class DetectorConfig:
    """What makes the detections of ``occo eval detect``; every field keys the cache."""

    model: str = DEFAULT_DETECTOR
    """Hub id or folder: Grounding DINO (zero-shot) or any transformers object detector;
    or ``yolov5:PATH``, an Ultralytics YOLOv5 checkpoint."""
    score_threshold: float = 0.001
    """Keep detections scoring above this (COCO evaluation keeps almost all: 0.001)."""
    max_dets: int = 100
    """At most this many detections per image, best first (COCO: 100)."""
    dtype: str = "float32"
    """float32, or float16/bfloat16 autocast (half precision on GPU)."""

    def __post_init__(self) -> None:
        if not 0 <= self.score_threshold < 1:
            raise ValueError("--score-threshold must be in [0, 1)")
        if self.max_dets < 1:
            raise ValueError("--max-dets must be >= 1")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'; use {', '.join(DTYPES)}")


def model_fingerprint(model: str | Path) -> str:
    """What identifies a model's weights: a folder's files (name, size, mtime), or the
    hub snapshot in the local cache, so that retrained weights never reuse old detections."""
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        text = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # not a valid repo id: loading will say so
        found = None
    return str(Path(found).parent.name) if isinstance(found, str) else "hub"


def _keep_best(boxes: np.ndarray, labels: list[str], scores: np.ndarray, limit: int) -> ImageBoxes:
    order = np.argsort(-scores, kind="stable")[:limit]
    return ImageBoxes(boxes[order], [labels[i] for i in order], scores[order])


class ZeroShotDetector:
    """Grounding DINO prompted with the class names (reuses occo's mask detector).

    Args:
        config: model, threshold, cap, precision.
        classes: class names; the caption lists them.
        device: where the model runs.
    """

    kind = "zero-shot"

    def __init__(
        self, config: DetectorConfig, classes: Sequence[str], device: str | torch.device
    ) -> None:
        self.config = config
        self.classes = list(classes)
        self.device = torch.device(device)
        self.detector = GroundingDinoDetector(
            config.model, device=self.device, dtype=DTYPES[config.dtype]
        )
        try:
            self.caption = self.detector.class_caption(self.classes)[0]
        except ValueError as exc:
            raise ClassTableError(str(exc)) from None
        self.model_type = str(self.detector.model.config.model_type)

    def detect(self, images: Sequence[np.ndarray]) -> list[ImageBoxes]:
        """Detections per image, boxes in its pixels, labels from ``classes``."""
        results = []
        for boxes, scores in self.detector.class_scores(images, self.classes):
            query, cls = np.nonzero(scores > self.config.score_threshold)
            results.append(
                _keep_best(
                    boxes[query].astype(np.float64),
                    [self.classes[k] for k in cls],
                    scores[query, cls].astype(np.float64),
                    self.config.max_dets,
                )
            )
        return results


class ClosedSetDetector:
    """A transformers object detector trained on fixed classes, matched to ours by name.

    Args:
        config: model, threshold, cap, precision.
        classes: class names to score; each must be one of the model's ``id2label``.
        device: where the model runs.
    """

    kind = "closed-set"

    def __init__(
        self, config: DetectorConfig, classes: Sequence[str], device: str | torch.device
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        self.config = config
        self.classes = list(classes)
        self.device = torch.device(device)
        self.dtype = DTYPES[config.dtype]
        self.processor = load_pretrained(AutoImageProcessor, config.model, "detector", "--detector")
        net = load_pretrained(AutoModelForObjectDetection, config.model, "detector", "--detector")
        self.model = net.to(self.device).eval()
        self.model_type = str(self.model.config.model_type)
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        by_key = {name_key(name): name for name in self.classes}
        self.label_of = {
            i: by_key[name_key(n)] for i, n in id2label.items() if name_key(n) in by_key
        }
        missing = [c for c in self.classes if c not in self.label_of.values()]
        if missing:
            known = ", ".join(id2label[i] for i in sorted(id2label))
            raise ClassTableError(
                f"the detector {config.model} does not know {', '.join(missing)} (its classes: "
                f"{known}); score only classes it knows (--classes) or use a zero-shot detector"
            )

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[ImageBoxes]:
        """Detections per image, boxes in its pixels, labels from ``classes``."""
        if not images:
            return []
        tensors = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) for img in images]
        extra = {"device": self.device} if image_processor_on_device(self.processor) else {}
        inputs = self.processor(images=tensors, return_tensors="pt", **extra).to(self.device)
        with autocast(self.device, self.dtype):
            outputs = self.model(**inputs)
        for key in ("logits", "pred_boxes"):
            if getattr(outputs, key, None) is not None:
                setattr(outputs, key, getattr(outputs, key).float())
        processed = self.processor.post_process_object_detection(
            outputs,
            threshold=self.config.score_threshold,
            target_sizes=[img.shape[:2] for img in images],
        )
        results = []
        for item in processed:
            ids = item["labels"].cpu().numpy().tolist()
            keep = [i for i, label in enumerate(ids) if label in self.label_of]
            boxes = item["boxes"].float().cpu().numpy().astype(np.float64).reshape(-1, 4)[keep]
            scores = item["scores"].float().cpu().numpy().astype(np.float64)[keep]
            labels = [self.label_of[ids[i]] for i in keep]
            results.append(_keep_best(boxes, labels, scores, self.config.max_dets))
        return results


Detector = ZeroShotDetector | ClosedSetDetector | YoloV5Detector


def load_detector(
    config: DetectorConfig, classes: Sequence[str], device: str | torch.device = "cpu"
) -> Detector:
    """Load the model once, as zero-shot or closed-set detector by its config's model type.

    Raises:
        ModelLoadError: the model is missing offline or not a model folder.
        ClassTableError: a closed-set model that does not know a class.
        CheckpointError: a ``yolov5:`` file that is not a readable YOLOv5 checkpoint
            (UnsafeCheckpointError: one whose pickle asks to run code; nothing is run).
    """
    yolo = checkpoint_path(config.model)
    if yolo is not None:
        settings = YoloSettings(conf_threshold=config.score_threshold)
        return YoloV5Detector(
            yolo, classes, settings, config.max_dets, device, DTYPES[config.dtype]
        )
    from transformers import AutoConfig

    model_config = load_pretrained(AutoConfig, config.model, "detector", "--detector")
    if getattr(model_config, "model_type", "") in ZERO_SHOT_TYPES:
        return ZeroShotDetector(config, classes, device)
    return ClosedSetDetector(config, classes, device)


def detector_settings(config: DetectorConfig, classes: Sequence[str]) -> dict[str, Any]:
    """The settings that change detections (the cache key), without loading the model."""
    yolo = checkpoint_path(config.model)
    if yolo is not None:
        if not yolo.is_file():
            raise ModelLoadError(
                f"YOLOv5 checkpoint not found: {yolo}; pass --detector yolov5:FILE.pt"
            )
        return {
            "detector": f"yolov5:{yolo.resolve()}",
            "weights": file_fingerprint(yolo),
            "classes": list(classes),
            "max_dets": int(config.max_dets),
            "dtype": config.dtype,
            "yolov5": asdict(YoloSettings(conf_threshold=config.score_threshold)),
        }
    return {
        "detector": model_source(config.model),
        "weights": model_fingerprint(config.model),
        "classes": list(classes),
        "score_threshold": float(config.score_threshold),
        "max_dets": int(config.max_dets),
        "dtype": config.dtype,
    }


def load_rgb(path: Path) -> np.ndarray:
    """An image as the detectors take it: ``(H, W, 3)`` uint8 RGB (gray repeated)."""
    return to_rgb8(read_image(path))


def run_detector(
    detector: Detector,
    images: Iterable[tuple[str, Path]],
    batch_size: int = 4,
    on_batch: Callable[[dict[str, ImageBoxes]], None] | None = None,
) -> dict[str, ImageBoxes]:
    """Detect on images in batches, reading the next batch while the model works.

    Args:
        detector: a loaded detector.
        images: ``(stem, path)`` pairs.
        batch_size: images per forward pass.
        on_batch: called after each batch with that batch's detections.

    Returns:
        Stem -> detections.
    """
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    items = list(images)
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    found: dict[str, ImageBoxes] = {}

    def load(chunk: list[tuple[str, Path]]) -> list[np.ndarray]:
        return [load_rgb(path) for _, path in chunk]

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(load, chunks[0]) if chunks else None
        for n, chunk in enumerate(chunks):
            assert pending is not None
            pixels = pending.result()
            pending = reader.submit(load, chunks[n + 1]) if n + 1 < len(chunks) else None
            batch = dict(zip((s for s, _ in chunk), detector.detect(pixels), strict=True))
            found.update(batch)
            if on_batch is not None:
                on_batch(batch)
    return found
