"""What a training run trains on: the pairs of a dataset, their masks, the validation pairs
and the provenance the weights record, prepared as one library call (``occo train`` maps
its options to it and renders the notes)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occo.data.training import TrainingDataError


@dataclass
class TrainingData:
    """The inputs of a :class:`occo.train.Trainer` run and what to tell the user."""

    train_pairs: list[tuple[str, Path, Path]]
    """``(stem, ir, vi)`` pairs to train on."""
    val_pairs: list[tuple[str, Path, Path]]
    """Pairs validated after each epoch (held out of ``train_pairs``, or a second dataset)."""
    mask_source: Callable[[], Any] | None
    """Opens the mask store (each data-loading process opens its own), or None."""
    metadata: dict[str, str]
    """What the weight files record about the data (trained_on, datasets, masks)."""
    ir_dir: Path
    """The dataset's infrared folder."""
    vi_dir: Path
    """The dataset's visible folder."""
    notes: list[str] = field(default_factory=list)
    """Information lines (pairs left out for empty masks)."""
    warnings: list[str] = field(default_factory=list)
    """Lines that need attention (unpaired files, pairs without masks)."""


def prepare_training_data(
    dataset: str | Path,
    config,
    masks: str | Path | None = None,
    val: str | Path | None = None,
    run_name: str = "",
) -> TrainingData:
    """Pair ``dataset``'s images, attach its masks when the objective needs them (or
    ``masks`` is given), and split off the validation pairs (``val``, or a seeded
    held-out share of ``dataset``).

    Args:
        dataset: a folder with infrared and visible folders (ir/ and vi/, or the names
            occo.data.training.find_modality_dirs recognises).
        config: the run's :class:`occo.train.TrainConfig`.
        masks: the mask store; None: ``DATASET/masks.h5``.
        val: a validation dataset; None: held out of ``dataset``.
        run_name: the run folder's name, recorded in the weights.

    Raises:
        TrainingDataError: no pairs, no mask store where one is needed, no usable masks
            (one line each, saying what to do).
    """
    from occo.data.pairing import pair_images
    from occo.data.training import find_modality_dirs, pairs_with_masks, split_holdout

    dataset = Path(dataset)
    ir_dir, vi_dir = find_modality_dirs(dataset)
    pairing = pair_images(ir_dir, vi_dir)
    data = TrainingData([], [], None, {}, ir_dir, vi_dir)
    if pairing.unpaired:
        data.warnings.append(
            f"{len(pairing.unpaired)} file(s) without a partner are left out, e.g. {pairing.unpaired[0]}"
        )
    pairs = pairing.pairs
    if not pairs:
        raise TrainingDataError(f"no image pairs in {ir_dir} and {vi_dir} (files are paired by stem)")
    mask_path = Path(masks) if masks is not None else dataset / "masks.h5"
    if config.needs_masks or masks is not None:
        if not mask_path.is_file():
            raise TrainingDataError(
                f"no mask store at {mask_path}: run `occo masks gen {dataset}` first, pass "
                "--masks FILE, or train without masks with --objective pixel"
            )
        from occo.masks.store import open_mask_store

        data.mask_source = functools.partial(open_mask_store, mask_path)
        kept, missing, empty = pairs_with_masks(pairs, data.mask_source())
        if missing:
            data.warnings.append(
                f"{len(missing)} pair(s) have no masks in {mask_path} and are left out (e.g. {missing[0]})"
            )
        if empty:
            data.notes.append(
                f"{len(empty)} pair(s) with empty masks in both modalities are left out, as in the release"
            )
        if not kept:
            raise TrainingDataError(
                f"none of the {len(pairs)} pairs of {dataset} has usable masks in {mask_path}"
            )
        pairs = kept
    if val is not None:
        val = Path(val)
        val_ir, val_vi = find_modality_dirs(val)
        data.train_pairs, data.val_pairs = pairs, pair_images(val_ir, val_vi).pairs
        if not data.val_pairs:
            raise TrainingDataError(f"no image pairs in the validation folder {val}")
    else:
        data.train_pairs, data.val_pairs = split_holdout(
            pairs, config.val_fraction, config.val_max_pairs, config.seed
        )
    sources = [dataset.resolve().name] + ([f"validation {val.resolve().name}"] if val else [])
    data.metadata = {
        "trained_on": f"{dataset.resolve().name} ({len(data.train_pairs)} pairs)",
        "datasets": ", ".join(sources),
        "run": run_name,
    }
    if data.mask_source is not None:
        data.metadata["masks"] = str(mask_path.name)
    return data
