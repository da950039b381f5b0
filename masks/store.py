"""The HDF5 mask store: layout, crash-safe writing through a parts journal, and the reader.

Layout::

    /            attrs: format="occo-masks", version, occo_version, created_utc, updated_utc,
                 the run's settings (prompt, detector, segmenter, thresholds, ...)
    /ir/<stem>   uint8 (H, W) 0/1 mask, chunked + gzip; attr source (image file name)
    /vi/<stem>   the same for the visible image
    /detections/<ir|vi>/<stem>   (N,) records: box float32 (4,) x0 y0 x1 y1 pixels, score
                 float32, label (matched phrase or class name); only for images with boxes

Version 1 stores kept boxes, scores and labels as attributes of the mask dataset; they are
read as before. Every file is opened through :mod:`occo.masks.h5read`, which refuses data
from outside the file (external storage, links, virtual datasets) and checks each mask.

Crash safety: the store file is only ever written whole, to a temporary file that
``os.replace`` puts in place, so it is always either the old complete store or the new
one. Work in progress lives in a journal folder ``<store>.parts/``: one small HDF5 file per
finished chunk of pairs, each also written atomically. A killed run (even SIGKILL) leaves
complete parts and at most a stray temporary file; the next run reuses the parts, cleans
the rest, and merges everything into the store at the end.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from occo.data.io import atomic_path, write_bytes_atomic
from occo.masks.errors import (
    BadMaskError,
    DamagedStoreError,
    MaskStoreError,
    SettingsMismatchError,
    UnsafeStoreError,
)
from occo.masks.h5read import (
    DETECTION_ATTRS,
    DETECTION_DTYPE,
    DETECTIONS,
    H5_ERRORS,
    MODALITIES,
    damaged,
    mask_dataset,
    mask_stems,
    open_h5,
    read_detections,
    read_mask,
)

__all__ = [
    "BadMaskError",
    "DamagedStoreError",
    "MaskReader",
    "MaskStoreError",
    "ModalityMasks",
    "PairMasks",
    "PartsJournal",
    "PartsReader",
    "SettingsMismatchError",
    "UnsafeStoreError",
    "export_masks",
    "open_mask_store",
    "read_store_attrs",
    "summarize_store",
    "write_h5_atomic",
    "write_pair",
]

FORMAT = "occo-masks"
PART_FORMAT = "occo-masks-part"
#: Version of the layout above; readers refuse newer versions. Version 1 kept the
#: detections as attributes of the masks (at most about 4100 boxes an image); it is read too.
STORE_VERSION = 2
#: Root attributes that describe the file, not the masks: never compared between runs.
#: (The image and annotation folders are settings: a rerun on other files is refused.)
META_KEYS = frozenset({"format", "version", "occo_version", "created_utc", "updated_utc"})
#: Masks up to this many pixels are stored as one HDF5 chunk (whole-image reads, one inflate).
_ONE_CHUNK_PIXELS = 4 * 1024 * 1024
#: Every HDF5 file occo writes starts with this signature (no user block).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_H5_ERRORS = H5_ERRORS
_damaged = damaged


def is_hdf5_file(path: str | Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (true of a truncated store too)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    except OSError:
        return False


@dataclass
class ModalityMasks:
    """The mask of one image and the detections that produced it."""

    mask: np.ndarray
    """``(H, W)`` uint8 object mask, values 0/1."""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    """``(N, 4)`` float32 boxes x0 y0 x1 y1 in pixels."""
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    """``(N,)`` float32 box scores."""
    labels: list[str] = field(default_factory=list)
    """``N`` matched phrases (or class names for label-map masks)."""
    source: str = ""
    """File name of the image the mask belongs to."""

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"a mask must be (H, W), got shape {mask.shape}")
        self.mask = (mask > 0).astype(np.uint8)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.labels = [str(label) for label in self.labels]
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(
                f"{len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.labels)} labels"
            )


@dataclass
class PairMasks:
    """Both masks of one infrared-visible pair."""

    stem: str
    """The pair's file stem (its key in the store)."""
    ir: ModalityMasks
    """Infrared image's mask and detections."""
    vi: ModalityMasks
    """Visible image's mask and detections."""


