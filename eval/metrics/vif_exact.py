"""VIF's rounding-sensitive windows, recomputed in the reference implementation's float64 order.

Why this exists: VIF's local variances are ``E[x^2] - E[x]^2``. Where a window of a
source is almost flat (typically the blurred edge of a saturated area at scales 2-4),
the true variance is tiny (1e-12 to 1e-5) while each term is near 255^2, so the result
carries an absolute rounding error of ~1e-11 that depends on the order of the additions.
That error decides the 1e-10 thresholds, and it is amplified by the gain
``g = s12 / (s1 + 1e-10)``: a single window can move VIF by 1e-7. The reference values
(LIVE ``vifp_mscale`` with ``scipy.signal.correlate2d(x, fspecial('gaussian', N, N/5),
'valid')`` for every filtering, the low-pass before each downsampling included) come
from scipy's order (see ``eval.metrics.filters._ordered_sum``), so occo reproduces that
order exactly for those windows, and for every low-passed pixel they read, and keeps the
fast separable filter everywhere else (there the two orders agree to ~1e-13 of VIF).

Windows whose source footprint (all the 8-bit pixels they depend on, through the
low-pass filters) is constant are left to the fast path: their covariance is pure
rounding noise too, so their terms are ~1e-11 in either order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from occo.eval.metrics.filters import filter_patches_ordered, gaussian_window_2d, window_patches

#: Source variance below which a window's VIF term is recomputed in the reference order.
#: With it occo's VIF is within 3e-13 of the 126-image TNO reference table (1e-5 would do
#: too; 1e-4 keeps a margin and costs a few ms only on images with saturated areas).
NOISY_VARIANCE = 1e-4

_EPS = 1e-10
_SIGMA_N_SQ = 2.0


def window_size(scale: int) -> int:
    """Gaussian window width of a VIF scale (1-4): 17, 9, 5, 3."""
    return 2 ** (4 - scale + 1) + 1


def _footprint(scale: int) -> int:
    """Side of the square of 8-bit pixels a 'valid' window of ``scale`` depends on.

    17, 25, 33 and 41 for scales 1-4.

    A pixel of the scale-``s`` image covers ``span(s)`` input pixels, with
    ``span(1) = 1`` and ``span(s) = 2^(s-2) (N_s - 1) + span(s-1)``; a window of it
    covers ``2^(s-1) (N_s - 1) + span(s)``; its rows start at ``2^(s-1) i``.
    """
    span = 1
    for s in range(2, scale + 1):
        span += 2 ** (s - 2) * (window_size(s) - 1)
    return 2 ** (scale - 1) * (window_size(scale) - 1) + span


def _scale_shapes(shape: tuple[int, int], top: int) -> dict[int, tuple[int, int]]:
    """Image shape at each scale 1..top (``[::2, ::2]`` of the 'valid' low-pass)."""
    shapes = {1: shape}
    for s in range(2, top + 1):
        n = window_size(s)
        h, w = shapes[s - 1]
        shapes[s] = ((h - n + 2) // 2, (w - n + 2) // 2)
    return shapes


class ExactWindows:
    """The windows of one source whose VIF terms are recomputed in the reference order.

    The fast path hands each strip's source variances to :meth:`select`, leaves out the
    windows it returns, and finally adds :meth:`sums`.

    Args:
        source: ``(H, W)`` uint8 source image (A or B).
    """

    def __init__(self, source: np.ndarray):
        self.source = source
        self.positions: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def _flat(self, scale: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each window's 8-bit footprint is constant, from exact integer box sums.

        The integral images cover only the candidates' bounding box: small, and so
        cheap, in the usual case of a few clusters.
        """
        size, step = _footprint(scale), 2 ** (scale - 1)
        top, left = rows.min() * step, cols.min() * step
        block = self.source[top : rows.max() * step + size, left : cols.max() * step + size]
        total, squares = cv2.integral2(block, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
        r, c = rows * step - top, cols * step - left

        def box(integral: np.ndarray) -> np.ndarray:
            return (
                integral[r + size, c + size]
                - integral[r, c + size]
                - integral[r + size, c]
                + integral[r, c]
            )

        sums = box(total).astype(np.float64)
        # n sum(x^2) - sum(x)^2 is 0 exactly when all n values are equal (integers < 2^53).
        return box(squares) * (size * size) - sums * sums == 0

    def select(self, scale: int, s1: np.ndarray, row0: int) -> np.ndarray | None:
        """Record a strip's rounding-sensitive windows; return the fast path's 0/1 mask.

        Args:
            scale: 2-4 (scale 1 needs no recomputation, see ``structural.vif``).
            s1: ``(h, w)`` source variances of the strip's windows (fast path).
            row0: row of the strip's first window in the scale's 'valid' grid.

        Returns:
            ``(h, w)`` float64, 0 at the recorded windows and 1 elsewhere; None when
            there are none.
        """
        noisy = s1 < NOISY_VARIANCE
        if not noisy.any():
            return None
        rows, cols = np.nonzero(noisy)
        rows += row0
        keep = ~self._flat(scale, rows, cols)
        if not keep.any():
            return None
        rows, cols = rows[keep], cols[keep]
        self.positions.setdefault(scale, []).append((rows, cols))
        mask = np.ones(s1.shape, dtype=np.float64)
        mask[rows - row0, cols] = 0.0
        return mask

    def sums(self, fused: np.ndarray) -> tuple[float, float]:
        """Numerator and denominator terms of the recorded windows, in the reference order.

        Args:
            fused: ``(H, W)`` uint8 fused image.
        """
        if not self.positions:
            return 0.0, 0.0
        where = {
            s: (np.concatenate([r for r, _ in parts]), np.concatenate([c for _, c in parts]))
            for s, parts in self.positions.items()
        }
        top = max(where)
        shapes = _scale_shapes(self.source.shape, top)
        needed = _needed_pixels(where, shapes, top)
        refs, dists = {1: self.source}, {1: fused}
        for s in range(2, top + 1):
            refs[s], dists[s] = _lowpass_at(refs[s - 1], dists[s - 1], s, needed[s], shapes[s])
        num = den = 0.0
        for s, (rows, cols) in where.items():
            n, d = _terms(refs[s], dists[s], rows, cols, window_size(s))
            num += n
            den += d
        return num, den


def _needed_pixels(
    where: dict[int, tuple[np.ndarray, np.ndarray]], shapes: dict[int, tuple[int, int]], top: int
) -> dict[int, np.ndarray]:
    """Pixels of the low-passed images (scales 2..top) the recorded windows read, exactly.

    A window at ``(i, j)`` of scale ``s`` reads pixels ``i..i+N_s-1`` of the scale-``s``
    image; a pixel ``q`` of the scale-``s`` image is the low-pass of the scale-``s-1``
    window at ``2 q``. Both are dilations towards the bottom right.

    Returns:
        ``{scale: (H_s, W_s) uint8 mask}``.
    """
    needed: dict[int, np.ndarray] = {}
    for s in range(top, 1, -1):
        mask = np.zeros(shapes[s], dtype=np.uint8)
        if s in where:
            mask[where[s]] = 1
            mask = _dilate(mask, window_size(s))
        if s + 1 in needed:
            up = np.zeros(shapes[s], dtype=np.uint8)
            h, w = shapes[s + 1]
            up[0 : 2 * h : 2, 0 : 2 * w : 2] = needed[s + 1]
            mask |= _dilate(up, window_size(s + 1))
        needed[s] = mask
    return needed


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Mark ``[i, i + size) x [j, j + size)`` for every marked ``(i, j)``."""
    kernel = np.ones((size, size), dtype=np.uint8)
    return cv2.dilate(mask, kernel, anchor=(size - 1, size - 1))


def _chunks(
    rows: np.ndarray, cols: np.ndarray, size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, cols)`` in pieces whose ``size`` x ``size`` windows take ~8 MB per image.

    Bounds the memory of the gathered windows on images with large flagged areas.
    """
    step = max(1, (1 << 20) // (size * size))
    for i in range(0, len(rows), step):
        yield rows[i : i + step], cols[i : i + step]


def _lowpass_at(
    ref: np.ndarray, dist: np.ndarray, scale: int, needed: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Scale-``scale`` images, exact (reference order) at the needed pixels, 0 elsewhere.

    Args:
        ref: ``(H, W)`` source image one scale finer (uint8 or float64).
        dist: ``(H, W)`` fused image one scale finer.
        scale: 2-4.
        needed: ``shape`` mask of the pixels to compute.
        shape: ``(H_s, W_s)``.

    Returns:
        Two ``shape`` float64 images.
    """
    rows, cols = np.nonzero(needed)
    size = window_size(scale)
    window = gaussian_window_2d(size, size / 5.0)
    out = []
    for image in (ref, dist):
        low = np.zeros(shape, dtype=np.float64)
        for r, c in _chunks(rows, cols, size):
            low[r, c] = filter_patches_ordered(window_patches(image, r, c, size, step=2), window)
        out.append(low)
    return out[0], out[1]


def _terms(
    ref: np.ndarray, dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int
) -> tuple[float, float]:
    """VIF numerator and denominator terms of the windows at ``(rows, cols)``, as the reference.

    The LIVE mask sequence, operation for operation (``g * g * s1 / (sv + sigma_n^2)``).

    Args:
        ref: ``(H_s, W_s)`` source image of the scale, exact where the windows read it.
        dist: ``(H_s, W_s)`` fused image of the scale, likewise.
        rows: ``(n,)`` window rows in the scale's 'valid' grid.
        cols: ``(n,)`` window columns.
        size: window width.
    """
    window = gaussian_window_2d(size, size / 5.0)
    num = den = 0.0
    for r, c in _chunks(rows, cols, size):
        x = window_patches(ref, r, c, size)
        y = window_patches(dist, r, c, size)
        # The five images the reference filters, each product formed before filtering.
        stack = np.empty((5,) + x.shape, dtype=np.float64)
        stack[0], stack[1] = x, y
        np.multiply(x, x, out=stack[2])
        np.multiply(y, y, out=stack[3])
        np.multiply(x, y, out=stack[4])
        n, d = _vif_terms(*filter_patches_ordered(stack, window))
        num += n
        den += d
    return num, den


def _vif_terms(
    mu1: np.ndarray, mu2: np.ndarray, e11: np.ndarray, e22: np.ndarray, e12: np.ndarray
) -> tuple[float, float]:
    """Sum of VIF's numerator and denominator terms from the five filtered values (n,)."""
    s1 = e11 - mu1 * mu1
    s2 = e22 - mu2 * mu2
    s12 = e12 - mu1 * mu2
    s1[s1 < 0] = 0
    s2[s2 < 0] = 0
    g = s12 / (s1 + _EPS)
    sv = s2 - g * s12
    low = s1 < _EPS
    g[low] = 0
    sv[low] = s2[low]
    s1[low] = 0
    low = s2 < _EPS
    g[low] = 0
    sv[low] = 0
    low = g < 0
    sv[low] = s2[low]
    g[low] = 0
    sv[sv <= _EPS] = _EPS
    num = np.log10(1 + g * g * s1 / (sv + _SIGMA_N_SQ))
    den = np.log10(1 + s1 / _SIGMA_N_SQ)
    return math.fsum(num), math.fsum(den)
