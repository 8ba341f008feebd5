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

#: The modules of the shipped stages (imported on first use of the registry).
STAGE_MODULES = ("simulate", "ingest", "decode", "embed", "report")


def _load_stages() -> None:
    for name in STAGE_MODULES:
        try:
            import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a stage module not written yet
            if err.name != f"{__name__}.{name}":
                raise
