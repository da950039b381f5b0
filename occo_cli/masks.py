"""``occo masks``: make object masks (gen), look at them (show), export and inspect them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from occo.cli.console import (
    err,
    fail,
    listing,
    note,
    out,
    progress_bar,
    quiet_option,
    set_quiet,
    speed,
    threads_option,
    user_errors,
    warn,
)  # fmt: skip

masks_app = typer.Typer(
    name="masks",
    help="Object masks: Grounding DINO + SAM (or label maps, or box annotations) into an HDF5 store.",
    no_args_is_help=True,
)


def _find_folder(dataset: Path, names: tuple[str, ...], what: str, option: str) -> Path:
    """The modality folder of a dataset, by the names the trainer recognises too."""
    if not dataset.is_dir():
        fail(f"dataset folder not found: {dataset}")
    folder = next((dataset / name for name in names if (dataset / name).is_dir()), None)
    if folder is None:
        fail(
            f"no {what} folder in {dataset} (looked for {', '.join(n + '/' for n in names)}); pass {option} DIR"
        )
    return folder


def _dataset_pairs(
    dataset: Path, ir_dir: Path | None, vi_dir: Path | None
) -> tuple[list, Path, Path]:
    from occo.data.pairing import pair_images
    from occo.data.training import IR_DIR_NAMES, VI_DIR_NAMES

    ir_dir = ir_dir or _find_folder(dataset, IR_DIR_NAMES, "infrared", "--ir-dir")
    vi_dir = vi_dir or _find_folder(dataset, VI_DIR_NAMES, "visible", "--vi-dir")
    pairing = pair_images(ir_dir, vi_dir)
    if pairing.unpaired:
        names = ", ".join(p.name for p in pairing.unpaired[:5])
        more = f" and {len(pairing.unpaired) - 5} more" if len(pairing.unpaired) > 5 else ""
        warn(f"{len(pairing.unpaired)} file(s) without a partner are left out: {names}{more}")
    if pairing.hidden:
        note(
            f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): {listing(pairing.hidden)}"
        )
    if not pairing.pairs:
        fail(f"no image pairs: no file stem is in both {ir_dir} and {vi_dir}")
    return pairing.pairs, ir_dir.resolve(), vi_dir.resolve()


class _LazyBar:
    """A progress bar that appears with the first update (not before the checks have passed)."""

    def __init__(self, description: str, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total, status="")
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _quiet_transformers() -> None:
    """Model loading chatter (weight-loading bars, init notes) would bury the progress bar."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@masks_app.command("gen")
