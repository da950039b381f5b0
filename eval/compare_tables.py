"""``occo compare``'s numbers: places (best, second, third), results.csv/json, table.md/tex.

Places are given per dataset and metric among the methods with a value, as standard
competition ranking: a method's place is 1 + the number of methods strictly better, so
tied methods share a place and the next place is skipped (two best, no second). Only
places 1 to 3 are marked, only where at least two methods have a value; an undefined
mean (NaN) gets no place and is written "n/a" (empty in the CSV, null in the JSON).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION
from occo.eval.compare_detect import is_detection_column
from occo.eval.report import higher_is_better as metric_higher_is_better
from occo.eval.report import json_number

#: How places are written: markdown and LaTeX (the field's bold / red / italic).
MARKDOWN_MARKS = {1: "**{}**", 2: "<u>{}</u>", 3: "*{}*"}
LATEX_MARKS = {1: "\\textbf{{{}}}", 2: "\\textcolor{{red}}{{{}}}", 3: "\\textit{{{}}}"}
PLACE_NAMES = {1: "best", 2: "second", 3: "third"}


def higher_is_better(column: str) -> bool:
    """Direction of a compare column (metrics as ``occo metrics``; detection scores up)."""
    return True if is_detection_column(column) else metric_higher_is_better(column)


def places(values: Mapping[str, float], higher: bool = True) -> dict[str, int]:
    """Place 1, 2 or 3 of each key with a value among the best three (ties share a place).

    NaN takes no part; fewer than two values: no places. Infinity is a value (PSNR of a
    fused image equal to its sources is the best PSNR).
    """
    defined = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    if len(defined) < 2:
        return {}
    ranked = {}
    for key, value in defined.items():
        better = sum(
            1 for other in defined.values() if (other > value if higher else other < value)
        )
        if better < 3:
            ranked[key] = better + 1
    return ranked


def dataset_places(result, dataset: str) -> dict[str, dict[str, int]]:
    """Metric -> method -> place, for one dataset (whole-image and inside-object columns)."""
    units = [u for u in result.units if u.dataset == dataset]
    return {
        m: places({u.method: u.mean.get(m, math.nan) for u in units}, higher_is_better(m))
        for m in result.columns
    }


def result_rows(result) -> list[dict[str, Any]]:
    """One row per method x dataset x metric, with the method's cost columns."""
    rows = []
    for dataset in result.datasets:
        ranks = dataset_places(result, dataset.name)
        for unit in (u for u in result.units if u.dataset == dataset.name):
            for metric in [*result.metrics, *unit.object_columns, *unit.detection_columns]:
                place = ranks[metric].get(unit.method)
                rows.append({
                    "dataset": unit.dataset, "method": unit.method, "kind": unit.kind,
                    "metric": metric, "higher_is_better": higher_is_better(metric),
                    "mean": unit.mean.get(metric, math.nan), "std": unit.std.get(metric, math.nan),
                    "images": unit.images, "undefined": unit.undefined.get(metric, 0),
                    "failed_pairs": len(unit.failures), "place": place,
                    "parameters": unit.parameters, "gflops_640x480": unit.gflops,
                    "seconds_per_pair": unit.seconds_per_pair, "pairs_per_s": unit.pairs_per_s,
                    "device": unit.device,
                })  # fmt: skip
    return rows


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def results_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (full precision; blank where undefined)."""
    buffer = io.StringIO()
    if not rows:
        return ""
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row.values()])
    return buffer.getvalue()


def results_dict(result) -> dict[str, Any]:
    """Everything measured, JSON-ready (NaN: null, infinity: "inf" as ``occo metrics``)."""

    def clean(row: dict) -> dict:
        return {k: json_number(v) if isinstance(v, float) else v for k, v in row.items()}

    return {
        "format": "occo-compare",
        "occo_version": OCCO_VERSION,
        "seconds": round(result.seconds, 3),
        "metrics": result.metrics,
        "object_columns": result.object_columns,
        "detection_columns": result.detection_columns,
        "detection": None
        if result.detection is None
        else {
            "detector": result.detection.model,
            "labels": {name: str(t.path) for name, t in result.detection.truths.items()},
        },
        "higher_is_better": {m: higher_is_better(m) for m in result.columns},
        "datasets": [
            {
                "name": d.name,
                "folder": str(d.root),
                "ir_dir": str(d.ir_dir),
                "vi_dir": str(d.vi_dir),
                "pairs": list(d.stems),
                "masks": None if d.masks is None else str(d.masks.store),
                "masks_from": None if d.masks is None else d.masks.origin,
            }
            for d in result.datasets
        ],  # fmt: skip
        "methods": [
            {
                "name": m.name,
                "network": m.network,
                "folder": None if m.folder is None else str(m.folder),
                "weights": None if m.weights is None else str(m.weights),
            }
            for m in result.methods
        ],  # fmt: skip
        "skipped": result.skipped,
        "units": [
            {
                "dataset": u.dataset,
                "method": u.method,
                "kind": u.kind,
                "folder": str(u.folder),
                "images": u.images,
                "fused": u.fused,
                "reused": u.reused,
                "failures": u.failures,
                "device": u.device,
                "parameters": u.parameters,
                "gflops_640x480": u.gflops,
                "seconds_per_pair": u.seconds_per_pair,
                "object_images": u.object_images,
                "per_image": {
                    s: {k: json_number(v) for k, v in vals.items()}
                    for s, vals in u.per_image.items()
                },
            }
            for u in result.units
        ],  # fmt: skip
        "rows": [clean(r) for r in result.rows],
    }


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.1f}"


def _cost(unit) -> tuple[str, str, str]:
    params = "—" if unit.parameters is None else f"{unit.parameters / 1e6:.3g}M"
    gflops = "—" if unit.gflops is None else f"{unit.gflops:.3g}"
    speed = "—" if unit.seconds_per_pair is None else f"{unit.seconds_per_pair:.3g}"
    return params, gflops, speed


def _arrow(metric: str, latex: bool = False) -> str:
    if latex:
        return "$\\uparrow$" if higher_is_better(metric) else "$\\downarrow$"
    return "↑" if higher_is_better(metric) else "↓"


def table_markdown(result) -> str:
    """One table per dataset: **best**, <u>second</u>, *third*; arrows give the direction."""
    lines = ["Mean over each dataset's pairs; **best**, <u>second</u>, *third* per metric "
             "(ties share a place); ↑ higher is better, ↓ lower. Params, GFLOPs (640x480, "
             "a multiply-add = 2) and seconds per pair (wall time of `occo fuse`).", ""]  # fmt: skip
    for dataset in result.datasets:
        units = [u for u in result.units if u.dataset == dataset.name]
        if not units:
            continue
        ranks = dataset_places(result, dataset.name)
        lines += [f"### {dataset.name} ({len(dataset.stems)} pairs)", ""]
        lines += _markdown_rows(units, result.metrics, ranks, cost=True)
        inside = dataset_object_columns(result, dataset.name)
        if inside:
            held = max(max(u.object_images.values(), default=0) for u in units)
            lines += [f"#### {dataset.name}, inside objects ({held} pairs with objects; masks: "
                      f"{dataset.masks.origin})", ""]  # fmt: skip
            lines += _markdown_rows(units, inside, ranks, cost=False)
        detected = dataset_detection_columns(result, dataset.name)
        if detected:
            truth = result.detection.truths[dataset.name]
            lines += [f"#### {dataset.name}, detection ({result.detection.model} on the fused "
                      f"images against {truth.path}; COCO AP, pycocotools)", ""]  # fmt: skip
            lines += _markdown_rows(units, detected, ranks, cost=False)
    return "\n".join(lines)


def dataset_detection_columns(result, dataset: str) -> list[str]:
    """The detection columns any method has on one dataset, in table order."""
    held = {c for u in result.units if u.dataset == dataset for c in u.detection_columns}
    return [c for c in result.detection_columns if c in held]


def dataset_object_columns(result, dataset: str) -> list[str]:
    """The inside-object columns any method has on one dataset, in table order."""
    held = {c for u in result.units if u.dataset == dataset for c in u.object_columns}
    return [c for c in result.object_columns if c in held]


def _header(column: str) -> str:
    return f"{column.split('@', 1)[0]} {_arrow(column)}"


def _marked_cells(unit, columns: list[str], ranks, marks: dict[int, str]) -> list[str]:
    """A unit's values in ``columns``, each with its place's mark (markdown or LaTeX)."""
    cells = []
    for column in columns:
        text = _number(unit.mean.get(column, math.nan))
        place = ranks[column].get(unit.method)
        cells.append(marks[place].format(text) if place else text)
    return cells


def _markdown_rows(units, columns: list[str], ranks, cost: bool) -> list[str]:
    head = [
        "method",
        *(_header(m) for m in columns),
        *(("params", "GFLOPs", "s/pair") if cost else ()),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for unit in units:
        cells = _marked_cells(unit, columns, ranks, MARKDOWN_MARKS)
        name = unit.method + (f" ({len(unit.failures)} failed)" if unit.failures else "")
        lines.append("| " + " | ".join([name, *cells, *(_cost(unit) if cost else ())]) + " |")
    return [*lines, ""]


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
                          ("#", "\\#"), ("$", "\\$"), ("{", "\\{"), ("}", "\\}")):  # fmt: skip
        text = text.replace(char, escaped)
    return text


def table_latex(result) -> str:
    """A booktabs tabular, one block per dataset: \\textbf best, \\textcolor{red} second,
    \\textit third (needs ``\\usepackage{booktabs,xcolor}``)."""
    metrics = result.metrics
    lines = ["% occo compare: best \\textbf, second \\textcolor{red}, third \\textit",
             "% needs \\usepackage{booktabs} and \\usepackage{xcolor}",
             "\\begin{tabular}{l" + "r" * (len(metrics) + 3) + "}", "\\toprule",
             " & ".join(["Method", *(f"{m} {_arrow(m, True)}" for m in metrics),
                         "Params", "GFLOPs", "s/pair"]) + " \\\\"]  # fmt: skip
    for dataset in result.datasets:
        units = [u for u in result.units if u.dataset == dataset.name]
        if not units:
            continue
        ranks = dataset_places(result, dataset.name)
        lines += ["\\midrule",
                  f"\\multicolumn{{{len(metrics) + 4}}}{{l}}{{\\textit{{{_latex_escape(dataset.name)}}}"
                  f" ({len(dataset.stems)} pairs)}} \\\\", "\\midrule"]  # fmt: skip
        for unit in units:
            cells = _marked_cells(unit, metrics, ranks, LATEX_MARKS)
            cost = [_latex_escape(c).replace("—", "--") for c in _cost(unit)]
            lines.append(" & ".join([_latex_escape(unit.method), *cells, *cost]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    if result.object_columns:
        lines += _latex_extra(result, result.object_columns, "inside objects")
    if result.detection_columns:
        lines += _latex_extra(result, result.detection_columns, "detection")
    return "\n".join(lines)


def _latex_extra(result, columns: list[str], title: str) -> list[str]:
    """Another tabular (inside objects, detection), one block per dataset that has it."""
    lines = [f"% {title}",
             "\\begin{tabular}{l" + "r" * len(columns) + "}", "\\toprule",
             " & ".join(["Method", *(f"{c.split('@', 1)[0]} {_arrow(c, True)}" for c in columns)])
             + " \\\\"]  # fmt: skip
    for dataset in result.datasets:
        units = [u for u in result.units
                 if u.dataset == dataset.name and set(columns) & {*u.object_columns, *u.detection_columns}]  # fmt: skip
        if not units:
            continue
        ranks = dataset_places(result, dataset.name)
        lines += ["\\midrule",
                  f"\\multicolumn{{{len(columns) + 1}}}{{l}}{{\\textit{{{_latex_escape(dataset.name)}}}"
                  f" {title}}} \\\\", "\\midrule"]  # fmt: skip
        for unit in units:
            cells = _marked_cells(unit, columns, ranks, LATEX_MARKS)
            lines.append(" & ".join([_latex_escape(unit.method), *cells]) + " \\\\")
    return [*lines, "\\bottomrule", "\\end{tabular}", ""]


def write_results(result) -> list[Path]:
    """results.csv, results.json, table.md and table.tex in the output folder (atomically)."""
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "results.csv": results_csv(result.rows),
        "results.json": json.dumps(results_dict(result), indent=1) + "\n",
        "table.md": table_markdown(result),
        "table.tex": table_latex(result),
    }
    paths = []
    for name, text in texts.items():
        write_bytes_atomic(out / name, text.encode("utf-8"), True)
        paths.append(out / name)
    return paths
