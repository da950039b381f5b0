"""How well `occo check` finds misregistered pairs, and how well `occo align` undoes them.

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

The second table (alignment, data.align) takes --align-pairs pairs of each set, spread
over the set, aligns each as it is (the "registered" row: how far alignment moves a pair
published as registered, and how many are left alone), then displaced copies of each with
known transforms M (up to 40 px shifts and 8 degree rotations, and combinations), and
measures the residual: the largest distance, over the frame, between where the
alignment puts each visible pixel in the infrared and where it belongs. It belongs at
M B p, with B the transform the alignment estimates for the pair as published, applied
or not (so a set's own small misregistration, e.g. MSRS's 1% scale, is not counted as an
error; a pair left alone because warping it would gain little still has its estimate,
and its displaced copy, warped anyway, is aligned to that); the column "vs M alone"
takes the published pair as exactly registered instead. A published pair is not exactly
a similarity of its partner (parallax, lens distortion), so B itself is uncertain by
about a pixel; the last rows displace pairs registered by construction (the infrared
made from the visible image), where M is the whole truth.

Usage:
    python scripts/registration_table.py                     # ../shared/data, threshold 10 px
    python scripts/registration_table.py --align-only --align-pairs 6
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

from occo.data.align import AlignSettings, align_pair, matrix_displacement
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


#: Displacements for the alignment table: (name, dx, dy, rotation degrees, scale).
ALIGN_TRANSFORMS = (
    ("shift 3 px", 3, 0, 0.0, 1.0),
    ("shift 8 px", -8, 0, 0.0, 1.0),
    ("shift 12 px", 0, 12, 0.0, 1.0),
    ("shift 25 px", 15, -20, 0.0, 1.0),
    ("shift 40 px", 24, -32, 0.0, 1.0),
    ("rotation 2 deg", 0, 0, 2.0, 1.0),
    ("rotation -4 deg", 0, 0, -4.0, 1.0),
    ("rotation 8 deg", 0, 0, 8.0, 1.0),
    ("rotation -8 deg", 0, 0, -8.0, 1.0),
    ("scale 1.02", 0, 0, 0.0, 1.02),
    ("scale 0.96", 0, 0, 0.0, 0.96),
    ("scale 1.05", 0, 0, 0.0, 1.05),
    ("shift 6 px + rotation 2 deg + scale 1.03", 6, 0, 2.0, 1.03),
    ("shift 25 px + rotation -5 deg + scale 0.97", 20, -15, -5.0, 0.97),
    ("shift 30 px + rotation 8 deg", 18, 24, 8.0, 1.0),
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


def registered_by_construction(vi: np.ndarray, seed: int) -> np.ndarray:
    """An "infrared" image exactly registered with ``vi``: its luminance inverted (the
    other modality's contrast polarity), gamma-curved, blurred and noisy."""
    gray = vi if vi.ndim == 2 else cv2.cvtColor(vi, cv2.COLOR_RGB2GRAY)
    inverted = 1.0 - gray.astype(np.float32) / 255.0
    curved = cv2.GaussianBlur(inverted**0.7, (0, 0), 1.5)
    noisy = curved * 255.0 + np.random.default_rng(seed).normal(0.0, 4.0, curved.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _h3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def _quantiles(values: list[float]) -> str:
    if not values:
        return "- | -"
    return f"{np.median(values):.2f} | {np.percentile(values, 90):.2f}"


def _displaced(
    bases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    displacement: tuple[float, float, float, float],
    settings: AlignSettings,
    seconds: list[float],
) -> tuple[list[float], list[float], list[float], int]:
    """Align a displaced copy of each base pair: residuals against M B and against M
    alone, the displacements applied, and how many were left alone."""
    residuals, plain, amounts, left = [], [], [], 0
    for _, ir, vi, base in bases:
        matrix = _matrix(ir.shape, *displacement)
        amounts.append(applied_displacement(ir.shape, matrix))
        start = time.perf_counter()
        result = align_pair(misalign(ir, matrix), vi, settings, measure_residual=False)
        seconds.append(time.perf_counter() - start)
        left += not result.applied
        truth = (_h3(matrix) @ _h3(base))[:2]
        identity = np.eye(2, 3)
        residuals.append(matrix_displacement(result.matrix - truth + identity, ir.shape))
        plain.append(matrix_displacement(result.matrix - matrix + identity, ir.shape))
    return residuals, plain, amounts, left


def alignment_table(data: Path, per_set: int, settings: AlignSettings) -> None:
    """Print the alignment table (see the module's docstring)."""
    bases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    moved_by: list[float] = []
    moved_per_set: dict[str, list[float]] = {}
    constructed: list[float] = []
    constructed_alone = 0
    exact_bases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    alone: list[str] = []
    seconds: list[float] = []
    for name in SETS:
        if not (data / name).is_dir():
            continue
        pairing = pair_images(data / name / "ir", data / name / "vi")
        picks = np.unique(np.linspace(0, len(pairing.pairs) - 1, per_set).round().astype(int))
        for index in picks:
            stem, ir_path, vi_path = pairing.pairs[index]
            ir, vi = read_image(ir_path), read_image(vi_path)
            if ir.shape[:2] != vi.shape[:2]:
                vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
            start = time.perf_counter()
            base = align_pair(ir, vi, settings, measure_residual=False)
            seconds.append(time.perf_counter() - start)
            moved_by.append(matrix_displacement(base.matrix, ir.shape))
            moved_per_set.setdefault(name, []).append(moved_by[-1])
            made = registered_by_construction(vi, int(index))
            exact = align_pair(made, vi, settings, measure_residual=False)
            constructed.append(matrix_displacement(exact.matrix, ir.shape))
            exact_bases.append((f"{name}/{stem}", made, vi, np.eye(2, 3)))
            constructed_alone += not exact.applied
            if not base.applied:
                alone.append(f"{name}/{stem}: {base.left_alone}")
            bases.append((f"{name}/{stem}", ir, vi, base.estimated))
    print()
    print(f"alignment ({settings.model}, left alone at <= {settings.min_displacement_px:g} px): "
          f"{len(bases)} pairs ({per_set} per set: {', '.join(SETS)}); residual = largest distance "
          "over the frame between where a visible pixel is put and where it belongs, px")  # fmt: skip
    print(
        "| displacement | pairs | applied (px) | left alone | residual median | residual p90 "
        "| vs M alone: median | vs M alone: p90 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    print(f"| registered (as published): change applied | {len(bases)} | - | {len(alone)} | "
          f"{_quantiles(moved_by)} | - | - |")  # fmt: skip
    for name, moved in moved_per_set.items():
        print(f"| registered (as published), {name} only: change applied | {len(moved)} | - | - | "
              f"{_quantiles(moved)} | - | - |")  # fmt: skip
    print(
        f"| registered by construction (infrared made from the visible): change applied | "
        f"{len(constructed)} | 0 | {constructed_alone} | {_quantiles(constructed)} | - | - |"
    )
    for label, dx, dy, angle, scale in ALIGN_TRANSFORMS:
        residuals, plain, amounts, left = _displaced(bases, (dx, dy, angle, scale), settings,
                                                     seconds)  # fmt: skip
        span = f"{min(amounts):.1f}-{max(amounts):.1f}"
        print(f"| {label} | {len(bases)} | {span} | {left} | {_quantiles(residuals)} | "
              f"{_quantiles(plain)} |")  # fmt: skip
    every, amounts, left_exact = [], [], 0
    for _, dx, dy, angle, scale in ALIGN_TRANSFORMS:
        residuals, _, applied, left = _displaced(exact_bases, (dx, dy, angle, scale), settings,
                                                 seconds)  # fmt: skip
        every += residuals
        amounts += applied
        left_exact += left
    print(f"| every displacement above, pairs registered by construction (M the whole truth) | "
          f"{len(every)} | {min(amounts):.1f}-{max(amounts):.1f} | {left_exact} | "
          f"{_quantiles(every)} | - | - |")  # fmt: skip
    if alone:
        print("registered pairs left alone: " + "; ".join(alone))
    print(
        f"align: median {statistics.median(seconds):.2f} s per pair (estimate + refinement, "
        "this machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PX)
    parser.add_argument("--quick", action="store_true", help="5 pairs per set")
    parser.add_argument("--limit", type=int, default=None, help="at most N pairs per set")
    parser.add_argument("--list", default="", help="print every pair's estimate for these sets")
    parser.add_argument("--data", type=Path, default=DATA, help=f"data folder (default {DATA})")
    parser.add_argument("--copies", type=int, default=20, help="base pairs per set for copies")
    parser.add_argument("--align-pairs", type=int, default=6, help="pairs per set, alignment table")
    parser.add_argument("--align-only", action="store_true", help="only the alignment table")
    parser.add_argument("--no-align", action="store_true", help="no alignment table")
    parser.add_argument("--model", default="similarity", help="alignment model: similarity, affine")
    args = parser.parse_args()
    settings = AlignSettings(model=args.model)
    if args.align_only:
        alignment_table(args.data, args.align_pairs, settings)
        return
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
    if not args.no_align:
        alignment_table(data, args.align_pairs, settings)


if __name__ == "__main__":
    main()
