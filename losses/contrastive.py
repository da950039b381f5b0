"""The contextual contrastive loss (CCL) of OCCO over object regions (OCCO, Sections 2-3).

The batch is split into ``groups`` equal groups. Group 1 supplies the anchors (fused image
times a region) and positives (positive modality times the same region); the negatives of
anchor i are the negative modality times the region of image i in every group (the same
scene in group 1, other crops with their own masks in the others). Per term and layer:

    ratio = mean_i D(a_i, p_i) / sum_k mean_i D(a_i, n_ki)

with D the contextual distance on VGG19 relu5_4 (weight 1) and relu4_4 (weight 0.25); the
background term uses the mean squared error on the gray relu1_1 instead. The distance, the
VGG19 input and the layers with their weights are settings (``space``, ``features``,
``layer_weights``): the paper's Table 8 ablations change them. Means run over the
anchors whose region is not empty; a term whose region is empty in every anchor is 0.
Distances below 0 (-log(CX + 1e-5) for CX within 1e-5 of 1) count as 0 and the denominator
is floored at 1e-6 (1e-12 for the Euclidean and L1 distances, which scale with the
features): identical maps give 0, never a negative loss or NaN.

Unlike the release (about 80 VGG passes per step, a fresh VGG19 per criterion), every
image goes through VGG19 once: one pass for the anchors (they need gradients) and one
no-grad pass for all targets, with images shared between terms (the shared-region
positives are also the other term's negatives) extracted once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from occo.data.errors import OccoError
from occo.data.normalize import check_gray_batches
from occo.losses.contextual import DEFAULT_MAX_POINTS, contextual_distance
from occo.losses.vgg import GRAY_LAYER, VGGFeatures

#: term name -> (region, positive modality, negative modality)
TERMS: dict[str, tuple[str, str, str]] = {
    "unique_vi": ("unique_vi", "vi", "ir"),
    "unique_ir": ("unique_ir", "ir", "vi"),
    "shared_vi": ("shared", "vi", "ir"),
    "shared_ir": ("shared", "ir", "vi"),
    "background": ("background", "vi", "ir"),
}
#: The paper's term weights (w1 = w2 = 0.5 on the shared terms) and the release's 1/16.
DEFAULT_TERM_WEIGHTS = {
    "unique_vi": 1.0,
    "unique_ir": 1.0,
    "shared_vi": 0.5,
    "shared_ir": 0.5,
    "background": 1.0 / 16.0,
}
#: Weight of each VGG layer's contextual ratio in the object terms.
DEFAULT_LAYER_WEIGHTS = {"relu5_4": 1.0, "relu4_4": 0.25}
#: Floor of a ratio's denominator (its negatives all identical to the anchor).
RATIO_EPS = 1e-6
#: The floor for the Euclidean and L1 distances of the object terms: they scale with the
#: features (a random VGG19's relu5_1 on small crops gives mean squared differences near
#: 1e-6), and CoCoNet's ratio has no floor at all; this one only keeps 0 / 0 finite.
RATIO_EPS_FEATURES = 1e-12
#: Contextual distances of maps with at least this many (sampled) points are recomputed in
#: the backward pass rather than stored (OCCO's own layers at 256 px stay below it).
CHECKPOINT_POINTS = 2048
#: Distances between two feature maps (the ``space`` setting): contextual, mean squared
#: error (Euclidean) or mean absolute error (CoCoNet's L1).
SPACES = ("contextual", "euclidean", "l1")
#: VGG19 inputs: RGB with ImageNet normalisation (the contextual loss's), or conv1_1
#: collapsed to gray without normalisation (the release's Euclidean losses, CoCoNet's).
FEATURES = ("imagenet", "gray")


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


def feature_distance(
    anchor: torch.Tensor,
    target: torch.Tensor,
    space: str = "contextual",
    h: float = 1.0,
    w: float = 0.5,
    max_points: int = DEFAULT_MAX_POINTS,
) -> torch.Tensor:
    """Distance of each anchor feature map to its target, in float32 or wider.

    Args:
        anchor: ``(N, C, h, w)`` features.
        target: ``(N, C, h, w)`` features.
        space: ``"contextual"`` (-log CX, see losses.contextual), ``"euclidean"`` (mean
            squared difference) or ``"l1"`` (mean absolute difference).
        h: contextual band width.
        w: weight of the squared-L2 contextual similarity.
        max_points: contextual point budget per map.

    Returns:
        ``(N,)`` distances.
    """
    if space == "contextual":
        points = min(anchor.shape[-2] * anchor.shape[-1], max_points)
        if points >= CHECKPOINT_POINTS and anchor.requires_grad and torch.is_grad_enabled():
            # Recomputed in the backward pass instead of keeping its (N, P, P) matrices:
            # the shallow layers of Model-2 would otherwise hold tens of GB at 256 px. The
            # RNG state is restored for the recomputation, so the sampled points are the same.
            return checkpoint(
                contextual_distance, anchor, target, h, w, max_points, use_reentrant=False
            )
        return contextual_distance(anchor, target, h, w, max_points)
    dtype = torch.promote_types(anchor.dtype, torch.float32)
    diff = anchor.to(dtype) - target.to(dtype)
    if space == "euclidean":
        return diff.square().flatten(1).mean(dim=1)
    if space == "l1":
        return diff.abs().flatten(1).mean(dim=1)
    raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")


def feature_extractor(
    vgg: VGGFeatures, layers: tuple[str, ...], features: str
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """``images -> {layer: features}`` for the ``features`` setting (see :data:`FEATURES`)."""
    if features == "imagenet":
        return lambda x: vgg(x, layers=layers)
    if features == "gray":
        return lambda x: vgg.gray_features(x, layers=layers)
    raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")


def _ratio_from_sums(stats: torch.Tensor, eps: torch.Tensor | float = RATIO_EPS) -> torch.Tensor:
    """``mean D(a, p) / sum_k mean D(a, n_k)`` from rows ``[count, sum_pos, sum_neg_1..K]``.

    Working from sums and counts lets DDP ranks add theirs up before the ratio, so that
    the ratio covers the global batch. A row with count 0 (no anchor with this region
    anywhere) gives 0. -log(CX + 1e-5) dips to -1e-5 for (near-)identical maps: as a
    distance it counts as 0, and the denominator is floored, so that identical maps give 0
    instead of -10 or NaN.

    Args:
        stats: ``(T, 2 + K)``.
        eps: floor of the denominators, one for all rows or ``(T,)``.

    Returns:
        ``(T,)`` ratios.
    """
    count = stats[:, :1]
    means = (stats[:, 1:] / count.clamp_min(1.0)).clamp_min(0.0)  # (T, 1 + K)
    ratio = means[:, 0] / torch.maximum(means[:, 1:].sum(dim=1), torch.as_tensor(eps).to(means))
    return ratio * (count[:, 0] > 0)


class _Samples:
    """The anchor and target images of a step, each extracted once.

    Anchors (fused * region, group 1) go through the extractor with gradients; targets
    (modality * region, deduplicated over terms) in one no-grad batch. ``pairs`` then lines
    up, for one term, each anchor with its positive and its negative from every group.
    """

    def __init__(self, groups: int, group_size: int) -> None:
        self.groups, self.n = groups, group_size
        self.anchor_rows: dict[str, list[int]] = {}  # region -> rows of the anchor batch
        self.wanted: dict[tuple[str, str], set[int]] = {}  # (modality, region) -> images
        self.target_rows: dict[tuple[str, str, int], int] = {}
        self.anchor_feats: dict[str, torch.Tensor] = {}
        self.target_feats: dict[str, torch.Tensor] = {}

    def negatives(self, anchors: list[int]) -> list[int]:
        """Batch indices of the negatives, group by group, for the given group-1 anchors."""
        return [k * self.n + i for k in range(self.groups) for i in anchors]

    def add(self, region: str, pos: str, neg: str, anchors: list[int]) -> None:
        """Ask for a term's images: anchors and positives at ``anchors``, negatives."""
        if region not in self.anchor_rows:
            start = sum(len(rows) for rows in self.anchor_rows.values())
            self.anchor_rows[region] = list(range(start, start + len(anchors)))
        self.wanted.setdefault((pos, region), set()).update(anchors)
        self.wanted.setdefault((neg, region), set()).update(self.negatives(anchors))

    def extract(
        self,
        extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        fused: torch.Tensor,
        sources: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        valid: dict[str, list[int]],
    ) -> None:
        """Run ``extractor`` once on all anchors and once (no grad) on all targets."""
        if not self.anchor_rows:
            return
        device = fused.device
        anchors = []
        for region in self.anchor_rows:
            index = torch.tensor(valid[region], device=device)
            anchors.append(fused[index] * masks[region][index])  # masked in pixel space
        targets = []
        for (modality, region), wanted in self.wanted.items():
            index = sorted(wanted)
            for i in index:
                self.target_rows[(modality, region, i)] = len(self.target_rows)
            index_t = torch.tensor(index, device=device)
            targets.append(sources[modality][index_t] * masks[region][index_t])
        self.anchor_feats = extractor(torch.cat(anchors))
        with torch.no_grad():
            self.target_feats = extractor(torch.cat(targets))

    def pairs(
        self, layer: str, region: str, pos: str, neg: str, anchors: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor and target features of a term, ``((1 + G) V, C, h, w)`` each.

        Row block 0 pairs each anchor with its positive, block k with its negative from
        group k.
        """
        keys = [(pos, region, i) for i in anchors]
        keys += [(neg, region, i) for i in self.negatives(anchors)]
        device = self.anchor_feats[layer].device
        rows = torch.tensor([self.target_rows[key] for key in keys], device=device)
        arows = torch.tensor(self.anchor_rows[region], device=device)
        anchor = self.anchor_feats[layer][arows].repeat(self.groups + 1, 1, 1, 1)
        return anchor, self.target_feats[layer][rows]


def _region_masks(regions: Any, names: set[str], like: torch.Tensor) -> dict[str, torch.Tensor]:
    masks = {}
    for name in sorted(names):
        value = regions[name] if isinstance(regions, Mapping) else getattr(regions, name, None)
        if value is None:
            raise ValueError(f"regions has no {name!r} mask")
        if value.shape != like.shape:
            raise ValueError(
                f"region {name!r} has shape {tuple(value.shape)}, expected {tuple(like.shape)}"
            )
        masks[name] = value.detach().to(like.dtype)
    return masks


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
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    space: str = "contextual",
    features: str = "imagenet",
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
        layer_weights: weight per VGG layer of the object terms (exactly these layers);
            default relu5_4 1, relu4_4 0.25. A layer with weight 0 is not computed.
        h: contextual band width.
        w: weight of the squared-L2 contextual term.
        max_points: point budget per feature map.
        reduce: under DDP, an autograd-aware sum over ranks of a ``(T, 2 + G)`` tensor of
            per-term anchor counts and distance sums (every rank must call it, in the same
            order), so that each ratio covers the global batch exactly as one process
            would compute it. None: this batch alone.
        space: distance of the object terms (see :data:`SPACES`); the paper's contextual
            one, or the Euclidean one of its Table 8 ablations. The background term is
            always the mean squared error on the gray relu1_1.
        features: VGG19 input of the object terms (see :data:`FEATURES`).

    Returns:
        ``(loss, parts)``: the weighted sum (scalar) and the unweighted value of each term
        (scalars, keys of :data:`TERMS`).

    Raises:
        BatchGroupingError: the batch cannot be split into ``groups`` equal groups.
    """
    weights = {**DEFAULT_TERM_WEIGHTS, **(term_weights or {})}
    unknown = set(weights) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown contrastive term(s) {sorted(unknown)}; known: {list(TERMS)}")
    layers = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
    layers = {name: weight for name, weight in layers.items() if weight != 0.0}
    if space not in SPACES or features not in FEATURES:
        raise ValueError(
            f"space must be one of {SPACES} and features one of {FEATURES}; got {space!r}, "
            f"{features!r}"
        )
    check_gray_batches(fused=fused, vi=vi, ir=ir)
    n = group_size(fused.shape[0], groups)
    active = [name for name in TERMS if weights[name] != 0.0]
    masks = _region_masks(regions, {TERMS[name][0] for name in active}, fused)
    sources = {"vi": vi.detach(), "ir": ir.detach()}

    # Group-1 anchors whose region is not empty (one host sync per step).
    names = list(masks)
    nonempty = torch.stack([masks[r][:n].flatten(1).amax(dim=1) > 0 for r in names]).tolist()
    valid = {r: [i for i in range(n) if nonempty[k][i]] for k, r in enumerate(names)}

    deep, gray = _Samples(groups, n), _Samples(groups, n)
    for name in active:
        region, pos, neg = TERMS[name]
        if valid[region] and (region == "background" or layers):
            (gray if region == "background" else deep).add(region, pos, neg, valid[region])
    deep.extract(feature_extractor(vgg, tuple(layers), features), fused, sources, masks, valid)
    gray.extract(lambda x: {GRAY_LAYER: vgg.gray_relu1_1(x)}, fused, sources, masks, valid)

    dtype = torch.promote_types(fused.dtype, torch.float32)
    zero = torch.zeros((), device=fused.device, dtype=dtype)
    # One row [count, sum_pos, sum_neg_1..G] per (term, layer), in a fixed order on every
    # rank, so that `reduce` can add all ranks' rows in one collective.
    rows, row_keys, floors = [], [], []
    for name in active:
        region, pos, neg = TERMS[name]
        anchors = valid[region]
        if region == "background":
            keyed = [(GRAY_LAYER, 1.0)]
        else:
            keyed = list(layers.items())
        for layer, layer_weight in keyed:
            row_keys.append((name, layer_weight))
            contextual = region == "background" or space == "contextual"
            floors.append(RATIO_EPS if contextual else RATIO_EPS_FEATURES)
            if not anchors:  # an empty region contributes nothing
                rows.append(torch.zeros(groups + 2, device=fused.device, dtype=dtype))
                continue
            if region == "background":
                a, t = gray.pairs(GRAY_LAYER, region, pos, neg, anchors)
                d = (a.to(dtype) - t.to(dtype)).square().flatten(1).mean(dim=1)
            else:
                a, t = deep.pairs(layer, region, pos, neg, anchors)
                d = feature_distance(a, t, space, h, w, max_points).to(dtype)  # ((1 + G) V,)
            sums = d.view(groups + 1, len(anchors)).sum(dim=1)  # (1 + G,)
            rows.append(torch.cat((sums.new_tensor([len(anchors)]), sums)))
    parts: dict[str, torch.Tensor] = {name: zero for name in TERMS}
    if rows:
        stats = torch.stack(rows)  # (T, 2 + G)
        if reduce is not None:
            stats = reduce(stats)
        ratios = _ratio_from_sums(stats, stats.new_tensor(floors))
        for (name, layer_weight), ratio in zip(row_keys, ratios, strict=True):
            parts[name] = parts[name] + layer_weight * ratio
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
        space: distance of the object terms (see :data:`SPACES`).
        features: VGG19 input of the object terms (see :data:`FEATURES`).
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
        space: str = "contextual",
        features: str = "imagenet",
    ) -> None:
        super().__init__()
        self.vgg = vgg
        self.groups = groups
        self.term_weights = dict(term_weights or {})
        self.layer_weights = None if layer_weights is None else dict(layer_weights)
        self.h, self.w, self.max_points = h, w, max_points
        self.space, self.features = space, features
        #: Sum over DDP ranks (see :func:`contextual_contrastive_loss`); the trainer sets it.
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

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
            reduce=self.reduce,
            space=self.space,
            features=self.features,
        )
