"""The ``occo`` Typer application: one module per command, registered here."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from occo.cli import align, check, compare, convert, export, fuse, masks, methods, metrics, train
from occo.cli import eval as eval_cli
from occo.cli.console import err, error_line, route_warnings
from occo.data.errors import OccoError
from occo.data.outputs import is_disk_error, write_error
from occo.data.version import OCCO_VERSION

try:  # Typer >= 0.22 runs on its own copy of click
    from typer import _click as click
except ImportError:  # older Typer: click itself
    import click


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
    route_warnings()


# Every command, registered here and only here, in the order `occo --help` lists them
# (the workflow's order). Command modules import nothing heavy at the top, so building
# the app (and `occo --help`) stays fast; each command imports what it needs when run.
COMMANDS: tuple[tuple[str, Callable[..., Any] | typer.Typer], ...] = (
    ("masks", masks.masks_app),
    ("train", train.train),
    ("check", check.check),
    ("align", align.align),
    ("fuse", fuse.fuse),
    ("metrics", metrics.metrics_command),
    ("eval", eval_cli.eval_app),
    ("compare", compare.compare),
    ("methods", methods.methods),
    ("convert", convert.convert),
    ("export", export.export),
)
for _name, _entry in COMMANDS:
    if isinstance(_entry, typer.Typer):
        app.add_typer(_entry, name=_name)
    else:
        app.command(_name)(_entry)


#: Typer's ``{NAME}`` (or ``{NAME}...``) for a required argument in usage lines.
_BRACED = re.compile(r"^\{(.+)\}(?=(\.\.\.)?$)")


def _polish(command: click.Command) -> None:
    """Help and usage as occo writes them: flags without a ``<bool>`` type, arguments by name.

    Typer marks a flag's type as ``<bool>`` (which reads as if ``--overwrite true`` were
    valid) and required arguments as ``{NAME}`` in usage lines, while messages say NAME.
    """
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""  # no type column for flags
    if not getattr(command, "_occo_usage", False):
        collect, help_option = command.collect_usage_pieces, command.get_help_option

        def get_help_option(ctx: click.Context, help_option=help_option):
            option = help_option(ctx)  # made on demand, so not among command.params
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option  # type: ignore[method-assign]

        def usage_pieces(ctx: click.Context, collect=collect) -> list[str]:
            return [_BRACED.sub(r"\1", piece) for piece in collect(ctx)]

        command.collect_usage_pieces = usage_pieces  # type: ignore[method-assign]
        command._occo_usage = True  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        _polish(sub)


def main() -> None:
    """Console-script entry point: errors become one line on stderr and a non-zero exit.

    Usage errors (a missing argument, an unknown option) exit 2, user errors 1, Ctrl-C 130.
    """
    command = typer.main.get_command(app)
    _polish(command)
    try:
        code = command.main(prog_name="occo", standalone_mode=False)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:  # `occo` alone: its help
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "occo"
        message = exc.format_message().rstrip(".")
        error_line(f"{message}; see `{where} --help`")
        sys.exit(2)
    except (
        OccoError,
        FileNotFoundError,
        NotADirectoryError,
        FileExistsError,
        PermissionError,
    ) as exc:
        error_line(str(exc) or exc.__class__.__name__)
        sys.exit(1)
    except OSError as exc:  # a full or read-only disk met where no message names it yet
        if not is_disk_error(exc):
            raise
        error_line(write_error(exc, exc.filename or "a file"))
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
