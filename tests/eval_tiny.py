"""Stand-ins for downstream evaluation tests: the same boxes written as YOLO, Pascal VOC and
COCO, a tiny random DETR saved with ``save_pretrained``, and a small synthetic image set.

A box here is ``(class name, x0, y0, x1, y1)`` in continuous pixel coordinates, integer
valued so that every format stores it exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from occo.data.io import write_image_atomic

CLASSES = ["person", "bicycle", "car"]
SIZE = (40, 56)  # (H, W)

#: Ground truth of three images; "0002" has no objects (and no label file).
BOXES = {
    "0000": [("person", 4, 6, 14, 30), ("car", 20, 10, 50, 26)],
    "0001": [("person", 30, 2, 38, 20), ("bicycle", 8, 22, 24, 38), ("person", 40, 20, 52, 39)],
}
STEMS = ["0000", "0001", "0002"]


def write_images(folder: Path, stems=STEMS, size=SIZE, seed: int = 0) -> Path:
    """Gray images with bright blocks where the boxes are."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        image = rng.integers(0, 60, size, dtype=np.uint8)
        for _, x0, y0, x1, y1 in BOXES.get(stem, []):
            image[y0:y1, x0:x1] = 200
        write_image_atomic(Path(folder) / f"{stem}.png", image)
    return Path(folder)


def write_yolo(folder: Path, boxes=BOXES, size=SIZE, scores: dict | None = None) -> Path:
    """``STEM.txt`` with ``class cx cy w h [score]`` and ``classes.txt`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    height, width = size
    for stem, items in boxes.items():
        lines = []
        for i, (name, x0, y0, x1, y1) in enumerate(items):
            values = [
                (x0 + x1) / 2 / width,
                (y0 + y1) / 2 / height,
                (x1 - x0) / width,
                (y1 - y0) / height,
            ]
            line = f"{CLASSES.index(name)} " + " ".join(f"{v:.10f}" for v in values)
            if scores is not None:
                line += f" {scores[stem][i]}"
            lines.append(line)
        (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_voc(folder: Path, boxes=BOXES, size=SIZE) -> Path:
    """One Pascal VOC XML per image (1-based inclusive pixel indices)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    for stem, items in boxes.items():
        objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
            f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, x0, y0, x1, y1 in items
        )
        (folder / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>1</depth></size>{objects}</annotation>"
        )
    return folder


def write_coco(path: Path, boxes=BOXES, size=SIZE, stems=STEMS) -> Path:
    """A COCO dataset JSON (category ids 1..3, image ids 10, 11, ...)."""
    height, width = size
    images = [
        {"id": 10 + i, "file_name": f"{stem}.png", "width": width, "height": height}
        for i, stem in enumerate(stems)
    ]
    ids = {stem: 10 + i for i, stem in enumerate(stems)}
    annotations = [
        {
            "id": n,
            "image_id": ids[stem],
            "category_id": CLASSES.index(name) + 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0),
            "iscrowd": 0,
        }
        for n, (stem, name, x0, y0, x1, y1) in enumerate(
            ((s, *b) for s, items in boxes.items() for b in items), 1
        )
    ]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return Path(path)


def save_detr(folder: Path, labels=("person", "bicycle", "car", "dog"), queries: int = 8) -> Path:
    """A random DETR (tiny ResNet backbone, no pretrained weights) with its image processor."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    torch.manual_seed(0)
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 8, 8, 8],
            depths=[1, 1, 1, 1],
            out_features=["stage4"],
        ),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=queries,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    DetrForObjectDetection(config).eval().save_pretrained(folder)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return Path(folder)


_MODELS: dict[str, Path] = {}


def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random Grounding DINO (``gdino``), SAM (``sam``) and DETR (``detr``) folders,
    each built on first use, once per test process (the eval and masks tests share them)."""
    from tests import masks_tiny

    builders = {
        "gdino": masks_tiny.save_grounding_dino,
        "sam": masks_tiny.save_sam,
        "detr": save_detr,
    }

    class _Lazy(dict):
        def __missing__(self, name: str) -> Path:
            if name not in _MODELS:
                _MODELS[name] = builders[name](tmp_path_factory.mktemp(f"eval-{name}") / name)
            return _MODELS[name]

    return _Lazy()
