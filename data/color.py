"""Colour conversions: the release's Y/Cb/Cr for fusion and the toolkit's gray for metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions that use it: metrics need none
    import torch

#: The release's luminance weights (ITU-R BT.601): Y = .299 R + .587 G + .114 B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# MATLAB rgb2gray coefficients, as the metric toolkit uses them.
_TOOLKIT_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def toolkit_gray(image: np.ndarray) -> np.ndarray:
    """Gray image as the metric toolkit makes it (MATLAB ``rgb2gray`` on uint8).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` RGB, uint8 or uint16. uint16 is first scaled to
            uint8 range (``/257``, rounded), since the toolkit works on 8-bit images.

    Returns:
        ``(H, W)`` uint8.
    """
    if image.dtype == np.uint16:
        image = np.floor(image.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"expected uint8 or uint16 image, got {image.dtype}")
    if image.ndim == 2:
        return image
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    gray = _TOOLKIT_GRAY[0] * r + _TOOLKIT_GRAY[1] * g + _TOOLKIT_GRAY[2] * b
    # MATLAB rounds half away from zero; values are non-negative.
    return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB to Y/Cb/Cr with the release's coefficients.

    Args:
        rgb: ``(..., 3, H, W)`` in [0, 1].

    Returns:
        ``(..., 3, H, W)`` with channels Y, Cb, Cr; Cb and Cr centred on 0.5.
    """
    r, g, b = rgb.unbind(-3)
    y = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    import torch

    return torch.stack((y, cb, cr), dim=-3)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (the release's inverse), clamped to [0, 1].

    Args:
        ycbcr: ``(..., 3, H, W)`` channels Y, Cb, Cr.

    Returns:
        ``(..., 3, H, W)`` RGB in [0, 1].
    """
    y, cb, cr = ycbcr.unbind(-3)
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    import torch

    return torch.stack((r, g, b), dim=-3).clamp(0.0, 1.0)
