"""SLURM executor: cluster configs, the dask-jobqueue job script, GPU sbatch scripts.

There is no SLURM here. The worker job script is checked as text, with ``bash -n``, and run for
real by a fake ``sbatch`` (a shell script that starts the job in the background under
``timeout`` as a stand-in for the walltime), so that Adaptive's replacement of workers that
reach their ``--lifetime`` is exercised end to end.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from neurodecode.workflow.slurm import (
    ClusterConfigError,
    GpuConfig,
    LocalClusterConfig,
    SlurmConfig,
    SlurmError,
    adapt_kwargs,
    check_jobs_fit,
    format_slurm_time,
    gpu_sbatch_script,
    job_time_minutes,
    load_cluster_config,
    make_cluster,
    make_slurm_cluster,
    parse_cluster_config,
    run_gpu_job,
    slurm_cluster_kwargs,
    submit_and_wait,
    worker_lifetime_seconds,
    worker_resources,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "workflows" / "cluster"


@dataclass
class Res:
    cpus: int = 1
    memory: str | int | None = "1GB"
    gpus: int = 0
    time: str | None = None


@dataclass
class Job:
    id: str
    stage: str = "embed"
    config: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    resources: Res = field(default_factory=Res)


def _executable(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """PATH without sbatch/scancel (only an empty folder and the basic system tools)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}/usr/bin{os.pathsep}/bin")
    for tool in ("sbatch", "scancel"):
        if any((Path(d) / tool).exists() for d in ("/usr/bin", "/bin")):
            pytest.skip(f"{tool} is installed in /usr/bin here; cannot hide it")
    return empty


def _bash_n(script: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(script)
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("1h", 60),
        ("90m", 90),
        ("1h30m", 90),
        ("1.5h", 90),
        ("2d", 2 * 24 * 60),
        ("45s", 1),
        ("61s", 2),
        ("01:30:00", 90),
        ("90:00", 90),
        ("90:30", 91),
        ("45", 45),
        (45, 45),
        ("2-00:00:00", 2 * 24 * 60),
        ("1-12", 36 * 60),
        ("1-00:30", 24 * 60 + 30),
        (" 00:30:00 ", 30),
    ],
)
def test_job_time_minutes(text, minutes):
    assert job_time_minutes(text) == minutes


@pytest.mark.parametrize(
    "text", ["", "forever", "1x", "h", "01:70:00", "1:2:3:4", "2-25:00:00", "0", "0m", "-5m", True]
)
def test_job_time_minutes_refuses(text):
    with pytest.raises(ValueError, match=r"time .*(use e\.g\.|positive)"):
        job_time_minutes(text)


def test_format_slurm_time_reads_back():
    from neurodecode.workflow.slurm import _time_seconds

    for seconds in [1, 59, 60, 3599, 3600, 5400, 86399, 86400, 86401, 3 * 86400 + 3661]:
        text = format_slurm_time(seconds)
        assert re.fullmatch(r"(\d+-)?\d\d:\d\d:\d\d", text)
        assert _time_seconds(text) == seconds


# ---------------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------------


def test_example_configs_load():
    slurm = load_cluster_config(EXAMPLES / "slurm.yaml")
    raw = yaml.safe_load((EXAMPLES / "slurm.yaml").read_text())
    assert isinstance(slurm, SlurmConfig)
    assert (slurm.partition, slurm.account, slurm.cores) == (
        raw["partition"],
        raw["account"],
        raw["cores"],
    )
    assert slurm.gpu.gres == raw["gpu"]["gres"]
    assert slurm.python == sys.executable  # not set in the example: this interpreter
    local = load_cluster_config(EXAMPLES / "local.yaml")
    assert isinstance(local, LocalClusterConfig)
    assert local.n_workers == yaml.safe_load((EXAMPLES / "local.yaml").read_text())["n_workers"]
    assert SlurmConfig.load(EXAMPLES / "slurm.yaml") == slurm


