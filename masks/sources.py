"""Where mask sources come from: the files they read, fingerprinted for the store's settings.

A rerun of ``occo masks gen`` on a store compares its settings with the store's; the
annotation files' content is part of them, so a rerun with other (or swapped) labels is
refused instead of adding masks from new labels beside masks from old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from occo.data.annotations import YOLO_CLASS_FILES

_BLOCK = 1 << 20


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
