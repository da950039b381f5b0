"""Offline stand-ins for the mask models: tiny random Grounding DINO and SAM built from
configs and saved with ``save_pretrained``, a tiny Meta segment-anything model, synthetic
datasets, and a store comparison. Used by tests/test_masks_*.py and benchmarks/bench_masks.py.

Also builds full-size random models (Grounding DINO tiny, SAM ViT-B/H) for the GPU benchmark:
speed does not depend on the weights' values.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import h5py
import numpy as np
import torch

from occo.data.io import write_image_atomic

PROMPT = "The scene captures a group of pedestrians or cars."
#: Grounding DINO hard-codes bert-base-uncased ids of [CLS], [SEP], "." and "?".
_SPECIAL_IDS = {
    101: "[CLS]",
    102: "[SEP]",
    103: "[MASK]",
    100: "[UNK]",
    0: "[PAD]",
    1012: ".",
    1029: "?",
}
TINY_META_KIND = "vit_tiny"


def bert_vocab(words: list[str], size: int = 0) -> list[str]:
    """A WordPiece vocabulary with bert-base-uncased's special ids, then ``words``, padded to ``size``."""
    vocab = [_SPECIAL_IDS.get(i, f"[unused{i}]") for i in range(1030)]
    vocab += [w for w in dict.fromkeys(words) if w not in vocab]
    vocab += [f"[unused{i}]" for i in range(len(vocab), size)]
    return vocab


def save_grounding_dino(folder: Path, tiny: bool = True, num_queries: int = 6) -> Path:
    """Save a random Grounding DINO with its processor (tokenizer + image processor).

    Args:
        folder: created; receives config.json, model.safetensors, tokenizer and processor files.
        tiny: a few-thousand-parameter model working at 64 px (tests), or the full
            grounding-dino-tiny architecture (Swin-T + BERT-base, 800 px) for benchmarks.
        num_queries: detection slots of the tiny model (each becomes a box when scores pass).

    Returns:
        ``folder``.
    """
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = PROMPT.lower().replace(".", " ").split() + ["person", "car", "people"]
    vocab = bert_vocab(words, size=0 if tiny else 30522)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
    torch.manual_seed(0)
    if tiny:
        config = GroundingDinoConfig(
            backbone_config=SwinConfig(
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                window_size=7,
                image_size=64,
                out_features=["stage2", "stage3", "stage4"],
                out_indices=[2, 3, 4],
            ),
            text_config=BertConfig(
                vocab_size=len(vocab),
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=64,
            ),
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            num_queries=num_queries,
            max_text_len=32,
            encoder_n_points=1,
            decoder_n_points=1,
        )
        image_processor = GroundingDinoImageProcessor(
            size={"shortest_edge": 64, "longest_edge": 96}
        )
    else:
        config = GroundingDinoConfig()  # the grounding-dino-tiny architecture
        image_processor = GroundingDinoImageProcessor()
    model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(folder)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        folder
    )
    return folder


def save_sam(folder: Path, size: str = "tiny") -> Path:
    """Save a random transformers SAM with its processor.

    Args:
        folder: created.
        size: ``tiny`` (64 px input, tests), ``vit_b`` or ``vit_h`` (full architecture, 1024 px).

    Returns:
        ``folder``.
    """
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    folder = Path(folder)
    torch.manual_seed(0)
    if size == "tiny":
        config = SamConfig(
            vision_config=SamVisionConfig(
                hidden_size=32,
                output_channels=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=64,
                patch_size=8,
                window_size=4,
                global_attn_indexes=[1],
                num_pos_feats=16,
                mlp_dim=32,
            ),
            prompt_encoder_config=SamPromptEncoderConfig(
                hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4
            ),
            mask_decoder_config=SamMaskDecoderConfig(
                hidden_size=32,
                mlp_dim=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                iou_head_hidden_dim=32,
            ),
        )
        processor = SamImageProcessor(
            size={"longest_edge": 64},
            pad_size={"height": 64, "width": 64},
            mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    elif size == "vit_b":
        config = SamConfig()
        processor = SamImageProcessor()
    elif size == "vit_h":
        config = SamConfig(
            vision_config=SamVisionConfig(
                hidden_size=1280,
                num_hidden_layers=32,
                num_attention_heads=16,
                global_attn_indexes=[7, 15, 23, 31],
            )
        )
        processor = SamImageProcessor()
    else:
        raise ValueError(f"unknown SAM size {size}")
    SamModel(config).eval().save_pretrained(folder)
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return folder


def build_tiny_meta_sam(checkpoint: str | None = None):
    """A tiny segment-anything ``Sam`` (64 px input); the shape of a ``sam_model_registry`` builder."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    dim = 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=64,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=1.0,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=4,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=32, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    ).eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam


def save_tiny_meta_sam(path: Path) -> Path:
    """Save a tiny segment-anything state dict (``.pth``) like Meta's checkpoints."""
    torch.manual_seed(0)
    torch.save(build_tiny_meta_sam().state_dict(), path)
    return path


def write_dataset(
    folder: Path, pairs: int = 4, size: tuple[int, int] = (40, 56), seed: int = 0
) -> Path:
    """A synthetic dataset: ``ir/`` gray PNGs and ``vi/`` RGB PNGs with bright blobs."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    h, w = size
    for i in range(pairs):
        base = rng.integers(0, 60, (h, w), dtype=np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        base[y : y + h // 3, x : x + w // 4] = 220
        vi = np.stack(
            [base, np.roll(base, 3, axis=1), rng.integers(0, 255, (h, w), dtype=np.uint8)], axis=2
        )
        write_image_atomic(folder / "ir" / f"{i:04d}.png", base)
        write_image_atomic(folder / "vi" / f"{i:04d}.png", vi.astype(np.uint8))
    return folder


def store_differences(
    a: Path, b: Path, ignore: tuple[str, ...] = ("created_utc", "updated_utc")
) -> list[str]:
    """Every difference in datasets and attributes between two HDF5 files (empty: same content)."""
    diffs: list[str] = []

    def attrs_of(obj) -> dict:
        return {k: v for k, v in obj.attrs.items() if k not in ignore}

    def same(x, y) -> bool:
        x, y = np.asarray(x), np.asarray(y)
        return x.shape == y.shape and x.dtype.kind == y.dtype.kind and bool(np.all(x == y))

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        items_a, items_b = {}, {}
        fa.visititems(lambda name, obj: items_a.__setitem__(name, obj) or None)
        fb.visititems(lambda name, obj: items_b.__setitem__(name, obj) or None)
        for name in sorted(set(items_a) ^ set(items_b)):
            diffs.append(f"only in one file: {name}")
        for name, path_attrs in [("/", (attrs_of(fa), attrs_of(fb)))] + [
            (n, (attrs_of(items_a[n]), attrs_of(items_b[n])))
            for n in sorted(set(items_a) & set(items_b))
        ]:
            xa, xb = path_attrs
            for key in sorted(set(xa) | set(xb)):
                if key not in xa or key not in xb or not same(xa[key], xb[key]):
                    diffs.append(f"attribute {name}@{key} differs")
        for name in sorted(set(items_a) & set(items_b)):
            if isinstance(items_a[name], h5py.Dataset) and not same(
                items_a[name][()], items_b[name][()]
            ):
                diffs.append(f"dataset {name} differs")
    return diffs
