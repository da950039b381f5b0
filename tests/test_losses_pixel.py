"""SSIM, intensity and texture losses against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occo.losses.pixel import (
    SSIM,
    PixelLoss,
    gaussian_window,
    intensity_loss,
    sobel,
    ssim,
    ssim_loss,
    texture_loss,
)


def direct_ssim(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two (H, W) float64 images, local statistics summed pixel by pixel."""
    r = size // 2
    g = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(-r, r + 1)]
    g = np.outer(g, g) / sum(g) ** 2
    h, w = a.shape
    pa, pb = np.pad(a, r), np.pad(b, r)  # zero padding: the map has the image's size
    values = []
    for i in range(h):
        for j in range(w):
            wa, wb = pa[i : i + size, j : j + size], pb[i : i + size, j : j + size]
            mu_a, mu_b = (g * wa).sum(), (g * wb).sum()
            var_a = (g * wa * wa).sum() - mu_a**2
            var_b = (g * wb * wb).sum() - mu_b**2
            cov = (g * wa * wb).sum() - mu_a * mu_b
            c1, c2 = 0.01**2, 0.03**2
            num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
            values.append(num / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_gaussian_window_sums_to_one_and_is_symmetric():
    win = gaussian_window(11, 1.5, dtype=torch.float64)
    assert win.shape == (1, 1, 11, 11)
    torch.testing.assert_close(win.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(win, win.transpose(-1, -2))
    assert win[0, 0, 5, 5] == win.max()
    with pytest.raises(ValueError):
        gaussian_window(10)


def test_ssim_is_one_for_identical_images(dtype):
    x = torch.rand(3, 1, 20, 17, generator=torch.Generator().manual_seed(0)).to(dtype)
    value = ssim(x, x.clone())
    torch.testing.assert_close(value, torch.ones(3, dtype=dtype))
    noisy = x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    assert bool((ssim(x, noisy) < 0.99).all())


def test_ssim_matches_the_direct_formula():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 1, 13, 15, generator=g, dtype=torch.float64)
    b = (0.6 * a + 0.4 * torch.rand(2, 1, 13, 15, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim(a, b)
    want = torch.tensor(
        [direct_ssim(a[i, 0].numpy(), b[i, 0].numpy()) for i in range(2)], dtype=torch.float64
    )
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(ssim(b, a), got, atol=1e-12, rtol=0)  # symmetric
    torch.testing.assert_close(SSIM()(a, b), got.mean())


def test_ssim_loss_sums_both_sources():
    g = torch.Generator().manual_seed(3)
    f, vi, ir = (torch.rand(2, 1, 16, 16, generator=g) for _ in range(3))
    want = (1 - ssim(vi, f)).mean() + (1 - ssim(ir, f)).mean()
    torch.testing.assert_close(ssim_loss(f, vi, ir), want)
    assert float(ssim_loss(vi, vi, vi)) == pytest.approx(0.0, abs=1e-6)


def test_intensity_loss_formula_and_mask():
    g = torch.Generator().manual_seed(4)
    f, vi, ir = (torch.rand(2, 1, 8, 9, generator=g, dtype=torch.float64) for _ in range(3))
    mask = (ir > vi).double()
    want = ((f - vi) ** 2).mean() + (mask * (f - ir).abs()).mean()
    torch.testing.assert_close(intensity_loss(f, vi, ir), want)
    # Where the infrared is never brighter, only the visible term is left.
    darker = torch.minimum(ir, vi)
    torch.testing.assert_close(intensity_loss(f, vi, darker), ((f - vi) ** 2).mean())


def test_sobel_on_a_ramp():
    ramp = torch.arange(10, dtype=torch.float64).repeat(7, 1).view(1, 1, 7, 10) * 0.1
    gx, gy = sobel(ramp)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(gx[inner], torch.full_like(gx[inner], 0.8))  # (1 + 2 + 1) * 2 * 0.1
    torch.testing.assert_close(gy[inner], torch.zeros_like(gy[inner]))


def test_texture_loss_formula():
    g = torch.Generator().manual_seed(5)
    f, vi, ir = (torch.rand(2, 1, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    want = 0.0
    for df, dv, di in zip(sobel(f), sobel(vi), sobel(ir), strict=True):
        want = want + (df.abs() - torch.maximum(dv.abs(), di.abs())).abs().mean()
    torch.testing.assert_close(texture_loss(f, vi, ir), want)
    assert float(texture_loss(vi, vi, vi)) == 0.0


def test_pixel_loss_weights_parts_and_gradients():
    g = torch.Generator().manual_seed(6)
    vi, ir = (torch.rand(2, 1, 16, 16, generator=g) for _ in range(2))
    f = torch.rand(2, 1, 16, 16, generator=g, requires_grad=True)
    total, parts = PixelLoss(w_ssim=2.0, w_intensity=10.0, w_texture=0.5)(f, vi, ir)
    assert set(parts) == {"ssim", "intensity", "texture"}
    torch.testing.assert_close(
        total, 2.0 * parts["ssim"] + 10.0 * parts["intensity"] + 0.5 * parts["texture"]
    )
    for value in parts.values():
        (grad,) = torch.autograd.grad(value, f, retain_graph=True)
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_pixel_losses_run_in_float32_under_autocast():
    g = torch.Generator().manual_seed(7)
    f, vi, ir = (torch.rand(1, 1, 16, 16, generator=g) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, parts = PixelLoss()(f.bfloat16(), vi, ir)
    assert all(v.dtype == torch.float32 for v in parts.values())
