"""Grounding DINO (Hugging Face transformers) as a batched, text-prompted box detector."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occo.data.errors import OccoError

#: The detector occo uses unless told otherwise (172 M parameters, 689 MB).
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
#: The OCCO paper's Grounding DINO prompt.
DEFAULT_PROMPT = "The scene captures a group of pedestrians or cars."


class ModelLoadError(OccoError, OSError):
    """A detector or segmenter could not be loaded (missing offline, wrong folder, bad file)."""


def normalize_prompt(prompt: str) -> str:
    """Grounding DINO's caption convention: lowercased, stripped, ending with ``"."``.

    Args:
        prompt: free text, e.g. ``"The scene captures a group of pedestrians or cars."``.

    Returns:
        The caption the model sees, e.g. ``"the scene captures a group of pedestrians or cars."``.
    """
    caption = " ".join(prompt.lower().split())
    if not caption:
        raise ValueError("the prompt is empty; pass --prompt with the objects to find")
    return caption if caption.endswith(".") else caption + "."


def model_source(name: str | Path) -> str:
    """How a model is recorded in settings: a folder as its absolute path, a hub id as is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name)


def load_pretrained(loader: Callable[..., Any], name: str | Path, what: str, option: str) -> Any:
    """Call ``loader.from_pretrained(name)`` and turn a missing model into a clear OccoError.

    Args:
        loader: a transformers class or Auto class with ``from_pretrained``.
        name: hub id or local folder.
        what: what the model is, for the message ("detector", "segmenter").
        option: the CLI option that picks it, for the message ("--detector").

    Returns:
        Whatever ``from_pretrained`` returns.

    Raises:
        ModelLoadError: the model is neither a folder nor in the local Hugging Face cache
            (occo never downloads when HF_HUB_OFFLINE is set), or the folder is not a model.
    """
    path = Path(name).expanduser()
    # Hub ids are "owner/name"; anything else that names no folder is a mistyped path.
    looks_like_path = (
        path.is_absolute() or str(name).startswith((".", "~")) or str(name).count("/") > 1
    )
    looks_like_path = looks_like_path or path.exists()
    if looks_like_path and not path.exists():
        raise ModelLoadError(
            f"{what} folder not found: {path}; pass a model folder or hub id to {option}"
        )
    if path.is_dir():
        try:
            return loader.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"cannot load the {what} from {path}: {_first_line(exc)}; the folder must hold "
                f"config.json and weights as written by save_pretrained"
            ) from exc
    missing = (
        f"cannot load the {what} '{name}': it is not in the local Hugging Face cache and "
        "{why}; on a machine with internet run "
        f"`{download_command(str(name))}`, copy DIR here and pass {option} DIR"
    )
    try:  # the cache first: no network round trips (and no retries) for a cached model
        return loader.from_pretrained(str(name), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        cached_error = exc
    if _offline():
        raise ModelLoadError(missing.format(why="HF_HUB_OFFLINE is set")) from cached_error
    if not hub_reachable():
        # Without this check the hub client retries for minutes before failing.
        raise ModelLoadError(missing.format(why="the Hugging Face hub cannot be reached")) from None
    try:
        return loader.from_pretrained(str(name))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            missing.format(why=f"downloading failed ({_first_line(exc)})")
        ) from exc


