"""Pairing infrared and visible files by file stem across two folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from occo.data.errors import OccoError

#: Extensions occo reads, compared case-insensitively.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DuplicateStemError(OccoError, ValueError):
    """Two files in one folder share a stem (``a.png`` and ``a.jpg``): the pair is ambiguous."""


def _scan(folder: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """Images of ``folder`` by stem, and the hidden image files (``.name``) left out."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    found: dict[str, Path] = {}
    hidden: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        # A broken symbolic link stays in: reading it then says what it is, where a
        # silent skip would report its partner as having none.
        if not (path.is_file() or (path.is_symlink() and not path.exists())):
            continue
        if path.name.startswith("."):
            hidden.append(path)
            continue
        if path.stem in found:
            raise DuplicateStemError(
                f"two images share the stem '{path.stem}' in {folder}: "
                f"{found[path.stem].name} and {path.name}; rename one"
            )
        found[path.stem] = path
    return dict(sorted(found.items())), hidden


def list_images(folder: str | Path) -> dict[str, Path]:
    """Map each image stem in ``folder`` (not recursive) to its path.

    Hidden files (names starting with ``.``, e.g. macOS's ``._x.png``) are left out;
    :func:`pair_images` lists them. Broken symbolic links are kept (reading one says so).

    Args:
        folder: directory to scan.

    Returns:
        ``{stem: path}`` sorted by stem.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
        DuplicateStemError: two images share a stem.
    """
    return _scan(folder)[0]


@dataclass
class Pairing:
    """Result of pairing two folders by stem.

    Attributes:
        pairs: ``(stem, first_path, second_path)`` for every stem found in both folders,
            sorted by stem.
        only_first: files of the first folder without a partner.
        only_second: files of the second folder without a partner.
        hidden: image files of either folder left out because their names start with
            ``.`` (editor and macOS side files), so that a caller can say so.
    """

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    only_first: list[Path] = field(default_factory=list)
    only_second: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        return [stem for stem, _, _ in self.pairs]

    @property
    def unpaired(self) -> list[Path]:
        return self.only_first + self.only_second


def pair_images(first: str | Path, second: str | Path) -> Pairing:
    """Pair the images of two folders by file stem (extensions may differ).

    Args:
        first: e.g. the infrared folder.
        second: e.g. the visible folder.

    Returns:
        A :class:`Pairing`; files without a partner are reported, never guessed.
    """
    (a, hidden_a), (b, hidden_b) = _scan(first), _scan(second)
    result = Pairing(hidden=hidden_a + hidden_b)
    for stem, path in a.items():
        if stem in b:
            result.pairs.append((stem, path, b[stem]))
        else:
            result.only_first.append(path)
    result.only_second = [path for stem, path in b.items() if stem not in a]
    return result


def listing(items: Sequence[object], limit: int = 5) -> str:
    """``"a.png, b.png and 3 more"``: names of the first ``limit`` items (paths or text)."""
    names = ", ".join(getattr(p, "name", str(p)) for p in items[:limit])
    return names + (f" and {len(items) - limit} more" if len(items) > limit else "")
