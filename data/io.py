"""Reading and writing images: 8/16-bit, gray, RGB, RGBA and palette; atomic writes."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError, OccoWarning
from occo.data.outputs import OutputError, write_error


class ImageReadError(OccoError, ValueError):
    """An image file could not be decoded."""


class ImageDecodeWarning(OccoWarning):
    """The decoder (libpng, libjpeg, libtiff) complained about a file it still read.

    Args:
        path: the file.
        complaint: what the decoder printed (the warning's ``key``: files with the same
            complaint, often a whole dataset's, are worth one mention, not one each).
    """

    def __init__(self, path: str | Path, complaint: str) -> None:
        super().__init__(f"{path} was read, but its decoder reports: {complaint}")
        self.path, self.key = str(path), complaint

    def __reduce__(self):  # pickled from worker processes: rebuilt from both arguments
        return type(self), (self.path, self.key)


# The C decoders print their complaints on file descriptor 2, outside Python: while an
# image decodes, descriptor 2 points at a temporary file, one decode at a time (the
# descriptor is process-wide), so each complaint is known to belong to its file.
_NATIVE_STDERR_LOCK = threading.Lock()
_DECODER_PREFIXES = ("libpng ", "Corrupt JPEG", "Premature end of JPEG", "Warning:", "JPEG ",
                     "Invalid SOS", "Bogus ", "TIFF", "[ WARN:", "[ERROR:")  # fmt: skip


@contextmanager
def _decoder_messages(sink: list[str]) -> Iterator[None]:
    """Collect what C libraries print on stderr inside the block; pass the rest on."""
    if os.name != "posix":
        yield
        return
    with _NATIVE_STDERR_LOCK, tempfile.TemporaryFile() as capture:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            others = []
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if line.startswith(_DECODER_PREFIXES):
                    sink.append(line.strip())
                else:
                    others.append(line)
            if others:  # another thread's output, caught in passing: hand it on unchanged
                os.write(2, "".join(others).encode())


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as stored, in RGB channel order.

    Palette images are expanded to RGB, alpha channels are dropped and gray+alpha becomes
    gray. The bit depth is kept: uint8 or uint16.

    Args:
        path: image file (png, jpg, jpeg, bmp, tif, tiff).

    Returns:
        ``(H, W)`` for gray or ``(H, W, 3)`` RGB, dtype uint8 or uint16.

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: the file is not a readable image of a supported kind.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise FileNotFoundError(
                f"{path} is a broken symbolic link (to {os.readlink(path)}); fix or remove the link"
            )
        raise FileNotFoundError(f"image not found: {path}")
    # imdecode instead of imread: works with non-ASCII paths on every platform.
    buffer = np.fromfile(str(path), dtype=np.uint8)
    complaints: list[str] = []
    with _decoder_messages(complaints):
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    said = "; ".join(complaints)
    if image is None:
        said = f" ({said})" if said else ""
        raise ImageReadError(f"cannot read image {path}: not a valid image file{said}")
    if complaints:
        warnings.warn(ImageDecodeWarning(path, said), stacklevel=2)
    if image.dtype not in (np.uint8, np.uint16):
        if image.dtype == np.float32 or image.dtype == np.float64:
            raise ImageReadError(
                f"cannot read image {path}: floating-point images are not supported"
            )
        raise ImageReadError(f"cannot read image {path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 2:  # gray + alpha
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageReadError(f"cannot read image {path}: {channels} channels")
    return np.ascontiguousarray(image)


def read_pair_at_ir_size(
    ir_path: str | Path, vi_path: str | Path, resize_vi: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair, the visible one resized to the infrared size when asked.

    For the commands that compare the two images pixel by pixel (check, align).

    Raises:
        ValueError: a file cannot be read, or the sizes differ without ``resize_vi`` (the
            message says to pass --resize-vi).
    """
    ir, vi = read_image(ir_path), read_image(vi_path)
    if ir.shape[:2] != vi.shape[:2]:
        if not resize_vi:
            raise ValueError(
                f"infrared {ir_path} is {ir.shape[1]}x{ir.shape[0]} but visible {vi_path} is "
                f"{vi.shape[1]}x{vi.shape[0]}; pass --resize-vi to compare them at the infrared size"
            )
        vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
    return ir, vi

def is_gray_content(image: np.ndarray) -> bool:
    """True for a 2-D image or an RGB image whose three channels are identical."""
    if image.ndim == 2:
        return True
    return bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    )


