"""The stage contract: a typed config, declared inputs and outputs, and ``run``.

A stage turns input paths into output paths. :func:`run_stage` is the only way a stage runs
(from the CLI, ``neurodecode run-stage``, the workflow engine or a Snakefile rule):

1. the config is validated against the stage's pydantic model, the inputs are checked to exist;
2. the stage writes each output to a hidden temporary sibling (``.<name>.tmp-<token>``);
3. each output then replaces the old one by rename, and a provenance record is written beside
   it, in ``<parent>/.provenance/<name>.json``: the config, the fingerprint of every input, the
   fingerprint of every output, package versions, the git revision, host, start and end time.

The provenance record is written last, so an output is up to date exactly when its record
exists and holds the hash of the current job: a run killed at any point leaves the old output
with its old record, or the new output with the old record (whose hash no longer matches, so
the next run redoes the job), never a half-written output under the final name. A stage that
raises leaves its outputs and records as they were before the job.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from ..config import StageConfig
from .fingerprints import FingerprintCache

__all__ = [
    "STAGES",
    "Slot",
    "Stage",
    "StageError",
    "code_version",
    "get_stage",
    "job_hash",
    "provenance_path",
    "read_provenance",
    "register",
    "run_stage",
    "validate_config",
]

PROVENANCE_DIR = ".provenance"
_PACKAGES = (
    "numpy", "scipy", "pandas", "xarray", "zarr", "dask", "distributed", "mne", "scikit-learn",
    "torch", "lightning", "pydantic",
)  # fmt: skip


class StageError(ValueError):
    """A stage cannot run with what it was given (unknown stage, bad config, missing input).

    The message names the stage and the problem; it is a user error (no traceback).
    """


@dataclass(frozen=True)
class Slot:
    """One declared input or output of a stage.

    Attributes
    ----------
    help : str
        What the path holds.
    many : bool
        An input that takes any number of paths (outputs are always one path each).
    required : bool
        An input that must be given (an optional input may be an empty list).
    folder : bool
        The path is a folder (else a file).
    """

    help: str
    many: bool = False
    required: bool = True
    folder: bool = False


class Stage(ABC):
    """Base class of every stage.

    A subclass sets :attr:`name`, :attr:`Config` (a :class:`~neurodecode.config.StageConfig`),
    :attr:`inputs` and :attr:`outputs` (role → :class:`Slot`), and implements :meth:`run`.
    Register it with :func:`register`. Bump :attr:`version` when what the stage computes changes
    through code outside its module (its own module's source is part of :func:`code_version`).
    """

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    inputs: ClassVar[dict[str, Slot]] = {}
    outputs: ClassVar[dict[str, Slot]] = {}
    version: ClassVar[str] = "1"

    @abstractmethod
    def run(
        self, config: Any, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]
    ) -> dict[str, Any] | None:
        """Read ``inputs``, write every output path in ``outputs``.

        Parameters
        ----------
        config : Stage.Config
            The validated config.
        inputs : mapping of str to list of Path
            Paths of each input role (existing files or folders).
        outputs : mapping of str to Path
            Where to write each output role (a file or a folder, created by the stage; the
            parent exists). These are temporary paths: a stage must not derive anything from
            their names.

        Returns
        -------
        dict or None
            A short JSON-ready summary kept in the provenance record.
        """


#: Every registered stage by name.
STAGES: dict[str, Stage] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator adding a stage to :data:`STAGES`.

    Raises
    ------
    ValueError
        If another stage already has this name.
    """
    if cls.name in STAGES and type(STAGES[cls.name]) is not cls:
        raise ValueError(f"two stages are named {cls.name!r}")
    STAGES[cls.name] = cls()
    return cls


def get_stage(name: str) -> Stage:
    """Return the registered stage ``name``.

    Raises
    ------
    StageError
        If there is none (with the closest names).
    """
    from . import _load_stages

    _load_stages(name)
    if name not in STAGES:
        from difflib import get_close_matches

        close = get_close_matches(name, list(STAGES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StageError(f"unknown stage {name!r}{hint} (stages: {', '.join(sorted(STAGES))})")
    return STAGES[name]


def validate_config(stage: Stage, config: Mapping[str, Any] | BaseModel | None) -> StageConfig:
    """Validate ``config`` against ``stage.Config``.

    Raises
    ------
    StageError
        Naming the stage and every bad key (unknown keys come with the valid ones).
    """
    if isinstance(config, stage.Config):
        return config
    values = dict(config.model_dump() if isinstance(config, BaseModel) else config or {})
    try:
        return stage.Config(**values)
    except ValidationError as err:
        valid = ", ".join(stage.Config.model_fields)
        problems = []
        for e in err.errors():
            key = ".".join(map(str, e["loc"])) or "config"
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown parameter {key!r} (parameters: {valid})")
            else:
                problems.append(f"{key}: {e['msg'].removeprefix('Value error, ')}")
        raise StageError(f"stage {stage.name}: " + "; ".join(problems)) from None


@cache
def code_version(stage_name: str) -> str:
    """Digest of a stage's code: its declared ``version`` and the source of its module."""
    stage = get_stage(stage_name)
    module = sys.modules[type(stage).__module__]
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = ""
    digest = hashlib.sha256(f"{stage.version}\0{source}".encode()).hexdigest()
    return f"{stage.version}-{digest[:12]}"


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def job_hash(
    stage_name: str,
    config: Mapping[str, Any],
    input_digests: Mapping[str, Sequence[Sequence[str]]],
    outputs: Mapping[str, str],
) -> str:
    """The hash that decides whether a job is up to date.

    Parameters
    ----------
    stage_name : str
    config : mapping
        The validated config as JSON-ready data (``model_dump(mode="json")``).
    input_digests : mapping of str to list of (path, fingerprint)
    outputs : mapping of str to str
        Output paths as the job names them.

    Returns
    -------
    str
    """
    spec = {
        "stage": stage_name,
        "code": code_version(stage_name),
        "config": _canonical(config),
        "inputs": _canonical(input_digests),
        "outputs": _canonical(outputs),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def provenance_path(output: str | os.PathLike) -> Path:
    """Where the provenance record of an output lives: ``<parent>/.provenance/<name>.json``."""
    output = Path(output)
    return output.parent / PROVENANCE_DIR / f"{output.name}.json"


def read_provenance(output: str | os.PathLike) -> dict[str, Any] | None:
    """Return the provenance record of an output written by a stage, or None.

    Parameters
    ----------
    output : path-like
        An output path (file or folder) as the stage's job named it.

    Returns
    -------
    dict or None
        Keys ``stage``, ``job``, ``hash``, ``code_version``, ``config``, ``inputs`` (role →
        list of ``{"path", "fingerprint"}``), ``outputs`` (role → ``{"path", "fingerprint"}``),
        ``summary``, ``versions``, ``git``, ``host``, ``started``, ``finished``, ``seconds``.
        None when the output has no record (never written by a stage, or its job did not
        finish).
    """
    path = provenance_path(output)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@cache
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"neurodecode": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@cache
def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def remove_temporaries(output: Path) -> None:
    """Remove what interrupted runs left beside ``output`` (hidden ``.tmp-`` / ``.old-`` paths)."""
    if not output.parent.is_dir():
        return
    for prefix in (f".{output.name}.tmp-", f".{output.name}.old-"):
        for stale in output.parent.glob(prefix + "*"):
            _remove(stale)


def _replace(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final``; an old ``final`` is moved aside first, then deleted."""
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        _remove(old)
    else:
        os.rename(tmp, final)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _as_paths(value: Any) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


def run_stage(
    name: str,
    config: Mapping[str, Any] | BaseModel | None,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str | os.PathLike],
    *,
    job: str | None = None,
    expected_hash: str | None = None,
    cache: FingerprintCache | None = None,
    skip_up_to_date: bool = False,
) -> dict[str, Any]:
    """Run one stage with atomic outputs and a provenance record per output.

    Parameters
    ----------
    name : str
        A registered stage.
    config : mapping or StageConfig or None
        Its parameters (validated against ``Stage.Config``).
    inputs : mapping of str to path or list of paths
        Each input role's paths.
    outputs : mapping of str to path
        Each output role's final path.
    job : str, optional
        The job's name in its workflow (kept in the record).
    expected_hash : str, optional
        The job hash the caller planned with; if the inputs changed since, the record says so
        (``hash`` is always the hash of what was actually read).
    cache : FingerprintCache, optional
        Reuse digests of unchanged inputs.
    skip_up_to_date : bool
        Do not run when every output has a provenance record of this very job (same stage
        code, config, input fingerprints and output paths); return that record, with
        ``"up_to_date": True`` added.

    Returns
    -------
    dict
        The provenance record (as written beside every output). In a job of several tasks
        (``RANK`` or ``SLURM_PROCID`` set, as under ``srun`` with one task per GPU) every task
        runs the stage and only rank 0 commits the outputs; the others return a short record
        with ``"committed": False``.

    Raises
    ------
    StageError
        Unknown stage, bad config, a missing or unknown input or output role, a missing input
        path, or a stage that did not write one of its outputs. Nothing is written.
    """
    stage = get_stage(name)
    cfg = validate_config(stage, config)
    ins = {role: _as_paths(paths) for role, paths in inputs.items()}
    outs = {role: Path(path) for role, path in outputs.items()}
    _check_roles(stage, ins, outs)
    cache = cache or FingerprintCache()
    digests: dict[str, list[list[str]]] = {}
    for role, paths in ins.items():
        digests[role] = []
        for p in paths:
            if not p.exists():
                raise StageError(f"stage {stage.name}: input {role!r} {p} does not exist")
            digests[role].append([str(p), cache(p)])
    config_json = cfg.model_dump(mode="json")
    out_names = {role: str(p) for role, p in outs.items()}
    digest = job_hash(stage.name, config_json, digests, out_names)
    if skip_up_to_date:
        records = [read_provenance(p) for p in outs.values()]
        if all(r is not None and r.get("hash") == digest for r in records) and all(
            p.exists() for p in outs.values()
        ):
            return {**records[0], "up_to_date": True}

    token = uuid.uuid4().hex[:8]
    tmps: dict[str, Path] = {}
    for role, final in outs.items():
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(final)
        tmps[role] = final.with_name(f".{final.name}.tmp-{token}")
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    rank = _rank()
    try:
        summary = stage.run(cfg, ins, tmps)
        missing = [role for role, tmp in tmps.items() if not (tmp.exists() or tmp.is_symlink())]
        if missing:
            raise StageError(
                f"stage {stage.name} did not write its output {', '.join(map(repr, missing))}"
            )
        if rank == 0:
            for role, tmp in tmps.items():
                _replace(tmp, outs[role])
    except BaseException:
        for tmp in tmps.values():
            _remove(tmp)
        raise
    if rank != 0:  # one task per GPU under srun: only the first commits the outputs
        for tmp in tmps.values():
            _remove(tmp)
        return {"stage": stage.name, "job": job, "hash": digest, "rank": rank, "committed": False}
    record = {
        "stage": stage.name,
        "job": job,
        "hash": digest,
        "planned_hash": expected_hash,
        "code_version": code_version(stage.name),
        "config": config_json,
        "inputs": {
            role: [{"path": p, "fingerprint": d} for p, d in pairs]
            for role, pairs in digests.items()
        },
        "outputs": {role: {"path": str(p), "fingerprint": cache(p)} for role, p in outs.items()},
        "summary": _canonical(summary) if summary is not None else None,
        "versions": _versions(),
        "git": _git_revision(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for final in outs.values():
        _write_json(provenance_path(final), record)
    return record


def _rank() -> int:
    """This process's rank among the tasks of a multi-GPU job (0 when it is the only one)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _check_roles(stage: Stage, ins: dict[str, list[Path]], outs: dict[str, Path]) -> None:
    problems = []
    for role in ins:
        if role not in stage.inputs:
            problems.append(f"unknown input {role!r} (inputs: {', '.join(stage.inputs) or 'none'})")
    for role, slot in stage.inputs.items():
        got = ins.get(role, [])
        if slot.required and not got:
            problems.append(f"input {role!r} is required ({slot.help})")
        if not slot.many and len(got) > 1:
            problems.append(f"input {role!r} takes one path, got {len(got)}")
    for role in outs:
        if role not in stage.outputs:
            problems.append(
                f"unknown output {role!r} (outputs: {', '.join(stage.outputs) or 'none'})"
            )
    for role in stage.outputs:
        if role not in outs:
            problems.append(f"output {role!r} is not given ({stage.outputs[role].help})")
    if problems:
        raise StageError(f"stage {stage.name}: " + "; ".join(problems))
