"""`occo masks gen/show/export/info` in-process, with tiny models loaded through the CLI by path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occo.data.classes import ClassTableError
from occo.data.io import read_image, write_image_atomic  # noqa: E402
from occo.masks.labels import (  # noqa: E402
    LabelMapError,
    class_boxes,
    mask_from_labels,
    parse_classes,
    read_class_names,
)
from occo.masks.store import SettingsMismatchError, open_mask_store  # noqa: E402
from tests import masks_tiny as tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    from occo.cli.app import app

    return app


@pytest.fixture(scope="session")
def models(tiny_hf_models) -> dict[str, Path]:
    return tiny_hf_models


def gen_args(dataset: Path, models: dict, *extra: str) -> list[str]:
    return [
        "masks", "gen", str(dataset), "--detector", str(models["detector"]), "--segmenter",
        str(models["segmenter"]), "--device", "cpu", "-b", "2", "-q", *extra,
    ]  # fmt: skip


def test_gen_info_show_export(app, models, tmp_path):
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=3)
    (dataset / "vi" / "extra.png").write_bytes((dataset / "vi" / "0000.png").read_bytes())
    result = runner.invoke(app, gen_args(dataset, models))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "3 pairs (3 new)" in result.output
    assert "without a partner" in result.output  # the unpaired file is reported
    store = dataset / "masks.h5"
    reader = open_mask_store(store)
    assert reader.stems() == ["0000", "0001", "0002"]
    settings = reader.settings
    assert (
        settings["detector"] == str(models["detector"].resolve()) and settings["dtype"] == "float32"
    )
    assert settings["box_threshold"] == 0.3 and settings["vi_dir"] == str(
        (dataset / "vi").resolve()
    )
    pair = reader.read_pair("0001")
    assert pair.vi.mask.shape == (40, 56) and len(pair.vi.boxes) > 0  # random detectors fire

    again = runner.invoke(app, gen_args(dataset, models))
    assert again.exit_code == 0 and "nothing to do" in again.output

    info = runner.invoke(app, ["masks", "info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.output)
    assert summary["pairs"] == 3 and summary["settings"]["source"] == "models"
    assert summary["vi"]["boxes_mean"] == pytest.approx(
        np.mean([len(reader.read_pair(s).vi.boxes) for s in reader])
    )
    table = runner.invoke(app, ["masks", "info", str(store)])
    assert table.exit_code == 0 and "shared" in table.output and "infrared" in table.output

    shown = runner.invoke(app, ["masks", "show", str(store), "0001", "--out", str(tmp_path / "ov")])
    assert shown.exit_code == 0, shown.output
    sheet = read_image(tmp_path / "ov" / "0001.png")
    assert sheet.shape[1:] == (3 * 56 + 2 * 8, 3) and sheet.shape[0] > 40  # 3 panels under captions
    assert (
        runner.invoke(app, ["masks", "show", str(store), "nope", "--out", str(tmp_path)]).exit_code
        == 1
    )

    exported = runner.invoke(app, ["masks", "export", str(store), str(tmp_path / "exp")])
    assert exported.exit_code == 0, exported.output
    ir_png = read_image(tmp_path / "exp" / "mask_ir" / "mask_0002.png")
    np.testing.assert_array_equal(ir_png, reader.read("0002")[0] * 255)


def test_gen_settings_mismatch_and_overwrite(app, models, tmp_path):
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=2)
    out = tmp_path / "m.h5"
    assert runner.invoke(app, gen_args(dataset, models, "--out", str(out))).exit_code == 0
    clash = runner.invoke(
        app, gen_args(dataset, models, "--out", str(out), "--box-threshold", "1.5")
    )
    assert isinstance(clash.exception, SettingsMismatchError) and "box_threshold" in str(
        clash.exception
    )
    # A threshold above 1 keeps no box: empty masks, SAM never runs.
    redo = runner.invoke(
        app, gen_args(dataset, models, "--out", str(out), "--box-threshold", "1.5", "--overwrite")
    )
    assert redo.exit_code == 0, redo.output
    assert "infrared 2, visible 2" in redo.output
    reader = open_mask_store(out)
    assert reader.settings["box_threshold"] == 1.5
    assert all(not m.any() for s in reader.stems() for m in reader.read(s))


def test_gen_meta_checkpoint(app, models, tmp_path, monkeypatch):
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, tiny.TINY_META_KIND, tiny.build_tiny_meta_sam)
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=2)
    spec = f"sam:{tiny.TINY_META_KIND}:{models['meta']}"
    args = gen_args(dataset, models)
    args[args.index("--segmenter") + 1] = spec
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    reader = open_mask_store(dataset / "masks.h5")
    assert reader.settings["segmenter"] == f"sam:{tiny.TINY_META_KIND}:{models['meta'].resolve()}"
    assert any(m.any() for s in reader.stems() for m in reader.read(s))


def test_gen_errors(app, models, tmp_path):
    missing = runner.invoke(app, ["masks", "gen", str(tmp_path)])
    assert missing.exit_code == 1 and "no infrared folder" in missing.output
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=1)
    bad = runner.invoke(app, gen_args(dataset, models, "--box-threshold", "-1"))
    assert bad.exit_code == 1 and "threshold" in bad.output
    no_classes = runner.invoke(app, ["masks", "gen", str(dataset), "--labels", str(tmp_path)])
    assert no_classes.exit_code == 1 and "--classes" in no_classes.output


def test_label_masks(app, tmp_path):
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:3] = 2  # person
    labels[4:6, 5:8] = 1  # car
    labels[0, 7] = 3  # bike: not an object here
    assert parse_classes("2, 1,2") == [1, 2]
    with pytest.raises(ValueError):
        parse_classes("car")
    mask = mask_from_labels(labels, [1, 2])
    assert mask.sum() == 4 + 6 and mask[0, 7] == 0
    boxes, names = class_boxes(labels, [1, 2])
    assert boxes.tolist() == [[5, 4, 8, 6], [1, 1, 3, 3]] and names == ["class 1", "class 2"]

    dataset = tiny.write_dataset(tmp_path / "ds", pairs=2, size=(6, 8))
    for stem in ("0000", "0001"):
        write_image_atomic(tmp_path / "labels" / f"{stem}.png", labels)
    result = runner.invoke(
        app,
        [
            "masks",
            "gen",
            str(dataset),
            "--labels",
            str(tmp_path / "labels"),
            "--classes",
            "1,2",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    reader = open_mask_store(dataset / "masks.h5")
    assert reader.settings["source"] == "labels" and reader.settings["classes"] == [1, 2]
    ir, vi = reader.read("0001")
    np.testing.assert_array_equal(ir, mask)
    np.testing.assert_array_equal(vi, mask)
    assert reader.read_pair("0000").vi.labels == ["class 1", "class 2"]

    write_image_atomic(tmp_path / "labels" / "0001.png", np.zeros((5, 8), np.uint8))
    wrong = runner.invoke(
        app, ["masks", "gen", str(dataset), "--out", str(tmp_path / "x.h5"), "--labels", str(tmp_path / "labels"),
              "--classes", "1"],
    )  # fmt: skip
    assert isinstance(wrong.exception, LabelMapError) and "aligned" in str(wrong.exception)
    (tmp_path / "labels" / "0001.png").unlink()
    lost = runner.invoke(
        app, ["masks", "gen", str(dataset), "--out", str(tmp_path / "y.h5"), "--labels", str(tmp_path / "labels"),
              "--classes", "1"],
    )  # fmt: skip
    assert lost.exit_code == 1 and "no label map" in lost.output and "0001" in lost.output


def test_class_names_tables_and_lookup(tmp_path):
    listed = tmp_path / "msrs.txt"
    listed.write_text("unlabelled\ncar\nperson\nbike\ncurve\ncar stop  # a comment\n")
    names = read_class_names(listed)
    assert names[1] == "car" and names[5] == "car stop" and len(names) == 6
    assert parse_classes("Person, car,CAR_STOP", names) == [1, 2, 5]
    assert parse_classes("2,car", names) == [1, 2]  # indices and names mix
    numbered = tmp_path / "gaps.txt"
    numbered.write_text("# id name\n3: Traffic Sign\n7, person\n11 car\n")
    assert parse_classes("traffic-sign,person", read_class_names(numbered)) == [3, 7]
    with pytest.raises(ValueError, match="unknown class 'truck'.*known: unlabelled, car"):
        parse_classes("truck", names)
    with pytest.raises(ValueError, match="--class-names"):
        parse_classes("person")
    twice = tmp_path / "twice.txt"
    twice.write_text("car\nCar\n")
    with pytest.raises(ClassTableError, match="twice"):
        read_class_names(twice)


def test_label_masks_by_class_name(app, tmp_path):
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:3] = 2
    labels[4:6, 5:8] = 1
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=1, size=(6, 8))
    write_image_atomic(tmp_path / "labels" / "0000.png", labels)
    (tmp_path / "names.txt").write_text("unlabelled\ncar\nperson\n")
    args = ["masks", "gen", str(dataset), "--labels", str(tmp_path / "labels"), "-q"]
    result = runner.invoke(
        app, [*args, "--class-names", str(tmp_path / "names.txt"), "--classes", "person,car"]
    )
    assert result.exit_code == 0, result.output
    reader = open_mask_store(dataset / "masks.h5")
    assert reader.settings["classes"] == [1, 2]
    assert reader.read_pair("0000").vi.labels == ["car", "person"]
    unnamed = runner.invoke(app, [*args, "--out", str(tmp_path / "x.h5"), "--classes", "person"])
    assert unnamed.exit_code == 1 and "--class-names" in unnamed.output


def test_show_and_info_read_an_unfinished_run(app, tmp_path):
    from occo.masks.store import ModalityMasks, PairMasks, PartsJournal

    dataset = tiny.write_dataset(tmp_path / "ds", pairs=2)
    store = dataset / "masks.h5"
    journal = PartsJournal(store)  # what a run leaves after finishing its first chunk
    meta = {"ir_dir": str(dataset / "ir"), "vi_dir": str(dataset / "vi")}
    journal.prepare({"source": "test"}, [["0000"], ["0001"]], overwrite=False, meta=meta)
    mask = np.zeros((40, 56), np.uint8)
    mask[5:20, 10:30] = 1
    entry = ModalityMasks(mask, np.array([[10, 5, 30, 20]], np.float32), np.ones(1, np.float32),
                          ["person"], "0000.png")  # fmt: skip
    journal.write(0, [PairMasks("0000", entry, entry)])
    journal._release_lock()

    info = runner.invoke(app, ["masks", "info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    assert "done so far" in info.stderr
    record = json.loads(info.stdout)
    assert record["settings"]["source"] == "test" and record["pending_chunks"] == 1
    shown = runner.invoke(app, ["masks", "show", str(store), "--out", str(tmp_path / "ov")])
    assert shown.exit_code == 0, shown.output
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["0000.png"]
    missing = runner.invoke(app, ["masks", "info", str(tmp_path / "none.h5")])
    assert isinstance(missing.exception, FileNotFoundError)  # occo's main prints it in one line
    assert "occo masks gen" in str(missing.exception)


def test_overlay_panels():
    from occo.masks.overlay import render_pair
    from occo.masks.store import ModalityMasks, PairMasks

    image = np.full((30, 40), 100, np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 5:20] = 1
    entry = ModalityMasks(
        mask, boxes=[[5, 5, 20, 15]], scores=[0.9], labels=["car"], source="a.png"
    )
    sheet = render_pair(image, np.stack([image] * 3, axis=2), PairMasks("a", ir=entry, vi=entry))
    assert sheet.shape[1] == 3 * 40 + 2 * 8 and sheet.dtype == np.uint8
    top = sheet.shape[0] - 30
    assert not np.array_equal(
        sheet[top + 10, 10], sheet[top + 25, 35]
    )  # tinted object vs plain background
    small = ModalityMasks(np.zeros((20, 40), np.uint8))
    sheet = render_pair(np.zeros((20, 40), np.uint8), image, PairMasks("b", ir=small, vi=entry))
    assert sheet.shape[1] == 2 * 40 + 8  # sizes differ: no regions panel
