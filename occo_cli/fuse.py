"""``occo fuse``: fuse folders of infrared/visible pairs (or two videos) with a FIFN."""

from __future__ import annotations

from pathlib import Path

import typer

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
)
from occo.data.version import OCCO_VERSION

_IR16 = ("percentile", "minmax", "full")


def _check_folders(ir_dir: Path, vi_dir: Path, out_dir: Path) -> None:
    """Inputs are folders; OUT_DIR is outside them and writable (checked before any work)."""
    from occo.data.outputs import check_writable_folder, refuse_inside_inputs

    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            fail(f"{label} {folder} is not a folder")
    with user_errors():
        refuse_inside_inputs(out_dir, (ir_dir, vi_dir), "OUT_DIR")
        check_writable_folder(out_dir, "OUT_DIR")


def _pairs(ir_in: Path, vi_in: Path, out_dir: Path) -> tuple[list, dict[str, str], Path, Path]:
    """The pairs to fuse: two folders paired by stem, or two files as one pair.

    Returns:
        ``(pairs, failures, ir_dir, vi_dir)``: ``(stem, ir_path, vi_path)`` per pair, the
        files without a partner, and the source folders (for the manifest).
    """
    from occo.data.pairing import IMAGE_EXTENSIONS, pair_images

    if ir_in.is_file() or vi_in.is_file():
        if not (ir_in.is_file() and vi_in.is_file()):
            fail(f"give two folders or two image files, got {ir_in} and {vi_in}")
        for path in (ir_in, vi_in):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                fail(f"{path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        _check_folders(ir_in.parent, vi_in.parent, out_dir)
        return [(ir_in.stem, ir_in, vi_in)], {}, ir_in.parent, vi_in.parent
    _check_folders(ir_in, vi_in, out_dir)
    pairing = pair_images(ir_in, vi_in)
    failures: dict[str, str] = {}
    for path in pairing.only_first:
        failures[path.stem] = f"{path} has no visible partner in {vi_in}"
    for path in pairing.only_second:
        failures[path.stem] = f"{path} has no infrared partner in {ir_in}"
    if pairing.hidden:
        note(
            f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): "
            f"{listing(pairing.hidden)}"
        )
    nested = [p for folder in (ir_in, vi_in) for p in folder.iterdir() if p.is_dir()]
    if nested:
        listed = ", ".join(str(p) for p in nested[:3]) + (" ..." if len(nested) > 3 else "")
        warn(
            f"{len(nested)} subfolder(s) not searched ({listed}): occo fuse pairs the images "
            "directly inside IR_DIR and VI_DIR; run it once per subfolder"
        )
    if not pairing.pairs:
        fail(f"no pairs: no file stem is in both {ir_in} and {vi_in}")
    return pairing.pairs, failures, ir_in, vi_in


