"""Training throughput: occo's Trainer step against the release's way, in the same run.

Every row runs :meth:`models.trainer.Trainer.train_step` (FIFN forward, per-image min-max,
objective, backward, Adam) on one fixed generated batch; only the objective differs:

- ``occo``: :class:`losses.objective.FusionObjective` (VGG19 built once, each image
  through it once per step).
- ``occo bf16``: the same under bf16 autocast (``--amp``; by default on CUDA, with
  ``--bf16`` on CPU, where it pays on CPUs with AVX512-BF16 or AMX).
- ``release's way``: the authors' training step: FIFN in the release's formulation
  (``release_style_forward`` of benchmarks/bench_fuse.py: NCHW, concatenations and
  per-head attention products, same weights and function) and the authors' loss
  computation: a fresh VGG19 per criterion every step and features recomputed for every
  distance and layer (``release_objective`` of benchmarks/bench_losses.py, which checks
  that it gives occo's value).
- ``release's objective, occo's FIFN``: the same loss computation with occo's network, to
  show what each part contributes.

VGG19 has random weights, explicitly (pretrained weights are not needed for timing).
Each row runs in its own process. occo's rows make the glibc setting `occo train` makes on
CPU (occo.runtime.keep_freed_memory: freed heap is reused instead of returned to the OS);
the release's rows run with glibc's defaults, as the release's script does. Peak memory:
CUDA ``max_memory_allocated``; on CPU the sampled growth of the heap in use (glibc
mallinfo2, bench_losses.PeakMemory) and the process's peak resident set (which also counts
freed memory kept for reuse).

Example:
    python benchmarks/bench_train.py --device cuda            # batch 12, 256 crops, + bf16
    python benchmarks/bench_train.py --batch 4 --crop 64      # a small CPU run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from occo.losses.objective import FusionObjective, ObjectiveConfig  # noqa: E402
from occo.losses.vgg import VGGFeatures  # noqa: E402
from occo.train.config import TrainConfig  # noqa: E402
from occo.train.trainer import Trainer  # noqa: E402


def _bench_module(name: str):
    """A sibling benchmark script as a module (its baselines have one implementation)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReleaseObjective(nn.Module):
    """The objective as the release computed it, behind FusionObjective's interface."""

    def __init__(self, bench, vgg: VGGFeatures, groups: int) -> None:
        super().__init__()
        self.bench, self.groups = bench, groups
        self.state = {k: v.cpu() for k, v in vgg.features.state_dict().items()}

    def forward(self, fused, vi, ir, regions):
        result = self.bench.release_objective(
            fused, vi, ir, regions, self.state, fused.device, self.groups, True, {}
        )
        total = result[0] if isinstance(result, tuple) else result  # (total, L_con) or total
        return total, {}


