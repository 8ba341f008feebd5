"""``neurodecode ingest``: catalog datasets or files into stores, in parallel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from ._common import console, progress_bar


def _parse_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} is not KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


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

    from ..catalog import load_catalog
    from ..ingest.runner import ClusterConfig, plan_entry, plan_files, results_table, run_ingest

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
    with progress_bar() as progress:
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
