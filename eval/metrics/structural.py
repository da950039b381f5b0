"""Window and gradient metrics: VIF (multi-scale pixel VIF), Qabf (Xydeas-Petrovic) and SSIM.

All work in float64 on 0-255 values. The fused image's share of the work (its
Gaussian statistics, its Sobel gradients) is computed once and used for both sources.
"""

from __future__ import annotations

import math

import numpy as np

from eval.metrics.filters import filter_valid, gaussian_kernel_1d
from eval.metrics.inputs import GrayInputs

_VIF_SIGMA_N_SQ = 2.0
_EPS = 1e-10

# Qabf constants (Xydeas and Petrovic, as in the toolkit).
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8

# SSIM constants for 0-255 data (Wang et al. 2004).
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _local_stats(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and variance ``E[x^2] - E[x]^2`` in 'valid' windows."""
    mu = filter_valid(image, kernel)
    var = filter_valid(image * image, kernel)
    var -= mu * mu
    return mu, var


def _vif_scale(
    ref: np.ndarray,
    mu1: np.ndarray,
    s1: np.ndarray,
    dist: np.ndarray,
    mu2: np.ndarray,
    s2: np.ndarray,
    kernel: np.ndarray,
) -> tuple[float, float]:
    """Numerator and denominator sums of one VIF scale (LIVE ``vifp_mscale`` rules).

    ``s1`` is modified in place; ``s2`` must already be clamped at 0.
    """
    s12 = filter_valid(ref * dist, kernel)
    s12 -= mu1 * mu2
    np.maximum(s1, 0.0, out=s1)
    g = s12 / (s1 + _EPS)
    sv = s2 - g * s12
    # The masks are applied in the reference code's order; later ones see earlier updates.
    low1 = s1 < _EPS
    g[low1] = 0.0
    sv[low1] = s2[low1]
    s1[low1] = 0.0
    low2 = s2 < _EPS
    g[low2] = 0.0
    sv[low2] = 0.0
    neg = g < 0
    sv[neg] = s2[neg]
    g[neg] = 0.0
    np.maximum(sv, _EPS, out=sv)  # sv <= 1e-10 -> 1e-10
    sv += _VIF_SIGMA_N_SQ
    g *= g
    g *= s1
    g /= sv
    g += 1.0
    num = float(np.log10(g).sum())
    s1 *= 1.0 / _VIF_SIGMA_N_SQ
    s1 += 1.0
    den = float(np.log10(s1).sum())
    return num, den


def vif(x: GrayInputs) -> float:
    """VIF: ``vifp(A, F) + vifp(B, F)``, 4 scales, Gaussian windows 17/9/5/3 with sigma N/5.

    Returns NaN where a source gives no information (denominator 0: constant source or
    an image smaller than the first window), as the reference code does.
    """
    refs = [x.a, x.b]
    dist = x.f
    nums = [0.0, 0.0]
    dens = [0.0, 0.0]
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        kernel = gaussian_kernel_1d(size, size / 5.0)
        if scale > 1:
            # Low-pass, then keep every second row and column.
            dist = np.ascontiguousarray(filter_valid(dist, kernel)[::2, ::2])
            refs = [np.ascontiguousarray(filter_valid(r, kernel)[::2, ::2]) for r in refs]
        if dist.shape[0] < size or dist.shape[1] < size:
            break  # 'valid' output is empty here and at every coarser scale
        mu2, s2 = _local_stats(dist, kernel)
        np.maximum(s2, 0.0, out=s2)
        for i, ref in enumerate(refs):
            mu1, s1 = _local_stats(ref, kernel)
            num, den = _vif_scale(ref, mu1, s1, dist, mu2, s2, kernel)
            nums[i] += num
            dens[i] += den
    total = 0.0
    for num, den in zip(nums, dens):
        total += num / den if den != 0 else math.nan
    return total


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``conv2(image, h, 'same')`` with the toolkit's Sobel kernels (zero padding).

    Returns ``(sx, sy)`` for ``h3 = [-1 0 1; -2 0 2; -1 0 1]`` and
    ``h1 = [1 2 1; 0 0 0; -1 -2 -1]``. Convolution flips the kernel, so ``sx`` is left
    minus right and ``sy`` is bottom minus top. Integer-valued, hence exact.
    """
    h, w = image.shape
    p = np.zeros((h + 2, w + 2), dtype=np.float64)
    p[1:-1, 1:-1] = image
    dx = p[:, :-2] - p[:, 2:]  # (H+2, W): left - right
    sx = dx[:-2] + dx[2:]
    sx += 2.0 * dx[1:-1]
    dy = p[2:, :] - p[:-2, :]  # (H, W+2): bottom - top
    sy = dy[:, :-2] + dy[:, 2:]
    sy += 2.0 * dy[:, 1:-1]
    return sx, sy


def _strength_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength ``sqrt(sx^2 + sy^2)`` and angle ``atan(sy / sx)`` (pi/2 where sx = 0)."""
    sx, sy = _sobel(image)
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    sx[zero] = 1.0
    angle = np.arctan(sy / sx)
    angle[zero] = math.pi / 2
    return g, angle


def _edge_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Q^{SF} per pixel: sigmoid of the strength ratio times sigmoid of the angle agreement."""
    # Ratio smaller/larger; where equal the toolkit uses gF itself (its quirk, kept).
    equal = g_s == g_f
    small = np.minimum(g_s, g_f)
    large = np.maximum(g_s, g_f)
    large[equal] = 1.0
    ratio = small / large
    ratio[equal] = g_f[equal]
    agree = np.abs(a_s - a_f)
    agree *= -1.0 / (math.pi / 2)
    agree += 1.0
    # Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))
    ratio -= _DG
    ratio *= _KG
    np.exp(ratio, out=ratio)
    ratio += 1.0
    agree -= _DA
    agree *= _KA
    np.exp(agree, out=agree)
    agree += 1.0
    ratio *= agree
    return (_TG * _TA) / ratio


def qabf(x: GrayInputs) -> float:
    """Qabf: ``sum(Q_AF gA + Q_BF gB) / sum(gA + gB)`` (Xydeas-Petrovic edge transfer)."""
    g_f, a_f = _strength_angle(x.f)
    num = 0.0
    den = 0.0
    for src in (x.a, x.b):
        g_s, a_s = _strength_angle(src)
        q = _edge_preservation(g_s, a_s, g_f, a_f)
        num += float(np.dot(q.ravel(), g_s.ravel()))
        den += float(g_s.sum())
    return num / den if den != 0 else math.nan


def ssim(x: GrayInputs) -> float:
    """SSIM: ``SSIM(A, F) + SSIM(B, F)``; Wang et al. 2004, Gaussian 11x11 sigma 1.5.

    'Valid' windows (no padding), float64 on 0-255, C1 = (0.01*255)^2, C2 = (0.03*255)^2,
    mean of the SSIM map, no automatic downsampling. NaN for images under 11x11.
    """
    kernel = gaussian_kernel_1d(11, 1.5)
    dist = x.f
    mu2, s2 = _local_stats(dist, kernel)
    if mu2.size == 0:
        return math.nan
    mu2_sq = mu2 * mu2
    total = 0.0
    for ref in (x.a, x.b):
        mu1, s1 = _local_stats(ref, kernel)
        mu12 = mu1 * mu2
        s12 = filter_valid(ref * dist, kernel)
        s12 -= mu12
        # ((2 mu1 mu2 + C1)(2 s12 + C2)) / ((mu1^2 + mu2^2 + C1)(s1 + s2 + C2))
        mu12 *= 2.0
        mu12 += _SSIM_C1
        s12 *= 2.0
        s12 += _SSIM_C2
        mu12 *= s12
        mu1 *= mu1
        mu1 += mu2_sq
        mu1 += _SSIM_C1
        s1 += s2
        s1 += _SSIM_C2
        mu1 *= s1
        mu12 /= mu1
        total += float(mu12.mean())
    return total
