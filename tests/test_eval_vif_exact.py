"""VIF's rounding-sensitive windows: scipy's summation order, and VIF against a reference.

The reference values of VIF come from ``scipy.signal.correlate2d`` (LIVE ``vifp_mscale``).
Its per-pixel order of additions is written out below with explicit loops, as scipy's C
code does it; a vectorised copy of it drives a reference VIF on a synthetic image whose
nearly flat windows make VIF depend on that order.
"""

from __future__ import annotations

import numpy as np
import pytest

from occo.eval.metrics import vif_exact
from occo.eval.metrics.filters import filter_patches_ordered, gaussian_window_2d, window_patches
from occo.eval.metrics.inputs import GrayInputs
from occo.eval.metrics.structural import vif


def _correlate_loops(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """scipy's ``pylab_convolve_2d`` + ``DOUBLE_onemultadd`` for 'valid' output, pixel by pixel."""
    size = window.shape[0]
    height, width = image.shape[0] - size + 1, image.shape[1] - size + 1
    out = np.empty((height, width))
    for m in range(height):
        for n in range(width):
            total = 0.0
            for j in range(size):
                row = [float(image[m + j, n + k]) * float(window[j, k]) for k in range(size)]
                k = 0
                while k + 4 <= size:  # dsum += t0*h0 + t1*h1 + t2*h2 + t3*h3 (left to right)
                    total += row[k] + row[k + 1] + row[k + 2] + row[k + 3]
                    k += 4
                for rest in row[k:]:
                    total += rest
            out[m, n] = total
    return out


def _correlate_sequential(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The same products summed strictly one after another (an order scipy does not use)."""
    size = window.shape[0]
    height, width = image.shape[0] - size + 1, image.shape[1] - size + 1
    out = np.zeros((height, width))
    for j in range(size):
        for k in range(size):
            out += image[j : j + height, k : k + width] * window[j, k]
    return out


def _correlate_reference(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """:func:`_correlate_loops`, vectorised over pixels (same operations, same order)."""
    size = window.shape[0]
    height, width = image.shape[0] - size + 1, image.shape[1] - size + 1
    out = np.zeros((height, width))
    for j in range(size):
        terms = [image[j : j + height, k : k + width] * window[j, k] for k in range(size)]
        k = 0
        while k + 4 <= size:
            out += ((terms[k] + terms[k + 1]) + terms[k + 2]) + terms[k + 3]
            k += 4
        for rest in terms[k:]:
            out += rest
    return out


def _vifp_reference(ref: np.ndarray, dist: np.ndarray) -> float:
    """LIVE ``vifp_mscale`` with every filtering done by :func:`_correlate_reference`."""
    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        win = gaussian_window_2d(size, size / 5.0)
        if scale > 1:
            ref = _correlate_reference(ref, win)[::2, ::2]
            dist = _correlate_reference(dist, win)[::2, ::2]
        mu1, mu2 = _correlate_reference(ref, win), _correlate_reference(dist, win)
        s1 = _correlate_reference(ref * ref, win) - mu1 * mu1
        s2 = _correlate_reference(dist * dist, win) - mu2 * mu2
        s12 = _correlate_reference(ref * dist, win) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        low = s1 < 1e-10
        g[low], sv[low], s1[low] = 0, s2[low], 0
        low = s2 < 1e-10
        g[low], sv[low] = 0, 0
        low = g < 0
        sv[low], g[low] = s2[low], 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2.0)))
        den += np.sum(np.log10(1 + s1 / 2.0))
    return num / den


def _saturated_scene(seed: int = 0, size: int = 128) -> tuple[np.ndarray, ...]:
    """IR, visible and fused images where the visible image is saturated (255) in a disc.

    Inside the disc the fused image is textured, so windows of the low-passed visible
    image near (not at) the disc's edge have variances of 1e-12 to 1e-6 but a real
    covariance with the fused image: there VIF's terms depend on the float64 order.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    vi = np.clip(rng.normal(120, 30, (size, size)), 0, 255)
    vi[disc] = 255
    ir = np.clip(rng.normal(60, 20, (size, size)), 0, 255)
    fused = 0.5 * ir + 0.5 * vi
    fused[disc] = np.clip(200 + rng.normal(0, 50, int(disc.sum())), 0, 255)
    return tuple(x.astype(np.uint8) for x in (ir, vi, fused))


@pytest.mark.parametrize("size", [17, 9, 5, 3])
def test_filter_order_is_scipys_bit_for_bit(size):
    rng = np.random.default_rng(size)
    # Squares of 0-255 values plus small fractions: sums where the order shows.
    image = rng.integers(0, 256, (size + 7, size + 9)).astype(np.float64) ** 2
    image += rng.random(image.shape)
    window = gaussian_window_2d(size, size / 5.0)
    expected = _correlate_loops(image, window)
    height, width = expected.shape
    rows, cols = (a.ravel() for a in np.mgrid[0:height, 0:width])
    got = filter_patches_ordered(window_patches(image, rows, cols, size), window)
    assert np.array_equal(got.reshape(height, width), expected)
    assert np.array_equal(_correlate_reference(image, window), expected)
    if size > 4:  # the grouping matters: a plain running sum differs somewhere
        assert not np.array_equal(_correlate_sequential(image, window), expected)


def test_window_patches_with_step_address_the_downsampled_filter():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 26)).astype(np.uint8)
    window = gaussian_window_2d(9, 9 / 5.0)
    full = _correlate_reference(image.astype(np.float64), window)[::2, ::2]
    rows, cols = (a.ravel() for a in np.mgrid[0 : full.shape[0], 0 : full.shape[1]])
    got = filter_patches_ordered(window_patches(image, rows, cols, 9, step=2), window)
    assert np.array_equal(got.reshape(full.shape), full)


def test_vif_matches_reference_order_on_saturated_scene(monkeypatch):
    ir, vi, fused = _saturated_scene()
    expected = _vifp_reference(ir, fused) + _vifp_reference(vi, fused)
    recorded = []
    select = vif_exact.ExactWindows.select

    def spy(self, scale, s1, row0):
        fast = select(self, scale, s1, row0)
        recorded.append((scale, 0 if fast is None else int((fast == 0).sum())))
        return fast

    monkeypatch.setattr(vif_exact.ExactWindows, "select", spy)
    got = vif(GrayInputs(fused, ir, vi))
    # The separable filter alone is ~7e-9 off here; the recomputed windows bring it to
    # the last bits of the sums over all the other windows.
    assert abs(got - expected) <= 1e-11 * expected, (got, expected)
    assert {scale for scale, count in recorded if count} >= {2, 3, 4}


def test_constant_footprints_are_left_to_the_fast_path():
    source = np.full((80, 80), 255, dtype=np.uint8)
    windows = vif_exact.ExactWindows(source)
    s1 = np.zeros((10, 12))  # variances of 0 (rounding noise) everywhere
    assert windows.select(2, s1, 3) is None
    assert windows.positions == {}
