"""CoCoNet's objective on occo's masks: coupled contrastive loss and self-adaptive pixel loss.

CoCoNet (Liu et al., "CoCoNet: Coupled Contrastive Learning Network with Multi-level Feature
Ensemble for Multi-modality Image Fusion", IJCV 2023; github runjia0124/CoCoNet, MIT) is the
contrastive fusion method OCCO builds on and compares with. Its release (``models/P_loss.py``,
``models/train_tasks.py``) trains with:

- a coupled contrastive loss: the batch is split into equal groups (three of ten); group 1
  gives anchors and positives, the negatives of anchor i are the other modality of image i
  in every group, all under anchor i's mask. Foreground (salient mask m): anchor f m,
  positive ir m, negatives vi_k m. Background: anchor f (1 - m), positive vi (1 - m),
  negatives ir_k (1 - m). Per VGG19 layer the ratio L1(a, p) / sum_k L1(a, n_k) of mean
  absolute feature differences over the group, weighted 1/32, 1/16, 1/8, 1/4, 1 on
  relu1_1 .. relu5_1 of a VGG19 whose conv1_1 is collapsed to one gray channel;
- a self-adaptive pixel loss: per image, weights from each source's mean Sobel gradient
  magnitude g and entropy e, w_ssim = softmax([g_vi, g_ir] / (c1 (g_vi + g_ir))) and
  w_mse = softmax([e_vi, e_ir] / (c2 (e_vi + e_ir))), c1 = c2 = 0.5;
  L = 20 mean_i[w_ssim (1 - SSIM)] + mean_i[w_mse MSE], summed over the two sources;
- images in [-1, 1] (normalised with mean and std 0.5); SSIM on [0, 1].

Differences from the release, each deliberate:

- the mask is one of occo's (see :data:`FOREGROUNDS`), not CoCoNet's hand annotation;
- its entropy helper never resets its histogram between the images of a batch (each image's
  entropy counts all earlier images' pixels) and adds its 1e-4 to every image once per image;
  here each image has its own histogram and 1e-4 is added once;
- each image's SSIM is weighted by that image's weights (the release multiplies the weights
  by the SSIM averaged over the batch, pytorch_ssim's default);
- grey levels are ``round(255 x)`` (the release truncates a float that may fall just below
  the integer it came from);
- a group whose anchors all lack a region gives 0 for that term (the release skipped the
  whole step when the foreground was empty), and the pixel loss covers every image of the
  batch (the release fused group 1 only), as occo's own objective does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from occo.data.normalize import check_gray_batches
from occo.losses.contextual import DEFAULT_MAX_POINTS
from occo.losses.contrastive import (
    RATIO_EPS,
    RATIO_EPS_FEATURES,
    _ratio_from_sums,
    feature_distance,
    feature_extractor,
    group_size,
)
from occo.losses.pixel import _wide, sobel, ssim
from occo.losses.vgg import VGGFeatures

#: CoCoNet's layers and weights (relu1_1 .. relu5_1 of the gray VGG19).
COCONET_LAYERS = {
    "relu5_1": 1.0,
    "relu4_1": 1.0 / 4.0,
    "relu3_1": 1.0 / 8.0,
    "relu2_1": 1.0 / 16.0,
    "relu1_1": 1.0 / 32.0,
}
#: term -> (positive modality, negative modality); the region is the term's name.
COUPLED_TERMS: dict[str, tuple[str, str]] = {
    "foreground": ("ir", "vi"),
    "background": ("vi", "ir"),
}
#: Which of occo's regions make CoCoNet's salient (foreground) mask: the infrared object
#: mask (shared + infrared-only: CoCoNet's masks mark the infrared image's salient
#: targets), or the union of both modalities' object masks.
FOREGROUNDS = ("infrared", "objects")
#: Added to each entropy (the release's value), so that two flat images do not divide 0 by 0.
ENTROPY_EPS = 1e-4
#: Added to each pixel's gradient magnitude (the release's value).
GRADIENT_EPS = 1e-5


def _region(regions: Any, name: str) -> torch.Tensor:
    value = regions[name] if isinstance(regions, Mapping) else getattr(regions, name, None)
    if value is None:
        raise ValueError(f"regions has no {name!r} mask")
    return value


def foreground_mask(regions: Any, foreground: str = "infrared") -> torch.Tensor:
    """CoCoNet's salient mask from occo's regions.

    Args:
        regions: ``shared``, ``unique_vi``, ``unique_ir`` (and ``background``) masks, each
            ``(B, 1, H, W)``, as an object or a mapping (e.g. ``masks.regions.Regions``).
        foreground: ``"infrared"`` (shared + unique_ir) or ``"objects"`` (shared +
            unique_vi + unique_ir), see :data:`FOREGROUNDS`.

    Returns:
        ``(B, 1, H, W)`` mask.
    """
    if foreground == "infrared":
        return _region(regions, "shared") + _region(regions, "unique_ir")
    if foreground == "objects":
        return (
            _region(regions, "shared")
            + _region(regions, "unique_vi")
            + _region(regions, "unique_ir")
        )
    raise ValueError(f"foreground must be one of {', '.join(FOREGROUNDS)}, got {foreground!r}")


def coupled_contrastive_loss(
    fused: torch.Tensor,
    vi: torch.Tensor,
    ir: torch.Tensor,
    foreground: torch.Tensor,
    vgg: VGGFeatures,
    *,
    groups: int = 3,
    layer_weights: Mapping[str, float] | None = None,
    space: str = "l1",
    features: str = "gray",
    h: float = 1.0,
    w: float = 0.5,
    max_points: int = DEFAULT_MAX_POINTS,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CoCoNet's coupled contrastive loss and its two terms.

    Every image goes through VGG19 once: the anchors in one pass with gradients, all
    positives and negatives in one pass without. Anchors whose region is empty are left
    out: their anchor, positive and negatives are all zero images, so they would add 0 to
    every sum of the release's ratio.

    Args:
        fused: ``(B, 1, H, W)`` fused image (the only input that gets gradients), in the
            range the loss works in (CoCoNet: [-1, 1]).
        vi: ``(B, 1, H, W)`` visible, same range.
        ir: ``(B, 1, H, W)`` infrared, same range.
        foreground: ``(B, 1, H, W)`` salient mask in [0, 1] (see :func:`foreground_mask`);
            the background is ``1 - foreground``.
        vgg: the frozen feature extractor.
        groups: equal groups the batch is split into (CoCoNet: 3).
        layer_weights: weight per VGG layer; default :data:`COCONET_LAYERS`.
        space: feature distance (see ``losses.contrastive.SPACES``; CoCoNet: ``"l1"``).
        features: VGG19 input (CoCoNet: ``"gray"``).
        h: contextual band width (``space="contextual"`` only).
        w: squared-L2 weight of the contextual similarity (``space="contextual"`` only).
        max_points: contextual point budget.
        reduce: under DDP, an autograd-aware sum over ranks of the ``(T, 2 + G)`` counts
            and distance sums (see ``losses.contrastive.contextual_contrastive_loss``).

    Returns:
        ``(loss, parts)``: foreground + background, and each term (scalars).
    """
    check_gray_batches(fused=fused, vi=vi, ir=ir)
    if foreground.shape != fused.shape:
        raise ValueError(f"foreground {tuple(foreground.shape)} != images {tuple(fused.shape)}")
    layers = dict(COCONET_LAYERS if layer_weights is None else layer_weights)
    layers = {name: weight for name, weight in layers.items() if weight != 0.0}
    n = group_size(fused.shape[0], groups)
    fg = foreground.detach().to(fused.dtype)[:n]
    masks = {"foreground": fg, "background": 1.0 - fg}  # group 1's masks, used for all groups
    sources = {"vi": vi.detach(), "ir": ir.detach()}
    nonempty = torch.stack([masks[t].flatten(1).amax(dim=1) > 0 for t in COUPLED_TERMS]).tolist()
    valid = {t: [i for i in range(n) if nonempty[k][i]] for k, t in enumerate(COUPLED_TERMS)}

    anchors, targets = [], []
    for term, (pos, neg) in COUPLED_TERMS.items():
        if not valid[term] or not layers:
            continue
        index = torch.tensor(valid[term], device=fused.device)
        mask = masks[term][index]
        anchors.append(fused[index] * mask)  # masked in pixel space
        targets.append(sources[pos][index] * mask)
        targets += [sources[neg][index + k * n] * mask for k in range(groups)]
    dtype = torch.promote_types(fused.dtype, torch.float32)
    zero = torch.zeros((), device=fused.device, dtype=dtype)
    parts = {term: zero for term in COUPLED_TERMS}
    if anchors:
        extractor = feature_extractor(vgg, tuple(layers), features)
        anchor_feats = extractor(torch.cat(anchors))
        with torch.no_grad():
            target_feats = extractor(torch.cat(targets))
    # One row [count, sum_pos, sum_neg_1..G] per (term, layer), in a fixed order on every rank.
    rows, row_keys = [], []
    a_start = t_start = 0
    for term in COUPLED_TERMS:
        v = len(valid[term]) if layers else 0
        for layer, weight in layers.items():
            row_keys.append((term, weight))
            if not v:
                rows.append(torch.zeros(groups + 2, device=fused.device, dtype=dtype))
                continue
            a = anchor_feats[layer][a_start : a_start + v].repeat(groups + 1, 1, 1, 1)
            t = target_feats[layer][t_start : t_start + (groups + 1) * v]
            d = feature_distance(a, t, space, h, w, max_points).to(dtype)  # ((1 + G) V,)
            sums = d.view(groups + 1, v).sum(dim=1)
            rows.append(torch.cat((sums.new_tensor([v]), sums)))
        a_start += v
        t_start += (groups + 1) * v
    if rows:
        stats = torch.stack(rows)
        if reduce is not None:
            stats = reduce(stats)
        eps = RATIO_EPS if space == "contextual" else RATIO_EPS_FEATURES
        for (term, weight), ratio in zip(row_keys, _ratio_from_sums(stats, eps), strict=True):
            parts[term] = parts[term] + weight * ratio
    return parts["foreground"] + parts["background"], parts


