"""Score the shared TNO fused images and compare with the reference table, metric by metric.

    python scripts/check_metrics_exactness.py [--shared ../shared] [--tolerance 1e-9]

Scores ``shared/data/tno/fused/*`` against ``shared/data/tno/{ir,vi}`` with occo's
metrics and prints, per metric, the largest relative error against
``shared/reference/tno_metrics_reference.csv`` and the image where it occurs. Exit code
0 when every metric is within the tolerance, 1 otherwise.

VIF is discontinuous: its 1e-10 thresholds on local variances that are computed as
``E[x^2] - E[x]^2`` (cancellation around 255^2) decide whether a pixel counts, so the
last bits of float64 rounding can switch a pixel on or off. occo recomputes such
windows in the reference's own summation order (``eval.metrics.vif_exact``), which
brings every image within ~3e-13. Should a VIF value still be off by more than the
tolerance, the script recomputes VIF in extended precision (long double, ~1e-19
relative, far below the thresholds) and prints how far occo and the reference each are
from that value, which says whose rounding is responsible.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from occo.data.io import read_image  # noqa: E402
from occo.eval.metrics.inputs import to_gray_uint8  # noqa: E402
from occo.eval.scoring import ImageJob, default_workers, score_jobs  # noqa: E402


def _vif_extended(ref: np.ndarray, dist: np.ndarray) -> float:
    """vifp_mscale in long double with an exactly normalised separable Gaussian."""
    ld = np.longdouble
    ref, dist = ref.astype(ld), dist.astype(ld)
    eps, sigma_nsq = ld(1e-10), ld(2)

    def filt(x, g):
        k = len(g)
        h, w = x.shape[0] - k + 1, x.shape[1] - k + 1
        if h <= 0 or w <= 0:
            return np.zeros((0, 0), ld)
        tmp = sum(g[i] * x[:, i : i + w] for i in range(k))
        return sum(g[i] * tmp[i : i + h, :] for i in range(k))

    num = den = ld(0)
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        x = np.arange(n, dtype=ld) - ld(n - 1) / 2
        sd = ld(n) / 5
        g = np.exp(-(x * x) / (2 * sd * sd))
        g /= g.sum()
        if scale > 1:
            ref, dist = filt(ref, g)[::2, ::2], filt(dist, g)[::2, ::2]
        if min(ref.shape) < n:
            break
        mu1, mu2 = filt(ref, g), filt(dist, g)
        s1 = np.maximum(filt(ref * ref, g) - mu1 * mu1, 0)
        s2 = np.maximum(filt(dist * dist, g) - mu2 * mu2, 0)
        s12 = filt(ref * dist, g) - mu1 * mu2
        gain = s12 / (s1 + eps)
        sv = s2 - gain * s12
        low1, low2 = s1 < eps, s2 < eps
        gain[low1], sv[low1], s1[low1] = 0, s2[low1], 0
        gain[low2], sv[low2] = 0, 0
        neg = gain < 0
        sv[neg], gain[neg] = s2[neg], 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + gain**2 * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    return float(num / den)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--tolerance", type=float, default=1e-9)
    parser.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores")
    parser.add_argument(
        "--no-explain", action="store_true", help="skip the extended-precision VIF check"
    )
    args = parser.parse_args()
    tno = args.shared / "data" / "tno"
    table = args.shared / "reference" / "tno_metrics_reference.csv"
    if not table.is_file():
        print(f"skipped: {table} not found")
        return 0
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [c for c in rows[0] if c not in ("method", "image")]
    jobs = [
        ImageJob(
            r["method"],
            tno / "fused" / r["method"] / r["image"],
            tno / "ir" / r["image"],
            tno / "vi" / r["image"],
            tuple(names),
        )
        for r in rows
    ]
    start = time.perf_counter()
    scores = score_jobs(jobs, args.workers or default_workers())
    elapsed = time.perf_counter() - start

    worst: dict[str, tuple[float, str]] = {n: (0.0, "") for n in names}
    over: dict[str, list[tuple[str, float, float, float]]] = {n: [] for n in names}
    for row, score in zip(rows, scores, strict=True):
        where = f"{row['method']}/{row['image']}"
        for name in names:
            ref, ours = float(row[name]), score.values[name]
            rel = abs(ours - ref) / abs(ref)
            if rel > worst[name][0]:
                worst[name] = (rel, where)
            if rel > args.tolerance:
                over[name].append((where, rel, ours, ref))

    print(
        f"{len(rows)} fused images ({', '.join(sorted({r['method'] for r in rows}))}) scored in {elapsed:.1f} s; "
        f"tolerance {args.tolerance:g} relative\n"
    )
    print("| metric | largest relative error | at | images over tolerance |")
    print("|---|---|---|---|")
    for name in names:
        rel, where = worst[name]
        print(f"| {name} | {rel:.2e} | {where or '-'} | {len(over[name])} |")

    if over["VIF"] and not args.no_explain:
        print("\nVIF values over tolerance, against an extended-precision recomputation:\n")
        print(
            "| image | occo | reference | long double | occo vs long double | reference vs long double |"
        )
        print("|---|---|---|---|---|---|")
        for where, _, ours, ref in over["VIF"]:
            method, image = where.split("/")
            f, a, b = (
                to_gray_uint8(read_image(p)).astype(np.float64)
                for p in (tno / "fused" / method / image, tno / "ir" / image, tno / "vi" / image)
            )
            exact = _vif_extended(a, f) + _vif_extended(b, f)
            print(
                f"| {where} | {ours!r} | {ref!r} | {exact!r} | "
                f"{abs(ours - exact) / exact:.1e} | {abs(ref - exact) / exact:.1e} |"
            )
    failed = [n for n in names if over[n]]
    print(
        f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS'}: "
        f"{len(names) - len(failed)}/{len(names)} metrics within {args.tolerance:g} on every image"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
