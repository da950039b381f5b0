"""Image fusion metrics exactly as Tang's MATLAB toolkit computes them, vectorised.

    from occo.eval.metrics import compute_metrics
    compute_metrics(fused, ir, vi)            # all twelve metrics
    compute_metrics(fused, metrics=["EN"])    # source-free metrics need no sources

A = infrared, B = visible, F = fused. See ``CONVENTIONS`` and ``METRICS`` (the registry,
``occo.eval.metrics.table``: one ``MetricInfo`` per metric).
"""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562): the registry (``table``) imports no numpy or
# OpenCV, so that the command line can list the metrics and `occo --help` stays fast.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.eval.metrics.core": (
            "CONVENTIONS",
            "compute_metrics",
            "compute_on_gray",
            "default_metrics",
            "parse_metric_names",
        ),
        "occo.eval.metrics.inputs": ("GrayInputs", "MetricInputError", "to_gray_uint8"),
        "occo.eval.metrics.regions": ("compute_in_regions", "region_masks"),
        "occo.eval.metrics.table": (
            "METRICS",
            "METRIC_INFO",
            "METRIC_NAMES",
            "NEEDS_SOURCES",
            "REGION_METRICS",
            "SOURCE_FREE",
            "MetricInfo",
            "RegionForm",
        ),
    },
)
