"""Object masks from box annotations (YOLO txt, Pascal VOC XML, COCO JSON), per modality.

Datasets such as MSRS (boxes drawn separately on the infrared and the visible image),
M3FD and LLVIP already say where the objects are. Without a segmenter each modality's
mask is the union of its filled boxes; with one, the boxes prompt SAM directly (no
detector), as OCCO prompts SAM with Grounding DINO's boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from occo.data.annotations import BoxSet, ImageBoxes
from occo.data.io import read_image, read_image_size
from occo.masks.store import ModalityMasks, PairMasks

#: What the settings record as the segmenter when masks are the filled boxes.
FILLED_BOXES = "none (filled boxes)"


def fill_boxes(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """The union of filled boxes: the pixels whose centres lie inside a box.

    A box thinner than a pixel still marks the pixel row/column it starts in.

    Args:
        shape: ``(H, W)``.
        boxes: ``(N, 4)`` x0 y0 x1 y1 in pixels (continuous coordinates).

    Returns:
        ``(H, W)`` uint8 mask, values 0/1.
    """
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height or x1 <= x0 or y1 <= y0:
            continue
        # pixel c is inside when its centre c + 0.5 is in [x0, x1)
        c0, r0 = max(0, math.ceil(x0 - 0.5)), max(0, math.ceil(y0 - 0.5))
        c1 = min(width, max(math.ceil(x1 - 0.5), c0 + 1))
        r1 = min(height, max(math.ceil(y1 - 0.5), r0 + 1))
        mask[r0:r1, c0:c1] = 1
    return mask


class BoxMaskSource:
    """Masks from box annotations of each modality (a mask source for ``generate_masks``).

    Args:
        boxes_ir: the infrared images' annotations.
        boxes_vi: the visible images' annotations (may be the same set).
        classes: class names that count as objects (None: every annotated class).
        segmenter: SAM spec (``load_segmenter``) to turn boxes into object masks, or None
            for filled boxes.
        device: where SAM runs.
        dtype: float32, float16 or bfloat16 (SAM's autocast).
    """

    def __init__(
        self,
        boxes_ir: BoxSet,
        boxes_vi: BoxSet,
        classes: Sequence[str] | None = None,
        segmenter: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        from occo.masks.segmenter import segmenter_source

        self.sets = {"ir": boxes_ir, "vi": boxes_vi}
        self.classes = list(classes) if classes is not None else None
        self.segmenter_spec = segmenter
        self.device = device
        self.dtype = dtype
        formats = {boxes_ir.format, boxes_vi.format}
        self.settings = {
            "source": "annotations",
            "box_format": "+".join(sorted(formats)),
            "classes": self.classes if self.classes is not None else "all",
            "segmenter": segmenter_source(segmenter) if segmenter else FILLED_BOXES,
            "dtype": dtype if segmenter else "",
        }
        self.segmenter = None
        self.clipped = {"ir": 0, "vi": 0}
        """Boxes clipped or dropped at the image border, per modality (pairs processed)."""

    def missing(self, stems: Sequence[str]) -> dict[str, list[str]]:
        """Per modality, the pairs without an annotation entry (they get empty masks)."""
        return {m: [s for s in stems if s not in boxes] for m, boxes in self.sets.items()}

    def orphans(self, stems: Sequence[str]) -> list[str]:
        """Annotated stems that are not among the pairs (listed, not used)."""
        known = set(stems)
        return sorted({s for b in self.sets.values() for s in b.stems() if s not in known})

    def setup(self) -> None:
        """Load SAM once, when masks come from a segmenter."""
        if self.segmenter_spec and self.segmenter is None:
            from occo.masks.generate import DTYPES
            from occo.masks.segmenter import load_segmenter

            self.segmenter = load_segmenter(
                self.segmenter_spec, device=self.device, dtype=DTYPES[self.dtype]
            )

    def warnings(self) -> list[str]:
        """Boxes clipped to the image, when the annotations disagree with the images."""
        if not any(self.clipped.values()):
            return []
        return [
            f"boxes clipped to the image: infrared {self.clipped['ir']}, visible "
            f"{self.clipped['vi']} (in this process's pairs)"
        ]

    def _boxes(self, modality: str, stem: str, size: tuple[int, int]) -> ImageBoxes:
        boxes, clipped = self.sets[modality].get(stem, size)
        self.clipped[modality] += clipped
        return boxes.only(self.classes) if self.classes is not None else boxes

    def load(self, pairs: Sequence[tuple[str, Path, Path]]) -> list[tuple]:
        """Per pair and modality: the image (for SAM) or its size, and its boxes."""
        from occo.masks.detector import to_rgb8

        loaded = []
        for stem, ir, vi in pairs:
            entry = {"stem": stem}
            for modality, path in (("ir", Path(ir)), ("vi", Path(vi))):
                image = to_rgb8(read_image(path)) if self.segmenter_spec else None
                size = image.shape[:2] if image is not None else read_image_size(path)
                entry[modality] = (path.name, size, image, self._boxes(modality, stem, size))
            loaded.append(entry)
        return loaded

    def process(self, loaded: list[dict]) -> list[PairMasks]:
        """Filled boxes, or SAM masks of all images of the batch in one pass."""
        items = [entry[m] for entry in loaded for m in ("ir", "vi")]  # ir0 vi0 ir1 vi1 ...
        if self.segmenter_spec:
            self.setup()
            assert self.segmenter is not None
            masks = self.segmenter.segment(
                [image for _, _, image, _ in items], [b.boxes for _, _, _, b in items]
            )
        else:
            masks = [fill_boxes(size, b.boxes) for _, size, _, b in items]
        results = []
        for i, entry in enumerate(loaded):
            modalities = {}
            for j, modality in enumerate(("ir", "vi")):
                name, _, _, boxes = items[2 * i + j]
                scores = boxes.scores if boxes.scores is not None else np.ones(len(boxes))
                modalities[modality] = ModalityMasks(
                    masks[2 * i + j], boxes.boxes, scores, boxes.labels, name
                )
            results.append(PairMasks(stem=entry["stem"], **modalities))
        return results
