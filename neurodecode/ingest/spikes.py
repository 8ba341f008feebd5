"""Spike-train readers: exact spike times kept, counts binned lazily, behaviour put on the bins.

Readers of sorted units (:func:`read_spike_times` for NumPy/MATLAB spike files,
:func:`read_matclust` and :func:`read_nelpy_linear_track` for MatClust tetrode data with video
position tracking, :func:`read_nwb_units` for NWB units tables) and of already binned counts
(:func:`read_binned_trials`, :func:`read_golub_bci`). Every one returns a ``spikes`` recording
(see :mod:`neurodecode.schema`) that follows these conventions.

Time
    Source times are seconds on the source clock. The recording covers ``[t_start, t_stop]`` of
    that clock and its time axis is 0 at ``t_start``: ``attrs["time_origin"]`` holds ``t_start``,
    so a recording time ``t`` is ``t + time_origin`` on the source clock. Spike times
    (``spike_time``) and event onsets are shifted the same way.
Bins
    ``time[i] = i * bin_size`` is the *start* of bin ``i`` and ``signal[i, u]`` counts the spikes
    of unit ``u`` in ``[time[i], time[i] + bin_size)`` (float32, channel type ``unit``, units
    ``count``; ``sfreq = 1 / bin_size``). The counts are a lazy Dask array: each block bins only
    its own spikes, found by binary search in the sorted spike times, so a long recording is never
    held as a dense matrix. ``spike_unit`` is the channel index of each spike.
Behaviour
    Covariates sampled on their own clock are resampled at the bin centres
    ``time + bin_size / 2`` by linear interpolation between *valid* samples. NaN samples (and
    untracked video frames) are missing; an infinite sample is an error. Each
    ``behavior_<name>`` comes with a boolean ``behavior_<name>_valid`` that is true where the bin
    centre lies on a valid sample or between two valid samples at most ``max_gap`` seconds apart.
    Elsewhere the value is interpolated across the gap (or, outside the tracked span, held at the
    nearest valid sample): finite, so that the store accepts it, but not a measurement. Mask it
    with ``behavior_<name>_valid``.
Events
    ``event_map`` renames event labels (source label to stored label); labels it does not name
    are kept. Readers of files without events refuse a non-empty one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..schema import make_recording, validate
from .base import (
    IngestError,
    bids_label,
    blockwise_array,
    file_sha256,
    read_table_columns,
    recording_identity,
    refuse_event_map,
    snake_case,
    source_info,
)

__all__ = [
    "load_video_position_tracking",
    "read_binned_trials",
    "read_golub_bci",
    "read_matclust",
    "read_nelpy_linear_track",
    "read_nwb_units",
    "read_spike_times",
]

#: Spike time units understood by :func:`read_spike_times` (seconds per unit).
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
#: Default ``max_gap``: this many median sampling intervals of the behaviour clock.
_GAP_FACTOR = 5.0
_MODULE = "neurodecode.ingest.spikes"

# A behaviour source: name -> (timestamps in source-clock seconds, values with time first).
_Behavior = dict[str, tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------
# Generic NumPy / MATLAB spike files
# --------------------------------------------------------------------------------------------


def read_spike_times(
    path: str | os.PathLike,
    *,
    bin_size: float = 0.025,
    t_start: float | None = None,
    t_stop: float | None = None,
    times_key: str = "spike_times",
    units_key: str = "spike_clusters",
    time_unit: str = "s",
    sampling_rate: float | None = None,
    behavior: Mapping[str, Any] | str | os.PathLike | None = None,
    max_gap: float | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read sorted spikes from a NumPy or MATLAB file.

    Layouts understood:

    * ``.npz`` (or MATLAB ``.mat``) holding two vectors of equal length: ``times_key`` (spike
      times) and ``units_key`` (unit id of each spike), as Kilosort/phy write them.
    * ``.npy`` holding the spike times, with the unit ids in ``<units_key>.npy`` in the same
      folder (a Kilosort/phy output folder: ``spike_times.npy`` + ``spike_clusters.npy``).
    * MATLAB ``.mat`` whose ``times_key`` is a cell array of per-unit spike-time vectors (unit
      names from ``units_key`` if the file has it, one per cell, else ``unit1``, ``unit2``, ...
      by MATLAB's 1-based cell index) or a struct whose fields are the units' spike-time vectors
      (unit names are the field names).

    Integer unit ids are named ``unit<id>``; string ids are used as they are.

    Parameters
    ----------
    path : path-like
        The spike file.
    bin_size : float
        Width of the count bins in seconds.
    t_start, t_stop : float, optional
        Extent of the recording in seconds on the file's clock. Default: the first and last
        spike. Spikes outside an explicit extent are an error.
    times_key, units_key : str
        Names of the spike-time and unit variables.
    time_unit : {"s", "ms", "us", "samples"}
        Unit of the stored times; ``"samples"`` (sample indices) needs ``sampling_rate``.
    sampling_rate : float, optional
        Samples per second of sample-index times.
    behavior : mapping or path-like, optional
        Covariates: a mapping with a ``"time"`` array (seconds on the spike clock, after the
        ``time_unit`` conversion) and one array per covariate (time first), or a ``.npz`` file
        with the same keys, or a ``.csv``/``.tsv`` table with a ``time`` column. Resampled on
        the bin centres with a validity mask (see the module notes).
    max_gap : float, optional
        Longest gap (seconds) between valid behaviour samples that is interpolated and marked
        valid. Default: 5 median sampling intervals of the behaviour.
    subject, session, task, run : str, optional
        Identity; defaults: BIDS entities of the file name, else the sanitized file stem (the
        folder name for ``.npy``), ``"01"``, ``"unknown"``, ``"01"``.
    event_map : mapping, optional
        Must be empty: these files hold no events (an :class:`IngestError` otherwise).

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording.

    Raises
    ------
    IngestError
        If the file cannot be read or holds no, non-finite or out-of-extent spikes, or
        duplicate unit names, or if the behaviour is malformed.
    """
    path = Path(path)
    refuse_event_map(path, event_map)
    scale = _time_scale(time_unit, sampling_rate)
    suffix = path.suffix.lower()
    companions: dict[str, str] = {}
    if suffix == ".npz":
        arrays = _load_npz(path)
        times, units, names = _flat_spikes(path, arrays, times_key, units_key)
        version = np.__version__
    elif suffix == ".npy":
        units_path = path.with_name(f"{units_key}.npy")
        if not units_path.is_file():
            raise IngestError(path, f"the unit ids are missing: no {units_path.name} beside it")
        arrays = {times_key: _load_npy(path), units_key: _load_npy(units_path)}
        times, units, names = _flat_spikes(path, arrays, times_key, units_key)
        companions = {"units_path": str(units_path.resolve()),
                      "units_sha256": file_sha256(units_path)}
        version = np.__version__
    elif suffix == ".mat":
        import scipy

        times, units, names = _mat_spikes(path, times_key, units_key)
        version = scipy.__version__
    else:
        raise IngestError(path, f"unsupported file type {path.suffix!r}; expected .npz, .npy or "
                                ".mat")
    times = times * scale
    params: dict[str, Any] = {"bin_size": bin_size, "times_key": times_key,
                              "units_key": units_key, "time_unit": time_unit,
                              "sampling_rate": sampling_rate, "behavior": None}
    behavior_data: _Behavior = {}
    if behavior is not None:
        behavior_data, beh_path = _behavior_source(path, behavior)
        params["behavior"] = sorted(behavior_data) if beh_path is None else str(beh_path)
        if beh_path is not None:
            companions.update(behavior_path=str(beh_path.resolve()),
                              behavior_sha256=file_sha256(beh_path))
    return _spike_recording(
        path, times, units, names,
        bin_size=bin_size, t_start=t_start, t_stop=t_stop,
        default_extent=None, behavior=behavior_data, max_gap=max_gap,
        identity=recording_identity(
            path, subject=subject, session=session, task=task, run=run,
            inferred={"subject": bids_label(path.parent.name)} if suffix == ".npy" else None),
        source=source_info(path, reader=f"{_MODULE}.read_spike_times", reader_version=version,
                           **companions),
        step="read_spike_times", params=params, event_map=None,
    )


