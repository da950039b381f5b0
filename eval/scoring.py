"""Scoring folders of fused images: finding their sources, pairing by stem, running in parallel.

A folder of fused images is one method. Its sources come from ``--ir``/``--vi``, else
from the ``occo-fuse.json`` manifest inside it, else there are none and only the
source-free metrics are computed. Work is per image and independent, so several
processes score images side by side.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError, OccoWarning
from occo.data.fused import MANIFEST_NAME, read_fuse_manifest
from occo.data.io import read_image
from occo.data.pairing import list_images
from occo.eval.metrics import (
    METRIC_NAMES,
    SOURCE_FREE,
    GrayInputs,
    MetricInputError,
    compute_on_gray,
    to_gray_uint8,
)
from occo.eval.metrics.table import POOLED, SOURCE_ROW_METRICS
from occo.eval.region_scoring import RegionSpec, score_in_regions


class ScoringError(OccoError, ValueError):
    """A folder or image that cannot be scored; the message names the file."""


@dataclass(frozen=True)
class Sources:
    """Where a folder's infrared and visible sources are."""

    ir_dir: Path | None
    """Infrared folder, or None when there are no sources."""
    vi_dir: Path | None
    """Visible folder, or None when there are no sources."""
    origin: str
    """How they were found: "options", "manifest", "shared" (another row's manifest, for
    the same images) or "none"."""
    manifest_folder: Path | None = None
    """The folder whose ``occo-fuse.json`` named them (origins "manifest" and "shared")."""
    outputs: frozenset[str] | None = None
    """Stems occo fuse wrote into the folder (origin "manifest"); other images are not its."""


@dataclass(frozen=True)
class ImageJob:
    """One fused image and its sources, self-contained so that a worker process can run it."""

    method: str
    """Row name: the fused folder's name."""
    fused: Path
    """The fused image."""
    ir: Path | None
    """Its infrared source, or None."""
    vi: Path | None
    """Its visible source, or None."""
    metrics: tuple[str, ...]
    """Metrics to compute."""
    regions: RegionSpec | None = None
    """Metrics inside mask regions too, or None."""


@dataclass
class FolderPlan:
    """What will be scored for one folder of fused images, and what will not."""

    method: str
    """Row name (the folder's name, made unique)."""
    folder: Path
    """The fused folder."""
    sources: Sources
    """The sources used."""
    metrics: tuple[str, ...]
    """Metrics computed for this folder."""
    skipped_metrics: tuple[str, ...] = ()
    """Requested or default metrics that cannot be computed here."""
    skip_reason: str | None = None
    """Why ``skipped_metrics`` were skipped."""
    jobs: list[ImageJob] = field(default_factory=list)
    """One job per fused image with its sources."""
    unpaired: list[Path] = field(default_factory=list)
    """Fused images without an infrared or visible partner (listed, not scored)."""
    foreign: list[Path] = field(default_factory=list)
    """Images in an occo fuse folder that its manifest does not list (not scored)."""
    regions: RegionSpec | None = None
    """Metrics inside mask regions too, or None."""
    source_role: str | None = None
    """``"infrared"`` or ``"visible"`` for a row that scores a source itself, else None."""


@dataclass(frozen=True)
class ImageScore:
    """Metric values of one fused image."""

    method: str
    """Row name of its folder."""
    image: str
    """File name of the fused image."""
    values: dict[str, float]
    """``{metric: value}``; NaN where undefined. Region metrics as ``EN@objects``."""
    empty_regions: tuple[str, ...] = ()
    """Regions without a pixel in this image (no values for them)."""


