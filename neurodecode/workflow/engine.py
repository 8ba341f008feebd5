"""Run a workflow's jobs on Dask: skip what is up to date, say why the rest runs.

Planning (:func:`plan`) decides, job by job in dependency order, whether the job runs and why:
its outputs or their provenance records are missing (``new``), the stage's code changed, a
config key changed (which one, old → new), an input file changed, appeared or disappeared
(which one), a job it depends on runs, or it was forced. A job is up to date exactly when the
hash of its stage code version, config, input fingerprints and output paths equals the hash in
its outputs' provenance records (:func:`neurodecode.pipelines.run_stage`).

Execution (:func:`run_workflow`) submits every job that runs as a ``dask.distributed`` future
whose arguments are the futures of the jobs it depends on — Dask does the scheduling, the
parallelism and the waiting. Each job asks for its resources (``cpus``, ``memory``, ``gpus``)
as Dask worker resources. On the worker, :func:`run_stage` checks the hash again once the
inputs exist: a job whose upstream rerun wrote identical outputs is skipped then. A job that
fails leaves its previous outputs and records as they were (its temporary outputs are
removed); the jobs that depend on it do not run; every other job runs, so a rerun resumes
where the failure was.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..pipelines import code_version, job_hash, read_provenance
from ..pipelines.fingerprints import FingerprintCache
from .spec import Job, Workflow, WorkflowError

__all__ = ["Decision", "JobResult", "plan", "run_workflow", "state_dir"]


def state_dir(workflow: Workflow) -> Path:
    """The workflow's own folder in its workdir (fingerprint cache, run logs)."""
    return workflow.workdir / ".neurodecode"


@dataclass
class Decision:
    """Whether a job runs, and why.

    Attributes
    ----------
    job : Job
    run : bool
    reasons : list of str
        Empty when the job is up to date.
    hash : str or None
        The job's hash from the inputs as they are now (None while an input is not written).
    """

    job: Job
    run: bool
    reasons: list[str] = field(default_factory=list)
    hash: str | None = None


@dataclass
class JobResult:
    """What happened to one job in a run.

    ``status`` is ``done``, ``up-to-date`` (nothing to do), ``unchanged`` (ran the check on the
    worker and found its inputs identical after an upstream rerun), ``failed``, ``not run``
    (a job it depends on failed) or ``excluded`` (``--until``).
    """

    job: str
    step: str
    status: str
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    error: str | None = None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def _config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(
                f"config changed: {key}: {a.get(key, '<absent>')!r} → {b.get(key, '<absent>')!r}"
            )
    return out


def _why(
    workflow: Workflow,
    job: Job,
    record: Mapping[str, Any] | None,
    digests: Mapping[str, list[list[str]]],
    missing_outputs: list[str],
) -> list[str]:
    rel = workflow.relative
    if record is None:
        return ["new: no finished run of this job (no provenance record)"]
    reasons = [f"output missing: {rel(p)}" for p in missing_outputs]
    code = code_version(job.stage)
    if record.get("code_version") != code:
        reasons.append(f"code changed: stage {job.stage} {record.get('code_version')} → {code}")
    reasons += _config_changes(record.get("config", {}), job.config)
    old_inputs = record.get("inputs", {})
    for role in sorted(set(old_inputs) | set(digests)):
        old = {i["path"]: i["fingerprint"] for i in old_inputs.get(role, [])}
        new = {p: d for p, d in digests.get(role, [])}
        for p in sorted(set(old) | set(new)):
            if p not in old:
                reasons.append(f"input added: {rel(p)}")
            elif p not in new:
                reasons.append(f"input removed: {rel(p)}")
            elif new[p] is not None and new[p] != old[p]:
                reasons.append(f"input changed: {rel(p)}")
    old_outputs = {r: o["path"] for r, o in record.get("outputs", {}).items()}
    if old_outputs != job.outputs and not missing_outputs:
        reasons.append("outputs renamed")
    return reasons


