"""The one way occo opens an HDF5 mask store: every byte it reads comes from inside the file.

A mask store may come with a downloaded dataset, so it is read as untrusted input. HDF5 can
make a dataset's bytes come from elsewhere: external raw storage (any local file, read
silently), external links (another HDF5 file), virtual datasets (mapped from other files),
and soft or user-defined links. occo writes none of these, so :func:`open_h5` refuses a file
holding any of them, before any data is read, and checks every mask's type and declared
size (a tiny compressed file can declare a mask of 10^10 pixels). :func:`read_mask` checks
the same again for the one dataset it reads, then its values (0/1), so a file swapped after
it was opened is refused too. Each refusal is one line naming the file and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5l, h5o, h5z

from occo.masks.errors import BadMaskError, DamagedStoreError, MaskStoreError, UnsafeStoreError

#: The modality groups: ``/ir/<stem>`` and ``/vi/<stem>`` hold the masks.
MODALITIES = ("ir", "vi")
#: The group of the detections: ``/detections/<modality>/<stem>``, one record per box.
DETECTIONS = "detections"
#: A detection record: box x0 y0 x1 y1 in pixels, score, matched phrase or class name.
DETECTION_DTYPE = np.dtype(
    [("box", np.float32, (4,)), ("score", np.float32), ("label", h5py.string_dtype())]
)
#: Version 1 stores kept the detections as these attributes of the mask dataset.
DETECTION_ATTRS = ("boxes", "scores", "labels")
#: Most pixels a stored mask may declare (16384 x 16384); larger is refused before reading.
MAX_MASK_PIXELS = 1 << 28
#: Most detections one image may have in a store.
MAX_BOXES = 1 << 20
#: Compression filters a store may use (occo writes gzip; shuffle, fletcher32, LZF are harmless).
_FILTERS = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32, 32000}
#: What h5py raises for a damaged file or chunk (bad checksum, failed inflate, broken B-tree).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError)
_REMAKE = "make the masks again with `occo masks gen`"


def damaged(path: Path, exc: BaseException, where: str = "") -> DamagedStoreError:
    """The one-line error for a store (or journal part) that h5py cannot read."""
    reason = (str(exc).splitlines() or [""])[0].strip() or type(exc).__name__
    return DamagedStoreError(
        f"{path} is damaged{where} ({reason}); make it again with `occo masks gen` and --overwrite"
    )


def _unsafe(path: Path, what: str) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"{path} is refused: {what}; occo reads only data stored inside a mask store, "
        f"so it reads nothing from this file ({_REMAKE})"
    )


def open_h5(path: str | Path, *, audit: bool = True) -> h5py.File:
    """Open an HDF5 file read-only, refusing anything that reads outside it.

    Args:
        path: the store or journal part.
        audit: check every link and dataset (:func:`audit_file`); without it only the
            datasets later read through :func:`read_mask` are checked (worker processes
            reopening a store that was audited when it was opened first).

    Returns:
        The open file (close it, or use it as a context manager).

    Raises:
        UnsafeStoreError: external storage, an external, soft or user-defined link, a
            virtual dataset, an unknown storage layout or filter.
        BadMaskError: a mask that is not 2-D uint8/bool, or declares too many pixels.
        DamagedStoreError: h5py cannot read the file.
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r", locking=False)
    except H5_ERRORS as exc:
        raise damaged(path, exc) from None
    if audit:
        try:
            identity = _identity(h5)
            if identity is None or identity not in _AUDITED:
                audit_file(h5, path)
                if identity is not None:
                    _AUDITED.add(identity)
        except MaskStoreError:
            h5.close()
            raise
        except H5_ERRORS as exc:
            h5.close()
            raise damaged(path, exc) from None
    return h5


#: Files this process has audited, by identity (forked workers inherit it: a DataLoader
#: worker opening the store the main process checked does not walk it again).
_AUDITED: set[tuple[int, ...]] = set()


