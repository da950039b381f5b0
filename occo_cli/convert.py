"""``occo convert``: import the authors' released FIFN checkpoint into occo's format."""

from __future__ import annotations

from pathlib import Path

import typer

from occo.cli.console import (
    fail,
    note,
    quiet_option,
    say,
    set_quiet,
)


def convert(
    src: Path = typer.Argument(
        ..., metavar="SRC", help="The authors' checkpoint (occo.pth: torch pickle of a state dict)."
    ),
    dst: Path = typer.Argument(
        ..., metavar="DST", help="occo weight file to write (.safetensors)."
    ),
    heads: str | None = typer.Option(
        None, "--heads", help="Attention heads per level, e.g. 4,4,4,1 \\[default: the release's]."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
    quiet: bool = quiet_option(),
) -> None:
    """Convert the authors' released FIFN weights (occo.pth) to occo's safetensors format.

    The checkpoint is read with torch.load(weights_only=True): a file that needs arbitrary unpickling is refused. Tensors are renamed to occo's modules and checked for shape; the unused second spatial-weight modules of the release are dropped.

    \b
    Example:
        occo convert occo.pth weights/occo_release.safetensors
        occo fuse ir/ vi/ fused/ --weights weights/occo_release.safetensors
    """
    set_quiet(quiet)

    from occo.models.checkpoint import convert_release_checkpoint

    if dst.suffix != ".safetensors":
        fail(f"DST {dst} should end in .safetensors")
    if dst.exists() and not overwrite:
        fail(f"{dst} exists; pass --overwrite to replace it")
    if dst.resolve() == src.resolve():
        fail("DST must differ from SRC")
    head_tuple = None
    if heads:
        try:
            head_tuple = tuple(int(h) for h in heads.split(","))
        except ValueError:
            fail(f"--heads must be comma-separated integers, got {heads!r}")
    report = convert_release_checkpoint(src, dst, heads=head_tuple)
    if report.dropped:
        levels = sorted({name.split(".")[0] for name in report.dropped})
        note(
            f"dropped {len(report.dropped)} unused tensors ({', '.join(levels)}: space_weight2, "
            "a second spatial-weight module the released network never applies)"
        )
    say(
        f"wrote {dst}: FIFN widths {list(report.config.widths)}, heads {list(report.config.heads)}, "
        f"{report.converted} tensors, {report.parameters:,} parameters"
    )
