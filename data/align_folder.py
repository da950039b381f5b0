"""``occo align`` as a library call: every pair of two folders aligned into a third.

Each output is the infrared image warped onto its visible one (or the infrared image as
it was, when left alone), as PNG named by stem, with the input's bit depth and colour.
Each PNG records, under the text key ``occo-align``, the settings, the sources' SHA-256
and the alignment; ``OUT_DIR/occo-align.json`` lists them all. A rerun with the same
settings and inputs resumes; an output made otherwise is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from occo.data.align import ALGORITHM_VERSION, AlignSettings, align_pair
from occo.data.errors import OccoError
from occo.data.io import (
    file_sha256,
    folder_lock,
    read_pair_at_ir_size,
    read_png_text,
    remove_stale_temporaries,
    write_bytes_atomic,
    write_image_atomic,
)
from occo.data.outputs import check_writable_folder, refuse_inside_inputs
from occo.data.pairing import listing, pair_images
from occo.data.version import OCCO_VERSION

#: PNG text key under which each aligned image records how it was made.
OUTPUT_KEY = "occo-align"
#: The manifest written into the output folder.
MANIFEST_NAME = "occo-align.json"


class AlignFolderError(OccoError, ValueError):
    """The folders cannot be aligned as asked (no pairs, outputs made otherwise...)."""


@dataclass
class AlignEvents:
    """Callbacks a caller (the CLI) renders; the library never prints. Each may be None."""

    note: Callable[[str], None] | None = None
    """A line of information (hidden files left out, resuming)."""
    warn: Callable[[str], None] | None = None
    """A line that needs the user's attention (unpaired files, no manifest written)."""
    start: Callable[[int], None] | None = None
    """Called once with the number of pairs to align."""
    pair: Callable[[str, dict | None, str | None], None] | None = None
    """Called with each pair's stem, record (None when it failed) and error (or None)."""


@dataclass
class AlignFolderResult:
    """What :func:`align_folder` did."""

    pairs: dict[str, dict] = field(default_factory=dict)
    """Each pair's alignment record (:meth:`Alignment.record` plus ``output``), by stem,
    those resumed included."""
    failed: dict[str, str] = field(default_factory=dict)
    """Pairs that could not be aligned or written: stem -> reason."""
    resumed: int = 0
    """Outputs an earlier run made with these settings, kept."""
    manifest: Path | None = None
    """The manifest written, or None when it could not be."""

    @property
    def aligned(self) -> list[str]:
        """Stems whose infrared image was warped."""
        return sorted(s for s, r in self.pairs.items() if r["aligned"])

    @property
    def left_alone(self) -> dict[str, str]:
        """Stems written unchanged, and why."""
        return {s: r["left_alone"] for s, r in sorted(self.pairs.items()) if not r["aligned"]}


def _sources(ir_path: Path, vi_path: Path) -> dict:
    return {"ir": ir_path.name, "vi": vi_path.name, "ir_sha256": file_sha256(ir_path),
            "vi_sha256": file_sha256(vi_path)}  # fmt: skip


def _previous(path: Path) -> dict | None:
    try:
        return json.loads(read_png_text(path).get(OUTPUT_KEY, "null"))
    except ValueError:
        return None


