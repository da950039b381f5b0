"""``occo metrics``: score folders of fused images side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from occo.cli.app import app
from occo.cli.console import err, fail, note, out, progress_bar, user_errors, warn
from occo.data.outputs import check_writable_file, refuse_inside_inputs
from occo.eval.metrics import CONVENTIONS, METRIC_INFO, parse_metric_names
from occo.eval.report import (
    MethodSummary,
    best_methods,
    metric_columns,
    report_dict,
    summarize,
    write_scores_csv,
)
from occo.eval.scoring import (
    FolderPlan,
    default_workers,
    plan_folder,
    score_jobs,
    unique_method_names,
)


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def _table(plans: list[FolderPlan], summaries: list[MethodSummary]) -> Table:
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


@app.command("metrics")
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
    names = parse_metric_names(metrics)
    methods = unique_method_names(fused_dirs)
    plans = [
        plan_folder(d, ir, vi, names, method=m) for d, m in zip(fused_dirs, methods, strict=True)
    ]
    if csv_path is not None:
        inputs = [
            *fused_dirs,
            *(p.sources.ir_dir for p in plans),
            *(p.sources.vi_dir for p in plans),
        ]
        with user_errors():
            refuse_inside_inputs(csv_path, inputs, "--csv")
            check_writable_file(csv_path, "--csv")

    for plan in plans:
        if plan.sources.origin == "manifest":
            note(
                f"{plan.method}: sources from {plan.folder}/occo-fuse.json ({plan.sources.ir_dir}, {plan.sources.vi_dir})"
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
