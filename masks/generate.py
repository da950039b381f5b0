"""The batched pipeline: pairs -> boxes -> masks -> store; resumable, sharded by rank.

The pairs still missing from the store are cut into a fixed schedule of chunks of
``batch_size`` pairs. Chunk ``k`` goes to rank ``k % world_size``; each finished chunk is
written to the journal (``<store>.parts/``) atomically; rank 0 merges the journal into
the store when every chunk is done. Because the schedule depends only on the dataset,
the store and the batch size, a killed and resumed run, or a run on N GPUs, computes
each pair in the same batch as one uninterrupted process and ends with the same store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from occo.data.io import read_image
from occo.data.version import OCCO_VERSION
from occo.masks.detector import (
    DEFAULT_DETECTOR,
    DEFAULT_PROMPT,
    GroundingDinoDetector,
    model_source,
    normalize_prompt,
    to_rgb8,
)
from occo.masks.segmenter import DEFAULT_SEGMENTER, BoxSegmenter, load_segmenter, segmenter_source
from occo.masks.sources import MaskSource, Pair
from occo.masks.store import (
    FORMAT,
    STORE_VERSION,
    DamagedStoreError,
    MaskReader,
    MaskStoreError,
    ModalityMasks,
    PairMasks,
    PartsJournal,
    SettingsMismatchError,
    now_utc,
    read_store_attrs,
    settings_differences,
)
from occo.runtime import DistContext

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------- devices


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> float16 on GPU (half precision), float32 elsewhere; names are checked."""
    if dtype == "auto":
        return "float16" if device.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}")
    return dtype


# ----------------------------------------------------------------------------- models


@dataclass
class ModelMaskConfig:
    """Settings of Grounding DINO + SAM mask generation (defaults: the paper's / Grounded-SAM's)."""

    prompt: str = DEFAULT_PROMPT
    """Text prompt for Grounding DINO, on both modalities."""
    detector: str = DEFAULT_DETECTOR
    """Grounding DINO hub id or folder."""
    segmenter: str = DEFAULT_SEGMENTER
    """SAM hub id or folder, or ``sam:KIND:PATH`` for a Meta checkpoint."""
    box_threshold: float = 0.3
    """Keep boxes scoring above this (above 1 keeps none)."""
    text_threshold: float = 0.25
    """Prompt tokens above this form a box's phrase."""
    max_boxes: int = 0
    """At most this many boxes per image, best first (0: no limit)."""
    dtype: str = "float32"
    """float32, or float16/bfloat16 autocast (half precision on GPU)."""

    def __post_init__(self) -> None:
        self.prompt = normalize_prompt(self.prompt)
        if self.box_threshold < 0 or self.text_threshold < 0:
            raise ValueError("--box-threshold and --text-threshold must be >= 0")
        if self.max_boxes < 0:
            raise ValueError("--max-boxes must be >= 0 (0: no limit)")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'; use {', '.join(DTYPES)}")


