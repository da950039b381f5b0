"""The object masks ``occo compare`` scores each dataset inside, and where it finds them.

In order: a store the caller names for the dataset (``--masks NAME=STORE``); the store
``occo masks gen DATASET`` writes by default (``DATASET/masks.h5``); else box labels in
the dataset's folder, drawn per modality (``labels/infrared`` and ``labels/visible``, the
MSRS layout; ``labels/ir`` and ``labels/vi``) or once for both (``labels/``), from which
the masks are the filled boxes, made once into ``OUT/masks/<dataset>.h5`` by the same
code as ``occo masks gen --boxes-ir ... --boxes-vi ...`` (its settings and label
fingerprints recorded, so changed labels are refused on a rerun, not mixed in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from occo.data.errors import OccoError

#: Per-modality box-label folders inside a dataset, tried in order.
MODALITY_LABELS = (("labels/infrared", "labels/visible"), ("labels/ir", "labels/vi"))
#: One box-label folder for both modalities.
SHARED_LABELS = "labels"
#: The store ``occo masks gen DATASET`` writes when no --out is given.
DEFAULT_STORE = "masks.h5"


class ObjectMaskError(OccoError, ValueError):
    """A dataset's masks that cannot serve its pairs (one line: which, and what to do)."""


@dataclass(frozen=True)
class ObjectMasks:
    """A dataset's object masks and where they come from."""

    store: Path
    """The mask store scored inside."""
    origin: str
    """Where they come from, for notes and tables (e.g. ``filled boxes of labels/...``)."""


def find_box_labels(root: Path) -> tuple[Path, Path] | None:
    """The dataset's ``(infrared, visible)`` box-label folders (the same folder twice when
    one set serves both), or None when the dataset has none."""
    for ir_name, vi_name in MODALITY_LABELS:
        if (root / ir_name).is_dir() and (root / vi_name).is_dir():
            return root / ir_name, root / vi_name
    shared = root / SHARED_LABELS
    if shared.is_dir() and any(p.suffix.lower() in (".txt", ".xml", ".json") for p in shared.iterdir()
                               if p.is_file() and p.name != "classes.txt"):  # fmt: skip
        return shared, shared
    return None


def object_masks(
    root: Path,
    stems: Sequence[str],
    name: str,
    out_dir: Path,
    given: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> ObjectMasks | None:
    """The masks a dataset is scored inside, made from its box labels when needed.

    Args:
        root: the dataset folder (``ir/``, ``vi/``, maybe ``masks.h5`` or ``labels/``).
        stems: the pairs scored; the store must hold every one.
        name: the dataset's name (the made store is ``out_dir/masks/<name>.h5``).
        out_dir: the comparison's output folder.
        given: a store named by the caller (wins over what the folder holds).
        note: called with a line when masks are made.

    Returns:
        The masks, or None when the dataset has neither a store nor box labels.

    Raises:
        ObjectMaskError: a store without some of the pairs, box labels that make no masks,
            or a store made earlier from other labels (it is never replaced).
    """
    if given is not None:
        masks = ObjectMasks(Path(given), f"--masks {given}")
    elif (root / DEFAULT_STORE).is_file():
        masks = ObjectMasks(root / DEFAULT_STORE, f"{root / DEFAULT_STORE}")
    elif (labels := find_box_labels(root)) is not None:
        masks = _masks_from_boxes(root, stems, labels, out_dir / "masks" / f"{name}.h5", note)
    else:
        return None
    _check_covers(masks, stems, name)
    return masks


def _masks_from_boxes(root: Path, stems: Sequence[str], labels: tuple[Path, Path], store: Path,
                      note: Callable[[str], None] | None) -> ObjectMasks:  # fmt: skip
    from occo.data.pairing import pair_images
    from occo.masks.errors import SettingsMismatchError
    from occo.masks.generate import generate_masks
    from occo.masks.sources import MaskSourceError, SourceOptions, build_source

    ir_dir, vi_dir = root / "ir", root / "vi"
    wanted = set(stems)
    pairs = [p for p in pair_images(ir_dir, vi_dir).pairs if p[0] in wanted]
    ir_labels, vi_labels = labels
    shown = str(ir_labels) if ir_labels == vi_labels else f"{ir_labels} and {vi_labels}"
    options = SourceOptions(device="cpu")
    if ir_labels == vi_labels:
        options.boxes = ir_labels
    else:
        options.boxes_ir, options.boxes_vi = ir_labels, vi_labels
    try:
        built = build_source(options, pairs)
    except MaskSourceError as exc:
        raise ObjectMaskError(f"box labels {shown}: {exc}; or pass --no-objects") from None
    store.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ir_dir": str(ir_dir.resolve()), "vi_dir": str(vi_dir.resolve()), **built.files}
    try:
        result = generate_masks(pairs, store, built.source, batch_size=16, meta=meta)
    except SettingsMismatchError:
        raise ObjectMaskError(
            f"{store} holds masks of other labels or pairs than {shown}; occo compare made it "
            "from the labels of an earlier run: delete it to make it anew, or choose another --out"
        ) from None
    if result.computed and note is not None:
        note(f"object masks of {root.name}: filled boxes of {shown} -> {store} "
             f"({result.computed} pairs made)")  # fmt: skip
    return ObjectMasks(store, f"filled boxes of {shown}")


def _check_covers(masks: ObjectMasks, stems: Sequence[str], name: str) -> None:
    from occo.eval.region_scoring import RegionMaskError, check_store_covers

    try:
        check_store_covers(masks.store, stems, remedy=(
            f"complete it with occo masks gen, name another with --masks {name}=STORE, "
            "or pass --no-objects"))  # fmt: skip
    except FileNotFoundError:
        raise ObjectMaskError(f"{name}: no mask store at {masks.store}") from None
    except RegionMaskError as exc:
        raise ObjectMaskError(f"{name}: {exc}") from None
