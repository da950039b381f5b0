"""DIDFuse: random-weight behaviour, its three merge modes, the two-file release, and its
authors' output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers.didfuse import DECODER_FILE, ENCODER_FILE, DIDFuse, DIDFuseConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff, randomize

TINY = DIDFuseConfig(channels=4)


@pytest.mark.parametrize("fusion", ["sum", "average", "l1_norm"])
def test_random_network_runs_tiles_and_exports(fusion):
    check_random_network("didfuse", DIDFuseConfig(channels=4, fusion=fusion))


def test_merge_modes_are_symmetric():
    for fusion in ("sum", "average", "l1_norm"):
        model = randomize(DIDFuse(DIDFuseConfig(channels=4, fusion=fusion)))
        a, b = torch.rand(1, 1, 12, 14), torch.rand(1, 1, 12, 14)
        with torch.inference_mode():
            torch.testing.assert_close(model(a, b), model(b, a))
    with pytest.raises(ValueError):
        DIDFuseConfig(fusion="max")


def _release_names(model: DIDFuse) -> dict[str, dict[str, torch.Tensor]]:
    names = {
        "encoder.stem": "cov1.cov1", "encoder.mid": "cov2.cov2", "encoder.base": "cov3.cov3",
        "encoder.detail": "cov4.cov4", "decoder.merge1": "cov5.cov5",
        "decoder.merge2": "cov6.cov6", "decoder.head": "cov7.cov7",
    }
    files: dict[str, dict[str, torch.Tensor]] = {ENCODER_FILE: {}, DECODER_FILE: {}}
    for key, value in model.state_dict().items():
        head = ".".join(key.split(".")[:2])
        file = ENCODER_FILE if head.startswith("encoder") else DECODER_FILE
        files[file][key.replace(head, names[head], 1)] = value
    return files


def test_two_file_release_reads_from_either_file_or_the_folder(tmp_path):
    spec = get_network("didfuse")
    model = randomize(DIDFuse(TINY))
    for name, state in _release_names(model).items():
        torch.save({"weight": state, "epoch": 3}, tmp_path / name)
    for path in (tmp_path, tmp_path / ENCODER_FILE, tmp_path / DECODER_FILE):
        config, state = spec.read_release(path)
        assert config == TINY
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    (tmp_path / DECODER_FILE).unlink()
    with pytest.raises(WeightsError, match="two files"):
        spec.read_release(tmp_path)


@pytest.mark.parametrize("vi_name, golden", [("vi.png", "gray.png"), ("vi_color.png", "color.png")])
def test_released_weights_match_the_authors_output(shared_dir, vi_name, golden):
    diff = np.abs(golden_diff("didfuse", shared_dir / "peers" / "didfuse", golden, vi_name))
    assert diff.max() <= 1 and diff.mean() <= 0.5
