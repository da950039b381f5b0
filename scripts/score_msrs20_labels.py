"""Score MSRS's per-modality box labels against its fused-image labels, and check occo's
COCO numbers against pycocotools called directly.

    python scripts/score_msrs20_labels.py [--shared ../shared] [--seed 0]

The 20 MSRS pairs in ``shared/data/msrs20`` carry person/bicycle/car boxes drawn three
times: on the infrared image, on the visible image, and on the fused image (the union).
Each modality's boxes are written as YOLO predictions with a confidence column and
scored by ``occo eval detect`` against the fused-image labels: how much of the scene's
objects one modality's annotators could see. Two confidence settings:

- ``1.0`` for every box (the table): AP is then precision-weighted recall at the single
  operating point, the interpretable number;
- seeded random confidences (the check only): ranking and matching then matter.

For both, the same boxes go through pycocotools directly (its own COCO objects, default
parameters, boxes converted from YOLO here and clipped to the image as occo does), and
every per-class and overall AP must agree to 1e-12. Exit code 0 when they do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("infrared", "visible")


def read_yolo(path: Path, width: int, height: int) -> list[tuple[int, list[float], float]]:
    """(class, [x, y, w, h] pixels clipped to the image, confidence) per line."""
    boxes = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        conf = float(parts[5]) if len(parts) > 5 else 1.0
        x0, x1 = np.clip([(cx - w / 2) * width, (cx + w / 2) * width], 0, width)
        y0, y1 = np.clip([(cy - h / 2) * height, (cy + h / 2) * height], 0, height)
        if x1 > x0 and y1 > y0:
            boxes.append((cls, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], conf))
    return boxes


def pycocotools_direct(
    truth_dir: Path, pred_dir: Path, sizes: dict[str, tuple[int, int]], classes: list[str]
) -> dict:
    """Per-class AP50 and AP50:95 and the two summary numbers, straight from COCOeval."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {stem: i for i, stem in enumerate(sorted(sizes), 1)}
    dataset = {
        "images": [{"id": ids[s], "width": w, "height": h} for s, (h, w) in sizes.items()],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
        "annotations": [],
    }
    results = []
    for stem, (height, width) in sizes.items():
        label = truth_dir / f"{stem}.txt"
        for cls, box, _ in read_yolo(label, width, height) if label.is_file() else []:
            dataset["annotations"].append(
                {"id": len(dataset["annotations"]) + 1, "image_id": ids[stem],
                 "category_id": cls + 1, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            )  # fmt: skip
        pred = pred_dir / f"{stem}.txt"
        for cls, box, conf in read_yolo(pred, width, height) if pred.is_file() else []:
            results.append(
                {"image_id": ids[stem], "category_id": cls + 1, "bbox": box, "score": conf}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # area all, maxDets 100

    def mean(values: np.ndarray) -> float:
        defined = values[values > -1]
        return float(defined.mean()) if defined.size else float("nan")

    per_class = {
        name: {"AP50": mean(precision[0, :, k]), "AP50_95": mean(precision[:, :, k])}
        for k, name in enumerate(classes)
    }
    return {
        "classes": per_class,
        "all": {"AP50_95": evaluator.stats[0], "AP50": evaluator.stats[1]},
    }


def write_predictions(source: Path, target: Path, rng: np.random.Generator | None) -> None:
    """The labels with a confidence column: 1.0, or random in (0, 1) from ``rng``."""
    target.mkdir(parents=True, exist_ok=True)
    for label in sorted(source.glob("*.txt")):
        lines = []
        for line in label.read_text().splitlines():
            if line.split():
                conf = 1.0 if rng is None else float(rng.uniform(0.01, 1.0))
                lines.append(" ".join(line.split()[:5]) + f" {conf:.6f}")
        (target / label.name).write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random confidences")
    args = parser.parse_args()
    data = args.shared / "data" / "msrs20"
    labels = data / "labels"
    if not (labels / "fusion").is_dir():
        print(f"no MSRS labels in {labels}", file=sys.stderr)
        return 2
    from PIL import Image

    from occo.data.classes import read_class_names

    table_of = read_class_names(labels / "classes.txt")
    classes = [table_of[i] for i in sorted(table_of)]
    sizes = {}
    for path in sorted((data / "ir").iterdir()):
        with Image.open(path) as image:
            sizes[path.stem] = (image.height, image.width)

    worst = 0.0
    table = None
    with tempfile.TemporaryDirectory() as tmp:
        for setting, rng in (("1.0", None), ("random", np.random.default_rng(args.seed))):
            folder = Path(tmp) / setting
            for modality in MODALITIES:
                write_predictions(labels / modality, folder / modality, rng)
            command = [
                sys.executable, "-m", "occo", "eval", "detect",
                *(str(folder / m) for m in MODALITIES),
                "--labels", str(labels / "fusion"), "--images", str(data / "ir"), "--json", "-q",
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            report = json.loads(done.stdout)
            for row in report["rows"]:
                direct = pycocotools_direct(labels / "fusion", folder / row["name"], sizes, classes)
                pairs = [
                    (row["classes"][cls][key], direct["classes"][cls][key])
                    for cls in classes
                    for key in ("AP50", "AP50_95")
                ] + [(row["all"][key], direct["all"][key]) for key in ("AP50", "AP50_95")]
                for ours, theirs in pairs:
                    if ours is None or np.isnan(theirs):  # undefined (no objects) on both sides
                        worst = max(worst, 0.0 if ours is None and np.isnan(theirs) else np.inf)
                    else:
                        worst = max(worst, abs(ours - theirs))
            if setting == "1.0":
                table = report
    assert table is not None
    print(
        "MSRS (20 pairs): each modality's labels, confidence 1.0, scored against the fused-image labels"
    )
    print(f"{'labels':<10} {'class':<8} {'objects':>7} {'boxes':>6} {'AP50':>7} {'AP50:95':>8}")
    for row in table["rows"]:
        for cls in [*classes, "all"]:
            score = row["all"] if cls == "all" else row["classes"][cls]
            print(
                f"{row['name']:<10} {cls:<8} {score['objects']:>7} {score['detections']:>6} "
                f"{score['AP50']:>7.4f} {score['AP50_95']:>8.4f}"
            )
    print(
        f"largest difference to pycocotools called directly (both confidence settings): {worst:.3g}"
    )
    return 0 if worst <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
