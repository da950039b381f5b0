"""``occo align``: warp each infrared image onto its visible image, for fusing without ghosts."""

from __future__ import annotations

import json
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
    threads_option,
    user_errors,
    warn,
)

#: PNG text key under which each aligned image records how it was made.
OUTPUT_KEY = "occo-align"
#: The manifest written into OUT_DIR.
MANIFEST_NAME = "occo-align.json"


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
        True, "--residual/--no-residual", help="Measure what is left after alignment (one more estimate per pair)."
    ),
    resize_vi: bool = typer.Option(
        False, "--resize-vi", help="Resize visible images to the infrared size when they differ."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace outputs made otherwise (other settings, other inputs, not by occo align)."
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

    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict
    from datetime import datetime, timezone

    import cv2

    from occo.data.align import (
        ALGORITHM_VERSION,
        DEFAULT_MIN_DISPLACEMENT_PX,
        AlignSettings,
        align_pair,
    )
    from occo.data.io import (
        file_sha256,
        folder_lock,
        read_image,
        read_png_text,
        remove_stale_temporaries,
        write_bytes_atomic,
        write_image_atomic,
    )
    from occo.data.outputs import check_writable_folder, refuse_inside_inputs
    from occo.data.pairing import pair_images
    from occo.data.version import OCCO_VERSION

    if model not in ("similarity", "affine"):
        fail(f"--model must be similarity or affine, got {model!r}")
    if border not in ("visible", "replicate"):
        fail(f"--border must be visible or replicate, got {border!r}")
    settings = AlignSettings(
        model=model,  # type: ignore[arg-type]
        min_displacement_px=DEFAULT_MIN_DISPLACEMENT_PX if min_px is None else min_px,
        border=border,  # type: ignore[arg-type]
    )
    provenance = {"algorithm": ALGORITHM_VERSION, **asdict(settings), "resize_vi": resize_vi}

    for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
        if not folder.is_dir():
            fail(f"{label} {folder} is not a folder")
    with user_errors():
        refuse_inside_inputs(out_dir, [ir_dir, vi_dir], "OUT_DIR")
        check_writable_folder(out_dir, "OUT_DIR")
        pairing = pair_images(ir_dir, vi_dir)
    if pairing.hidden:
        note(f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): {listing(pairing.hidden)}")  # fmt: skip
    if pairing.unpaired:
        warn(f"{len(pairing.unpaired)} file(s) without a partner are left out: {listing(pairing.unpaired)}")  # fmt: skip
    if not pairing.pairs:
        fail(f"no pairs: no file stem is in both {ir_dir} and {vi_dir}")

    def sources(ir_path: Path, vi_path: Path) -> dict:
        return {"ir": ir_path.name, "vi": vi_path.name, "ir_sha256": file_sha256(ir_path),
                "vi_sha256": file_sha256(vi_path)}  # fmt: skip

    def previous(path: Path) -> dict | None:
        try:
            return json.loads(read_png_text(path).get(OUTPUT_KEY, "null"))
        except ValueError:
            return None

    with user_errors(), folder_lock(out_dir, "occo align"):
        remove_stale_temporaries(out_dir)
        # Plan: resume what these settings made from these inputs; refuse anything else.
        todo, done, foreign = [], {}, []
        for stem, ir_path, vi_path in pairing.pairs:
            target = out_dir / f"{stem}.png"
            if not target.exists():
                todo.append((stem, ir_path, vi_path, target))
                continue
            record = previous(target)
            same = (record is not None and record.get("settings") == provenance
                    and record.get("sources") == sources(ir_path, vi_path))  # fmt: skip
            if same:
                done[stem] = {**record["alignment"], "output": target.name}
            elif overwrite:
                todo.append((stem, ir_path, vi_path, target))
            else:
                foreign.append(target)
        if foreign:
            fail(
                f"OUT_DIR {out_dir}: {len(foreign)} file(s) were made otherwise (other settings or "
                f"inputs, or not by occo align): {listing(foreign)}; pass --overwrite to replace "
                "them, or choose another folder"
            )
        if done:
            note(f"resuming: {len(done)} of {len(pairing.pairs)} pair(s) already aligned with these settings")  # fmt: skip

        def run(job: tuple[str, Path, Path, Path]) -> tuple[str, dict | None, str | None]:
            stem, ir_path, vi_path, target = job
            try:
                ir, vi = read_image(ir_path), read_image(vi_path)
            except (OSError, ValueError) as exc:
                return stem, None, str(exc)
            if ir.shape[:2] != vi.shape[:2]:
                if not resize_vi:
                    return stem, None, (
                        f"infrared {ir_path} is {ir.shape[1]}x{ir.shape[0]} but visible {vi_path} "
                        f"is {vi.shape[1]}x{vi.shape[0]}; pass --resize-vi to compare them at the "
                        "infrared size")  # fmt: skip
                vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
            try:
                alignment = align_pair(ir, vi, settings, measure_residual=residual)
            except ValueError as exc:
                return stem, None, f"{ir_path.name} + {vi_path.name}: {exc}"
            record = alignment.record()
            text = {OUTPUT_KEY: json.dumps({"settings": provenance, "sources": sources(ir_path, vi_path),
                                            "alignment": record})}  # fmt: skip
            try:
                write_image_atomic(target, alignment.ir, text)
            except (OSError, ValueError) as exc:
                return stem, None, f"cannot write {target}: {exc}"
            return stem, {**record, "output": target.name}, None

        results, failed = dict(done), {}
        with progress_bar() as progress:
            task = progress.add_task("aligning", total=len(todo), status="")
            with ThreadPoolExecutor(workers) as pool:
                for stem, record, error in pool.map(run, todo):
                    if error:
                        failed[stem] = error
                    else:
                        results[stem] = record
                    moved = sum(r["aligned"] for r in results.values())
                    progress.update(task, advance=1, status=f"{moved} warped")

        aligned = sorted(s for s, r in results.items() if r["aligned"])
        left = {s: r["left_alone"] for s, r in sorted(results.items()) if not r["aligned"]}
        manifest = {
            "format": "occo-align",
            "version": 1,
            "occo_version": OCCO_VERSION,
            "ir_dir": str(ir_dir.resolve()),
            "vi_dir": str(vi_dir.resolve()),
            "settings": provenance,
            "matrix": "2x3, visible pixel (x, y, 1) -> infrared pixel; aligned(p) = ir(matrix @ p)",
            "aligned": aligned,
            "left_alone": left,
            "failed": failed,
            "pairs": dict(sorted(results.items())),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            write_bytes_atomic(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())
        except OSError as exc:
            warn(f"could not write the manifest in {out_dir}: {exc}")

    alone = {}
    for reason in left.values():
        key = reason.split(":")[0].split(" (")[0]
        alone[key] = alone.get(key, 0) + 1
    why = "; ".join(f"{n} {k}" for k, n in sorted(alone.items()))
    out.print(
        f"{len(aligned)} of {len(results)} infrared image(s) warped onto their visible image, "
        f"{len(left)} left as they were" + (f" ({why})" if why else "") + f"; written to {out_dir}",
        highlight=False,
        soft_wrap=True,
    )
    for stem, reason in sorted(failed.items()):
        err.print(f"[yellow]failed:[/] {stem}: {reason}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
