"""Bad destinations, damaged stores and config typos, met through the command line.

Nothing is overwritten without asking, every bad destination is found before the work
starts, and every error is one line that names the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import write_image_atomic
from occo.masks.store import MaskStoreError
from occo.models.checkpoint import save_weights
from occo.models.fifn import FIFN
from tests import masks_tiny as tiny
from tests.helpers import TINY_FIFN

runner = CliRunner()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def _one_line_error(result, *words: str) -> None:
    """Exit 1 with a single ``error:`` line holding ``words`` (no traceback)."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture
def label_store(tmp_path) -> tuple[Path, Path]:
    """A dataset of two pairs and its mask store, made from label maps (no models)."""
    dataset = tiny.write_dataset(tmp_path / "ds", pairs=2, size=(24, 32))
    labels = np.zeros((24, 32), np.uint8)
    labels[4:12, 6:20] = 1
    for stem in ("0000", "0001"):
        write_image_atomic(tmp_path / "labels" / f"{stem}.png", labels)
    made = runner.invoke(
        app, ["masks", "gen", str(dataset), "--labels", str(tmp_path / "labels"), "--classes", "1",
              "-q"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    return dataset, dataset / "masks.h5"


# ----------------------------------------------------------------------------- data loss


def test_masks_show_never_writes_into_inputs_or_over_files(label_store, tmp_path):
    dataset, store = label_store
    before = _digests(dataset / "vi")
    into_inputs = runner.invoke(app, ["masks", "show", str(store), "--out", str(dataset / "vi")])
    _one_line_error(into_inputs, "inside the input folder")
    assert _digests(dataset / "vi") == before  # 0000.png is still the visible image

    out = tmp_path / "overlays"
    assert runner.invoke(app, ["masks", "show", str(store), "--out", str(out)]).exit_code == 0
    (out / "0001.png").write_bytes(b"the user's file")
    again = runner.invoke(app, ["masks", "show", str(store), "--out", str(out)])
    _one_line_error(again, "already exist", "--overwrite")
    assert (out / "0001.png").read_bytes() == b"the user's file"
    forced = runner.invoke(app, ["masks", "show", str(store), "--out", str(out), "--overwrite"])
    assert forced.exit_code == 0 and (out / "0001.png").read_bytes() != b"the user's file"


def test_masks_export_never_writes_into_inputs_or_over_files(label_store, tmp_path):
    dataset, store = label_store
    released = dataset / "mask_vi" / "mask_0000.png"  # the authors' masks beside ir/ and vi/
    released.parent.mkdir()
    released.write_bytes(b"released mask")
    refused = runner.invoke(app, ["masks", "export", str(store), str(dataset)])
    _one_line_error(refused, "already exist", "--overwrite")
    assert released.read_bytes() == b"released mask"
    assert not (dataset / "mask_ir").exists()  # refused before writing anything

    inside = runner.invoke(app, ["masks", "export", str(store), str(dataset / "ir" / "m")])
    _one_line_error(inside, "inside the input folder")
    assert not (dataset / "ir" / "m").exists()

    out = tmp_path / "exported"
    assert runner.invoke(app, ["masks", "export", str(store), str(out)]).exit_code == 0
    again = runner.invoke(app, ["masks", "export", str(store), str(out)])
    _one_line_error(again, "4 file(s) already exist")
    forced = runner.invoke(app, ["masks", "export", str(store), str(dataset), "--overwrite"])
    assert forced.exit_code == 0 and released.read_bytes() != b"released mask"


# ----------------------------------------------------------------------------- writability


def _unwritable_folders(tmp_path: Path) -> list[Path]:
    """Folders no process can create here: under a regular file, and (Linux) under /sys."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folders = [blocker / "out"]
    sys_folder = Path("/sys/occo-test-out")
    try:
        sys_folder.mkdir()
    except OSError:
        folders.append(sys_folder)  # read-only for everyone, root included
    else:
        sys_folder.rmdir()
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        folders.append(locked)
    return folders


def test_unwritable_destinations_fail_before_the_work(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("ir", "vi"):
        write_image_atomic(tmp_path / name / "a.png", rng.integers(0, 255, (16, 20), np.uint8))
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, FIFN(TINY_FIFN).eval())
    for folder in _unwritable_folders(tmp_path):
        fused = runner.invoke(app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"),
                                    str(folder / "fused"), "--weights", str(weights), "--device", "cpu"])  # fmt: skip
        _one_line_error(fused, "OUT_DIR", str(folder))
        assert "weights:" not in fused.output  # stopped before loading the network
        scored = runner.invoke(
            app, ["metrics", str(tmp_path / "ir"), "--csv", str(folder / "s.csv")]
        )
        _one_line_error(scored, "--csv", str(folder))
        assert "EN" not in scored.stdout  # nothing scored


def test_masks_show_to_an_unwritable_folder_fails_first(label_store, tmp_path):
    _, store = label_store
    for folder in _unwritable_folders(tmp_path):
        shown = runner.invoke(app, ["masks", "show", str(store), "--out", str(folder / "ov")])
        _one_line_error(shown, "--out", str(folder))


# ----------------------------------------------------------------------------- damaged stores


def _flip_first_chunk(store: Path, stem: str) -> None:
    with h5py.File(store, "r") as h5:
        offset = h5["vi"][stem].id.get_chunk_info(0).byte_offset
    data = bytearray(store.read_bytes())
    for i in range(offset + 2, offset + 40):
        data[i] ^= 0xFF
    store.write_bytes(bytes(data))


def test_damaged_store_one_line_everywhere_and_overwrite_replaces_it(label_store, tmp_path):
    dataset, store = label_store
    good = store.read_bytes()
    gen = [
        "masks",
        "gen",
        str(dataset),
        "--labels",
        str(tmp_path / "labels"),
        "--classes",
        "1",
        "-q",
    ]

    store.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk
    for command in (["info", str(store)], ["show", str(store), "--out", str(tmp_path / "o1")],
                    ["export", str(store), str(tmp_path / "e1")]):  # fmt: skip
        result = runner.invoke(app, ["masks", *command])
        assert isinstance(result.exception, MaskStoreError), result.output
        assert str(store) in str(result.exception) and "\n" not in str(result.exception)
    refused = runner.invoke(app, gen)
    assert isinstance(refused.exception, MaskStoreError) and "--overwrite" in str(refused.exception)
    replaced = runner.invoke(app, [*gen, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert store.read_bytes() != good[: len(good) // 2]

    _flip_first_chunk(store, "0001")  # a bit-flipped mask
    for command in (["masks", "info", str(store)],
                    ["masks", "show", str(store), "--out", str(tmp_path / "o2")],
                    ["masks", "export", str(store), str(tmp_path / "e2")],
                    ["train", str(dataset), "--objective", "pixel", "--masks", str(store),
                     "--out", str(tmp_path / "run")]):  # fmt: skip
        result = runner.invoke(app, command)
        if isinstance(result.exception, MaskStoreError):  # raised for occo's error printer
            lines = [str(result.exception)]
        else:  # or rendered by the command itself
            assert result.exit_code == 1, (command, result.output)
            lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, (command, result.output)
        message = lines[0]
        assert str(store) in message and "'0001'" in message


# ----------------------------------------------------------------------------- config


def test_config_accepts_yaml_1_1_numbers_and_names_bad_fields(tmp_path):
    data = tiny.write_dataset(tmp_path / "ds", pairs=2, size=(24, 32))
    config = tmp_path / "c.yaml"

    def train(yaml_text: str):
        config.write_text(yaml_text)
        return runner.invoke(app, ["train", str(data), "--objective", "pixel", "--config",
                                   str(config), "--out", str(tmp_path / "run")])  # fmt: skip

    # lr: 1e-4 is a string to YAML 1.1; the crop error below comes after lr is compared.
    too_small = train("lr: 1e-4\ncrop: 4\n")
    assert "crop 4 is smaller" in str(too_small.exception), too_small.output
    bad = train("lr: 1e-4\nobjective: {w_con: ten}\n")
    assert "objective.w_con must be a number, got 'ten'" in str(bad.exception)
    from occo.train.config import TrainConfig, load_config_file

    config.write_text("lr: 1e-4\nweight_decay: 5E-5\nbetas: [0.9, 9.99e-1]\n")
    cfg = TrainConfig().replace(load_config_file(config))
    assert (cfg.lr, cfg.weight_decay, cfg.betas) == (1e-4, 5e-5, (0.9, 0.999))
