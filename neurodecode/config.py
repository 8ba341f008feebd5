"""Settings shared by every part of neurodecode (one config system: pydantic models).

Settings come from, in order of precedence: explicit arguments, environment variables
(``NEURODECODE_*``), then defaults. Stage and workflow configs build on the same models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Settings", "SimulationConfig", "get_settings"]

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_sample_data() -> Path:
    """``../shared/data`` beside the repository (where CI and developers keep it)."""
    return _REPO_ROOT.parent / "shared" / "data"


class Settings(BaseModel):
    """Global settings.

    Attributes
    ----------
    sample_data : Path
        Folder of the real sample recordings used by tests, benchmarks and the data catalog
        (``NEURODECODE_SAMPLE_DATA``; default ``../shared/data`` beside the repository).
    store_root : Path
        Default root of recording stores (``NEURODECODE_STORE_ROOT``; default ``./stores``).
    catalog_dirs : list of Path
        A lab's own catalog folders, read after the shipped ``data_catalog/``
        (``NEURODECODE_CATALOG``: folders separated by ``os.pathsep``, ``:`` on POSIX; default
        none).
    """

    sample_data: Path = Field(default_factory=_default_sample_data)
    store_root: Path = Field(default_factory=lambda: Path("stores"))
    catalog_dirs: list[Path] = Field(default_factory=list)

    @field_validator("catalog_dirs", mode="before")
    @classmethod
    def _split_path_list(cls, value: Any) -> Any:
        if isinstance(value, str | os.PathLike):
            return [part for part in str(value).split(os.pathsep) if part.strip()]
        return value


#: Environment variable of each setting.
_ENV = {
    "sample_data": "NEURODECODE_SAMPLE_DATA",
    "store_root": "NEURODECODE_STORE_ROOT",
    "catalog_dirs": "NEURODECODE_CATALOG",
}


def get_settings() -> Settings:
    """Return the settings, reading ``NEURODECODE_*`` environment variables.

    Returns
    -------
    Settings
    """
    env = {name: os.environ[var] for name, var in _ENV.items() if var in os.environ}
    return Settings(**env)


class StageConfig(BaseModel):
    """Base of every stage config: strict fields, loadable from YAML with overrides."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> Self:
        """Read a config from YAML (or defaults), then apply the overrides that are not None.

        Parameters
        ----------
        path : path-like, optional
            YAML file with the config's fields at top level.
        **overrides
            Field values that take precedence (``None`` means "not given").

        Returns
        -------
        StageConfig
        """
        values: dict[str, Any] = {}
        if path is not None:
            values = yaml.safe_load(Path(path).read_text()) or {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class SimulationConfig(StageConfig):
    """What the simulator produces (see :func:`neurodecode.simulate.simulate_dataset`)."""

    dataset: str = "sim"
    n_subjects: int = Field(3, ge=1)
    modalities: list[str] = Field(default_factory=lambda: ["eeg", "fmri", "calcium", "spikes"])
    duration: float = Field(120.0, gt=0)
    n_runs: int = Field(1, ge=1)
    n_classes: int = Field(4, ge=2)
    n_images: int | None = Field(48, ge=1)
    seed: int = 0

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: list[str]) -> list[str]:
        from .simulate import _SIMULATORS

        unknown = sorted(set(value) - set(_SIMULATORS))
        if unknown:
            raise ValueError(
                f"the simulator has no modality {', '.join(map(repr, unknown))}; "
                f"valid modalities: {', '.join(sorted(_SIMULATORS))}"
            )
        return value
