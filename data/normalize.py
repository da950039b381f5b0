"""Input normalisation, one definition for inference and training.

Infrared to one channel in [0, 1] (8-bit / 255; 16-bit by a robust per-image stretch),
visible to [0, 1] (8-bit / 255, 16-bit / 65535), colour visible images split into Y, Cb,
Cr with the release's coefficients; and the way back (fused Y with the visible Cb/Cr).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from occo.data.color import LUMA_WEIGHTS, rgb_to_ycbcr, ycbcr_to_rgb
from occo.data.io import is_gray_content

IR16Mode = Literal["percentile", "minmax", "full"]
#: Percentiles of the 16-bit infrared stretch: robust to dead and saturated pixels.
IR16_PERCENTILES = (0.1, 99.9)
# The release's luminance weights, also used to gray a colour-mapped infrared image.
_LUMA = np.array(LUMA_WEIGHTS, dtype=np.float32)


def ir_to_unit(ir: np.ndarray, ir16: IR16Mode = "percentile") -> np.ndarray:
    """Infrared image to one float32 channel in [0, 1].

    8-bit is divided by 255 (the release's test). 16-bit thermal data usually fills only a
    narrow band of the 16-bit range (raw radiometric counts), so dividing by 65535 would
    give an almost flat image; it is stretched per image instead:

    - ``percentile`` (default): the 0.1th..99.9th percentiles map to 0..1, clipped; a few
      dead or saturated pixels cannot squash the scene.
    - ``minmax``: the image's min..max map to 0..1 (how the release normalised training data).
    - ``full``: divide by 65535.

    Args:
        ir: (H, W) or (H, W, 3) uint8 / uint16 (gray content stored as RGB is common).
        ir16: the 16-bit stretch.

    Returns:
        (H, W) float32 in [0, 1].
    """
    if ir.ndim == 3:
        ir = ir[..., 0] if is_gray_content(ir) else ir.astype(np.float32) @ _LUMA
    x = ir.astype(np.float32)
    if ir.dtype == np.uint8:
        return x / 255.0
    if ir.dtype == np.float32:  # a colour-mapped 8-bit image, grayed above
        return np.clip(x / 255.0, 0.0, 1.0)
    if ir16 == "full":
        return x / 65535.0
    if ir16 == "percentile":
        lo, hi = np.percentile(x, IR16_PERCENTILES)
    elif ir16 == "minmax":
        lo, hi = float(x.min()), float(x.max())
    else:
        raise ValueError(f"ir16 must be percentile, minmax or full, got {ir16!r}")
    lo, hi = np.float32(lo), np.float32(hi)  # float32 out, as documented (not float64)
    return np.clip((x - lo) / max(hi - lo, np.float32(1e-6)), 0.0, 1.0)


def vi_to_unit(vi: np.ndarray) -> np.ndarray:
    """Visible image to float32 in [0, 1]; gray content stored as RGB becomes one channel.

    Args:
        vi: (H, W) or (H, W, 3) uint8 / uint16.

    Returns:
        (1, H, W) gray or (3, H, W) RGB, float32 in [0, 1].
    """
    scale = 255.0 if vi.dtype == np.uint8 else 65535.0
    if vi.ndim == 3 and is_gray_content(vi):
        vi = vi[..., 0]
    x = vi.astype(np.float32) / scale
    return x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass
class PreparedPair:
    """One infrared/visible pair ready for the network (made in decode worker threads)."""

    ir: Tensor
    """(1, H, W) float32 infrared in [0, 1]."""
    vi: Tensor
    """(1, H, W) gray or (3, H, W) RGB float32 visible in [0, 1]."""

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple(self.ir.shape[-2:])

    @property
    def color(self) -> bool:
        """Whether the visible image (and so the output) is colour."""
        return self.vi.shape[0] == 3


def prepare_pair(ir: np.ndarray, vi: np.ndarray, ir16: IR16Mode = "percentile") -> PreparedPair:
    """Arrays as read by ``data.io.read_image`` to a :class:`PreparedPair`.

    Args:
        ir: (H, W) or (H, W, 3) uint8 / uint16.
        vi: (H, W) or (H, W, 3) uint8 / uint16, same H, W.
        ir16: how 16-bit infrared is stretched (see :func:`ir_to_unit`).

    Returns:
        The prepared pair.

    Raises:
        ValueError: the two images differ in size.
    """
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(
            f"infrared {ir.shape[1]}x{ir.shape[0]} and visible {vi.shape[1]}x{vi.shape[0]} differ in size"
        )
    return PreparedPair(
        ir=torch.from_numpy(ir_to_unit(ir, ir16))[None], vi=torch.from_numpy(vi_to_unit(vi))
    )


def to_uint8(image: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] to an 8-bit image array, rounded.

    Args:
        image: (1, H, W) or (3, H, W) tensor.

    Returns:
        (H, W) or (H, W, 3) uint8.
    """
    x = (image.float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0))


def compose_color(fused_y: Tensor, vi: Tensor) -> Tensor:
    """Put the fused luminance into the visible image's colour (Y replaced, Cb/Cr kept).

    Args:
        fused_y: (B, 1, H, W) in [0, 1].
        vi: (B, 1, H, W) gray or (B, 3, H, W) RGB visible in [0, 1].

    Returns:
        (B, 1, H, W) when ``vi`` is gray, else (B, 3, H, W) RGB in [0, 1].
    """
    if vi.shape[1] == 1:
        return fused_y
    ycbcr = rgb_to_ycbcr(vi.float())  # (B, 3, H, W)
    return ycbcr_to_rgb(torch.cat((fused_y.float(), ycbcr[:, 1:]), dim=1))


def luminance(vi: Tensor) -> Tensor:
    """(B, 1|3, H, W) visible -> (B, 1, H, W) Y with the release's coefficients."""
    return vi if vi.shape[1] == 1 else rgb_to_ycbcr(vi)[:, :1]


def prepare_training_pair(ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training inputs prepared exactly as inference prepares them (:func:`prepare_pair`).

    8-bit images are divided by 255 (not stretched per image as the release's training
    did, since its test divided by 255); 16-bit infrared gets the percentile stretch;
    colour visible images give their Y channel.

    Args:
        ir: infrared as read by ``occo.data.io.read_image``.
        vi: visible as read, same size.

    Returns:
        ``(ir, vi_y)``, each ``(H, W)`` float32 in [0, 1].
    """
    pair = prepare_pair(ir, vi)
    return pair.ir[0].numpy(), luminance(pair.vi[None])[0, 0].numpy()


def check_gray_batches(**images: Tensor) -> None:
    """Raise ValueError unless every image is a (B, 1, H, W) batch of the first one's shape.

    Args:
        images: named tensors, e.g. ``fused=..., vi_y=..., ir=...`` (the names go into the
            message).
    """
    shapes = {name: tuple(image.shape) for name, image in images.items()}
    first = next(iter(shapes.values()))
    if len(first) != 4 or first[1] != 1 or any(shape != first for shape in shapes.values()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected (B, 1, H, W) images of one shape, got {listed}")
