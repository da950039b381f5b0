"""Training data and config: salient crops, CCL batch composition, DDP shares, TrainConfig."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from occo.data.io import write_image_atomic
from occo.data.training import (
    FusionCropDataset,
    GroupedBatchSampler,
    TrainingDataError,
    compose_batches,
    rank_share,
    salient_crop_origin,
    split_holdout,
)
from occo.train.config import ConfigError, TrainConfig, load_config_file


class DictMasks:
    """A mask reader over a dict, standing in for the HDF5 store."""

    def __init__(self, masks: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.masks = masks

    def stems(self) -> list[str]:
        return sorted(self.masks)

    def shapes(self, stem: str) -> tuple[tuple[int, int], tuple[int, int]]:
        return tuple(m.shape for m in self.masks[stem])  # type: ignore[return-value]

    def read(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        return self.masks[stem]


def _pairs(
    tmp_path: Path, count: int, size: tuple[int, int] = (40, 52)
) -> list[tuple[str, Path, Path]]:
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(count):
        ir, vi = tmp_path / "ir" / f"{i:02d}.png", tmp_path / "vi" / f"{i:02d}.png"
        write_image_atomic(ir, rng.integers(0, 256, size, dtype=np.uint8))
        write_image_atomic(vi, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        pairs.append((f"{i:02d}", ir, vi))
    return pairs


def test_batches_hold_distinct_images_and_are_reproducible() -> None:
    batches = compose_batches(num_images=13, batch_size=12, epoch=3, seed=5, crops_per_image=2)
    assert len(batches) == 2  # 26 crops: two full batches of distinct images
    for batch in batches:
        assert len({index for _, index, _ in batch}) == 12
    assert batches == compose_batches(13, 12, epoch=3, seed=5)
    assert batches != compose_batches(13, 12, epoch=4, seed=5)
    every = compose_batches(30, 6, epoch=0)
    used = [key for batch in every for key in batch]
    assert len(used) == len(set(used)) == 60  # every crop of the epoch, each once


def test_rank_shares_partition_the_batch_and_keep_groups() -> None:
    batch = [(0, i, 0) for i in range(12)]
    shares = [rank_share(batch, groups=2, rank=r, world_size=3) for r in range(3)]
    assert sorted(k for share in shares for k in share) == sorted(batch)
    # groups of 6: rank 1 takes positions 2-3 of each group
    assert [k[1] for k in shares[1]] == [2, 3, 8, 9]
    with pytest.raises(ValueError, match="cannot be split"):
        rank_share(batch, groups=4, rank=0, world_size=2)


def test_sampler_resume_and_errors() -> None:
    sampler = GroupedBatchSampler(20, 4, groups=4, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start(3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) - 3
    with pytest.raises(TrainingDataError, match="distinct images"):
        GroupedBatchSampler(3, 4, groups=4)
    with pytest.raises(ValueError, match="multiple"):
        GroupedBatchSampler(20, 6, groups=4)


def test_salient_crop_contains_mask_pixels_even_after_failed_tries() -> None:
    mask = np.zeros((200, 300), np.float32)
    mask[190, 295] = 1  # a single object pixel in a corner: random tries almost never hit it
    for seed in range(20):
        top, left = salient_crop_origin(
            mask, mask.shape, 32, tries=2, rng=np.random.default_rng(seed)
        )
        assert mask[top : top + 32, left : left + 32].any()
        assert 0 <= top <= 200 - 32 and 0 <= left <= 300 - 32


def test_dataset_crops_values_masks_and_determinism(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path, 3)
    masks = {}
    for stem, _, _ in pairs:
        m_ir, m_vi = np.zeros((40, 52), np.uint8), np.zeros((40, 52), np.uint8)
        m_ir[30:34, 40:44], m_vi[31:35, 45:50] = 1, 255  # any non-zero counts as object
        masks[stem] = (m_ir, m_vi)
    dataset = FusionCropDataset(pairs, crop=16, mask_source=lambda: DictMasks(masks), seed=2)
    item = dataset[(0, 1, 0)]
    assert set(item) == {"vi", "ir", "mask_vi", "mask_ir", "index"}
    assert item["vi"].shape == (1, 16, 16) and item["vi"].dtype.is_floating_point
    assert 0 <= float(item["ir"].min()) and float(item["ir"].max()) <= 1
    assert float(item["mask_vi"].max() + item["mask_ir"].max()) >= 1  # salient
    assert set(item["mask_vi"].unique().tolist()) <= {0.0, 1.0}
    again = dataset[(0, 1, 0)]
    assert all((again[k] == item[k]).all() for k in item)
    # a crop larger than the image is reflect-padded, masks zero-padded
    big = FusionCropDataset(pairs, crop=48)[(0, 0, 1)]
    assert big["ir"].shape == (1, 48, 48)


def test_dataset_rejects_misaligned_pair_and_mismatched_mask(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path, 1)
    write_image_atomic(pairs[0][2], np.zeros((30, 30), np.uint8))
    with pytest.raises(TrainingDataError, match="misaligned"):
        FusionCropDataset(pairs, crop=16)[(0, 0, 0)]
    pairs = _pairs(tmp_path / "b", 1)
    wrong = {"00": (np.ones((10, 10), np.uint8), np.ones((10, 10), np.uint8))}
    with pytest.raises(TrainingDataError, match="regenerate the masks"):
        FusionCropDataset(pairs, crop=16, mask_source=lambda: DictMasks(wrong))[(0, 0, 0)]


def test_holdout_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    pairs = [(f"{i}", Path(f"{i}"), Path(f"{i}")) for i in range(40)]
    train, held = split_holdout(pairs, 0.1, 16, seed=0)
    assert len(held) == 4 and len(train) == 36 and not {p[0] for p in train} & {p[0] for p in held}
    assert split_holdout(pairs, 0.1, 16, seed=0) == (train, held)
    assert split_holdout(pairs, 0.0, 16)[1] == []


def test_config_defaults_yaml_overrides_and_validation(tmp_path: Path) -> None:
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.crop, cfg.lr, cfg.objective.groups) == (12, 256, 1e-4, 4)
    path = tmp_path / "c.yaml"
    path.write_text(
        "crop: 64\nmodel: {widths: [4, 8], heads: [1, 1]}\nobjective: {objective: pixel}\n"
    )
    resolved = cfg.replace(load_config_file(path)).replace({"lr": 3e-4, "seed": None})
    assert resolved.crop == 64 and resolved.model.widths == (4, 8) and resolved.lr == 3e-4
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved  # YAML round trip
    assert resolved.batch_groups == 1
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"bach_size": 4})
    with pytest.raises(ConfigError, match="multiple of objective.groups"):
        TrainConfig(batch_size=10)
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=0)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(path)
