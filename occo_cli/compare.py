"""``occo compare``: the comparison protocol (occo.eval.compare) with progress and an ETA."""

from __future__ import annotations

from pathlib import Path

import typer

from occo.cli.console import (
    err,
    is_quiet,
    note,
    plain,
    quiet_option,
    set_quiet,
    threads_option,
    user_errors,
    warn,
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def compare(
    datasets: list[Path] = typer.Argument(
        ..., metavar="DATASET", help="Dataset folders, each with ir/ and vi/ (pairs by file stem)."
    ),
    methods: str = typer.Option(
        ...,
        "--methods",
        help="Comma-separated registered methods (`occo methods`) and folders of fused images "
        "made elsewhere (a folder inside a dataset's folder is scored on that dataset; one "
        "elsewhere on each dataset whose pairs it all holds).",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="Output folder (fused/, results, tables, figures, report.html)."
    ),
    weights: list[str] = typer.Option(
        [], "--weights", help="NAME=PATH: the weight file (or folder) of a method; repeatable."
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated metrics (default: all)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the first N pairs (by file stem) of each dataset."
    ),
    pairs: str | None = typer.Option(
        None,
        "--pairs",
        help="Stems for the qualitative figures (default: where methods differ most).",
    ),
    figure_pairs: int = typer.Option(
        3, "--figure-pairs", min=1, help="Pairs picked for each qualitative figure."
    ),
    objects: bool = typer.Option(
        True,
        "--objects/--no-objects",
        help="Also score inside objects where a dataset has masks (DATASET/masks.h5, --masks) "
        "or box labels (labels/infrared + labels/visible, or labels/: filled boxes).",
    ),
    masks: list[str] = typer.Option(
        [],
        "--masks",
        help="DATASET=STORE: the mask store (occo masks gen) of a dataset; repeatable.",
    ),
    detector: str | None = typer.Option(
        None,
        "--detector",
        help="Also score detection on every method's fused images with this detector "
        "(as occo eval detect: a transformers id or folder, or yolov5:FILE.pt).",
    ),
    labels: list[str] = typer.Option(
        [],
        "--labels",
        help="DATASET=PATH: detection ground truth of a dataset (default: its labels/fusion "
        "or labels/); repeatable.",
    ),
    figures: bool = typer.Option(
        True, "--figures/--no-figures", help="Draw figures and report.html (matplotlib)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring images."),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Compare fusion methods on datasets under one protocol: fuse, score, measure, draw.

    Each dataset is fused with each method into OUT/fused/DATASET/METHOD as `occo fuse` does (a rerun reuses finished images and refuses changed settings), scored as `occo metrics` scores (whole image; and inside objects, as `occo metrics --masks --regions objects`, where the dataset has a mask store or box labels; with --detector, detection mAP against the dataset's labels), and each method's parameters, GFLOPs (640x480) and time per pair are measured. A pair a method fails on is reported and the rest goes on. A folder of fused images made elsewhere is scored as it is, on the dataset whose folder holds it (else on each dataset whose pairs it all has).

    Writes results.csv and results.json (a row per method x dataset x metric), table.md and table.tex (best bold, second underlined / red, third italic; arrows give each metric's direction), figures/ (a qualitative figure per dataset, bar charts per metric, speed against quality) and report.html (opens from disk).

    \b
    Example:
        occo compare data/tno data/msrs --methods fifn,seafusion,data/tno/fused/U2Fusion \\
            --weights seafusion=SeAFusion.pth --out runs/compare
        occo compare data/msrs --methods fifn,sage --masks msrs=data/msrs/masks.h5 --out runs/msrs
        occo compare data/msrs --methods fifn,sage --detector yolov5:yolov5s.pt --out runs/msrs
    """
    from occo.eval.compare import CompareEvents, CompareSettings, parse_masks, parse_weights
    from occo.eval.compare import compare as run_compare
    from occo.runtime import set_threads

    set_quiet(quiet)
    set_threads(threads)
    with user_errors():
        settings = CompareSettings(
            datasets=list(datasets),
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            out_dir=out_dir,
            weights=parse_weights(weights),
            metrics=None if metrics is None else tuple(m.strip() for m in metrics.split(",")),
            limit=limit,
            device=device,
            workers=workers,
            threads=threads,
            figures=figures,
            pairs=None if pairs is None else [p.strip() for p in pairs.split(",") if p.strip()],
            figure_pairs=figure_pairs,
            objects=objects,
            masks=parse_masks(masks),
            detector=detector,
            labels=parse_masks(labels, "--labels"),
        )
        settings.validate()

    def finished(unit, done: int, total: int, eta: float | None) -> None:
        mean = unit.mean.get("Qabf")
        quality = f", Qabf {mean:.4g}" if mean is not None else ""
        if "mAP50" in unit.mean:
            quality += f", mAP50 {unit.mean['mAP50']:.3g}"
        how = (f"fused {unit.fused}, reused {unit.reused}" if unit.kind == "network"
               else "folder")  # fmt: skip
        failed = f", {len(unit.failures)} failed" if unit.failures else ""
        speed = f", {unit.seconds_per_pair:.3g} s/pair" if unit.seconds_per_pair else ""
        err.print(
            plain(f"[{done}/{total}] {unit.method} on {unit.dataset}: {unit.images} scored "
                  f"({how}{failed}){speed}{quality}; ETA {_duration(eta)}"),
            highlight=False, soft_wrap=True,
        )  # fmt: skip

    events = CompareEvents(note=None if is_quiet() else note, warn=warn, finished=finished)
    with user_errors():
        result = run_compare(settings, events)  # no matplotlib: its one line says what to install
    note(f"compared {len(result.methods)} method(s) on {len(result.datasets)} dataset(s) in "
         f"{_duration(result.seconds)}; wrote {', '.join(p.name for p in result.files[:4])} "
         f"and {len(result.files) - 4} more in {out_dir}")  # fmt: skip
    if not is_quiet():
        typer.echo((Path(out_dir) / "table.md").read_text(encoding="utf-8"))
