"""``occo metrics``: score folders of fused images side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from occo.cli.console import (
    err,
    fail,
    note,
    out,
    plain,
    progress_bar,
    quiet_option,
    set_quiet,
    threads_option,
    user_errors,
    warn,
)
from occo.eval.metrics.table import (
    METRIC_NAMES,
    REGION_ONLY,
    SOURCE_FREE,
    SOURCE_ROW_METRICS,
    WHOLE_ONLY,
    listing,
)

# The eval library (numpy, OpenCV) is imported inside the functions: `occo --help` and
# the other commands never pay for it (the metric registry, ``table``, imports neither).


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def metrics_table(
    summaries: list,
    metrics: list[str],
    title: str = "Fusion metrics: mean ± sample std over images; * best per column",
    caption: str | None = "conventions",
    count: Callable[[Any], int] = lambda s: s.images,
    header: Callable[[str], str] = str,
) -> Table:
    """One table: a row per method (``MethodSummary``), a column per metric, best marked.

    ``caption`` "conventions" (the default) is the toolkit conventions; ``count`` gives a
    row's number of images, ``header`` a column's heading.
    """
    from occo.eval.metrics import CONVENTIONS
    from occo.eval.report import best_methods, best_scope, higher_is_better

    if caption == "conventions":
        caption = CONVENTIONS
    best = best_methods(summaries, metrics)
    if (scope := best_scope(summaries)) is not None:
        caption = scope if caption is None else f"{scope}\n{caption}"
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("method", style="bold")
    table.add_column("n", justify="right")
    for name in metrics:
        arrow = "↑" if higher_is_better(name) else "↓"
        table.add_column(f"{header(name)} {arrow}", justify="right")
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
        table.add_row(plain(summary.method), str(count(summary)), *cells)
    return table


def metrics_command(
    fused_dirs: list[Path] = typer.Argument(
        ...,
        metavar="FUSED_DIR",
        help="Folders of fused images; each folder is one method (one table row).",
    ),
    ir: Path | None = typer.Option(None, "--ir", help="Infrared source folder (with --vi)."),
    vi: Path | None = typer.Option(None, "--vi", help="Visible source folder (with --ir)."),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help=f"Comma-separated subset of {','.join(METRIC_NAMES)}, and {listing(REGION_ONLY)} "
        "with --masks (default: all that the inputs allow).",
    ),
    csv_path: Path | None = typer.Option(
        None, "--csv", help="Write per-image values to this CSV: method,image,<metric>..."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --csv file."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes to use; 0 = all cores."),
    masks: Path | None = typer.Option(
        None,
        "--masks",
        help="Mask store (occo masks gen) with the pairs' object masks: also score inside "
        "regions (columns EN@objects, ...) and the target contrast TC.",
    ),
    regions: str | None = typer.Option(
        None,
        "--regions",
        help="Regions for --masks: comma-separated objects, background, shared, unique_ir, "
        "unique_vi, or occo (= shared,unique_ir,unique_vi,background). "
        "Default: objects,background.",
    ),
    ring: int = typer.Option(
        10, "--ring", min=1, help="TC: width in pixels of the background ring around an object."
    ),
    source_rows: bool = typer.Option(
        False,
        "--source-rows",
        help="Add rows for the infrared and visible images themselves "
        f"({', '.join(n for n in SOURCE_ROW_METRICS if n in METRIC_NAMES)}, and "
        f"{listing(n for n in SOURCE_ROW_METRICS if n in REGION_ONLY)} "
        "with --masks), as the field's tables do; never marked best.",
    ),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score fused images with the field's metrics, several methods side by side.

    Sources come from --ir/--vi, or from the occo-fuse.json that `occo fuse` writes
    into its output folder. Without sources only {source_free} are computed.
    Values follow Tang's MATLAB toolkit (see the table caption); images are paired
    by file name; a fused image without both partners is listed and skipped.

    With --masks every metric except {whole_only} is also measured inside regions of the
    pairs' object masks (one table per region), plus TC, the objects' contrast against
    a ring of surrounding background relative to the sources'. An image without
    pixels in a region is skipped for that region and counted.

    \b
    Example:
        occo metrics fused/ --csv scores.csv
        occo metrics runs/a/fused runs/b/fused --ir data/tno/ir --vi data/tno/vi
        occo metrics fused/ --metrics EN,MI,VIF --json > scores.json
        occo metrics fused/ --masks masks.h5 --source-rows
        occo metrics fused/ --masks masks.h5 --regions occo --metrics EN,SD,SSIM,TC
    """
    from occo.cli.metrics_regions import RegionOptions
    from occo.data.io import output_lock
    from occo.data.outputs import check_writable_file, refuse_existing, refuse_inside_inputs
    from occo.eval.scoring import plan_folders, unique_method_names
    from occo.runtime import set_threads

    set_quiet(quiet)
    set_threads(threads, torch_too=False)  # metrics run on numpy and OpenCV
    if (ir is None) != (vi is None):
        fail("give both --ir and --vi, or neither")
    options = RegionOptions.parse(masks, regions, ring, metrics)
    names = options.whole_metrics
    plans = plan_folders(fused_dirs, ir, vi, names, unique_method_names(fused_dirs))
    with ExitStack() as held:
        if csv_path is not None:
            inputs = [
                *fused_dirs,
                *(p.sources.ir_dir for p in plans),
                *(p.sources.vi_dir for p in plans),
            ]
            with user_errors():
                refuse_inside_inputs(csv_path, inputs, "--csv")
                for locked in (False, True):  # before the lock, then again holding it
                    if not overwrite:
                        refuse_existing([csv_path], f"--csv {csv_path}")
                    if not locked:
                        check_writable_file(csv_path, "--csv")
                        held.enter_context(output_lock(csv_path, "occo metrics"))
        _score_and_report(plans, options, source_rows, workers, csv_path, as_json, overwrite)


