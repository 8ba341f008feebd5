"""Workflow files: ``workflows/*.yaml`` into a validated list of jobs.

A workflow names *steps*; each step runs one stage (``stage:``, default: the step's name) with
a base config file (``config:``) and ``params`` on top, once per combination of its ``foreach``
wildcards. Inputs and outputs are paths with ``{wildcard}`` and ``{var}`` placeholders::

    name: demo
    workdir: outputs/demo              # relative to the current folder (--workdir overrides)
    vars: {data: "{sample_data}/eeg"}  # {sample_data} is the sample-data setting
    defaults: {resources: {cpus: 1, memory: 2GB, time: 30m}}
    steps:
      simulate:
        config: ../pipelines/simulate.yaml      # relative to this file
        params: {n_subjects: 3}
        outputs: {stores: stores/sim}
      decode_sim:
        stage: decode
        foreach: {subject: ["01", "02", "03"]}
        inputs: {stores: "stores/sim/sub-{subject}"}
        outputs: {metrics: "decode/sim/sub-{subject}.json"}

``foreach`` values are a list, ``{catalog: ENTRY, entity: subject}`` (the entity's values
among the entry's files) or ``{stores: FOLDER, entity: subject}`` (among the stores that exist
there). An input is a path or glob (relative to the workdir), a list of them, or
``{catalog: ENTRY, <entity>: VALUE, ...}`` (the entry's files, filtered by entities). An input
that another job outputs (or that lies inside a folder it outputs), or that a glob matches
among other jobs' outputs, makes a dependency; any other input must exist. A glob that matches
no job's output matches files on disk instead (``*`` also matches ``/`` among outputs). A
step with ``optional: true`` is dropped, with a note, when its inputs or catalog files are
absent (the real sample data, say).

:func:`load_workflow` checks everything before anything runs and raises
:class:`WorkflowError` naming the step and the problem: unknown stage or parameter, unknown
wildcard, a cycle, a missing input, an output produced twice.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import deep_merge, get_settings
from ..pipelines import StageError, get_stage, validate_config

__all__ = [
    "Job",
    "Resources",
    "StepSpec",
    "Workflow",
    "WorkflowError",
    "WorkflowSpec",
    "import_stage_module",
    "load_workflow",
]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class WorkflowError(ValueError):
    """A workflow file that cannot run; the message names the file, the step and the problem."""


class Resources(BaseModel):
    """What one job needs: CPU cores, memory, GPUs and wall time.

    On Dask, ``cpus``, ``gpus`` and ``memory`` are worker resources each job takes while it
    runs; on SLURM they also size the jobs; ``time`` is the wall time a job may take.
    """

    model_config = ConfigDict(extra="forbid")

    cpus: int = Field(1, ge=1)
    memory: str = "2GB"
    gpus: int = Field(0, ge=0)
    time: str = "1h"

    @field_validator("memory")
    @classmethod
    def _parses(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            parse_bytes(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a memory size (e.g. 4GB)") from err
        return value

    @property
    def memory_bytes(self) -> int:
        from dask.utils import parse_bytes

        return parse_bytes(self.memory)


class StepSpec(BaseModel):
    """One step of a workflow file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    stage: str | None = None
    config: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    foreach: dict[str, list[Any] | dict[str, Any]] = Field(default_factory=dict)
    inputs: dict[str, str | list[str] | dict[str, Any]] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    optional: bool = False
    description: str = ""