def download_command(name: str) -> str:
    """The command that downloads hub model ``name`` with the installed huggingface_hub."""
    import huggingface_hub

    # `hf` came with huggingface_hub 0.34 and replaced `huggingface-cli` (gone in 1.0).
    major, minor = (int(part) for part in huggingface_hub.__version__.split(".")[:2])
    tool = "hf" if (major, minor) >= (0, 34) else "huggingface-cli"
    return f"{tool} download {name} --local-dir DIR"


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` s."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def image_processor_on_device(image_processor: Any) -> bool:
    """True for torchvision-backed ("fast") image processors, which can resize on the GPU."""
    try:
        from transformers.image_processing_backends import TorchvisionBackend
    except ImportError:  # older transformers: process on the CPU
        return False
    return isinstance(image_processor, TorchvisionBackend)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for ``dtype`` float16/bfloat16; a no-op for float32 (full precision)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """An image as read by ``data.io.read_image`` as ``(H, W, 3)`` uint8 RGB for the models.

    Gray images (infrared) are repeated to three channels. 16-bit images are stretched
    from their own min..max to 0..255, because raw thermal counts fill only a narrow
    band of the 16-bit range.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``, uint8 or uint16.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = np.round((image.astype(np.float32) - low) * scale).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


@dataclass
class Detections:
    """Boxes found in one image."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    """``(N, 4)`` float32 boxes, x0 y0 x1 y1 in pixels of the original image."""
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    """``(N,)`` float32 confidence of each box (max over prompt tokens)."""
    labels: list[str] = field(default_factory=list)
    """The prompt phrase each box matched (tokens above the text threshold)."""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.labels = [str(label) for label in self.labels]
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(
                f"{len(self.boxes)} boxes, {len(self.scores)} scores and {len(self.labels)} labels"
            )


class GroundingDinoDetector:
    """Grounding DINO loaded once; finds the prompt's objects in batches of images.

    Args:
        model: hub id or folder (``from_pretrained``), e.g. ``IDEA-Research/grounding-dino-tiny``.
        device: where the model runs.
        dtype: float32, or float16/bfloat16 for autocast (half precision on GPU).
        box_threshold: keep boxes whose best token score is above this (a value above 1
            keeps none).
        text_threshold: tokens above this form the box's phrase.
        max_boxes: keep at most this many boxes per image, best first (0: no limit).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_DETECTOR,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        max_boxes: int = 0,
    ) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if box_threshold < 0 or text_threshold < 0:
            raise ValueError("thresholds must be >= 0")
        if max_boxes < 0:
            raise ValueError("max_boxes must be >= 0 (0: no limit)")
        self.name = model_source(model)
        self.device = torch.device(device)
        self.dtype = dtype
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.max_boxes = int(max_boxes)
        self.processor = load_pretrained(AutoProcessor, model, "detector", "--detector")
        net = load_pretrained(AutoModelForZeroShotObjectDetection, model, "detector", "--detector")
        self.model = net.to(self.device).eval()
        # Special tokens ([CLS], [SEP], [PAD]) leak into phrases decoded by transformers.
        self._special = set(getattr(self.processor.tokenizer, "all_special_tokens", []))

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray], prompt: str) -> list[Detections]:
        """Find the prompt's objects in a batch of images (one forward pass).

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays; sizes may differ (the processor pads).
            prompt: the text prompt; normalised with :func:`normalize_prompt`.

        Returns:
            One :class:`Detections` per image, boxes in that image's pixels.
        """
        if not images:
            return []
        inputs, outputs = self._forward(images, normalize_prompt(prompt))
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[img.shape[:2] for img in images],
        )
        return [self._to_detections(result) for result in results]

    def _forward(self, images: Sequence[np.ndarray], caption: str) -> tuple[Any, Any]:
        """One forward pass; logits ``(B, Q, T)`` and boxes ``(B, Q, 4)`` returned as float32."""
        tensors = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) for img in images]
        extra = (
            {"device": self.device}
            if image_processor_on_device(self.processor.image_processor)
            else {}
        )
        inputs = self.processor(
            images=tensors, text=[caption] * len(images), return_tensors="pt", **extra
        ).to(self.device)
        with autocast(self.device, self.dtype):
            outputs = self.model(**inputs)
        outputs.logits = outputs.logits.float()  # (B, Q, T)
        outputs.pred_boxes = outputs.pred_boxes.float()  # (B, Q, 4) cx cy w h, relative
        return inputs, outputs

    @torch.inference_mode()
    def class_scores(
        self, images: Sequence[np.ndarray], class_names: Sequence[str]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, a box and a score for each class, for closed-vocabulary evaluation.

        The caption lists the classes (``"person . bicycle . car ."``, Grounding DINO's
        format for category lists); a class's score is the mean sigmoid over its own
        tokens, as mmdetection scores Grounding DINO on COCO.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            class_names: the classes, in order.

        Returns:
            Per image ``(boxes (Q, 4) x0 y0 x1 y1 pixels, scores (Q, K))`` float32.
        """
        if not images:
            return []
        caption, spans = self.class_caption(class_names)
        inputs, outputs = self._forward(images, caption)
        ids = inputs["input_ids"][0].tolist()
        for (start, stop), tokens in spans:
            if ids[start:stop] != tokens:
                raise ValueError(f"the tokenizer split the class list unexpectedly: {caption}")
        probs = outputs.logits.sigmoid()  # (B, Q, T); -inf past the text gives 0
        scores = torch.stack([probs[..., a:b].mean(-1) for (a, b), _ in spans], dim=-1)
        results = []
        for image, boxes, score in zip(images, outputs.pred_boxes, scores, strict=True):
            height, width = image.shape[:2]
            cx, cy, w, h = boxes.unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
            xyxy = xyxy * torch.tensor([width, height, width, height], device=xyxy.device)
            results.append((xyxy.cpu().numpy(), score.cpu().numpy()))
        return results

    def class_caption(self, class_names: Sequence[str]) -> tuple[str, list]:
        """The caption for a class list and each class's token span ``((start, stop), ids)``."""
        tokenizer = self.processor.tokenizer
        names = [
            " ".join(n.replace("_", " ").replace("-", " ").lower().split()) for n in class_names
        ]
        if not names or not all(names):
            raise ValueError("give the classes to detect, e.g. --classes person,car")
        caption = " . ".join(names) + " ."
        spans, position = [], 1  # after [CLS]
        for name in names:
            tokens = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(name))
            spans.append(((position, position + len(tokens)), tokens))
            position += len(tokens) + 1  # the "." separator
        limit = int(getattr(self.model.config, "max_text_len", 256))
        if position + 1 > limit:
            raise ValueError(
                f"{len(names)} class names take {position + 1} text tokens; Grounding DINO reads "
                f"at most {limit}: score fewer classes per run (--classes)"
            )
        return caption, spans

    def _to_detections(self, result: dict) -> Detections:
        scores = result["scores"].float().cpu().numpy()
        boxes = result["boxes"].float().cpu().numpy()
        # batch_decode([]) gives one empty string: no boxes, no phrases.
        labels = [self._clean(text) for text in result["text_labels"]][: len(scores)]
        if self.max_boxes and len(scores) > self.max_boxes:
            keep = np.argsort(-scores, kind="stable")[: self.max_boxes]
            keep.sort()  # keep the model's query order among the survivors
            scores, boxes, labels = scores[keep], boxes[keep], [labels[i] for i in keep]
        return Detections(boxes=boxes, scores=scores, labels=labels)

    def _clean(self, text: str) -> str:
        return " ".join(word for word in text.split() if word not in self._special)