def test_queue_is_another_name_for_partition():
    assert SlurmConfig(queue="short").partition == "short"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("executor: slurm\npartiton: cpu\n", r"unknown key 'partiton' \(keys: .*partition"),
        ("executor: slurm\ngpu:\n  gress: gpu:1\n", r"unknown key 'gpu\.gress' \(keys: .*gres"),
        ("executor: slurm\nwalltime: forever\n", r"walltime: cannot read time 'forever'"),
        ("executor: slurm\nmemory: lots\n", r"memory: cannot read memory 'lots'"),
        ("executor: slurm\ncores: 6\nprocesses: 4\n", r"cores \(6\) must be a multiple"),
        ("executor: slurm\nmin_jobs: 3\nmax_jobs: 2\n", r"max_jobs \(2\) is below min_jobs"),
        (
            "executor: slurm\nlifetime_margin: 2m\nlifetime_stagger: 3m\n",
            r"lifetime_stagger \(3m\) must be shorter than lifetime_margin",
        ),
        ("executor: slurm\nwalltime: 5m\n", r"walltime \(5m\) must exceed lifetime_margin"),
        (
            "executor: slurm\njob_extra_directives: ['#SBATCH --qos=x']\n",
            r"job_extra_directives: directive '#SBATCH --qos=x'",
        ),
        (
            "executor: slurm\nworker_extra_args: [--lifetime, 1h]\n",
            r"'--lifetime' is set from walltime",
        ),
        ("executor: slurm\ngpu:\n  gres: gpu:2\n", r"gpu\.gres: 'gpu:2' must contain '\{gpus\}'"),
        ("executor: slurm\ngpu:\n  gres: 'gpu:{n}'\n", r"gpu\.gres: 'gpu:\{n\}' is not a template"),
        ("executor: local\ngpus: -1\n", r"gpus: .*0 or more"),
        ("executor: pbs\n", r"key 'executor' is 'pbs' \(use one of: slurm, local\)"),
        ("cores: 4\n", r"key 'executor' is missing"),
        ("executor: slurm\ncores: [4\n", r"line \d+: "),
        ("- executor: slurm\n", r"expected keys at top level"),
    ],
)
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, text, pattern):
    path = _write(tmp_path, text)
    with pytest.raises(ClusterConfigError) as info:
        load_cluster_config(path)
    message = str(info.value)
    assert message.startswith(f"cluster config {path}"), message
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_missing_config_file(tmp_path):
    with pytest.raises(ClusterConfigError, match=r"cluster config .*nope\.yaml does not exist"):
        load_cluster_config(tmp_path / "nope.yaml")


def test_load_wrong_kind_and_mapping_source(tmp_path):
    with pytest.raises(ClusterConfigError, match=r"executor: Input should be 'slurm'"):
        SlurmConfig.load(_write(tmp_path, "executor: local\n"))
    with pytest.raises(ClusterConfigError, match=r"cluster config workflow\.yaml:cluster: "):
        parse_cluster_config({"executor": "slurm", "cpus": 2}, "workflow.yaml:cluster")
    assert SlurmConfig.load(None, cores=4, walltime=None).cores == 4


# ---------------------------------------------------------------------------------------------
# The worker job script
# ---------------------------------------------------------------------------------------------


def _config(tmp_path: Path, **overrides) -> SlurmConfig:
    values = dict(
        partition="cpu",
        account="lab42",
        cores=4,
        memory="16GB",
        walltime="2h",
        processes=2,
        job_extra_directives=["--qos=normal"],
        job_script_prologue=["module load python", "source /opt/venv/bin/activate"],
        log_directory=str(tmp_path / "logs"),
        dashboard_address=None,
        lifetime_margin="10m",
        lifetime_stagger="2m",
        min_jobs=1,
        max_jobs=3,
    )
    values.update(overrides)
    return SlurmConfig(**values)


def _worker_line(script: str) -> str:
    return next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)


