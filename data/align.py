"""Warp the infrared image onto the visible one before fusing: no double edges.

The transform starts from the registration estimate (``data.registration``: gradient
orientation correlation over the whole image and in blocks, a shift/rotation/scale fit)
and is refined to sub-pixel accuracy by Gauss-Newton on the two images' *doubled-angle
gradient orientation fields* (the same contrast- and polarity-invariant representation
the estimate correlates), smoothed, coarse to fine (long side 256, 512, then the image
up to ``max_side``). Each level is an inverse-compositional Lucas-Kanade fit (Baker and
Matthews, "Lucas-Kanade 20 years on", IJCV 2004) of a similarity (shift, rotation,
scale) or an affine transform, on the real and imaginary parts of the fields, pixels
the warp takes outside the infrared image left out.

A pair is left as it is, and says why (``left_alone``), when the estimate is unreliable
(too little shared structure), when the refined transform does not align the fields
better than no transform, or when it moves no pixel more than ``min_displacement_px``.

Border: the warp leaves part of the frame without infrared data (where the visible image
sees beyond the infrared one). Filling it with black would put a dark frame into the
fused image; replicating the edge pixels smears them into streaks. By default the area
is filled with the visible image's luminance, its brightness matched to the infrared's
local mean just inside the edge and its contrast to the infrared's along the edge, so
the fused image there shows the visible content with no seam to speak of; ``border="replicate"`` repeats
the edge pixels instead. The area filled is recorded (share of the frame, and how much to
crop from each side to leave it out).

Transforms are 2x3 matrices ``M`` in input pixels that take a visible pixel ``(x, y)``
(pixel centres at integer coordinates, OpenCV's convention) to where it is in the
infrared image: ``aligned(x, y) = ir(M @ (x, y, 1))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from occo.data.registration import (
    Registration,
    estimate_registration,
    orientation_field,
    to_gray,
)

#: Changes whenever the same settings would give other pixels (stored with each output).
ALGORITHM_VERSION = 2

Model = Literal["similarity", "affine"]
Border = Literal["visible", "replicate"]

#: Below this displacement (px; the largest distance a pixel moves) a pair is left alone.
DEFAULT_MIN_DISPLACEMENT_PX = 1.0
#: Long sides (px) of the refinement levels, coarse to fine, before the image's own.
LEVEL_SIDES = (256, 512)
#: Finest level's long side: larger images are refined at this size (sub-pixel there is
#: still under a pixel at twice the size) to bound the time.
MAX_SIDE = 1024
#: Gaussian smoothing (level px) of the orientation fields: widens the basin of
#: convergence at coarse levels, keeps the accuracy at the finest.
FIELD_SIGMA_COARSE = 2.0
FIELD_SIGMA_FINE = 1.5
#: Gauss-Newton iterations per level at most; a level stops when an update moves no
#: corner more than STOP_PX (level px).
ITERATIONS = 20
STOP_PX = 0.05
#: Robust (Cauchy) weights: a pixel whose fields disagree by this many times the median
#: disagreement counts half; 0 turns them off.
ROBUST_SCALE = 0.7
#: Largest move (level px, at a corner) of one step.
MAX_STEP_PX = 2.0
#: An unreliable estimate (images sharing structure, but the estimate hardly better than
#: none) displacing the images less than this (px) is replaced by no transform as the
#: start (registered pairs give such estimates); a larger one is tried beside no
#: transform, and the refinement that aligns the images better is kept.
UNTRUSTED_START_PX = 3.0
#: Least agreement (normalised correlation of the orientation fields, 0..1) of the refined
#: transform: images without shared structure stay as they are. Real pairs measure 0.2-0.65.
MIN_AGREEMENT = 0.1
#: Least confidence (relative gain in agreement over no transform) to warp a pair.
MIN_GAIN = 0.02
#: Largest plausible displacement, as a share of the image diagonal.
MAX_DISPLACEMENT = 0.25
#: Width (px) of the band of infrared pixels along the filled border whose contrast the
#: fill matches.
BORDER_BAND_PX = 12
#: Reach (Gaussian sigma, px) of the local means the fill is matched to.
FILL_SIGMA_PX = 12.0
#: Largest contrast ratio (infrared / visible) given to the fill.
MAX_FILL_GAIN = 4.0


@dataclass(frozen=True)
class AlignSettings:
    """How :func:`align_pair` aligns (all of it changes the output pixels)."""

    model: Model = "similarity"
    """Transform fitted: ``similarity`` (shift, rotation, one scale) or ``affine`` (also
    a scale per axis and shear; needs more structure to be determined)."""
    min_displacement_px: float = DEFAULT_MIN_DISPLACEMENT_PX
    """Pairs the refined transform moves no pixel more than this (px) are left alone."""
    border: Border = "visible"
    """Fill of the area without infrared data: ``visible`` (the visible luminance,
    matched to the infrared along the edge) or ``replicate`` (edge pixels repeated)."""
    max_side: int = MAX_SIDE
    """Long side (px) of the finest refinement level; larger images are refined reduced."""


@dataclass
class Alignment:
    """What :func:`align_pair` did to one pair."""

    ir: np.ndarray
    """The infrared image warped onto the visible one (the input itself when left alone),
    same shape and dtype as the input."""
    matrix: np.ndarray
    """2x3 float64: visible pixel -> infrared pixel (identity when left alone)."""
    estimated: np.ndarray
    """2x3 float64: the refined transform, applied or not (e.g. below the threshold)."""
    model: str
    """``similarity`` or ``affine``."""
    displacement_px: float
    """Largest distance a pixel moves under ``estimated``, px."""
    confidence: float
    """How much better ``estimated`` aligns the orientation fields than no transform
    (``1 - agreement(none) / agreement(estimated)``, 0..1); 0 when unreliable."""
    residual_px: float | None
    """What is left after alignment: the median shift of 3x3 blocks fitted one by one on
    the pair as it goes out (px, sub-pixel; :func:`block_residual`); for a pair left
    alone as already aligned, measured on the pair as it is; None when not measured, or
    for a pair left alone as unreliable (its displacement is unknown)."""
    border_fraction: float
    """Share of the frame filled for lack of infrared data, 0..1."""
    border_px: tuple[int, int, int, int]
    """Columns/rows to crop from the left, top, right and bottom edges to leave out every
    filled pixel, px (0s when nothing was filled)."""
    left_alone: str | None
    """Why the pair was not warped, or None when it was."""
    estimate: Registration
    """The registration estimate the refinement started from (before alignment)."""
    rotation_deg: float = 0.0
    """Rotation of ``estimated`` (counter-clockwise as displayed), degrees."""
    scale: float = 1.0
    """Scale of ``estimated`` (geometric mean of the axes' for affine)."""
    shift_px: tuple[float, float] = (0.0, 0.0)
    """Where the image centre of the visible image is in the infrared, minus the centre."""
    extra: dict = field(default_factory=dict)
    """Diagnostics: agreement scores, iterations per level."""

    @property
    def applied(self) -> bool:
        """Whether the infrared image was warped."""
        return self.left_alone is None

    def record(self) -> dict:
        """JSON-ready: the transform applied, its confidence, residual, border, reason."""
        return {
            "aligned": self.applied,
            "left_alone": self.left_alone,
            "model": self.model,
            "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
            "estimated_matrix": [[round(float(v), 6) for v in row] for row in self.estimated],
            "displacement_px": round(self.displacement_px, 3),
            "shift_px": [round(v, 3) for v in self.shift_px],
            "rotation_deg": round(self.rotation_deg, 4),
            "scale": round(self.scale, 5),
            "confidence": round(self.confidence, 3),
            "residual_px": None if self.residual_px is None else round(self.residual_px, 2),
            "border_fraction": round(self.border_fraction, 4),
            "border_px": list(self.border_px),
            "estimate": self.estimate.to_dict(),
        }


def matrix_displacement(matrix: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance a pixel of an image of ``shape`` moves under ``matrix`` (px).

    An affine map moves pixels most at a corner of the frame (or, for a pure shift,
    everywhere the same), so the four corners and the centre tell.
    """
    h, w = shape[:2]
    points = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]])
    moved = points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
    return float(np.linalg.norm(moved - points, axis=1).max())


def _identity() -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _h3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def _level_map(fx: float, fy: float) -> np.ndarray:
    """Input px -> level px of an image resized by (fx, fy) (``cv2.resize``'s pixel centres)."""
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def _initial_matrix(estimate: Registration, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), estimate.rotation_deg, estimate.scale)
    matrix[:, 2] += estimate.shift_px
    return matrix.astype(np.float64)


def _field(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Smoothed orientation field as a float32 (H, W, 2) image (real, imaginary)."""
    f = orientation_field(gray)
    stacked = np.dstack([f.real, f.imag]).astype(np.float32)
    return cv2.GaussianBlur(stacked, (0, 0), sigma)


def _jacobian_basis(h: int, w: int, model: Model) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-pixel derivatives of the incremental warp, x and y components, (P, H*W) each.

    Coordinates are relative to the centre and divided by ``norm`` (half the diagonal) so
    that the parameters are of similar size.
    """
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, norm = (w - 1) / 2, (h - 1) / 2, 0.5 * float(np.hypot(w, h))
    x, y = ((xs - cx) / norm).ravel(), ((ys - cy) / norm).ravel()
    one, zero = np.ones_like(x), np.zeros_like(x)
    if model == "translation":  # (tx, ty)
        dx, dy = np.stack([one, zero]), np.stack([zero, one])
    elif model == "similarity":  # (a, b, tx, ty): p + [[a, -b], [b, a]] p' + t
        dx = np.stack([x, -y, one, zero])
        dy = np.stack([y, x, zero, one])
    else:  # (a11, a12, a21, a22, tx, ty)
        dx = np.stack([x, y, zero, zero, one, zero])
        dy = np.stack([zero, zero, x, y, zero, one])
    return dx, dy, norm


def _params_to_matrix(params: np.ndarray, h: int, w: int, norm: float, model: Model) -> np.ndarray:
    """The incremental warp of ``params`` as a 3x3 matrix in level px."""
    if model == "translation":
        tx, ty = params
        linear = np.zeros((2, 2))
    elif model == "similarity":
        a, b, tx, ty = params
        linear = np.array([[a, -b], [b, a]])
    else:
        a11, a12, a21, a22, tx, ty = params
        linear = np.array([[a11, a12], [a21, a22]])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # p + L (p - c) / norm + t
    full = np.eye(2) + linear / norm
    offset = np.array([tx, ty]) - linear @ centre / norm
    return np.vstack([np.hstack([full, offset[:, None]]), [0, 0, 1]])


def _steepest_descent(field: np.ndarray, dx_basis: np.ndarray, dy_basis: np.ndarray) -> np.ndarray:
    """Per pixel and channel, the field's change per warp parameter: (2 * H * W, P)."""
    gx = cv2.Sobel(field, cv2.CV_32F, 1, 0, ksize=1) * 0.5  # central differences
    gy = cv2.Sobel(field, cv2.CV_32F, 0, 1, ksize=1) * 0.5
    return np.concatenate(
        [(gx[..., c].ravel() * dx_basis + gy[..., c].ravel() * dy_basis).T for c in range(2)]
    )


def _refine_level(
    field_vi: np.ndarray, field_ir: np.ndarray, h3: np.ndarray, model: Model
) -> tuple[np.ndarray, int]:
    """Newton steps maximising the fields' correlation at one level; ``h3``: vi -> ir px.

    Forward compositional: the infrared field warped by the current transform is ``G``;
    the step ``d`` maximising ``sum T(p) G(W(p; d))`` (``T`` the visible field) is
    ``H^-1 J_G^T T`` with the curvature ``H = sym(J_T^T J_G)`` (the correlation's second
    derivative, by parts), which counts only the structure the two fields share. Plain
    Gauss-Newton's ``J^T J`` counts every edge of one image, shared or not, and so takes
    steps several times too short across modalities. Where ``H`` is not positive definite
    (far from the optimum), the Gauss-Newton curvature is used instead.
    """
    h, w = field_vi.shape[:2]
    dx_basis, dy_basis, norm = _jacobian_basis(h, w, model)
    sd_vi = _steepest_descent(field_vi, dx_basis, dy_basis)
    template = np.concatenate([field_vi[..., 0].ravel(), field_vi[..., 1].ravel()])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    iterations = 0
    for iterations in range(1, ITERATIONS + 1):  # noqa: B007 - reported
        m = h3[:2].astype(np.float32)
        warped = cv2.warpAffine(field_ir, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
        qx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        qy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        inside = (qx >= 2) & (qx <= w - 3) & (qy >= 2) & (qy <= h - 3)
        inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
        if inside.mean() < 0.2:
            break
        mask = np.concatenate([inside.ravel(), inside.ravel()]).astype(np.float32)
        current = np.concatenate([warped[..., 0].ravel(), warped[..., 1].ravel()]) * mask
        # The fields' contrasts differ: compare T with the best multiple of G.
        gain = float(current @ template) / max(float(current @ current), 1e-12)
        if ROBUST_SCALE > 0:  # structure only one image has (or made-up edges) weighs little
            r = (template - gain * current).reshape(2, -1)
            size = np.sqrt(r[0] ** 2 + r[1] ** 2)
            scale = ROBUST_SCALE * float(np.median(size[inside.ravel()])) + 1e-9
            weight = inside.ravel() / (1.0 + (size / scale) ** 2)
            mask = np.concatenate([weight, weight]).astype(np.float32)
        sd_ir = _steepest_descent(warped, dx_basis, dy_basis)
        weighted_vi = sd_vi * mask[:, None]
        gradient = (sd_ir.T @ ((template - gain * current) * mask)).astype(np.float64)
        cross = (weighted_vi.T @ sd_ir).astype(np.float64)
        curvature = 0.5 * (cross + cross.T)
        if np.linalg.eigvalsh(curvature).min() <= 1e-6 * np.abs(curvature).max():
            curvature = 0.5 * ((weighted_vi.T @ sd_vi) + ((sd_ir * mask[:, None]).T @ sd_ir))
            curvature = curvature.astype(np.float64)
        try:
            step = np.linalg.solve(curvature, gradient)
        except np.linalg.LinAlgError:
            break
        increment = _params_to_matrix(step, h, w, norm, model)
        moved = float(np.abs((increment @ corners - corners)[:2]).max())
        if moved > MAX_STEP_PX:  # a trust region: at most MAX_STEP_PX per step
            increment = _params_to_matrix(step * (MAX_STEP_PX / moved), h, w, norm, model)
        updated = h3 @ increment
        if not np.isfinite(updated).all():
            break
        h3 = updated
        if moved < STOP_PX:
            break
    return h3, iterations


def _agreement(field_vi: np.ndarray, field_ir: np.ndarray, h3: np.ndarray) -> float:
    """Normalised correlation of the visible field with the infrared field warped by ``h3``."""
    h, w = field_vi.shape[:2]
    warped = cv2.warpAffine(field_ir, h3[:2].astype(np.float32), (w, h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    valid = cv2.warpAffine(np.ones((field_ir.shape[0], field_ir.shape[1]), np.float32),
                           h3[:2].astype(np.float32), (w, h),
                           flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    a = field_vi * valid[..., None]
    b = warped * valid[..., None]
    norm = float(np.sqrt(np.sum(a * a) * np.sum(b * b))) + 1e-12
    return float(np.sum(a * b) / norm)


def refine_transform(
    ir: np.ndarray, vi: np.ndarray, matrix: np.ndarray, model: Model = "similarity",
    max_side: int = MAX_SIDE,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Refine ``matrix`` (visible px -> infrared px) coarse to fine on orientation fields.

    Args:
        ir: infrared image as read by ``data.io.read_image``.
        vi: visible image of the same size.
        matrix: 2x3 starting transform, input px.
        model: ``similarity`` or ``affine``.
        max_side: long side of the finest level.

    Returns:
        The refined 2x3 matrix and diagnostics: ``agreement`` of no transform, the start
        and the result at the finest level, and ``iterations`` per level.
    """
    gray_ir, gray_vi = to_gray(ir), to_gray(vi)
    full_h, full_w = gray_vi.shape
    sides = [s for s in LEVEL_SIDES if s < min(max(full_h, full_w), max_side)]
    sides.append(min(max(full_h, full_w), max_side))
    h3 = _h3(np.asarray(matrix, np.float64))
    info: dict = {"iterations": []}
    for index, side in enumerate(sides):
        factor = min(1.0, side / max(full_h, full_w))
        lw, lh = max(8, round(full_w * factor)), max(8, round(full_h * factor))
        level = _level_map(lw / full_w, lh / full_h)
        finest = index == len(sides) - 1
        sigma = FIELD_SIGMA_FINE if finest else FIELD_SIGMA_COARSE
        if factor < 1.0:
            small_ir = cv2.resize(gray_ir, (lw, lh), interpolation=cv2.INTER_AREA)
            small_vi = cv2.resize(gray_vi, (lw, lh), interpolation=cv2.INTER_AREA)
        else:
            small_ir, small_vi = gray_ir, gray_vi
        field_ir, field_vi = _field(small_ir, sigma), _field(small_vi, sigma)
        start = level @ h3 @ np.linalg.inv(level)
        refined, iterations = _refine_level(field_vi, field_ir, start, model)
        info["iterations"].append(iterations)
        if finest:
            none = _agreement(field_vi, field_ir, level @ np.eye(3) @ np.linalg.inv(level))
            before = _agreement(field_vi, field_ir, start)
            after = _agreement(field_vi, field_ir, refined) if np.isfinite(refined).all() else -1.0
            info["agreement"] = {"none": none, "start": before, "refined": after}
            if after < before:  # the refinement made it worse: keep the start
                refined = start
        if np.isfinite(refined).all():
            h3 = np.linalg.inv(level) @ refined @ level
    return h3[:2], info


def block_residual(ir: np.ndarray, vi: np.ndarray, max_side: int = MAX_SIDE) -> float | None:
    """How far apart the two images still are, locally: median block shift (px, sub-pixel).

    The frame is cut into 3x3 half-overlapping blocks; in each with enough shared structure
    a shift alone is fitted (the same Newton steps on orientation fields, from no shift),
    so what a global transform cannot explain (a residual rotation or scale, parallax)
    shows too. Returns the median length of the blocks' shifts in input px, or None when
    fewer than three blocks have shared structure.
    """
    gray_ir, gray_vi = to_gray(ir), to_gray(vi)
    full_h, full_w = gray_vi.shape
    factor = min(1.0, max_side / max(full_h, full_w))
    if factor < 1.0:
        size = (max(8, round(full_w * factor)), max(8, round(full_h * factor)))
        gray_ir = cv2.resize(gray_ir, size, interpolation=cv2.INTER_AREA)
        gray_vi = cv2.resize(gray_vi, size, interpolation=cv2.INTER_AREA)
    field_ir, field_vi = _field(gray_ir, FIELD_SIGMA_FINE), _field(gray_vi, FIELD_SIGMA_FINE)
    h, w = field_vi.shape[:2]
    bh, bw = h // 2, w // 2
    shifts = []
    for i in range(3):
        for j in range(3):
            y, x = i * bh // 2, j * bw // 2
            block_vi, block_ir = field_vi[y : y + bh, x : x + bw], field_ir[y : y + bh, x : x + bw]
            if _agreement(block_vi, block_ir, np.eye(3)) < MIN_AGREEMENT:
                continue
            moved, _ = _refine_level(np.ascontiguousarray(block_vi),
                                     np.ascontiguousarray(block_ir), np.eye(3), "translation")  # fmt: skip
            if _agreement(block_vi, block_ir, moved) >= MIN_AGREEMENT:
                shifts.append(float(np.hypot(*moved[:2, 2])) * full_w / w)
    return float(np.median(shifts)) if len(shifts) >= 3 else None


def _describe(
    matrix: np.ndarray, shape: tuple[int, ...]
) -> tuple[tuple[float, float], float, float]:
    """(shift at the centre, rotation degrees counter-clockwise as displayed, scale)."""
    h, w = shape[:2]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - centre
    linear = matrix[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    rotation = float(
        np.degrees(np.arctan2(linear[0, 1] - linear[1, 0], linear[0, 0] + linear[1, 1]))
    )
    return (float(shift[0]), float(shift[1])), rotation, scale


def _luminance(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    return x @ np.array([0.299, 0.587, 0.114], np.float32) if x.ndim == 3 else x


def _local_mean(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted local mean (normalised convolution), reaching as far as it must."""
    mean = np.zeros_like(values)
    todo = np.ones(values.shape, bool)
    for sigma in (FILL_SIGMA_PX, 4 * FILL_SIGMA_PX, 16 * FILL_SIGMA_PX):
        if not todo.any():  # the wider blurs cost 20x more and would change nothing
            break
        total = cv2.GaussianBlur(values * weight, (0, 0), sigma)
        norm = cv2.GaussianBlur(weight, (0, 0), sigma)
        reached = todo & (norm > 1e-3)
        mean[reached] = total[reached] / norm[reached]
        todo &= ~reached
    if todo.any():  # farther than any blur reaches: the global mean
        mean[todo] = float((values * weight).sum() / max(weight.sum(), 1e-6))
    return mean


def _fill_border(warped: np.ndarray, missing: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """The missing area filled with the visible luminance, matched to the infrared nearby.

    At a missing pixel the fill is the infrared's local mean (over the nearest pixels that
    have infrared data) plus the visible luminance's departure from its own local mean
    over the same pixels, times the contrast ratio of the two images along the edge: no
    step at the seam, the visible detail inside.
    """
    if not missing.any():
        return warped
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * BORDER_BAND_PX + 1,) * 2)
    band = (cv2.dilate(missing.astype(np.uint8), kernel) > 0) & ~missing
    if band.sum() < 16:
        band = ~missing
    weight = (~missing).astype(np.float32)
    y = _luminance(vi)
    y_local = _local_mean(y, weight)
    y_std = float(y[band].std())
    integer = np.issubdtype(warped.dtype, np.integer)
    limit = float(np.iinfo(warped.dtype).max) if integer else 1.0  # floats: in [0, 1]
    out = warped.copy()
    channels = [out] if out.ndim == 2 else [out[..., c] for c in range(out.shape[2])]
    for channel in channels:
        values = channel.astype(np.float32)
        gain = min(float(values[band].std()) / y_std, MAX_FILL_GAIN) if y_std > 1e-6 else 0.0
        fill = _local_mean(values, weight) + gain * (y - y_local)
        fill = np.rint(fill) if integer else fill
        channel[missing] = np.clip(fill[missing], 0, limit).astype(warped.dtype)
    return out


def _border_widths(missing: np.ndarray) -> tuple[int, int, int, int]:
    """Columns/rows to crop from the left, top, right and bottom to leave no filled pixel.

    Shrinks the frame greedily, each time by the side with the most filled pixels on it,
    until its edges hold none: a large all-infrared rectangle, not always the largest.
    """
    h, w = missing.shape
    x0, y0, x1, y1 = 0, 0, w, h  # the rectangle [x0, x1) x [y0, y1)
    while x0 < x1 and y0 < y1:
        counts = (missing[y0:y1, x0].sum(), missing[y0, x0:x1].sum(),
                  missing[y0:y1, x1 - 1].sum(), missing[y1 - 1, x0:x1].sum())  # fmt: skip
        side = int(np.argmax(counts))
        if counts[side] == 0:
            break
        if side == 0:
            x0 += 1
        elif side == 1:
            y0 += 1
        elif side == 2:
            x1 -= 1
        else:
            y1 -= 1
    return x0, y0, w - x1, h - y1


def warp_infrared(
    ir: np.ndarray, vi: np.ndarray, matrix: np.ndarray, border: Border = "visible"
) -> tuple[np.ndarray, np.ndarray]:
    """``ir`` resampled at ``matrix @ p`` for every visible pixel p; the uncovered area filled.

    Args:
        ir: infrared image, (H, W) or (H, W, 3), uint8 or uint16 (or float32 in [0, 1]).
        vi: visible image of the same size (for ``border="visible"``).
        matrix: 2x3 visible px -> infrared px.
        border: ``visible`` or ``replicate`` (see the module's docstring).

    Returns:
        The warped image (shape and dtype of ``ir``) and the boolean mask of the pixels
        that had no infrared data.
    """
    h, w = vi.shape[:2]
    m = np.asarray(matrix, np.float64)
    warped = cv2.warpAffine(ir, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    qx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    qy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    ih, iw = ir.shape[:2]
    tolerance = 0.5  # within half a pixel of the edge is the edge pixel itself
    missing = (
        (qx < -tolerance)
        | (qx > iw - 1 + tolerance)
        | (qy < -tolerance)
        | (qy > ih - 1 + tolerance)
    )
    if border == "visible":
        warped = _fill_border(warped, missing, vi)
    return warped, missing


def _left_alone(
    ir: np.ndarray, estimate: Registration, model: str, reason: str,
    estimated: np.ndarray | None = None, confidence: float = 0.0, extra: dict | None = None,
    residual: float | None = None,
) -> Alignment:  # fmt: skip
    estimated = _identity() if estimated is None else estimated
    shift, rotation, scale = _describe(estimated, ir.shape)
    return Alignment(ir=ir, matrix=_identity(), estimated=estimated, model=model,
                     displacement_px=matrix_displacement(estimated, ir.shape),
                     confidence=confidence, residual_px=residual,
                     border_fraction=0.0,
                     border_px=(0, 0, 0, 0), left_alone=reason, estimate=estimate,
                     rotation_deg=rotation, scale=scale, shift_px=shift,
                     extra=extra or {})  # fmt: skip


def align_pair(
    ir: np.ndarray,
    vi: np.ndarray,
    settings: AlignSettings | None = None,
    measure_residual: bool = True,
    estimate: Registration | None = None,
) -> Alignment:
    """Warp the infrared image onto the visible one, or leave it and say why.

    Args:
        ir: infrared image as read by ``data.io.read_image``: (H, W) or (H, W, 3), uint8
            or uint16.
        vi: visible image of the same size (gray or RGB, any of those types).
        settings: :class:`AlignSettings` (default: similarity, 1 px, visible border).
        measure_residual: measure what is left after alignment (``residual_px``, by
            :func:`block_residual`: nine small fits).
        estimate: the pair's registration estimate when already made (e.g. by a check).

    Returns:
        An :class:`Alignment`.

    Raises:
        ValueError: the images differ in size or are too small to estimate.
    """
    settings = settings or AlignSettings()
    if settings.model not in ("similarity", "affine"):
        raise ValueError(f"unknown alignment model {settings.model!r}: similarity or affine")
    if settings.border not in ("visible", "replicate"):
        raise ValueError(f"unknown border fill {settings.border!r}: visible or replicate")
    if estimate is None:
        estimate = estimate_registration(ir, vi)
    model = settings.model

    def leave(reason: str, estimated: np.ndarray | None = None, confidence: float = 0.0,
              extra: dict | None = None, aligned: bool = False) -> Alignment:  # fmt: skip
        # Only a pair found aligned has a residual small enough to measure by blocks.
        measure = measure_residual and aligned
        residual = block_residual(ir, vi, settings.max_side) if measure else None
        return _left_alone(ir, estimate, model, reason, estimated, confidence, extra, residual)

    if estimate.blocks < 3:
        return leave(
            f"unreliable estimate (agreement {estimate.agreement:.2f}, {estimate.blocks} "
            "structured blocks): too little structure shared by the two images")  # fmt: skip
    if estimate.agreement < MIN_AGREEMENT:
        # The estimate found no match, but the images have structure: a large scale change
        # defeats the estimate's correlation while the refinement, coarse to fine, still
        # finds it from no transform. Its own agreement decides below.
        starts = [_identity()]
    elif estimate.reliable:
        starts = [_initial_matrix(estimate, ir.shape)]
    elif estimate.displacement_px <= UNTRUSTED_START_PX:
        # Registered pairs look "unreliable" to the estimate (nothing beats no displacement):
        # the refinement starts from no transform and decides.
        starts = [_identity()]
    else:  # shared structure, but the estimate is not clearly better than none: try both
        starts = [_initial_matrix(estimate, ir.shape), _identity()]
    tries = [refine_transform(ir, vi, start, model, settings.max_side) for start in starts]
    refined, info = max(tries, key=lambda t: t[1]["agreement"]["refined"])
    agreement = info["agreement"]
    confidence = min(1.0, max(0.0, 1.0 - agreement["none"] / max(agreement["refined"], 1e-9)))
    displacement = matrix_displacement(refined, ir.shape)
    shift, rotation, scale = _describe(refined, ir.shape)
    if agreement["refined"] < MIN_AGREEMENT:
        return leave((
            f"unreliable: the images share too little structure (agreement "
            f"{agreement['refined']:.3f})"), refined, confidence, info)  # fmt: skip
    if not (0.5 < scale < 2.0) or displacement > MAX_DISPLACEMENT * float(np.hypot(*ir.shape[:2])):
        return leave((
            f"implausible transform (scale {scale:.2f}, displacement {displacement:.0f} px)"),
            refined, 0.0, info)  # fmt: skip
    if displacement <= settings.min_displacement_px:
        return leave((
            f"already aligned: no pixel moves more than {settings.min_displacement_px:g} px "
            f"(estimated {displacement:.2f} px)"), refined, confidence, info, aligned=True)  # fmt: skip
    if confidence < MIN_GAIN:
        return leave((
            f"unreliable: the transform ({displacement:.1f} px) aligns the images hardly better "
            f"than none (confidence {confidence:.3f})"), refined, confidence, info)  # fmt: skip
    warped, missing = warp_infrared(ir, vi, refined, settings.border)
    residual = block_residual(warped, vi, settings.max_side) if measure_residual else None
    return Alignment(ir=warped, matrix=refined, estimated=refined, model=model,
                     displacement_px=displacement, confidence=confidence, residual_px=residual,
                     border_fraction=float(missing.mean()), border_px=_border_widths(missing),
                     left_alone=None, estimate=estimate, rotation_deg=rotation, scale=scale,
                     shift_px=shift, extra=info)  # fmt: skip


def align_arrays(
    ir: np.ndarray, vi: np.ndarray, settings: AlignSettings | None = None,
    measure_residual: bool = False, estimate: Registration | None = None,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """For a fusion pipeline: the infrared array aligned, and a JSON-ready record.

    Never raises for a pair it cannot align: such a pair comes back unchanged with
    ``left_alone`` saying why (the record of an error has ``"error"`` too).

    Args:
        ir: (H, W) or (H, W, 3) uint8/uint16 infrared, or float32 in [0, 1] (a prepared
            pair's).
        vi: visible image of the same size.
        settings: :class:`AlignSettings`.
        measure_residual: also measure the residual (:func:`block_residual`).
        estimate: the pair's registration estimate when already made.

    Returns:
        ``(ir_aligned, record)`` with the record of :meth:`Alignment.record`.
    """
    try:
        alignment = align_pair(ir, vi, settings, measure_residual, estimate)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ir, {"aligned": False, "left_alone": f"cannot estimate: {reason}", "error": reason,
                    "matrix": _identity().tolist()}  # fmt: skip
    return alignment.ir, alignment.record()
