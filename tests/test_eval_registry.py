"""The metric registry (``eval.metrics.table``): one entry registers a metric everywhere;
``occo.eval``'s lazy exports; best marked within a dataset."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from occo.eval.metrics import table
from occo.eval.report import MethodSummary, best_methods, best_scope


def test_package_exports_resolve_and_compute_metrics_imports_from_occo_eval():
    import occo.eval
    import occo.eval.metrics
    import occo.losses
    from occo.eval import compute_metrics

    assert compute_metrics is occo.eval.metrics.core.compute_metrics
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert tuple(compute_metrics(image)) == table.SOURCE_FREE
    for package in (occo.eval, occo.eval.metrics, occo.losses):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
            package.nothing_here  # noqa: B018


def test_the_registry_imports_no_numpy_or_opencv():
    # The command line lists the metrics in its help from the table: it must stay light.
    code = (
        "import sys; import occo.eval.metrics.table, occo.eval\n"
        "print(sorted(m for m in ('numpy', 'cv2', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_registered_function_resolves():
    for info in table.METRICS.values():
        if info.function is not None:
            assert callable(table.resolve(info.function)), info.name
        if info.region is not None:
            assert callable(table.resolve(info.region.function)), info.name
            assert info.region.takes in ("pixels", "mask", "maps"), info.name
        assert info.derived_from is None or info.derived_from in table.METRIC_NAMES
    assert table.REGION_METRIC_DEFINITIONS.keys() == set(table.REGION_METRICS)


# A subprocess builds the registry with two metrics added to METRICS_TABLE (and nothing
# else), then checks that every list, the computations, the report and the command's
# help know them: a metric registered in the table is registered everywhere.
_ADDED = """(
MetricInfo(
    name="SDX", title="standard deviation again", function=f"{_INTENSITY}:sd",
    higher_is_better=False, needs_sources=False,
    region=_pixels("SD", "SD again"), description="SD under another name",
),
MetricInfo(
    name="CCX", title="correlation again", function=f"{_INTENSITY}:cc",
    higher_is_better=True, needs_sources=True,
    region=RegionForm(f"{_REGIONS}:sf_region", "mask", "SF of the region, as CCX"),
    description="CC under another name",
),
)"""

_CHECK = """
import ast, importlib.util, sys, types, json
import occo.eval.metrics
spec = importlib.util.find_spec("occo.eval.metrics.table")
tree = ast.parse(open(spec.origin).read())
added = ast.parse(ADDED, mode="eval").body.elts
for node in tree.body:
    if isinstance(node, ast.AnnAssign) and node.target.id == "METRICS_TABLE":
        node.value.elts.extend(added)
module = types.ModuleType(spec.name)
module.__file__ = spec.origin
sys.modules[spec.name] = module
exec(compile(tree, spec.origin, "exec"), module.__dict__)

import numpy as np
from typer.testing import CliRunner
from occo.cli.app import app
from occo.eval.metrics import (
    METRIC_NAMES, NEEDS_SOURCES, REGION_METRICS, SOURCE_FREE, compute_metrics,
    default_metrics, parse_metric_names,
)
from occo.eval.metrics.regions import compute_in_regions, region_metric_names
from occo.eval.metrics.table import REGION_METRIC_DEFINITIONS, SOURCE_ROW_METRICS
from occo.eval.report import higher_is_better

rng = np.random.default_rng(0)
f, a, b = (rng.integers(0, 256, (16, 20), dtype=np.uint8) for _ in range(3))
mask = np.zeros((16, 20), bool)
mask[3:12, 4:15] = True
whole = compute_metrics(f, a, b)
inside = compute_in_regions(f, a, b, {"objects": mask})["objects"]
from occo.eval.metrics.regions import sf_in
help_text = CliRunner().invoke(app, ["metrics", "--help"], env={"COLUMNS": "300"}).stdout

# End to end: occo metrics with source rows, asked for the new metrics; region metrics
# attached to its plans as --masks does (the store is not read for that).
import tempfile
from pathlib import Path
from occo.data import write_image_atomic
from occo.eval.region_scoring import attach_regions
from occo.eval.scoring import plan_folder, plan_source_rows
root = Path(tempfile.mkdtemp())
for stem in ("0", "1"):
    for folder, image in (("fused", f), ("ir", a), ("vi", b)):
        write_image_atomic(root / folder / f"{stem}.png", image)
