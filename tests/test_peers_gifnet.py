"""GIFNet's fusion path: random-weight behaviour (windows, shifts, padding), the release's
names, and its authors' output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers.gifnet import GIFNet, GIFNetConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff, randomize

TINY = GIFNetConfig(growth=2, heads=2, window=4, decoder_width=4)


def test_random_network_runs_and_exports():
    # Sizes that are and are not multiples of the window and of the release's patch of 4.
    check_random_network("gifnet", TINY, sizes=((13, 19), (16, 24)))
    assert get_network("gifnet").receptive_margin(TINY) is None  # RLN is global


def test_visible_luminance_is_truncated_like_the_authors():
    spec = get_network("gifnet")
    rgb = torch.tensor([[[[10 / 255]], [[200 / 255]], [[3 / 255]]]])
    y = 0.299 * 10 + 0.587 * 200 + 0.114 * 3  # 120.732 -> 120
    assert torch.equal((spec.luminance(rgb) * 255).round(), torch.tensor([[[[np.floor(y)]]]]))


def test_config_and_reader(tmp_path):
    assert GIFNetConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError):
        GIFNetConfig(growth=3, heads=4)  # 11 channels do not split into 4 heads
    spec = get_network("gifnet")
    model = randomize(GIFNet(TINY))
    names = {
        "branch.patch": "extractor_multask.SwinTransformerSpecific.patch",
        "branch.blocks": "extractor_multask.SwinTransformerSpecific.layer1.blocks",
        "branch.weights": "extractor_multask.SwinTransformerSpecific.layer1.weights",
        "shared.": "getSharedFeatures.", "decoder.": "cnnDecoder.",
    }
    release = {}
    for key, value in model.state_dict().items():
        for ours, theirs in names.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        release[key] = value
    release["decoder_rec.decoder.1.weight"] = torch.zeros(1)  # training-only: dropped
    path = tmp_path / "Final.model"
    torch.save(release, path)
    with pytest.raises(WeightsError, match="wrong shape"):  # the reader expects the release's sizes
        spec.read_release(path)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="not GIFNet's released weights"):
        spec.read_release(other)


def test_released_weights_match_the_authors_output(shared_dir):
    weights = shared_dir / "peers" / "gifnet" / "Final.model"
    color = golden_diff("gifnet", weights, "color.png", "vi_color.png")
    assert np.abs(color).max() <= 1 and np.abs(color).mean() <= 0.5
    gray = golden_diff("gifnet", weights, "gray.png", "vi.png")  # truncated by the authors
    assert set(np.unique(gray)) <= {0, 1} and gray.mean() <= 0.6
