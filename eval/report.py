"""Aggregating per-image scores: mean and standard deviation per method, best per metric, CSV, JSON."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION
from occo.eval.metrics import CONVENTIONS, METRIC_INFO, METRIC_NAMES
from occo.eval.metrics.regions import REGION_DEFINITIONS
from occo.eval.metrics.table import METRICS, REGION_METRIC_DEFINITIONS, REGION_METRIC_INFO
from occo.eval.scoring import FolderPlan, ImageScore


@dataclass
class MethodSummary:
    """One row of the comparison table."""

    method: str
    """Row name (the fused folder's name)."""
    folder: str
    """The fused folder as given."""
    images: int
    """Images scored."""
    mean: dict[str, float] = field(default_factory=dict)
    """Mean over images of each metric, NaN values left out."""
    std: dict[str, float] = field(default_factory=dict)
    """Sample standard deviation (ddof=1) over images; NaN for a single value."""
    undefined: dict[str, int] = field(default_factory=dict)
    """Per metric, how many images gave NaN (left out of mean and std)."""
    region_images: dict[str, int] = field(default_factory=dict)
    """Per region, images with pixels in it (the others are skipped for its metrics)."""
    source_role: str | None = None
    """``"infrared"`` or ``"visible"`` for a source row (never marked best)."""
    sources: tuple[Path | None, Path | None] = (None, None)
    """The infrared and visible folders scored against (resolved): rows with the same
    are one dataset, and best is marked among them only."""


def higher_is_better(column: str) -> bool:
    """Direction of a column, whole-image (``EN``) or inside a region (``EN@objects``)."""
    return METRICS[column.split("@", 1)[0]].higher_is_better


def _aggregate(summary: MethodSummary, name: str, values: np.ndarray) -> None:
    """Mean, sample std and undefined count of one column."""
    defined = values[~np.isnan(values)]
    summary.undefined[name] = int(values.size - defined.size)
    summary.mean[name] = float(defined.mean()) if defined.size else math.nan
    with np.errstate(invalid="ignore"):  # inf - inf (PSNR of identical images): NaN
        summary.std[name] = float(defined.std(ddof=1)) if defined.size > 1 else math.nan


def summarize(plans: Sequence[FolderPlan], scores: Sequence[ImageScore]) -> list[MethodSummary]:
    """Mean and standard deviation per method and metric.

    Args:
        plans: the folders, in row order.
        scores: per-image scores of all folders.

    Returns:
        One summary per plan, in the same order.
    """
    summaries = []
    for plan in plans:
        rows = [s for s in scores if s.method == plan.method]
        summary = MethodSummary(plan.method, str(plan.folder), len(rows))
        summary.source_role = plan.source_role
        summary.sources = tuple(
            None if p is None else Path(p).resolve()
            for p in (plan.sources.ir_dir, plan.sources.vi_dir)
        )
        for name in plan.metrics:
            values = np.array([row.values[name] for row in rows], dtype=np.float64)
            _aggregate(summary, name, values)
        spec = plan.regions
        for region in spec.regions if spec is not None else ():
            present = [row for row in rows if region not in row.empty_regions]
            summary.region_images[region] = len(present)
            for name in spec.columns(region):
                values = np.array([row.values[name] for row in present], dtype=np.float64)
                _aggregate(summary, name, values)
        summaries.append(summary)
    return summaries


def metric_columns(plans: Sequence[FolderPlan]) -> list[str]:
    """Metrics computed for any folder, in table order."""
    present = {name for plan in plans for name in plan.metrics}
    return [name for name in METRIC_NAMES if name in present]


def region_columns(plans: Sequence[FolderPlan]) -> dict[str, list[str]]:
    """Per region, the columns (``EN@objects``, ...) any folder has, in table order."""
    order: dict[str, list[str]] = {}
    for plan in plans:
        if plan.regions is None:
            continue
        for region in plan.regions.regions:
            columns = order.setdefault(region, [])
            columns += [c for c in plan.regions.columns(region) if c not in columns]
    ranks = {name: i for i, name in enumerate(REGION_METRIC_INFO)}
    return {
        region: sorted(columns, key=lambda c: ranks[c.split("@", 1)[0]])
        for region, columns in order.items()
    }


def datasets(summaries: Sequence[MethodSummary]) -> list[list[str]]:
    """The methods grouped by the sources they were scored against (source rows left out),
    groups in the order of their first row."""
    groups: dict[tuple[Path | None, Path | None], list[str]] = {}
    for s in summaries:
        if s.source_role is None:
            groups.setdefault(s.sources, []).append(s.method)
    return list(groups.values())


def best_methods(
    summaries: Sequence[MethodSummary], metrics: Sequence[str]
) -> dict[str, list[str]]:
    """Methods with the best mean per metric (higher is better except for MSE); ties all win.

    Rows are compared within their dataset (:func:`datasets`: the same sources) only, so a
    dataset's best is marked in each. Marked only where at least two methods of a dataset
    have a value to compare; source rows never are.
    """
    best: dict[str, list[str]] = {name: [] for name in metrics}
    by_method = {s.method: s for s in summaries}
    for group in datasets(summaries):
        for name in metrics:
            best[name] += best_of(
                {m: by_method[m].mean.get(name, math.nan) for m in group}, higher_is_better(name)
            )
    return best


def best_scope(summaries: Sequence[MethodSummary]) -> str | None:
    """A line saying where best is marked when the rows come from several datasets, else None."""
    groups = datasets(summaries)
    if len(groups) < 2:
        return None
    listed = "; ".join(", ".join(group) for group in groups)
    return f"* best within each dataset (rows with the same sources): {listed}"


def best_of(values: Mapping[str, float], higher_is_better: bool = True) -> list[str]:
    """The keys with the best value (ties all win); NaN values take no part.

    Only marked when at least two keys have a value to compare (else empty).
    """
    defined = {key: value for key, value in values.items() if not math.isnan(value)}
    if len(defined) < 2:
        return []
    top = (max if higher_is_better else min)(defined.values())
    return [key for key, value in defined.items() if value == top]


def _cell(value: float) -> str:
    """Full precision for a CSV cell (``repr`` round-trips); empty when absent."""
    return "" if value is None else repr(float(value))


def scores_csv(scores: Sequence[ImageScore], metrics: Sequence[str]) -> str:
    """Per-image CSV text: ``method,image,<metric>...``; blank where a metric was not computed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "image", *metrics])
    for row in scores:
        writer.writerow([row.method, row.image, *(_cell(row.values.get(m)) for m in metrics)])
    return buffer.getvalue()


def write_scores_csv(
    path: str | Path, scores: Sequence[ImageScore], metrics: Sequence[str]
) -> Path:
    """Write :func:`scores_csv` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    write_bytes_atomic(path, scores_csv(scores, metrics).encode("utf-8"))
    return path


def json_number(value: float | None) -> float | str | None:
    """A metric value for JSON, which has no NaN or infinity.

    Undefined (NaN) becomes null; an infinite value (PSNR of a fused image equal to both
    sources) becomes the string "inf" (or "-inf"), as the table and the CSV write it, and as
    Python's ``float()`` reads it back.
    """
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _region_block(plan: FolderPlan, summary: MethodSummary) -> dict[str, Any]:
    """A method's values inside each region, keyed by region, metrics by their plain names."""
    block = {}
    for region in plan.regions.regions:
        columns = plan.regions.columns(region)
        names = [c.split("@", 1)[0] for c in columns]
        block[region] = {
            "images": summary.region_images[region],
            "images_without_region": summary.images - summary.region_images[region],
            "metrics": names,
            "mean": {n: json_number(summary.mean[c]) for n, c in zip(names, columns, strict=True)},
            "std": {n: json_number(summary.std[c]) for n, c in zip(names, columns, strict=True)},
            "undefined": {n: summary.undefined[c] for n, c in zip(names, columns, strict=True)},
        }
    return block


def report_dict(
    plans: Sequence[FolderPlan],
    summaries: Sequence[MethodSummary],
    scores: Sequence[ImageScore],
) -> dict[str, Any]:
    """Everything the table and the CSV show, as one JSON-ready object.

    Undefined values (NaN) are null; infinite ones (PSNR of identical images) the string
    "inf", as in the table and the CSV. With region metrics, each method has a
    ``regions`` block (per region: images with pixels in it, mean, std, undefined
    counts), per-image entries carry the ``EN@objects`` columns (and ``empty_regions``),
    and a top-level ``regions`` block defines them.
    """
    metrics = metric_columns(plans)
    by_region = region_columns(plans)
    inside = [c for columns in by_region.values() for c in columns]
    best = best_methods(summaries, [*metrics, *inside])
    methods = []
    for plan, summary in zip(plans, summaries, strict=True):
        entry = {
            "method": plan.method,
            "folder": str(plan.folder),
            "sources": {
                "ir_dir": None if plan.sources.ir_dir is None else str(plan.sources.ir_dir),
                "vi_dir": None if plan.sources.vi_dir is None else str(plan.sources.vi_dir),
                "from": plan.sources.origin,
            },
            "images": summary.images,
            "metrics": list(plan.metrics),
            "mean": {k: json_number(summary.mean[k]) for k in plan.metrics},
            "std": {k: json_number(summary.std[k]) for k in plan.metrics},
            "undefined": {k: summary.undefined[k] for k in plan.metrics},
            "skipped_metrics": list(plan.skipped_metrics),
            "skipped_reason": plan.skip_reason,
            "unpaired": [str(p) for p in plan.unpaired],
        }
        if plan.source_role is not None:
            entry["source_row"] = plan.source_role
        if plan.regions is not None:
            entry["regions"] = _region_block(plan, summary)
        methods.append(entry)
    report: dict[str, Any] = {
        "format": "occo-metrics",
        "occo_version": OCCO_VERSION,
        "conventions": CONVENTIONS,
        "metrics": metrics,
        "higher_is_better": {m: METRIC_INFO[m].higher_is_better for m in metrics},
    }
    if by_region:
        spec = next(p.regions for p in plans if p.regions is not None)
        names = list(dict.fromkeys(c.split("@", 1)[0] for c in inside))
        report["regions"] = {
            "masks": str(spec.store),
            "regions": {r: REGION_DEFINITIONS[r] for r in by_region},
            "columns": inside,
            "metrics": {n: REGION_METRIC_DEFINITIONS[n] for n in names},
            "higher_is_better": {n: REGION_METRIC_INFO[n].higher_is_better for n in names},
            "tc_ring_px": spec.ring,
        }
    report["methods"] = methods
    report["best"] = best
    with_regions = {p.method for p in plans if p.regions is not None}
    report["images"] = [
        {
            "method": s.method,
            "image": s.image,
            **{k: json_number(v) for k, v in s.values.items()},
            **({"empty_regions": list(s.empty_regions)} if s.method in with_regions else {}),
        }
        for s in scores
    ]
    return report
