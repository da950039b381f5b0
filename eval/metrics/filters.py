"""Gaussian windows and 'valid' filtering in float64, the building blocks of VIF and SSIM."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=16)
def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """One axis of MATLAB's ``fspecial('gaussian', size, sigma)``.

    The 2-D window is the outer product of this vector with itself: both are
    ``exp(-x^2 / (2 sigma^2))`` normalised to sum 1, so filtering separably gives the
    same values as the 2-D window up to float64 rounding.

    Args:
        size: window width (odd).
        sigma: standard deviation in pixels.

    Returns:
        ``(size, 1)`` float64 column vector, read-only.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    g /= g.sum()
    g = g.reshape(size, 1)
    g.setflags(write=False)
    return g


def valid_size(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """Output shape of a 'valid' filter with a ``size`` x ``size`` window (0 when too small)."""
    return max(0, shape[0] - size + 1), max(0, shape[1] - size + 1)


def filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(outer(k, k), image, 'valid')`` for a symmetric 1-D ``kernel``.

    Runs OpenCV's separable filter in float64 over the whole image and keeps the part
    that never touched the border, which is exactly the 'valid' result.

    Args:
        image: ``(H, W)`` float64.
        kernel: ``(K, 1)`` float64, symmetric (a Gaussian from :func:`gaussian_kernel_1d`).

    Returns:
        ``(H - K + 1, W - K + 1)`` float64, empty when the image is smaller than the window.
    """
    size = kernel.shape[0]
    r = size // 2
    h, w = valid_size(image.shape, size)
    if h == 0 or w == 0:
        return np.empty((h, w), dtype=np.float64)
    full = cv2.sepFilter2D(
        np.ascontiguousarray(image), cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_CONSTANT
    )
    return full[r : r + h, r : r + w]