def find_sources(folder: Path, ir_dir: Path | None, vi_dir: Path | None) -> Sources:
    """Sources for a fused folder: the options first, then its manifest, else none.

    Raises:
        ScoringError: only one of ``ir_dir``/``vi_dir`` given, or a manifest naming
            folders that do not exist.
    """
    if (ir_dir is None) != (vi_dir is None):
        raise ScoringError("give both --ir and --vi, or neither")
    if ir_dir is not None:
        return Sources(Path(ir_dir), Path(vi_dir), "options")
    manifest = read_fuse_manifest(folder)
    if manifest is None:
        return Sources(None, None, "none")
    ir, vi = Path(manifest["ir_dir"]), Path(manifest["vi_dir"])
    for name, path in (("ir_dir", ir), ("vi_dir", vi)):
        if not path.is_dir():
            raise ScoringError(
                f"{folder / MANIFEST_NAME} names {name} {path}, which does not exist; "
                "pass --ir and --vi"
            )
    outputs = manifest.get("outputs")
    listed = frozenset(outputs) if isinstance(outputs, dict) else None
    return Sources(ir, vi, "manifest", manifest_folder=folder, outputs=listed)


def plan_folder(
    folder: str | Path,
    ir_dir: str | Path | None = None,
    vi_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    method: str | None = None,
    sources: Sources | None = None,
) -> FolderPlan:
    """Pair a folder's fused images with their sources and choose the metrics.

    Args:
        folder: folder of fused images (not recursive).
        ir_dir: infrared folder, or None to use the folder's manifest.
        vi_dir: visible folder, or None to use the folder's manifest.
        metrics: canonical metric names, or None for all that the inputs allow.
        method: row name; defaults to the folder's name.
        sources: use these sources (``ir_dir``/``vi_dir`` are then ignored).

    Returns:
        The plan; fused images without both partners are in ``unpaired``.

    Raises:
        FileNotFoundError / NotADirectoryError: the folder does not exist.
        ScoringError: no images in the folder, or none of them has both partners.
    """
    folder = Path(folder)
    fused = list_images(folder)
    if not fused:
        raise ScoringError(f"no images in {folder} (looked for png, jpg, bmp, tif)")
    if sources is None:
        sources = find_sources(
            folder,
            None if ir_dir is None else Path(ir_dir),
            None if vi_dir is None else Path(vi_dir),
        )
    wanted = tuple(metrics) if metrics is not None else METRIC_NAMES
    plan = FolderPlan(
        method=method or folder.resolve().name, folder=folder, sources=sources, metrics=wanted
    )
    if sources.outputs is not None:  # score what occo fuse made there, not stray files
        plan.foreign = [path for stem, path in fused.items() if stem not in sources.outputs]
        fused = {stem: path for stem, path in fused.items() if stem in sources.outputs}
        if not fused:
            raise ScoringError(f"none of the images in {folder} is listed in its {MANIFEST_NAME}")
    if sources.ir_dir is None:
        plan.metrics = tuple(m for m in wanted if m in SOURCE_FREE)
        plan.skipped_metrics = tuple(m for m in wanted if m not in SOURCE_FREE)
        if plan.skipped_metrics:
            plan.skip_reason = (
                f"no sources for {folder}: pass --ir and --vi (or score a folder written by "
                f"occo fuse, whose {MANIFEST_NAME} names them)"
            )
        if wanted and not plan.metrics:
            raise ScoringError(
                f"{', '.join(wanted)} need the sources of {folder}; pass --ir and --vi"
            )
        plan.jobs = [
            ImageJob(plan.method, path, None, None, plan.metrics) for path in fused.values()
        ]
        return plan
    ir_images, vi_images = list_images(sources.ir_dir), list_images(sources.vi_dir)
    for stem, path in fused.items():
        if stem in ir_images and stem in vi_images:
            plan.jobs.append(
                ImageJob(plan.method, path, ir_images[stem], vi_images[stem], plan.metrics)
            )
        else:
            plan.unpaired.append(path)
    if not plan.jobs:
        raise ScoringError(
            f"none of the {len(fused)} images in {folder} has partners with the same name in "
            f"both {sources.ir_dir} and {sources.vi_dir}; check --ir/--vi"
        )
    return plan


