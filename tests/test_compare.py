"""occo compare (occo.eval.compare): places, folder methods, resume, failing pairs, report."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest

from occo.data.io import write_image_atomic
from occo.eval.compare import CompareError, CompareEvents, CompareSettings, compare
from occo.eval.compare_tables import places, table_latex, table_markdown
from tests.helpers import write_pairs

METRICS = ("EN", "SD", "Qabf", "MSE")


@pytest.fixture(autouse=True)
def _fast_cost(monkeypatch):
    """describe_network counts FLOPs at 640x480 (seconds on a loaded CPU; its own tests
    check it): the rows must carry what it says."""
    from types import SimpleNamespace

    import occo.eval.compare as module

    monkeypatch.setattr(module, "_described",
                        lambda name: SimpleNamespace(parameters=1234, gflops_640x480=5.5))  # fmt: skip


def _dataset(root, sizes=((30, 41), (30, 41), (27, 35))):
    write_pairs(root, sizes=sizes)
    return root


def _folder_method(dataset, name="Published"):
    """A folder of 'fused' images made elsewhere: the visible images, inside the dataset."""
    folder = dataset / "fused" / name
    folder.mkdir(parents=True)
    for path in sorted((dataset / "vi").iterdir()):
        shutil.copy(path, folder / path.name)
    return folder


def _settings(datasets, methods, out, weights, **kw):
    return CompareSettings(list(datasets), methods, out, weights={"fifn": weights},
                           metrics=METRICS, figures=False, **kw)  # fmt: skip


def test_places_ties_nan_and_direction():
    assert places({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5}) == {"a": 1, "b": 2, "c": 3}
    assert places({"a": 3.0, "b": 2.0, "c": 1.0}, higher=False) == {"c": 1, "b": 2, "a": 3}
    # Ties share a place and the next one is skipped; NaN gets none.
    assert places({"a": 2.0, "b": 2.0, "c": 1.0, "d": math.nan}) == {"a": 1, "b": 1, "c": 3}
    assert places({"a": 1.0, "b": 2.0, "c": 2.0, "d": 2.0}) == {"b": 1, "c": 1, "d": 1}
    assert places({"a": math.inf, "b": 30.0}) == {"a": 1, "b": 2}
    assert places({"a": 1.0, "b": math.nan}) == {}  # one value: nothing to compare


def test_compare_rows_folder_method_and_tables(tmp_path, tiny_weights):
    from occo.eval.report import summarize
    from occo.eval.scoring import plan_folder, score_jobs

    data = _dataset(tmp_path / "ds")
    published = _folder_method(data)
    lines = []
    result = compare(_settings([data], ["fifn", str(published)], tmp_path / "out", tiny_weights),
                     CompareEvents(finished=lambda u, d, t, eta: lines.append((u.method, d, t, eta))))  # fmt: skip
    assert [(m, d, t) for m, d, t, _ in lines] == [("fifn", 1, 2), ("Published", 2, 2)]
    assert lines[-1][3] == 0  # nothing left
    rows = result.rows
    assert len(rows) == 2 * len(METRICS)
    # The folder method's row is what occo metrics computes on it, exactly.
    plan = plan_folder(published, data / "ir", data / "vi", list(METRICS))
    expected = summarize([plan], score_jobs(plan.jobs))[0]
    mine = {r["metric"]: r for r in rows if r["method"] == "Published"}
    for metric in METRICS:
        assert mine[metric]["mean"] == expected.mean[metric]
        assert mine[metric]["kind"] == "folder" and mine[metric]["parameters"] is None
    fifn = next(r for r in rows if r["method"] == "fifn")
    assert (fifn["parameters"], fifn["gflops_640x480"]) == (1234, 5.5)
    assert fifn["seconds_per_pair"] > 0 and fifn["pairs_per_s"] == 1 / fifn["seconds_per_pair"]
    # Places in the files: two methods, one best and one second per metric (unless tied).
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["format"] == "occo-compare" and len(written["rows"]) == len(rows)
    csv_lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows)
    md, tex = table_markdown(result), table_latex(result)
    for metric in METRICS:
        a, b = (u.mean[metric] for u in result.units)
        if a != b:
            assert {r["place"] for r in rows if r["metric"] == metric} == {1, 2}
    table = md[md.index("| method") :]
    assert table.count("**") == 2 * len(METRICS) and table.count("<u>") >= 1
    assert "MSE ↓" in md and "EN ↑" in md
    assert "\\textbf{" in tex and "\\textcolor{red}{" in tex and "$\\downarrow$" in tex


def test_folder_of_another_dataset_is_skipped(tmp_path, tiny_weights):
    a = _dataset(tmp_path / "a")
    b = _dataset(tmp_path / "b", sizes=((20, 24),))
    published = _folder_method(a)
    result = compare(_settings([a, b], ["fifn", str(published)], tmp_path / "out", tiny_weights))
    assert [(u.dataset, u.method) for u in result.units] == [
        ("a", "fifn"), ("a", "Published"), ("b", "fifn")]  # fmt: skip
    assert any("not scored on b" in line for line in result.skipped)
    with pytest.raises(CompareError, match="neither a registered method"):
        compare(_settings([a], ["fifn", "no-such"], tmp_path / "out2", tiny_weights))


def test_resume_after_interruption_reuses_fused_images(tmp_path, tiny_weights):
    data = _dataset(tmp_path / "ds")
    settings = _settings([data], ["fifn"], tmp_path / "out", tiny_weights)

    def stop(done, total, what):
        if what.startswith("fusing"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(settings, CompareEvents(progress=stop))
    fused = tmp_path / "out" / "fused" / "ds" / "fifn"
    finished = len(list(fused.glob("*.png")))  # the pairs in flight finished, the rest absent
    assert 1 <= finished < 3
    result = compare(settings)
    unit = result.units[0]
    assert (unit.reused, unit.fused, unit.images) == (finished, 3 - finished, 3)
    again = compare(settings).units[0]
    assert (again.reused, again.fused) == (3, 0)
    assert again.mean == unit.mean
    assert again.seconds_per_pair == unit.seconds_per_pair  # the record of the run that fused


def test_a_method_failing_on_one_pair_is_reported(tmp_path, tiny_weights):
    data = _dataset(tmp_path / "ds")
    rng = np.random.default_rng(1)  # p1's visible image has another size: it cannot be fused
    write_image_atomic(data / "vi" / "p1.png", rng.integers(0, 256, (22, 19, 3), dtype=np.uint8))
    warnings = []
    result = compare(_settings([data], ["fifn"], tmp_path / "out", tiny_weights),
                     CompareEvents(warn=warnings.append))  # fmt: skip
    unit = result.units[0]
    assert list(unit.failures) == ["p1"] and unit.images == 2
    assert set(unit.per_image) == {"p0", "p2"}
    assert any("p1 failed" in line for line in warnings)
    assert "(1 failed)" in table_markdown(result)


def test_limit_uses_the_first_pairs(tmp_path, tiny_weights):
    data = _dataset(tmp_path / "ds")
    result = compare(_settings([data], ["fifn"], tmp_path / "out", tiny_weights, limit=2))
    assert result.datasets[0].stems == ("p0", "p1") and result.units[0].images == 2


def _box_labels(dataset):
    """MSRS-style YOLO boxes per modality (classes.txt one folder up): one object in p0 and
    p1, none in p2 (an image without objects)."""
    labels = dataset / "labels"
    (labels / "classes.txt").parent.mkdir(parents=True)
    (labels / "classes.txt").write_text("0 person\n1 car\n")
    for modality, box in (("infrared", "0 0.3 0.4 0.4 0.5"), ("visible", "1 0.6 0.5 0.3 0.4")):
        (labels / modality).mkdir()
        for stem in ("p0", "p1"):
            (labels / modality / f"{stem}.txt").write_text(box + "\n")
        (labels / modality / "p2.txt").write_text("")
    return labels


def test_scored_inside_objects_of_the_box_labels(tmp_path, tiny_weights):
    from occo.eval.region_scoring import attach_regions
    from occo.eval.report import summarize
    from occo.eval.scoring import plan_folder, score_jobs

    data = _dataset(tmp_path / "ds")
    _box_labels(data)
    published = _folder_method(data)
    notes = []
    out = tmp_path / "out"
    result = compare(_settings([data], ["fifn", str(published)], out, tiny_weights),
                     CompareEvents(note=notes.append))  # fmt: skip
    store = out / "masks" / "ds.h5"
    assert result.datasets[0].masks.store == store and store.is_file()
    assert any("scored inside objects" in line for line in notes)
    columns = result.object_columns
    assert "EN@objects" in columns and "TC@objects" in columns and "MSE@objects" in columns
    # The folder method's values inside objects are occo metrics --masks on it, exactly.
    plan = plan_folder(published, data / "ir", data / "vi", list(METRICS))
    attach_regions(plan, store, ("objects",), [*METRICS, "TC"])
    expected = summarize([plan], score_jobs(plan.jobs))[0]
    unit = result.unit("ds", "Published")
    assert unit.object_images == {"objects": 2}  # p2 has no object: left out, counted
    assert set(columns) == set(expected.mean) - set(METRICS)
    for column in columns:
        assert unit.mean[column] == expected.mean[column] or (
            math.isnan(unit.mean[column]) and math.isnan(expected.mean[column])
        )
    # The whole-image values are those without masks.
    assert unit.mean["EN"] == expected.mean["EN"]
    rows = [r for r in result.rows if r["metric"] == "EN@objects"]
    assert len(rows) == 2 and {r["place"] for r in rows} <= {1, 2}
    md = table_markdown(result)
    assert "#### ds, inside objects (2 pairs with objects; masks: filled boxes of" in md
    assert "inside objects" in table_latex(result)
    written = json.loads((out / "results.json").read_text())
    assert written["datasets"][0]["masks"] == str(store)
    # A rerun reuses the store; --no-objects scores the whole image only.
    notes.clear()
    again = compare(
        _settings([data], ["fifn"], out, tiny_weights), CompareEvents(note=notes.append)
    )
    assert again.unit("ds", "fifn").mean == result.unit("ds", "fifn").mean
    assert not any("pairs made" in line for line in notes)
    plain = compare(_settings([data], ["fifn"], out, tiny_weights, objects=False))
    assert plain.object_columns == [] and plain.datasets[0].masks is None


def test_a_mask_store_without_some_pairs_fails_before_fusing(tmp_path, tiny_weights):
    data = _dataset(tmp_path / "ds")
    labels = _box_labels(data)
    (labels / "infrared" / "p2.txt").unlink()  # still made: p2 gets empty masks
    out = tmp_path / "out"
    compare(_settings([data], ["fifn"], out, tiny_weights, limit=2))
    partial = out / "masks" / "ds.h5"  # made for p0 and p1 only
    with pytest.raises(CompareError, match="no dataset compared"):
        compare(_settings([data], ["fifn"], tmp_path / "o2", tiny_weights, masks={"x": partial}))
    from occo.eval.compare_objects import ObjectMaskError

    with pytest.raises(ObjectMaskError, match="ds: 1 of the 3 images scored have no masks.*--no-objects"):
        compare(_settings([data], ["fifn"], tmp_path / "o3", tiny_weights, masks={"ds": partial}))
    assert not (tmp_path / "o3" / "fused").exists()


def test_detection_scores_every_method_with_one_detector(tmp_path, tmp_path_factory,
                                                         tiny_weights, monkeypatch):  # fmt: skip
    from typer.testing import CliRunner

    from occo.cli.app import app
    from tests import eval_tiny

    detr = eval_tiny.tiny_models(tmp_path_factory)["detr"]
    data = tmp_path / "ds"
    eval_tiny.write_images(data / "ir", seed=1)
    eval_tiny.write_images(data / "vi", seed=2)
    eval_tiny.write_yolo(data / "labels" / "fusion")
    published = _folder_method(data)
    out = tmp_path / "out"
    settings = _settings([data], ["fifn", str(published)], out, tiny_weights,
                         detector=str(detr), device="cpu")  # fmt: skip
    result = compare(settings)
    assert result.detection_columns == ["mAP50", "mAP50-95", "AP50 person", "AP50 bicycle",
                                        "AP50 car"]  # fmt: skip
    # Each method's scores are occo eval detect's on its folder (same detector, own cache).
    for unit in result.units:
        cli = CliRunner().invoke(app, ["eval", "detect", str(unit.folder), "--no-sources",
                                       "--labels", str(data / "labels" / "fusion"),
                                       "--detector", str(detr), "--device", "cpu",
                                       "--cache", str(tmp_path / f"cache-{unit.method}"),
                                       "-q", "--json"])  # fmt: skip
        assert cli.exit_code == 0, cli.output
        row = json.loads(cli.stdout)["rows"][0]
        assert unit.mean["mAP50"] == pytest.approx(row["all"]["AP50"], abs=1e-12)
        assert unit.mean["mAP50-95"] == pytest.approx(row["all"]["AP50_95"], abs=1e-12)
        assert unit.mean["AP50 car"] == pytest.approx(row["classes"]["car"]["AP50"], abs=1e-12)
    rows = [r for r in result.rows if r["metric"] == "mAP50"]
    assert len(rows) == 2 and all(r["higher_is_better"] for r in rows)
    assert "#### ds, detection (" in table_markdown(result)
    assert "% detection" in table_latex(result)
    # A rerun scores from the cache: the detector is never loaded.
    import occo.eval.detectors as detectors

    def no_loading(*args, **kwargs):
        raise AssertionError("the detector was loaded again")

    monkeypatch.setattr(detectors, "load_detector", no_loading)
    again = compare(settings)
    assert [u.mean["mAP50"] for u in again.units] == [u.mean["mAP50"] for u in result.units]
    with pytest.raises(CompareError, match="give --detector too"):
        compare(_settings([data], ["fifn"], out, tiny_weights, labels={"ds": data / "labels"}))


def _chromium():
    return next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, tiny_weights):
    pytest.importorskip("matplotlib")
    data = _dataset(tmp_path / "ds", sizes=((40, 52), (40, 52)))
    published = _folder_method(data)
    out = tmp_path / "out"
    settings = _settings([data], ["fifn", str(published)], out, tiny_weights)
    settings.figures, settings.figure_pairs, settings.metrics = True, 2, ("EN", "Qabf")
    result = compare(settings)
    report = out / "report.html"
    assert report in result.files and (out / "figures" / "qualitative_ds.png").is_file()
    assert (out / "figures" / "speed_quality.png").is_file()
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]  # fmt: skip
    shot = tmp_path / "report.png"  # one run: the DOM after load, and a screenshot
    dom = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=60,
                         check=True, cwd=tmp_path).stdout  # fmt: skip
    assert '<table class="metrics"' in dom
    n_images = report.read_text().count("<img ")
    assert n_images >= 1 + 2 * 4  # the figure, and per pair ir, vi and two methods
    assert f'data-images-loaded="{n_images}"' in dom and 'data-images-broken="0"' in dom
    assert shot.stat().st_size > 1000
