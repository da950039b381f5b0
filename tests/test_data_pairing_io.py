from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from occo.data import (
    ImageReadError,
    pair_images,
    read_image,
    rgb_to_ycbcr,
    toolkit_gray,
    write_image_atomic,
    ycbcr_to_rgb,
)
from occo.data.pairing import DuplicateStemError


def _touch_image(path, shape=(4, 5), dtype=np.uint8):
    cv2.imwrite(str(path), np.zeros(shape, dtype))


def test_pairing_by_stem_case_insensitive_extensions(tmp_path):
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    ir.mkdir(), vi.mkdir()
    _touch_image(ir / "a.PNG")
    _touch_image(vi / "a.jpg")
    _touch_image(ir / "b.png")
    _touch_image(vi / "c.bmp")
    (vi / "notes.txt").write_text("x")
    pairing = pair_images(ir, vi)
    assert pairing.stems == ["a"]
    assert [p.name for p in pairing.only_first] == ["b.png"]
    assert [p.name for p in pairing.only_second] == ["c.bmp"]


def test_pairing_rejects_duplicate_stems(tmp_path):
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    ir.mkdir(), vi.mkdir()
    _touch_image(ir / "a.png")
    _touch_image(ir / "a.bmp")
    with pytest.raises(DuplicateStemError, match="a.bmp"):
        pair_images(ir, vi)


def test_pairing_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        pair_images(tmp_path / "nope", tmp_path)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_16_bit_kept(tmp_path, ext):
    image = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    cv2.imwrite(str(tmp_path / f"x{ext}"), image)
    out = read_image(tmp_path / f"x{ext}")
    assert out.dtype == np.uint16 and np.array_equal(out, image)


def test_read_rgb_rgba_gray(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])
    assert np.array_equal(read_image(tmp_path / "c.png"), rgb)
    rgba = np.dstack([rgb[..., ::-1], np.full((6, 7), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    gray = rgb[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert np.array_equal(read_image(tmp_path / "g.png"), gray)


def test_read_palette_png(tmp_path):
    zlib = pytest.importorskip("zlib")
    import struct

    def chunk(kind, payload):
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    palette = bytes([255, 0, 0, 0, 255, 0])
    rows = b"".join(b"\x00" + bytes([0, 1, 1]) for _ in range(2))  # 3x2, indices 0 1 1
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", palette) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    (tmp_path / "p.png").write_bytes(png)
    out = read_image(tmp_path / "p.png")
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 255, 0]


def test_read_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_write_atomic_roundtrip(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_image_atomic(tmp_path / "o" / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "o" / "x.png"), rgb)
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["x.png"]


def test_toolkit_gray_matches_matlab_rounding():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [10, 200, 30], [1, 2, 3]]], np.uint8)
    expected = np.floor(
        0.298936021293775 * rgb[..., 0]
        + 0.587043074451121 * rgb[..., 1]
        + 0.114020904255103 * rgb[..., 2]
        + 0.5
    )
    assert toolkit_gray(rgb).tolist() == expected.astype(np.uint8).tolist()
    assert toolkit_gray(rgb)[0, 0] == 255
    gray16 = np.array([[0, 65535, 257 * 100]], np.uint16)
    assert toolkit_gray(gray16).tolist() == [[0, 255, 100]]


def test_ycbcr_round_trip_within_one_grey_level():
    rgb = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert (back - rgb).abs().max() * 255 < 1.0


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os

    from occo.data.io import write_bytes_atomic

    umask = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "x.bin", b"abc")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644
