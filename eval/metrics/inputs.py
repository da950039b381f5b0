"""The three gray images a metric looks at, and the exact sums and histograms metrics share.

Every metric of the toolkit works on 8-bit gray images. Sums of pixel values and of
their products are integers; they are computed exactly (int64) so that CC, SCD, SD, SF
and MSE carry a single rounding at the very end.

Speed note: nothing here allocates whole-image float arrays. Large temporaries are
page-faulted in by the kernel on every call (glibc returns big blocks to the system),
which costs more than the arithmetic; histograms come from OpenCV and integer sums
from ``einsum`` with an int64 accumulator, both streaming over the uint8 images.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from occo.data.color import toolkit_gray
from occo.data.errors import OccoError

_LEVELS = np.arange(256, dtype=np.int64)
_LEVELS_SQ = _LEVELS * _LEVELS
# MATLAB rgb2gray weights, as data.color.toolkit_gray uses them.
_W_R, _W_G, _W_B = 0.298936021293775, 0.587043074451121, 0.114020904255103
# OpenCV histograms count in float32: exact below 2**24 per bin, so chunk larger images.
_HIST_CHUNK_PIXELS = 1 << 23

#: Pixels per strip for strip-wise work: a few hundred KB per float64 temporary.
STRIP_PIXELS = 48 * 1024


class MetricInputError(OccoError, ValueError):
    """Images that cannot be scored together (sizes differ, wrong type, sources missing)."""


def strips(rows: int, width: int, pixels: int = STRIP_PIXELS) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of about ``pixels`` pixels covering ``rows`` rows."""
    step = max(8, pixels // max(width, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def _rgb8_to_gray(image: np.ndarray) -> np.ndarray:
    """``toolkit_gray`` for uint8 RGB: the same float64 operations in the same order, faster.

    Gray content stored as RGB (common in fusion datasets) returns the channel itself:
    the weights sum to 1 and every level rounds back to itself.
    """
    r, g, b = cv2.split(image)
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r
    gray = r.astype(np.float64)
    gray *= _W_R
    term = g.astype(np.float64)
    term *= _W_G
    gray += term
    np.multiply(b, _W_B, out=term)
    gray += term
    gray += 0.5  # MATLAB rounds half away from zero; values are non-negative
    np.floor(gray, out=gray)
    return gray.astype(np.uint8)


def to_gray_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Gray uint8 as the toolkit sees an image: MATLAB ``rgb2gray``, 16-bit scaled by 1/257.

    Same values as ``data.color.toolkit_gray``.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` RGB, uint8 or uint16 (as ``data.io.read_image``
            returns it).
        name: what to call the image in error messages.

    Returns:
        ``(H, W)`` uint8, C-contiguous.
    """
    if not isinstance(image, np.ndarray):
        raise MetricInputError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise MetricInputError(f"{name}: expected uint8 or uint16 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise MetricInputError(f"{name}: expected (H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise MetricInputError(f"{name}: image is empty, shape {image.shape}")
    if image.ndim == 3 and image.dtype == np.uint8:
        return _rgb8_to_gray(np.ascontiguousarray(image))
    return np.ascontiguousarray(toolkit_gray(image))


def histogram(images: list[np.ndarray]) -> np.ndarray:
    """Exact joint histogram of one or two uint8 images with 256 bins per image.

    Args:
        images: one ``(H, W)`` uint8 image, or two of the same shape.

    Returns:
        int64 counts, ``(256,)`` or ``(256, 256)`` indexed ``[first, second]``.
    """
    channels = list(range(len(images)))
    shape = (256,) * len(images)
    counts = np.zeros(shape, dtype=np.int64)
    height, width = images[0].shape
    rows = max(1, _HIST_CHUNK_PIXELS // width)
    # Columns are chunked too for very long rows (a region's pixels gathered into one row).
    cols = min(width, _HIST_CHUNK_PIXELS)
    for start in range(0, height, rows):
        for left in range(0, width, cols):
            chunk = [
                np.ascontiguousarray(im[start : start + rows, left : left + cols]) for im in images
            ]
            part = cv2.calcHist(chunk, channels, None, list(shape), [0, 256] * len(images))
            counts += part.reshape(shape).astype(np.int64)
    return counts


def product_sum(x: np.ndarray, y: np.ndarray) -> int:
    """Exact ``sum(x * y)`` of two uint8 arrays (views allowed), with an int64 accumulator."""
    return int(np.einsum("ij,ij->", x, y, dtype=np.int64))


class GrayInputs:
    """Fused image F and optional sources A (infrared), B (visible), all gray uint8.

    Histograms and exact sums are computed on first use and shared by all metrics of
    one call.

    Args:
        fused: ``(H, W)`` uint8.
        ir: ``(H, W)`` uint8 or None.
        vi: ``(H, W)`` uint8 or None.
    """

    def __init__(
        self, fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None
    ):
        if (ir is None) != (vi is None):
            raise MetricInputError("give both source images (infrared and visible) or neither")
        for name, image in (("fused", fused), ("infrared", ir), ("visible", vi)):
            if image is not None and (image.dtype != np.uint8 or image.ndim != 2):
                raise MetricInputError(f"{name}: expected a 2-D uint8 gray image")
        if ir is not None:
            for name, image in (("infrared", ir), ("visible", vi)):
                if image.shape != fused.shape:
                    raise MetricInputError(
                        f"size mismatch: fused image is {fused.shape[1]}x{fused.shape[0]}, "
                        f"{name} source is {image.shape[1]}x{image.shape[0]}"
                    )
        self.f8 = np.ascontiguousarray(fused)
        self.a8 = None if ir is None else np.ascontiguousarray(ir)
        self.b8 = None if vi is None else np.ascontiguousarray(vi)
        self.n = int(fused.size)
        self._hist: dict[str, np.ndarray] = {}
        self._cross: dict[tuple[str, str], int] = {}

    @property
    def has_sources(self) -> bool:
        return self.a8 is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.f8.shape

    def u8(self, key: str) -> np.ndarray:
        """The uint8 image ``"f"``, ``"a"`` or ``"b"``."""
        return {"f": self.f8, "a": self.a8, "b": self.b8}[key]

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of image ``key`` as float64 (0-255)."""
        return self.u8(key)[start:stop].astype(np.float64)

    def hist(self, key: str) -> np.ndarray:
        """256-bin histogram (int64) of image ``key``."""
        if key not in self._hist:
            self._hist[key] = histogram([self.u8(key)])
        return self._hist[key]

    def total(self, key: str) -> int:
        """Exact sum of the pixel values of image ``key``."""
        return int(self.hist(key) @ _LEVELS)

    def total_sq(self, key: str) -> int:
        """Exact sum of the squared pixel values of image ``key``."""
        return int(self.hist(key) @ _LEVELS_SQ)

    def cross(self, x: str, y: str) -> int:
        """Exact sum of ``x * y`` over pixels for two different images (e.g. ``"a", "f"``)."""
        key = tuple(sorted((x, y)))
        if key not in self._cross:
            self._cross[key] = product_sum(self.u8(x), self.u8(y))
        return self._cross[key]
