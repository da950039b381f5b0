"""The metric registry: one :class:`MetricInfo` per metric, and every list derived from it.

A metric is registered here and nowhere else: its whole-image function, its form inside
a region, its direction and whether it needs the sources. The names, the source-free
set, the region metrics and the command line's help all follow from :data:`METRICS`.

Functions are named as ``"module:attribute"`` and imported on first use, so reading the
table imports neither numpy nor OpenCV (``occo --help`` lists the metrics and stays fast).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

_INTENSITY = "occo.eval.metrics.intensity"
_STRUCTURAL = "occo.eval.metrics.structural"
_REGIONS = "occo.eval.metrics.regions"


@cache
def resolve(reference: str) -> Callable[..., float]:
    """The function a ``"module:attribute"`` reference names (imported once)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class RegionForm:
    """How a metric is computed inside a region (see ``eval.metrics.regions``)."""

    function: str
    """``"module:attribute"`` of the function; what it is given depends on ``takes``."""
    takes: Literal["pixels", "mask", "maps"]
    """``"pixels"``: ``fn(GrayInputs)`` on the region's pixels of F (A, B) gathered into
    one row, the whole-image formula on them; ``"mask"``: ``fn(Region)``, the inputs with
    the region's mask, the pair's background and TC's ring width; ``"maps"``:
    ``fn(inputs, masks) -> list``, the whole-image maps pooled over every region in one
    pass (a mask of None stands for the whole image, bit for bit)."""
    definition: str
    """One line: how it is taken inside a region (for reports and ``--json``)."""
    objects_only: bool = False
    """Defined only inside regions that hold objects (not in ``background``)."""

    def compute(self, *args):
        """Call the function with what it ``takes``."""
        return resolve(self.function)(*args)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is, how to read it and where its code is."""

    name: str
    """Short name as in the field's tables (``"Qabf"``)."""
    title: str
    """Full name (``"spatial frequency"``), for messages."""
    function: str | None
    """``"module:attribute"`` of ``fn(GrayInputs) -> float`` on the whole image; None for a
    metric measured inside regions only (TC)."""
    higher_is_better: bool
    """Direction used to mark the best method in a table."""
    needs_sources: bool
    """True when the infrared and visible images are required."""
    region: RegionForm | None
    """Its form inside a region, or None when it has none (VIF)."""
    description: str
    """One line: the definition and its convention."""
    reference: str = ""
    """Where the metric was defined (short citation), if anywhere in particular."""
    derived_from: str | None = None
    """A metric this one follows from: when that one is computed first, its value is
    passed as a second argument instead of computing it again (PSNR from MSE)."""
    source_rows: bool | None = None
    """Scored on the rows of the sources themselves (``--source-rows``); None: when it
    needs no sources."""

    @property
    def on_source_rows(self) -> bool:
        """Whether ``--source-rows`` scores it (F is then a source image itself)."""
        return not self.needs_sources if self.source_rows is None else self.source_rows

    def compute(self, *args) -> float:
        """Call the whole-image function (``fn(inputs[, derived value])``)."""
        return resolve(self.function)(*args)


def _pixels(name: str, definition: str) -> RegionForm:
    """The whole-image function of ``intensity`` on the region's pixels."""
    return RegionForm(f"{_INTENSITY}:{name.lower()}", "pixels", definition)


