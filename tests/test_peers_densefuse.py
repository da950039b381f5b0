"""DenseFuse in occo: random-weight behaviour, PIL's gray for the visible image, and the
released gray weights against the authors' test_image.py output on the golden crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occo.models.checkpoint import WeightsError
from occo.models.peers.densefuse import pil_luma
from occo.models.registry import get_network
from tests.peer_checks import (
    check_forward_finish,
    check_golden,
    check_onnx,
    check_tiling,
    random_net,
)

SPEC = get_network("densefuse")
TINY = SPEC.config_class(stem=4, growth=3, decoder=(8, 6, 4))


def test_forward_finish_compose_at_odd_sizes():
    check_forward_finish(SPEC, random_net(SPEC, TINY), 23, 17)
    assert not SPEC.authors_color


def test_tiles_with_the_registered_margin_are_exact():
    check_tiling(SPEC, random_net(SPEC, TINY), 41, 36, tile=15)


def test_onnx_export_matches_pytorch():
    check_onnx(SPEC, random_net(SPEC, TINY))


def test_visible_luminance_is_pils_gray():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    got = (pil_luma(x)[0, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(got, want)


def test_rgb_model_and_other_methods_files_are_refused(tmp_path):
    rgb = tmp_path / "densefuse_rgb.model"
    torch.save({"conv1.conv2d.weight": torch.zeros(16, 3, 3, 3)}, rgb)
    with pytest.raises(WeightsError, match="RGB network"):
        SPEC.read_release(rgb)
    other = tmp_path / "SeAFusion.pth"
    torch.save(random_net(get_network("seafusion")).state_dict(), other)
    with pytest.raises(WeightsError, match="not DenseFuse's released weights"):
        SPEC.read_release(other)


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    net = check_golden(
        SPEC, shared_dir / "peers" / "densefuse" / "densefuse_gray.model", "densefuse"
    )
    assert sum(p.numel() for p in net.parameters()) == 74_193