# ----------------------------------------------------------------------------- writing


def write_pair(h5: h5py.File, pair: PairMasks) -> None:
    """Add one pair to an open store or part file (groups are created as needed)."""
    for modality in MODALITIES:
        entry: ModalityMasks = getattr(pair, modality)
        group = h5.require_group(modality)
        mask = entry.mask
        chunks = mask.shape if mask.size <= _ONE_CHUNK_PIXELS else True
        dataset = group.create_dataset(
            pair.stem,
            data=mask,
            chunks=chunks,
            compression="gzip",
            compression_opts=4,
            track_times=False,
        )
        dataset.attrs["source"] = entry.source
        _write_detections(h5, modality, pair.stem, entry.boxes, entry.scores, entry.labels)


def _write_detections(
    h5: h5py.File, modality: str, stem: str, boxes: np.ndarray, scores: np.ndarray, labels: list
) -> None:
    """Boxes, scores and labels as one record dataset (attributes stop at 64 KiB, ~4100 boxes)."""
    if not len(boxes):
        return
    records = np.zeros(len(boxes), DETECTION_DTYPE)
    records["box"] = np.asarray(boxes, np.float32).reshape(-1, 4)
    records["score"] = np.asarray(scores, np.float32).reshape(-1)
    records["label"] = [str(x) for x in labels]
    group = h5.require_group(DETECTIONS).require_group(modality)
    group.create_dataset(stem, data=records, track_times=False)


def read_pair(h5: h5py.File, stem: str, path: str | Path = "") -> PairMasks:
    """Read one pair (masks and detections) from an open store or part file, checked."""
    path = Path(path or h5.filename)
    entries = {}
    for modality in MODALITIES:
        dataset = mask_dataset(h5, modality, stem, path)
        boxes, scores, labels = read_detections(h5, modality, stem, path, dataset)
        source = dataset.attrs.get("source", "")
        source = source.decode(errors="replace") if isinstance(source, bytes) else str(source)
        if source in (".", "..") or any(c in source for c in "/\\\0"):
            # `masks show` reads IMAGE_DIR/source: a path here would read any image on disk
            raise BadMaskError(
                f"{path}: /{modality}/{stem} names its image {source!r}, not a file name; "
                "make the masks again with `occo masks gen`"
            )
        entries[modality] = ModalityMasks(
            mask=read_mask(h5, modality, stem, path, dataset),
            boxes=boxes,
            scores=scores,
            labels=labels,
            source=source,
        )
    return PairMasks(stem=stem, **entries)


def write_h5_atomic(
    path: str | Path,
    attrs: Mapping[str, Any],
    fill: Callable[[h5py.File], None],
    tmp_dir: str | Path | None = None,
) -> None:
    """Write an HDF5 file so that ``path`` is either its old self or complete, never partial.

    Args:
        path: destination.
        attrs: root attributes.
        fill: writes the content into the open temporary file.
        tmp_dir: folder for the temporary file (same file system as ``path``; default its folder).
    """
    with atomic_path(path, tmp_dir) as tmp, h5py.File(tmp, "w", locking=False) as h5:
        for key, value in attrs.items():
            h5.attrs[key] = _attr_value(value)
        fill(h5)


def _attr_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        return np.asarray(value)
    return value