METRICS_TABLE: tuple[MetricInfo, ...] = (
    MetricInfo(
        name="EN",
        title="entropy",
        function=f"{_INTENSITY}:en",
        higher_is_better=True,
        needs_sources=False,
        region=_pixels("EN", "entropy of the region's 256-bin histogram of F, bits"),
        description="entropy of F's 256-bin histogram, bits",
        reference="Roberts et al., J. Appl. Remote Sens. 2008",
    ),
    MetricInfo(
        name="SF",
        title="spatial frequency",
        function=f"{_INTENSITY}:sf",
        higher_is_better=True,
        needs_sources=False,
        region=RegionForm(
            f"{_REGIONS}:sf_region",
            "mask",
            "SF over neighbour differences with both pixels in the region",
        ),
        description="spatial frequency sqrt(mean dx^2 + mean dy^2)",
        reference="Eskicioglu and Fisher, IEEE Trans. Commun. 1995",
    ),
    MetricInfo(
        name="AG",
        title="average gradient",
        function=f"{_INTENSITY}:ag",
        higher_is_better=True,
        needs_sources=False,
        region=RegionForm(
            f"{_REGIONS}:ag_region",
            "mask",
            "mean over the region of the toolkit's gradient term, region border as image border",
        ),
        description="average gradient, MATLAB gradient, / (M-1)(N-1)",
        reference="Cui et al., Opt. Commun. 2015",
    ),
    MetricInfo(
        name="CC",
        title="correlation coefficient",
        function=f"{_INTENSITY}:cc",
        higher_is_better=True,
        needs_sources=True,
        region=_pixels("CC", "CC on the region's pixels"),
        description="(corr(A,F) + corr(B,F)) / 2",
    ),
    MetricInfo(
        name="SD",
        title="standard deviation",
        function=f"{_INTENSITY}:sd",
        higher_is_better=True,
        needs_sources=False,
        region=_pixels("SD", "population standard deviation of F's pixels in the region"),
        description="population standard deviation of F",
    ),
    MetricInfo(
        name="MI",
        title="mutual information",
        function=f"{_INTENSITY}:mi",
        higher_is_better=True,
        needs_sources=True,
        region=_pixels("MI", "MI on the region's pixels"),
        description="MI(A,F) + MI(B,F), bits, toolkit joint histogram",
        reference="Qu et al., Electron. Lett. 2002",
    ),
    MetricInfo(
        name="SCD",
        title="sum of the correlations of differences",
        function=f"{_INTENSITY}:scd",
        higher_is_better=True,
        needs_sources=True,
        region=_pixels("SCD", "SCD on the region's pixels"),
        description="corr(F-B, A) + corr(F-A, B)",
        reference="Aslantas and Bendes, AEU Int. J. Electron. Commun. 2015",
    ),
    MetricInfo(
        name="VIF",
        title="visual information fidelity",
        function=f"{_STRUCTURAL}:vif",
        higher_is_better=True,
        needs_sources=True,
        region=None,
        description="vifp(A,F) + vifp(B,F), 4 scales, sigma_n^2 = 2",
        reference="Han et al., Inf. Fusion 2013",
    ),
    MetricInfo(
        name="Qabf",
        title="edge information transfer",
        function=f"{_STRUCTURAL}:qabf",
        higher_is_better=True,
        needs_sources=True,
        region=RegionForm(
            f"{_REGIONS}:qabf_in",
            "maps",
            "sum over the region of Q_AF gA + Q_BF gB over the sum of gA + gB",
        ),
        description="Xydeas-Petrovic edge transfer, Sobel, zero padding",
        reference="Xydeas and Petrovic, Electron. Lett. 2000",
    ),
    MetricInfo(
        name="MSE",
        title="mean squared error",
        function=f"{_INTENSITY}:mse",
        higher_is_better=False,
        needs_sources=True,
        region=_pixels("MSE", "MSE on the region's pixels"),
        description="(mean (F-A)^2 + mean (F-B)^2) / 2 on images / 255",
    ),
    MetricInfo(
        name="PSNR",
        title="peak signal-to-noise ratio",
        function=f"{_INTENSITY}:psnr",
        higher_is_better=True,
        needs_sources=True,
        region=_pixels("PSNR", "PSNR from the region's MSE"),
        description="20 log10(255 / sqrt(MSE)) with that MSE",
        derived_from="MSE",
    ),
    MetricInfo(
        name="SSIM",
        title="structural similarity",
        function=f"{_STRUCTURAL}:ssim",
        higher_is_better=True,
        needs_sources=True,
        region=RegionForm(
            f"{_REGIONS}:ssim_in",
            "maps",
            "mean of each SSIM map over the windows centred in the region, summed",
        ),
        description="SSIM(A,F) + SSIM(B,F), Gaussian 11/1.5, valid, mean",
        reference="Wang et al., IEEE Trans. Image Process. 2004",
    ),
    MetricInfo(
        name="TC",
        title="target contrast",
        function=None,
        higher_is_better=True,
        needs_sources=True,
        region=RegionForm(
            f"{_REGIONS}:tc_region",
            "mask",
            "object contrast to a ring of background in F over the larger of A's and B's",
            objects_only=True,
        ),
        description="target contrast: |object mean - ring mean| of F over the larger of A's and B's",
        reference="occo (eval.metrics.regions)",
        source_rows=True,
    ),
)

#: Every metric, whole-image and region-only, keyed by name, in table order.
METRICS: dict[str, MetricInfo] = {info.name: info for info in METRICS_TABLE}


def names_where(
    test: Callable[[MetricInfo], bool], names: Iterable[str] | None = None
) -> tuple[str, ...]:
    """The metrics (of ``names``, default all) that pass ``test``, in table order."""
    chosen = set(METRICS if names is None else names)
    return tuple(n for n, info in METRICS.items() if n in chosen and test(info))


#: The whole-image metrics, keyed by name, in table order.
METRIC_INFO: dict[str, MetricInfo] = {
    n: METRICS[n] for n in names_where(lambda m: m.function is not None)
}
#: All whole-image metric names in table order.
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_INFO)
#: Whole-image metrics that look at the fused image only.
SOURCE_FREE: tuple[str, ...] = names_where(lambda m: not m.needs_sources, METRIC_NAMES)
#: Whole-image metrics that need the infrared and visible sources.
NEEDS_SOURCES: tuple[str, ...] = names_where(lambda m: m.needs_sources, METRIC_NAMES)
#: Metrics with a region form, in table order.
REGION_METRICS: tuple[str, ...] = names_where(lambda m: m.region is not None)
#: The region metrics, keyed by name.
REGION_METRIC_INFO: dict[str, MetricInfo] = {n: METRICS[n] for n in REGION_METRICS}
#: How each metric is taken inside a region (for reports and help).
REGION_METRIC_DEFINITIONS: dict[str, str] = {
    n: METRICS[n].region.definition
    for n in REGION_METRICS  # type: ignore[union-attr]
}
#: Metrics measured inside regions only (no whole-image form).
REGION_ONLY: tuple[str, ...] = names_where(lambda m: m.function is None)
#: Whole-image metrics without a region form.
WHOLE_ONLY: tuple[str, ...] = names_where(lambda m: m.region is None, METRIC_NAMES)
#: Region metrics defined only inside object regions.
OBJECTS_ONLY: tuple[str, ...] = names_where(
    lambda m: m.region is not None and m.region.objects_only
)
#: Region metrics pooled from whole-image maps, one pass for the image and its regions.
POOLED: tuple[str, ...] = names_where(lambda m: m.region is not None and m.region.takes == "maps")
#: Metrics scored on the rows of the source images themselves.
SOURCE_ROW_METRICS: tuple[str, ...] = names_where(lambda m: m.on_source_rows)


def listing(names: Iterable[str], last: str = ", ") -> str:
    """Names for prose: ``"EN, SF, AG and SD"`` with ``last=" and "``."""
    names = list(names)
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + last + names[-1]