def fuse(
    ir_dir: Path = typer.Argument(
        ...,
        metavar="IR_DIR",
        help="Folder of infrared images, or one infrared image file, or an infrared video /"
        " folder of frames.",
    ),
    vi_dir: Path = typer.Argument(
        ...,
        metavar="VI_DIR",
        help="Folder of visible images (paired with IR_DIR by file stem), one visible image"
        " file, or a video.",
    ),
    out_dir: Path = typer.Argument(
        ...,
        metavar="OUT_DIR",
        help="Folder for the fused PNGs (created; outside the inputs), or a video file"
        " (.mp4, .avi, .mkv, .mov).",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        "-w",
        help="occo FIFN weights (.safetensors) \\[default: occo's bundled weights].",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    backend: str = typer.Option(
        "torch",
        "--backend",
        help='torch, or onnxruntime (pip install "occo\\[onnx]"; --weights may be an .onnx'
        " from `occo export`).",
    ),
    batch_size: int = typer.Option(
        4, "--batch-size", min=1, help="Same-size pairs per network call."
    ),
    tile: int | None = typer.Option(
        None,
        "--tile",
        min=16,
        help="For images too large for memory: run the network in NxN windows (plus 80 px"
        " of context per side; 2-4x the compute, less for larger N); same output as whole"
        " images.",
    ),
    amp: bool | None = typer.Option(
        None, "--amp/--no-amp", help="bf16/fp16 autocast \\[default: on for CUDA, off on CPU]."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo every output, replacing files already in OUT_DIR."
    ),
    resize_vi: bool = typer.Option(
        False, "--resize-vi", help="Resize visible images to the infrared size when they differ."
    ),
    ir16: str = typer.Option(
        "percentile",
        "--ir16",
        help="16-bit infrared stretch: percentile (0.1-99.9%), minmax or full (/65535).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads reading images ahead."),
    fps: float | None = typer.Option(
        None,
        "--fps",
        min=0.001,
        help="Video: output frame rate, and that of frame folders \\[default: the visible"
        " video's; 25 for frame folders].",
    ),
    start: float = typer.Option(0.0, "--start", min=0.0, help="Video: seconds to skip."),
    frames: int | None = typer.Option(None, "--frames", min=1, help="Video: most frames to fuse."),
    misaligned_px: float | None = typer.Option(
        None,
        "--misaligned-px",
        min=0.0,
        help="Warn about pairs whose infrared is displaced more than this many px against the"
        " visible image (as `occo check`); 0 turns the check off \\[default: 10].",
    ),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse every infrared/visible pair of two folders into OUT_DIR (PNG, named by stem).

    Outputs keep the input size, and colour when the visible image is colour (the fused luminance replaces the visible Y; its Cb/Cr are kept). Each PNG records what made it (weights SHA-256, the settings that change pixels, occo version, source files): a rerun with the same settings skips finished outputs, so an interrupted run resumes; other settings, or files occo did not write, are refused unless --overwrite. Bad pairs are reported and skipped; the exit code is 1 if any pair failed. OUT_DIR/occo-fuse.json records sources, weights, settings and timings, so `occo metrics OUT_DIR` finds the sources by itself.

    Video: when an input or OUT is a video, two videos (or folders of numbered frames) are fused frame by frame into a video with the visible stream's size and frame rate (.mp4/.mov: mp4v, .avi: MJPG, .mkv: lossless FFV1), streaming, in batches. Streams of different rates or lengths are paired by timestamp; the frames dropped or repeated are counted. OUT appears only when complete (an interrupted run keeps OUT.partial.EXT); OUT.EXT.occo-fuse.json records the run.

    \b
    Example:
        occo convert occo.pth fifn.safetensors
        occo fuse data/tno/ir data/tno/vi fused/tno --weights fifn.safetensors
        occo fuse ir/0001.png vi/0001.png fused/              # one pair
        occo fuse ir/ vi/ fused/ --device cuda --batch-size 16 --tile 1024
        occo fuse ir/ vi/ fused/ --weights runs/fmb/best.safetensors
        occo fuse ir/ vi/ fused/ --backend onnxruntime --weights fifn.onnx
        occo fuse ir.mp4 vi.mp4 fused.mp4 --start 10 --frames 300
        occo fuse ir_frames/ vi_frames/ fused.mp4 --fps 30
        occo metrics fused/tno
    """
    from occo.cli.fuse_setup import build_fuser
    from occo.data.errors import OccoError
    from occo.data.io import file_sha256, folder_lock, remove_stale_temporaries
    from occo.data.video import is_video_path
    from occo.eval.manifest import (
        MANIFEST_NAME,
        OUTPUT_KEY,
        output_record,
        plan_resume,
        write_fuse_manifest,
    )
    from occo.models.fuser import FileFuser, FuseJob
    from occo.runtime import set_threads

    set_quiet(quiet)
    if ir16 not in _IR16:
        fail(f"--ir16 must be one of {', '.join(_IR16)}, got {ir16!r}")
    set_threads(threads)
    options = dict(backend=backend, device=device, amp=amp, tile=tile,
                   batch_size=batch_size, ir16=ir16)  # fmt: skip
    if any(is_video_path(p) for p in (ir_dir, vi_dir, out_dir)):
        from occo.cli.fuse_video import fuse_video

        fuse_video(ir_dir, vi_dir, out_dir, weights=weights, overwrite=overwrite,
                   resize_vi=resize_vi, fps=fps, start=start, frames=frames, **options)  # fmt: skip
        return
    if fps is not None or start or frames is not None:
        fail("--fps, --start and --frames are for video: give videos, or a video OUT (.mp4, ...)")
    pairs, failures, ir_root, vi_root = _pairs(ir_dir, vi_dir, out_dir)

    setup = build_fuser(weights, **options)
    fuser, device = setup.fuser, setup.device

    provenance = {
        "occo_version": OCCO_VERSION, "weights_sha256": file_sha256(setup.weights),
        "backend": setup.settings["backend"], "ir16": ir16, "tile": tile,
        "amp": setup.settings.get("amp"),
    }  # fmt: skip
    jobs = [FuseJob(stem, ir, vi, out_dir / f"{stem}.png") for stem, ir, vi in pairs]
    records = {job.stem: output_record(provenance, job.ir_path, job.vi_path) for job in jobs}
    for job in jobs:
        job.text = {OUTPUT_KEY: records[job.stem]}
    with folder_lock(out_dir, "occo fuse"):
        if stale := remove_stale_temporaries(out_dir):
            note(f"removed {stale} temporary file(s) an interrupted run left in {out_dir}")
        plan = plan_resume(
            [(j.out_path, j.ir_path, j.vi_path) for j in jobs], provenance, overwrite
        )
        todo = [jobs[i] for i in plan.todo]
        if plan.done:
            note(
                f"skipping {len(plan.done)} pair(s) already fused in {out_dir} with the same settings"
            )
        for reason in failures.values():
            warn(reason)
        from occo.cli.check import FuseRegistrationCheck
        from occo.data.registration import DEFAULT_THRESHOLD_PX

        threshold = DEFAULT_THRESHOLD_PX if misaligned_px is None else misaligned_px
        registration = FuseRegistrationCheck(threshold)
        check = registration if registration.threshold > 0 else None
        runner = FileFuser(fuser, workers=workers, resize_vi=resize_vi, inspect=check)
        stats, run_failures, interrupted = _run(runner, todo, registration, setup.budget)
        failures.update(run_failures)
        done = [job for job in jobs if job.stem not in failures and job.out_path.exists()]
        settings = {
            "batch_size": batch_size, **setup.settings, "ir16": ir16, "resize_vi": resize_vi,
            "overwrite": overwrite, "workers": workers, "threads": threads,
            "memory_plans": {f"{w}x{h}": {"tile": p.tile, "batch": p.batch}
                             for (h, w), p in getattr(fuser, "memory_plans", {}).items()},
        }  # fmt: skip
        per_image = stats.wall_s / stats.fused if stats.fused else None
        timings = {
            "total": round(stats.wall_s, 3),
            "per_image": round(per_image, 4) if per_image else None,
            "model": round(stats.model_s, 3),
            "decode": round(stats.decode_s, 3),
            "encode": round(stats.encode_s, 3),
            "fused_this_run": stats.fused,
        }
        try:
            # A rerun that had nothing to do keeps the record of the run that made the images.
            if todo or not (out_dir / MANIFEST_NAME).is_file():
                write_fuse_manifest(
                    out_dir, ir_root, vi_root,
                    weights=str(setup.weights.resolve()), weights_source=setup.source,
                    settings=settings, device=device, timings=timings, provenance=provenance,
                    pairs=len(done), stems=[job.stem for job in done],
                    outputs={job.stem: job.out_path.name for job in done}, failures=failures,
                    registration=registration.record() if check else None,
                )  # fmt: skip
        except (OccoError, OSError) as exc:
            warn(f"could not write the manifest in {out_dir}: {exc}")

    if summary := registration.summary():
        warn(summary)
    if interrupted:
        err.print(
            f"[yellow]interrupted:[/] {len(done) - len(plan.done)} pair(s) fused into {out_dir} this run, "
            f"{len(done)} of {len(jobs)} done in all; run the same command again to fuse the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130)
    out.print(
        f"fused {stats.fused} pair(s) into {out_dir} in {stats.wall_s:.1f} s, "
        f"{speed(stats.fused, stats.wall_s)} on {device}"
        + (f"; {len(plan.done)} already there" if plan.done else "")
        + (f"; [bold red]{len(failures)} failed[/]" if failures else ""),
        highlight=False,
        soft_wrap=True,
    )
    if failures:
        err.print("[bold red]failed pairs:[/]", highlight=False)
        for stem, reason in sorted(failures.items()):
            err.print(f"  {stem}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _run(runner, todo: list, registration, budget) -> tuple[object, dict[str, str], bool]:
    """Fuse ``todo`` under a progress bar; Ctrl-C stops cleanly after the pairs in flight.

    Registration warnings and memory plans (sizes that run in tiles or one pair at a time)
    are printed above the bar as they come.

    Returns:
        ``(stats, failures, interrupted)``.
    """
    failures: dict[str, str] = {}
    interrupted = False
    with progress_bar(disable=not todo) as progress:
        task = progress.add_task("fusing", total=len(todo), status="")
        if budget is not None:
            runner.fuser.on_memory_plan = lambda h, w, plan: progress.console.print(
                ("" if plan.fits else "[yellow]warning:[/] ") + plan.describe(h, w, budget),
                highlight=False,
                soft_wrap=True,
            )
        try:
            for outcome in runner.run(todo):
                if outcome.error:
                    failures[outcome.stem] = outcome.error
                    progress.console.print(f"[yellow]failed:[/] {outcome.error}", highlight=False)
                registration.report(outcome.stem, outcome.inspection, progress.console)
                progress.advance(task)
                progress.update(task, status=f"{len(failures)} failed" if failures else "")
        except KeyboardInterrupt:
            interrupted = True
            # Outputs are written atomically: what is on disk is complete, the rest absent.
            progress.update(task, completed=runner.stats.fused, status="interrupted")
    return runner.stats, failures, interrupted
