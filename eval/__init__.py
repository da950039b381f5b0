"""Fusion metrics (Tang's toolkit conventions), folder scoring and reports.

    from occo.eval import compute_metrics, plan_folder, score_jobs, summarize

Subpackages and modules: ``occo.eval.metrics`` (the metrics and their registry),
``scoring`` (folders of fused images), ``report`` (tables, CSV, JSON), ``detection``
and ``segmentation`` (downstream tasks).
"""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562): `import occo.eval.metrics.table` must not import
# numpy or OpenCV, so that `occo --help` starts fast.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.eval.metrics": (
            "CONVENTIONS",
            "METRICS",
            "METRIC_NAMES",
            "SOURCE_FREE",
            "MetricInfo",
            "MetricInputError",
            "compute_in_regions",
            "compute_metrics",
            "parse_metric_names",
            "region_masks",
        ),
        "occo.eval.report": (
            "MethodSummary",
            "best_methods",
            "report_dict",
            "summarize",
            "write_scores_csv",
        ),
        "occo.eval.scoring": (
            "FolderPlan",
            "ImageScore",
            "ScoringError",
            "plan_folder",
            "plan_folders",
            "score_jobs",
        ),
    },
)
