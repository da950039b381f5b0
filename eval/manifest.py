"""The ``occo-fuse.json`` manifest that ``occo fuse`` writes next to its fused images.

It records where the sources are, so that ``occo metrics OUT_DIR`` scores the fused
images against them without ``--ir``/``--vi``, and how the images were made.

Schema (format "occo-fuse", version 1), a JSON object:

- ``format``: "occo-fuse"; ``version``: 1 (this schema); ``occo_version``: occo's version.
- ``ir_dir``, ``vi_dir``: absolute paths of the infrared and visible source folders
  (for a fused video: the source videos or frame folders).
- ``weights``: the weights file used (absolute path) or null.
- ``settings``: options of the run (batch size, tile, amp, ...), an object.
- ``device``: e.g. "cuda:0" or "cpu".
- ``timings``: seconds, e.g. ``{"total": 12.3, "per_image": 0.29}``.
- ``pairs``: number of pairs fused.
- ``created``: UTC time of writing, ISO 8601.

Extra keys passed to :func:`write_fuse_manifest` are stored too (JSON values only). A
fused video's record, ``OUT.mp4.occo-fuse.json`` beside it, adds ``kind`` ("video"),
``output``, ``video`` (size, frame rate, codec of input and output) and ``pairing``
(frames used, repeated and dropped per stream).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from occo.data.errors import OccoError
from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION

#: File name of the manifest inside a fuse output folder.
MANIFEST_NAME = "occo-fuse.json"
#: Value of the ``format`` key.
MANIFEST_FORMAT = "occo-fuse"
#: Schema version written by this occo.
MANIFEST_VERSION = 1


class ManifestError(OccoError, ValueError):
    """An ``occo-fuse.json`` file that cannot be used."""


def _jsonable(value: Any, key: str) -> Any:
    """Paths become strings; anything else must already be JSON (finite numbers only)."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, key) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"manifest field '{key}': {type(value).__name__} is not JSON-serialisable")


def write_fuse_manifest(
    out_dir: str | Path,
    ir_dir: str | Path,
    vi_dir: str | Path,
    *,
    name: str = MANIFEST_NAME,
    **info: Any,
) -> Path:
    """Write ``out_dir/occo-fuse.json`` atomically.

    Args:
        out_dir: the fuse output folder (created if missing).
        ir_dir: infrared source folder (a video's: the video or frame folder); stored as
            an absolute path.
        vi_dir: visible source folder (or video); stored as an absolute path.
        name: the file name; a fused video's record is ``VIDEO_NAME.occo-fuse.json``
            beside it.
        **info: ``weights``, ``settings``, ``device``, ``timings``, ``pairs`` and any other
            JSON values (``Path`` objects are stored as absolute paths).

    Returns:
        Path of the manifest.
    """
    reserved = {"format", "version", "occo_version", "ir_dir", "vi_dir"}
    clash = reserved & set(info)
    if clash:
        raise TypeError(f"manifest fields set by write_fuse_manifest itself: {sorted(clash)}")
    record: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "occo_version": OCCO_VERSION,
        "ir_dir": str(Path(ir_dir).resolve()),
        "vi_dir": str(Path(vi_dir).resolve()),
        "weights": None,
        "settings": {},
        "device": None,
        "timings": {},
        "pairs": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in info.items():
        record[key] = _jsonable(value, key)
    path = Path(out_dir) / name
    payload = json.dumps(record, indent=2, allow_nan=False) + "\n"
    write_bytes_atomic(path, payload.encode("utf-8"))
    return path


def read_fuse_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """Read ``out_dir/occo-fuse.json``.

    Args:
        out_dir: a folder that may hold a manifest.

    Returns:
        The manifest as a dict (``ir_dir``/``vi_dir`` as strings), or None when the folder
        has no manifest.

    Raises:
        ManifestError: the file is not valid JSON, not an occo-fuse manifest, of a newer
            schema version, or lacks the source folders.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}; delete it or pass --ir and --vi") from exc
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not an occo-fuse manifest (format != '{MANIFEST_FORMAT}')")
    version = record.get("version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise ManifestError(
            f"{path} has schema version {version!r}; this occo reads up to {MANIFEST_VERSION}, upgrade occo"
        )
    for key in ("ir_dir", "vi_dir"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ManifestError(f"{path} lacks '{key}'; pass --ir and --vi")
    return record
