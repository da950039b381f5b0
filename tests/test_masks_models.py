"""Grounding DINO and SAM wrappers on tiny random models (real transformers / segment-anything
classes, built from configs, saved and loaded back by path; offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from occo.masks.detector import (  # noqa: E402
    GroundingDinoDetector,
    ModelLoadError,
    normalize_prompt,
    to_rgb8,
)
from occo.masks.generate import ModelMaskConfig, ModelMaskSource  # noqa: E402
from occo.masks.segmenter import HFSamSegmenter, MetaSamSegmenter, load_segmenter  # noqa: E402
from tests import masks_tiny as tiny


@pytest.fixture(scope="session")
def models(tiny_hf_models) -> dict[str, Path]:
    return tiny_hf_models


@pytest.fixture(scope="module")
def detector(models) -> GroundingDinoDetector:
    return GroundingDinoDetector(models["detector"], box_threshold=0.0, text_threshold=0.25)


@pytest.fixture(scope="module")
def segmenter(models) -> HFSamSegmenter:
    return HFSamSegmenter(models["segmenter"])


@pytest.fixture
def meta_registry(monkeypatch):
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, tiny.TINY_META_KIND, tiny.build_tiny_meta_sam)


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 255, size, dtype=np.uint8)
        for size in ((40, 56, 3), (33, 70, 3), (40, 56, 3))
    ]


def test_prompt_and_image_conversion():
    assert normalize_prompt("  The Scene captures CARS ") == "the scene captures cars."
    assert normalize_prompt(tiny.PROMPT) == "the scene captures a group of pedestrians or cars."
    with pytest.raises(ValueError):
        normalize_prompt("  ")
    gray16 = np.array([[1000, 1500], [2000, 1000]], np.uint16)
    rgb = to_rgb8(gray16)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 128], [255, 0]] and (rgb[..., 0] == rgb[..., 2]).all()


def test_detector_batches_and_thresholds(models, detector):
    found = detector.detect(images(), tiny.PROMPT)
    assert len(found) == 3
    for det, image in zip(found, images(), strict=True):
        assert det.boxes.shape == (len(det.scores), 4) and 0 < len(det.scores) <= 6
        assert len(det.labels) == len(det.scores)
        assert all("[SEP]" not in label and "[CLS]" not in label for label in det.labels)
        h, w = image.shape[:2]
        centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
        assert (centres >= 0).all() and (centres[:, 0] <= w).all() and (centres[:, 1] <= h).all()

    capped = GroundingDinoDetector(models["detector"], box_threshold=0.0, max_boxes=2)
    top = capped.detect(images(), tiny.PROMPT)
    for det, full in zip(top, found, strict=True):
        assert len(det.scores) == 2
        np.testing.assert_allclose(np.sort(det.scores), np.sort(full.scores)[-2:], rtol=1e-5)

    none = GroundingDinoDetector(models["detector"], box_threshold=1.5).detect(
        images(), tiny.PROMPT
    )
    assert all(len(det.scores) == 0 and det.labels == [] for det in none)


def test_segmenter_matches_transformers_reference(segmenter):
    image = images()[1]
    boxes = np.array([[2, 3, 30, 25], [20, 5, 60, 30]], np.float32)
    ours = segmenter.segment([image], [boxes])[0]
    proc, model = segmenter.processor, segmenter.model
    inputs = proc(images=[image], input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        out = model(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
    ref = proc.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0]
    assert ours.shape == image.shape[:2] and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref.any(dim=0)[0].numpy().astype(np.uint8))


def test_segmenter_union_chunks_and_skips_empty(segmenter, monkeypatch):
    imgs = images()
    a, b = np.array([[1, 1, 20, 20]], np.float32), np.array([[25, 10, 50, 35]], np.float32)
    single_a = segmenter.segment(imgs[:1], [a])[0]
    single_b = segmenter.segment(imgs[:1], [b])[0]
    both = segmenter.segment(imgs[:1], [np.concatenate([a, b])])[0]
    np.testing.assert_array_equal(both, single_a | single_b)

    calls = []
    original = segmenter._embed
    monkeypatch.setattr(
        segmenter, "_embed", lambda batch: calls.append(len(batch)) or original(batch)
    )
    monkeypatch.setattr(segmenter, "box_chunk", 1)
    out = segmenter.segment(imgs, [np.concatenate([a, b]), np.zeros((0, 4)), a])
    assert calls == [2]  # one batched embedding, only the images with boxes
    assert not out[1].any() and out[1].shape == imgs[1].shape[:2]
    np.testing.assert_array_equal(out[0], both)
    assert segmenter.segment(imgs, [np.zeros((0, 4))] * 3) and calls == [2]  # no SAM call at all


def test_meta_segmenter_matches_sam_predictor(models, meta_registry):
    from segment_anything import SamPredictor

    seg = load_segmenter(f"sam:{tiny.TINY_META_KIND}:{models['meta']}")
    assert isinstance(seg, MetaSamSegmenter) and seg.name.endswith("sam_tiny.pth")
    image = images()[1]
    boxes = np.array([[2, 3, 30, 25], [20, 5, 60, 30]], np.float32)
    ours = seg.segment([image, images()[0]], [boxes, boxes[:1]])[0]
    predictor = SamPredictor(seg.model)
    predictor.set_image(image)
    prompt = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes), image.shape[:2])
    with torch.inference_mode():
        ref, _, _ = predictor.predict_torch(None, None, boxes=prompt, multimask_output=False)
    np.testing.assert_array_equal(ours, ref.any(dim=0)[0].numpy().astype(np.uint8))


def test_model_load_errors(models, meta_registry, tmp_path):
    with pytest.raises(ModelLoadError, match="hf download IDEA-Research/grounding-dino-base"):
        GroundingDinoDetector("IDEA-Research/grounding-dino-base")
    with pytest.raises(ModelLoadError, match="folder not found"):
        GroundingDinoDetector(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        HFSamSegmenter(tmp_path)
    with pytest.raises(ModelLoadError, match="sam:KIND:PATH"):
        load_segmenter("sam:vit_h")
    with pytest.raises(ModelLoadError, match="unknown segment-anything model kind 'vit_x'"):
        load_segmenter(f"sam:vit_x:{models['meta']}")
    with pytest.raises(ModelLoadError, match="not found"):
        load_segmenter(f"sam:vit_b:{tmp_path / 'missing.pth'}")
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ModelLoadError, match="check the kind"):
        load_segmenter(f"sam:{tiny.TINY_META_KIND}:{bad}")


def test_model_source_no_boxes_means_no_sam(models, monkeypatch, tmp_path):
    tiny.write_dataset(tmp_path, pairs=2)
    pairs = [
        (f"{i:04d}", tmp_path / "ir" / f"{i:04d}.png", tmp_path / "vi" / f"{i:04d}.png")
        for i in range(2)
    ]
    config = ModelMaskConfig(
        detector=str(models["detector"]), segmenter=str(models["segmenter"]), box_threshold=2.0
    )
    source = ModelMaskSource(config)
    source.setup()
    monkeypatch.setattr(
        source.segmenter, "_embed", lambda batch: pytest.fail("SAM ran without boxes")
    )
    result = source.process(source.load(pairs))
    assert [p.stem for p in result] == ["0000", "0001"]
    for pair in result:
        assert (
            pair.ir.source == f"{pair.stem}.png"
            and not pair.ir.mask.any()
            and not pair.vi.mask.any()
        )
        assert pair.ir.mask.shape == (40, 56) and pair.vi.boxes.shape == (0, 4)
    assert source.settings["prompt"] == normalize_prompt(tiny.PROMPT)
    assert source.settings["detector"] == str(models["detector"].resolve())
    with pytest.raises(ValueError, match="threshold"):
        ModelMaskConfig(box_threshold=-0.1)


def test_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    # Without HF_HUB_OFFLINE, a model missing from the cache must not spend minutes in the
    # hub client's retries: occo checks reachability first (patched here: no network).
    import time

    from huggingface_hub import constants

    import occo.masks.detector as detector

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(detector, "hub_reachable", lambda timeout=3.0: False)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        GroundingDinoDetector("IDEA-Research/grounding-dino-base")
    assert time.perf_counter() - started < 10
    message = str(info.value)
    assert "cannot be reached" in message and "hf download" in message and "\n" not in message
