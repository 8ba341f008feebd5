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

An entry is checked when it is loaded: its reader must exist and its ``reader_options`` (the
entry's, merged with each file rule's) must be options of that reader with values of the right
type (:func:`neurodecode.ingest.readers.validate_options`), so a typo fails at once, naming the
YAML file, rather than in every worker.

A lab adds its own entries in folders of its own (``load_catalog(extra_dirs)``, the
``NEURODECODE_CATALOG`` setting, ``--catalog DIR`` on the command line); an entry name defined
in two files is an error naming both.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .config import get_settings
from .ingest.readers import READERS, get_reader, suggest, validate_options
from .schema import MODALITIES

__all__ = [
    "CatalogEntry",
    "FileRule",
    "RemoteFile",
    "catalog_dir",
    "fetch_entry",
    "get_entry",
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
    reader: str = Field(
        description="Reader name (``neurodecode readers``; neurodecode.ingest.readers.READERS)."
    )
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
    _source: Path | None = PrivateAttr(None)

    @property
    def source_file(self) -> Path | None:
        """The YAML file the entry was loaded from (``None`` when built in Python)."""
        return self._source

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, value: str) -> str:
        if value not in MODALITIES:
            raise ValueError(f"modality {value!r} is not one of {MODALITIES}")
        return value

    @field_validator("reader")
    @classmethod
    def _known_reader(cls, value: str) -> str:
        if value not in READERS:
            get_reader(value)  # a module:function path, or an error with a close match
        return value

    @model_validator(mode="after")
    def _check_options(self) -> CatalogEntry:
        """Entities are entity keys; reader options are the reader's, coerced to its types."""
        _check_entities(self.entities, "entities")
        self.reader_options = validate_options(
            self.reader, self.reader_options, where="reader_options"
        )
        for i, rule in enumerate(self.files):
            where = f"files[{i}] (glob {rule.glob!r})"
            _check_entities(rule.entities, f"{where} entities")
            merged = validate_options(
                self.reader,
                {**self.reader_options, **rule.reader_options},
                where=f"{where} reader_options" if rule.reader_options else "reader_options",
                complete=True,
            )
            rule.reader_options = {k: merged[k] for k in rule.reader_options}
        return self

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


def _check_entities(entities: Mapping[str, str], where: str) -> None:
    for key in entities:
        if key not in _ENTITIES:
            raise ValueError(
                f"{where}: {key!r} is not an entity;{suggest(key, _ENTITIES)} "
                f"entities are {', '.join(_ENTITIES)}"
            )


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
    """Read one catalog entry from YAML and check it (reader, options, entities).

    Parameters
    ----------
    path : path-like
        YAML file.

    Returns
    -------
    CatalogEntry

    Raises
    ------
    ValueError
        One line naming the file and every problem found (``field: problem; ...``).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: invalid catalog entry: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: invalid catalog entry: expected a mapping of fields, got "
            f"{type(data).__name__}"
        )
    try:
        entry = CatalogEntry(**data)
    except ValidationError as err:
        raise ValueError(f"{path}: invalid catalog entry: {_one_line(err)}") from err
    except ValueError as err:  # an unknown module:function reader
        raise ValueError(f"{path}: invalid catalog entry: {err}") from err
    entry._source = path
    return entry


def _one_line(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        where = ".".join(str(part) for part in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _catalog_folders(extra_dirs: Sequence[str | os.PathLike] | None) -> list[Path]:
    if isinstance(extra_dirs, str | os.PathLike):
        extra_dirs = [extra_dirs]
    folders: list[Path] = []
    for folder in [catalog_dir(), *get_settings().catalog_dirs, *(extra_dirs or [])]:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"catalog folder {folder} does not exist or is not a folder")
        if all(folder.resolve() != f.resolve() for f in folders):
            folders.append(folder)
    return folders


def load_catalog(
    extra_dirs: Sequence[str | os.PathLike] | None = None,
) -> dict[str, CatalogEntry]:
    """Read every ``*.yaml`` entry of the shipped catalog and of a lab's own catalog folders.

    Parameters
    ----------
    extra_dirs : sequence of path-like, optional
        Catalog folders read after :func:`catalog_dir` and the ``catalog_dirs`` setting
        (``NEURODECODE_CATALOG``); a folder named twice is read once.

    Returns
    -------
    dict of str to CatalogEntry
        Keyed by entry name, in folder then file name order.

    Raises
    ------
    ValueError
        If an entry is invalid (naming its file), or if two files define the same entry name
        (naming both).
    FileNotFoundError
        If a catalog folder does not exist.
    """
    entries: dict[str, CatalogEntry] = {}
    for folder in _catalog_folders(extra_dirs):
        for path in sorted(folder.glob("*.yaml")):
            entry = load_entry(path)
            if entry.name in entries:
                raise ValueError(
                    f"catalog entry {entry.name!r} is defined twice: in "
                    f"{entries[entry.name].source_file} and in {path}"
                )
            entries[entry.name] = entry
    return entries


def get_entry(name: str, catalog: Mapping[str, CatalogEntry]) -> CatalogEntry:
    """Look an entry up by name, with a close match in the error.

    Parameters
    ----------
    name : str
        Entry name.
    catalog : mapping of str to CatalogEntry
        From :func:`load_catalog`.

    Returns
    -------
    CatalogEntry

    Raises
    ------
    ValueError
        One line: ``no catalog entry 'x'; did you mean 'y'? known entries: ...``.
    """
    if name in catalog:
        return catalog[name]
    raise ValueError(
        f"no catalog entry {name!r};{suggest(name, catalog)} "
        f"known entries: {', '.join(sorted(catalog))}"
    )
