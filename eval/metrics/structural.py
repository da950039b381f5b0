"""Window and gradient metrics: VIF (multi-scale pixel VIF), Qabf (Xydeas-Petrovic) and SSIM.

All work in float64 on 0-255 values. Two choices keep them fast without changing a
value beyond float64 rounding:

- Images are processed in horizontal strips (with the rows a window needs above and
  below), so that the dozen temporaries of the per-pixel formulas stay in cache
  instead of streaming whole-image arrays through memory.
- Masks are applied by multiplying with 0/1 instead of boolean indexing, and the fused
  image's share of the work is computed once for both sources.

VIF is the exception to "beyond float64 rounding": in nearly flat windows rounding
decides its thresholds, so those few windows are recomputed in the reference
implementation's own summation order (:mod:`eval.metrics.vif_exact`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from occo.eval.metrics.filters import filter_valid, gaussian_kernel_1d, valid_size
from occo.eval.metrics.inputs import GrayInputs, strips
from occo.eval.metrics.vif_exact import ExactWindows

_VIF_SIGMA_N_SQ = 2.0
_EPS = 1e-10

# Qabf constants (Xydeas and Petrovic, as in the toolkit).
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8
_HALF_PI = math.pi / 2

# SSIM constants for 0-255 data (Wang et al. 2004).
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _rows(image: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows of an image as float64 (uint8 images are converted, float64 ones sliced)."""
    block = image[start:stop]
    return block.astype(np.float64) if block.dtype != np.float64 else block


