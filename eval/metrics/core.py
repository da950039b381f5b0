"""The metric registry and :func:`compute_metrics`, the one entry point for scoring an image."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from occo.eval.metrics import intensity, structural
from occo.eval.metrics.inputs import GrayInputs, MetricInputError, to_gray_uint8


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is and how to read it."""

    name: str
    """Short name as in the field's tables (``"Qabf"``)."""
    needs_sources: bool
    """True when the infrared and visible images are required."""
    higher_is_better: bool
    """Direction used to mark the best method in a table."""
    description: str
    """One line: the definition and its convention."""


_INFO = (
    MetricInfo("EN", False, True, "entropy of F's 256-bin histogram, bits"),
    MetricInfo("SF", False, True, "spatial frequency sqrt(mean dx^2 + mean dy^2)"),
    MetricInfo("AG", False, True, "average gradient, MATLAB gradient, / (M-1)(N-1)"),
    MetricInfo("CC", True, True, "(corr(A,F) + corr(B,F)) / 2"),
    MetricInfo("SD", False, True, "population standard deviation of F"),
    MetricInfo("MI", True, True, "MI(A,F) + MI(B,F), bits, toolkit joint histogram"),
    MetricInfo("SCD", True, True, "corr(F-B, A) + corr(F-A, B)"),
    MetricInfo("VIF", True, True, "vifp(A,F) + vifp(B,F), 4 scales, sigma_n^2 = 2"),
    MetricInfo("Qabf", True, True, "Xydeas-Petrovic edge transfer, Sobel, zero padding"),
    MetricInfo("MSE", True, False, "(mean (F-A)^2 + mean (F-B)^2) / 2 on images / 255"),
    MetricInfo("PSNR", True, True, "20 log10(255 / sqrt(MSE)) with that MSE"),
    MetricInfo("SSIM", True, True, "SSIM(A,F) + SSIM(B,F), Gaussian 11/1.5, valid, mean"),
)

#: Every metric, keyed by name, in table order.
METRIC_INFO: dict[str, MetricInfo] = {info.name: info for info in _INFO}
#: All metric names in table order.
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_INFO)
#: Metrics that look at the fused image only.
SOURCE_FREE: tuple[str, ...] = ("EN", "SF", "AG", "SD")
#: Metrics that need the infrared and visible sources.
NEEDS_SOURCES: tuple[str, ...] = tuple(n for n in METRIC_NAMES if METRIC_INFO[n].needs_sources)

#: The conventions, short enough for a table caption.
CONVENTIONS = (
    "Tang toolkit conventions: A=infrared, B=visible, F=fused; colour to gray via MATLAB "
    "rgb2gray (16-bit /257 first); EN and MI on uint8, MI in bits (254/255 merged in the "
    "joint histogram); others float64 on 0-255; MSE on images/255, PSNR=20log10(255/sqrt(MSE)); "
    "CC mean of two, SCD/VIF/MI/SSIM sums of two; SSIM Gaussian 11/1.5 valid, K1=.01 K2=.03."
)

_FUNCS: dict[str, Callable[[GrayInputs], float]] = {
    "EN": intensity.en,
    "SF": intensity.sf,
    "AG": intensity.ag,
    "CC": intensity.cc,
    "SD": intensity.sd,
    "MI": intensity.mi,
    "SCD": intensity.scd,
    "VIF": structural.vif,
    "Qabf": structural.qabf,
    "MSE": intensity.mse,
    "PSNR": intensity.psnr,
    "SSIM": structural.ssim,
}


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
        if name == "PSNR" and "MSE" in results:
            results[name] = intensity.psnr(inputs, results["MSE"])
        else:
            results[name] = float(_FUNCS[name](inputs))
    return results
