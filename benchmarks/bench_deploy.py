"""Benchmark the deployment paths: PyTorch against onnxruntime, images and video, same run.

Ways (each a Fuser: same normalisation, batching, min-max and colour around the network):

- torch fp32: `occo fuse` (BatchNorm folded, channels_last, inference_mode);
  on CUDA also torch bf16 autocast (`occo fuse`'s CUDA default);
- onnxruntime fp32: `occo fuse --backend onnxruntime` with the `occo export` model;
- onnxruntime fp16: the `occo export --fp16` model (float16 inside the graph).

onnxruntime runs on its CPU provider for --device cpu, on its CUDA provider for
--device cuda where the installed onnxruntime has one (onnxruntime-gpu), else not at all.
Both runtimes get the same number of threads. All ways run in one process, with the glibc
setting `occo fuse` makes on CPU (occo.runtime.keep_freed_memory), repeats interleaved
(way A, B, C, A, B, C, ...); medians are reported.

Rows:
- msrs20 end to end: pairs/s, files in, PNGs out (FileFuser: decoding and encoding in threads);
- model only at a few sizes: pairs/s of the network alone (batch 1, prepared tensors);
- video end to end at 640x480: frames/s, decode + fuse + encode (VideoFuser, mp4v), on a
  clip made from an MSRS pair with synthetic motion (each frame shifted 4 px).

The network has the release's shape; its weights are occo's bundled ones when installed,
else random (speed does not depend on them).

Usage:
    python benchmarks/bench_deploy.py                  # CPU, all sizes, 3 repeats
    python benchmarks/bench_deploy.py --quick          # a smoke run: 2 pairs, 1 repeat
    python benchmarks/bench_deploy.py --device cuda --batch-size 8
    python benchmarks/bench_deploy.py --data path/to/msrs20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MSRS = ROOT.parent / "shared" / "data" / "msrs20"
SIZES = ((256, 320), (480, 640), (960, 1280))  # (H, W) for the model-only rows


def _machine() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _model():
    from occo.models.checkpoint import DEFAULT_WEIGHTS, load_weights
    from occo.models.fifn import FIFN

    if DEFAULT_WEIGHTS.is_file():
        return load_weights(DEFAULT_WEIGHTS), "occo's bundled weights"
    import torch

    torch.manual_seed(0)
    return FIFN().eval(), "random weights"


def _ways(args, model, threads: int) -> dict:
    """name -> Fuser, for every way this machine can run."""
    import torch

    from occo.models.export import build_onnx
    from occo.models.fuser import Fuser
    from occo.models.onnx_engine import OnnxEngine, resolve_providers

    device = torch.device(args.device)
    ways = {"torch fp32": Fuser(model, device=device, amp=False, batch_size=args.batch_size)}
    if device.type == "cuda":
        ways["torch bf16"] = Fuser(
            model, device=device, amp=torch.bfloat16, batch_size=args.batch_size
        )
    ort_device = "cpu" if device.type == "cpu" else args.device
    providers = resolve_providers("auto")
    if device.type == "cuda" and len(providers) == 1:
        print("onnxruntime has no GPU provider here (install onnxruntime-gpu): no onnxruntime rows")
        return ways
    for precision, fp16 in (("fp32", False), ("fp16", True)):
        payload, report = build_onnx(model, fp16=fp16)
        engine = OnnxEngine(payload, device=ort_device, threads=threads)
        print(f"onnxruntime {precision}: exported and checked in {report.seconds:.1f} s, max error "
              f"{report.max_error:.1e} of the output range; providers {engine.providers}")  # fmt: skip
        ways[f"onnxruntime {precision}"] = Fuser(
            engine, device="cpu", amp=False, batch_size=args.batch_size
        )
    return ways


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _files_e2e(fuser, pairs, out_dir: Path) -> float:
    from occo.models.fuser import FileFuser, FuseJob

    jobs = [FuseJob(stem, ir, vi, out_dir / f"{stem}.png") for stem, ir, vi in pairs]
    runner = FileFuser(fuser, workers=2)
    failures = [o.error for o in runner.run(jobs) if o.error]
    if failures:
        raise RuntimeError(failures[0])
    return len(jobs) / runner.stats.wall_s


def _model_only(fuser, size, device: str) -> float:
    import torch

    g = torch.Generator().manual_seed(0)
    vi_y = torch.rand(1, 1, *size, generator=g)
    ir = torch.rand(1, 1, *size, generator=g)
    _sync(device)
    start = time.perf_counter()
    fuser.raw(vi_y, ir)
    _sync(device)
    return 1 / (time.perf_counter() - start)


def _make_clip(folder: Path, pair, frames: int, fps: float) -> tuple[Path, Path]:
    """A 640x480 clip pair from one MSRS pair: each frame shifted 4 px (synthetic motion)."""
    import numpy as np

    from occo.data.io import read_image
    from occo.data.video import VideoSink

    _, ir_path, vi_path = pair
    ir, vi = read_image(ir_path), read_image(vi_path)
    paths = []
    for name, image in (("ir", ir), ("vi", vi)):
        sink = VideoSink(folder / f"{name}.mp4", fps)
        for k in range(frames):
            sink.write(np.roll(image, 4 * k, axis=1))
        paths.append(sink.commit())
    return paths[0], paths[1]


def _video_e2e(fuser, ir: Path, vi: Path, out: Path, fps: float) -> float:
    from occo.data.video import FramePairer, VideoSink, open_frames
    from occo.models.video_fuser import VideoFuser

    with open_frames(ir) as ir_source, open_frames(vi) as vi_source:
        sink = VideoSink(out, fps)
        runner = VideoFuser(fuser)
        for _ in runner.run(FramePairer(ir_source, vi_source, fps=fps), sink):
            pass
        sink.commit()
    return runner.stats.frames / runner.stats.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=MSRS, help="the msrs20 folder (ir/, vi/)")
    parser.add_argument("--pairs", type=int, default=20, help="msrs20 pairs (at most 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=50, help="video frames")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per runtime (0 = torch's default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 pairs, 1 repeat, 4 frames, the smallest size"
    )
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.repeats, args.frames = 2, 1, 4
    if not (args.data / "ir").is_dir():
        print(f"skipped: {args.data} is absent (--data DIR)")
        return

    import torch

    from occo.data.pairing import pair_images
    from occo.runtime import keep_freed_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.device == "cpu":
        keep_freed_memory()  # as `occo fuse` does on CPU; process-wide, so every way gets it
    model, weights = _model()
    ways = _ways(args, model, threads)
    pairs = pair_images(args.data / "ir", args.data / "vi").pairs[: args.pairs]
    sizes = SIZES[:1] if args.quick else SIZES
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, list[float]]] = {way: {} for way in ways}

    def record(way: str, row: str, value: float) -> None:
        results[way].setdefault(row, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = _make_clip(tmp, pairs[0], args.frames, 25.0)
        for fuser in ways.values():  # warm-up: allocator, kernel choice, sessions
            _files_e2e(fuser, pairs[:1], tmp)
            for size in sizes:
                _model_only(fuser, size, args.device)
        for _ in range(args.repeats):
            for way, fuser in ways.items():
                record(way, f"msrs20 end to end ({len(pairs)} pairs), pairs/s",
                       _files_e2e(fuser, pairs, tmp))  # fmt: skip
                for h, w in sizes:
                    record(
                        way, f"model only {w}x{h}, pairs/s", _model_only(fuser, (h, w), args.device)
                    )
                record(way, f"video 640x480 end to end ({args.frames} frames), frames/s",
                       _video_e2e(fuser, *clip, tmp / "out.mp4", 25.0))  # fmt: skip

    print(f"\nmachine: {_machine()}, {os.cpu_count()} CPUs; device {args.device}; {threads} threads "
          f"per runtime; batch size {args.batch_size}; {args.repeats} repeats (medians); {weights}; "
          f"torch {torch.__version__}; load average before/after: {load_before:.1f}/"
          f"{os.getloadavg()[0]:.1f}\n")  # fmt: skip
    names = list(ways)
    base = names[0]
    print(
        "| job | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} / {base}" for n in names[1:])
        + " |"
    )
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for row in results[base]:
        medians = {way: statistics.median(results[way][row]) for way in names}
        cells = [f"{medians[way]:.3f}" for way in names]
        ratios = [f"{medians[way] / medians[base]:.2f}x" for way in names[1:]]
        print(f"| {row} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
