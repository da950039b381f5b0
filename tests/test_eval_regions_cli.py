"""``occo metrics --masks``: region columns end to end with a small synthetic mask store."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data import write_image_atomic
from occo.eval.metrics.regions import object_contrast
from occo.eval.region_scoring import RegionMaskError, attach_regions
from occo.eval.scoring import plan_folder, score_jobs
from occo.masks.store import (
    FORMAT,
    STORE_VERSION,
    ModalityMasks,
    PairMasks,
    write_h5_atomic,
    write_pair,
)

H, W = 32, 40
STEMS = ("0000", "0001", "0002")


def _write_store(path, masks: dict[str, tuple[np.ndarray, np.ndarray]]):
    pairs = [PairMasks(s, ModalityMasks(ir), ModalityMasks(vi)) for s, (ir, vi) in masks.items()]
    write_h5_atomic(
        path,
        {"format": FORMAT, "version": STORE_VERSION},
        lambda h5: [write_pair(h5, pair) for pair in pairs],
    )
    return path


@pytest.fixture
def data(tmp_path):
    """Three pairs and their fused images; pair 0001 has no objects; the store holds one more."""
    rng = np.random.default_rng(3)
    images, masks = {}, {}
    for i, stem in enumerate(STEMS):
        ir = rng.integers(0, 80, (H, W), dtype=np.uint8)
        vi = rng.integers(0, 200, (H, W), dtype=np.uint8)
        mask_ir = np.zeros((H, W), np.uint8)
        mask_vi = np.zeros((H, W), np.uint8)
        if stem != "0001":
            ir[5 + i : 15 + i, 6:14] = 230  # a hot object, seen by the infrared mask
            mask_ir[5 + i : 15 + i, 6:14] = 1
            mask_vi[20:28, 25:36] = 1
        fused = ((ir.astype(np.uint16) + vi) // 2).astype(np.uint8)
        for folder, image in (("ir", ir), ("vi", vi), ("fused", fused)):
            write_image_atomic(tmp_path / folder / f"{stem}.png", image)
        images[stem] = (fused, ir, vi)
        masks[stem] = (mask_ir, mask_vi)
    masks["extra"] = (np.ones((4, 4), np.uint8), np.ones((4, 4), np.uint8))
    store = _write_store(tmp_path / "masks.h5", masks)
    return tmp_path, store, images, masks


def _run(*args):
    return CliRunner().invoke(app, ["metrics", *map(str, args)])


def _entropy(values):
    counts = np.bincount(values.ravel(), minlength=256)
    p = counts[counts > 0] / values.size
    return float(-(p * np.log2(p)).sum())


def test_json_has_region_columns_blocks_and_source_rows(data):
    root, store, images, masks = data
    sources = ("--ir", root / "ir", "--vi", root / "vi", "--workers", 1, "--json")
    plain = json.loads(_run(root / "fused", *sources).stdout)
    result = _run(root / "fused", *sources, "--masks", store, "--source-rows")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["regions"]["regions"]) == ["objects", "background"]
    assert "EN@objects" in report["regions"]["columns"]
    assert "TC@background" not in report["regions"]["columns"]
    fused, infrared, visible = report["methods"]
    assert [m["method"] for m in report["methods"]] == ["fused", "infrared", "visible"]
    objects = fused["regions"]["objects"]
    assert objects["images"] == 2 and objects["images_without_region"] == 1
    assert fused["regions"]["background"]["images"] == 3
    assert infrared["source_row"] == "infrared" and infrared["metrics"] == ["EN", "SF", "AG", "SD"]
    assert infrared["regions"]["objects"]["metrics"] == ["EN", "SF", "AG", "SD", "TC"]
    assert all("infrared" not in best and "visible" not in best for best in report["best"].values())
    rows = {(r["method"], r["image"]): r for r in report["images"]}
    for stem in STEMS:
        row = rows[("fused", f"{stem}.png")]
        before = next(r for r in plain["images"] if r["image"] == f"{stem}.png")
        assert {k: row[k] for k in before} == before  # whole-image values unchanged
        fused_image, ir, vi = images[stem]
        objects_mask = (masks[stem][0] > 0) | (masks[stem][1] > 0)
        if stem == "0001":
            assert row["empty_regions"] == ["objects"] and "EN@objects" not in row
            continue
        assert row["EN@objects"] == pytest.approx(_entropy(fused_image[objects_mask]), abs=1e-12)
        assert row["SD@background"] == pytest.approx(
            np.std(fused_image[~objects_mask].astype(float)), rel=1e-12
        )
        c_a, c_b = object_contrast([ir, vi], objects_mask, ~objects_mask)
        assert rows[("infrared", f"{stem}.png")]["TC@objects"] == pytest.approx(
            c_a / max(c_a, c_b), rel=1e-12
        )
    assert "1 of 3 image(s) without objects pixels" in result.stderr


def test_table_with_occo_regions_and_csv(data):
    root, store, _, _ = data
    out_csv = root / "out" / "scores.csv"
    result = _run(
        root / "fused",
        "--ir", root / "ir", "--vi", root / "vi",
        "--masks", store, "--regions", "occo", "--metrics", "EN,SSIM,TC",
        "--csv", out_csv, "--workers", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for region in ("shared", "unique_ir", "unique_vi", "background"):
        assert f"Inside {region}" in result.stdout
    assert "ring: background within 10 px" in " ".join(result.stdout.split())
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert list(rows[0])[:4] == ["method", "image", "EN", "SSIM"]
    assert "TC@unique_ir" in rows[0] and "TC@background" not in rows[0]
    assert rows[1]["EN@unique_ir"] == "" and rows[0]["EN@unique_ir"] != ""  # 0001 is empty
    # No infrared-only object pixels shared with the visible mask in these pairs.
    assert "without shared pixels" in result.stderr


def test_source_rows_without_masks_and_tc_alone(data):
    root, store, _, _ = data
    sources = ("--ir", root / "ir", "--vi", root / "vi", "--workers", 1, "--json")
    report = json.loads(_run(root / "fused", *sources, "--source-rows").stdout)
    assert [m["method"] for m in report["methods"]] == ["fused", "infrared", "visible"]
    assert report["methods"][2]["metrics"] == ["EN", "SF", "AG", "SD"]
    assert "regions" not in report and report["methods"][1]["images"] == 3
    result = _run(root / "fused", *sources, "--masks", store, "--metrics", "tc")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"] == [] and report["regions"]["columns"] == ["TC@objects"]
    assert list(report["methods"][0]["regions"]) == ["objects"]  # background has no TC


def test_pool_workers_read_the_store(data):
    root, store, _, _ = data
    plan = plan_folder(root / "fused", root / "ir", root / "vi", ["EN", "Qabf"])
    attach_regions(plan, store, ("objects", "background"), None)
    one = score_jobs(plan.jobs, workers=1)
    two = score_jobs(plan.jobs, workers=2)
    assert one == two and one[1].empty_regions == ("objects",)
    assert not math.isnan(one[0].values["Qabf@objects"])


def test_masks_must_match_the_images(data):
    root, _, _, masks = data
    sources = ("--ir", root / "ir", "--vi", root / "vi", "--workers", 1)
    partial = _write_store(root / "partial.h5", {s: masks[s] for s in STEMS[:2]})
    result = _run(root / "fused", *sources, "--masks", partial)
    assert isinstance(result.exception, RegionMaskError)
    assert "1 of the 3 images scored have no masks in" in str(result.exception)
    assert "0002" in str(result.exception)
    small = np.zeros((H, W - 1), np.uint8)
    wrong = _write_store(root / "wrong.h5", {**masks, "0002": (small, small)})
    result = _run(root / "fused", *sources, "--masks", wrong)
    assert isinstance(result.exception, RegionMaskError)
    assert "mask of '0002'" in str(result.exception) and "is 39x32 but" in str(result.exception)
    result = _run(root / "fused", *sources, "--masks", root / "missing.h5")
    assert isinstance(result.exception, FileNotFoundError)


def test_option_errors(data):
    root, store, _, _ = data
    sources = ("--ir", root / "ir", "--vi", root / "vi")
    result = _run(root / "fused", *sources, "--regions", "occo")
    assert result.exit_code == 1 and "--regions needs --masks" in result.stderr
    result = _run(root / "fused", *sources, "--metrics", "EN,TC")
    assert result.exit_code == 1 and "give --masks" in result.stderr
    result = _run(root / "fused", *sources, "--masks", store, "--regions", "faces")
    assert "unknown region 'faces'" in str(result.exception)
    result = _run(root / "fused", "--masks", store, "--source-rows")
    assert "source rows need the sources" in str(result.exception)
