"""``occo fuse``: options -> FuseSettings -> occo.models.fusing.fuse_folder -> render."""

from __future__ import annotations

from pathlib import Path

import typer

from occo.cli.console import (
    err,
    fail,
    is_quiet,
    out,
    plain,
    progress_bar,
    quiet_option,
    set_quiet,
    speed,
    threads_option,
    user_errors,
    warn,
)


def fuse(
    ir_dir: Path = typer.Argument(
        ...,
        metavar="IR_DIR",
        help="Folder of infrared images, or one infrared image file, or an infrared video /"
        " folder of frames. Medical: the MRI folder (MRI_DIR), or a dataset folder holding"
        " MRI/ and CT/, PET/ or SPECT/ (then give only OUT_DIR after it).",
    ),
    vi_dir: Path = typer.Argument(
        ...,
        metavar="VI_DIR",
        help="Folder of visible images (paired with IR_DIR by file stem), one visible image"
        " file, or a video. Medical: the CT, PET or SPECT folder (its colour is kept).",
    ),
    out_dir: Path | None = typer.Argument(
        None,
        metavar="OUT_DIR",
        help="Folder for the fused PNGs (created; outside the inputs), or a video file"
        " (.mp4, .avi, .mkv, .mov).",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        "-m",
        help="Registered network (`occo methods`): fifn (OCCO), seafusion, sage, ..."
        " \\[default: the network an occo weight file records, else fifn].",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        "-w",
        help="Weights: an occo .safetensors, the method's released file (or a folder"
        " holding it) \\[default: occo's bundled FIFN weights; for other methods their"
        " authors' pinned release, from the torch hub cache].",
    ),
    authors_output: bool = typer.Option(
        False,
        "--authors-output",
        help="Write what the method's authors' test script writes (gray where it saves"
        " gray for a colour visible image); default: colour kept.",
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
    modalities: str | None = typer.Option(
        None,
        "--modalities",
        help="What the two inputs are, FIRST,SECOND: MRI,PET (or MRI,CT, MRI,SPECT; the"
        " second image's colour is kept) or ir,vi \\[default: from the folder names MRI/,"
        " CT/, PET/, SPECT/ (any case), else infrared,visible].",
    ),
    misaligned_px: float | None = typer.Option(
        None,
        "--misaligned-px",
        min=0.0,
        help="Warn about pairs whose infrared is displaced more than this many px against the"
        " visible image (as `occo check`); 0 turns the check off \\[default: 10].",
    ),
    align: bool = typer.Option(
        False,
        "--align",
        help="Warp each infrared image onto its visible one before fusing, as `occo align`"
        " does (pairs already aligned, or whose estimate is unreliable, are fused as they"
        " are); each transform is recorded in its PNG and in occo-fuse.json. Video: one"
        " transform for the whole stream.",
    ),
    align_every: int | None = typer.Option(
        None,
        "--align-every",
        min=1,
        help="Video with --align: estimate the transform again every N frames \\[default:"
        " once per stream].",
    ),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse every infrared/visible pair of two folders into OUT_DIR (PNG, named by stem), with FIFN or any registered method.

    Outputs keep the input size, and colour when the visible image is colour (the fused luminance replaces the visible Y; its Cb/Cr are kept). Each PNG records what made it (weights SHA-256, the settings that change pixels, occo version, source files): a rerun with the same settings skips finished outputs, so an interrupted run resumes; other settings, or files occo did not write, are refused unless --overwrite. Bad pairs are reported and skipped; the exit code is 1 if any pair failed. OUT_DIR/occo-fuse.json records sources, weights, settings and timings, so `occo metrics OUT_DIR` finds the sources by itself.

    Medical images: MRI first, then CT, PET or SPECT (`occo fuse MRI_DIR PET_DIR OUT_DIR`, or `occo fuse DATASET OUT_DIR` for a folder holding MRI/ and PET/); the folder names say the task. The fused luminance replaces the PET/SPECT image's Y and its Cb/Cr are kept exactly (YCbCr, as CoCoNet does); MRI-CT pairs are gray. A gray PET/SPECT image is fused gray, with a warning line.

    Video: when an input or OUT is a video, two videos (or folders of numbered frames) are fused frame by frame into a video with the visible stream's size and frame rate (.mp4/.mov: mp4v, .avi: MJPG, .mkv: lossless FFV1), streaming, in batches. Streams of different rates or lengths are paired by timestamp; the frames dropped or repeated are counted. OUT appears only when complete (an interrupted run keeps OUT.partial.EXT); OUT.EXT.occo-fuse.json records the run.

    \b
    Example:
        occo convert occo.pth fifn.safetensors
        occo fuse data/tno/ir data/tno/vi fused/tno --weights fifn.safetensors
        occo fuse ir/0001.png vi/0001.png fused/              # one pair
        occo fuse medical/PET-MRI/test/MRI medical/PET-MRI/test/PET fused/pet-mri
        occo fuse medical/SPECT-MRI/test fused/spect-mri      # holds MRI/ and SPECT/
        occo fuse ir/ vi/ fused/ --device cuda --batch-size 16 --tile 1024
        occo fuse ir/ vi/ fused/ --weights runs/fmb/best.safetensors
        occo fuse ir/ vi/ fused-sea/ --method seafusion --weights SeAFusion.pth
        torchrun --nproc-per-node 2 -m occo fuse ir/ vi/ fused/   # pairs shared by 2 processes
        occo fuse ir/ vi/ fused/ --backend onnxruntime --weights fifn.onnx
        occo fuse data/roadscene/ir data/roadscene/vi fused/ --align   # no double edges
        occo fuse ir.mp4 vi.mp4 fused.mp4 --start 10 --frames 300
        occo fuse ir_frames/ vi_frames/ fused.mp4 --fps 30
        occo fuse ir.mp4 vi.mp4 fused.mp4 --align --align-every 250
        occo metrics fused/tno
    """
    from occo.data.video import is_video_path
    from occo.models.fusing import FuseSettings
    from occo.runtime import set_threads

    set_quiet(quiet)
    if out_dir is None:  # occo fuse DATASET OUT_DIR: a medical dataset folder
        from occo.data.modality import ModalityError, dataset_folders

        try:
            ir_dir, vi_dir, out_dir = (*dataset_folders(ir_dir)[:2], vi_dir)
        except ModalityError as exc:
            fail(f"{exc}; or give three paths: IR_DIR VI_DIR OUT_DIR")
    settings = FuseSettings(
        method=method, weights=weights, backend=backend, device=device, amp=amp, tile=tile,
        batch_size=batch_size, ir16=ir16, authors_output=authors_output, resize_vi=resize_vi,
        workers=workers, misaligned_px=misaligned_px, overwrite=overwrite, threads=threads,
        modalities=modalities, align=align,
    )  # fmt: skip
    with user_errors():
        settings.validate()
    set_threads(threads)
    if any(is_video_path(p) for p in (ir_dir, vi_dir, out_dir)):
        from occo.cli.fuse_video import fuse_video

        fuse_video(ir_dir, vi_dir, out_dir, settings, fps=fps, start=start, frames=frames,
                   align_every=align_every)  # fmt: skip
        return
    if align_every is not None:
        fail("--align-every is for videos (with --align); folders align every pair")
    if fps is not None or start or frames is not None:
        fail("--fps, --start and --frames are for video: give videos, or a video OUT (.mp4, ...)")
    result = _run(ir_dir, vi_dir, out_dir, settings)
    _render(result)


def _run(ir_dir: Path, vi_dir: Path, out_dir: Path, settings):
    """fuse_folder under a progress bar; notes and warnings printed above it as they come."""
    from occo.models.fusing import FuseEvents, fuse_folder

    with progress_bar() as progress:
        task = progress.add_task("fusing", total=None, status="", visible=False)
        failed = {"n": 0}

        def line(kind: str):
            def show(text: str) -> None:
                if kind == "warn":
                    progress.console.print(
                        f"[yellow]warning:[/] {plain(text)}", highlight=False, soft_wrap=True
                    )
                elif not is_quiet():
                    progress.console.print(plain(text), highlight=False, soft_wrap=True)

            return show

        def start(total: int) -> None:
            progress.update(task, total=total, visible=total > 0)

        def pair(outcome) -> None:
            if outcome.error:
                failed["n"] += 1
                progress.console.print(
                    f"[yellow]failed:[/] {plain(outcome.stem)}: {plain(outcome.error)}",
                    highlight=False,
                    soft_wrap=True,
                )
            progress.advance(task)
            progress.update(task, status=f"{failed['n']} failed" if failed["n"] else "")

        events = FuseEvents(note=line("note"), warn=line("warn"), start=start, pair=pair)
        try:
            with user_errors():
                return fuse_folder(ir_dir, vi_dir, out_dir, settings, events)
        except (FileNotFoundError, PermissionError) as exc:
            fail(str(exc))


def _render(result) -> None:
    """The closing lines and the exit code of a folder run."""
    if result.manifest_warning:
        warn(result.manifest_warning)
    if result.misaligned_summary:
        warn(result.misaligned_summary)
    if result.stopped:
        fail(f"stopped: {result.stopped}; {result.fused} pair(s) fused into {result.out_dir} "
             "this run; free space (or make it writable) and run the same command again")  # fmt: skip
    if result.interrupted:
        err.print(
            f"[yellow]interrupted:[/] {result.fused} pair(s) fused into {plain(result.out_dir)} this run, "
            f"{result.done} of {result.total} done in all; run the same command again to fuse the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130)
    ranks = f" by {result.world_size} processes" if result.world_size > 1 else ""
    out.print(
        f"fused {result.fused} pair(s) into {plain(result.out_dir)} in {result.seconds:.1f} s, "
        f"{speed(result.fused, result.seconds)} on {result.device}{ranks}"
        + (f"; {result.skipped} already there" if result.skipped else "")
        + (f"; [bold red]{len(result.failures)} failed[/]" if result.failures else ""),
        highlight=False,
        soft_wrap=True,
    )
    if result.failures:
        # Each failure was printed once as it happened (or as a warning before the run).
        raise typer.Exit(1)
