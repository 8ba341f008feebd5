"""The data catalog: what a dataset is, where its files are and how they become recordings.

One YAML file per dataset in ``data_catalog/``. Paths are relative to a data root (the
``NEURODECODE_SAMPLE_DATA`` setting by default) unless absolute. Example::

    name: eegbci_s001
    modality: eeg
    description: PhysioNet EEG Motor Movement/Imagery, subject 1
    licence: ODC-By 1.0
    root: eeg/eegbci_S001
    reader: mne
    entities: {task: motor}
    expect: {sfreq: 160.0, n_channels: 64}
    files:
      - glob: "S*R*.edf"
        pattern: 'S(?P<subject>\\d+)R(?P<run>0[48]|12)\\.edf'
        event_map: {T0: rest, T1: imagine_left_fist, T2: imagine_right_fist}

A file rule selects files by ``glob`` (relative to the entry's root), keeps those whose relative
path matches ``pattern`` in full, and takes BIDS-like entities (subject, session, task, run) from
its named groups. String reader options may use ``{root}`` (the entry's root), ``{dir}`` (the
file's folder) and ``{stem}`` (the file name without suffixes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .config import get_settings
from .schema import MODALITIES

__all__ = [
    "CatalogEntry",
    "FileRule",
    "RemoteFile",
    "catalog_dir",
    "fetch_entry",
    "load_catalog",
    "load_entry",
]

_ENTITIES = ("subject", "session", "task", "run")


class RemoteFile(BaseModel):
    """A file that can be fetched (with ``pooch``) where a network exists."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path relative to the entry's root.")
    url: str
    sha256: str


class FileRule(BaseModel):
    """Which files of a dataset to ingest, and how."""

    model_config = ConfigDict(extra="forbid")

    glob: str = Field(description="Glob relative to the entry's root.")
    pattern: str | None = Field(
        None,
        description="Regular expression the relative path must match in full; named "
        "groups subject/session/task/run set the entities.",
    )
    entities: dict[str, str] = Field(default_factory=dict)
    event_map: dict[str, str] | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class CatalogEntry(BaseModel):
    """One dataset of the catalog."""

    model_config = ConfigDict(extra="forbid")

    name: str
    modality: str
    description: str
    licence: str
    citation: str | None = None
    root: str = Field(description="Folder of the dataset, relative to the data root.")
    reader: str = Field(description="Reader name (see neurodecode.ingest.READERS).")
    reader_options: dict[str, Any] = Field(default_factory=dict)
    entities: dict[str, str] = Field(
        default_factory=dict, description="Default subject/session/task/run."
    )
    event_map: dict[str, str] | None = None
    expect: dict[str, Any] = Field(
        default_factory=dict,
        description="Facts every recording must satisfy: sfreq, n_channels, ch_types.",
    )
    files: list[FileRule]
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="SHA-256 of files, by path relative to the root; a "
        "file that no longer matches is refused (corrupt, truncated or replaced).",
    )
    remote: list[RemoteFile] = Field(default_factory=list)

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, value: str) -> str:
        if value not in MODALITIES:
            raise ValueError(f"modality {value!r} is not one of {MODALITIES}")
        return value

    def root_path(self, data_root: str | Path | None = None) -> Path:
        """Absolute folder of this dataset under ``data_root`` (default: the settings')."""
        root = Path(self.root)
        if root.is_absolute():
            return root
        return Path(data_root or get_settings().sample_data) / root

    def resolve_files(self, data_root: str | Path | None = None) -> list[dict[str, Any]]:
        """List the files this entry ingests, with their entities and reader options.

        Parameters
        ----------
        data_root : path-like, optional
            Data root; defaults to the ``sample_data`` setting.

        Returns
        -------
        list of dict
            One per file: ``path``, ``entities``, ``event_map``, ``reader_options`` and
            ``checksums`` (expected SHA-256 of the file, or of each file in a folder source). A file
            matched by several rules is listed once, for the first rule.
        """
        root = self.root_path(data_root)
        seen: set[tuple[Path, str]] = set()
        found = []
        for rule in self.files:
            for path in [root] if rule.glob in ("", ".") else sorted(root.glob(rule.glob)):
                rel = path.relative_to(root).as_posix()
                m = re.fullmatch(rule.pattern, rel) if rule.pattern else None
                if rule.pattern and m is None:
                    continue
                entities = {**self.entities, **rule.entities}
                if m:
                    entities.update(
                        {k: v for k, v in m.groupdict().items() if k in _ENTITIES and v is not None}
                    )
                subst = {
                    "root": str(root),
                    "dir": str(path.parent),
                    "stem": path.name.split(".")[0],
                }
                options = {
                    k: _substitute(v, subst)
                    for k, v in {**self.reader_options, **rule.reader_options}.items()
                }
                ident = json.dumps([entities, options], sort_keys=True, default=str)
                if (path, ident) in seen:
                    continue
                seen.add((path, ident))
                found.append(
                    {
                        "path": path,
                        "entities": entities,
                        "event_map": rule.event_map
                        if rule.event_map is not None
                        else self.event_map,
                        "reader_options": options,
                        "checksums": {
                            str(root / rel): sha
                            for rel, sha in self.checksums.items()
                            if (root / rel) == path or path in (root / rel).parents
                        },
                    }
                )
        return found


def _substitute(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**subst) if "{" in value else value
    if isinstance(value, dict):
        return {k: _substitute(v, subst) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    return value


def fetch_entry(entry: CatalogEntry, data_root: str | Path | None = None) -> list[Path]:
    """Download the entry's ``remote`` files that are missing locally (needs a network).

    Files already present are checked against their SHA-256 and never downloaded again.

    Parameters
    ----------
    entry : CatalogEntry
        The dataset.
    data_root : path-like, optional
        Data root (default: the ``sample_data`` setting).

    Returns
    -------
    list of Path
        Local paths of the remote files.

    Raises
    ------
    ValueError
        If a downloaded or present file does not match its SHA-256.
    """
    import pooch

    root = entry.root_path(data_root)
    paths = []
    for remote in entry.remote:
        target = root / remote.path
        target.parent.mkdir(parents=True, exist_ok=True)
        fetched = pooch.retrieve(
            remote.url,
            known_hash=f"sha256:{remote.sha256}",
            fname=target.name,
            path=target.parent,
            progressbar=False,
        )
        paths.append(Path(fetched))
    return paths


def catalog_dir() -> Path:
    """The ``data_catalog/`` folder shipped beside the package."""
    return Path(__file__).resolve().parents[1] / "data_catalog"


def load_entry(path: str | Path) -> CatalogEntry:
    """Read one catalog entry from YAML.

    Parameters
    ----------
    path : path-like
        YAML file.

    Returns
    -------
    CatalogEntry
    """
    try:
        return CatalogEntry(**(yaml.safe_load(Path(path).read_text()) or {}))
    except Exception as err:
        raise ValueError(f"{path}: invalid catalog entry: {err}") from err


def load_catalog(folder: str | Path | None = None) -> dict[str, CatalogEntry]:
    """Read every ``*.yaml`` entry of a catalog folder.

    Parameters
    ----------
    folder : path-like, optional
        Defaults to :func:`catalog_dir`.

    Returns
    -------
    dict of str to CatalogEntry
        Keyed by entry name.
    """
    entries: dict[str, CatalogEntry] = {}
    for path in sorted(Path(folder or catalog_dir()).glob("*.yaml")):
        entry = load_entry(path)
        if entry.name in entries:
            raise ValueError(f"{path}: catalog entry name {entry.name!r} is used twice")
        entries[entry.name] = entry
    return entries