def test_job_script_directives_lifetime_and_resources(tmp_path, no_slurm):
    config = _config(tmp_path)
    with make_slurm_cluster(config, adapt=False) as cluster:
        script = cluster.job_script()
        assert not cluster.workers  # nothing submitted
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -p cpu" in header
    assert "#SBATCH -A lab42" in header
    assert "#SBATCH --cpus-per-task=4" in header
    assert f"#SBATCH --mem={math.ceil(16e9 / 2**30)}G" in header
    assert "#SBATCH -t 02:00:00" in header  # "2h" written as SLURM reads it
    assert "#SBATCH --qos=normal" in header
    assert "#SBATCH -J neurodecode-worker" in header
    assert any(line.startswith(f"#SBATCH -o {tmp_path / 'logs'}") for line in header)
    assert "module load python\nsource /opt/venv/bin/activate\n" in script
    worker = shlex.split(_worker_line(script))
    assert worker[0] == sys.executable
    args = dict(zip(worker[1:], worker[2:], strict=False))
    lifetime = (job_time_minutes("2h") - job_time_minutes("10m")) * 60
    assert args["--lifetime"] == f"{lifetime}s"
    assert args["--lifetime-stagger"] == f"{job_time_minutes('2m') * 60}s"
    assert args["--nthreads"] == "2"  # 4 cores over 2 processes
    assert args["--resources"] == f"cpus=2,memory={int(16e9 // 2)},gpus=0"
    assert worker_lifetime_seconds(config) == (lifetime, 120)
    assert worker_resources(config) == {"cpus": 2, "memory": int(16e9 // 2), "gpus": 0}
    _bash_n(script, tmp_path, "worker.sh")
    assert (tmp_path / "logs").is_dir()


def test_adapt_needs_sbatch(tmp_path, no_slurm):
    with pytest.raises(SlurmError, match=r"^sbatch is not on PATH: the SLURM executor"):
        make_slurm_cluster(_config(tmp_path))
    with pytest.raises(SlurmError, match=r"^sbatch is not on PATH"):
        make_cluster(_config(tmp_path))


def test_adapt_bounds(tmp_path, no_slurm):
    config = _config(tmp_path, min_jobs=2, max_jobs=5)
    assert adapt_kwargs(config) == {"minimum_jobs": 2, "maximum_jobs": 5}
    kwargs = slurm_cluster_kwargs(config)
    assert kwargs["queue"] == "cpu" and kwargs["walltime"] == "02:00:00"
    # Adaptive's bounds (in workers) as make_slurm_cluster sets them, without starting it:
    # with min_jobs > 0 it would submit at once, and there is no SLURM here.
    with make_slurm_cluster(config, adapt=False) as cluster:
        adaptive = cluster.adapt(**adapt_kwargs(config))
        adaptive.stop()
        assert cluster._adaptive is adaptive
        assert (adaptive.minimum, adaptive.maximum) == (2 * 2, 5 * 2)  # 2 processes a job


def _fake_slurm(bin_dir: Path, record: Path, walltime_s: int) -> None:
    """A fake ``sbatch`` that runs (a copy of) the job script in the background, as its own
    process group killed by ``timeout`` at the walltime, and a fake ``scancel`` that kills that
    group. (dask-jobqueue removes its script as soon as ``sbatch`` returns.)"""
    record.mkdir(parents=True, exist_ok=True)
    _executable(
        bin_dir,
        "sbatch",
        f"""script="${{@: -1}}"
n=$(ls {record} | grep -c '^job-.*\\.sh$')
cp "$script" {record}/job-$n.sh
setsid timeout {walltime_s} bash {record}/job-$n.sh > {record}/job-$n.log 2>&1 < /dev/null &
echo $! >> {record}/pids
echo "Submitted batch job $!"
""",
    )
    _executable(bin_dir, "scancel", f'echo "$@" >> {record}/scancelled\nkill -- -"$1" || true\n')


def _kill_started(record: Path) -> None:
    pids = record / "pids"
    for pid in pids.read_text().split() if pids.exists() else []:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _slow_square(i: int) -> int:
    time.sleep(1)
    return i * i


@pytest.mark.slow
def test_walltime_limited_workers_are_replaced(tmp_path, monkeypatch):
    """Workers retire at their lifetime, before the walltime, and Adaptive starts new ones.

    Each "SLURM job" lives at most 10 s (``timeout``); workers retire after 5 ± 1 s; 8 tasks
    of 1 s on a one-CPU worker need 8 s, so more than one worker, one at a time. As the engine
    should, results are gathered as they complete and their futures released, so a retiring
    worker holds no unique data and leaves cleanly (its queued tasks move to the next worker).
    """
    import dask
    from distributed import Client, as_completed

    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    _fake_slurm(bin_dir, record, walltime_s=10)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = SlurmConfig(
        cores=1,
        memory="2GB",
        walltime="10s",
        lifetime_margin="5s",
        lifetime_stagger="1s",
        min_jobs=0,
        max_jobs=1,
        dashboard_address=None,
        interface="lo",
    )
    # a worker that left is forgotten (and replaced) after this delay (default 15 s)
    fast = dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"})
    results = {}
    try:
        with fast, make_slurm_cluster(config) as cluster, Client(cluster) as client:
            assert cluster.scheduler.allowed_failures == config.allowed_failures
            pending = as_completed(
                client.submit(_slow_square, i, key=f"job-{i}", resources={"cpus": 1, "memory": 1e9})
                for i in range(8)
            )
            deadline = time.monotonic() + 120
            for future in pending:
                results[future.key] = future.result(timeout=max(1, deadline - time.monotonic()))
                future.release()
            info = [w["resources"] for w in client.scheduler_info()["workers"].values()]
            assert all(r == worker_resources(config) for r in info)
        assert results == {f"job-{i}": i * i for i in range(8)}
        jobs = sorted(record.glob("job-*.sh"))
        assert len(jobs) >= 2, "a single worker ran everything: lifetime not reached"
        assert all("--lifetime 5s --lifetime-stagger 1s" in p.read_text() for p in jobs)
        logs = [p.read_text() for p in sorted(record.glob("job-*.log"))]
        # every worker but the last one (cancelled when the cluster closed) retired itself
        retired = sum("worker-lifetime-reached" in log for log in logs)
        assert retired >= len(logs) - 1, logs
    finally:
        _kill_started(record)


# ---------------------------------------------------------------------------------------------
# Jobs that do not fit
# ---------------------------------------------------------------------------------------------


def test_check_jobs_fit(tmp_path):
    config = _config(tmp_path, gpu=GpuConfig(max_gpus_per_node=4, signal_margin=120))
    fits = [
        Job("a", resources=Res(cpus=2, memory="8GB", time="1h")),
        Job("b", resources=Res(cpus=1, memory=None)),
        Job("g", resources=Res(cpus=16, memory="200GB", gpus=4, time="10h")),  # via sbatch
    ]
    check_jobs_fit(fits, config)
    cases = [
        (Res(cpus=3), r"job 'x' \(stage embed\) asks for 3 cpus; SLURM workers have 2"),
        (Res(memory="9GB"), r"asks for 9GB memory; SLURM workers have 8 GB"),
        (Res(time="01:50:00"), r"asks for time 01:50:00; SLURM workers live at least 01:48:00"),
        (Res(time="soon"), r"job 'x' \(stage embed\): cannot read time 'soon'"),
        (Res(gpus=8), r"asks for 8 GPUs; a node has 4 \(gpu\.max_gpus_per_node\)"),
        (Res(gpus=1, time="1m"), r"time 1m must exceed gpu\.signal_margin \(120 s\)"),
        (Res(cpus=0), r"cpus must be 1 or more"),
    ]
    for res, pattern in cases:
        with pytest.raises(ClusterConfigError, match=pattern):
            check_jobs_fit([*fits, Job("x", resources=res)], config)
    many = [Job(f"j{i}", resources=Res(cpus=99)) for i in range(5)]
    with pytest.raises(ClusterConfigError, match=r"j2.*; and 2 more$"):
        check_jobs_fit(many, config)
    local = LocalClusterConfig(threads_per_worker=2, memory_limit="4GB", gpus=0)
    with pytest.raises(ClusterConfigError, match=r"asks for 1 GPUs; local workers have 0"):
        check_jobs_fit([Job("g", resources=Res(gpus=1))], local)
    check_jobs_fit([Job("a", resources=Res(cpus=2, memory="4GB", time="10h"))], local)


def test_local_cluster_workers_declare_resources(monkeypatch):
    from distributed import Client

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    config = LocalClusterConfig(threads_per_worker=2, memory_limit="3GB", processes=False)
    assert worker_resources(config) == {"cpus": 2, "memory": 3_000_000_000, "gpus": 2}
    with make_cluster(config) as cluster, Client(cluster) as client:
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == worker_resources(config)
        assert info["nthreads"] == 2
        done = client.submit(sum, [1, 2], resources={"cpus": 2, "memory": 3e9, "gpus": 1})
        assert done.result(timeout=30) == 3


# ---------------------------------------------------------------------------------------------
# GPU jobs
# ---------------------------------------------------------------------------------------------

COMMAND = [
    "neurodecode", "run-stage", "embed",
    "--config", "configs/embed sub-01.json",
    "--inputs", "stores=stores/sub-01 run's.zarr",
    "--outputs", "model=$HOME/out;rm -rf x",
]  # fmt: skip


def _gpu_config(tmp_path: Path) -> SlurmConfig:
    return _config(
        tmp_path,
        partition="cpu",
        job_script_prologue=["echo prologue-ran"],
        gpu=GpuConfig(
            partition="gpu",
            gres="gpu:a100:{gpus}",
            signal_margin=120,
            job_extra_directives=["--constraint=a100"],
            job_script_prologue=["echo gpu-prologue-ran"],
        ),
    )


def _gpu_job(**res) -> Job:
    values = dict(cpus=8, memory="16GB", gpus=2, time="90m")
    values.update(res)
    return Job("sub-01/run 1", stage="embed", resources=Res(**values))


def test_gpu_sbatch_script(tmp_path):
    config = _gpu_config(tmp_path)
    script = gpu_sbatch_script(_gpu_job(), config, COMMAND, workdir=tmp_path)
    directives = [
        line.removeprefix("#SBATCH ") for line in script.splitlines() if "#SBATCH" in line
    ]
    for expected in [
        "--nodes=1",
        "--ntasks-per-node=2",
        "--gres=gpu:a100:2",
        "--cpus-per-task=4",  # 8 cpus over 2 GPUs
        f"--mem={math.ceil(16e9 / 2**20)}M",
        "--time=01:30:00",
        "--signal=SIGUSR1@120",
        "--requeue",
        "--open-mode=append",
        "--partition=gpu",
        "--account=lab42",
        "--qos=normal",
        "--constraint=a100",
        f"--chdir={tmp_path}",
    ]:
        assert expected in directives, expected
    (name,) = [d.removeprefix("--job-name=") for d in directives if d.startswith("--job-name=")]
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and "embed" in name and "sub-01" in name
    assert f"--output={tmp_path / 'logs' / name}-%j.out" in directives
    lines = script.rstrip("\n").splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[-1] == "srun " + shlex.join(COMMAND)
    assert script.index("echo prologue-ran") < script.index("echo gpu-prologue-ran")
    assert script.index("echo gpu-prologue-ran") < script.index("srun ")
    _bash_n(script, tmp_path, "gpu.sbatch")

    # Run it with a fake srun: the prologue runs, and every word of the command arrives intact.
    bin_dir = tmp_path / "bin"
    _executable(bin_dir, "srun", 'printf "%s\\0" "$@"\n')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    path = tmp_path / "gpu.sbatch"
    out = subprocess.run(["bash", str(path)], capture_output=True, env=env, check=True).stdout
    prologue, _, words = out.partition(b"gpu-prologue-ran\n")
    assert prologue == b"prologue-ran\n"
    assert words.split(b"\0")[:-1] == [w.encode() for w in COMMAND]


def test_gpu_script_defaults_and_refusals(tmp_path):
    config = SlurmConfig(partition="all", walltime="3h", log_directory=None)
    script = gpu_sbatch_script(
        _gpu_job(cpus=3, gpus=2, memory=None, time=None), config, ["x"], workdir=tmp_path
    )
    assert "#SBATCH --cpus-per-task=2\n" in script  # ceil(3 / 2)
    assert "#SBATCH --gres=gpu:2\n" in script
    assert "#SBATCH --time=03:00:00\n" in script  # the cluster's walltime
    assert "#SBATCH --partition=all\n" in script
    assert "--mem=" not in script and "--account" not in script
    assert re.search(rf"^#SBATCH --output={re.escape(str(tmp_path))}/nd-\S+-%j\.out$", script, re.M)
    fixed = SlurmConfig(gpu=GpuConfig(cpus_per_gpu=6))
    assert "--cpus-per-task=6\n" in gpu_sbatch_script(_gpu_job(), fixed, ["x"])
    with pytest.raises(ClusterConfigError, match=r"job 'sub-01/run 1' \(stage embed\) asks for no"):
        gpu_sbatch_script(_gpu_job(gpus=0), config, ["x"])
    with pytest.raises(ClusterConfigError, match=r"the command must be a non-empty list"):
        gpu_sbatch_script(_gpu_job(), config, [])
    with pytest.raises(ClusterConfigError, match=r"must exceed gpu\.signal_margin"):
        gpu_sbatch_script(_gpu_job(time="1m"), config, ["x"])


def _fake_sbatch(bin_dir: Path, record: Path, *, stdout: str, stderr: str = "", status: int = 0):
    _executable(
        bin_dir,
        "sbatch",
        f'printf "%s\\n" "$@" > {record}\n'
        f'printf "{stdout}"\nprintf "{stderr}" >&2\nexit {status}\n',
    )


def test_submit_and_wait(tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "args"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "job.sbatch"
    script.write_text(gpu_sbatch_script(_gpu_job(), _gpu_config(tmp_path), ["x"], workdir=tmp_path))

    _fake_sbatch(bin_dir, record, stdout="4242;cluster\\n")
    assert submit_and_wait(script) == 4242
    assert record.read_text().splitlines() == ["--wait", "--parsable", str(script)]

    _fake_sbatch(bin_dir, record, stdout="4243\\n", status=3)
    with pytest.raises(SlurmError) as info:
        submit_and_wait(script)
    assert re.fullmatch(
        rf"SLURM job 4243 \(job\.sbatch\) failed with exit status 3; see "
        rf"{re.escape(str(tmp_path / 'logs'))}/nd-\S+-4243\.out",
        str(info.value),
    ), str(info.value)

    _fake_sbatch(bin_dir, record, stdout="", stderr="sbatch: error: invalid partition", status=1)
    with pytest.raises(SlurmError, match=r"sbatch refused .*job\.sbatch \(exit status 1\): .*inv"):
        submit_and_wait(script)
    with pytest.raises(SlurmError, match=r"batch script .*missing\.sbatch does not exist"):
        submit_and_wait(tmp_path / "missing.sbatch")


def test_interrupted_wait_cancels_the_job(tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    record.mkdir()
    _executable(bin_dir, "sbatch", f"echo 555\ntouch {record}/submitted\nexec sleep 60\n")
    _executable(bin_dir, "scancel", f'echo "$@" > {record}/scancelled\n')
    script = tmp_path / "job.sbatch"
    script.write_text("#!/usr/bin/env bash\nsrun true\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    code = (
        f"from neurodecode.workflow.slurm import submit_and_wait; submit_and_wait({str(script)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (record / "submitted").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the id is printed before "submitted": let submit_and_wait read it
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert b"KeyboardInterrupt" in err
    assert (record / "scancelled").read_text().split() == ["555"]


def test_submit_without_sbatch(tmp_path, no_slurm):
    script = tmp_path / "job.sbatch"
    script.write_text("#!/usr/bin/env bash\nsrun true\n")
    with pytest.raises(SlurmError, match=r"^sbatch is not on PATH: GPU jobs are submitted"):
        submit_and_wait(script)


def test_run_gpu_job(tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "args"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    _fake_sbatch(bin_dir, record, stdout="77\\n")
    config, job = _gpu_config(tmp_path), _gpu_job()
    monkeypatch.chdir(tmp_path)
    assert run_gpu_job(job, config, COMMAND, tmp_path / "scripts") == 77
    (path,) = (tmp_path / "scripts").glob("*.sbatch")
    assert path.read_text() == gpu_sbatch_script(job, config, COMMAND, workdir=tmp_path)
    assert record.read_text().splitlines()[-1] == str(path)
    assert (tmp_path / "logs").is_dir()
