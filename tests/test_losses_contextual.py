"""Contextual similarity / distance against a naive loop implementation, and its edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from occo.losses.contextual import (
    LOG_EPS,
    ContextualDistance,
    ContextualSimilarity,
    contextual_distance,
    contextual_similarity,
    sample_points,
)


def naive_cx(x: torch.Tensor, y: torch.Tensor, h: float, w: float) -> float:
    """CX of one pair written out point by point in Python floats (float64)."""
    c = x.shape[0]
    xs = x.reshape(c, -1).t().tolist()  # N points of C values
    ys = y.reshape(c, -1).t().tolist()
    n, m = len(xs), len(ys)
    mu = [sum(p[k] for p in ys) / m for k in range(c)]

    def cos_dist(a, b):
        a = [a[k] - mu[k] for k in range(c)]
        b = [b[k] - mu[k] for k in range(c)]
        dot = sum(a[k] * b[k] for k in range(c))
        return 1.0 - dot / (math.sqrt(sum(v * v for v in a)) * math.sqrt(sum(v * v for v in b)))

    def l2_dist(a, b):  # raw points: centring cannot change it
        return sum((a[k] - b[k]) ** 2 for k in range(c))

    def affinity(dist):
        out = []
        for i in range(n):
            d = [dist(xs[i], ys[j]) for j in range(m)]
            dmin = min(d)
            e = [math.exp((1.0 - d[j] / (dmin + 1e-5)) / h) for j in range(m)]
            s = sum(e)
            out.append([e[j] / s for j in range(m)])
        return out

    a_cos, a_l2 = affinity(cos_dist), affinity(l2_dist)
    total = 0.0
    for j in range(m):
        total += max((1.0 - w) * a_cos[i][j] + w * a_l2[i][j] for i in range(n))
    return total / m


@pytest.mark.parametrize("h,w", [(1.0, 0.5), (0.5, 0.5), (1.0, 0.0), (0.7, 1.0), (2.0, 0.25)])
def test_matches_naive_loops_float64(h, w):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 3, 2, generator=g, dtype=torch.float64)
    y = torch.randn(3, 4, 3, 2, generator=g, dtype=torch.float64) * 2.0 + 0.5
    y[2] = x[2] + 0.1 * torch.randn(4, 3, 2, generator=g, dtype=torch.float64)  # a close pair
    got = contextual_similarity(x, y, h=h, w=w)
    want = torch.tensor([naive_cx(x[b], y[b], h, w) for b in range(3)], dtype=torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        contextual_distance(x, y, h=h, w=w), -torch.log(want + LOG_EPS), atol=1e-10, rtol=0
    )


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: contextual_distance(a, b, h=0.8, w=0.5), (x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_invariant_to_permuting_target_points(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 4, 5, generator=g).to(dtype)
    y = torch.randn(2, 8, 4, 5, generator=g).to(dtype)
    perm = torch.randperm(20, generator=g)
    y_perm = y.flatten(2)[..., perm].view_as(y)
    assert not torch.equal(y_perm, y)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(
        contextual_distance(x, y_perm), contextual_distance(x, y), atol=tol, rtol=tol
    )


def test_identical_inputs_give_the_minimum_distance():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 16, 6, 6, generator=g)
    floor = -math.log(1.0 + LOG_EPS)  # CX = 1
    same = contextual_distance(x, x.clone())
    torch.testing.assert_close(same, torch.full_like(same, floor), atol=1e-5, rtol=0)
    previous = same
    for scale in (0.05, 0.5, 1.0, 3.0):  # a tiny perturbation keeps CX at 1 (relative distances)
        other = contextual_distance(x, x + scale * torch.randn(x.shape, generator=g))
        assert bool((other >= previous - 1e-7).all())
        previous = other
    assert bool((previous > same + 1.0).all())
    # Identical maps stay at the floor when the points are sub-sampled too.
    sampled = contextual_distance(x, x.clone(), max_points=10)
    torch.testing.assert_close(sampled, same, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["both_zero", "source_zero", "target_constant"])
def test_degenerate_inputs_are_finite_with_finite_gradients(case):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 5, 5, generator=g)
    y = torch.randn(2, 6, 5, 5, generator=g)
    if case in ("both_zero", "source_zero"):
        x = torch.zeros_like(x)
    if case == "both_zero":
        y = torch.zeros_like(y)
    if case == "target_constant":  # many identical points: min distance 0 (the release's NaN)
        y = torch.ones_like(y)
    x.requires_grad_(True)
    y.requires_grad_(True)
    d = contextual_distance(x, y)
    assert bool(torch.isfinite(d).all())
    gx, gy = torch.autograd.grad(d.sum(), (x, y))
    assert bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gy).all())


def test_sampling_bounds_points_and_is_reproducible():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 8, 8, generator=g)
    y = torch.randn(2, 4, 8, 8, generator=g)
    xs, ys = sample_points(x, y, 10, torch.Generator().manual_seed(0))
    assert xs.shape == ys.shape == (2, 4, 10)
    # The same indices are kept in both maps.
    assert torch.equal(sample_points(x, x, 10, torch.Generator().manual_seed(0))[0], xs)
    a = contextual_distance(x, y, max_points=10, generator=torch.Generator().manual_seed(7))
    b = contextual_distance(x, y, max_points=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    torch.testing.assert_close(contextual_distance(x, y, max_points=64), contextual_distance(x, y))


def test_runs_in_float32_under_autocast():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 8, 4, 4, generator=g).bfloat16()
    y = torch.randn(2, 8, 4, 4, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = contextual_distance(x, y)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, contextual_distance(x.float(), y.float()))


def test_modules_and_argument_checks():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 4, 3, 3, generator=g)
    y = torch.randn(3, 4, 3, 3, generator=g)
    per_pair = contextual_distance(x, y, h=0.5)
    torch.testing.assert_close(ContextualDistance(h=0.5)(x, y), per_pair.mean())
    torch.testing.assert_close(ContextualDistance(h=0.5, reduction="none")(x, y), per_pair)
    torch.testing.assert_close(
        ContextualSimilarity(h=0.5, reduction="sum")(x, y),
        contextual_similarity(x, y, h=0.5).sum(),
    )
    with pytest.raises(ValueError):
        contextual_distance(x, y, h=0.0)
    with pytest.raises(ValueError):
        contextual_distance(x, y[:, :2])
    with pytest.raises(ValueError):
        ContextualDistance(reduction="max")
