"""The data catalog commands: list, show, fetch (``--catalog DIR`` adds a lab's own folder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import app
from ._common import UserError, console, fail

if TYPE_CHECKING:
    from ..catalog import CatalogEntry

catalog_app = typer.Typer(help="The data catalog (data_catalog/*.yaml).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

CatalogDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--catalog",
        help="Another catalog folder of *.yaml entries (repeatable; added to the shipped "
        "data_catalog/ and the NEURODECODE_CATALOG setting).",
    ),
]
DataRoot = Annotated[Path | None, typer.Option(help="Data root (default: settings).")]


def _catalog(extra_dirs: list[Path] | None) -> dict[str, CatalogEntry]:
    """The catalog, or a one-line user error (invalid entry, duplicate name, missing folder)."""
    from ..catalog import load_catalog

    try:
        return load_catalog(extra_dirs)
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from err


def _entry(name: str, extra_dirs: list[Path] | None) -> CatalogEntry:
    from ..catalog import get_entry

    try:
        return get_entry(name, _catalog(extra_dirs))
    except ValueError as err:
        raise UserError(str(err)) from err


@catalog_app.command("list")
def catalog_list(data_root: DataRoot = None, catalog: CatalogDirs = None) -> None:
    """List the datasets of the catalog and whether their files are present."""
    from ..catalog import catalog_dir

    entries = _catalog(catalog)
    shipped = catalog_dir().resolve()
    folders = {name: e.source_file.parent.resolve() for name, e in entries.items()}
    labs = any(folder != shipped for folder in folders.values())
    table = Table(title="data catalog")
    for col in ("name", "modality", "reader", "files"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=70)
    if labs:  # a lab's own folders are in use: say where each entry comes from
        table.add_column("catalog", no_wrap=True)
    for name, entry in entries.items():
        n = len(entry.resolve_files(data_root)) if entry.root_path(data_root).is_dir() else 0
        row = [name, entry.modality, entry.reader, str(n) if n else "[red]absent"]
        row.append(escape(entry.description))
        if labs:
            row.append(escape(folders[name].name))
        table.add_row(*row)
    console.print(table)
    if labs:
        listed = ", ".join(str(f) for f in dict.fromkeys(folders.values()))
        console.print(f"catalog folders: {escape(listed)}", highlight=False, soft_wrap=True)


@catalog_app.command("show")
def catalog_show(
    name: Annotated[str, typer.Argument(help="Catalog entry name.")],
    data_root: DataRoot = None,
    catalog: CatalogDirs = None,
) -> None:
    """Show one entry and the files it resolves to, with their subject/session/task/run."""
    import yaml

    entry = _entry(name, catalog)
    console.print(f"# {entry.source_file}", highlight=False)
    console.print(
        yaml.safe_dump(entry.model_dump(exclude_defaults=True), sort_keys=False), highlight=False
    )
    root = entry.root_path(data_root)
    table = Table(title=f"files under {root}")
    for col in ("file", "subject", "session", "task", "run"):
        table.add_column(col)
    for f in entry.resolve_files(data_root) if root.is_dir() else []:
        e = f["entities"]
        table.add_row(
            str(f["path"].relative_to(root)),
            *(e.get(k, "") for k in ("subject", "session", "task", "run")),
        )
    console.print(table)


@catalog_app.command("fetch")
def catalog_fetch(
    name: Annotated[str, typer.Argument(help="Catalog entry name.")],
    data_root: DataRoot = None,
    catalog: CatalogDirs = None,
) -> None:
    """Download an entry's remote files that are missing locally, checking their SHA-256."""
    from ..catalog import fetch_entry

    entry = _entry(name, catalog)
    if not entry.remote:
        console.print(
            f"{name}: no remote files listed; place the files under {entry.root_path(data_root)}"
        )
        return
    try:
        paths = fetch_entry(entry, data_root)
    except (ValueError, OSError) as err:  # a mismatching SHA-256, no network: failed work
        raise fail(f"{name}: fetch failed: {' '.join(str(err).split())}", code=1) from err
    for path in paths:
        console.print(f"[green]ok[/green] {path}")
