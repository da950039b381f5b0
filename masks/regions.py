"""The four disjoint regions of a pair from its two binary object masks (OCCO, Section 2).

shared = vi AND ir, unique_vi = vi minus shared, unique_ir = ir minus shared, background =
everything else. The masks are binarised (> 0) first, so the four regions always partition
the image: a non-binary mask cannot make the background negative, as the subtraction
formula would.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import numpy as np
import torch

#: A mask: torch tensor or numpy array.
Mask = torch.Tensor | np.ndarray
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


class Regions(NamedTuple):
    """Region masks of a batch of pairs, each the shape of the input masks, values 0 or 1."""

    shared: Mask
    """Object in both modalities."""
    unique_vi: Mask
    """Object in the visible mask only."""
    unique_ir: Mask
    """Object in the infrared mask only."""
    background: Mask
    """No object in either mask."""


def split_regions(mask_vi: ArrayT, mask_ir: ArrayT, dtype: torch.dtype | None = None) -> Regions:
    """Split two object masks into shared, unique and background regions.

    Args:
        mask_vi: visible object mask, torch tensor ``(B, 1, H, W)`` or numpy array of any
            shape; any value > 0 counts as object.
        mask_ir: infrared object mask, same type and shape as ``mask_vi``.
        dtype: floating dtype of the result for torch inputs (default: the input's dtype if
            it is floating, else float32). Numpy results are float32.

    Returns:
        :class:`Regions` of four float masks with values 0/1 that sum to 1 at every pixel,
        same type, shape and (for torch) device as the inputs.

    Raises:
        ValueError: the masks differ in shape or type.
    """
    if type(mask_vi) is not type(mask_ir):
        raise ValueError(
            f"masks must be the same type, got {type(mask_vi).__name__} and {type(mask_ir).__name__}"
        )
    if tuple(mask_vi.shape) != tuple(mask_ir.shape):
        raise ValueError(
            f"mask shapes differ: visible {tuple(mask_vi.shape)}, infrared {tuple(mask_ir.shape)}"
        )
    vi = mask_vi > 0
    ir = mask_ir > 0
    parts = (vi & ir, vi & ~ir, ir & ~vi, ~(vi | ir))
    if isinstance(mask_vi, torch.Tensor):
        if dtype is None:
            dtype = mask_vi.dtype if mask_vi.is_floating_point() else torch.float32
        return Regions(*(p.to(dtype) for p in parts))
    return Regions(*(p.astype(np.float32) for p in parts))