def _python(value: Any) -> Any:
    """An attribute as plain Python (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


def now_utc() -> str:
    """The current time as ISO 8601 UTC, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def settings_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Settings that differ between a store and a run, as ``key: stored -> wanted`` lines.

    Keys in :data:`META_KEYS` are ignored (they describe files, not masks).
    """
    keys = sorted((set(stored) | set(wanted)) - META_KEYS)
    return [
        f"{key}: {stored.get(key, '(none)')!r} -> {wanted.get(key, '(none)')!r}"
        for key in keys
        if _python(stored.get(key)) != _python(wanted.get(key))
    ]


def _h5_stems(h5: h5py.File) -> list[str]:
    """Stems present in both modality groups (complete pairs), sorted."""
    return mask_stems(h5, Path(h5.filename))


def _copy_pair(source: h5py.File, stem: str, dest: h5py.File, count_empty: bool) -> dict[str, bool]:
    """Copy one pair into ``dest`` in this version's layout; per modality, whether it is empty
    (only when ``count_empty``: that reads the masks).

    The masks' compressed chunks are copied as they are; detections kept as attributes by
    a version 1 store become datasets.
    """
    path = Path(source.filename)
    empty = {}
    for modality in MODALITIES:
        dataset = mask_dataset(source, modality, stem, path)
        group = dest.require_group(modality)
        if stem in group:
            raise MaskStoreError(f"stem '{stem}' appears twice while merging into {dest.filename}")
        boxes, scores, labels = read_detections(source, modality, stem, path, dataset)
        source.copy(dataset, group, name=stem)
        copied = group[stem]
        for kind in DETECTION_ATTRS:  # a version 1 store's
            if kind in copied.attrs:
                del copied.attrs[kind]
        _write_detections(dest, modality, stem, boxes, scores, labels)
        if count_empty:
            empty[modality] = not read_mask(source, modality, stem, path, dataset).any()
    return empty


# ----------------------------------------------------------------------------- journal


def _json_dict(path: Path) -> dict | None:
    """A journal's JSON object, or None if missing or not a readable object (it is redone)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
        return None
    return value if isinstance(value, dict) else None


