"""Region split of two object masks: shared, unique and background."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.masks.regions import Regions, split_regions


def test_torch_regions_follow_the_formulas():
    vi = torch.tensor([[1, 1, 0, 0]], dtype=torch.float32).view(1, 1, 1, 4)
    ir = torch.tensor([[1, 0, 1, 0]], dtype=torch.float32).view(1, 1, 1, 4)
    regions = split_regions(vi, ir)
    assert isinstance(regions, Regions)
    assert regions.shared.flatten().tolist() == [1, 0, 0, 0]
    assert regions.unique_vi.flatten().tolist() == [0, 1, 0, 0]
    assert regions.unique_ir.flatten().tolist() == [0, 0, 1, 0]
    assert regions.background.flatten().tolist() == [0, 0, 0, 1]
    assert all(r.dtype == torch.float32 and r.shape == vi.shape for r in regions)


def test_non_binary_masks_are_binarised_and_partition_the_image():
    g = torch.Generator().manual_seed(0)
    # 0/255 masks, soft values and uint8 all count as object where > 0.
    vi = (torch.rand(2, 1, 9, 7, generator=g) * 255).round().to(torch.uint8)
    vi[vi < 128] = 0
    ir = torch.rand(2, 1, 9, 7, generator=g, dtype=torch.float64) - 0.5
    regions = split_regions(vi, ir)
    assert regions.shared.dtype == torch.float32  # integer input -> float32
    total = sum(regions)
    assert torch.equal(total, torch.ones_like(total))
    for r in regions:
        assert set(r.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(regions.shared + regions.unique_vi, (vi > 0).float())
    torch.testing.assert_close(regions.shared + regions.unique_ir, (ir > 0).float())
    soft = split_regions(ir, ir, dtype=torch.float16)
    assert soft.shared.dtype == torch.float16 and float(soft.unique_vi.sum()) == 0.0


def test_numpy_masks():
    vi = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    ir = np.array([[0, 1], [0, 1]], dtype=np.uint8)
    regions = split_regions(vi, ir)
    assert all(isinstance(r, np.ndarray) and r.dtype == np.float32 for r in regions)
    np.testing.assert_array_equal(regions.shared, [[0, 1], [0, 0]])
    np.testing.assert_array_equal(regions.unique_vi, [[0, 0], [1, 0]])
    np.testing.assert_array_equal(regions.unique_ir, [[0, 0], [0, 1]])
    np.testing.assert_array_equal(regions.background, [[1, 0], [0, 0]])


def test_mismatched_masks_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        split_regions(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="same type"):
        split_regions(torch.zeros(1, 1, 4, 4), np.zeros((1, 1, 4, 4)))
