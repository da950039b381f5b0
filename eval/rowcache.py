"""Per-row caches of model outputs, so that re-scoring never reruns a model.

One cache entry per (row, settings): its name carries a hash of the row's folder and of
every setting that changes the outputs (model and weights, thresholds, classes,
precision), so other settings never read it. A state file lists each image done with
its fingerprint (size and modification time); an image that changed since is redone.

- detections: ``NAME-KEY.json``, a COCO results list (image_id = stem, category_id =
  class index + 1, category_name, bbox ``[x, y, w, h]``, score), beside
  ``NAME-KEY.state.json``.
- segmentations: ``NAME-KEY/STEM.png`` class-index maps, beside the same state file.

Every file is written atomically; a killed run keeps what its last save wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from occo.data.annotations import ImageBoxes, coco_results, parse_coco_results
from occo.data.io import read_image, write_bytes_atomic, write_image_atomic
from occo.data.version import OCCO_VERSION

CACHE_FORMAT = "occo-eval-cache"
CACHE_VERSION = 1


def fingerprint(path: Path) -> str:
    """An image file's identity for the cache: size and modification time."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "row"


class RowCache:
    """The cache of one row under one set of settings.

    Args:
        folder: the cache folder.
        row_name: the row's name (readable part of the file names).
        row_path: the row's folder (part of the key).
        settings: JSON values that change the outputs (part of the key).
        kind: ``detections`` or ``segmentations``.
    """

    def __init__(
        self,
        folder: str | Path,
        row_name: str,
        row_path: str | Path,
        settings: Mapping[str, Any],
        kind: str = "detections",
    ) -> None:
        if kind not in ("detections", "segmentations"):
            raise ValueError(f"unknown cache kind {kind}")
        self.kind = kind
        self.settings = {"kind": kind, "row": str(Path(row_path).resolve()), **settings}
        payload = json.dumps(self.settings, sort_keys=True).encode()
        self.key = hashlib.sha256(payload).hexdigest()[:16]
        base = Path(folder) / f"{_slug(row_name)}-{self.key}"
        self.state_path = base.with_name(base.name + ".state.json")
        self.results_path = base.with_name(base.name + ".json")
        self.maps_dir = base

    def done(self, fingerprints: Mapping[str, str]) -> set[str]:
        """Stems whose cached outputs are valid for these image fingerprints."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # damaged or hostile: redone
            return set()
        if state.get("format") != CACHE_FORMAT or state.get("settings") != self.settings:
            return set()  # another occo's layout, or a hash collision: never trust it
        images = state.get("images", {})
        return {stem for stem, fp in fingerprints.items() if images.get(stem) == fp}

    def _write_state(self, fingerprints: Mapping[str, str]) -> None:
        state = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "occo_version": OCCO_VERSION,
            "settings": self.settings,
            "images": dict(sorted(fingerprints.items())),
        }
        write_bytes_atomic(self.state_path, json.dumps(state, indent=1).encode())

    # ------------------------------------------------------------------ detections

    def load_detections(self, fingerprints: Mapping[str, str]) -> dict[str, ImageBoxes]:
        """Cached detections of the images that are still the same (empty if none)."""
        stems = self.done(fingerprints)
        if not stems:
            return {}
        try:
            record = json.loads(self.results_path.read_text(encoding="utf-8"))
            boxes = parse_coco_results(record, self.results_path, self.settings["classes"])
        except (OSError, ValueError, RecursionError):  # damaged or hostile: redone
            return {}
        return {stem: boxes.get(stem)[0] for stem in stems}

    def save_detections(
        self, boxes: Mapping[str, ImageBoxes], fingerprints: Mapping[str, str]
    ) -> dict[str, ImageBoxes]:
        """Write the detections of these images (all of the row done so far).

        Returns:
            The detections as read back from the cache (boxes and scores rounded as
            stored), so that a first run scores exactly what a rerun will.
        """
        record = coco_results(boxes, self.settings["classes"])
        write_bytes_atomic(self.results_path, json.dumps(record).encode())
        self._write_state({stem: fingerprints[stem] for stem in boxes})
        stored = parse_coco_results(record, self.results_path, self.settings["classes"])
        return {stem: stored.get(stem)[0] for stem in boxes}

    # ------------------------------------------------------------------ segmentations

    def load_maps(self, fingerprints: Mapping[str, str]) -> set[str]:
        """Stems whose cached class map is valid (read them with :meth:`read_map`)."""
        return {s for s in self.done(fingerprints) if (self.maps_dir / f"{s}.png").is_file()}

    def map_path(self, stem: str) -> Path:
        return self.maps_dir / f"{stem}.png"

    def read_map(self, stem: str) -> np.ndarray:
        return read_image(self.map_path(stem))

    def save_maps(
        self,
        maps: Mapping[str, np.ndarray],
        done: Sequence[str],
        fingerprints: Mapping[str, str],
    ) -> None:
        """Write new class maps, then the state listing every stem done."""
        for stem, labels in maps.items():
            write_image_atomic(self.map_path(stem), labels)
        self._write_state({stem: fingerprints[stem] for stem in done})
