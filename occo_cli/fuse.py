"""``occo fuse``: fuse folders of infrared/visible pairs with a FIFN."""

from __future__ import annotations

from pathlib import Path

import typer

from occo.cli.console import (
    err,
    fail,
    note,
    out,
    progress_bar,
    quiet_option,
    set_quiet,
    threads_option,
    warn,
)
from occo.data.version import OCCO_VERSION

_IR16 = ("percentile", "minmax", "full")


def _check_folders(ir_dir: Path, vi_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder equal to or inside an input folder (inputs are never touched)."""
    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            fail(f"{label} {folder} is not a folder")
    out_resolved = out_dir.resolve()
    for folder in (ir_dir, vi_dir):
        if out_resolved == folder.resolve() or out_resolved.is_relative_to(folder.resolve()):
            fail(
                f"OUT_DIR {out_dir} is inside the input folder {folder}; choose a folder outside the inputs"
            )
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"OUT_DIR {out_dir} exists and is not a folder")


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
        ..., metavar="IR_DIR", help="Folder of infrared images (or one infrared image file)."
    ),
    vi_dir: Path = typer.Argument(
        ...,
        metavar="VI_DIR",
        help="Folder of visible images, paired with IR_DIR by file stem (or one visible image file).",
    ),
    out_dir: Path = typer.Argument(
        ..., metavar="OUT_DIR", help="Folder for the fused PNGs (created; outside the inputs)."
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        "-w",
        help="occo FIFN weights (.safetensors) \\[default: occo's bundled weights].",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
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
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse every infrared/visible pair of two folders into OUT_DIR (PNG, named by stem).

    Outputs keep the input size, and colour when the visible image is colour (the fused luminance replaces the visible Y; its Cb/Cr are kept). Each PNG records what made it (weights SHA-256, the settings that change pixels, occo version, source files): a rerun with the same settings skips finished outputs, so an interrupted run resumes; other settings, or files occo did not write, are refused unless --overwrite. Bad pairs are reported and skipped; the exit code is 1 if any pair failed. OUT_DIR/occo-fuse.json records sources, weights, settings and timings, so `occo metrics OUT_DIR` finds the sources by itself.

    \b
    Example:
        occo convert occo.pth fifn.safetensors
        occo fuse data/tno/ir data/tno/vi fused/tno --weights fifn.safetensors
        occo fuse ir/0001.png vi/0001.png fused/              # one pair
        occo fuse ir/ vi/ fused/ --device cuda --batch-size 16 --tile 1024
        occo fuse ir/ vi/ fused/ --weights runs/fmb/best.safetensors
        occo metrics fused/tno
    """
    from occo.data.errors import OccoError
    from occo.data.io import file_sha256, folder_lock, remove_stale_temporaries
    from occo.eval.manifest import (
        MANIFEST_NAME,
        OUTPUT_KEY,
        output_record,
        plan_resume,
        write_fuse_manifest,
    )
    from occo.models.checkpoint import load_weights, read_weights_metadata, resolve_weights
    from occo.models.fuser import FileFuser, FuseJob, Fuser
    from occo.runtime import (
        DeviceError,
        cpu_amp_warning,
        keep_freed_memory,
        resolve_device,
        set_threads,
    )

    set_quiet(quiet)
    if ir16 not in _IR16:
        fail(f"--ir16 must be one of {', '.join(_IR16)}, got {ir16!r}")
    pairs, failures, ir_root, vi_root = _pairs(ir_dir, vi_dir, out_dir)

    weights_path = resolve_weights(weights)
    source = read_weights_metadata(weights_path).get("source", "")
    try:
        torch_device = resolve_device(device)
    except DeviceError as exc:
        fail(str(exc))
    device = str(torch_device)
    set_threads(threads)
    model = load_weights(weights_path)
    if torch_device.type == "cpu":
        # This process is ours: let glibc reuse FIFN's large freed maps (~20% faster on CPU).
        keep_freed_memory()
    try:
        fuser = Fuser(model, device=torch_device, amp="auto" if amp is None else amp, tile=tile,
                      batch_size=batch_size, ir16=ir16)  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    note(f"weights: {weights_path}" + (f" ({source})" if source else ""))
    if message := cpu_amp_warning(torch_device, fuser.amp_dtype):
        warn(message)

    amp_name = str(fuser.amp_dtype).removeprefix("torch.") if fuser.amp_dtype else None
    provenance = {
        "occo_version": OCCO_VERSION, "weights_sha256": file_sha256(weights_path),
        "ir16": ir16, "tile": tile, "amp": amp_name,
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
        stats, run_failures, interrupted = _run(
            FileFuser(fuser, workers=workers, resize_vi=resize_vi), todo
        )
        failures.update(run_failures)
        done = [job for job in jobs if job.stem not in failures and job.out_path.exists()]
        settings = {
            "batch_size": batch_size, "tile": tile, "tile_margin": fuser.tile_margin,
            "amp": amp_name, "ir16": ir16, "resize_vi": resize_vi, "overwrite": overwrite,
            "workers": workers, "threads": threads,
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
                    weights=str(weights_path.resolve()), weights_source=source,
                    settings=settings, device=device, timings=timings, provenance=provenance,
                    pairs=len(done), stems=[job.stem for job in done],
                    outputs={job.stem: job.out_path.name for job in done}, failures=failures,
                )  # fmt: skip
        except (OccoError, OSError) as exc:
            warn(f"could not write the manifest in {out_dir}: {exc}")

    if interrupted:
        err.print(
            f"[yellow]interrupted:[/] {len(done) - len(plan.done)} pair(s) fused into {out_dir} this run, "
            f"{len(done)} of {len(jobs)} done in all; run the same command again to fuse the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130)
    out.print(
        f"fused {stats.fused} pair(s) into {out_dir} in {stats.wall_s:.1f} s, {_rate(stats)} on {device}"
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


def _rate(stats) -> str:
    """pairs/s, or s/pair when slower than one pair a second."""
    if not stats.fused or stats.wall_s <= 0:
        return "no pairs"
    per_second = stats.fused / stats.wall_s
    return f"{per_second:.2f} pairs/s" if per_second >= 1 else f"{1 / per_second:.1f} s/pair"


def _run(runner, todo: list) -> tuple[object, dict[str, str], bool]:
    """Fuse ``todo`` under a progress bar; Ctrl-C stops cleanly after the pairs in flight.

    Returns:
        ``(stats, failures, interrupted)``.
    """
    failures: dict[str, str] = {}
    interrupted = False
    with progress_bar(disable=not todo) as progress:
        task = progress.add_task("fusing", total=len(todo), status="")
        try:
            for outcome in runner.run(todo):
                if outcome.error:
                    failures[outcome.stem] = outcome.error
                    progress.console.print(f"[yellow]failed:[/] {outcome.error}", highlight=False)
                progress.advance(task)
                progress.update(task, status=f"{len(failures)} failed" if failures else "")
        except KeyboardInterrupt:
            interrupted = True
            # Outputs are written atomically: what is on disk is complete, the rest absent.
            progress.update(task, completed=runner.stats.fused, status="interrupted")
    return runner.stats, failures, interrupted
