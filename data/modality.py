"""Which images a pair holds: infrared and visible, or a medical pair (MRI with CT, PET or
SPECT), recognised from folder names.

occo's commands take the pair as ``FIRST SECOND``: the network's infrared input first and
the image whose colour is kept second. A medical pair maps onto the same two positions:
the anatomical image (MRI) first, the other image (CT, PET, SPECT) second, so that a
colour-mapped functional image (PET, SPECT) keeps its colour exactly: the fused luminance
replaces its Y (YCbCr), its Cb and Cr are kept, as CoCoNet and the medical fusion
literature do. Gray MRI-CT pairs give gray images.

    task_of("data/PET-MRI/test/MRI", "data/PET-MRI/test/PET")   # Task("MRI", "PET")
    dataset_folders("data/PET-MRI/test")                        # (.../MRI, .../PET, Task)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from occo.data.errors import OccoError

#: Modalities recognised by folder name (any case), in their usual spelling.
ANATOMICAL = ("MRI",)
SECOND = ("CT", "PET", "SPECT")
#: Functional images: colour-mapped as published (Harvard Whole Brain Atlas), colour kept.
FUNCTIONAL = ("PET", "SPECT")
MEDICAL = ANATOMICAL + SECOND


class ModalityError(OccoError, ValueError):
    """Folders or names that do not make a pair of the expected modalities (one line)."""


@dataclass(frozen=True)
class Task:
    """The two images of a pair, by position."""

    first: str = "infrared"
    """Name of the first image (the network's infrared input): "infrared" or "MRI"."""
    second: str = "visible"
    """Name of the second image, whose colour is kept: "visible", "CT", "PET" or "SPECT"."""

    @property
    def medical(self) -> bool:
        """Whether this is a medical pair (MRI with CT, PET or SPECT)."""
        return self.first in MEDICAL

    @property
    def name(self) -> str:
        """"ivif", or the dataset's name for the medical task ("PET-MRI", "CT-MRI")."""
        return f"{self.second}-{self.first}" if self.medical else "ivif"

    @property
    def color_expected(self) -> bool:
        """Whether the second image is normally colour (PET and SPECT are colour-mapped;
        visible images may be either, CT is gray)."""
        return self.second in FUNCTIONAL

    @property
    def labels(self) -> tuple[str, str]:
        """``(first, second)``: the names messages and tables use."""
        return self.first, self.second


IVIF = Task()


def modality_of(path: str | Path) -> str | None:
    """The medical modality a folder's name says (MRI, CT, PET, SPECT; any case), or None."""
    name = Path(path).name.upper()
    return name if name in MEDICAL else None


def parse_modalities(text: str) -> Task:
    """``"MRI,PET"`` (``--modalities``) -> the task; ``"ir,vi"`` -> infrared-visible.

    Raises:
        ModalityError: not two names, or not MRI followed by CT, PET or SPECT.
    """
    names = [part.strip() for part in text.split(",")]
    if len(names) != 2 or not all(names):
        raise ModalityError(f"--modalities takes two names, FIRST,SECOND (e.g. MRI,PET), got {text!r}")
    if [n.lower() for n in names] in (["ir", "vi"], ["infrared", "visible"]):
        return IVIF
    return _medical(names[0].upper(), names[1].upper(), f"--modalities {text}")


def _medical(first: str, second: str, given: str) -> Task:
    if first in ANATOMICAL and second in SECOND:
        return Task(first, second)
    if second in ANATOMICAL and first in SECOND:
        raise ModalityError(
            f"{given}: give the MRI image first and the {first} image second "
            f"(occo fuse MRI_DIR {first}_DIR OUT: the second image's colour is kept)"
        )
    raise ModalityError(
        f"{given}: expected MRI first and CT, PET or SPECT second (or ir,vi)"
    )


def task_of(first: str | Path, second: str | Path) -> Task:
    """The task two inputs' folder names say (an image file: its folder's name).

    Returns:
        The medical task when both names are medical modalities, else :data:`IVIF`.

    Raises:
        ModalityError: medical names in the wrong order or an unusual pair (e.g. PET, SPECT).
    """
    folders = [Path(p) if not Path(p).is_file() else Path(p).parent for p in (first, second)]
    names = [modality_of(folder) for folder in folders]
    if None in names:
        return IVIF
    return _medical(names[0], names[1], f"{folders[0]} and {folders[1]}")


def dataset_folders(root: str | Path) -> tuple[Path, Path, Task]:
    """A medical dataset folder's MRI folder and its CT, PET or SPECT folder (any case).

    Args:
        root: a folder holding ``MRI/`` and one of ``CT/``, ``PET/``, ``SPECT/``.

    Returns:
        ``(mri_dir, other_dir, task)``.

    Raises:
        ModalityError: the folder does not hold exactly that (the line says what it holds).
    """
    root = Path(root)
    if not root.is_dir():
        raise ModalityError(f"{root} is not a folder")
    found = {m: p for p in sorted(root.iterdir()) if p.is_dir() and (m := modality_of(p))}
    others = [m for m in SECOND if m in found]
    if "MRI" in found and len(others) == 1:
        return found["MRI"], found[others[0]], Task("MRI", others[0])
    inner = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = [n for n in inner if any(modality_of(q) for q in (root / n).iterdir() if q.is_dir())]
    hint = f"; give one of its subfolders, e.g. {root / nested[0]}" if nested else ""
    held = ", ".join(n + "/" for n in inner[:6]) or "no folders"
    raise ModalityError(
        f"{root} holds {held}: a medical dataset folder holds MRI/ and one of CT/, PET/, "
        f"SPECT/{hint}"
    )


def resolve_task(modalities: str | None, first: str | Path, second: str | Path) -> Task:
    """The run's task: ``--modalities`` when given, else what the folder names say."""
    return parse_modalities(modalities) if modalities is not None else task_of(first, second)


class GrayCheck:
    """Names each pair whose second image is gray where the task expects colour (a PET or
    SPECT image stored gray): it is fused as it is, into a gray image, with one line.

    Wraps another inspection hook (the FileFuser's ``inspect``, run in its reader
    threads): :meth:`__call__` returns ``(inner result, colour)``, :meth:`report` splits it.
    """

    def __init__(self, task: Task, inner=None) -> None:  # noqa: ANN001 - a hook or None
        self.task = task
        self.inner = inner
        #: Stems whose second image was gray, in the order reported.
        self.gray: list[str] = []

    def __call__(self, pair):  # noqa: ANN001, ANN204 - a PreparedPair
        return (self.inner(pair) if self.inner is not None else None), pair.color

    def report(self, stem: str, inspection) -> tuple[object, str | None]:  # noqa: ANN001
        """``(the inner hook's result, the line for a gray image or None)``."""
        if not isinstance(inspection, tuple):  # the pair failed before it was inspected
            return inspection, None
        inner, color = inspection
        if color:
            return inner, None
        self.gray.append(stem)
        second = self.task.second
        return inner, (
            f"{stem}: the {second} image is gray where {second} images are colour-mapped; "
            f"fused as it is, into a gray image (a colour {second} keeps its colour)"
        )


def task_of_sources(first: Path | None, second: Path | None) -> Task:
    """The task of two source folders (metrics' ``--ir``/``--vi`` or a manifest's), never
    raising: anything but MRI followed by CT, PET or SPECT is infrared-visible."""
    if first is None or second is None:
        return IVIF
    try:
        return task_of(first, second)
    except ModalityError:
        return IVIF


def medical_caption(conventions: str, tasks: set[Task]) -> str:
    """The metrics table's caption for rows of medical tasks: A and B named by modality, and
    how the functional image is grayed (MATLAB rgb2gray: its BT.601 luma, i.e. the Y of
    the YCbCr whose Cb/Cr the fused image keeps, as the medical fusion literature scores)."""
    medical = sorted({t for t in tasks if t.medical}, key=lambda t: t.name)
    if not medical or len(medical) != len(tasks):
        return conventions
    a = "/".join(dict.fromkeys(t.first for t in medical))
    b = "/".join(dict.fromkeys(t.second for t in medical))
    text = conventions.replace("A=infrared, B=visible", f"A={a}, B={b}")
    if any(t.color_expected for t in medical):
        text += f" {b} scored by its luma Y (rgb2gray, BT.601), the channel fused."
    return text
