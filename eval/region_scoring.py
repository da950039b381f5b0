"""Scoring inside regions: which region metrics a folder gets, and a pair's masks from the store.

The masks of a fused image are those stored under its file stem in an ``occo masks gen``
store (``/ir/<stem>``, ``/vi/<stem>``). The store may hold more pairs than are scored;
every scored image must have its pair there, of the image's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from occo.data.errors import OccoError
from occo.eval.metrics.inputs import GrayInputs
from occo.eval.metrics.regions import (
    RING_PX,
    WHOLE_IMAGE,
    column_name,
    compute_on_gray_regions,
    metrics_for_region,
    region_masks,
    region_metric_names,
)
from occo.eval.metrics.table import SOURCE_ROW_METRICS

if TYPE_CHECKING:
    from occo.masks.store import MaskReader


class RegionMaskError(OccoError, ValueError):
    """Masks that cannot be used for the images scored; the message names the files."""


@dataclass(frozen=True)
class RegionSpec:
    """What to measure inside regions for one row of the table."""

    store: Path
    """The mask store (``masks.h5``)."""
    regions: tuple[str, ...]
    """Region names, in report order (see ``eval.metrics.regions.REGION_DEFINITIONS``)."""
    metrics: tuple[str, ...]
    """Region metrics (see ``eval.metrics.regions.REGION_METRICS``)."""
    ring: int = RING_PX
    """TC's ring width in pixels."""

    def __post_init__(self) -> None:
        if self.ring < 1:
            raise ValueError(f"ring width must be at least 1 pixel, got {self.ring}")

    def columns(self, region: str) -> list[str]:
        """Report columns of one region: ``EN@objects``, ..."""
        return [column_name(m, region) for m in metrics_for_region(region, self.metrics)]

    def all_columns(self) -> list[str]:
        """Report columns of every region, region by region."""
        return [c for region in self.regions for c in self.columns(region)]


def attach_regions(
    plan,
    store: Path,
    regions: Sequence[str],
    metrics: Iterable[str] | None,
    ring: int = RING_PX,
    source_free_only: bool = False,
) -> None:
    """Give a folder plan (``eval.scoring.FolderPlan``) and its jobs region metrics.

    Args:
        plan: the plan; its ``regions`` and its jobs' ``regions`` are set.
        store: the mask store.
        regions: region names.
        metrics: wanted region metrics (None: all); those the folder's inputs do not
            allow are left out.
        ring: TC's ring width in pixels.
        source_free_only: keep only metrics defined for a source row (source-free and TC).
    """
    has_sources = plan.sources.ir_dir is not None
    names = region_metric_names(metrics, has_sources)
    if source_free_only:
        names = tuple(n for n in names if n in SOURCE_ROW_METRICS)
    # A region none of the metrics applies to (background with TC alone) is left out.
    kept = tuple(r for r in regions if metrics_for_region(r, names))
    spec = RegionSpec(Path(store), kept, names, ring)
    plan.regions = spec
    plan.jobs = [dataclasses.replace(job, regions=spec) for job in plan.jobs]


def check_store_covers(
    store: Path,
    stems: Iterable[str],
    remedy: str = "make masks for the same pairs with occo masks gen, or drop --masks",
) -> int:
    """Check that the store holds masks for every stem scored.

    Returns:
        The number of pairs in the store.

    Raises:
        FileNotFoundError: no store there.
        MaskStoreError: not a mask store.
        RegionMaskError: stems without masks (the message names the first ones).
    """
    from occo.masks.store import open_mask_store

    with open_mask_store(store) as reader:
        held = set(reader.stems())
    wanted = list(dict.fromkeys(stems))
    missing = [s for s in wanted if s not in held]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise RegionMaskError(
            f"{len(missing)} of the {len(wanted)} images scored have no masks in {store} "
            f"({shown}); {remedy}"
        )
    return len(held)


# One reader per store and process: workers read many pairs from the same file.
_READERS: dict[Path, MaskReader] = {}


def store_reader(store: Path) -> MaskReader:
    """The process's reader of a mask store (opened once, kept open)."""
    if store not in _READERS:
        from occo.masks.store import open_mask_store

        _READERS[store] = open_mask_store(store)
    return _READERS[store]


def read_masks(
    store: Path, stem: str, image: Path, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The infrared and visible masks of a scored image, checked against its size.

    Args:
        store: the mask store.
        stem: the pair's stem.
        image: the scored image (named in errors).
        shape: its ``(H, W)``.

    Raises:
        RegionMaskError: the stem is missing or a mask's size differs from the image's.
    """
    reader = store_reader(store)
    if stem not in reader:
        raise RegionMaskError(f"no masks for '{stem}' ({image}) in {store}")
    # Sizes from the store's metadata first: a mask is read only once it fits the image.
    for name, held in zip(("infrared", "visible"), reader.shapes(stem), strict=True):
        if tuple(held) != tuple(shape):
            raise RegionMaskError(
                f"the {name} mask of '{stem}' in {store} is {held[1]}x{held[0]} but "
                f"{image} is {shape[1]}x{shape[0]}; the store was made for other images"
            )
    return reader.read(stem)


def score_in_regions(
    spec: RegionSpec,
    stem: str,
    image: Path,
    inputs: GrayInputs,
    whole: Sequence[str] = (),
) -> tuple[dict[str, float], tuple[str, ...], dict[str, float]]:
    """Region metrics of one image, as report columns.

    Args:
        spec: what to measure.
        stem: the pair's stem in the store.
        image: the scored image (named in errors).
        inputs: its gray inputs.
        whole: SSIM and/or Qabf to compute for the whole image in the same pass over
            their maps (the whole-image values, bit for bit).

    Returns:
        ``({"EN@objects": value, ...}, empty regions, {whole-image metric: value})``;
        an empty region has no columns.
    """
    mask_ir, mask_vi = read_masks(spec.store, stem, image, inputs.shape)
    masks = region_masks(mask_ir, mask_vi, (*spec.regions, "background"))
    regions = {name: masks[name] for name in spec.regions}
    empty = tuple(name for name, mask in regions.items() if not mask.any())
    wanted = {name: mask for name, mask in regions.items() if name not in empty}
    values = compute_on_gray_regions(
        inputs, wanted, spec.metrics, background=masks["background"], ring=spec.ring, whole=whole
    )
    whole_values = values.pop(WHOLE_IMAGE, {})
    flat = {
        column_name(metric, region): value
        for region, per_metric in values.items()
        for metric, value in per_metric.items()
    }
    return flat, empty, whole_values
