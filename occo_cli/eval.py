"""``occo eval``: downstream detection (COCO mAP) and segmentation (IoU) of fused images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from occo.cli.console import (
    fail,
    note,
    out,
    plain,
    progress_bar,
    quiet_option,
    set_quiet,
    threads_option,
    user_errors,
    warn,
)

eval_app = typer.Typer(
    name="eval",
    help="Downstream evaluation: object detection (COCO mAP) and segmentation (IoU) per row.",
    no_args_is_help=True,
)

#: Per-class columns are shown up to this many classes (all of them are in --csv/--json).
_TABLE_CLASSES = 6


# ----------------------------------------------------------------------------- shared


def _format(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _console() -> Console:
    # Off a terminal rich assumes 80 columns; give the table room instead of squeezing it.
    return out if out.is_terminal else Console(width=max(out.width, 160))


def _inputs(*groups) -> list[Path]:
    """Folders read as input (image, label and prediction folders; files do not count)."""
    found = []
    for item in groups:
        for path in item if isinstance(item, (list, tuple)) else [item]:
            if path is not None and Path(path).is_dir():
                found.append(Path(path).resolve())
    return found


def _guard_output(path: Path, inputs: list[Path], option: str) -> None:
    """Refuse to write into (or under) a folder that is read as input, or where nothing can
    be written (a read-only or full disk): before the work, not after it."""
    from occo.data.outputs import check_writable_file, check_writable_folder

    target = path.resolve()
    for folder in inputs:
        if target == folder or target.is_relative_to(folder):
            fail(
                f"{option} {path} is inside the input folder {folder}; choose a path outside the inputs"
            )
    with user_errors():
        if option == "--csv":
            check_writable_file(path, option)
        else:
            check_writable_folder(path, option)


def _hold_csv(path: Path, overwrite: bool) -> None:
    """Take ``--csv``'s output lock for the rest of the command, then check it is free.

    A second run writing the same CSV is refused at once instead of the last writer
    winning; the final write re-checks too (a file that appeared meanwhile is kept).
    """
    from contextlib import ExitStack

    from occo.data.io import output_lock

    try:  # Typer >= 0.22 runs on its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    held = ExitStack()
    with user_errors():
        held.enter_context(output_lock(path, "occo eval"))
    get_current_context().call_on_close(held.close)  # released when the command ends
    if path.exists() and not overwrite:
        fail(f"--csv {path} exists; pass --overwrite or another path")


def _show_targets(
    show: Path, names: list[str], stems: dict[str, list[str]], overwrite: bool
) -> None:
    """Fail before any work when an overlay would replace an existing file."""
    for name in names:
        clash = [s for s in stems.get(name, []) if (show / name / f"{s}.png").exists()]
        if clash and not overwrite:
            fail(
                f"{show / name / (clash[0] + '.png')} exists ({len(clash)} overlay(s) would be "
                f"replaced); pass --overwrite or another --show folder"
            )


def _listing(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _device_dtype(device: str, dtype: str) -> tuple[object, str]:
    from occo.masks.generate import resolve_dtype
    from occo.runtime import resolve_device

    try:
        resolved = resolve_device(device)
        return resolved, resolve_dtype(dtype, resolved)
    except ValueError as exc:
        fail(str(exc))


class _RowBar:
    """One progress line per row that runs a model (appears with its first update)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = progress_bar()
            self.bar.start()
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total, status="")
        self.bar.update(self.tasks[name], completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# Options detect and segment share, defined once.
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
DType = Annotated[str, typer.Option(help="auto (float16 on GPU), float32, float16, bfloat16.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
NoSources = Annotated[
    bool,
    typer.Option("--no-sources", help="Do not add the infrared and visible rows of occo fuse folders."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
Overwrite = Annotated[bool, typer.Option(help="Replace existing --csv and --show files.")]


# ----------------------------------------------------------------------------- detect


@eval_app.command("detect")
def detect(
    rows: Annotated[
        list[Path],
        typer.Argument(
            metavar="ROW",
            help="Table rows: folders of images (occo runs the detector), or a detector's "
            "predictions made elsewhere (folder of YOLO txt 'class cx cy w h conf', or a COCO "
            "results .json).",
        ),
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Ground truth for every row: YOLO txt folder, Pascal VOC XML folder or COCO .json."
        ),
    ] = None,
    labels_ir: Annotated[
        Path | None, typer.Option("--labels-ir", help="Ground truth of infrared rows.")
    ] = None,
    labels_vi: Annotated[
        Path | None, typer.Option("--labels-vi", help="Ground truth of visible rows.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Classes to score, by name, e.g. person,car. [default: all labelled]"),
    ] = None,
    class_names: Annotated[
        Path | None,
        typer.Option(
            help="Class table of YOLO files (one name per line, line N = class N, or ID NAME "
            "lines). [default: classes.txt beside the labels or one folder up]"
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="The images prediction rows were made on (their sizes, the image set)."),
    ] = None,
    detector: Annotated[
        str,
        typer.Option(
            help="Hub id or folder: Grounding DINO (zero-shot, prompted with the class names) or "
            "any transformers object detector (DETR, RT-DETR, ...) whose labels name the classes; "
            "or yolov5:FILE.pt, an Ultralytics YOLOv5 checkpoint (read without running its "
            "pickle; letterbox, NMS and box mapping as Ultralytics val.py). Gray images "
            "(infrared, fused) are fed as three equal channels, colour images as they are."
        ),
    ] = "IDEA-Research/grounding-dino-tiny",
    score_threshold: Annotated[
        float, typer.Option(help="Keep detections scoring above this.")
    ] = 0.001,
    max_dets: Annotated[
        int, typer.Option(help="Detections per image kept and scored (COCO: 100).")
    ] = 100,
    batch_size: BatchSize = 4,
    device: Device = "auto",
    dtype: DType = "auto",
    cache: Annotated[
        Path,
        typer.Option(help="Folder caching detections per row and settings (COCO results JSON)."),
    ] = Path("occo-eval-cache"),
    no_sources: NoSources = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write row,class,AP50,AP50_95,... to this CSV.")
    ] = None,
    as_json: AsJson = False,
    show: Annotated[
        Path | None,
        typer.Option(help="Draw ground truth | detections per image into SHOW/ROW/STEM.png."),
    ] = None,
    show_threshold: Annotated[
        float, typer.Option(help="Draw detections scoring at least this.")
    ] = 0.3,
    overwrite: Overwrite = False,
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score object detection on each row with the COCO protocol (AP@.5, AP@[.5:.95] per class).

    A row of images is detected by --detector (zero-shot Grounding DINO by default) and the detections are cached, so re-scoring never reruns it; a row of predictions (your retrained YOLO's output, as in the OCCO paper) is only scored. occo fuse folders bring their infrared and visible rows along. Scores come from pycocotools.

    \b
    Examples:
        occo eval detect fused/occo fused/seafusion --labels MSRS/labels/fusion --class-names MSRS/labels/classes.txt
        occo eval detect fused/occo --labels-ir MSRS/labels/infrared --labels-vi MSRS/labels/visible --labels MSRS/labels/fusion
        occo eval detect runs/yolo-occo/labels --images fused/occo --labels M3FD/Annotations --classes People,Car
        occo eval detect fused/occo --labels LLVIP/Annotations --detector ./detr-resnet-50 --json > det.json
        occo eval detect fused/occo --labels MSRS/labels/fusion --detector yolov5:yolov5s.pt
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads)

    from occo.data.annotations import read_boxes
    from occo.data.classes import (
        ClassTableError,
        merge_class_names,
        read_class_names,
        select_class_names,
    )
    from occo.data.pairing import list_images
    from occo.eval.detect_rows import GroundTruth, evaluate_rows
    from occo.eval.detectors import DetectorConfig, detector_settings, load_detector
    from occo.eval.rows import plan_rows

    if labels is None and labels_ir is None and labels_vi is None:
        fail("give the ground truth with --labels DIR (or --labels-ir/--labels-vi)")
    plan = plan_rows(rows, "predictions", add_sources=not no_sources)
    table = read_class_names(class_names) if class_names is not None else None
    truth = GroundTruth(
        *(read_boxes(p, table) if p is not None else None for p in (labels, labels_ir, labels_vi))
    )
    try:
        chosen = select_class_names(classes, merge_class_names(s.classes for s in truth.sets()))
    except ClassTableError as exc:
        fail(str(exc))
    image_files = list_images(images) if images is not None else None
    inputs = _inputs([r.path for r in plan], labels, labels_ir, labels_vi, images)
    for path, option in ((csv_path, "--csv"), (show, "--show"), (cache, "--cache")):
        if path is not None:
            _guard_output(path, inputs, option)
    if csv_path is not None:
        _hold_csv(csv_path, overwrite)

    image_rows = [r for r in plan if r.kind == "images"]
    try:
        config = DetectorConfig(detector, score_threshold, max_dets, "float32")
    except ValueError as exc:
        fail(str(exc))
    settings = None
    torch_device = None
    if image_rows:
        torch_device, config.dtype = _device_dtype(device, dtype)
        settings = detector_settings(config, chosen)
    for row in plan:
        if row.origin == "manifest":
            note(
                f"{row.name}: {row.path} (source of an occo fuse folder; --no-sources leaves it out)"
            )

    def load():
        from occo.cli.masks import _quiet_transformers

        _quiet_transformers()
        loaded = load_detector(config, chosen, torch_device)
        note(
            f"detector: {config.model} ({loaded.kind}, {loaded.model_type}) on {torch_device} ({config.dtype})"
        )
        return loaded

    bar = _RowBar(enabled=not quiet)
    try:
        results = evaluate_rows(
            plan, truth, chosen, detector=load, detector_settings=settings, cache_dir=cache,
            batch_size=batch_size, images=image_files, class_names=table, max_dets=max_dets,
            progress=bar,
        )  # fmt: skip
    finally:
        bar.close()
    _detect_notes(results, cache)

    from occo.data.io import write_bytes_atomic
    from occo.eval.downstream_report import detection_csv, detection_report

    if show is not None:
        _show_detections(results, show, show_threshold, overwrite, quiet)
    if csv_path is not None:
        with user_errors():  # a file that appeared meanwhile is kept; a full disk is one line
            write_bytes_atomic(csv_path, detection_csv(results, chosen).encode(), overwrite)
    if as_json:
        typer.echo(json.dumps(detection_report(results, chosen, max_dets), indent=2))
    else:
        _console().print(_detect_table(results, chosen, max_dets))
    if csv_path is not None:
        note(f"per row and class: {csv_path}")


def _detect_notes(results, cache: Path) -> None:
    for r in results:
        name = r.row.name
        if r.unlabelled:
            note(
                f"{name}: {r.unlabelled} image(s) without ground truth count as images without objects"
            )
        if r.labels_without_images:
            note(
                f"{name}: ground truth of {len(r.labels_without_images)} image(s) not in this row, "
                f"left out: {_listing(r.labels_without_images)}"
            )
        if r.predictions_without_images:
            warn(
                f"{name}: predictions for {len(r.predictions_without_images)} unknown image(s) left "
                f"out: {_listing(r.predictions_without_images)}"
            )
        if r.clipped:
            note(f"{name}: {r.clipped} ground-truth box(es) clipped to the image")
        if r.row.kind == "images":
            rate = f", {r.computed / r.seconds:.2f} images/s" if r.computed and r.seconds else ""
            note(
                f"{name}: detections of {r.cached} image(s) from the cache, {r.computed} computed"
                f"{rate} ({cache})"
            )


def _detect_table(results, classes: list[str], max_dets: int) -> Table:
    from occo.eval.detection import PROTOCOL
    from occo.eval.downstream_report import detection_best

    best = detection_best(results, classes)
    table = Table(
        title="Detection: COCO average precision (pycocotools); * best per column",
        caption=PROTOCOL.format(max_dets=max_dets),
        caption_justify="left",
    )
    per_class = classes if len(classes) <= _TABLE_CLASSES else []
    table.add_column("row", style="bold")
    table.add_column("images", justify="right")
    table.add_column("objects", justify="right")
    for cls in per_class:
        table.add_column(f"{cls}\nAP50", justify="right")
    table.add_column("all\nAP50", justify="right")
    table.add_column("all\nAP50:95", justify="right")

    def cell(value: float, key: str, name: str) -> str:
        text = _format(value)
        return f"[bold green]{text}*[/]" if name in best[key] else text

    for r in results:
        name = r.row.name
        cells = [cell(r.scores.classes[c].AP50, f"{c}/AP50", name) for c in per_class]
        cells += [
            cell(r.scores.all.AP50, "all/AP50", name),
            cell(r.scores.all.AP50_95, "all/AP50_95", name),
        ]
        table.add_row(plain(name), str(r.scores.images), str(r.scores.all.objects), *cells)
    return table


def _show_detections(results, show: Path, threshold: float, overwrite: bool, quiet: bool) -> None:
    from occo.data.io import read_image, write_image_atomic
    from occo.eval.show import detection_sheet

    drawable = [r for r in results if r.images_dir]
    for r in results:
        if not r.images_dir:
            warn(f"{r.row.name}: no images to draw on; pass --images DIR for prediction rows")
    _show_targets(
        show,
        [r.row.name for r in drawable],
        {r.row.name: list(r.images_dir) for r in drawable},
        overwrite,
    )
    total = sum(len(r.images_dir) for r in drawable)
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("overlays", total=total, status="")
        for r in drawable:
            for stem, path in r.images_dir.items():
                sheet = detection_sheet(
                    read_image(path), r.ground_truth.get(stem), r.predictions.get(stem), threshold
                )
                write_image_atomic(show / r.row.name / f"{stem}.png", sheet)
                bar.advance(task)
    note(f"overlays: {total} image(s) in {show}")


# ----------------------------------------------------------------------------- segment


@eval_app.command("segment")
def segment(
    rows: Annotated[
        list[Path],
        typer.Argument(
            metavar="ROW",
            help="Table rows: folders of predicted class-index maps (one-channel PNG per image), "
            "or with --segmenter folders of images that occo segments zero-shot.",
        ),
    ],
    labels: Annotated[
        Path, typer.Option(help="Folder of ground-truth class-index maps (MSRS, FMB).")
    ],
    classes: Annotated[
        str | None,
        typer.Option(
            help="Classes to score: indices (1,2) or names with --class-names. "
            "[default: every class of --class-names, else every class in the labels]"
        ),
    ] = None,
    class_names: Annotated[
        Path | None,
        typer.Option(help="Class table of the label maps: one name per line or ID NAME lines."),
    ] = None,
    ignore_index: Annotated[
        int | None,
        typer.Option(
            help="Ground-truth value left out of the scores (-1: none) \\[default: 255; none "
            "when the label maps are 0/255 binary masks, whose 255 is the object class]."
        ),
    ] = None,
    segmenter: Annotated[
        str | None,
        typer.Option(
            help="Segment image rows zero-shot: SAM hub id or folder, or sam:KIND:PATH, prompted "
            "with --detector boxes of each named class."
        ),
    ] = None,
    detector: Annotated[
        str, typer.Option(help="Box detector of the zero-shot mode (Grounding DINO or closed-set).")
    ] = "IDEA-Research/grounding-dino-tiny",
    box_threshold: Annotated[
        float, typer.Option(help="Zero-shot: boxes scoring above this prompt SAM.")
    ] = 0.3,
    background: Annotated[
        int, typer.Option(help="Zero-shot: class index of pixels under no object mask.")
    ] = 0,
    images: Annotated[
        Path | None, typer.Option(help="Images to draw class-map rows over in --show.")
    ] = None,
    batch_size: BatchSize = 2,
    device: Device = "auto",
    dtype: DType = "auto",
    cache: Annotated[
        Path, typer.Option(help="Folder caching zero-shot class maps per row and settings.")
    ] = Path("occo-eval-cache"),
    no_sources: NoSources = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write row,class,index,IoU,TP,FP,FN to this CSV.")
    ] = None,
    as_json: AsJson = False,
    show: Annotated[
        Path | None,
        typer.Option(help="Draw ground truth | prediction per image into SHOW/ROW/STEM.png."),
    ] = None,
    overwrite: Overwrite = False,
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score semantic segmentation on each row: per-class IoU and mIoU from one confusion matrix.

    Rows are class maps predicted elsewhere (DeepLabV3+ or SegFormer retrained on fused images, as in the OCCO paper). With --segmenter, rows are images segmented zero-shot: detector boxes of each named class prompt SAM, pixels under no mask get --background; occo fuse folders then bring their infrared and visible rows along.

    \b
    Examples:
        occo eval segment preds/occo preds/seafusion --labels MSRS/Segmentation_labels --class-names msrs_classes.txt
        occo eval segment fused/occo --labels MSRS/Segmentation_labels --class-names msrs_classes.txt --classes person,car --segmenter facebook/sam-vit-huge
        occo eval segment preds/occo --labels FMB/Label --classes 1,2,3 --csv iou.csv
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads)

    from occo.data.classes import parse_classes, read_class_names
    from occo.eval.rows import plan_rows
    from occo.eval.segmentation import label_maps, score_maps

    zero_shot = segmenter is not None
    plan = plan_rows(
        rows, "images" if zero_shot else "maps", add_sources=zero_shot and not no_sources
    )
    table = read_class_names(class_names) if class_names is not None else None
    try:
        chosen = parse_classes(classes, table) if classes else None
    except ValueError as exc:
        fail(str(exc))
    if chosen is None and table is not None:
        chosen = sorted(table)
    num_classes = max(table) + 1 if table else None  # label values are checked against it
    truth = label_maps(labels)
    if ignore_index is None:
        from occo.eval.segment_rows import binary_mask_labels

        ignore_index = 255
        if binary_mask_labels(truth):
            ignore_index = -1
            note(f"the label maps in {labels} hold only 0 and 255 (binary masks): 255 is scored "
                 "as the object class, not ignored (--ignore-index 255 ignores it)")  # fmt: skip
    ignore = None if ignore_index < 0 else ignore_index
    inputs = _inputs([r.path for r in plan], labels, images)
    for path, option in ((csv_path, "--csv"), (show, "--show"), (cache, "--cache")):
        if path is not None:
            _guard_output(path, inputs, option)
    if csv_path is not None:
        _hold_csv(csv_path, overwrite)

    bar = _RowBar(enabled=not quiet)
    try:
        if zero_shot:
            from occo.cli.masks import _quiet_transformers
            from occo.eval.segment_rows import ZeroShotSettings, zero_shot_rows

            _quiet_transformers()
            zero_shot = ZeroShotSettings(segmenter, detector, box_threshold, background,
                                         batch_size, device, dtype)  # fmt: skip
            with user_errors():
                results = zero_shot_rows(plan, truth, chosen, table, ignore, zero_shot, cache,
                                         bar, num_classes, note=note)  # fmt: skip
        else:
            results = [score_maps(row, truth, row.images, ignore, num_classes) for row in plan]
    finally:
        bar.close()
    if chosen is None:  # every class that has ground-truth pixels
        chosen = sorted({c for r in results for c in r.confusion.classes_present()})
    names = {c: (table or {}).get(c, f"class {c}") for c in chosen}
    for r in results:
        if r.missing_predictions:
            warn(
                f"{r.row.name}: {len(r.missing_predictions)} labelled image(s) without a "
                f"prediction, left out: {_listing(r.missing_predictions)}"
            )
        if r.predictions_without_labels:
            note(
                f"{r.row.name}: {len(r.predictions_without_labels)} image(s) without a label map, "
                f"left out: {_listing(r.predictions_without_labels)}"
            )
        if r.row.kind == "images":
            note(
                f"{r.row.name}: class maps of {r.cached} image(s) from the cache, {r.computed} computed ({cache})"
            )
        if r.recomputed:
            warn(
                f"{r.row.name}: {len(r.recomputed)} cached class map(s) were damaged and were "
                f"made again: {_listing(r.recomputed)} ({cache})"
            )
        if r.images == 0:
            fail(
                f"row {r.row.name}: no image has both a prediction and a label map in {labels}; check the file names"
            )

    from occo.data.io import write_bytes_atomic
    from occo.eval.downstream_report import segmentation_csv, segmentation_report

    if show is not None:
        _show_segmentations(results, truth, names, ignore, images, show, overwrite, quiet)
    if csv_path is not None:
        with user_errors():  # a file that appeared meanwhile is kept; a full disk is one line
            write_bytes_atomic(csv_path, segmentation_csv(results, names).encode(), overwrite)
    if as_json:
        typer.echo(json.dumps(segmentation_report(results, names, ignore), indent=2))
    else:
        _console().print(_segment_table(results, names, ignore))
    if csv_path is not None:
        note(f"per row and class: {csv_path}")


def _segment_table(results, names: dict[int, str], ignore) -> Table:
    from occo.eval.downstream_report import SEGMENT_PROTOCOL, segmentation_best

    best = segmentation_best(results, names)
    table = Table(
        title="Segmentation: IoU per class and mIoU; * best per column",
        caption=SEGMENT_PROTOCOL.format(ignore=ignore),
        caption_justify="left",
    )
    table.add_column("row", style="bold")
    table.add_column("images", justify="right")
    for name in names.values():
        table.add_column(name, justify="right")
    table.add_column("mIoU", justify="right")
    for r in results:
        cells = []
        for c, name in names.items():
            text = _format(r.confusion.iou(c))
            cells.append(f"[bold green]{text}*[/]" if r.row.name in best[name] else text)
        text = _format(r.miou(list(names)))
        cells.append(f"[bold green]{text}*[/]" if r.row.name in best["mIoU"] else text)
        table.add_row(plain(r.row.name), str(r.images), *cells)
    return table


def _show_segmentations(results, truth, names, ignore, images, show, overwrite, quiet) -> None:
    from occo.data.io import read_image, write_image_atomic
    from occo.data.pairing import list_images
    from occo.eval.segmentation import read_class_map
    from occo.eval.show import segmentation_sheet

    pictures = list_images(images) if images is not None else {}
    _show_targets(
        show, [r.row.name for r in results], {r.row.name: r.stems for r in results}, overwrite
    )
    total = sum(len(r.stems) for r in results)
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("overlays", total=total, status="")
        for r in results:
            source = r.row.images if r.row.kind == "images" else pictures
            for stem in r.stems:
                picture = read_image(source[stem]) if stem in source else None
                sheet = segmentation_sheet(
                    read_class_map(truth[stem], "label map"),
                    read_class_map(r.maps[stem], "predicted map"),
                    names,
                    ignore,
                    picture,
                )
                write_image_atomic(show / r.row.name / f"{stem}.png", sheet)
                bar.advance(task)
    note(f"overlays: {total} image(s) in {show}")
