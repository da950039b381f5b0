"""Benchmark `occo fuse` against the release's way of inferring, in the same run.

The release's test script runs FIFN in training mode (BatchNorm on batch statistics) with
autograd on, one pair at a time, reading and writing images in the same thread; the
baseline does that with the release's formulation of the network (release_style_forward,
same weights, checked equal to occo's FIFN). occo runs the Fuser: eval mode,
inference_mode, BatchNorms folded, channels_last token-space FIFB, same-size batches,
decoding and encoding overlapped in worker threads (FileFuser).

Each dataset runs in its own subprocess, all ways in the same process, with the glibc
setting `occo fuse` makes on CPU (occo.runtime.keep_freed_memory; process-wide, so the
release's way gets it too). Peak memory comes from a second short subprocess per dataset: peak RSS
(CUDA: allocator peak) above the level at the start of each way, end to end on 2 pairs. Weights are
random (speed does not depend on them). Reported: pairs/s end to end (files in, PNGs
out) and model-only (network on prepared tensors, medians over pairs, wall and CPU time
of the calling thread); on CUDA also batched bf16 throughput against the arithmetic floor.

Usage:
    python benchmarks/bench_fuse.py                   # 5 MSRS + 5 TNO pairs, CPU
    python benchmarks/bench_fuse.py --pairs 20 --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
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


def _reset_peak() -> float:
    """Reset the process's peak RSS (Linux clear_refs 5) and return the current RSS, MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory of a block above its start: CUDA allocator stats, else peak RSS."""

    def __init__(self, device) -> None:
        self.device, self.mb = device, 0.0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start = _reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start
        else:
            self.mb = _status_mb("VmHWM") - self.start


def _pairs(dataset: str, count: int):
    from occo.data.pairing import pair_images

    folder = DATASETS[dataset]
    return pair_images(folder / "ir", folder / "vi").pairs[:count]


