"""The comparison protocol behind ``occo compare``, as one library call.

    from occo.eval.compare import CompareSettings, compare

    result = compare(CompareSettings(["tno", "msrs20"], ["fifn", "seafusion", "tno/fused/U2Fusion"],
                                     "runs/compare"))
    result.rows  # one per method x dataset x metric

Each dataset (a folder with ``ir/`` and ``vi/``) is fused with each registered method into
``OUT/fused/<dataset>/<method>`` by :func:`occo.models.fusing.fuse_folder` (resumable:
a rerun reuses finished images, other settings are refused as by ``occo fuse``), then
scored whole-image by the code ``occo metrics`` runs (:mod:`occo.eval.scoring`,
:mod:`occo.eval.report`). A method may also be a folder of fused images made elsewhere;
it is scored as it is, for the dataset it belongs to (see :func:`folder_datasets`).
Where a dataset has object masks or box labels it is also scored inside objects
(:mod:`occo.eval.compare_objects`); with a detector, every method's fused images are
detected and scored against the dataset's labels (:mod:`occo.eval.compare_detect`).
Parameters and GFLOPs come from :func:`occo.models.registry.describe_network`, the time
per pair from the fuse run's manifest. Tables, figures and the HTML page are written by
:mod:`occo.eval.compare_tables`, :mod:`occo.eval.compare_figures` and
:mod:`occo.eval.compare_html`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occo.data.errors import OccoError
from occo.eval.compare_objects import ObjectMasks

FORMAT = "occo-compare"


class CompareError(OccoError, ValueError):
    """Settings or inputs that cannot make a comparison (one line: what and what to do)."""


@dataclass
class CompareSettings:
    """Everything that decides an ``occo compare`` run."""

    datasets: list[Path]
    """Dataset folders, each with ``ir/`` and ``vi/`` (pairs by stem)."""
    methods: list[str]
    """Registered network names (``occo methods``) or folders of fused images."""
    out_dir: Path
    """Output folder: fused/, results.csv/json, table.md/tex, figures/, report.html."""
    weights: dict[str, Path] = field(default_factory=dict)
    """Method name -> weight file (or folder holding it); absent: the method's default."""
    metrics: tuple[str, ...] | None = None
    """Whole-image metrics to score; None: every one (``occo metrics``' default)."""
    limit: int | None = None
    """Use only the first N pairs (by stem) of each dataset; None: all."""
    device: str = "auto"
    """Where the networks run (auto, cpu, cuda, cuda:N)."""
    batch_size: int = 1
    """Same-size pairs per network call (1: the time per pair is per pair)."""
    workers: int = 1
    """Processes scoring images."""
    threads: int | None = None
    """CPU threads the caller set (recorded in each manifest)."""
    figures: bool = True
    """Draw the figures and the HTML report (needs matplotlib)."""
    pairs: list[str] | None = None
    """Stems shown in the qualitative figures; None: picked where the methods differ most."""
    figure_pairs: int = 3
    """How many pairs the qualitative figure shows when ``pairs`` is None."""
    objects: bool = True
    """Also score inside objects where a dataset has masks or box labels (see
    :mod:`occo.eval.compare_objects`)."""
    masks: dict[str, Path] = field(default_factory=dict)
    """Dataset name -> mask store to score it inside (wins over what its folder holds)."""
    regions: tuple[str, ...] = ("objects",)
    """Regions scored inside (``occo metrics --regions``' names)."""
    detector: str | None = None
    """Detector run on every method's fused images (``occo eval detect --detector``: a
    transformers id or folder, or ``yolov5:FILE.pt``); None: no detection scores."""
    labels: dict[str, Path] = field(default_factory=dict)
    """Dataset name -> detection ground truth (absent: ``labels/fusion`` or ``labels/``)."""

    def validate(self) -> None:
        """Raise :class:`CompareError` for settings no run can use."""
        if not self.datasets:
            raise CompareError("give at least one DATASET folder (with ir/ and vi/)")
        if not self.methods:
            raise CompareError("--methods names no method; e.g. --methods fifn,seafusion")
        if self.limit is not None and self.limit < 1:
            raise CompareError(f"--limit must be at least 1, got {self.limit}")
        if len(set(self.methods)) != len(self.methods):
            raise CompareError(f"--methods names a method twice: {','.join(self.methods)}")
        if self.masks and not self.objects:
            raise CompareError("--masks and --no-objects contradict each other; drop one")
        if self.labels and self.detector is None:
            raise CompareError("--labels is the detection ground truth: give --detector too")


