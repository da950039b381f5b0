"""The fused-output record: the ``occo-fuse.json`` manifest that ``occo fuse`` writes next
to its fused images, each PNG's own record, and the resume plan built from them. Written by
fuse (occo.models.fusing), read by metrics and eval.

It records where the sources are, so that ``occo metrics OUT_DIR`` scores the fused
images against them without ``--ir``/``--vi``, and how the images were made. Each fused
PNG also carries its own record (a ``tEXt`` entry ``occo-fuse``: :func:`output_record`), so
that a rerun resumes only outputs made with the same settings, and never takes a file
occo did not write for one of its own.

Schema (format "occo-fuse", version 2), a JSON object:

- ``format``: "occo-fuse"; ``version``: 2 (this schema); ``occo_version``: occo's version.
- ``ir_dir``, ``vi_dir``: absolute paths of the infrared and visible source folders
  (for a fused video: the source videos or frame folders).
- ``weights``: the weights file used (absolute path) or null.
- ``settings``: options of the run (batch size, tile, amp, ...), an object.
- ``device``: e.g. "cuda:0" or "cpu".
- ``timings``: seconds, e.g. ``{"total": 12.3, "per_image": 0.29}``.
- ``pairs``: number of pairs fused.
- ``provenance``: what decides the pixels (occo.models.fusing.FuseSettings' pixel
  settings, the weights' SHA-256 and occo's version), one value each.
- ``outputs``: ``{stem: file name}`` of every fused image in the folder that this
  provenance made (version 2; version 1 manifests have ``stems`` only).
- ``created``: UTC time of writing, ISO 8601.

Extra keys passed to :func:`write_fuse_manifest` are stored too (JSON values only). A
fused video's record, ``OUT.mp4.occo-fuse.json`` beside it, adds ``kind`` ("video"),
``output``, ``video`` (size, frame rate, codec of input and output) and ``pairing``
(frames used, repeated and dropped per stream).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from occo.data.errors import OccoError
from occo.data.io import read_png_text, write_bytes_atomic
from occo.data.pairing import listing
from occo.data.version import OCCO_VERSION

#: File name of the manifest inside a fuse output folder.
MANIFEST_NAME = "occo-fuse.json"
#: Value of the ``format`` key.
MANIFEST_FORMAT = "occo-fuse"
#: Schema version written by this occo.
MANIFEST_VERSION = 2
#: The PNG text key under which each fused image records what made it.
OUTPUT_KEY = "occo-fuse"


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


class ResumeError(OccoError, ValueError):
    """Existing files in the output folder that a rerun must not reuse or replace."""


def output_record(provenance: Mapping[str, Any], ir_path: Path, vi_path: Path) -> str:
    """The text a fused PNG stores about what made it (ASCII JSON).

    Args:
        provenance: the run's values of the settings that change pixels.
        ir_path: the infrared source file.
        vi_path: the visible source file.
    """
    record = {"made_by": "occo fuse", **provenance, "ir": ir_path.name, "vi": vi_path.name}
    return json.dumps(record, sort_keys=True, ensure_ascii=True)


def _read_output_record(path: Path) -> dict[str, Any] | None:
    text = read_png_text(path).get(OUTPUT_KEY)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


@dataclass
class ResumePlan:
    """Which outputs a run makes and which earlier outputs it keeps."""

    todo: list[int] = field(default_factory=list)
    """Indices of the pairs to fuse."""
    done: list[int] = field(default_factory=list)
    """Indices of the pairs whose output exists, made with the same settings."""


def plan_resume(
    outputs: Sequence[tuple[Path, Path, Path]],
    provenance: Mapping[str, Any],
    overwrite: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> ResumePlan:
    """Decide, per output, whether a run redoes it, keeps it or must stop.

    An existing output is kept only when its own record matches this run's settings and
    sources; a file without an occo record (a stray file, another method's image) is
    never taken for a finished output.

    Args:
        outputs: ``(out_path, ir_path, vi_path)`` per pair.
        provenance: this run's values of every setting that changes pixels (each is
            compared; see occo.models.fusing.FuseSettings).
        overwrite: redo every output, replacing whatever is there.
        defaults: the value a record made before a setting existed stands for (so that a
            new setting at its default keeps older outputs valid).

    Returns:
        The plan.

    Raises:
        ResumeError: without ``overwrite``, an existing output occo did not write, or one
            made with other settings (the message names the files and what differs).
    """
    plan = ResumePlan()
    foreign: list[Path] = []
    differing: list[tuple[Path, list[str]]] = []
    for index, (out_path, ir_path, vi_path) in enumerate(outputs):
        if overwrite or not out_path.exists():
            plan.todo.append(index)
            continue
        record = _read_output_record(out_path)
        if record is None or record.get("made_by") != "occo fuse":
            foreign.append(out_path)
            continue
        wanted = json.loads(output_record(provenance, ir_path, vi_path))
        defaults = defaults or {}
        diffs = [
            f"{key}: {_short(record.get(key, defaults.get(key)))} -> {_short(wanted[key])}"
            for key in (*provenance, "ir", "vi")
            if record.get(key, defaults.get(key)) != wanted[key]
        ]
        if diffs:
            differing.append((out_path, diffs))
        else:
            plan.done.append(index)
    if foreign:
        raise ResumeError(
            f"{foreign[0].parent} holds {len(foreign)} file(s) that occo fuse did not write "
            f"({listing(foreign, 3)}); use another OUT_DIR, or --overwrite to replace them"
        )
    if differing:
        paths = [path for path, _ in differing]
        raise ResumeError(
            f"{len(paths)} output(s) in {paths[0].parent} were made with other settings "
            f"({listing(paths, 3)}: {'; '.join(differing[0][1])}); use the same settings to "
            "resume, another OUT_DIR, or --overwrite to redo them"
        )
    return plan


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:12] + "..." if len(text) == 64 else text  # SHA-256 digests


