"""Class tables: a dataset's class names read from a text file, and picking classes by name.

Shared by every reader of annotations: label maps (class indices per pixel), YOLO box
files (class indices per box) and the downstream evaluation (class names per box).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from occo.data.errors import OccoError


class ClassTableError(OccoError, ValueError):
    """A class table that cannot be read, or a class that is not in it."""


def name_key(name: str) -> str:
    """Class names compare case- and separator-insensitively ("Car stop" = "car_stop")."""
    return "_".join(name.lower().replace("-", " ").replace("_", " ").split())


def read_class_names(path: str | Path) -> dict[int, str]:
    """A dataset's class table from a text file.

    Two layouts: one name per line, line N (from 0) naming class N (YOLO's classes.txt);
    or ``ID NAME`` lines (``ID: NAME`` and ``ID,NAME`` too) for tables with gaps. ``#``
    starts a comment.

    Args:
        path: the text file.

    Returns:
        Class index -> name.

    Raises:
        ClassTableError: unreadable, empty, or a name or index given twice.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassTableError(f"cannot read class names from {path}: {exc}") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    numbered = [e for e in entries if e]
    explicit = bool(numbered) and all(
        e.replace(":", " ").replace(",", " ").split()[0].isdigit() for e in numbered
    )
    table: dict[int, str] = {}
    if explicit:
        for entry in numbered:
            index, _, name = entry.replace(":", " ").replace(",", " ").partition(" ")
            if int(index) in table:
                raise ClassTableError(f"{path} gives class {int(index)} twice")
            table[int(index)] = name.strip()
    else:  # line N names class N; blank lines are unnamed classes
        table = {i: e for i, e in enumerate(entries) if e}
    keys = [name_key(name) for name in table.values()]
    if not table or any(not k for k in keys):
        raise ClassTableError(f"{path} names no classes: write one name per line, or ID NAME lines")
    if len(set(keys)) != len(keys):
        raise ClassTableError(f"{path} names a class twice")
    return table


def parse_classes(text: str, names: dict[int, str] | None = None) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; with a class table, names too: ``"person,car"`` (sorted, unique).

    Args:
        text: comma-separated class indices and/or names.
        names: class index -> name (:func:`read_class_names`), needed for names.

    Raises:
        ValueError: a part is neither a non-negative index nor a known name.
    """
    lookup = {name_key(name): index for index, name in (names or {}).items()}
    classes = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            classes.add(int(part))
        elif not lookup:
            raise ValueError(
                f"--classes: '{part}' is a class name; give the dataset's class table with "
                "--class-names FILE (one name per line, line N = class N), or use indices like 1,2"
            )
        elif name_key(part) in lookup:
            classes.add(lookup[name_key(part)])
        else:
            known = ", ".join(names.values())  # type: ignore[union-attr]
            raise ValueError(f"--classes: unknown class '{part}' (known: {known})")
    if not classes:
        raise ValueError(f"--classes must name classes, like 1,2 or person,car (got '{text}')")
    return sorted(classes)


def select_class_names(text: str | None, known: Sequence[str]) -> list[str]:
    """Pick classes by name from a list of known names, keeping the spelling of ``known``.

    Args:
        text: comma-separated names (case and ``-``/``_``/space do not matter), or None
            for all of ``known``.
        known: the class names of the annotations, in table order.

    Returns:
        The chosen names, in the order of ``known``.

    Raises:
        ClassTableError: a name that is not in ``known`` (the message lists them), or none.
    """
    if text is None:
        return list(known)
    lookup = {name_key(name): name for name in known}
    wanted = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if name_key(part) not in lookup:
            raise ClassTableError(
                f"--classes: unknown class '{part}' (known: {', '.join(known) or 'none'})"
            )
        wanted.add(lookup[name_key(part)])
    if not wanted:
        raise ClassTableError(f"--classes must name classes, like person,car (got '{text}')")
    return [name for name in known if name in wanted]


def merge_class_names(tables: Iterable[Sequence[str]]) -> list[str]:
    """The names of several tables in first-seen order, one entry per :func:`name_key`."""
    merged: dict[str, str] = {}
    for table in tables:
        for name in table:
            merged.setdefault(name_key(name), name)
    return list(merged.values())
