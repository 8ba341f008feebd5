"""Commands on recording stores: simulate, info, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..schema import SchemaError
from . import app
from ._common import UserError, check_writable, console, progress_bar


def _simulation_config(config: Path | None, **overrides):
    """The simulation settings of a command; a bad file or value is a user error."""
    import yaml
    from pydantic import ValidationError

    from ..config import SimulationConfig

    if config is not None and not config.is_file():
        raise UserError(f"--config {config}: no such file")
    try:
        if config is not None and not isinstance(yaml.safe_load(config.read_text()), dict | None):
            raise UserError(f"--config {config} must hold a mapping of settings")
        return SimulationConfig.load(config, **overrides)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or err
        raise UserError(f"--config {config} is not valid YAML ({problem})") from err
    except ValidationError as err:
        raise UserError(
            "invalid simulation settings: "
            + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                for e in err.errors()
            )
        ) from err


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Store root to write into.")],
    config: Annotated[Path | None, typer.Option(help="YAML simulation config.")] = None,
    subjects: Annotated[int | None, typer.Option(help="Number of subjects.")] = None,
    modality: Annotated[list[str] | None, typer.Option(help="Modality (repeatable).")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per run.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Simulate a multi-subject, multi-modality dataset with known ground truth into a store."""
    check_writable(out, "--out")
    cfg = _simulation_config(
        config, n_subjects=subjects, modalities=modality, duration=duration, seed=seed
    )
    from ..pipelines import StageError, run_stage
    from ..store import dataset_folder

    folder = out / dataset_folder(cfg.dataset)
    try:
        with console.status("simulating"):
            record = run_stage("simulate", cfg, {}, {"stores": folder}, skip_up_to_date=True)
    except StageError as err:
        raise UserError(str(err)) from None
    _print_write_table(record, folder)


def _short(path: Path) -> str:
    """The last parts of a store path (dataset/sub/ses/modality/file)."""
    return str(Path(*Path(path).parts[-5:]))


def _print_write_table(record: dict, folder: Path) -> None:
    """The recordings a ``simulate`` stage run wrote (or found up to date)."""
    up_to_date = record.get("up_to_date", False)
    table = Table(title="recordings (already up to date)" if up_to_date else "written recordings")
    for col in ("store", "status", "MB raw", "MB on disk", "s"):
        table.add_column(col, justify="left" if col in ("store", "status") else "right")
    for r in record["summary"]["recordings"]:
        table.add_row(
            _short(folder / r["store"]),
            "up-to-date" if up_to_date else r["status"],
            f"{r['nbytes'] / 1e6:.1f}",
            f"{r['nbytes_stored'] / 1e6:.1f}",
            "0" if up_to_date else f"{r['seconds']:.2f}",
        )
    console.print(table)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A recording store or a folder of stores.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe recordings: dims, sampling rate, events, splits, size on disk, provenance."""
    from ..store import find_recordings, store_summary

    paths = find_recordings(store)
    if not paths:
        raise UserError(f"no recording store at or below {store}")
    try:
        summaries = [store_summary(p) for p in paths]
    except (SchemaError, FileNotFoundError) as err:
        console.print(f"[red]{err}")
        raise typer.Exit(1) from err
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
    elif len(summaries) == 1:
        _print_one(summaries[0])
    else:
        console.print(summary_table(summaries))


def summary_table(summaries: list[dict]) -> Table:
    """Return a table with one row per recording summary (see ``store_summary``)."""
    table = Table(title=f"{len(summaries)} recordings")
    for col in (
        "recording",
        "modality",
        "channels",
        "sfreq Hz",
        "duration s",
        "events",
        "splits (s)",
        "MB on disk",
    ):
        table.add_column(col)
    for s in summaries:
        table.add_row(
            s["recording"],
            s["modality"],
            f"{s['n_channels']} {_types(s)}",
            f"{s['sfreq']:g}",
            f"{s['duration_s']:.1f}",
            str(sum(s["events"].values())),
            " ".join(f"{k}={v:g}" for k, v in s["splits"].items()),
            f"{s['nbytes_stored'] / 1e6:.2f}",
        )
    return table


def _types(s: dict) -> str:
    return "(" + ",".join(f"{k}:{v}" for k, v in s["ch_types"].items()) + ")"


def _print_one(s: dict) -> None:
    table = Table(show_header=False, title=s["path"])
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "recording": s["recording"],
        "modality": s["modality"],
        "dims": f"time={s['n_times']} channel={s['n_channels']} {_types(s)}",
        "sampling rate": f"{s['sfreq']:g} Hz ({s['duration_s']:.2f} s)",
        "events": ", ".join(f"{k}: {v}" for k, v in s["events"].items()) or "none",
        "splits": ", ".join(f"{k}: {v:g} s" for k, v in s["splits"].items()) or "none",
        "variables": ", ".join(s["variables"]),
        "chunks / shards": f"{s['chunks']} / {s['shards']}",
        "size": f"{s['nbytes'] / 1e6:.2f} MB in memory, {s['nbytes_stored'] / 1e6:.2f} MB on disk",
        "source": json.dumps(s["source"]),
        "history": "\n".join(
            h["step"] + " " + json.dumps(h.get("params", {})) for h in s["history"]
        )
        or "none",
    }
    for k, v in rows.items():
        table.add_row(k, v)
    console.print(table)


@app.command("validate")
def validate_cmd(
    store: Annotated[Path, typer.Argument(help="A recording store or a folder of stores.")],
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Check the schema and the files' metadata only; read no sample (no fingerprint "
            "verification, no NaN/Inf scan).",
        ),
    ] = False,
) -> None:
    """Check recordings: the schema, then every block against the stored fingerprint (which
    also scans for NaN/Inf); exit with status 1 if any fails.

    Each failure line names the store, the variable and the block (with its time range).
    """
    from ..store import find_recordings

    paths = find_recordings(store)
    if not paths:
        raise UserError(f"no recording store at or below {store}")
    failed = 0
    with progress_bar() as progress:
        task = progress.add_task("validating", total=len(paths))
        for path in paths:
            problems = _store_problems(path, fast)
            if problems:
                failed += 1
                for problem in problems:
                    progress.console.print(f"[red]FAIL[/red] {escape(f'{path}: {problem}')}")
            else:
                progress.console.print(f"[green]ok[/green]   {escape(str(path))}")
            progress.advance(task)
    console.print(f"{len(paths) - failed} valid, {failed} invalid")
    if failed:
        raise typer.Exit(1)


def _store_problems(path: Path, fast: bool) -> list[str]:
    """Every problem of one store: the schema (unless an array is missing, which would only
    repeat as missing coordinates), then the metadata (``fast``) or every block."""
    from ..schema import validate
    from ..store import check_store, open_recording, verify_recording

    if fast:
        reason = check_store(path)
        integrity = [reason] if reason else []
    else:
        integrity = verify_recording(path).problems
    problems: list[str] = []
    if not any(p.endswith("/ is missing") for p in integrity):
        try:
            validate(open_recording(path, check=False), where=str(path))
        except SchemaError as err:
            problems.extend(err.problems)
    return list(dict.fromkeys(problems + integrity))
