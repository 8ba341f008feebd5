"""The ``neurodecode`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .schema import SchemaError

app = typer.Typer(
    help="neurodecode: brain recordings in, decoded stimuli, behaviour and images out.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
if not console.is_terminal:  # logs and CI: wide enough that tables do not wrap
    console.width = 160


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _simulate_and_write(out: Path, cfg) -> list:
    from .simulate import simulate_dataset
    from .store import write_recording, write_stimuli

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
    from .store import recording_path

    results = []
    with _progress() as progress:
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
    from .config import SimulationConfig

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
    from .store import find_recordings, store_summary

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
    from .schema import validate
    from .store import find_recordings, open_recording

    paths = find_recordings(store)
    if not paths:
        console.print(f"[red]no recording store at or below {store}")
        raise typer.Exit(1)
    failed = 0
    with _progress() as progress:
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
    from .config import SimulationConfig
    from .store import find_recordings, store_summary

    cfg = SimulationConfig.load(config)
    console.rule("1. simulate and write")
    results = _simulate_and_write(out, cfg)
    _print_write_table(results)
    console.rule("2. validate")
    validate_cmd(out / cfg.dataset, data=True)
    console.rule("3. summary")
    console.print(summary_table([store_summary(p) for p in find_recordings(out / cfg.dataset)]))


catalog_app = typer.Typer(help="The data catalog (data_catalog/*.yaml).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("list")
def catalog_list(
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
) -> None:
    """List the datasets of the catalog and whether their files are present."""
    from .catalog import load_catalog

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

    from .catalog import load_catalog

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


def _parse_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} is not KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


@catalog_app.command("fetch")
def catalog_fetch(
    name: Annotated[str, typer.Argument(help="Catalog entry name.")],
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
) -> None:
    """Download an entry's remote files that are missing locally, checking their SHA-256."""
    from .catalog import fetch_entry, load_catalog

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


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="Catalog entry names, or files.")],
    out: Annotated[Path, typer.Option(help="Store root to write into.")],
    scheduler: Annotated[
        str, typer.Option(help="local (LocalCluster), threads, slurm, or a scheduler address.")
    ] = "local",
    workers: Annotated[int, typer.Option(help="Workers (processes or SLURM jobs).")] = 2,
    cluster_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML ClusterConfig (kind, n_workers, slurm: {queue, account, cores, "
            "memory, walltime, ...}); overrides --scheduler/--workers."
        ),
    ] = None,
    reader: Annotated[str | None, typer.Option(help="Reader for ad-hoc files.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Reader option KEY=VALUE for ad-hoc files (VALUE parsed as YAML; repeatable).",
        ),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name for ad-hoc files.")] = "adhoc",
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
    force: Annotated[bool, typer.Option(help="Rewrite up-to-date stores.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write per-file results as JSON.")] = None,
) -> None:
    """Ingest catalog datasets or files into stores, in parallel; failures are per file."""
    import yaml

    from .catalog import load_catalog
    from .ingest.runner import ClusterConfig, plan_entry, plan_files, results_table, run_ingest

    entries = load_catalog()
    try:
        if all(s in entries for s in sources):
            tasks = [t for s in sources for t in plan_entry(entries[s], out, data_root)]
        else:
            tasks = plan_files(
                sources, out, dataset=dataset, reader=reader, **_parse_options(option or [])
            )
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]{err}")
        raise typer.Exit(1) from err
    with _progress() as progress:
        bar = progress.add_task(f"ingesting {len(tasks)} file(s)", total=len(tasks))

        def done(res) -> None:
            colour = "red" if res.status == "failed" else "green"
            progress.console.print(f"[{colour}]{res.status:10}[/{colour}] {res.path}")
            progress.advance(bar)

        cluster = (
            ClusterConfig(**yaml.safe_load(cluster_config.read_text()))
            if cluster_config
            else ClusterConfig.from_scheduler(scheduler, workers)
        )
        results = run_ingest(
            tasks,
            cluster=cluster,
            force=force,
            on_result=done,
        )
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        console.print(f"[red]FAILED[/red] {r.error}")
    counts = {
        s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)
    }
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(results_table(results), indent=2))
    if failed:
        raise typer.Exit(1)
