"""Image fusion metrics exactly as Tang's MATLAB toolkit computes them, vectorised.

    from occo.eval.metrics import compute_metrics
    compute_metrics(fused, ir, vi)            # all twelve metrics
    compute_metrics(fused, metrics=["EN"])    # source-free metrics need no sources

A = infrared, B = visible, F = fused. See ``CONVENTIONS`` and ``METRIC_INFO``.
"""

from occo.eval.metrics.core import (
    CONVENTIONS,
    METRIC_INFO,
    METRIC_NAMES,
    NEEDS_SOURCES,
    SOURCE_FREE,
    MetricInfo,
    compute_metrics,
    compute_on_gray,
    default_metrics,
    parse_metric_names,
)
from occo.eval.metrics.inputs import GrayInputs, MetricInputError, to_gray_uint8

__all__ = [
    "CONVENTIONS",
    "METRIC_INFO",
    "METRIC_NAMES",
    "NEEDS_SOURCES",
    "SOURCE_FREE",
    "GrayInputs",
    "MetricInfo",
    "MetricInputError",
    "compute_metrics",
    "compute_on_gray",
    "default_metrics",
    "parse_metric_names",
    "to_gray_uint8",
]
