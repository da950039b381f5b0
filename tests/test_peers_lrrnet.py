"""LRRNet: random-weight behaviour, exact tiles despite the global input min-max, and its
authors' output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers.lrrnet import LRRNet, LRRNetConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff, randomize

TINY = LRRNetConfig(filters=4, blocks=2)
WEIGHTS = "final_lrr_net_lam2_1.5_wir_3.0_lam3_gram_2000_epoch_4_block_4.model"


@pytest.mark.parametrize("config", [TINY, LRRNetConfig(filters=3, blocks=1, fusion="add")])
def test_random_network_runs_tiles_and_exports(config):
    check_random_network("lrrnet", config)


def test_inputs_are_min_max_normalised_per_image():
    model = randomize(LRRNet(TINY))
    vi, ir = torch.rand(2, 1, 20, 24), torch.rand(2, 1, 20, 24)
    with torch.inference_mode():
        # An affine change of an input's range does not change the output.
        torch.testing.assert_close(model(vi * 0.5 + 0.2, ir * 0.3), model(vi, ir), atol=1e-4, rtol=1e-3)


def test_config_round_trips_and_validates():
    assert LRRNetConfig.from_json(TINY.to_json()) == TINY
    for bad in ({"fusion": "max"}, {"kernel": 4}, {"filters": 0}):
        with pytest.raises(ValueError):
            LRRNetConfig(**bad)


def test_release_reader_reads_its_config_and_refuses_other_files(tmp_path):
    spec = get_network("lrrnet")
    model = randomize(LRRNet(TINY))
    # The release's names (get_ls1 = infrared encoder, lrrblockN, conv2d nesting).
    names = {
        "encoder_ir.": "get_ls1.", "encoder_vi.": "get_ls2.", "stem": "conv_W00.conv2d",
        "theta": "lamj", "lam_z": "lamz", "to_image": "conv_Wdz.conv2d",
        "to_codes": "conv_Wdtz.conv2d", "low_ir": "conv_ReZx.conv2d",
        "sparse_ir": "conv_ReUx.conv2d", "low_vi": "conv_ReZy.conv2d",
        "sparse_vi": "conv_ReUy.conv2d", "merge_low": "conv_ReL.conv2d",
        "merge_sparse": "conv_ReH.conv2d",
    }
    release = {}
    for key, value in model.state_dict().items():
        for ours, theirs in names.items():
            key = key.replace(ours, theirs)
        for i in range(TINY.blocks):
            key = key.replace(f".updates.{i}.", f".lrrblock{i}.")
        release[key] = value
    path = tmp_path / "lrr.model"
    torch.save(release, path)
    config, state = spec.read_release(path)
    assert config == TINY
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="not LRRNet's released weights"):
        spec.read_release(other)


@pytest.mark.parametrize("vi_name, golden", [("vi.png", "gray.png"), ("vi_color.png", "color.png")])
def test_released_weights_match_the_authors_output(shared_dir, vi_name, golden):
    diff = golden_diff("lrrnet", shared_dir / "peers" / "lrrnet" / WEIGHTS, golden, vi_name)
    # The authors truncate to uint8, occo rounds: occo is the same or one level above.
    assert set(np.unique(diff)) <= {0, 1} and diff.mean() <= 0.6
