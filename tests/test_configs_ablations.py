"""configs/ablations/: every file loads with `occo train --config` and is the row it names;
presets through the training config and a few trainer steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from occo.data.pairing import pair_images
from occo.losses.objective import PRESETS, FusionObjective
from occo.losses.vgg import VGGFeatures
from occo.masks.store import open_mask_store
from occo.train.config import TrainConfig, load_config_file
from occo.train.trainer import Trainer
from tests.test_train_trainer import TINY_MODEL, make_dataset

ABLATIONS = Path(__file__).resolve().parents[1] / "configs" / "ablations"
FILES = sorted(ABLATIONS.glob("*.yaml"))


def _load(path: Path) -> TrainConfig:
    """As `occo train --config PATH` resolves it: defaults, then the file."""
    return TrainConfig().replace(load_config_file(path))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_file_loads_and_is_its_row(path):
    cfg = _load(path)
    assert cfg.to_dict() == TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())).to_dict()
    default = TrainConfig()
    obj = cfg.objective
    name = path.stem
    if name.startswith("table6_"):
        w1, w2 = float(name.split("_")[2]), float(name.split("_")[4])
        assert (obj.objective, obj.w_shared_vi, obj.w_shared_ir) == ("occo", w1, w2)
        assert w1 + w2 == 1.0
    elif name.startswith("table7_"):
        assert (obj.objective, obj.w_con) == ("occo", float(name.split("_")[2]))
    elif name.startswith("fifn_no_"):
        assert cfg.model.ablations == (name.removeprefix("fifn_no_"),)
        assert cfg.objective == default.objective
    else:
        assert obj.objective == name and name in PRESETS
        assert cfg.model == default.model
    # Nothing but the objective or the network differs from the paper's run.
    changed = {f.split(".")[0] for f in default.changed_fields(cfg)}
    assert changed <= {"objective", "model"}


def test_the_files_cover_tables_6_7_8_and_the_network():
    stems = {p.stem for p in FILES}
    assert len([s for s in stems if s.startswith("table6_")]) == 5
    assert {s for s in stems if s.startswith("table7_")} == {
        "table7_w6_0.1",
        "table7_w6_1",
        "table7_w6_10",
        "table7_w6_100",
    }
    assert {f"model{i}" for i in range(1, 6)} | {"occo", "coconet"} <= stems
    assert {
        "fifn_no_spatial_enhancement",
        "fifn_no_cross_channel",
        "fifn_no_cross_attention",
    } <= stems


def test_command_line_preset_overrides_a_config_file():
    cfg = _load(ABLATIONS / "model3.yaml")
    assert cfg.objective.con_space == "euclidean"
    # `--objective coconet --config model3.yaml`: the command line names another preset.
    cfg = cfg.replace({"objective": {"objective": "coconet", "vgg_weights": None}})
    assert (cfg.objective.contrastive, cfg.objective.con_space, cfg.objective.groups) == (
        "coupled",
        "l1",
        3,
    )
    assert cfg.uses_groups and cfg.batch_groups == 3 and cfg.needs_masks
    pixel = TrainConfig().replace({"objective": {"objective": "pixel"}})
    assert not pixel.needs_masks and not pixel.uses_groups and pixel.batch_groups == 1
    model4 = TrainConfig().replace({"objective": {"objective": "model4"}, "batch_size": 5})
    assert model4.needs_masks and not model4.uses_groups  # any batch size


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), count=6)


@pytest.mark.parametrize("preset, batch", [("model4", 2), ("coconet", 3)])
def test_trainer_steps_with_a_preset_and_an_ablated_network(dataset, tmp_path, preset, batch):
    cfg = TrainConfig(
        crop=32,
        batch_size=batch,
        num_workers=0,
        max_steps=2,
        log_every=1,
        tensorboard=False,
        val_every=0,
        model={**TINY_MODEL, "cross_attention": False},
        objective={"objective": preset},
    )
    objective = None
    if cfg.objective.needs_vgg:  # random weights, explicitly: mechanics, not quality
        torch.manual_seed(0)
        objective = FusionObjective(cfg.objective, VGGFeatures(random_init=True))
    trainer = Trainer(
        cfg,
        pair_images(dataset / "ir", dataset / "vi").pairs,
        tmp_path / "run",
        mask_source=lambda: open_mask_store(dataset / "masks.h5"),
        device="cpu",
        objective=objective,
    )
    result = trainer.fit()
    assert result.state.step == 2 and result.state.skipped == 0
    saved = TrainConfig.from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert saved.objective == cfg.objective and saved.model.ablations == ("cross_attention",)
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"con"' in log and ('"mse"' in log) == (preset == "coconet")
