"""Folders as sources: a BIDS dataset or a suite2p output becomes one source per recording.

:func:`expand_source` turns whatever path a user gives ``neurodecode ingest`` into the
recordings it holds, each a :class:`Source` (a path and the reader that reads it):

* a **BIDS dataset** (a folder with ``dataset_description.json``): every EEG, MEG and iEEG
  recording that MNE-BIDS finds (:func:`mne_bids.find_matching_paths`; read by the ``bids``
  reader, :func:`neurodecode.ingest.eeg.read_bids_file`, with channels, electrodes and events
  from the sidecars), and every BOLD run ``func/*_bold.nii[.gz]`` (read by the ``nifti``
  reader, which takes the run's ``events.tsv`` and the TR of its JSON sidecar). Files under
  ``derivatives/`` and ``sourcedata/`` are not part of the raw dataset and are left out (give
  a derivatives dataset's own root to ingest it). ``subject``, ``task`` and ``datatype`` select
  recordings;
* a **suite2p output**: a plane folder (it holds ``F.npy``), or a folder with ``plane*/``
  subfolders (suite2p's ``suite2p/`` folder, or the experiment folder above it): one source per
  plane (suite2p's ``combined/`` view of all planes is left out, as it repeats them);
* a **file**: one source, its reader picked from the extension
  (:func:`neurodecode.ingest.readers.guess_reader`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import IngestError
from .readers import guess_reader

__all__ = ["BIDS_DATATYPES", "Source", "expand_source"]

#: The BIDS datatypes :func:`expand_source` reads.
BIDS_DATATYPES = ("eeg", "func", "ieeg", "meg")
#: Top-level BIDS folders that are not part of the raw dataset.
_NOT_RAW = ("derivatives", "sourcedata")
_PLANE = re.compile(r"^plane\d+$")
_IDENTITY = ("subject", "session", "task", "run")
_UNDERSTOOD = ("a BIDS dataset root (with dataset_description.json), a suite2p plane folder "
               "(with F.npy) or a folder of suite2p plane*/ folders")


@dataclass(frozen=True)
class Source:
    """One recording to ingest: a file (or folder) and how to read it.

    Attributes
    ----------
    path : Path
        What the reader is given: a data file, or a suite2p plane folder.
    reader : str
        Reader name (a key of the reader registry, e.g. ``"bids"``, ``"nifti"``, ``"suite2p"``).
    entities : dict of str to str
        Identity fields (``subject``, ``session``, ``task``, ``run``) known from the folder
        layout, passed to the reader; the reader's defaults fill the others.
    reader_options : dict
        Further keyword arguments for the reader.
    """

    path: Path
    reader: str
    entities: dict[str, str] = field(default_factory=dict)
    reader_options: dict[str, Any] = field(default_factory=dict)


def expand_source(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    task: str | None = None,
    datatype: str | None = None,
) -> list[Source]:
    """List the recordings a file or folder holds, each with the reader that reads it.

    Parameters
    ----------
    path : path-like
        A BIDS dataset root, a suite2p output folder (one plane, or ``plane*/`` folders), or a
        file.
    subject, task : str, optional
        Of a BIDS dataset, only the recordings of this subject or task (the label, with or
        without ``sub-``/``task-``).
    datatype : {"eeg", "meg", "ieeg", "func"}, optional
        Of a BIDS dataset, only this datatype.

    Returns
    -------
    list of Source
        One per recording, sorted by path (never empty).

    Raises
    ------
    IngestError
        If ``path`` does not exist; is a folder that is none of the above; is a BIDS dataset
        that holds no recording, or none of the given subject, task or datatype (the message
        lists those it has); or if a selection is given for something that is not a BIDS
        dataset.
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(path, "does not exist")
    selection = {k: v for k, v in (("subject", subject), ("task", task),
                                   ("datatype", datatype)) if v is not None}
    if path.is_dir() and (path / "dataset_description.json").is_file():
        return _bids_sources(path, subject=subject, task=task, datatype=datatype)
    if selection:
        given = ", ".join(f"{k}={v!r}" for k, v in selection.items())
        raise IngestError(path, f"{given} select recordings of a BIDS dataset, and this is not "
                                "a BIDS dataset root (no dataset_description.json)")
    if not path.is_dir() or (path / "F.npy").is_file():
        return [Source(path, guess_reader(path))]
    if path.suffix:  # a recording stored as a folder (CTF .ds, EGI .mff...)
        try:
            return [Source(path, guess_reader(path))]
        except IngestError:
            pass
    planes = _suite2p_planes(path)
    if planes:
        several = len(planes) > 1
        return [Source(plane, "suite2p", {"run": plane.name} if several else {})
                for plane in planes]
    raise IngestError(path, f"is a folder that is not understood: expected {_UNDERSTOOD}")