class PartsJournal:
    """The folder ``<store>.parts/`` of an unfinished run: one atomic HDF5 file per chunk.

    Chunk ``k`` holds the pairs ``todo[k * B : (k + 1) * B]`` of the run's fixed schedule;
    a part is reused only if its stems are exactly the chunk's stems, so a resumed (or
    differently sharded) run computes every pair in the same batch as an uninterrupted one.

    Args:
        store: the mask store the journal belongs to.
    """

    SETTINGS = "settings.json"
    #: Descriptive attributes (ir_dir, vi_dir, ...) for looking at parts before the merge.
    META = "meta.json"

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.dir = self.store.with_name(self.store.name + ".parts")
        self._lock: Any = None

    def part_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.h5"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def read_settings(self) -> dict | None:
        """The settings of the run that made the journal, or None."""
        return _json_dict(self.dir / self.SETTINGS)

    def check(self, settings: Mapping[str, Any], overwrite: bool) -> bool:
        """Whether an interrupted run's parts can be reused with these settings (read-only).

        Args:
            settings: this run's settings.
            overwrite: discard an interrupted run made with other settings.

        Returns:
            True if the journal's parts were made with these settings.

        Raises:
            SettingsMismatchError: parts made with other settings and no overwrite.
        """
        previous = self.read_settings() if self.exists() else None
        if previous is None:
            return False
        diff = settings_differences(previous, json.loads(json.dumps(dict(settings))))
        if not diff:
            return True
        if overwrite or not any(self.dir.glob("chunk-*.h5")):
            return False  # nothing of value to keep
        raise SettingsMismatchError(
            f"{self.dir} holds an interrupted run made with other settings ({'; '.join(diff)}); "
            f"rerun with its settings to resume, or add --overwrite to discard it"
        )

    def prepare(
        self,
        settings: Mapping[str, Any],
        chunks: Sequence[Sequence[str]],
        overwrite: bool,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Make the journal ready for a run (call on one process only, before any writer).

        Checks the settings of an earlier interrupted run (:meth:`check`), deletes
        temporary files left by a kill, and deletes parts that do not match this run's
        settings and schedule.

        Args:
            settings: this run's settings.
            chunks: the stems of every chunk of this run's schedule.
            overwrite: discard an interrupted run made with other settings.
            meta: descriptive attributes (not compared), kept for :class:`PartsReader`.

        Returns:
            The number of pairs already done in reusable parts.

        Raises:
            SettingsMismatchError: an interrupted run with other settings and no overwrite.
        """
        reusable = self.check(settings, overwrite)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        wanted = json.loads(json.dumps(dict(settings)))
        for path in self.dir.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write cut short by a kill
            elif path.name.startswith("chunk-") and not reusable:
                path.unlink(missing_ok=True)
        write_bytes_atomic(
            self.dir / self.SETTINGS, json.dumps(wanted, indent=1, sort_keys=True).encode()
        )
        write_bytes_atomic(self.dir / self.META, json.dumps(dict(meta or {}), indent=1).encode())
        expected = {self.part_path(k).name: list(stems) for k, stems in enumerate(chunks)}
        reused = 0
        for path in sorted(self.dir.glob("chunk-*.h5")):
            stems = expected.get(path.name)
            if stems is not None and self.part_stems(path) == stems:
                reused += len(stems)
            else:
                path.unlink(missing_ok=True)  # another schedule, or unreadable
        return reused

    @staticmethod
    def part_stems(path: Path) -> list[str] | None:
        """The complete stems of a part file, or None if it is missing or unreadable."""
        try:
            with open_h5(path) as h5:
                if h5.attrs.get("format") != PART_FORMAT:
                    return None
                stems = [str(s) for s in h5.attrs.get("stems", [])]
                return stems if _h5_stems(h5) == sorted(stems) else None
        except (OSError, KeyError, ValueError):  # MaskStoreError too: an unusable part is redone
            return None

    def has(self, index: int, stems: Sequence[str]) -> bool:
        """True if chunk ``index`` is done with exactly these stems."""
        return self.part_stems(self.part_path(index)) == list(stems)

    def write(self, index: int, pairs: Sequence[PairMasks]) -> None:
        """Record a finished chunk (atomically)."""
        stems = [pair.stem for pair in pairs]

        def fill(h5: h5py.File) -> None:
            for pair in pairs:
                write_pair(h5, pair)

        write_h5_atomic(self.part_path(index), {"format": PART_FORMAT, "stems": stems}, fill)

    def merge(
        self, attrs: Mapping[str, Any], chunks: Sequence[Sequence[str]], previous_store: Path | None
    ) -> tuple[int, dict[str, int]]:
        """Write the store: the previous store's pairs, then every chunk's, atomically.

        Args:
            attrs: the store's root attributes.
            chunks: the stems of every chunk (all must be done).
            previous_store: a store whose pairs are kept, or None.

        Returns:
            The number of pairs in the new store, and per modality the number of empty
            masks among the chunks' pairs.

        Raises:
            MaskStoreError: a chunk is missing (a rank failed).
        """
        missing = [k for k, stems in enumerate(chunks) if not self.has(k, stems)]
        if missing:
            raise MaskStoreError(
                f"{len(missing)} chunk(s) of {self.dir} are missing (first: {self.part_path(missing[0]).name}); "
                f"run the same command again to finish them"
            )
        count = 0
        empty = dict.fromkeys(MODALITIES, 0)

        def copy_all(source: h5py.File, stems: Iterable[str], dest: h5py.File, new: bool) -> None:
            nonlocal count
            for stem in stems:
                for modality, is_empty in _copy_pair(source, stem, dest, new).items():
                    empty[modality] += int(is_empty)
                count += 1

        def fill(dest: h5py.File) -> None:
            for modality in MODALITIES:
                dest.require_group(modality)
            if previous_store is not None:
                with open_h5(previous_store) as old:
                    copy_all(old, _h5_stems(old), dest, new=False)
            for k, stems in enumerate(chunks):
                with open_h5(self.part_path(k)) as part:
                    copy_all(part, stems, dest, new=True)

        write_h5_atomic(self.store, attrs, fill, tmp_dir=self.dir)
        return count, empty

    def remove(self) -> None:
        """Delete the journal (after a successful merge, or when nothing is left to do)."""
        self._release_lock()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _acquire_lock(self) -> None:
        """Refuse a second writer on the same store (released by the OS if killed)."""
        if self._lock is not None:
            return
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one writer is the user's job
            return
        handle = open(self.dir / ".lock", "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise MaskStoreError(
                f"another `occo masks gen` is writing {self.store} (lock {self.dir / '.lock'}); "
                f"wait for it to finish"
            ) from exc
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ----------------------------------------------------------------------------- reading


def _store_file(path: Path) -> None:
    """Refuse a missing file or one that is not HDF5 (before h5py parses it)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"mask store not found: {path}; make one with `occo masks gen DATASET`"
        )
    if not is_hdf5_file(path):
        raise MaskStoreError(
            f"{path} is not an HDF5 file, so not an occo mask store; make one with `occo masks gen`"
        )


