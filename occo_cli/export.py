"""``occo export``: a FIFN weight file to an ONNX model, checked against PyTorch first."""

from __future__ import annotations

from pathlib import Path

import typer

from occo.cli.console import (
    fail,
    note,
    quiet_option,
    say,
    set_quiet,
    threads_option,
    user_errors,
)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(f"--static-size {text!r} is not HxW (e.g. 480x640 for 640 px wide frames)")
    if height <= 0 or width <= 0:
        fail(f"--static-size {text!r}: sizes must be positive")
    return height, width


def export(
    weights: Path = typer.Argument(
        ..., metavar="WEIGHTS", help="occo FIFN weights (.safetensors)."
    ),
    out_path: Path = typer.Argument(..., metavar="OUT.onnx", help="The ONNX model to write."),
    opset: int = typer.Option(17, "--opset", min=17, help="ONNX opset (17 or later)."),
    dynamic: bool = typer.Option(
        False, "--dynamic", help="Any batch, height and width (the default)."
    ),
    static_size: str | None = typer.Option(
        None,
        "--static-size",
        metavar="HxW",
        help="Fix height and width (batch stays dynamic), e.g. 480x640; for runtimes that"
        " want static shapes (TensorRT, edge accelerators).",
    ),
    fp16: bool = typer.Option(
        False,
        "--fp16",
        help="Run the network in float16 inside the graph (for GPUs); inputs and output"
        " stay float32.",
    ),
    minmax: bool = typer.Option(
        False,
        "--minmax",
        help="Put the per-image min-max normalisation in the graph: output in [0, 1]"
        " instead of the raw network output.",
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        min=0.0,
        help="Largest onnxruntime-vs-PyTorch error accepted, as a fraction of the output's"
        " range \\[default: 1e-4; 4e-3 with --fp16].",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT.onnx if it exists."),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Export FIFN weights to ONNX for deployment (onnxruntime, TensorRT, edge runtimes).

    The graph is FIFN as `occo fuse` runs it (BatchNorm folded). Inputs `vi_y` (visible luminance Y) and `ir`: float32 (B, 1, H, W) in [0, 1]. Output `fused_y`: float32 (B, 1, H, W), the raw network output: normalise each image by its min and max to get the fused luminance (--minmax does it in the graph), then put it back with the visible image's Cb/Cr for colour. Before anything is written, onnxruntime runs the model at a few sizes (odd ones included) against PyTorch; a model that differs is not written. The model's metadata records occo's version, the network config, the weights' SHA-256 and their provenance. Needs `pip install "occo\\[onnx]"`.

    \b
    Example:
        occo export fifn.safetensors fifn.onnx
        occo export fifn.safetensors fifn_fp16.onnx --fp16
        occo export fifn.safetensors fifn_640.onnx --static-size 480x640
        occo fuse ir/ vi/ fused/ --backend onnxruntime --weights fifn.onnx
    """
    set_quiet(quiet)
    from occo.runtime import set_threads

    set_threads(threads)

    from occo.models.export import ExportError, export_onnx

    if dynamic and static_size:
        fail("--dynamic and --static-size exclude each other")
    size = _parse_size(static_size) if static_size else None
    from occo.data.io import output_lock
    from occo.data.outputs import check_writable_file, refuse_existing

    with user_errors():  # before the work: a bad destination costs one line, no export
        if not overwrite:
            refuse_existing([out_path], f"OUT.onnx {out_path}")
        check_writable_file(out_path, "OUT.onnx")
    try:
        with user_errors(), output_lock(out_path, "occo export"):  # export_onnx re-checks
            report = export_onnx(
                weights,
                out_path,
                opset=opset,
                static_size=size,
                fp16=fp16,
                minmax=minmax,
                tolerance=tolerance,
                overwrite=overwrite,
            )
    except (ExportError, FileExistsError) as exc:
        fail(str(exc))
    checks = ", ".join(f"{c.batch}x{c.height}x{c.width}" for c in report.checks)
    note(
        f"checked with onnxruntime against PyTorch at {checks} (batch x H x W): max error "
        f"{report.max_error:.1e} of the output range, tolerance {report.checks[0].tolerance:.0e}"
    )
    shape = f"H={size[0]}, W={size[1]}, any batch" if size else "any batch, height and width"
    say(
        f"wrote {out_path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset}, "
        f"{report.precision}, {report.output} output, {shape}) in {report.seconds:.1f} s"
    )
