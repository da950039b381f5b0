"""The Fuser: normalisation, colour, batching, tiling and autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from occo.data.normalize import (
    compose_color,
    ir_to_unit,
    luminance,
    prepare_pair,
    prepare_training_pair,
    to_uint8,
    vi_to_unit,
)
from occo.models.fifn import FIFN, minmax_normalize
from occo.models.fuser import Fuser
from tests.helpers import TINY_FIFN, random_fifn


def _smooth_images(
    batch: int, channels: int, height: int, width: int, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, height + 6, width + 6, generator=g)
    return F.avg_pool2d(x, 7, stride=1)  # (B, C, H, W), natural-image-like smoothness


def test_batch_of_one_equals_pair_inside_batch():
    fuser = Fuser(random_fifn(), batch_size=3)
    vi, ir = _smooth_images(3, 3, 40, 52), _smooth_images(3, 1, 40, 52, seed=1)
    batched = fuser.fuse(vi, ir)
    single = Fuser(random_fifn(), batch_size=1).fuse(vi[1:2], ir[1:2])
    assert batched.shape == (3, 3, 40, 52)
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=0)


def test_output_is_minmax_normalised_per_image():
    fused = Fuser(random_fifn()).fuse(
        _smooth_images(2, 1, 24, 30), _smooth_images(2, 1, 24, 30, seed=2)
    )
    for image in fused:
        assert image.min().item() == pytest.approx(0.0, abs=1e-6)
        assert image.max().item() == pytest.approx(1.0, abs=1e-6)


def test_range_margin_of_the_weights_sets_the_output_range():
    import dataclasses

    model = random_fifn()
    margined = FIFN(dataclasses.replace(TINY_FIFN, range_margin=3))
    margined.load_state_dict(model.state_dict())
    vi, ir = _smooth_images(2, 1, 24, 30), _smooth_images(2, 1, 24, 30, seed=2)
    fused = Fuser(margined.eval()).fuse(vi, ir)
    raw = Fuser(model).raw(vi, ir)
    expected = minmax_normalize(raw, margin=3).clamp(0, 1)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(fused, Fuser(model).fuse(vi, ir), atol=1e-3)  # margin changes it
    for image in fused:  # interior spans [0, 1]; the border is clamped into it
        assert image[..., 3:-3, 3:-3].min().item() == pytest.approx(0.0, abs=1e-6)
        assert image[..., 3:-3, 3:-3].max().item() == pytest.approx(1.0, abs=1e-6)
        assert image.min() >= 0 and image.max() <= 1


def test_color_round_trip_within_one_grey_level():
    rgb = np.random.default_rng(0).integers(0, 256, size=(31, 45, 3), dtype=np.uint8)
    vi = torch.from_numpy(vi_to_unit(rgb))[None]  # (1, 3, H, W)
    back = to_uint8(compose_color(luminance(vi), vi)[0])
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_gray_colour_and_gray_content_visible_inputs():
    fuser = Fuser(random_fifn())
    rng = np.random.default_rng(1)
    ir = rng.integers(0, 256, size=(20, 28), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(20, 28), dtype=np.uint8)
    assert fuser.fuse_arrays(ir, colour).shape == (20, 28, 3)
    assert fuser.fuse_arrays(ir, gray).shape == (20, 28)
    # TNO stores gray images as RGB: the output stays gray, and equals the 2-D input's.
    as_rgb = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(
        fuser.fuse_arrays(np.dstack([ir] * 3), as_rgb), fuser.fuse_arrays(ir, gray)
    )
    with pytest.raises(ValueError, match="differ in size"):
        prepare_pair(ir, gray[:10])


def test_ir_normalisation_8_and_16_bit():
    ir8 = np.array([[0, 51, 255]], dtype=np.uint8)
    np.testing.assert_allclose(ir_to_unit(ir8), [[0.0, 0.2, 1.0]], atol=1e-7)
    # Raw 16-bit thermal: a narrow band of counts plus one saturated pixel.
    rng = np.random.default_rng(2)
    ir16 = rng.integers(7000, 9000, size=(50, 60)).astype(np.uint16)
    ir16[0, 0] = 65535
    robust = ir_to_unit(ir16, "percentile")
    assert robust.min() == 0.0 and robust.max() == 1.0 and robust.std() > 0.2
    squashed = ir_to_unit(ir16, "minmax")
    assert squashed.max() == 1.0 and np.median(squashed) < 0.05  # the hot pixel wins
    assert ir_to_unit(ir16, "full").max() == 1.0 and np.median(ir_to_unit(ir16, "full")) < 0.15
    vi16 = np.full((4, 4, 3), 65535, dtype=np.uint16)
    vi16[..., 2] = 0
    assert vi_to_unit(vi16).shape == (3, 4, 4) and vi_to_unit(vi16).max() == 1.0


def test_tiled_fuser_equals_whole_images():
    # Larger than one window (tile + 2 x 80 px of context), so the Fuser really tiles; the
    # min-max runs over the whole image.
    vi, ir = _smooth_images(2, 3, 200, 236), _smooth_images(2, 1, 200, 236, seed=5)
    model = random_fifn()
    whole = Fuser(model).fuse(vi, ir)
    tiled_fuser = Fuser(model, tile=24, batch_size=2)
    assert tiled_fuser.tile_margin == 80
    torch.testing.assert_close(tiled_fuser.fuse(vi, ir), whole, atol=1e-5, rtol=0)


def test_bf16_autocast_on_cpu_is_close():
    vi, ir = _smooth_images(1, 1, 32, 40), _smooth_images(1, 1, 32, 40, seed=6)
    model = random_fifn()
    fp32 = Fuser(model, amp=False).fuse(vi, ir)
    bf16_fuser = Fuser(model, amp=True)
    assert bf16_fuser.amp_dtype == torch.bfloat16
    assert Fuser(model).amp_dtype is None  # "auto" is off on CPU
    assert (bf16_fuser.fuse(vi, ir) - fp32).abs().mean() < 0.05


def test_training_pair_is_inference_input():
    # One normalisation for train and fuse: the training pair is what the Fuser feeds FIFN.
    rng = np.random.default_rng(3)
    ir16 = rng.integers(1000, 3000, (6, 7)).astype(np.uint16)
    rgb = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    ir, vi_y = prepare_training_pair(ir16, rgb)
    pair = prepare_pair(ir16, rgb)
    np.testing.assert_array_equal(ir, pair.ir[0].numpy())
    np.testing.assert_array_equal(vi_y, luminance(pair.vi[None])[0, 0].numpy())
    assert ir.dtype == vi_y.dtype == np.float32 and 0.0 <= ir.min() and ir.max() <= 1.0
