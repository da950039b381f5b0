"""Every objective preset (OCCO, its Table 8 ablations, CoCoNet) against a naive float64
implementation of its definition, on tiny crops and a VGG19 with RANDOM weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.losses.coconet import COCONET_LAYERS, coupled_contrastive_loss, foreground_mask
from occo.losses.contrastive import TERMS
from occo.losses.objective import (
    PRESET_FIELDS,
    PRESETS,
    FusionObjective,
    ObjectiveConfig,
    ObjectiveConfigError,
)
from occo.losses.pixel import ssim
from occo.losses.vgg import VGGFeatures
from occo.masks.regions import Regions, split_regions

SIZE = 32  # relu5_x maps are 2x2, relu1_x 32x32 (1024 points: below the sampling budget)
SMALL = 16  # enough for distances without a contextual normalisation (relu5_x is 1x1)
H = 20.0  # a wide band width keeps a random VGG19's contextual distances informative
TOL = 1e-10


@pytest.fixture(scope="module")
def vgg64() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(random_init=True, dtype=torch.float64)  # random weights, explicitly


def _images(batch: int, seed: int = 0, size: int = SIZE):
    g = torch.Generator().manual_seed(seed)
    vi, ir, noise = torch.rand(3, batch, 1, size, size, generator=g, dtype=torch.float64)
    fused = (0.4 * vi + 0.4 * ir + 0.2 * noise).requires_grad_(True)
    return fused, vi, ir


def _binary_regions(batch: int, size: int = SIZE) -> Regions:
    """Overlapping boxes (every region present), scaled to the crop size."""
    mask_vi = torch.zeros(batch, 1, size, size, dtype=torch.float64)
    mask_ir = torch.zeros_like(mask_vi)
    u = size / 32
    for b in range(batch):
        r, c = int((4 + b % 5) * u), int((6 + (2 * b) % 7) * u)
        mask_vi[b, :, r : r + int(14 * u), c : c + int(12 * u)] = 1
        mask_ir[b, :, r + int(6 * u) : r + int(18 * u), c + int(4 * u) : c + int(20 * u)] = 1
    return split_regions(mask_vi, mask_ir)


def _soft_regions(batch: int, seed: int = 1, size: int = SIZE) -> Regions:
    """Region weights in [0.3, 1]: no exact zeros, so no identical feature points, whose
    near-zero contextual distances would amplify rounding beyond 1e-10."""
    g = torch.Generator().manual_seed(seed)
    shape = (4, batch, 1, size, size)
    return Regions(*(0.3 + 0.7 * torch.rand(shape, generator=g, dtype=torch.float64)))


# --- naive definitions --------------------------------------------------------------------


def naive_contextual(x: torch.Tensor, y: torch.Tensor, h: float, w: float) -> torch.Tensor:
    """-log(CX + 1e-5) of two (C, H, W) maps, straight from Mechrez et al.'s definition."""
    xs, ys = x.flatten(1), y.flatten(1)  # (C, N)
    mu = ys.mean(dim=1, keepdim=True)  # the target's mean feature
    xs, ys = xs - mu, ys - mu

    def affinity(d):  # (N, M): relative distance, then exp, normalised over j
        rel = d / (d.min(dim=1, keepdim=True).values + 1e-5)
        e = torch.exp((1.0 - rel) / h)
        return e / e.sum(dim=1, keepdim=True)

    xn = xs / xs.norm(dim=0, keepdim=True).clamp_min(1e-12)
    yn = ys / ys.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = affinity((1.0 - xn.T @ yn).clamp_min(0.0))
    sq = (xs * xs).sum(0)[:, None] + (ys * ys).sum(0)[None, :] - 2.0 * xs.T @ ys
    l2 = affinity(sq.clamp_min(0.0))
    cx = ((1.0 - w) * cos + w * l2).max(dim=0).values.mean()  # max over i, mean over j
    return -torch.log(cx + 1e-5)


def naive_distance(a, t, space, h, w):
    if space == "contextual":
        return naive_contextual(a, t, h, w)
    if space == "euclidean":
        return (a - t).square().mean()
    return (a - t).abs().mean()


def _features(vgg, image, layers, features):
    """{layer: (C, h, w)} of one image, computed on its own."""
    if features == "gray_relu1_1":
        return {"gray": vgg.gray_relu1_1(image[None])[0]}
    if features == "gray":
        out = vgg.gray_features(image[None], tuple(layers))
    else:
        out = vgg(image[None], layers=tuple(layers))
    return {k: v[0] for k, v in out.items()}


