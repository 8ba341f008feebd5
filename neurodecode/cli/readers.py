"""``neurodecode readers [NAME]``: the readers, and each one's options with types and defaults.

Everything shown comes from the readers' signatures and docstrings
(:mod:`neurodecode.ingest.readers`), so it cannot drift from the code.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import app
from ._common import UserError, console


def _plain(text: str) -> str:
    """Docstring text for the terminal: ``code`` and :role:`target` shown bare, markup escaped."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return escape(text.replace("``", ""))


def _type_text(tp: object) -> str:
    import typing

    text = repr(tp) if typing.get_origin(tp) is not None else getattr(tp, "__name__", repr(tp))
    return text.replace("typing.", "").replace("collections.abc.", "")


@app.command("readers")
def readers(
    name: Annotated[
        str | None, typer.Argument(help="A reader: list its options (default: list the readers).")
    ] = None,
) -> None:
    """List the readers, or one reader's options (type, default, meaning) for -o and catalogs."""
    from ..ingest.readers import (
        READERS,
        UnknownReaderError,
        reader_extensions,
        reader_option_types,
        reader_options,
        reader_summary,
    )

    if name is None:
        table = Table(title="readers (neurodecode readers NAME lists a reader's options)")
        table.add_column("reader", no_wrap=True)
        table.add_column("picked for")
        table.add_column("reads")
        for reader in READERS:
            exts = reader_extensions(reader)
            table.add_row(
                reader,
                escape(" ".join(exts)) if exts else "[dim]--reader only",
                _plain(reader_summary(reader)),
            )
        console.print(table)
        return
    try:
        options = reader_options(name)
        types = reader_option_types(name)
        summary = reader_summary(name)
    except UnknownReaderError as err:
        raise UserError(str(err)) from err
    exts = reader_extensions(name)
    console.print(
        f"[bold]{escape(name)}[/bold] ({escape(READERS.get(name, name))}): {_plain(summary)}",
        highlight=False,
    )
    console.print(
        f"picked for: {escape(' '.join(exts))}" if exts else "picked for: none (--reader NAME)",
        highlight=False,
    )
    table = Table(
        title=f"options of {escape(name)} (-o KEY=VALUE, --options FILE, catalog reader_options)"
    )
    table.add_column("option", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("meaning")
    for opt in options:
        default = "[bold]required" if opt.required else escape(repr(opt.default))
        written = opt.annotation
        if written.isidentifier() and written not in ("str", "int", "float", "bool", "Any"):
            written = _type_text(types[opt.name])  # an alias of the reader's module: spell it out
        table.add_row(opt.name, escape(written), default, _plain(opt.doc))
    console.print(table, highlight=False)
