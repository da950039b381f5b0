"""Hostile mask stores, mixed annotations and many boxes (issue 27, mask side).

Every crafted file is built here with h5py. A store may make HDF5 read bytes from outside
it: a dataset's external raw storage (here a planted secret file), an external link, a
virtual dataset, a soft link; or declare a huge mask in a tiny compressed file. `occo masks
info`, `occo metrics --masks`, `occo masks export` and `occo train` must each refuse in
one line, exit non-zero, and write nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from occo.data.errors import OccoError
from occo.masks.store import (
    BadMaskError,
    MaskStoreError,
    ModalityMasks,
    PairMasks,
    SettingsMismatchError,
    UnsafeStoreError,
    open_mask_store,
    write_h5_atomic,
    write_pair,
)
from tests import eval_tiny as tiny
from tests.helpers import TINY_TRAIN_YAML

runner = CliRunner()
H, W = tiny.SIZE
STEMS = tiny.STEMS
SECRET = (b"SECRET-TOKEN=hunter2;" * 200)[: H * W]

TINY_YAML = TINY_TRAIN_YAML


@pytest.fixture(scope="module")
def app():
    from occo.cli.app import app

    return app


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Three pairs, their "fused" images, a tiny training config and a planted secret file."""
    tiny.write_images(tmp_path / "ds" / "ir", seed=1)
    tiny.write_images(tmp_path / "ds" / "vi", seed=2)
    tiny.write_images(tmp_path / "fused", seed=3)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return tmp_path


def _mask(stem: str) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4 + STEMS.index(stem) : 30, 6:40] = 1
    return mask


def _store(path: Path, data: Path, hostile: str) -> Path:
    """A version 1 occo store (as older occo wrote it) whose ``/ir/0001`` is ``hostile``."""
    secret = data / "secret.txt"
    other = data / "other.h5"
    with h5py.File(other, "w") as h5:  # another HDF5 file holding the secret's bytes
        h5["m"] = np.frombuffer(SECRET, np.uint8).reshape(H, W)
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"format": "occo-masks", "version": 1, "source": "labels", "classes": [1]})
        h5.attrs["ir_dir"] = str((data / "ds" / "ir").resolve())
        h5.attrs["vi_dir"] = str((data / "ds" / "vi").resolve())
        for modality in ("ir", "vi"):
            group = h5.create_group(modality)
            for stem in STEMS:
                if modality == "ir" and stem == "0001":
                    continue
                group.create_dataset(stem, data=_mask(stem), compression="gzip")
                group[stem].attrs["boxes"] = np.zeros((0, 4), np.float32)
        group = h5["ir"]
        if hostile == "external":
            group.create_dataset(
                "0001", shape=(H, W), dtype=np.uint8, external=[(str(secret), 0, H * W)]
            )
        elif hostile == "external-link":
            group["0001"] = h5py.ExternalLink(str(other), "/m")
        elif hostile == "virtual":
            layout = h5py.VirtualLayout(shape=(H, W), dtype=np.uint8)
            layout[:] = h5py.VirtualSource(str(other), "m", shape=(H, W))
            group.create_virtual_dataset("0001", layout)
        elif hostile == "soft-link":
            h5["elsewhere"] = h5py.ExternalLink(str(other), "/m")
            group["0001"] = h5py.SoftLink("/elsewhere")
        elif hostile == "huge":  # 10^10 pixels declared, nothing written: a tiny file
            group.create_dataset(
                "0001", shape=(100_000, 100_000), dtype=np.uint8, chunks=(1000, 1000),
                compression="gzip",
            )  # fmt: skip
        elif hostile == "values":
            group.create_dataset("0001", data=np.full((H, W), 255, np.uint8))
        elif hostile == "float":
            group.create_dataset("0001", data=np.full((H, W), 0.5))
        else:
            raise ValueError(hostile)
    return path


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _commands(data: Path, store: Path) -> dict[str, list[str]]:
    ds = data / "ds"
    return {
        "masks info": ["masks", "info", str(store)],
        "masks export": ["masks", "export", str(store), str(data / "exported")],
        "metrics --masks": [
            "metrics", str(data / "fused"), "--ir", str(ds / "ir"), "--vi", str(ds / "vi"),
            "--masks", str(store), "--workers", "1", "--csv", str(data / "scores.csv"),
        ],
        "train": [
            "train", str(ds), "--masks", str(store), "--objective", "pixel", "--config",
            str(data / "tiny.yaml"), "--max-steps", "1", "--device", "cpu",
            "--out", str(data / "run"),
        ],
    }  # fmt: skip


