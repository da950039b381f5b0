"""The three gray images a metric looks at, with the sums and arrays metrics share.

Every metric of the toolkit works on 8-bit gray images. Sums of pixel values and of
their products are integers; they are computed exactly (histograms for squares, float64
dot products whose terms and partial sums are integers below 2**53) so that CC, SCD, SD
and MSE carry a single rounding at the very end.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from data.color import toolkit_gray
from data.errors import OccoError

_LEVELS = np.arange(256, dtype=np.int64)


class MetricInputError(OccoError, ValueError):
    """Images that cannot be scored together (sizes differ, wrong type, sources missing)."""


def to_gray_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Gray uint8 as the toolkit sees an image: MATLAB ``rgb2gray``, 16-bit scaled by 1/257.

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
        first = image[:, :, 0]
        # Gray content stored as RGB (common in fusion datasets): rgb2gray returns the
        # channel itself (the weights sum to 1 and every level rounds back to itself),
        # so skip the float conversion.
        if np.array_equal(first, image[:, :, 1]) and np.array_equal(first, image[:, :, 2]):
            return np.ascontiguousarray(first)
    return np.ascontiguousarray(toolkit_gray(image))


class GrayInputs:
    """Fused image F and optional sources A (infrared), B (visible), all gray uint8.

    Derived quantities (float64 copies, histograms, exact sums) are computed on first use
    and shared by all metrics of one call.

    Args:
        fused: ``(H, W)`` uint8.
        ir: ``(H, W)`` uint8 or None.
        vi: ``(H, W)`` uint8 or None.
    """

    def __init__(self, fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None):
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
        self.f8 = fused
        self.a8 = ir
        self.b8 = vi
        self.n = int(fused.size)
        self._cross: dict[tuple[str, str], int] = {}

    @property
    def has_sources(self) -> bool:
        return self.a8 is not None

    def u8(self, key: str) -> np.ndarray:
        """The uint8 image ``"f"``, ``"a"`` or ``"b"``."""
        return {"f": self.f8, "a": self.a8, "b": self.b8}[key]

    @cached_property
    def f(self) -> np.ndarray:
        return self.f8.astype(np.float64)  # (H, W)

    @cached_property
    def a(self) -> np.ndarray:
        return self.a8.astype(np.float64)  # (H, W)

    @cached_property
    def b(self) -> np.ndarray:
        return self.b8.astype(np.float64)  # (H, W)

    def f64(self, key: str) -> np.ndarray:
        """The float64 copy of image ``"f"``, ``"a"`` or ``"b"``."""
        return {"f": self.f, "a": self.a, "b": self.b}[key]

    def hist(self, key: str) -> np.ndarray:
        """256-bin histogram (int64) of image ``key``, cached."""
        attr = f"_hist_{key}"
        if not hasattr(self, attr):
            setattr(self, attr, np.bincount(self.u8(key).ravel(), minlength=256).astype(np.int64))
        return getattr(self, attr)

    def total(self, key: str) -> int:
        """Exact sum of the pixel values of image ``key``."""
        return int(self.hist(key) @ _LEVELS)

    def total_sq(self, key: str) -> int:
        """Exact sum of the squared pixel values of image ``key``."""
        return int(self.hist(key) @ (_LEVELS * _LEVELS))

    def cross(self, x: str, y: str) -> int:
        """Exact sum of ``x * y`` over pixels for two different images (e.g. ``"a", "f"``)."""
        key = tuple(sorted((x, y)))
        if key not in self._cross:
            # Every product is an integer <= 65025 and every partial sum stays below 2**53
            # (images up to 1.3e11 pixels), so the float64 dot product is exact in any order.
            # einsum rather than np.dot: no BLAS threads inside worker processes.
            value = float(np.einsum("i,i->", self.f64(x).ravel(), self.f64(y).ravel()))
            self._cross[key] = int(value)
        return self._cross[key]