def _store_attrs(h5: h5py.File, path: Path) -> dict[str, Any]:
    """The root attributes of an open store, checked to be an occo store this occo reads."""
    try:
        attrs = {key: _python(value) for key, value in h5.attrs.items()}
    except _H5_ERRORS as exc:
        raise _damaged(path, exc) from None
    if attrs.get("format") != FORMAT:
        raise MaskStoreError(
            f"{path} is not an occo mask store (format attribute missing); make one with occo masks gen"
        )
    if int(attrs.get("version", 0)) > STORE_VERSION:
        raise MaskStoreError(
            f"{path} is a version {attrs['version']} mask store; upgrade occo to read it"
        )
    return attrs


def read_store_attrs(path: str | Path, *, audit: bool = True) -> dict[str, Any]:
    """The root attributes of a mask store as plain Python values.

    Args:
        path: the store.
        audit: check the whole file first (:func:`occo.masks.h5read.open_h5`); without it
            only the root attributes are read (to decide whether --overwrite may replace it).

    Raises:
        FileNotFoundError: no such file.
        MaskStoreError: not an occo mask store, a newer version, or (audited) a file that
            would read data from outside it (:class:`UnsafeStoreError`) or holds a mask
            occo does not write (:class:`BadMaskError`).
    """
    path = Path(path)
    _store_file(path)
    with open_h5(path, audit=audit) as h5:
        return _store_attrs(h5, path)


