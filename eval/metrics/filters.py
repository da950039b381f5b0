"""Gaussian windows and 'valid' filtering in float64, the building blocks of VIF and SSIM."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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


@lru_cache(maxsize=8)
def gaussian_window_2d(size: int, sigma: float) -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', size, sigma)``: the 2-D window, normalised by its sum.

    Computed with the same float64 operations as the reference implementation, so its
    entries (which differ from the outer product of :func:`gaussian_kernel_1d` in the
    last bits) are the reference's own.

    Returns:
        ``(size, size)`` float64, read-only.
    """
    m = (size - 1) / 2.0
    y, x = np.mgrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    h = h / h.sum()
    h.setflags(write=False)
    return h


def _ordered_sum(products: np.ndarray) -> np.ndarray:
    """Sum ``(..., K, K)`` window products per pixel in scipy's ``correlate2d`` order.

    scipy (``_firfilter.cc``: ``pylab_convolve_2d`` calling ``DOUBLE_onemultadd`` once
    per window row) starts each output at 0 and, row by row, adds the row's taps in
    groups of four, ``sum += ((p0 + p1) + p2) + p3``, then the remaining taps one at a
    time. Every addition below is one IEEE double operation in that order.
    """
    size = products.shape[-1]
    whole = size - size % 4
    # (..., K) indexed by window row: one per group of four taps, then the leftover taps.
    parts = [
        ((products[..., k] + products[..., k + 1]) + products[..., k + 2]) + products[..., k + 3]
        for k in range(0, whole, 4)
    ]
    parts += [products[..., k] for k in range(whole, size)]
    total = np.zeros(products.shape[:-2], dtype=np.float64)
    for j in range(size):
        for part in parts:
            total += part[..., j]
    return total


def window_patches(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, step: int = 1
) -> np.ndarray:
    """The ``size`` x ``size`` windows whose top-left pixels are ``(step rows, step cols)``.

    Args:
        image: ``(H, W)`` uint8 or float64.
        rows: ``(n,)`` int, ``step * rows`` at most ``H - size``.
        cols: ``(n,)`` int, ``step * cols`` at most ``W - size``.
        size: window width.
        step: 2 to address the windows of a filter-then-downsample.

    Returns:
        ``(n, size, size)`` float64: ``out[i, j, k] = image[step rows[i] + j, step cols[i] + k]``.
    """
    view = sliding_window_view(image, (size, size))[::step, ::step]
    return view[rows, cols].astype(np.float64, copy=False)


def filter_patches_ordered(patches: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``scipy.signal.correlate2d(x, window, 'valid')`` at chosen pixels, bit for bit.

    Args:
        patches: ``(..., K, K)`` float64 windows of the image (see :func:`window_patches`);
            overwritten with the products.
        window: ``(K, K)`` float64.

    Returns:
        The filtered values, ``patches.shape[:-2]``.
    """
    patches *= window
    return _ordered_sum(patches)
