"""Reading and writing images: 8/16-bit, gray, RGB, RGBA and palette; atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from occo.data.errors import OccoError


class ImageReadError(OccoError, ValueError):
    """An image file could not be decoded."""


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
        raise FileNotFoundError(f"image not found: {path}")
    # imdecode instead of imread: works with non-ASCII paths on every platform.
    buffer = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ImageReadError(f"cannot read image {path}: not a valid image file")
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
