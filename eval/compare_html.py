"""``occo compare``'s ``report.html``: one page that opens from disk in any browser.

No network and no server: the figures and thumbnails lie beside it (relative paths), the
style is inline. A few lines of inline script record on ``<body>`` how many images loaded
(``data-images-loaded`` / ``data-images-broken``), which a headless browser can read.
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path

from occo.data.io import write_bytes_atomic
from occo.eval.compare_tables import (
    PLACE_NAMES,
    _number,
    dataset_detection_columns,
    dataset_object_columns,
    dataset_places,
    higher_is_better,
)

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
.best{font-weight:bold}.second{color:#c00}.third{font-style:italic}
img.fig{max-width:100%;border:1px solid #eee}
.pair{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:1em}
.pair figure{margin:0;width:200px;font-size:11px}
.pair img{width:200px;display:block}
.bars{display:flex;flex-wrap:wrap;gap:8px}.bars img{width:380px}
.warn{color:#a60}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; else bad.push(imgs[i].getAttribute('src'));
  }
  document.body.setAttribute('data-images-loaded', ok);
  document.body.setAttribute('data-images-broken', bad.length);
  document.body.setAttribute('data-broken-list', bad.join(' '));
});
"""

#: Metrics shown under each thumbnail (all are in the tables).
CAPTION_METRICS = ("EN", "SD", "VIF", "Qabf", "SSIM")


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def metrics_table_html(result, dataset: str, columns: list[str] | None = None) -> str:
    """One dataset's table, places as classes best / second / third; ``columns`` (e.g. the
    inside-object ones) replace the whole-image metrics and drop the cost columns."""
    units = [u for u in result.units if u.dataset == dataset]
    ranks = dataset_places(result, dataset)
    cost = columns is None
    columns = result.metrics if columns is None else columns
    head = "".join(
        f"<th>{escape(m.split('@', 1)[0])} {'↑' if higher_is_better(m) else '↓'}</th>"
        for m in columns
    )
    rows = []
    for unit in units:
        cells = []
        for metric in columns:
            place = ranks[metric].get(unit.method)
            css = f' class="{PLACE_NAMES[place]}"' if place else ""
            cells.append(f"<td{css}>{_number(unit.mean.get(metric, math.nan))}</td>")
        params = "—" if unit.parameters is None else f"{unit.parameters / 1e6:.3g}M"
        gflops = "—" if unit.gflops is None else f"{unit.gflops:.3g}"
        speed = "—" if unit.seconds_per_pair is None else f"{unit.seconds_per_pair:.3g}"
        failed = (
            f' <span class="warn">({len(unit.failures)} failed)</span>' if unit.failures else ""
        )
        tail = f"<td>{params}</td><td>{gflops}</td><td>{speed}</td>" if cost else ""
        rows.append(f"<tr><td>{escape(unit.method)}{failed}</td>{''.join(cells)}{tail}</tr>")
    tail = "<th>params</th><th>GFLOPs</th><th>s/pair</th>" if cost else ""
    kind = "metrics" if cost else "metrics objects"
    return (f'<table class="{kind}" data-dataset="{escape(dataset)}"><tr><th>method</th>{head}'
            f"{tail}</tr>{''.join(rows)}</table>")  # fmt: skip


def _pair_block(result, figures, dataset, stem: str, base: Path) -> str:
    units = [u for u in result.units if u.dataset == dataset.name]
    cells = []
    for column in ("infrared", "visible", *(u.method for u in units)):
        thumb = figures.thumbs.get((dataset.name, column, stem))
        unit = next((u for u in units if u.method == column), None)
        if thumb is None:
            reason = unit.failures.get(stem, "no image") if unit else "no image"
            cells.append(f'<figure><div class="warn">{escape(reason)}</div>'
                         f"<figcaption>{escape(column)}</figcaption></figure>")  # fmt: skip
            continue
        caption = escape(column)
        if unit is not None and stem in unit.per_image:
            values = unit.per_image[stem]
            caption += "<br>" + ", ".join(
                f"{m} {_number(values[m])}" for m in CAPTION_METRICS if m in values
            )
        cells.append(f'<figure><img src="{_rel(thumb, base)}" alt="{escape(column)} {escape(stem)}">'
                     f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    return f'<h4>{escape(stem)}</h4><div class="pair">{"".join(cells)}</div>'


def report_html(result, figures) -> str:
    """The page's text."""
    base = Path(result.out_dir)
    parts = [f"<h1>occo compare</h1><p>{len(result.datasets)} dataset(s), "
             f"{len(result.methods)} method(s); whole-image metrics as <code>occo metrics</code> "
             "computes them (Tang's toolkit conventions). Per dataset and metric: "
             '<span class="best">best</span>, <span class="second">second</span>, '
             '<span class="third">third</span>; ↑ higher is better, ↓ lower.</p>']  # fmt: skip
    for line in result.skipped:
        parts.append(f'<p class="warn">{escape(line)}</p>')
    for dataset in result.datasets:
        parts.append(f"<h2>{escape(dataset.name)} ({len(dataset.stems)} pairs)</h2>")
        parts.append(metrics_table_html(result, dataset.name))
        inside = dataset_object_columns(result, dataset.name)
        if inside:
            parts.append(f"<h3>Inside objects</h3><p>masks: {escape(dataset.masks.origin)}</p>")
            parts.append(metrics_table_html(result, dataset.name, inside))
        detected = dataset_detection_columns(result, dataset.name)
        if detected:
            truth = result.detection.truths[dataset.name]
            parts.append(f"<h3>Detection</h3><p>{escape(result.detection.model)} on the fused "
                         f"images against {escape(str(truth.path))} (COCO AP, pycocotools)</p>")  # fmt: skip
            parts.append(metrics_table_html(result, dataset.name, detected))
        if dataset.name in figures.qualitative:
            parts.append(f'<img class="fig" src="{_rel(figures.qualitative[dataset.name], base)}" '
                         f'alt="qualitative {escape(dataset.name)}">')  # fmt: skip
    parts.append('<h2>Metrics per dataset</h2><div class="bars">')
    parts += [f'<img src="{_rel(p, base)}" alt="{escape(m)}">' for m, p in figures.bars.items()]
    parts.append("</div>")
    if figures.speed is not None:
        parts.append(
            f'<h2>Speed and quality</h2><img class="fig" src="{_rel(figures.speed, base)}" alt="speed">'
        )
    parts.append("<h2>Every pair</h2>")
    for dataset in result.datasets:
        parts.append(f"<h3>{escape(dataset.name)}</h3>")
        parts += [_pair_block(result, figures, dataset, stem, base) for stem in dataset.stems]
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>occo compare</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            + "\n".join(parts) + "</body></html>\n")  # fmt: skip


def write_report(result, figures) -> Path:
    """Write ``OUT/report.html`` atomically."""
    path = Path(result.out_dir) / "report.html"
    write_bytes_atomic(path, report_html(result, figures).encode("utf-8"), True)
    return path
