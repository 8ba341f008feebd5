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
import warnings
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
    import dask

    # the job's own Dask arrays (lazy stores) are computed here, by threads of this job: on the
    # workers they would wait for a free worker while this job holds one (a deadlock)
    with (
        dask.config.set(scheduler="threads", num_workers=cpus),
        threadpool_limits(cpus),
        warnings.catch_warnings(),
    ):
        # joblib inside a (daemonic) Dask worker runs n_jobs=1: the job has its cpus as threads
        warnings.filterwarnings("ignore", message="Inside a Dask worker with daemon=True")
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


def _check_client(client, to_run: Sequence[Decision], sbatch_gpus: bool) -> bool:
    """Whether the client's workers declare resources; if they do, every job must fit one."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    caps = [w.get("resources", {}) for w in info.values()]
    if not caps or not any(caps):
        return False
    best = {k: max(c.get(k, 0.0) for c in caps) for k in {k for c in caps for k in c}}
    for d in to_run:
        if sbatch_gpus and d.job.resources.gpus:
            continue
        for name, amount in _resources(d.job).items():
            if amount > best.get(name, 0.0):
                have = best.get(name, 0.0)
                shown = f"{have / 1e9:.3g} GB" if name == "memory" else f"{have:g}"
                need = d.job.resources.memory if name == "memory" else f"{amount:g}"
                raise WorkflowError(
                    f"job {d.job.id} asks for {need} {name}; the workers of this cluster have "
                    f"{shown} at most"
                )
    return True


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
    cluster : SlurmConfig or LocalClusterConfig or str, optional
        Else start this cluster (:mod:`neurodecode.workflow.slurm`; GPU jobs under SLURM run
        as their own ``sbatch`` jobs), or connect to this scheduler address (default: a
        LocalCluster of ``jobs`` one-thread workers).
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
    from dask.distributed import Client

    from .slurm import LocalClusterConfig, SlurmConfig, check_jobs_fit, make_cluster

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
        slurm = cluster if isinstance(cluster, SlurmConfig) else None
        if client is not None:
            _run_on(client, workflow, to_run, results, emit, slurm)
        elif isinstance(cluster, str):
            try:
                new = Client(cluster, timeout="10s")
            except (OSError, TimeoutError, ValueError) as err:
                raise WorkflowError(
                    f"cannot connect to the Dask scheduler at {cluster}: {err}"
                ) from None
            with new:
                _run_on(new, workflow, to_run, results, emit, None)
        else:
            config = cluster or LocalClusterConfig(
                n_workers=jobs or os.cpu_count() or 1, threads_per_worker=1, dashboard_address=":0"
            )
            try:
                check_jobs_fit([d.job for d in to_run], config)
            except ValueError as err:
                raise WorkflowError(str(err)) from None
            with make_cluster(config) as made, Client(made) as new:
                _run_on(new, workflow, to_run, results, emit, slurm)
    ordered = [results[d.job.id] for d in decisions]
    _write_log(workflow, ordered)
    return ordered


def _run_gpu(d: Decision, workflow: Workflow, config) -> dict[str, Any]:
    """Run a GPU job as its own SLURM batch job (``srun`` one task per GPU) and wait for it."""
    from .slurm import run_gpu_job

    job = d.job
    folder = state_dir(workflow) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{_safe(job.id)}.json"
    cfg.write_text(json.dumps(job.config, indent=2, sort_keys=True))
    command = [config.python, "-m", "neurodecode", "run-stage", job.stage, "--config", str(cfg)]
    for role, paths in job.inputs.items():
        command += [arg for p in paths for arg in ("--inputs", f"{role}={p}")]
    for role, path in job.outputs.items():
        command += ["--outputs", f"{role}={path}"]
    for module in workflow.modules:
        command += ["--module", module]
    if "forced (--force)" not in d.reasons:
        command.append("--skip-up-to-date")
    t0 = time.perf_counter()
    run_gpu_job(job, config, command, folder, workdir=workflow.workdir)
    return {"job": job.id, "status": "done", "seconds": time.perf_counter() - t0}


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "job"


def _run_on(client, workflow, to_run: Sequence[Decision], results, emit, slurm) -> None:
    """Submit every job once the jobs it needs are submitted (Dask) or done (sbatch GPU jobs).

    Jobs on Dask wait for their upstream futures inside Dask. A GPU job under SLURM runs as its
    own batch job from a thread of this process (so that a retiring worker never submits it
    twice): it starts when its upstream jobs are done, and the jobs after it are submitted
    when it is.
    """
    import queue
    from concurrent.futures import ThreadPoolExecutor

    on_sbatch = {d.job.id for d in to_run if slurm is not None and d.job.resources.gpus}
    with_resources = _check_client(client, to_run, bool(on_sbatch))
    token = os.urandom(4).hex()
    events: queue.Queue = queue.Queue()
    by_id = {d.job.id: d for d in to_run}
    futures: dict[str, Any] = {}
    finished: dict[str, bool] = {}  # job id -> succeeded
    pending = list(to_run)
    pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(on_sbatch)))) if on_sbatch else None

    def record(d: Decision, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        finished[d.job.id] = status in ("done", "unchanged")
        results[d.job.id] = JobResult(d.job.id, d.job.step, status, seconds, d.reasons, error)
        emit(results[d.job.id])

    def submit_ready() -> None:
        for d in list(pending):
            upstream = [j for j in d.job.depends if j in by_id]
            failed = [j for j in upstream if finished.get(j) is False]
            if failed:
                pending.remove(d)
                record(d, "not run", error=f"{', '.join(failed)} failed")
                continue
            if d.job.id in on_sbatch:
                if all(finished.get(j) for j in upstream):
                    pending.remove(d)
                    fut = pool.submit(_run_gpu, d, workflow, slurm)
                    fut.add_done_callback(lambda f, d=d: events.put((d, f)))
                    futures[d.job.id] = fut
                continue
            if any(j in on_sbatch and not finished.get(j) for j in upstream):
                continue  # after a GPU job that is not done yet
            pending.remove(d)
            deps = [futures[j] for j in upstream if j in futures and j not in on_sbatch]
            fut = client.submit(
                _execute, _spec(d, workflow.modules), *deps, key=f"{d.job.id}-{token}",
                resources=_resources(d.job) if with_resources else None, pure=False, retries=0,
            )  # fmt: skip
            fut.add_done_callback(lambda f, d=d: events.put((d, f)))
            futures[d.job.id] = fut

    try:
        submit_ready()
        while len(finished) < len(to_run):
            d, fut = events.get()
            if d.job.id in finished:
                continue
            error = fut.exception()
            if error is None:
                out = fut.result()
                record(d, out["status"], out["seconds"])
                if d.job.id not in on_sbatch:
                    futures[d.job.id].release()
            else:
                upstream = [j for j in d.job.depends if finished.get(j) is False]
                if upstream:
                    record(d, "not run", error=f"{', '.join(upstream)} failed")
                else:
                    record(d, "failed", error=_message(error))
            submit_ready()
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


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
