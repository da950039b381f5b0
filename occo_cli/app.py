"""The ``occo`` Typer application: one module per command, registered here."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from occo.cli.console import err, route_warnings
from occo.data.errors import OccoError
from occo.data.version import OCCO_VERSION

# The order commands appear in `occo --help`: the workflow's order, masks to metrics.
COMMAND_ORDER = ("masks", "train", "check", "fuse", "metrics", "convert")


class _WorkflowOrderGroup(TyperGroup):
    """Lists commands in workflow order (Typer would put command groups last)."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
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
    route_warnings()


# Each command module adds itself to `app` on import; COMMAND_ORDER sets the --help order.
from occo.cli import check as _check  # noqa: E402,F401
from occo.cli import convert as _convert  # noqa: E402,F401
from occo.cli import fuse as _fuse  # noqa: E402,F401
from occo.cli import masks as _masks  # noqa: E402,F401
from occo.cli import metrics as _metrics  # noqa: E402,F401
from occo.cli import train as _train  # noqa: E402,F401


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
