"""Time occo's metrics per image on the 42 TNO pairs, beside a straightforward implementation.

The straightforward implementation below follows the same formulas the obvious way
(direct 2-D 'valid' filtering with the 2-D Gaussian window, one pass per metric, each
metric converting and filtering its own inputs). Both run in this process on the same
images; the script prints a markdown table of medians and the largest relative
difference between the two per metric.

    python benchmarks/bench_metrics.py                  # occo on 42 images, baseline on 6
    python benchmarks/bench_metrics.py --baseline-images 42 --method SeAFusion
    python benchmarks/bench_metrics.py --images 3 --baseline-images 1 --repeats 1   # a check

One-core numbers: OpenCV and BLAS limited to one thread, one process. All-cores numbers:
occo's process pool (``eval.scoring.score_jobs``), one image per task. The region rows
(``occo metrics --masks``) use synthetic box masks covering about a tenth of each image,
as MSRS's person and car boxes do.
"""

from __future__ import annotations

import os

# One thread for BLAS before numpy loads (the one-core measurement).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from occo.data.io import read_image  # noqa: E402
from occo.eval.metrics import METRIC_NAMES, compute_metrics  # noqa: E402
from occo.eval.metrics.inputs import to_gray_uint8  # noqa: E402
from occo.eval.metrics.regions import REGION_METRICS  # noqa: E402
from occo.eval.region_scoring import RegionSpec  # noqa: E402
from occo.eval.scoring import ImageJob, default_workers, score_jobs  # noqa: E402
from occo.masks.store import (  # noqa: E402
    FORMAT,
    STORE_VERSION,
    ModalityMasks,
    PairMasks,
    write_h5_atomic,
    write_pair,
)

# --------------------------------------------------------------------------------------
# Straightforward implementation (baseline): the formulas written directly, per metric.
# --------------------------------------------------------------------------------------


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', size, sigma)."""
    m = (size - 1) / 2.0
    y, x = np.mgrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    return h / h.sum()


def _filter2_valid(window: np.ndarray, image: np.ndarray) -> np.ndarray:
    """MATLAB filter2(window, image, 'valid') by direct 2-D summation."""
    k = window.shape[0]
    h, w = image.shape[0] - k + 1, image.shape[1] - k + 1
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)))
    out = np.zeros((h, w))
    for i in range(k):
        for j in range(k):
            out += window[i, j] * image[i : i + h, j : j + w]
    return out


