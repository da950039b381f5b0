from __future__ import annotations

import json
from pathlib import Path

import pytest

from occo.data.fused import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ManifestError,
    read_fuse_manifest,
    write_fuse_manifest,
)
from occo.data.version import OCCO_VERSION


def test_round_trip_with_absolute_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    path = write_fuse_manifest(
        "out",
        "ir",
        Path("vi"),
        weights=tmp_path / "w.safetensors",
        settings={"batch_size": 4, "tile": None, "amp": True},
        device="cpu",
        timings={"total": 1.5, "per_image": float("nan")},
        pairs=3,
    )
    assert path == Path("out") / MANIFEST_NAME
    record = read_fuse_manifest("out")
    assert record["format"] == "occo-fuse" and record["version"] == MANIFEST_VERSION
    assert record["occo_version"] == OCCO_VERSION
    assert record["ir_dir"] == str(tmp_path / "ir") and record["vi_dir"] == str(tmp_path / "vi")
    assert record["weights"] == str(tmp_path / "w.safetensors")
    assert record["settings"] == {"batch_size": 4, "tile": None, "amp": True}
    assert record["timings"] == {"total": 1.5, "per_image": None}  # JSON has no NaN
    assert record["pairs"] == 3 and record["device"] == "cpu" and record["created"]
    assert not list(Path("out").glob("*.tmp"))  # written atomically, nothing left over


def test_absent_manifest_is_none(tmp_path):
    assert read_fuse_manifest(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        (json.dumps({"format": "other"}), "not an occo-fuse manifest"),
        (
            json.dumps({"format": "occo-fuse", "version": 99, "ir_dir": "a", "vi_dir": "b"}),
            "schema version 99",
        ),
        (json.dumps({"format": "occo-fuse", "version": 1, "ir_dir": "a"}), "lacks 'vi_dir'"),
    ],
)
def test_bad_manifests_name_the_file(tmp_path, content, message):
    (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ManifestError, match=message) as info:
        read_fuse_manifest(tmp_path)
    assert MANIFEST_NAME in str(info.value)


def test_reserved_and_unserialisable_fields_are_refused(tmp_path):
    with pytest.raises(TypeError, match="ir_dir"):
        write_fuse_manifest(tmp_path, "a", "b", ir_dir="c")
    with pytest.raises(TypeError, match="settings"):
        write_fuse_manifest(tmp_path, "a", "b", settings={"x": object()})
    assert not (tmp_path / MANIFEST_NAME).exists()