def naive_ratio(a, p, negs, anchors, layers, space, h, w):
    """sum_l w_l mean_i D(a_i, p_i) / sum_k mean_i D(a_i, n_ki), from per-image features."""
    term = 0.0
    for layer, layer_weight in layers.items():
        d_pos = sum(naive_distance(a[i][layer], p[i][layer], space, h, w) for i in anchors)
        d_neg = sum(
            naive_distance(a[i][layer], neg[i][layer], space, h, w) for neg in negs for i in anchors
        )
        term = term + layer_weight * (d_pos / len(anchors)) / (d_neg / len(anchors))
    return term


def naive_regions_loss(fused, vi, ir, regions, vgg, cfg: ObjectiveConfig) -> torch.Tensor:
    """OCCO's L_con term by term, layer by layer, anchor by anchor."""
    groups = cfg.groups
    n = fused.shape[0] // groups
    src = {"vi": vi, "ir": ir}
    weights = {
        "unique_vi": cfg.w_unique_vi,
        "unique_ir": cfg.w_unique_ir,
        "shared_vi": cfg.w_shared_vi,
        "shared_ir": cfg.w_shared_ir,
        "background": cfg.w_background,
    }
    total = torch.zeros((), dtype=torch.float64)
    for name, (region, pos, neg) in TERMS.items():
        mask = getattr(regions, region)
        anchors = [i for i in range(n) if mask[i].sum() > 0]
        if name == "background":  # OCCO's: MSE ratio on the gray relu1_1, in every preset
            layers, space, features = {"gray": 1.0}, "euclidean", "gray_relu1_1"
        else:
            layers, space, features = cfg.con_layers, cfg.con_space, cfg.con_features
        a = {i: _features(vgg, fused[i] * mask[i], layers, features) for i in anchors}
        p = {i: _features(vgg, src[pos][i] * mask[i], layers, features) for i in anchors}
        negs = [
            {
                i: _features(vgg, src[neg][k * n + i] * mask[k * n + i], layers, features)
                for i in anchors
            }
            for k in range(groups)
        ]
        term = naive_ratio(a, p, negs, anchors, layers, space, cfg.h, cfg.w)
        total = total + weights[name] * term
    return total


