"""Medical image fusion: MRI with CT, PET or SPECT on tiny synthetic pairs (no ../shared)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from occo.cli.app import app
from occo.data.color import rgb_to_ycbcr
from occo.data.io import read_image, write_image_atomic
from occo.data.modality import (
    IVIF,
    ModalityError,
    Task,
    dataset_folders,
    medical_caption,
    parse_modalities,
    task_of,
)
from occo.data.normalize import compose_color, to_uint8, vi_to_unit


def _pet(rng, size=(32, 40), colormap=cv2.COLORMAP_JET) -> np.ndarray:
    """A colour-mapped functional image (RGB) like the Harvard atlas' PET and SPECT."""
    level = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (7, 7), 2)
    return np.ascontiguousarray(cv2.applyColorMap(level, colormap)[..., ::-1])


def _dataset(tmp_path, second="PET", names=("MRI", None), gray_second=(), sizes=None):
    """tmp_path/<task>/{MRI,PET}/ with three pairs."""
    rng = np.random.default_rng(0)
    root = tmp_path / f"{second}-MRI"
    first_dir = root / (names[0] or "MRI")
    second_dir = root / (names[1] or second)
    for stem in ("a", "b", "c"):
        size = (sizes or {}).get(stem, (32, 40))
        write_image_atomic(first_dir / f"{stem}.png", rng.integers(0, 256, (32, 40), np.uint8))
        if second == "CT" or stem in gray_second:
            image = rng.integers(0, 256, size, dtype=np.uint8)
        else:
            image = _pet(rng, size)
        write_image_atomic(second_dir / f"{stem}.png", image)
    return root, first_dir, second_dir


def _fuse(*args):
    return CliRunner().invoke(
        app, ["fuse", *map(str, args), "--device", "cpu", "--misaligned-px", "0"]
    )


@pytest.mark.parametrize("colormap", [cv2.COLORMAP_JET, cv2.COLORMAP_HOT, cv2.COLORMAP_TURBO])
def test_functional_colour_kept_bit_for_bit(colormap):
    """The fused luminance replaces the PET image's Y; where it equals the PET's own Y,
    the output is the PET image, every pixel, every channel."""
    pet = _pet(np.random.default_rng(1), (48, 48), colormap)
    vi = torch.from_numpy(vi_to_unit(pet))[None]
    assert vi.shape[1] == 3
    own_y = rgb_to_ycbcr(vi)[:, :1]
    np.testing.assert_array_equal(to_uint8(compose_color(own_y, vi)[0]), pet)


