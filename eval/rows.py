"""The rows of a downstream table: what each given path is, and the sources of fused folders.

A row is a folder of images (a method's fused outputs or a source folder) that occo runs
a model on, or outputs made elsewhere that occo only scores (box predictions, class
maps). A folder written by ``occo fuse`` names its infrared and visible sources in its
manifest; those become rows too (first, as in the paper's tables), once each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from occo.data.errors import OccoError
from occo.data.fused import MANIFEST_NAME, read_fuse_manifest
from occo.data.pairing import list_images
from occo.eval.scoring import unique_method_names

#: Modalities of rows, for per-modality ground truth.
FUSED, INFRARED, VISIBLE = "fused", "infrared", "visible"


class RowError(OccoError, ValueError):
    """A row that is neither images nor outputs occo can score."""


@dataclass
class Row:
    """One table row."""

    name: str
    """Row name: the folder's name, or ``infrared``/``visible`` for manifest sources."""
    path: Path
    """The folder or file as given (or as named by a manifest)."""
    kind: str
    """``images`` (occo runs a model), ``predictions`` (boxes) or ``maps`` (class maps)."""
    modality: str = FUSED
    """``fused``, ``infrared`` or ``visible``: picks the ground truth."""
    origin: str = "given"
    """``given`` on the command line, or ``manifest`` (a fuse folder's source)."""
    images: dict[str, Path] = field(default_factory=dict)
    """Stem -> image (image rows)."""


def _sources(folder: Path) -> tuple[Path, Path] | None:
    manifest = read_fuse_manifest(folder)
    if manifest is None:
        return None
    ir, vi = Path(manifest["ir_dir"]), Path(manifest["vi_dir"])
    for name, path in (("ir_dir", ir), ("vi_dir", vi)):
        if not path.is_dir():
            raise RowError(
                f"{folder / MANIFEST_NAME} names {name} {path}, which does not exist; "
                "pass --no-sources and give the source folders as rows"
            )
    return ir, vi


def _detect_kind(path: Path, outputs: str) -> tuple[str, dict[str, Path]]:
    """``images`` with their files, or the output kind this path holds."""
    if not path.exists():
        raise FileNotFoundError(f"row not found: {path}")
    if path.is_file():
        if outputs == "predictions" and path.suffix.lower() == ".json":
            return "predictions", {}
        raise RowError(
            f"row {path} is a file; give a folder of images, or of "
            + (
                "YOLO .txt predictions, or a COCO results .json"
                if outputs == "predictions"
                else "class maps"
            )
        )
    images = list_images(path)
    if outputs == "predictions":
        if images:
            return "images", images
        if any(path.glob("*.txt")) or any(path.glob("*.json")):
            return "predictions", {}
        raise RowError(
            f"row {path} holds no images and no predictions (.txt or .json); give a folder of "
            "images to detect on, or a detector's outputs"
        )
    if not images:
        raise RowError(f"row {path} holds no images (png, jpg, bmp, tif)")
    return outputs, images


def plan_rows(paths: Sequence[Path], outputs: str, add_sources: bool = True) -> list[Row]:
    """Classify the given paths and add the sources of ``occo fuse`` folders.

    Args:
        paths: rows as given.
        outputs: what a non-image row holds: ``predictions`` (detection), or ``maps``
            (segmentation: every row is class maps) or ``images`` (segmentation with a
            model: every row is images).
        add_sources: add the infrared and visible folders named by manifests.

    Returns:
        Rows: manifest sources first (infrared, visible), then the given paths.

    Raises:
        RowError: a path that is no row, or a fuse folder given as class maps.
    """
    rows: list[Row] = []
    sources: list[tuple[Path, Path]] = []
    for path in paths:
        kind, images = _detect_kind(Path(path), outputs)
        if kind == "maps" and (Path(path) / MANIFEST_NAME).is_file():
            raise RowError(
                f"row {path} is a folder of fused images (it has {MANIFEST_NAME}); segment it "
                "zero-shot with --segmenter, or give the folder of class maps predicted on it"
            )
        rows.append(Row(name="", path=Path(path), kind=kind, images=images))
        if kind == "images" and add_sources:
            found = _sources(Path(path))
            if found is not None and found not in sources:
                sources.append(found)
    given = {row.path.resolve(): row for row in rows}
    extra: list[Row] = []
    for ir, vi in sources:
        for folder, modality in ((ir, INFRARED), (vi, VISIBLE)):
            if folder.resolve() in given:  # listed by hand: just mark its modality
                given[folder.resolve()].modality = modality
                continue
            if any(r.path.resolve() == folder.resolve() for r in extra):
                continue
            extra.append(
                Row(
                    name="",
                    path=folder,
                    kind="images",
                    modality=modality,
                    origin="manifest",
                    images=list_images(folder),
                )
            )
    ordered = [r for r in extra if r.modality == INFRARED] + [
        r for r in extra if r.modality == VISIBLE
    ]
    ordered += rows
    _name_rows(ordered)
    return ordered


def _name_rows(rows: list[Row]) -> None:
    """Folder names (paths where they repeat); a lone pair of sources is infrared/visible."""
    names = unique_method_names([row.path for row in rows])
    for row, name in zip(rows, names, strict=True):
        row.name = name
    for modality in (INFRARED, VISIBLE):
        sourced = [r for r in rows if r.origin == "manifest" and r.modality == modality]
        taken = {r.name for r in rows if r.origin != "manifest"}
        if len(sourced) == 1 and modality not in taken:
            sourced[0].name = modality
