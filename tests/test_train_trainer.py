"""The Trainer on generated data: steps, files, exact resume, non-finite losses.

Tiny FIFN, 32 px crops and, for the OCCO objective, VGG19 with random weights (explicitly:
pretrained weights are not available offline; the tests check mechanics, not quality).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from occo.data.io import write_image_atomic
from occo.data.pairing import pair_images
from occo.losses.objective import FusionObjective
from occo.losses.vgg import VGGFeatures
from occo.masks.store import (
    FORMAT,
    STORE_VERSION,
    ModalityMasks,
    PairMasks,
    write_h5_atomic,
    write_pair,
)
from occo.masks.store import open_mask_store as open_store
from occo.models.checkpoint import load_weights, read_weights_metadata
from occo.train.config import TrainConfig
from occo.train.state import DivergedError, TrainingError
from occo.train.trainer import Trainer

TINY_MODEL = {"widths": [4, 8, 8, 8], "heads": [1, 1, 1, 1]}


def make_dataset(
    root: Path, count: int = 8, size: tuple[int, int] = (40, 48), masks: bool = True
) -> Path:
    """Pairs of smooth images with a warm object, and (optionally) a mask store."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    entries = []
    for i in range(count):
        cy, cx = rng.integers(8, size[0] - 8), rng.integers(8, size[1] - 8)
        blob = (np.hypot(yy - cy, xx - cx) < 6).astype(np.float64)
        ir = 40 + 150 * blob + 20 * np.sin(xx / 5 + i)
        vi = (
            100
            + 60 * np.cos(yy / 4 + i)[..., None] * np.array([1.0, 0.8, 0.6])
            + 30 * blob[..., None]
        )
        write_image_atomic(root / "ir" / f"{i:02d}.png", np.clip(ir, 0, 255).astype(np.uint8))
        write_image_atomic(root / "vi" / f"{i:02d}.png", np.clip(vi, 0, 255).astype(np.uint8))
        mask_ir = blob.astype(np.uint8)
        mask_vi = np.roll(mask_ir, 3, axis=1)  # shared, infrared-only and visible-only parts
        entries.append(PairMasks(f"{i:02d}", ModalityMasks(mask_ir), ModalityMasks(mask_vi)))
    if masks:
        write_h5_atomic(
            root / "masks.h5",
            {"format": FORMAT, "version": STORE_VERSION},
            lambda h5: [write_pair(h5, e) for e in entries],
        )
    return root


def tiny_config(objective: str = "occo", **overrides) -> TrainConfig:
    values = dict(
        crop=32,
        batch_size=4,
        num_workers=0,
        epochs=2,
        log_every=1,
        tensorboard=False,
        val_every=0,
        model=TINY_MODEL,
        objective={"objective": objective, "max_points": 8},
    )
    values.update(overrides)
    return TrainConfig(**values)


_OBJECTIVES: dict[str, FusionObjective] = {}


def random_vgg_objective(config: TrainConfig) -> FusionObjective:
    """The OCCO objective over VGG19 with random weights, built once (it is frozen)."""
    key = repr(config.objective)
    if key not in _OBJECTIVES:
        torch.manual_seed(0)
        _OBJECTIVES[key] = FusionObjective(config.objective, VGGFeatures(random_init=True))
    return _OBJECTIVES[key]