def _identity(h5: h5py.File) -> tuple[int, ...] | None:
    """Device, inode, size and modification time of the open file (None if unknown)."""
    try:
        st = os.fstat(h5.id.get_vfd_handle())
    except (OSError, TypeError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def audit_file(h5: h5py.File, path: Path) -> None:
    """Check every link (all hard) and every dataset (storage inside the file, masks' shapes)."""

    # A visit stops at the first callback result that is not None (raising inside one
    # would cross HDF5's C frames): the callbacks return the error, raised here.
    def on_link(name: bytes, info: Any) -> MaskStoreError | None:
        if info.type != h5l.TYPE_HARD:
            return _unsafe(path, _link_text(h5.id, name, info.type))
        return None

    def on_object(name: bytes, info: Any) -> MaskStoreError | None:
        if name == b".":
            return None
        where = "/" + name.decode(errors="replace")
        parts = where[1:].split("/")
        try:
            if info.type == h5o.TYPE_DATASET:
                dsid = h5d.open(h5.id, name)
                check_storage(dsid, path, where)
                if len(parts) == 2 and parts[0] in MODALITIES:
                    check_mask_meta(dsid.shape, dsid.dtype, path, where)
                elif len(parts) == 3 and parts[0] == DETECTIONS and parts[1] in MODALITIES:
                    check_detection_meta(dsid.shape, dsid.dtype, path, where)
            elif len(parts) == 2 and parts[0] in MODALITIES:
                return BadMaskError(f"{path}: {where} is not a mask dataset; {_REMAKE}")
        except MaskStoreError as exc:
            return exc
        except H5_ERRORS as exc:
            return damaged(path, exc, f" at {where}")
        return None

    found = h5.id.links.visit(on_link, info=True)
    if found is None:  # only hard links: the object visit cannot leave the file
        found = h5o.visit(h5.id, on_object, info=True)
    if found is not None:
        raise found


def _link_text(gid: Any, name: bytes, kind: int) -> str:
    where = "/" + name.decode(errors="replace")
    if kind == h5l.TYPE_EXTERNAL:
        target_file, target = (
            v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for v in gid.links.get_val(name)
        )
        return f"{where} is an external link to {target_file}:{target}"
    if kind == h5l.TYPE_SOFT:
        target = gid.links.get_val(name)
        target = target.decode(errors="replace") if isinstance(target, bytes) else str(target)
        return f"{where} is a soft link to {target}"
    return f"{where} is a user-defined link (type {kind})"


def check_storage(dsid: Any, path: Path, where: str) -> None:
    """Refuse a dataset whose bytes are not stored inside the file (or need unknown filters)."""
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        source = ""
        if dcpl.get_virtual_count():
            source = f" ({dcpl.get_virtual_filename(0)}:{dcpl.get_virtual_dsetname(0)})"
        raise _unsafe(path, f"{where} is a virtual dataset mapped from other data{source}")
    if dcpl.get_external_count():
        name = dcpl.get_external(0)[0]
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        raise _unsafe(path, f"{where} keeps its bytes in another file ({name})")
    if layout not in (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED):
        raise _unsafe(path, f"{where} has an unknown storage layout ({layout})")
    for index in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(index)[0]
        if code not in _FILTERS:
            raise _unsafe(path, f"{where} needs HDF5 filter {code}, which occo stores never use")


def check_mask_meta(
    shape: tuple[int, ...], dtype: np.dtype, path: Path, where: str
) -> tuple[int, int]:
    """A mask's declared shape and type, checked before any of it is read."""
    if len(shape) != 2:
        raise BadMaskError(
            f"{path}: mask {where} has shape {tuple(shape)}; occo masks are (height, width); {_REMAKE}"
        )
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.bool_)):
        raise BadMaskError(f"{path}: mask {where} is {dtype}, not uint8 0/1; {_REMAKE}")
    height, width = (int(n) for n in shape)
    if height * width > MAX_MASK_PIXELS:
        raise BadMaskError(
            f"{path}: mask {where} declares {width}x{height} pixels, more than occo reads "
            f"({MAX_MASK_PIXELS} pixels); refused before reading it"
        )
    return height, width


def check_detection_meta(shape: tuple[int, ...], dtype: np.dtype, path: Path, where: str) -> int:
    """The declared shape and record type of a detections dataset; returns the count."""
    dtype = np.dtype(dtype)
    fields = dtype.fields or {}
    ok = (
        len(shape) == 1
        and tuple(fields) == DETECTION_DTYPE.names
        and fields["box"][0].shape == (4,)
        and fields["box"][0].base.kind == "f"
        and fields["score"][0].kind == "f"
        and h5py.check_string_dtype(fields["label"][0]) is not None
    )
    if not ok:
        raise BadMaskError(
            f"{path}: {where} is {dtype} {tuple(shape)}, not the detections occo writes "
            f"(box, score, label records); {_REMAKE}"
        )
    if shape[0] > MAX_BOXES:
        raise BadMaskError(
            f"{path}: {where} declares {shape[0]} detections, more than occo reads ({MAX_BOXES})"
        )
    return int(shape[0])


