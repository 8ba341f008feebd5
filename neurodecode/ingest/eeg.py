"""Readers for EEG, MEG, sEEG and ECoG recordings.

* :func:`read_mne` reads every format :func:`mne.io.read_raw` reads (EDF/BDF, BrainVision, FIF,
  EEGLAB, Persyst, ...), with channel types and positions from BIDS sidecars when they sit next
  to the file (or are named explicitly).
* :func:`read_muse_csv` reads the CSV exports of Muse headbands (eeg-notebooks).
* :func:`read_bids` reads one EEG/MEG/iEEG recording of a BIDS dataset through MNE-BIDS,
  :func:`read_bids_file` the same from its data file (the reader ``bids``), and
  :func:`list_bids_recordings` lists them all.

Samples stay on disk: the ``signal`` of every recording is a Dask array whose blocks reopen the
file (once per process) and read only their own rows, so the graph runs on distributed workers.
Data are in SI units (volts; tesla and tesla per metre for MEG).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import mne
import mne_bids
import numpy as np
import pandas as pd
import xarray as xr
from mne.io.constants import FIFF

from ..schema import make_recording, validate
from .base import (
    IngestError,
    bids_entities,
    blockwise_array,
    check_if_gzip,
    events_source,
    file_sha256,
    file_stamp,
    read_events_table,
    recording_identity,
    source_info,
)

__all__ = [
    "MNE_UNITS",
    "list_bids_recordings",
    "read_bids",
    "read_bids_file",
    "read_mne",
    "read_muse_csv",
]

logger = logging.getLogger(__name__)

_MNE_READER = "neurodecode.ingest.eeg.read_mne"
_MUSE_READER = "neurodecode.ingest.eeg.read_muse_csv"
_BIDS_READER = "neurodecode.ingest.eeg.read_bids"
_BIDS_FILE_READER = "neurodecode.ingest.eeg.read_bids_file"
_DROP_FLAT_STEP = "neurodecode.ingest.eeg.drop_flat"
_DROP_EVENTS_STEP = "neurodecode.ingest.eeg.drop_outside_events"

#: MNE channel types kept as they are; every other MNE type becomes ``misc``.
_KEPT_TYPES = frozenset(
    {"eeg", "mag", "grad", "seeg", "ecog", "dbs", "eog", "ecg", "emg", "stim", "misc"}
)
#: MNE types of brain channels, the ones a ``ch_types`` string retypes.
_DATA_TYPES = frozenset({"eeg", "seeg", "ecog", "dbs"})
#: BIDS ``channels.tsv`` types and the MNE types they mean (MEG types are left to MNE).
_BIDS_TYPES = {
    "EEG": "eeg", "SEEG": "seeg", "ECOG": "ecog", "DBS": "dbs", "EOG": "eog", "HEOG": "eog",
    "VEOG": "eog", "ECG": "ecg", "EMG": "emg", "TRIG": "stim", "MISC": "misc",
}  # fmt: skip
#: MNE unit codes (``info["chs"][i]["unit"]``) and the unit names stored in ``units``.
MNE_UNITS = {
    FIFF.FIFF_UNIT_V: "V", FIFF.FIFF_UNIT_T: "T", FIFF.FIFF_UNIT_T_M: "T/m",
    FIFF.FIFF_UNIT_MOL: "M", FIFF.FIFF_UNIT_CEL: "°C", FIFF.FIFF_UNIT_S: "S",
    FIFF.FIFF_UNIT_SEC: "s", FIFF.FIFF_UNIT_PX: "px", FIFF.FIFF_UNIT_AM: "Am",
}  # fmt: skip
_COORD_UNITS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3}
#: Extensions of the BIDS data files read by :func:`read_bids`, per datatype.
_BIDS_EXTENSIONS = {
    "eeg": (".vhdr", ".edf", ".bdf", ".set"),
    "meg": (".fif", ".ds", ".con", ".sqd", ".pdf"),
    "ieeg": (".vhdr", ".edf", ".set", ".mefd", ".nwb"),
}
_MUSE_MARKER = re.compile(r"^marker\d*$", re.IGNORECASE)
_TRUNCATED = "does not match the file size"
_DUPLICATES = "Channel names are not unique"
_OUTSIDE = ("outside data range", "outside the data range")

OutsideEvents = Literal["error", "drop"]


def read_mne(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
    modality: str | None = None,
    ch_types: str | Mapping[str, str] | None = None,
    picks: str | Sequence[str] | None = None,
    drop_flat: bool = False,
    channels_tsv: str | os.PathLike | None = None,
    electrodes_tsv: str | os.PathLike | None = None,
    events: str | os.PathLike | pd.DataFrame | Literal[False] | None = None,
    outside_events: OutsideEvents = "error",
) -> xr.Dataset:
    """Read any recording that :func:`mne.io.read_raw` reads, lazily.

    Parameters
    ----------
    path : path-like
        The recording (``.edf``, ``.bdf``, ``.vhdr``, ``.fif``, ``.set``, ``.lay``, ...).
    subject, session, task, run : str, optional
        Identity; by default the BIDS entities of the file name, else the sanitised file stem as
        subject, session ``"01"``, run ``"01"`` and task ``"unknown"``.
    event_map : mapping, optional
        Renames event labels (annotation descriptions, or ``trial_type`` of an events table);
        labels not in it are kept.
    modality : str, optional
        Overrides the inferred modality: ``"meg"`` if there are MEG channels, ``"seeg"`` or
        ``"ecog"`` if such channels outnumber the EEG ones, else ``"eeg"``.
    ch_types : str or mapping, optional
        Channel types to set (MNE names such as ``"eeg"``, ``"seeg"``, ``"ecog"``, ``"eog"``):
        a mapping from channel name to type, or one type for every brain channel (those MNE
        types as eeg, seeg, ecog or dbs; EDF and Persyst files call every channel EEG). Applied
        after ``channels_tsv``.
    picks : str or sequence of str, optional
        Channels to keep, in MNE's ``picks`` syntax (names or a channel type), after retyping.
    drop_flat : bool
        Drop channels whose samples are all equal. This reads the data once (block by block);
        the dropped channels are logged and recorded in ``history``.
    channels_tsv, electrodes_tsv : path-like, optional
        BIDS sidecars: channel types from the ``type`` column of ``channels.tsv``; positions
        (``x``, ``y``, ``z``) from ``electrodes.tsv``, in the coordinate system and units of the
        ``*_coordsystem.json`` beside it (converted to metres). When the file has a BIDS name
        and these are not given, the sidecars next to it are used if present.
    events : path-like, DataFrame or False, optional
        The events, as a BIDS events table: ``onset`` and ``duration`` in seconds from the
        first sample, ``trial_type`` (the label) and ``value`` (see
        :func:`neurodecode.ingest.base.read_events_table`). By default, when the file has a
        BIDS name, the ``*_events.tsv`` beside it that BIDS pairs with it (the name up to the
        datatype suffix, without ``split``: ``sub-01_task-rest_run-1_events.tsv`` for
        ``sub-01_task-rest_run-1_eeg.edf``), if there is one. BIDS makes that table
        authoritative: when a table is used, the annotations stored in the file are ignored
        (replaced, not merged, and not checked), and the table file is recorded as a companion
        in ``source``. ``False``: always use the file's own annotations.
    outside_events : {"error", "drop"}
        What to do with events (annotations, or rows of the events table) that lie (partly)
        outside the recording. ``"error"`` refuses the file; ``"drop"`` drops them (MNE drops
        or clips annotations while reading; rows of a table are dropped) with a logged warning
        recorded in ``history``.

    Returns
    -------
    xarray.Dataset
        A valid recording whose ``signal`` (float32 volts, tesla or tesla/metre) is lazy.
        Positions come from the sidecar (``coord_frame`` is then the BIDS coordinate system,
        e.g. ``"ACPC"``) or from MNE (metres; ``coord_frame`` is MNE's frame, e.g. ``"head"``;
        MEG sensors are moved to the head frame).

    Raises
    ------
    IngestError
        If the file is missing, unsupported, truncated or corrupt, is empty, has duplicate
        channel names, mixes sampling rates, has events outside the recording (with
        ``outside_events="error"``), or a sidecar, events table or option does not fit it.
    """
    path = Path(path)
    _check_exists(path)
    check_if_gzip(path)
    if events is True or not (events is None or events is False
                              or isinstance(events, str | os.PathLike | pd.DataFrame)):
        raise IngestError(path, f"events must be an events table (a path or a DataFrame), "
                                f"False or None, not {events!r}")
    table = _events_sidecar(path) if events is None else (None if events is False else events)
    raw, outside = _open_raw_checked(path, check_annotations=table is None)
    table_events = None
    if table is not None:  # the table replaces the annotations, whatever MNE made of them
        table_events, outside = _events_inside(table, path, raw.n_times / raw.info["sfreq"],
                                               event_map)
    channels_tsv = _channels_sidecar(path) if channels_tsv is None else Path(channels_tsv)
    electrodes_tsv = (_electrodes_sidecar(path) if electrodes_tsv is None
                      else Path(electrodes_tsv))
    if channels_tsv is not None:
        _set_types(raw, _types_from_channels_tsv(channels_tsv, raw.ch_names), path)
    if isinstance(ch_types, str):
        kinds = raw.get_channel_types()
        _set_types(raw, {n: ch_types for n, k in zip(raw.ch_names, kinds, strict=True)
                         if k in _DATA_TYPES}, path)
    elif ch_types is not None:
        _set_types(raw, ch_types, path)
    sidecars = [p for p in (channels_tsv, electrodes_tsv) if p is not None]
    if table is not None and not isinstance(table, pd.DataFrame):
        sidecars.append(Path(table))
    params = {
        "event_map": dict(event_map or {}),
        "modality": modality,
        "ch_types": ch_types if ch_types is None or isinstance(ch_types, str) else dict(ch_types),
        "picks": _jsonable(picks),
        "drop_flat": drop_flat,
        "outside_events": outside_events,
        "channels_tsv": str(channels_tsv) if channels_tsv else None,
        "electrodes_tsv": str(electrodes_tsv) if electrodes_tsv else None,
        "events": events_source(table) if table is not None else (False if events is False
                                                                     else None),
    }
    identity = recording_identity(path, subject=subject, session=session, task=task, run=run)
    return _recording_from_raw(
        path, raw, data_file=path, identity=identity, event_map=event_map, modality=modality,
        picks=picks, drop_flat=drop_flat, electrodes=electrodes_tsv, outside=outside,
        outside_events=outside_events, sidecars=sidecars, reader=_MNE_READER,
        reader_version=mne.__version__, params=params, events=table_events,
    )


def read_bids(
    bids_root: str | os.PathLike,
    *,
    subject: str,
    task: str,
    session: str | None = None,
    run: str | None = None,
    datatype: str | None = None,
    acquisition: str | None = None,
    event_map: Mapping[str, str] | None = None,
    modality: str | None = None,
    picks: str | Sequence[str] | None = None,
    drop_flat: bool = False,
    outside_events: OutsideEvents = "error",
) -> xr.Dataset:
    """Read one EEG, MEG or iEEG recording of a BIDS dataset through MNE-BIDS, lazily.

    Channel types (and bad channels) come from ``channels.tsv`` as MNE-BIDS reads them; events
    from ``events.tsv`` (labels from ``trial_type``, numeric ``value``; see
    :func:`neurodecode.ingest.base.read_events_table`), else from the file's annotations;
    positions from ``electrodes.tsv`` with its ``coordsystem.json``
    (``coord_frame`` is the BIDS coordinate system, e.g. ``"ACPC"``), else from the file.

    Parameters
    ----------
    bids_root : path-like
        Root folder of the BIDS dataset.
    subject, task : str
        BIDS entities of the recording (without ``sub-``/``task-``).
    session, run, acquisition : str, optional
        Further entities; needed only when several recordings match. The recording's session
        and run default to ``"01"`` when the dataset has none.
    datatype : {"eeg", "meg", "ieeg"}, optional
        Restricts the search to one datatype.
    event_map : mapping, optional
        Renames event labels (``trial_type``).
    modality : str, optional
        Overrides the modality inferred from the channel types (see :func:`read_mne`).
    picks : str or sequence of str, optional
        Channels to keep (MNE ``picks`` syntax).
    drop_flat : bool
        Drop constant channels (see :func:`read_mne`).
    outside_events : {"error", "drop"}
        Events of ``events.tsv`` outside the recording: refuse the recording, or drop them with
        a logged warning recorded in ``history``.

    Returns
    -------
    xarray.Dataset
        A valid recording with a lazy ``signal``.

    Raises
    ------
    IngestError
        If no single recording matches, its data file cannot be read (see :func:`read_mne`),
        or ``events.tsv`` has events outside the recording (with ``outside_events="error"``).
    """
    root = Path(bids_root)
    entities = {"subject": subject, "session": session, "task": task, "run": run,
                "acquisition": acquisition}
    found = _bids_recordings(root, datatype, **entities)
    wanted = ", ".join(f"{k}={v}" for k, v in entities.items() if v is not None)
    if len(found) != 1:
        kinds = datatype or "/".join(sorted(_BIDS_EXTENSIONS))
        raise IngestError(root, f"{len(found) or 'no'} {kinds} recording(s) match {wanted}"
                                + (f" ({[bp.basename for bp in found]}); give more entities"
                                   if found else ""))
    bids_path = found[0]
    identity = {"subject": bids_path.subject, "session": bids_path.session or "01",
                "task": bids_path.task, "run": bids_path.run or "01"}
    return _read_bids_path(
        bids_path, identity=identity, reader=_BIDS_READER, event_map=event_map,
        modality=modality, picks=picks, drop_flat=drop_flat, outside_events=outside_events,
    )


def read_bids_file(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
    modality: str | None = None,
    picks: str | Sequence[str] | None = None,
    drop_flat: bool = False,
    outside_events: OutsideEvents = "error",
) -> xr.Dataset:
    """Read an EEG, MEG or iEEG data file of a BIDS dataset through MNE-BIDS, lazily.

    The reader ``bids``: as :func:`read_bids`, but given the data file itself (e.g.
    ``root/sub-01/eeg/sub-01_task-rest_eeg.vhdr``, as
    :func:`neurodecode.ingest.folders.expand_source` lists them). The dataset root is the
    nearest folder above it that holds ``dataset_description.json``.

    Parameters
    ----------
    path : path-like
        The data file (a ``.ds`` folder for CTF MEG), in its ``eeg/``, ``meg/`` or ``ieeg/``
        folder. Of a split FIF recording, give the first part (``split-01``).
    subject, session, task, run : str, optional
        Identity; by default the file's BIDS entities (session and run ``"01"`` when absent).
    event_map : mapping, optional
        Renames event labels (``trial_type``).
    modality : str, optional
        Overrides the modality inferred from the channel types (see :func:`read_mne`).
    picks : str or sequence of str, optional
        Channels to keep (MNE ``picks`` syntax).
    drop_flat : bool
        Drop constant channels (see :func:`read_mne`).
    outside_events : {"error", "drop"}
        Events of ``events.tsv`` outside the recording: refuse the recording, or drop them with
        a logged warning recorded in ``history``.

    Returns
    -------
    xarray.Dataset
        A valid recording with a lazy ``signal``.

    Raises
    ------
    IngestError
        If the file is missing, is not the data file of a recording in a BIDS dataset, or
        cannot be read (see :func:`read_bids`).
    """
    path = Path(path)
    _check_exists(path)
    root = next((d for d in path.resolve().parents
                 if (d / "dataset_description.json").is_file()), None)
    if root is None:
        raise IngestError(path, "is not inside a BIDS dataset (no folder above it holds "
                                "dataset_description.json)")
    try:
        bids_path = mne_bids.get_bids_path_from_fname(path, check=True, verbose="error")
    except Exception as err:  # mne-bids raises ValueError/RuntimeError for non-BIDS names
        raise IngestError(path, f"is not a BIDS data file name ({err})") from err
    bids_path.update(root=root, check=False)
    if bids_path.datatype not in _BIDS_EXTENSIONS or not bids_path.subject \
            or not bids_path.task or bids_path.suffix != bids_path.datatype:
        raise IngestError(path, f"is not the data file of a BIDS {'/'.join(_BIDS_EXTENSIONS)} "
                                f"recording (sub-<label>_task-<label>..._<datatype>.<ext> in "
                                "a folder named after its datatype)")
    if bids_path.split not in (None, "01"):
        raise IngestError(path, f"is part {bids_path.split} of a split recording; read its "
                                "first part (split-01)")
    identity = recording_identity(path, subject=subject, session=session, task=task, run=run)
    return _read_bids_path(
        bids_path, identity=identity, reader=_BIDS_FILE_READER, event_map=event_map,
        modality=modality, picks=picks, drop_flat=drop_flat, outside_events=outside_events,
    )


def _read_bids_path(
    bids_path: Any, *, identity: Mapping[str, str], reader: str,
    event_map: Mapping[str, str] | None, modality: str | None,
    picks: str | Sequence[str] | None, drop_flat: bool, outside_events: OutsideEvents,
) -> xr.Dataset:
    """Read the recording of an MNE-BIDS path (what :func:`read_bids` found)."""
    data_file = Path(bids_path.fpath)
    check_if_gzip(data_file)
    file_raw, _ = _open_raw_checked(data_file, check_annotations=False)
    events_tsv = Path(bids_path.copy().update(suffix="events", extension=".tsv",
                                              split=None).fpath)
    events, outside = None, None
    if events_tsv.is_file():
        events, outside = _events_inside(events_tsv, data_file,
                                         file_raw.n_times / file_raw.info["sfreq"], event_map)
    try:
        raw = mne_bids.read_raw_bids(bids_path, verbose="error")
    except Exception as err:  # MNE-BIDS raises many types for inconsistent sidecars
        raise IngestError(data_file,
                          f"MNE-BIDS cannot read it ({type(err).__name__}: {err})") from err
    if len(raw.ch_names) != len(file_raw.ch_names):
        raise IngestError(data_file, "channels.tsv does not list the channels of the file")
    electrodes = _electrodes_sidecar(data_file)
    sidecars = [p for p in (events_tsv, _channels_sidecar(data_file), electrodes)
                if p is not None and p.is_file()]
    params = {
        "bids_root": str(Path(bids_path.root).resolve()),
        "datatype": bids_path.datatype,
        "acquisition": bids_path.acquisition,
        "event_map": dict(event_map or {}),
        "modality": modality,
        "picks": _jsonable(picks),
        "drop_flat": drop_flat,
        "outside_events": outside_events,
    }
    return _recording_from_raw(
        data_file, raw, data_file=data_file, identity=identity, event_map=event_map,
        modality=modality, picks=picks, drop_flat=drop_flat, electrodes=electrodes,
        outside=outside, outside_events=outside_events, sidecars=sidecars, reader=reader,
        reader_version=mne_bids.__version__, params=params, events=events,
    )


def list_bids_recordings(
    bids_root: str | os.PathLike, datatype: str | None = None
) -> list[dict[str, str | None]]:
    """List the EEG, MEG and iEEG recordings of a BIDS dataset.

    Parameters
    ----------
    bids_root : path-like
        Root folder of the BIDS dataset.
    datatype : {"eeg", "meg", "ieeg"}, optional
        Only this datatype.

    Returns
    -------
    list of dict
        One dict per recording, sorted by data file, holding the keyword arguments of
        :func:`read_bids` that single it out, so that ``read_bids(**entry)`` reads it:
        ``bids_root``, ``subject``, ``session``, ``task``, ``run``, ``acquisition`` and
        ``datatype`` (absent entities are None). The data files themselves are the ``path`` of
        :func:`neurodecode.ingest.folders.expand_source`'s sources.

    Raises
    ------
    IngestError
        If ``bids_root`` is not a folder or ``datatype`` is not one of eeg, meg, ieeg.
    """
    return [
        {"bids_root": str(bids_root), "subject": bp.subject, "session": bp.session,
         "task": bp.task, "run": bp.run, "acquisition": bp.acquisition, "datatype": bp.datatype}
        for bp in _bids_recordings(Path(bids_root), datatype)
    ]


def read_muse_csv(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
    marker_map: Mapping[int, str] | None = None,
    aux_as_eeg: bool = False,
    max_jitter: float = 0.05,
    drop_flat: bool = False,
) -> xr.Dataset:
    """Read a Muse headband CSV export (eeg-notebooks) lazily.

    The file has a ``timestamps`` column (seconds), one column per electrode in microvolts
    (``TP9``, ``AF7``, ``AF8``, ``TP10``, ``Right AUX``) and marker columns (``Marker``,
    ``Marker0``, ...) that are 0 except on stimulus samples.

    The sampling rate is measured as the slope of a least-squares line through the timestamps
    (the median step is useless here: the timestamps are rounded to milliseconds and, in some
    files, assigned per Bluetooth packet, so they jitter by tens of milliseconds around an
    exact 256 Hz). Samples are taken to lie on that regular grid.

    Parameters
    ----------
    path : path-like
        The CSV file.
    subject, session, task, run : str, optional
        Identity; by default ``subject<N>`` and ``session<N>`` in the file name (eeg-notebooks
        naming), else BIDS entities, else the sanitised stem; run ``"01"``, task ``"unknown"``.
    event_map : mapping, optional
        Renames event labels (after ``marker_map``).
    marker_map : mapping of int to str, optional
        Labels of the marker codes (keys may also be the codes as strings, e.g. from JSON);
        codes not in it are labelled by their number.
    aux_as_eeg : bool
        Type the auxiliary electrode (``Right AUX``) as EEG instead of ``misc``.
    max_jitter : float
        Largest distance in seconds allowed between a timestamp and the fitted regular grid;
        larger ones mean dropped samples or a varying rate, and the file is refused.
    drop_flat : bool
        Drop constant channels (logged and recorded in ``history``).

    Returns
    -------
    xarray.Dataset
        A valid recording in volts; events at the samples whose marker is non-zero (onset is
        the time of that sample from the first one, duration 0, value the marker code).

    Raises
    ------
    IngestError
        If the file is missing, not a CSV, has duplicate or missing columns, no samples,
        unparsable or irregular timestamps.
    """
    path = Path(path)
    _check_exists(path)
    if not path.name.lower().endswith(".csv"):
        raise IngestError(path, f"is not a CSV file (extension {path.suffix!r}, expected .csv)")
    columns = _csv_header(path)
    time_col = next((c for c in columns if c.lower() in ("timestamps", "timestamp")), None)
    if time_col is None:
        raise IngestError(path, f"has no 'timestamps' column (columns: {columns})")
    markers = [c for c in columns if _MUSE_MARKER.match(c)]
    channels = [c for c in columns if c != time_col and c not in markers]
    if not channels:
        raise IngestError(path, f"has no electrode column (columns: {columns})")
    try:
        table = pd.read_csv(path, usecols=[time_col, *markers], dtype=np.float64)
    except (ValueError, pd.errors.ParserError) as err:
        raise IngestError(path, f"timestamps or markers cannot be parsed: {err}") from err
    times = table[time_col].to_numpy()
    if times.size == 0:
        raise IngestError(path, "holds no samples (only a header)")
    sfreq = _regular_rate(path, times, max_jitter)
    logger.info("%s: %d samples at a measured %.4f Hz", path, times.size, sfreq)
    inferred = {k: m.group(1) for k, pat in (("subject", r"subject(\d+)"),
                                             ("session", r"session(\d+)"))
                if (m := re.search(pat, path.name, re.IGNORECASE))}  # fmt: skip
    identity = recording_identity(path, subject=subject, session=session, task=task, run=run,
                                  inferred=inferred)

    sha = file_sha256(path)
    token = _token(sha, columns, channels)
    signal = blockwise_array(partial(_muse_block, str(path), tuple(columns), tuple(channels)),
                             (times.size, len(channels)), np.float32,
                             name=f"read-muse-csv-{sha[:16]}-{token}")
    types = ["eeg" if aux_as_eeg or "aux" not in c.lower() else "misc" for c in channels]
    names_by_code = {str(k): str(v) for k, v in (marker_map or {}).items()}
    params = {"event_map": dict(event_map or {}), "marker_map": names_by_code,
              "aux_as_eeg": aux_as_eeg, "drop_flat": drop_flat}
    history = [{"step": _MUSE_READER, "params": params}]
    signal, channels, types, _ = _maybe_drop_flat(path, signal, channels, types, drop_flat,
                                                  history)
    onsets, labels, values = [], [], []
    for col in markers:
        codes = table[col].to_numpy()
        idx = np.flatnonzero(np.isfinite(codes) & (codes != 0))
        for i, code in zip(idx, codes[idx], strict=True):
            code = int(code) if float(code).is_integer() else float(code)
            onsets.append(i / sfreq)
            labels.append(names_by_code.get(str(code), str(code)))
            values.append(code)
    events = pd.DataFrame({"onset": onsets, "duration": 0.0, "value": values,
                           "label": [(event_map or {}).get(x, x) for x in labels]})
    ds = make_recording(
        signal, sfreq=sfreq, ch_names=channels, ch_types=types, units="V", modality="eeg",
        events=events, source=source_info(path, _MUSE_READER, pd.__version__),
        history=history, **identity,
    )
    return validate(ds, where=str(path))


# --------------------------------------------------------------------------- MNE files


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise IngestError(path, "does not exist")


def _open_raw_checked(path: Path, *, check_annotations: bool) -> tuple[Any, str | None]:
    """Open a file with MNE (headers only) and refuse what MNE would silently repair.

    Returns the raw object and a description of the annotations MNE dropped or clipped because
    they lie outside the data (None when there are none).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = mne.io.read_raw(path, preload=False, verbose="warning")
        except Exception as err:  # readers raise anything from ValueError to struct.error
            raise IngestError(
                path, f"MNE cannot read it as a {path.suffix or 'folder'} recording "
                f"(unsupported format, or a corrupt or truncated file): "
                f"{type(err).__name__}: {err}"
            ) from err
    messages = [str(w.message) for w in caught]
    for message in messages:
        if _TRUNCATED in message:
            raise IngestError(path, f"the file is truncated or its header is corrupt: {message}")
        if _DUPLICATES in message:
            raise IngestError(path, f"duplicate channel names: {message.split('. ')[0]}")
    if raw.n_times == 0 or not raw.ch_names:
        raise IngestError(path, f"the recording is empty ({raw.n_times} samples, "
                                f"{len(raw.ch_names)} channels)")
    try:
        raw.get_data(start=raw.n_times - 1, stop=raw.n_times)
    except Exception as err:
        raise IngestError(path, f"its last sample cannot be read, the file is probably "
                                f"truncated ({type(err).__name__}: {err})") from err
    outside = [m for m in messages if any(s in m for s in _OUTSIDE)]
    if check_annotations and not outside and path.name.endswith((".fif", ".fif.gz")):
        # read_raw_fif drops out-of-range annotations without a warning: count them.
        try:
            n_file = len(mne.read_annotations(path))
        except OSError:  # "No annotation data found"
            n_file = 0
        if n_file > len(raw.annotations):
            outside.append(f"Omitted {n_file - len(raw.annotations)} of {n_file} annotation(s) "
                           "that were outside data range.")
    return raw, " ".join(outside) or None


