"""Settings shared by every part of neurodecode (one config system: pydantic models).

Settings come from, in order of precedence: explicit arguments, environment variables
(``NEURODECODE_*``), then defaults. Stage and workflow configs build on the same models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


#: Parameters of the simulators that :func:`neurodecode.simulate.simulate_dataset` sets itself
#: (not settable through ``SimulationConfig.options``).
_SET_BY_DATASET = frozenset({
    "latent", "subject", "run", "seed", "split", "split_gap", "duration", "n_classes",
    "image_classes", "image_params",
})  # fmt: skip


def _option_parameters(key: str) -> list[str]:
    """Keyword parameters that ``options[key]`` may set (``key``: a modality or ``latent``)."""
    import inspect

    from . import simulate as sim

    fixed = set(_SET_BY_DATASET)
    if key == "latent":
        func = sim.simulate_latent
    elif key in ("seeg", "ecog"):  # both wrap simulate_ieeg with their own kind
        func, fixed = sim.simulate_ieeg, fixed | {"kind"}
    else:
        func = sim._SIMULATORS[key]
    return [
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in fixed
    ]


class SimulationConfig(StageConfig):
    """What the simulator produces (see :func:`neurodecode.simulate.simulate_dataset`).

    Attributes
    ----------
    dataset : str
        Name of the dataset (its folder under a store root).
    n_subjects, n_runs, n_classes : int
    modalities : list of str
    duration : float
        Seconds per run.
    n_images : int, optional
        Procedural stimulus images (None: one stimulus per class).
    seed : int
    options : dict of str to dict
        Keyword arguments of one modality's simulator (``fmri: {n_voxels: [500, 3000]}``) or of
        the latent (``latent: {block_duration: [2.0, 2.0]}``), passed to
        :func:`~neurodecode.simulate.simulate_dataset` as ``**options``. An unknown modality or
        parameter is refused, naming the valid ones.
    circuit : dict, optional
        Also simulate a spiking circuit with known directed connectivity: keyword arguments of
        :func:`~neurodecode.simulate.simulate_coupled_spikes` (``{n_units: 40, duration: 600,
        sessions: ["01", "02"], session_units: 30}``); its sessions are written beside the
        dataset's recordings, as subject ``circuit`` unless ``subject`` is given
        (``modalities: []`` for the circuit alone).
    vision : dict, optional
        Also simulate an NSD-like visual fMRI experiment: keyword arguments of
        :func:`~neurodecode.simulate_visual.simulate_visual_fmri` (``seed`` defaults to the
        config's), plus ``images``: ``"procedural"`` (default: procedural scenes) or the path of
        an image folder (read with :func:`~neurodecode.data.images.load_image_folder` at
        ``image_size``). Its recordings (task ``vision``) and ``stimuli.zarr`` are written into
        the dataset folder, so it cannot be combined with the dataset's own ``n_images``
        stimulus images when ``modalities`` is not empty (one stimulus store per dataset);
        ``modalities: []`` gives the visual dataset alone.
    """

    dataset: str = "sim"
    n_subjects: int = Field(3, ge=1)
    modalities: list[str] = Field(default_factory=lambda: ["eeg", "fmri", "calcium", "spikes"])
    duration: float = Field(120.0, gt=0)
    n_runs: int = Field(1, ge=1)
    n_classes: int = Field(4, ge=2)
    n_images: int | None = Field(48, ge=1)
    seed: int = 0
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    circuit: dict[str, Any] | None = None
    vision: dict[str, Any] | None = None

    @field_validator("vision")
    @classmethod
    def _vision_parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        import inspect

        from .simulate_visual import simulate_visual_fmri

        if value is None:
            return value
        valid = [n for n in inspect.signature(simulate_visual_fmri).parameters if n != "images"]
        valid.append("images")
        bad = sorted(set(value) - set(valid))
        if bad:
            raise ValueError(f"vision: unknown parameter(s) {', '.join(map(repr, bad))}; "
                             f"valid parameters: {', '.join(valid)}")
        images = value.get("images", "procedural")
        if not isinstance(images, str | os.PathLike) or not str(images):
            raise ValueError(f"vision.images must be 'procedural' or an image folder path, got "
                             f"{images!r}")
        return value

    @model_validator(mode="after")
    def _one_stimulus_set(self) -> Self:
        if self.vision is not None and self.modalities and self.n_images is not None:
            raise ValueError(
                "vision and n_images both ask for stimulus images, but a dataset has one "
                "stimuli.zarr: set modalities: [] (the visual dataset alone) or n_images: null"
            )
        return self

    @field_validator("circuit")
    @classmethod
    def _circuit_parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        import inspect

        from .simulate import simulate_coupled_spikes

        if value is None:
            return value
        valid = [n for n in inspect.signature(simulate_coupled_spikes).parameters
                 if n not in ("split", "split_gap")]
        bad = sorted(set(value) - set(valid))
        if bad:
            raise ValueError(f"circuit: unknown parameter(s) {', '.join(map(repr, bad))}; "
                             f"valid parameters: {', '.join(valid)}")
        return value

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from .simulate import _SIMULATORS

        targets = ["latent", *_SIMULATORS]
        unknown = sorted(set(value) - set(targets))
        if unknown:
            raise ValueError(
                f"options: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                f"{', '.join(sorted(targets))} (a modality's simulator, or latent)"
            )
        for key, params in value.items():
            valid = _option_parameters(key)
            bad = sorted(set(params) - set(valid))
            if bad:
                raise ValueError(
                    f"options.{key}: unknown parameter(s) {', '.join(map(repr, bad))}; "
                    f"valid parameters: {', '.join(valid)}"
                )
        return value

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


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` merged in: nested mappings key by key, anything else replaced.

    How ``params`` go over a config file everywhere (workflow steps, model configs).
    """
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML file; a ``ValueError`` names the file when it is not one.

    Parameters
    ----------
    path : Path
    what : str
        What the file holds, for the error (``"a model config"``).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} is a mapping")
    return data


def validation_problems(err: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: problem; ...`` (unknown keys named so)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'config'}: "
        + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
        for e in err.errors())
