"""Shared rich consoles and the one-line error convention of every command."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from occo.data.errors import OccoError, OccoWarning
from occo.data.pairing import listing  # noqa: F401 - the commands take it from here

# Results go to stdout; progress, notes and errors to stderr, so `--json` output pipes cleanly.
out = Console()
err = Console(stderr=True)


def plain(text: object) -> str:
    """``text`` made safe to print through rich: its brackets are shown, never parsed.

    Messages carry user content (paths such as ``lab[red]``, ``bbox must be [x, y, ...]``)
    that rich would otherwise read as markup: dropped, or a crash on ``[/]``.
    """
    return escape(str(text))


def say(text: object, console: Console | None = None) -> None:
    """Print ``text`` as it is (no markup, no highlighting) on stdout or ``console``."""
    (console or out).print(plain(text), highlight=False, soft_wrap=True)


def error_line(message: object) -> None:
    """Print ``error: message`` on stderr as one line (the message shown as it is)."""
    err.print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    error_line(message)
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
    err.print(f"[yellow]warning:[/] {plain(message)}", highlight=False, soft_wrap=True)


_QUIET = {"on": False}


def set_quiet(quiet: bool) -> None:
    """``--quiet``: silence notes and progress bars for the rest of the command."""
    _QUIET["on"] = quiet


def is_quiet() -> bool:
    """Whether -q/--quiet is on (notes are not printed)."""
    return _QUIET["on"]


def note(message: str) -> None:
    """Print an informational line on stderr (not under ``--quiet``)."""
    if not _QUIET["on"]:
        err.print(plain(message), highlight=False, soft_wrap=True)




def speed(count: int, seconds: float, unit: str = "pair") -> str:
    """``"2.88 pairs/s"``, ``"0.004 pairs/s"``: always a rate, three significant digits
    (one unit everywhere, never "0.00 pairs/s")."""
    if count <= 0 or seconds <= 0:
        return f"0 {unit}s/s"
    return f"{count / seconds:.3g} {unit}s/s"


def progress_bar(disable: bool = False) -> Progress:
    """A progress bar with count, elapsed time and ETA, drawn on stderr."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # row names as they are
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", markup=False),  # stems and paths, as they are
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


#: Warnings with one ``key`` (e.g. a decoder complaint) shown before the rest are summarised.
SAME_WARNING_LIMIT = 3


def route_warnings() -> None:
    """Show the library's warnings as ``warning:`` lines; silence numpy's.

    occo's own warnings (:class:`OccoWarning`: a decoder's complaint about a file, ...) name
    their file; the same complaint about many files is shown for the first few only.
    numpy's RuntimeWarnings (NaN arithmetic that occo handles) mean nothing to a user.
    Called at the start of every command.
    """
    seen: dict[str, int] = {}
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if not issubclass(category, OccoWarning):
            return default(message, category, filename, lineno, file, line)
        key = str(getattr(message, "key", message))
        seen[key] = count = seen.get(key, 0) + 1
        if count <= SAME_WARNING_LIMIT:
            warn(str(message))
        if count == SAME_WARNING_LIMIT:
            warn(f"further files with the same report ({key}) are not listed")

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")