def make_batch(batch: int, crop: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth random crops with overlapping object masks (every region present)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 2, max(crop // 8, 2), max(crop // 8, 2), generator=g)
    images = nn.functional.interpolate(low, size=(crop, crop), mode="bilinear")
    images = (images + 0.1 * torch.rand(batch, 2, crop, crop, generator=g)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij")
    centre = torch.rand(batch, 2, generator=g) * crop * 0.5 + crop * 0.25
    r = crop * 0.2
    d_vi = (yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2
    d_ir = (yy - centre[:, :1, None] - r) ** 2 + (xx - centre[:, 1:, None]) ** 2
    return {
        "vi": images[:, :1].contiguous(),
        "ir": images[:, 1:].contiguous(),
        "mask_vi": (d_vi < r * r).float().unsqueeze(1),
        "mask_ir": (d_ir < r * r).float().unsqueeze(1),
    }


def make_trainer(
    args, objective: nn.Module, amp: bool, out: Path, channels_last: bool = True
) -> Trainer:
    config = TrainConfig(
        crop=args.crop,
        batch_size=args.batch,
        num_workers=0,
        amp=amp,
        channels_last=channels_last,
        tensorboard=False,
        log_every=10**6,
        objective=ObjectiveConfig(groups=args.groups),
    )
    fake_pairs = [
        (str(i), Path(f"{i}.png"), Path(f"{i}.png")) for i in range(args.batch)
    ]  # never read
    return Trainer(
        config, fake_pairs, out, mask_source=lambda: None, device=args.device, objective=objective
    )


def measure(
    trainer: Trainer, batch: dict, device: torch.device, repeats: int, probe
) -> tuple[float, float]:
    """Median seconds per step and peak memory (MiB) over ``repeats`` steps after a warm-up."""
    trainer.train_step(batch)
    times, peaks = [], []
    for _ in range(repeats):
        with probe(device) as mem:
            start = time.perf_counter()
            trainer.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak / 2**20)
    return statistics.median(times), max(peaks)


ROWS = {  # --row name -> table label
    "occo": "occo",
    "occo-bf16": "occo bf16",
    "release": "release's way",
    "release-objective": "release's objective, occo's FIFN",
}


def run_row(args) -> dict:
    """Time one row in this process; returns seconds, heap peak and process peak RSS."""
    import resource

    device = torch.device(args.device)
    if device.type == "cpu" and args.row.startswith("occo"):
        from occo.runtime import keep_freed_memory

        keep_freed_memory()  # as `occo train` does on CPU (the release's script does not)
    bench = _bench_module("bench_losses")
    torch.manual_seed(0)
    # Random weights, explicitly; channels_last as the trainer builds it.
    vgg = VGGFeatures(random_init=True, device=device, channels_last=True)
    batch = make_batch(args.batch, args.crop)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.row.startswith("occo"):
            objective = FusionObjective(ObjectiveConfig(groups=args.groups), vgg)
            trainer = make_trainer(args, objective, args.row == "occo-bf16", Path(tmp))
        else:
            release = ReleaseObjective(bench, vgg, args.groups)
            if args.row == "release":
                trainer = make_trainer(args, release, False, Path(tmp), channels_last=False)
                network = trainer.model
                forward = _bench_module("bench_fuse").release_style_forward
                with torch.no_grad():  # the same function in training mode (batch statistics)
                    vi, ir = (batch[k][:4].to(device) for k in ("vi", "ir"))
                    result["fifn_gap"] = float(
                        (forward(network, vi, ir) - network(vi, ir)).abs().max()
                    )
                network.forward = lambda vi, ir: forward(network, vi, ir)
            else:
                trainer = make_trainer(args, release, False, Path(tmp))
        result["seconds"], result["heap_mib"] = measure(
            trainer, batch, device, args.repeats, bench.PeakMemory
        )
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=12, help="crops per step (the paper: 12)")
    parser.add_argument("--crop", type=int, default=256, help="crop side (the paper: 256)")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--bf16", action="store_true", help="add the bf16 row off CUDA too")
    parser.add_argument("--skip-release", action="store_true", help="time occo only")
    parser.add_argument(
        "--split-release", action="store_true", help="add the release objective + occo FIFN row"
    )
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:  # a child process: one row, one JSON line
        print("ROW " + json.dumps(run_row(args)), flush=True)
        return
    device = torch.device(args.device)
    wanted = ["occo"]
    wanted += ["occo-bf16"] if device.type == "cuda" or args.bf16 else []
    wanted += [] if args.skip_release else ["release"]
    wanted += ["release-objective"] if args.split_release and not args.skip_release else []
    rows: dict[str, dict] = {}
    passed = [a for a in sys.argv[1:] if a not in ("--bf16", "--skip-release", "--split-release")]
    for row in wanted:  # each in a fresh process: no heap state carries over between rows
        child = subprocess.run(
            [sys.executable, __file__, *passed, "--row", row],
            capture_output=True,
            text=True,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("ROW ")]
        if child.returncode or not lines:
            sys.exit(f"row {row} failed:\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}")
        rows[ROWS[row]] = json.loads(lines[-1][4:])
    if "fifn_gap" in rows.get(ROWS["release"], {}):
        gap = rows[ROWS["release"]]["fifn_gap"]
        print(f"release-style FIFN vs occo's FIFN, training mode: max |diff| {gap:.1e}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = rows["occo"]["threads"]
    print(
        f"\nTraining step (FIFN forward + objective + backward + Adam): batch {args.batch}, "
        f"{args.crop}x{args.crop} crops, {args.groups} groups, {name} ({threads} threads), "
        f"median of {args.repeats} steps after one warm-up, VGG19 random weights, "
        "one process per row\n"
    )
    base = rows.get(ROWS["release"], {}).get("seconds")
    print(
        "| method | s / step | steps / s | speed-up vs release | peak memory (MiB) "
        "| process peak RSS (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        sec = row["seconds"]
        speed = f"{base / sec:.1f}x" if base else "-"
        rss = f"{row['rss_mib']:.0f}" if device.type == "cpu" else "-"
        print(f"| {label} | {sec:.3f} | {1 / sec:.3f} | {speed} | {row['heap_mib']:.0f} | {rss} |")


if __name__ == "__main__":
    main()