class _MaskView:
    """What both readers share: settings, sorted stems, membership, a context manager.

    Subclasses set ``_settings``, ``_stems`` (sorted) and ``_index`` (the same stems as a
    set) and define ``read`` and ``read_pair``.
    """

    _settings: dict[str, Any]
    _stems: list[str]
    _index: set[str]

    @property
    def settings(self) -> dict[str, Any]:
        """Root attributes or run settings: format, prompt, models, thresholds, ir_dir, ..."""
        return dict(self._settings)

    def stems(self) -> list[str]:
        """Stems with both masks written, sorted."""
        return list(self._stems)

    def __len__(self) -> int:
        return len(self._stems)

    def __contains__(self, stem: object) -> bool:
        return stem in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.stems())

    def close(self) -> None:
        """Release open files (none by default)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MaskReader(_MaskView):
    """Read-only access to a mask store, safe to pass to DataLoader worker processes.

    The HDF5 file is opened lazily, once per process (h5py handles must not cross a fork);
    pickling drops the handle.

    Args:
        path: the store (``masks.h5``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _store_file(self.path)
        with open_h5(self.path) as h5:  # every link and dataset checked once, here
            self._settings = _store_attrs(h5, self.path)
            try:
                self._stems = _h5_stems(h5)
            except _H5_ERRORS as exc:
                raise _damaged(self.path, exc) from None
        self._index = set(self._stems)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # Audited when this reader was made; each read checks its own datasets again.
            self._file = open_h5(self.path, audit=False)
            self._pid = os.getpid()
        return self._file

    def _check(self, stem: str) -> None:
        if stem not in self._index:
            raise KeyError(f"stem '{stem}' is not in mask store {self.path}")

    def shapes(self, stem: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(shape_ir, shape_vi)`` of a pair's masks, read from the file's metadata only."""
        self._check(stem)
        try:
            h5 = self._h5()
            return tuple(  # type: ignore[return-value]
                tuple(mask_dataset(h5, m, stem, self.path).shape) for m in MODALITIES
            )
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(self.path, exc, f" at pair '{stem}'") from None

    def read(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """Both masks of a pair.

        Args:
            stem: the pair's file stem.

        Returns:
            ``(mask_ir, mask_vi)``, each ``(H, W)`` uint8 with values 0/1.

        Raises:
            BadMaskError: a mask that is not 2-D uint8/bool 0/1 or is too large.
            UnsafeStoreError: its data would come from outside the store.
        """
        self._check(stem)
        try:
            h5 = self._h5()
            return read_mask(h5, "ir", stem, self.path), read_mask(h5, "vi", stem, self.path)
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(self.path, exc, f" at pair '{stem}'") from None

    def read_pair(self, stem: str) -> PairMasks:
        """Masks plus boxes, scores, phrases and source file names of a pair."""
        self._check(stem)
        try:
            return read_pair(self._h5(), stem, self.path)
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(self.path, exc, f" at pair '{stem}'") from None

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._file = None
        self._pid = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = None
        return state


class PartsReader(_MaskView):
    """Read-only view of the pairs an unfinished ``occo masks gen`` run has done so far.

    The store itself is written once, when the run ends; until then its finished chunks
    sit in ``<store>.parts/``. This lets ``occo masks show/info/export`` look at them
    early. Training never reads it: a partial store would silently drop pairs.

    Args:
        store: the store the run will write (``masks.h5``).

    Raises:
        FileNotFoundError: no unfinished run with finished chunks.
    """

    def __init__(self, store: str | Path) -> None:
        journal = PartsJournal(store)
        settings = journal.read_settings() if journal.exists() else None
        self.path = journal.dir
        self._where: dict[str, Path] = {}
        for part in sorted(journal.dir.glob("chunk-*.h5")) if settings is not None else []:
            for stem in PartsJournal.part_stems(part) or []:
                self._where[stem] = part
        if not self._where:
            raise FileNotFoundError(f"no finished chunks of an unfinished run in {self.path}")
        meta = _json_dict(journal.dir / PartsJournal.META) or {}
        self._settings = {**settings, **meta}
        self._stems = sorted(self._where)
        self._index = set(self._stems)

    def _part(self, stem: str):
        return open_h5(self._where[stem])

    def shapes(self, stem: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(shape_ir, shape_vi)`` of a pair's masks, as :meth:`MaskReader.shapes`."""
        try:
            with self._part(stem) as h5:
                return tuple(  # type: ignore[return-value]
                    tuple(mask_dataset(h5, m, stem, self._where[stem]).shape) for m in MODALITIES
                )
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(self._where[stem], exc, f" at pair '{stem}'") from None

    def read(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """``(mask_ir, mask_vi)`` of a pair, as :meth:`MaskReader.read`."""
        path = self._where[stem]
        try:
            with self._part(stem) as h5:
                return read_mask(h5, "ir", stem, path), read_mask(h5, "vi", stem, path)
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(path, exc, f" at pair '{stem}'") from None

    def read_pair(self, stem: str) -> PairMasks:
        """Masks, boxes, scores and phrases of a pair, as :meth:`MaskReader.read_pair`."""
        path = self._where[stem]
        try:
            with self._part(stem) as h5:
                return read_pair(h5, stem, path)
        except MaskStoreError:
            raise
        except _H5_ERRORS as exc:
            raise _damaged(path, exc, f" at pair '{stem}'") from None


def open_mask_store(path: str | Path) -> MaskReader:
    """Open a mask store for reading (the trainer's entry point).

    Args:
        path: ``masks.h5`` made by ``occo masks gen``.

    Returns:
        A :class:`MaskReader`: ``.stems()``, ``.read(stem) -> (mask_ir, mask_vi)``, ``.settings``.
    """
    return MaskReader(path)


# ----------------------------------------------------------------------------- summary, export


def summarize_store(
    reader: MaskReader, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Counts and coverage statistics of a store (what ``occo masks info`` shows).

    Args:
        reader: an open store.
        progress: called as ``progress(done, total)`` while masks are read.

    Returns:
        ``{"pairs", "both_empty", "ir": {...}, "vi": {...}, "regions": {...}}`` where each
        modality has ``empty``, ``boxes_mean``, ``boxes_max`` and ``coverage`` (fraction of
        mask pixels: mean, median, min, max) and regions the mean fraction of each region
        over pairs whose two masks have one size.
    """
    from occo.masks.regions import split_regions

    stems = reader.stems()
    cover: dict[str, list[float]] = {m: [] for m in MODALITIES}
    boxes: dict[str, list[int]] = {m: [] for m in MODALITIES}
    region_sums = {"shared": 0.0, "unique_vi": 0.0, "unique_ir": 0.0, "background": 0.0}
    same_size = both_empty = 0
    for n, stem in enumerate(stems):
        pair = reader.read_pair(stem)
        for modality in MODALITIES:
            entry: ModalityMasks = getattr(pair, modality)
            cover[modality].append(float(entry.mask.mean()) if entry.mask.size else 0.0)
            boxes[modality].append(len(entry.boxes))
        both_empty += int(not pair.ir.mask.any() and not pair.vi.mask.any())
        if pair.ir.mask.shape == pair.vi.mask.shape:
            regions = split_regions(pair.vi.mask, pair.ir.mask)
            for name in region_sums:
                region_sums[name] += float(getattr(regions, name).mean())
            same_size += 1
        if progress:
            progress(n + 1, len(stems))

    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
        arr = np.asarray(values)
        return {
            "mean": float(arr.mean()),
            "median": float(np.median(arr)),
            "min": float(arr.min()),
            "max": float(arr.max()),
        }

    summary: dict[str, Any] = {"pairs": len(stems), "both_empty": both_empty}
    for modality in MODALITIES:
        summary[modality] = {
            "empty": sum(1 for c in cover[modality] if c == 0.0),
            "boxes_mean": float(np.mean(boxes[modality])) if stems else 0.0,
            "boxes_max": int(max(boxes[modality], default=0)),
            "coverage": stats(cover[modality]),
        }
    summary["regions"] = {k: (v / same_size if same_size else 0.0) for k, v in region_sums.items()}
    return summary


def export_paths(out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """The files :func:`export_masks` writes for a pair: ``(mask_ir, mask_vi)`` PNG paths."""
    out_dir = Path(out_dir)
    return out_dir / "mask_ir" / f"mask_{stem}.png", out_dir / "mask_vi" / f"mask_{stem}.png"


def export_masks(
    reader: MaskReader,
    out_dir: str | Path,
    stems: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write ``mask_vi/`` and ``mask_ir/`` folders of 0/255 PNGs named ``mask_<stem>.png``.

    This is the layout the OCCO release reads (``mask_<name>`` for PNG sources). Every
    mask is read and checked first, so a store with a bad mask (values other than 0/1, a
    damaged chunk) writes nothing; then each file is written atomically.

    Args:
        reader: an open store.
        out_dir: destination folder (created).
        stems: pairs to export (default: all).
        progress: called as ``progress(done, total)`` over both passes (total: 2 x pairs).

    Returns:
        The number of pairs written.

    Raises:
        MaskStoreError: a mask that cannot be exported (nothing is written then).
    """
    from occo.data.io import write_image_atomic

    out_dir = Path(out_dir)
    stems = reader.stems() if stems is None else list(stems)
    total = 2 * len(stems)
    for n, stem in enumerate(stems):
        reader.read(stem)
        if progress:
            progress(n + 1, total)
    for n, stem in enumerate(stems):
        mask_ir, mask_vi = reader.read(stem)
        ir_path, vi_path = export_paths(out_dir, stem)
        write_image_atomic(ir_path, mask_ir * np.uint8(255))
        write_image_atomic(vi_path, mask_vi * np.uint8(255))
        if progress:
            progress(len(stems) + n + 1, total)
    return len(stems)
