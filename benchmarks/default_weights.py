"""Package a training run as occo's default weights, and show how they compare.

Three steps, each a subcommand:

- ``summary RUN``: the training log of a run folder as a table (steps, wall time, loss at
  the start and the end, every validation) and the machine it ran on.
- ``package RUN OUT``: the run's ``best.safetensors`` in float16 with the provenance
  metadata that `occo fuse` shows and `occo info`-style readers expect.
- ``side-by-side OUT.png IR VI FUSED [FUSED ...]``: infrared | visible | each fused image,
  one row per stem given with ``--stem`` (the pictures of the default weights' notes).

The metric tables come from `occo metrics` itself (see the README's default-weights
section for the exact commands).

Example:
    python benchmarks/default_weights.py summary runs/default_weights
    python benchmarks/default_weights.py package runs/default_weights \\
        models/weights/occo_fifn_default.safetensors
    python benchmarks/default_weights.py side-by-side pairs.png tno/ir tno/vi old/ new/ \\
        --stem 17 --stem 00004N
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
from bench_cli import machine  # this folder is on sys.path when run as a script

from occo.data.io import read_image, write_image_atomic
from occo.data.pairing import list_images
from occo.models.checkpoint import load_weights, read_weights_metadata, save_weights


def read_log(run: Path) -> tuple[list[dict], list[dict]]:
    """(step records, validation records) of a run's log.jsonl."""
    steps, validations = [], []
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "step":
            steps.append(record)
        elif record.get("event") == "validation":
            validations.append(record)
    return steps, validations


def summary(run: Path) -> None:
    steps, validations = read_log(run)
    if not steps:
        raise SystemExit(f"{run}: no step records in log.jsonl")
    wall = steps[-1]["time"] - steps[0]["time"] + steps[0]["seconds"]
    parts = [k for k in ("loss", "ssim", "intensity", "texture") if k in steps[0]]

    def mean(records: list[dict], key: str) -> float:
        return statistics.fmean(r[key] for r in records)

    head, tail = steps[:5], steps[-5:]
    print(f"machine: {machine()}")
    print(
        f"steps: {steps[-1]['step']}, wall time {wall / 3600:.2f} h ({wall / steps[-1]['step']:.1f} s per step, validation included)"
    )
    print("| loss (mean of 5 logged steps) | " + " | ".join(parts) + " |")
    print("|---|" + "---:|" * len(parts))
    print(
        f"| steps {head[0]['step']}-{head[-1]['step']} | "
        + " | ".join(f"{mean(head, k):.4g}" for k in parts)
        + " |"
    )
    print(
        f"| steps {tail[0]['step']}-{tail[-1]['step']} | "
        + " | ".join(f"{mean(tail, k):.4g}" for k in parts)
        + " |"
    )
    if validations:
        names = [k for k in ("EN", "SF", "AG", "CC", "SD", "VIF", "Qabf") if k in validations[0]]
        print()
        print("| validation after step | " + " | ".join(names) + " |")
        print("|---:|" + "---:|" * len(names))
        for v in validations:
            mark = " (best)" if v.get("best") else ""
            print(f"| {v['step']}{mark} | " + " | ".join(f"{v[k]:.4g}" for k in names) + " |")


def package(run: Path, out: Path) -> None:
    best = run / "best.safetensors"
    meta = read_weights_metadata(best)
    train_config = json.loads(meta["train_config"])
    steps, validations = read_log(run)
    wall = steps[-1]["time"] - steps[0]["time"] + steps[0]["seconds"]
    held_out = validations[-1]["pairs"] if validations else 0
    model = load_weights(best).half()
    save_weights(
        out,
        model,
        {
            "name": "occo default weights",
            "source": "occo's default weights: FIFN trained with the pixel losses only (no CCL) on RoadScene",
            "trained_with": "objective=pixel (no CCL: no VGG19/LVM masks available)",
            "trained_on": f"RoadScene ({held_out} pairs held out for validation; TNO and MSRS not used)",
            "reproduce": "occo train RoadScene --config configs/default_weights.yaml --out runs/default_weights",
            "steps": meta["steps"],
            "epoch": meta.get("epoch", ""),
            "train_config": json.dumps(train_config, sort_keys=True),
            "selected_by": meta.get("selected_by", "last step"),
            "precision": "float16 (trained in float32 on CPU)",
            "training_machine": f"{machine()}; {wall / 3600:.2f} h for {steps[-1]['step']} steps",
            "paper_model": "not these weights: convert the authors' checkpoint with `occo convert "
            "occo.pth OUT.safetensors`, or train with the full objective: `occo masks gen DATASET` "
            "then `occo train DATASET` (needs VGG19 ImageNet weights)",
        },
    )
    print(f"wrote {out}: step {meta['steps']}, {meta.get('selected_by', 'last step')}")


def _gray_to_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:  # 16-bit infrared: stretched for display only
        lo, hi = np.percentile(image, (0.5, 99.5))
        image = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1) * 255, 0, 255).astype(
            np.uint8
        )
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def side_by_side(out: Path, folders: list[Path], stems: list[str], height: int) -> None:
    rows = []
    for stem in stems:
        tiles = []
        for folder in folders:
            path = list_images(folder).get(stem)
            if path is None:
                raise SystemExit(f"{folder}: no image named {stem}")
            image = _gray_to_bgr(read_image(path))
            scale = height / image.shape[0]
            tiles.append(
                cv2.resize(
                    image, (round(image.shape[1] * scale), height), interpolation=cv2.INTER_AREA
                )
            )
            tiles.append(np.full((height, 4, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows[:-1]
    ]
    write_image_atomic(out, np.concatenate(rows, axis=0))
    print(f"wrote {out}: {' | '.join(str(f) for f in folders)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="the training log as tables")
    p.add_argument("run", type=Path)
    p = sub.add_parser(
        "package", help="best.safetensors -> float16 default weights with provenance"
    )
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("side-by-side", help="infrared | visible | fused ... picture")
    p.add_argument("out", type=Path)
    p.add_argument("folders", type=Path, nargs="+", help="IR, VI, then fused folders")
    p.add_argument("--stem", action="append", required=True)
    p.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    if args.command == "summary":
        summary(args.run)
    elif args.command == "package":
        package(args.run, args.out)
    else:
        side_by_side(args.out, args.folders, args.stem, args.height)


if __name__ == "__main__":
    main()
