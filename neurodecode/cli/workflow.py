"""``neurodecode run-stage`` (one stage alone) and ``neurodecode workflow`` (run, export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from . import app
from ._common import UserError, console, progress_bar
from .ingest import Scheduler

workflow_app = typer.Typer(
    help="Run workflows (workflows/*.yaml): every stage over many subjects, skipping what is "
    "up to date, on a laptop, a Dask cluster or SLURM.",
    no_args_is_help=True,
)
app.add_typer(workflow_app, name="workflow")


def _pairs(items: list[str] | None, what: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items or []:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise UserError(f"{what} {item!r} is not ROLE=PATH")
        out.setdefault(role, []).append(path)
    return out


def _load_config(path: Path | None) -> dict[str, Any]:
    import yaml

    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML or JSON ({err})") from err
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must hold a mapping of parameters")
    return data


@app.command("run-stage")
def run_stage_cmd(
    name: Annotated[str, typer.Argument(help="The stage (simulate, ingest, decode, embed, ...).")],
    config: Annotated[
        Path | None, typer.Option(help="YAML or JSON file of the stage's parameters.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE on top of --config (VALUE as YAML)."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--inputs", "-i", help="ROLE=PATH (repeatable; a role may repeat)."),
    ] = None,
    outputs: Annotated[
        list[str] | None, typer.Option("--outputs", "-o", help="ROLE=PATH (repeatable).")
    ] = None,
    skip_up_to_date: Annotated[
        bool, typer.Option(help="Do nothing when the outputs' records match this job.")
    ] = False,
    module: Annotated[
        list[str] | None,
        typer.Option(help="Import this module (or .py file) of a lab's own stages first."),
    ] = None,
) -> None:
    """Run one stage alone: outputs written atomically, each with a provenance record."""
    import yaml

    from ..pipelines import StageError, run_stage
    from ..workflow.spec import import_stage_module

    for extra in module or []:
        try:
            import_stage_module(extra)
        except (ImportError, OSError) as err:
            raise UserError(f"--module {extra}: cannot import it ({err})") from None

    values = _load_config(config)
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param {item!r} is not KEY=VALUE")
        values[key] = yaml.safe_load(value)
    outs = {role: paths[-1] for role, paths in _pairs(outputs, "--outputs").items()}
    try:
        record = run_stage(
            name, values, _pairs(inputs, "--inputs"), outs, skip_up_to_date=skip_up_to_date
        )
    except StageError as err:
        raise UserError(str(err)) from None
    if record.get("committed") is False:
        console.print(f"{name}: rank {record['rank']} done (rank 0 writes the outputs)")
        return
    state = "up to date" if record.get("up_to_date") else f"done in {record['seconds']:.1f} s"
    console.print(f"{name}: {state}", highlight=False)
    for role, out in record["outputs"].items():
        console.print(f"  {role}: {escape(out['path'])}", highlight=False)


def _load(file: Path, workdir: Path | None):
    from ..workflow import WorkflowError, load_workflow

    try:
        return load_workflow(file, workdir=workdir)
    except WorkflowError as err:
        raise UserError(str(err)) from None


_Force = Annotated[
    list[str] | None,
    typer.Option("--force", help="Run this step (stage, job id) and what follows even if up to "
                 "date (repeatable)."),
]  # fmt: skip
_Until = Annotated[
    list[str] | None,
    typer.Option("--until", help="Run only this step (stage, job id) and what it needs "
                 "(repeatable)."),
]  # fmt: skip
_Workdir = Annotated[
    Path | None, typer.Option(help="Folder of the workflow's outputs (default: its workdir).")
]


def _print_plan(workflow, decisions, dry_run: bool) -> None:
    run = [d for d in decisions if d.run]
    for note in workflow.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    verb = "would run" if dry_run else "to run"
    console.print(
        f"workflow [bold]{escape(workflow.name)}[/bold]: {len(decisions)} jobs, "
        f"{len(run)} {verb}, {len(decisions) - len(run)} up to date",
        highlight=False,
    )
    if dry_run:
        for d in run:
            console.print(f"  [bold]{escape(d.job.id)}[/bold]", highlight=False)
            for reason in d.reasons:
                console.print(f"      {escape(reason)}", highlight=False, soft_wrap=True)


def _where(scheduler: str, cluster_config: Path | None):
    """Where ``--scheduler`` / ``--cluster-config`` run the jobs: None (local), an address, a
    cluster config."""
    from ..workflow.slurm import ClusterConfigError, SlurmConfig, load_cluster_config

    try:
        if cluster_config is not None:
            return load_cluster_config(cluster_config)
        if scheduler == "slurm":
            return SlurmConfig.load()
    except ClusterConfigError as err:
        raise UserError(str(err)) from None
    from ..ingest.runner import ClusterConfig

    try:  # the same --scheduler values as `neurodecode ingest`
        parsed = ClusterConfig.from_scheduler(scheduler)
    except ValueError as err:
        raise UserError(str(err)) from None
    return parsed.address if parsed.kind == "address" else None


@workflow_app.command("run")
def run_cmd(
    file: Annotated[Path, typer.Argument(help="A workflow file (workflows/*.yaml).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print each job that would run and why.")
    ] = False,
    force: _Force = None,
    until: _Until = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Jobs at once (local cluster workers).")
    ] = None,
    scheduler: Scheduler = "local",
    cluster_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML cluster config (workflows/cluster/*.yaml: executor local or slurm)."
        ),
    ] = None,
    workdir: _Workdir = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan or the results as JSON.")
    ] = False,
) -> None:
    """Run a workflow: each job that is not up to date, in parallel on Dask."""
    from ..pipelines.fingerprints import FingerprintCache
    from ..workflow import WorkflowError, plan, run_workflow
    from ..workflow.engine import state_dir

    if jobs is not None and jobs < 1:
        raise UserError("--jobs must be at least 1")
    workflow = _load(file, workdir)
    cluster = _where(scheduler, cluster_config)
    cache = FingerprintCache(state_dir(workflow) / "fingerprints.json")
    try:
        decisions = plan(workflow, force=force or (), until=until or (), cache=cache)
    except WorkflowError as err:
        raise UserError(str(err)) from None
    if dry_run:
        cache.save()
        if as_json:
            typer.echo(json.dumps([
                {"job": d.job.id, "step": d.job.step, "run": d.run, "reasons": d.reasons}
                for d in decisions
            ], indent=2))  # fmt: skip
            return
        _print_plan(workflow, decisions, dry_run=True)
        return
    if not as_json:
        _print_plan(workflow, decisions, dry_run=False)
    n_run = sum(d.run for d in decisions)
    with progress_bar() as progress:
        bar = progress.add_task("jobs", total=n_run or None)

        def done(res) -> None:
            if res.status == "up-to-date":
                return
            colour = {"done": "green", "unchanged": "green", "failed": "red"}.get(
                res.status, "yellow"
            )
            line = f"[{colour}]{res.status:10}[/{colour}] {escape(res.job)}"
            if res.status in ("done", "unchanged"):
                line += f"  {res.seconds:.1f} s"
            if res.error:
                line += f"  [red]{escape(res.error.splitlines()[0])}[/red]"
            progress.console.print(line, highlight=False, soft_wrap=True)
            progress.advance(bar)

        try:
            results = run_workflow(
                workflow, decisions=decisions, cluster=cluster, jobs=jobs, on_result=done
            )
        except WorkflowError as err:
            raise UserError(str(err)) from None
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps([asdict(r) for r in results], indent=2))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    for r in results:
        if r.status == "failed" and r.error and "\n" in r.error:
            console.print(f"[red]{escape(r.job)}[/red]\n{escape(r.error)}", highlight=False)
    for job in workflow.jobs:
        ok = ("done", "unchanged", "up-to-date")
        if job.stage == "report" and any(r.job == job.id and r.status in ok for r in results):
            for path in job.outputs.values():
                console.print(f"report: [bold]{escape(path)}[/bold]", highlight=False)
    if any(r.status in ("failed", "not run") for r in results):
        raise typer.Exit(1)


@workflow_app.command("export-snakemake")
def export_snakemake_cmd(
    file: Annotated[Path, typer.Argument(help="A workflow file (workflows/*.yaml).")],
    out: Annotated[Path, typer.Option(help="The Snakefile to write.")] = Path("Snakefile"),
    workdir: _Workdir = None,
) -> None:
    """Write the workflow's jobs as Snakemake rules that call ``neurodecode run-stage``."""
    from ..workflow.snakemake import export_snakemake

    workflow = _load(file, workdir)
    path = export_snakemake(workflow, out)
    console.print(f"wrote {escape(str(path))} ({len(workflow.jobs)} jobs)", highlight=False)