class ModelMaskSource:
    """Grounding DINO boxes prompting SAM, both loaded once (on first use).

    Args:
        config: prompt, models, thresholds, precision.
        device: where both models run.
    """

    def __init__(self, config: ModelMaskConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.settings = {
            "source": "models",
            "prompt": config.prompt,
            "detector": model_source(config.detector),
            "segmenter": segmenter_source(config.segmenter),
            "box_threshold": float(config.box_threshold),
            "text_threshold": float(config.text_threshold),
            "max_boxes": int(config.max_boxes),
            "dtype": config.dtype,
        }
        self.detector: GroundingDinoDetector | None = None
        self.segmenter: BoxSegmenter | None = None

    def setup(self) -> None:
        """Load both models (idempotent; called before the first batch)."""
        dtype = DTYPES[self.config.dtype]
        if self.detector is None:
            self.detector = GroundingDinoDetector(
                self.config.detector,
                device=self.device,
                dtype=dtype,
                box_threshold=self.config.box_threshold,
                text_threshold=self.config.text_threshold,
                max_boxes=self.config.max_boxes,
            )
        if self.segmenter is None:
            self.segmenter = load_segmenter(self.config.segmenter, device=self.device, dtype=dtype)

    def warnings(self) -> list[str]:
        """Nothing to say after a run."""
        return []

    def load(self, pairs: Sequence[Pair]) -> list[tuple]:
        """Read the pairs' images as ``(H, W, 3)`` uint8 (infrared repeated to 3 channels)."""
        return [
            (stem, to_rgb8(read_image(ir)), to_rgb8(read_image(vi)), Path(ir).name, Path(vi).name)
            for stem, ir, vi in pairs
        ]

    def process(self, loaded: list[tuple]) -> list[PairMasks]:
        """Detect on all 2B images in one batch, then segment the ones with boxes."""
        self.setup()
        assert self.detector is not None and self.segmenter is not None
        images = [img for _, ir, vi, _, _ in loaded for img in (ir, vi)]  # ir0 vi0 ir1 vi1 ...
        detections = self.detector.detect(images, self.config.prompt)
        masks = self.segmenter.segment(images, [d.boxes for d in detections])
        results = []
        for i, (stem, _, _, ir_name, vi_name) in enumerate(loaded):
            entries = {}
            for j, (modality, name) in enumerate((("ir", ir_name), ("vi", vi_name))):
                det = detections[2 * i + j]
                entries[modality] = ModalityMasks(
                    mask=masks[2 * i + j],
                    boxes=det.boxes,
                    scores=det.scores,
                    labels=det.labels,
                    source=name,
                )
            results.append(PairMasks(stem=stem, **entries))
        return results


# ----------------------------------------------------------------------------- the run


@dataclass
class GenerateResult:
    """What a run did (numbers for this process; ``stored`` from rank 0)."""

    store: Path
    """The mask store."""
    pairs: int
    """Pairs in the dataset."""
    skipped: int
    """Pairs already in the store before the run."""
    resumed: int
    """Pairs of this rank's share found done in an interrupted run's journal."""
    computed: int
    """Pairs this process computed."""
    stored: int
    """Pairs in the store after the run (rank 0; 0 on other ranks or when unchanged)."""
    empty_ir: int
    """New pairs whose infrared mask is empty (rank 0)."""
    empty_vi: int
    """New pairs whose visible mask is empty (rank 0)."""
    seconds: float
    """Wall time of the compute loop (pairs / seconds is the throughput)."""


def plan(pairs: Sequence[Pair], done: set[str], batch_size: int) -> list[list[Pair]]:
    """The fixed schedule: the pairs not yet done, sorted by stem, in chunks of ``batch_size``."""
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    todo = sorted((p for p in pairs if p[0] not in done), key=lambda p: p[0])
    return [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]


def generate_masks(
    pairs: Sequence[Pair],
    out: str | Path,
    source: MaskSource,
    *,
    batch_size: int = 4,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
    dist: DistContext | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Make (or complete) a mask store for the pairs.

    Args:
        pairs: ``(stem, ir_path, vi_path)`` of the dataset.
        out: the store (``masks.h5``).
        source: what makes the masks (:func:`occo.masks.sources.build_source`).
        batch_size: pairs per batch (2 x images for the models); also the journal's unit.
        overwrite: replace a store or journal made with other settings (and redo all pairs).
        meta: the files the masks come from (ir_dir, vi_dir, annotation folders and their
            fingerprints: :func:`occo.masks.sources.source_files`), compared on a rerun like
            the source's settings.
        dist: the process's rank; default: one process.
        progress: called as ``progress(done, total)`` for this rank's share.

    Returns:
        A :class:`GenerateResult`.

    Raises:
        SettingsMismatchError: the store or journal holds other settings and no overwrite.
        DamagedStoreError: ``out`` is a damaged store and no overwrite.
        MaskStoreError: ``out`` exists and is not a mask store (never replaced), or no pairs.
    """
    out = Path(out)
    dist = dist or DistContext()
    if not pairs:
        raise MaskStoreError("no image pairs to make masks for")
    # The files the masks come from are settings too: a rerun on other ones is refused.
    settings = {**(meta or {}), **source.settings}
    created = now_utc()
    previous: Path | None = None
    done: set[str] = set()
    if out.exists() and overwrite:
        try:
            read_store_attrs(out, audit=False)  # only an occo store, or a damaged one, is replaced
        except DamagedStoreError:
            pass
        except MaskStoreError as exc:
            raise MaskStoreError(
                f"{exc.args[0].split(';')[0]}; --overwrite replaces only occo mask stores: "
                "choose another --out, or move the file away"
            ) from None
    elif out.exists():
        reader = MaskReader(out)  # checked whole: its pairs are copied into the new store
        attrs = reader.settings
        diff = settings_differences(attrs, settings)
        if diff:
            raise SettingsMismatchError(
                f"{out} was made with other settings ({'; '.join(diff)}); use the same settings to "
                f"add to it, another --out, or --overwrite to replace it"
            )
        previous = out
        created = str(attrs.get("created_utc", created))
        done = set(reader.stems())
    chunks = plan(pairs, done, batch_size)
    chunk_stems = [[p[0] for p in chunk] for chunk in chunks]
    journal = PartsJournal(out)
    result = GenerateResult(out, len(pairs), len(pairs) - sum(map(len, chunks)), 0, 0, 0, 0, 0, 0.0)

    if not chunks:  # everything is in the store already
        if dist.rank == 0 and journal.exists():
            journal.remove()  # left by a kill after the last merge
        return result

    journal.check(settings, overwrite)  # fail before loading models
    source.setup()  # load models once, before the journal changes and outside the timed loop
    if dist.rank == 0:
        journal.prepare(settings, chunk_stems, overwrite, settings)
    dist.barrier()

    mine = [k for k in range(len(chunks)) if k % dist.world_size == dist.rank]
    total = sum(len(chunks[k]) for k in mine)
    todo = [k for k in mine if not journal.has(k, chunk_stems[k])]
    result.resumed = total - sum(len(chunks[k]) for k in todo)
    if progress:
        progress(result.resumed, total)
    start = time.perf_counter()
    finished = result.resumed
    # Read the next chunk's images while the models work on this one.
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(source.load, chunks[todo[0]]) if todo else None
        for n, k in enumerate(todo):
            assert pending is not None
            loaded = pending.result()
            pending = reader.submit(source.load, chunks[todo[n + 1]]) if n + 1 < len(todo) else None
            masks = source.process(loaded)
            journal.write(k, masks)
            result.computed += len(masks)
            finished += len(masks)
            if progress:
                progress(finished, total)
    result.seconds = time.perf_counter() - start

    dist.barrier()
    if dist.rank == 0:
        attrs = {
            "format": FORMAT,
            "version": STORE_VERSION,
            "occo_version": OCCO_VERSION,
            "created_utc": created,
            "updated_utc": now_utc(),
            **settings,
        }
        result.stored, empty = journal.merge(attrs, chunk_stems, previous)
        result.empty_ir, result.empty_vi = empty["ir"], empty["vi"]
        journal.remove()
    dist.barrier()
    return result


__all__ = [
    "GenerateResult",
    "MaskSource",
    "ModelMaskConfig",
    "ModelMaskSource",
    "Pair",
    "SettingsMismatchError",
    "generate_masks",
    "plan",
    "resolve_dtype",
]