class CoupledContrastiveLoss(nn.Module):
    """Module form of :func:`coupled_contrastive_loss`, taking occo's regions.

    Args:
        vgg: the frozen feature extractor.
        foreground: which regions make the salient mask (see :data:`FOREGROUNDS`).
        groups: equal groups the batch is split into.
        layer_weights: weight per VGG layer.
        space: feature distance.
        features: VGG19 input.
        h: contextual band width.
        w: squared-L2 weight of the contextual similarity.
        max_points: contextual point budget.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        foreground: str = "infrared",
        groups: int = 3,
        layer_weights: Mapping[str, float] | None = None,
        space: str = "l1",
        features: str = "gray",
        h: float = 1.0,
        w: float = 0.5,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> None:
        super().__init__()
        if foreground not in FOREGROUNDS:
            raise ValueError(f"foreground must be one of {FOREGROUNDS}, got {foreground!r}")
        self.vgg, self.foreground, self.groups = vgg, foreground, groups
        self.layer_weights = None if layer_weights is None else dict(layer_weights)
        self.space, self.features = space, features
        self.h, self.w, self.max_points = h, w, max_points
        #: Sum over DDP ranks (see :func:`coupled_contrastive_loss`); the trainer sets it.
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(
        self, fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor, regions: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and its terms; ``regions`` as for ``losses.contrastive``."""
        return coupled_contrastive_loss(
            fused,
            vi,
            ir,
            foreground_mask(regions, self.foreground),
            self.vgg,
            groups=self.groups,
            layer_weights=self.layer_weights,
            space=self.space,
            features=self.features,
            h=self.h,
            w=self.w,
            max_points=self.max_points,
            reduce=self.reduce,
        )


