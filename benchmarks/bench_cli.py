"""Start-up time of the command line, and training step time under thread/worker defaults.

Every row runs in fresh processes, as a user meets the command line:

- ``occo --help``, ``occo fuse --help``: time until the help is printed (whole process).
- ``occo metrics`` on one TNO-sized pair with its sources: the whole process.
- ``occo train`` with the pixel objective at small crops (64 px, batch 8): seconds per
  step from the run's log (wall time between logged steps, the first steps skipped),
  with the old default of 4 data workers and with the machine-chosen default.

With ``--baseline DIR`` (a checkout of an earlier occo, e.g. ``git worktree add /tmp/old
cfd1ff3``), the same rows run that code through ``python -m occo_cli`` in DIR, in the same
run. Medians of ``--repeats`` fresh processes.

    python benchmarks/bench_cli.py --baseline /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(marks) or 'none of avx2/avx512'}"


def _command(baseline: Path | None) -> tuple[list[str], Path]:
    """How to start occo: the installed one, or an earlier checkout run from its folder."""
    if baseline is None:
        return [sys.executable, "-m", "occo"], Path.cwd()
    return [sys.executable, "-m", "occo_cli"], baseline


def _timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{result.stderr[-2000:]}")
    return elapsed


def _pairs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """Smooth random pairs (natural-image-like) in folder/ir and folder/vi."""
    import cv2

    rng = np.random.default_rng(seed)
    for sub in ("ir", "vi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        for sub, channels in (("ir", 1), ("vi", 3)):
            noise = rng.random((size[0] // 8, size[1] // 8, channels)).astype(np.float32)
            image = cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
            image = np.clip(image * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / sub / f"{index:04d}.png"), image)
    return folder


def startup_rows(baseline: Path | None, repeats: int, work: Path) -> dict[str, float]:
    command, cwd = _command(baseline)
    data = _pairs(work / "metrics", 1, (576, 768))
    fused = work / "fused-one"
    fused.mkdir(exist_ok=True)
    shutil.copy(data / "vi" / "0000.png", fused / "0000.png")
    rows = {
        "occo --help": [*command, "--help"],
        "occo fuse --help": [*command, "fuse", "--help"],
        "occo metrics, one 768x576 pair": [
            *command,
            "metrics",
            str(fused),
            "--ir",
            str(data / "ir"),
            "--vi",
            str(data / "vi"),
            "--workers",
            "1",
        ],  # fmt: skip
    }
    return {
        name: statistics.median(_timed(args, cwd) for _ in range(repeats))
        for name, args in rows.items()
    }


def train_seconds_per_step(
    baseline: Path | None, workers: int | None, steps: int, work: Path, tag: str
) -> float:
    command, cwd = _command(baseline)
    data = work / "train-data"
    if not data.exists():
        _pairs(data, 24, (160, 200), seed=1)
    config = work / "log_every_step.yaml"
    config.write_text("log_every: 1\nval_every: 0\n")
    run = work / f"run-{tag}"
    shutil.rmtree(run, ignore_errors=True)
    args = [
        *command, "train", str(data), "--objective", "pixel", "--crop", "64",
        "--batch-size", "8", "--max-steps", str(steps), "--out", str(run),
        "--config", str(config), "--device", "cpu",
    ]  # fmt: skip
    if workers is not None:
        args += ["--workers", str(workers)]
    _timed(args, cwd)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if r.get("event") == "step"]
    gaps = np.diff(times[2:])  # the first steps start the workers and warm up
    return float(np.median(gaps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="checkout of an earlier occo to compare")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="training steps per row")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions = [("now", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        startup = {label: startup_rows(path, args.repeats, work) for label, path in versions}
        print(f"\n| start-up (median of {args.repeats} fresh processes) |", end="")
        print("".join(f" {label} |" for label, _ in versions))
        print("|---|" + "---:|" * len(versions))
        for row in startup["now"]:
            cells = "".join(f" {startup[label][row]:.2f} s |" for label, _ in versions)
            print(f"| {row} |{cells}")
        if args.skip_train:
            return
        print("\n| occo train, pixel objective, 64 px crops, batch 8, CPU | s/step (median) |")
        print("|---|---:|")
        rows = [("now, default workers (chosen from the machine)", None, None)]
        rows.append(("now, --workers 4 (the old default)", None, 4))
        if args.baseline:
            rows.append(("baseline, its default (4 workers)", args.baseline, None))
        for index, (name, path, workers) in enumerate(rows):
            seconds = train_seconds_per_step(path, workers, args.steps, work, f"r{index}")
            print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
