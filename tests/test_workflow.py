"""The workflow engine: validation, skipping, reasons, failures, kill -9, Dask, Snakemake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.pipelines import read_provenance
from neurodecode.workflow import WorkflowError, load_workflow, plan, run_workflow

STAGES = Path(__file__).parent / "workflows" / "stages.py"
runner = CliRunner()


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module (two one-thread workers with resources, as the engine's)."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            resources={"cpus": 1, "memory": 4e9},
            memory_limit=0,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _write(tmp_path: Path, steps: dict, **top) -> Path:
    path = tmp_path / "wf.yaml"
    spec = {"name": "t", "workdir": str(tmp_path / "out"), "modules": [str(STAGES)], **top}
    spec["steps"] = steps
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _chain(tmp_path: Path, subjects=("01", "02", "03"), **extra) -> Path:
    """raw/sub-XX.txt -> a[XX] -> b[XX] -> summary (all subjects)."""
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for s in subjects:
        if not (raw / f"sub-{s}.txt").exists():
            (raw / f"sub-{s}.txt").write_text(f"data of {s}")
    steps = {
        "a": {
            "stage": "concat",
            "foreach": {"subject": list(subjects)},
            "params": {"text": "a {subject}"},
            "inputs": {"sources": str(raw / "sub-{subject}.txt")},
            "outputs": {"out": "a/sub-{subject}.txt"},
        },
        "b": {
            "stage": "concat",
            "foreach": {"subject": list(subjects)},
            "params": {"text": "b"},
            "inputs": {"sources": "a/sub-{subject}.txt"},
            "outputs": {"out": "b/sub-{subject}.txt"},
        },
        "summary": {
            "stage": "concat",
            "inputs": {"sources": "b/sub-*.txt"},
            "outputs": {"out": "summary.txt"},
        },
    }
    for name, patch in extra.items():
        steps[name] = {**steps.get(name, {}), **patch}
    return _write(tmp_path, steps)


def _to_run(wf, **kw) -> dict[str, list[str]]:
    return {d.job.id: d.reasons for d in plan(wf, **kw) if d.run}


def test_expansion_and_dependencies(tmp_path):
    wf = load_workflow(_chain(tmp_path))
    ids = [j.id for j in wf.jobs]
    assert len(ids) == 7
    by = wf.by_id
    assert by["b[subject=02]"].depends == ["a[subject=02]"]
    assert by["summary"].depends == [f"b[subject={s}]" for s in ("01", "02", "03")]
    assert ids.index("summary") == 6  # dependency order
    assert by["a[subject=01]"].config == {"text": "a 01", "sleep": 0.0, "fail": False}


def test_run_then_skip_then_exactly_the_changed_subject(tmp_path, client):
    path = _chain(tmp_path)
    wf = load_workflow(path)
    results = run_workflow(wf, client=client)
    assert {r.status for r in results} == {"done"}, results
    out = tmp_path / "out"
    assert (out / "summary.txt").read_text().count("data of") == 3
    assert read_provenance(out / "summary.txt")["stage"] == "concat"
    # nothing changed: every job skipped, no cluster started
    t0 = time.perf_counter()
    results = run_workflow(load_workflow(path))
    assert {r.status for r in results} == {"up-to-date"}
    assert time.perf_counter() - t0 < 5
    # touching changes no content: still nothing to do
    os.utime(tmp_path / "raw" / "sub-02.txt")
    assert _to_run(load_workflow(path)) == {}
    # editing one subject's file reruns exactly its jobs and the summary, saying why
    (tmp_path / "raw" / "sub-02.txt").write_text("new data of 02")
    todo = _to_run(load_workflow(path))
    assert set(todo) == {"a[subject=02]", "b[subject=02]", "summary"}
    assert todo["a[subject=02]"] == [f"input changed: {tmp_path / 'raw' / 'sub-02.txt'}"]
    assert todo["b[subject=02]"] == ["runs after a[subject=02], which run(s)"]
    results = run_workflow(load_workflow(path), client=client)
    assert {r.job for r in results if r.status == "done"} == set(todo)
    assert "new data of 02" in (out / "summary.txt").read_text()


def test_reasons_config_force_until_and_outputs(tmp_path, client):
    path = _chain(tmp_path, subjects=("01",))
    run_workflow(load_workflow(path), client=client)
    spec = yaml.safe_load(path.read_text())
    spec["steps"]["b"]["params"]["text"] = "b2"
    path.write_text(yaml.safe_dump(spec))
    wf = load_workflow(path)
    todo = _to_run(wf)
    assert todo["b[subject=01]"] == ["config changed: text: 'b' → 'b2'"]
    assert set(todo) == {"b[subject=01]", "summary"}
    assert set(_to_run(wf, until=["b"])) == {"b[subject=01]"}
    forced = _to_run(wf, force=["a"])
    assert forced["a[subject=01]"] == ["forced (--force)"]
    assert set(forced) == {"a[subject=01]", "b[subject=01]", "summary"}
    (tmp_path / "out" / "a" / "sub-01.txt").unlink()
    assert _to_run(wf)["a[subject=01]"][0].startswith("output missing: a/sub-01.txt")
    with pytest.raises(WorkflowError, match="no step, stage or job 'bb'; did you mean 'b'"):
        plan(wf, force=["bb"])


def test_a_failed_job_keeps_the_rest_and_a_rerun_resumes(tmp_path, client):
    path = _chain(tmp_path, subjects=("01", "02"))
    run_workflow(load_workflow(path), client=client)
    before = read_provenance(tmp_path / "out" / "b" / "sub-01.txt")
    # a changes, b now fails: b's old outputs stay whole, the summary does not run
    spec2 = yaml.safe_load(path.read_text())
    spec2["steps"]["b"]["params"].update(fail=True, text="b new")
    spec2["steps"]["a"]["params"]["text"] = "a {subject} v2"
    path.write_text(yaml.safe_dump(spec2))
    results = {r.job: r for r in run_workflow(load_workflow(path), client=client)}
    assert results["a[subject=01]"].status == "done"
    assert results["b[subject=01]"].status == "failed"
    assert "asked to fail (b new)" in results["b[subject=01]"].error
    assert results["summary"].status == "not run"
    out = tmp_path / "out"
    assert (out / "b" / "sub-01.txt").read_text() != "partial"
    assert read_provenance(out / "b" / "sub-01.txt") == before
    assert not list(out.rglob(".*.tmp-*"))
    # fixed: a is not redone, b and summary run
    spec2["steps"]["b"]["params"]["fail"] = False
    path.write_text(yaml.safe_dump(spec2))
    results = {r.job: r.status for r in run_workflow(load_workflow(path), client=client)}
    assert results["a[subject=01]"] == "up-to-date"
    assert results["b[subject=01]"] == "done" and results["summary"] == "done"
    log = json.loads((out / ".neurodecode" / "last-run.json").read_text())
    assert {j["job"] for j in log["jobs"]} == set(results)


def test_independent_jobs_run_in_parallel_on_dask(tmp_path, client):
    path = _write(
        tmp_path,
        {
            "slow": {
                "stage": "concat",
                "foreach": {"i": ["1", "2"]},
                "params": {"text": "{i}", "sleep": 1.5},
                "outputs": {"out": "slow-{i}.txt"},
            }
        },
    )
    run_workflow(load_workflow(path), client=client)
    spans = [read_provenance(tmp_path / "out" / f"slow-{i}.txt")["summary"] for i in (1, 2)]
    assert spans[0]["pid"] != spans[1]["pid"]  # two worker processes
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)  # overlapping


def test_early_cutoff_when_an_upstream_rerun_changes_nothing(tmp_path, client):
    path = _chain(tmp_path, subjects=("01",))
    run_workflow(load_workflow(path), client=client)
    results = {
        r.job: r.status for r in run_workflow(load_workflow(path), force=["a"], client=client)
    }
    assert results == {
        "a[subject=01]": "done",
        "b[subject=01]": "unchanged",
        "summary": "unchanged",
    }


def test_folder_outputs_and_resources(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("x")
    path = _write(
        tmp_path,
        {
            "split": {
                "inputs": {"source": str(src)},
                "params": {"parts": 3},
                "outputs": {"folder": "parts"},
            },
            "join": {
                "stage": "concat",
                "inputs": {"sources": "parts"},
                "outputs": {"out": "joined.txt"},
                "resources": {"cpus": 64},
            },
        },
    )
    wf = load_workflow(path)
    assert wf.by_id["join"].depends == ["split"]
    inner = _write(
        tmp_path,
        {
            "split": {"inputs": {"source": str(src)}, "outputs": {"folder": "parts"}},
            "one": {"stage": "concat", "inputs": {"sources": "parts/part-1.txt"},
                    "outputs": {"out": "one.txt"}},
        },
    )  # fmt: skip
    assert load_workflow(inner).by_id["one"].depends == ["split"]  # inside an output folder
    with pytest.raises(WorkflowError, match=r"job 'join' \(stage concat\) asks for 64 cpus; local"):
        run_workflow(wf, jobs=1)
    assert not (tmp_path / "out" / "parts").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"x": {"stage": "concatt", "outputs": {"out": "x"}}},
         "step x: unknown stage 'concatt'; did you mean 'concat'?"),
        ({"x": {"stage": "concat", "params": {"txt": 1}, "outputs": {"out": "x"}}},
         "job x: stage concat: unknown parameter 'txt' (parameters: text, sleep, fail)"),
        ({"x": {"stage": "concat", "params": {"sleep": "long"}, "outputs": {"out": "x"}}},
         "job x: stage concat: sleep: Input should be a valid number"),
        ({"x": {"stage": "concat", "inputs": {"sources": "y"}, "outputs": {"out": "x"}},
          "y": {"stage": "concat", "inputs": {"sources": "x"}, "outputs": {"out": "y"}}},
         "cycle: "),
        ({"x": {"stage": "concat", "inputs": {"sources": "nope.txt"}, "outputs": {"out": "x"}}},
         "job x: input 'sources' nope.txt does not exist and no job writes it"),
        ({"x": {"stage": "concat", "outputs": {"out": "same"}},
          "y": {"stage": "concat", "outputs": {"out": "same"}}},
         "output same is produced by both job x and job y"),
        ({"x": {"stage": "concat", "outputs": {"out": "x-{subject}"}}},
         "job x: unknown wildcard or variable {subject}"),
        ({"x": {"stage": "concat", "inputs": {"srcs": "a"}, "outputs": {"out": "x"}}},
         "step x: stage concat has no input 'srcs' (inputs: sources)"),
        ({"x": {"stage": "concat", "outputs": {}}}, "step x: output 'out' is not given"),
        ({"x": {"stage": "concat", "outpts": {"out": "x"}}}, "steps.x.outpts: unknown key"),
        ({"x": {"stage": "concat", "foreach": {"s": {"catalog": "eegbci_s01"}},
                "outputs": {"out": "x"}}},
         "unknown catalog entry 'eegbci_s01'"),
    ],
)  # fmt: skip
def test_every_kind_of_error_fails_before_running(tmp_path, steps, message):
    path = _write(tmp_path, steps)
    with pytest.raises(WorkflowError) as err:
        load_workflow(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    result = runner.invoke(app, ["workflow", "run", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_optional_steps_are_left_out_with_a_note(tmp_path):
    path = _write(
        tmp_path,
        {
            "real": {
                "stage": "concat",
                "inputs": {"sources": "/no/such/sample/data.txt"},
                "outputs": {"out": "real.txt"},
                "optional": True,
            },
            "sim": {"stage": "concat", "params": {"text": "s"}, "outputs": {"out": "sim.txt"}},
            "all": {
                "stage": "concat",
                "inputs": {"sources": ["real.txt", "sim.txt"]},
                "outputs": {"out": "all.txt"},
            },
        },
    )
    wf = load_workflow(path)
    assert [j.id for j in wf.jobs] == ["sim", "all"]
    assert wf.by_id["all"].inputs["sources"] == [str(tmp_path / "out" / "sim.txt")]
    assert any("job real left out" in n for n in wf.notes)


def test_cli_dry_run_prints_each_job_and_why(tmp_path):
    path = _chain(tmp_path, subjects=("01",))
    result = runner.invoke(app, ["workflow", "run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 jobs, 3 would run, 0 up to date" in result.output
    assert "new: no finished run of this job" in result.output
    result = runner.invoke(app, ["workflow", "run", str(path), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "3 done" in result.output
    result = runner.invoke(app, ["workflow", "run", str(path)])
    assert "3 up-to-date" in result.output
    plan_json = json.loads(
        runner.invoke(app, ["workflow", "run", str(path), "-n", "--json"]).stdout
    )
    assert [p["run"] for p in plan_json] == [False] * 3


def test_code_change_is_a_reason(tmp_path):
    stages = tmp_path / "my_stages.py"
    stages.write_text(STAGES.read_text())
    path = _write(
        tmp_path,
        {"x": {"stage": "concat", "params": {"text": "t"}, "outputs": {"out": "x.txt"}}},
        modules=[str(stages)],
    )
    run = [sys.executable, "-m", "neurodecode", "workflow", "run", str(path)]
    subprocess.run([*run, "--jobs", "1"], check=True, capture_output=True)
    stages.write_text(STAGES.read_text().replace("a half-written", "a half written"))
    out = subprocess.run([*run, "-n", "--json"], check=True, capture_output=True, text=True)
    reasons = json.loads(out.stdout)[0]["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("code changed: stage concat 1-")


@pytest.mark.slow
def test_kill_9_mid_stage_then_rerun_completes(tmp_path):
    marker = tmp_path / "started"
    path = _write(
        tmp_path,
        {
            "fast": {"stage": "concat", "params": {"text": "f"}, "outputs": {"out": "fast.txt"}},
            "slow": {
                "stage": "concat",
                "inputs": {"sources": "fast.txt"},
                "params": {"text": "s", "sleep": 30},
                "outputs": {"out": "slow.txt"},
            },
        },
    )
    env = {**os.environ, "NEURODECODE_TEST_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "neurodecode", "workflow", "run", str(path), "--jobs", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the slow job never started"
    worker = int(marker.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out"
    assert (out / "fast.txt").is_file() and not (out / "slow.txt").exists()
    # the orphaned worker goes away too instead of finishing the job behind our back
    deadline = time.time() + 30
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(worker)
    fast_record = read_provenance(out / "fast.txt")
    spec = yaml.safe_load(path.read_text())
    spec["steps"]["slow"]["params"]["sleep"] = 0
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_provenance(out / "fast.txt") == fast_record  # not redone
    assert (out / "slow.txt").read_text() == "s\nf"
    assert not list(out.rglob(".*.tmp-*"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
    import fcntl

    path = _chain(tmp_path, subjects=("01",))
    wf = load_workflow(path)
    lock = tmp_path / "out" / ".neurodecode" / "run.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        handle.write("4242")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(WorkflowError, match=r"another run .* \(pid 4242\)"):
            run_workflow(wf)
    assert not (tmp_path / "out" / "a").exists()


def test_gpu_jobs_under_slurm_run_as_sbatch_jobs_with_srun(tmp_path, client, monkeypatch):
    """CPU jobs on Dask, the GPU job through a (fake) sbatch --wait and srun with 2 ranks."""
    from neurodecode.workflow.slurm import SlurmConfig

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "sbatch $*" >> {calls}\n'
        'script="${@: -1}"\n'
        f'cp "$script" {tmp_path}/job.sbatch\n'
        'bash "$script" > /dev/null 2>&1\n'
        "status=$?\n"
        'echo "4242"\n'
        "exit $status\n"
    )
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "srun" >> {calls}\n'
        'SLURM_PROCID=1 "$@" || exit $?\n'  # a second rank runs too, and must not commit
        'SLURM_PROCID=0 exec "$@"\n'
    )
    for exe in ("sbatch", "srun"):
        (bin_dir / exe).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = _write(
        tmp_path,
        {
            "a": {"stage": "concat", "params": {"text": "a"}, "outputs": {"out": "a.txt"}},
            "train": {
                "stage": "concat",
                "inputs": {"sources": "a.txt"},
                "params": {"text": "gpu"},
                "outputs": {"out": "model.txt"},
                "resources": {"gpus": 2, "cpus": 4, "time": "20m"},
            },
            "after": {"stage": "concat", "inputs": {"sources": "model.txt"},
                      "outputs": {"out": "after.txt"}},
        },
    )  # fmt: skip
    config = SlurmConfig(partition="cpu", gpu={"partition": "gpu", "signal_margin": 90})
    results = {r.job: r for r in run_workflow(load_workflow(path), client=client, cluster=config)}
    assert {r.status for r in results.values()} == {"done"}, results["train"].error
    out = tmp_path / "out"
    assert (out / "after.txt").read_text() == "\ngpu\na"
    script = (tmp_path / "job.sbatch").read_text()
    for directive in ("--ntasks-per-node=2", "--gres=gpu:2", "--signal=SIGUSR1@90",
                      "--requeue", "--partition=gpu"):  # fmt: skip
        assert f"#SBATCH {directive}" in script
    assert "srun " in script and "run-stage concat" in script
    assert calls.read_text().count("sbatch --wait --parsable") == 1
    assert read_provenance(out / "model.txt")["job"] is None  # committed by run-stage (rank 0)
