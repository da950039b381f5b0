"""The contextual contrastive loss and the total objective, on a random-weight VGG19."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from occo.data.errors import OccoError
from occo.losses.contextual import contextual_distance
from occo.losses.contrastive import BatchGroupingError, contextual_contrastive_loss, group_size
from occo.losses.objective import FusionObjective, ObjectiveConfig, ObjectiveConfigError
from occo.losses.vgg import VGGFeatures, VGGWeightsError
from occo.masks.regions import Regions, split_regions

SIZE = 32  # relu5_4 is 2x2, relu4_4 4x4
# A random VGG19 on such tiny maps gives nearly identical masked features (CX ~ 1, D ~ 0);
# a wide band width keeps the distances informative for the tests.
H = 20.0


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(random_init=True)  # random weights, explicitly


def make_batch(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vi = torch.rand(batch, 1, SIZE, SIZE, generator=g)
    ir = torch.rand(batch, 1, SIZE, SIZE, generator=g)
    fused = (0.5 * vi + 0.5 * ir).requires_grad_(True)
    # Blobby masks that overlap partly, so every region is present.
    mask_vi = torch.zeros(batch, 1, SIZE, SIZE)
    mask_ir = torch.zeros(batch, 1, SIZE, SIZE)
    for b in range(batch):
        r, c = 4 + b % 5, 6 + (2 * b) % 7
        mask_vi[b, :, r : r + 14, c : c + 12] = 1
        mask_ir[b, :, r + 6 : r + 18, c + 4 : c + 20] = 1
    return fused, vi, ir, split_regions(mask_vi, mask_ir)


def soft_regions(batch: int, seed: int = 1):
    """Region weights in [0.3, 1] (no exact zeros, so no trivially identical points)."""
    g = torch.Generator().manual_seed(seed)
    return Regions(*(0.3 + 0.7 * torch.rand(batch, 1, SIZE, SIZE, generator=g) for _ in range(4)))


def reference_ccl(fused, vi, ir, regions, vgg, groups):
    """The release's way: every term and layer re-extracts its own features."""
    n = fused.shape[0] // groups
    src = {"vi": vi, "ir": ir}
    terms = {
        "unique_vi": ("unique_vi", "vi", "ir"),
        "unique_ir": ("unique_ir", "ir", "vi"),
        "shared_vi": ("shared", "vi", "ir"),
        "shared_ir": ("shared", "ir", "vi"),
    }
    out = {}
    for name, (region, pos, neg) in terms.items():
        mask = getattr(regions, region)
        keep = [i for i in range(n) if mask[i].sum() > 0]
        anchor = (fused * mask)[keep]
        value = 0.0
        for layer, weight in (("relu5_4", 1.0), ("relu4_4", 0.25)):
            feat = lambda img, layer=layer: vgg(img, layers=(layer,))[layer]  # noqa: E731
            d_pos = contextual_distance(feat(anchor), feat((src[pos] * mask)[keep]), h=H).mean()
            d_neg = 0.0
            for k in range(groups):
                neg_images = (src[neg] * mask)[[k * n + i for i in keep]]
                d_neg = d_neg + contextual_distance(feat(anchor), feat(neg_images), h=H).mean()
            value = value + weight * d_pos / d_neg
        out[name] = value
    mask = regions.background
    keep = [i for i in range(n) if mask[i].sum() > 0]
    a = vgg.gray_relu1_1((fused * mask)[keep])
    m_pos = (a - vgg.gray_relu1_1((vi * mask)[keep])).square().mean()
    m_neg = sum(
        (a - vgg.gray_relu1_1((ir * mask)[[k * n + i for i in keep]])).square().mean()
        for k in range(groups)
    )
    out["background"] = m_pos / m_neg
    return out