def hard_child(group: h5py.Group, name: str, path: Path) -> Any:
    """``group[name]`` if that is a hard link, None if absent; never follows another link."""
    key = name.encode()
    try:
        kind = group.id.links.get_info(key).type
    except H5_ERRORS:  # absent, or a name h5py cannot look up ("a/b", "."): not a member
        return None
    if kind != h5l.TYPE_HARD:
        base = group.name.rstrip("/")
        raise _unsafe(path, _link_text(group.id, key, kind).replace("/", f"{base}/", 1))
    return group[name]


def mask_dataset(h5: h5py.File, modality: str, stem: str, path: Path) -> h5py.Dataset:
    """The checked dataset of one mask (storage, type and declared size), data unread."""
    where = f"/{modality}/{stem}"
    group = hard_child(h5, modality, path)
    dataset = hard_child(group, stem, path) if isinstance(group, h5py.Group) else None
    if dataset is None:
        raise KeyError(f"stem '{stem}' is not in mask store {path}")
    if not isinstance(dataset, h5py.Dataset):
        raise BadMaskError(f"{path}: {where} is not a mask dataset; {_REMAKE}")
    check_storage(dataset.id, path, where)
    check_mask_meta(dataset.shape, dataset.dtype, path, where)
    return dataset


def read_mask(
    h5: h5py.File, modality: str, stem: str, path: Path, dataset: h5py.Dataset | None = None
) -> np.ndarray:
    """One mask as ``(H, W)`` uint8 0/1, checked before it is read and after (its values).

    ``dataset``: the mask's dataset if :func:`mask_dataset` has just given it (checked).
    """
    data = (dataset if dataset is not None else mask_dataset(h5, modality, stem, path))[()]
    if data.dtype == np.bool_:
        return data.view(np.uint8)
    if data.size and int(data.max()) > 1:
        raise BadMaskError(
            f"{path}: mask /{modality}/{stem} holds values up to {int(data.max())}, not 0/1; {_REMAKE}"
        )
    return data


def read_detections(
    h5: h5py.File, modality: str, stem: str, path: Path, mask: h5py.Dataset | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Boxes ``(N, 4)``, scores ``(N,)`` and phrases of one image.

    Stores of this version keep them as one record dataset ``/detections/<modality>/<stem>``
    (absent when the image has none); version 1 stores as attributes of the mask dataset
    (at most 64 KiB each): both are read. ``mask``: the image's checked mask dataset.
    """
    group = hard_child(h5, DETECTIONS, path)
    group = hard_child(group, modality, path) if isinstance(group, h5py.Group) else None
    dataset = hard_child(group, stem, path) if isinstance(group, h5py.Group) else None
    if isinstance(dataset, h5py.Dataset):
        where = f"/{DETECTIONS}/{modality}/{stem}"
        check_storage(dataset.id, path, where)
        check_detection_meta(dataset.shape, dataset.dtype, path, where)
        records = dataset[()]
        found = {"boxes": records["box"], "scores": records["score"], "labels": records["label"]}
    else:  # none, or a version 1 store: attributes of the mask
        attrs = (mask if mask is not None else mask_dataset(h5, modality, stem, path)).attrs
        found = {kind: attrs[kind] for kind in DETECTION_ATTRS if kind in attrs}
    boxes = np.asarray(found.get("boxes", np.zeros((0, 4))), np.float32)
    scores = np.asarray(found.get("scores", np.zeros((0,))), np.float32)
    labels = [
        v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        for v in np.asarray(found.get("labels", []), dtype=object).reshape(-1).tolist()
    ]
    if boxes.size % 4 or not len(boxes.reshape(-1, 4)) == len(scores.reshape(-1)) == len(labels):
        raise BadMaskError(
            f"{path}: the detections of /{modality}/{stem} disagree in number "
            f"(boxes {boxes.shape}, scores {scores.shape}, {len(labels)} labels); {_REMAKE}"
        )
    return boxes.reshape(-1, 4), scores.reshape(-1), labels


def mask_stems(h5: h5py.File, path: Path) -> list[str]:
    """Stems present in both modality groups (complete pairs), sorted."""
    groups = []
    for modality in MODALITIES:
        group = hard_child(h5, modality, path)
        groups.append(set(group.keys()) if isinstance(group, h5py.Group) else set())
    return sorted(set.intersection(*groups))