@dataclass(frozen=True)
class Method:
    """One column of the comparison: a registered network or a folder of fused images."""

    name: str
    """Row name (the registry name, or the folder's name)."""
    network: str | None
    """Registry name, or None for a folder method."""
    folder: Path | None = None
    """The folder of fused images (folder methods)."""
    weights: Path | None = None
    """Weight file for a network (None: its default)."""


@dataclass(frozen=True)
class Dataset:
    """One dataset: its name and the (possibly limited) source folders scored against."""

    name: str
    """Folder name, made unique."""
    root: Path
    """The dataset folder."""
    ir_dir: Path
    """Infrared sources (``root/ir``, or a folder of links to the first N with a limit)."""
    vi_dir: Path
    """Visible sources."""
    stems: tuple[str, ...]
    """The pairs used, sorted."""
    masks: ObjectMasks | None = None
    """The object masks scored inside, or None (no masks, no labels, or not asked)."""


@dataclass
class Unit:
    """One method on one dataset: what was fused, scored and measured."""

    dataset: str
    """Dataset name."""
    method: str
    """Method name."""
    kind: str
    """``"network"`` or ``"folder"``."""
    folder: Path
    """The fused images scored."""
    images: int = 0
    """Images scored."""
    fused: int = 0
    """Pairs fused by this run (0 when reused or a folder method)."""
    reused: int = 0
    """Pairs already fused by an earlier run, kept."""
    failures: dict[str, str] = field(default_factory=dict)
    """Stem -> why the pair has no result (fusing or scoring failed)."""
    seconds_per_pair: float | None = None
    """Wall time per fused pair (occo-fuse.json ``timings.per_image``); None: unknown."""
    parameters: int | None = None
    """Network parameters (default config); None for a folder."""
    gflops: float | None = None
    """GFLOPs of one 640x480 pair (multiply-add = 2); None for a folder."""
    device: str = ""
    """Where the network ran."""
    mean: dict[str, float] = field(default_factory=dict)
    """Metric -> mean over images (NaN values left out)."""
    std: dict[str, float] = field(default_factory=dict)
    """Metric -> sample standard deviation."""
    undefined: dict[str, int] = field(default_factory=dict)
    """Metric -> images with an undefined value."""
    object_columns: list[str] = field(default_factory=list)
    """Columns scored inside objects (``EN@objects``, ...), in table order; [] without masks."""
    object_images: dict[str, int] = field(default_factory=dict)
    """Region -> images where it holds pixels (its columns average over these)."""
    detection_columns: list[str] = field(default_factory=list)
    """Detection scores in ``mean`` (mAP50, mAP50-95, ``AP50 <class>``); [] without."""
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    """Stem -> metric -> value."""

    @property
    def pairs_per_s(self) -> float | None:
        """Pairs per second, or None when the time is unknown."""
        return 1.0 / self.seconds_per_pair if self.seconds_per_pair else None


@dataclass
class CompareEvents:
    """Callbacks a caller renders; the library never prints. Each may be None."""

    note: Callable[[str], None] | None = None
    """A line of information."""
    warn: Callable[[str], None] | None = None
    """A line that needs attention (a pair that failed, a folder that fits no dataset)."""
    progress: Callable[[int, int, str], None] | None = None
    """``(pairs done, pairs in the protocol, what)`` as each pair is fused or scored."""
    finished: Callable[[Unit, int, int, float | None], None] | None = None
    """``(unit, units done, units in all, ETA in s or None)`` per finished method x dataset."""

    def _say(self, kind: str, text: str) -> None:
        handler = getattr(self, kind)
        if handler is not None:
            handler(text)