class WorkflowSpec(BaseModel):
    """A workflow file."""

    model_config = ConfigDict(extra="forbid")

    name: str = "workflow"
    description: str = ""
    workdir: str = "."
    vars: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    modules: list[str] = Field(default_factory=list)
    steps: dict[str, StepSpec]

    @field_validator("defaults")
    @classmethod
    def _known_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - {"resources"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (defaults hold: resources)")
        return value


@dataclass
class Job:
    """One run of a stage: a step with its wildcards filled in.

    Attributes
    ----------
    id : str
        ``step`` or ``step[key=value,...]``.
    step : str
    stage : str
    wildcards : dict
    config : dict
        The validated config as JSON-ready data.
    inputs : dict of str to list of str
        Absolute input paths by role.
    outputs : dict of str to str
        Absolute output paths by role.
    resources : Resources
    depends : list of str
        Ids of the jobs whose outputs are among the inputs.
    """

    id: str
    step: str
    stage: str
    wildcards: dict[str, str]
    config: dict[str, Any]
    inputs: dict[str, list[str]]
    outputs: dict[str, str]
    resources: Resources
    depends: list[str] = field(default_factory=list)

    @property
    def input_paths(self) -> list[str]:
        return [p for paths in self.inputs.values() for p in paths]


@dataclass
class Workflow:
    """A validated workflow: its jobs in an order where every job follows its dependencies.

    ``modules`` are the stage modules the workflow imports besides the shipped ones (a lab's
    own stages), as Python module names or absolute file paths; workers import them too.
    """

    name: str
    path: Path
    workdir: Path
    jobs: list[Job]
    notes: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)

    @cached_property
    def by_id(self) -> dict[str, Job]:
        return {job.id: job for job in self.jobs}

    def steps(self) -> list[str]:
        return list(dict.fromkeys(job.step for job in self.jobs))

    def relative(self, path: str) -> str:
        """A path as the workflow shows it: relative to the workdir when inside it."""
        return _relative(path, self.workdir)

    def upstream(self, ids: Sequence[str]) -> set[str]:
        """``ids`` and every job they depend on, directly or not."""
        seen: set[str] = set()
        stack = list(ids)
        while stack:
            jid = stack.pop()
            if jid not in seen:
                seen.add(jid)
                stack.extend(self.by_id[jid].depends)
        return seen

    def select(self, names: Sequence[str]) -> list[str]:
        """The ids of jobs named by step, stage or job id.

        Raises
        ------
        WorkflowError
            If a name matches no job.
        """
        out = []
        for name in names:
            found = [j.id for j in self.jobs if name in (j.id, j.step, j.stage)]
            if not found:
                from difflib import get_close_matches

                close = get_close_matches(name, self.steps(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise WorkflowError(
                    f"{self.path}: no step, stage or job {name!r}{hint} "
                    f"(steps: {', '.join(self.steps())})"
                )
            out += found
        return list(dict.fromkeys(out))


def _relative(path: str, workdir: Path) -> str:
    """``path`` relative to ``workdir`` when inside it, else as it is."""
    try:
        return Path(path).relative_to(workdir).as_posix()
    except ValueError:
        return path


def import_stage_module(name: str) -> None:
    """Import a module that registers stages: a module name, or the path of a ``.py`` file."""
    import importlib
    import importlib.util
    import sys

    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    key = "neurodecode_stages_" + re.sub(r"\W", "_", name)
    if key in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(key, name)
    if spec is None or spec.loader is None:
        raise ImportError(f"{name} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)


def _fill(value: Any, names: Mapping[str, str], where: str) -> Any:
    """Substitute ``{name}`` placeholders in every string of ``value``."""
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in names:
                raise WorkflowError(
                    f"{where}: unknown wildcard or variable {{{m.group(1)}}} in {value!r} "
                    f"(known: {', '.join(sorted(names)) or 'none'})"
                )
            return str(names[m.group(1)])

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _fill(v, names, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names, where) for v in value]
    return value


class _Absent(Exception):
    """Inputs of an optional step are missing (the step is dropped)."""


class _Loader:
    """Expands one workflow file into jobs (the work of :func:`load_workflow`)."""

    def __init__(self, path: Path, spec: WorkflowSpec, workdir: Path) -> None:
        self.path = path
        self.spec = spec
        self.workdir = workdir
        settings = get_settings()
        self.names = {"sample_data": str(settings.sample_data), "workdir": str(workdir)}
        for key, value in spec.vars.items():
            self.names[key] = _fill(value, self.names, f"{path}: vars.{key}")
        self._catalog = None
        self._config_files: dict[Path, dict[str, Any]] = {}
        self.modules = []
        for name in spec.modules:
            module = _fill(name, self.names, f"{path}: modules")
            if module.endswith(".py"):
                file = Path(module)
                module = str((file if file.is_absolute() else path.parent / file).resolve())
            try:
                import_stage_module(module)
            except (ImportError, OSError) as err:
                raise WorkflowError(f"{path}: modules: cannot import {name!r} ({err})") from None
            self.modules.append(module)

    # ---------------------------------------------------------------- helpers
    @property
    def catalog(self):
        if self._catalog is None:
            from ..catalog import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    def _entry_files(self, where: str, name: str) -> list[dict[str, Any]]:
        if name not in self.catalog:
            from ..ingest.readers import suggest

            hint = suggest(name, self.catalog)
            raise WorkflowError(
                f"{where}: unknown catalog entry {name!r}{';' + hint if hint else ''}"
            )
        files = self.catalog[name].resolve_files()
        if not files:
            raise _Absent(f"catalog entry {name!r} has no file at {self.catalog[name].root_path()}")
        return files

    def _abs(self, path: str) -> str:
        p = Path(path)
        return os.path.normpath(p if p.is_absolute() else self.workdir / p)

    def _base_config(self, where: str, name: str) -> dict[str, Any]:
        path = Path(name)
        path = path if path.is_absolute() else (self.path.parent / path)
        path = path.resolve()
        if path not in self._config_files:
            if not path.is_file():
                raise WorkflowError(f"{where}: config file {path} does not exist")
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise WorkflowError(f"{where}: config file {path} is not valid YAML") from err
            if not isinstance(data, dict):
                raise WorkflowError(f"{where}: config file {path} must hold a mapping")
            self._config_files[path] = data
        return self._config_files[path]

    def _foreach(self, where: str, step: StepSpec) -> list[dict[str, str]]:
        axes = []
        for key, source in step.foreach.items():
            if isinstance(source, list):
                values = [str(_fill(v, self.names, where)) for v in source]
            elif "catalog" in source:
                unknown = set(source) - {"catalog", "entity"}
                if unknown:
                    raise WorkflowError(
                        f"{where}: foreach.{key}: unknown key {sorted(unknown)[0]!r}"
                    )
                entity = source.get("entity", key)
                files = self._entry_files(f"{where}: foreach.{key}", source["catalog"])
                values = sorted({f["entities"].get(entity, "") for f in files} - {""})
            elif "stores" in source:
                from ..store import find_recordings, open_recording

                folder = Path(self._abs(_fill(source["stores"], self.names, where)))
                entity = source.get("entity", key)
                stores = find_recordings(folder) if folder.exists() else []
                if not stores:
                    raise WorkflowError(
                        f"{where}: foreach.{key}: no recording store at {folder} (a folder that "
                        "a job of this workflow writes is not listed before it runs: give the "
                        "values as a list)"
                    )
                values = sorted(
                    {str(open_recording(s, check=False).attrs.get(entity, "")) for s in stores}
                    - {""}
                )
            else:
                raise WorkflowError(
                    f"{where}: foreach.{key} must be a list, {{catalog: ENTRY, entity: NAME}} "
                    "or {stores: FOLDER, entity: NAME}"
                )
            if not values:
                raise WorkflowError(f"{where}: foreach.{key} has no value")
            axes.append([(key, v) for v in values])
        return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]

    def _inputs(
        self, where: str, role: str, value: Any, names: Mapping[str, str]
    ) -> list[tuple[str, bool]]:
        """Input paths of one role as (absolute path or pattern, is_glob)."""
        if isinstance(value, Mapping):
            if "catalog" not in value:
                raise WorkflowError(f"{where}: inputs.{role}: a mapping input needs `catalog`")
            value = _fill(dict(value), names, where)
            files = self._entry_files(f"{where}: inputs.{role}", value["catalog"])
            wanted = {k: str(v) for k, v in value.items() if k != "catalog"}
            from ..store import clean_label

            chosen = [
                str(Path(f["path"]).resolve())
                for f in files
                if all(
                    clean_label(f["entities"].get(k, "")) == clean_label(v)
                    for k, v in wanted.items()
                )
            ]
            if not chosen:
                raise _Absent(f"catalog entry {value['catalog']!r} has no file with {wanted}")
            return [(p, False) for p in chosen]
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if not isinstance(item, str):
                raise WorkflowError(f"{where}: inputs.{role}: {item!r} is not a path")
            filled = self._abs(_fill(item, {**self.names, **names}, where))
            out.append((filled, _glob.has_magic(filled)))
        return out

    # ---------------------------------------------------------------- expansion
    def load(self) -> Workflow:
        jobs: list[Job] = []
        pending_inputs: dict[str, dict[str, list[tuple[str, bool]]]] = {}
        notes: list[str] = []
        defaults = self.spec.defaults.get("resources", {})
        for step_name, step in self.spec.steps.items():
            where = f"{self.path}: step {step_name}"
            try:
                stage = get_stage(step.stage or step_name)
            except StageError as err:
                raise WorkflowError(f"{where}: {err}") from None
            try:
                resources = Resources(**{**defaults, **step.resources})
            except ValidationError as err:
                raise WorkflowError(f"{where}: resources: {_pydantic(err)}") from None
            for role in step.inputs:
                if role not in stage.inputs:
                    raise WorkflowError(
                        f"{where}: stage {stage.name} has no input {role!r} "
                        f"(inputs: {', '.join(stage.inputs) or 'none'})"
                    )
            for role in step.outputs:
                if role not in stage.outputs:
                    raise WorkflowError(
                        f"{where}: stage {stage.name} has no output {role!r} "
                        f"(outputs: {', '.join(stage.outputs)})"
                    )
            for role in stage.outputs:
                if role not in step.outputs:
                    raise WorkflowError(f"{where}: output {role!r} is not given")
            base = self._base_config(where, step.config) if step.config else {}
            try:
                combos = self._foreach(where, step)
            except _Absent as why:
                if not step.optional:
                    raise WorkflowError(f"{where}: {why}") from None
                notes.append(f"step {step_name} left out: {why}")
                continue
            for combo in combos:
                names = {**self.names, **combo}
                jid = step_name + (
                    "[" + ",".join(f"{k}={v}" for k, v in combo.items()) + "]" if combo else ""
                )
                jwhere = f"{self.path}: job {jid}"
                params = _fill(deep_merge(base, step.params), names, jwhere)
                try:
                    cfg = validate_config(stage, params)
                except StageError as err:
                    raise WorkflowError(f"{jwhere}: {err}") from None
                try:
                    inputs = {
                        role: self._inputs(jwhere, role, value, combo)
                        for role, value in step.inputs.items()
                    }
                except _Absent as why:
                    if not step.optional:
                        raise WorkflowError(f"{jwhere}: {why}") from None
                    notes.append(f"job {jid} left out: {why}")
                    continue
                outputs = {
                    role: self._abs(_fill(value, names, jwhere))
                    for role, value in step.outputs.items()
                }
                jobs.append(
                    Job(
                        id=jid,
                        step=step_name,
                        stage=stage.name,
                        wildcards=dict(combo),
                        config=cfg.model_dump(mode="json"),
                        inputs={},
                        outputs=outputs,
                        resources=resources,
                    )
                )
                pending_inputs[jid] = inputs
        return self._link(jobs, pending_inputs, notes)

    def _link(
        self,
        jobs: list[Job],
        pending: dict[str, dict[str, list[tuple[str, bool]]]],
        notes: list[str],
    ) -> Workflow:
        producer: dict[str, str] = {}
        for job in jobs:
            for path in job.outputs.values():
                if path in producer:
                    raise WorkflowError(
                        f"{self.path}: output {self._rel(path)} is produced by both job "
                        f"{producer[path]} and job {job.id}"
                    )
                producer[path] = job.id
        outputs_sorted = sorted(producer)
        optional = {name for name, s in self.spec.steps.items() if s.optional}
        kept: list[Job] = []
        dropped: set[str] = set()
        for job in jobs:
            missing = None
            for role, items in pending[job.id].items():
                paths: list[str] = []
                for item, is_glob in items:
                    if is_glob:
                        rx = re.compile(fnmatch.translate(item))
                        found = {p for p in outputs_sorted if rx.match(p)}
                        if not found:  # no job writes a match: what is on disk
                            found = {
                                os.path.normpath(p)
                                for p in _glob.glob(item, recursive=True)
                                if not Path(p).name.startswith(".")
                            }
                        paths += sorted(found)
                    else:
                        owner = _owner(item, producer)
                        if owner is None and not os.path.exists(item):
                            missing = (role, item)
                            break
                        paths.append(item)
                if missing:
                    break
                job.inputs[role] = paths
            if missing is None:
                kept.append(job)
                continue
            role, item = missing
            why = f"input {role!r} {self._rel(item)} does not exist and no job writes it"
            if job.step not in optional:
                raise WorkflowError(f"{self.path}: job {job.id}: {why}")
            notes.append(f"job {job.id} left out: {why}")
            dropped.add(job.id)
        # a job left out takes the jobs that need its outputs with it, or fails the workflow
        gone = {p for j in jobs if j.id in dropped for p in j.outputs.values()}
        final: list[Job] = []
        for job in kept:
            lost = [p for p in job.input_paths if p in gone]
            if lost:
                if job.step in optional:
                    notes.append(f"job {job.id} left out: {self._rel(lost[0])} is left out")
                    gone |= set(job.outputs.values())
                    continue
                for role, paths in job.inputs.items():
                    job.inputs[role] = [p for p in paths if p not in gone]
            final.append(job)
        for job in final:
            owners = {_owner(p, producer) for p in job.input_paths} - {None, job.id}
            job.depends = sorted(owners)
            stage = get_stage(job.stage)
            for role, slot in stage.inputs.items():
                got = job.inputs.get(role, [])
                if slot.required and not got:
                    raise WorkflowError(
                        f"{self.path}: job {job.id}: input {role!r} matches nothing"
                    )
                if not slot.many and len(got) > 1:
                    raise WorkflowError(
                        f"{self.path}: job {job.id}: input {role!r} takes one path, "
                        f"it matches {len(got)}"
                    )
            self_loop = set(job.input_paths) & set(job.outputs.values())
            if self_loop:
                raise WorkflowError(
                    f"{self.path}: job {job.id} reads its own output {self._rel(self_loop.pop())}"
                )
        return Workflow(
            name=self.spec.name,
            path=self.path,
            workdir=self.workdir,
            jobs=_topological(final, self.path),
            notes=notes,
            modules=self.modules,
        )

    def _rel(self, path: str) -> str:
        return _relative(path, self.workdir)


def _owner(path: str, producer: Mapping[str, str]) -> str | None:
    """The job that writes ``path``, or a folder that holds it (None: no job does)."""
    p = path
    while True:
        if p in producer:
            return producer[p]
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def _topological(jobs: list[Job], path: Path) -> list[Job]:
    from graphlib import CycleError, TopologicalSorter

    by_id = {j.id: j for j in jobs}
    sorter = TopologicalSorter({j.id: j.depends for j in jobs})
    try:
        order = list(sorter.static_order())
    except CycleError as err:
        cycle = err.args[1]
        steps = " -> ".join(by_id[c].id for c in reversed(cycle))
        raise WorkflowError(f"{path}: cycle: {steps}") from None
    return [by_id[i] for i in order]


def _pydantic(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: "
        + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
        for e in err.errors()
    )


def load_workflow(path: str | os.PathLike, *, workdir: str | os.PathLike | None = None) -> Workflow:
    """Read, expand and validate a workflow file.

    Parameters
    ----------
    path : path-like
        A ``workflows/*.yaml`` file.
    workdir : path-like, optional
        Where relative inputs and outputs live (default: the file's ``workdir``, relative to
        the current folder).

    Returns
    -------
    Workflow

    Raises
    ------
    WorkflowError
        If the file cannot run: its message names the file, the step or job and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(f"{path}: no such workflow file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or err
        raise WorkflowError(f"{path}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise WorkflowError(f"{path}: a workflow file holds a mapping (name, workdir, steps)")
    try:
        spec = WorkflowSpec(**data)
    except ValidationError as err:
        raise WorkflowError(f"{path}: {_pydantic(err)}") from None
    root = Path(workdir if workdir is not None else spec.workdir).absolute()
    return _Loader(path.absolute(), spec, Path(os.path.normpath(root))).load()