def _main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``occo ARGS`` as the console script runs it: exit code and what it printed on stderr."""
    from occo.cli.app import main

    monkeypatch.setattr(sys, "argv", ["occo", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


HOSTILE = ["external", "external-link", "virtual", "soft-link", "huge", "values", "float"]
COMMANDS = ["masks info", "masks export", "metrics --masks", "train"]
#: What each crafted store is refused with, and a word the one line must hold.
EXPECTED = {
    "external": (UnsafeStoreError, "secret.txt"),
    "external-link": (UnsafeStoreError, "external link"),
    "virtual": (UnsafeStoreError, "virtual dataset"),
    "soft-link": (UnsafeStoreError, "link"),
    "huge": (BadMaskError, "100000x100000"),
    "values": (BadMaskError, "not 0/1"),
    "float": (BadMaskError, "float64"),
}


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_reader_refuses_a_hostile_store_in_one_line_and_writes_nothing(
    app, data, hostile, command, capsys, monkeypatch
):
    store = _store(data / "masks.h5", data, hostile)
    before = _files(data)
    args = _commands(data, store)[command]
    result = runner.invoke(app, args)
    error, word = EXPECTED[hostile]
    assert result.exit_code == 1, result.output
    # The library raises; the command may turn it into its one line itself (SystemExit 1).
    assert isinstance(result.exception, (error, SystemExit)), repr(result.exception)
    assert SECRET[:20].decode() not in result.output
    code, stderr = _main(args, capsys, monkeypatch)
    lines = stderr.strip().splitlines()  # a progress bar may stand before the error
    assert code == 1 and lines[-1].startswith("error: "), stderr
    message = lines[-1].removeprefix("error: ")
    if isinstance(result.exception, error):
        assert message == str(result.exception)
    assert str(store) in message and word in message, message
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in stderr, stderr
    assert _files(data) == before  # nothing written: no PNG, CSV, run folder or temporary


def test_huge_mask_is_refused_before_any_allocation(data):
    store = _store(data / "masks.h5", data, "huge")
    assert store.stat().st_size < 200_000  # the whole file is small
    with pytest.raises(BadMaskError, match="declares 100000x100000 pixels"):
        open_mask_store(store)


def test_the_library_reader_refuses_too_and_names_the_target(data):
    for hostile, target in (("external", "secret.txt"), ("external-link", "other.h5:/m")):
        store = _store(data / f"{hostile}.h5", data, hostile)
        with pytest.raises(UnsafeStoreError, match="occo reads only data stored inside") as info:
            open_mask_store(store)
        assert target in str(info.value) and "/ir/0001" in str(info.value)


def test_a_store_swapped_after_opening_is_checked_again_at_read(data):
    """Worker processes reopen the store: each read checks its own datasets again."""
    good = _store(data / "masks.h5", data, "values")
    with h5py.File(good, "a") as h5:
        del h5["ir"]["0001"]
        h5["ir"]["0001"] = _mask("0001")
    reader = open_mask_store(good)
    assert reader.read("0001")[0].sum() == _mask("0001").sum()
    reader.close()
    with h5py.File(good, "a") as h5:
        del h5["ir"]["0001"]
        h5["ir"].create_dataset(
            "0001", shape=(H, W), dtype=np.uint8, external=[(str(data / "secret.txt"), 0, H * W)]
        )
    with pytest.raises(UnsafeStoreError, match="another file"):
        reader.read("0001")
    with pytest.raises(UnsafeStoreError):
        reader.shapes("0001")


def test_masks_gen_refuses_to_add_to_a_hostile_store_and_overwrite_replaces_it(app, data):
    store = _store(data / "masks.h5", data, "external")
    labels = data / "labels"
    for stem in STEMS:
        from occo.data.io import write_image_atomic

        write_image_atomic(labels / f"{stem}.png", _mask(stem))
    args = ["masks", "gen", str(data / "ds"), "--labels", str(labels), "--classes", "1", "-q"]
    result = runner.invoke(app, [*args, "--out", str(store)])
    assert result.exit_code == 1 and isinstance(result.exception, UnsafeStoreError)
    result = runner.invoke(app, [*args, "--out", str(store), "--overwrite"])
    assert result.exit_code == 0, result.output
    reader = open_mask_store(store)
    assert reader.stems() == STEMS and reader.read("0001")[0].max() == 1


# ----------------------------------------------------------------------------- annotations


def _gen_boxes(app, data: Path, ir: Path, vi: Path, *extra: str):
    return runner.invoke(
        app,
        ["masks", "gen", str(data / "ds"), "--boxes-ir", str(ir), "--boxes-vi", str(vi),
         "--out", str(data / "boxes.h5"), "-q", *extra],
    )  # fmt: skip


def test_rerun_with_swapped_or_edited_annotations_is_refused(app, data):
    ir = tiny.write_yolo(data / "labels_ir")
    shifted = {
        s: [(n, x0 + 2, y0, x1 + 2, y1) for n, x0, y0, x1, y1 in b] for s, b in tiny.BOXES.items()
    }
    vi = tiny.write_yolo(data / "labels_vi", boxes=shifted)
    first = _gen_boxes(app, data, ir, vi)
    assert first.exit_code == 0, first.output
    settings = open_mask_store(data / "boxes.h5").settings
    assert settings["boxes_ir_sha256"].startswith("sha256:")
    assert settings["boxes_ir_sha256"] != settings["boxes_vi_sha256"]
    assert settings["ir_dir"] == str((data / "ds" / "ir").resolve())

    same = _gen_boxes(app, data, ir, vi)
    assert same.exit_code == 0 and "nothing to do" in same.output

    swapped = _gen_boxes(app, data, vi, ir)
    assert isinstance(swapped.exception, SettingsMismatchError), swapped.output
    message = str(swapped.exception)
    assert "boxes_ir_dir" in message and "boxes_vi_dir" in message and "--overwrite" in message

    # Same folders, other content: one label file edited in place.
    label = ir / "0000.txt"
    label.write_text(label.read_text().replace("0.", "0.0", 1))
    edited = _gen_boxes(app, data, ir, vi)
    assert isinstance(edited.exception, SettingsMismatchError), edited.output
    assert "boxes_ir_sha256" in str(edited.exception)
    assert "boxes_vi" not in str(edited.exception)

    replaced = _gen_boxes(app, data, ir, vi, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (
        open_mask_store(data / "boxes.h5").settings["boxes_ir_sha256"]
        != settings["boxes_ir_sha256"]
    )


def test_rerun_on_other_image_folders_is_refused(app, data):
    ir = tiny.write_yolo(data / "labels")
    assert _gen_boxes(app, data, ir, ir).exit_code == 0
    moved = data / "copy"
    for modality in ("ir", "vi"):
        tiny.write_images(moved / modality, seed=7)
    result = runner.invoke(
        app,
        ["masks", "gen", str(moved), "--boxes", str(ir), "--out", str(data / "boxes.h5"), "-q"],
    )
    assert isinstance(result.exception, SettingsMismatchError), result.output
    assert "ir_dir" in str(result.exception) and "vi_dir" in str(result.exception)


def test_rerun_with_other_label_maps_is_refused(app, data):
    from occo.data.io import write_image_atomic

    labels = data / "labelmaps"
    for stem in STEMS:
        write_image_atomic(labels / f"{stem}.png", _mask(stem))
    args = ["masks", "gen", str(data / "ds"), "--labels", str(labels), "--classes", "1", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    write_image_atomic(labels / "0002.png", np.zeros((H, W), np.uint8))
    result = runner.invoke(app, args)
    assert isinstance(result.exception, SettingsMismatchError), result.output
    assert "labels_sha256" in str(result.exception)


# ----------------------------------------------------------------------------- many boxes


def test_masks_gen_with_5000_boxes_on_one_image(app, data):
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, W - 4, 5000), rng.uniform(0, H - 4, 5000)
    many = {"0000": [("person", a, b, a + 3, b + 3) for a, b in zip(x0, y0, strict=True)]}
    labels = tiny.write_yolo(data / "many", boxes=many)
    result = runner.invoke(
        app,
        ["masks", "gen", str(data / "ds"), "--boxes", str(labels), "--out",
         str(data / "many.h5"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pair = open_mask_store(data / "many.h5").read_pair("0000")
    assert len(pair.ir.boxes) == len(pair.vi.scores) == len(pair.vi.labels) == 5000
    np.testing.assert_allclose(pair.ir.boxes[:, 0], x0, atol=1e-3)
    assert set(pair.ir.labels) == {"person"}


def test_library_stores_many_boxes_as_datasets_and_reads_version_1_attributes(data):
    boxes = np.arange(6000 * 4, dtype=np.float32).reshape(-1, 4)
    entry = ModalityMasks(_mask("0000"), boxes, np.ones(6000), ["car"] * 6000, "0000.png")
    store = data / "new.h5"
    write_h5_atomic(
        store,
        {"format": "occo-masks", "version": 2},
        lambda h5: write_pair(h5, PairMasks("0000", entry, entry)),
    )
    pair = open_mask_store(store).read_pair("0000")
    np.testing.assert_array_equal(pair.vi.boxes, boxes)
    assert pair.ir.labels[-1] == "car" and pair.ir.source == "0000.png"

    old = data / "v1.h5"  # the attribute layout of version 1 stores
    with h5py.File(old, "w") as h5:
        h5.attrs.update({"format": "occo-masks", "version": 1})
        for modality in ("ir", "vi"):
            dataset = h5.create_group(modality).create_dataset("0000", data=_mask("0000"))
            dataset.attrs["boxes"] = np.array([[1, 2, 3, 4]], np.float32)
            dataset.attrs["scores"] = np.array([0.5], np.float32)
            dataset.attrs["labels"] = np.array(["person"], dtype=h5py.string_dtype())
            dataset.attrs["source"] = f"{modality}.png"
    pair = open_mask_store(old).read_pair("0000")
    assert pair.ir.boxes.tolist() == [[1, 2, 3, 4]] and pair.vi.labels == ["person"]
    assert pair.vi.scores.tolist() == [0.5] and pair.vi.source == "vi.png"


def test_a_version_1_store_is_extended_into_the_dataset_layout(app, data):
    """masks gen adds pairs to an old store: its detections move into datasets."""
    from occo.data.io import write_image_atomic

    labels = data / "labelmaps"
    for stem in STEMS:
        write_image_atomic(labels / f"{stem}.png", _mask(stem))
    args = ["masks", "gen", str(data / "ds"), "--labels", str(labels), "--classes", "1", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    store = data / "ds" / "masks.h5"
    before = open_mask_store(store).read_pair("0000")
    with h5py.File(store, "a") as h5:  # turn it into a version 1 store without pair 0002
        h5.attrs["version"] = 1
        for modality in ("ir", "vi"):
            del h5[modality]["0002"]
            detections = h5["detections"][modality]
            del detections["0002"]
            records = detections["0000"][()]
            del detections["0000"]
            attrs = h5[modality]["0000"].attrs
            attrs["boxes"], attrs["scores"] = records["box"], records["score"]
            attrs["labels"] = np.array(records["label"], dtype=h5py.string_dtype())
    assert open_mask_store(store).read_pair("0000").ir.labels == before.ir.labels
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "1 new" in result.output, result.output
    with h5py.File(store, "r") as h5:
        assert "boxes" not in h5["ir"]["0000"].attrs and "0000" in h5["detections"]["ir"]
        assert h5.attrs["version"] == 2
    after = open_mask_store(store).read_pair("0000")
    np.testing.assert_array_equal(after.ir.boxes, before.ir.boxes)
    assert after.ir.labels == before.ir.labels and open_mask_store(store).stems() == STEMS


def test_errors_are_occo_errors():
    assert issubclass(UnsafeStoreError, MaskStoreError) and issubclass(BadMaskError, OccoError)


def _v2_store(path: Path) -> Path:
    entry = ModalityMasks(_mask("0000"), [[1, 2, 3, 4]], [0.5], ["person"], "0000.png")
    write_h5_atomic(
        path,
        {"format": "occo-masks", "version": 2},
        lambda h5: write_pair(h5, PairMasks("0000", entry, entry)),
    )
    return path


def test_hostile_detections_are_refused_at_open(data):
    store = _v2_store(data / "v2.h5")
    with h5py.File(store, "a") as h5:
        del h5["detections"]["ir"]["0000"]
        h5["detections"]["ir"].create_dataset(
            "0000", shape=(3,), dtype=h5py.h5t.py_create(np.dtype("S8")).dtype,
            external=[(str(data / "secret.txt"), 0, 24)],
        )  # fmt: skip
    with pytest.raises(UnsafeStoreError, match="/detections/ir/0000 keeps its bytes in another"):
        open_mask_store(store)
    store = _v2_store(data / "v2b.h5")
    with h5py.File(store, "a") as h5:
        records = h5["detections"]["vi"]["0000"].dtype
        del h5["detections"]["vi"]["0000"]
        h5["detections"]["vi"].create_dataset(
            "0000", shape=(10**8,), dtype=records, chunks=(1000,), compression="gzip"
        )
    with pytest.raises(BadMaskError, match="declares 100000000 detections"):
        open_mask_store(store)


def test_an_image_name_with_a_path_is_refused_by_show(app, data):
    """`masks show` reads IMAGE_DIR/<source>: a path there would draw any image on disk."""
    store = _v2_store(data / "v2.h5")
    with h5py.File(store, "a") as h5:  # a good pair 0002 first, then the bad one
        for modality in ("ir", "vi"):
            h5[modality].create_dataset("0002", data=_mask("0002"))
            h5[modality]["0002"].attrs["source"] = "0002.png"
        h5.attrs["ir_dir"] = str(data / "ds" / "ir")
        h5.attrs["vi_dir"] = str(data / "ds" / "vi")
        h5["vi"]["0000"].attrs["source"] = str((data / "fused" / "0001.png").resolve())
    before = _files(data)
    args = ["masks", "show", str(store), "0002", "0000", "--out", str(data / "shown")]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, BadMaskError), result.output
    assert "not a file name" in str(result.exception) and _files(data) == before


def test_a_store_replaced_by_a_hostile_one_is_audited_again(data):
    good = _v2_store(data / "masks.h5")
    assert open_mask_store(good).stems() == ["0000"]
    assert open_mask_store(good).stems() == ["0000"]  # the second open is not walked again
    hostile = _store(data / "hostile.h5", data, "external")
    hostile.replace(good)
    with pytest.raises(UnsafeStoreError):
        open_mask_store(good)


def test_a_hostile_journal_is_ignored_not_a_traceback(data):
    """A dataset may ship masks.h5.parts/ too: deep or non-object JSON is not a settings file."""
    from occo.masks.store import PartsJournal, PartsReader

    journal = PartsJournal(data / "masks.h5")
    journal.dir.mkdir()
    for text in ("[" * 100_000 + "]" * 100_000, "[1, 2]", "\xff"):
        (journal.dir / PartsJournal.SETTINGS).write_bytes(text.encode("latin-1"))
        assert journal.read_settings() is None
        with pytest.raises(FileNotFoundError):
            PartsReader(data / "masks.h5")


def test_every_hdf5_read_goes_through_the_one_reader():
    """Only masks/h5read.py opens HDF5 files to read; masks/store.py opens one to write."""
    root = Path(__file__).resolve().parents[1]
    opens = {}
    for source in root.rglob("*.py"):
        relative = source.relative_to(root)
        if relative.parts[0] in ("tests", "benchmarks") or ".venv" in relative.parts:
            continue
        text = source.read_text(encoding="utf-8", errors="replace")
        if "h5py.File(" in text:
            opens[str(relative)] = text.count("h5py.File(")
    assert opens == {"masks/h5read.py": 1, "masks/store.py": 1}, opens
    assert 'h5py.File(tmp, "w"' in (root / "masks" / "store.py").read_text()
