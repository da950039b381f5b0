"""Metrics built from histograms, differences and exact sums: EN, SF, AG, SD, CC, SCD, MI, MSE, PSNR.

Each function takes a :class:`~eval.metrics.inputs.GrayInputs` (A = infrared,
B = visible, F = fused) and returns a Python float; undefined values (a constant image
in a correlation, an image one pixel wide) are NaN, as in the toolkit.
"""

from __future__ import annotations

import math

import numpy as np

from occo.eval.metrics.inputs import GrayInputs, histogram, product_sum, strips


def _entropy_of_counts(counts: np.ndarray, total: int) -> float:
    """Shannon entropy in bits of a histogram with ``total`` samples."""
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log2(p)))


def _ratio(numerator: int, denominator: int) -> float:
    """Correctly rounded ``numerator / denominator`` for Python ints; NaN for 0 / 0."""
    if denominator == 0:
        return math.nan
    return numerator / denominator


def _corr(n: int, sx: int, sy: int, sxx: int, syy: int, sxy: int) -> float:
    """Pearson correlation from exact integer sums (``corr2``); NaN if either is constant."""
    cov = n * sxy - sx * sy
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    if vx <= 0 or vy <= 0:
        return math.nan
    return cov / (math.sqrt(vx) * math.sqrt(vy))


def en(x: GrayInputs) -> float:
    """EN: entropy (bits) of the 256-bin histogram of F (MATLAB ``entropy``)."""
    return _entropy_of_counts(x.hist("f"), x.n)


def _neighbour_sq_sum(f8: np.ndarray, total_sq: int, axis: int) -> int:
    """Exact sum of squared differences of neighbours along ``axis``.

    ``sum (x[i+1] - x[i])^2 = sum x[1:]^2 + sum x[:-1]^2 - 2 sum x[1:] x[:-1]``, and the
    first two are the total minus the last or first line: integers only, no temporaries.
    """
    first = np.take(f8, [0], axis=axis)
    last = np.take(f8, [f8.shape[axis] - 1], axis=axis)
    lead = f8[:, :-1] if axis == 1 else f8[:-1, :]
    trail = f8[:, 1:] if axis == 1 else f8[1:, :]
    ends = product_sum(first, first) + product_sum(last, last)
    return 2 * total_sq - ends - 2 * product_sum(lead, trail)


def sf(x: GrayInputs) -> float:
    """SF: ``sqrt(mean(dx^2) + mean(dy^2))``, each mean over its own difference array."""
    m, n = x.shape
    total_sq = x.total_sq("f")
    rf = _ratio(_neighbour_sq_sum(x.f8, total_sq, 1), m * (n - 1))
    cf = _ratio(_neighbour_sq_sum(x.f8, total_sq, 0), (m - 1) * n)
    return math.sqrt(rf + cf)


def _twice_row_gradient(block: np.ndarray) -> np.ndarray:
    """``2 * numpy.gradient(block, axis=1)``: central differences inside, one-sided (doubled)
    at the first and last column; all zero for a single column (as MATLAB's ``gradient``).

    Doubling keeps every value an integer; the factor is folded into AG's constant.
    """
    g = np.zeros_like(block)
    if block.shape[1] < 2:
        return g
    np.subtract(block[:, 2:], block[:, :-2], out=g[:, 1:-1])
    np.subtract(block[:, 1], block[:, 0], out=g[:, 0])
    np.subtract(block[:, -1], block[:, -2], out=g[:, -1])
    g[:, 0] *= 2.0
    g[:, -1] *= 2.0
    return g


def ag(x: GrayInputs) -> float:
    """AG: ``sum(sqrt((gx^2 + gy^2) / 2)) / ((M-1)(N-1))`` with MATLAB ``gradient``."""
    m, n = x.shape
    if m < 2 or n < 2:
        return math.nan
    total = 0.0
    for start, stop in strips(m, n):
        rows = np.arange(start, stop)
        up = np.maximum(rows - 1, 0)
        down = np.minimum(rows + 1, m - 1)
        f = x.rows("f", start, stop)
        gx = _twice_row_gradient(f)
        gy = x.f8[down].astype(np.float64)
        gy -= x.f8[up]
        gy[(down - up) == 1] *= 2.0  # one-sided at the first and last row, doubled
        # (2gx)^2 + (2gy)^2 = 4 (gx^2 + gy^2); dividing by 8 instead of 2 is exact.
        gx *= gx
        gy *= gy
        gx += gy
        gx *= 0.125
        np.sqrt(gx, out=gx)
        total += float(gx.sum())
    return total / ((m - 1) * (n - 1))


def sd(x: GrayInputs) -> float:
    """SD: population standard deviation of F."""
    s, ss = x.total("f"), x.total_sq("f")
    return math.sqrt((x.n * ss - s * s) / (x.n * x.n))


def cc(x: GrayInputs) -> float:
    """CC: ``(corr(A, F) + corr(B, F)) / 2``, Pearson correlation."""
    n, sf_, sff = x.n, x.total("f"), x.total_sq("f")
    total = 0.0
    for src in ("a", "b"):
        total += _corr(n, x.total(src), sf_, x.total_sq(src), sff, x.cross(src, "f"))
    return total / 2.0


def scd(x: GrayInputs) -> float:
    """SCD: ``corr(F - B, A) + corr(F - A, B)`` (sum of the correlations of differences)."""
    n, s_f, s_ff = x.n, x.total("f"), x.total_sq("f")
    s_ab = x.cross("a", "b")
    total = 0.0
    for src, other in (("a", "b"), ("b", "a")):
        # D = F - other, correlated with src; all sums expanded into exact integer sums.
        s_d = s_f - x.total(other)
        s_dd = s_ff - 2 * x.cross("f", other) + x.total_sq(other)
        s_ds = x.cross("f", src) - s_ab
        total += _corr(n, s_d, x.total(src), s_dd, x.total_sq(src), s_ds)
    return total


def mi(x: GrayInputs) -> float:
    """MI: ``[H(A) + H(F) - H(A,F)] + [H(B) + H(F) - H(B,F)]`` in bits (toolkit joint histogram).

    The toolkit indexes its 256x256 joint histogram with ``uint8 + 1``, which saturates:
    grey levels 254 and 255 share a bin on both axes. The single-image entropies use
    the plain 256-bin histograms.
    """
    h_f = en(x)
    f_merged = np.minimum(x.f8, 254)
    total = 0.0
    for src in ("a", "b"):
        h_s = _entropy_of_counts(x.hist(src), x.n)
        joint = histogram([f_merged, np.minimum(x.u8(src), 254)])
        total += h_s + h_f - _entropy_of_counts(joint, x.n)
    return total


def mse(x: GrayInputs) -> float:
    """MSE: ``0.5 mean((F-A)^2) + 0.5 mean((F-B)^2)`` on images divided by 255."""
    s_ff = x.total_sq("f")
    sq = 0
    for src in ("a", "b"):
        sq += s_ff - 2 * x.cross("f", src) + x.total_sq(src)
    return sq / (2 * x.n * 255 * 255)


def psnr(x: GrayInputs, mse_value: float | None = None) -> float:
    """PSNR: ``20 log10(255 / sqrt(MSE))`` with the toolkit's MSE (images in [0, 1])."""
    value = mse(x) if mse_value is None else mse_value
    if value == 0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(value))
