"""TarDAL's generator: random-weight behaviour, OpenCV's 8-bit recolouring, the three
released variants, and VIF-Benchmark's output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers import cv2color
from occo.models.peers.tardal import TarDAL, TarDALConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff, randomize

TINY = TarDALConfig(dim=4, depth=2)


def test_random_network_runs_tiles_and_exports():
    check_random_network("tardal", TINY)


def test_infrared_comes_first():
    model = randomize(TarDAL(TINY))
    first = model.encoder[0].weight
    with torch.no_grad():
        first[:, 1] = 0  # the second input channel no longer matters
    a, b, c = (torch.rand(1, 1, 9, 11) for _ in range(3))
    with torch.inference_mode():
        torch.testing.assert_close(model(a, c), model(b, c))  # vi_y ignored, ir used


def test_opencv_8bit_inverse_is_bit_exact():
    ycc = np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    rgb = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    t = torch.from_numpy(ycc).permute(2, 0, 1)[None].double() / 255
    # Y given with a fraction below the next level: truncated as the authors do.
    y = t[:, :1] + 0.9 / 255 * (t[:, :1] < 1)
    ours = cv2color.ycrcb_to_rgb_8bit(y, t[:, 1:2], t[:, 2:3])
    assert np.array_equal((ours[0] * 255).round().permute(1, 2, 0).numpy(), rgb)


def test_config_and_reader(tmp_path):
    assert TarDALConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError):
        TarDALConfig(dim=0)
    spec = get_network("tardal")
    model = randomize(TarDAL(TINY))
    path = tmp_path / "g.pt"
    torch.save(model.state_dict(), path)
    config, state = spec.read_release(path)
    assert config == TarDALConfig(dim=4, depth=2, variant="")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="not TarDAL's released weights"):
        spec.read_release(other)


def test_released_variants_are_named(shared_dir):
    spec = get_network("tardal")
    for name in ("tardal", "tardal+", "tardal++"):
        config, _ = spec.read_release(shared_dir / "peers" / "tardal" / f"{name}.pt")
        assert config.variant == name


def test_released_weights_match_the_authors_output(shared_dir):
    weights = shared_dir / "peers" / "tardal" / "tardal++.pt"
    color = golden_diff("tardal", weights, "color.png", "vi_color.png")
    assert np.abs(color).max() <= 1 and np.abs(color).mean() <= 0.5
    # Gray: the authors truncate to uint8, occo rounds: the same or one level above.
    gray = golden_diff("tardal", weights, "gray.png", "vi.png")
    assert set(np.unique(gray)) <= {0, 1} and gray.mean() <= 0.6