sources = ["--ir", str(root / "ir"), "--vi", str(root / "vi")]
args = ["metrics", str(root / "fused"), *sources, "--metrics", "SDX,CCX", "--source-rows",
        "--workers", "1", "--json"]
report = json.loads(CliRunner().invoke(app, args).stdout)
rows = {m["method"]: m for m in report["methods"]}
plans = [plan_folder(root / "fused", root / "ir", root / "vi")]
plans += plan_source_rows(plans)
for plan in plans:
    attach_regions(plan, root / "masks.h5", ("objects",), None,
                   source_free_only=plan.source_role is not None)
attached = [list(plan.regions.metrics) for plan in plans]
print(json.dumps({
    "names": METRIC_NAMES, "free": SOURCE_FREE, "sources": NEEDS_SOURCES,
    "region": REGION_METRICS, "definitions": list(REGION_METRIC_DEFINITIONS),
    "source_rows": SOURCE_ROW_METRICS, "default_free": default_metrics(False),
    "default_all": default_metrics(True), "parsed": parse_metric_names("sdx,ccx"),
    "region_free": region_metric_names(None, False),
    "whole": [whole["SDX"] == whole["SD"], whole["CCX"] == whole["CC"]],
    "inside": [inside["SDX"] == inside["SD"], inside["CCX"] == sf_in(f, mask)],
    "direction": [higher_is_better("SDX"), higher_is_better("CCX@objects")],
    "help": help_text,
    "cli": [rows["fused"]["metrics"], rows["infrared"]["metrics"], report["higher_is_better"]],
    "attached": attached,
}))
"""


def test_a_metric_added_to_the_table_is_registered_everywhere():
    code = f"ADDED = {_ADDED!r}\n" + textwrap.dedent(_CHECK)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["names"][-2:] == ["SDX", "CCX"] and got["parsed"] == ["SDX", "CCX"]
    assert "SDX" in got["free"] and "CCX" not in got["free"] and "CCX" in got["sources"]
    assert got["region"][-2:] == ["SDX", "CCX"] and got["definitions"] == got["region"]
    assert "SDX" in got["source_rows"] and "CCX" not in got["source_rows"]
    assert got["default_free"] == got["free"] and got["default_all"] == got["names"]
    assert "SDX" in got["region_free"] and "CCX" not in got["region_free"]
    assert got["whole"] == [True, True] and got["inside"] == [True, True]
    assert got["direction"] == [False, True]
    assert "PSNR,SSIM,SDX,CCX, and TC" in got["help"]  # --metrics
    assert "only EN, SF, AG, SD and SDX are computed" in got["help"]
    assert "(EN, SF, AG, SD, SDX, and TC with --masks)" in got["help"]  # --source-rows
    fused, infrared, direction = got["cli"]
    assert fused == ["SDX", "CCX"] and infrared == ["SDX"]  # source rows: source-free only
    assert direction == {"SDX": False, "CCX": True}
    fused_inside, infrared_inside, _ = got["attached"]
    assert fused_inside[-2:] == ["SDX", "CCX"]  # appended after TC, in table order
    assert infrared_inside == ["EN", "SF", "AG", "SD", "TC", "SDX"]


def _summary(method: str, mean: dict[str, float], ir: str | None, vi: str | None):
    summary = MethodSummary(method, method, 3, mean=mean)
    summary.sources = (None if ir is None else Path(ir), None if vi is None else Path(vi))
    return summary


def test_best_is_marked_within_each_dataset():
    rows = [
        _summary("a", {"EN": 7.0, "MSE": 0.2}, "tno/ir", "tno/vi"),
        _summary("b", {"EN": 6.0, "MSE": 0.1}, "tno/ir", "tno/vi"),
        _summary("c", {"EN": 9.0, "MSE": 0.05}, "msrs/ir", "msrs/vi"),  # alone in msrs
        _summary("d", {"EN": 8.0, "MSE": math.nan}, "msrs/ir", "msrs/vi"),
    ]
    best = best_methods(rows, ["EN", "MSE"])
    assert best == {"EN": ["a", "c"], "MSE": ["b"]}  # d has no MSE: c has none to beat
    assert best_scope(rows) == (
        "* best within each dataset (rows with the same sources): a, b; c, d"
    )
    same = rows[:2]
    assert best_methods(same, ["EN"]) == {"EN": ["a"]} and best_scope(same) is None