@lru_cache(maxsize=8)
def _cached_raw(path: str, size: int, mtime_ns: int) -> Any:
    return mne.io.read_raw(path, preload=False, verbose="error")


def _mne_block(path: str, picks: tuple[int, ...], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the picked channels, as float32 (time, channel)."""
    try:
        raw = _cached_raw(path, *file_stamp(path))
        data = raw.get_data(picks=list(picks), start=start, stop=stop)
    except Exception as err:
        raise OSError(f"{path}: cannot read samples {start}:{stop} "
                      f"({type(err).__name__}: {err})") from err
    return np.ascontiguousarray(data.T, dtype=np.float32)


def _set_types(raw: Any, mapping: Mapping[str, str], path: Path) -> None:
    unknown = sorted(set(mapping) - set(raw.ch_names))
    if unknown:
        raise IngestError(path, f"ch_types names channel(s) that the file lacks: {unknown[:10]}")
    current = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    changes = {n: t for n, t in mapping.items() if current[n] != t}
    if changes:
        try:
            raw.set_channel_types(changes, on_unit_change="ignore", verbose="error")
        except (ValueError, RuntimeError) as err:
            raise IngestError(path, f"channel types cannot be set: {err}") from err


def _recording_from_raw(
    path: Path,
    raw: Any,
    *,
    data_file: Path,
    identity: Mapping[str, str],
    event_map: Mapping[str, str] | None,
    modality: str | None,
    picks: str | Sequence[str] | None,
    drop_flat: bool,
    electrodes: Path | None,
    outside: str | None,
    outside_events: OutsideEvents,
    sidecars: Sequence[Path],
    reader: str,
    reader_version: str,
    params: Mapping[str, Any],
    events: pd.DataFrame | None = None,
) -> xr.Dataset:
    """Build the recording from an opened MNE raw (types set, annotations attached).

    ``events`` (from an events table, onsets from the first sample) replaces the annotations.
    """
    if outside_events not in ("error", "drop"):
        raise IngestError(path, f"outside_events must be 'error' or 'drop', not {outside_events!r}")
    if outside is not None and outside_events == "error":
        raise IngestError(path, f"events lie outside the recording: {outside} Pass "
                                "outside_events='drop' to drop them.")
    history = [{"step": reader, "params": dict(params)}]
    if outside is not None:
        logger.warning("%s: %s", path, outside)
        history.append({"step": _DROP_EVENTS_STEP, "params": {"message": outside}})
    file_names = list(raw.ch_names)
    per_record = _samples_per_record(raw)
    if picks is not None:
        try:
            raw.pick(picks, verbose="error")
        except (ValueError, TypeError) as err:
            raise IngestError(path, f"picks {picks!r} do not fit its channels: {err}") from err
    idx = tuple(file_names.index(n) for n in raw.ch_names)
    if per_record is not None:
        slow = [file_names[i] for i in idx if per_record[i] != per_record.max()]
        if slow:
            raise IngestError(path, f"channels are sampled at different rates: {slow[:10]} have "
                                    f"fewer samples per record than the others "
                                    f"({per_record.max()}), and MNE would interpolate them; "
                                    "leave them out with picks")
    names = list(raw.ch_names)
    types = [t if t in _KEPT_TYPES else "misc" for t in raw.get_channel_types()]
    units = [MNE_UNITS.get(ch["unit"], "n/a") for ch in raw.info["chs"]]
    positions, frame = _mne_positions(raw.info)
    if electrodes is not None:
        positions, frame = _electrode_positions(electrodes, names)

    sha = file_sha256(data_file)
    companions = {str(Path(f).resolve()): file_sha256(f) for f in raw.filenames
                  if f is not None and Path(f).resolve() != data_file.resolve()}
    if electrodes is not None and _coordsystem_of(electrodes).is_file():
        sidecars = [*sidecars, _coordsystem_of(electrodes)]
    companions.update({str(p.resolve()): file_sha256(p) for p in sidecars})
    signal = blockwise_array(partial(_mne_block, str(data_file.resolve()), idx),
                             (raw.n_times, len(idx)), np.float32,
                             name=f"read-mne-{sha[:16]}-{_token(sha, companions, idx)}")
    signal, names, types, keep = _maybe_drop_flat(path, signal, names, types, drop_flat,
                                                  history)
    units = [units[i] for i in keep]
    positions = positions[keep]
    ds = make_recording(
        signal, sfreq=float(raw.info["sfreq"]), ch_names=names, ch_types=types, units=units,
        modality=modality or _infer_modality(types), positions=positions, coord_frame=frame,
        events=_annotation_events(raw, event_map) if events is None else events,
        source=source_info(path, reader, reader_version, companions=companions),
        history=history, **identity,
    )
    return validate(ds, where=str(path))


def _samples_per_record(raw: Any) -> np.ndarray | None:
    """Samples per data record of each channel of an EDF/BDF/GDF file (None for other formats).

    A channel with fewer samples per record than the others is stored at a lower rate; MNE
    interpolates it up to the recording's rate.
    """
    extras = raw._raw_extras[0] if getattr(raw, "_raw_extras", None) else {}
    if "n_samps" not in extras or "sel" not in extras:
        return None
    per_channel = np.asarray(extras["n_samps"])[np.asarray(extras["sel"])]
    return per_channel if per_channel.size == len(raw.ch_names) else None


def _mne_positions(info: Any) -> tuple[np.ndarray, str]:
    """Channel positions in metres and their common frame (MEG sensors moved to head)."""
    from mne.transforms import _frame_to_str, apply_trans

    positions = np.full((len(info["chs"]), 3), np.nan)
    frames: list[str] = []
    for i, ch in enumerate(info["chs"]):
        loc = np.asarray(ch["loc"][:3], dtype=float)
        if not np.isfinite(loc).all() or not loc.any():
            frames.append("")
            continue
        frame = ch["coord_frame"]
        if frame == FIFF.FIFFV_COORD_DEVICE and info["dev_head_t"] is not None:
            loc, frame = apply_trans(info["dev_head_t"], loc), FIFF.FIFFV_COORD_HEAD
        positions[i] = loc
        frames.append(_frame_to_str.get(int(frame), "unknown"))
    known = Counter(f for f in frames if f)
    if not known:
        return positions, "unknown"
    frame, _ = known.most_common(1)[0]
    if len(known) > 1:
        logger.warning("channel positions are in several frames %s; keeping those in %r",
                       dict(known), frame)
        positions[[f != frame for f in frames]] = np.nan
    return positions, frame


def _annotation_events(raw: Any, event_map: Mapping[str, str] | None) -> pd.DataFrame:
    """Annotations as events, onsets in seconds from the first sample."""
    annot = raw.annotations
    labels = [str(d) for d in annot.description]
    return pd.DataFrame({
        "onset": np.asarray(annot.onset, dtype=float) - raw.first_time,
        "duration": np.asarray(annot.duration, dtype=float),
        "label": [(event_map or {}).get(x, x) for x in labels],
        "value": [_numeric(x) for x in labels],
    })


def _numeric(label: str) -> float:
    try:
        value = float(label)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _infer_modality(types: Sequence[str]) -> str:
    counts = Counter(types)
    if counts["mag"] or counts["grad"]:
        return "meg"
    depth, ecog, eeg = counts["seeg"] + counts["dbs"], counts["ecog"], counts["eeg"]
    if depth > eeg and depth >= ecog:
        return "seeg"
    if ecog > eeg:
        return "ecog"
    return "eeg"


# --------------------------------------------------------------------------- BIDS sidecars


def _channels_sidecar(path: Path) -> Path | None:
    """The ``channels.tsv`` that BIDS pairs with a data file, if there is one."""
    if not bids_entities(path).get("subject"):
        return None
    candidate = path.with_name(f"{path.name.rsplit('_', 1)[0]}_channels.tsv")
    return candidate if candidate.is_file() else None


def _electrodes_sidecar(path: Path) -> Path | None:
    """The ``electrodes.tsv`` of the subject and session of a BIDS data file, if there is one."""
    entities = bids_entities(path)
    if not entities.get("subject"):
        return None
    matches = [
        candidate
        for candidate in sorted(path.parent.glob(f"sub-{entities['subject']}_*electrodes.tsv"))
        if all(bids_entities(candidate).get(k) in (None, entities.get(k))
               for k in ("session", "acquisition"))
    ]
    if len(matches) > 1:
        names = [m.name for m in matches]
        raise IngestError(path, f"several electrodes.tsv files fit it ({names}); name one with "
                                "electrodes_tsv")
    return matches[0] if matches else None


def _events_sidecar(path: Path) -> Path | None:
    """The ``events.tsv`` that BIDS pairs with a data file, if there is one.

    BIDS names it after the data file up to the datatype suffix, without the ``split`` entity
    (the events of a split recording cover all its parts).
    """
    if not bids_entities(path).get("subject"):
        return None
    prefix = "_".join(p for p in path.name.rsplit("_", 1)[0].split("_")
                      if not p.startswith("split-"))
    candidate = path.with_name(f"{prefix}_events.tsv")
    return candidate if candidate.is_file() else None


def _events_inside(
    table: str | os.PathLike | pd.DataFrame, path: Path, duration: float,
    event_map: Mapping[str, str] | None,
) -> tuple[pd.DataFrame, str | None]:
    """The events of a table that lie inside ``[0, duration]`` s, and what lies outside."""
    frame = read_events_table(table, event_map=event_map, where=path)
    where = path if isinstance(table, pd.DataFrame) else Path(table)
    bad, message = _outside(where, frame["onset"].to_numpy(), frame["duration"].to_numpy(),
                            duration)
    return frame[~bad].reset_index(drop=True), message


def _outside(where: Path, onset: np.ndarray, length: np.ndarray,
             duration: float) -> tuple[np.ndarray, str | None]:
    """Which events lie (partly) outside ``[0, duration]`` seconds, and a sentence about them."""
    tol = 1e-6 * max(1.0, duration)
    bad = np.isfinite(onset) & ((onset < -tol) | (onset + length > duration + tol))
    if not bad.any():
        return bad, None
    i = int(np.argmax(bad))
    return bad, (f"{int(bad.sum())} event(s) of {where} lie outside the recording "
                 f"[0, {duration:g}] s, e.g. row {i + 1} at {onset[i]:g} s lasting "
                 f"{length[i]:g} s.")


def _coordsystem_of(electrodes: Path) -> Path:
    return electrodes.with_name(electrodes.name.replace("_electrodes.tsv", "_coordsystem.json"))


def _read_tsv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    check_if_gzip(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise IngestError(path, f"cannot be read as a BIDS table: {err}") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise IngestError(path, f"lacks the column(s) {missing} (columns: {list(table.columns)})")
    return table


def _types_from_channels_tsv(path: Path, ch_names: Sequence[str]) -> dict[str, str]:
    table = _read_tsv(path, ("name", "type"))
    extra = sorted(set(table["name"]) - set(ch_names))
    if extra:
        raise IngestError(path, f"lists channel(s) that the recording lacks: {extra[:10]}")
    return {
        name: _BIDS_TYPES.get(kind.strip().upper(), "misc")
        for name, kind in zip(table["name"], table["type"], strict=True)
        if not kind.strip().upper().startswith("MEG")
    }


def _electrode_positions(path: Path, names: Sequence[str]) -> tuple[np.ndarray, str]:
    """Positions (metres) of ``names`` from electrodes.tsv, and the BIDS coordinate system."""
    table = _read_tsv(path, ("name", "x", "y", "z"))
    xyz = table[["x", "y", "z"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    frame, scale = "unknown", 1.0
    coordsystem = _coordsystem_of(path)
    if coordsystem.is_file():
        try:
            meta = json.loads(coordsystem.read_text())
        except (OSError, ValueError) as err:
            raise IngestError(coordsystem, f"is not valid JSON: {err}") from err
        for kind in ("iEEG", "EEG", "MEG"):
            if f"{kind}CoordinateSystem" in meta:
                frame = str(meta[f"{kind}CoordinateSystem"])
                scale = _COORD_UNITS.get(str(meta.get(f"{kind}CoordinateUnits", "m")), 1.0)
                break
    by_name = dict(zip(table["name"], xyz * scale, strict=True))
    nan = np.full(3, np.nan)
    return np.array([by_name.get(n, nan) for n in names]).reshape(len(names), 3), frame


# --------------------------------------------------------------------------- BIDS datasets


def _bids_recordings(root: Path, datatype: str | None, **entities: str | None) -> list[Any]:
    """The EEG/MEG/iEEG data files of a BIDS dataset that have the given entities."""
    if not root.is_dir():
        raise IngestError(root, "is not a folder (expected the root of a BIDS dataset)")
    if datatype is not None and datatype not in _BIDS_EXTENSIONS:
        raise IngestError(root, f"datatype {datatype!r} is not one of {sorted(_BIDS_EXTENSIONS)}")
    datatypes = [datatype] if datatype else sorted(_BIDS_EXTENSIONS)
    found = mne_bids.find_matching_paths(
        root, datatypes=datatypes, suffixes=datatypes,
        extensions=sorted({e for d in datatypes for e in _BIDS_EXTENSIONS[d]}),
        **{f"{k}s": v for k, v in entities.items() if v is not None},
    )
    # split FIF recordings are read from their first part
    return sorted((bp for bp in found if bp.split in (None, "01") and bp.task is not None),
                  key=lambda bp: str(bp.fpath))


# --------------------------------------------------------------------------- Muse CSV


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise IngestError(path, f"cannot be read as a text CSV file: {err}") from err
    if not header:
        raise IngestError(path, "is empty (no header line)")
    columns = list(header)
    dups = sorted(c for c, n in Counter(columns).items() if n > 1)
    if dups:
        raise IngestError(path, f"duplicate column (channel) names: {dups}")
    return columns


def _regular_rate(path: Path, times: np.ndarray, max_jitter: float) -> float:
    """Sampling rate of timestamps that jitter around a regular grid; refuse irregular ones."""
    if times.size < 2:
        raise IngestError(path, f"holds {times.size} sample(s); a sampling rate needs two")
    if not np.isfinite(times).all():
        raise IngestError(path, f"{int((~np.isfinite(times)).sum())} timestamp(s) are missing "
                                "or not numbers")
    index = np.arange(times.size, dtype=float)
    index -= index.mean()
    rel = times - times.mean()
    step = float(index @ rel / (index @ index))
    if not step > 0:
        raise IngestError(path, "timestamps do not increase")
    offset = np.abs(rel - step * index)
    worst = int(np.argmax(offset))
    if offset[worst] > max_jitter:
        raise IngestError(
            path, f"timestamps are irregular: sample {worst} lies {offset[worst]:.3f} s off the "
            f"regular {1 / step:.3f} Hz grid fitted to them (max_jitter={max_jitter} s); samples "
            "were dropped or the rate varies"
        )
    return 1.0 / step


def _muse_block(path: str, columns: tuple[str, ...], channels: tuple[str, ...], start: int,
                stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the electrode columns, converted from microvolts to volts."""
    try:
        table = pd.read_csv(path, header=None, names=list(columns), usecols=list(channels),
                            skiprows=start + 1, nrows=stop - start, dtype=np.float64)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: cannot read rows {start}:{stop} ({err})") from err
    return (table[list(channels)].to_numpy() * 1e-6).astype(np.float32)


# --------------------------------------------------------------------------- shared helpers


def _maybe_drop_flat(
    path: Path, signal: da.Array, names: list[str], types: list[str], drop_flat: bool,
    history: list[dict[str, Any]],
) -> tuple[da.Array, list[str], list[str], list[int]]:
    """Drop constant channels when asked (one pass over the data); log and record it."""
    keep = list(range(len(names)))
    if not drop_flat:
        return signal, names, types, keep
    (span,) = dask.compute(signal.max(axis=0) - signal.min(axis=0))
    flat = [names[i] for i in keep if span[i] == 0]
    if not flat:
        return signal, names, types, keep
    if len(flat) == len(names):
        raise IngestError(path, "every channel is flat (constant)")
    keep = [i for i in keep if span[i] != 0]
    logger.warning("%s: dropped %d flat channel(s): %s", path, len(flat), ", ".join(flat))
    history.append({"step": _DROP_FLAT_STEP, "params": {"channels": flat}})
    return signal[:, keep], [names[i] for i in keep], [types[i] for i in keep], keep


def _jsonable(picks: str | Sequence[str] | None) -> str | list[str] | None:
    return picks if picks is None or isinstance(picks, str) else [str(p) for p in picks]


def _token(*parts: Any) -> str:
    """Short digest of JSON-able parts, for deterministic Dask names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
