"""Benchmark `occo eval detect`: images per second of the detector path, scoring time per 1,000 images.

Detector path: ``eval.detectors.run_detector`` end to end (images read on a background
thread, batched forward pass, post-processing to per-class detections), model loaded
beforehand, on synthetic images. Each row is the median of ``--repeats`` runs.

- CPU (default): tiny random Grounding DINO (zero-shot path) and tiny random DETR
  (closed-set path) from tests/, i.e. the pipeline's own overhead around a model.
- GPU (``--gpu``): the full Grounding DINO tiny architecture (Swin-T + BERT-base, random
  weights: speed does not depend on their values) at 640x480, float16 autocast.

Scoring: ``eval.detection.score_detections`` (pycocotools COCOeval) on synthetic ground
truth (``--objects`` per image over 3 classes) and predictions (``--dets`` per image,
jittered boxes, random scores), reported as seconds per 1,000 images.

    python benchmarks/bench_eval.py              # CPU
    python benchmarks/bench_eval.py --quick      # smallest setting, to check the script
    python benchmarks/bench_eval.py --gpu        # on a CUDA machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ (tiny model builders)

from occo.data.annotations import ImageBoxes  # noqa: E402
from occo.data.io import write_image_atomic  # noqa: E402
from occo.eval.detection import score_detections  # noqa: E402
from occo.eval.detectors import DetectorConfig, load_detector, run_detector  # noqa: E402

CLASSES = ["person", "bicycle", "car"]


def machine() -> str:
    """The CPU model from /proc/cpuinfo (or the platform), and the threads torch uses."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        name = platform.processor() or platform.machine()
    return f"{name}, {torch.get_num_threads()} torch thread(s)"


def synthetic_images(folder: Path, count: int, size: tuple[int, int]) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.png"
        write_image_atomic(path, image)
        items.append((path.stem, path))
    return items


def time_detector(detector, items, batch: int, repeats: int, device: torch.device) -> float:
    """Median images/s over repeats (after one warm-up batch)."""
    run_detector(detector, items[:batch], batch)
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run_detector(detector, items, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def synthetic_scores(count: int, objects: int, dets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes, truth, found = {}, {}, {}
    for i in range(count):
        stem = f"{i:05d}"
        sizes[stem] = (480, 640)
        xy = rng.uniform(0, 560, (objects, 2))
        boxes = np.hstack([xy, xy + rng.uniform(10, 80, (objects, 2))])
        labels = list(rng.choice(CLASSES, objects))
        truth[stem] = ImageBoxes(boxes, labels)
        pick = rng.integers(0, objects, dets)
        jitter = boxes[pick] + rng.normal(0, 6, (dets, 4))
        found[stem] = ImageBoxes(jitter, [labels[j] for j in pick], rng.uniform(0, 1, dets))
    return sizes, truth, found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="full-size Grounding DINO tiny on CUDA")
    parser.add_argument("--quick", action="store_true", help="smallest setting (checks the script)")
    parser.add_argument("--images", type=int, default=0, help="images per detector run")
    parser.add_argument("--batch", type=int, nargs="*", default=None, help="batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--score-images", type=int, default=1000, help="images per scoring run")
    parser.add_argument("--objects", type=int, default=8, help="ground-truth objects per image")
    parser.add_argument("--dets", type=int, default=50, help="predictions per image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs CUDA")
    device = torch.device("cuda" if args.gpu else "cpu")
    repeats = 1 if args.quick else args.repeats
    count = args.images or (4 if args.quick else (64 if args.gpu else 32))
    batches = args.batch or ([2] if args.quick else ([1, 8] if args.gpu else [1, 4]))
    size = (480, 640) if args.gpu else (60, 80)
    score_images = 100 if args.quick else args.score_images

    from tests import eval_tiny, masks_tiny

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = synthetic_images(folder / "images", count, size)
        if args.gpu:
            models = {
                "Grounding DINO tiny (random)": masks_tiny.save_grounding_dino(
                    folder / "g", tiny=False
                )
            }
        else:
            models = {
                "tiny Grounding DINO (zero-shot path)": masks_tiny.save_grounding_dino(
                    folder / "g"
                ),
                "tiny DETR (closed-set path)": eval_tiny.save_detr(folder / "d"),
            }
        dtype = "float16" if args.gpu else "float32"
        for name, path in models.items():
            detector = load_detector(DetectorConfig(str(path), dtype=dtype), CLASSES, device)
            for batch in batches:
                rows.append((name, batch, time_detector(detector, items, batch, repeats, device)))
            del detector

    sizes, truth, found = synthetic_scores(score_images, args.objects, args.dets)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_detections(sizes, truth, found, CLASSES)
        times.append(time.perf_counter() - start)
    per_1000 = statistics.median(times) * 1000 / score_images

    where = torch.cuda.get_device_name(device) if args.gpu else machine()
    print(
        f"\n`occo eval detect`, {where}, {dtype}, {count} images of {size[1]}x{size[0]}, median of {repeats}\n"
    )
    print("| detector | batch | images/s |")
    print("|---|---:|---:|")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:.2f} |")
    print(
        f"\nScoring (pycocotools COCOeval, 3 classes, {args.objects} objects and {args.dets} "
        f"predictions per image, {score_images} images): {per_1000:.2f} s per 1,000 images "
        f"({machine()})"
    )


if __name__ == "__main__":
    main()
