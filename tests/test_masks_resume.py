"""`occo masks gen` as real subprocesses: killed with SIGKILL and resumed, and under torchrun
with two CPU ranks (gloo); both must end with the store an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests import masks_tiny as tiny

ROOT = Path(__file__).resolve().parents[1]
PAIRS = 12

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals"),
]


def env() -> dict[str, str]:
    """One thread per process (same arithmetic as the in-process reference), offline."""
    values = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    values["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    return values


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny models, a dataset, and the store of one uninterrupted in-process run."""
    from occo.cli.app import app

    folder = tmp_path_factory.mktemp("resume")
    detector = tiny.save_grounding_dino(folder / "gdino")
    segmenter = tiny.save_sam(folder / "sam")
    dataset = tiny.write_dataset(folder / "ds", pairs=PAIRS)

    def args(out: Path) -> list[str]:
        return [
            "masks", "gen", str(dataset), "--out", str(out), "--detector", str(detector),
            "--segmenter", str(segmenter), "--device", "cpu", "--batch-size", "1", "-q",
        ]  # fmt: skip

    reference = folder / "reference.h5"
    result = CliRunner().invoke(app, args(reference))
    assert result.exit_code == 0, result.output
    return folder, args, reference, app


def test_sigkill_mid_run_then_resume(setup):
    folder, args, reference, app = setup
    out = folder / "killed.h5"
    parts = out.with_name(out.name + ".parts")
    command = [sys.executable, "-m", "occo", *args(out)]
    process = subprocess.Popen(
        command, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 240
    while len(list(parts.glob("chunk-*.h5"))) < 2:
        if process.poll() is not None:
            pytest.fail(f"gen ended before the kill: {process.stdout.read().decode()}")
        assert time.monotonic() < deadline, "no progress from occo masks gen"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the run finished before the kill: the test needs more pairs"
    done = len(list(parts.glob("chunk-*.h5")))
    assert 2 <= done < PAIRS

    # The same command again (in-process, to spare a second interpreter start).
    rerun = CliRunner().invoke(app, args(out))
    assert rerun.exit_code == 0, rerun.output
    assert f"{done} taken from the interrupted run" in " ".join(rerun.output.split())
    assert not parts.exists()
    assert tiny.store_differences(out, reference) == []


def test_two_ranks_under_torchrun_match_one(setup):
    folder, args, reference, _ = setup
    out = folder / "ranks.h5"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "occo", *[a for a in args(out) if a != "-q"],  # -q would hide the ranks note
    ]  # fmt: skip
    run = subprocess.run(command, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 ranks" in run.stderr and f"{PAIRS} pairs ({PAIRS} new)" in " ".join(
        run.stdout.split()
    )
    assert tiny.store_differences(out, reference) == []
