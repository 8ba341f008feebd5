"""Commands on recording stores: simulate, info, validate, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..schema import SchemaError
from . import app
from ._common import console, progress_bar


def _simulate_and_write(out: Path, cfg) -> list:
    from ..simulate import simulate_dataset
    from ..store import write_recording, write_stimuli

    with console.status("simulating"):
        sim = simulate_dataset(
            n_subjects=cfg.n_subjects,
            modalities=tuple(cfg.modalities),
            duration=cfg.duration,
            n_runs=cfg.n_runs,
            n_classes=cfg.n_classes,
            n_images=cfg.n_images,
            seed=cfg.seed,
        )
    from ..store import recording_path

    results = []
    with progress_bar() as progress:
        task = progress.add_task("writing recordings", total=len(sim.recordings))
        for ds in sim.recordings:
            results.append(write_recording(ds, recording_path(out, cfg.dataset, ds)))
            progress.advance(task)
    if sim.images is not None:
        write_stimuli(
            out / cfg.dataset / "stimuli.zarr", sim.images, sim.image_classes, sim.image_params
        )
    return results


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
    from ..config import SimulationConfig

    cfg = SimulationConfig.load(
        config, n_subjects=subjects, modalities=modality, duration=duration, seed=seed
    )
    results = _simulate_and_write(out, cfg)
    _print_write_table(results)


def _short(path: Path) -> str:
    """The last parts of a store path (dataset/sub/ses/modality/file)."""
    return str(Path(*Path(path).parts[-5:]))


def _print_write_table(results: list) -> None:
    table = Table(title="written recordings")
    for col in ("store", "status", "MB raw", "MB on disk", "s"):
        table.add_column(col, justify="left" if col in ("store", "status") else "right")
    for r in results:
        table.add_row(
            _short(r.path),
            r.status,
            f"{r.nbytes / 1e6:.1f}",
            f"{r.nbytes_stored / 1e6:.1f}",
            f"{r.seconds:.2f}",
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
        console.print(f"[red]no recording store at or below {store}")
        raise typer.Exit(1)
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
    data: Annotated[bool, typer.Option(help="Also scan every sample for NaN/Inf.")] = True,
) -> None:
    """Check recordings against the schema; exit with status 1 if any fails."""
    from ..schema import validate
    from ..store import find_recordings, open_recording

    paths = find_recordings(store)
    if not paths:
        console.print(f"[red]no recording store at or below {store}")
        raise typer.Exit(1)
    failed = 0
    with progress_bar() as progress:
        task = progress.add_task("validating", total=len(paths))
        for path in paths:
            try:
                validate(open_recording(path, check=False), check_data=data, where=str(path))
            except (SchemaError, FileNotFoundError) as err:
                failed += 1
                progress.console.print(f"[red]FAIL[/red] {err}")
            except Exception as err:  # unreadable chunks: codec or I/O errors from zarr
                failed += 1
                progress.console.print(
                    f"[red]FAIL[/red] {path}: samples cannot be read: {type(err).__name__}: {err}"
                )
            else:
                progress.console.print(f"[green]ok[/green]   {path}")
            progress.advance(task)
    console.print(f"{len(paths) - failed} valid, {failed} invalid")
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/demo"),
    config: Annotated[Path | None, typer.Option(help="YAML simulation config.")] = None,
) -> None:
    """Run the main job end to end on built-in simulated data.

    Simulate several subjects in every modality, write them to stores, validate them and print
    a summary table.
    """
    from ..config import SimulationConfig
    from ..store import find_recordings, store_summary

    cfg = SimulationConfig.load(config)
    console.rule("1. simulate and write")
    results = _simulate_and_write(out, cfg)
    _print_write_table(results)
    console.rule("2. validate")
    validate_cmd(out / cfg.dataset, data=True)
    console.rule("3. summary")
    console.print(summary_table([store_summary(p) for p in find_recordings(out / cfg.dataset)]))