def make_trainer(root: Path, out: Path, config: TrainConfig, **kwargs) -> Trainer:
    pairs = pair_images(root / "ir", root / "vi").pairs
    if config.uses_groups:
        kwargs.setdefault("objective", random_vgg_objective(config))
    return Trainer(
        config,
        pairs,
        out,
        mask_source=lambda: open_store(root / "masks.h5"),
        device="cpu",
        **kwargs,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_loss_decreases_on_a_fixed_batch_with_random_vgg(dataset: Path, tmp_path: Path) -> None:
    trainer = make_trainer(dataset, tmp_path / "run", tiny_config(lr=2e-3))
    batch = next(iter(trainer.loader))
    assert batch["vi"].shape == (4, 1, 32, 32) and "mask_vi" in batch
    assert len(set(batch["index"].tolist())) == 4  # CCL negatives come from other images
    losses = [trainer.train_step(batch) for _ in range(8)]
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < losses[0]


def test_fit_writes_weights_log_samples_and_validation(dataset: Path, tmp_path: Path) -> None:
    pairs = pair_images(dataset / "ir", dataset / "vi").pairs
    config = tiny_config(
        "pixel", max_steps=3, val_every=1, val_samples=1, val_metrics=("EN", "Qabf")
    )
    events = []
    trainer = Trainer(
        config,
        pairs,
        tmp_path / "run",
        val_pairs=pairs[:2],
        device="cpu",
        metadata={"trained_on": "generated"},
        on_event=lambda k, i: events.append(k),
    )
    result = trainer.fit()
    run = tmp_path / "run"
    assert result.state.step == 3 and not result.interrupted
    assert {
        "config.yaml",
        "checkpoint.pt",
        "last.safetensors",
        "best.safetensors",
        "log.jsonl",
    } <= {p.name for p in run.iterdir()}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3]
    assert {"ssim", "intensity", "texture"} <= set(records[0])
    validation = [r for r in records if r["event"] == "validation"]
    assert validation and np.isfinite(validation[0]["Qabf"])
    assert len(list((run / "samples").rglob("*.png"))) == 1
    meta = read_weights_metadata(result.last_weights)
    assert meta["trained_with"] == "objective=pixel" and meta["trained_on"] == "generated"
    assert TrainConfig.from_dict(json.loads(meta["train_config"])) == config
    model = load_weights(result.best_weights)
    assert model.config.widths == (4, 8, 8, 8)
    assert (
        TrainConfig.from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text()))
        == config
    )
    assert events[0] == "start" and events[-1] == "done" and "validation" in events


def test_resume_continues_exactly(dataset: Path, tmp_path: Path) -> None:
    # 8 images x 2 crops / batch 4 = 4 steps per epoch: the stop (2) and the end (6) cross an epoch.
    straight = make_trainer(dataset, tmp_path / "a", tiny_config(max_steps=6, lr=1e-3)).fit()
    make_trainer(dataset, tmp_path / "b", tiny_config(max_steps=2, lr=1e-3)).fit()
    resumed = make_trainer(
        dataset, tmp_path / "b", tiny_config(max_steps=6, lr=1e-3), resume=True
    ).fit()
    assert resumed.state.step == straight.state.step == 6 and resumed.state.epoch == 1
    a, b = load_file(straight.last_weights), load_file(resumed.last_weights)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    initial = make_trainer(dataset, tmp_path / "c", tiny_config("pixel")).model.state_dict()
    assert any(not torch.equal(initial[k], a[k]) for k in a)  # it did train


