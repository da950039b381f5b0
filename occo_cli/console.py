"""Shared rich consoles and the one-line error convention of every command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

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

from occo.data.errors import OccoError

# Results go to stdout; progress, notes and errors to stderr, so `--json` output pipes cleanly.
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an :class:`OccoError` raised inside the block into :func:`fail`'s one line."""
    try:
        yield
    except OccoError as exc:
        fail(str(exc))


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr."""
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """Print an informational line on stderr."""
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
        disable=disable,
        transient=False,
    )