def image_entropy(images: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits) of each image's 256-level histogram, plus 1e-4.

    Args:
        images: ``(B, 1, H, W)`` in [0, 1]; the levels are ``round(255 x)``.

    Returns:
        ``(B,)`` float64.
    """
    b = images.shape[0]
    levels = (images.detach().double() * 255.0).round().clamp(0, 255).long().flatten(1)
    offsets = torch.arange(b, device=images.device)[:, None] * 256
    counts = torch.bincount((levels + offsets).flatten(), minlength=b * 256).view(b, 256)
    p = counts.double() / levels.shape[1]
    bits = torch.where(p > 0, -p * torch.log2(p.clamp_min(1e-300)), p.new_zeros(()))
    return bits.sum(dim=1) + ENTROPY_EPS


def mean_gradient(images: torch.Tensor) -> torch.Tensor:
    """Mean of |Sobel_x| + |Sobel_y| + 1e-5 over each image (zero padding), as CoCoNet's.

    Args:
        images: ``(B, 1, H, W)``.

    Returns:
        ``(B,)``.
    """
    (images,) = _wide(images.detach())
    gx, gy = sobel(images)
    return (gx.abs() + gy.abs() + GRADIENT_EPS).flatten(1).mean(dim=1)


def adaptive_weights(
    vi: torch.Tensor, ir: torch.Tensor, c1: float = 0.5, c2: float = 0.5, signed: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoCoNet's per-image source weights for its SSIM and MSE terms.

    Args:
        vi: ``(B, 1, H, W)`` visible in [0, 1].
        ir: ``(B, 1, H, W)`` infrared in [0, 1].
        c1: temperature factor of the gradient weights.
        c2: temperature factor of the entropy weights.
        signed: measure gradients on images mapped to [-1, 1], as CoCoNet did.

    Returns:
        ``(w_ssim, w_mse)``, each ``(B, 2)``: the visible weight, then the infrared one;
        rows sum to 1.
    """
    scale = (lambda x: 2.0 * x - 1.0) if signed else (lambda x: x)
    g = torch.stack((mean_gradient(scale(vi)), mean_gradient(scale(ir))), dim=1)  # (B, 2)
    e = torch.stack((image_entropy(vi), image_entropy(ir)), dim=1).to(g.dtype)
    w_ssim = torch.softmax(g / (c1 * g.sum(dim=1, keepdim=True)), dim=1)
    w_mse = torch.softmax(e / (c2 * e.sum(dim=1, keepdim=True)), dim=1)
    return w_ssim, w_mse


