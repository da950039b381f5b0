"""SAM prompted with boxes: one binary mask per image, the union over its boxes.

Two back ends: Hugging Face ``SamModel`` (any SAM or SlimSAM id or folder) and Meta's
``segment_anything`` checkpoints (``sam:vit_h:PATH``). Both embed a batch of images in one
pass, prompt each image with its boxes (single-mask output, as Grounded-SAM does) and
OR the per-box masks at the original image size. Images without boxes are not embedded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from occo.masks.detector import (
    ModelLoadError,
    autocast,
    image_processor_on_device,
    load_pretrained,
    model_source,
)

#: The segmenter occo uses unless told otherwise.
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"
#: Prefix of a Meta segment-anything checkpoint spec: ``sam:KIND:PATH``.
META_PREFIX = "sam:"


class BoxSegmenter:
    """Common driver: skip images without boxes, embed the rest in one batch, union masks.

    Subclasses implement :meth:`_embed` and :meth:`_masks_for_boxes`.
    """

    name: str = ""
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    box_chunk: int = 16

    @torch.inference_mode()
    def segment(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Union-of-boxes masks for a batch of images.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays (sizes may differ).
            boxes: per image ``(N, 4)`` float boxes x0 y0 x1 y1 in its pixels; N may be 0.

        Returns:
            Per image a ``(H, W)`` uint8 mask with values 0/1 (all 0 when N is 0).
        """
        masks = [np.zeros(img.shape[:2], np.uint8) for img in images]
        unions: dict[int, torch.Tensor] = {}
        for i, part in self._box_masks(images, boxes):
            if i not in unions:
                unions[i] = torch.zeros(images[i].shape[:2], dtype=torch.bool, device=self.device)
            unions[i] |= part.any(dim=0)
        for i, union in unions.items():
            masks[i] = union.to(torch.uint8).cpu().numpy()
        return masks

    @torch.inference_mode()
    def segment_each(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """One mask per box (for class maps, where each box keeps its own class).

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays (sizes may differ).
            boxes: per image ``(N, 4)`` float boxes x0 y0 x1 y1 in its pixels.

        Returns:
            Per image an ``(N, H, W)`` bool array, in box order.
        """
        parts: dict[int, list[np.ndarray]] = {}
        for i, part in self._box_masks(images, boxes):
            parts.setdefault(i, []).append(part.cpu().numpy())
        return [
            np.concatenate(parts[i]) if i in parts else np.zeros((0, *img.shape[:2]), bool)
            for i, img in enumerate(images)
        ]

    def _box_masks(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Embed the images that have boxes in one batch; yield ``(image index, (n, H, W) bool)``
        per chunk of boxes, in box order."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return
        embeddings, geometry = self._embed([images[i] for i in todo])
        for j, i in enumerate(todo):
            box = torch.as_tensor(np.asarray(boxes[i], np.float32), device=self.device)  # (N, 4)
            # Chunks of boxes bound memory: each box's mask is upsampled to full size.
            for start in range(0, len(box), self.box_chunk):
                yield (
                    i,
                    self._masks_for_boxes(
                        embeddings[j : j + 1], geometry[j], box[start : start + self.box_chunk]
                    ),
                )

    def _embed(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list]:
        raise NotImplementedError

    def _masks_for_boxes(
        self, embedding: torch.Tensor, geometry: object, boxes: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


class HFSamSegmenter(BoxSegmenter):
    """transformers ``SamModel`` + ``SamProcessor`` (SAM ViT-B/L/H, SlimSAM, local folders).

    Args:
        model: hub id or folder, e.g. ``facebook/sam-vit-huge``.
        device: where the model runs.
        dtype: float32, or float16/bfloat16 for autocast.
        box_chunk: boxes decoded and upsampled together (memory bound).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_SEGMENTER,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        box_chunk: int = 16,
    ) -> None:
        from transformers import SamModel, SamProcessor

        self.name = model_source(model)
        self.device = torch.device(device)
        self.dtype = dtype
        self.box_chunk = int(box_chunk)
        self.processor = load_pretrained(SamProcessor, model, "segmenter", "--segmenter")
        net = load_pretrained(SamModel, model, "segmenter", "--segmenter")
        self.model = net.to(self.device).eval()

    def _embed(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list]:
        image_processor = self.processor.image_processor
        tensors = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) for img in images]
        extra = {"device": self.device} if image_processor_on_device(image_processor) else {}
        encoded = image_processor(tensors, return_tensors="pt", **extra)
        pixels = encoded["pixel_values"].to(self.device)  # (B, 3, S, S), padded square
        with autocast(self.device, self.dtype):
            embeddings = self.model.get_image_embeddings(pixels)  # (B, C, s, s)
        geometry = [
            (tuple(int(v) for v in orig), tuple(int(v) for v in resized))
            for orig, resized in zip(
                encoded["original_sizes"], encoded["reshaped_input_sizes"], strict=True
            )
        ]
        return embeddings, geometry

    def _masks_for_boxes(
        self, embedding: torch.Tensor, geometry: object, boxes: torch.Tensor
    ) -> torch.Tensor:
        (height, width), (new_h, new_w) = geometry
        # Boxes into the resized frame, as SamProcessor does for input_boxes.
        scale = torch.tensor([new_w / width, new_h / height] * 2, device=boxes.device)
        with autocast(self.device, self.dtype):
            out = self.model(
                image_embeddings=embedding,
                input_boxes=(boxes * scale)[None],
                multimask_output=False,
            )
        low_res = out.pred_masks[0].float()  # (N, 1, h, w) logits
        full = self.processor.image_processor.post_process_masks(
            [low_res], [(height, width)], [(new_h, new_w)], binarize=True
        )[0]  # (N, 1, H, W) bool
        return full[:, 0]


class MetaSamSegmenter(BoxSegmenter):
    """Meta's ``segment_anything`` checkpoint (``sam_vit_h_4b8939.pth`` and kin).

    Preprocessing, box transform and postprocessing follow ``SamPredictor``; the image
    encoder runs on the whole batch at once.

    Args:
        kind: a key of ``segment_anything.sam_model_registry`` (vit_h, vit_l, vit_b).
        checkpoint: the ``.pth`` state dict.
        device: where the model runs.
        dtype: float32, or float16/bfloat16 for autocast.
        box_chunk: boxes decoded and upsampled together (memory bound).
    """

    def __init__(
        self,
        kind: str,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        box_chunk: int = 16,
    ) -> None:
        from segment_anything import sam_model_registry
        from segment_anything.utils.transforms import ResizeLongestSide

        checkpoint = Path(checkpoint).expanduser()
        if kind not in sam_model_registry:
            raise ModelLoadError(
                f"unknown segment-anything model kind '{kind}'; use one of "
                f"{', '.join(sorted(sam_model_registry))}, e.g. --segmenter sam:vit_h:sam_vit_h_4b8939.pth"
            )
        if not checkpoint.is_file():
            raise ModelLoadError(f"segment-anything checkpoint not found: {checkpoint}")
        self.name = f"{META_PREFIX}{kind}:{checkpoint.resolve()}"
        self.device = torch.device(device)
        self.dtype = dtype
        self.box_chunk = int(box_chunk)
        sam = sam_model_registry[kind](checkpoint=None)
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            sam.load_state_dict(state)
        except Exception as exc:  # unpickling and shape errors alike mean "wrong file"
            raise ModelLoadError(
                f"cannot load {checkpoint} as a segment-anything {kind} checkpoint: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                f"check the kind (vit_h, vit_l, vit_b) matches the file"
            ) from exc
        self.model = sam.to(self.device).eval()
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    def _embed(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list]:
        batch, geometry = [], []
        for image in images:
            resized = self.transform.apply_image(image)  # (h, w, 3) uint8, longest side = img_size
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
            batch.append(self.model.preprocess(tensor[None])[0])  # normalised, padded square
            geometry.append((image.shape[:2], resized.shape[:2]))
        with autocast(self.device, self.dtype):
            embeddings = self.model.image_encoder(torch.stack(batch))  # (B, 256, 64, 64)
        return embeddings, geometry

    def _masks_for_boxes(
        self, embedding: torch.Tensor, geometry: object, boxes: torch.Tensor
    ) -> torch.Tensor:
        original, resized = geometry
        sam = self.model
        prompt_boxes = self.transform.apply_boxes_torch(boxes, original)
        with autocast(self.device, self.dtype):
            sparse, dense = sam.prompt_encoder(points=None, boxes=prompt_boxes, masks=None)
            low_res, _ = sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )  # (N, 1, 256, 256)
        full = sam.postprocess_masks(
            low_res.float(), tuple(resized), tuple(original)
        )  # (N, 1, H, W)
        return full[:, 0] > sam.mask_threshold


def load_segmenter(
    spec: str | Path = DEFAULT_SEGMENTER,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    box_chunk: int = 16,
) -> BoxSegmenter:
    """Load a segmenter from a spec.

    Args:
        spec: a Hugging Face SAM id or folder (``facebook/sam-vit-huge``,
            ``Zigeng/SlimSAM-uniform-77``, ``./sam-vit-base``), or ``sam:KIND:PATH`` for a
            Meta segment-anything checkpoint (``sam:vit_h:sam_vit_h_4b8939.pth``).
        device: where the model runs.
        dtype: float32, or float16/bfloat16 for autocast.
        box_chunk: boxes decoded together.

    Returns:
        A loaded :class:`BoxSegmenter`.
    """
    text = str(spec)
    if text.startswith(META_PREFIX):
        kind, sep, path = text[len(META_PREFIX) :].partition(":")
        if not sep or not path:
            raise ModelLoadError(
                f"bad segmenter '{text}': write sam:KIND:PATH, e.g. sam:vit_h:sam_vit_h_4b8939.pth"
            )
        return MetaSamSegmenter(kind, path, device=device, dtype=dtype, box_chunk=box_chunk)
    return HFSamSegmenter(spec, device=device, dtype=dtype, box_chunk=box_chunk)


def segmenter_source(spec: str | Path) -> str:
    """How a segmenter spec is recorded in settings (absolute paths for files and folders)."""
    text = str(spec)
    if text.startswith(META_PREFIX):
        kind, _, path = text[len(META_PREFIX) :].partition(":")
        return f"{META_PREFIX}{kind}:{Path(path).expanduser().resolve()}"
    return model_source(spec)
