"""The paper's network ablations as FIFNConfig switches: parameters, weight files, fusion."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import read_image, write_image_atomic
from occo.models.checkpoint import load_weights, save_weights
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN, count_parameters
from tests.helpers import TINY_FIFN

SWITCHES = ("spatial_enhancement", "cross_channel", "cross_attention")


def _removed(width: int, switch: str) -> tuple[str, int]:
    """Module of a FIFB a switch removes and its parameter count at width C."""
    c = width
    return {
        # Conv1x1(C, C) and Conv1x1(C, 1), with biases.
        "spatial_enhancement": ("spatial_weights", c * c + c + c + 1),
        # Linear(4C, 4C) and Linear(4C, 2C), with biases.
        "cross_channel": ("channel_weights", 16 * c * c + 4 * c + 8 * c * c + 2 * c),
        # Two bias-free Linear(C, 2C) key/value projections.
        "cross_attention": ("attention", 2 * 2 * c * c),
    }[switch]


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_removes_exactly_its_parameters(switch):
    full = FIFN(TINY_FIFN)
    ablated = FIFN(dataclasses.replace(TINY_FIFN, **{switch: False}))
    assert ablated.config.ablations == (switch,)
    full_state, ablated_state = full.state_dict(), ablated.state_dict()
    # Everything the ablated network has, the full one has under the same name and shape.
    assert all(full_state[k].shape == v.shape for k, v in ablated_state.items())
    removed = set(full_state) - set(ablated_state)
    expected_count = 0
    prefixes = []
    for level, width in enumerate(TINY_FIFN.widths):
        module, count = _removed(width, switch)
        prefixes.append(f"fusion.{level}.{module}.")
        expected_count += count
    assert removed and all(k.startswith(tuple(prefixes)) for k in removed)
    assert all(any(k.startswith(p) for k in removed) for p in prefixes)
    assert count_parameters(full) - count_parameters(ablated) == expected_count


def test_release_network_counts():
    full = count_parameters(FIFN())
    assert full == 3_621_161 - sum(c * c + 2 * c + 1 for c in FIFNConfig().widths)
    none = FIFN(FIFNConfig(spatial_enhancement=False, cross_channel=False, cross_attention=False))
    removed = sum(_removed(c, s)[1] for c in FIFNConfig().widths for s in SWITCHES)
    assert count_parameters(none) == full - removed


def test_ablated_network_trains_every_parameter():
    config = dataclasses.replace(
        TINY_FIFN, spatial_enhancement=False, cross_channel=False, cross_attention=False
    )
    torch.manual_seed(0)
    model = FIFN(config).train()
    vi, ir = torch.rand(2, 2, 1, 24, 40).unbind(0)
    out = model(vi, ir)
    assert out.shape == (2, 1, 24, 40) and bool(torch.isfinite(out).all())
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_old_weight_files_load_as_the_full_network(tmp_path):
    torch.manual_seed(0)
    model = FIFN(TINY_FIFN).eval()
    old_config = {"widths": list(TINY_FIFN.widths), "heads": list(TINY_FIFN.heads)}
    old_config["in_channels"] = 1  # what weight files held before the switches existed
    path = tmp_path / "old.safetensors"
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(
        tensors, str(path), metadata={"format": "occo-fifn", "config": json.dumps(old_config)}
    )
    loaded = load_weights(path)
    assert loaded.config == TINY_FIFN and loaded.config.ablations == ()
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loaded(x, x), model(x, x))


def test_fuse_runs_an_ablated_network(tmp_path):
    config = dataclasses.replace(TINY_FIFN, cross_attention=False, spatial_enhancement=False)
    torch.manual_seed(1)
    weights = tmp_path / "ablated.safetensors"
    save_weights(weights, FIFN(config).eval())
    assert load_weights(weights).config == config  # the switches travel in the metadata
    rng = np.random.default_rng(0)
    write_image_atomic(tmp_path / "ir" / "a.png", rng.integers(0, 256, (40, 52), np.uint8))
    write_image_atomic(tmp_path / "vi" / "a.png", rng.integers(0, 256, (40, 52, 3), np.uint8))
    args = [tmp_path / "ir", tmp_path / "vi", tmp_path / "out", "--weights", weights]
    result = CliRunner().invoke(app, ["fuse", *map(str, args), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "out" / "a.png").shape == (40, 52, 3)