def _score_and_report(plans, options, source_rows, workers, csv_path, as_json, overwrite) -> None:
    """Score the planned folders, write the CSV and print the tables (under the CSV's lock)."""
    from occo.cli.metrics_regions import note_skipped_regions, plan_extra_rows, print_region_tables
    from occo.data.io import write_bytes_atomic
    from occo.eval.report import metric_columns, report_dict, scores_csv, summarize
    from occo.eval.scoring import default_workers, score_jobs

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

    plans = plan_extra_rows(plans, options, source_rows)
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
    note_skipped_regions(summaries)

    if csv_path is not None:
        with user_errors():  # a file that appeared meanwhile is kept; a full disk is one line
            text = scores_csv(scores, metric_columns(plans) + options.columns(plans))
            write_bytes_atomic(csv_path, text.encode("utf-8"), overwrite)
    if as_json:
        # Plain text, not rich: no wrapping or colour codes in what scripts parse.
        typer.echo(json.dumps(report_dict(plans, summaries, scores), indent=2))
        if csv_path is not None:
            note(f"per-image values: {csv_path}")
        return
    # Off a terminal rich assumes 80 columns; give the table room instead of squeezing it.
    console = out if out.is_terminal else Console(width=max(out.width, 160))
    if metric_columns(plans):
        from occo.data.modality import medical_caption, task_of_sources
        from occo.eval.metrics import CONVENTIONS

        tasks = {task_of_sources(p.sources.ir_dir, p.sources.vi_dir) for p in plans
                 if p.sources.ir_dir is not None}  # fmt: skip
        caption = medical_caption(CONVENTIONS, tasks)
        console.print(metrics_table(summaries, metric_columns(plans), caption=caption))
    print_region_tables(console, plans, summaries)
    for summary in summaries:
        gaps = {k: v for k, v in summary.undefined.items() if v}
        if gaps:
            detail = ", ".join(f"{k} on {v}" for k, v in gaps.items())
            note(f"{summary.method}: undefined values left out of the means ({detail} image(s))")
    if csv_path is not None:
        note(f"per-image values: {csv_path}")


# The metric lists in the help come from the registry (eval.metrics.table).
metrics_command.__doc__ = metrics_command.__doc__.format(
    source_free=listing(SOURCE_FREE, " and "), whole_only=listing(WHOLE_ONLY, " and ")
)
