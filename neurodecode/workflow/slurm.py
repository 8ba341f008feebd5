"""Cluster configs for the workflow engine: SLURM through dask-jobqueue, GPU jobs through sbatch.

Two kinds of cluster config file (``workflows/cluster/*.yaml``), told apart by their
``executor`` key:

``executor: local``
    A :class:`distributed.LocalCluster` on this machine (:class:`LocalClusterConfig`).
``executor: slurm``
    A :class:`dask_jobqueue.SLURMCluster` (:class:`SlurmConfig`): the Dask scheduler runs in the
    engine's process (on a login node) and every worker is one SLURM job.

Every Dask worker declares the worker resources ``cpus``, ``memory`` (bytes) and ``gpus`` that
the engine requests per job (:func:`worker_resources`), so a job only lands on a worker that can
hold it; :func:`check_jobs_fit` refuses, before anything runs, a job that no worker could ever
hold (Dask would otherwise wait for it forever).

SLURM kills a job at its walltime, and with it the Dask worker and the stage it was running (the
known dask-jobqueue pain point). Workers are therefore started with ``--lifetime`` = walltime −
``lifetime_margin`` and ``--lifetime-stagger`` (so they do not all leave at once), and the
cluster is adaptive (``cluster.adapt(minimum_jobs=..., maximum_jobs=...)``): a worker that
reaches its lifetime retires cleanly and Adaptive submits a fresh job for the work left. A stage
still running on a retiring worker is re-run elsewhere; its outputs are atomic, so nothing
half-written survives, and :func:`check_jobs_fit` refuses a job whose ``time`` exceeds the
shortest worker lifetime.

GPU jobs (``resources.gpus > 0``) do not run inside Dask workers: :func:`gpu_sbatch_script`
writes a batch script shaped for Lightning's ``SLURMEnvironment`` (one node, ``--ntasks-per-node``
= devices, ``srun``, ``--signal=SIGUSR1@<margin>`` and ``--requeue`` for auto-requeue) and
:func:`submit_and_wait` (or :func:`run_gpu_job`) submits it with ``sbatch --wait`` and blocks
until it ends. Call it from a thread of the engine's own process rather than from a SLURM
worker: a worker that retires at its lifetime while waiting would leave the batch job running
and Dask would run the waiting task, hence submit the job, again.

Worker retirement is clean only when the retiring worker holds no result that exists nowhere
else; otherwise (e.g. it is the only worker) Dask closes it as lost, recomputes its results and
counts the loss against every job queued on it (``allowed_failures``). The engine should
therefore gather each job's small summary as it completes and release its future, and run
stages with ``skip_up_to_date=True`` so that a recomputed job is a cheap no-op.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import StageConfig

if TYPE_CHECKING:  # pragma: no cover
    from dask_jobqueue import SLURMCluster
    from distributed import LocalCluster

__all__ = [
    "ClusterConfigError",
    "GpuConfig",
    "JobLike",
    "LocalClusterConfig",
    "SlurmConfig",
    "SlurmError",
    "adapt_kwargs",
    "check_jobs_fit",
    "format_slurm_time",
    "gpu_sbatch_script",
    "job_time_minutes",
    "load_cluster_config",
    "make_cluster",
    "make_local_cluster",
    "make_slurm_cluster",
    "parse_cluster_config",
    "run_gpu_job",
    "slurm_cluster_kwargs",
    "submit_and_wait",
    "worker_lifetime_seconds",
    "worker_resources",
]


class ClusterConfigError(ValueError):
    """A cluster config or a job's resources are wrong (unknown key, bad value, a job no worker
    can hold). The message is one line naming the file or job and the key."""


class SlurmError(RuntimeError):
    """SLURM could not run something: ``sbatch`` missing, a refused submission, a failed job."""


class ResourcesLike(Protocol):
    """What a job asks for (the workflow's ``Resources``)."""

    cpus: int
    memory: str | int | None
    gpus: int
    time: str | None


class JobLike(Protocol):
    """A planned workflow job (the workflow's ``Job``): only these attributes are used."""

    id: str
    stage: str
    config: Mapping[str, Any]
    inputs: Mapping[str, list[str]]
    outputs: Mapping[str, str]
    resources: ResourcesLike


# ---------------------------------------------------------------------------------------------
# Times and sizes
# ---------------------------------------------------------------------------------------------

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_UNIT_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+))?(?::(\d+))?")
_CLOCK = re.compile(r"\d+(?::\d+){0,2}")
_TIME_HELP = "use e.g. '90m', '1h30m', '01:30:00' or '2-00:00:00'"


