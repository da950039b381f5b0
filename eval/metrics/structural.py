"""Window and gradient metrics: VIF (multi-scale pixel VIF), Qabf (Xydeas-Petrovic) and SSIM.

All work in float64 on 0-255 values. The fused image's share of the work (its
Gaussian statistics, its Sobel gradients) is computed once and used for both sources.
Masks are applied arithmetically (multiplying by 0/1) rather than by boolean indexing,
which is several times faster and gives the same sums.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from eval.metrics.filters import filter_valid, gaussian_kernel_1d
from eval.metrics.inputs import GrayInputs

_VIF_SIGMA_N_SQ = 2.0
_EPS = 1e-10

# Qabf constants (Xydeas and Petrovic, as in the toolkit).
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8
_HALF_PI = math.pi / 2

# SSIM constants for 0-255 data (Wang et al. 2004).
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _local_stats(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and variance ``E[x^2] - E[x]^2`` in 'valid' windows."""
    mu = filter_valid(image, kernel)
    var = filter_valid(image * image, kernel)
    var -= mu * mu
    return mu, var


def _vif_sums(
    s1: np.ndarray, s12: np.ndarray, s2: np.ndarray, s2_ok: np.ndarray
) -> tuple[float, float]:
    """Numerator and denominator sums of one VIF scale for one source.

    Equivalent to the LIVE ``vifp_mscale`` mask sequence: a pixel contributes to the
    numerator only if ``s1 >= eps``, ``s2 >= eps`` and ``g >= 0`` (there ``g`` is left
    alone and ``sv = max(s2 - g s12, eps)``); every other pixel ends with ``g = 0``,
    a zero term. The denominator uses ``s1`` zeroed below eps.

    Args:
        s1: source variance, clamped at 0; overwritten.
        s12: covariance; overwritten.
        s2: fused variance, clamped at 0.
        s2_ok: ``s2 >= eps`` as float64 0/1.
    """
    g = s1 + _EPS
    np.divide(s12, g, out=g)  # g = s12 / (s1 + eps)
    sv = g * s12
    np.subtract(s2, sv, out=sv)  # sv = s2 - g s12
    np.maximum(sv, _EPS, out=sv)
    sv += _VIF_SIGMA_N_SQ
    keep = s1 >= _EPS
    ok = s2_ok * keep
    ok *= s12 >= 0  # g < 0 exactly where s12 < 0
    g *= g
    g *= s1
    g /= sv
    g += 1.0
    np.log10(g, out=g)
    g *= ok
    num = float(g.sum())
    s1 *= keep
    s1 /= _VIF_SIGMA_N_SQ
    s1 += 1.0
    np.log10(s1, out=s1)
    den = float(s1.sum())
    return num, den


def vif(x: GrayInputs) -> float:
    """VIF: ``vifp(A, F) + vifp(B, F)``, 4 scales, Gaussian windows 17/9/5/3 with sigma N/5.

    A source whose denominator is 0 (constant source, image smaller than 17x17) gives
    NaN, as the reference code's 0/0 does.
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
            dist = filter_valid(dist, kernel)[::2, ::2]
            refs = [filter_valid(r, kernel)[::2, ::2] for r in refs]
        if dist.shape[0] < size or dist.shape[1] < size:
            break  # 'valid' output is empty here and at every coarser scale
        mu2, s2 = _local_stats(dist, kernel)
        np.maximum(s2, 0.0, out=s2)
        s2_ok = (s2 >= _EPS).astype(np.float64)
        for i, ref in enumerate(refs):
            mu1, s1 = _local_stats(ref, kernel)
            np.maximum(s1, 0.0, out=s1)
            s12 = filter_valid(ref * dist, kernel)
            mu1 *= mu2
            s12 -= mu1
            num, den = _vif_sums(s1, s12, s2, s2_ok)
            nums[i] += num
            dens[i] += den
    total = 0.0
    for num, den in zip(nums, dens):
        total += num / den if den != 0 else math.nan
    return total


def _strength_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and angle with the toolkit's Sobel operators (``conv2 'same'``, zero padding).

    The toolkit's ``sx = conv2(image, [-1 0 1; -2 0 2; -1 0 1], 'same')`` is left minus
    right (convolution flips the kernel): OpenCV's x-derivative times -1. Its
    ``sy = conv2(image, [1 2 1; 0 0 0; -1 -2 -1], 'same')`` is bottom minus top: OpenCV's
    y-derivative. Both are integers, hence exact.

    Args:
        image: ``(H, W)`` uint8.

    Returns:
        ``sqrt(sx^2 + sy^2)`` and ``atan(sy / sx)`` (pi/2 where ``sx == 0``), each ``(H, W)``.
    """
    border = cv2.BORDER_CONSTANT
    sx = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3, scale=-1, borderType=border)
    sy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3, borderType=border)
    strength = cv2.magnitude(sx, sy)  # sqrt(sx^2 + sy^2), exact integers inside the root
    zero = sx == 0
    np.copyto(sx, 1.0, where=zero)
    np.divide(sy, sx, out=sy)
    angle = np.arctan(sy, out=sy)
    np.copyto(angle, _HALF_PI, where=zero)
    return strength, angle


def _edge_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Q^{SF} per pixel: sigmoid of the strength ratio times sigmoid of the angle agreement."""
    # Ratio smaller/larger; where equal the toolkit uses gF itself (its quirk, kept).
    equal = g_s == g_f
    large = np.maximum(g_s, g_f)
    np.copyto(large, 1.0, where=equal)
    ratio = np.minimum(g_s, g_f)
    ratio /= large
    np.copyto(ratio, g_f, where=equal)
    # Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da))), A = 1 - |aS - aF| / (pi/2)
    ratio -= _DG
    ratio *= _KG
    np.exp(ratio, out=ratio)
    ratio += 1.0
    agree = np.subtract(a_s, a_f)
    np.abs(agree, out=agree)
    agree /= _HALF_PI
    np.subtract(1.0, agree, out=agree)
    agree -= _DA
    agree *= _KA
    np.exp(agree, out=agree)
    agree += 1.0
    ratio *= agree
    np.divide(_TG * _TA, ratio, out=ratio)
    return ratio


def qabf(x: GrayInputs) -> float:
    """Qabf: ``sum(Q_AF gA + Q_BF gB) / sum(gA + gB)`` (Xydeas-Petrovic edge transfer)."""
    g_f, a_f = _strength_angle(x.f8)
    num = 0.0
    den = 0.0
    for src in (x.a8, x.b8):
        g_s, a_s = _strength_angle(src)
        q = _edge_preservation(g_s, a_s, g_f, a_f)
        q *= g_s
        num += float(q.sum())
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
    s2 += _SSIM_C2
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
        mu1 *= s1
        mu12 /= mu1
        total += float(mu12.mean())
    return total