def test_resume_refuses_changes_that_break_exactness(dataset: Path, tmp_path: Path) -> None:
    make_trainer(dataset, tmp_path / "run", tiny_config("pixel", max_steps=1)).fit()
    with pytest.raises(TrainingError, match="cannot change crop"):
        make_trainer(dataset, tmp_path / "run", tiny_config("pixel", crop=16), resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        make_trainer(dataset, tmp_path / "none", tiny_config("pixel"), resume=True)


class FlakyObjective(nn.Module):
    """Pixel-like loss that is NaN on the calls listed in ``bad``."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, fused, vi, ir, regions=None):
        self.calls += 1
        loss = (fused - vi).square().mean()
        if self.calls in self.bad:
            loss = loss * float("nan")
        return loss, {"mse": loss}


def test_nonfinite_loss_is_skipped_logged_and_stops_a_diverged_run(
    dataset: Path, tmp_path: Path
) -> None:
    pairs = pair_images(dataset / "ir", dataset / "vi").pairs
    run = tmp_path / "flaky"
    result = Trainer(
        tiny_config("pixel", max_steps=4), pairs, run, device="cpu", objective=FlakyObjective({2})
    ).fit()
    assert result.state.step == 4 and result.state.skipped == 1
    skipped = [
        json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "nonfinite" in x
    ]
    assert [r["step"] for r in skipped] == [2] and skipped[0]["loss"] == "nan"

    trainer = Trainer(
        tiny_config("pixel", max_nonfinite=3),
        pairs,
        tmp_path / "bad",
        device="cpu",
        objective=FlakyObjective(set(range(1, 100))),
    )
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    with pytest.raises(DivergedError, match="not finite for 3 steps in a row"):
        trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update from a NaN step


def test_occo_objective_needs_masks(dataset: Path, tmp_path: Path) -> None:
    pairs = pair_images(dataset / "ir", dataset / "vi").pairs
    with pytest.raises(TrainingError, match="needs object masks"):
        Trainer(tiny_config("occo"), pairs, tmp_path / "r", device="cpu")


def test_amp_on_cpu_only_when_asked_and_bf16_steps_train(dataset: Path, tmp_path: Path) -> None:
    assert make_trainer(dataset, tmp_path / "a", tiny_config("pixel")).amp_dtype is None
    assert make_trainer(dataset, tmp_path / "b", tiny_config("pixel", amp=False)).amp_dtype is None
    # The pixel objective: bf16 of the contrastive term is tested in test_losses_objective,
    # and emulated bf16 (CPUs without AVX512-BF16) makes VGG19 steps slow.
    trainer = make_trainer(dataset, tmp_path / "c", tiny_config("pixel", amp=True, lr=2e-3))
    assert trainer.amp_dtype is torch.bfloat16
    conv = trainer.model.encoder_vi[1].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)  # default on CPU too
    batch = next(iter(trainer.loader))
    losses = [trainer.train_step(batch) for _ in range(6)]
    assert all(np.isfinite(losses)) and min(losses[-2:]) < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights


def test_amp_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="amp must be"):
        tiny_config(amp="yes")


def test_resume_accepts_a_moved_copy_of_the_vgg_file_and_refuses_other_weights(
    dataset: Path, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    state = VGGFeatures(random_init=True).features.state_dict()  # random, explicitly
    first, copy, other = tmp_path / "a.pth", tmp_path / "moved" / "b.pth", tmp_path / "c.pth"
    torch.save(state, first)
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    state["0.bias"] = state["0.bias"] + 1.0
    torch.save(state, other)

    def config(vgg: Path, steps: int) -> TrainConfig:
        return tiny_config(max_steps=steps).replace({"objective": {"vgg_weights": str(vgg)}})

    run = tmp_path / "run"
    make_trainer(dataset, run, config(first, 1), objective=None).fit()
    resumed = make_trainer(dataset, run, config(copy, 2), objective=None, resume=True)
    assert resumed.config.objective.vgg_weights == str(copy)
    assert resumed.fit().state.step == 2
    with pytest.raises(TrainingError, match="differ from those the run"):
        make_trainer(dataset, run, config(other, 3), objective=None, resume=True)


def test_range_margin_of_the_model_is_the_training_normalisation(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import occo.models.fifn as trainer_module  # FIFN's registry entry finishes its output

    margins: list[int] = []
    original = trainer_module.minmax_normalize

    def recording(x, *args, margin=0, **kwargs):
        margins.append(margin)
        return original(x, *args, margin=margin, **kwargs)

    monkeypatch.setattr(trainer_module, "minmax_normalize", recording)
    model = {**TINY_MODEL, "range_margin": 3}
    trainer = make_trainer(dataset, tmp_path / "run", tiny_config("pixel", model=model))
    trainer.train_step(next(iter(trainer.loader)))
    assert margins == [3]  # training normalises as inference will, for these weights
    trainer.fit()
    assert load_weights(tmp_path / "run" / "last.safetensors").config.range_margin == 3
