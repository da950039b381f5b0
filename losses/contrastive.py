"""The contextual contrastive loss (CCL) of OCCO over object regions (FACTS sections 2, 3).

The batch is split into ``groups`` equal groups. Group 1 supplies the anchors (fused image
times a region) and positives (positive modality times the same region); the negatives of
anchor i are the negative modality times the region of image i in every group (the same
scene in group 1, other crops with their own masks in the others). Per term and layer:

    ratio = mean_i D(a_i, p_i) / sum_k mean_i D(a_i, n_ki)

with D the contextual distance on VGG19 relu5_4 (weight 1) and relu4_4 (weight 0.25); the
background term uses the mean squared error on the gray relu1_1 instead. Means run over the
anchors whose region is not empty; a term whose region is empty in every anchor is 0.
Distances below 0 (-log(CX + 1e-5) for CX within 1e-5 of 1) count as 0 and the denominator
is floored at 1e-6: identical maps give 0, never a negative loss or NaN.

Unlike the release (about 80 VGG passes per step, a fresh VGG19 per criterion), every
image goes through VGG19 once: one pass for the anchors (they need gradients) and one
no-grad pass for all targets, with images shared between terms (the shared-region
positives are also the other term's negatives) extracted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from data.errors import OccoError
from losses.contextual import DEFAULT_MAX_POINTS, contextual_distance
from losses.vgg import VGGFeatures

#: term name -> (region, positive modality, negative modality)
TERMS: dict[str, tuple[str, str, str]] = {
    "unique_vi": ("unique_vi", "vi", "ir"),
    "unique_ir": ("unique_ir", "ir", "vi"),
    "shared_vi": ("shared", "vi", "ir"),
    "shared_ir": ("shared", "ir", "vi"),
    "background": ("background", "vi", "ir"),
}
#: Floor of a ratio's denominator (its negatives all identical to the anchor).
RATIO_EPS = 1e-6


class BatchGroupingError(OccoError, ValueError):
    """The batch cannot be split into the loss's equal groups."""


def group_size(batch_size: int, groups: int) -> int:
    """Images per group, or a clear error when the batch cannot be grouped.

    Args:
        batch_size: images in the batch.
        groups: number of equal groups (the release's 4).

    Returns:
        ``batch_size // groups``.

    Raises:
        BatchGroupingError: ``batch_size`` is not a positive multiple of ``groups``.
    """
    if groups < 1:
        raise BatchGroupingError(f"the contrastive loss needs groups >= 1, got {groups}")
    if batch_size < groups or batch_size % groups:
        raise BatchGroupingError(
            f"batch size {batch_size} cannot be split into {groups} equal groups for the "
            f"contextual contrastive loss: use a multiple of {groups} (the paper used 12) "
            "and drop the last incomplete batch, or change the number of groups"
        )
    return batch_size // groups


def _region(regions: Any, name: str) -> torch.Tensor:
    value = regions[name] if isinstance(regions, Mapping) else getattr(regions, name, None)
    if value is None:
        raise ValueError(f"regions has no {name!r} mask")
    return value


def _ratio(distances: torch.Tensor) -> torch.Tensor:
    """``mean D(a, p) / sum_k mean D(a, n_k)`` from ``(1 + K, V)`` rows: positive, negatives.

    -log(CX + 1e-5) dips to -1e-5 for (near-)identical maps; as a distance it counts as 0,
    and the denominator is floored, so that identical maps give 0 instead of -10 or NaN.
    """
    means = distances.mean(dim=1).clamp_min(0.0)  # (1 + K,)
    return means[0] / means[1:].sum().clamp_min(RATIO_EPS)


