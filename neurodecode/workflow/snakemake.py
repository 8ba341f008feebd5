"""Export a workflow's jobs as a Snakefile whose rules call ``neurodecode run-stage``.

Each job becomes one rule with its expanded inputs and outputs (folders as ``directory()``),
``threads``, ``resources`` (``mem_mb``, ``runtime`` in minutes, ``gpu``) and a shell command
running this Python's ``neurodecode run-stage`` with the job's config (a JSON file written
beside the Snakefile, in ``<Snakefile>.configs/``). ``rule all`` asks for every output. The
stage code is the same as the native engine's: outputs are written atomically with the same
provenance records.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

from .slurm import job_time_minutes
from .spec import Workflow

__all__ = ["export_snakemake", "rule_name"]


def rule_name(job_id: str) -> str:
    """A Snakemake rule name for a job id (``decode[subject=01]`` → ``decode__subject_01``)."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", job_id.replace("[", "__")).strip("_")
    return name if name and not name[0].isdigit() else f"job_{name}"


def export_snakemake(workflow: Workflow, out: str | os.PathLike) -> Path:
    """Write ``workflow`` as a Snakefile.

    Parameters
    ----------
    workflow : Workflow
    out : path-like
        The Snakefile to write (atomically); its job configs go to ``<out>.configs/``.

    Returns
    -------
    Path
        ``out``.
    """
    from ..pipelines import get_stage

    out = Path(out).absolute()
    configs = out.with_name(out.name + ".configs")
    configs.mkdir(parents=True, exist_ok=True)
    names = {job.id: rule_name(job.id) for job in workflow.jobs}
    if len(set(names.values())) != len(names):
        raise ValueError("two jobs map to one Snakemake rule name")
    python = shlex.quote(sys.executable)
    lines = [
        f"# Written by `neurodecode workflow export-snakemake {workflow.path.name}`: "
        "edit the workflow file, not this one.",
        f"# workflow: {workflow.path}",
        f"# workdir:  {workflow.workdir}",
        "",
        "rule all:",
        "    input:",
    ]
    finals = [p for job in workflow.jobs for p in job.outputs.values()]
    lines += [f"        {json.dumps(p)}," for p in finals]
    lines.append("")
    for job in workflow.jobs:
        stage = get_stage(job.stage)
        name = names[job.id]
        cfg = configs / f"{name}.json"
        cfg.write_text(json.dumps(job.config, indent=2, sort_keys=True))
        lines += [f"rule {name}:", f"    # job {job.id} (stage {job.stage})"]
        inputs = [p for p in job.input_paths]
        if inputs:
            lines.append("    input:")
            lines += [f"        {json.dumps(p)}," for p in inputs]
        lines.append("    output:")
        for role, path in job.outputs.items():
            value = json.dumps(path)
            if stage.outputs[role].folder:
                value = f"directory({value})"
            lines.append(f"        {role}={value},")
        r = job.resources
        lines.append(f"    threads: {r.cpus}")
        lines.append("    resources:")
        lines.append(f"        mem_mb={r.memory_bytes // 1_000_000},")
        lines.append(f"        runtime={job_time_minutes(r.time)},")
        if r.gpus:
            lines.append(f"        gpu={r.gpus},")
        command = [f"{python} -m neurodecode run-stage {shlex.quote(job.stage)}",
                   f"--config {shlex.quote(str(cfg))}"]  # fmt: skip
        command += [f"--module {shlex.quote(m)}" for m in workflow.modules]
        for role, paths in job.inputs.items():
            command += [f"--inputs {shlex.quote(f'{role}={p}')}" for p in paths]
        command += [f"--outputs {shlex.quote(f'{role}={p}')}" for role, p in job.outputs.items()]
        shell = " ".join(command).replace("{", "{{").replace("}", "}}")
        lines += ["    shell:", f"        {json.dumps(shell)}", ""]
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    return out