def plan_folders(
    folders: Sequence[Path],
    ir_dir: Path | None = None,
    vi_dir: Path | None = None,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> list[FolderPlan]:
    """Plan several folders as rows of one table, with the same sources for the same images.

    Without ``ir_dir``/``vi_dir``, a folder written by ``occo fuse`` knows its sources from
    its manifest. Another method's folder beside it, holding fused images of the same
    stems, gets those sources too (origin "shared"), so that every row is scored with the
    same metrics instead of the occo row alone.

    Args:
        folders: fused folders, one row each.
        ir_dir: infrared folder for every row, or None.
        vi_dir: visible folder for every row, or None.
        metrics: as for :func:`plan_folder`.
        methods: row names; default the folders' names.

    Returns:
        One plan per folder, in order.
    """
    methods = list(methods) if methods is not None else [None] * len(folders)
    plans = [
        plan_folder(f, ir_dir, vi_dir, metrics, method=m)
        for f, m in zip(folders, methods, strict=True)
    ]
    known = [p for p in plans if p.sources.origin == "manifest"]
    for index, plan in enumerate(plans):
        if plan.sources.origin != "none" or not known:
            continue
        stems = set(list_images(plan.folder))
        donor = max(known, key=lambda p: len(stems & set(list_images(p.sources.ir_dir))))
        if not stems & set(list_images(donor.sources.ir_dir)):
            continue
        shared = Sources(
            donor.sources.ir_dir, donor.sources.vi_dir, "shared", donor.sources.manifest_folder
        )
        plans[index] = plan_folder(plan.folder, metrics=metrics, method=plan.method, sources=shared)
    return plans


def _read(path: Path, role: str) -> np.ndarray:
    try:
        return read_image(path)
    except (OccoError, FileNotFoundError) as exc:
        raise ScoringError(f"{exc} ({role} image)") from exc


def score_image(job: ImageJob) -> ImageScore:
    """Read one fused image (and its sources) and compute its metrics.

    Raises:
        ScoringError: an unreadable image, or a fused image whose size differs from its
            sources; the message names the files.
    """
    fused = _read(job.fused, "fused")
    ir = vi = None
    if job.ir is not None:
        ir, vi = _read(job.ir, "infrared"), _read(job.vi, "visible")
        for name, path, image in (("infrared", job.ir, ir), ("visible", job.vi, vi)):
            if image.shape[:2] != fused.shape[:2]:
                raise ScoringError(
                    f"{job.fused} is {fused.shape[1]}x{fused.shape[0]} but its {name} source "
                    f"{path} is {image.shape[1]}x{image.shape[0]}; fused images must keep the "
                    "sources' size"
                )
    try:
        inputs = GrayInputs(
            to_gray_uint8(fused, str(job.fused)),
            None if ir is None else to_gray_uint8(ir, str(job.ir)),
            None if vi is None else to_gray_uint8(vi, str(job.vi)),
        )
    except MetricInputError as exc:
        raise ScoringError(str(exc)) from exc
    if job.regions is None:
        return ImageScore(job.method, job.fused.name, compute_on_gray(inputs, job.metrics))
    # SSIM's and Qabf's maps serve the whole image and the regions in one pass.
    shared = [m for m in POOLED if m in job.metrics and m in job.regions.metrics]
    values = compute_on_gray(inputs, [m for m in job.metrics if m not in shared])
    inside, empty, whole = score_in_regions(
        job.regions, job.fused.stem, job.fused, inputs, whole=shared
    )
    values = {**values, **whole}
    values = {m: values[m] for m in job.metrics}  # table order
    return ImageScore(job.method, job.fused.name, {**values, **inside}, empty)


def plan_source_rows(
    plans: Sequence[FolderPlan], metrics: Sequence[str] | None = None
) -> list[FolderPlan]:
    """Rows that score the infrared and the visible images themselves, as the field's tables do.

    They use the sources of the first folder that has any, over the images of every
    folder with those sources, and the metrics that make sense for a single image: the
    source-free ones (EN, SF, AG, SD). Source rows are never marked best.

    Args:
        plans: the fused folders' plans.
        metrics: the metrics asked for (None: all).

    Returns:
        Two plans, ``infrared`` then ``visible`` (``infrared (source)`` if a folder has
        that name already).

    Raises:
        ScoringError: no folder has sources.
    """
    base = next((p for p in plans if p.sources.ir_dir is not None), None)
    if base is None:
        raise ScoringError("source rows need the sources: pass --ir and --vi")
    pairs: dict[str, ImageJob] = {}
    for plan in plans:
        if (plan.sources.ir_dir, plan.sources.vi_dir) == (base.sources.ir_dir, base.sources.vi_dir):
            for job in plan.jobs:
                pairs.setdefault(job.fused.stem, job)
    wanted = tuple(m for m in (metrics or METRIC_NAMES) if m in SOURCE_ROW_METRICS)
    taken = {p.method for p in plans}
    rows = []
    from occo.data.modality import task_of_sources

    # A medical pair's rows are named by modality (MRI, PET), an infrared-visible pair's by role.
    labels = task_of_sources(base.sources.ir_dir, base.sources.vi_dir).labels
    for role, folder in (("infrared", base.sources.ir_dir), ("visible", base.sources.vi_dir)):
        label = labels[role == "visible"]
        name = label if label not in taken else f"{label} (source)"
        image = "ir" if role == "infrared" else "vi"
        jobs = [
            ImageJob(name, getattr(job, image), job.ir, job.vi, wanted) for job in pairs.values()
        ]
        rows.append(
            FolderPlan(
                method=name,
                folder=folder,
                sources=base.sources,
                metrics=wanted,
                jobs=jobs,
                source_role=role,
            )
        )
    return rows


def _score_in_worker(job: ImageJob) -> tuple[ImageScore, list[Warning]]:
    """:func:`score_image` in a pool process, handing its occo warnings to the parent to show."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = score_image(job)
    return score, [w.message for w in caught if issubclass(w.category, OccoWarning)]


def _init_worker() -> None:
    # One thread per process: the pool is the parallelism.
    cv2.setNumThreads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean server process that has imported the metrics once.

    Plain fork from the calling process is unsafe when it already runs threads (OpenCV's
    or OpenMP's pools, the executor's own): a child can inherit a held lock and hang.
    The fork server is started by exec, imports this module (and numpy, OpenCV) once,
    and forks each worker from there, so workers start fast and clean.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def score_jobs(
    jobs: Sequence[ImageJob],
    workers: int = 1,
    on_done: Callable[[ImageScore], None] | None = None,
) -> list[ImageScore]:
    """Score images, in a pool of ``workers`` processes when more than one.

    Args:
        jobs: images to score.
        workers: processes; 1 scores in this process.
        on_done: called with each result as it arrives (for a progress bar).

    Returns:
        Scores in the order of ``jobs``.

    Raises:
        ScoringError: the first failing image; the remaining work is cancelled.
    """
    results: list[ImageScore | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = score_image(job)
            if on_done is not None:
                on_done(results[i])
        return results  # type: ignore[return-value]
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=_pool_context(), initializer=_init_worker
    ) as pool:
        futures: dict[Future, int] = {
            pool.submit(_score_in_worker, job): i for i, job in enumerate(jobs)
        }
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise error
            results[futures[future]], caught = future.result()
            for message in caught:
                warnings.warn(message, stacklevel=1)
            if on_done is not None:
                on_done(results[futures[future]])
    return results  # type: ignore[return-value]


def unique_method_names(folders: Iterable[Path]) -> list[str]:
    """Row names for folders: their names, or the paths as given where names repeat."""
    folders = list(folders)
    names = [f.resolve().name for f in folders]
    return [str(f) if names.count(n) > 1 else n for f, n in zip(folders, names, strict=True)]
