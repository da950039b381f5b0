"""``occo metrics --masks/--regions/--source-rows``: options, extra rows and region tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from occo.cli.console import fail, note, warn
from occo.eval.metrics import parse_metric_names
from occo.eval.metrics.regions import REGION_DEFINITIONS, parse_regions
from occo.eval.metrics.table import (
    METRICS,
    REGION_METRICS,
    REGION_ONLY,
    SOURCE_FREE,
    SOURCE_ROW_METRICS,
    WHOLE_ONLY,
    listing,
)
from occo.eval.region_scoring import attach_regions, check_store_covers
from occo.eval.report import MethodSummary, region_columns
from occo.eval.scoring import FolderPlan, plan_source_rows

#: Region-only metrics that the source rows get.
_REGION_SOURCE_ROWS = tuple(n for n in SOURCE_ROW_METRICS if n in REGION_ONLY)
_CAPTION = (
    "Inside a region: EN, SD, CC, SCD, MI, MSE, PSNR on its pixels; SF and AG from "
    "differences with both pixels in it (AG: mean over its pixels); SSIM: mean of the maps "
    "over windows centred in it; Qabf: the map pooled over it; TC: object-to-ring contrast "
    "(ring: background within {ring} px) of F over the larger of A's and B's. Masks: {store}."
)


@dataclass(frozen=True)
class RegionOptions:
    """The command's region options, checked."""

    masks: Path | None
    """The mask store, or None for whole-image metrics only."""
    regions: tuple[str, ...]
    """Region names."""
    ring: int
    """TC's ring width in pixels."""
    whole_metrics: tuple[str, ...] | None
    """Whole-image metrics asked for (None: all the inputs allow)."""
    region_metrics: tuple[str, ...] | None
    """Region metrics asked for (None: all the inputs allow)."""

    @classmethod
    def parse(
        cls, masks: Path | None, regions: str | None, ring: int, metrics: str | None
    ) -> RegionOptions:
        """Check the options; a region-only metric (TC) in ``--metrics`` needs ``--masks``."""
        if masks is None and regions is not None:
            fail("--regions needs --masks (the mask store with the pairs' object masks)")
        items = [] if metrics is None else [m.strip() for m in metrics.split(",") if m.strip()]
        lookup = {n.lower(): n for n in REGION_ONLY}
        inside_only = [lookup[m.lower()] for m in items if m.lower() in lookup]
        if inside_only and masks is None:
            info = METRICS[inside_only[0]]
            where = "object regions" if info.region.objects_only else "regions"
            fail(f"{info.name} ({info.title}) is measured inside {where}: give --masks")
        whole = None
        region = None
        if metrics is not None:
            rest = [m for m in items if m.lower() not in lookup]
            whole = parse_metric_names(rest) if rest or not inside_only else ()
            region = tuple(n for n in REGION_METRICS if n in whole or n in inside_only)
        if masks is not None and region == ():
            warn(
                "--masks: none of the metrics asked for has a form inside regions "
                f"({listing(WHOLE_ONLY, ' and ')} {'has' if len(WHOLE_ONLY) == 1 else 'have'} none)"
            )
            masks = None
        names = parse_regions(regions) if masks is not None else ()
        return cls(masks, names, ring, whole, region)

    def columns(self, plans: list[FolderPlan]) -> list[str]:
        """The region columns of the CSV (``EN@objects``, ...), region by region."""
        return [c for columns in region_columns(plans).values() for c in columns]


def plan_extra_rows(
    plans: list[FolderPlan], options: RegionOptions, source_rows: bool
) -> list[FolderPlan]:
    """Attach region metrics to the plans and add the source rows, if asked for.

    Returns:
        The plans to score: the fused folders, then the infrared and visible rows.
    """
    if source_rows:
        rows = plan_source_rows(plans, options.whole_metrics)
        base = rows[0].sources
        other = [
            p.method
            for p in plans
            if p.sources.ir_dir is not None
            and (p.sources.ir_dir, p.sources.vi_dir) != (base.ir_dir, base.vi_dir)
        ]
        if other:
            warn(
                f"source rows score {base.ir_dir} and {base.vi_dir}; "
                f"{', '.join(other)} use other sources"
            )
        plans = [*plans, *rows]
    if options.masks is not None:
        check_store_covers(options.masks, (job.fused.stem for plan in plans for job in plan.jobs))
        for plan in plans:
            attach_regions(
                plan,
                options.masks,
                options.regions,
                options.region_metrics,
                options.ring,
                source_free_only=plan.source_role is not None,
            )
    kept = []
    for plan in plans:
        if plan.metrics or (plan.regions is not None and plan.regions.all_columns()):
            kept.append(plan)
        elif plan.source_role is not None:
            warn(
                f"no {plan.source_role} row: of the metrics asked for, only "
                f"{', '.join(SOURCE_FREE)} (and {listing(_REGION_SOURCE_ROWS, ' and ')} with "
                "--masks) are defined for a source image"
            )
        else:
            fail(f"nothing to score for {plan.method}: the metrics asked for need --ir and --vi")
    return kept


def note_skipped_regions(summaries: list[MethodSummary]) -> None:
    """Say, per region, how many images had no pixels in it (rows with the same count share a line)."""
    groups: dict[tuple[str, int, int], list[str]] = {}
    for summary in summaries:
        for region, present in summary.region_images.items():
            if present < summary.images:
                key = (region, summary.images - present, summary.images)
                groups.setdefault(key, []).append(summary.method)
    for (region, skipped, total), methods in groups.items():
        rows = "every row" if len(methods) == len(summaries) else ", ".join(methods)
        note(
            f"@{region}: {skipped} of {total} image(s) without {region} pixels, "
            f"skipped for the {region} metrics ({rows})"
        )


def print_region_tables(
    console: Console, plans: list[FolderPlan], summaries: list[MethodSummary]
) -> None:
    """One table per region, then the definitions (console-wide, not squeezed under a table)."""
    from occo.cli.metrics import metrics_table

    by_region = region_columns(plans)
    if not by_region:
        return
    for region, columns in by_region.items():
        title = (
            f"Inside {region} ({REGION_DEFINITIONS[region]}): mean ± sample std over the "
            f"images with {region} pixels (n); * best per column"
        )
        console.print(
            metrics_table(
                summaries,
                columns,
                title=title,
                caption=None,
                count=lambda s, r=region: s.region_images.get(r, 0),
                header=lambda column: column.split("@", 1)[0],
            )
        )
    spec = next(p.regions for p in plans if p.regions is not None)
    console.print(_CAPTION.format(ring=spec.ring, store=spec.store), highlight=False)