def _time_seconds(value: str | int | float) -> int:
    """Seconds in a SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or a
    duration with units (``90m``, ``1h30m``, ``2d``); a bare number is minutes, as in SLURM."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"cannot read time {value!r}: {_TIME_HELP}")
    if isinstance(value, int | float):
        seconds = float(value) * 60
    else:
        text = value.strip().lower()
        if match := _DAYS.fullmatch(text):
            days, hours, minutes, secs = (int(g or 0) for g in match.groups())
            if hours >= 24 or minutes >= 60 or secs >= 60:
                raise ValueError(f"cannot read time {value!r}: {_TIME_HELP}")
            seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
        elif _CLOCK.fullmatch(text):
            parts = [int(p) for p in text.split(":")]
            if any(p >= 60 for p in parts[1:]):
                raise ValueError(f"cannot read time {value!r}: {_TIME_HELP}")
            scale = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(parts)]
            seconds = sum(p * s for p, s in zip(parts, scale, strict=True))
        elif text and not _UNIT_PART.sub("", text).strip():  # only "<number><unit>" parts
            parts = _UNIT_PART.findall(text)
            if any(unit not in _UNITS for _, unit in parts):
                raise ValueError(f"cannot read time {value!r}: {_TIME_HELP}")
            seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
        else:
            raise ValueError(f"cannot read time {value!r}: {_TIME_HELP}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"time {value!r} must be positive")
    return math.ceil(seconds)


def job_time_minutes(value: str | int | float) -> int:
    """Read a job time as whole minutes (rounded up).

    Parameters
    ----------
    value : str or int or float
        ``"1h"``, ``"90m"``, ``"1h30m"``, ``"45s"``, ``"01:30:00"`` (``HH:MM:SS``), ``"90:00"``
        (``MM:SS``), ``"2-00:00:00"`` (``D-HH:MM:SS``, also ``D-HH`` and ``D-HH:MM``), or a bare
        number of minutes (SLURM's own reading of ``--time=90``).

    Returns
    -------
    int
        Minutes, at least 1.

    Raises
    ------
    ValueError
        When ``value`` is not a time or is not positive; the message says which forms work.

    Examples
    --------
    >>> job_time_minutes("1h"), job_time_minutes("01:30:00"), job_time_minutes("2-00:00:00")
    (60, 90, 2880)
    """
    return math.ceil(_time_seconds(value) / 60)


def format_slurm_time(seconds: int) -> str:
    """Format seconds as SLURM's ``HH:MM:SS`` (``D-HH:MM:SS`` from one day on).

    Examples
    --------
    >>> format_slurm_time(5400), format_slurm_time(2 * 86400 + 61)
    ('01:30:00', '2-00:01:01')
    """
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _memory_bytes(value: str | int) -> int:
    """Bytes in a size like ``"4GB"``, ``"512MiB"`` or an integer number of bytes."""
    from dask.utils import parse_bytes

    if isinstance(value, bool):
        raise ValueError(f"cannot read memory {value!r}: use e.g. '4GB' or '512MiB'")
    try:
        n = int(value) if isinstance(value, int) else parse_bytes(str(value))
    except (ValueError, TypeError):
        raise ValueError(f"cannot read memory {value!r}: use e.g. '4GB' or '512MiB'") from None
    if n <= 0:
        raise ValueError(f"memory {value!r} must be positive")
    return n


def _slurm_memory(n_bytes: int) -> str:
    """SLURM's ``--mem`` for ``n_bytes`` (whole MiB, rounded up; SLURM reads ``M`` as MiB)."""
    return f"{math.ceil(n_bytes / 2**20)}M"


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def _check_time(value: Any) -> Any:
    if value is not None:
        _time_seconds(value)
    return value


def _check_directives(lines: list[str]) -> list[str]:
    for line in lines:
        if "\n" in line or line.lstrip().startswith("#"):
            raise ValueError(
                f"directive {line!r}: give only the option (e.g. '--qos=normal'), one a line; "
                "'#SBATCH' is added"
            )
    return lines


class GpuConfig(BaseModel):
    """How GPU jobs are submitted (one batch job per workflow job, see :func:`gpu_sbatch_script`).

    Attributes
    ----------
    partition : str, optional
        GPU partition (default: the cluster's ``partition``).
    gres : str
        ``--gres`` template; ``{gpus}`` is replaced by the job's GPU count (e.g.
        ``"gpu:a100:{gpus}"``).
    cpus_per_gpu : int, optional
        ``--cpus-per-task`` of each task (one task per GPU); default: the job's ``cpus`` divided
        among its GPUs, rounded up.
    signal_margin : int
        Seconds before the time limit at which SLURM sends ``SIGUSR1`` (Lightning then saves a
        checkpoint and requeues the job).
    max_gpus_per_node : int, optional
        GPUs of one node; a job asking for more is refused before anything runs.
    job_extra_directives : list of str
        More ``#SBATCH`` options for GPU jobs only (e.g. ``--constraint=a100``).
    job_script_prologue : list of str
        Shell lines run after the cluster's prologue in GPU jobs (e.g. ``module load cuda``).
    """

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    gres: str = "gpu:{gpus}"
    cpus_per_gpu: int | None = Field(None, ge=1)
    signal_margin: int = Field(90, ge=1)
    max_gpus_per_node: int | None = Field(None, ge=1)
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)

    @field_validator("gres")
    @classmethod
    def _gres_template(cls, value: str) -> str:
        try:
            filled = value.format(gpus=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"{value!r} is not a template with only '{{gpus}}' (e.g. 'gpu:a100:{{gpus}}')"
            ) from None
        if filled == value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} must contain '{{gpus}}' and no spaces")
        return value

    _directives = field_validator("job_extra_directives")(_check_directives)


