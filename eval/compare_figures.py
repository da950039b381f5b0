"""``occo compare``'s pictures (matplotlib, the ``compare`` extra): the qualitative figure
per dataset, per-metric bar charts, speed against quality, and the report's thumbnails.

The qualitative figure shows chosen pairs as rows and infrared, visible and each method
as columns. Each pair gets two boxes, the same in every column: red around the most
salient warm region of the infrared image (the largest centre-surround contrast of
infrared intensity at object scale: mean in a window of 1/20 of the image's shorter side
minus the mean in one five times wider; the box, 1/5 of that side, centred on it) and green
around the most detailed region of the visible image (largest mean gradient magnitude,
away from the red box); both are enlarged under the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError
from occo.data.io import read_image

INSTALL_HINT = 'matplotlib is not installed: pip install "occo[compare]" (or --no-figures)'
RED, GREEN = (220, 30, 30), (30, 190, 60)
TILE_WIDTH = 480  # px of each image in the qualitative figure (1.6 in at 300 dpi)
THUMB_WIDTH = 320  # px of the report's thumbnails


class MissingMatplotlibError(OccoError, ImportError):
    """matplotlib is needed for the figures; the message says how to install it."""


def require_matplotlib():
    """The ``matplotlib.pyplot`` module on the Agg backend.

    Raises:
        MissingMatplotlibError: matplotlib is absent (one line: how to install it).
    """
    try:
        import matplotlib
    except ImportError:
        raise MissingMatplotlibError(INSTALL_HINT) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Figures:
    """What :func:`write_figures` drew, for the report."""

    qualitative: dict[str, Path] = field(default_factory=dict)
    """Dataset -> qualitative figure."""
    chosen: dict[str, list[str]] = field(default_factory=dict)
    """Dataset -> stems shown in it."""
    bars: dict[str, Path] = field(default_factory=dict)
    """Metric -> bar chart."""
    speed: Path | None = None
    """Speed against quality, or None (no method with a timing)."""
    thumbs: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    """(dataset, column, stem) -> thumbnail; columns are "infrared", "visible", methods."""

    @property
    def files(self) -> list[Path]:
        """Every figure file (thumbnails left out)."""
        return [
            *self.qualitative.values(),
            *self.bars.values(),
            *([self.speed] if self.speed else []),
        ]


def _rgb(image: np.ndarray) -> np.ndarray:
    image = (
        image
        if image.dtype == np.uint8
        else cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    )
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def _gray(image: np.ndarray) -> np.ndarray:
    rgb = _rgb(image).astype(np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _sources(result, dataset) -> dict[str, dict[str, Path]]:
    from occo.data.pairing import list_images

    return {"infrared": list_images(dataset.ir_dir), "visible": list_images(dataset.vi_dir)}


def _fused_paths(result, dataset) -> dict[str, dict[str, Path]]:
    from occo.data.pairing import list_images

    paths = {}
    for unit in (u for u in result.units if u.dataset == dataset.name):
        images = list_images(unit.folder)
        paths[unit.method] = {s: images[s] for s in unit.per_image if s in images}
    return paths


def pick_pairs(fused: dict[str, dict[str, Path]], stems, count: int,
               objects: Callable[[str], np.ndarray | None] | None = None) -> list[str]:  # fmt: skip
    """The ``count`` stems where the methods' fused images differ most (mean per-pixel
    standard deviation across methods, on gray images; inside the pair's objects when
    ``objects(stem)`` gives a mask with any); only stems every method has."""
    common = [s for s in stems if all(s in paths for paths in fused.values())]
    if len(fused) < 2:
        return common[:count]
    spread = {}
    for stem in common:
        stack = np.stack([_gray(read_image(paths[stem])) for paths in fused.values()])
        per_pixel = stack.std(axis=0)
        mask = objects(stem) if objects is not None else None
        inside = mask is not None and mask.shape == per_pixel.shape and mask.any()
        spread[stem] = float(per_pixel[mask > 0].mean() if inside else per_pixel.mean())
    return sorted(spread, key=lambda s: -spread[s])[:count]


def object_mask_reader(dataset) -> Callable[[str], np.ndarray | None] | None:
    """``stem -> union of the pair's object masks`` from the dataset's store, or None."""
    if dataset.masks is None:
        return None
    from occo.eval.region_scoring import store_reader

    reader = store_reader(dataset.masks.store)

    def union(stem: str) -> np.ndarray | None:
        if stem not in reader:
            return None
        ir, vi = reader.read(stem)
        return ((ir > 0) | (vi > 0)).astype(np.uint8)

    return union


def largest_object(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the mask's largest 8-connected object, or None when empty."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return x, y, w, h


def choose_boxes(
    ir: np.ndarray, vi: np.ndarray, objects: np.ndarray | None = None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``((x, y, size), (x, y, size))``: the red box (the largest object of ``objects``, a
    mask of the pair; without one, the salient warm infrared region) and the green box
    (detailed visible region, not overlapping the red one); squares."""
    ir_g, vi_g = _gray(ir), _gray(vi)
    h, w = ir_g.shape
    size = max(8, min(h, w) // 5)
    found = largest_object(objects) if objects is not None and objects.shape == (h, w) else None
    if found is not None:  # a box that holds the object (up to half the image) with a margin
        size = min(max(size, round(1.2 * max(found[2], found[3]))), max(8, min(h, w) // 2))
    half = size // 2
    # Warm objects are smaller than the box: find the blob at their scale, box around it.
    k = max(3, min(h, w) // 20)
    salience = cv2.blur(ir_g, (k, k)) - cv2.blur(ir_g, (5 * k, 5 * k))
    gx, gy = cv2.Sobel(vi_g, cv2.CV_32F, 1, 0), cv2.Sobel(vi_g, cv2.CV_32F, 0, 1)
    detail = cv2.blur(np.hypot(gx, gy), (size, size))
    valid = np.zeros((h, w), bool)
    valid[half : h - (size - half) + 1, half : w - (size - half) + 1] = True
    if not valid.any():
        valid[:] = True
    if found is not None:
        cx, cy = found[0] + found[2] // 2, found[1] + found[3] // 2
    else:
        cx, cy = _argmax(salience)  # anywhere; the box is then kept inside the image
    red = (min(max(cx - half, 0), max(w - size, 0)), min(max(cy - half, 0), max(h - size, 0)))
    away = valid.copy()  # green centres whose box does not overlap the red one
    away[
        max(0, red[1] - half) : red[1] + size + half, max(0, red[0] - half) : red[0] + size + half
    ] = False
    green = _argmax(np.where(away if away.any() else valid, detail, -np.inf))
    return (*red, size), (green[0] - half, green[1] - half, size)


def _argmax(values: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(x), int(y)


def boxed_tile(image: np.ndarray, boxes, width: int = TILE_WIDTH) -> np.ndarray:
    """The image at ``width`` px with the boxes drawn, and both boxes enlarged beneath it."""
    rgb = _rgb(image)
    h, w = rgb.shape[:2]
    scale = width / w
    tile = cv2.resize(rgb, (width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    line = max(2, width // 160)
    half = width // 2
    insets = []
    for (x, y, size), colour in zip(boxes, (RED, GREEN), strict=True):
        x, y = max(0, x), max(0, y)
        crop = rgb[y : y + size, x : x + size]
        inset = cv2.resize(crop, (half, half), interpolation=cv2.INTER_CUBIC)
        cv2.rectangle(inset, (0, 0), (half - 1, half - 1), colour, line)
        insets.append(inset)
        p0 = (round(x * scale), round(y * scale))
        p1 = (round((x + size) * scale), round((y + size) * scale))
        cv2.rectangle(tile, p0, p1, colour, line)
    strip = np.concatenate(insets, axis=1)
    if strip.shape[1] < width:
        strip = np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([tile, strip], axis=0)


def qualitative_figure(plt, result, dataset, stems: list[str], path: Path) -> Path:
    """Rows: ``stems``; columns: infrared, visible, each method (names underneath)."""
    sources = _sources(result, dataset)
    fused = _fused_paths(result, dataset)
    objects = object_mask_reader(dataset)
    columns = ["infrared", "visible", *fused]
    rows = []
    for stem in stems:
        ir, vi = read_image(sources["infrared"][stem]), read_image(sources["visible"][stem])
        boxes = choose_boxes(ir, vi, objects(stem) if objects is not None else None)
        images = [ir, vi, *(read_image(p[stem]) if stem in p else None for p in fused.values())]
        rows.append([None if im is None else boxed_tile(im, boxes) for im in images])
    ratios = [next(t for t in row if t is not None).shape[0] / TILE_WIDTH for row in rows]
    col_in = 1.6
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(col_in * len(columns), col_in * sum(ratios) + 0.3),
                             gridspec_kw={"height_ratios": ratios, "wspace": 0.03, "hspace": 0.03})  # fmt: skip
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if tile is None:
                ax.text(0.5, 0.5, "failed", ha="center", va="center", fontsize=7)
            else:
                ax.imshow(tile)
            if c == 0:
                ax.set_ylabel(stems[r], fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel(columns[c], fontsize=8)
    fig.savefig(path, dpi=300, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)
    return path


def bar_chart(plt, result, metric: str, path: Path) -> Path:
    """One metric: groups of bars per dataset, a bar per method (error bars: std)."""
    from occo.eval.report import higher_is_better

    methods = list(dict.fromkeys(u.method for u in result.units))
    names = [d.name for d in result.datasets]
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(methods) * len(names), 3))
    width = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for j, name in enumerate(names):
            unit = result.unit(name, method)
            value = math.nan if unit is None else unit.mean.get(metric, math.nan)
            if math.isfinite(value):
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(value)
                std = unit.std.get(metric, math.nan)
                errs.append(std if math.isfinite(std) else 0.0)
        ax.bar(xs, ys, width, yerr=errs, label=method, color=cmap(i % 10), capsize=2,
               error_kw={"linewidth": 0.6})  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"{metric} {'↑' if higher_is_better(metric) else '↓'}")
    ax.set_title(f"{metric} (mean ± std over pairs)", fontsize=9)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.18 * (high - low))  # room for the legend above the bars
    ax.legend(fontsize=6, ncol=min(4, len(methods)), frameon=False, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _two_and_five(value: float, _position: int) -> str:
    """Minor log-axis label for 2 and 5 times a power of ten, else none."""
    lead = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:.3g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def speed_figure(plt, result, path: Path, metric: str = "Qabf") -> Path | None:
    """``metric`` against pairs/s per dataset, marker area by parameter count."""
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter

    if metric not in result.metrics:
        metric = result.metrics[0]
    timed = [u for u in result.units if u.pairs_per_s and u.parameters]
    if not timed:
        return None
    names = [d.name for d in result.datasets if any(u.dataset == d.name for u in timed)]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    most = max(u.parameters for u in timed)
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(u.method for u in result.units))
    for ax, name in zip(axes[0], names, strict=True):
        for unit in (u for u in timed if u.dataset == name):
            colour = cmap(methods.index(unit.method) % 10)
            area = 30 + 600 * math.sqrt(unit.parameters / most)
            ax.scatter(unit.pairs_per_s, unit.mean.get(metric, math.nan), s=area, color=colour,
                       alpha=0.6, edgecolors="k", linewidths=0.5)  # fmt: skip
            ax.annotate(f"{unit.method} ({unit.parameters / 1e6:.2g}M)",
                        (unit.pairs_per_s, unit.mean.get(metric, math.nan)),
                        fontsize=6, xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        # Label only the 2s and 5s between decades: all eight crowd into one another.
        ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
        ax.tick_params(axis="x", which="both", labelsize=6)
        ax.margins(0.2)
        ax.set_xlabel(f"pairs/s ({', '.join(sorted({u.device for u in timed}))})")
        ax.set_ylabel(metric)
        ax.set_title(f"{name}: {metric} against speed; area: parameters", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def thumbnail(source: Path, target: Path, width: int = THUMB_WIDTH) -> Path:
    """A JPEG of ``source`` at most ``width`` px wide (browsers show no TIFF or 16-bit)."""
    rgb = _rgb(read_image(source))
    h, w = rgb.shape[:2]
    if w > width:
        rgb = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(
        str(target), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88]
    ):
        raise OSError(f"could not write {target}")
    return target


def write_figures(result, pairs: list[str] | None = None, count: int = 3) -> Figures:
    """Every figure into ``OUT/figures`` and the thumbnails into ``OUT/report_files``.

    Raises:
        MissingMatplotlibError: matplotlib is absent.
        CompareError: a ``pairs`` stem that a dataset does not have.
    """
    from occo.eval.compare import CompareError

    plt = require_matplotlib()
    out = Path(result.out_dir)
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    figures = Figures()
    for dataset in result.datasets:
        fused = _fused_paths(result, dataset)
        if not fused:
            continue
        if pairs:
            chosen = [s for s in pairs if s in dataset.stems]
            if not chosen:
                raise CompareError(f"--pairs {','.join(pairs)}: none is a pair of {dataset.name}")
        else:
            chosen = pick_pairs(fused, dataset.stems, count, object_mask_reader(dataset))
        if chosen:
            figures.chosen[dataset.name] = chosen
            figures.qualitative[dataset.name] = qualitative_figure(
                plt, result, dataset, chosen, folder / f"qualitative_{dataset.name}.png"
            )
        sources = _sources(result, dataset)
        for stem in dataset.stems:
            for column, paths in [*sources.items(), *fused.items()]:
                if stem in paths:
                    target = out / "report_files" / dataset.name / column / f"{stem}.jpg"
                    figures.thumbs[(dataset.name, column, stem)] = thumbnail(paths[stem], target)
    for metric in result.metrics:
        figures.bars[metric] = bar_chart(plt, result, metric, folder / f"bars_{metric}.png")
    figures.speed = speed_figure(plt, result, folder / "speed_quality.png")
    return figures
