"""Contextual similarity and distance (Mechrez et al. 2018) as OCCO uses them.

Each feature map is a set of points (one per pixel). For source points x_i and target points
y_j, both centred on the target's mean feature (each target map's own mean, so that a pair's
distance does not depend on the rest of the batch):

    d_ij   cosine distance 1 - cos(x_i, y_j), or squared Euclidean distance
    d~_ij  = d_ij / (min_k d_ik + 1e-5)                  relative distance
    CX_ij  = softmax_j((1 - d~_ij) / h)                  normalised affinity
    CX     = mean_j max_i [(1 - w) CX^cos_ij + w CX^l2_ij]
    D      = -log(CX + 1e-5)

The affinity normalisation is computed as a softmax (same function as exp / sum exp, but it
cannot overflow), both terms index [i, j] the same way (the release transposed its second
term), and the arithmetic runs in float32 or wider even under autocast: the relative
distance divides by a minimum that is near zero for near-identical points.
"""

from __future__ import annotations

import torch
from torch import nn

#: Added to the minimum distance before dividing (the release's value).
REL_EPS = 1e-5
#: Added to CX before the log (the release's value).
LOG_EPS = 1e-5
#: Point budget per map: above it, points are sampled (the original authors' 65^2).
DEFAULT_MAX_POINTS = 65 * 65


def sample_points(
    x: torch.Tensor,
    y: torch.Tensor,
    max_points: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten two maps to point sets, keeping at most ``max_points`` random points.

    The same indices are kept in both maps, so that their memory stays bounded by
    ``max_points^2`` per pair however large the maps are.

    Args:
        x: ``(B, C, H, W)`` source features.
        y: ``(B, C, H, W)`` target features.
        max_points: the most points to keep per map.
        generator: random generator for the indices (on the maps' device).

    Returns:
        ``(x_points, y_points)``, each ``(B, C, N)`` with ``N = min(H W, max_points)``.
    """
    xs, ys = x.flatten(2), y.flatten(2)  # (B, C, HW)
    n = xs.shape[-1]
    if n > max_points:
        index = torch.randperm(n, device=x.device, generator=generator)[:max_points]
        xs, ys = xs[..., index], ys[..., index]
    return xs, ys


def _normalised_affinity(dist: torch.Tensor, h: float) -> torch.Tensor:
    """CX_ij = softmax_j((1 - d_ij / (min_k d_ik + eps)) / h) for ``dist`` ``(B, N, M)``.

    The softmax runs over j with i fixed, so the constant 1 / h of every row drops out:
    the logits are ``d_ij * (-1 / (h (min_k d_ik + eps)))``, one pass over the matrix
    instead of three. The row minimum is ``min().values``: the value of ``amin``, but its
    backward scatters into one entry per row instead of splitting among ties, a cheaper
    pass over the (B, N, M) matrix.
    """
    scale = (-1.0 / h) / (dist.min(dim=2, keepdim=True).values + REL_EPS)  # (B, N, 1)
    return torch.softmax(dist * scale, dim=2)


def contextual_similarity(
    x: torch.Tensor,
    y: torch.Tensor,
    h: float = 1.0,
    w: float = 0.5,
    max_points: int = DEFAULT_MAX_POINTS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Contextual similarity CX of each pair of feature maps (1 for identical maps).

    Args:
        x: ``(B, C, H, W)`` source features (the anchor).
        y: ``(B, C, H, W)`` target features; both sets are centred on its mean feature.
        h: band width of the affinity (the release effectively used 1.0).
        w: weight of the squared-L2 term; ``1 - w`` weights the cosine term.
        max_points: maps with more points than this are randomly sub-sampled to it.
        generator: random generator for the sampling.

    Returns:
        ``(B,)`` similarities in (0, 1], in ``x``'s dtype promoted to at least float32.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) maps of one shape, got {x.shape} and {y.shape}"
        )
    if h <= 0 or not 0.0 <= w <= 1.0 or max_points < 1:
        raise ValueError(f"need h > 0, 0 <= w <= 1, max_points >= 1; got {h}, {w}, {max_points}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xs, ys = sample_points(x.to(dtype), y.to(dtype), max_points, generator)  # (B, C, N)
        mean = ys.mean(dim=2, keepdim=True)  # (B, C, 1), each target image's own mean
        xs, ys = xs - mean, ys - mean
        affinities = []  # of the cosine term, then of the squared-L2 term
        if w < 1.0:
            xn = torch.nn.functional.normalize(xs, dim=1)
            yn = torch.nn.functional.normalize(ys, dim=1)
            # 1 - cos, in the GEMM (beta = 1 on a broadcast 1). Rounding can push it a hair
            # below 0; the minimum must stay >= 0.
            one = xn.new_ones(()).expand(xn.shape[0], xn.shape[2], yn.shape[2])
            dist = torch.baddbmm(one, xn.transpose(1, 2), yn, alpha=-1.0).clamp_min(0.0)
            affinities.append(_normalised_affinity(dist, h))  # (B, N, N)
        if w > 0.0:
            # |x|^2 + |y|^2 - 2 x.y on centred points (smaller norms, less cancellation).
            xx = xs.square().sum(dim=1).unsqueeze(2)  # (B, N, 1)
            yy = ys.square().sum(dim=1).unsqueeze(1)  # (B, 1, N)
            dist = torch.baddbmm(xx + yy, xs.transpose(1, 2), ys, alpha=-2.0).clamp_min(0.0)
            affinities.append(_normalised_affinity(dist, h))
        # (1 - w) CX^cos + w CX^l2 in one pass; with w = 0 or 1, the single term.
        cx = torch.lerp(*affinities, w) if len(affinities) == 2 else affinities[0]
        return cx.amax(dim=1).mean(dim=1)  # max over source points, mean over target points


def contextual_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    h: float = 1.0,
    w: float = 0.5,
    max_points: int = DEFAULT_MAX_POINTS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Contextual distance ``-log(CX + 1e-5)`` of each pair (about 0 for identical maps).

    Args:
        x: ``(B, C, H, W)`` source features (the anchor).
        y: ``(B, C, H, W)`` target features.
        h: band width.
        w: weight of the squared-L2 term.
        max_points: point budget per map.
        generator: random generator for the sampling.

    Returns:
        ``(B,)`` distances, at least ``-log(1 + 1e-5)``.
    """
    return -torch.log(contextual_similarity(x, y, h, w, max_points, generator) + LOG_EPS)


class ContextualSimilarity(nn.Module):
    """Module form of :func:`contextual_similarity`.

    Args:
        h: band width.
        w: weight of the squared-L2 term.
        max_points: point budget per map.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.
    """

    def __init__(
        self,
        h: float = 1.0,
        w: float = 0.5,
        max_points: int = DEFAULT_MAX_POINTS,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
        self.h, self.w, self.max_points, self.reduction = h, w, max_points, reduction

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return contextual_similarity(x, y, self.h, self.w, self.max_points)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Value for ``x`` ``(B, C, H, W)`` against ``y`` ``(B, C, H, W)``, reduced over B."""
        value = self._pairwise(x, y)  # (B,)
        if self.reduction == "mean":
            return value.mean()
        return value.sum() if self.reduction == "sum" else value

    def extra_repr(self) -> str:
        return f"h={self.h}, w={self.w}, max_points={self.max_points}, reduction={self.reduction}"


class ContextualDistance(ContextualSimilarity):
    """Module form of :func:`contextual_distance` (same arguments as ContextualSimilarity)."""

    def _pairwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return contextual_distance(x, y, self.h, self.w, self.max_points)