@pytest.mark.parametrize("batch,groups", [(4, 4), (6, 3)])
def test_matches_per_term_recomputation(vgg, batch, groups):
    fused, vi, ir, _ = make_batch(batch)
    regions = soft_regions(batch)
    if groups == 3:  # one anchor without shared pixels: it must be left out, not averaged in
        regions = regions._replace(
            shared=regions.shared.clone().index_fill_(0, torch.tensor([1]), 0.0)
        )
    with torch.no_grad():
        loss, parts = contextual_contrastive_loss(fused, vi, ir, regions, vgg, groups=groups, h=H)
        want = reference_ccl(fused, vi, ir, regions, vgg, groups)
    for name, value in want.items():
        assert float(value) > 0.01, name  # informative values, not a degenerate 0
        torch.testing.assert_close(parts[name], value, rtol=1e-5, atol=1e-6)
    weighted = sum(w * want[k] for k, w in zip(want, (1, 1, 0.5, 0.5, 1 / 16), strict=True))
    torch.testing.assert_close(loss, weighted, rtol=1e-5, atol=1e-6)


def test_ungroupable_batch_is_a_clear_error(vgg):
    fused, vi, ir, regions = make_batch(6)
    with pytest.raises(BatchGroupingError, match="batch size 6 cannot be split into 4") as info:
        contextual_contrastive_loss(fused, vi, ir, regions, vgg, groups=4)
    assert isinstance(info.value, OccoError)
    assert group_size(12, 4) == 3
    with pytest.raises(BatchGroupingError):
        group_size(2, 4)
    with pytest.raises(BatchGroupingError):
        ObjectiveConfig().check_batch_size(10)
    ObjectiveConfig(objective="pixel").check_batch_size(10)


def test_only_group_one_gives_anchors(vgg):
    fused, vi, ir, regions = make_batch(4)
    loss, _ = contextual_contrastive_loss(fused, vi, ir, regions, vgg, groups=2, h=H)
    (grad,) = torch.autograd.grad(loss, fused)
    assert float(grad[:2].abs().sum()) > 0
    assert float(grad[2:].abs().sum()) == 0.0
    # ...but the other groups' sources are negatives: changing them changes the loss.
    ir2 = ir.clone()
    ir2[2:] = 1.0 - ir2[2:]
    other, _ = contextual_contrastive_loss(fused, vi, ir2, regions, vgg, groups=2, h=H)
    assert abs(float(other.detach()) - float(loss.detach())) > 1e-6


def test_empty_regions_contribute_nothing_and_never_nan(vgg):
    fused, vi, ir, regions = make_batch(4)
    # No shared pixels in any crop.
    regions = regions._replace(shared=torch.zeros_like(regions.shared))
    _, parts = contextual_contrastive_loss(fused, vi, ir, regions, vgg, groups=4, h=H)
    assert parts["shared_vi"].item() == 0.0 and parts["shared_ir"].item() == 0.0
    assert parts["unique_vi"].item() > 0
    # No objects at all: only the background term is left.
    nothing = split_regions(torch.zeros(4, 1, SIZE, SIZE), torch.zeros(4, 1, SIZE, SIZE))
    loss, parts = contextual_contrastive_loss(fused, vi, ir, nothing, vgg, groups=4)
    assert all(parts[k].item() == 0.0 for k in ("unique_vi", "unique_ir", "shared_vi", "shared_ir"))
    assert parts["background"].item() > 0
    (grad,) = torch.autograd.grad(loss, fused)
    assert bool(torch.isfinite(grad).all())


def test_all_zero_images_are_finite(vgg):
    _, _, _, regions = make_batch(4)
    zeros = torch.zeros(4, 1, SIZE, SIZE)
    fused = zeros.clone().requires_grad_(True)
    objective = FusionObjective(ObjectiveConfig(), vgg)
    total, parts = objective(fused, zeros, zeros, regions)
    assert all(bool(torch.isfinite(v)) for v in parts.values())
    (grad,) = torch.autograd.grad(total, fused)
    assert bool(torch.isfinite(grad).all())


def test_objective_total_and_parts(vgg):
    fused, vi, ir, regions = make_batch(4)
    config = ObjectiveConfig(w_con=3.0, w_intensity=5.0, w_shared_ir=0.0)
    total, parts = FusionObjective(config, vgg)(fused, vi, ir, regions)
    want_pixel = parts["ssim"] + 5.0 * parts["intensity"] + parts["texture"]
    torch.testing.assert_close(parts["pixel"], want_pixel)
    want_con = (
        parts["con_unique_vi"]
        + parts["con_unique_ir"]
        + 0.5 * parts["con_shared_vi"]
        + parts["con_background"] / 16
    )
    torch.testing.assert_close(parts["con"], want_con)
    torch.testing.assert_close(total, parts["pixel"] + 3.0 * parts["con"])
    assert float(parts["con_shared_ir"]) == 0.0  # weight 0: not computed