def release_style_forward(model, vi_y, ir):
    """FIFN computed the way the released code writes it, on occo's modules (same weights).

    NCHW feature maps flattened to tokens with copies, concatenations before every
    projection, attention with per-head (d x N) @ (N x d) products, BatchNorms as separate
    passes: the release's formulation (FACTS section 1), kept here as the baseline so that
    occo's own speed-ups of the network code count too.
    """
    import torch
    import torch.nn.functional as F

    from occo.models.blocks import upsample_to

    def conv_block(b, x):
        return F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))

    def tokens(t):
        return t.flatten(2).transpose(1, 2)

    def fifb(f, x, y):
        n, c, h, w = x.shape
        both = torch.cat((x, y), 1)
        stats = torch.cat(
            (
                F.adaptive_avg_pool2d(both, 1).view(n, 2 * c),
                F.adaptive_max_pool2d(both, 1).view(n, 2 * c),
            ),
            1,
        )
        cw = torch.sigmoid(f.channel_weights.fc2(F.relu(f.channel_weights.fc1(stats))))
        cw = cw.view(n, 2, c, 1, 1).permute(1, 0, 2, 3, 4)
        sp = f.spatial_weights

        def spatial(t):
            return torch.sigmoid(sp.conv2(F.relu(sp.conv1(t))))

        c_x, c_y, s_x, s_y = cw[0] * x, cw[1] * y, spatial(x) * x, spatial(y) * y
        x_t, y_t, c_x, c_y, s_x, s_y = map(tokens, (x, y, c_x, c_y, s_x, s_y))
        u1, u2 = F.relu(f.proj_vi(c_x)), F.relu(f.proj_ir(c_y))
        heads = f.attention.heads
        d = c // heads
        q1 = u1.reshape(n, -1, heads, d).permute(0, 2, 1, 3)
        q2 = u2.reshape(n, -1, heads, d).permute(0, 2, 1, 3)
        k1, v1 = f.attention.kv_vi(u1).reshape(n, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        k2, v2 = f.attention.kv_ir(u2).reshape(n, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        ctx1 = (k1.transpose(-2, -1) @ v1 * d**-0.5).softmax(dim=-2)
        ctx2 = (k2.transpose(-2, -1) @ v2 * d**-0.5).softmax(dim=-2)
        a1 = (q1 @ ctx2).permute(0, 2, 1, 3).reshape(n, -1, c)
        a2 = (q2 @ ctx1).permute(0, 2, 1, 3).reshape(n, -1, c)
        o1 = f.norm_vi(x_t + f.out_proj_vi(torch.cat((s_x, a1), -1)))
        o2 = f.norm_ir(y_t + f.out_proj_ir(torch.cat((s_y, a2), -1)))
        z = torch.cat((o1, o2), -1).permute(0, 2, 1).reshape(n, 2 * c, h, w)
        m = f.merge
        main = m.bn_main(m.pointwise(F.relu(m.depthwise(m.reduce(z)))))
        return m.bn_out(m.shortcut(z) + main)

    fused, x, y = [], vi_y, ir
    for level, (ev, ei, f) in enumerate(
        zip(model.encoder_vi, model.encoder_ir, model.fusion, strict=True)
    ):
        if level:
            x, y = F.max_pool2d(x, 2), F.max_pool2d(y, 2)
        x, y = conv_block(ev, x), conv_block(ei, y)
        fused.append(fifb(f, x, y))
    *skips, deep = fused
    for up, skip in zip(model.decoder, reversed(skips), strict=True):
        deep = torch.cat((skip, upsample_to(deep, skip.shape[-2:])), 1)
        deep = F.relu(up.conv2(F.relu(up.conv1(deep))))
    return model.head(deep)


def _release_inputs(ir_path, vi_path, device):
    """Read a pair as the release's test does: cv2, gray IR, colour visible -> Y/Cb/Cr, /255."""
    import cv2
    import torch

    from occo.data.color import rgb_to_ycbcr

    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    vi = cv2.cvtColor(cv2.imread(str(vi_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ir_t = torch.from_numpy(ir).float().div(255)[None, None].to(device)
    vi_t = torch.from_numpy(vi).float().div(255).permute(2, 0, 1)[None].to(device)
    return rgb_to_ycbcr(vi_t), ir_t


def _release_e2e(model, pairs, out_dir: Path, device) -> float:
    """The release's test loop: train mode, autograd on, one pair at a time, no overlap."""
    import cv2
    import numpy as np
    import torch

    from occo.data.color import ycbcr_to_rgb
    from occo.models.fifn import minmax_normalize

    model.train()
    start = time.perf_counter()
    for stem, ir_path, vi_path in pairs:
        ycbcr, ir = _release_inputs(ir_path, vi_path, device)
        raw = release_style_forward(model, ycbcr[:, :1], ir)  # train mode, autograd on
        fused = ycbcr_to_rgb(torch.cat((minmax_normalize(raw), ycbcr[:, 1:]), dim=1))
        image = (fused[0].detach().permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(out_dir / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return len(pairs) / (time.perf_counter() - start)


def _occo_e2e(fuser, pairs, out_dir: Path, workers: int) -> float:
    from occo.models.fuser import FileFuser, FuseJob

    jobs = [FuseJob(stem, ir, vi, out_dir / f"{stem}.png") for stem, ir, vi in pairs]
    runner = FileFuser(fuser, workers=workers)
    failures = [o.error for o in runner.run(jobs) if o.error]
    if failures:
        raise RuntimeError(failures[0])
    return len(jobs) / runner.stats.wall_s


def memory_worker(args) -> None:
    """Peak memory of each way end to end on 2 pairs; prints a JSON line.

    Run with glibc's mmap threshold lowered, so that freed blocks go back to the OS and
    the peak RSS of each block is its own (this slows allocation: no timings here).
    """
    import copy

    import torch

    from occo.models.fifn import FIFN
    from occo.models.fuser import Fuser

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = FIFN().to(device)
    release_model = copy.deepcopy(model)
    fuser = Fuser(model, device=device, amp=False, batch_size=args.batch_size)
    pairs = _pairs(args.dataset, 2)
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _PeakMemory(device) as mem:
            _release_e2e(release_model, pairs, Path(tmp), device)
        peaks["release"] = mem.mb
        with _PeakMemory(device) as mem:
            _occo_e2e(fuser, pairs, Path(tmp), args.workers)
        peaks["occo-fp32"] = mem.mb
    print(json.dumps(peaks))


def worker(args) -> None:
    """Every way on one dataset, in one process (same conditions); prints a JSON line.

    End to end: the release's loop over the pairs, then occo's FileFuser over the same
    pairs. Model-only: each way over the pairs; medians.
    """
    import copy

    import torch

    from occo.data.normalize import luminance
    from occo.models.fifn import FIFN
    from occo.models.fuser import FuseJob, Fuser, read_pair
    from occo.runtime import keep_freed_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as `occo fuse` does on CPU; process-wide, so both ways get it
    torch.manual_seed(0)
    model = FIFN().to(device)
    release_model = copy.deepcopy(model)  # the release's own copy: NCHW, train mode
    pairs = _pairs(args.dataset, args.pairs)
    occo = {
        "occo-fp32": Fuser(model, device=device, amp=False, batch_size=args.batch_size),
        "occo-bf16": Fuser(model, device=device, amp=torch.bfloat16, batch_size=args.batch_size),
    }
    result: dict = {"threads": torch.get_num_threads(), "pairs": len(pairs)}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up both ways on one pair (allocator, oneDNN / cuDNN kernel choice).
        _release_e2e(release_model, pairs[:1], Path(tmp), device)
        for fuser in occo.values():
            _occo_e2e(fuser, pairs[:1], Path(tmp), args.workers)
        result["release"] = {"e2e_pairs_s": _release_e2e(release_model, pairs, Path(tmp), device)}
        for name, fuser in occo.items():  # `occo fuse` and `occo fuse --amp`
            result[name] = {"e2e_pairs_s": _occo_e2e(fuser, pairs, Path(tmp), args.workers)}

    # Model-only. CPU time of the calling thread is also kept: with one torch thread it is
    # the compute itself, robust to a busy machine.
    times: dict[str, list[float]] = {name: [] for name in ("release", *occo)}
    cpu: dict[str, list[float]] = {name: [] for name in times}

    def timed(name, fn, *inputs):
        _sync(device)
        begin, begin_cpu = time.perf_counter(), time.thread_time()
        out = fn(*inputs)
        _sync(device)
        times[name].append(time.perf_counter() - begin)
        cpu[name].append(time.thread_time() - begin_cpu)
        return out

    # Each way over all pairs in turn (interleaving per pair let the release's 5 GB of
    # saved activations disturb the allocator state seen by the next way).
    inputs = []
    for stem, ir_path, vi_path in pairs:
        ycbcr, ir = _release_inputs(ir_path, vi_path, device)
        prepared = read_pair(FuseJob(stem, ir_path, vi_path, Path("unused")))
        inputs.append((ycbcr[:, :1], ir, luminance(prepared.vi[None]), prepared.ir[None]))
    for name, fuser in occo.items():
        for _, _, vi_y, ir_t in inputs:
            timed(name, fuser.raw, vi_y.to(device), ir_t.to(device))
    release_model.train()
    for vi_y, ir, _, _ in inputs:
        timed("release", lambda a, b: release_style_forward(release_model, a, b), vi_y, ir)
    with torch.no_grad():  # the baseline computes occo's function (`model`: eval, untouched)
        same = release_style_forward(model.eval(), inputs[0][0], inputs[0][1])
    result["baseline_max_abs_diff"] = (
        (same - occo["occo-fp32"].raw(inputs[0][0], inputs[0][1])).abs().max().item()
    )
    for name in times:
        result[name]["model_pairs_s"] = 1 / statistics.median(times[name])
        result[name]["model_cpu_s"] = statistics.median(cpu[name])
    if device.type == "cuda":  # batched bf16 throughput, the number that matters on a GPU
        x = torch.rand(args.batch_size, 1, 480, 640, device=device)
        fuser = occo["occo-bf16"]
        fuser.raw(x, x)
        _sync(device)
        begin = time.perf_counter()
        for _ in range(5):
            fuser.raw(x, x)
        _sync(device)
        result["occo-bf16"]["batched_640x480_pairs_s"] = (
            5 * args.batch_size / (time.perf_counter() - begin)
        )
    print(json.dumps(result))


def _flops_640x480() -> float:
    """FLOPs of one 640x480 pair, counted on the release's formulation (meta tensors)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from occo.models.fifn import FIFN

    model = FIFN().to("meta").eval()
    x = torch.empty(1, 1, 480, 640, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        release_style_forward(model, x, x)  # occo's in-place GEMMs (addmm_) are not counted
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5, help="pairs per dataset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        (memory_worker if args.variant == "memory" else worker)(args)
        return
    missing = [name for name, folder in DATASETS.items() if not (folder / "ir").is_dir()]
    if missing:
        print(f"skipped: ../shared/data/{missing[0]} is absent")
        return

    rows = {}
    load_before = os.getloadavg()[0]
    low_mmap = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed blocks back to the OS
    for dataset in DATASETS:
        common = ["--dataset", dataset, "--pairs", str(args.pairs), "--device", args.device,
                  "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                  "--threads", str(args.threads)]  # fmt: skip
        runs = {}
        for variant, env in (("all", None), ("memory", low_mmap)):
            command = [sys.executable, __file__, "--variant", variant, *common]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if done.returncode:
                raise SystemExit(f"{dataset} ({variant}) failed:\n{done.stderr}")
            runs[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        rows[dataset] = runs["all"]
        for way, peak in runs["memory"].items():
            rows[dataset][way]["peak_mb"] = peak

    flops = _flops_640x480()
    first = next(iter(rows.values()))
    print(f"device: {args.device}, torch threads: {first['threads']}, pairs per dataset: "
          f"{args.pairs}, occo batch size: {args.batch_size}, FIFN at 640x480: {flops / 1e9:.1f} GFLOP/pair; "
          f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"baseline vs occo max |diff| (eval): "
          f"{max(r['baseline_max_abs_diff'] for r in rows.values()):.1e}\n")  # fmt: skip
    print(
        "| dataset | way | end-to-end pairs/s | model-only pairs/s | model CPU s/pair "
        "| peak memory MB (e2e) | speed-up: e2e / model / CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    labels = {"release": "release's way (train mode, autograd, 1 pair)", "occo-fp32": "occo fp32",
              "occo-bf16": "occo bf16 autocast"}  # fmt: skip
    for dataset, result in rows.items():
        base = result["release"]
        for way, label in labels.items():
            r = result[way]
            e2e = f"{r['e2e_pairs_s']:.3f}" if "e2e_pairs_s" in r else "-"
            peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"
            up_e2e = f"{r['e2e_pairs_s'] / base['e2e_pairs_s']:.1f}x" if "e2e_pairs_s" in r else "-"
            print(f"| {dataset} | {label} | {e2e} | {r['model_pairs_s']:.3f} | {r['model_cpu_s']:.2f} | {peak} | "
                  f"{up_e2e} / {r['model_pairs_s'] / base['model_pairs_s']:.1f}x / "
                  f"{base['model_cpu_s'] / r['model_cpu_s']:.1f}x |")  # fmt: skip
    if args.device.startswith("cuda"):
        floor = H100_BF16_PEAK / flops
        best = rows["msrs20"]["occo-bf16"]["batched_640x480_pairs_s"]
        print(f"\nbf16 model-only, batches of {args.batch_size} at 640x480: {best:.0f} pairs/s; "
              f"arithmetic floor on an H100 ({H100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16): "
              f"{floor:.0f} pairs/s ({best / floor:.0%} of it)")  # fmt: skip


if __name__ == "__main__":
    main()
