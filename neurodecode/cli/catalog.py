"""The data catalog commands: list, show, fetch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import app
from ._common import console

catalog_app = typer.Typer(help="The data catalog (data_catalog/*.yaml).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("list")
def catalog_list(
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
) -> None:
    """List the datasets of the catalog and whether their files are present."""
    from ..catalog import load_catalog

    table = Table(title="data catalog")
    for col in ("name", "modality", "reader", "files"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=70)
    for name, entry in load_catalog().items():
        n = len(entry.resolve_files(data_root)) if entry.root_path(data_root).is_dir() else 0
        table.add_row(
            name,
            entry.modality,
            entry.reader,
            str(n) if n else "[red]absent",
            entry.description,
        )
    console.print(table)


@catalog_app.command("show")
def catalog_show(
    name: Annotated[str, typer.Argument(help="Catalog entry name.")],
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
) -> None:
    """Show one entry and the files it resolves to, with their subject/session/task/run."""
    import yaml

    from ..catalog import load_catalog

    entries = load_catalog()
    if name not in entries:
        console.print(f"[red]no catalog entry {name!r}; known: {', '.join(sorted(entries))}")
        raise typer.Exit(1)
    entry = entries[name]
    console.print(yaml.safe_dump(entry.model_dump(exclude_defaults=True), sort_keys=False))
    table = Table(title=f"files under {entry.root_path(data_root)}")
    for col in ("file", "subject", "session", "task", "run"):
        table.add_column(col)
    for f in entry.resolve_files(data_root) if entry.root_path(data_root).is_dir() else []:
        e = f["entities"]
        table.add_row(
            str(f["path"].relative_to(entry.root_path(data_root))),
            *(e.get(k, "") for k in ("subject", "session", "task", "run")),
        )
    console.print(table)


@catalog_app.command("fetch")
def catalog_fetch(
    name: Annotated[str, typer.Argument(help="Catalog entry name.")],
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
) -> None:
    """Download an entry's remote files that are missing locally, checking their SHA-256."""
    from ..catalog import fetch_entry, load_catalog

    entries = load_catalog()
    if name not in entries:
        console.print(f"[red]no catalog entry {name!r}")
        raise typer.Exit(1)
    if not entries[name].remote:
        console.print(
            f"{name}: no remote files listed; place the files under "
            f"{entries[name].root_path(data_root)}"
        )
        return
    for path in fetch_entry(entries[name], data_root):
        console.print(f"[green]ok[/green] {path}")
