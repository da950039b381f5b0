"""``occo train`` end to end: clear errors, Ctrl-C saves and resumes, torchrun (2 CPU processes).

The subprocess tests run the real command on generated pairs with a tiny FIFN and the pixel
objective (no VGG19 weights, no masks needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from occo.data.io import write_image_atomic
from occo.train.state import load_checkpoint
from tests.helpers import TINY_TRAIN_YAML

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = TINY_TRAIN_YAML


def _dataset(root: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:36, 0:44]
    for i in range(count):
        base = 120 + 60 * np.sin(xx / (3 + i)) * np.cos(yy / 5)
        write_image_atomic(
            root / "ir" / f"{i}.png",
            np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8),
        )
        write_image_atomic(root / "vi" / f"{i}.png", np.clip(255 - base, 0, 255).astype(np.uint8))
    (root / "tiny.yaml").write_text(TINY_YAML)
    return root


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _occo(*args: str) -> list[str]:
    return [sys.executable, "-m", "occo", "train", *args]


def _steps(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "step"]


def test_missing_masks_is_a_clear_error_unless_pixel(tmp_path: Path) -> None:
    from occo.cli.app import app

    data = _dataset(tmp_path / "d", count=2)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "no mask store" in result.output and "--objective pixel" in result.output
    result = CliRunner().invoke(app, ["train", str(data), "--objective", "pixl"])
    assert result.exit_code == 1 and "--objective must be one of" in result.output


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_exits_cleanly_and_resumes(tmp_path: Path) -> None:
    data, run = _dataset(tmp_path / "d"), tmp_path / "run"
    args = [
        str(data),
        "--objective",
        "pixel",
        "--config",
        str(data / "tiny.yaml"),
        "--out",
        str(run),
        "--epochs",
        "10000",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    # Its own session: Ctrl-C reaches the whole process group (main and loader worker), as in a terminal.
    proc = subprocess.Popen(
        _occo(*args),
        cwd=tmp_path,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _steps(run) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _steps(run), proc.communicate(timeout=30)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "stopped at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    step = load_checkpoint(run / "checkpoint.pt")["state"]["step"]
    assert step >= 1 and (run / "last.safetensors").is_file()
    done = subprocess.run(
        _occo(*args[:-6], "--resume", "--max-steps", str(step + 1), "--workers", "0"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert _steps(run)[-1]["step"] == step + 1
    assert f"resuming {run} at step {step} of {step + 1}" in done.stderr
    assert f"trained 1 step (step {step + 1})" in done.stdout
    again = subprocess.run(
        _occo(*args[:-6], "--resume", "--max-steps", str(step + 1), "--workers", "0"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"nothing to train: the run is already at step {step + 1}" in again.stdout


@pytest.mark.slow
def _ccl_inputs(data: Path, tmp_path: Path) -> list[str]:
    """A label-map mask store and a random VGG19 file, for the full objective from the CLI."""
    from safetensors.torch import save_file

    from occo.cli.app import app
    from occo.losses.vgg import VGGFeatures

    for image in (data / "ir").iterdir():
        label = np.zeros((36, 44), np.uint8)
        label[4 + int(image.stem) : 26, 6:30] = 1
        write_image_atomic(data / "labels" / image.name, label)
    result = CliRunner().invoke(
        app, ["masks", "gen", str(data), "--labels", str(data / "labels"), "--classes", "1"]
    )
    assert result.exit_code == 0, result.output
    torch.manual_seed(0)
    vgg = VGGFeatures(random_init=True)  # random weights, explicitly
    save_file(vgg.features.state_dict(), str(tmp_path / "vgg.safetensors"))
    return ["--objective", "occo", "--vgg-weights", str(tmp_path / "vgg.safetensors")]


@pytest.mark.parametrize("objective", ["pixel", "occo"])
def test_torchrun_two_processes_equal_one_process_at_the_same_global_batch(
    tmp_path: Path, objective: str
) -> None:
    data = _dataset(tmp_path / "d", count=10)
    extra = ["--objective", "pixel"]
    if objective == "occo":  # CCL: batch 8 = 4 groups of 2, one position per rank
        extra = [*_ccl_inputs(data, tmp_path), "--batch-size", "8"]
    common = [
        str(data),
        *extra,
        "--config",
        str(data / "tiny.yaml"),
        "--max-steps",
        "3",
        "--device",
        "cpu",
    ]
    one = subprocess.run(
        _occo(*common, "--out", str(tmp_path / "one")),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert one.returncode == 0, one.stderr
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "occo",
        "train",
        *common,
        "--out",
        str(tmp_path / "two"),
    ]
    two = subprocess.run(
        launcher, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _steps(tmp_path / "one"), _steps(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3]  # rank 0 alone writes the log
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    wa, wb = (
        load_file(tmp_path / "one" / "last.safetensors"),
        load_file(tmp_path / "two" / "last.safetensors"),
    )
    # Biases that feed a BatchNorm have zero gradient in exact arithmetic: Adam turns their
    # float noise into +-lr steps, so they (and the running means that carry them) cannot be
    # compared. Weights and running variances can, and would differ by far more if the
    # shards, the loss averaging or the BatchNorm statistics were wrong.
    compared = [k for k in wa if k.endswith(("weight", "running_var"))]
    assert any("running_var" in k for k in compared)
    for key in compared:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5, msg=key)
