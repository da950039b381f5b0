"""How well `occo check` finds misregistered pairs: detections and false alarms per set.

Runs occo's registration estimate (data.registration) on every pair of the shared data
sets and on misaligned copies of the registered ones, made here with known transforms
(the infrared image shifted, rotated and scaled about its centre, border pixels
replicated), and prints a table: set, pairs, displacement applied (the largest distance a
pixel moves, px), pairs flagged at the threshold, and for the copies the median error of
the estimated displacement.

TNO and MSRS are published as registered, so their flags are false alarms or the sets'
own residual misregistration; RoadScene has some visibly misaligned pairs. The copies are
made from pairs (of all three sets, at most --copies per set) whose own estimated
displacement is under 3 px, so that the displacement applied is the one to find.

Usage:
    python scripts/registration_table.py                     # ../shared/data, threshold 10 px
    python scripts/registration_table.py --threshold 4 --list roadscene
    python scripts/registration_table.py --quick             # 5 pairs per set
    python scripts/registration_table.py --data /path/to/shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from occo.data.io import read_image
from occo.data.pairing import pair_images
from occo.data.registration import DEFAULT_THRESHOLD_PX, estimate_registration

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = ("tno", "msrs20", "roadscene")
#: Misalignments applied to registered pairs: (name, dx, dy, rotation degrees, scale).
TRANSFORMS = (
    ("shift 3 px", 3, 0, 0.0, 1.0),
    ("shift 5 px", 3, 4, 0.0, 1.0),
    ("shift 8 px", -8, 0, 0.0, 1.0),
    ("shift 12 px", 0, 12, 0.0, 1.0),
    ("shift 25 px", 15, -20, 0.0, 1.0),
    ("rotation 1 deg", 0, 0, 1.0, 1.0),
    ("rotation 2 deg", 0, 0, 2.0, 1.0),
    ("rotation 4 deg", 0, 0, -4.0, 1.0),
    ("scale 1.02", 0, 0, 0.0, 1.02),
    ("scale 0.96", 0, 0, 0.0, 0.96),
    ("shift 6 px + rotation 2 deg + scale 1.03", 6, 0, 2.0, 1.03),
)


def _matrix(shape: tuple[int, ...], dx: float, dy: float, angle: float, scale: float) -> np.ndarray:
    h, w = shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    return matrix


def applied_displacement(shape: tuple[int, ...], matrix: np.ndarray) -> float:
    """Largest distance a pixel moves under ``matrix`` (at a corner or the centre)."""
    h, w = shape[:2]
    points = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], np.float64)
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.linalg.norm(moved - points, axis=1).max())


def misalign(ir: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The infrared image moved by ``matrix`` (a visible pixel p is then at matrix @ p)."""
    h, w = ir.shape[:2]
    return cv2.warpAffine(
        ir, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _pairs(data: Path, name: str, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairing = pair_images(data / name / "ir", data / name / "vi")
    out = []
    for stem, ir_path, vi_path in pairing.pairs[:limit]:
        ir, vi = read_image(ir_path), read_image(vi_path)
        if ir.shape[:2] != vi.shape[:2]:
            vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
        out.append((stem, ir, vi))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PX)
    parser.add_argument("--quick", action="store_true", help="5 pairs per set")
    parser.add_argument("--limit", type=int, default=None, help="at most N pairs per set")
    parser.add_argument("--list", default="", help="print every pair's estimate for these sets")
    parser.add_argument("--data", type=Path, default=DATA, help=f"data folder (default {DATA})")
    parser.add_argument("--copies", type=int, default=20, help="base pairs per set for copies")
    args = parser.parse_args()
    data = args.data
    limit = 5 if args.quick else args.limit
    listed = set(filter(None, args.list.split(",")))

    print(f"threshold {args.threshold:g} px; a pair is flagged when the estimate is reliable "
          "and moves some pixel more than that")  # fmt: skip
    print(
        "| set | pairs | displacement applied (px) | flagged | flagged where applied > threshold "
        "| flagged where applied <= threshold | median error (px) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    clean: list[tuple[str, np.ndarray, np.ndarray]] = []
    seconds: list[float] = []
    for name in SETS:
        if not (data / name).is_dir():
            print(f"| {name} | - | (not found in {data}) | - | - | - | - |")
            continue
        pairs = _pairs(data, name, limit)
        flagged = 0
        for stem, ir, vi in pairs:
            start = time.perf_counter()
            estimate = estimate_registration(ir, vi)
            seconds.append(time.perf_counter() - start)
            hit = estimate.misaligned(args.threshold)
            flagged += hit
            if (
                estimate.displacement_px < 3
                and sum(c[0].startswith(name) for c in clean) < args.copies
            ):
                clean.append((f"{name}/{stem}", ir, vi))
            if name in listed:
                print(
                    f"|   {stem} | | {estimate.to_dict(args.threshold)} | {'yes' if hit else 'no'} | | | |"
                )
        applied = "none (registered set)" if name != "roadscene" else "unknown (some misaligned)"
        print(f"| {name} | {len(pairs)} | {applied} | {flagged} | - | - | - |")

    for label, dx, dy, angle, scale in TRANSFORMS:
        above, below, errors, amounts = [0, 0], [0, 0], [], []
        for _, ir, vi in clean:
            matrix = _matrix(ir.shape, dx, dy, angle, scale)
            amount = applied_displacement(ir.shape, matrix)
            estimate = estimate_registration(misalign(ir, matrix), vi)
            tally = above if amount > args.threshold else below
            tally[0] += estimate.misaligned(args.threshold)
            tally[1] += 1
            errors.append(abs(estimate.displacement_px - amount))
            amounts.append(amount)
        span = f"{min(amounts):.1f}-{max(amounts):.1f}" if amounts else "-"
        error = statistics.median(errors) if errors else float("nan")
        print(f"| copies: {label} | {len(clean)} | {span} | {above[0] + below[0]} | "
              f"{above[0]}/{above[1]} | {below[0]}/{below[1]} | {error:.1f} |")  # fmt: skip
    if seconds:
        print(
            f"estimate: median {1000 * statistics.median(seconds):.0f} ms per pair (this machine)"
        )


if __name__ == "__main__":
    main()
