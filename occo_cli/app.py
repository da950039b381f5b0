"""The ``occo`` Typer application: one module per command, registered here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperGroup

from occo.cli import convert, fuse, masks, metrics, train
from occo.cli.console import err
from occo.data.errors import OccoError
from occo.data.version import OCCO_VERSION


class _WorkflowOrderGroup(TyperGroup):
    """Lists commands in workflow order (Typer would put command groups last)."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, (name, _) in enumerate(COMMANDS)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    cls=_WorkflowOrderGroup,
    name="occo",
    help="OCCO infrared-visible image fusion: object masks, training, fusion and metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"occo {OCCO_VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """OCCO infrared-visible image fusion: object masks, training, fusion and metrics."""


# Every command, registered here and only here, in the order `occo --help` lists them
# (the workflow's order). Command modules import nothing heavy at the top, so building
# the app (and `occo --help`) stays fast; each command imports what it needs when run.
COMMANDS: tuple[tuple[str, Callable[..., Any] | typer.Typer], ...] = (
    ("masks", masks.masks_app),
    ("train", train.train),
    ("fuse", fuse.fuse),
    ("metrics", metrics.metrics_command),
    ("convert", convert.convert),
)
for _name, _entry in COMMANDS:
    if isinstance(_entry, typer.Typer):
        app.add_typer(_entry, name=_name)
    else:
        app.command(_name)(_entry)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr, exit code 1."""
    try:
        app()
    except (
        OccoError,
        FileNotFoundError,
        NotADirectoryError,
        FileExistsError,
        PermissionError,
    ) as exc:
        message = str(exc) or exc.__class__.__name__
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