def plan(
    workflow: Workflow,
    *,
    force: Sequence[str] = (),
    until: Sequence[str] = (),
    cache: FingerprintCache | None = None,
) -> list[Decision]:
    """Decide which jobs run, and why.

    Parameters
    ----------
    workflow : Workflow
    force : sequence of str
        Steps, stages or job ids to run even if up to date (and therefore everything
        downstream of them).
    until : sequence of str
        Run only these steps (stages, job ids) and what they depend on.
    cache : FingerprintCache, optional

    Returns
    -------
    list of Decision
        In dependency order; jobs left out by ``until`` are not listed.
    """
    cache = cache if cache is not None else FingerprintCache()
    forced = set(workflow.select(force)) if force else set()
    wanted = workflow.upstream(workflow.select(until)) if until else None
    decisions: list[Decision] = []
    running: dict[str, bool] = {}
    from .spec import _owner

    producer = {p: j.id for j in workflow.jobs for p in j.outputs.values()}
    for job in workflow.jobs:
        if wanted is not None and job.id not in wanted:
            continue
        digests: dict[str, list[list[str]]] = {}
        unwritten = []
        for role, paths in job.inputs.items():
            digests[role] = []
            for p in paths:
                if os.path.exists(p):
                    digests[role].append([p, cache(p)])
                else:
                    digests[role].append([p, None])
                    unwritten.append(p)
        digest = None if unwritten else job_hash(job.stage, job.config, digests, job.outputs)
        records = [read_provenance(p) for p in job.outputs.values()]
        missing = [p for p in job.outputs.values() if not os.path.exists(p)]
        up_to_date = (
            digest is not None
            and not missing
            and all(r is not None and r.get("hash") == digest for r in records)
        )
        reasons: list[str] = []
        if job.id in forced:
            reasons.append("forced (--force)")
        upstream = [d for d in job.depends if running.get(d)]
        if upstream:
            reasons.append(f"runs after {', '.join(upstream)}, which run(s)")
        if not up_to_date:
            first = next((r for r in records if r is not None), None)
            found = _why(workflow, job, first, digests, missing)
            for p in unwritten:
                found.append(
                    f"input not written yet: {workflow.relative(p)} (job {_owner(p, producer)})"
                )
            reasons += [r for r in found if r not in reasons] or ["hash changed"]
        run = bool(reasons)
        running[job.id] = run
        decisions.append(Decision(job, run, reasons, digest))
    return decisions


def _execute(spec: dict[str, Any], *upstream: Any) -> dict[str, Any]:
    """Run one job on a worker (its upstream results are passed only to order it)."""
    import matplotlib

    matplotlib.use("Agg")
    from threadpoolctl import threadpool_limits

    from ..pipelines import run_stage
    from .spec import import_stage_module

    for module in spec["modules"]:
        import_stage_module(module)
    t0 = time.perf_counter()
    cpus = int(spec["cpus"])
    try:
        import torch

        torch.set_num_threads(cpus)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    with threadpool_limits(cpus):
        record = run_stage(
            spec["stage"],
            spec["config"],
            spec["inputs"],
            spec["outputs"],
            job=spec["id"],
            expected_hash=spec["hash"],
            skip_up_to_date=not spec["forced"],
        )
    return {
        "job": spec["id"],
        "status": "unchanged" if record.get("up_to_date") else "done",
        "seconds": time.perf_counter() - t0,
    }


def _spec(decision: Decision, modules: Sequence[str]) -> dict[str, Any]:
    job = decision.job
    return {
        "modules": list(modules),
        "id": job.id,
        "stage": job.stage,
        "config": job.config,
        "inputs": job.inputs,
        "outputs": job.outputs,
        "hash": decision.hash,
        "cpus": job.resources.cpus,
        "forced": "forced (--force)" in decision.reasons,
    }


def _resources(job: Job) -> dict[str, float]:
    out = {"cpus": float(job.resources.cpus), "memory": float(job.resources.memory_bytes)}
    if job.resources.gpus:
        out["gpus"] = float(job.resources.gpus)
    return out


def _check_fits(decisions: Sequence[Decision], capacity: Mapping[str, float], where: str) -> None:
    """Refuse, before anything runs, a job no worker can take (Dask would wait forever)."""
    for d in decisions:
        if not d.run:
            continue
        for name, amount in _resources(d.job).items():
            if amount > capacity.get(name, 0.0):
                have = capacity.get(name, 0.0)
                shown = f"{have:.0f}" if name != "memory" else f"{have / 1e9:.1f} GB"
                need = f"{amount:.0f}" if name != "memory" else d.job.resources.memory
                raise WorkflowError(
                    f"job {d.job.id} asks for {need} {name}; the workers of {where} have "
                    f"{shown} each (lower the step's resources or use a larger cluster)"
                )