def naive_coupled_loss(fused, vi, ir, foreground, vgg, groups, layers) -> torch.Tensor:
    """CoCoNet's release: per layer L1(o, p) / sum_k L1(o, n_k), nn.L1Loss over the whole
    group (anchors with an empty region included), images in [-1, 1], gray VGG19."""
    n = fused.shape[0] // groups
    f, v, i = (2.0 * x - 1.0 for x in (fused, vi, ir))
    m = foreground[:n]
    total = torch.zeros((), dtype=torch.float64)
    for mask, pos, neg in ((m, i, v), (1.0 - m, v, i)):
        o = vgg.gray_features(f[:n] * mask, tuple(layers))
        p = vgg.gray_features(pos[:n] * mask, tuple(layers))
        negs = [
            vgg.gray_features(neg[k * n : (k + 1) * n] * mask, tuple(layers)) for k in range(groups)
        ]
        for layer, weight in layers.items():
            l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731  (torch's L1Loss)
            total = total + weight * l1(o[layer], p[layer]) / sum(
                l1(o[layer], x[layer]) for x in negs
            )
    return total


def _sobel_mean(img: np.ndarray) -> float:
    """mean(|Sobel_x| + |Sobel_y| + 1e-5), zero padding, as CoCoNet's Gradient_Net_iqa."""
    p = np.pad(img, 1)
    kx = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    for r in range(3):
        for c in range(3):
            window = p[r : r + img.shape[0], c : c + img.shape[1]]
            gx += kx[r, c] * window
            gy += kx.T[r, c] * window
    return float(np.mean(np.abs(gx) + np.abs(gy) + 1e-5))


def _entropy(img: np.ndarray) -> float:
    counts = np.bincount(np.rint(img * 255.0).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / img.size
    return float(-(p * np.log2(p)).sum()) + 1e-4


def _softmax2(a: float, b: float) -> tuple[float, float]:
    ea, eb = np.exp(a), np.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def naive_self_adaptive(fused, vi, ir, c1=0.5, c2=0.5) -> torch.Tensor:
    """CoCoNet's pixel loss image by image: 20 SSIM part + MSE part on [-1, 1] images."""
    total_ssim = total_mse = 0.0
    b = fused.shape[0]
    for k in range(b):
        v, i = vi[k, 0].numpy(), ir[k, 0].numpy()
        g_vi, g_ir = _sobel_mean(2 * v - 1), _sobel_mean(2 * i - 1)
        e_vi, e_ir = _entropy(v), _entropy(i)
        ws_vi, ws_ir = _softmax2(g_vi / (c1 * (g_vi + g_ir)), g_ir / (c1 * (g_vi + g_ir)))
        wm_vi, wm_ir = _softmax2(e_vi / (c2 * (e_vi + e_ir)), e_ir / (c2 * (e_vi + e_ir)))
        f = fused[k : k + 1]
        s_vi = ssim(vi[k : k + 1], f)[0]
        s_ir = ssim(ir[k : k + 1], f)[0]
        total_ssim = total_ssim + ws_vi * (1 - s_vi) + ws_ir * (1 - s_ir)
        fs = 2 * f - 1
        mse_vi = (fs - (2 * vi[k : k + 1] - 1)).square().mean()
        mse_ir = (fs - (2 * ir[k : k + 1] - 1)).square().mean()
        total_mse = total_mse + wm_vi * mse_vi + wm_ir * mse_ir
    return 20.0 * total_ssim / b + total_mse / b


def naive_masked_intensity(fused, vi, ir, regions, cfg: ObjectiveConfig) -> torch.Tensor:
    """Model-4 (eq. 21 as occo reads it): sum_t w_t mean(R_t |f - P_t|)."""
    src = {"vi": vi, "ir": ir}
    weights = {
        "unique_vi": cfg.w_unique_vi,
        "unique_ir": cfg.w_unique_ir,
        "shared_vi": cfg.w_shared_vi,
        "shared_ir": cfg.w_shared_ir,
        "background": cfg.w_background,
    }
    return sum(
        weights[name] * (getattr(regions, region) * (fused - src[pos]).abs()).mean()
        for name, (region, pos, _) in TERMS.items()
    )


# --- the presets ------------------------------------------------------------------------


def _check_backward(total, fused):
    (grad,) = torch.autograd.grad(total, fused)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "preset, size",
    [("occo", SIZE), ("model1", SMALL), ("model2", SIZE), ("model3", SMALL), ("model5", SIZE)],
)
def test_region_presets_match_their_definition(vgg64, preset, size):
    # Batch 2: one anchor, two groups. Model-2 and Model-5 differ from OCCO in the object
    # terms' layers and w only: two of the four object terms are enough (and halve the
    # time); Model-2's contextual maps of up to 1024 points also take one group only.
    fewer = {"w_unique_ir": 0.0, "w_shared_ir": 0.0} if preset in ("model2", "model5") else {}
    groups = 1 if preset == "model2" else 2
    cfg = ObjectiveConfig(objective=preset, h=H, groups=groups, **fewer)
    fused, vi, ir = _images(groups, size=size)
    regions = _soft_regions(groups, size=size)
    total, parts = FusionObjective(cfg, vgg64)(fused, vi, ir, regions)
    with torch.no_grad():
        want = naive_regions_loss(fused, vi, ir, regions, vgg64, cfg)
    assert float(want) > 0.01  # an informative value, not a degenerate 0
    torch.testing.assert_close(parts["con"], want, rtol=TOL, atol=TOL)
    torch.testing.assert_close(total, parts["pixel"] + cfg.w_con * want, rtol=TOL, atol=TOL)
    _check_backward(total, fused)


def test_region_presets_are_what_table_8_says():
    occo, m1, m2, m3, m5 = (
        ObjectiveConfig(objective=p) for p in ("occo", "model1", "model2", "model3", "model5")
    )
    assert (occo.con_space, occo.con_layers, occo.w) == (
        "contextual",
        {"relu5_4": 1.0, "relu4_4": 0.25},
        0.5,
    )
    assert m1.con_space == "euclidean" and set(m1.con_layers) == {"relu4_1", "relu5_1"}  # deep
    assert m2.con_space == "contextual" and len(m2.con_layers) == 5
    assert m3.con_space == "euclidean" and len(m3.con_layers) == 5
    assert m5.con_space == "contextual" and m5.w == 0.0 and m5.con_layers == occo.con_layers


def test_model4_is_masked_intensity_without_vgg(monkeypatch):
    def no_vgg(*args, **kwargs):
        raise AssertionError("Model-4 must not load VGG19")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_vgg)
    cfg = ObjectiveConfig(objective="model4", w_shared_vi=0.8, w_shared_ir=0.2)
    assert cfg.needs_masks and not cfg.needs_groups and not cfg.needs_vgg
    cfg.check_batch_size(5)  # no groups to fill
    fused, vi, ir = _images(3, size=SMALL)
    regions = _binary_regions(3, SMALL)
    total, parts = FusionObjective(cfg)(fused, vi, ir, regions)
    want = naive_masked_intensity(fused.detach(), vi, ir, regions, cfg)
    assert float(want) > 0.01
    torch.testing.assert_close(parts["con"], want, rtol=TOL, atol=TOL)
    torch.testing.assert_close(total, parts["pixel"] + 10.0 * want, rtol=TOL, atol=TOL)
    _check_backward(total, fused)