def _filter_downsample(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``filter_valid(image, kernel)[::2, ::2]``, computed strip by strip.

    Args:
        image: ``(H, W)`` uint8 or float64, at least as large as the window.
        kernel: ``(K, 1)`` float64.

    Returns:
        ``(ceil((H-K+1)/2), ceil((W-K+1)/2))`` float64.
    """
    size = kernel.shape[0]
    height, width = valid_size(image.shape, size)
    out = np.empty(((height + 1) // 2, (width + 1) // 2), dtype=np.float64)
    for start, stop in strips(out.shape[0], image.shape[1] * 2):
        # Output row i is valid row 2i, which covers input rows 2i .. 2i + size - 1.
        block = _rows(image, 2 * start, 2 * (stop - 1) + size)
        out[start:stop] = filter_valid(block, kernel)[::2, ::2]
    return out


def _local_stats(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and variance ``E[x^2] - E[x]^2`` in 'valid' windows."""
    mu = filter_valid(image, kernel)
    var = filter_valid(image * image, kernel)
    var -= mu * mu
    return mu, var


def _vif_sums(
    s1: np.ndarray,
    s12: np.ndarray,
    s2: np.ndarray,
    s2_ok: np.ndarray,
    fast: np.ndarray | None = None,
) -> tuple[float, float]:
    """Numerator and denominator sums of one VIF scale for one source (one strip).

    Equivalent to the LIVE ``vifp_mscale`` mask sequence: a pixel contributes to the
    numerator only if ``s1 >= eps``, ``s2 >= eps`` and ``g >= 0`` (there ``g`` is left
    alone and ``sv = max(s2 - g s12, eps)``); every other pixel ends with ``g = 0``,
    a zero term. The denominator uses ``s1`` zeroed below eps.

    Args:
        s1: source variance clamped at 0; overwritten.
        s12: covariance; overwritten.
        s2: fused variance.
        s2_ok: ``s2 >= eps`` as float64 0/1.
        fast: 0/1 float64, 0 at windows left out (recomputed exactly elsewhere), or
            None for all.
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
    if fast is not None:
        ok *= fast
        keep = keep * fast
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

    Windows where a source is almost flat are rounding-sensitive (see
    :mod:`eval.metrics.vif_exact`): the fast path leaves them out and they are
    recomputed in the reference implementation's exact float64 order.
    """
    exact = [ExactWindows(x.a8), ExactWindows(x.b8)]
    refs = [x.a8, x.b8]
    dist = x.f8
    nums = [0.0, 0.0]
    dens = [0.0, 0.0]
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        kernel = gaussian_kernel_1d(size, size / 5.0)
        if scale > 1:
            # Low-pass, then keep every second row and column.
            if min(valid_size(dist.shape, size)) == 0:
                break
            dist = _filter_downsample(dist, kernel)
            refs = [_filter_downsample(r, kernel) for r in refs]
        height, width = dist.shape
        if height < size or width < size:
            break  # 'valid' output is empty here and at every coarser scale
        for start, stop in strips(height - size + 1, width):
            rows = (start, stop + size - 1)  # input rows the strip's windows cover
            d = _rows(dist, *rows)
            mu2, s2 = _local_stats(d, kernel)
            # s2 is not clamped at 0: only pixels with s2 >= eps use it.
            s2_ok = (s2 >= _EPS).astype(np.float64)
            for i, ref in enumerate(refs):
                r = _rows(ref, *rows)
                mu1, s1 = _local_stats(r, kernel)
                np.maximum(s1, 0.0, out=s1)  # keeps every term finite (s1 + eps > 0)
                # At scale 1 the inputs are integers: a window is either constant (s1 and
                # s12 both rounding noise, terms ~1e-11) or has s1 >= ~5e-5, a million
                # times its rounding error, so only the low-passed scales need this.
                fast = exact[i].select(scale, s1, start) if scale > 1 else None
                s12 = filter_valid(r * d, kernel)
                mu1 *= mu2
                s12 -= mu1
                num, den = _vif_sums(s1, s12, s2, s2_ok, fast)
                nums[i] += num
                dens[i] += den
    for i, windows in enumerate(exact):
        num, den = windows.sums(x.f8)
        nums[i] += num
        dens[i] += den
    total = 0.0
    for num, den in zip(nums, dens, strict=True):
        total += num / den if den != 0 else math.nan
    return total


def _strength_angle(image: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and angle of rows ``start:stop`` with the toolkit's Sobel operators.

    The toolkit's ``sx = conv2(image, [-1 0 1; -2 0 2; -1 0 1], 'same')`` is left minus
    right (convolution flips the kernel): OpenCV's x-derivative times -1. Its
    ``sy = conv2(image, [1 2 1; 0 0 0; -1 -2 -1], 'same')`` is bottom minus top: OpenCV's
    y-derivative. Zero padding outside the image; both are integers, hence exact.

    Args:
        image: ``(H, W)`` uint8, the whole image.
        start: first row wanted.
        stop: one past the last row wanted.

    Returns:
        ``sqrt(sx^2 + sy^2)`` and ``atan(sy / sx)`` (pi/2 where ``sx == 0``), each
        ``(stop - start, W)``.
    """
    # One extra row on each side inside the image, so the strip edges see real pixels;
    # at the image's own edges the constant (zero) border is the toolkit's padding.
    lo, hi = max(start - 1, 0), min(stop + 1, image.shape[0])
    block = image[lo:hi]
    border = cv2.BORDER_CONSTANT
    sx = cv2.Sobel(block, cv2.CV_64F, 1, 0, ksize=3, scale=-1, borderType=border)
    sy = cv2.Sobel(block, cv2.CV_64F, 0, 1, ksize=3, borderType=border)
    keep = slice(start - lo, start - lo + stop - start)
    sx, sy = sx[keep], sy[keep]
    strength = cv2.magnitude(sx, sy)  # sqrt(sx^2 + sy^2), exact integers inside the root
    zero = sx == 0
    np.copyto(sx, 1.0, where=zero)
    np.divide(sy, sx, out=sy)
    angle = np.arctan(sy, out=sy)
    np.copyto(angle, _HALF_PI, where=zero)
    return strength, angle


def _edge_preservation(
    g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray
) -> np.ndarray:
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


def qabf_strips(x: GrayInputs) -> Iterator[tuple[int, int, int, np.ndarray, np.ndarray]]:
    """Qabf's per-pixel terms, strip by strip: ``(start, stop, source, Q_SF * gS, gS)``.

    ``source`` is 0 for A (infrared) and 1 for B (visible); the arrays cover rows
    ``start:stop`` of the image and are reused after the next step, so use them at once.
    Qabf is ``sum(Q_AF gA + Q_BF gB) / sum(gA + gB)`` over these maps.
    """
    height, width = x.f8.shape
    for start, stop in strips(height, width):
        g_f, a_f = _strength_angle(x.f8, start, stop)
        for i, src in enumerate((x.a8, x.b8)):
            g_s, a_s = _strength_angle(src, start, stop)
            q = _edge_preservation(g_s, a_s, g_f, a_f)
            q *= g_s
            yield start, stop, i, q, g_s


def qabf(x: GrayInputs) -> float:
    """Qabf: ``sum(Q_AF gA + Q_BF gB) / sum(gA + gB)`` (Xydeas-Petrovic edge transfer)."""
    num = 0.0
    den = 0.0
    for _, _, _, q, g_s in qabf_strips(x):
        num += float(q.sum())
        den += float(g_s.sum())
    return num / den if den != 0 else math.nan


#: SSIM's window width; map entry ``(i, j)`` belongs to the window centred on pixel
#: ``(i + SSIM_RADIUS, j + SSIM_RADIUS)``.
SSIM_WINDOW = 11
SSIM_RADIUS = SSIM_WINDOW // 2


def ssim_strips(x: GrayInputs) -> Iterator[tuple[int, int, np.ndarray]]:
    """The SSIM maps of A and B against F, strip by strip: ``(start, source, map rows)``.

    ``source`` is 0 for A (infrared) and 1 for B (visible); the rows are map rows
    ``start:start + len``, one per 'valid' window (see :data:`SSIM_RADIUS`), reused
    after the next step. Nothing for images under 11x11.
    """
    kernel = gaussian_kernel_1d(SSIM_WINDOW, 1.5)
    height, width = x.shape
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        return
    for start, stop in strips(height - SSIM_WINDOW + 1, width):
        rows = (start, stop + SSIM_WINDOW - 1)
        d = x.rows("f", *rows)
        mu2, s2 = _local_stats(d, kernel)
        mu2_sq = mu2 * mu2
        s2 += _SSIM_C2
        for i, key in enumerate(("a", "b")):
            ref = x.rows(key, *rows)
            mu1, s1 = _local_stats(ref, kernel)
            mu12 = mu1 * mu2
            s12 = filter_valid(ref * d, kernel)
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
            yield start, i, mu12


def ssim(x: GrayInputs) -> float:
    """SSIM: ``SSIM(A, F) + SSIM(B, F)``; Wang et al. 2004, Gaussian 11x11 sigma 1.5.

    'Valid' windows (no padding), float64 on 0-255, C1 = (0.01*255)^2, C2 = (0.03*255)^2,
    mean of the SSIM map, no automatic downsampling. NaN for images under 11x11.
    """
    height, width = x.shape
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        return math.nan
    sums = [0.0, 0.0]
    for _, i, ssim_map in ssim_strips(x):
        sums[i] += float(ssim_map.sum())
    count = (height - SSIM_WINDOW + 1) * (width - SSIM_WINDOW + 1)
    return sums[0] / count + sums[1] / count
