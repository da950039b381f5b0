from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from occo.data import write_image_atomic
from occo.data.fused import write_fuse_manifest
from occo.eval.metrics import METRIC_NAMES, SOURCE_FREE, compute_metrics
from occo.eval.report import best_methods, report_dict, scores_csv, summarize, write_scores_csv
from occo.eval.scoring import ScoringError, plan_folder, score_jobs, unique_method_names


@pytest.fixture
def tno(fixtures_dir):
    return fixtures_dir / "tno_fixture"


@pytest.fixture
def fused_with_gap(tmp_path, tno):
    """DenseFuse's three images plus one whose sources do not exist."""
    folder = tmp_path / "DenseFuse"
    shutil.copytree(tno / "fused" / "DenseFuse", folder)
    write_image_atomic(folder / "99.png", np.zeros((5, 5), np.uint8))
    return folder


def test_missing_partners_are_listed_and_skipped(tno, fused_with_gap):
    plan = plan_folder(fused_with_gap, tno / "ir", tno / "vi")
    assert [p.name for p in plan.unpaired] == ["99.png"]
    assert [j.fused.name for j in plan.jobs] == ["08.png", "11.png", "37.png"]
    assert plan.metrics == METRIC_NAMES and plan.sources.origin == "options"


def test_sources_from_the_fuse_manifest(tno, fused_with_gap):
    write_fuse_manifest(fused_with_gap, tno / "ir", tno / "vi", pairs=3)
    plan = plan_folder(fused_with_gap)
    assert plan.sources.origin == "manifest" and len(plan.jobs) == 3


def test_manifest_with_missing_folders_is_an_error(tmp_path, fused_with_gap):
    write_fuse_manifest(fused_with_gap, tmp_path / "gone_ir", tmp_path / "gone_vi")
    with pytest.raises(ScoringError, match="gone_ir.*does not exist"):
        plan_folder(fused_with_gap)


def test_no_sources_gives_source_free_metrics_and_says_why(fused_with_gap):
    plan = plan_folder(fused_with_gap)
    assert plan.metrics == SOURCE_FREE and len(plan.jobs) == 4
    assert set(plan.skipped_metrics) == set(METRIC_NAMES) - set(SOURCE_FREE)
    assert "--ir and --vi" in plan.skip_reason


def test_empty_folder_and_no_partner_at_all(tmp_path, tno):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ScoringError, match="no images in"):
        plan_folder(tmp_path / "empty")
    strangers = tmp_path / "strangers"
    write_image_atomic(strangers / "zz.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ScoringError, match="none of the 1 images"):
        plan_folder(strangers, tno / "ir", tno / "vi")


def test_size_mismatch_and_unreadable_images_name_the_file(tmp_path, tno):
    folder = tmp_path / "fused"
    write_image_atomic(folder / "08.png", np.zeros((10, 10), np.uint8))
    (folder / "11.png").write_bytes(b"not a png")
    plan = plan_folder(folder, tno / "ir", tno / "vi")
    with pytest.raises(
        ScoringError, match=r"08\.png is 10x10 but its infrared source .*08\.png is 256x256"
    ):
        score_jobs(plan.jobs[:1])
    with pytest.raises(ScoringError, match=r"11\.png"):
        score_jobs(plan.jobs[1:])


def test_pool_gives_the_same_scores_in_job_order(tno):
    plan = plan_folder(tno / "fused" / "SeAFusion", tno / "ir", tno / "vi", ["EN", "MI", "Qabf"])
    one = score_jobs(plan.jobs, workers=1)
    seen = []
    two = score_jobs(plan.jobs, workers=2, on_done=seen.append)
    assert one == two and len(seen) == 3
    assert [s.image for s in two] == ["08.png", "11.png", "37.png"]


def test_pool_stops_at_the_first_bad_image(tmp_path, tno):
    folder = tmp_path / "fused"
    shutil.copytree(tno / "fused" / "U2Fusion", folder)
    (folder / "11.png").write_bytes(b"broken")
    plan = plan_folder(folder, tno / "ir", tno / "vi", ["EN"])
    with pytest.raises(ScoringError, match="11.png"):
        score_jobs(plan.jobs, workers=2)


def test_report_mean_std_best_csv_and_json(tmp_path, tno):
    plans = [
        plan_folder(tno / "fused" / m, tno / "ir", tno / "vi", ["EN", "MSE", "VIF"])
        for m in ("DenseFuse", "U2Fusion")
    ]
    scores = score_jobs([j for p in plans for j in p.jobs])
    summaries = summarize(plans, scores)
    dense = [s.values["EN"] for s in scores if s.method == "DenseFuse"]
    assert summaries[0].mean["EN"] == pytest.approx(np.mean(dense))
    assert summaries[0].std["EN"] == pytest.approx(np.std(dense, ddof=1))
    best = best_methods(summaries, ["EN", "MSE"])
    for name, pick in (("EN", max), ("MSE", min)):  # MSE: lower is better
        target = pick(s.mean[name] for s in summaries)
        assert best[name] == [s.method for s in summaries if s.mean[name] == target]

    path = write_scores_csv(tmp_path / "out" / "scores.csv", scores, ["EN", "MSE", "VIF"])
    lines = path.read_text().splitlines()
    assert lines[0] == "method,image,EN,MSE,VIF" and len(lines) == 7
    method, image, en, *_ = lines[1].split(",")
    assert (method, image) == ("DenseFuse", "08.png")
    assert float(en) == scores[0].values["EN"]  # full precision round-trips

    report = report_dict(plans, summaries, scores)
    assert report["metrics"] == ["EN", "VIF", "MSE"]
    assert report["methods"][1]["method"] == "U2Fusion" and len(report["images"]) == 6


def test_report_handles_undefined_values(tmp_path):
    flat = tmp_path / "flat"
    for i in range(2):
        write_image_atomic(flat / f"{i}.png", np.full((6, 6), 9, np.uint8))
    for name in ("ir", "vi"):
        for i in range(2):
            write_image_atomic(tmp_path / name / f"{i}.png", np.full((6, 6), 3 + i, np.uint8))
    plan = plan_folder(flat, tmp_path / "ir", tmp_path / "vi", ["EN", "CC"])
    scores = score_jobs(plan.jobs)
    (summary,) = summarize([plan], scores)
    assert summary.undefined == {"EN": 0, "CC": 2} and math.isnan(summary.mean["CC"])
    report = report_dict([plan], [summary], scores)
    assert report["methods"][0]["mean"]["CC"] is None and report["images"][0]["CC"] is None
    assert "nan" in scores_csv(scores, ["CC"])
    assert compute_metrics(np.full((6, 6), 9, np.uint8), metrics=["EN"]) == {"EN": 0.0}


def test_unique_method_names(tmp_path):
    a, b, c = tmp_path / "x" / "fused", tmp_path / "y" / "fused", tmp_path / "z"
    names = unique_method_names([a, b, c])
    assert names[2] == "z" and names[0] != names[1] and names[0].endswith("fused")
