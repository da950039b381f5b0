"""Fusion metrics inside image regions: objects against background, or OCCO's four regions.

Whole-image metrics cannot say whether a fusion keeps the salient objects whole and
bright while the scene stays natural; these measure the same quantities inside the
object and background regions of a pair's two object masks (infrared and visible).

Regions (both masks binarised, > 0 is object):

- ``objects``: object in either mask (their union); ``background``: object in neither.
- OCCO's split, the one its loss uses: ``shared`` (both masks), ``unique_ir`` (infrared
  mask only), ``unique_vi`` (visible mask only) and ``background``.

Metrics inside a region R (A = infrared, B = visible, F = fused, toolkit conventions):

- Pixel-set metrics, the whole-image formula on the pixels of R: EN (entropy of R's
  256-bin histogram), SD (population standard deviation), CC, SCD, MI (with the
  toolkit's 254/255 merge), MSE and PSNR. With R the whole image they equal the
  whole-image values exactly.
- SF: the same formula with only the neighbour differences whose two pixels both lie
  in R (row differences averaged over such horizontal pairs, column differences over
  vertical pairs); a difference across R's border counts in neither region. NaN when R
  has no horizontal or no vertical pair (as SF of a one-pixel-wide image).
- AG: MATLAB ``gradient`` inside R, R's border treated as ``gradient`` treats the image
  border: central difference where both neighbours lie in R, one-sided where one does,
  0 where none does; AG is the mean of ``sqrt((gx^2 + gy^2) / 2)`` over R's pixels. For the whole
  image that is the toolkit's AG times ``(M-1)(N-1) / (MN)`` (the toolkit divides by
  ``(M-1)(N-1)``, a mean needs ``MN``).
- SSIM: ``SSIM(A, F) + SSIM(B, F)``, each the mean of its SSIM map over the windows
  centred on a pixel of R (11x11 windows, so they see up to 5 pixels across R's border).
- Qabf: the toolkit's map pooled over R, ``sum_R(Q_AF gA + Q_BF gB) / sum_R(gA + gB)``
  (3x3 Sobel responses at R's pixels, which see one pixel across the border).
- TC (target contrast, object regions only): for every connected object of R (8-neighbour
  components), its ring is the background pixels within ``ring`` pixels (Euclidean) of
  it; an image's contrast is ``C(X) = |mean over the object - mean over its ring|``,
  averaged over the objects weighted by their areas (objects without ring pixels left
  out); ``TC = C(F) / max(C(A), C(B))``. 1 means the fused image keeps the object contrast
  of its more contrasted source; above 1, objects stand out more than in either source.
- VIF has no region form (its sums pool four scales of downsampled windows).

An empty region gives NaN for every metric; scoring skips such a region and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from occo.eval.metrics import structural
from occo.eval.metrics.inputs import GrayInputs, MetricInputError, strips, to_gray_uint8
from occo.eval.metrics.table import METRICS, OBJECTS_ONLY, POOLED, REGION_METRICS

#: Every region name and what it holds.
REGION_DEFINITIONS: dict[str, str] = {
    "objects": "object in the infrared or the visible mask, their union",
    "background": "object in neither mask",
    "shared": "object in both masks",
    "unique_ir": "object in the infrared mask only",
    "unique_vi": "object in the visible mask only",
}
#: Region names that hold objects (TC is defined for them).
OBJECT_REGIONS = ("objects", "shared", "unique_ir", "unique_vi")
#: Named sets of regions for ``--regions``.
REGION_SETS: dict[str, tuple[str, ...]] = {
    "occo": ("shared", "unique_ir", "unique_vi", "background"),
}
DEFAULT_REGIONS = ("objects", "background")
#: Default ring width (pixels) around an object for TC.
RING_PX = 10
#: Key of the whole-image values in :func:`compute_on_gray_regions`'s result.
WHOLE_IMAGE = "image"


def parse_regions(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Region names from user text: ``"objects,background"``, ``"occo"`` or a list.

    Returns:
        Names without duplicates, in the order given (named sets expanded).

    Raises:
        MetricInputError: an unknown name (the message lists the known ones).
    """
    if text is None:
        return DEFAULT_REGIONS
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        expanded = REGION_SETS.get(item, (item,))
        for name in expanded:
            if name not in REGION_DEFINITIONS:
                known = ", ".join([*REGION_DEFINITIONS, *REGION_SETS])
                raise MetricInputError(f"unknown region '{item}'; choose from {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise MetricInputError("no region named; give e.g. objects,background or occo")
    return tuple(names)


def region_metric_names(names: Iterable[str] | None, has_sources: bool) -> tuple[str, ...]:
    """The region metrics among ``names`` (None: all) that the inputs allow, in table order."""
    wanted = set(REGION_METRICS if names is None else names)
    return tuple(
        n for n in REGION_METRICS if n in wanted and (has_sources or not METRICS[n].needs_sources)
    )


def metrics_for_region(region: str, names: Sequence[str]) -> tuple[str, ...]:
    """The metrics reported for ``region``: ``names`` without the objects-only ones (TC)
    outside object regions."""
    return tuple(n for n in names if n not in OBJECTS_ONLY or region in OBJECT_REGIONS)


def column_name(metric: str, region: str) -> str:
    """The report column of a metric inside a region: ``EN@objects``."""
    return f"{metric}@{region}"


def region_masks(
    mask_ir: np.ndarray, mask_vi: np.ndarray, names: Iterable[str]
) -> dict[str, np.ndarray]:
    """Boolean masks of the named regions from a pair's two object masks.

    Args:
        mask_ir: infrared object mask ``(H, W)``; any value > 0 is object.
        mask_vi: visible object mask, same shape.
        names: region names (see :data:`REGION_DEFINITIONS`).

    Returns:
        ``{name: (H, W) bool}`` in the order of ``names``.

    Raises:
        ValueError: the masks differ in shape.
    """
    from occo.masks.regions import split_regions

    parts = split_regions(np.asarray(mask_vi), np.asarray(mask_ir))
    split = {name: getattr(parts, name) > 0 for name in parts._fields}
    split["objects"] = ~split["background"]
    return {name: split[name] for name in names}


# ----------------------------------------------------------------------------- metrics


def _pixels(inputs: GrayInputs, mask: np.ndarray) -> GrayInputs:
    """The region's pixels of F (and A, B) gathered into one row, for the pixel-set metrics."""

    def gather(image: np.ndarray | None) -> np.ndarray | None:
        return None if image is None else image[mask].reshape(1, -1)

    return GrayInputs(gather(inputs.f8), gather(inputs.a8), gather(inputs.b8))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _pair_sq_sum(f8: np.ndarray, mask: np.ndarray, axis: int) -> tuple[int, int]:
    """Exact sum of squared neighbour differences along ``axis`` with both pixels in the mask,
    and the number of such pairs."""
    lead = (slice(None), slice(None, -1)) if axis == 1 else (slice(None, -1), slice(None))
    trail = (slice(None), slice(1, None)) if axis == 1 else (slice(1, None), slice(None))
    pairs = mask[lead] & mask[trail]
    diff = np.subtract(f8[trail][pairs], f8[lead][pairs], dtype=np.int64)
    return int(diff @ diff), int(diff.size)


def sf_in(f8: np.ndarray, mask: np.ndarray) -> float:
    """SF inside a region: only differences whose two pixels lie in ``mask`` count.

    Args:
        f8: ``(H, W)`` uint8 gray image.
        mask: ``(H, W)`` bool region.

    Returns:
        ``sqrt(mean dx^2 + mean dy^2)``; NaN without a horizontal or a vertical pair.
    """
    rows, n_rows = _pair_sq_sum(f8, mask, 1)
    cols, n_cols = _pair_sq_sum(f8, mask, 0)
    return math.sqrt(_ratio(rows, n_rows) + _ratio(cols, n_cols))


def _twice_gradient_sq_in(f8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(2 gx)^2 + (2 gy)^2`` with MATLAB's ``gradient``, the region's border as the edge.

    Along each axis, at a pixel whose neighbours on both sides lie in the region, twice
    the gradient is the central difference ``f[k+1] - f[k-1]``; with only one neighbour in
    the region it is twice the one-sided difference; with none, 0 (as ``gradient`` does
    at an image's border and for a single row). Exact integers (int32); values outside
    the region are meaningless.
    """
    f = f8.astype(np.int16)
    total = np.zeros(f.shape, np.int32)
    for axis in (0, 1):
        lead = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        trail = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        step = np.diff(f, axis=axis)  # f[k+1] - f[k]
        has_next = np.zeros_like(mask)
        has_next[lead] = mask[trail]
        has_prev = np.zeros_like(mask)
        has_prev[trail] = mask[lead]
        forward = np.zeros_like(f)
        forward[lead] = step
        forward *= has_next
        backward = np.zeros_like(f)
        backward[trail] = step
        backward *= has_prev
        # Both neighbours: forward + backward; one: twice that one's difference; none: 0.
        forward *= 2 - has_prev.view(np.int8)
        backward *= 2 - has_next.view(np.int8)
        forward += backward
        total += forward.astype(np.int32) ** 2
    return total


def ag_in(f8: np.ndarray, mask: np.ndarray) -> float:
    """AG inside a region: mean over the region of ``sqrt((gx^2 + gy^2) / 2)``.

    ``gx``, ``gy`` are MATLAB ``gradient`` with the region's border treated as the image
    border (see :func:`_twice_gradient_sq_in`), so no difference crosses it.

    Args:
        f8: ``(H, W)`` uint8 gray image.
        mask: ``(H, W)`` bool region.

    Returns:
        The mean; NaN for an empty region.
    """
    n = int(mask.sum())
    if n == 0:
        return math.nan
    height, width = f8.shape
    total = 0.0
    # Strips with one row of context on each side keep the temporaries in cache.
    for start, stop in strips(height, width):
        lo, hi = max(start - 1, 0), min(stop + 1, height)
        keep = slice(start - lo, stop - lo)
        inside = mask[start:stop]
        squares = _twice_gradient_sq_in(f8[lo:hi], mask[lo:hi])[keep][inside]
        # (2gx)^2 + (2gy)^2 = 4 (gx^2 + gy^2): dividing by 8, not 2, as the whole-image AG.
        energy = squares.astype(np.float64)
        energy *= 0.125
        np.sqrt(energy, out=energy)
        total += float(energy.sum())
    return total / n


def ssim_in(inputs: GrayInputs, masks: Sequence[np.ndarray | None]) -> list[float]:
    """SSIM inside regions: ``SSIM(A, F) + SSIM(B, F)``, each map averaged over the windows
    centred in the region.

    The maps are the whole-image SSIM's own, computed once for all regions. A mask of
    None stands for the whole image and gives the whole-image SSIM bit for bit (the
    same sums in the same order), so one pass serves both.

    Returns:
        One value per mask; NaN where no window is centred in the region (or the image
        is under 11x11).
    """
    r = structural.SSIM_RADIUS
    height, width = inputs.shape
    windows = max(height - 2 * r, 0) * max(width - 2 * r, 0)
    centres = [
        None if m is None else m[r : height - r, r : width - r].astype(np.float64) for m in masks
    ]
    counts = [windows if c is None else int(c.sum()) for c in centres]
    sums = [[0.0, 0.0] for _ in masks]
    for start, i, ssim_map in structural.ssim_strips(inputs):
        stop = start + ssim_map.shape[0]
        for k, centre in enumerate(centres):
            if centre is None:
                sums[k][i] += float(ssim_map.sum())
            elif counts[k]:
                sums[k][i] += float((ssim_map * centre[start:stop]).sum())
    return [s[0] / n + s[1] / n if n else math.nan for s, n in zip(sums, counts, strict=True)]


def qabf_in(inputs: GrayInputs, masks: Sequence[np.ndarray | None]) -> list[float]:
    """Qabf inside regions: ``sum_R(Q_AF gA + Q_BF gB) / sum_R(gA + gB)``.

    The per-pixel terms are the whole-image Qabf's own, computed once for all regions. A
    mask of None stands for the whole image and gives the whole-image Qabf bit for bit.

    Returns:
        One value per mask; NaN where the region has no source edge (``gA + gB = 0``).
    """
    weights = [None if m is None else m.astype(np.float64) for m in masks]
    num = [0.0] * len(masks)
    den = [0.0] * len(masks)
    for start, stop, _, q, g_s in structural.qabf_strips(inputs):
        for k, weight in enumerate(weights):
            if weight is None:
                num[k] += float(q.sum())
                den[k] += float(g_s.sum())
                continue
            w = weight[start:stop]
            num[k] += float((q * w).sum())
            den[k] += float((g_s * w).sum())
    return [n / d if d != 0 else math.nan for n, d in zip(num, den, strict=True)]


def object_contrast(
    images: Sequence[np.ndarray], objects: np.ndarray, background: np.ndarray, ring: int = RING_PX
) -> list[float]:
    """Area-weighted mean over connected objects of ``|object mean - ring mean|`` per image.

    Args:
        images: ``(H, W)`` uint8 gray images (e.g. F, A, B).
        objects: ``(H, W)`` bool object region; its 8-connected components are the objects.
        background: ``(H, W)`` bool; ring pixels are taken from it only.
        ring: ring width in pixels: background pixels within this Euclidean distance of
            an object form its ring.

    Returns:
        One contrast per image (gray levels); NaN when no object has ring pixels.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        objects.astype(np.uint8), connectivity=8
    )
    height, width = objects.shape
    totals = [0.0] * len(images)
    weight = 0
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        rows = slice(max(y - ring, 0), min(y + h + ring, height))
        cols = slice(max(x - ring, 0), min(x + w + ring, width))
        blob = labels[rows, cols] == k
        # Distance of every pixel to the nearest pixel of this object (exact Euclidean).
        distance = cv2.distanceTransform(
            (~blob).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        around = (distance <= ring) & background[rows, cols] & ~blob
        n_ring = int(around.sum())
        if n_ring == 0:
            continue
        for i, image in enumerate(images):
            crop = image[rows, cols]
            inside = int(crop[blob].sum(dtype=np.int64)) / area
            outside = int(crop[around].sum(dtype=np.int64)) / n_ring
            totals[i] += area * abs(inside - outside)
        weight += area
    return [t / weight if weight else math.nan for t in totals]


def target_contrast(
    fused: np.ndarray,
    ir: np.ndarray,
    vi: np.ndarray,
    objects: np.ndarray,
    background: np.ndarray,
    ring: int = RING_PX,
) -> float:
    """TC: the fused image's object contrast over the larger of the two sources'.

    Contrast is :func:`object_contrast`. NaN when no object has ring pixels or neither
    source has any contrast.
    """
    c_f, c_a, c_b = object_contrast([fused, ir, vi], objects, background, ring)
    best = max(c_a, c_b)
    return c_f / best if best > 0 else math.nan


@dataclass(frozen=True)
class Region:
    """One region of one image: what a region form that ``takes`` a mask is given."""

    inputs: GrayInputs
    """F (and A, B) of the whole image, gray uint8."""
    mask: np.ndarray
    """``(H, W)`` bool: the region."""
    background: np.ndarray
    """``(H, W)`` bool: the pair's background (where TC's rings may lie)."""
    ring: int
    """TC's ring width in pixels."""


def sf_region(region: Region) -> float:
    """SF's region form (:func:`sf_in` of F)."""
    return sf_in(region.inputs.f8, region.mask)


def ag_region(region: Region) -> float:
    """AG's region form (:func:`ag_in` of F)."""
    return ag_in(region.inputs.f8, region.mask)


def tc_region(region: Region) -> float:
    """TC's region form (:func:`target_contrast` of F against A and B)."""
    x = region.inputs
    return target_contrast(x.f8, x.a8, x.b8, region.mask, region.background, region.ring)


def compute_on_gray_regions(
    inputs: GrayInputs,
    regions: Mapping[str, np.ndarray],
    names: Sequence[str],
    background: np.ndarray | None = None,
    ring: int = RING_PX,
    whole: Iterable[str] = (),
) -> dict[str, dict[str, float]]:
    """Region metrics on prepared gray inputs (canonical, validated names).

    Args:
        inputs: F (and A, B) as gray uint8.
        regions: ``{name: (H, W) bool}``.
        names: region metrics to compute (see :data:`REGION_METRICS`); TC is computed for
            object regions only (:func:`metrics_for_region`).
        background: the pair's background (ring pixels for TC); default: the region
            named ``background`` if given, else outside every given region.
        ring: TC's ring width in pixels.
        whole: SSIM and/or Qabf to compute for the whole image too, in the same pass
            over their maps (values identical to the whole-image metrics).

    Returns:
        ``{region: {metric: value}}``; an empty region has NaN for every metric. With
        ``whole``, the whole-image values are under the key :data:`WHOLE_IMAGE`.
    """
    names = tuple(names)
    whole = tuple(whole)
    results: dict[str, dict[str, float]] = {}
    nonempty = {r: m for r, m in regions.items() if m.any()}
    if background is None:
        background = regions.get("background")
    if background is None:
        background = ~np.logical_or.reduce(list(regions.values()))
    mapped: dict[str, list[float]] = {}
    keys = list(nonempty)
    masks = [nonempty[r] for r in keys]
    for name in POOLED:
        inside = name in names and bool(masks)
        if inside or name in whole:
            mapped[name] = METRICS[name].region.compute(inputs, [*(masks if inside else []), None])
    if whole:
        results[WHOLE_IMAGE] = {name: mapped[name][-1] for name in whole}
    for region, mask in regions.items():
        wanted = metrics_for_region(region, names)
        if region not in nonempty:
            results[region] = dict.fromkeys(wanted, math.nan)
            continue
        pixels = _pixels(inputs, mask)
        values: dict[str, float] = {}
        for name in wanted:
            info = METRICS[name]
            form = info.region
            if name in mapped:
                values[name] = mapped[name][keys.index(region)]
            elif form.takes == "mask":
                values[name] = form.compute(Region(inputs, mask, background, ring))
            elif info.derived_from in values:  # PSNR from the region's MSE
                values[name] = form.compute(pixels, values[info.derived_from])
            else:
                values[name] = float(form.compute(pixels))
        results[region] = values
    return results


def compute_in_regions(
    fused: np.ndarray,
    ir: np.ndarray | None,
    vi: np.ndarray | None,
    regions: Mapping[str, np.ndarray],
    metrics: Iterable[str] | None = None,
    background: np.ndarray | None = None,
    ring: int = RING_PX,
) -> dict[str, dict[str, float]]:
    """Score one fused image inside regions (see the module's definitions).

    Args:
        fused: ``(H, W)`` or ``(H, W, 3)``, uint8 or uint16 (gray as the toolkit makes it).
        ir: infrared source of the same size, or None (source-free metrics only).
        vi: visible source of the same size, or None.
        regions: ``{name: (H, W) mask}``; nonzero is inside. Build them from a pair's
            object masks with :func:`region_masks`.
        metrics: region metrics (see :data:`REGION_METRICS`); None for all the inputs allow.
        background: where TC's rings may lie; default: the region named ``background``
            if given, else outside every given region.
        ring: TC's ring width in pixels.

    Returns:
        ``{region: {metric: value}}``; NaN where undefined or the region is empty.

    Raises:
        MetricInputError: unknown metric, a metric that needs sources without them,
            or a mask whose size differs from the image.
    """
    inputs = GrayInputs(
        to_gray_uint8(fused, "fused"),
        None if ir is None else to_gray_uint8(ir, "infrared"),
        None if vi is None else to_gray_uint8(vi, "visible"),
    )
    if metrics is None:
        names = region_metric_names(None, inputs.has_sources)
    else:
        lookup = {n.lower(): n for n in REGION_METRICS}
        names = []
        for item in metrics:
            if item.lower() not in lookup:
                raise MetricInputError(
                    f"no region form for metric '{item}'; choose from {', '.join(REGION_METRICS)}"
                )
            names.append(lookup[item.lower()])
        if not inputs.has_sources:
            missing = [n for n in names if METRICS[n].needs_sources]
            if missing:
                raise MetricInputError(
                    f"{', '.join(missing)} need the infrared and visible sources; give both"
                )
    masks = {}
    for region, mask in regions.items():
        mask = np.asarray(mask) != 0
        if mask.shape != inputs.shape:
            raise MetricInputError(
                f"region '{region}' is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{inputs.shape[1]}x{inputs.shape[0]}"
            )
        masks[region] = mask
    if background is not None:
        background = np.asarray(background) != 0
    return compute_on_gray_regions(inputs, masks, names, background, ring)
