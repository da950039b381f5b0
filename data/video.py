"""Video streams: reading videos and folders of numbered frames, pairing two streams by
timestamp, and writing a video atomically.

Frames are RGB (or gray) numpy arrays as :func:`occo.data.io.read_image` returns them.
Reading and writing go through OpenCV's FFmpeg backend.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError
from occo.data.io import output_lock, publish_file, read_image
from occo.data.outputs import check_writable_folder, write_error
from occo.data.pairing import IMAGE_EXTENSIONS

#: Containers read as videos (anything FFmpeg decodes; these are recognised by name).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
#: Containers occo writes, and the codec (FourCC) each gets: codecs OpenCV's bundled
#: FFmpeg can encode everywhere (H.264 often cannot be). FFV1 in .mkv is lossless.
WRITE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}
#: Frame rate of a folder of frames when none is given.
DEFAULT_FOLDER_FPS = 25.0
# Timestamps are products of float rates: tolerate rounding when placing frames.
_EPS = 1e-6


class VideoError(OccoError, ValueError):
    """A video or frame folder that cannot be read or written; the message says which."""


def is_video_path(path: str | Path) -> bool:
    """Whether ``path`` names a video file by its extension (it need not exist)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# --- reading ------------------------------------------------------------------------------


class FrameSource:
    """A stream of frames at a constant rate: a video file or a folder of numbered frames."""

    name: str
    """The path, for messages."""
    fps: float
    """Frames per second."""
    count: int | None
    """Frames in the stream, when known (a video's header can be wrong: a hint)."""

    def read(self) -> np.ndarray | None:
        """The next frame, (H, W) or (H, W, 3) RGB, uint8 (uint16 from 16-bit PNG/TIFF
        frames); None at the end."""
        raise NotImplementedError

    def skip(self, n: int) -> int:
        """Pass over ``n`` frames without decoding them where possible; returns how many."""
        return sum(1 for _ in range(n) if self.read() is not None)

    def close(self) -> None:
        """Release the stream."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoReader(FrameSource):
    """Frames of a video file, decoded by OpenCV's FFmpeg backend.

    Args:
        path: the video.
        fps: its frame rate when the file lacks one (some raw streams); None = the file's.

    Raises:
        FileNotFoundError: no such file.
        VideoError: not a video FFmpeg decodes, or no frame rate.
    """

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"video not found: {path}")
        self.name = str(path)
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise VideoError(f"cannot read video {path}: not a video OpenCV's FFmpeg can decode")
        rate = self._capture.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(rate) and rate > 0):
            if fps is None:
                raise VideoError(f"video {path} does not state its frame rate; pass --fps")
            rate = fps
        self.fps = float(rate)
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = count if count > 0 else None

    def read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok:
            return None
        if frame.ndim == 3 and frame.shape[2] == 3:
            return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return frame

    def skip(self, n: int) -> int:
        return sum(1 for _ in range(n) if self._capture.grab())  # demux+decode, no conversion

    def close(self) -> None:
        self._capture.release()


def _frame_number(path: Path) -> tuple[int, str]:
    """Sort key: the last number in the file stem (frame_2 before frame_10), then the name."""
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


class FrameFolder(FrameSource):
    """Image files of a folder, in the order of the number in their names, at ``fps``.

    Args:
        folder: a folder of numbered images (frame_0001.png, ...).
        fps: the rate they were taken at.

    Raises:
        NotADirectoryError: not a folder.
        VideoError: no images in it.
    """

    def __init__(self, folder: str | Path, fps: float = DEFAULT_FOLDER_FPS) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(f"not a folder of frames: {folder}")
        self.name = str(folder)
        self.files = sorted(
            (
                p
                for p in folder.iterdir()
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
            ),
            key=_frame_number,
        )
        if not self.files:
            raise VideoError(
                f"no images in {folder} (frames are read from {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.fps = float(fps)
        self.count = len(self.files)
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        return read_image(path)

    def skip(self, n: int) -> int:
        skipped = min(n, len(self.files) - self._next)
        self._next += skipped
        return skipped


def open_frames(path: str | Path, fps: float | None = None) -> FrameSource:
    """A video file or a folder of numbered frames as a :class:`FrameSource`.

    Args:
        path: video file or folder.
        fps: a folder's frame rate (default :data:`DEFAULT_FOLDER_FPS`); for a video file,
            used only when the file states none.
    """
    if Path(path).is_dir():
        return FrameFolder(path, fps or DEFAULT_FOLDER_FPS)
    return VideoReader(path, fps)


# --- pairing two streams by timestamp -----------------------------------------------------


@dataclass
class StreamUse:
    """How a stream's frames were used by a :class:`FramePairer`."""

    skipped: int = 0
    """Frames before the start time."""
    used: int = 0
    """Distinct frames fused."""
    repeated: int = 0
    """Extra uses of a frame (the stream is slower than the output)."""
    dropped: int = 0
    """Frames passed over between used ones (the stream is faster than the output)."""
    unused_at_end: int | None = 0
    """Frames after the last output frame (None: the stream's length is unknown)."""