def align_folder(
    ir_dir: str | Path,
    vi_dir: str | Path,
    out_dir: str | Path,
    settings: AlignSettings | None = None,
    *,
    residual: bool = True,
    resize_vi: bool = False,
    overwrite: bool = False,
    workers: int = 2,
    events: AlignEvents | None = None,
) -> AlignFolderResult:
    """Align every pair of ``ir_dir`` and ``vi_dir`` (paired by stem) into ``out_dir``.

    Args:
        ir_dir: folder of infrared images.
        vi_dir: folder of visible images.
        out_dir: folder for the aligned infrared images (made; never inside the inputs).
        settings: :class:`AlignSettings` (default: similarity, 1 px, visible border).
        residual: measure what is left after alignment (``residual_px``).
        resize_vi: resize visible images to the infrared size when they differ (else such
            a pair fails).
        overwrite: replace outputs made otherwise (other settings or inputs, not occo's).
        workers: threads aligning pairs.
        events: callbacks for notes, warnings and progress.

    Returns:
        An :class:`AlignFolderResult`; pairs that failed are in ``failed``.

    Raises:
        AlignFolderError: a folder is missing, no pairs, outputs made otherwise.
    """
    ir_dir, vi_dir, out_dir = Path(ir_dir), Path(vi_dir), Path(out_dir)
    settings = settings or AlignSettings()
    events = events or AlignEvents()
    if settings.model not in ("similarity", "affine"):
        raise AlignFolderError(f"model must be similarity or affine, got {settings.model!r}")
    if settings.border not in ("visible", "replicate"):
        raise AlignFolderError(f"border must be visible or replicate, got {settings.border!r}")
    provenance = {"algorithm": ALGORITHM_VERSION, **asdict(settings), "resize_vi": resize_vi}
    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            raise AlignFolderError(f"{label} {folder} is not a folder")
    refuse_inside_inputs(out_dir, [ir_dir, vi_dir], "OUT_DIR")
    check_writable_folder(out_dir, "OUT_DIR")
    pairing = pair_images(ir_dir, vi_dir)
    if pairing.hidden and events.note:
        events.note(f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): "
                    f"{listing(pairing.hidden)}")  # fmt: skip
    if pairing.unpaired and events.warn:
        events.warn(f"{len(pairing.unpaired)} file(s) without a partner are left out: "
                    f"{listing(pairing.unpaired)}")  # fmt: skip
    if not pairing.pairs:
        raise AlignFolderError(f"no pairs: no file stem is in both {ir_dir} and {vi_dir}")

    def run(job: tuple[str, Path, Path, Path]) -> tuple[str, dict | None, str | None]:
        stem, ir_path, vi_path, target = job
        try:
            ir, vi = read_pair_at_ir_size(ir_path, vi_path, resize_vi)
        except (OSError, ValueError) as exc:
            return stem, None, str(exc)
        try:
            alignment = align_pair(ir, vi, settings, measure_residual=residual)
        except ValueError as exc:
            return stem, None, f"{ir_path.name} + {vi_path.name}: {exc}"
        record = alignment.record()
        text = {OUTPUT_KEY: json.dumps({"settings": provenance, "sources": _sources(ir_path, vi_path),
                                        "alignment": record})}  # fmt: skip
        try:
            write_image_atomic(target, alignment.ir, text)
        except (OSError, ValueError) as exc:
            return stem, None, f"cannot write {target}: {exc}"
        return stem, {**record, "output": target.name}, None

    result = AlignFolderResult()
    with folder_lock(out_dir, "occo align"):
        remove_stale_temporaries(out_dir)
        # Plan: resume what these settings made from these inputs; refuse anything else.
        todo, foreign = [], []
        for stem, ir_path, vi_path in pairing.pairs:
            target = out_dir / f"{stem}.png"
            if not target.exists():
                todo.append((stem, ir_path, vi_path, target))
                continue
            record = _previous(target)
            same = (record is not None and record.get("settings") == provenance
                    and record.get("sources") == _sources(ir_path, vi_path))  # fmt: skip
            if same:
                result.pairs[stem] = {**record["alignment"], "output": target.name}
            elif overwrite:
                todo.append((stem, ir_path, vi_path, target))
            else:
                foreign.append(target)
        if foreign:
            raise AlignFolderError(
                f"OUT_DIR {out_dir}: {len(foreign)} file(s) were made otherwise (other settings or "
                f"inputs, or not by occo align): {listing(foreign)}; pass --overwrite to replace "
                "them, or choose another folder"
            )
        result.resumed = len(result.pairs)
        if result.resumed and events.note:
            events.note(f"resuming: {result.resumed} of {len(pairing.pairs)} pair(s) already "
                        "aligned with these settings")  # fmt: skip
        if events.start:
            events.start(len(todo))
        with ThreadPoolExecutor(workers) as pool:
            for stem, record, error in pool.map(run, todo):
                if error:
                    result.failed[stem] = error
                else:
                    result.pairs[stem] = record
                if events.pair:
                    events.pair(stem, record, error)
        manifest = {
            "format": "occo-align",
            "version": 1,
            "occo_version": OCCO_VERSION,
            "ir_dir": str(ir_dir.resolve()),
            "vi_dir": str(vi_dir.resolve()),
            "settings": provenance,
            "matrix": "2x3, visible pixel (x, y, 1) -> infrared pixel; aligned(p) = ir(matrix @ p)",
            "aligned": result.aligned,
            "left_alone": result.left_alone,
            "failed": result.failed,
            "pairs": dict(sorted(result.pairs.items())),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = out_dir / MANIFEST_NAME
        try:
            write_bytes_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode())
            result.manifest = path
        except OSError as exc:
            if events.warn:
                events.warn(f"could not write the manifest in {out_dir}: {exc}")
    return result
