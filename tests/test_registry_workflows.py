"""The network registry and the fuse workflow as library calls: a second network (defined
here) goes through training, fusing, exact tiling and ONNX export on FIFN's code paths;
pixel settings decide resume; torchrun shares the pairs; bare-name imports are refused."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from occo.data.io import read_image
from occo.models.checkpoint import load_weights, save_weights
from occo.models.fuser import Fuser
from occo.models.fusing import (
    FuseSettings,
    FuseSetupError,
    fuse_folder,
    pixel_defaults,
    pixel_fields,
    provenance,
)
from occo.models.registry import (
    JsonConfig,
    NetworkSpec,
    fold_conv_batchnorm,
    get_network,
    register_network,
    spec_of,
)
from tests.helpers import random_fifn, write_pairs

ROOT = Path(__file__).resolve().parents[1]


# --- a second network, registered by the test -----------------------------------------


@dataclass(frozen=True)
class TinyNetConfig(JsonConfig):
    """A two-conv local fusion network."""

    width: int = 4
    """Channels of the hidden layer."""


class TinyNet(nn.Module):
    network_name = "tinynet"

    def __init__(self, config: TinyNetConfig) -> None:
        super().__init__()
        self.config = config
        self.body = nn.Sequential(
            nn.Conv2d(2, config.width, 3, padding=1),
            nn.BatchNorm2d(config.width),
            nn.ReLU(),
            nn.Conv2d(config.width, 1, 3, padding=1),
        )

    def forward(self, vi_y, ir):
        return self.body(torch.cat([vi_y, ir], dim=1))


TINY_SPEC = register_network(
    NetworkSpec(
        name="tinynet",
        config_class=TinyNetConfig,
        build=TinyNet,
        finish=lambda raw, config: torch.sigmoid(raw),
        receptive_margin=lambda config: 2,
        fold=fold_conv_batchnorm,
        memory_scale=lambda config, element: 0.01,
    )
)


def _tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(TinyNetConfig())
    with torch.no_grad():  # BatchNorm statistics that folding must carry over
        net.body[1].running_mean.uniform_(-0.2, 0.2)
        net.body[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_a_second_network_fuses_tiles_exactly_and_round_trips_its_weights(tmp_path):
    net = _tiny_net()
    assert spec_of(net) is get_network("TinyNet")
    path = tmp_path / "tiny.safetensors"
    save_weights(path, net, {"source": "test"})
    loaded = load_weights(path)
    assert isinstance(loaded, TinyNet) and loaded.config == net.config
    with pytest.raises(Exception, match="holds tinynet weights, not fifn"):
        load_weights(path, network="fifn")
    vi, ir = torch.rand(2, 3, 70, 90), torch.rand(2, 1, 70, 90)
    whole = Fuser(loaded, batch_size=2).fuse(vi, ir)
    tiled = Fuser(loaded, batch_size=2, tile=16).fuse(vi, ir)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    # The Fuser runs a folded copy: the same output as the network itself in eval mode.
    reference = torch.sigmoid(net(0.299 * vi[:, :1] + 0.587 * vi[:, 1:2] + 0.114 * vi[:, 2:], ir))
    fused_y = Fuser(loaded).raw(0.299 * vi[:, :1] + 0.587 * vi[:, 1:2] + 0.114 * vi[:, 2:], ir)
    torch.testing.assert_close(torch.sigmoid(fused_y), reference, atol=1e-5, rtol=1e-5)


def test_a_second_network_trains_one_step_and_fuses_a_folder(tmp_path):
    from occo.data.pairing import pair_images
    from occo.train import TrainConfig, Trainer

    ir_dir, vi_dir = write_pairs(tmp_path / "d", sizes=[(40, 48)] * 6)
    config = TrainConfig(network="tinynet", crop=32, batch_size=2, num_workers=0, max_steps=1,
                         log_every=1, tensorboard=False, val_every=0,
                         objective={"objective": "pixel"})  # fmt: skip
    assert isinstance(config.model, TinyNetConfig)
    pairs = pair_images(ir_dir, vi_dir).pairs
    trainer = Trainer(config, pairs, tmp_path / "run", device="cpu")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = load_weights(tmp_path / "run" / "last.safetensors")
    assert isinstance(after, TinyNet)
    assert any(not torch.equal(before[k], v) for k, v in after.state_dict().items())
    out = tmp_path / "fused"
    result = fuse_folder(
        ir_dir,
        vi_dir,
        out,
        FuseSettings(method="tinynet", weights=tmp_path / "run" / "last.safetensors", device="cpu"),
    )
    assert result.fused == 6 and not result.failures
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["provenance"]["method"] == "tinynet"
    assert "occo train run run, step 1" in manifest["weights_source"]
    # Without --method the weight file names its network; naming another one is refused.
    inferred = fuse_folder(
        ir_dir, vi_dir, tmp_path / "inferred",
        FuseSettings(weights=tmp_path / "run" / "last.safetensors", device="cpu"),
    )  # fmt: skip
    assert inferred.fused == 6
    record = json.loads((tmp_path / "inferred" / "occo-fuse.json").read_text())
    assert record["provenance"]["method"] == "tinynet"
    with pytest.raises(Exception, match="holds tinynet weights, not fifn"):
        fuse_folder(
            ir_dir,
            vi_dir,
            tmp_path / "other",
            FuseSettings(method="fifn", weights=tmp_path / "run" / "last.safetensors", device="cpu"),
        )


def test_a_second_network_exports_to_onnx_through_the_same_code(tmp_path):
    pytest.importorskip("onnxruntime")
    from occo.models.export import onnx_from_weights
    from occo.models.onnx_engine import OnnxEngine

    net = _tiny_net(1)
    payload, report = onnx_from_weights(net, check_shapes=[(1, 24, 31)])
    engine = OnnxEngine(payload)
    assert engine.network_name == "tinynet" and engine.config == net.config
    vi, ir = torch.rand(1, 1, 33, 29), torch.rand(1, 1, 33, 29)
    torch.testing.assert_close(
        Fuser(engine).fuse(vi, ir), Fuser(net).fuse(vi, ir), atol=1e-4, rtol=0
    )


def test_no_isinstance_fifn_left_in_library_code():
    offenders = []
    for folder in ("models", "train", "eval", "data", "masks", "losses", "occo_cli"):
        for path in (ROOT / folder).rglob("*.py"):
            if "isinstance(" in (text := path.read_text()) and ", FIFN)" in text:
                offenders.append(str(path))
    assert not offenders


# --- settings, provenance and resume ----------------------------------------------------

#: A value other than the default for every pixel-changing setting.
_OTHER = {"method": "tinynet", "backend": "onnxruntime", "amp": True, "tile": 64,
          "ir16": "minmax", "authors_output": True, "align": True}  # fmt: skip


def test_every_fuse_setting_is_classified_and_each_pixel_setting_changes_the_provenance():
    for f in dataclasses.fields(FuseSettings):
        assert "pixels" in f.metadata, f"FuseSettings.{f.name} must say whether it changes pixels"
    assert set(pixel_fields()) == set(_OTHER), "a new pixel setting needs a value in _OTHER"
    base = provenance(FuseSettings(), "0" * 64, {})
    assert base == {"occo_version": base["occo_version"], "weights_sha256": "0" * 64,
                    **pixel_defaults()}  # fmt: skip
    for name, value in _OTHER.items():
        changed = provenance(dataclasses.replace(FuseSettings(), **{name: value}), "0" * 64, {})
        assert changed[name] != base[name], name
    for f in dataclasses.fields(FuseSettings):
        if not f.metadata["pixels"]:
            assert f.name not in base


def test_a_rerun_differing_only_in_a_pixel_setting_is_refused(tmp_path):
    ir_dir, vi_dir = write_pairs(tmp_path / "d")
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, _tiny_net())
    settings = FuseSettings(method="tinynet", weights=weights, device="cpu")
    out = tmp_path / "out"
    assert fuse_folder(ir_dir, vi_dir, out, settings).fused == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = fuse_folder(ir_dir, vi_dir, out, settings)
    assert again.fused == 0 and again.skipped == 3
    for name, value in (("ir16", "minmax"), ("authors_output", True), ("tile", 64)):
        with pytest.raises(Exception, match=f"other settings .*{name}"):
            fuse_folder(ir_dir, vi_dir, out, dataclasses.replace(settings, **{name: value}))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_bad_settings_are_one_line_errors(tmp_path):
    ir_dir, vi_dir = write_pairs(tmp_path / "d")
    with pytest.raises(FuseSetupError, match="--ir16 must be one of"):
        fuse_folder(ir_dir, vi_dir, tmp_path / "o", FuseSettings(ir16="log"))
    with pytest.raises(Exception, match="unknown network 'nope'"):
        fuse_folder(ir_dir, vi_dir, tmp_path / "o", FuseSettings(method="nope"))
    assert not (tmp_path / "o" / "occo-fuse.json").exists()


# --- torchrun -----------------------------------------------------------------------------


def test_torchrun_two_processes_fuse_what_one_process_fuses(tmp_path):
    ir_dir, vi_dir = write_pairs(tmp_path / "d", sizes=[(30, 41)] * 3 + [(27, 35)] * 2)
    weights = tmp_path / "tiny.safetensors"
    from occo.models.config import FIFNConfig

    save_weights(weights, random_fifn(0, FIFNConfig(widths=(4, 8), heads=(1, 1))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    common = [str(ir_dir), str(vi_dir)]
    options = ["--weights", str(weights), "--device", "cpu", "--batch-size", "2", "-q"]
    one = subprocess.run([sys.executable, "-m", "occo", "fuse", *common, str(tmp_path / "one"),
                          *options], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "occo", "fuse", *common,
                          str(tmp_path / "two"), *options], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "by 2 processes" in two.stdout
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(names) == 5
    for name in names:
        np.testing.assert_array_equal(read_image(tmp_path / "two" / name),
                                      read_image(tmp_path / "one" / name))  # fmt: skip
    manifest = json.loads((tmp_path / "two" / "occo-fuse.json").read_text())
    assert manifest["pairs"] == 5 and manifest["settings"]["world_size"] == 2
    # A rerun under torchrun resumes the same way: nothing left to do.
    again = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc-per-node", "2", "-m", "occo", "fuse", *common,
                            str(tmp_path / "two"), *options], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0 and "5 already there" in again.stdout


# --- imports ------------------------------------------------------------------------------


def test_a_bare_subpackage_import_from_the_root_fails_with_one_line():
    for name in ("models", "train", "eval"):
        run = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode != 0
        assert f"ImportError: import occo.{name}, not {name}" in run.stderr.splitlines()[-1]


def test_workflows_import_from_their_packages():
    from occo.eval import compute_metrics
    from occo.models import Fuser as F
    from occo.models import FuseSettings as S
    from occo.models import fuse_folder as ff
    from occo.train import TrainConfig, Trainer

    assert callable(compute_metrics) and F is Fuser and S is FuseSettings and ff is fuse_folder
    assert Trainer.__name__ == "Trainer" and TrainConfig().network == "fifn"


def test_occo_methods_lists_every_registered_network():
    from typer.testing import CliRunner

    from occo.cli.app import app
    from occo.models.registry import network_names

    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(network_names()) and "tinynet" in rows
    fifn = rows["fifn"]
    assert fifn["parameters"] > 0 and 50 < fifn["gflops_640x480"] < 500
    assert fifn["tiling"] == "exact (80 px margin)" and fifn["onnx"]
    assert rows["tinynet"]["parameters"] == sum(p.numel() for p in _tiny_net().parameters())


def test_every_registered_network_runs_at_the_device_and_dtype_asked(device, dtype):
    """Each network (tiny configs where the defaults are large) takes odd sizes in
    ``--device``/``--dtype`` and returns a finite map of the input's size."""
    from occo.models.config import FIFNConfig
    from occo.models.registry import network_names

    tiny = {"fifn": FIFNConfig(widths=(4, 8), heads=(1, 1)), "tinynet": TinyNetConfig(width=2)}
    for name in network_names():
        spec = get_network(name)
        torch.manual_seed(0)
        net = spec.make(tiny.get(name)).eval().to(device, dtype)
        size = max(33, spec.min_size(net.config))
        vi, ir = (torch.rand(1, 1, size, size + 2, device=device, dtype=dtype) for _ in range(2))
        with torch.no_grad():
            fused = spec.finish(net(vi, ir), net.config)
        assert fused.shape == (1, 1, size, size + 2), name
        assert fused.dtype == dtype and torch.isfinite(fused).all(), name


def test_folder_fusion_stops_at_the_first_full_disk_error(tmp_path, monkeypatch):
    import errno

    import occo.models.fuser as fuser_module

    ir_dir, vi_dir = write_pairs(tmp_path / "d", sizes=[(30, 41)] * 6)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, _tiny_net())
    written: list[str] = []

    def full_disk(path, image, text=None):
        written.append(Path(path).name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fuser_module, "write_image_atomic", full_disk)
    settings = FuseSettings(method="tinynet", weights=weights, device="cpu", batch_size=1, workers=1)
    result = fuse_folder(ir_dir, vi_dir, tmp_path / "out", settings)
    assert result.stopped is not None and "No space left" in result.stopped
    assert result.fused == 0 and len(written) < 6  # not every pair tried after the first
