"""Mask sources by name: the table ``occo masks gen`` chooses from, and what a source must do.

Three sources make masks: ``models`` (Grounding DINO boxes prompting SAM), ``labels``
(label maps) and ``annotations`` (box annotations, filled or prompting SAM).
:func:`build_source` picks one from :class:`SourceOptions` through :data:`SOURCES` and
returns it with what the run should say and the files it reads. Those files are
fingerprinted into the store's settings: a rerun of ``occo masks gen`` with other (or
swapped) labels is refused instead of adding masks from new labels beside old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from occo.data.annotations import YOLO_CLASS_FILES
from occo.data.errors import OccoError
from occo.masks.store import PairMasks

#: One pair as ``data.pairing.pair_images`` gives it: (stem, infrared path, visible path).
Pair = tuple[str, Path, Path]
_BLOCK = 1 << 20


class MaskSourceError(OccoError, ValueError):
    """Options that do not make a mask source (conflicting, missing or malformed)."""


class MaskSource(Protocol):
    """What :func:`occo.masks.generate.generate_masks` asks of a source: all of it, always."""

    settings: dict[str, Any]
    """What makes the masks (models, thresholds, classes...); compared on a rerun."""

    def setup(self) -> None:
        """Load what the source needs (models) once, before the first batch; idempotent."""

    def load(self, pairs: Sequence[Pair]) -> Any:
        """Read what :meth:`process` needs (runs in a background thread)."""

    def process(self, loaded: Any) -> list[PairMasks]:
        """Masks of the loaded pairs, in order."""

    def warnings(self) -> list[str]:
        """What the run should say when it ends (e.g. boxes clipped to the image)."""


@dataclass
class SourceOptions:
    """How ``occo masks gen`` makes masks: the models (default), label maps or box annotations."""

    prompt: str | None = None
    """Text prompt for Grounding DINO (None: the paper's)."""
    detector: str | None = None
    """Grounding DINO hub id or folder (None: grounding-dino-tiny)."""
    segmenter: str | None = None
    """SAM spec; None: facebook/sam-vit-huge for the models, filled boxes for annotations."""
    box_threshold: float = 0.3
    """Keep boxes scoring above this."""
    text_threshold: float = 0.25
    """Prompt tokens above this name a box."""
    max_boxes: int = 0
    """At most this many boxes per image, best first (0: all)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1, ..."""
    dtype: str = "auto"
    """auto (float16 on GPU), float32, float16, bfloat16."""
    labels: Path | None = None
    """Folder of label maps (class index per pixel), one per pair."""
    classes: str | None = None
    """Object classes: indices (label maps) or names."""
    class_names: Path | None = None
    """Class table: one name per line, or ``ID NAME`` lines."""
    boxes: Path | None = None
    """Box annotations for both modalities."""
    boxes_ir: Path | None = None
    """Box annotations drawn on the infrared images."""
    boxes_vi: Path | None = None
    """Box annotations drawn on the visible images."""
    local_rank: int = 0
    """This process's rank on its node (picks its GPU)."""

    @property
    def kind(self) -> str:
        """The :data:`SOURCES` entry these options choose."""
        if self.boxes is not None or self.boxes_ir is not None or self.boxes_vi is not None:
            return "annotations"
        return "labels" if self.labels is not None else "models"


@dataclass
class BuiltSource:
    """A source ready for ``generate_masks``, with what the run should say about it."""

    source: MaskSource
    """The source."""
    description: str
    """One line: what makes the masks, for the run's first note."""
    files: dict[str, str] = field(default_factory=dict)
    """The files it reads and their fingerprints (settings compared on a rerun)."""
    warnings: list[str] = field(default_factory=list)
    """Found while building: images without annotations, annotations without images."""
    uses_models: bool = False
    """Whether it loads Hugging Face models (the CLI quiets their chatter)."""


def _models(options: SourceOptions, pairs: Sequence[Pair]) -> BuiltSource:
    from occo.masks.generate import (
        DEFAULT_SEGMENTER,
        ModelMaskConfig,
        ModelMaskSource,
        resolve_dtype,
    )
    from occo.runtime import resolve_device

    if options.classes or options.class_names:
        raise MaskSourceError("--classes and --class-names go with --labels DIR or --boxes DIR")
    device = resolve_device(options.device, options.local_rank)
    given = {"prompt": options.prompt, "detector": options.detector}
    config = ModelMaskConfig(
        **{k: v for k, v in given.items() if v is not None},
        segmenter=options.segmenter or DEFAULT_SEGMENTER,
        box_threshold=options.box_threshold,
        text_threshold=options.text_threshold,
        max_boxes=options.max_boxes,
        dtype=resolve_dtype(options.dtype, device),
    )
    what = f"{config.detector} + {config.segmenter} on {device} ({config.dtype})"
    return BuiltSource(ModelMaskSource(config, device), what, uses_models=True)


def _labels(options: SourceOptions, pairs: Sequence[Pair]) -> BuiltSource:
    from occo.masks.labels import LabelMaskSource, parse_classes, read_class_names

    assert options.labels is not None
    if not options.classes:
        raise MaskSourceError(
            "--labels needs --classes, e.g. --classes 1,2 (MSRS: car 1, person 2)"
        )
    names = read_class_names(options.class_names) if options.class_names is not None else None
    source = LabelMaskSource(options.labels, parse_classes(options.classes, names), names)
    source.check([stem for stem, _, _ in pairs])
    files = source_files("labels_dir", options.labels)
    if options.class_names is not None:
        files.update(source_files("class_names", options.class_names))
    return BuiltSource(source, f"label maps in {options.labels}", files)


def _annotations(options: SourceOptions, pairs: Sequence[Pair]) -> BuiltSource:
    from occo.data.annotations import read_boxes
    from occo.data.classes import merge_class_names, read_class_names, select_class_names
    from occo.masks.boxes import BoxMaskSource
    from occo.masks.generate import resolve_dtype
    from occo.runtime import resolve_device

    if options.labels is not None:
        raise MaskSourceError(
            "--labels (label maps) and --boxes (box annotations) exclude each other"
        )
    if options.boxes is not None and (options.boxes_ir is not None or options.boxes_vi is not None):
        raise MaskSourceError(
            "give --boxes for both modalities, or --boxes-ir and --boxes-vi, not both"
        )
    if options.boxes is None and (options.boxes_ir is None or options.boxes_vi is None):
        raise MaskSourceError(
            "--boxes-ir and --boxes-vi go together (or --boxes for both modalities)"
        )
    table = read_class_names(options.class_names) if options.class_names is not None else None
    folders = {"ir": options.boxes or options.boxes_ir, "vi": options.boxes or options.boxes_vi}
    sets = {m: read_boxes(folder, table) for m, folder in folders.items()}  # type: ignore[arg-type]
    known = merge_class_names(s.classes for s in sets.values())
    chosen = select_class_names(options.classes, known) if options.classes else None
    segmenter = options.segmenter
    device = resolve_device(options.device, options.local_rank) if segmenter else "cpu"
    precision = resolve_dtype(options.dtype, device) if segmenter else "float32"  # type: ignore[arg-type]
    source = BoxMaskSource(sets["ir"], sets["vi"], chosen, segmenter, device, precision)  # type: ignore[arg-type]
    stems = [stem for stem, _, _ in pairs]
    warnings = []
    for modality, name in (("ir", "infrared"), ("vi", "visible")):
        missing = source.missing(stems)[modality]
        if missing:
            warnings.append(
                f"{len(missing)} {name} image(s) have no annotation in {folders[modality]}: "
                f"their masks are empty (first: {', '.join(missing[:5])})"
            )
    orphans = source.orphans(stems)
    if orphans:
        more = f" and {len(orphans) - 10} more" if len(orphans) > 10 else ""
        warnings.append(
            f"{len(orphans)} annotation(s) without an image pair, not used: {', '.join(orphans[:10])}{more}"
        )
    files = {
        **source_files("boxes_ir_dir", folders["ir"]),  # type: ignore[arg-type]
        **source_files("boxes_vi_dir", folders["vi"]),  # type: ignore[arg-type]
    }
    if options.class_names is not None:
        files.update(source_files("class_names", options.class_names))
    kind = f"{segmenter} prompted with the boxes on {device}" if segmenter else "filled boxes"
    what = f"{sets['ir'].format} boxes, {', '.join(chosen or known)}; {kind}"
    return BuiltSource(source, what, files, warnings, uses_models=bool(segmenter))


#: Every mask source by name: ``SourceOptions.kind`` -> builder.
SOURCES: dict[str, Callable[[SourceOptions, Sequence[Pair]], BuiltSource]] = {
    "models": _models,
    "labels": _labels,
    "annotations": _annotations,
}


def build_source(options: SourceOptions, pairs: Sequence[Pair]) -> BuiltSource:
    """The mask source the options choose, checked against the pairs (models not loaded yet).

    Args:
        options: the run's options.
        pairs: ``(stem, ir_path, vi_path)`` of the dataset.

    Returns:
        A :class:`BuiltSource`.

    Raises:
        OccoError: conflicting or malformed options, unreadable annotations or label maps.
    """
    try:
        return SOURCES[options.kind](options, pairs)
    except OccoError:
        raise
    except ValueError as exc:  # thresholds, dtypes, class lists checked by the configs
        raise MaskSourceError(str(exc)) from None


# ----------------------------------------------------------------------------- fingerprints


def _files(path: Path) -> list[tuple[str, Path]]:
    """``(name, file)`` of what an annotation source reads, sorted by name."""
    if path.is_file():
        return [(path.name, path)]
    found = [(p.name, p) for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    # YOLO's class table may sit one folder up (read_boxes looks there too).
    found += [(f"../{n}", path.parent / n) for n in YOLO_CLASS_FILES if (path.parent / n).is_file()]
    return sorted(found)


def fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over the sorted ``(name, bytes)`` of the files of annotation folders or files.

    A folder counts its non-hidden files (not sub-folders) and a YOLO class table in its
    parent; a file counts itself. Names are relative, so a moved copy has the same print.

    Args:
        paths: annotation folders or files (e.g. a COCO JSON, a label-map folder).

    Returns:
        ``sha256:<hex>``.
    """
    digest = hashlib.sha256()
    for path in paths:
        for name, file in _files(Path(path)):
            digest.update(f"{len(name)}:{name}:{file.stat().st_size}:".encode())
            with open(file, "rb") as handle:
                while block := handle.read(_BLOCK):
                    digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def source_files(kind: str, path: str | Path) -> dict[str, str]:
    """The settings that pin an annotation source: ``<kind>`` path and ``<kind>_sha256``.

    Args:
        kind: the settings key, e.g. ``boxes_ir_dir``, ``labels_dir``, ``class_names``.
        path: the folder or file.
    """
    path = Path(path)
    return {kind: str(path.resolve()), f"{kind.removesuffix('_dir')}_sha256": fingerprint([path])}


__all__ = [
    "SOURCES",
    "BuiltSource",
    "MaskSource",
    "MaskSourceError",
    "SourceOptions",
    "build_source",
    "fingerprint",
    "source_files",
]
