"""``occo metrics``: score folders of fused images side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from occo.cli.console import (
    err,
    fail,
    note,
    out,
    progress_bar,
    quiet_option,
    set_quiet,
    threads_option,
    warn,
)


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def _table(plans: list, summaries: list) -> Table:
    from occo.eval.metrics import CONVENTIONS, METRIC_INFO
    from occo.eval.report import best_methods, metric_columns

    metrics = metric_columns(plans)
    best = best_methods(summaries, metrics)
    table = Table(
        title="Fusion metrics: mean ± sample std over images; * best per column",
        caption=CONVENTIONS,
        caption_justify="left",
    )
    table.add_column("method", style="bold")
    table.add_column("n", justify="right")
    for name in metrics:
        arrow = "↑" if METRIC_INFO[name].higher_is_better else "↓"
        table.add_column(f"{name} {arrow}", justify="right")
    for summary in summaries:
        cells = []
        for name in metrics:
            if name not in summary.mean:
                cells.append("—")
                continue
            text = _format(summary.mean[name])
            if summary.method in best[name]:
                text = f"[bold green]{text}*[/]"
            if not math.isnan(summary.std[name]):
                text += f"\n[dim]± {_format(summary.std[name])}[/]"
            cells.append(text)
        table.add_row(summary.method, str(summary.images), *cells)
    return table


def _check_output_path(csv_path: Path, inputs: list[Path]) -> None:
    """Refuse to write the CSV into a folder that is read as input."""
    parent = csv_path.resolve().parent
    for folder in inputs:
        if folder is not None and folder.resolve() == parent:
            from occo.data.errors import OccoError

            raise OccoError(
                f"--csv {csv_path} would be written into the input folder {folder}; "
                "choose a path outside the input folders"
            )


def metrics_command(
    fused_dirs: list[Path] = typer.Argument(
        ..., help="Folders of fused images; each folder is one method (one table row)."
    ),
    ir: Path | None = typer.Option(None, "--ir", help="Infrared source folder (with --vi)."),
    vi: Path | None = typer.Option(None, "--vi", help="Visible source folder (with --ir)."),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help="Comma-separated subset of EN,SF,AG,CC,SD,MI,SCD,VIF,Qabf,MSE,PSNR,SSIM "
        "(default: all that the inputs allow).",
    ),
    csv_path: Path | None = typer.Option(
        None, "--csv", help="Write per-image values to this CSV: method,image,<metric>..."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes to use; 0 = all cores."),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score fused images with the field's metrics, several methods side by side.

    Sources come from --ir/--vi, or from the occo-fuse.json that `occo fuse` writes
    into its output folder. Without sources only EN, SF, AG and SD are computed.
    Values follow Tang's MATLAB toolkit (see the table caption); images are paired
    by file name; a fused image without both partners is listed and skipped.

    \b
    Example:
        occo metrics fused/ --csv scores.csv
        occo metrics runs/a/fused runs/b/fused --ir data/tno/ir --vi data/tno/vi
        occo metrics fused/ --metrics EN,MI,VIF --json > scores.json
    """
    if (ir is None) != (vi is None):
        fail("give both --ir and --vi, or neither")
    from occo.eval.metrics import parse_metric_names
    from occo.eval.report import metric_columns, report_dict, summarize, write_scores_csv
    from occo.eval.scoring import default_workers, plan_folders, score_jobs, unique_method_names
    from occo.runtime import set_threads

    set_quiet(quiet)
    set_threads(threads, torch_too=False)  # metrics run on numpy and OpenCV
    names = parse_metric_names(metrics)
    plans = plan_folders(fused_dirs, ir, vi, names, unique_method_names(fused_dirs))
    if csv_path is not None:
        inputs = [
            *fused_dirs,
            *(p.sources.ir_dir for p in plans),
            *(p.sources.vi_dir for p in plans),
        ]
        _check_output_path(csv_path, [p for p in inputs if p is not None])

    for plan in plans:
        if plan.sources.origin == "manifest":
            note(
                f"{plan.method}: sources from {plan.folder}/occo-fuse.json ({plan.sources.ir_dir}, {plan.sources.vi_dir})"
            )
        elif plan.sources.origin == "shared":
            note(
                f"{plan.method}: sources from {plan.sources.manifest_folder}/occo-fuse.json, "
                "the same images' sources as that row (pass --ir and --vi to choose others)"
            )
        if plan.foreign:
            warn(
                f"{plan.method}: {len(plan.foreign)} image(s) that occo fuse did not write are not "
                f"scored ({', '.join(p.name for p in plan.foreign[:5])})"
            )
        if plan.skipped_metrics:
            warn(f"{plan.method}: skipped {', '.join(plan.skipped_metrics)}: {plan.skip_reason}")
        if plan.unpaired:
            listed = ", ".join(p.name for p in plan.unpaired[:10])
            more = f" and {len(plan.unpaired) - 10} more" if len(plan.unpaired) > 10 else ""
            warn(
                f"{plan.method}: {len(plan.unpaired)} image(s) without a partner in both source "
                f"folders, skipped: {listed}{more}"
            )

    jobs = [job for plan in plans for job in plan.jobs]
    n_workers = workers or default_workers()
    if len(jobs) < 8 and not workers:
        n_workers = 1  # starting worker processes costs more than a few images
    with progress_bar(disable=not err.is_terminal) as progress:
        task = progress.add_task("scoring", total=len(jobs), status="")
        scores = score_jobs(
            jobs,
            n_workers,
            on_done=lambda s: progress.update(task, advance=1, status=f"{s.method}/{s.image}"),
        )
    summaries = summarize(plans, scores)

    if csv_path is not None:
        write_scores_csv(csv_path, scores, metric_columns(plans))
    if as_json:
        # Plain text, not rich: no wrapping or colour codes in what scripts parse.
        typer.echo(json.dumps(report_dict(plans, summaries, scores), indent=2))
        if csv_path is not None:
            note(f"per-image values: {csv_path}")
        return
    # Off a terminal rich assumes 80 columns; give the table room instead of squeezing it.
    console = out if out.is_terminal else Console(width=max(out.width, 160))
    console.print(_table(plans, summaries))
    for summary in summaries:
        gaps = {k: v for k, v in summary.undefined.items() if v}
        if gaps:
            detail = ", ".join(f"{k} on {v}" for k, v in gaps.items())
            note(f"{summary.method}: undefined values left out of the means ({detail} image(s))")
    if csv_path is not None:
        note(f"per-image values: {csv_path}")
