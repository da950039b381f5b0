"""``occo methods``: the registered networks, what they are and how occo runs them."""

from __future__ import annotations

import typer

from occo.cli.console import out, plain, quiet_option, set_quiet


def methods(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object per method."),
    quiet: bool = quiet_option(),
) -> None:
    """List the fusion methods occo runs: FIFN (OCCO, the default) and the published peers.

    For each: paper and venue, parameters and GFLOPs of one 640x480 pair (a multiply-add counts as 2), licences of code and weights, source, training data, colour handling, what `--authors-output` changes, whether tiling is exact, ONNX support.

    \b
    Example:
        occo methods
        occo methods --json
        occo fuse ir/ vi/ fused-sea/ --method seafusion
    """
    import json
    from dataclasses import asdict

    from occo.models.registry import describe_network, network_names

    set_quiet(quiet)
    rows = [describe_network(name) for name in network_names()]
    if as_json:
        out.print_json(json.dumps([asdict(r) for r in rows]))
        return
    from rich.table import Table

    table = Table(show_lines=False)
    for column in (
        "method",
        "paper",
        "params",
        "GFLOPs",
        "tiling",
        "colour",
        "licence (code / weights)",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            plain(r.name), plain(f"{r.title.split(':')[0]} ({r.venue})"), f"{r.parameters:,}",
            f"{r.gflops_640x480:.1f}", plain(r.tiling), plain(r.color),
            plain(f"{r.code_licence or '?'} / {r.weights_licence or '?'}"),
        )  # fmt: skip
    out.print(table)
    out.print("GFLOPs: one 640x480 pair, a multiply-add counted as 2. `--json` has sources, "
              "training data, weights URLs and --authors-output.", highlight=False)  # fmt: skip
