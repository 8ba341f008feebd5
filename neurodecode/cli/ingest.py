"""``neurodecode ingest`` and ``neurodecode repair``: files, folders and catalog datasets into
recording stores, in parallel, never overwriting silently."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..ingest.readers import READERS
from . import app
from ._common import UserError, check_writable, console, progress_bar

_INGEST_HELP = "\n\n".join(
    [
        "Ingest catalog datasets, files or folders into stores, in parallel; failures are per "
        "file.",
        "A source is a catalog entry name, a file, a BIDS root (filtered with --subject, --task, "
        "--datatype) or a suite2p output folder. Every store path is resolved before anything "
        "is written: two sources that map to one store are refused, and a store that holds "
        "another source file's recording is replaced only with --force. A store is skipped only "
        "when it is complete and has the fingerprint recorded at its last ingest (--verify "
        "checks every block); otherwise it is re-ingested and the line says why.",
        f"Readers: {', '.join(sorted(READERS))}. Their options (for -o KEY=VALUE and --options "
        "FILE.yaml): neurodecode readers.",
    ]
)


#: Where the work runs, shared by ``ingest`` and ``repair``.
Scheduler = Annotated[
    str, typer.Option(help="local (LocalCluster), threads, slurm, or a scheduler address.")
]
Workers = Annotated[int, typer.Option(help="Workers (processes or SLURM jobs).")]

_ENTITY_KEYS = ("subject", "session", "task", "run")


def _parse_options(items: list[str]) -> dict[str, Any]:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"-o {item!r} is not KEY=VALUE")
        if key in _ENTITY_KEYS:  # labels stay text: -o run=01 is "01", not 1
            options[key] = value
            continue
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UserError(f"-o {item!r}: the value is not valid YAML ({err.problem})") from err
    return options


def _cluster(scheduler: str, workers: int, cluster_config: Path | None):
    """The ClusterConfig of the command line; a bad value is a one-line user error."""
    import yaml
    from pydantic import ValidationError

    from ..ingest.runner import ClusterConfig

    try:
        if cluster_config is None:
            return ClusterConfig.from_scheduler(scheduler, workers)
        if not cluster_config.is_file():
            raise UserError(f"--cluster-config {cluster_config}: no such file")
        data = yaml.safe_load(cluster_config.read_text())
        if not isinstance(data, dict):
            raise UserError(
                f"--cluster-config {cluster_config}: expected a mapping (kind, n_workers, ...)"
            )
        return ClusterConfig(**data)
    except yaml.YAMLError as err:
        raise UserError(f"--cluster-config {cluster_config}: not valid YAML ({err})") from err
    except ValidationError as err:
        where = f"--cluster-config {cluster_config}" if cluster_config else "--workers"
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors()
        )
        raise UserError(f"{where}: {problems}") from err
    except ValueError as err:
        raise UserError(str(err)) from err


def _relative(store: str | None, out: Path) -> str:
    return "" if store is None else os.path.relpath(store, out)


def _print_result(console_, res, out: Path) -> None:
    colour = "red" if res.status == "failed" else "green"
    line = f"[{colour}]{res.status:10}[/{colour}] {escape(res.path)}"
    if res.store and res.status != "failed":
        line += f" -> {escape(_relative(res.store, out))}"
    if res.note:
        line += f" [yellow]({escape(res.note)})[/yellow]"
    console_.print(line, highlight=False, soft_wrap=True)


def _summary(results) -> str:
    counts = {
        s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)
    }
    return ", ".join(f"{n} {s}" for s, n in counts.items())


@app.command(help=_INGEST_HELP)
def ingest(
    sources: Annotated[
        list[str], typer.Argument(help="Catalog entry names, files, BIDS roots, suite2p folders.")
    ],
    out: Annotated[Path, typer.Option(help="Store root to write into.")],
    scheduler: Scheduler = "local",
    workers: Workers = 2,
    cluster_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML ClusterConfig (kind, n_workers, slurm: {queue, account, cores, "
            "memory, walltime, ...}); overrides --scheduler/--workers."
        ),
    ] = None,
    reader: Annotated[
        str | None, typer.Option(help="Reader for files and folders (default: by extension).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Reader option KEY=VALUE (VALUE parsed as YAML; repeatable), for every file; "
            "with catalog entries it applies on top of the entry's options.",
        ),
    ] = None,
    options_file: Annotated[
        Path | None,
        typer.Option(
            "--options", help="YAML mapping file globs to reader options (per file; -o on top)."
        ),
    ] = None,
    catalog: Annotated[
        list[Path] | None,
        typer.Option(help="A lab's catalog folder of *.yaml entries (repeatable)."),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name for files and folders.")] = "adhoc",
    data_root: Annotated[Path | None, typer.Option(help="Data root (default: settings).")] = None,
    subject: Annotated[str | None, typer.Option(help="BIDS root: only this subject.")] = None,
    task: Annotated[str | None, typer.Option(help="BIDS root: only this task.")] = None,
    datatype: Annotated[
        str | None, typer.Option(help="BIDS root: only eeg, meg, ieeg or func.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Rewrite every store, and replace stores of other source files."),
    ] = False,
    verify: Annotated[
        bool, typer.Option(help="Verify every block of existing stores before skipping them.")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write per-file results as JSON.")] = None,
) -> None:
    from ..catalog import load_catalog
    from ..ingest.runner import SchedulerError, StoreCollisionError, results_table, run_ingest
    from ..pipelines.ingest import IngestConfig, plan_ingest

    check_writable(out, "--out")
    if report:
        check_writable(report, "--report", is_file=True)
    cluster = _cluster(scheduler, workers, cluster_config)
    options = _parse_options(option or [])
    try:
        entries = load_catalog(extra_dirs=catalog or None)
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from err
    folders = [s for s in sources if s not in entries and Path(s).is_dir()]
    selection = {"subject": subject, "task": task, "datatype": datatype}
    if any(selection.values()) and not folders:
        given = ", ".join(f"--{k}" for k, v in selection.items() if v)
        raise UserError(f"{given} select recordings of a folder source, and no source is a folder")
    config = IngestConfig(
        dataset=dataset,
        reader=reader,
        reader_options=options,
        options_file=options_file,
        catalog=catalog or [],
        data_root=data_root,
        subjects=[subject] if subject else None,
        task=task,
        datatype=datatype,
    )
    try:
        tasks = plan_ingest(config, out, sources)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    with progress_bar() as progress:
        bar = progress.add_task(f"ingesting {len(tasks)} file(s)", total=len(tasks))

        def done(res) -> None:
            _print_result(progress.console, res, out)
            progress.advance(bar)

        try:
            results = run_ingest(tasks, cluster=cluster, force=force, verify=verify, on_result=done)
        except (StoreCollisionError, SchedulerError) as err:
            raise UserError(str(err)) from err
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        console.print(f"[red]FAILED[/red] {escape(r.error or '')}", highlight=False, soft_wrap=True)
    console.print(_summary(results), highlight=False)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(results_table(results), indent=2))
    if failed:
        raise typer.Exit(1)


@app.command()
def repair(
    root: Annotated[Path, typer.Argument(help="A store root (or any folder of stores).")],
    scheduler: Scheduler = "local",
    workers: Workers = 2,
    cluster_config: Annotated[
        Path | None, typer.Option(help="YAML ClusterConfig; overrides --scheduler/--workers.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write per-store results as JSON.")] = None,
) -> None:
    """Verify every store below ROOT against its fingerprint and re-ingest each that fails.

    A damaged store is re-ingested from its skip record (``<root>/<dataset>/.ingest/``), in
    place. Stores that cannot be repaired (no record, source file gone or changed) are listed
    with the reason, and the exit status is 1.
    """
    from ..ingest.runner import SchedulerError, results_table
    from ..ingest.runner import repair as repair_stores

    if not root.exists():
        raise UserError(f"{root}: no such store or folder")
    check_writable(root, "STORE_ROOT")
    if report:
        check_writable(report, "--report", is_file=True)
    cluster = _cluster(scheduler, workers, cluster_config)

    def done(res) -> None:
        colour = {"ok": "green", "repaired": "yellow", "broken": "red"}[res.status]
        line = f"[{colour}]{res.status:9}[/{colour}] {escape(_relative(res.store, root))}"
        if res.problems:
            line += f" ({escape('; '.join(res.problems))})"
        if res.error:
            line += f": [red]{escape(res.error)}[/red]"
        console.print(line, highlight=False, soft_wrap=True)

    try:
        results = repair_stores(root, cluster=cluster, on_result=done)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err
    except SchedulerError as err:
        raise UserError(str(err)) from err
    console.print(_summary(results), highlight=False)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(results_table(results), indent=2))
    if any(r.status == "broken" for r in results):
        raise typer.Exit(1)
