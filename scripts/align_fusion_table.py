"""What `occo fuse --align` does to fused images: displaced copies against the registered pair.

Takes --pairs pairs of each shared data set (TNO, msrs20, RoadScene), displaces each
infrared image by known transforms (as scripts/registration_table.py does), fuses the
copies with and without --align (occo's library, FIFN's bundled weights unless --method),
and compares each fused image with the fused image of the pair as published: SSIM
(Gaussian window 1.5, Wang et al. 2004, on luminance) and mean absolute difference (grey
levels). The pairs as published carry their own small misregistration, which --align
also removes; so the aligned copies are compared with the published pair fused with
--align as well ("vs aligned"), and once more 40 px in from the edges, where the filled
border is left out. One side-by-side strip per set is written to OUT (fused published |
copy without --align | copy with --align, a crop at full resolution), to be looked at.

Usage:
    python scripts/align_fusion_table.py --out /tmp/align-fusion
    python scripts/align_fusion_table.py --out /tmp/align-fusion --pairs 4 --method seafusion
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from registration_table import DATA, SETS, _matrix, misalign

from occo.data.io import read_image, write_image_atomic
from occo.data.pairing import pair_images
from occo.models.fusing import FuseSettings, fuse_folder

#: Displacements: (name, dx, dy, rotation degrees, scale).
DISPLACEMENTS = (
    ("shift 12 px", 0, 12, 0.0, 1.0),
    ("shift 25 px + rotation -5 deg + scale 0.97", 20, -15, -5.0, 0.97),
    ("scale 1.05", 0, 0, 0.0, 1.05),
)
INSIDE_PX = 40


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images (float, 0..255), Gaussian window sigma 1.5."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), 1.5)

    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    return float(
        (((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean()
    )


def _gray(path: Path) -> np.ndarray:
    x = read_image(path).astype(np.float64)
    return x @ np.array([0.299, 0.587, 0.114]) if x.ndim == 3 else x


def _fuse(ir_dir: Path, vi_dir: Path, out: Path, method: str | None, align: bool) -> None:
    settings = FuseSettings(method=method, device="cpu", align=align, workers=1, misaligned_px=0)
    result = fuse_folder(ir_dir, vi_dir, out, settings)
    if result.failures:
        raise SystemExit(f"fusing {ir_dir} failed: {result.failures}")


def _strip(paths: list[Path], out: Path) -> None:
    """The images side by side, a crop of their top-left quarter, a white gap between."""
    images = [read_image(p) for p in paths]
    images = [x if x.ndim == 3 else np.dstack([x] * 3) for x in images]
    h, w = images[0].shape[:2]
    crop = [x[: h // 2, : w // 2] for x in images]
    gap = np.full((h // 2, 6, 3), 255, np.uint8)
    row = [crop[0]]
    for x in crop[1:]:
        row += [gap, x]
    write_image_atomic(out, np.hstack(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (made; reused)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=2, help="pairs per set")
    parser.add_argument("--method", default=None, help="registered method [default: fifn]")
    args = parser.parse_args()
    work = args.out
    stems: dict[str, str] = {}  # output stem -> set
    for name in SETS:
        pairing = pair_images(args.data / name / "ir", args.data / name / "vi")
        picks = np.linspace(0, len(pairing.pairs) - 1, args.pairs + 2)[1:-1].round().astype(int)
        for index in picks:
            stem, ir_path, vi_path = pairing.pairs[index]
            ir, vi = read_image(ir_path), read_image(vi_path)
            if ir.shape[:2] != vi.shape[:2]:
                vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
            key = f"{name}_{stem}"
            stems[key] = name
            if (work / "vi" / f"{key}.png").exists():
                continue
            write_image_atomic(work / "ir" / f"{key}.png", ir)
            for k, (_, dx, dy, angle, scale) in enumerate(DISPLACEMENTS):
                moved = misalign(ir, _matrix(ir.shape, dx, dy, angle, scale))
                write_image_atomic(work / f"ir{k}" / f"{key}.png", moved)
            write_image_atomic(work / "vi" / f"{key}.png", vi)
    _fuse(work / "ir", work / "vi", work / "fused", args.method, align=False)
    _fuse(work / "ir", work / "vi", work / "fused-align", args.method, align=True)
    print(f"{len(stems)} pairs ({args.pairs} per set: {', '.join(SETS)}), method "
          f"{args.method or 'fifn'}; fused copies against the fused pair as published")  # fmt: skip
    print("| displacement | pairs | without --align: SSIM | MAE | with --align: SSIM | MAE "
          "| with --align vs aligned: SSIM | MAE | same, 40 px in: SSIM | MAE |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    inner = (slice(INSIDE_PX, -INSIDE_PX), slice(INSIDE_PX, -INSIDE_PX))
    for k, (label, *_) in enumerate(DISPLACEMENTS):
        _fuse(work / f"ir{k}", work / "vi", work / f"fused{k}", args.method, align=False)
        _fuse(work / f"ir{k}", work / "vi", work / f"fused{k}-align", args.method, align=True)
        scores: dict[str, list[tuple[float, float]]] = {
            "plain": [],
            "align": [],
            "vs": [],
            "in": [],
        }
        for key in stems:
            ref, ref_aligned = (
                _gray(work / "fused" / f"{key}.png"),
                _gray(work / "fused-align" / f"{key}.png"),
            )
            plain, aligned = (
                _gray(work / f"fused{k}" / f"{key}.png"),
                _gray(work / f"fused{k}-align" / f"{key}.png"),
            )
            scores["plain"].append((ssim(plain, ref), float(np.abs(plain - ref).mean())))
            scores["align"].append((ssim(aligned, ref), float(np.abs(aligned - ref).mean())))
            scores["vs"].append(
                (ssim(aligned, ref_aligned), float(np.abs(aligned - ref_aligned).mean()))
            )
            a, b = aligned[inner], ref_aligned[inner]
            scores["in"].append((ssim(a, b), float(np.abs(a - b).mean())))
        cells = " | ".join(f"{np.median([s for s, _ in v]):.3f} | {np.median([m for _, m in v]):.2f}"
                           for v in scores.values())  # fmt: skip
        print(f"| {label} | {len(stems)} | {cells} |")
    print("(medians over the pairs)")
    for key, name in stems.items():
        if name in {stems[k] for k in list(stems)[: list(stems).index(key)]}:
            continue  # one strip per set
        strip = work / f"strip_{key}.png"
        _strip([work / "fused" / f"{key}.png", work / "fused0" / f"{key}.png",
                work / "fused0-align" / f"{key}.png"], strip)  # fmt: skip
        print(f"strip ({DISPLACEMENTS[0][0]}): {strip}")


if __name__ == "__main__":
    main()