def test_fuse_pet_mri_keeps_colour_and_records_the_task(tmp_path, tiny_weights):
    root, mri_dir, pet_dir = _dataset(tmp_path)
    for path in pet_dir.iterdir():  # muted colours: fewer channels clipped by the fused Y
        write_image_atomic(path, read_image(path) // 3 + 85)
    out = tmp_path / "fused"
    result = _fuse(mri_dir, pet_dir, out, "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["task"] == "PET-MRI" and manifest["modalities"] == ["MRI", "PET"]
    assert manifest["vi_dir"] == str(pet_dir.resolve())
    fused, pet = read_image(out / "a.png"), read_image(pet_dir / "a.png")
    assert fused.shape == pet.shape == (32, 40, 3)
    # The chroma is the PET image's (up to the uint8 rounding of the fused RGB).
    chroma = [
        rgb_to_ycbcr(torch.from_numpy(im).permute(2, 0, 1).float()[None] / 255)[0, 1:]
        for im in (fused, pet)
    ]
    inside = (fused.max(-1) < 255) & (fused.min(-1) > 0)  # no channel clipped
    assert inside.mean() > 0.2
    assert (chroma[0] - chroma[1]).abs()[:, torch.from_numpy(inside)].max() < 3 / 255


def test_dataset_folder_as_one_path(tmp_path, tiny_weights):
    root, mri_dir, pet_dir = _dataset(tmp_path, names=("mri", "Pet"))
    out = tmp_path / "fused"
    result = CliRunner().invoke(
        app, ["fuse", str(root), str(out), "--weights", str(tiny_weights), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "occo-fuse.json").read_text())
    assert manifest["ir_dir"] == str(mri_dir.resolve()) and manifest["task"] == "PET-MRI"
    assert len(list(out.glob("*.png"))) == 3


def test_gray_ct_mri_pairs_stay_gray(tmp_path, tiny_weights):
    root, mri_dir, ct_dir = _dataset(tmp_path, second="CT")
    out = tmp_path / "fused"
    result = _fuse(mri_dir, ct_dir, out, "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    assert read_image(out / "b.png").shape == (32, 40)
    assert "warning" not in result.output  # gray CT is expected: no line about it
    assert json.loads((out / "occo-fuse.json").read_text())["task"] == "CT-MRI"


def test_gray_pet_is_one_clear_line(tmp_path, tiny_weights):
    root, mri_dir, pet_dir = _dataset(tmp_path, gray_second=("b",))
    out = tmp_path / "fused"
    result = _fuse(mri_dir, pet_dir, out, "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("warning: b: the PET image is gray"), lines
    assert read_image(out / "b.png").ndim == 2 and read_image(out / "a.png").ndim == 3


def test_size_mismatch_is_one_line_naming_the_modalities(tmp_path, tiny_weights):
    root, mri_dir, pet_dir = _dataset(tmp_path, second="SPECT", sizes={"c": (30, 40)})
    out = tmp_path / "fused"
    result = _fuse(mri_dir, pet_dir, out, "--weights", tiny_weights)
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, result.output
    assert "MRI" in failed[0] and "but SPECT" in failed[0] and "40x30" in failed[0]
    assert "infrared" not in failed[0] and "--resize-vi" in failed[0]


def test_folder_name_detection(tmp_path):
    for name in ("MRI", "mri", "Pet", "SPECT", "ct"):
        (tmp_path / "x" / name).mkdir(parents=True)
    assert task_of(tmp_path / "x" / "mri", tmp_path / "x" / "Pet") == Task("MRI", "PET")
    assert task_of(tmp_path / "x" / "MRI", tmp_path / "x" / "ct").name == "CT-MRI"
    assert task_of(tmp_path / "ir", tmp_path / "vi") is IVIF
    with pytest.raises(ModalityError, match="MRI image first"):
        task_of(tmp_path / "x" / "SPECT", tmp_path / "x" / "MRI")
    # Two functional folders beside MRI: which one is meant is not guessed.
    with pytest.raises(ModalityError, match="holds"):
        dataset_folders(tmp_path / "x")
    one = tmp_path / "PET-MRI" / "test"
    (one / "PET").mkdir(parents=True)
    (one / "MRI").mkdir()
    (tmp_path / "PET-MRI" / "train").mkdir()
    mri, pet, task = dataset_folders(one)
    assert (mri.name, pet.name, task.color_expected) == ("MRI", "PET", True)
    with pytest.raises(ModalityError, match="test"):  # the split folder above: a hint
        dataset_folders(tmp_path / "PET-MRI")
    assert parse_modalities("mri,spect") == Task("MRI", "SPECT")
    assert parse_modalities("ir,vi") is IVIF
    with pytest.raises(ModalityError):
        parse_modalities("PET")


def test_metrics_rows_and_caption_name_the_modalities(tmp_path, tiny_weights):
    root, mri_dir, pet_dir = _dataset(tmp_path)
    out = tmp_path / "fifn"
    assert _fuse(mri_dir, pet_dir, out, "--weights", tiny_weights).exit_code == 0
    result = CliRunner().invoke(
        app, ["metrics", str(out), "--metrics", "EN,SD,MI", "--source-rows", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if "│" in line]
    assert {"fifn", "MRI", "PET"} <= set(rows)
    assert "A=MRI, B=PET" in " ".join(result.output.split())
    caption = medical_caption("A=infrared, B=visible.", {Task("MRI", "SPECT")})
    assert caption.startswith("A=MRI, B=SPECT") and "luma Y" in caption
    assert medical_caption("A=infrared, B=visible.", {IVIF}) == "A=infrared, B=visible."


def test_mufusion_medical_weights_take_the_functional_image_first():
    """MUFusion's medical/test_image_rgbPET.py feeds the PET Y first and the MRI second;
    occo's pair is (MRI, PET), so the harvard variant swaps them back."""
    from occo.models.peers.mufusion import MUFusion, MUFusionConfig

    torch.manual_seed(0)
    plain = MUFusion(MUFusionConfig(width=4, patch=16)).eval()
    medical = MUFusion(MUFusionConfig(width=4, patch=16, variant="harvard")).eval()
    medical.load_state_dict(plain.state_dict())
    mri, pet_y = torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24)
    with torch.inference_mode():
        torch.testing.assert_close(medical(pet_y, mri), plain(mri, pet_y))


def test_medical_peer_weights_select_the_medical_variant(shared_dir):
    from occo.models.registry import get_network

    peers = shared_dir / "peers"
    config, _ = get_network("mufusion").read_release(peers / "mufusion" / "medical_models_harvard.model")
    assert (config.variant, config.output) == ("harvard", "clip")  # the colour script's output
    config, _ = get_network("refusion").read_release(peers / "refusion" / "ReFusion_MIF.pth")
    assert config.variant == "mif"