def _suite2p_planes(folder: Path) -> list[Path]:
    """The suite2p plane folders of ``folder`` or of its ``suite2p/`` subfolder."""
    for candidate in (folder, folder / "suite2p"):
        if candidate.is_dir():
            planes = sorted((p for p in candidate.iterdir()
                             if p.is_dir() and _PLANE.match(p.name) and (p / "F.npy").is_file()),
                            key=lambda p: int(p.name.removeprefix("plane")))
            if planes:
                return planes
    return []


def _bids_sources(root: Path, *, subject: str | None, task: str | None,
                  datatype: str | None) -> list[Source]:
    """Every selected recording of the BIDS dataset at ``root``."""
    found = _bids_recordings(root)
    if not found:
        raise IngestError(root, f"is a BIDS dataset without any {'/'.join(BIDS_DATATYPES)} "
                                "recording (no data file in a sub-*/[ses-*/]<datatype>/ folder)")
    kinds = [("datatype", datatype, ""), ("subject", subject, "sub-"), ("task", task, "task-")]
    applied: list[str] = []
    for key, wanted, prefix in kinds:
        if wanted is None:
            continue
        if key == "datatype" and wanted not in BIDS_DATATYPES:
            raise IngestError(root, f"datatype {wanted!r} is not one of {list(BIDS_DATATYPES)}; "
                                    f"the dataset has {_present(found, key)}")
        label = str(wanted).removeprefix(prefix)
        chosen = [s for s in found if s[1][key] == label]
        if not chosen:
            among = f" among its {' '.join(applied)} recordings" if applied else ""
            raise IngestError(root, f"has no recording of {key} {label!r}{among}; it has "
                                    f"{key} {_present(found, key)}")
        applied.append(f"{key}={label}")
        found = chosen
    return [source for source, _ in found]


def _present(found: Iterable[tuple[Source, dict[str, str]]], key: str) -> str:
    return ", ".join(sorted({str(info[key]) for _, info in found}))


def _bids_recordings(root: Path) -> list[tuple[Source, dict[str, str]]]:
    """Each recording of the raw dataset, and its subject, task and datatype."""
    from .eeg import _bids_recordings as mne_bids_recordings
    from .fmri import _bold_runs

    found: list[tuple[Source, dict[str, str]]] = []
    for bp in mne_bids_recordings(root, None):
        data = Path(bp.fpath)
        if _is_raw(root, data):
            entities = {"subject": bp.subject, "session": bp.session, "task": bp.task,
                        "run": bp.run}
            found.append(_entry(data, "bids", entities, bp.datatype))
    for run in _bold_runs(root):
        data = Path(run["path"])
        if _is_raw(root, data):
            found.append(_entry(data, "nifti", run, "func"))
    return sorted(found, key=lambda item: str(item[0].path))


def _entry(data: Path, reader: str, entities: dict[str, Any],
           datatype: str) -> tuple[Source, dict[str, str]]:
    ident = {k: str(entities[k]) for k in _IDENTITY if entities.get(k) is not None}
    info = {"subject": ident["subject"], "task": ident["task"], "datatype": datatype}
    return Source(data, reader, ident), info


def _is_raw(root: Path, data: Path) -> bool:
    parts = data.relative_to(root).parts if data.is_relative_to(root) else ()
    return not parts or parts[0] not in _NOT_RAW