@dataclass
class CompareResult:
    """What :func:`compare` did and measured."""

    out_dir: Path
    """The output folder."""
    datasets: list[Dataset]
    """The datasets, in order."""
    methods: list[Method]
    """The methods, in order."""
    units: list[Unit]
    """One per method x dataset that was scored, datasets first."""
    metrics: list[str]
    """Whole-image metric columns, in table order."""
    object_columns: list[str] = field(default_factory=list)
    """Columns inside objects of any dataset (``EN@objects``, ...), in table order."""
    detection_columns: list[str] = field(default_factory=list)
    """Detection columns of any dataset (mAP50, mAP50-95, ``AP50 <class>``), in order."""
    detection: Any = None
    """The :class:`occo.eval.compare_detect.Detection` used, or None."""
    skipped: list[str] = field(default_factory=list)
    """Lines about method x dataset combinations left out (a folder of another dataset)."""
    files: list[Path] = field(default_factory=list)
    """Files written (results, tables, figures, report)."""
    seconds: float = 0.0
    """Wall time of the whole protocol."""

    @property
    def columns(self) -> list[str]:
        """Every column: whole-image metrics, those inside objects, detection scores."""
        return [*self.metrics, *self.object_columns, *self.detection_columns]

    def unit(self, dataset: str, method: str) -> Unit | None:
        """The unit of a method on a dataset, or None."""
        return next((u for u in self.units if (u.dataset, u.method) == (dataset, method)), None)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per method x dataset x metric (results.csv and results.json)."""
        from occo.eval.compare_tables import result_rows

        return result_rows(self)


# --- resolving methods and datasets --------------------------------------------------------


def resolve_methods(names: list[str], weights: dict[str, Path]) -> list[Method]:
    """Registered names and folders as :class:`Method` s.

    A name that is registered (case-insensitive) is a network unless a folder of that
    name exists (then say ``./NAME``); anything else must be a folder of fused images.

    Raises:
        CompareError: an unknown name that is no folder, ``--weights`` for a method not
            compared or for a folder, two methods with the same row name.
    """
    from occo.models.registry import network_names

    registered = set(network_names())
    methods: list[Method] = []
    for raw in names:
        key = raw.strip().lower()
        path = Path(raw).expanduser()
        if key in registered and not (path.is_dir() and ("/" in raw or raw.startswith("."))):
            methods.append(Method(key, key, weights=_weights_for(key, weights)))
        elif path.is_dir():
            methods.append(Method(path.resolve().name, None, folder=path))
        else:
            raise CompareError(
                f"--methods: {raw!r} is neither a registered method ({', '.join(sorted(registered))}) "
                "nor a folder of fused images"
            )
    seen: dict[str, str] = {}
    for method, raw in zip(methods, names, strict=True):
        if method.name in seen:
            raise CompareError(
                f"--methods: {seen[method.name]!r} and {raw!r} both make a row named "
                f"{method.name!r}; rename one folder"
            )
        seen[method.name] = raw
    networks = {m.network for m in methods if m.network}
    stray = sorted(set(weights) - networks)
    if stray:
        raise CompareError(
            f"--weights names {', '.join(stray)}, which --methods does not compare as a network"
        )
    return methods


def _weights_for(name: str, weights: dict[str, Path]) -> Path | None:
    path = weights.get(name)
    if path is not None and not Path(path).exists():
        raise CompareError(f"--weights {name}={path}: no such file or folder")
    return None if path is None else Path(path)


def parse_weights(items: list[str]) -> dict[str, Path]:
    """``["seafusion=SeAFusion.pth", ...]`` as ``{"seafusion": Path(...)}``.

    Raises:
        CompareError: an item without ``NAME=PATH`` or a name given twice.
    """
    return _assignments(items, "--weights", "seafusion=SeAFusion.pth", lower=True)


def parse_masks(items: list[str], option: str = "--masks") -> dict[str, Path]:
    """``["msrs=msrs/masks.h5", ...]`` (dataset name = path) as a dict (``--masks``,
    ``--labels``).

    Raises:
        CompareError: an item without ``NAME=PATH`` or a name given twice.
    """
    return _assignments(items, option, "msrs=data/msrs/masks.h5", lower=False)


def _assignments(items: list[str], option: str, example: str, lower: bool) -> dict[str, Path]:
    mapping: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip().lower() if lower else name.strip()
        if not sep or not name or not path:
            raise CompareError(f"{option} {item!r}: write NAME=PATH, e.g. {example}")
        if name in mapping:
            raise CompareError(f"{option} gives {name} twice")
        mapping[name] = Path(path).expanduser()
    return mapping


def resolve_datasets(folders: list[Path], out_dir: Path, limit: int | None) -> list[Dataset]:
    """The datasets with their pairs; with ``limit``, folders of links to the first N.

    Raises:
        CompareError: a folder without ir/ and vi/ or without pairs.
    """
    from occo.data.pairing import pair_images

    names = [Path(f).resolve().name for f in folders]
    datasets = []
    for folder, name in zip(folders, names, strict=True):
        folder = Path(folder)
        if names.count(name) > 1:
            name = str(folder).strip("/").replace("/", "_")
        ir, vi = folder / "ir", folder / "vi"
        if not (ir.is_dir() and vi.is_dir()):
            raise CompareError(f"{folder} is no dataset: it needs ir/ and vi/ folders of pairs")
        pairs = pair_images(ir, vi).pairs
        if not pairs:
            raise CompareError(f"no pairs in {folder}: no file stem is in both ir/ and vi/")
        if limit is not None and limit < len(pairs):
            pairs = pairs[:limit]
            ir, vi = _linked_subset(out_dir / "sources" / name, pairs)
        datasets.append(Dataset(name, folder, ir, vi, tuple(stem for stem, _, _ in pairs)))
    return datasets


def _linked_subset(root: Path, pairs) -> tuple[Path, Path]:
    """``root/ir`` and ``root/vi`` holding links to exactly ``pairs`` (names kept, so the
    fused images' records match those fused from the full folders)."""
    folders = (root / "ir", root / "vi")
    for index, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {paths[index].name: paths[index] for _, *paths in pairs}
        for existing in folder.iterdir():
            if existing.name not in wanted:
                existing.unlink()
        for name, target in wanted.items():
            link = folder / name
            if not (link.is_symlink() and Path(os.readlink(link)) == target.resolve()):
                link.unlink(missing_ok=True)
                link.symlink_to(target.resolve())
    return folders


def folder_datasets(method: Method, datasets: list[Dataset]) -> list[Dataset]:
    """The datasets a folder method is scored on.

    A folder inside a dataset's folder (``tno/fused/U2Fusion``) belongs to that dataset.
    A folder elsewhere belongs to every dataset whose pairs it all holds (by stem).
    """
    from occo.data.pairing import list_images

    folder = method.folder.resolve()
    inside = [d for d in datasets if folder.is_relative_to(d.root.resolve())]
    if inside:
        return inside[-1:]  # the innermost
    stems = set(list_images(folder))
    return [d for d in datasets if set(d.stems) <= stems]


# --- the protocol --------------------------------------------------------------------------


def compare(settings: CompareSettings, events: CompareEvents | None = None) -> CompareResult:
    """Fuse, score and measure every method on every dataset; write results and figures.

    A pair a method fails on is reported (``Unit.failures``, a warning) and the rest goes
    on. Interrupted (Ctrl-C), finished fused images stay; a rerun reuses them.

    Raises:
        CompareError, FuseSetupError, ResumeError and other OccoError subclasses (one line).
    """
    from occo.eval.metrics import METRIC_NAMES

    events = events or CompareEvents()
    settings.validate()
    started = time.perf_counter()
    out_dir = Path(settings.out_dir)
    methods = resolve_methods(settings.methods, settings.weights)
    datasets = resolve_datasets(settings.datasets, out_dir, settings.limit)
    wanted = tuple(settings.metrics) if settings.metrics is not None else METRIC_NAMES
    unknown = [m for m in wanted if m not in METRIC_NAMES]
    if unknown:
        raise CompareError(
            f"--metrics: unknown {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}"
        )
    if settings.figures:
        from occo.eval.compare_figures import require_matplotlib

        require_matplotlib()  # before hours of fusing
    plan: list[tuple[Dataset, Method]] = []
    result = CompareResult(out_dir, datasets, methods, [], [m for m in METRIC_NAMES if m in wanted])
    for method in methods:
        if method.folder is not None:
            fits = folder_datasets(method, datasets)
            for dataset in datasets:
                if dataset not in fits:
                    result.skipped.append(
                        f"{method.name} ({method.folder}) is not scored on {dataset.name}: it "
                        "lies in another dataset's folder or lacks some of its pairs"
                    )
            if not fits:
                raise CompareError(
                    f"{method.folder} fits none of the datasets (it lies in none of their "
                    "folders and holds the pairs of none)"
                )
    for dataset in datasets:
        for method in methods:
            if method.folder is None or dataset in folder_datasets(method, datasets):
                plan.append((dataset, method))
    for line in result.skipped:
        events._say("note", line)
    if settings.objects:
        result.datasets = datasets = _with_masks(datasets, settings, events)
    if settings.detector is not None:
        result.detection = _detection(datasets, settings, events)
    described = _describe({m.network for _, m in plan if m.network})
    progress = _Progress(plan, events)
    for dataset, method in plan:
        dataset = next(d for d in datasets if d.name == dataset.name)  # with its masks
        unit = _run_unit(dataset, method, settings, events, progress, described)
        if result.detection is not None and dataset.name in result.detection.truths:
            _detect(unit, dataset, result.detection, events)
        result.units.append(unit)
        progress.finish(unit)
    result.object_columns = list(dict.fromkeys(c for u in result.units for c in u.object_columns))
    result.detection_columns = list(
        dict.fromkeys(c for u in result.units for c in u.detection_columns)
    )
    result.seconds = time.perf_counter() - started
    from occo.eval.compare_tables import write_results

    result.files += write_results(result)
    if settings.figures:
        from occo.eval.compare_figures import write_figures
        from occo.eval.compare_html import write_report

        figures = write_figures(result, settings.pairs, settings.figure_pairs)
        result.files += [*figures.files, write_report(result, figures)]
    return result


def _with_masks(datasets: list[Dataset], settings: CompareSettings,
                events: CompareEvents) -> list[Dataset]:  # fmt: skip
    """The datasets with the object masks each is scored inside (before any fusing, so a
    store that lacks pairs fails at once)."""
    from dataclasses import replace

    from occo.eval.compare_objects import object_masks

    unknown = sorted(set(settings.masks) - {d.name for d in datasets})
    if unknown:
        raise CompareError(f"--masks names {', '.join(unknown)}, which is no dataset compared "
                           f"({', '.join(d.name for d in datasets)})")  # fmt: skip
    found = []
    for dataset in datasets:
        masks = object_masks(dataset.root, dataset.stems, dataset.name, Path(settings.out_dir),
                             settings.masks.get(dataset.name),
                             note=lambda line: events._say("note", line))  # fmt: skip
        if masks is not None:
            events._say("note", f"{dataset.name}: scored inside objects too ({masks.origin})")
        found.append(replace(dataset, masks=masks))
    return found


def _detection(datasets: list[Dataset], settings: CompareSettings, events: CompareEvents):
    """The shared detector, with the ground truth of every dataset that has some."""
    from occo.eval.compare_detect import Detection

    unknown = sorted(set(settings.labels) - {d.name for d in datasets})
    if unknown:
        raise CompareError(f"--labels names {', '.join(unknown)}, which is no dataset compared "
                           f"({', '.join(d.name for d in datasets)})")  # fmt: skip
    detection = Detection(
        settings.detector, settings.device, Path(settings.out_dir) / "detect-cache"
    )
    for dataset in datasets:
        truth = detection.truth_for(dataset.root, dataset.name, settings.labels.get(dataset.name))
        if truth is None:
            events._say("note", f"{dataset.name}: no detection ground truth (labels/fusion or "
                                f"labels/; or --labels {dataset.name}=DIR): not detected")  # fmt: skip
        else:
            events._say("note", f"{dataset.name}: detection with {settings.detector} against "
                                f"{truth.path} ({', '.join(truth.classes)})")  # fmt: skip
    if not detection.truths:
        raise CompareError("--detector: no dataset has detection ground truth; pass --labels "
                           "DATASET=DIR (YOLO txt, VOC XML or COCO JSON)")  # fmt: skip
    return detection


def _detect(unit: Unit, dataset: Dataset, detection, events: CompareEvents) -> None:
    """Detection scores of the unit's fused images (those scored), into ``unit.mean``."""
    from occo.data.pairing import list_images
    from occo.eval.compare_detect import detection_columns

    found = list_images(unit.folder)
    images = {s: found[s] for s in dataset.stems if s in found and s not in unit.failures}
    if not images:
        return
    from occo.eval.compare_detect import CompareDetectError

    try:
        values = detection.score(unit.method, dataset.name, images)
    except CompareDetectError:
        raise  # the detector itself: it fails the same for every method
    except OccoError as exc:
        events._say("warn", f"{unit.method} on {dataset.name}: not detected ({exc})")
        return
    unit.mean.update(values)
    unit.detection_columns = detection_columns(detection.truths[dataset.name].classes)


def _describe(names: set[str]) -> dict[str, Any]:
    return {name: _described(name) for name in names}


@functools.cache
def _described(name: str):
    """describe_network once per process (a network's default config never changes)."""
    from occo.models.registry import describe_network

    return describe_network(name)


class _Progress:
    """Pairs done over the whole protocol, and the ETA from the time per pair so far."""

    def __init__(self, plan: list[tuple[Dataset, Method]], events: CompareEvents) -> None:
        # A pair counts once for fusing (networks) and once for scoring.
        self.total = sum(len(d.stems) * (2 if m.network else 1) for d, m in plan)
        self.units = len(plan)
        self.done = 0
        self.units_done = 0
        self.events = events
        self.started = time.perf_counter()

    def step(self, what: str, n: int = 1) -> None:
        self.done += n
        if self.events.progress is not None:
            self.events.progress(self.done, self.total, what)

    def finish(self, unit: Unit) -> None:
        self.units_done += 1
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        if self.events.finished is not None:
            self.events.finished(unit, self.units_done, self.units, eta)


def _run_unit(dataset: Dataset, method: Method, settings: CompareSettings,
              events: CompareEvents, progress: _Progress, described: dict) -> Unit:  # fmt: skip
    """Fuse (networks) and score one method on one dataset."""
    if method.network is None:
        unit = Unit(dataset.name, method.name, "folder", method.folder)
    else:
        folder = Path(settings.out_dir) / "fused" / dataset.name / method.name
        unit = Unit(dataset.name, method.name, "network", folder)
        summary = described[method.network]
        unit.parameters, unit.gflops = summary.parameters, summary.gflops_640x480
        before = progress.done
        _fuse(dataset, method, settings, events, progress, unit)
        progress.done = before + len(dataset.stems)  # failed and reused pairs count as done
    _score(dataset, unit, settings, events, progress)
    return unit


def _fuse(dataset: Dataset, method: Method, settings: CompareSettings, events: CompareEvents,
          progress: _Progress, unit: Unit) -> None:  # fmt: skip
    from occo.data.fused import read_fuse_manifest
    from occo.models.fusing import FuseEvents, FuseSettings, fuse_folder

    fuse_settings = FuseSettings(method=method.network, weights=method.weights,
                                 device=settings.device, batch_size=settings.batch_size,
                                 threads=settings.threads)  # fmt: skip
    prefix = f"{method.name} on {dataset.name}"
    fuse_events = FuseEvents(
        note=None,
        warn=lambda line: events._say("warn", f"{prefix}: {line}"),
        pair=lambda outcome: progress.step(f"fusing {prefix}: {outcome.stem}"),
    )
    result = fuse_folder(dataset.ir_dir, dataset.vi_dir, unit.folder, fuse_settings, fuse_events)
    if result.interrupted:
        raise KeyboardInterrupt
    unit.fused, unit.reused, unit.device = result.fused, result.skipped, result.device
    for stem, reason in result.failures.items():
        if stem in dataset.stems:
            unit.failures[stem] = f"fusing failed: {reason}"
            events._say("warn", f"{prefix}: {stem} failed ({reason}); the other pairs go on")
    manifest = read_fuse_manifest(unit.folder) or {}
    per_image = (manifest.get("timings") or {}).get("per_image")
    unit.seconds_per_pair = float(per_image) if per_image else None


def _score(dataset: Dataset, unit: Unit, settings: CompareSettings, events: CompareEvents,
           progress: _Progress) -> None:  # fmt: skip
    """Score the unit's folder as ``occo metrics FOLDER --ir IR --vi VI`` does, per image;
    an image that cannot be scored is a failure of that pair, the rest goes on."""
    from occo.eval.report import summarize
    from occo.eval.scoring import ScoringError, plan_folder, score_image, score_jobs

    what = f"scoring {unit.method} on {dataset.name}"
    metrics = list(settings.metrics) if settings.metrics is not None else None
    try:
        plan = plan_folder(unit.folder, dataset.ir_dir, dataset.vi_dir, metrics, method=unit.method)
    except ScoringError as exc:
        for stem in dataset.stems:
            unit.failures.setdefault(stem, f"not scored: {exc}")
        events._say("warn", f"{unit.method} on {dataset.name}: nothing scored ({exc})")
        progress.step(what, len(dataset.stems))
        return
    wanted = set(dataset.stems)
    plan.jobs = [job for job in plan.jobs if job.fused.stem in wanted]
    if dataset.masks is not None:
        from occo.eval.region_scoring import attach_regions

        # TC (objects against their surround) has no whole-image form: always scored inside.
        inside = None if metrics is None else [*metrics, "TC"]
        attach_regions(plan, dataset.masks.store, settings.regions, inside)
    missing = sorted(wanted - {job.fused.stem for job in plan.jobs})
    for stem in missing:
        unit.failures.setdefault(stem, f"no fused image in {unit.folder}")
    progress.step(what, len(missing))
    scores = []
    if settings.workers > 1 and len(plan.jobs) > 1:
        try:
            scores = score_jobs(plan.jobs, settings.workers,
                                on_done=lambda s: progress.step(f"{what}: {s.image}"))  # fmt: skip
        except OccoError:  # the pool stops at the first bad image: redo them one by one
            scores = []
    if not scores:
        for job in plan.jobs:
            try:
                scores.append(score_image(job))
            except OccoError as exc:  # unreadable, wrong size, masks of another size
                unit.failures[job.fused.stem] = f"not scored: {exc}"
                events._say(
                    "warn", f"{unit.method} on {dataset.name}: {exc}; the other images go on"
                )
            if settings.workers <= 1 or len(plan.jobs) <= 1:
                progress.step(f"{what}: {job.fused.stem}")
    scores = sorted(scores, key=lambda s: s.image)
    summary = summarize([plan], scores)[0]
    unit.images = summary.images
    unit.mean, unit.std, unit.undefined = summary.mean, summary.std, summary.undefined
    if plan.regions is not None:
        unit.object_columns = plan.regions.all_columns()
        unit.object_images = dict(summary.region_images)
    unit.per_image = {Path(s.image).stem: dict(s.values) for s in scores}


def finite(value: float | None) -> bool:
    """True for a number that is neither None nor NaN (infinity counts)."""
    return value is not None and not math.isnan(value)
