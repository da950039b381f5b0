"""Aggregating per-image scores: mean and standard deviation per method, best per metric, CSV, JSON."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION
from occo.eval.metrics import CONVENTIONS, METRIC_INFO, METRIC_NAMES
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
        for name in plan.metrics:
            values = np.array([row.values[name] for row in rows], dtype=np.float64)
            defined = values[~np.isnan(values)]
            summary.undefined[name] = int(values.size - defined.size)
            summary.mean[name] = float(defined.mean()) if defined.size else math.nan
            with np.errstate(invalid="ignore"):  # inf - inf (PSNR of identical images): NaN
                spread = float(defined.std(ddof=1)) if defined.size > 1 else math.nan
            summary.std[name] = spread
        summaries.append(summary)
    return summaries


def metric_columns(plans: Sequence[FolderPlan]) -> list[str]:
    """Metrics computed for any folder, in table order."""
    present = {name for plan in plans for name in plan.metrics}
    return [name for name in METRIC_NAMES if name in present]


def best_methods(
    summaries: Sequence[MethodSummary], metrics: Sequence[str]
) -> dict[str, list[str]]:
    """Methods with the best mean per metric (higher is better except for MSE); ties all win.

    Only marked when at least two methods have a value to compare.
    """
    best: dict[str, list[str]] = {}
    for name in metrics:
        values = {
            s.method: s.mean[name] for s in summaries if not math.isnan(s.mean.get(name, math.nan))
        }
        if len(values) < 2:
            best[name] = []
            continue
        pick = max if METRIC_INFO[name].higher_is_better else min
        top = pick(values.values())
        best[name] = [method for method, value in values.items() if value == top]
    return best


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


def _json_number(value: float | None) -> float | str | None:
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


def report_dict(
    plans: Sequence[FolderPlan],
    summaries: Sequence[MethodSummary],
    scores: Sequence[ImageScore],
) -> dict[str, Any]:
    """Everything the table and the CSV show, as one JSON-ready object.

    Undefined values (NaN) are null; infinite ones (PSNR of identical images) the string
    "inf", as in the table and the CSV.
    """
    metrics = metric_columns(plans)
    best = best_methods(summaries, metrics)
    methods = []
    for plan, summary in zip(plans, summaries, strict=True):
        methods.append(
            {
                "method": plan.method,
                "folder": str(plan.folder),
                "sources": {
                    "ir_dir": None if plan.sources.ir_dir is None else str(plan.sources.ir_dir),
                    "vi_dir": None if plan.sources.vi_dir is None else str(plan.sources.vi_dir),
                    "from": plan.sources.origin,
                },
                "images": summary.images,
                "metrics": list(plan.metrics),
                "mean": {k: _json_number(v) for k, v in summary.mean.items()},
                "std": {k: _json_number(v) for k, v in summary.std.items()},
                "undefined": summary.undefined,
                "skipped_metrics": list(plan.skipped_metrics),
                "skipped_reason": plan.skip_reason,
                "unpaired": [str(p) for p in plan.unpaired],
            }
        )
    return {
        "format": "occo-metrics",
        "occo_version": OCCO_VERSION,
        "conventions": CONVENTIONS,
        "metrics": metrics,
        "higher_is_better": {m: METRIC_INFO[m].higher_is_better for m in metrics},
        "methods": methods,
        "best": best,
        "images": [
            {
                "method": s.method,
                "image": s.image,
                **{k: _json_number(v) for k, v in s.values.items()},
            }
            for s in scores
        ],
    }