class _ClusterConfig(StageConfig):
    """Base of the cluster configs: strict keys, readable errors."""

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> Self:
        """Read a cluster config from YAML (or defaults), then apply the non-None overrides.

        Parameters
        ----------
        path : path-like, optional
            YAML file with the config's keys at top level.
        **overrides
            Keys that take precedence (``None`` means "not given").

        Returns
        -------
        SlurmConfig or LocalClusterConfig

        Raises
        ------
        ClusterConfigError
            One line naming the file and every bad key (unknown keys come with the valid
            ones).
        """
        values = _read_yaml(path) if path is not None else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return _validate(cls, values, str(path) if path is not None else cls.__name__)


class SlurmConfig(_ClusterConfig):
    """A SLURM cluster for the workflow engine (``executor: slurm``).

    Each Dask worker job asks SLURM for ``cores`` CPUs, ``memory`` and ``walltime`` and starts
    ``processes`` Dask workers; each worker declares ``cpus = cores / processes``,
    ``memory = memory / processes`` (bytes) and ``gpus = 0`` as Dask resources.

    Attributes
    ----------
    executor : {"slurm"}
        Kind of cluster config.
    partition : str, optional
        SLURM partition (``-p``); ``queue`` is accepted as another name.
    account : str, optional
        SLURM account (``-A``).
    cores : int
        CPUs per worker job.
    memory : str
        Memory per worker job, e.g. ``"16GB"``.
    walltime : str
        Time limit per worker job (``"04:00:00"``, ``"4h"``, ``"1-00:00:00"``; default four
        hours, so that jobs of the workflow's default ``time: 1h`` fit); written in SLURM's
        ``HH:MM:SS`` form.
    processes : int
        Dask workers per job (dividing ``cores`` and ``memory``; default one).
    job_name : str
        SLURM name of worker jobs.
    job_extra_directives : list of str
        More ``#SBATCH`` options, e.g. ``["--qos=normal", "--constraint=skylake"]``.
    job_script_prologue : list of str
        Shell lines run before the worker (and before GPU jobs), e.g. ``module load`` or
        ``source /path/to/venv/bin/activate``.
    worker_extra_args : list of str
        More ``dask worker`` options.
    local_directory : str, optional
        Workers' scratch folder (e.g. ``"$TMPDIR"``).
    log_directory : str, optional
        Folder of the SLURM logs of worker and GPU jobs (created when jobs are submitted).
    interface : str, optional
        Network interface of workers and scheduler, e.g. ``"ib0"``.
    dashboard_address : str, optional
        Dask dashboard of the scheduler (``None``: none).
    min_jobs, max_jobs : int
        Bounds of the adaptive cluster, in SLURM jobs.
    lifetime_margin : str
        Workers retire this long before the walltime (``--lifetime`` = walltime − margin).
    lifetime_stagger : str
        Lifetimes are spread by ± this much so that workers do not all retire at once; must
        be shorter than ``lifetime_margin``.
    allowed_failures : int
        How many workers may leave while holding a job before Dask marks the job failed
        (Dask's ``distributed.scheduler.allowed-failures``, default 3 there). A worker that
        retires at its lifetime while it is the only one (its results have nowhere to go)
        counts as lost for every job queued on it, so this is higher than Dask's default.
    python : str
        Python interpreter on the nodes (default: this one).
    gpu : GpuConfig
        How GPU jobs are submitted.
    """

    executor: Literal["slurm"] = "slurm"
    partition: str | None = Field(None, validation_alias=AliasChoices("partition", "queue"))
    account: str | None = None
    cores: int = Field(1, ge=1)
    memory: str = "4GB"
    walltime: str = "04:00:00"
    processes: int = Field(1, ge=1)
    job_name: str = "neurodecode-worker"
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    dashboard_address: str | None = ":8787"
    min_jobs: int = Field(0, ge=0)
    max_jobs: int = Field(4, ge=1)
    lifetime_margin: str = "5m"
    lifetime_stagger: str = "2m"
    allowed_failures: int = Field(10, ge=0)
    python: str = Field(default_factory=lambda: sys.executable)
    gpu: GpuConfig = Field(default_factory=GpuConfig)

    _times = field_validator("walltime", "lifetime_margin", "lifetime_stagger")(_check_time)
    _directives = field_validator("job_extra_directives")(_check_directives)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        _memory_bytes(value)
        return value

    @field_validator("job_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"{value!r}: use letters, digits, '_', '.' and '-' only")
        return value

    @field_validator("worker_extra_args")
    @classmethod
    def _own_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if arg.split("=")[0] in ("--lifetime", "--lifetime-stagger", "--resources"):
                raise ValueError(
                    f"{arg!r} is set from walltime, lifetime_margin, lifetime_stagger, cores "
                    "and memory; remove it"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.cores % self.processes:
            raise ValueError(f"cores ({self.cores}) must be a multiple of processes")
        if self.max_jobs < self.min_jobs:
            raise ValueError(f"max_jobs ({self.max_jobs}) is below min_jobs ({self.min_jobs})")
        margin = _time_seconds(self.lifetime_margin)
        stagger = _time_seconds(self.lifetime_stagger)
        if stagger >= margin:
            raise ValueError(
                f"lifetime_stagger ({self.lifetime_stagger}) must be shorter than "
                f"lifetime_margin ({self.lifetime_margin}), or workers outlive the walltime"
            )
        if _time_seconds(self.walltime) <= margin + stagger:
            raise ValueError(
                f"walltime ({self.walltime}) must exceed lifetime_margin + lifetime_stagger "
                f"({self.lifetime_margin} + {self.lifetime_stagger})"
            )
        return self


def _visible_gpus() -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


class LocalClusterConfig(_ClusterConfig):
    """A Dask ``LocalCluster`` on this machine (``executor: local``).

    Attributes
    ----------
    executor : {"local"}
        Kind of cluster config.
    n_workers : int
        Worker processes.
    threads_per_worker : int, optional
        Threads (and ``cpus`` resource) per worker; default: this machine's CPUs shared among
        the workers.
    memory_limit : str
        Memory per worker (``"auto"``: this machine's memory shared among the workers).
    gpus : int or "auto"
        ``gpus`` resource per worker (``"auto"``: the visible GPUs shared among the workers).
    processes : bool
        Workers in their own processes (``False``: threads of the engine's process).
    dashboard_address : str, optional
        Dask dashboard (``None``: none).
    """

    executor: Literal["local"] = "local"
    n_workers: int = Field(1, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str = "auto"
    gpus: int | Literal["auto"] = "auto"
    processes: bool = True
    dashboard_address: str | None = None

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or 'auto'")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if value != "auto":
            _memory_bytes(value)
        return value

    def threads(self) -> int:
        """Threads of each worker."""
        return self.threads_per_worker or max(1, (os.cpu_count() or 1) // self.n_workers)

    def memory_bytes(self) -> int:
        """Memory limit of each worker, in bytes."""
        if self.memory_limit == "auto":
            from distributed.system import MEMORY_LIMIT

            return int(MEMORY_LIMIT // self.n_workers)
        return _memory_bytes(self.memory_limit)

    def gpus_per_worker(self) -> int:
        """GPUs of each worker."""
        if self.gpus == "auto":
            return _visible_gpus() // self.n_workers
        return int(self.gpus)


_EXECUTORS: dict[str, type[_ClusterConfig]] = {
    "slurm": SlurmConfig,
    "local": LocalClusterConfig,
}


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path)
    try:
        values = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ClusterConfigError(f"cluster config {file} does not exist") from None
    except OSError as err:
        raise ClusterConfigError(f"cluster config {file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ClusterConfigError(f"cluster config {file}{where}: {problem}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ClusterConfigError(
            f"cluster config {file}: expected keys at top level, got {type(values).__name__}"
        )
    return values


def _validate(cls: type[_ClusterConfig], values: Mapping[str, Any], source: str) -> Any:
    try:
        return cls(**values)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(part) for part in e["loc"]]
            key = ".".join(loc) or "config"
            if e["type"] == "extra_forbidden":
                model: type[BaseModel] = GpuConfig if loc[:1] == ["gpu"] else cls
                valid = ", ".join(model.model_fields)
                problems.append(f"unknown key {key!r} (keys: {valid})")
            else:
                msg = e["msg"].removeprefix("Value error, ")
                problems.append(f"{key}: {msg}")
        raise ClusterConfigError(f"cluster config {source}: " + "; ".join(problems)) from None


def parse_cluster_config(
    values: Mapping[str, Any], source: str = "cluster config"
) -> SlurmConfig | LocalClusterConfig:
    """Validate a cluster config given as a mapping (e.g. a section of a workflow file).

    Parameters
    ----------
    values : mapping
        The config's keys; ``executor`` (``"slurm"`` or ``"local"``) says which kind.
    source : str
        Where the values come from, named in errors.

    Returns
    -------
    SlurmConfig or LocalClusterConfig

    Raises
    ------
    ClusterConfigError
        Missing or unknown ``executor``, unknown keys or bad values.
    """
    if not isinstance(values, Mapping):
        raise ClusterConfigError(f"cluster config {source}: expected a mapping of keys")
    executor = values.get("executor")
    if executor not in _EXECUTORS:
        got = "missing" if executor is None else f"{executor!r}"
        raise ClusterConfigError(
            f"cluster config {source}: key 'executor' is {got} (use one of: "
            f"{', '.join(_EXECUTORS)})"
        )
    return _validate(_EXECUTORS[executor], values, source)


def load_cluster_config(path: str | os.PathLike) -> SlurmConfig | LocalClusterConfig:
    """Read a cluster config file (``workflows/cluster/*.yaml``).

    Parameters
    ----------
    path : path-like
        YAML file whose ``executor`` key is ``slurm`` or ``local``.

    Returns
    -------
    SlurmConfig or LocalClusterConfig

    Raises
    ------
    ClusterConfigError
        A missing or unreadable file, bad YAML, unknown keys or bad values (one line naming
        the file and the key).
    """
    return parse_cluster_config(_read_yaml(path), str(path))


# ---------------------------------------------------------------------------------------------
# Worker resources and job checks
# ---------------------------------------------------------------------------------------------


def worker_resources(config: SlurmConfig | LocalClusterConfig) -> dict[str, float]:
    """Dask resources each worker declares: ``cpus``, ``memory`` (bytes) and ``gpus``.

    Parameters
    ----------
    config : SlurmConfig or LocalClusterConfig

    Returns
    -------
    dict of str to float
        The engine requests the same names per job (``client.submit(..., resources=...)``).
        SLURM workers have no GPU (GPU jobs go through :func:`gpu_sbatch_script`).
    """
    if isinstance(config, SlurmConfig):
        return {
            "cpus": config.cores // config.processes,
            "memory": _memory_bytes(config.memory) // config.processes,
            "gpus": 0,
        }
    return {
        "cpus": config.threads(),
        "memory": config.memory_bytes(),
        "gpus": config.gpus_per_worker(),
    }


def worker_lifetime_seconds(config: SlurmConfig) -> tuple[int, int]:
    """The ``--lifetime`` and ``--lifetime-stagger`` of SLURM workers, in seconds.

    Returns
    -------
    lifetime, stagger : int
        ``lifetime`` = walltime − ``lifetime_margin``; a worker retires after
        ``lifetime ± stagger``, always before the walltime.
    """
    lifetime = _time_seconds(config.walltime) - _time_seconds(config.lifetime_margin)
    return lifetime, _time_seconds(config.lifetime_stagger)


def _job_name(job: JobLike) -> str:
    return f"{job.stage}-{job.id}"


def _job_problems(
    job: JobLike, config: SlurmConfig | LocalClusterConfig, have: Mapping[str, float]
) -> list[str]:
    """What keeps ``job`` from running on ``config``'s workers (``have``: their resources)."""
    res = job.resources
    where = f"job {job.id!r} (stage {job.stage})"
    try:
        memory = _memory_bytes(res.memory) if res.memory is not None else 0
        seconds = _time_seconds(res.time) if res.time is not None else None
    except ValueError as err:
        return [f"{where}: {err}"]
    if res.cpus < 1 or res.gpus < 0:
        return [f"{where}: cpus must be 1 or more and gpus 0 or more"]
    if isinstance(config, SlurmConfig) and res.gpus > 0:
        limit = config.gpu.max_gpus_per_node
        if limit is not None and res.gpus > limit:
            return [f"{where} asks for {res.gpus} GPUs; a node has {limit} (gpu.max_gpus_per_node)"]
        total = seconds if seconds is not None else _time_seconds(config.walltime)
        if total <= config.gpu.signal_margin:
            return [
                f"{where}: time {res.time or config.walltime} must exceed gpu.signal_margin "
                f"({config.gpu.signal_margin} s)"
            ]
        return []
    kind = "SLURM workers" if isinstance(config, SlurmConfig) else "local workers"
    problems = []
    if res.cpus > have["cpus"]:
        problems.append(f"{where} asks for {res.cpus} cpus; {kind} have {have['cpus']}")
    if memory > have["memory"]:
        problems.append(
            f"{where} asks for {res.memory} memory; {kind} have {have['memory'] / 1e9:.3g} GB"
        )
    if res.gpus > have["gpus"]:
        problems.append(f"{where} asks for {res.gpus} GPUs; {kind} have {have['gpus']:g}")
    if isinstance(config, SlurmConfig) and seconds is not None:
        lifetime, stagger = worker_lifetime_seconds(config)
        if seconds > lifetime - stagger:
            problems.append(
                f"{where} asks for time {res.time}; SLURM workers live at least "
                f"{format_slurm_time(lifetime - stagger)} (walltime {config.walltime} - "
                f"lifetime_margin - lifetime_stagger): raise walltime"
            )
    return problems


def check_jobs_fit(jobs: Iterable[JobLike], config: SlurmConfig | LocalClusterConfig) -> None:
    """Refuse, before anything runs, jobs that no worker of ``config`` can ever run.

    Dask keeps a task whose resource request no worker satisfies waiting forever; this turns
    that into an error naming the job. CPU jobs must fit one worker's ``cpus``, ``memory`` and
    (on SLURM) the shortest worker lifetime; GPU jobs on SLURM must fit a node
    (``gpu.max_gpus_per_node``) and outlast ``gpu.signal_margin``.

    Parameters
    ----------
    jobs : iterable of JobLike
    config : SlurmConfig or LocalClusterConfig

    Raises
    ------
    ClusterConfigError
        Naming the first three jobs that do not fit and how many more there are.
    """
    have = worker_resources(config)
    problems = [p for job in jobs for p in _job_problems(job, config, have)]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ClusterConfigError("; ".join(problems[:3]) + more)


# ---------------------------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------------------------


def slurm_cluster_kwargs(config: SlurmConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`dask_jobqueue.SLURMCluster` for ``config``.

    Workers get ``--lifetime`` (walltime − margin), ``--lifetime-stagger`` and ``--resources
    cpus=...,memory=...,gpus=0``; the walltime is written as ``HH:MM:SS``.

    Parameters
    ----------
    config : SlurmConfig

    Returns
    -------
    dict
    """
    lifetime, stagger = worker_lifetime_seconds(config)
    res = worker_resources(config)
    resources = ",".join(f"{name}={int(value)}" for name, value in res.items())
    kwargs: dict[str, Any] = {
        "queue": config.partition,
        "account": config.account,
        "cores": config.cores,
        "memory": config.memory,
        "processes": config.processes,
        "walltime": format_slurm_time(_time_seconds(config.walltime)),
        "job_name": config.job_name,
        "job_extra_directives": list(config.job_extra_directives),
        "job_script_prologue": list(config.job_script_prologue),
        "worker_extra_args": [
            *config.worker_extra_args,
            *("--lifetime", f"{lifetime}s"),
            *("--lifetime-stagger", f"{stagger}s"),
            *("--resources", resources),
        ],
        "local_directory": config.local_directory,
        "log_directory": config.log_directory,
        "python": config.python,
        "scheduler_options": {"dashboard_address": config.dashboard_address},
    }
    if config.interface is not None:
        kwargs["interface"] = config.interface
    return kwargs


def adapt_kwargs(config: SlurmConfig) -> dict[str, int]:
    """Arguments of ``SLURMCluster.adapt``: ``minimum_jobs`` and ``maximum_jobs``.

    Adaptive keeps between these many SLURM jobs and submits a new one when a worker leaves
    (its lifetime reached, its walltime hit, its node lost) while work remains.
    """
    return {"minimum_jobs": config.min_jobs, "maximum_jobs": config.max_jobs}


def _require(command: str, why: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise SlurmError(f"{command} is not on PATH: {why}")
    return found


def make_slurm_cluster(config: SlurmConfig, *, adapt: bool = True) -> SLURMCluster:
    """Start a Dask scheduler whose workers are SLURM jobs.

    Parameters
    ----------
    config : SlurmConfig
    adapt : bool
        Make the cluster adaptive (``cluster.adapt(**adapt_kwargs(config))``), which submits
        jobs with ``sbatch`` as work arrives and replaces workers that leave. With ``False``
        nothing is ever submitted and SLURM is not needed (e.g. to print
        ``cluster.job_script()``).

    Returns
    -------
    dask_jobqueue.SLURMCluster
        Close it (or use it as a context manager) to cancel its jobs.

    Raises
    ------
    SlurmError
        ``dask-jobqueue`` is not installed, or ``adapt`` and ``sbatch`` is not on PATH.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise SlurmError(
            "the SLURM executor needs dask-jobqueue: pip install 'neurodecode[hpc]'"
        ) from None
    if adapt:
        _require("sbatch", "the SLURM executor runs where SLURM jobs can be submitted")
    if config.log_directory is not None:
        Path(os.path.expandvars(config.log_directory)).mkdir(parents=True, exist_ok=True)
    import dask

    # the scheduler (started here, in this process) reads its allowed failures when created
    with dask.config.set({"distributed.scheduler.allowed-failures": config.allowed_failures}):
        cluster = SLURMCluster(**slurm_cluster_kwargs(config))
    if adapt:
        cluster.adapt(**adapt_kwargs(config))
    return cluster


def make_local_cluster(config: LocalClusterConfig) -> LocalCluster:
    """Start a Dask ``LocalCluster`` whose workers declare :func:`worker_resources`.

    Parameters
    ----------
    config : LocalClusterConfig

    Returns
    -------
    distributed.LocalCluster
    """
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=config.threads(),
        memory_limit=config.memory_bytes(),
        processes=config.processes,
        resources=worker_resources(config),
        dashboard_address=config.dashboard_address,
        silence_logs=logging.CRITICAL,  # a failed job is reported by the engine, with its name
    )


def make_cluster(
    config: SlurmConfig | LocalClusterConfig, *, adapt: bool = True
) -> SLURMCluster | LocalCluster:
    """Start the cluster a config describes (:func:`make_slurm_cluster` or
    :func:`make_local_cluster`)."""
    if isinstance(config, SlurmConfig):
        return make_slurm_cluster(config, adapt=adapt)
    return make_local_cluster(config)


# ---------------------------------------------------------------------------------------------
# GPU jobs
# ---------------------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "job"


def _gpu_log_dir(config: SlurmConfig, workdir: Path) -> Path:
    """Folder of GPU job logs: ``log_directory`` (relative to ``workdir``), else ``workdir``."""
    return workdir / os.path.expandvars(config.log_directory or ".")


def gpu_sbatch_script(
    job: JobLike,
    config: SlurmConfig,
    command: list[str],
    *,
    workdir: str | os.PathLike | None = None,
) -> str:
    """A batch script running ``command`` on one node with ``job.resources.gpus`` GPUs.

    The shape Lightning's ``SLURMEnvironment`` expects: one task per GPU
    (``--ntasks-per-node`` = devices) started by ``srun``; ``--signal=SIGUSR1@<margin>`` so
    that Lightning checkpoints and requeues itself before the time limit; ``--requeue``, and
    ``--open-mode=append`` so that a requeued job adds to its log.

    Parameters
    ----------
    job : JobLike
        A job with ``resources.gpus > 0``; ``resources.time`` (default: the cluster's
        ``walltime``), ``cpus`` and ``memory`` size the request.
    config : SlurmConfig
        Partition, account, prologue, log folder and the ``gpu`` section.
    command : list of str
        The command each task runs, e.g. ``["neurodecode", "run-stage", "embed", "--config",
        "cfg.json", ...]``; every word is shell-quoted.
    workdir : path-like, optional
        Folder the job runs in (``--chdir``; default: the current folder), so that relative
        paths in ``command`` mean what they mean here.

    Returns
    -------
    str
        The script (``bash``).

    Raises
    ------
    ClusterConfigError
        The job has no GPU, does not fit a node, or bad resources.
    """
    res = job.resources
    where = f"job {job.id!r} (stage {job.stage})"
    if res.gpus < 1:
        raise ClusterConfigError(f"{where} asks for no GPU: it runs on a Dask worker")
    if not command or not all(isinstance(word, str) for word in command):
        raise ClusterConfigError(f"{where}: the command must be a non-empty list of strings")
    problems = _job_problems(job, config, worker_resources(config))
    if problems:
        raise ClusterConfigError(problems[0])
    gpu = config.gpu
    seconds = _time_seconds(res.time) if res.time is not None else _time_seconds(config.walltime)
    cpus = gpu.cpus_per_gpu or max(1, math.ceil(res.cpus / res.gpus))
    name = _safe_name(f"nd-{_job_name(job)}")
    folder = Path(workdir).absolute() if workdir is not None else Path.cwd()
    logs = _gpu_log_dir(config, folder)
    directives = [
        f"--job-name={name}",
        "--nodes=1",
        f"--ntasks-per-node={res.gpus}",
        f"--gres={gpu.gres.format(gpus=res.gpus)}",
        f"--cpus-per-task={cpus}",
    ]
    if res.memory is not None:
        directives.append(f"--mem={_slurm_memory(_memory_bytes(res.memory))}")
    directives += [
        f"--time={format_slurm_time(seconds)}",
        f"--signal=SIGUSR1@{gpu.signal_margin}",
        "--requeue",
        "--open-mode=append",
        f"--output={logs / (name + '-%j.out')}",
        f"--chdir={folder}",
    ]
    partition = gpu.partition or config.partition
    if partition is not None:
        directives.append(f"--partition={partition}")
    if config.account is not None:
        directives.append(f"--account={config.account}")
    directives += [*config.job_extra_directives, *gpu.job_extra_directives]
    lines = [
        "#!/usr/bin/env bash",
        *(f"#SBATCH {d}" for d in directives),
        "",
        "# neurodecode job " + " ".join(f"{job.id} (stage {job.stage})".split()),
        "set -eo pipefail",
        *config.job_script_prologue,
        *gpu.job_script_prologue,
        "srun " + shlex.join(command),
        "",
    ]
    return "\n".join(lines)


def _log_of(script: str) -> str | None:
    match = re.search(r"^#SBATCH --output=(\S+)", script, flags=re.MULTILINE)
    return match.group(1) if match else None


def submit_and_wait(script_path: str | os.PathLike) -> int:
    """Submit a batch script with ``sbatch --wait --parsable`` and wait until the job ends.

    A requeued job (Lightning's SIGUSR1 requeue) is still the same job: ``sbatch --wait``
    returns when it finally ends. If this call is interrupted, the job is cancelled.

    Parameters
    ----------
    script_path : path-like
        The batch script (e.g. written from :func:`gpu_sbatch_script`).

    Returns
    -------
    int
        The SLURM job id of the job, which ended with status 0.

    Raises
    ------
    SlurmError
        ``sbatch`` is not on PATH, the script does not exist, ``sbatch`` refused it, or the
        job failed (naming its id, exit status and log).
    """
    sbatch = _require("sbatch", "GPU jobs are submitted to SLURM (use a SLURM login node)")
    path = Path(script_path)
    if not path.is_file():
        raise SlurmError(f"batch script {path} does not exist")
    job_id: int | None = None
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            [sbatch, "--wait", "--parsable", str(path)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as proc,
    ):
        try:  # --parsable prints "<id>[;<cluster>]" at submission, then --wait waits
            first = proc.stdout.readline() if proc.stdout is not None else ""
            if match := re.match(r"\s*(\d+)", first):
                job_id = int(match.group(1))
            status = proc.wait()
        except BaseException:  # interrupted (Ctrl-C, a cancelled task): do not leave the job
            proc.kill()
            scancel = shutil.which("scancel")
            if job_id is not None and scancel is not None:
                subprocess.run([scancel, str(job_id)], capture_output=True, check=False)
            raise
        errors.seek(0)
        message = " ".join(errors.read().split())[-300:]
    if job_id is None:
        raise SlurmError(
            f"sbatch refused {path} (exit status {status}): {message or 'no job id printed'}"
        )
    if status != 0:
        log = _log_of(path.read_text())
        see = f"; see {log.replace('%j', str(job_id))}" if log else ""
        raise SlurmError(f"SLURM job {job_id} ({path.name}) failed with exit status {status}{see}")
    return job_id


def run_gpu_job(
    job: JobLike,
    config: SlurmConfig,
    command: list[str],
    script_dir: str | os.PathLike,
    *,
    workdir: str | os.PathLike | None = None,
) -> int:
    """Write a GPU job's batch script into ``script_dir`` and run it to the end.

    Parameters
    ----------
    job : JobLike
    config : SlurmConfig
    command : list of str
        What ``srun`` starts in each task (see :func:`gpu_sbatch_script`).
    script_dir : path-like
        Folder of the scripts (created); the script is ``<stage>-<job id>.sbatch``.
    workdir : path-like, optional
        Folder the job runs in (default: the current folder).

    Returns
    -------
    int
        The SLURM job id.

    Raises
    ------
    ClusterConfigError, SlurmError
        See :func:`gpu_sbatch_script` and :func:`submit_and_wait`.
    """
    here = Path(workdir).absolute() if workdir is not None else Path.cwd()
    script = gpu_sbatch_script(job, config, command, workdir=here)
    folder = Path(script_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _gpu_log_dir(config, here).mkdir(parents=True, exist_ok=True)  # SLURM does not create it
    path = folder / f"{_safe_name(_job_name(job))}.sbatch"
    path.write_text(script)
    return submit_and_wait(path)
