"""``neurodecode plot``: a quick look at one recording store, written as an image file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

import typer

from ..schema import SchemaError
from . import app
from ._common import UserError, check_writable, fail


@app.command()
def plot(
    store: Annotated[Path, typer.Argument(help="A recording store (.zarr).")],
    out: Annotated[
        Path, typer.Option("--out", help="Image to write; the format follows the suffix (.png, "
                                         ".pdf, .svg, ...).")
    ],
    start: Annotated[float, typer.Option(help="Window start, seconds.")] = 0.0,
    duration: Annotated[float, typer.Option(help="Window length, seconds.")] = 10.0,
    channels: Annotated[
        str | None,
        typer.Option(help="Comma-separated channel names or types (default: all, at most 64)."),
    ] = None,
    dpi: Annotated[int, typer.Option(help="Resolution of raster images.")] = 100,
) -> None:
    """Plot a time window of a recording: traces with events, or the mean image and ROIs.

    OUT is written through a temporary file renamed into place, and its path is printed.
    """
    from matplotlib.figure import Figure

    from ..plotting import plot_recording

    if not (store / "zarr.json").is_file():
        raise UserError(f"{store}: no recording store there (a folder holding zarr.json)")
    check_writable(out, "--out", is_file=True)
    fmt = out.suffix.lower().lstrip(".")
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise UserError(f"--out {out}: unknown image format {out.suffix or '(no suffix)'!r}; "
                        f"use one of {', '.join('.' + f for f in sorted(formats))}")
    if dpi < 1:
        raise UserError(f"--dpi must be positive, got {dpi}")
    picks = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    try:
        fig = plot_recording(store, start=start, duration=duration, channels=picks)
    except SchemaError as err:
        raise fail(str(err), 1) from err
    except ValueError as err:  # an empty window or unknown channels
        raise UserError(str(err)) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{out.suffix}"
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(str(out))
