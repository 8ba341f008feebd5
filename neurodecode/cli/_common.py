"""What every command of the ``neurodecode`` command line shares: the console, progress bars and
one-line user errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["UserError", "check_writable", "console", "fail", "progress_bar"]

console = Console()
if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
    console.width = 160
err_console = Console(stderr=True)
if not err_console.is_terminal:
    err_console.width = 160


class UserError(Exception):
    """A mistake of the user's (bad argument, missing file, unwritable folder).

    The command line prints its message as one line, without a traceback, and exits with
    status 2.
    """


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the ``typer.Exit`` to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def check_writable(path: Path, what: str, *, is_file: bool = False) -> None:
    """Refuse before any work starts when ``path`` (a folder, or a file's folder) cannot be
    written; nothing is created.

    Raises
    ------
    UserError
        Naming ``what`` (e.g. ``--out``) and the path.
    """
    target = Path(path).absolute()
    if is_file and target.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    if not is_file and target.exists() and not target.is_dir():
        raise UserError(f"{what} {path} exists and is not a folder")
    probe = target.parent if is_file else target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be written ({probe} is not writable)")
    try:  # permissions say yes to root: try for real (read-only mounts, /proc, quotas)
        fd, name = tempfile.mkstemp(prefix=".neurodecode-probe-", dir=probe)
    except OSError as err:
        raise UserError(f"{what} {path} cannot be written ({probe}: {err.strerror})") from err
    os.close(fd)
    os.unlink(name)


def progress_bar() -> Progress:
    """A rich progress bar on the shared console."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
