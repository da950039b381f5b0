"""Is the infrared image registered to the visible one? A cross-modal displacement estimate.

Intensities do not compare across modalities (a warm road is bright in infrared and grey
in the visible image; edges may even flip polarity), but where one image has an edge the
other usually has one too, with the same orientation. So both images become *gradient
orientation fields*: each pixel's gradient as a unit complex number with its angle doubled
(``(gx + i gy)^2 / (|g|^2 + eps)``), which ignores contrast and polarity and fades to 0
on flat areas. Correlating two such fields (by FFT) peaks at their relative shift
(gradient orientation correlation; Tzimiropoulos et al., "Robust FFT-based scale-invariant
image registration with image gradients", IEEE TPAMI 2010).

The estimate is multi-scale and local: a coarse whole-image correlation finds a large
shift; then overlapping blocks each find their own (sub-pixel) shift around it, and a
similarity transform (shift, rotation, scale) is fitted to the blocks' shifts, robustly.
A block whose correlation peak is weak or disagrees with the others is left out; the
share of blocks that agree is the estimate's confidence. The displacement reported is the
largest distance a pixel moves under the fitted transform (at the image corners when
rotated or scaled), in pixels of the input images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: Default threshold (px) above which a pair counts as misaligned. At 10 px, synthetic
#: shifts of 12 px and more are found in nearly every pair, while the mild scale mismatch
#: of datasets published as registered (TNO, MSRS: 1-2 %, 5-10 px at 640x480 corners) is
#: mostly left alone; scripts/registration_table.py measures it.
DEFAULT_THRESHOLD_PX = 10.0
#: Side (px) the images are reduced to for the whole-image search.
COARSE_SIDE = 256
#: Side (px) the images are reduced to for the block estimates.
FINE_SIDE = 512
#: Blocks per axis (overlapping by half).
BLOCKS = 3
#: A block counts only if its correlation peak is at least this (normalised, 0..1).
MIN_PEAK = 0.05
#: A block agrees with the fit when its shift is within this many fine-scale px of it.
INLIER_PX = 3.0
#: Below this confidence (how much the estimate improves the images' agreement over no
#: displacement) the estimate is not trusted and the pair never flagged.
MIN_CONFIDENCE = 0.1
#: Least agreement (normalised correlation of the orientation fields under the fitted
#: transform) for the estimate to be believed: images sharing no structure (noise, a
#: flat image, another scene) reach 0.01-0.07 by chance, registered real pairs 0.2-0.6.
MIN_AGREEMENT = 0.1
#: Images smaller than this (px, either side) are too small to estimate.
MIN_SIDE = 16
#: Rotations (degrees) tried in the whole-image search.
ROTATIONS_DEG = (0.0, -4.0, 4.0, -8.0, 8.0)
#: A rotation is taken in the whole-image search only when its correlation peak is this
#: much higher than the unrotated one's.
ROTATION_MARGIN = 1.1
#: Rotation and scale are reported only when they agree this much better than a shift alone.
SIMILARITY_MARGIN = 1.02


@dataclass(frozen=True)
class Registration:
    """How far the infrared image is from the visible one."""

    displacement_px: float
    """Largest displacement of any pixel under the fitted transform, input pixels."""
    shift_px: tuple[float, float]
    """Translation (dx, dy) at the image centre: where a visible pixel is in the infrared."""
    rotation_deg: float
    """Rotation of the infrared against the visible image, degrees, counter-clockwise as
    displayed (OpenCV's ``getRotationMatrix2D`` convention)."""
    scale: float
    """Scale of the infrared against the visible image."""
    confidence: float
    """Share of the structured blocks whose shift agrees with the fit, 0..1."""
    blocks: int
    """Blocks with enough structure to measure."""
    agreement: float = 1.0
    """Normalised correlation of the two orientation fields under the fitted transform."""

    @property
    def reliable(self) -> bool:
        """Whether the images share enough structure, and enough blocks agree, to believe it."""
        return (
            self.confidence >= MIN_CONFIDENCE
            and self.blocks >= 3
            and self.agreement >= MIN_AGREEMENT
        )

    def misaligned(self, threshold_px: float = DEFAULT_THRESHOLD_PX) -> bool:
        """True when the estimate is reliable and moves some pixel more than the threshold."""
        return self.reliable and self.displacement_px > threshold_px

    def to_dict(self, threshold_px: float = DEFAULT_THRESHOLD_PX) -> dict:
        """JSON-ready values, rounded to what the estimate resolves, with the verdict."""
        record = {"misaligned": self.misaligned(threshold_px), **asdict(self)}
        record["displacement_px"] = round(self.displacement_px, 2)
        record["shift_px"] = [round(v, 2) for v in self.shift_px]
        record["rotation_deg"] = round(self.rotation_deg, 3)
        record["scale"] = round(self.scale, 4)
        record["confidence"] = round(self.confidence, 3)
        record["agreement"] = round(self.agreement, 3)
        record["reliable"] = self.reliable
        return record


def to_gray(image: np.ndarray) -> np.ndarray:
    """An image as read by ``data.io.read_image`` -> float32 gray, each image min-max scaled."""
    x = image.astype(np.float32)
    if x.ndim == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    lo, hi = (float(v) for v in np.percentile(x, (0.5, 99.5)))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def orientation_field(gray: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Doubled-angle unit gradient field, complex64: contrast- and polarity-invariant.

    Weak gradients (below the image's median gradient energy) fade towards 0, so flat
    areas and noise do not vote.
    """
    smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    energy = gx * gx + gy * gy
    eps = float(np.median(energy)) + 1e-9
    doubled = (gx * gx - gy * gy) + 1j * (2 * gx * gy)
    return (doubled / (energy + eps)).astype(np.complex64)


def _correlate(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Normalised real cross-correlation of two fields; index [dy, dx] (centred) = b(x + d)."""
    fa = np.fft.fft2(a * window)
    fb = np.fft.fft2(b * window)
    norm = np.sqrt(np.sum(np.abs(a * window) ** 2) * np.sum(np.abs(b * window) ** 2)) + 1e-12
    return np.fft.fftshift(np.fft.ifft2(np.conj(fa) * fb).real) / norm


def _peak(surface: np.ndarray, reach: int | None = None) -> tuple[float, float, float]:
    """(dx, dy, height) of the highest peak within ``reach`` of the centre, sub-pixel."""
    h, w = surface.shape
    cy, cx = h // 2, w // 2
    search = surface
    if reach is not None:
        search = np.full_like(surface, -np.inf)
        search[max(0, cy - reach) : cy + reach + 1, max(0, cx - reach) : cx + reach + 1] = surface[
            max(0, cy - reach) : cy + reach + 1, max(0, cx - reach) : cx + reach + 1
        ]
    py, px = np.unravel_index(int(np.argmax(search)), search.shape)
    value = float(surface[py, px])

    def vertex(left: float, mid: float, right: float) -> float:
        denom = left - 2 * mid + right
        return 0.0 if denom >= 0 else float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))

    fx = vertex(surface[py, px - 1], value, surface[py, px + 1]) if 0 < px < w - 1 else 0.0
    fy = vertex(surface[py - 1, px], value, surface[py + 1, px]) if 0 < py < h - 1 else 0.0
    return px - cx + fx, py - cy + fy, value


def _resize(gray: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = gray.shape
    factor = min(1.0, side / max(h, w))
    if factor < 1.0:
        gray = cv2.resize(
            gray, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA
        )
    return gray, factor


def _rotation(angle: float) -> np.ndarray:
    """2x2: a visible point (centred) -> the infrared, rotated ``angle`` degrees as displayed."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return np.array([[c, s], [-s, c]])


def _rotate(image: np.ndarray, angle: float, dx: float, dy: float) -> np.ndarray:
    """``image`` resampled at ``c + R(angle) (p - c + (dx, dy))`` (c: the centre)."""
    h, w = image.shape
    linear = _rotation(angle)
    centre = np.array([w / 2, h / 2])
    offset = centre + linear @ (np.array([dx, dy]) - centre)
    matrix = np.hstack([linear, offset[:, None]]).astype(np.float32)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


def _compose(rotation: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Similarity parameters (a, b, tx, ty) of ``p -> rotation @ ((I + [[a, -b], [b, a]]) p + t)``."""
    a, b, tx, ty = params
    linear = rotation @ np.array([[1 + a, -b], [b, 1 + a]])
    shift = rotation @ np.array([tx, ty])
    return np.array([linear[0, 0] - 1, linear[1, 0], shift[0], shift[1]])


def _fit_similarity(
    points: np.ndarray, shifts: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted, trimmed least squares of ``shift(p) = [[a, -b], [b, a]] p + t``.

    Returns the parameters (a, b, tx, ty) and a boolean mask of the agreeing blocks.
    """
    n = len(points)
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.column_stack([points[:, 0], -points[:, 1], np.ones(n), np.zeros(n)])
    rows[1::2] = np.column_stack([points[:, 1], points[:, 0], np.zeros(n), np.ones(n)])
    target = shifts.reshape(-1)
    inliers = np.ones(n, bool)
    params = np.zeros(4)
    for _ in range(4):
        w = np.repeat(weights * inliers, 2)
        if np.count_nonzero(inliers) < 3:
            break
        params = np.linalg.lstsq(rows * w[:, None], target * w, rcond=None)[0]
        residual = np.linalg.norm((rows @ params - target).reshape(n, 2), axis=1)
        updated = residual <= INLIER_PX
        if (updated == inliers).all():
            break
        inliers = updated
    return params, inliers


def estimate_registration(ir: np.ndarray, vi: np.ndarray) -> Registration:
    """Estimate how the infrared image is displaced against the visible image.

    Args:
        ir: infrared image as read by ``data.io.read_image`` ((H, W) or (H, W, 3)).
        vi: visible image of the same size.

    Returns:
        A :class:`Registration`.

    Raises:
        ValueError: the images differ in size or are smaller than MIN_SIDE px.
    """
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"infrared {ir.shape[:2]} and visible {vi.shape[:2]} differ in size")
    if min(ir.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"the images are {ir.shape[1]}x{ir.shape[0]} px: too small to estimate their "
            f"registration (at least {MIN_SIDE}x{MIN_SIDE} px)"
        )
    gray_ir, gray_vi = to_gray(ir), to_gray(vi)
    full_h, full_w = gray_ir.shape

    # 1. Whole images, coarse: a shift of up to a quarter of the image.
    coarse_ir, factor = _resize(gray_ir, COARSE_SIDE)
    coarse_vi, _ = _resize(gray_vi, COARSE_SIDE)
    window = np.outer(np.hanning(coarse_ir.shape[0]), np.hanning(coarse_ir.shape[1]))
    reach = max(coarse_ir.shape) // 4
    # ... at a few rotations: beyond a few degrees the fields no longer correlate unrotated.
    coarse_field_vi = orientation_field(coarse_vi)
    best_height, angle0, dx0, dy0 = -np.inf, 0.0, 0, 0
    for angle in ROTATIONS_DEG:
        rotated = _rotate(coarse_ir, angle, 0.0, 0.0)
        dx, dy, height = _peak(_correlate(coarse_field_vi, orientation_field(rotated), window), reach)
        if angle != 0.0:
            height /= ROTATION_MARGIN  # a rotation must beat none clearly
        if height > best_height:
            best_height, angle0, dx0, dy0 = height, angle, round(dx), round(dy)

    # 2. Blocks, fine: each block's shift around the coarse one (in the rotated frame).
    fine_ir, fine_factor = _resize(gray_ir, FINE_SIDE)
    fine_vi, _ = _resize(gray_vi, FINE_SIDE)
    scale_up = fine_factor / factor
    base_dx, base_dy = dx0 * scale_up, dy0 * scale_up
    moved_ir = _rotate(fine_ir, angle0, base_dx, base_dy)
    rotation0 = _rotation(angle0)
    field_ir, field_vi = orientation_field(moved_ir), orientation_field(fine_vi)
    h, w = fine_vi.shape
    bh, bw = 2 * h // (BLOCKS + 1), 2 * w // (BLOCKS + 1)
    block_window = np.outer(np.hanning(bh), np.hanning(bw))
    points, shifts, weights = [], [], []
    for i in range(BLOCKS):
        for j in range(BLOCKS):
            y, x = i * bh // 2, j * bw // 2
            a, b = field_vi[y : y + bh, x : x + bw], field_ir[y : y + bh, x : x + bw]
            dx, dy, height = _peak(_correlate(a, b, block_window), max(4, min(bh, bw) // 6))
            if height < MIN_PEAK:
                continue
            points.append((x + bw / 2 - w / 2, y + bh / 2 - h / 2))
            shifts.append((dx + base_dx, dy + base_dy))
            weights.append(height)
    if len(points) < 3:
        coarse = (dx0 / factor, dy0 / factor)
        return Registration(float(np.hypot(*coarse)), coarse, 0.0, 1.0, 0.0, len(points), 0.0)

    points_a, shifts_a, weights_a = np.array(points), np.array(shifts), np.array(weights)
    fitted, _ = _fit_similarity(points_a, shifts_a, weights_a)
    # In the rotated frame a visible point p' (centred) is at s R p' + t; in the infrared
    # image at R0 (s R p' + t): composed, the parameters of one similarity.
    similarity = _compose(rotation0, fitted)
    median = _compose(rotation0, np.array([0.0, 0.0, *np.median(shifts_a, axis=0)]))
    # Which explains the images best: no displacement, a shift, or shift + rotation + scale?
    # Scored on the whole image, so parallax or a few wrong blocks cannot decide it.
    window = np.outer(np.hanning(h), np.hanning(w))
    score = {name: _agreement(field_vi, fine_ir, params, window)
             for name, params in (("none", np.zeros(4)), ("shift", median),
                                  ("similarity", similarity))}  # fmt: skip
    best = "similarity" if score["similarity"] > SIMILARITY_MARGIN * score["shift"] else "shift"
    a, b, tx, ty = similarity if best == "similarity" else median
    # shift(p) = (s R - I) p + t, so s R = [[1 + a, -b], [b, 1 + a]].
    scale = float(np.hypot(1 + a, b))
    rotation = 0.0 - float(np.degrees(np.arctan2(b, 1 + a)))  # counter-clockwise as displayed
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
    moved = np.column_stack([a * corners[:, 0] - b * corners[:, 1] + tx,
                             b * corners[:, 0] + a * corners[:, 1] + ty])  # fmt: skip
    to_input = full_w / w  # fine px -> input px
    displacement = float(max(np.hypot(tx, ty), np.linalg.norm(moved, axis=1).max())) * to_input
    # How much better the estimate aligns the images than leaving them as they are.
    confidence = float(np.clip(1.0 - score["none"] / max(score[best], 1e-9), 0.0, 1.0))
    return Registration(displacement, (float(tx) * to_input, float(ty) * to_input),
                        rotation, scale, confidence, len(points), score[best])  # fmt: skip


def _agreement(
    field_vi: np.ndarray, ir: np.ndarray, params: np.ndarray, window: np.ndarray
) -> float:
    """Normalised correlation of the visible field with the infrared moved by ``params``."""
    a, b, tx, ty = (float(v) for v in params)
    h, w = ir.shape
    linear = np.array([[1 + a, -b], [b, 1 + a]])
    centre = np.array([w / 2, h / 2])
    offset = np.array([tx, ty]) + centre - linear @ centre
    matrix = np.hstack([linear, offset[:, None]]).astype(np.float32)
    aligned = cv2.warpAffine(ir, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    field_ir = orientation_field(aligned) * window
    weighted_vi = field_vi * window
    norm = np.sqrt(np.sum(np.abs(weighted_vi) ** 2) * np.sum(np.abs(field_ir) ** 2)) + 1e-12
    return float(np.real(np.vdot(weighted_vi, field_ir)) / norm)
