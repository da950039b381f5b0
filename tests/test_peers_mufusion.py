"""MUFusion: the authors' overlapping-patch inference, its two output conventions, the
three released variants, and its authors' output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.peers.mufusion import MUFusion, MUFusionConfig
from occo.models.registry import get_network
from tests.peers_checks import check_random_network, golden_diff, randomize

TINY = MUFusionConfig(width=4, patch=16)


def test_random_network_runs_and_refuses_tiles():
    # Sizes below, at and above the patch, odd and even.
    check_random_network("mufusion", TINY, sizes=((9, 13), (16, 16), (37, 53)))
    spec = get_network("mufusion")
    assert spec.receptive_margin(TINY) is None and not spec.onnx


def test_patches_are_averaged_as_the_authors_do():
    model = randomize(MUFusion(TINY))
    vi, ir = torch.rand(1, 1, 30, 40), torch.rand(1, 1, 30, 40)
    with torch.inference_mode():
        out = model(vi, ir)
        # The authors' grid for 30 px with 16 px patches every 12: rows 0, 12 and 14.
        rows, cols = [0, 12, 14], [0, 12, 24, 24]
        total = torch.zeros(1, 1, 30, 40)
        count = torch.zeros(1, 1, 30, 40)
        for r in rows:
            for c in cols:
                total[..., r : r + 16, c : c + 16] += model.fuse_patches(
                    ir[..., r : r + 16, c : c + 16], vi[..., r : r + 16, c : c + 16]
                )
                count[..., r : r + 16, c : c + 16] += 1
    torch.testing.assert_close(out, total / count, atol=1e-3, rtol=1e-3)


def test_output_conventions():
    spec = get_network("mufusion")
    raw = torch.tensor([[[[-0.2, 0.1], [0.3, 0.6]]]])
    torch.testing.assert_close(spec.finish(raw, TINY), (raw + 0.2) / 0.8)
    clip = MUFusionConfig(width=4, patch=16, output="clip")
    # Unclamped: the colour script recolours this Y; the Fuser clamps (compose_unclamped).
    torch.testing.assert_close(spec.finish(raw, clip), raw)
    assert spec.compose_unclamped
    for bad in ({"output": "tanh"}, {"patch": 15}, {"overlap": 16, "patch": 16}):
        with pytest.raises(ValueError):
            MUFusionConfig(**bad)
    assert MUFusionConfig.from_json(clip.to_json()) == clip


def test_release_reader_names_the_variant_and_refuses_other_files(tmp_path, shared_dir):
    spec = get_network("mufusion")
    for name, variant in (
        ("ir_vis_models_TNO.model", "TNO"),
        ("ir_vis_models_RoadScene.model", "RoadScene"),
        ("medical_models_harvard.model", "harvard"),
    ):
        config, _ = spec.read_release(shared_dir / "peers" / "mufusion" / name)
        assert config.variant == variant
    other = tmp_path / "other.pth"
    torch.save({"conv1.1.weight": torch.zeros(4, 2, 3, 3)}, other)
    with pytest.raises(WeightsError, match="not MUFusion's released weights"):
        spec.read_release(other)


def test_released_weights_match_the_authors_output(shared_dir):
    weights = shared_dir / "peers" / "mufusion" / "ir_vis_models_TNO.model"
    diff = np.abs(golden_diff("mufusion", weights, "gray.png", "vi.png", inputs="mufusion"))
    assert diff.max() <= 1 and diff.mean() <= 0.5
