"""Shared rich consoles and the one-line error convention of every command."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Results go to stdout; progress, notes and errors to stderr, so `--json` output pipes cleanly.
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr."""
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


_QUIET = {"on": False}


def set_quiet(quiet: bool) -> None:
    """``--quiet``: silence notes and progress bars for the rest of the command."""
    _QUIET["on"] = quiet


def note(message: str) -> None:
    """Print an informational line on stderr (not under ``--quiet``)."""
    if not _QUIET["on"]:
        err.print(message, highlight=False, soft_wrap=True)


def progress_bar(disable: bool = False) -> Progress:
    """A progress bar with count, elapsed time and ETA, drawn on stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        disable=disable or _QUIET["on"],
        transient=False,
    )


def threads_option() -> Any:
    """``--threads N``, the same on every command that computes."""
    return typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for the computation (torch, OpenCV) \\[default: all cores]. On small"
        " machines keep threads x processes at most the core count.",
        show_default=False,
    )


def quiet_option() -> Any:
    """``-q/--quiet``, the same on every command: no progress bar and no notes."""
    return typer.Option(
        False, "--quiet", "-q", help="No progress bar or notes; results and errors only."
    )
