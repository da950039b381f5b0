"""FIFN: shapes for any size, gradients everywhere, the release's parameter count."""

from __future__ import annotations

import pytest
import torch

from occo.models.blocks import FIFB, attend, cat_channels, efficient_context, token_max
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN, count_parameters, fold_batchnorm, minmax_normalize
from tests.helpers import TINY_FIFN


def _inputs(
    height: int, width: int, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, height, width, generator=g), torch.rand(
        batch, 1, height, width, generator=g
    )


def test_release_parameter_count():
    # The release has 3,621,161 trainable parameters, including the never-used second
    # spatial-weight module of each FIFB (C*C + C + C + 1 per level), which occo drops.
    unused = sum(c * c + 2 * c + 1 for c in FIFNConfig().widths)
    assert count_parameters(FIFN()) + unused == 3_621_161


@pytest.mark.parametrize("size", [(359, 247), (8, 8), (33, 17), (64, 48)])
def test_any_size_keeps_shape(size):
    model = FIFN(TINY_FIFN).eval()
    vi, ir = _inputs(*size)
    with torch.inference_mode():
        out = model(vi, ir)
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_too_small_and_mismatched_inputs_raise():
    model = FIFN(TINY_FIFN).eval()
    with pytest.raises(ValueError, match="too small"):
        model(*_inputs(7, 20))
    vi, _ = _inputs(16, 16)
    _, ir = _inputs(16, 18)
    with pytest.raises(ValueError, match="differ"):
        model(vi, ir)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = FIFN(TINY_FIFN).train()
    vi, ir = _inputs(37, 29)
    out = model(vi, ir)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, f"no gradient for {missing}"


def test_efficient_attention_matches_explicit_heads():
    # Per head h: softmax over rows of (K_h^T V_h) / sqrt(d), then Q_h @ context.
    torch.manual_seed(1)
    b, n, c, heads = 2, 10, 8, 2
    d = c // heads
    k, v, q = torch.randn(b, n, c), torch.randn(b, n, c), torch.randn(b, n, c)
    got = attend(q, efficient_context(k, v, heads))
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        ctx = torch.softmax(k[..., sl].transpose(1, 2) @ v[..., sl] / d**0.5, dim=1)
        torch.testing.assert_close(got[..., sl], q[..., sl] @ ctx)


def test_fifb_output_shape_and_batch_independence():
    block = FIFB(8, 2).eval()
    x, y = torch.randn(3, 8, 9, 7), torch.randn(3, 8, 9, 7)
    with torch.inference_mode():
        both = block(x, y)
        one = block(x[1:2], y[1:2])
    assert both.shape == (3, 8, 9, 7)
    torch.testing.assert_close(both[1:2], one, atol=1e-5, rtol=1e-5)


def test_minmax_normalize_per_image():
    x = torch.stack([torch.linspace(-3, 5, 12).view(1, 3, 4), torch.full((1, 3, 4), 2.0)])
    y = minmax_normalize(x)
    assert y[0].min() == 0 and y[0].max() == 1
    assert torch.all(y[1] == 0)  # a constant image does not divide by zero


def test_minmax_margin_leaves_the_border_out_of_the_range():
    x = torch.rand(2, 1, 12, 10) * 0.5 + 0.25  # interior values in [0.25, 0.75]
    x[0, 0, 1, :] = -4.0  # a ring pixel row next to the border, far below the scene
    x[1, 0, :, -1] = 9.0
    plain, kept = minmax_normalize(x), minmax_normalize(x, margin=2)
    inner = kept[..., 2:-2, 2:-2]
    for image in inner:  # the interior alone spans [0, 1] ...
        assert image.min().item() == pytest.approx(0.0, abs=1e-6)
        assert image.max().item() == pytest.approx(1.0, abs=1e-6)
    assert kept[0, 0, 1].max() < 0 and kept[1, 0, :, -1].min() > 1  # ... the ring falls outside
    assert plain[0, 0, 5:7].min() > 0.75  # while the plain min-max lifts the scene to grey
    assert torch.equal(minmax_normalize(x, margin=6), plain)  # no interior left: plain
    assert torch.equal(minmax_normalize(x, margin=0), plain)


def test_config_validation_and_json_round_trip():
    with pytest.raises(ValueError, match="range_margin"):
        FIFNConfig(range_margin=-1)
    assert FIFNConfig.from_json(FIFNConfig(range_margin=4).to_json()).range_margin == 4
    assert FIFNConfig.from_dict({}).range_margin == 0  # weight files from before: the release
    with pytest.raises(ValueError, match="divide"):
        FIFNConfig(widths=(6, 8), heads=(4, 1))
    with pytest.raises(ValueError, match="one entry per level"):
        FIFNConfig(widths=(8, 8, 8), heads=(1, 1))
    with pytest.raises(ValueError, match="unknown"):
        FIFNConfig.from_dict({"widths": [8, 8], "heads": [1, 1], "depth": 3})
    assert FIFNConfig.from_json(TINY_FIFN.to_json()) == TINY_FIFN
    assert FIFNConfig().widths == (32, 64, 112, 160) and FIFNConfig().heads == (4, 4, 4, 1)


def test_fold_batchnorm_keeps_the_function():
    torch.manual_seed(2)
    model = FIFN(TINY_FIFN)
    for m in model.modules():  # non-trivial statistics, or folding would be a no-op
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    folded = fold_batchnorm(model)
    remaining = [n for n, m in folded.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(remaining) == len(TINY_FIFN.widths)  # only each merge's final BN stays
    vi, ir = _inputs(29, 35)
    with torch.inference_mode():
        torch.testing.assert_close(folded(vi, ir), model(vi, ir), atol=1e-5, rtol=1e-4)
    assert any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder_vi[0].modules()
    )  # untouched


def test_cat_channels_gradients_are_dense_and_equal_cat():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
    b = torch.randn(2, 4, 5, 7, generator=g)  # NCHW: each gradient keeps its input's layout
    weight = torch.randn(2, 7, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
    grads = []
    for cat in (cat_channels, lambda x, y: torch.cat((x, y), 1)):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        inner = [x * 1.0, y * 1.0]  # non-leaves: their gradients arrive as computed
        seen = []
        for t in inner:
            t.register_hook(seen.append)
        out = cat(*inner)
        torch.testing.assert_close(out, torch.cat((a, b), 1), rtol=0, atol=0)
        (out * weight).sum().backward()
        grads.append(seen[::-1] if seen[0].shape[1] == 4 else seen)
    (ours_a, ours_b), (ref_a, ref_b) = grads
    torch.testing.assert_close(ours_a, ref_a, rtol=0, atol=0)
    torch.testing.assert_close(ours_b, ref_b, rtol=0, atol=0)
    assert ours_a.is_contiguous(memory_format=torch.channels_last) and ours_b.is_contiguous()
    assert not ref_a.is_contiguous(memory_format=torch.channels_last)  # cat's strided slices
    assert not ref_b.is_contiguous()


def test_token_max_gradient_goes_to_one_token():
    tokens = torch.tensor([[[1.0, 5.0], [3.0, 5.0], [3.0, 2.0]]], requires_grad=True)  # ties
    values = token_max(tokens)
    torch.testing.assert_close(values, tokens.detach().amax(1))
    values.sum().backward()
    # One token per channel receives the whole gradient (adaptive max pooling's rule).
    assert tokens.grad.sum(1).tolist() == [[1.0, 1.0]]
    assert sorted(tokens.grad.flatten().tolist()) == [0, 0, 0, 0, 1, 1]
    with torch.no_grad():
        torch.testing.assert_close(token_max(tokens), values.detach())
