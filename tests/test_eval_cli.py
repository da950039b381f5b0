from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.errors import OccoError
from occo.data.fused import write_fuse_manifest


@pytest.fixture
def tno(tmp_path, fixtures_dir):
    """A writable copy of the fixture, to check that nothing is written into it."""
    copy = tmp_path / "tno"
    shutil.copytree(fixtures_dir / "tno_fixture", copy)
    return copy


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _run(*args):
    return CliRunner().invoke(app, ["metrics", *map(str, args)])


def test_table_and_csv_for_several_methods(tmp_path, tno):
    before = _listing(tno)
    out_csv = tmp_path / "results" / "scores.csv"
    fused = [tno / "fused" / m for m in ("DenseFuse", "SeAFusion")]
    result = _run(*fused, "--ir", tno / "ir", "--vi", tno / "vi", "--csv", out_csv, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "DenseFuse" in result.stdout and "SeAFusion" in result.stdout
    assert "Tang toolkit conventions" in result.stdout and "Qabf" in result.stdout
    assert "*" in result.stdout  # best per column marked
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [r["method"] for r in rows] == ["DenseFuse"] * 3 + ["SeAFusion"] * 3
    assert list(rows[0])[:4] == ["method", "image", "EN", "SF"] and "SSIM" in rows[0]
    reference = {
        (r["method"], r["image"]): r
        for r in csv.DictReader(open(tno / "reference.csv", newline=""))
    }
    for row in rows:
        ref = reference[(row["method"], row["image"])]
        assert float(row["MI"]) == pytest.approx(float(ref["MI"]), rel=1e-9)
    assert _listing(tno) == before  # nothing written into the inputs


def test_json_output_and_manifest_sources(tno):
    folder = tno / "fused" / "U2Fusion"
    write_fuse_manifest(folder, tno / "ir", tno / "vi")
    result = _run(folder, "--json", "--metrics", "en,VIF")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"] == ["EN", "VIF"]
    method = report["methods"][0]
    assert method["method"] == "U2Fusion" and method["sources"]["from"] == "manifest"
    assert method["images"] == 3 and len(report["images"]) == 3
    assert "occo-fuse.json" in result.stderr


def test_without_sources_only_source_free_metrics_with_a_note(tno):
    result = _run(tno / "fused" / "DenseFuse", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"] == ["EN", "SF", "AG", "SD"]
    assert "skipped" in result.stderr and "MI" in result.stderr and "--ir" in result.stderr


def test_missing_partner_is_listed(tno):
    (tno / "vi" / "37.png").unlink()
    result = _run(
        tno / "fused" / "DenseFuse", "--ir", tno / "ir", "--vi", tno / "vi", "--metrics", "EN,MI"
    )
    assert result.exit_code == 0, result.output
    assert "37.png" in result.stderr and "skipped" in result.stderr


def test_user_errors(tmp_path, tno):
    result = _run(tno / "fused" / "DenseFuse", "--ir", tno / "ir")
    assert result.exit_code == 1 and "both --ir and --vi" in result.stderr
    (tmp_path / "empty").mkdir()
    result = _run(tmp_path / "empty")
    assert isinstance(result.exception, OccoError) and "no images in" in str(result.exception)
    result = _run(tno / "fused" / "DenseFuse", "--csv", tno / "fused" / "DenseFuse" / "s.csv")
    assert result.exit_code == 1 and "input folder" in result.stderr
    result = _run(tno / "fused" / "DenseFuse", "--metrics", "EN,XYZ")
    assert isinstance(result.exception, OccoError) and "unknown metric 'XYZ'" in str(
        result.exception
    )


def test_help_has_an_example():
    result = CliRunner().invoke(app, ["metrics", "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout and "--workers" in result.stdout


def test_rows_without_sources_share_the_occo_rows_sources(tno):
    occo_row = tno / "fused" / "U2Fusion"  # stands in for an occo fuse output folder
    stems = sorted(p.stem for p in occo_row.glob("*.png"))
    write_fuse_manifest(occo_row, tno / "ir", tno / "vi", outputs={s: f"{s}.png" for s in stems})
    other = tno / "fused" / "DenseFuse"  # another method's folder, no manifest
    result = _run(occo_row, other, "--json", "--metrics", "EN,MI,VIF", "--workers", 1)
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(result.stdout)["methods"]}
    # Both rows have the source metrics (not MI/VIF for the occo row alone).
    for name in ("U2Fusion", "DenseFuse"):
        assert set(rows[name]["mean"]) == {"EN", "MI", "VIF"}
    assert rows["DenseFuse"]["sources"]["from"] == "shared"
    assert "DenseFuse: sources from" in result.stderr and "same images" in result.stderr


def test_a_stray_image_in_an_occo_folder_is_not_scored(tno):
    folder = tno / "fused" / "SeAFusion"
    stems = sorted(p.stem for p in folder.glob("*.png"))
    write_fuse_manifest(folder, tno / "ir", tno / "vi", outputs={s: f"{s}.png" for s in stems[:2]})
    result = _run(folder, "--json", "--metrics", "EN", "--workers", 1)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["methods"]
    assert row["images"] == 2
    assert "did not write are not scored" in result.stderr and stems[2] in result.stderr


def test_an_existing_csv_is_replaced_only_with_overwrite(tmp_path, tno):
    out_csv = tmp_path / "scores.csv"
    out_csv.write_text("the user's own table\n")
    folder = tno / "fused" / "DenseFuse"
    args = (folder, "--ir", tno / "ir", "--vi", tno / "vi", "--metrics", "EN", "--workers", 1)
    refused = _run(*args, "--csv", out_csv)
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    assert out_csv.read_text() == "the user's own table\n"
    replaced = _run(*args, "--csv", out_csv, "--overwrite")
    assert replaced.exit_code == 0 and out_csv.read_text().startswith("method,image,EN")
