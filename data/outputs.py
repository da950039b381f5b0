"""Where a command may write: outside its inputs, somewhere writable, nothing replaced unasked.

Every command that writes checks its destination with these before the work starts, so a
bad destination costs one line and no wasted work, and an input is never overwritten.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from occo.data.errors import OccoError


class OutputError(OccoError, ValueError):
    """A destination that cannot or must not be written."""


#: Free space below which a destination counts as full before the work starts.
MIN_FREE_BYTES = 1 << 20


class WriteError(OccoError, OSError):
    """Writing a file failed for a reason outside occo (a full or read-only disk, no
    permission): the message names the file; ``errno`` is the system's error number."""


#: System errors that say the destination cannot take the data (not a bug, not an input).
DISK_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EFBIG,
                 errno.EACCES, errno.EPERM, errno.EIO)  # fmt: skip
    if code is not None
)

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or choose another place",
    getattr(errno, "EDQUOT", -1): "the disk quota is used up; free some space or choose another place",
    errno.EROFS: "the file system is read-only; choose a writable place",
    errno.EFBIG: "the file is larger than this file system or process allows",
    errno.EACCES: "permission denied; choose a writable place",
    errno.EPERM: "not permitted; choose a writable place",
    errno.EIO: "input/output error on the disk",
}


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a system error about the destination (full, read-only, denied)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def write_error(exc: OSError, path: str | Path, doing: str = "write") -> WriteError:
    """``exc`` (an OSError met while writing ``path``) as a one-line :class:`WriteError`.

    Args:
        exc: the system error.
        path: the file the user asked for (not a temporary's name).
        doing: the verb for the message (``write``, ``create``...).

    Returns:
        The error to raise (``raise write_error(exc, path) from None``).
    """
    if isinstance(exc, WriteError):
        return exc
    advice = _ADVICE.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__)
    error = WriteError(f"cannot {doing} {path}: {advice}")
    error.errno = exc.errno
    return error


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder)


def refuse_inside_inputs(out: str | Path, inputs: Iterable[str | Path | None], what: str) -> None:
    """Refuse a destination folder that is an input folder or inside one.

    Args:
        out: the folder the command writes into.
        inputs: the folders it reads (None entries are ignored).
        what: how the user named the destination, e.g. ``OUT_DIR`` or ``--out``.

    Raises:
        OutputError: ``out`` is equal to or inside an input folder.
    """
    out = Path(out)
    for folder in inputs:
        if folder is not None and _is_within(out, Path(folder)):
            raise OutputError(
                f"{what} {out} is inside the input folder {folder}; "
                "choose a folder outside the inputs (inputs are never overwritten)"
            )


def check_writable_folder(folder: str | Path, what: str) -> None:
    """Check that ``folder`` is, or can be made, a folder this process can write into.

    Probes for real (creates the missing folders and a temporary file, then removes all
    it made), so read-only file systems, permissions and ACLs are all caught, for root too.

    Args:
        folder: the destination folder (need not exist).
        what: how the user named it, for the message.

    Raises:
        OutputError: a file is in the way, the folder cannot be created, or it is read-only.
    """
    folder = Path(folder)
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{what} {folder}: {probe} is a broken symbolic link")
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{what} {folder}: {probe} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{what} {folder} cannot be created ({exc.strerror or exc}); choose a writable folder"
        ) from None
    try:
        fd, name = tempfile.mkstemp(prefix=".occo-write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
        if shutil.disk_usage(folder).free < MIN_FREE_BYTES:  # an empty file still fits
            raise OSError(errno.ENOSPC, "the disk is full")
    except OSError as exc:
        raise OutputError(
            f"{what} {folder} is not writable ({exc.strerror or exc}); choose a writable folder"
            + (" or free some space" if exc.errno == errno.ENOSPC else "")
        ) from None
    finally:
        for made in missing:  # deepest first: leave no trace of the check
            try:
                made.rmdir()
            except OSError:
                break


def check_writable_file(path: str | Path, what: str) -> None:
    """Check that the file ``path`` can be written (atomically, in its folder).

    Args:
        path: the file to write (need not exist).
        what: how the user named it, e.g. ``--csv``.

    Raises:
        OutputError: ``path`` is a folder or read-only, or its folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} is read-only; choose another file")
    check_writable_folder(path.parent, what)


def refuse_existing(paths: Sequence[str | Path], what: str, option: str = "--overwrite") -> None:
    """Refuse to replace files that already exist (the user asks for that with ``option``).

    Args:
        paths: files the command is about to write.
        what: the destination as the user named it, for the message.
        option: the option that allows replacing them.

    Raises:
        OutputError: some of ``paths`` exist; names the first and the count.
    """
    existing = [Path(p) for p in paths if os.path.lexists(p)]
    if existing:
        first = f" (first: {existing[0]})" if len(existing) > 1 else f" ({existing[0]})"
        raise OutputError(
            f"{what}: {len(existing)} file(s) already exist{first}; pass {option} to replace "
            "them, or choose another folder"
        )