def _local_capacity(decisions: Sequence[Decision], n_workers: int) -> dict[str, float]:
    """Resources of each local worker: the machine shared by ``n_workers``, at least one job."""
    import psutil

    cores = os.cpu_count() or 1
    mem = psutil.virtual_memory().total
    return {
        "cpus": float(max(1, cores // n_workers)),
        "memory": float(mem / n_workers),
        "gpus": float(_local_gpus() // n_workers) if _local_gpus() else 0.0,
    }


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        return 0


def run_workflow(
    workflow: Workflow,
    *,
    decisions: Sequence[Decision] | None = None,
    client=None,
    cluster=None,
    jobs: int | None = None,
    force: Sequence[str] = (),
    until: Sequence[str] = (),
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run the jobs that are not up to date, in parallel on Dask.

    Parameters
    ----------
    workflow : Workflow
    decisions : sequence of Decision, optional
        A plan from :func:`plan` (made here from ``force`` and ``until`` when not given).
    client : distributed.Client, optional
        Run on this client's cluster.
    cluster : neurodecode.ingest.runner.ClusterConfig, optional
        Else start this cluster (default: a LocalCluster of ``jobs`` workers).
    jobs : int, optional
        Jobs at once on a local cluster (default: the number of CPU cores).
    force, until : sequence of str
        See :func:`plan`.
    on_result : callable, optional
        Called with each :class:`JobResult` as it is known.

    Returns
    -------
    list of JobResult
        One per planned job, in dependency order. A run log is written to
        ``<workdir>/.neurodecode/last-run.json``.

    Raises
    ------
    WorkflowError
        If another run is writing into the same workdir, or a job asks for more resources
        than any worker has (before anything runs).
    """
    with _run_lock(workflow):
        return _run_locked(workflow, decisions, client, cluster, jobs, force, until, on_result)


@contextmanager
def _run_lock(workflow: Workflow):
    """One run at a time per workdir (a second run would race the first on its outputs)."""
    import fcntl

    folder = state_dir(workflow)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkflowError(
                f"another run of a workflow is writing into {workflow.workdir} (pid {holder}); "
                "wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(workflow, decisions, client, cluster, jobs, force, until, on_result):
    from ..ingest.runner import ClusterConfig, cluster_client

    cache = FingerprintCache(state_dir(workflow) / "fingerprints.json")
    if decisions is None:
        decisions = plan(workflow, force=force, until=until, cache=cache)
    cache.save()
    results: dict[str, JobResult] = {}
    emit = on_result or (lambda r: None)
    for d in decisions:
        if not d.run:
            results[d.job.id] = JobResult(d.job.id, d.job.step, "up-to-date")
            emit(results[d.job.id])
    to_run = [d for d in decisions if d.run]
    if to_run:
        n = jobs or os.cpu_count() or 1
        config = cluster or ClusterConfig(kind="local", n_workers=n)
        if client is not None:
            _run_on(client, workflow, to_run, results, emit, capacity=None)
        elif config.kind == "local":
            capacity = _local_capacity(to_run, config.n_workers)
            _check_fits(to_run, capacity, f"the local cluster ({config.n_workers} workers)")
            _run_local(config, capacity, workflow, to_run, results, emit)
        else:
            with cluster_client(config) as new:
                if new is None:
                    raise WorkflowError(
                        "the workflow engine runs on Dask: use local, an address or slurm"
                    )
                _run_on(new, workflow, to_run, results, emit, capacity=None)
    ordered = [results[d.job.id] for d in decisions]
    _write_log(workflow, ordered)
    return ordered


def _run_local(config, capacity, workflow, to_run, results, emit) -> None:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=1,
            processes=True,
            resources=capacity,
            memory_limit=0,
            dashboard_address=":0",
            silence_logs=40,
        ) as local,
        Client(local) as client,
    ):
        _run_on(client, workflow, to_run, results, emit, capacity=capacity)


def _run_on(client, workflow, to_run: Sequence[Decision], results, emit, capacity) -> None:
    from dask.distributed import as_completed

    if capacity is None:
        info = client.scheduler_info(n_workers=-1).get("workers", {})
        caps = [w.get("resources", {}) for w in info.values()]
        if caps and any(caps):
            best = {k: max(c.get(k, 0.0) for c in caps) for k in {k for c in caps for k in c}}
            _check_fits(to_run, best, "this cluster")
    token = os.urandom(4).hex()
    futures: dict[str, Any] = {}
    by_key: dict[str, Decision] = {}
    for d in to_run:
        deps = [futures[j] for j in d.job.depends if j in futures]
        key = f"{d.job.id}-{token}"
        futures[d.job.id] = client.submit(
            _execute,
            _spec(d, workflow.modules),
            *deps,
            key=key,
            resources=_resources(d.job) if capacity is not None or _has_resources(client) else None,
            pure=False,
            retries=0,
        )
        by_key[key] = d
    failed: set[str] = set()
    for future in as_completed(list(futures.values())):
        d = by_key[future.key]
        if future.status == "finished":
            out = future.result()
            res = JobResult(d.job.id, d.job.step, out["status"], out["seconds"], d.reasons)
        else:
            err = future.exception()
            upstream = [j for j in d.job.depends if j in failed or _erred(futures.get(j))]
            if upstream:
                res = JobResult(d.job.id, d.job.step, "not run", 0.0, d.reasons,
                                f"{', '.join(upstream)} failed")  # fmt: skip
            else:
                res = JobResult(d.job.id, d.job.step, "failed", 0.0, d.reasons, _message(err))
            failed.add(d.job.id)
        results[d.job.id] = res
        emit(res)


def _has_resources(client) -> bool:
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(w.get("resources") for w in info.values())


def _erred(future) -> bool:
    return future is not None and future.status == "error"


def _message(err: BaseException | None) -> str:
    from ..pipelines import StageError

    if err is None:
        return "unknown error"
    if isinstance(err, StageError | WorkflowError | FileNotFoundError):
        return str(err)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return f"{type(err).__name__}: {err}\n{tb}"


def _write_log(workflow: Workflow, results: Sequence[JobResult]) -> None:
    folder = state_dir(workflow)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".last-run.{os.getpid()}.tmp"
    tmp.write_text(
        json.dumps(
            {
                "workflow": str(workflow.path),
                "finished": time.time(),
                "jobs": [asdict(r) for r in results],
            },
            indent=2,
        )  # fmt: skip
    )
    os.replace(tmp, folder / "last-run.json")
