"""OpenCV's 8-bit colour conversions, bit-exact, on [0, 1] tensors.

Many authors' test scripts read images with ``cv2.imread`` and convert them with
``cv2.cvtColor`` on uint8, which quantises the luminance (and the chroma they put back)
to whole grey levels with OpenCV's fixed-point coefficients. These functions reproduce
those integers from occo's float inputs (8-bit values / 255), so that a network is fed
exactly what its authors fed it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _to_int(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    q = (rgb.double().clamp(0, 1) * 255).round().to(torch.int32)
    return q[:, 0], q[:, 1], q[:, 2]


def _y14(r: Tensor, g: Tensor, b: Tensor) -> Tensor:
    # cvtColor(..., RGB2YCrCb) for 8U: 14-bit fixed point, round half up.
    return (r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14


def ycrcb_y(rgb: Tensor) -> Tensor:
    """``cv2.cvtColor(uint8, RGB2YCrCb)`` Y / 255: (B, 3, H, W) -> (B, 1, H, W);
    a (B, 1, H, W) gray image is returned as is (it has no other luminance)."""
    if rgb.shape[1] == 1:
        return rgb
    y = _y14(*_to_int(rgb))
    return (y.to(rgb.dtype) / 255)[:, None]


def ycrcb_chroma(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """``(Cr, Cb)`` of ``cv2.cvtColor(uint8, RGB2YCrCb)`` / 255, each (B, 1, H, W).

    A gray (B, 1, H, W) image gives OpenCV's neutral chroma, 128 / 255 (what its authors'
    scripts see after ``cv2.imread`` makes a gray file three-channel)."""
    if rgb.shape[1] == 1:
        neutral = torch.full_like(rgb, 128 / 255)
        return neutral, neutral.clone()
    r, g, b = _to_int(rgb)
    y = _y14(r, g, b)
    half = (128 << 14) + (1 << 13)
    cr = (((r - y) * 11682 + half) >> 14).clamp(0, 255)
    cb = (((b - y) * 9241 + half) >> 14).clamp(0, 255)
    return (cr.to(rgb.dtype) / 255)[:, None], (cb.to(rgb.dtype) / 255)[:, None]


def gray(rgb: Tensor) -> Tensor:
    """``cv2.cvtColor(uint8, RGB2GRAY)`` / 255 (15-bit fixed point): (B, 3, H, W) ->
    (B, 1, H, W); gray input is returned as is."""
    if rgb.shape[1] == 1:
        return rgb
    r, g, b = _to_int(rgb)
    y = (r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15
    return (y.to(rgb.dtype) / 255)[:, None]


def imread_gray(rgb: Tensor) -> Tensor:
    """What ``cv2.imread(path, IMREAD_GRAYSCALE)`` gives for a colour PNG, / 255: libpng's
    own conversion (coefficients 9797, 19234, 3737 / 32768, truncated), not cvtColor's.
    (B, 3, H, W) -> (B, 1, H, W); gray input is returned as is. (For a JPEG, libjpeg
    makes the gray from its YCbCr planes instead, rounding: within one level of this.)"""
    if rgb.shape[1] == 1:
        return rgb
    r, g, b = _to_int(rgb)
    y = (r * 9797 + g * 19234 + b * 3737) >> 15
    return (y.to(rgb.dtype) / 255)[:, None]


def ycrcb_to_rgb(y: Tensor, cr: Tensor, cb: Tensor) -> Tensor:
    """The inverse most fusion scripts apply in float (R = Y + 1.403 (Cr - .5), G = Y -
    .714 (Cr - .5) - .344 (Cb - .5), B = Y + 1.773 (Cb - .5)), clamped to [0, 1] as
    saving does. Each input (B, 1, H, W); output (B, 3, H, W)."""
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    return torch.cat((r, g, b), 1).clamp(0, 1)


def ycrcb_to_rgb_8bit(y: Tensor, cr: Tensor, cb: Tensor) -> Tensor:
    """``cv2.cvtColor(uint8, YCrCb2RGB)`` / 255 (14-bit fixed point): Y is truncated to
    8 bits first (``astype(uint8)``, as scripts do before converting), Cr and Cb are
    8-bit values / 255. Each input (B, 1, H, W); output (B, 3, H, W) in [0, 1]."""
    yq = (y.double().clamp(0, 1) * 255).floor().to(torch.int32)
    crq = (cr.double() * 255).round().to(torch.int32) - 128
    cbq = (cb.double() * 255).round().to(torch.int32) - 128
    half = 1 << 13
    r = yq + ((crq * 22987 + half) >> 14)
    g = yq + ((cbq * -5636 + crq * -11698 + half) >> 14)
    b = yq + ((cbq * 29049 + half) >> 14)
    return (torch.cat((r, g, b), 1).clamp(0, 255).to(y.dtype) / 255)