def gen(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET",
            help="Dataset folder with ir/ and vi/ (or Infrared/, Visible/...).",
        ),
    ],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Mask store to write. [default: DATASET/masks.h5]"),
    ] = None,
    prompt: Annotated[str, typer.Option(help="Text prompt for Grounding DINO.")] = (
        "The scene captures a group of pedestrians or cars."
    ),
    detector: Annotated[
        str, typer.Option(help="Grounding DINO: hub id or folder.")
    ] = "IDEA-Research/grounding-dino-tiny",
    segmenter: Annotated[
        str | None,
        typer.Option(
            help="SAM: hub id or folder (SlimSAM too), or sam:KIND:PATH for a Meta checkpoint. "
            "\\[default: facebook/sam-vit-huge; with --boxes: none, masks are the filled boxes]"
        ),
    ] = None,
    box_threshold: Annotated[float, typer.Option(help="Keep boxes scoring above this.")] = 0.3,
    text_threshold: Annotated[
        float, typer.Option(help="Prompt tokens above this name a box.")
    ] = 0.25,
    max_boxes: Annotated[
        int, typer.Option(help="At most this many boxes per image, best first (0: all).")
    ] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Pairs per batch (2x images).")
    ] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (float16 on GPU), float32, float16, bfloat16.")
    ] = "auto",
    labels: Annotated[
        Path | None,
        typer.Option(help="Make masks from label maps in this folder instead of the models."),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Object classes of the label maps: indices, e.g. 1,2 (MSRS: car 1, person 2), "
            "or names with --class-names."
        ),
    ] = None,
    class_names: Annotated[
        Path | None,
        typer.Option(
            help="The label maps' class table: one name per line (line N = class N) or ID NAME lines."
        ),
    ] = None,
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Make masks from box annotations (YOLO txt, Pascal VOC XML or COCO JSON), "
            "the same for both modalities."
        ),
    ] = None,
    boxes_ir: Annotated[
        Path | None,
        typer.Option("--boxes-ir", help="Box annotations drawn on the infrared images."),
    ] = None,
    boxes_vi: Annotated[
        Path | None,
        typer.Option("--boxes-vi", help="Box annotations drawn on the visible images."),
    ] = None,
    ir_dir: Annotated[
        Path | None, typer.Option(help="Infrared folder (default: found in DATASET).")
    ] = None,
    vi_dir: Annotated[
        Path | None, typer.Option(help="Visible folder (default: found in DATASET).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a store made with other settings.")
    ] = False,
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Make object masks for every pair: Grounding DINO boxes prompting SAM, or from label maps or box annotations.

    Resumable: run the same command again after an interruption (even kill -9); pairs already in the store are skipped. On several GPUs run it under torchrun.

    \b
    Example:
        occo masks gen data/FMB --batch-size 8
        occo masks gen data/FMB --detector ./grounding-dino-base --segmenter sam:vit_h:sam_vit_h_4b8939.pth
        occo masks gen data/MSRS --labels data/MSRS/Segmentation_labels --classes 1,2
        occo masks gen data/FMB --labels data/FMB/Label --class-names fmb_classes.txt --classes person,car
        occo masks gen data/MSRS --boxes-ir data/MSRS/labels/infrared --boxes-vi data/MSRS/labels/visible
        occo masks gen data/M3FD --boxes data/M3FD/Annotations --classes People,Car --segmenter facebook/sam-vit-huge
        torchrun --nproc-per-node 4 -m occo masks gen data/FMB
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads)

    from occo.data.outputs import check_writable_folder, refuse_inside_inputs
    from occo.masks.generate import generate_masks
    from occo.masks.sources import SourceOptions, build_source
    from occo.runtime import DistContext

    pairs, ir_found, vi_found = _dataset_pairs(dataset, ir_dir, vi_dir)
    out_path = out_path or dataset / "masks.h5"
    with user_errors():
        refuse_inside_inputs(out_path.parent, (ir_found, vi_found), "--out")
        check_writable_folder(out_path.parent, "--out")
    # Gloo carries only barriers here; the timeout covers the slowest rank and the merge.
    dist = DistContext.from_env("gloo", timeout_hours=6.0)
    lead = dist.rank == 0
    options = SourceOptions(
        prompt=prompt, detector=detector, segmenter=segmenter, box_threshold=box_threshold,
        text_threshold=text_threshold, max_boxes=max_boxes, device=device, dtype=dtype,
        labels=labels, classes=classes, class_names=class_names, boxes=boxes,
        boxes_ir=boxes_ir, boxes_vi=boxes_vi, local_rank=dist.local_rank,
    )  # fmt: skip
    with user_errors():
        built = build_source(options, pairs)
    if batch_size < 1:
        fail("--batch-size must be >= 1")
    for line in built.warnings:
        warn(line)
    if built.uses_models:
        _quiet_transformers()
    meta = {"ir_dir": str(ir_found), "vi_dir": str(vi_found), **built.files}

    if lead:
        ranks = f", {dist.world_size} ranks" if dist.world_size > 1 else ""
        note(f"masks for {len(pairs)} pairs -> {out_path} ({built.description}{ranks})")
    bar = _LazyBar("masks", enabled=lead and not quiet)
    try:
        result = generate_masks(
            pairs,
            out_path,
            built.source,
            batch_size=batch_size,
            overwrite=overwrite,
            meta=meta,
            dist=dist,
            progress=bar,
        )
    finally:
        bar.close()
        dist.close()
    if not lead:
        return
    if result.computed == 0 and result.resumed == 0:
        out.print(
            f"all {result.pairs} pairs are already in {out_path}; nothing to do",
            highlight=False,
            soft_wrap=True,
        )
        return
    rate = speed(result.computed, result.seconds)
    per_rank = " per rank" if dist.world_size > 1 else ""
    new_pairs = result.stored - result.skipped
    parts = [f"{new_pairs} new"] + ([f"{result.skipped} already there"] if result.skipped else [])
    if result.resumed:
        parts.append(f"{result.resumed} taken from the interrupted run")
    out.print(
        f"wrote {out_path}: {result.stored} pairs ({', '.join(parts)}); {rate}{per_rank}; "
        f"empty masks among the new: infrared {result.empty_ir}, visible {result.empty_vi}",
        highlight=False,
        soft_wrap=True,
    )
    for line in built.source.warnings():  # e.g. annotations that disagree with the images
        warn(line)


