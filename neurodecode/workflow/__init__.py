"""Workflows: ``workflows/*.yaml`` expanded into jobs and run on Dask.

:func:`load_workflow` validates a file into a :class:`Workflow`; :func:`plan` says which jobs
are out of date and why; :func:`run_workflow` runs them on a LocalCluster, a scheduler address
or SLURM (dask-jobqueue); :func:`export_snakemake` writes the same jobs as Snakemake rules.
"""

from __future__ import annotations

from .engine import Decision, JobResult, plan, run_workflow, state_dir
from .spec import Job, Resources, Workflow, WorkflowError, load_workflow

__all__ = [
    "Decision",
    "Job",
    "JobResult",
    "Resources",
    "Workflow",
    "WorkflowError",
    "load_workflow",
    "plan",
    "run_workflow",
    "state_dir",
]
