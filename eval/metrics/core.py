""":func:`compute_metrics`, the one entry point for scoring an image (metrics: ``table``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from occo.eval.metrics.inputs import GrayInputs, MetricInputError, to_gray_uint8
from occo.eval.metrics.table import METRIC_INFO, METRIC_NAMES, SOURCE_FREE

#: The conventions, short enough for a table caption.
CONVENTIONS = (
    "Tang toolkit conventions: A=infrared, B=visible, F=fused; colour to gray via MATLAB "
    "rgb2gray (16-bit /257 first); EN and MI on uint8, MI in bits (254/255 merged in the "
    "joint histogram); others float64 on 0-255; MSE on images/255, PSNR=20log10(255/sqrt(MSE)); "
    "CC mean of two, SCD/VIF/MI/SSIM sums of two; SSIM Gaussian 11/1.5 valid, K1=.01 K2=.03."
)


def parse_metric_names(names: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Canonical metric names from user text (case-insensitive, comma-separated).

    Args:
        names: ``"en,sf,Qabf"``, a list of names, or None.

    Returns:
        Names in table order without duplicates, or None for None.

    Raises:
        MetricInputError: an unknown name (the message lists the known ones).
    """
    if names is None:
        return None
    items = names.split(",") if isinstance(names, str) else list(names)
    lookup = {name.lower(): name for name in METRIC_NAMES}
    chosen = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.lower() not in lookup:
            raise MetricInputError(
                f"unknown metric '{item}'; choose from {', '.join(METRIC_NAMES)}"
            )
        chosen.add(lookup[item.lower()])
    if not chosen:
        raise MetricInputError(f"no metric named; choose from {', '.join(METRIC_NAMES)}")
    return tuple(name for name in METRIC_NAMES if name in chosen)


def default_metrics(has_sources: bool) -> tuple[str, ...]:
    """All metrics the inputs allow: every metric with sources, else the source-free ones."""
    return METRIC_NAMES if has_sources else SOURCE_FREE


def compute_metrics(
    fused: np.ndarray,
    ir: np.ndarray | None = None,
    vi: np.ndarray | None = None,
    metrics: Iterable[str] | None = None,
) -> dict[str, float]:
    """Score one fused image against its sources under Tang's toolkit conventions.

    Colour images become gray by MATLAB ``rgb2gray`` and 16-bit images are scaled to
    8 bits, as the toolkit works on 8-bit gray images (see ``CONVENTIONS``).

    Args:
        fused: ``(H, W)`` or ``(H, W, 3)``, uint8 or uint16, as ``data.io.read_image`` reads it.
        ir: infrared source of the same height and width, or None.
        vi: visible source of the same height and width, or None.
        metrics: names to compute (see ``METRIC_NAMES``); None for all the inputs allow.

    Returns:
        ``{name: value}`` in table order; NaN where a metric is undefined (e.g. CC of a
        constant image), inf for PSNR of identical images.

    Raises:
        MetricInputError: unknown metric, a source-based metric without sources, only
            one source, sizes that differ, or an unsupported array.
    """
    inputs = GrayInputs(
        to_gray_uint8(fused, "fused"),
        None if ir is None else to_gray_uint8(ir, "infrared"),
        None if vi is None else to_gray_uint8(vi, "visible"),
    )
    names = parse_metric_names(metrics) if metrics is not None else None
    if names is None:
        names = default_metrics(inputs.has_sources)
    if not inputs.has_sources:
        missing = [n for n in names if METRIC_INFO[n].needs_sources]
        if missing:
            raise MetricInputError(
                f"{', '.join(missing)} need the infrared and visible sources; give both"
            )
    return compute_on_gray(inputs, names)


def compute_on_gray(inputs: GrayInputs, names: Iterable[str]) -> dict[str, float]:
    """Compute ``names`` (canonical, validated) on prepared gray inputs, sharing work."""
    results: dict[str, float] = {}
    for name in names:
        info = METRIC_INFO[name]
        if info.derived_from in results:  # PSNR from the MSE just computed
            results[name] = info.compute(inputs, results[info.derived_from])
        else:
            results[name] = float(info.compute(inputs))
    return results