class SelfAdaptivePixelLoss(nn.Module):
    """CoCoNet's pixel loss: w_ssim_term * SSIM part + w_mse_term * MSE part.

    Args:
        w_ssim: weight of the SSIM part (CoCoNet: 20).
        w_mse: weight of the MSE part (CoCoNet: 1).
        c1: temperature factor of the gradient (SSIM) weights.
        c2: temperature factor of the entropy (MSE) weights.
        signed: MSE and gradients on images mapped to [-1, 1], as CoCoNet trained.
        window_size: SSIM Gaussian window side.
        sigma: SSIM Gaussian standard deviation.
    """

    def __init__(
        self,
        w_ssim: float = 20.0,
        w_mse: float = 1.0,
        c1: float = 0.5,
        c2: float = 0.5,
        signed: bool = True,
        window_size: int = 11,
        sigma: float = 1.5,
    ) -> None:
        super().__init__()
        self.w_ssim, self.w_mse, self.c1, self.c2 = w_ssim, w_mse, c1, c2
        self.signed, self.window_size, self.sigma = signed, window_size, sigma

    def forward(
        self, fused: torch.Tensor, vi: torch.Tensor, ir: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted loss and its unweighted parts ``ssim`` and ``mse`` (images in [0, 1])."""
        w_ssim, w_mse = adaptive_weights(vi, ir, self.c1, self.c2, self.signed)
        with torch.autocast(device_type=fused.device.type, enabled=False):
            f, v, i = _wide(fused, vi, ir)
            ssim_vi = ssim(v, f, self.window_size, self.sigma)  # (B,)
            ssim_ir = ssim(i, f, self.window_size, self.sigma)
            w_ssim, w_mse = w_ssim.to(f.dtype), w_mse.to(f.dtype)
            ssim_part = (w_ssim[:, 0] * (1.0 - ssim_vi) + w_ssim[:, 1] * (1.0 - ssim_ir)).mean()
            scale = 4.0 if self.signed else 1.0  # (2a - 2b)^2 = 4 (a - b)^2
            mse_vi = scale * (f - v).square().flatten(1).mean(dim=1)
            mse_ir = scale * (f - i).square().flatten(1).mean(dim=1)
            mse_part = (w_mse[:, 0] * mse_vi + w_mse[:, 1] * mse_ir).mean()
        parts = {"ssim": ssim_part, "mse": mse_part}
        return self.w_ssim * ssim_part + self.w_mse * mse_part, parts
