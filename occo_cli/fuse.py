"""``occo fuse``: fuse folders of infrared/visible pairs with a FIFN."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from occo.cli.app import app
from occo.cli.console import (
    err,
    fail,
    listing,
    note,
    out,
    progress_bar,
    speed,
    user_errors,
    warn,
)  # fmt: skip

_IR16 = ("percentile", "minmax", "full")


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        fail(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def _check_folders(ir_dir: Path, vi_dir: Path, out_dir: Path) -> None:
    """Inputs are folders; OUT_DIR is outside them and writable (checked before any work)."""
    from occo.data.outputs import check_writable_folder, refuse_inside_inputs

    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            fail(f"{label} {folder} is not a folder")
    with user_errors():
        refuse_inside_inputs(out_dir, (ir_dir, vi_dir), "OUT_DIR")
        check_writable_folder(out_dir, "OUT_DIR")


@app.command("fuse")
def fuse(
    ir_dir: Path = typer.Argument(..., help="Folder of infrared images."),
    vi_dir: Path = typer.Argument(
        ..., help="Folder of visible images (paired with IR_DIR by file stem)."
    ),
    out_dir: Path = typer.Argument(
        ..., help="Folder for the fused PNGs (created; outside the inputs)."
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    resize_vi: bool = typer.Option(
        False, "--resize-vi", help="Resize visible images to the infrared size when they differ."
    ),
    ir16: str = typer.Option(
        "percentile",
        "--ir16",
        help="16-bit infrared stretch: percentile (0.1-99.9%), minmax or full (/65535).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads reading images ahead."),
    misaligned_px: float | None = typer.Option(
        None,
        "--misaligned-px",
        min=0.0,
        help="Warn about pairs whose infrared is displaced more than this many px against the"
        " visible image (as `occo check`); 0 turns the check off \\[default: 10].",
    ),
) -> None:
    """Fuse every infrared/visible pair of two folders into OUT_DIR (PNG, named by stem).

    Outputs keep the input size, and colour when the visible image is colour (the fused luminance replaces the visible Y; its Cb/Cr are kept). Existing outputs are skipped, so an interrupted run resumes. Bad pairs are reported and skipped; the exit code is 1 if any pair failed. OUT_DIR/occo-fuse.json records sources, weights, settings and timings, so `occo metrics OUT_DIR` finds the sources by itself.

    \b
    Example:
        occo convert occo.pth fifn.safetensors
        occo fuse data/tno/ir data/tno/vi fused/tno --weights fifn.safetensors
        occo fuse ir/ vi/ fused/ --device cuda --batch-size 16 --tile 1024
        occo metrics fused/tno
    """
    from occo.data.errors import OccoError
    from occo.data.pairing import pair_images
    from occo.eval.manifest import write_fuse_manifest
    from occo.models.checkpoint import load_weights, read_weights_metadata, resolve_weights
    from occo.models.fuser import FileFuser, FuseJob, Fuser
    from occo.models.host import cpu_has_native_bf16, keep_freed_memory
    from occo.models.memory import memory_budget

    if ir16 not in _IR16:
        fail(f"--ir16 must be one of {', '.join(_IR16)}, got {ir16!r}")
    _check_folders(ir_dir, vi_dir, out_dir)
    pairing = pair_images(ir_dir, vi_dir)
    failures: dict[str, str] = {}
    for path in pairing.only_first:
        failures[path.stem] = f"{path} has no visible partner in {vi_dir}"
    for path in pairing.only_second:
        failures[path.stem] = f"{path} has no infrared partner in {ir_dir}"
    if pairing.hidden:
        note(
            f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): {listing(pairing.hidden)}"
        )
    if not pairing.pairs:
        fail(f"no pairs: no file stem is in both {ir_dir} and {vi_dir}")

    weights_path = resolve_weights(weights)
    source = read_weights_metadata(weights_path).get("source", "")
    device = _resolve_device(device)
    model = load_weights(weights_path)
    if device == "cpu":
        # This process is ours: let glibc reuse FIFN's large freed maps (~20% faster on CPU).
        keep_freed_memory()
    try:
        budget = None if tile is not None else memory_budget(device)  # else tiles as needed
        fuser = Fuser(model, device=device, amp="auto" if amp is None else amp, tile=tile,
                      batch_size=batch_size, ir16=ir16, memory_budget=budget and budget.bytes)  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    note(f"weights: {weights_path}" + (f" ({source})" if source else ""))
    if device == "cpu" and fuser.amp_dtype is not None and cpu_has_native_bf16() is False:
        warn("this CPU has no bf16 instructions (AVX512-BF16 or AMX): --amp runs emulated, "
             "likely slower than the float32 default")  # fmt: skip

    jobs = [FuseJob(stem, ir, vi, out_dir / f"{stem}.png") for stem, ir, vi in pairing.pairs]
    todo = jobs if overwrite else [job for job in jobs if not job.out_path.exists()]
    skipped = len(jobs) - len(todo)
    if skipped:
        note(f"skipping {skipped} pair(s) already fused in {out_dir} (--overwrite redoes them)")
    out_dir.mkdir(parents=True, exist_ok=True)

    from occo.cli.check import FuseRegistrationCheck
    from occo.data.registration import DEFAULT_THRESHOLD_PX

    registration = FuseRegistrationCheck(
        DEFAULT_THRESHOLD_PX if misaligned_px is None else misaligned_px
    )
    check = registration if registration.threshold > 0 else None
    runner = FileFuser(fuser, workers=workers, resize_vi=resize_vi, inspect=check)
    started = time.perf_counter()
    with progress_bar(disable=not todo) as progress:
        task = progress.add_task("fusing", total=len(todo), status="")
        fuser.on_memory_plan = lambda h, w, plan: progress.console.print(
            ("" if plan.fits else "[yellow]warning:[/] ") + plan.describe(h, w, budget),
            highlight=False,
            soft_wrap=True,
        )
        for outcome in runner.run(todo):
            if outcome.error:
                failures[outcome.stem] = outcome.error
                progress.console.print(f"[yellow]failed:[/] {outcome.error}", highlight=False)
            registration.report(outcome.stem, outcome.inspection, progress.console)
            progress.advance(task)
            progress.update(task, status=f"{len(failures)} failed" if failures else "")
    stats = runner.stats
    done = [job for job in jobs if job.stem not in failures and job.out_path.exists()]

    settings = {
        "batch_size": batch_size, "tile": tile, "tile_margin": fuser.tile_margin,
        "amp": str(fuser.amp_dtype).removeprefix("torch.") if fuser.amp_dtype else None,
        "ir16": ir16, "resize_vi": resize_vi, "overwrite": overwrite, "workers": workers,
        "memory_plans": {f"{w}x{h}": {"tile": p.tile, "batch": p.batch}
                         for (h, w), p in fuser.memory_plans.items()},
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
        write_fuse_manifest(
            out_dir, ir_dir, vi_dir,
            weights=str(weights_path.resolve()), weights_source=source,
            settings=settings, device=device, timings=timings,
            pairs=len(done), stems=[job.stem for job in done], failures=failures,
            registration=registration.record() if check else None,
        )  # fmt: skip
    except (OccoError, OSError) as exc:
        warn(f"could not write the manifest in {out_dir}: {exc}")

    if summary := registration.summary():
        warn(summary)
    elapsed = time.perf_counter() - started
    rate = f", {speed(stats.fused, stats.wall_s)}" if stats.fused and stats.wall_s > 0 else ""
    out.print(
        f"fused {stats.fused} pair(s) into {out_dir} in {elapsed:.1f} s{rate} on {device}"
        + (f"; {skipped} already there" if skipped else "")
        + (f"; [bold red]{len(failures)} failed[/]" if failures else ""),
        highlight=False,
        soft_wrap=True,
    )
    if failures:
        err.print("[bold red]failed pairs:[/]", highlight=False)
        for stem, reason in sorted(failures.items()):
            err.print(f"  {stem}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
