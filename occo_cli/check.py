"""``occo check``: find infrared/visible pairs that are not registered to each other."""

from __future__ import annotations

import json
from pathlib import Path

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
    threads_option,
    warn,
)


def check(
    ir_dir: Path = typer.Argument(..., metavar="IR_DIR", help="Folder of infrared images."),
    vi_dir: Path = typer.Argument(
        ..., metavar="VI_DIR", help="Folder of visible images (paired with IR_DIR by file stem)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.0,
        help="Flag pairs where some pixel is displaced more than this many px \\[default: 10].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print every pair's estimate as JSON."),
    resize_vi: bool = typer.Option(
        False, "--resize-vi", help="Resize visible images to the infrared size when they differ."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads estimating pairs."),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Estimate how far each infrared image is displaced against its visible image.

    Misregistered pairs fuse into ghosted images (double edges). The estimate compares the two images' edge orientations (not intensities, which differ between modalities), over the whole image and in blocks, and fits a shift, rotation and scale; the displacement is the largest distance a pixel moves under it. A pair is flagged when the estimate is reliable (the images share structure and it aligns them clearly better than no displacement) and the displacement exceeds --threshold. `occo fuse` runs the same check on every pair it fuses; `occo align` warps misregistered infrared images onto their visible ones.

    --json prints {"threshold_px", "pairs": [{"stem", "misaligned", "displacement_px", "shift_px", "rotation_deg", "scale", "confidence", "agreement", "reliable", "blocks", "residual_px", "alignment"}], "misaligned", "uncertain", "failed"}. For --json each pair is also aligned as `occo align` would (nothing is written): "residual_px" is what is left after alignment (median shift of 3x3 blocks, px; null when the pair would be left alone as unreliable) and "alignment" holds the transform, its confidence, the border it fills and why a pair would be left alone.

    \b
    Example:
        occo check data/roadscene/ir data/roadscene/vi
        occo check ir/ vi/ --threshold 5 --json > registration.json
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads, torch_too=False)

    from concurrent.futures import ThreadPoolExecutor

    from occo.data.align import align_pair
    from occo.data.io import read_pair_at_ir_size
    from occo.data.pairing import pair_images
    from occo.data.registration import DEFAULT_THRESHOLD_PX, estimate_registration

    threshold = DEFAULT_THRESHOLD_PX if threshold is None else threshold

    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            fail(f"{label} {folder} is not a folder")
    pairing = pair_images(ir_dir, vi_dir)
    if pairing.hidden:
        note(
            f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): {listing(pairing.hidden)}"
        )
    if pairing.unpaired:
        warn(
            f"{len(pairing.unpaired)} file(s) without a partner are left out: {listing(pairing.unpaired)}"
        )
    if not pairing.pairs:
        fail(f"no pairs: no file stem is in both {ir_dir} and {vi_dir}")

    def estimate(pair: tuple[str, Path, Path]):
        stem, ir_path, vi_path = pair
        try:
            ir, vi = read_pair_at_ir_size(ir_path, vi_path, resize_vi)
        except (OSError, ValueError) as exc:
            return stem, None, str(exc)
        try:
            registration = estimate_registration(ir, vi)
            if as_json:
                record = align_pair(ir, vi, estimate=registration).record()
                record.pop("estimate")  # the pair's own fields
                alignments[stem] = record
        except ValueError as exc:  # e.g. too small to estimate: this pair fails, not the run
            return stem, None, f"{ir_path.name} + {vi_path.name}: {exc}"
        return stem, registration, None

    results, failed, alignments = [], {}, {}
    with progress_bar(disable=as_json and not err.is_terminal) as progress:
        task = progress.add_task("checking", total=len(pairing.pairs), status="")
        with ThreadPoolExecutor(workers) as pool:
            for stem, registration, error in pool.map(estimate, pairing.pairs):
                if error:
                    failed[stem] = error
                else:
                    results.append((stem, registration))
                flagged = sum(r.misaligned(threshold) for _, r in results)
                progress.update(task, advance=1, status=f"{flagged} misaligned" if flagged else "")

    flagged = [(stem, r) for stem, r in results if r.misaligned(threshold)]
    if as_json:
        record = {
            "threshold_px": threshold,
            "pairs": [{"stem": stem, **r.to_dict(threshold),
                       "residual_px": alignments[stem].get("residual_px"),
                       "alignment": alignments[stem]} for stem, r in results],  # fmt: skip
            "misaligned": len(flagged),
            "uncertain": sum(not r.reliable for _, r in results),
            "failed": failed,
        }
        typer.echo(json.dumps(record, indent=2))
    else:
        if flagged:
            table = Table(title=f"pairs displaced more than {threshold:g} px", title_justify="left")
            for column in (
                "stem",
                "displacement px",
                "shift x, y px",
                "rotation °",
                "scale",
                "confidence",
            ):
                table.add_column(column, justify="left" if column == "stem" else "right")
            for stem, r in flagged:
                table.add_row(stem, f"{r.displacement_px:.1f}", f"{r.shift_px[0]:+.1f}, {r.shift_px[1]:+.1f}",
                              f"{r.rotation_deg:+.2f}", f"{r.scale:.3f}", f"{r.confidence:.2f}")  # fmt: skip
            out.print(table)
        uncertain = sum(not r.reliable for _, r in results)
        out.print(
            f"{len(flagged)} of {len(results)} pair(s) misaligned by more than {threshold:g} px"
            + (
                f"; {uncertain} too uncertain to tell (little shared structure)"
                if uncertain
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )
    for stem, reason in sorted(failed.items()):
        err.print(f"[yellow]failed:[/] {stem}: {reason}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)