def test_coconet_foreground_setting():
    regions = _binary_regions(2, SMALL)
    infrared = regions.shared + regions.unique_ir
    objects = infrared + regions.unique_vi
    assert float(objects.sum()) > float(infrared.sum()) > 0
    torch.testing.assert_close(foreground_mask(regions), infrared)  # the default
    torch.testing.assert_close(foreground_mask(regions._asdict(), "objects"), objects)
    assert ObjectiveConfig(objective="coconet").coconet_foreground == "infrared"


def test_coconet_matches_its_release(vgg64):
    cfg = ObjectiveConfig(objective="coconet", coconet_foreground="objects")
    assert (cfg.groups, cfg.w_con, cfg.con_layers) == (3, 1.0, COCONET_LAYERS)
    fused, vi, ir = _images(3, size=SMALL)
    regions = _binary_regions(3, SMALL)
    total, parts = FusionObjective(cfg, vgg64)(fused, vi, ir, regions)
    mask = regions.shared + regions.unique_vi + regions.unique_ir
    with torch.no_grad():
        con = naive_coupled_loss(fused, vi, ir, mask, vgg64, 3, COCONET_LAYERS)
        pixel = naive_self_adaptive(fused.detach(), vi, ir)
    assert float(con) > 0.01 and set(parts) >= {"con_foreground", "con_background", "ssim", "mse"}
    torch.testing.assert_close(parts["con"], con, rtol=TOL, atol=TOL)
    torch.testing.assert_close(parts["pixel"], pixel, rtol=TOL, atol=TOL)
    torch.testing.assert_close(total, pixel + con, rtol=TOL, atol=TOL)
    _check_backward(total, fused)


def test_coupled_loss_under_ddp_equals_the_whole_batch():
    """Each rank holds the same positions of every group; summing their counts and
    distance sums (what `reduce` does) gives the whole batch's loss."""
    torch.manual_seed(0)
    vgg = VGGFeatures(random_init=True)
    groups, world = 3, 2
    fused, vi, ir = (x.float().detach() for x in _images(6, seed=3, size=SMALL))
    fg = _binary_regions(6, SMALL).unique_ir.float()
    fg[1].zero_()  # rank 1's anchor has no foreground
    whole, whole_parts = coupled_contrastive_loss(fused, vi, ir, fg, vgg, groups=groups)

    def share(x, rank):
        return x[[k * world + rank for k in range(groups)]]

    captured = {}

    def capture(stats):
        captured["stats"] = stats
        return stats

    coupled_contrastive_loss(*(share(x, 1) for x in (fused, vi, ir, fg)), vgg, reduce=capture)
    loss, parts = coupled_contrastive_loss(
        *(share(x, 0) for x in (fused, vi, ir, fg)), vgg, reduce=lambda s: s + captured["stats"]
    )
    torch.testing.assert_close(loss, whole, rtol=1e-5, atol=1e-7)
    assert float(whole_parts["foreground"]) > 0 and float(whole_parts["background"]) > 0