#: Order of settings in `info`: what made the masks first, file facts last.
_SETTING_ORDER = (
    "source", "prompt", "detector", "segmenter", "box_threshold", "text_threshold", "max_boxes", "dtype",
    "classes", "box_format", "labels_dir", "boxes_ir_dir", "boxes_vi_dir", "ir_dir", "vi_dir", "format", "version", "occo_version", "created_utc", "updated_utc",
)  # fmt: skip


def _order(key: str) -> tuple[int, str]:
    return (_SETTING_ORDER.index(key) if key in _SETTING_ORDER else len(_SETTING_ORDER), key)


def _open(store: Path):
    """The store, or while `masks gen` has not written it yet, the pairs it has done so far."""
    from occo.masks.store import PartsReader, open_mask_store

    if not store.exists():
        try:
            partial = PartsReader(store)
        except FileNotFoundError:
            pass  # nothing done yet either: open_mask_store says how to make one
        else:
            note(
                f"{store} is written when `occo masks gen` finishes; reading the {len(partial)} "
                f"pair(s) done so far in {partial.path}"
            )
            return partial
    return open_mask_store(store)


@masks_app.command("show")
def show(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Mask store (masks.h5).")],
    stems: Annotated[
        list[str] | None, typer.Argument(metavar="STEM", help="Pairs to draw (default: all).")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the PNG overlays.")
    ] = Path("mask-overlays"),
    ir_dir: Annotated[
        Path | None, typer.Option(help="Infrared folder (default: as recorded in the store).")
    ] = None,
    vi_dir: Annotated[
        Path | None, typer.Option(help="Visible folder (default: as recorded in the store).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace overlays that already exist in --out.")
    ] = False,
    quiet: bool = quiet_option(),
) -> None:
    """Draw masks, boxes, scores and the shared/unique/background split as PNGs.

    One PNG per pair: visible | infrared | regions (shared orange, unique visible blue, unique infrared red).

    \b
    Example:
        occo masks show data/FMB/masks.h5 00012 00034 --out overlays/
    """
    set_quiet(quiet)

    from occo.data.io import read_image, write_image_atomic
    from occo.data.outputs import check_writable_folder, refuse_existing, refuse_inside_inputs
    from occo.masks.overlay import render_pair

    reader = _open(store)
    folders = {}
    for name, given in (("ir_dir", ir_dir), ("vi_dir", vi_dir)):
        folder = given or (Path(reader.settings[name]) if reader.settings.get(name) else None)
        if folder is None or not folder.is_dir():
            fail(f"image folder {folder} of {store} not found; pass --{name.replace('_', '-')} DIR")
        folders[name] = folder
    chosen = list(stems) if stems else reader.stems()
    unknown = [s for s in chosen if s not in reader]
    if unknown:
        fail(
            f"{len(unknown)} stem(s) not in {store} (first: {unknown[0]}); `occo masks info {store}` lists counts"
        )
    targets = [out_dir / f"{stem}.png" for stem in chosen]
    with user_errors():
        refuse_inside_inputs(out_dir, folders.values(), "--out")
        check_writable_folder(out_dir, "--out")
        if not overwrite:
            refuse_existing(targets, f"--out {out_dir}")
    with progress_bar() as bar:
        task = bar.add_task("checking", total=len(chosen), status="")
        for stem in chosen:  # every pair read and checked before the first overlay is written
            reader.read_pair(stem)
            bar.advance(task)
        bar.update(task, description="overlays", completed=0)
        for stem, target in zip(chosen, targets, strict=True):
            pair = reader.read_pair(stem)
            ir = read_image(folders["ir_dir"] / pair.ir.source)
            vi = read_image(folders["vi_dir"] / pair.vi.source)
            write_image_atomic(target, render_pair(ir, vi, pair))
            bar.advance(task)
    out.print(f"wrote {len(chosen)} overlay(s) to {out_dir}", highlight=False, soft_wrap=True)