def _conv2_same_3x3(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB conv2(image, kernel, 'same') for a 3x3 kernel, zero padding."""
    flipped = kernel[::-1, ::-1]
    padded = np.pad(image, 1)
    out = np.zeros_like(image)
    for i in range(3):
        for j in range(3):
            out += flipped[i, j] * padded[i : i + image.shape[0], j : j + image.shape[1]]
    return out


def _entropy(image_u8: np.ndarray) -> float:
    hist = np.histogram(image_u8, bins=256, range=(0, 256))[0] / image_u8.size
    hist = hist[hist > 0]
    return float(-np.sum(hist * np.log2(hist)))


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def base_en(a, b, f):
    return _entropy(f)


def base_sf(a, b, f):
    f = f.astype(np.float64)
    rf = np.mean((f[:, 1:] - f[:, :-1]) ** 2)
    cf = np.mean((f[1:, :] - f[:-1, :]) ** 2)
    return float(np.sqrt(rf + cf))


def base_ag(a, b, f):
    f = f.astype(np.float64)
    gy, gx = np.gradient(f)
    m, n = f.shape
    return float(np.sum(np.sqrt((gx**2 + gy**2) / 2)) / ((m - 1) * (n - 1)))


def base_cc(a, b, f):
    a, b, f = (x.astype(np.float64) for x in (a, b, f))
    return (_corr(a, f) + _corr(b, f)) / 2


def base_sd(a, b, f):
    return float(np.std(f.astype(np.float64)))


def base_mi(a, b, f):
    def joint_entropy(x, y):
        # The toolkit's uint8 + 1 saturates: 254 and 255 share a bin.
        xi = np.minimum(x.astype(np.int64) + 1, 255) - 1
        yi = np.minimum(y.astype(np.int64) + 1, 255) - 1
        h = np.zeros((256, 256))
        np.add.at(h, (xi.ravel(), yi.ravel()), 1)
        p = h[h > 0] / x.size
        return float(-np.sum(p * np.log2(p)))

    hf = _entropy(f)
    return (_entropy(a) + hf - joint_entropy(f, a)) + (_entropy(b) + hf - joint_entropy(f, b))


def base_scd(a, b, f):
    a, b, f = (x.astype(np.float64) for x in (a, b, f))
    return _corr(f - b, a) + _corr(f - a, b)


def _vifp(ref, dist):
    sigma_nsq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _fspecial_gaussian(n, n / 5.0)
        if scale > 1:
            ref = _filter2_valid(win, ref)[::2, ::2]
            dist = _filter2_valid(win, dist)[::2, ::2]
        mu1 = _filter2_valid(win, ref)
        mu2 = _filter2_valid(win, dist)
        s1 = _filter2_valid(win, ref * ref) - mu1 * mu1
        s2 = _filter2_valid(win, dist * dist) - mu2 * mu2
        s12 = _filter2_valid(win, ref * dist) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        g[s1 < eps] = 0
        sv[s1 < eps] = s2[s1 < eps]
        s1[s1 < eps] = 0
        g[s2 < eps] = 0
        sv[s2 < eps] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g**2 * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    return num / den


def base_vif(a, b, f):
    a, b, f = (x.astype(np.float64) for x in (a, b, f))
    return float(_vifp(a, f) + _vifp(b, f))


def base_qabf(a, b, f):
    a, b, f = (x.astype(np.float64) for x in (a, b, f))
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def grad(x):
        sx, sy = _conv2_same_3x3(x, h3), _conv2_same_3x3(x, h1)
        g = np.sqrt(sx**2 + sy**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            angle = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1, sx)))
        return g, angle

    def q(ga, aa, gf, af):
        with np.errstate(divide="ignore", invalid="ignore"):
            gaf = np.where(ga > gf, gf / ga, np.where(ga == gf, gf, ga / gf))
        aaf = 1 - np.abs(aa - af) / (np.pi / 2)
        qg = 0.9994 / (1 + np.exp(-15 * (gaf - 0.5)))
        qa = 0.9879 / (1 + np.exp(-22 * (aaf - 0.8)))
        return qg * qa

    ga, aa = grad(a)
    gb, ab = grad(b)
    gf, af = grad(f)
    return float(np.sum(q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb) / np.sum(ga + gb))


def base_mse(a, b, f):
    a, b, f = (x.astype(np.float64) / 255.0 for x in (a, b, f))
    return float(0.5 * np.mean((f - a) ** 2) + 0.5 * np.mean((f - b) ** 2))


def base_psnr(a, b, f):
    return float(20 * np.log10(255.0 / np.sqrt(base_mse(a, b, f))))


def _ssim(x, y):
    win = _fspecial_gaussian(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _filter2_valid(win, x), _filter2_valid(win, y)
    s1 = _filter2_valid(win, x * x) - mu1 * mu1
    s2 = _filter2_valid(win, y * y) - mu2 * mu2
    s12 = _filter2_valid(win, x * y) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def base_ssim(a, b, f):
    a, b, f = (x.astype(np.float64) for x in (a, b, f))
    return _ssim(a, f) + _ssim(b, f)


BASELINE = {
    "EN": base_en,
    "SF": base_sf,
    "AG": base_ag,
    "CC": base_cc,
    "SD": base_sd,
    "MI": base_mi,
    "SCD": base_scd,
    "VIF": base_vif,
    "Qabf": base_qabf,
    "MSE": base_mse,
    "PSNR": base_psnr,
    "SSIM": base_ssim,
}

# --------------------------------------------------------------------------------------


def _load(tno: Path, method: str) -> list[tuple[str, Path, Path, Path]]:
    stems = sorted(p.name for p in (tno / "fused" / method).glob("*.png"))
    return [(s, tno / "fused" / method / s, tno / "ir" / s, tno / "vi" / s) for s in stems]


def _box_masks(store: Path, items: list[tuple[str, Path, Path, Path]]) -> None:
    """A mask store of boxes covering about 10% of each image: two infrared, two visible,
    overlapping, so that all four of OCCO's regions are present."""

    def box(shape, y0, y1, x0, x1):
        h, w = shape
        mask = np.zeros(shape, np.uint8)
        mask[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)] = 1
        return mask

    pairs = []
    for _, fused, _, _ in items:
        shape = read_image(fused).shape[:2]
        ir = box(shape, 0.40, 0.70, 0.20, 0.30) | box(shape, 0.50, 0.80, 0.60, 0.68)
        vi = box(shape, 0.45, 0.75, 0.22, 0.33) | box(shape, 0.10, 0.30, 0.40, 0.55)
        pairs.append(PairMasks(Path(fused).stem, ModalityMasks(ir), ModalityMasks(vi)))
    write_h5_atomic(
        store,
        {"format": FORMAT, "version": STORE_VERSION},
        lambda h5: [write_pair(h5, pair) for pair in pairs],
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tno", type=Path, default=ROOT.parent / "shared" / "data" / "tno")
    parser.add_argument("--method", default="SeAFusion", help="fused folder under tno/fused")
    parser.add_argument(
        "--baseline-images", type=int, default=6, help="images for the slow baseline"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed passes of occo over the images"
    )
    parser.add_argument("--workers", type=int, default=0, help="all-cores run; 0 = every core")
    parser.add_argument("--images", type=int, default=0, help="first N images only; 0 = all")
    args = parser.parse_args()
    if not (args.tno / "fused" / args.method).is_dir():
        print(f"skipped: {args.tno / 'fused' / args.method} not found (needs ../shared)")
        return 0
    cv2.setNumThreads(1)
    items = _load(args.tno, args.method)
    if args.images:
        items = items[: args.images]
    images = [tuple(read_image(p) for p in (f, a, b)) for _, f, a, b in items]
    eleven = METRIC_NAMES[:11]

    # occo, one core: every metric of an image in one call, repeated; median per image.
    per_image: dict[str, list[float]] = {"eleven": [], "twelve": []}
    values = []
    for _ in range(args.repeats):
        for key, names in (("eleven", eleven), ("twelve", METRIC_NAMES)):
            for f, a, b in images:
                start = time.perf_counter()
                compute_metrics(f, a, b, names)
                per_image[key].append(time.perf_counter() - start)
        values = [compute_metrics(f, a, b) for f, a, b in images]

    # occo per metric (one core), to show where the time goes.
    per_metric_occo = {}
    for name in METRIC_NAMES:
        times = []
        for f, a, b in images:
            start = time.perf_counter()
            compute_metrics(f, a, b, [name])
            times.append(time.perf_counter() - start)
        per_metric_occo[name] = statistics.median(times)

    # occo end to end (read the three PNGs + all metrics), one process, then the CLI's
    # process pool over all cores.
    workers = args.workers or default_workers()
    jobs = [ImageJob(args.method, f, a, b, METRIC_NAMES) for _, f, a, b in items]
    start = time.perf_counter()
    score_jobs(jobs, 1)
    serial_per_image = (time.perf_counter() - start) / len(jobs)
    # The same with metrics inside regions (occo metrics --masks), one process.
    region_per_image = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "masks.h5"
        _box_masks(store, items)
        for label, regions in (
            ("objects, background", ("objects", "background")),
            ("OCCO's four regions", ("shared", "unique_ir", "unique_vi", "background")),
        ):
            spec = RegionSpec(store, regions, REGION_METRICS)
            with_regions = [dataclasses.replace(job, regions=spec) for job in jobs]
            score_jobs(with_regions[:1], 1)  # opens the store
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                score_jobs(with_regions, 1)
                times.append((time.perf_counter() - start) / len(jobs))
            region_per_image[label] = statistics.median(times)

    start = time.perf_counter()
    score_jobs(jobs[:workers], workers)  # starts the fork server (imports once per run)
    pool_start = time.perf_counter() - start
    start = time.perf_counter()
    score_jobs(jobs, workers)
    pool_per_image = (time.perf_counter() - start) / len(jobs)

    # Baseline on the first images, per metric, same process.
    n_base = min(args.baseline_images, len(images))
    per_metric_base = {name: [] for name in METRIC_NAMES}
    worst = {name: 0.0 for name in METRIC_NAMES}
    for i in range(n_base):
        f, a, b = (to_gray_uint8(x) for x in images[i])
        for name in METRIC_NAMES:
            start = time.perf_counter()
            value = BASELINE[name](a, b, f)
            per_metric_base[name].append(time.perf_counter() - start)
            ours = values[i][name]
            rel = abs(ours - value) / max(abs(value), 1e-300)
            worst[name] = max(worst[name], rel)
    base_eleven = statistics.median(
        [sum(per_metric_base[n][i] for n in eleven) for i in range(n_base)]
    )
    base_twelve = statistics.median(
        [sum(per_metric_base[n][i] for n in METRIC_NAMES) for i in range(n_base)]
    )
    occo_eleven = statistics.median(per_image["eleven"])
    occo_twelve = statistics.median(per_image["twelve"])

    pixels = statistics.median(x[0].shape[0] * x[0].shape[1] for x in images)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(
        f"TNO {args.method}: {len(images)} images (median {pixels / 1e3:.0f} k pixels), baseline "
        f"on the first {n_base}; {os.cpu_count()} cores, load average {load}; medians per image.\n"
    )
    print("| implementation | cores | 11 metrics ms/image | 12 (+ SSIM) ms/image | speed-up (11) |")
    print("|---|---|---|---|---|")
    print(f"| straightforward numpy | 1 | {_ms(base_eleven)} | {_ms(base_twelve)} | 1x |")
    print(
        f"| occo | 1 | {_ms(occo_eleven)} | {_ms(occo_twelve)} | {base_eleven / occo_eleven:.0f}x |"
    )
    print(f"| occo, reading the PNGs too | 1 | | {_ms(serial_per_image)} | |")
    print(f"| occo, reading the PNGs too, process pool | {workers} | | {_ms(pool_per_image)} | |")
    for label, seconds in region_per_image.items():
        print(
            f"| occo, reading the PNGs too, + 12 metrics inside {label} (--masks) | 1 | | "
            f"{_ms(seconds)} | |"
        )
    print(
        f"\nThe pool's fork server starts once per run: {pool_start:.1f} s (first call, {workers} images)."
    )
    print()
    print("| metric | baseline ms | occo ms | max rel. difference |")
    print("|---|---|---|---|")
    for name in METRIC_NAMES:
        print(
            f"| {name} | {_ms(statistics.median(per_metric_base[name]))} | "
            f"{_ms(per_metric_occo[name])} | {worst[name]:.1e} |"
        )
    if any(math.isnan(v) for v in worst.values()):
        print("\nnote: NaN differences mean one side was undefined")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