def test_pixel_preset_and_every_preset_builds(vgg64):
    fused, vi, ir = _images(6, size=SMALL)
    for name in PRESETS:
        cfg = ObjectiveConfig(objective=name)
        assert all(getattr(cfg, f) is not None for f in PRESET_FIELDS)
        objective = FusionObjective(cfg, vgg64 if cfg.needs_vgg else None)
        if name == "pixel":
            total, parts = objective(fused, vi, ir, None)
            assert "con" not in parts
            _check_backward(total, fused)
        else:
            assert objective.contrastive is not None
    for name in PRESETS:
        cfg = ObjectiveConfig(objective=name)
        assert cfg.needs_masks == (name != "pixel")


def test_presets_fill_only_what_is_not_given():
    cfg = ObjectiveConfig(objective="model3", w_con=5.0, w_shared_vi=1.0, w_shared_ir=0.0)
    assert (cfg.con_space, cfg.w_con, cfg.w_shared_vi, cfg.w_shared_ir) == (
        "euclidean",
        5.0,
        1.0,
        0.0,
    )
    # Deepest layer first, whatever the order given (a fixed summation order).
    cfg = ObjectiveConfig(con_layers={"relu1_2": 0.1, "relu5_4": 1, "relu3_4": 0.2})
    assert list(cfg.con_layers) == ["relu5_4", "relu3_4", "relu1_2"]
    assert ObjectiveConfig.from_dict({"objective": "coconet"}).groups == 3


def test_switching_presets_drops_the_old_presets_values():
    base = ObjectiveConfig(objective="model5", w_con=3.0, vgg_weights="vgg.pth")
    base_dict = {k: getattr(base, k) for k in ("objective", *PRESET_FIELDS, "vgg_weights", "h")}
    merged = ObjectiveConfig.from_dict(
        ObjectiveConfig.with_preset(base_dict, {"objective": "coconet"})
    )
    assert (merged.w, merged.w_con, merged.contrastive) == (0.5, 1.0, "coupled")
    assert merged.vgg_weights == "vgg.pth"  # not a preset field: kept
    same = ObjectiveConfig.from_dict(
        ObjectiveConfig.with_preset(base_dict, {"objective": "model5"})
    )
    assert (same.w, same.w_con) == (0.0, 3.0)  # the same preset keeps its explicit values


def test_config_errors_name_the_setting():
    for bad, word in (
        ({"objective": "model9"}, "objective"),
        ({"con_space": "hyperbolic"}, "con_space"),
        ({"con_layers": {"relu6_1": 1.0}}, "relu6_1"),
        ({"con_layers": {"relu5_4": -1.0}}, "con_layers"),
        ({"con_layers": {}}, "con_layers"),
        ({"contrastive": "triplet"}, "contrastive"),
        ({"coconet_foreground": "visible"}, "coconet_foreground"),
        ({"coconet_c1": 0.0}, "coconet_c1"),
        ({"signed_inputs": "yes"}, "signed_inputs"),
    ):
        with pytest.raises(ObjectiveConfigError, match=word):
            ObjectiveConfig.from_dict(bad)


def test_settings_of_older_versions_still_load():
    cfg = ObjectiveConfig.from_dict({"objective": "occo", "w_relu5_4": 1.0, "w_relu4_4": 0.5})
    assert cfg.con_layers == {"relu5_4": 1.0, "relu4_4": 0.5}


def test_large_contextual_maps_are_recomputed_not_stored(monkeypatch):
    """Above CHECKPOINT_POINTS the contextual distance is recomputed in the backward pass,
    with the same randomly sampled points: same value, same gradient."""
    import occo.losses.contrastive as contrastive

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 48, 48, generator=g).requires_grad_(True)
    t = torch.rand(3, 8, 48, 48, generator=g)

    def run():
        saved = []

        def pack(x):
            saved.append(x.numel())
            return x

        torch.manual_seed(5)  # 2304 points, 2100 sampled
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            d = contrastive.feature_distance(a, t, "contextual", 1.0, 0.5, 2100)
        return d, torch.autograd.grad(d.sum(), a)[0], sum(saved)

    assert 2100 >= contrastive.CHECKPOINT_POINTS
    *recomputed, kept_recomputed = run()
    monkeypatch.setattr(contrastive, "CHECKPOINT_POINTS", 10**9)
    *stored, kept_stored = run()
    assert float(stored[1].abs().sum()) > 0
    assert kept_stored > 5 * 3 * 2100 * 2100 > 100 * kept_recomputed  # no (3, P, P) matrices
    for x, y in zip(recomputed, stored, strict=True):
        assert torch.equal(x, y)
