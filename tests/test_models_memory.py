"""Memory estimates, budgets and automatic tiling in `occo fuse`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import read_image, write_image_atomic
from occo.models import memory
from occo.models.checkpoint import save_weights
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN

GB = 1024**3


def test_estimates_grow_with_pixels_batch_and_width():
    small, large = memory.estimate_bytes(512, 512), memory.estimate_bytes(1024, 1024)
    assert large == pytest.approx(4 * small, rel=1e-6)
    assert memory.estimate_bytes(512, 512, batch=2) == 2 * small
    assert memory.estimate_bytes(512, 512, TINY_FIFN) < small / 5  # fewer feature planes
    tiled = memory.estimate_bytes(4000, 6000, tile=1024)
    assert tiled < memory.estimate_bytes(4000, 6000) / 3


def test_choose_tile_prefers_whole_images_then_single_pairs_then_large_tiles():
    whole = memory.choose_tile(480, 640, budget=8 * GB, batch=4)
    assert (whole.tile, whole.batch, whole.fits) == (None, 4, True)
    single = memory.choose_tile(480, 640, budget=memory.estimate_bytes(480, 640) + 1, batch=4)
    assert (single.tile, single.batch) == (None, 1)
    for budget in (20, 12, 8):
        plan = memory.choose_tile(4000, 6000, budget=budget * GB)
        assert plan.fits and plan.tile is not None and plan.need <= budget * GB
        bigger = memory.TILE_CANDIDATES[memory.TILE_CANDIDATES.index(plan.tile) - 1]
        assert memory.estimate_bytes(4000, 6000, tile=bigger) > budget * GB  # the largest
    hopeless = memory.choose_tile(4000, 6000, budget=GB)
    assert not hopeless.fits and hopeless.tile == memory.TILE_CANDIDATES[-1]


def test_budget_sources(tmp_path, monkeypatch):
    assert memory.parse_size("8G") == 8 * GB and memory.parse_size("1.5GiB") == int(1.5 * GB)
    assert memory.parse_size("512m") == 512 * 1024**2 and memory.parse_size("1000") == 1000
    with pytest.raises(ValueError, match="not a memory size"):
        memory.parse_size("lots")
    (tmp_path / "memory.max").write_text("4294967296\n")
    (tmp_path / "memory.current").write_text("1073741824\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 536870912\n")
    assert memory.cgroup_available(tmp_path) == 3 * GB + GB // 2
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_available(tmp_path) is None
    monkeypatch.setenv(memory.LIMIT_ENV, "2G")
    budget = memory.memory_budget("cpu")
    assert memory.LIMIT_ENV in budget.source
    assert budget.bytes == pytest.approx(
        (2 * GB - memory.resident_bytes()) * memory.SAFETY, rel=0.05
    )


def _pairs(tmp_path, size=(200, 300), count=2):
    rng = np.random.default_rng(0)
    for i in range(count):
        for name in ("ir", "vi"):
            write_image_atomic(tmp_path / name / f"{i}.png", rng.integers(0, 256, size, np.uint8))
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval())
    return weights


def _fuse(tmp_path, weights, out, *extra):
    return CliRunner().invoke(
        app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"), str(tmp_path / out),
              "--weights", str(weights), "--device", "cpu", "--batch-size", "2", *extra],
    )  # fmt: skip


def test_fuse_tiles_automatically_when_a_pair_would_not_fit(tmp_path, monkeypatch):
    weights = _pairs(tmp_path)
    # A tiny network needs little memory; make windows cheap and the budget tight, so that
    # 300x200 pairs do not fit whole but do in 128 px tiles.
    monkeypatch.setattr(memory, "IMAGE_BYTES_PER_PX", 0)
    monkeypatch.setattr(memory, "WINDOW_BYTES_PER_PX", memory.UNTILED_BYTES_PER_PX)
    tight = memory.estimate_bytes(200, 300, TINY_FIFN, tile=128, queued=2)
    assert tight < memory.estimate_bytes(200, 300, TINY_FIFN, queued=2)
    import occo.models.memory as module

    monkeypatch.setattr(module, "memory_budget", lambda device: module.MemoryBudget(tight, "test"))
    result = _fuse(tmp_path, weights, "auto")
    assert result.exit_code == 0, result.output
    assert "300x200 pairs need about" in result.output and "in 128 px tiles" in result.output
    assert result.output.count("px tiles") == 1  # one note per size
    settings = json.loads((tmp_path / "auto" / "occo-fuse.json").read_text())["settings"]
    assert settings["memory_plans"] == {"300x200": {"tile": 128, "batch": 1}}
    forced = _fuse(tmp_path, weights, "forced", "--tile", "128")  # --tile decides by itself
    assert forced.exit_code == 0 and "px tiles" not in forced.output
    for name in ("0.png", "1.png"):
        a = read_image(tmp_path / "auto" / name).astype(int)
        assert np.abs(a - read_image(tmp_path / "forced" / name)).max() <= 1


def test_bad_memory_limit_is_one_line(tmp_path, monkeypatch):
    weights = _pairs(tmp_path, size=(16, 20), count=1)
    monkeypatch.setenv(memory.LIMIT_ENV, "plenty")
    result = _fuse(tmp_path, weights, "out")
    assert result.exit_code == 1 and "not a memory size: 'plenty'" in result.output


def test_default_config_constants_are_the_measured_network():
    # The constants were measured with the released network: keep them tied to it.
    assert memory._activation_scale(FIFNConfig(), torch.float32) == 1.0
    assert memory._activation_scale(FIFNConfig(), torch.bfloat16) == 0.5
