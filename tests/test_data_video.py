"""Video streams: pairing by timestamp, reading and atomic writing, `occo fuse` on videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.io import write_image_atomic
from occo.data.video import (
    FramePairer,
    FrameSource,
    VideoReader,
    VideoSink,
    open_frames,
)
from occo.models.checkpoint import save_weights
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN


class _Frames(FrameSource):
    """In-memory frames whose pixel value is their index."""

    def __init__(self, count: int, fps: float) -> None:
        self.name, self.fps, self.count, self._next = "memory", fps, count, 0

    def read(self):
        if self._next >= self.count:
            return None
        self._next += 1
        return np.full((2, 2), self._next - 1, np.uint8)


def _pair(ir: _Frames, vi: _Frames, fps: float, **kwargs):
    pairer = FramePairer(ir, vi, fps=fps, **kwargs)
    expected = pairer.expected_frames()
    indices = [(int(i[0, 0]), int(v[0, 0])) for _, i, v in pairer]
    assert len(indices) == expected == pairer.stats.frames
    return indices, pairer.stats


def test_pairing_same_rate_is_frame_by_frame():
    indices, stats = _pair(_Frames(5, 10), _Frames(5, 10), 10)
    assert indices == [(k, k) for k in range(5)]
    for use in (stats.ir, stats.vi):
        assert (use.used, use.repeated, use.dropped, use.unused_at_end) == (5, 0, 0, 0)


def test_pairing_by_timestamp_repeats_and_drops():
    # Infrared at half the visible rate (repeated), visible at the output rate.
    indices, stats = _pair(_Frames(4, 5), _Frames(10, 10), 10)
    assert indices == [(k // 2, k) for k in range(8)]  # the infrared ends at 0.8 s
    assert (stats.ir.used, stats.ir.repeated, stats.ir.unused_at_end) == (4, 4, 0)
    assert (stats.vi.used, stats.vi.unused_at_end) == (8, 2)
    # Infrared at twice the output rate: every other frame dropped.
    indices, stats = _pair(_Frames(20, 20), _Frames(10, 10), 10)
    assert indices == [(2 * k, k) for k in range(10)]
    assert (stats.ir.used, stats.ir.dropped, stats.ir.unused_at_end) == (10, 9, 1)


def test_pairing_start_and_frames():
    indices, stats = _pair(_Frames(30, 10), _Frames(60, 20), 20, start=0.5, frames=6)
    assert indices == [(5 + k // 2, 10 + k) for k in range(6)]
    assert (stats.ir.skipped, stats.vi.skipped) == (5, 10)
    assert stats.vi.unused_at_end == 60 - 16


def _write_video(path, frames, fps):
    sink = VideoSink(path, fps)
    for frame in frames:
        sink.write(frame)
    return sink


def _colour_frames(n, height, width, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 2 * k, axis=1) for k in range(n)]


def _read_all(path):
    with VideoReader(path) as reader:
        frames = []
        while (frame := reader.read()) is not None:
            frames.append(frame)
        return reader.fps, frames


def test_video_sink_writes_atomically_and_crops_odd_sizes(tmp_path):
    path = tmp_path / "clip.mp4"
    sink = _write_video(path, _colour_frames(5, 21, 33), fps=12)
    assert not path.exists()  # only the temporary file so far
    assert sink.commit() == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    fps, frames = _read_all(path)
    assert fps == pytest.approx(12) and len(frames) == 5
    assert frames[0].shape == (20, 32, 3) and sink.size == (32, 20)  # even sizes only


def test_video_sink_abort_keeps_a_partial_and_leaves_the_target(tmp_path):
    path = tmp_path / "clip.avi"
    path.write_bytes(b"an older video")
    sink = _write_video(path, _colour_frames(3, 16, 24), fps=5)
    partial = sink.abort(keep_partial=True)
    assert partial == tmp_path / "clip.partial.avi" and path.read_bytes() == b"an older video"
    assert len(_read_all(partial)[1]) == 3
    sink = _write_video(path, _colour_frames(2, 16, 24), fps=5)
    sink.commit()  # a complete run replaces the target and drops the stale partial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_frame_folder_order_and_depth(tmp_path):
    for k in (10, 2, 1):
        write_image_atomic(tmp_path / f"frame_{k}.png", np.full((8, 8), 1000 * k, np.uint16))
    source = open_frames(tmp_path, fps=4)
    assert (source.fps, source.count) == (4, 3)
    frames = [source.read() for _ in range(3)]
    assert [int(f[0, 0]) for f in frames] == [1000, 2000, 10000]  # numeric order, 16-bit kept
    assert source.read() is None


# --- occo fuse on videos ------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, FIFN(TINY_FIFN).eval(), metadata={"source": "test"})
    return path


def _gray_frames(n, height, width):
    return [f[..., 0] for f in _colour_frames(n, height, width, seed=1)]


def _fuse(*args):
    return CliRunner().invoke(
        app, ["fuse", *map(str, args), "--device", "cpu", "--batch-size", "3"]
    )


def test_fuse_videos(tmp_path, weights):
    _write_video(tmp_path / "ir.mp4", _gray_frames(7, 32, 48), fps=10).commit()
    _write_video(tmp_path / "vi.mp4", _colour_frames(7, 32, 48), fps=10).commit()
    out = tmp_path / "fused" / "out.mp4"
    result = _fuse(tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights)
    assert result.exit_code == 0, result.output
    fps, frames = _read_all(out)
    assert fps == pytest.approx(10) and len(frames) == 7
    assert frames[0].shape == (32, 48, 3)
    spread = np.abs(frames[3].astype(int) - frames[3][..., :1]).max()  # channels differ
    assert spread > 20, "the visible colour is lost"
    record = json.loads((out.parent / "out.mp4.occo-fuse.json").read_text())
    assert record["kind"] == "video" and record["pairs"] == 7
    assert record["video"]["output"] == {"width": 48, "height": 32, "fps": 10.0, "codec": "mp4v"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4", "out.mp4.occo-fuse.json"]
    again = _fuse(tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights)
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_fuse_videos_of_different_rates_and_lengths(tmp_path, weights):
    _write_video(tmp_path / "ir.avi", _gray_frames(4, 32, 48), fps=5).commit()  # 0.8 s
    _write_video(tmp_path / "vi.avi", _colour_frames(10, 32, 48), fps=10).commit()  # 1.0 s
    out = tmp_path / "out.avi"
    result = _fuse(tmp_path / "ir.avi", tmp_path / "vi.avi", out, "--weights", weights)
    assert result.exit_code == 0, result.output
    assert "4 repeated" in result.output and "2 after the end unused" in result.output
    assert len(_read_all(out)[1]) == 8
    pairing = json.loads((tmp_path / "out.avi.occo-fuse.json").read_text())["pairing"]
    assert (pairing["ir"]["used"], pairing["ir"]["repeated"]) == (4, 4)


def test_fuse_videos_of_different_sizes(tmp_path, weights):
    _write_video(tmp_path / "ir.mp4", _gray_frames(3, 32, 48), fps=10).commit()
    _write_video(tmp_path / "vi.mp4", _colour_frames(3, 64, 96), fps=10).commit()
    out = tmp_path / "out.mp4"
    result = _fuse(tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights)
    assert result.exit_code == 1 and "--resize-vi" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir.mp4", "vi.mp4"]  # nothing left
    result = _fuse(
        tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights, "--resize-vi"
    )
    assert result.exit_code == 0, result.output
    assert _read_all(out)[1][0].shape == (32, 48, 3)  # the infrared size


def test_fuse_frame_folders_into_a_video(tmp_path, weights):
    for k, (ir, vi) in enumerate(
        zip(_gray_frames(5, 24, 40), _colour_frames(5, 24, 40), strict=True)
    ):
        write_image_atomic(tmp_path / "ir" / f"{k:04d}.png", ir)
        write_image_atomic(tmp_path / "vi" / f"{k:04d}.jpg", vi)
    out = tmp_path / "out.mkv"
    result = _fuse(
        tmp_path / "ir", tmp_path / "vi", out, "--weights", weights, "--fps", "6", "--frames", "4"
    )
    assert result.exit_code == 0, result.output
    fps, frames = _read_all(out)
    assert fps == pytest.approx(6) and len(frames) == 4


def test_interrupted_video_keeps_what_was_written(tmp_path, weights, monkeypatch):
    from occo.models.video_fuser import VideoFuser

    _write_video(tmp_path / "ir.mp4", _gray_frames(9, 32, 48), fps=10).commit()
    _write_video(tmp_path / "vi.mp4", _colour_frames(9, 32, 48), fps=10).commit()
    fuse_batch = VideoFuser._fuse

    def interrupted(self, batch, first):
        if first >= 3:  # the second batch of three
            raise KeyboardInterrupt
        return fuse_batch(self, batch, first)

    monkeypatch.setattr(VideoFuser, "_fuse", interrupted)
    out = tmp_path / "out.mp4"
    result = _fuse(tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights)
    assert result.exit_code == 130
    assert "interrupted: 3 fused frames kept in" in result.output
    assert not out.exists() and len(_read_all(tmp_path / "out.partial.mp4")[1]) == 3
    monkeypatch.setattr(VideoFuser, "_fuse", fuse_batch)
    result = _fuse(tmp_path / "ir.mp4", tmp_path / "vi.mp4", out, "--weights", weights)
    assert result.exit_code == 0 and len(_read_all(out)[1]) == 9
    assert not (tmp_path / "out.partial.mp4").exists()
