"""The workflow engine's own overhead, beside Snakemake's dry run of the same jobs.

A synthetic workflow of ``n`` subjects x 2 steps (``a[subject]`` writes a small file, ``b`` reads
it) plus one summary job uses a trivial stage (``benchmarks/workflow_stages.py``), so every
second measured is the engine's, not a stage's:

* ``plan_seconds`` / ``plan_jobs``: loading, expanding, validating and planning a workflow of
  about 1,000 jobs that have never run (target ≤ 5 s);
* ``executed_job_seconds``: wall time per executed trivial job on a LocalCluster of 2 workers,
  from submission to the last result, cluster start-up excluded (target ≤ 0.5 s), with
  ``cluster_start_seconds`` beside it;
* ``skipped_job_ms``: a rerun with nothing changed, per job: load + plan + (no cluster) — the
  cost of finding a job up to date (target ≤ 50 ms);
* ``snakemake_dry_run_seconds``: ``snakemake -n`` on the exported Snakefile of the 1,000-job
  workflow, in its own venv (``.venv-snakemake``, built by ``tests/test_workflow_snakemake.py``),
  and ``plan_vs_snakemake`` = our plan time / Snakemake's (lower is faster); absent when that
  venv is not there;
* ``peak_rss_mb`` of this process.

Usage::

    python benchmarks/workflow.py --quick --json outputs/bench_workflow.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from measure import peak_rss_mb

from neurodecode.workflow import load_workflow, plan, run_workflow
from neurodecode.workflow.snakemake import export_snakemake

HERE = Path(__file__).resolve().parent
SNAKEMAKE = HERE.parent / ".venv-snakemake" / "bin" / "snakemake"


def write_workflow(folder: Path, n_subjects: int) -> Path:
    """A workflow of ``2 n_subjects + 1`` trivial jobs over per-subject source files."""
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    subjects = [f"{i:04d}" for i in range(n_subjects)]
    for s in subjects:
        (raw / f"sub-{s}.txt").write_text(s)
    spec = {
        "name": "bench",
        "workdir": str(folder / "out"),
        "modules": [str(HERE / "workflow_stages.py")],
        "steps": {
            "a": {"stage": "echo", "foreach": {"subject": subjects},
                  "inputs": {"sources": str(raw / "sub-{subject}.txt")},
                  "params": {"text": "a {subject}"}, "outputs": {"out": "a/{subject}.txt"}},
            "b": {"stage": "echo", "foreach": {"subject": subjects},
                  "inputs": {"sources": "a/{subject}.txt"}, "outputs": {"out": "b/{subject}.txt"}},
            "summary": {"stage": "echo", "inputs": {"sources": "b/*.txt"},
                        "outputs": {"out": "summary.txt"}},
        },
    }  # fmt: skip
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def bench_plan(folder: Path, n_subjects: int) -> dict:
    path = write_workflow(folder, n_subjects)
    t0 = time.perf_counter()
    wf = load_workflow(path)
    decisions = plan(wf)
    seconds = time.perf_counter() - t0
    out = {"plan_jobs": len(decisions), "plan_seconds": seconds}
    if SNAKEMAKE.exists():
        snakefile = export_snakemake(wf, folder / "Snakefile")
        t0 = time.perf_counter()
        done = subprocess.run(
            [str(SNAKEMAKE), "-n", "-s", str(snakefile), "--cores", "1", "--quiet"],
            cwd=folder, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode == 0:
            out["snakemake_dry_run_seconds"] = time.perf_counter() - t0
            out["plan_vs_snakemake"] = seconds / out["snakemake_dry_run_seconds"]
        else:
            out["snakemake_error"] = done.stderr[-500:]
    return out


def bench_run(folder: Path, n_subjects: int) -> dict:
    from dask.distributed import Client, LocalCluster

    path = write_workflow(folder, n_subjects)
    wf = load_workflow(path)
    t0 = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, resources={"cpus": 1, "memory": 4e9},
                     memory_limit=0, dashboard_address=":0", silence_logs=40) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.wait_for_workers(2)
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = run_workflow(wf, client=client)
        seconds = time.perf_counter() - t0
    assert {r.status for r in results} == {"done"}, results
    t0 = time.perf_counter()
    again = run_workflow(load_workflow(path))
    skipped = time.perf_counter() - t0
    assert {r.status for r in again} == {"up-to-date"}
    return {
        "executed_jobs": len(results),
        "cluster_start_seconds": start,
        "executed_job_seconds": seconds / len(results),
        "skipped_jobs": len(again),
        "skipped_job_ms": 1000 * skipped / len(again),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer executed jobs (≤ 2 min)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = {"quick": args.quick}
        result.update(bench_plan(tmp / "plan", 500))  # 1,001 jobs
        result.update(bench_run(tmp / "run", 25 if args.quick else 100))
    result["peak_rss_mb"] = peak_rss_mb()
    targets = {"plan_seconds": 5.0, "executed_job_seconds": 0.5, "skipped_job_ms": 50.0}
    for key, value in result.items():
        mark = ""
        if key in targets:
            verdict = "ok" if value <= targets[key] else "MISSED"
            mark = f"  (target ≤ {targets[key]:g}: {verdict})"
        print(f"{key:28} {value:.4g}{mark}" if isinstance(value, float) else f"{key:28} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
