"""Metrics inside regions against direct numpy computations on small synthetic images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from occo.eval.metrics import MetricInputError, compute_metrics
from occo.eval.metrics.inputs import GrayInputs
from occo.eval.metrics.regions import (
    REGION_METRICS,
    WHOLE_IMAGE,
    compute_in_regions,
    compute_on_gray_regions,
    object_contrast,
    parse_regions,
    region_masks,
)

H, W = 24, 30


@pytest.fixture
def images():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (H, W), dtype=np.uint8)
    b = rng.integers(0, 256, (H, W), dtype=np.uint8)
    # Smooth-ish fused image with some structure, so SSIM and Qabf are not near zero.
    f = ((a.astype(np.uint16) + b) // 2).astype(np.uint8)
    return f, a, b


@pytest.fixture(params=["one strip", "8-row strips"])
def strip_rows(request, monkeypatch):
    """Whole images in one strip, or in strips of 8 rows (their joins must not show)."""
    if request.param == "8-row strips":
        from occo.eval.metrics import inputs, regions, structural

        def small(rows, width, pixels=0):
            return inputs.strips(rows, width, pixels=8 * width)

        monkeypatch.setattr(regions, "strips", small)
        monkeypatch.setattr(structural, "strips", small)
    return request.param


@pytest.fixture
def blobs():
    """Two separate objects of odd shapes."""
    mask = np.zeros((H, W), bool)
    mask[3:11, 4:12] = True
    mask[6:9, 12:15] = True  # a nose, so the shape is not a rectangle
    mask[15:21, 18:27] = True
    mask[17, 18] = False  # a hole on the border
    return mask


# ----------------------------------------------------------------------------- direct numpy


def _entropy(values: np.ndarray) -> float:
    counts = np.bincount(values.ravel(), minlength=256)
    p = counts[counts > 0] / values.size
    return float(-(p * np.log2(p)).sum())


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.astype(float), y.astype(float))[0, 1])


def _mi(x: np.ndarray, f: np.ndarray) -> float:
    xm, fm = np.minimum(x, 254).astype(int), np.minimum(f, 254).astype(int)
    joint = _entropy_of(np.bincount(xm * 256 + fm, minlength=256 * 256), x.size)
    return _entropy(x) + _entropy(f) - joint


def _entropy_of(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-(p * np.log2(p)).sum())


def _sf_direct(f: np.ndarray, mask: np.ndarray) -> float:
    f = f.astype(float)
    rows = [
        (f[i, j + 1] - f[i, j]) ** 2
        for i in range(H)
        for j in range(W - 1)
        if mask[i, j] and mask[i, j + 1]
    ]
    cols = [
        (f[i + 1, j] - f[i, j]) ** 2
        for i in range(H - 1)
        for j in range(W)
        if mask[i, j] and mask[i + 1, j]
    ]
    if not rows or not cols:
        return math.nan
    return math.sqrt(np.mean(rows) + np.mean(cols))


def _gradient_in(line: np.ndarray, inside: np.ndarray, k: int) -> float:
    """MATLAB gradient at position k of a line, the region's border acting as the line's end."""
    left = k > 0 and inside[k - 1]
    right = k < len(line) - 1 and inside[k + 1]
    if left and right:
        return (line[k + 1] - line[k - 1]) / 2
    if right:
        return line[k + 1] - line[k]
    if left:
        return line[k] - line[k - 1]
    return 0.0


def _ag_direct(f: np.ndarray, mask: np.ndarray) -> float:
    f = f.astype(float)
    terms = []
    for i, j in zip(*np.nonzero(mask), strict=True):
        gx = _gradient_in(f[i], mask[i], j)
        gy = _gradient_in(f[:, j], mask[:, j], i)
        terms.append(math.sqrt((gx * gx + gy * gy) / 2))
    return float(np.mean(terms))


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Wang et al.'s SSIM map, 11x11 Gaussian sigma 1.5, 'valid', direct 2-D windows."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(z):
        return np.einsum("ijkl,kl->ij", sliding_window_view(z, (11, 11)), window)

    x, y = x.astype(float), y.astype(float)
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def _conv2_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    flipped = kernel[::-1, ::-1]
    padded = np.pad(image.astype(float), 1)
    out = np.zeros(image.shape)
    for i in range(3):
        for j in range(3):
            out += flipped[i, j] * padded[i : i + image.shape[0], j : j + image.shape[1]]
    return out


def _qabf_terms(s: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Xydeas-Petrovic per-pixel ``Q_SF gS`` and ``gS`` as the toolkit writes them."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    ky = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)

    def strength_angle(z):
        sx, sy = _conv2_same(z, kx), _conv2_same(z, ky)
        with np.errstate(divide="ignore", invalid="ignore"):
            angle = np.where(sx == 0, math.pi / 2, np.arctan(sy / sx))
        return np.hypot(sx, sy), angle

    gs, as_ = strength_angle(s)
    gf, af = strength_angle(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(gs == gf, gf, np.minimum(gs, gf) / np.maximum(gs, gf))
    qg = 0.9994 / (1 + np.exp(-15 * (ratio - 0.5)))
    qa = 0.9879 / (1 + np.exp(-22 * (1 - np.abs(as_ - af) / (math.pi / 2) - 0.8)))
    return qg * qa * gs, gs


def _contrast_direct(image, components, background, ring):
    """Area-weighted |object mean - ring mean| with rings found by brute-force distances."""
    yy, xx = np.mgrid[:H, :W]
    total = weight = 0.0
    for comp in components:
        py, px = np.nonzero(comp)
        dist = np.min(np.hypot(yy[..., None] - py, xx[..., None] - px), axis=-1)
        around = (dist <= ring) & background & ~comp
        if around.any():
            area = comp.sum()
            total += area * abs(image[comp].mean() - image[around].mean())
            weight += area
    return total / weight


# ----------------------------------------------------------------------------- tests


def test_pixel_set_metrics_match_numpy(images, blobs):
    f, a, b = images
    got = compute_in_regions(f, a, b, {"objects": blobs, "background": ~blobs})
    for region, mask in (("objects", blobs), ("background", ~blobs)):
        v = got[region]
        fr, ar, br = f[mask], a[mask], b[mask]
        assert v["EN"] == pytest.approx(_entropy(fr), rel=1e-12, abs=1e-12)
        assert v["SD"] == pytest.approx(np.std(fr.astype(float)), rel=1e-12)
        assert v["CC"] == pytest.approx((_corr(ar, fr) + _corr(br, fr)) / 2, rel=1e-10)
        scd = _corr(fr.astype(float) - br, ar) + _corr(fr.astype(float) - ar, br)
        assert v["SCD"] == pytest.approx(scd, rel=1e-10)
        assert v["MI"] == pytest.approx(_mi(ar, fr) + _mi(br, fr), rel=1e-12)
        f01, a01, b01 = (x.astype(float) / 255 for x in (fr, ar, br))
        mse = (np.mean((f01 - a01) ** 2) + np.mean((f01 - b01) ** 2)) / 2
        assert v["MSE"] == pytest.approx(mse, rel=1e-12)
        assert v["PSNR"] == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), rel=1e-12)
    assert "TC" in got["objects"] and "TC" not in got["background"]


def test_sf_and_ag_count_only_differences_inside_the_region(images, blobs, strip_rows):
    f, _, _ = images
    got = compute_in_regions(f, None, None, {"objects": blobs, "background": ~blobs})
    for region, mask in (("objects", blobs), ("background", ~blobs)):
        assert got[region]["SF"] == pytest.approx(_sf_direct(f, mask), rel=1e-12)
        assert got[region]["AG"] == pytest.approx(_ag_direct(f, mask), rel=1e-12)
    assert set(got["objects"]) == {"EN", "SF", "AG", "SD"}  # no sources: source-free only


def test_ssim_and_qabf_pool_their_maps_over_the_region(images, blobs, strip_rows):
    f, a, b = images
    got = compute_in_regions(f, a, b, {"objects": blobs, "background": ~blobs})
    for region, mask in (("objects", blobs), ("background", ~blobs)):
        centred = mask[5 : H - 5, 5 : W - 5]
        ssim = _ssim_map(a, f)[centred].mean() + _ssim_map(b, f)[centred].mean()
        assert got[region]["SSIM"] == pytest.approx(ssim, rel=1e-9)
        qa, ga = _qabf_terms(a, f)
        qb, gb = _qabf_terms(b, f)
        qabf = (qa[mask].sum() + qb[mask].sum()) / (ga[mask].sum() + gb[mask].sum())
        assert got[region]["Qabf"] == pytest.approx(qabf, rel=1e-9)


def test_whole_image_region_gives_the_whole_image_values(images):
    f, a, b = images
    whole = compute_metrics(f, a, b)
    everything = np.ones((H, W), bool)
    inside = compute_in_regions(f, a, b, {"objects": everything}, background=~everything)
    inside = inside["objects"]
    for name in REGION_METRICS:
        if name in ("AG", "TC"):
            continue
        assert inside[name] == whole[name], name  # the same sums: bit for bit
    # AG is a mean over pixels; the toolkit divides by (M-1)(N-1).
    assert inside["AG"] == pytest.approx(whole["AG"] * (H - 1) * (W - 1) / (H * W), rel=1e-12)
    assert math.isnan(inside["TC"])  # no background for a ring


def test_one_pass_gives_whole_image_ssim_and_qabf_bit_for_bit(images, blobs, strip_rows):
    f, a, b = images
    whole = compute_metrics(f, a, b, ["SSIM", "Qabf"])
    inputs = GrayInputs(f, a, b)
    for regions in ({"objects": blobs}, {"objects": np.zeros((H, W), bool)}):
        got = compute_on_gray_regions(inputs, regions, ["EN", "SSIM"], whole=["SSIM", "Qabf"])
        assert got[WHOLE_IMAGE] == whole


def test_target_contrast_against_brute_force_rings(images, blobs):
    f, a, b = images
    background = ~blobs
    background[0:2, :] = False  # ring pixels come from the background only
    first = np.zeros((H, W), bool)
    first[3:11, 4:12] = True
    first[6:9, 12:15] = True
    second = blobs & ~first
    for ring in (1, 3):
        contrasts = object_contrast([f, a, b], blobs, background, ring)
        direct = [
            _contrast_direct(x.astype(float), [first, second], background, ring) for x in (f, a, b)
        ]
        np.testing.assert_allclose(contrasts, direct, rtol=1e-12)
        tc = compute_in_regions(f, a, b, {"objects": blobs}, background=background, ring=ring)
        assert tc["objects"]["TC"] == pytest.approx(direct[0] / max(direct[1:]), rel=1e-12)


def test_a_region_of_one_pixel(images):
    f, a, b = images
    y, x = 10, 12
    mask = np.zeros((H, W), bool)
    mask[y, x] = True
    v = compute_in_regions(f, a, b, {"objects": mask, "background": ~mask}, ring=2)["objects"]
    assert v["EN"] == 0 and v["SD"] == 0 and v["AG"] == 0 and v["MI"] == 0
    assert math.isnan(v["SF"]) and math.isnan(v["CC"]) and math.isnan(v["SCD"])
    mse = ((float(f[y, x]) - a[y, x]) ** 2 + (float(f[y, x]) - b[y, x]) ** 2) / (2 * 255**2)
    assert v["MSE"] == pytest.approx(mse, rel=1e-12)
    ssim = _ssim_map(a, f)[y - 5, x - 5] + _ssim_map(b, f)[y - 5, x - 5]
    assert v["SSIM"] == pytest.approx(ssim, rel=1e-9)
    qa, ga = _qabf_terms(a, f)
    qb, gb = _qabf_terms(b, f)
    assert v["Qabf"] == pytest.approx((qa[y, x] + qb[y, x]) / (ga[y, x] + gb[y, x]), rel=1e-9)
    direct = [_contrast_direct(z.astype(float), [mask], ~mask, 2) for z in (f, a, b)]
    assert v["TC"] == pytest.approx(direct[0] / max(direct[1:]), rel=1e-12)
    # A pixel on the image's 5-pixel edge centres no SSIM window.
    edge = np.zeros((H, W), bool)
    edge[0, 0] = True
    assert math.isnan(compute_in_regions(f, a, b, {"objects": edge})["objects"]["SSIM"])


def test_an_all_background_image(images):
    f, a, b = images
    empty = np.zeros((H, W), np.uint8)
    regions = region_masks(empty, empty, ("objects", "background"))
    assert not regions["objects"].any() and regions["background"].all()
    got = compute_in_regions(f, a, b, regions)
    assert all(math.isnan(v) for v in got["objects"].values())
    whole = compute_metrics(f, a, b)
    for name in ("EN", "SD", "SF", "CC", "MI", "SCD", "Qabf", "MSE", "PSNR", "SSIM"):
        assert got["background"][name] == whole[name], name


def test_region_masks_split_like_occo():
    ir = np.array([[0, 1, 1, 0]], np.uint8)
    vi = np.array([[0, 0, 255, 1]], np.uint8)  # any value > 0 is object
    got = region_masks(ir, vi, ("shared", "unique_ir", "unique_vi", "background", "objects"))
    assert got["shared"].tolist() == [[False, False, True, False]]
    assert got["unique_ir"].tolist() == [[False, True, False, False]]
    assert got["unique_vi"].tolist() == [[False, False, False, True]]
    assert got["background"].tolist() == [[True, False, False, False]]
    assert got["objects"].tolist() == [[False, True, True, True]]


def test_parse_regions_and_input_errors(images):
    assert parse_regions(None) == ("objects", "background")
    assert parse_regions("occo") == ("shared", "unique_ir", "unique_vi", "background")
    assert parse_regions("Objects, background,objects") == ("objects", "background")
    with pytest.raises(MetricInputError, match="unknown region 'face'"):
        parse_regions("objects,face")
    f, a, b = images
    with pytest.raises(MetricInputError, match="no region form for metric 'VIF'"):
        compute_in_regions(f, a, b, {"objects": np.ones((H, W))}, metrics=["VIF"])
    with pytest.raises(MetricInputError, match="need the infrared and visible"):
        compute_in_regions(f, None, None, {"objects": np.ones((H, W))}, metrics=["TC"])
    with pytest.raises(MetricInputError, match="is 3x2 but the image is 30x24"):
        compute_in_regions(f, a, b, {"objects": np.ones((2, 3))})
