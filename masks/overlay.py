"""Overlays to check masks by eye: both modalities side by side, plus the region split."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from occo.masks.detector import to_rgb8
from occo.masks.regions import split_regions
from occo.masks.store import ModalityMasks, PairMasks

#: RGB colours of the overlay.
MASK_COLOUR = (0, 220, 90)
BOX_COLOUR = (255, 210, 0)
TEXT_COLOUR = (255, 255, 255)
REGION_COLOURS = {
    "shared": (255, 170, 0),
    "unique_vi": (0, 170, 255),
    "unique_ir": (235, 50, 50),
}
_GAP = 8
_DARK = 24

Colour = tuple[int, int, int]


def font_scale(shape: tuple[int, ...]) -> float:
    """Text size for an image of this shape: readable on 64 px thumbnails and 4K frames."""
    return float(np.clip(min(shape[:2]) / 700.0, 0.35, 1.5))


def draw_label(
    canvas: np.ndarray, text: str, origin: tuple[int, int], colour: Colour, scale: float
) -> None:
    """Text on a dark box, readable on any background (in place); ``origin`` is bottom-left."""
    thick = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (width, height), baseline = cv2.getTextSize(text, font, scale, thick)
    x, y = origin
    y = max(y, height + 2)
    cv2.rectangle(
        canvas, (x - 2, y - height - 2), (x + width + 2, y + baseline), (0, 0, 0), cv2.FILLED
    )
    cv2.putText(canvas, text, (x, y), font, scale, colour, thick, cv2.LINE_AA)


def draw_detections(image: np.ndarray, entry: ModalityMasks) -> np.ndarray:
    """One modality: the image, its mask tinted with an outline, boxes with scores and phrases.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` image as read (uint8 or uint16).
        entry: the modality's mask and detections.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    canvas = to_rgb8(image).copy()
    mask = entry.mask.astype(bool)
    if mask.shape != canvas.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {canvas.shape[:2]}")
    canvas[mask] = (0.55 * canvas[mask] + 0.45 * np.array(MASK_COLOUR, np.float32)).astype(np.uint8)
    scale = font_scale(canvas.shape)
    thick = max(1, round(scale * 2))
    contours, _ = cv2.findContours(entry.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, MASK_COLOUR, thick)
    for box, score, phrase in zip(entry.boxes, entry.scores, entry.labels, strict=True):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), BOX_COLOUR, thick)
        draw_label(canvas, f"{score:.2f} {phrase}".strip(), (x0 + 2, y0 - 4), BOX_COLOUR, scale)
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
    return base.astype(np.uint8)


def with_header(panel: np.ndarray, lines: list[tuple[str, Colour]]) -> np.ndarray:
    """The panel below a dark strip with lines of text, so that no text hides the image."""
    scale = font_scale(panel.shape)
    step = int(26 * scale) + 4
    header = np.full((step * len(lines) + 6, panel.shape[1], 3), _DARK, np.uint8)
    for row, (text, colour) in enumerate(lines):
        draw_label(header, text, (6, step * (row + 1) - 2), colour, scale)
    return np.concatenate([header, panel], axis=0)


def _summary(entry: ModalityMasks, name: str) -> tuple[str, Colour]:
    coverage = 100.0 * float(entry.mask.mean()) if entry.mask.size else 0.0
    return f"{name}: {len(entry.boxes)} boxes, mask {coverage:.1f}%", TEXT_COLOUR


def render_pair(ir_image: np.ndarray, vi_image: np.ndarray, pair: PairMasks) -> np.ndarray:
    """Visible | infrared | regions, side by side, each under a caption strip.

    The regions panel (shared orange, unique visible blue, unique infrared red, background
    dimmed) needs both masks at one size; it is left out when the images differ in size.

    Args:
        ir_image: the infrared image as read.
        vi_image: the visible image as read.
        pair: the pair's masks and detections.

    Returns:
        ``(H', W', 3)`` uint8 RGB.
    """
    panels = [
        with_header(draw_detections(vi_image, pair.vi), [_summary(pair.vi, "visible")]),
        with_header(draw_detections(ir_image, pair.ir), [_summary(pair.ir, "infrared")]),
    ]
    if pair.vi.mask.shape == pair.ir.mask.shape:
        regions = split_regions(pair.vi.mask, pair.ir.mask)
        share = {name: 100.0 * float(getattr(regions, name).mean()) for name in regions._fields}
        legend = (
            f"shared {share['shared']:.1f}%  unique vi {share['unique_vi']:.1f}%  "
            f"unique ir {share['unique_ir']:.1f}%  bg {share['background']:.1f}%"
        )
        panels.append(
            with_header(draw_regions(vi_image, pair), [(legend, REGION_COLOURS["shared"])])
        )
    return side_by_side(panels)


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels left to right on a dark sheet, top-aligned."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + _GAP * (len(panels) - 1)
    sheet = np.full((height, width, 3), _DARK, np.uint8)
    x = 0
    for panel in panels:
        sheet[: panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + _GAP
    return sheet