@dataclass
class PairingStats:
    """Frame use of both streams."""

    ir: StreamUse = field(default_factory=StreamUse)
    """The infrared stream."""
    vi: StreamUse = field(default_factory=StreamUse)
    """The visible stream."""
    frames: int = 0
    """Output frames (pairs) produced."""


class _Cursor:
    """The frame of one stream on screen at a given time, read forward only."""

    def __init__(self, source: FrameSource, use: StreamUse) -> None:
        self.source, self.use = source, use
        self.index = -1  # of the frame held
        self.frame: np.ndarray | None = None
        self.ended = False
        self.tail = 0  # frames passed over when the stream ended
        self._undo: tuple[int, int, int] | None = None  # (index, used, dropped) before a read

    def start_at(self, index: int) -> None:
        self.use.skipped = self.source.skip(index)
        self.index = self.use.skipped - 1
        self.ended = self.use.skipped < index

    def frame_at(self, index: int) -> np.ndarray | None:
        self._undo = None
        if index == self.index and self.frame is not None:
            self.use.repeated += 1
            return self.frame
        before = (self.index, self.use.used, self.use.dropped)
        gap = index - self.index - 1  # frames between the held one and the wanted one
        passed = self.source.skip(gap) if gap > 0 and not self.ended else 0
        frame = None if self.ended or passed < gap else self.source.read()
        if frame is None:  # the stream ended: what was passed over is its unused tail
            self.ended, self.tail = True, passed
            return None
        self.use.dropped += passed
        self.index, self.frame = index, frame
        self.use.used += 1
        self._undo = before
        return frame

    def unuse(self) -> None:
        """Take back the last frame given: the other stream ended, so it was not fused."""
        if self._undo is None:
            self.use.repeated -= 1
        else:  # it and the frames passed over to reach it count as unused at the end
            self.index, self.use.used, self.use.dropped = self._undo

    def finish(self) -> None:
        # From the stated length (a video's header is a hint): reading on would cost time.
        count = self.source.count
        if self.ended:
            self.use.unused_at_end = self.tail
        else:
            self.use.unused_at_end = None if count is None else max(0, count - self.index - 1)


