"""Benchmark `occo masks gen`: pairs per second and peak memory of the whole pipeline.

Measured: ``masks.generate.generate_masks`` end to end (image reading on a background
thread, Grounding DINO on 2B images per batch, batched SAM embeddings, box decoding,
journal writes and the final merge into the HDF5 store), models loaded beforehand. Each
row is the median of ``--repeats`` runs over the same synthetic dataset, each into a
fresh store. Baseline in the same run: the label-map source (no models), i.e. the I/O and
store overhead every run pays.

CPU (default): tiny random models (tests/masks_tiny.py), overhead of the pipeline.
GPU (``--gpu``): full-size random Grounding DINO tiny (Swin-T + BERT-base) with SAM ViT-B
and ViT-H at 800x600, float16 autocast; speed does not depend on the weights' values.
Random detectors fire on every query, so ``--max-boxes`` (default 8) caps the boxes per
image at a realistic count.

    python benchmarks/bench_masks.py                 # CPU, tiny models
    python benchmarks/bench_masks.py --gpu           # GPU, full-size models
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import masks_tiny as tiny  # noqa: E402

from occo.data.io import write_image_atomic  # noqa: E402
from occo.data.pairing import pair_images  # noqa: E402
from occo.masks.generate import ModelMaskConfig, ModelMaskSource, generate_masks  # noqa: E402
from occo.masks.labels import LabelMaskSource  # noqa: E402


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: reset the process's resident-set high-water mark (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_source(
    source, pairs, folder: Path, batch: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median pairs/s and max peak memory (MiB) over repeats, each into a fresh store."""
    rates, peaks = [], []
    generate_masks(
        pairs[: 2 * batch], folder / f"warmup-{time.monotonic_ns()}.h5", source, batch_size=batch
    )  # warm-up
    for r in range(repeats):
        gc.collect()
        reset_peak(device)
        start = time.perf_counter()
        generate_masks(
            pairs, folder / f"run-{batch}-{r}-{time.monotonic_ns()}.h5", source, batch_size=batch
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(len(pairs) / (time.perf_counter() - start))
        peaks.append(peak_mib(device))
    return statistics.median(rates), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="full-size models on CUDA")
    parser.add_argument(
        "--pairs", type=int, default=0, help="pairs per run (default 16 CPU, 64 GPU)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="*", default=None, help="batch sizes (pairs)")
    parser.add_argument("--max-boxes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs CUDA")
    n_pairs = args.pairs or (64 if args.gpu else 16)
    size = (600, 800) if args.gpu else (60, 80)
    batches = args.batch or ([4, 8] if args.gpu else [1, 4])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset = tiny.write_dataset(folder / "ds", pairs=n_pairs, size=size)
        labels = np.zeros(size, np.uint8)
        labels[size[0] // 4 : size[0] // 2, size[1] // 4 : size[1] // 2] = 2
        for stem in (f"{i:04d}" for i in range(n_pairs)):
            write_image_atomic(folder / "labels" / f"{stem}.png", labels)
        pairs = pair_images(dataset / "ir", dataset / "vi").pairs

        t0 = time.perf_counter()
        detector = tiny.save_grounding_dino(folder / "gdino", tiny=not args.gpu)
        segmenters = (
            {
                "SAM ViT-B": tiny.save_sam(folder / "sam_b", "vit_b"),
                "SAM ViT-H": tiny.save_sam(folder / "sam_h", "vit_h"),
            }
            if args.gpu
            else {"tiny SAM": tiny.save_sam(folder / "sam")}
        )
        build_s = time.perf_counter() - t0

        rows = []
        rate, peak = time_source(
            LabelMaskSource(folder / "labels", [2]),
            pairs,
            folder,
            batches[-1],
            args.repeats,
            device,
        )
        rows.append(("label maps (baseline: I/O + store)", batches[-1], rate, peak, 0.0))
        dtype = "float16" if args.gpu else "float32"
        for name, segmenter in segmenters.items():
            config = ModelMaskConfig(
                detector=str(detector),
                segmenter=str(segmenter),
                box_threshold=0.0,
                max_boxes=args.max_boxes,
                dtype=dtype,
            )
            source = ModelMaskSource(config, device)
            start = time.perf_counter()
            source.setup()
            load_s = time.perf_counter() - start
            detector_name = "Grounding DINO tiny" if args.gpu else "tiny Grounding DINO"
            for batch in batches:
                rate, peak = time_source(source, pairs, folder, batch, args.repeats, device)
                rows.append((f"{detector_name} + {name}", batch, rate, peak, load_s))
            del source
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    where = (
        torch.cuda.get_device_name(device)
        if args.gpu
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    peak_kind = "peak CUDA memory allocated" if args.gpu else "peak RSS of the process"
    print(
        f"\n`occo masks gen` pipeline, {n_pairs} pairs of {size[1]}x{size[0]}, {where}, {dtype}, "
        f"max {args.max_boxes} boxes/image, median of {args.repeats} runs (model build {build_s:.1f} s)\n"
    )
    print(f"| source | batch (pairs) | pairs/s | {peak_kind} (MiB) | model load (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, batch, rate, peak, load_s in rows:
        print(f"| {name} | {batch} | {rate:.2f} | {peak:.0f} | {load_s:.2f} |")


if __name__ == "__main__":
    main()
