"""``occo align``: warp each infrared image onto its visible image, for fusing without ghosts."""

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
    user_errors,
    warn,
)


def align(
    ir_dir: Path = typer.Argument(..., metavar="IR_DIR", help="Folder of infrared images."),
    vi_dir: Path = typer.Argument(
        ..., metavar="VI_DIR", help="Folder of visible images (paired with IR_DIR by file stem)."
    ),
    out_dir: Path = typer.Argument(
        ..., metavar="OUT_DIR", help="Folder for the aligned infrared images (PNG, STEM.png)."
    ),
    model: str = typer.Option(
        "similarity", "--model", help="Transform: similarity (shift, rotation, scale) or affine."
    ),
    min_px: float | None = typer.Option(
        None,
        "--min-px",
        min=0.0,
        help="Leave pairs alone that the transform moves no pixel more than this \\[default: 1].",
    ),
    border: str = typer.Option(
        "visible",
        "--border",
        help="Fill where the warp leaves no infrared data: visible (the visible luminance, "
        "matched to the infrared along the edge) or replicate (edge pixels repeated).",
    ),
    residual: bool = typer.Option(
        True,
        "--residual/--no-residual",
        help="Measure what is left after alignment (one more estimate per pair).",
    ),
    resize_vi: bool = typer.Option(
        False, "--resize-vi", help="Resize visible images to the infrared size when they differ."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace outputs made otherwise (other settings, other inputs, not by occo align).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads aligning pairs."),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Warp each infrared image onto its visible image, so that fused images show no double edges.

    The transform (similarity or affine) starts from `occo check`'s estimate and is refined to sub-pixel accuracy on the two images' edge orientations. Pairs whose estimate is unreliable (too little shared structure), or that the transform would move by at most --min-px, are written unchanged and said so. The area the warp leaves without infrared data is filled (--border) so that it does not become a dark frame in the fused image. Outputs keep the input's bit depth and colour; each records its transform, and OUT_DIR/occo-align.json lists them all. A rerun with the same settings resumes (skips the images already made); outputs made otherwise are refused unless --overwrite.

    \b
    Example:
        occo align data/roadscene/ir data/roadscene/vi aligned/ir
        occo fuse aligned/ir data/roadscene/vi fused/
        occo align ir/ vi/ aligned/ --model affine --border replicate --min-px 0.5
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads, torch_too=False)

    from occo.data.align import DEFAULT_MIN_DISPLACEMENT_PX, AlignSettings
    from occo.data.align_folder import AlignEvents, align_folder

    if model not in ("similarity", "affine"):
        fail(f"--model must be similarity or affine, got {model!r}")
    if border not in ("visible", "replicate"):
        fail(f"--border must be visible or replicate, got {border!r}")
    settings = AlignSettings(
        model=model,  # type: ignore[arg-type]
        min_displacement_px=DEFAULT_MIN_DISPLACEMENT_PX if min_px is None else min_px,
        border=border,  # type: ignore[arg-type]
    )
    with user_errors(), progress_bar() as progress:
        task = None
        warped = 0

        def start(total: int) -> None:
            nonlocal task
            task = progress.add_task("aligning", total=total, status="")

        def pair(stem: str, record: dict | None, error: str | None) -> None:
            nonlocal warped
            warped += bool(record and record["aligned"])
            progress.update(task, advance=1, status=f"{warped} warped")

        events = AlignEvents(note=note, warn=warn, start=start, pair=pair)
        result = align_folder(ir_dir, vi_dir, out_dir, settings, residual=residual,
                              resize_vi=resize_vi, overwrite=overwrite, workers=workers,
                              events=events)  # fmt: skip

    alone: dict[str, int] = {}
    for reason in result.left_alone.values():
        key = reason.split(":")[0].split(" (")[0]
        alone[key] = alone.get(key, 0) + 1
    why = "; ".join(f"{n} {k}" for k, n in sorted(alone.items()))
    out.print(
        f"{len(result.aligned)} of {len(result.pairs)} infrared image(s) warped onto their visible "
        f"image, {len(result.left_alone)} left as they were"
        + (f" ({why})" if why else "")
        + f"; written to {out_dir}",
        highlight=False,
        soft_wrap=True,
    )
    for stem, reason in sorted(result.failed.items()):
        err.print(f"[yellow]failed:[/] {stem}: {reason}", highlight=False, soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)