@masks_app.command("export")
def export(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Mask store (masks.h5).")],
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Folder that receives mask_vi/ and mask_ir/.")
    ],
    overwrite: Annotated[
        bool, typer.Option(help="Replace mask files that already exist in OUT_DIR.")
    ] = False,
    quiet: bool = quiet_option(),
) -> None:
    """Export masks as mask_vi/ and mask_ir/ folders of 0/255 PNGs named mask_<stem>.png (the OCCO release's layout).

    Never inside the dataset's image folders; existing mask files are kept unless --overwrite.

    \b
    Example:
        occo masks export data/FMB/masks.h5 masks-png/FMB
    """
    set_quiet(quiet)

    from occo.data.outputs import check_writable_folder, refuse_existing, refuse_inside_inputs
    from occo.masks.store import export_masks, export_paths

    reader = _open(store)
    inputs = [Path(reader.settings[k]) for k in ("ir_dir", "vi_dir") if reader.settings.get(k)]
    with user_errors():
        refuse_inside_inputs(out_dir, inputs, "OUT_DIR")
        check_writable_folder(out_dir, "OUT_DIR")
        if not overwrite:
            targets = [p for stem in reader.stems() for p in export_paths(out_dir, stem)]
            refuse_existing(targets, f"OUT_DIR {out_dir}")
    with progress_bar() as bar:
        task = bar.add_task("export", total=len(reader), status="")
        count = export_masks(
            reader,
            out_dir,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out.print(
        f"wrote {count} pairs to {out_dir / 'mask_vi'} and {out_dir / 'mask_ir'}",
        highlight=False,
        soft_wrap=True,
    )


@masks_app.command("info")
def info(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Mask store (masks.h5).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: bool = quiet_option(),
) -> None:
    """Settings, counts, empty masks and coverage of a mask store.

    \b
    Example:
        occo masks info data/FMB/masks.h5
    """
    set_quiet(quiet)

    from occo.masks.store import PartsJournal, summarize_store

    reader = _open(store)
    with progress_bar(disable=as_json or len(reader) < 200) as bar:
        task = bar.add_task("reading", total=len(reader), status="")
        summary = summarize_store(
            reader, progress=lambda done, total: bar.update(task, completed=done)
        )
    journal = PartsJournal(store)
    pending = len(list(journal.dir.glob("chunk-*.h5"))) if journal.exists() else 0
    if as_json:
        record = {
            "store": str(store),
            "settings": reader.settings,
            **summary,
            "pending_chunks": pending,
        }
        out.print_json(json.dumps(record))
        return
    settings = Table(title=str(store), show_header=False, title_justify="left")
    settings.add_column("setting", style="bold")
    settings.add_column("value")
    for key, value in sorted(reader.settings.items(), key=lambda item: _order(item[0])):
        settings.add_row(key, str(value))
    out.print(settings)
    stats = Table(
        title=f"{summary['pairs']} pairs, {summary['both_empty']} with both masks empty; "
        f"coverage = share of pixels in the mask",
        title_justify="left",
    )
    for column in ("", "empty", "boxes/img", "max", "coverage", "median", "min", "max"):
        stats.add_column(column, justify="right" if column else "left")
    for modality, label in (("vi", "visible"), ("ir", "infrared")):
        row = summary[modality]
        cov = row["coverage"]
        stats.add_row(
            label,
            str(row["empty"]),
            f"{row['boxes_mean']:.2f}",
            str(row["boxes_max"]),
            *(f"{100 * cov[k]:.1f}%" for k in ("mean", "median", "min", "max")),
        )
    out.print(stats)
    regions = summary["regions"]
    out.print(
        "regions (mean area): "
        + ", ".join(
            f"{name.replace('_', ' ')} {100 * value:.2f}%" for name, value in regions.items()
        ),
        highlight=False,
        soft_wrap=True,
    )
    if pending:
        err.print(
            f"[yellow]note:[/] {journal.dir} holds {pending} chunk(s) of an unfinished run; "
            f"rerun `occo masks gen` with the same settings to merge them",
            soft_wrap=True,
        )