def write_image_atomic(
    path: str | Path, image: np.ndarray, text: Mapping[str, str] | None = None
) -> None:
    """Write an image so that ``path`` is either absent or complete, never half-written.

    Encodes to memory, writes a temporary file in the same folder and renames it.

    Args:
        path: destination; the extension picks the format.
        image: ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8 or uint16.
        text: PNG only: ``tEXt`` entries (Latin-1 keys of 1-79 characters) stored in the
            file, e.g. what made the image (read back with :func:`read_png_text`).
    """
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"cannot encode image for {path}")
    payload = encoded.tobytes()
    if text:
        payload = add_png_text(payload, text)
    write_bytes_atomic(path, payload)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def add_png_text(png: bytes, text: Mapping[str, str]) -> bytes:
    """Insert ``tEXt`` chunks right after a PNG's header chunk (before the pixels).

    Args:
        png: an encoded PNG.
        text: key -> value; values are stored as UTF-8 JSON-safe text.

    Returns:
        The PNG with the entries.
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG: text entries need the PNG format")
    header_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    chunks = b"".join(
        _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("utf-8"))
        for key, value in text.items()
    )
    return png[:header_end] + chunks + png[header_end:]


def read_png_text(path: str | Path) -> dict[str, str]:
    """The ``tEXt`` entries of a PNG file (those before its pixel data).

    Args:
        path: any file; a file that is not a PNG has no entries.

    Returns:
        key -> value; empty when there are none or the file is not a PNG.
    """
    entries: dict[str, str] = {}
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                return entries
            while header := handle.read(8):
                if len(header) < 8:
                    break
                length, kind = struct.unpack(">I", header[:4])[0], header[4:]
                if kind in (b"IDAT", b"IEND") or length > 1 << 24:
                    break
                data = handle.read(length)
                handle.read(4)  # CRC
                if kind == b"tEXt" and b"\0" in data:
                    key, value = data.split(b"\0", 1)
                    entries[key.decode("latin-1")] = value.decode("utf-8", "replace")
    except OSError:
        return {}
    return entries


class OutputAppearedError(OutputError, FileExistsError):
    """The destination appeared while occo was writing it (another program made it)."""


#: Errors of the destination (not of the data): turned into one line naming the file.
_WRITE_ERRNOS = frozenset(
    c for c in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EFBIG) if c
)


def publish_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; without ``overwrite`` never replace a file made meanwhile."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        raise OutputAppearedError(
            f"{path} appeared while occo was writing it (another program made it) and was left "
            "as it is; pass --overwrite to replace it, or choose another name"
        ) from None
    except OSError:  # no hard links here (FAT, some network file systems): check, then rename
        if os.path.lexists(path):
            raise OutputAppearedError(
                f"{path} appeared while occo was writing it and was left as it is; pass "
                "--overwrite to replace it, or choose another name"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(
    path: str | Path, tmp_dir: str | Path | None = None, overwrite: bool = True
) -> Iterator[Path]:
    """A temporary file that becomes ``path`` only when the ``with`` block succeeds.

    The one way occo writes a file: the content goes to a hidden temporary file
    (``.NAME.*.tmp``) in the same folder, is flushed to disk and renamed over ``path``;
    ``path`` is always either its old self or complete, never half-written. On any error
    the temporary file is removed; a full or read-only disk (met here or by the block's
    writes) becomes a :class:`~occo.data.outputs.WriteError` that names ``path``.

    Args:
        path: destination.
        tmp_dir: folder for the temporary file (same file system as ``path``; default its
            folder).
        overwrite: replace a file at ``path``; False: the final re-check: a file that
            appeared at ``path`` meanwhile is kept and :class:`OutputAppearedError` raised.

    Yields:
        The temporary file's path (created empty) to write to.
    """
    path = Path(path)
    folder = Path(tmp_dir) if tmp_dir is not None else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise write_error(exc, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as handle:  # durable before it becomes visible
                os.fsync(handle.fileno())
            # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            publish_file(tmp, path, overwrite)
        except OutputError:
            raise
        except OSError as exc:  # our own steps: every system error is about the destination
            raise write_error(exc, path) from None
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OccoError):
            if exc.errno in _WRITE_ERRNOS:  # the block's writes met a full or read-only disk
                raise write_error(exc, path) from None
            if exc.errno is None and _nearly_full(folder):  # h5py's errors carry no errno
                full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise write_error(full, path) from None
        raise


def _nearly_full(folder: Path) -> bool:
    """Less than 1 MiB free where ``folder`` is (a write there has likely met a full disk)."""
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def write_bytes_atomic(path: str | Path, payload: bytes, overwrite: bool = True) -> None:
    """Write bytes to ``path`` atomically (see :func:`atomic_path`, also for ``overwrite``)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(payload)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content (streamed: VGG19 checkpoints are 0.5 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FolderBusyError(OccoError, RuntimeError):
    """Another occo process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | Path, what: str = "occo") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    Two runs writing into one folder would race (the last writer wins, manifests
    included); the second is refused at once instead. The lock is the folder's own
    (``flock`` on its descriptor): nothing is left behind, and it ends with the process.
    Where the platform has no ``flock``, nothing is locked.

    Args:
        folder: the output folder.
        what: the command, for the message (e.g. ``"occo fuse"``).

    Raises:
        FolderBusyError: another process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{folder} is busy: another {what} is writing into it; wait for it to finish "
                "or choose another output folder"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


#: The lock file :func:`output_lock` keeps beside an output while it is written.
LOCK_SUFFIX = ".occo-lock"


def lock_file_for(path: str | Path) -> Path:
    """The lock file of the output ``path``: ``.NAME.occo-lock`` beside it (hidden)."""
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


@contextmanager
def output_lock(path: str | Path, what: str = "occo") -> Iterator[None]:
    """Hold an exclusive lock on the output file ``path`` for the ``with`` block.

    Two runs writing one file (a video, a CSV, an ONNX model) would race: both check that
    it is free at the start and rename at the end, so the last writer wins. The lock (a
    ``flock`` on the hidden file ``.NAME.occo-lock`` beside ``path``, removed when the block
    ends) refuses the second at once; take it before checking whether ``path`` exists.
    The lock ends with the process, so a killed run leaves at most an unlocked, empty file.
    Where the platform has no ``flock``, nothing is locked.

    Args:
        path: the output file (its folder is created if missing).
        what: the command, for the message (e.g. ``"occo metrics"``).

    Raises:
        FolderBusyError: another process holds the lock.
        WriteError: the lock file cannot be made (read-only or full disk).
    """
    path = Path(path)
    lock = lock_file_for(path)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    busy = FolderBusyError(
        f"{path} is busy: another {what} is writing it; wait for it to finish or choose "
        "another name"
    )
    for _ in range(20):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        try:  # the last holder removes the file: a lock on a removed file locks nothing
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise busy
    try:
        yield
    finally:
        try:
            lock.unlink()  # while still held: an opener of the old file retries
        except OSError:
            pass
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files that an interrupted :func:`atomic_path` left in ``folder``.

    Only call this while holding :func:`folder_lock`: the temporaries of a live writer
    look the same.

    Returns:
        How many were removed.
    """
    removed = 0
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file() and _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


#: The names :func:`atomic_path` gives its temporaries: ``.NAME.<8 random chars>.tmp``.
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file, from its header when possible (no full decode).

    Args:
        path: image file.

    Returns:
        Height and width in pixels.

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:  # Pillow (a torchvision dependency) reads sizes from headers, ~100x faster than decoding
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except Exception:  # no Pillow, or a format it does not know: decode instead
        return tuple(read_image(path).shape[:2])  # type: ignore[return-value]