class FramePairer:
    """Pairs of infrared and visible frames at the output's timestamps.

    Output frame k is at time ``start + k / fps``. Each stream contributes the frame on
    screen at that time (index ``floor(t * stream_fps)``), so a faster stream drops
    frames and a slower one repeats them; :attr:`stats` counts both. Pairing stops when
    either stream ends or after ``frames`` pairs. Memory: one frame per stream.

    Args:
        ir: the infrared stream.
        vi: the visible stream.
        fps: output frame rate.
        start: seconds to skip at the start of both streams.
        frames: most pairs to produce; None = until a stream ends.
    """

    def __init__(
        self,
        ir: FrameSource,
        vi: FrameSource,
        fps: float,
        start: float = 0.0,
        frames: int | None = None,
    ) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps}")
        if start < 0:
            raise ValueError(f"start must be >= 0 s, got {start}")
        self.ir, self.vi, self.fps, self.start, self.frames = ir, vi, fps, start, frames
        self.stats = PairingStats()

    def expected_frames(self) -> int | None:
        """Pairs to expect from the streams' stated lengths (None when unknown)."""
        ends = [s.count / s.fps for s in (self.ir, self.vi) if s.count is not None]
        if len(ends) < 2:
            return self.frames
        n = max(0, math.ceil((min(ends) - self.start) * self.fps - _EPS))
        return n if self.frames is None else min(n, self.frames)

    def _index(self, source: FrameSource, k: int) -> int:
        return math.floor((self.start + k / self.fps) * source.fps + _EPS)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yields (output frame index, infrared frame, visible frame)."""
        cursors = (_Cursor(self.ir, self.stats.ir), _Cursor(self.vi, self.stats.vi))
        for cursor in cursors:
            cursor.start_at(self._index(cursor.source, 0))
        k = 0
        while self.frames is None or k < self.frames:
            ir, vi = (c.frame_at(self._index(c.source, k)) for c in cursors)
            if ir is None or vi is None:
                for cursor, frame in zip(cursors, (ir, vi), strict=True):
                    if frame is not None:
                        cursor.unuse()
                break
            self.stats.frames = k + 1
            yield k, ir, vi
            k += 1
        for cursor in cursors:
            cursor.finish()


# --- writing ------------------------------------------------------------------------------


class VideoSink:
    """Writes frames into a temporary video beside ``path``; :meth:`commit` moves it in place.

    Most codecs store only even sizes: an odd frame width or height loses its last column
    or row (:attr:`size` is what is stored). The writer opens on the first frame. From
    construction to :meth:`commit` or :meth:`abort` the sink holds ``path``'s output lock
    (:func:`~occo.data.io.output_lock`): a second run writing the same video is refused at
    once, and the temporaries of killed runs are removed.

    Args:
        path: the video to make; its extension picks the codec (:data:`WRITE_CODECS`).
        fps: frame rate.
        overwrite: replace an existing ``path``; False: refuse one (checked holding the
            lock, and again before the rename); None: replace only a file that was there
            when the sink was made (the caller checked ``--overwrite`` before).

    Raises:
        VideoError: an extension occo cannot write, or ``path`` exists (``overwrite`` False).
        OutputError: the folder is not writable.
        FolderBusyError: another occo is writing ``path``.
    """

    def __init__(self, path: str | Path, fps: float, overwrite: bool | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_CODECS:
            raise VideoError(
                f"cannot write {self.path}: occo writes videos as {', '.join(WRITE_CODECS)}"
            )
        self.codec = WRITE_CODECS[suffix]
        self.fps = float(fps)
        # FFmpeg picks the container by extension: the temporary name keeps it.
        self.temporary = self.path.with_name(f".{self.path.stem}.occo-{os.getpid()}{suffix}")
        self.partial = self.path.with_name(f"{self.path.stem}.partial{suffix}")
        self.size: tuple[int, int] | None = None  # (W, H) stored
        self.input_size: tuple[int, int] | None = None  # (W, H) given
        self.written = 0
        self._writer: cv2.VideoWriter | None = None
        check_writable_folder(self.path.parent, "OUT")  # before the work, not after it
        self._lock = ExitStack()
        self._lock.enter_context(output_lock(self.path, "occo fuse"))
        try:
            if overwrite is False and os.path.lexists(self.path):
                raise VideoError(f"{self.path} exists; pass --overwrite to replace it")
            self._replace = bool(overwrite) or os.path.lexists(self.path)
            self.stale_removed = self._remove_stale()
        except BaseException:
            self._lock.close()
            raise

    def _remove_stale(self) -> int:
        """Delete the hidden temporaries of killed runs for this path (lock held)."""
        pattern = re.compile(
            re.escape(f".{self.path.stem}.occo-") + r"\d+" + re.escape(self.path.suffix)
        )
        removed = 0
        for candidate in self.path.parent.glob(f".{glob.escape(self.path.stem)}.occo-*"):
            if pattern.fullmatch(candidate.name) and candidate.is_file():
                candidate.unlink(missing_ok=True)
                removed += 1
        return removed

    def _cannot_open(self) -> VideoError:
        """Why the encoder did not open: the disk (full, read-only) or else the codec."""
        reason = _disk_problem(self.path.parent)
        if reason:
            return VideoError(f"cannot write {self.path}: {reason}")
        return VideoError(
            f"cannot write {self.path}: OpenCV's FFmpeg cannot encode {self.codec} here; "
            "try another container (.avi uses MJPG, .mkv lossless FFV1)"
        )

    def _open(self, width: int, height: int) -> None:
        self.input_size = (width, height)
        self.size = (width - width % 2, height - height % 2)
        if min(self.size) < 2:
            raise VideoError(f"cannot write {self.path}: frames of {width}x{height} are too small")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*self.codec)
        self._writer = cv2.VideoWriter(str(self.temporary), fourcc, self.fps, self.size)
        if not self._writer.isOpened():
            self._writer = None
            self.temporary.unlink(missing_ok=True)
            raise self._cannot_open()

    def write(self, frame: np.ndarray) -> None:
        """Append a frame: (H, W) gray or (H, W, 3) RGB, uint8, the size of the first."""
        height, width = frame.shape[:2]
        if self._writer is None:
            self._open(width, height)
        elif (width, height) != self.input_size:
            raise VideoError(
                f"frame {self.written} is {width}x{height}, the video's frames are "
                f"{self.input_size[0]}x{self.input_size[1]}"
            )
        frame = frame[: self.size[1], : self.size[0]]
        code = cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_RGB2BGR
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), code))
        self.written += 1

    def _release(self) -> bool:
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        return self.temporary.is_file()

    def _check_written(self) -> None:
        """The encoder reports no write error (FFmpeg drops what a full disk refuses): read
        the finished file back, every frame when the disk is (nearly) full."""
        capture = cv2.VideoCapture(str(self.temporary), cv2.CAP_FFMPEG)
        try:
            readable = capture.isOpened() and capture.grab()
            if readable and _free_bytes(self.path.parent) < _MIN_FREE:
                frames = 1
                while frames < self.written and capture.grab():
                    frames += 1
                readable = frames >= self.written
        finally:
            capture.release()
        if not readable:
            reason = _disk_problem(self.path.parent) or "the encoder wrote an unreadable video"
            raise VideoError(f"cannot write {self.path}: {reason}; {self.path} was not changed")

    def commit(self) -> Path:
        """Finish the video and move it to ``path``; drops a stale partial.

        Raises:
            VideoError: no frames, or the video could not be written (a full disk is named).
            OutputAppearedError: ``path`` appeared meanwhile and may not be replaced.
        """
        try:
            if self.written == 0 or not self._release():
                raise VideoError(f"no frames to write to {self.path}")
            self._check_written()
            try:
                publish_file(self.temporary, self.path, self._replace)
            except OSError as exc:
                if isinstance(exc, OccoError):
                    raise
                raise write_error(exc, self.path) from None
            self.partial.unlink(missing_ok=True)
        except BaseException:
            self.temporary.unlink(missing_ok=True)
            raise
        finally:
            self._lock.close()
        return self.path

    def abort(self, keep_partial: bool = False) -> Path | None:
        """Stop writing; ``path`` is left as it was.

        Args:
            keep_partial: keep the frames written so far as a playable ``STEM.partial.EXT``.

        Returns:
            The partial video, or None when nothing was kept.
        """
        try:
            finished = self._release()
            if finished and keep_partial and self.written:
                os.replace(self.temporary, self.partial)
                return self.partial
            self.temporary.unlink(missing_ok=True)
            return None
        finally:
            self._lock.close()


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62  # unknown: not a reason to blame the disk


def _disk_problem(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (full, read-only, denied), or None."""
    if _free_bytes(folder) < _MIN_FREE:
        return "the disk is full; free some space or choose another place"
    try:
        check_writable_folder(folder, "OUT")
    except OccoError as exc:
        return str(exc).removeprefix(f"OUT {folder} ")
    return None


#: Free bytes below which a failed video write is put down to a full disk.
_MIN_FREE = 1 << 20