class _TargetBatch:
    """Deduplicated target images ``modality * region`` for one batched no-grad VGG pass."""

    def __init__(self) -> None:
        self.wanted: dict[tuple[str, str], set[int]] = {}
        self.rows: dict[tuple[str, str, int], int] = {}

    def need(self, modality: str, region: str, indices: list[int]) -> None:
        self.wanted.setdefault((modality, region), set()).update(indices)

    def images(
        self, sources: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """All wanted images in one batch ``(N, 1, H, W)``; remembers where each one sits."""
        pieces = []
        for (modality, region), wanted in self.wanted.items():
            index = sorted(wanted)
            for i in index:
                self.rows[(modality, region, i)] = len(self.rows)
            index_t = torch.tensor(index, device=sources[modality].device)
            pieces.append(sources[modality][index_t] * masks[region][index_t])
        return torch.cat(pieces)

    def select(self, modality: str, region: str, indices: list[int]) -> list[int]:
        return [self.rows[(modality, region, i)] for i in indices]


def contextual_contrastive_loss(
    fused: torch.Tensor,
    vi: torch.Tensor,
    ir: torch.Tensor,
    regions: Any,
    vgg: VGGFeatures,
    *,
    groups: int = 4,
    term_weights: Mapping[str, float] | None = None,
    layer_weights: Mapping[str, float] | None = None,
    h: float = 1.0,
    w: float = 0.5,
    max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_con and its per-term values.

    Args:
        fused: ``(B, 1, H, W)`` fused image in [0, 1]; the only input that gets gradients.
        vi: ``(B, 1, H, W)`` visible Y in [0, 1] (treated as constant).
        ir: ``(B, 1, H, W)`` infrared in [0, 1] (treated as constant).
        regions: object with (or mapping of) ``shared``, ``unique_vi``, ``unique_ir``,
            ``background``, each ``(B, 1, H, W)`` with values 0/1.
        vgg: the frozen feature extractor.
        groups: equal groups the batch is split into (group 1 gives the anchors).
        term_weights: weight per name of :data:`TERMS`; defaults 1, 1, 0.5, 0.5, 1/16.
            A term with weight 0 is not computed.
        layer_weights: weight per VGG layer of the object terms; default relu5_4 1,
            relu4_4 0.25.
        h: contextual band width.
        w: weight of the squared-L2 contextual term.
        max_points: point budget per feature map.

    Returns:
        ``(loss, parts)``: the weighted sum (scalar) and the unweighted value of each term
        (scalars, keys of :data:`TERMS`).

    Raises:
        BatchGroupingError: the batch cannot be split into ``groups`` equal groups.
    """
    weights = {"unique_vi": 1.0, "unique_ir": 1.0, "shared_vi": 0.5, "shared_ir": 0.5}
    weights["background"] = 1.0 / 16.0
    weights.update(term_weights or {})
    layers = {"relu5_4": 1.0, "relu4_4": 0.25}
    layers.update(layer_weights or {})
    layers = {name: lw for name, lw in layers.items() if lw != 0.0}
    unknown = set(weights) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown contrastive term(s) {sorted(unknown)}; known: {list(TERMS)}")
    if (
        fused.dim() != 4
        or fused.shape[1] != 1
        or vi.shape != fused.shape
        or ir.shape != fused.shape
    ):
        raise ValueError(
            f"expected fused, vi, ir (B, 1, H, W) of one shape, got {tuple(fused.shape)}, "
            f"{tuple(vi.shape)}, {tuple(ir.shape)}"
        )
    batch = fused.shape[0]
    n = group_size(batch, groups)
    active = [name for name in TERMS if weights[name] != 0.0]
    needed = {TERMS[name][0] for name in active}
    masks = {}
    for name in needed:
        mask = _region(regions, name).detach()
        if mask.shape != fused.shape:
            raise ValueError(
                f"region {name!r} has shape {tuple(mask.shape)}, expected {tuple(fused.shape)}"
            )
        masks[name] = mask.to(fused.dtype)
    sources = {"vi": vi.detach(), "ir": ir.detach()}

    # Which anchors (images of group 1) have a non-empty region: one host sync per step.
    names = sorted(needed)
    nonempty = torch.stack([masks[r][:n].flatten(1).amax(dim=1) > 0 for r in names]).tolist()
    valid = {r: [i for i in range(n) if nonempty[k][i]] for k, r in enumerate(names)}

    # Anchors: one image per (region, valid anchor); targets: deduplicated, one batch.
    deep_regions = [r for r in names if r != "background"]
    anchor_rows: dict[str, list[int]] = {}
    anchor_pieces = []
    for r in deep_regions:
        if valid[r]:
            start = sum(len(rows) for rows in anchor_rows.values())
            anchor_rows[r] = list(range(start, start + len(valid[r])))
            index = torch.tensor(valid[r], device=fused.device)
            anchor_pieces.append(fused[index] * masks[r][index])
    deep_targets, gray_targets = _TargetBatch(), _TargetBatch()
    for name in active:
        region, pos, neg = TERMS[name]
        if not valid[region]:
            continue
        targets = gray_targets if region == "background" else deep_targets
        targets.need(pos, region, valid[region])
        targets.need(neg, region, [k * n + i for k in range(groups) for i in valid[region]])

    anchor_feats: dict[str, torch.Tensor] = {}
    target_feats: dict[str, torch.Tensor] = {}
    if anchor_pieces and layers:
        anchor_feats = vgg(torch.cat(anchor_pieces), layers=tuple(layers))
        with torch.no_grad():
            target_feats = vgg(deep_targets.images(sources, masks), layers=tuple(layers))
    gray_anchor = gray_target = None
    if "background" in active and valid["background"]:
        index = torch.tensor(valid["background"], device=fused.device)
        gray_anchor = vgg.gray_relu1_1(fused[index] * masks["background"][index])
        with torch.no_grad():
            gray_target = vgg.gray_relu1_1(gray_targets.images(sources, masks))

    loss_dtype = torch.promote_types(fused.dtype, torch.float32)
    zero = torch.zeros((), device=fused.device, dtype=loss_dtype)
    parts: dict[str, torch.Tensor] = {name: zero for name in TERMS}
    for name in active:
        region, pos, neg = TERMS[name]
        anchors = valid[region]
        if not anchors:
            continue  # an empty region contributes nothing
        targets = gray_targets if region == "background" else deep_targets
        rows = targets.select(pos, region, anchors)
        for k in range(groups):
            rows += targets.select(neg, region, [k * n + i for i in anchors])
        rows_t = torch.tensor(rows, device=fused.device)
        if region == "background":
            a = gray_anchor.to(loss_dtype).repeat(groups + 1, 1, 1, 1)  # (G+1) V pairs
            t = gray_target[rows_t].to(loss_dtype)
            mse = (a - t).square().flatten(1).mean(dim=1).view(groups + 1, len(anchors))
            parts[name] = _ratio(mse)
            continue
        arows = torch.tensor(anchor_rows[region], device=fused.device)
        value = zero
        for layer, layer_weight in layers.items():
            a = anchor_feats[layer][arows].repeat(groups + 1, 1, 1, 1)  # (G+1) V pairs
            d = contextual_distance(a, target_feats[layer][rows_t], h, w, max_points)
            value = value + layer_weight * _ratio(d.view(groups + 1, len(anchors)))
        parts[name] = value
    loss = sum((weights[name] * parts[name] for name in active), zero)
    return loss, parts


class ContextualContrastiveLoss(nn.Module):
    """Module form of :func:`contextual_contrastive_loss`, holding the VGG19 extractor.

    Args:
        vgg: the frozen feature extractor.
        groups: equal groups the batch is split into.
        term_weights: weight per term name (see :data:`TERMS`).
        layer_weights: weight per VGG layer of the object terms.
        h: contextual band width.
        w: weight of the squared-L2 contextual term.
        max_points: point budget per feature map.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        groups: int = 4,
        term_weights: Mapping[str, float] | None = None,
        layer_weights: Mapping[str, float] | None = None,
        h: float = 1.0,
        w: float = 0.5,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> None:
        super().__init__()
        self.vgg = vgg
        self.groups = groups
        self.term_weights = dict(term_weights or {})
        self.layer_weights = dict(layer_weights or {})
        self.h, self.w, self.max_points = h, w, max_points

    def forward(
        self, fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor, regions: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_con and its unweighted parts; see :func:`contextual_contrastive_loss`."""
        return contextual_contrastive_loss(
            fused,
            vi,
            ir,
            regions,
            self.vgg,
            groups=self.groups,
            term_weights=self.term_weights,
            layer_weights=self.layer_weights,
            h=self.h,
            w=self.w,
            max_points=self.max_points,
        )