def test_every_part_is_differentiable_with_respect_to_fused_only(vgg):
    fused, vi, ir, regions = make_batch(4)
    vi.requires_grad_(True)
    ir.requires_grad_(True)
    total, parts = FusionObjective(ObjectiveConfig(h=H), vgg)(fused, vi, ir, regions)
    for name, value in {"total": total, **parts}.items():
        g_f, g_vi, g_ir = torch.autograd.grad(
            value, (fused, vi, ir), retain_graph=True, allow_unused=True
        )
        assert g_f is not None and bool(torch.isfinite(g_f).all()), name
        assert float(g_f.abs().sum()) > 0, name
        assert g_vi is None and g_ir is None, name


def test_bf16_autocast_runs(vgg):
    fused, vi, ir, regions = make_batch(4)
    objective = FusionObjective(ObjectiveConfig(h=H), vgg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = objective(fused, vi, ir, regions)
    ref, _ = objective(fused, vi, ir, regions)
    assert total.dtype == torch.float32 and bool(torch.isfinite(total))
    assert abs(total.item() - ref.item()) < 0.05 * ref.item()
    (grad,) = torch.autograd.grad(total, fused)
    assert bool(torch.isfinite(grad).all())


def test_pixel_objective_needs_no_vgg_or_masks(monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("the pixel objective must not load VGG19")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    fused, vi, ir, _ = make_batch(3)
    objective = FusionObjective(ObjectiveConfig(objective="pixel"))
    total, parts = objective(fused, vi, ir, None)
    assert "con" not in parts
    torch.testing.assert_close(total, parts["pixel"])


def test_missing_vgg_weights_are_an_error_not_random(monkeypatch, tmp_path):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VGGWeightsError, match="vgg19"):
        FusionObjective(ObjectiveConfig())
    with pytest.raises(VGGWeightsError, match="missing.pth"):
        FusionObjective(ObjectiveConfig(vgg_weights=str(tmp_path / "missing.pth")))


def test_config_validation():
    for bad in (
        {"objective": "gan"},
        {"w_con": -1.0},
        {"h": 0.0},
        {"w": 1.5},
        {"max_points": 0},
        {"ssim_window": 10},
    ):
        with pytest.raises(ObjectiveConfigError):
            ObjectiveConfig(**bad)
    with pytest.raises(ObjectiveConfigError, match="w_typo"):
        ObjectiveConfig.from_dict({"w_typo": 1.0})
    config = ObjectiveConfig.from_dict({"h": 0.5, "max_points": 100})
    assert (config.h, config.max_points, config.w_con, config.w) == (0.5, 100, 10.0, 0.5)


def test_rank_shares_with_summed_stats_equal_the_whole_batch(vgg):
    """DDP: each rank holds the same positions of every group; summing their per-term
    counts and distance sums (what `reduce` does across processes) gives the whole batch's
    loss, even when a region is empty on one rank only."""
    groups, world = 4, 2
    fused, vi, ir, regions = make_batch(8)
    regions = Regions(*(r.clone() for r in regions))
    regions.shared[1].zero_()  # anchor 1 (rank 1's only anchor) has no shared region
    whole, whole_parts = contextual_contrastive_loss(
        fused, vi, ir, regions, vgg, groups=groups, h=H
    )

    def share(x, rank):  # rank r takes position r of each group of 2
        return x[[k * world + rank for k in range(groups)]]

    def rank_inputs(rank):
        return (
            share(fused, rank),
            share(vi, rank),
            share(ir, rank),
            Regions(*(share(r, rank) for r in regions)),
        )

    captured = {}

    def capture(stats):
        captured["stats"] = stats.detach()
        return stats

    contextual_contrastive_loss(*rank_inputs(1), vgg, groups=groups, h=H, reduce=capture)
    loss, parts = contextual_contrastive_loss(
        *rank_inputs(0), vgg, groups=groups, h=H, reduce=lambda s: s + captured["stats"]
    )
    torch.testing.assert_close(loss, whole, rtol=1e-5, atol=1e-7)
    for name, value in whole_parts.items():
        torch.testing.assert_close(parts[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert whole_parts["shared_vi"] > 0
