"""Benchmark `occo fuse` against the release's way of inferring, in the same run.

The release's test script runs FIFN in training mode (BatchNorm on batch statistics) with
autograd on, one pair at a time, reading and writing images in the same thread. occo runs
the Fuser: eval mode, inference_mode, channels_last, same-size batches, decoding and
encoding overlapped in worker threads (FileFuser).

Every variant runs in its own subprocess so that its peak memory (max RSS above the RSS
after building the model) is its own. Weights are random (speed does not depend on
them). Reported: pairs/s end to end (files in, PNGs out) and model-only (network on
prepared tensors), medians over pairs; on CUDA also bf16 against the arithmetic floor.

Usage:
    python benchmarks/bench_fuse.py                   # 5 MSRS + 5 TNO pairs, CPU
    python benchmarks/bench_fuse.py --pairs 20 --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"msrs20": DATA / "msrs20", "tno": DATA / "tno"}
#: Dense bf16 tensor-core peak of an H100 SXM, FLOP/s (the arithmetic floor's denominator).
H100_BF16_PEAK = 989e12


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pairs(dataset: str, count: int):
    from data.pairing import pair_images

    folder = DATASETS[dataset]
    return pair_images(folder / "ir", folder / "vi").pairs[:count]


def _release_way(model, pairs, out_dir: Path, device) -> dict:
    """The release's test loop: train mode, autograd on, one pair at a time, no overlap."""
    import cv2
    import numpy as np
    import torch

    from data.color import rgb_to_ycbcr, ycbcr_to_rgb
    from models.fifn import minmax_normalize

    model.train()
    forward_s = []

    def one(stem, ir_path, vi_path):
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.cvtColor(cv2.imread(str(vi_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ir_t = torch.from_numpy(ir).float().div(255)[None, None].to(device)
        vi_t = torch.from_numpy(vi).float().div(255).permute(2, 0, 1)[None].to(device)
        ycbcr = rgb_to_ycbcr(vi_t)
        _sync(device)
        start = time.perf_counter()
        raw = model(ycbcr[:, :1], ir_t)  # autograd records the graph, as in the release
        _sync(device)
        forward_s.append(time.perf_counter() - start)
        fused = ycbcr_to_rgb(torch.cat((minmax_normalize(raw), ycbcr[:, 1:]), dim=1))
        image = (fused[0].detach().permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(out_dir / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    one(*pairs[0])  # warm-up
    forward_s.clear()
    start = time.perf_counter()
    for pair in pairs:
        one(*pair)
    wall = time.perf_counter() - start
    return {"e2e_pairs_s": len(pairs) / wall, "model_pairs_s": 1 / statistics.median(forward_s)}


def _occo_way(model, pairs, out_dir: Path, device, batch_size: int, amp, workers: int) -> dict:
    """occo: Fuser + FileFuser (model-only timed on prepared same-size batches)."""
    import torch

    from models.fuser import FileFuser, FuseJob, Fuser, luminance, read_pair

    fuser = Fuser(model, device=device, amp=amp, batch_size=batch_size)
    jobs = [FuseJob(stem, ir, vi, out_dir / f"{stem}.png") for stem, ir, vi in pairs]
    list(FileFuser(fuser, workers=workers).run(jobs[:1]))  # warm-up
    runner = FileFuser(fuser, workers=workers)
    failures = [o.error for o in runner.run(jobs) if o.error]
    if failures:
        raise RuntimeError(failures[0])
    e2e = len(jobs) / runner.stats.wall_s

    # Model-only: network on prepared tensors, batches of same-size pairs.
    prepared = [read_pair(job) for job in jobs]
    groups: dict[tuple, list] = {}
    for pair in prepared:
        groups.setdefault(pair.size, []).append(pair)
    per_pair = []
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            vi = luminance(torch.stack([p.vi for p in chunk]).to(device))
            ir = torch.stack([p.ir for p in chunk]).to(device)
            fuser.raw(vi, ir)  # warm-up for this shape
            _sync(device)
            begin = time.perf_counter()
            fuser.raw(vi, ir)
            _sync(device)
            per_pair += [(time.perf_counter() - begin) / len(chunk)] * len(chunk)
    return {"e2e_pairs_s": e2e, "model_pairs_s": 1 / statistics.median(per_pair)}


def worker(args) -> None:
    """One variant on one dataset; prints a JSON line."""
    import torch

    from models.fifn import FIFN

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = FIFN().to(device)
    pairs = _pairs(args.dataset, args.pairs)
    baseline = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.variant == "release":
            result = _release_way(model, pairs, Path(tmp), device)
        else:
            amp = {"fp32": False, "bf16": torch.bfloat16}[args.variant.split("-")[1]]
            result = _occo_way(model, pairs, Path(tmp), device, args.batch_size, amp, args.workers)
    if device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_mb"] = _peak_mb() - baseline
    result["pairs"] = len(pairs)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


def _flops_640x480() -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.fifn import FIFN

    model = FIFN().to("meta").eval()
    x = torch.empty(1, 1, 480, 640, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, x)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="pairs per dataset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--variants", default="release,occo-fp32,occo-bf16")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        worker(args)
        return
    missing = [name for name, folder in DATASETS.items() if not (folder / "ir").is_dir()]
    if missing:
        print(f"skipped: ../shared/data/{missing[0]} is absent")
        return

    rows = []
    for dataset in DATASETS:
        for variant in args.variants.split(","):
            command = [sys.executable, __file__, "--variant", variant, "--dataset", dataset,
                       "--pairs", str(args.pairs), "--device", args.device, "--batch-size",
                       str(args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{variant} on {dataset} failed:\n{done.stderr}")
            rows.append((dataset, variant, json.loads(done.stdout.strip().splitlines()[-1])))

    flops = _flops_640x480()
    print(f"device: {args.device}, torch threads: {rows[0][2]['threads']}, pairs per dataset: "
          f"{args.pairs}, occo batch size: {args.batch_size}, FIFN at 640x480: {flops / 1e9:.1f} GFLOP/pair\n")  # fmt: skip
    print("| dataset | way | end-to-end pairs/s | model-only pairs/s | peak memory MB | speed-up e2e / model |")
    print("|---|---|---:|---:|---:|---:|")
    for dataset, variant, r in rows:
        base = next(b for d, v, b in rows if d == dataset and v == "release")
        label = {"release": "release (train mode, autograd, 1 pair)", "occo-fp32": "occo fp32",
                 "occo-bf16": "occo bf16 autocast"}.get(variant, variant)  # fmt: skip
        print(f"| {dataset} | {label} | {r['e2e_pairs_s']:.3f} | {r['model_pairs_s']:.3f} | "
              f"{r['peak_mb']:.0f} | {r['e2e_pairs_s'] / base['e2e_pairs_s']:.1f}x / "
              f"{r['model_pairs_s'] / base['model_pairs_s']:.1f}x |")  # fmt: skip
    if args.device.startswith("cuda"):
        floor = H100_BF16_PEAK / flops
        best = max(r["model_pairs_s"] for d, v, r in rows if d == "msrs20" and v == "occo-bf16")
        print(f"\nmsrs20 bf16 model-only: {best:.0f} pairs/s; arithmetic floor on an H100 "
              f"({H100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16): {floor:.0f} pairs/s ({best / floor:.0%} of it)")  # fmt: skip


if __name__ == "__main__":
    main()
