"""Pipeline stages: typed configs, declared inputs and outputs, atomic outputs with provenance.

Each stage lives in its own module and registers itself in :data:`STAGES`; run one with
:func:`run_stage` (or ``neurodecode run-stage NAME``). Stage configs live in ``pipelines/*.yaml``.
"""

from __future__ import annotations

from importlib import import_module

from .base import (
    STAGES,
    Slot,
    Stage,
    StageError,
    code_version,
    get_stage,
    job_hash,
    provenance_path,
    read_provenance,
    register,
    run_stage,
    validate_config,
)

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

#: The shipped stages and their modules (imported on first use of a stage).
STAGE_MODULES = {
    "simulate": "simulate",
    "ingest": "ingest",
    "decode": "decode",
    "embed": "embed",
    "cross_subject": "cross_subject",
    "adapt": "adapt",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "reconstruct": "reconstruct",
    "report": "report",
}


def _load_stages(name: str | None = None) -> None:
    """Import the module of stage ``name`` (every shipped stage module when None or unknown)."""
    if name in STAGES:
        return
    modules = [STAGE_MODULES[name]] if name in STAGE_MODULES else list(STAGE_MODULES.values())
    for module in modules:
        import_module(f"{__name__}.{module}")