def _time_scale(time_unit: str, sampling_rate: float | None) -> float:
    if time_unit == "samples":
        if sampling_rate is None or not sampling_rate > 0:
            raise ValueError("time_unit='samples' needs a positive sampling_rate")
        return 1.0 / float(sampling_rate)
    if time_unit not in _TIME_UNITS:
        raise ValueError(f"time_unit must be one of {[*_TIME_UNITS, 'samples']}, got {time_unit!r}")
    if sampling_rate is not None:
        raise ValueError("sampling_rate applies only to time_unit='samples'")
    return _TIME_UNITS[time_unit]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as err:
        problem = f"cannot be read as a NumPy .npz archive ({_describe(err)})"
        raise IngestError(path, problem) from err


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise IngestError(path, f"cannot be read as a NumPy .npy array ({_describe(err)})") from err


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _flat_spikes(path: Path, arrays: Mapping[str, Any], times_key: str,
                 units_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Spike times and per-spike unit ids -> (times, unit index per spike, unit names)."""
    for key in (times_key, units_key):
        if key not in arrays:
            raise IngestError(path, f"has no {key!r} variable (found: {sorted(arrays)})")
    times = _numeric_vector(path, arrays[times_key], times_key)
    ids = np.asarray(arrays[units_key])
    if ids.dtype == object:  # a MATLAB cell array of string ids
        ids = np.array([_mat_string(v) for v in ids.ravel(order="F")])
    ids = ids.ravel()
    if ids.size != times.size:
        raise IngestError(path, f"{times_key!r} has {times.size} spikes but {units_key!r} has "
                                f"{ids.size} unit ids")
    if ids.dtype.kind in "US":
        uniq, index = np.unique(ids.astype(str), return_inverse=True)
        names = [str(u).strip() for u in uniq]
    elif ids.dtype.kind in "iuf" and (ids.dtype.kind != "f" or
                                      np.all(np.isfinite(ids) & (ids == np.round(ids)))):
        uniq, index = np.unique(ids, return_inverse=True)
        names = [f"unit{int(u)}" for u in uniq]
    else:
        raise IngestError(path, f"unit ids {units_key!r} must be integers or strings, got "
                                f"{ids.dtype} values")
    return times, index.astype(np.int64), names


def _numeric_vector(path: Path, values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or (arr.ndim > 1 and sorted(arr.shape)[-2] > 1):
        raise IngestError(path, f"{what} must be a numeric vector, got {arr.dtype} values of "
                                f"shape {arr.shape}")
    return arr.astype(np.float64).ravel()


def _loadmat(path: Path, *, squeeze_me: bool) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path, squeeze_me=squeeze_me, struct_as_record=False)
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise IngestError(path, "is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it "
                                "with save(..., '-v7')") from err
    except Exception as err:
        raise IngestError(path, f"cannot be read as a MATLAB .mat file (truncated or not a "
                                f"MAT-file: {_describe(err)})") from err


def _mat_string(value: Any) -> str:
    arr = np.asarray(value).ravel()
    return "".join(str(v) for v in arr).strip()


def _mat_spikes(path: Path, times_key: str,
                units_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from scipy.io.matlab import mat_struct

    mat = _loadmat(path, squeeze_me=False)
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    if times_key not in variables:
        raise IngestError(path, f"has no {times_key!r} variable (found: {sorted(variables)})")
    var = variables[times_key]
    if not (isinstance(var, np.ndarray) and var.dtype == object):
        return _flat_spikes(path, variables, times_key, units_key)
    items = var.ravel(order="F")
    if items.size == 1 and isinstance(items[0], mat_struct):
        names = list(items[0]._fieldnames)
        trains = [getattr(items[0], f) for f in names]
    elif all(isinstance(v, np.ndarray) and v.dtype != object for v in items):
        trains = list(items)
        if units_key in variables:
            ids = np.asarray(variables[units_key])
            ids = ids.ravel(order="F")
            names = [_mat_string(v) if ids.dtype == object else f"unit{v:g}" for v in ids]
            if len(names) != len(trains):
                raise IngestError(path, f"{units_key!r} names {len(names)} units but "
                                        f"{times_key!r} holds {len(trains)} spike trains")
        else:
            names = [f"unit{i + 1}" for i in range(len(trains))]
    else:
        raise IngestError(path, f"{times_key!r} must be a vector, a cell array of spike-time "
                                "vectors or a struct of them")
    vectors = [_numeric_vector(path, t, f"{times_key!r} of unit {n!r}") if np.size(t) else
               np.empty(0) for t, n in zip(trains, names, strict=True)]
    times = np.concatenate(vectors) if vectors else np.empty(0)
    units = np.repeat(np.arange(len(vectors)), [v.size for v in vectors])
    return times, units, names


# --------------------------------------------------------------------------------------------
# MatClust + video position tracking (Frank lab format; nelpy linear track)
# --------------------------------------------------------------------------------------------


def read_matclust(
    path: str | os.PathLike,
    *,
    position: str | os.PathLike | None = None,
    bin_size: float = 0.025,
    t_start: float | None = None,
    t_stop: float | None = None,
    time_unit: str = "auto",
    epoch: Sequence[int] | None = None,
    region: str = "",
    max_gap: float | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read MatClust-sorted tetrode units (a ``spikes.mat``), with optional video position.

    The file holds one variable ``spikes``: nested cell arrays (Frank-lab layout
    ``spikes{day}{epoch}{tetrode}{cluster}``; the day/epoch levels may be absent) whose leaves
    are structs with fields ``time`` (spike times), ``timerange`` and ``meanrate``. As the
    format's documentation says, unsorted tetrodes and clusters are empty arrays, and clusters
    with an empty ``time`` are not units: both are skipped. Units are named
    ``tt<tetrode>_c<cluster>`` with MATLAB's 1-based indices.

    Spike time unit: MatClust files store seconds on the acquisition clock, but some store clock
    ticks. With ``time_unit="auto"`` and a position file, the reader takes seconds if the spike
    times overlap the position timestamps (ticks / clockrate), ticks if they overlap only once
    divided by the clockrate, and raises otherwise; without a position file it takes seconds.
    The resolved unit is in ``attrs["spike_time_unit"]`` and the history.

    Parameters
    ----------
    path : path-like
        The ``spikes.mat`` file.
    position : path-like, optional
        A ``.videoPositionTracking`` file on the same clock (see
        :func:`load_video_position_tracking`). Gives ``behavior_position`` (x, y of the first
        LED, resampled on the bins; ``behavior_position2`` for the second LED if it was tracked)
        and ``behavior_speed`` (central differences of the resampled position, unsmoothed: pixel
        jitter and tracking glitches show up in it), each with its ``_valid`` mask. Units are
        centimetres if the header's pixel scale is known, else pixels
        (``attrs["position_units"]``); image y grows downwards.
    bin_size : float
        Width of the count bins in seconds.
    t_start, t_stop : float, optional
        Extent in seconds on the acquisition clock. Default: the clusters' ``timerange`` (the
        sorted epoch), widened to every spike.
    time_unit : {"auto", "s", "ticks"}
        Unit of the spike times; ``"ticks"`` needs the position file's clockrate.
    epoch : sequence of int, optional
        1-based indices of the day/epoch cells to read when the file holds several.
    region : str
        Anatomical label of every unit.
    max_gap : float, optional
        Longest untracked gap (seconds) that is interpolated and marked valid. Default: 5 median
        video frame intervals.
    subject, session, task, run : str, optional
        Identity; defaults: BIDS entities of the file name, else the sanitized file stem,
        ``"01"``, ``"unknown"``, ``"01"``.
    event_map : mapping, optional
        Must be empty: these files hold no events (an :class:`IngestError` otherwise).

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording.

    Raises
    ------
    IngestError
        If a file cannot be read, the structure is not MatClust's, no unit has spikes, spikes
        lie outside an explicit extent, or the time units cannot be reconciled.
    """
    import scipy

    path = Path(path)
    refuse_event_map(path, event_map)
    mat = _loadmat(path, squeeze_me=False)
    trains, names, timerange = _matclust_units(path, mat, epoch)
    times = np.concatenate(trains)
    units = np.repeat(np.arange(len(trains)), [t.size for t in trains])
    companions: dict[str, Any] = {}
    behavior: _Behavior = {}
    extra: dict[str, Any] = {}
    track = None
    if position is not None:
        position = Path(position)
        track = load_video_position_tracking(position)
        companions = {"position_path": str(position.resolve()),
                      "position_sha256": file_sha256(position)}
    unit = _matclust_time_unit(path, times, track, time_unit)
    if unit == "ticks":
        times = times / track.attrs["clockrate"]
        timerange = None if timerange is None else timerange / track.attrs["clockrate"]
    params: dict[str, Any] = {"bin_size": bin_size, "time_unit": unit,
                              "epoch": list(epoch or []), "region": region}
    if track is not None:
        behavior, extra = _position_behavior(position, track)
        params["position_units"] = extra["position_units"]
    default = None
    if timerange is not None:
        default = (min(timerange[0], times.min()), max(timerange[1], times.max()))
    return _spike_recording(
        path, times, units, names,
        bin_size=bin_size, t_start=t_start, t_stop=t_stop, default_extent=default,
        behavior=behavior, max_gap=max_gap, speed_from="position" if track is not None else None,
        regions=[region] * len(names),
        identity=recording_identity(path, subject=subject, session=session, task=task, run=run),
        source=source_info(path, reader=f"{_MODULE}.read_matclust",
                           reader_version=scipy.__version__, **companions),
        step="read_matclust", params=params, event_map=None,
        extra_attrs={"spike_time_unit": unit, **extra},
    )


def _matclust_units(path: Path, mat: Mapping[str, Any], epoch: Sequence[int] | None
                    ) -> tuple[list[np.ndarray], list[str], np.ndarray | None]:
    """Walk the nested cells of ``spikes`` down to the cluster structs."""
    from scipy.io.matlab import mat_struct

    if "spikes" not in mat:
        raise IngestError(path, "has no 'spikes' variable; it is not a MatClust spikes file")
    leaves: list[tuple[tuple[int, ...], Any]] = []

    def walk(node: Any, index: tuple[int, ...]) -> None:
        if isinstance(node, mat_struct):
            leaves.append((index, node))
        elif isinstance(node, np.ndarray) and node.dtype == object:
            items = node.ravel(order="F")
            if items.size == 1 and isinstance(items[0], mat_struct):
                walk(items[0], index)  # a 1x1 struct array is the struct itself
            else:
                for k, child in enumerate(items):
                    walk(child, (*index, k + 1))
        # numeric arrays are empty cells: unsorted tetrodes or clusters

    walk(mat["spikes"], ())
    if not leaves:
        raise IngestError(path, "'spikes' holds no cluster structs (no tetrode was sorted)")
    depths = {len(i) for i, _ in leaves}
    if len(depths) != 1 or min(depths) < 2:
        raise IngestError(path, "'spikes' is not nested as {day}{epoch}{tetrode}{cluster} "
                                f"(cluster structs found at depths {sorted(depths)})")
    units = []
    for index, leaf in leaves:
        if "time" not in leaf._fieldnames:
            raise IngestError(path, f"cluster struct {index} has no 'time' field "
                                    f"(fields: {leaf._fieldnames})")
        if np.size(leaf.time):
            units.append((index, leaf))
    prefixes = sorted({i[:-2] for i, _ in units})
    if epoch is not None:
        units = [(i, u) for i, u in units if i[:-2] == tuple(epoch)]
        if not units:
            raise IngestError(path, f"no unit in day/epoch {tuple(epoch)}; found {prefixes}")
    elif len(prefixes) > 1:
        raise IngestError(path, f"holds units of several day/epoch cells {prefixes}; choose one "
                                "with epoch=")
    if not units:
        raise IngestError(path, "holds no spikes: every cluster's 'time' is empty")
    trains = [_numeric_vector(path, u.time, f"spike times of cluster {i}") for i, u in units]
    names = [f"tt{i[-2]:02d}_c{i[-1]:02d}" for i, _ in units]
    ranges = [np.asarray(u.timerange, float).ravel() for _, u in units
              if "timerange" in u._fieldnames and np.size(u.timerange) == 2]
    timerange = (np.array([min(r[0] for r in ranges), max(r[1] for r in ranges)])
                 if ranges else None)
    return trains, names, timerange


def _matclust_time_unit(path: Path, times: np.ndarray, track: pd.DataFrame | None,
                        time_unit: str) -> str:
    if time_unit not in ("auto", "s", "ticks"):
        raise ValueError(f"time_unit must be 'auto', 's' or 'ticks', got {time_unit!r}")
    if track is None:
        if time_unit == "ticks":
            raise ValueError("time_unit='ticks' needs the position file's clockrate")
        return "s"
    if time_unit != "auto":
        return time_unit
    lo, hi = float(times.min()), float(times.max())
    p_lo, p_hi = float(track["time"].iloc[0]), float(track["time"].iloc[-1])
    clock = track.attrs["clockrate"]
    if min(hi, p_hi) > max(lo, p_lo):
        return "s"
    if min(hi / clock, p_hi) > max(lo / clock, p_lo):
        return "ticks"
    raise IngestError(path, f"spike times [{lo:g}, {hi:g}] overlap the position timestamps "
                            f"[{p_lo:g}, {p_hi:g}] s neither as seconds nor as {clock:g} Hz "
                            "clock ticks; are they from the same session?")


def load_video_position_tracking(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``.videoPositionTracking`` file (Trodes camera module).

    The file is a text header between ``<Start settings>`` and ``<End settings>`` lines
    (``key: value`` lines, among them ``clockrate``, ``pixel scale`` and
    ``Fields: <time uint32><xloc uint16>...``), then little-endian binary records with those
    fields. Timestamps are clock ticks.

    Parameters
    ----------
    path : path-like
        The tracking file.

    Returns
    -------
    DataFrame
        Columns ``time`` (seconds: ticks / clockrate), ``x``, ``y`` (first LED, pixels) and
        ``x2``, ``y2`` (second LED) as floats, NaN where the LED was not tracked (position
        (0, 0)). Records with a repeated timestamp are dropped (the first is kept).
        ``attrs["header"]`` holds the header entries, ``attrs["clockrate"]`` the clock in Hz
        and ``attrs["pixel_scale"]`` pixels per cm (NaN if the header gives 0, i.e. unknown).

    Raises
    ------
    IngestError
        If the header is malformed, a field is unknown, the records are truncated or the
        timestamps go backwards.
    """
    path = Path(path)
    raw = path.read_bytes()
    start, end = b"<Start settings>", b"<End settings>"
    if not raw.startswith(start) or end not in raw:
        raise IngestError(path, "corrupt header: expected the text header between "
                                "'<Start settings>' and '<End settings>'")
    stop = raw.index(end) + len(end)
    stop += 2 if raw[stop:stop + 2] == b"\r\n" else 1 if raw[stop:stop + 1] == b"\n" else 0
    try:
        text = raw[len(start):raw.index(end)].decode("ascii")
    except UnicodeDecodeError as err:
        raise IngestError(path, "corrupt header: it is not ASCII text") from err
    header = {}
    for line in text.splitlines():
        if line.strip():
            key, sep, value = line.partition(":")
            if not sep:
                raise IngestError(path, f"corrupt header: line {line!r} is not 'key: value'")
            header[key.strip().lower()] = value.strip()
    fields = re.findall(r"<(\w+) (\w+)>", header.get("fields", ""))
    names = [f for f, _ in fields]
    if not {"time", "xloc", "yloc"} <= set(names):
        raise IngestError(path, f"corrupt header: 'Fields' must list time, xloc and yloc, got "
                                f"{header.get('fields')!r}")
    try:
        dtype = np.dtype([(f, np.dtype(t).newbyteorder("<")) for f, t in fields])
        clockrate = float(header["clockrate"])
    except (TypeError, KeyError, ValueError) as err:
        raise IngestError(path, f"corrupt header: bad field type or clockrate ({err})") from err
    if not clockrate > 0:
        raise IngestError(path, f"corrupt header: clockrate must be positive, got {clockrate}")
    body = len(raw) - stop
    if body % dtype.itemsize:
        raise IngestError(path, f"truncated: {body} bytes of records is not a whole number of "
                                f"{dtype.itemsize}-byte records")
    rec = np.frombuffer(raw, dtype=dtype, offset=stop)
    if rec.size == 0:
        raise IngestError(path, "holds no position records")
    ticks = rec["time"].astype(np.int64)
    steps = np.diff(ticks)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0)) + 1
        raise IngestError(path, f"timestamps go backwards at record {i} ({ticks[i - 1]} then "
                                f"{ticks[i]})")
    keep = np.r_[True, steps > 0]
    rec = rec[keep]
    frame = pd.DataFrame({"time": rec["time"].astype(np.float64) / clockrate})
    for col, (fx, fy) in {"": ("xloc", "yloc"), "2": ("xloc2", "yloc2")}.items():
        if fx in names and fy in names:
            x, y = rec[fx].astype(np.float64), rec[fy].astype(np.float64)
            lost = (x == 0) & (y == 0)
            frame[f"x{col}"] = np.where(lost, np.nan, x)
            frame[f"y{col}"] = np.where(lost, np.nan, y)
    scale = re.match(r"\s*([0-9.eE+-]+)", header.get("pixel scale", ""))
    pixel_scale = float(scale.group(1)) if scale else 0.0
    frame.attrs = {"header": header, "clockrate": clockrate,
                   "pixel_scale": pixel_scale if pixel_scale > 0 else math.nan}
    return frame


def _position_behavior(path: Path, track: pd.DataFrame) -> tuple[_Behavior, dict[str, Any]]:
    """Position covariates of a tracking table, in cm if the pixel scale is known."""
    if track["x"].isna().all():
        raise IngestError(path, "the LED was never tracked: every position is (0, 0)")
    scale = track.attrs["pixel_scale"]
    known = not math.isnan(scale)
    t = track["time"].to_numpy()
    behavior: _Behavior = {}
    for name, (cx, cy) in {"position": ("x", "y"), "position2": ("x2", "y2")}.items():
        if cx in track and track[cx].notna().any():
            xy = track[[cx, cy]].to_numpy()
            behavior[name] = (t, xy / scale if known else xy)
    units = "cm" if known else "pixel"
    extra = {
        "position_units": units,
        "speed_units": f"{units}/s",
        "pixel_scale": f"{scale:g} pixel/cm" if known else
                       "unknown (0 in the tracking header): positions are in camera pixels",
        "camera_resolution": track.attrs["header"].get("camera resolution", ""),
        "position_clockrate": track.attrs["clockrate"],
    }
    return behavior, extra


def read_nelpy_linear_track(
    folder: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
    **options: Any,
) -> xr.Dataset:
    """Read the nelpy linear-track example (rat hippocampus tetrodes on a linear track).

    A thin convenience over :func:`read_matclust`: ``<folder>/spikes.mat`` with the position of
    ``<folder>/trajectory.videoPositionTracking``. In this dataset the spike times are seconds
    on the 30 kHz acquisition clock that stamps the video frames (ticks / 30000), so both share
    one time origin; the pixel scale is unknown, so positions stay in camera pixels. The video
    is 60 frames per second with no untracked frame, but from about 985 s after the start to the
    end (about 1000 s) the tracker reports one fixed spot, (522, 8) px: the animal is presumably
    off the tracked track then. The reader keeps it as recorded (valid, speed 0).

    Parameters
    ----------
    folder : path-like
        The dataset folder.
    subject, session, task, run : str, optional
        Identity; defaults: the sanitized folder name, ``"01"``, ``"lineartrack"``, ``"01"``.
    event_map : mapping, optional
        Must be empty: these files hold no events (an :class:`IngestError` otherwise).
    **options
        Passed to :func:`read_matclust` (``bin_size``, ``t_start``, ``t_stop``, ...).

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording.
    """
    folder = Path(folder)
    for name in ("spikes.mat", "trajectory.videoPositionTracking"):
        if not (folder / name).is_file():
            raise IngestError(folder, f"lacks {name}; is it the nelpy linear-track folder?")
    options.setdefault("region", "hippocampus")
    return read_matclust(
        folder / "spikes.mat", position=folder / "trajectory.videoPositionTracking",
        subject=subject or bids_label(folder.name), session=session, task=task or "lineartrack",
        run=run, event_map=event_map, **options,
    )


# --------------------------------------------------------------------------------------------
# NWB units tables
# --------------------------------------------------------------------------------------------


def read_nwb_units(
    path: str | os.PathLike,
    *,
    bin_size: float = 0.025,
    t_start: float | None = None,
    t_stop: float | None = None,
    trial_label: str | None = None,
    behavior_module: str = "behavior",
    max_gap: float | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read the units table of an NWB file, with its trials and behaviour.

    Units are named ``unit<id>`` from the table's ids; their region is the units table's
    ``location`` column if it has one, else the location(s) of their electrodes. Trials become
    events (onset ``start_time``, duration ``stop_time - start_time``). Every time series of the
    ``behavior_module`` processing module (e.g. the SpatialSeries of a ``Position``) is resampled
    on the bins (``conversion`` and ``offset`` applied) as ``behavior_<series name>`` (prefixed
    with its container's name if two containers hold series of the same name); their units are
    in ``attrs["behavior_units"]``. The units' ``obs_intervals`` are not used.

    Parameters
    ----------
    path : path-like
        The NWB (HDF5) file.
    bin_size : float
        Width of the count bins in seconds.
    t_start, t_stop : float, optional
        Extent in seconds of the file's clock. Default: from 0 (the session start; earlier if a
        spike or trial is) to the last spike or trial end. Spikes or trials outside an explicit
        extent are an error.
    trial_label : str, optional
        Trials column giving the event labels: strings are used as they are, numbers become
        ``<column>_<value>`` with the number as event value. Default: every label is
        ``"trial"``.
    behavior_module : str
        Name of the processing module holding the behaviour.
    max_gap : float, optional
        Longest gap (seconds) between valid behaviour samples that is interpolated and marked
        valid. Default: 5 median sampling intervals of each series.
    subject, session, task, run : str, optional
        Identity; defaults: BIDS entities of the file name, else the file's subject id (else
        the sanitized stem) and session id (else ``"01"``), ``"unknown"``, ``"01"``.
    event_map : mapping, optional
        Renames event labels.

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording.

    Raises
    ------
    IngestError
        If the file is not a readable NWB file, has no units, or its spikes are empty,
        non-finite or outside an explicit extent.
    """
    import pynwb

    path = Path(path)
    try:
        io = pynwb.NWBHDF5IO(str(path), mode="r")
        nwb = io.read()
    except Exception as err:
        raise IngestError(path, f"cannot be read as an NWB file ({_describe(err)})") from err
    with io:
        if nwb.units is None or len(nwb.units) == 0:
            raise IngestError(path, "has no units table (nwb.units is empty)")
        times, units, names, regions = _nwb_units(nwb.units)
        events = _nwb_trials(path, nwb.trials, trial_label)
        behavior, behavior_units = _nwb_behavior(nwb, behavior_module)
        file_subject = getattr(nwb.subject, "subject_id", None) if nwb.subject else None
        file_session = nwb.session_id
    starts = [0.0, float(times.min())] if times.size else [0.0]
    stops = [float(times.max())] if times.size else [0.0]
    if len(events):
        starts.append(float(events["onset"].min()))
        stops.append(float((events["onset"] + events["duration"]).max()))
    params = {"bin_size": bin_size, "trial_label": trial_label,
              "behavior_module": behavior_module}
    return _spike_recording(
        path, times, units, names,
        bin_size=bin_size, t_start=t_start, t_stop=t_stop,
        default_extent=(min(starts), max(stops)), behavior=behavior, max_gap=max_gap,
        regions=regions, events=events,
        identity=recording_identity(path, subject=subject, session=session, task=task, run=run,
                                    inferred={"subject": file_subject, "session": file_session}),
        source=source_info(path, reader=f"{_MODULE}.read_nwb_units",
                           reader_version=pynwb.__version__),
        step="read_nwb_units", params=params, event_map=event_map,
        extra_attrs={"behavior_units": behavior_units},
    )


def _nwb_units(table: Any) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    flat = np.asarray(table.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(table.spike_times_index.data[:], dtype=np.int64)
    counts = np.diff(np.r_[0, ends])
    units = np.repeat(np.arange(len(counts)), counts)
    names = [f"unit{int(i)}" for i in table.id.data[:]]
    if "location" in table.colnames:
        regions = [str(v) for v in table["location"].data[:]]
    elif "electrodes" in table.colnames:
        location = np.asarray(table.electrodes.table["location"].data[:]).astype(str)
        rows = np.asarray(table.electrodes.data[:], dtype=np.int64)
        bounds = np.r_[0, np.asarray(table.electrodes_index.data[:], dtype=np.int64)]
        regions = ["/".join(dict.fromkeys(location[rows[a:b]].tolist()))
                   for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    else:
        regions = [""] * len(names)
    return flat, units, names, regions


def _nwb_trials(path: Path, trials: Any, label_column: str | None) -> pd.DataFrame:
    if trials is None or len(trials) == 0:
        return pd.DataFrame({"onset": [], "duration": [], "label": [], "value": []})
    start = np.asarray(trials["start_time"].data[:], dtype=np.float64)
    stop = np.asarray(trials["stop_time"].data[:], dtype=np.float64)
    value = np.full(start.size, np.nan)
    if label_column is None:
        labels = np.full(start.size, "trial")
    elif label_column not in trials.colnames:
        raise IngestError(path, f"the trials table has no column {label_column!r} "
                                f"(columns: {list(trials.colnames)})")
    else:
        column = np.asarray(trials[label_column].data[:])
        if column.dtype.kind in "iufb":
            value = column.astype(np.float64)
            labels = np.array([f"{label_column}_{v:g}" for v in value])
        else:
            labels = column.astype(str)
    return pd.DataFrame({"onset": start, "duration": stop - start, "label": labels,
                         "value": value})


def _nwb_behavior(nwb: Any, module: str) -> tuple[_Behavior, dict[str, str]]:
    import pynwb

    if module not in nwb.processing:
        return {}, {}
    series = []
    for interface in nwb.processing[module].data_interfaces.values():
        if isinstance(interface, pynwb.TimeSeries):
            series.append((interface.name, interface))
        else:
            for attr in ("spatial_series", "time_series"):
                series.extend((interface.name, ts) for ts in getattr(interface, attr, {}).values())
    behavior: _Behavior = {}
    units: dict[str, str] = {}
    for container, ts in series:
        name = snake_case(ts.name, default="value")
        if name in behavior:  # same series name in two containers: qualify it
            name = f"{snake_case(container, default='value')}_{name}"
        data = np.asarray(ts.data[:], dtype=np.float64) * ts.conversion + getattr(ts, "offset",
                                                                                   0.0)
        if ts.timestamps is not None:
            t = np.asarray(ts.timestamps[:], dtype=np.float64)
        else:
            t = ts.starting_time + np.arange(len(data)) / ts.rate
        behavior[name] = (t, data)
        units[name] = str(ts.unit)
    return behavior, units


# --------------------------------------------------------------------------------------------
# Binned counts in trial/condition cells (no exact spike times)
# --------------------------------------------------------------------------------------------


def read_binned_trials(
    path: str | os.PathLike,
    *,
    group: str,
    bin_size: float | str,
    counts: str = "spikes",
    labels: str | None = None,
    label_prefix: str = "trial",
    behavior: Sequence[str] = (),
    units_axis: int = 0,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read spike counts already binned and cut into cells (trials or conditions) of a .mat file.

    The struct at ``group`` holds a cell array ``counts`` of count matrices (units x time steps,
    or time x units with ``units_axis=1``), one per cell. The cells are concatenated along time
    into one recording and each becomes an event (onset: its first bin, duration: its length,
    label ``<label_prefix>_<label>``, value: its 0-based cell index). There are no exact spike
    times in such files, so the recording has none: only the binned ``signal``. Note that the
    time axis then runs through the cells end to end: the time between cells is not real
    elapsed time (``attrs["time_axis"]``).

    Parameters
    ----------
    path : path-like
        The MATLAB file.
    group : str
        Dotted path of the struct holding the cells (e.g. ``"beforeLearning.clouds"``).
    bin_size : float or str
        Time step in seconds, or the dotted path of the file field holding it.
    counts : str
        Field of ``group`` holding the cell array of count matrices.
    labels : str, optional
        Field of ``group`` with one label per cell; default: the 1-based cell index.
    label_prefix : str
        Prefix of the event labels.
    behavior : sequence of str
        Fields of ``group`` holding cell arrays of covariates aligned with the counts (time on
        the same axis as in the counts; vectors for one covariate). Stored as
        ``behavior_<snake_case name>`` with a ``_valid`` mask (false on NaN steps).
    units_axis : {0, 1}
        Axis of the units in each count matrix.
    subject, session, task, run : str, optional
        Identity; defaults: BIDS entities of the file name, else the sanitized file stem,
        ``"01"``, ``"unknown"``, ``"01"``.
    event_map : mapping, optional
        Renames event labels.

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording.

    Raises
    ------
    IngestError
        If the file cannot be read, a field is missing, or the counts are malformed.
    """
    import scipy

    path = Path(path)
    if units_axis not in (0, 1):
        raise ValueError(f"units_axis must be 0 or 1, got {units_axis}")
    mat = _loadmat(path, squeeze_me=True)
    node = _mat_field(path, mat, group)
    step = float(_mat_field(path, mat, bin_size)) if isinstance(bin_size, str) else float(bin_size)
    if not (math.isfinite(step) and step > 0):
        raise IngestError(path, f"the bin size must be a positive number of seconds, got {step}")
    cells = _cells(_mat_field(path, node, counts, group))
    if not cells:
        raise IngestError(path, f"{group}.{counts} holds no cells")
    matrices = []
    for k, cell in enumerate(cells):
        arr = np.asarray(cell)
        if arr.ndim != 2 or arr.dtype.kind not in "iuf":
            raise IngestError(path, f"{group}.{counts} cell {k + 1} is not a numeric matrix "
                                    f"(got {arr.dtype} of shape {arr.shape})")
        matrices.append(arr.T if units_axis == 0 else arr)
    n_units = {m.shape[1] for m in matrices}
    if len(n_units) != 1:
        raise IngestError(path, f"{group}.{counts} cells differ in their number of units "
                                f"({sorted(n_units)})")
    data = np.concatenate(matrices).astype(np.float32)
    if not np.isfinite(data).all() or (data < 0).any():
        raise IngestError(path, f"{group}.{counts} holds NaN, infinite or negative counts")
    lengths = np.array([m.shape[0] for m in matrices])
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    cell_labels = (_cells(_mat_field(path, node, labels, group)) if labels is not None
                   else list(range(1, len(cells) + 1)))
    if len(cell_labels) != len(cells):
        raise IngestError(path, f"{group}.{labels} has {len(cell_labels)} labels for "
                                f"{len(cells)} cells")
    events = pd.DataFrame({
        "onset": offsets * step, "duration": lengths * step,
        "label": [f"{label_prefix}_{_label_text(v)}" for v in cell_labels],
        "value": np.arange(len(cells), dtype=np.float64),
    })
    n_times = int(lengths.sum())
    time = np.arange(n_times) * step
    centres = time + step / 2
    covariates: dict[str, np.ndarray] = {}
    for field in behavior:
        field_cells = _cells(_mat_field(path, node, field, group))
        if len(field_cells) != len(matrices):
            raise IngestError(path, f"{group}.{field} has {len(field_cells)} cells for "
                                    f"{len(matrices)} count cells")
        parts = []
        for k, (cell, m) in enumerate(zip(field_cells, matrices, strict=True)):
            arr = np.asarray(cell, dtype=np.float64)
            if arr.ndim == 2 and units_axis == 0:
                arr = arr.T
            if arr.shape[:1] != (m.shape[0],) or arr.ndim > 2:
                raise IngestError(path, f"{group}.{field} cell {k + 1} has shape "
                                        f"{np.shape(cell)}, not aligned with its "
                                        f"{m.shape[0]} time steps")
            parts.append(arr)
        values = _finite_or_missing(path, f"{group}.{field}", np.concatenate(parts))
        resampled, valid = _resample(centres, values, centres, 1.5 * step, path, field)
        key = snake_case(field, default="value")
        covariates[key] = resampled
        covariates[f"{key}_valid"] = valid
    params = {"group": group, "bin_size": step, "counts": counts, "labels": labels,
              "label_prefix": label_prefix, "behavior": list(behavior), "units_axis": units_axis}
    ds = make_recording(
        data, sfreq=1.0 / step, time=time, ch_names=[f"unit{i}" for i in range(data.shape[1])],
        ch_types="unit", units="count", modality="spikes",
        events=_map_events(events, event_map), behavior=covariates,
        **recording_identity(path, subject=subject, session=session, task=task, run=run),
        source=source_info(path, reader=f"{_MODULE}.read_binned_trials",
                           reader_version=scipy.__version__),
        history=[{"step": f"{_MODULE}.read_binned_trials", "params": params}],
        extra_attrs={"bin_size": step, "time_origin": 0.0,
                     "time_axis": "cells concatenated end to end; the time between cells is "
                                  "not real elapsed time"},
    )
    return validate(ds, where=str(path))


def read_golub_bci(
    path: str | os.PathLike,
    *,
    block: str = "beforeLearning",
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read one block of the Golub et al. (2018) BCI learning example (``exampleData.mat``).

    Each block (``beforeLearning``, ``afterLearning``) holds ``clouds``: the 86-unit spike counts
    of 45 ms BCI time steps (``expParams.intuitiveMapping.dt``) from the block's 50 trials
    (``windowIdx``, in ``attrs["trials"]``), grouped into 8 cells by cursor-to-target direction
    (``angles``: steps whose direction lies within 22.5 degrees of 0, 45, ..., 315; 69 steps per
    cell, runs of consecutive steps of one trial after another). Trial boundaries are not
    stored, so each cell becomes one event ``direction_<degrees>`` (value: its index 0-7).
    There are no exact spike times: the recording holds the binned counts only. The cursor
    covariates of each step (cursor-to-target direction, progress, raw velocities through the
    intuitive and perturbed mappings) are behaviour. See :func:`read_binned_trials`.

    Parameters
    ----------
    path : path-like
        ``exampleData.mat``.
    block : str
        Which block to read.
    subject, session, task, run : str, optional
        Identity; defaults: the monkey's name from ``expParams`` (else the file stem), ``"01"``,
        ``"bci"``, and ``"01"`` before learning, ``"02"`` after.
    event_map : mapping, optional
        Renames event labels.

    Returns
    -------
    xarray.Dataset
        A validated ``spikes`` recording without spike times.
    """
    path = Path(path)
    blocks = ("beforeLearning", "afterLearning")
    if block not in blocks:
        raise ValueError(f"block must be one of {blocks}, got {block!r}")
    mat = _loadmat(path, squeeze_me=True)
    params = _mat_field(path, mat, "expParams")
    monkey = str(getattr(params, "monkName", "") or "")
    ds = read_binned_trials(
        path, group=f"{block}.clouds", bin_size="expParams.intuitiveMapping.dt",
        counts="spikes", labels="angles", label_prefix="direction",
        behavior=("cursorToTargetDirection", "cursorProgress", "intuitiveProgress",
                  "perturbedProgress", "vraw_intuitive", "vraw_perturbed"),
        subject=subject or (bids_label(monkey) if monkey else None), session=session,
        task=task or "bci", run=run or f"{blocks.index(block) + 1:02d}", event_map=event_map,
    )
    trials = np.atleast_1d(getattr(_mat_field(path, mat, f"{block}.clouds"), "windowIdx", []))
    ds.attrs.update(block=block, monkey=monkey, trials=[int(t) for t in trials],
                    recording_date=str(getattr(params, "expDate", "")))
    return ds


def _mat_field(path: Path, root: Any, dotted: str, where: str = "") -> Any:
    node = root
    for i, part in enumerate(dotted.split(".")):
        if isinstance(node, Mapping):
            found, node = part in node, node.get(part)
        else:
            found = part in getattr(node, "_fieldnames", ())
            node = getattr(node, part, None)
        if not found:
            full = ".".join(filter(None, [where, *dotted.split(".")[:i + 1]]))
            raise IngestError(path, f"has no field {full!r}")
    return node


def _cells(value: Any) -> list[Any]:
    """The elements of a (squeezed) MATLAB cell array or vector."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return list(value)
    return [value]


def _label_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# --------------------------------------------------------------------------------------------
# Shared machinery: extent, lazy binning, behaviour resampling, events
# --------------------------------------------------------------------------------------------


def _spike_recording(
    path: Path,
    times: np.ndarray,
    units: np.ndarray,
    names: Sequence[str],
    *,
    bin_size: float,
    t_start: float | None,
    t_stop: float | None,
    default_extent: tuple[float, float] | None,
    behavior: _Behavior,
    max_gap: float | None,
    identity: Mapping[str, str],
    source: Mapping[str, Any],
    step: str,
    params: Mapping[str, Any],
    event_map: Mapping[str, str] | None,
    regions: Sequence[str] | None = None,
    events: pd.DataFrame | None = None,
    speed_from: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Check spikes, fix the extent, bin lazily, resample behaviour and build the recording."""
    if not (math.isfinite(float(bin_size)) and float(bin_size) > 0):
        raise ValueError(f"bin_size must be a positive number of seconds, got {bin_size!r}")
    bin_size = float(bin_size)
    names = [str(n) for n in names]
    if times.size == 0:
        raise IngestError(path, "holds no spikes")
    bad = ~np.isfinite(times)
    if bad.any():
        raise IngestError(path, f"{int(bad.sum())} spike time(s) are NaN or infinite")
    uniq, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        raise IngestError(path, f"duplicate unit names: {', '.join(uniq[counts > 1][:10])}")
    if "" in names:
        raise IngestError(path, "some units have an empty name")
    events = events if events is not None else pd.DataFrame(
        {"onset": [], "duration": [], "label": [], "value": []})
    lo, hi = default_extent or (float(times.min()), float(times.max()))
    t0 = float(lo if t_start is None else t_start)
    t1 = float(hi if t_stop is None else t_stop)
    if not t1 > t0:
        raise IngestError(path, f"the recording extent [{t0:g}, {t1:g}] s is empty")
    outside = (times < t0) | (times > t1)
    if outside.any():
        raise IngestError(path, f"{int(outside.sum())} spike(s) lie outside the recording "
                                f"[{t0:g}, {t1:g}] s (e.g. at {times[outside][0]:g} s)")
    ends = events["onset"] + events["duration"]
    late = (events["onset"] < t0) | (ends > t1)
    if late.any():
        raise IngestError(path, f"{int(late.sum())} event(s) lie outside the recording "
                                f"[{t0:g}, {t1:g}] s (e.g. {events['label'][late].iloc[0]!r} at "
                                f"{events['onset'][late].iloc[0]:g} s)")
    order = np.argsort(times, kind="stable")
    rel = times[order] - t0
    spike_units = np.asarray(units, dtype=np.int32)[order]
    n_bins = _n_bins(t1 - t0, float(rel[-1]), bin_size)
    n_units = len(names)
    token = hashlib.sha256(rel.tobytes() + spike_units.tobytes()
                           + f"{n_units}|{bin_size!r}|{n_bins}".encode()).hexdigest()[:20]
    signal = blockwise_array(
        partial(_count_block, rel, spike_units, n_units, bin_size), (n_bins, n_units),
        np.float32, name=f"spike-counts-{token}",
    )
    time = np.arange(n_bins) * bin_size
    covariates, gaps = _behavior_on_bins(path, behavior, time + bin_size / 2 + t0, max_gap,
                                         bin_size, speed_from)
    events = events.assign(onset=events["onset"] - t0)
    history_params = {**params, "t_start": t0, "t_stop": t1, "max_gap": gaps}
    ds = make_recording(
        signal, sfreq=1.0 / bin_size, time=time, ch_names=names, ch_types="unit",
        units="count", modality="spikes", regions=regions,
        events=_map_events(events, event_map), behavior=covariates,
        spike_times=rel, spike_units=spike_units, **identity, source=source,
        history=[{"step": f"{_MODULE}.{step}", "params": json.loads(json.dumps(history_params))}],
        extra_attrs={"bin_size": bin_size, "time_origin": t0, **(extra_attrs or {})},
    )
    return validate(ds, where=str(path))


def _n_bins(duration: float, last: float, bin_size: float) -> int:
    """Bins covering ``[0, duration]`` and every spike (the last at ``last``)."""
    n = max(1, math.ceil(round(duration / bin_size, 9)))
    # the second test is the end that validate() derives from sfreq = 1 / bin_size
    while last >= n * bin_size or last > (n - 1) * bin_size + 1.0 / (1.0 / bin_size):
        n += 1
    return n


def _count_block(spike_times: np.ndarray, spike_units: np.ndarray, n_units: int,
                 bin_size: float, start: int, stop: int) -> np.ndarray:
    """Counts of bins ``start:stop`` from sorted spike times (seconds from the first bin)."""
    edges = np.arange(start, stop + 1, dtype=np.float64) * bin_size
    lo, hi = np.searchsorted(spike_times, edges[[0, -1]], side="left")
    rows = np.searchsorted(edges, spike_times[lo:hi], side="right") - 1
    flat = np.bincount(rows * n_units + spike_units[lo:hi], minlength=(stop - start) * n_units)
    return flat.reshape(stop - start, n_units).astype(np.float32)


def _behavior_source(path: Path, behavior: Mapping[str, Any] | str | os.PathLike
                     ) -> tuple[_Behavior, Path | None]:
    """A behaviour mapping or file -> {name: (time, values)} and the file it came from."""
    if isinstance(behavior, Mapping):
        where, table = path, dict(behavior)
        beh_path = None
    else:
        beh_path = where = Path(behavior)
        suffix = where.suffix.lower()
        if suffix == ".npz":
            table = _load_npz(where)
        elif suffix in (".csv", ".tsv"):
            try:
                table = read_table_columns(where)
            except Exception as err:
                raise IngestError(where, f"cannot be read as a table ({_describe(err)})") from err
        else:
            raise IngestError(where, f"unsupported behaviour file type {where.suffix!r}; "
                                     "expected .npz, .csv or .tsv")
    if "time" not in table:
        raise IngestError(where, f"the behaviour has no 'time' (found: {sorted(table)})")
    t = np.asarray(table.pop("time"))
    if t.dtype.kind not in "iuf" or t.ndim != 1:
        raise IngestError(where, f"behaviour 'time' must be a numeric vector, got {t.dtype} of "
                                 f"shape {t.shape}")
    if not table:
        raise IngestError(where, "the behaviour holds no covariate besides 'time'")
    out: _Behavior = {}
    for name, values in table.items():
        arr = np.asarray(values)
        if arr.dtype.kind not in "iufb" or arr.shape[:1] != t.shape:
            raise IngestError(where, f"behaviour {name!r} must be numeric with {t.size} rows "
                                     f"like 'time', got {arr.dtype} of shape {arr.shape}")
        out[snake_case(name, default="value")] = (
            t.astype(np.float64),
            _finite_or_missing(where, f"behaviour {name!r}", arr.astype(np.float64)),
        )
    return out, beh_path


def _finite_or_missing(where: Path, what: str, values: np.ndarray) -> np.ndarray:
    """NaN means missing; an infinite value is an error."""
    inf = np.isinf(values)
    if inf.any():
        raise IngestError(where, f"{what} holds {int(inf.sum())} infinite value(s)")
    return values


def _behavior_on_bins(path: Path, behavior: _Behavior, centres: np.ndarray,
                      max_gap: float | None, bin_size: float, speed_from: str | None
                      ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Resample every covariate at the bin centres; add masks and, if asked, speed."""
    out: dict[str, np.ndarray] = {}
    gaps: dict[str, float] = {}
    for name, (t, values) in behavior.items():
        if not np.isfinite(t).all():
            raise IngestError(path, f"behaviour {name!r} has NaN or infinite timestamps")
        order = np.argsort(t, kind="stable")
        t, values = t[order], _finite_or_missing(path, f"behaviour {name!r}", values[order])
        keep = np.r_[True, np.diff(t) > 0]  # repeated timestamps: keep the first sample
        t, values = t[keep], values[keep]
        gap = (float(max_gap) if max_gap is not None else
               _GAP_FACTOR * float(np.median(np.diff(t))) if t.size > 1 else 0.0)
        out[name], out[f"{name}_valid"] = _resample(t, values, centres, gap, path, name)
        gaps[name] = gap
    if speed_from is not None:
        position, valid = out[speed_from], out[f"{speed_from}_valid"]
        velocity = np.gradient(position, bin_size, axis=0) if len(position) > 1 else \
            np.zeros_like(position)
        out["speed"] = np.hypot(velocity[:, 0], velocity[:, 1])
        speed_valid = valid.copy()
        speed_valid[1:] &= valid[:-1]
        speed_valid[:-1] &= valid[1:]
        out["speed_valid"] = speed_valid
    return out, gaps


def _resample(t: np.ndarray, values: np.ndarray, at: np.ndarray, max_gap: float, path: Path,
              name: str) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation between the valid (finite) samples, and where it is trustworthy.

    ``t`` must be strictly increasing. A point is valid if it falls on a valid sample or between
    two valid samples at most ``max_gap`` apart; others get the interpolated (inside) or nearest
    (outside) valid value.
    """
    flat = values.reshape(len(values), -1)
    ok = np.isfinite(flat).all(axis=1)
    if not ok.any():
        raise IngestError(path, f"behaviour {name!r} has no valid sample")
    vt, vv = t[ok], flat[ok]
    out = np.column_stack([np.interp(at, vt, vv[:, k]) for k in range(vv.shape[1])])
    j = np.searchsorted(vt, at, side="right")
    left, right = vt[np.clip(j - 1, 0, vt.size - 1)], vt[np.clip(j, 0, vt.size - 1)]
    on_sample = (j > 0) & (left == at)
    between = (j > 0) & (j < vt.size) & (right - left <= max_gap)
    return out.reshape((len(at), *values.shape[1:])), on_sample | between


def _map_events(events: pd.DataFrame, event_map: Mapping[str, str] | None) -> pd.DataFrame:
    if not event_map:
        return events
    labels = events["label"].astype(str)
    return events.assign(label=labels.map(lambda s: str(event_map.get(s, s))))
