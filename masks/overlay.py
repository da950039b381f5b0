"""Overlays to check masks by eye: both modalities side by side, plus the region split."""

from __future__ import annotations

import cv2
import numpy as np

from masks.detector import to_rgb8
from masks.regions import split_regions
from masks.store import ModalityMasks, PairMasks

#: RGB colours of the overlay.
MASK_COLOUR = (0, 220, 90)
BOX_COLOUR = (255, 210, 0)
REGION_COLOURS = {
    "shared": (255, 170, 0),
    "unique_vi": (0, 170, 255),
    "unique_ir": (235, 50, 50),
}
_GAP = 8


def _font_scale(image: np.ndarray) -> float:
    return float(np.clip(min(image.shape[:2]) / 700.0, 0.35, 1.5))


def _label(canvas: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background (in place)."""
    scale = _font_scale(canvas)
    thick = max(1, round(scale * 2))
    x, y = origin
    y = max(y, int(18 * scale) + 2)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def draw_detections(image: np.ndarray, entry: ModalityMasks, title: str) -> np.ndarray:
    """One modality: the image, its mask tinted with an outline, boxes with scores and phrases.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` image as read (uint8 or uint16).
        entry: the modality's mask and detections.
        title: drawn at the top left.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    canvas = to_rgb8(image).copy()
    mask = entry.mask.astype(bool)
    if mask.shape != canvas.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {canvas.shape[:2]}")
    tint = np.array(MASK_COLOUR, np.float32)
    canvas[mask] = (0.55 * canvas[mask] + 0.45 * tint).astype(np.uint8)
    contours, _ = cv2.findContours(entry.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thick = max(1, round(_font_scale(canvas) * 2))
    cv2.drawContours(canvas, contours, -1, MASK_COLOUR, thick)
    for (x0, y0, x1, y1), score, phrase in zip(entry.boxes, entry.scores, entry.labels):
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(canvas, p0, p1, BOX_COLOUR, thick)
        _label(canvas, f"{score:.2f} {phrase}".strip(), (p0[0] + 2, p0[1] - 4), BOX_COLOUR)
    coverage = 100.0 * mask.mean() if mask.size else 0.0
    _label(canvas, f"{title}: {len(entry.boxes)} boxes, {coverage:.1f}% mask", (6, 6), (255, 255, 255))
    return canvas


def draw_regions(vi_image: np.ndarray, pair: PairMasks) -> np.ndarray:
    """The region split over a dimmed visible image: shared, unique visible, unique infrared.

    Returns:
        ``(H, W, 3)`` uint8 RGB; background pixels are left dimmed.
    """
    base = to_rgb8(vi_image).astype(np.float32) * 0.45
    regions = split_regions(pair.vi.mask, pair.ir.mask)
    for name, colour in REGION_COLOURS.items():
        where = getattr(regions, name) > 0
        base[where] = 0.4 * base[where] + 0.6 * np.array(colour, np.float32)
    canvas = base.astype(np.uint8)
    fractions = {name: 100.0 * float(getattr(regions, name).mean()) for name in regions._fields}
    legend = [
        (f"shared {fractions['shared']:.1f}%", REGION_COLOURS["shared"]),
        (f"unique vi {fractions['unique_vi']:.1f}%", REGION_COLOURS["unique_vi"]),
        (f"unique ir {fractions['unique_ir']:.1f}%", REGION_COLOURS["unique_ir"]),
        (f"background {fractions['background']:.1f}%", (200, 200, 200)),
    ]
    step = int(26 * _font_scale(canvas)) + 4
    for row, (text, colour) in enumerate(legend):
        _label(canvas, text, (6, 6 + step * (row + 1)), colour)
    return canvas


def render_pair(ir_image: np.ndarray, vi_image: np.ndarray, pair: PairMasks) -> np.ndarray:
    """Visible | infrared | regions, side by side on a dark strip.

    The regions panel needs both masks at one size; it is left out when the two images
    of the pair differ in size.

    Args:
        ir_image: the infrared image as read.
        vi_image: the visible image as read.
        pair: the pair's masks and detections.

    Returns:
        ``(H, W_total, 3)`` uint8 RGB.
    """
    panels = [draw_detections(vi_image, pair.vi, "visible"), draw_detections(ir_image, pair.ir, "infrared")]
    if pair.vi.mask.shape == pair.ir.mask.shape:
        panels.append(draw_regions(vi_image, pair))
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + _GAP * (len(panels) - 1)
    sheet = np.full((height, width, 3), 24, np.uint8)
    x = 0
    for panel in panels:
        sheet[: panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + _GAP
    return sheet
