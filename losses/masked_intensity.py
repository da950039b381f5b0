"""Model-4 of the OCCO paper's Table 8: the object masks applied to intensity losses.

The paper's ablation keeps the LVM masks but drops the contrastive form (its eq. 21): no
negatives, no VGG19; within each region the fused image is pulled towards the region's
positive source in pixel space. occo reads it with OCCO's own terms and weights, each an
intensity loss in the form of L_int's infrared half, mean(M |f - s|):

    L = sum_t w_t mean(R_t |f - P_t|)

over the terms of ``losses.contrastive.TERMS`` (visible-only region -> visible, infrared-only
-> infrared, shared -> visible with w1 and -> infrared with w2, background -> visible), the
mean running over every pixel of every image of the batch. The authors did not release this
variant; this is occo's reading of the paper's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from occo.data.normalize import check_gray_batches
from occo.losses.contrastive import DEFAULT_TERM_WEIGHTS, TERMS, _region_masks
from occo.losses.pixel import _wide


def masked_intensity_loss(
    fused: torch.Tensor,
    vi: torch.Tensor,
    ir: torch.Tensor,
    regions: Any,
    term_weights: Mapping[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum over terms of mean(R |f - P|), and each term.

    Args:
        fused: ``(B, 1, H, W)`` fused image.
        vi: ``(B, 1, H, W)`` visible (treated as constant).
        ir: ``(B, 1, H, W)`` infrared (treated as constant).
        regions: ``shared``, ``unique_vi``, ``unique_ir``, ``background`` masks.
        term_weights: weight per name of ``TERMS``; defaults as the contrastive loss's.
            A term with weight 0 is not computed.

    Returns:
        ``(loss, parts)``: the weighted sum and the unweighted value of each term.
    """
    check_gray_batches(fused=fused, vi=vi, ir=ir)
    weights = {**DEFAULT_TERM_WEIGHTS, **(term_weights or {})}
    active = [name for name in TERMS if weights[name] != 0.0]
    masks = _region_masks(regions, {TERMS[name][0] for name in active}, fused)
    with torch.autocast(device_type=fused.device.type, enabled=False):
        f, v, i = _wide(fused, vi.detach(), ir.detach())
        sources = {"vi": v, "ir": i}
        zero = f.new_zeros(())
        parts = {name: zero for name in TERMS}
        for name in active:
            region, pos, _ = TERMS[name]
            parts[name] = (masks[region].to(f.dtype) * (f - sources[pos]).abs()).mean()
        loss = sum((weights[name] * parts[name] for name in active), zero)
    return loss, parts


class MaskedIntensityLoss(nn.Module):
    """Module form of :func:`masked_intensity_loss`.

    Args:
        term_weights: weight per term name.
    """

    def __init__(self, term_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.term_weights = dict(term_weights or {})

    def forward(
        self, fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor, regions: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and its unweighted terms."""
        return masked_intensity_loss(fused, vi, ir, regions, self.term_weights)
