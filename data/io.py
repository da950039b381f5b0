"""Reading and writing images: 8/16-bit, gray, RGB, RGBA and palette; atomic writes."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError, OccoWarning


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


def is_gray_content(image: np.ndarray) -> bool:
    """True for a 2-D image or an RGB image whose three channels are identical."""
    if image.ndim == 2:
        return True
    return bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    )


def write_image_atomic(path: str | Path, image: np.ndarray) -> None:
    """Write an image so that ``path`` is either absent or complete, never half-written.

    Encodes to memory, writes a temporary file in the same folder and renames it.

    Args:
        path: destination; the extension picks the format.
        image: ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8 or uint16.
    """
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"cannot encode image for {path}")
    write_bytes_atomic(path, encoded.tobytes())


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    """Write bytes to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
