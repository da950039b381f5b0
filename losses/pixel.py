"""Pixel losses of OCCO (the paper's Section 3, as released): SSIM, intensity and Sobel texture.

All take gray images ``(B, 1, H, W)`` in [0, 1] and run in float32 or wider even under
autocast (SSIM's constants, 1e-4 and 9e-4, are below bfloat16's resolution near 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SSIM_C1 = 0.01**2  # (K1 L)^2 with L = 1, data in [0, 1]
SSIM_C2 = 0.03**2


def _wide(*images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The images in float32 or wider (float64 stays float64)."""
    dtype = torch.float32
    for image in images:
        dtype = torch.promote_types(dtype, image.dtype)
    return tuple(image.to(dtype) for image in images)


def gaussian_window(
    size: int = 11,
    sigma: float = 1.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalised 2-D Gaussian window.

    Args:
        size: side length in pixels (odd).
        sigma: standard deviation in pixels.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        ``(1, 1, size, size)`` summing to 1.
    """
    if size < 1 or size % 2 == 0 or sigma <= 0:
        raise ValueError(f"window size must be odd and positive, sigma > 0; got {size}, {sigma}")
    coords = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(
    a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Mean structural similarity of each image pair.

    Gaussian-weighted local statistics with zero padding (the output map has the input's
    size), constants for data in [0, 1].

    Args:
        a: ``(B, C, H, W)`` in [0, 1].
        b: ``(B, C, H, W)`` in [0, 1].
        window_size: Gaussian window side (the paper's 11).
        sigma: Gaussian standard deviation (the paper's 1.5).

    Returns:
        ``(B,)`` SSIM averaged over channels and pixels; 1 for identical images.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) images of one shape, got {a.shape}, {b.shape}")
    with torch.autocast(device_type=a.device.type, enabled=False):
        a, b = _wide(a, b)
        channels = a.shape[1]
        window = gaussian_window(window_size, sigma, a.device, a.dtype)
        window = window.expand(channels, 1, window_size, window_size)
        # One grouped convolution for the five local statistics.
        stack = torch.cat((a, b, a * a, b * b, a * b), dim=1)  # (B, 5C, H, W)
        stats = F.conv2d(
            stack, window.repeat(5, 1, 1, 1), padding=window_size // 2, groups=5 * channels
        )
        mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(channels, dim=1)
        var_a = e_aa - mu_a.square()
        var_b = e_bb - mu_b.square()
        cov = e_ab - mu_a * mu_b
        num = (2.0 * mu_a * mu_b + SSIM_C1) * (2.0 * cov + SSIM_C2)
        den = (mu_a.square() + mu_b.square() + SSIM_C1) * (var_a + var_b + SSIM_C2)
        return (num / den).flatten(1).mean(dim=1)


def ssim_loss(
    fused: torch.Tensor,
    vi: torch.Tensor,
    ir: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """L_ssim = (1 - SSIM(vi, f)) + (1 - SSIM(ir, f)), averaged over the batch.

    Args:
        fused: ``(B, 1, H, W)`` fused image.
        vi: ``(B, 1, H, W)`` visible Y.
        ir: ``(B, 1, H, W)`` infrared.
        window_size: Gaussian window side.
        sigma: Gaussian standard deviation.

    Returns:
        Scalar.
    """
    return (1.0 - ssim(vi, fused, window_size, sigma)).mean() + (
        1.0 - ssim(ir, fused, window_size, sigma)
    ).mean()


def intensity_loss(fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """L_int = mean((f - vi)^2) + mean(M |f - ir|) with M = (ir > vi).

    Args:
        fused: ``(B, 1, H, W)``.
        vi: ``(B, 1, H, W)``.
        ir: ``(B, 1, H, W)``.

    Returns:
        Scalar.
    """
    with torch.autocast(device_type=fused.device.type, enabled=False):
        fused, vi, ir = _wide(fused, vi, ir)
        brighter = (ir > vi).to(fused.dtype)  # where the infrared carries the intensity
        return (fused - vi).square().mean() + (brighter * (fused - ir).abs()).mean()


def sobel(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives with zero padding (same size as the input).

    Args:
        image: ``(B, C, H, W)``.

    Returns:
        ``(gx, gy)``, each ``(B, C, H, W)``: horizontal and vertical derivative.
    """
    kx = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack((kx, kx.t())).unsqueeze(1)  # (2, 1, 3, 3)
    b, c, h, w = image.shape
    grads = F.conv2d(image.reshape(b * c, 1, h, w), kernels, padding=1)  # (BC, 2, H, W)
    grads = grads.view(b, c, 2, h, w)
    return grads[:, :, 0], grads[:, :, 1]


def texture_loss(fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """L_texture = mean | |S f| - max(|S vi|, |S ir|) | for S = Sobel x and y, summed.

    Args:
        fused: ``(B, 1, H, W)``.
        vi: ``(B, 1, H, W)``.
        ir: ``(B, 1, H, W)``.

    Returns:
        Scalar.
    """
    with torch.autocast(device_type=fused.device.type, enabled=False):
        fused, vi, ir = _wide(fused, vi, ir)
        total = fused.new_zeros(())
        for g_f, g_vi, g_ir in zip(sobel(fused), sobel(vi), sobel(ir), strict=True):
            total = total + (g_f.abs() - torch.maximum(g_vi.abs(), g_ir.abs())).abs().mean()
        return total


class SSIM(nn.Module):
    """Module form of :func:`ssim` (``(B,)`` per pair, or reduced).

    Args:
        window_size: Gaussian window side.
        sigma: Gaussian standard deviation.
        reduction: ``"mean"`` or ``"none"`` over the batch.
    """

    def __init__(self, window_size: int = 11, sigma: float = 1.5, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be mean or none, got {reduction!r}")
        self.window_size, self.sigma, self.reduction = window_size, sigma, reduction

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """SSIM of ``a`` and ``b``, both ``(B, C, H, W)`` in [0, 1]."""
        value = ssim(a, b, self.window_size, self.sigma)
        return value.mean() if self.reduction == "mean" else value


class PixelLoss(nn.Module):
    """L_pixel = w_ssim L_ssim + w_intensity L_int + w_texture L_texture.

    Args:
        w_ssim: weight of the SSIM term.
        w_intensity: weight of the intensity term (the paper's 10).
        w_texture: weight of the texture term.
        window_size: SSIM Gaussian window side.
        sigma: SSIM Gaussian standard deviation.
    """

    def __init__(
        self,
        w_ssim: float = 1.0,
        w_intensity: float = 10.0,
        w_texture: float = 1.0,
        window_size: int = 11,
        sigma: float = 1.5,
    ) -> None:
        super().__init__()
        self.w_ssim, self.w_intensity, self.w_texture = w_ssim, w_intensity, w_texture
        self.window_size, self.sigma = window_size, sigma

    def forward(
        self, fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted pixel loss and its unweighted parts.

        Args:
            fused: ``(B, 1, H, W)`` in [0, 1].
            vi: ``(B, 1, H, W)`` visible Y in [0, 1].
            ir: ``(B, 1, H, W)`` infrared in [0, 1].

        Returns:
            ``(total, {"ssim", "intensity", "texture"})``, scalars.
        """
        parts = {
            "ssim": ssim_loss(fused, vi, ir, self.window_size, self.sigma),
            "intensity": intensity_loss(fused, vi, ir),
            "texture": texture_loss(fused, vi, ir),
        }
        total = (
            self.w_ssim * parts["ssim"]
            + self.w_intensity * parts["intensity"]
            + self.w_texture * parts["texture"]
        )
        return total, parts
