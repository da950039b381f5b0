"""Nothing silent or misleading: hidden files, broken links, infinite PSNR, decoder noise,
slow runs, tiles on thin images, converting what needs no conversion (through the CLI)."""

from __future__ import annotations

import json
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.errors import OccoError
from occo.data.io import write_image_atomic
from occo.models.checkpoint import save_weights
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN

runner = CliRunner()


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, FIFN(TINY_FIFN).eval(), metadata={"source": "test"})
    return path


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _fuse(tmp_path, weights, *extra):
    return runner.invoke(
        app, ["fuse", str(tmp_path / "ir"), str(tmp_path / "vi"), str(tmp_path / "out"),
              "--weights", str(weights), "--device", "cpu", *extra],
    )  # fmt: skip


def test_hidden_files_are_counted_and_broken_links_named(tmp_path, weights):
    for name in ("ir", "vi"):
        write_image_atomic(tmp_path / name / "a.png", _image((16, 20)))
        write_image_atomic(tmp_path / name / ".a.png", _image((16, 20)))  # e.g. macOS ._a.png
    write_image_atomic(tmp_path / "ir" / "c.png", _image((16, 20)))
    (tmp_path / "vi" / "c.png").symlink_to(tmp_path / "moved-away.png")
    result = _fuse(tmp_path, weights)
    assert result.exit_code == 1  # the pair with the broken link failed
    assert "left out 2 hidden file(s)" in result.output and ".a.png" in result.output
    assert "broken symbolic link" in result.output and "moved-away.png" in result.output
    assert "partner" not in result.output  # c.png has one: a broken one
    assert (tmp_path / "out" / "a.png").is_file()


def test_infinite_psnr_is_inf_in_table_and_json_without_numpy_warnings(tmp_path):
    for stem in ("0", "1"):  # fused == infrared == visible: MSE 0, PSNR infinite
        for name in ("ir", "vi", "fused"):
            write_image_atomic(tmp_path / name / f"{stem}.png", _image((24, 30), int(stem)))
    args = ["metrics", str(tmp_path / "fused"), "--ir", str(tmp_path / "ir"), "--vi",
            str(tmp_path / "vi"), "--metrics", "PSNR,MSE"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        as_json = runner.invoke(app, [*args, "--json"])
        table = runner.invoke(app, args)
    assert as_json.exit_code == 0 and table.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["methods"][0]["mean"]["PSNR"] == "inf"
    assert report["images"][0]["PSNR"] == "inf" and report["images"][0]["MSE"] == 0.0
    assert " inf " in table.stdout
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught


def _png_with_bad_text_chunk(image: np.ndarray) -> bytes:
    """A PNG whose tEXt chunk has a wrong CRC: libpng reads it and prints a warning."""
    png = cv2.imencode(".png", image)[1].tobytes()
    data = b"Comment\x00hello"
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + b"\0\0\0\0"
    assert zlib.crc32(b"tEXt" + data) != 0
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


def test_decoder_warnings_become_one_occo_line(tmp_path, weights, capfd):
    for name in ("ir", "vi"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(_png_with_bad_text_chunk(_image((16, 20))))
    result = _fuse(tmp_path, weights)
    assert result.exit_code == 0, result.output
    raw = capfd.readouterr().err  # what reached the process's stderr, C libraries included
    assert "libpng warning" not in raw
    assert "a.png was read, but its decoder reports: libpng warning: tEXt: CRC error" in (
        result.output
    )


def test_slow_runs_report_seconds_per_pair(tmp_path, weights, monkeypatch):
    from occo.models.fuser import FileFuser

    for name in ("ir", "vi"):
        write_image_atomic(tmp_path / name / "a.png", _image((16, 20)))
    run = FileFuser.run

    def slow_run(self, jobs):  # as if the pair had taken 250 s
        yield from run(self, jobs)
        self.stats.wall_s = 250.0

    monkeypatch.setattr(FileFuser, "run", slow_run)
    result = _fuse(tmp_path, weights)
    assert result.exit_code == 0, result.output
    assert "0.004 pairs/s" in result.output and "0.00 pairs/s" not in result.output


def test_tiles_on_a_too_thin_image_give_the_minimum_size_message(tmp_path, weights):
    for name in ("ir", "vi"):
        write_image_atomic(tmp_path / name / "thin.png", _image((1, 300)))
    result = _fuse(tmp_path, weights, "--tile", "16")
    assert result.exit_code == 1
    assert "too small: FIFN needs at least 8 pixels per side" in result.output


def test_convert_says_when_a_file_is_already_occo_format(tmp_path, weights):
    again = runner.invoke(app, ["convert", str(weights), str(tmp_path / "x.safetensors")])
    assert isinstance(again.exception, OccoError), again.output
    assert "already an occo weight file" in str(again.exception)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"format": "occo-train-checkpoint", "model": FIFN(TINY_FIFN).state_dict()},
               checkpoint)  # fmt: skip
    trained = runner.invoke(app, ["convert", str(checkpoint), str(tmp_path / "y.safetensors")])
    assert isinstance(trained.exception, OccoError), trained.output
    assert "training checkpoint" in str(trained.exception)
    assert "last.safetensors" in str(trained.exception)
