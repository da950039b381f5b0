"""SAGE's sub-network: random-weight behaviour, OpenCV colour, and its authors' output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers import cv2color
from occo.models.peers.sage import SAGE, SAGEConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff

TINY = SAGEConfig(dim=4)


def test_random_network_runs_folds_and_exports():
    check_random_network("sage", TINY)
    spec = get_network("sage")
    assert spec.receptive_margin(TINY) is None  # size-dependent upsampling: no tiles
    assert spec.make().config == SAGEConfig()


def test_config_round_trips_and_validates():
    assert SAGEConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError):
        SAGEConfig(dim=0)


def test_opencv_conversions_are_bit_exact():
    rgb = np.random.default_rng(0).integers(0, 256, (31, 47, 3), dtype=np.uint8)
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    cr, cb = cv2color.ycrcb_chroma(t)
    for ours, channel in ((cv2color.ycrcb_y(t), 0), (cr, 1), (cb, 2)):
        assert np.array_equal((ours[0, 0] * 255).round().numpy(), ycc[..., channel])
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.array_equal((cv2color.gray(t)[0, 0] * 255).round().numpy(), gray)


def test_release_reader_refuses_other_files(tmp_path):
    spec = get_network("sage")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="not SAGE's released weights"):
        spec.read_release(other)
    mine = tmp_path / "tiny.pt"
    torch.save(SAGE(TINY).state_dict(), mine)  # the right names, the wrong widths
    with pytest.raises(WeightsError, match="wrong shape"):
        spec.read_release(mine)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        spec.read_release(garbage)


@pytest.mark.parametrize("vi_name, golden", [("vi.png", "gray.png"), ("vi_color.png", "color.png")])
def test_released_weights_match_the_authors_output(shared_dir, vi_name, golden):
    weights = shared_dir / "peers" / "sage" / "checkpoints.pt"
    diff = np.abs(golden_diff("sage", weights, golden, vi_name))
    assert diff.max() <= 1 and diff.mean() <= 0.5
