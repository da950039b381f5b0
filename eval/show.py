"""Overlays of downstream results, to look at: ground truth beside the model's output."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from occo.data.annotations import ImageBoxes
from occo.masks.detector import to_rgb8
from occo.masks.overlay import TEXT_COLOUR, draw_label, font_scale, side_by_side, with_header

TRUTH_COLOUR = (0, 220, 90)
DETECTION_COLOUR = (255, 210, 0)


def draw_boxes(
    image: np.ndarray, boxes: ImageBoxes, colour: tuple[int, int, int], min_score: float = 0.0
) -> tuple[np.ndarray, int]:
    """Boxes with their class (and score) over an image.

    Returns:
        ``(H, W, 3)`` uint8 RGB and the number of boxes drawn.
    """
    canvas = to_rgb8(image).copy()
    scale = font_scale(canvas.shape)
    thick = max(1, round(scale * 2))
    scores = boxes.scores
    drawn = 0
    for i in np.argsort(scores if scores is not None else np.zeros(len(boxes)), kind="stable"):
        if scores is not None and scores[i] < min_score:
            continue
        x0, y0, x1, y1 = (int(round(float(v))) for v in boxes.boxes[i])
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thick)
        text = boxes.labels[i] if scores is None else f"{boxes.labels[i]} {scores[i]:.2f}"
        draw_label(canvas, text, (x0 + 2, y0 - 4), colour, scale)
        drawn += 1
    return canvas, drawn


def detection_sheet(
    image: np.ndarray, truth: ImageBoxes, found: ImageBoxes, min_score: float = 0.3
) -> np.ndarray:
    """Ground truth | detections scoring at least ``min_score``, each under a caption."""
    left, n_truth = draw_boxes(image, truth, TRUTH_COLOUR)
    right, n_found = draw_boxes(image, found, DETECTION_COLOUR, min_score)
    return side_by_side(
        [
            with_header(left, [(f"ground truth: {n_truth} objects", TRUTH_COLOUR)]),
            with_header(
                right,
                [(f"detections >= {min_score:g}: {n_found} of {len(found)}", DETECTION_COLOUR)],
            ),
        ]
    )


def palette(classes: int) -> np.ndarray:
    """``(classes, 3)`` uint8 RGB colours, distinct and stable (golden-ratio hues); 0 is black."""
    hues = (np.arange(classes) * 0.618033988749895 * 180) % 180
    hsv = np.stack([hues, np.full(classes, 200), np.full(classes, 230)], axis=1).astype(np.uint8)
    colours = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    colours[0] = 0
    return colours


def colour_map(labels: np.ndarray, colours: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """Class indices as colours; the ignore index white, indices past the palette gray."""
    out = np.full((*labels.shape, 3), 128, np.uint8)
    inside = labels < len(colours)
    out[inside] = colours[labels[inside]]
    if ignore_index is not None:
        out[labels == ignore_index] = 255
    return out


def segmentation_sheet(
    truth: np.ndarray,
    prediction: np.ndarray,
    names: Mapping[int, str],
    ignore_index: int | None,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """(Image |) ground truth | prediction; maps blended over the image when it is given."""
    top = max([int(truth.max()), int(prediction.max()), *names]) + 1
    colours = palette(min(top, 256))
    base = None if image is None else to_rgb8(image).astype(np.float32)
    panels = []
    if image is not None:
        panels.append(with_header(to_rgb8(image), [("image", TEXT_COLOUR)]))
    for title, labels in (("ground truth", truth), ("prediction", prediction)):
        coloured = colour_map(labels, colours, ignore_index)
        if base is not None and base.shape[:2] == coloured.shape[:2]:
            coloured = (0.45 * base + 0.55 * coloured).astype(np.uint8)
        present = [names.get(int(c), str(int(c))) for c in np.unique(labels) if c in names]
        panels.append(with_header(coloured, [(f"{title}: {', '.join(present)}", TEXT_COLOUR)]))
    return side_by_side(panels)
