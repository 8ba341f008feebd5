"""The one recording schema that every modality is converted into.

A *recording* is one :class:`xarray.Dataset` holding one continuous acquisition (one run of one
task, in one session of one subject):

==========================  ====================  ==============================================
name                        dims                  meaning
==========================  ====================  ==============================================
``signal``                  (time, channel)       float32 samples: volts for EEG/MEG/iEEG, BOLD
                                                  for voxels/parcels, ΔF/F for ROIs, counts per
                                                  bin for units
``time``                    (time,)               float64 seconds from the recording start
``channel``                 (channel,)            unique channel names
``ch_type``                 (channel,)            one of :data:`CH_TYPES`
``units``                   (channel,)            physical unit of each channel (``"V"``, ...)
``x``, ``y``, ``z``         (channel,)            positions (NaN if unknown) in ``coord_frame``
``region``                  (channel,)            anatomical label ("" if unknown)
``event_onset``             (event,)              seconds, BIDS ``events.tsv`` semantics
``event_duration``          (event,)              seconds (0 for instantaneous markers)
``event_label``             (event,)              trial type / marker name
``event_value``             (event,)              numeric code (NaN if none)
``behavior_<name>``         (time, ...)           covariates aligned to ``time``
``movie``                   (time, y_px, x_px)    optional raw imaging frames
``roi_mask``                (channel, y_px, x_px) optional ROI footprints (imaging)
``spike_time``              (spike,)              exact spike times in seconds
``spike_unit``              (spike,)              index into ``channel`` of the emitting unit
``interval_start/stop``     (interval,)           seconds, half-open ``[start, stop)``
``interval_split``          (interval,)           ``train`` / ``valid`` / ``test``
==========================  ====================  ==============================================

Attributes: ``modality``, ``sfreq``, ``subject``, ``session``, ``task``, ``run``,
``schema_version``, ``coord_frame``, ``source`` (``path``, ``sha256``, ``reader``,
``reader_version``) and ``history`` (a list of ``{"step": ..., "params": ...}``).

:func:`make_recording` builds a valid recording from arrays; :func:`validate` checks any dataset
and raises :class:`SchemaError` listing every problem it found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "CH_TYPES",
    "MODALITIES",
    "SCHEMA_VERSION",
    "SPLITS",
    "STRING_VARIABLES",
    "SchemaError",
    "add_history",
    "as_str_array",
    "events_frame",
    "intervals_frame",
    "make_recording",
    "nonfinite_problems",
    "recording_label",
    "set_intervals",
    "validate",
]

SCHEMA_VERSION = "1.0"

#: Recording modalities.
MODALITIES = ("eeg", "meg", "seeg", "ecog", "fmri", "calcium", "spikes")

#: Channel types. Auxiliary types (eog, ecg, emg, stim, misc) are kept as they come from files.
CH_TYPES = (
    "eeg", "meg", "mag", "grad", "seeg", "ecog", "dbs", "voxel", "parcel", "roi", "unit",
    "eog", "ecg", "emg", "stim", "misc",
)  # fmt: skip

#: Names of the data splits stored as intervals.
SPLITS = ("train", "valid", "test")

_REQUIRED_ATTRS = ("modality", "sfreq", "subject", "session", "task", "run", "schema_version")
_SOURCE_KEYS = ("path", "sha256", "reader", "reader_version")
_CHANNEL_COORDS = ("ch_type", "units", "x", "y", "z", "region")
_EVENT_VARS = ("event_onset", "event_duration", "event_label", "event_value")
_INTERVAL_VARS = ("interval_start", "interval_stop", "interval_split")
_SPIKE_VARS = ("spike_time", "spike_unit")

#: Variables that always hold strings (even when empty).
STRING_VARIABLES = ("channel", "ch_type", "units", "region", "event_label", "interval_split")


class SchemaError(ValueError):
    """A dataset does not follow the recording schema.

    Parameters
    ----------
    problems : list of str
        Every problem found, each a full sentence.
    where : str
        What was checked (a file or store path, or a recording label).
    """

    def __init__(self, problems: Sequence[str], where: str = "recording") -> None:
        self.problems = list(problems)
        self.where = where
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} does not follow the recording schema:\n{lines}")


def make_recording(
    signal: Any,
    *,
    sfreq: float,
    ch_names: Sequence[str],
    ch_types: str | Sequence[str],
    units: str | Sequence[str],
    modality: str,
    subject: str,
    task: str,
    session: str = "01",
    run: str = "01",
    time: np.ndarray | None = None,
    t0: float = 0.0,
    positions: np.ndarray | None = None,
    coord_frame: str = "unknown",
    regions: Sequence[str] | None = None,
    events: pd.DataFrame | None = None,
    behavior: Mapping[str, Any] | None = None,
    movie: Any = None,
    spike_times: np.ndarray | None = None,
    spike_units: np.ndarray | None = None,
    intervals: pd.DataFrame | None = None,
    source: Mapping[str, Any] | None = None,
    history: Iterable[Mapping[str, Any]] = (),
    extra_attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build a recording that follows the schema.

    Parameters
    ----------
    signal : array-like, shape (n_times, n_channels)
        NumPy or Dask array; cast to float32 lazily.
    sfreq : float
        Sampling rate in Hz (volumes per second for fMRI, frames per second for imaging, bins per
        second for binned spikes).
    ch_names : sequence of str
        Unique channel names.
    ch_types : str or sequence of str
        One type for all channels or one per channel, from :data:`CH_TYPES`.
    units : str or sequence of str
        Physical unit, for all channels or per channel.
    modality : str
        One of :data:`MODALITIES`.
    subject, task, session, run : str
        Identity of the recording (BIDS entities, without their prefixes).
    time : ndarray, optional
        Sample times in seconds. Defaults to ``t0 + arange(n_times) / sfreq``.
    t0 : float
        Time of the first sample when ``time`` is not given.
    positions : ndarray, shape (n_channels, 3), optional
        Channel positions (NaN where unknown), in ``coord_frame``.
    coord_frame : str
        Coordinate frame of ``positions`` (e.g. ``"head"``, ``"mni_tal"``, ``"voxel"``).
    regions : sequence of str, optional
        Anatomical label per channel.
    events : DataFrame, optional
        Columns ``onset``, ``duration``, ``label`` and optionally ``value``.
    behavior : mapping of str to array-like, optional
        Covariates with ``n_times`` rows; stored as ``behavior_<name>``.
    movie : array-like, shape (n_times, height, width), optional
        Raw imaging frames, one per sample.
    spike_times, spike_units : ndarray, optional
        Exact spike times (seconds) and the channel index of each spike's unit.
    intervals : DataFrame, optional
        Columns ``start``, ``stop``, ``split`` (``train``/``valid``/``test``).
    source : mapping, optional
        Provenance of the data: ``path``, ``sha256``, ``reader``, ``reader_version``.
    history : iterable of mapping
        Processing steps already applied, each ``{"step": name, "params": {...}}``.
    extra_attrs : mapping, optional
        Further JSON-serialisable attributes.

    Returns
    -------
    xarray.Dataset
        The recording. It is not validated: call :func:`validate`.
    """
    import dask.array as da

    data = signal if isinstance(signal, da.Array) else np.asarray(signal)
    if data.ndim != 2:
        raise SchemaError([f"signal must be 2-D (time, channel), got shape {data.shape}"])
    data = data.astype(np.float32, copy=False)
    n_times, n_ch = data.shape
    if time is None:
        time = t0 + np.arange(n_times, dtype=np.float64) / float(sfreq)
    ch_names = [str(c) for c in ch_names]
    coords: dict[str, Any] = {
        "time": ("time", np.asarray(time, dtype=np.float64)),
        "channel": ("channel", _str_array(ch_names)),
        "ch_type": ("channel", _str_array(_per_channel(ch_types, n_ch, "ch_types"))),
        "units": ("channel", _str_array(_per_channel(units, n_ch, "units"))),
        "region": ("channel", _str_array(_per_channel(regions or "", n_ch, "regions"))),
    }
    pos = np.full((n_ch, 3), np.nan) if positions is None else np.asarray(positions, float)
    if pos.shape != (n_ch, 3):
        raise SchemaError([f"positions must have shape ({n_ch}, 3), got {pos.shape}"])
    for i, axis in enumerate("xyz"):
        coords[axis] = ("channel", pos[:, i].copy())

    ds = xr.Dataset({"signal": (("time", "channel"), data)}, coords=coords)
    ds = ds.assign(_events_vars(events))
    for name, values in (behavior or {}).items():
        arr = values if isinstance(values, da.Array) else np.asarray(values)
        dims = ("time",) + tuple(f"behavior_{name}_dim{i}" for i in range(1, arr.ndim))
        ds[f"behavior_{name}"] = (dims, arr)
    if movie is not None:
        ds["movie"] = (("time", "y_px", "x_px"), movie)
    if spike_times is not None:
        st = np.asarray(spike_times, dtype=np.float64)
        su = np.asarray(spike_units, dtype=np.int32)
        order = np.argsort(st, kind="stable")
        ds["spike_time"] = ("spike", st[order])
        ds["spike_unit"] = ("spike", su[order])
    ds = ds.assign(_interval_vars(intervals))
    ds.attrs = {
        "modality": modality,
        "sfreq": float(sfreq),
        "subject": str(subject),
        "session": str(session),
        "task": str(task),
        "run": str(run),
        "schema_version": SCHEMA_VERSION,
        "coord_frame": coord_frame,
        "source": dict(source or {"path": "", "sha256": "", "reader": "", "reader_version": ""}),
        "history": [dict(h) for h in history],
        **dict(extra_attrs or {}),
    }
    return ds


def _str_array(values: Iterable[Any]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=str)


def as_str_array(values: Any) -> np.ndarray:
    """Return ``values`` (object, bytes, NumPy ``StringDType`` or unicode) as a unicode array."""
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    return np.asarray(arr.astype(object).tolist(), dtype=str).reshape(arr.shape)


def _per_channel(value: str | Sequence[str], n: int, what: str) -> list[str]:
    if isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise SchemaError([f"{what} has {len(values)} entries for {n} channels"])
    return values


def _events_vars(events: pd.DataFrame | None) -> dict[str, tuple[str, np.ndarray]]:
    if events is None:
        events = pd.DataFrame({"onset": [], "duration": [], "label": []})
    missing = {"onset", "duration", "label"} - set(events.columns)
    if missing:
        raise SchemaError([f"events table lacks column(s) {sorted(missing)}"])
    ev = events.sort_values("onset", kind="stable")
    value = ev["value"] if "value" in ev else pd.Series(np.nan, index=ev.index)
    return {
        "event_onset": ("event", ev["onset"].to_numpy(np.float64)),
        "event_duration": ("event", ev["duration"].to_numpy(np.float64)),
        "event_label": ("event", _str_array(ev["label"])),
        "event_value": ("event", pd.to_numeric(value, errors="coerce").to_numpy(np.float64)),
    }


def _interval_vars(intervals: pd.DataFrame | None) -> dict[str, tuple[str, np.ndarray]]:
    if intervals is None:
        intervals = pd.DataFrame({"start": [], "stop": [], "split": []})
    iv = intervals.sort_values("start", kind="stable")
    return {
        "interval_start": ("interval", iv["start"].to_numpy(np.float64)),
        "interval_stop": ("interval", iv["stop"].to_numpy(np.float64)),
        "interval_split": ("interval", _str_array(iv["split"])),
    }


def events_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Return the events of a recording as a BIDS-like table.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.

    Returns
    -------
    DataFrame
        Columns ``onset``, ``duration``, ``label``, ``value``, sorted by onset.
    """
    return pd.DataFrame(
        {
            "onset": np.asarray(ds["event_onset"].values, dtype=np.float64),
            "duration": np.asarray(ds["event_duration"].values, dtype=np.float64),
            "label": as_str_array(ds["event_label"].values),
            "value": np.asarray(ds["event_value"].values, dtype=np.float64),
        }
    )


def intervals_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Return the train/valid/test intervals of a recording.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.

    Returns
    -------
    DataFrame
        Columns ``start``, ``stop``, ``split``.
    """
    return pd.DataFrame(
        {
            "start": np.asarray(ds["interval_start"].values, dtype=np.float64),
            "stop": np.asarray(ds["interval_stop"].values, dtype=np.float64),
            "split": as_str_array(ds["interval_split"].values),
        }
    )


def set_intervals(ds: xr.Dataset, intervals: pd.DataFrame) -> xr.Dataset:
    """Return a copy of ``ds`` whose split intervals are ``intervals``.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.
    intervals : DataFrame
        Columns ``start``, ``stop``, ``split``.

    Returns
    -------
    xarray.Dataset
    """
    out = ds.drop_vars(list(_INTERVAL_VARS), errors="ignore").drop_dims("interval", errors="ignore")
    return out.assign(_interval_vars(intervals))


def add_history(ds: xr.Dataset, step: str, **params: Any) -> xr.Dataset:
    """Return ``ds`` with one processing step appended to ``attrs["history"]``.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.
    step : str
        Name of the step (e.g. ``"ingest.eeg.read_raw"``).
    **params
        JSON-serialisable parameters of the step.

    Returns
    -------
    xarray.Dataset
        A shallow copy with the updated history.
    """
    out = ds.copy()
    out.attrs = {
        **ds.attrs,
        "history": [*ds.attrs.get("history", []), {"step": step, "params": params}],
    }
    return out


def recording_label(ds: xr.Dataset) -> str:
    """Return a short human-readable name such as ``sub-01_ses-01_task-rest_run-01``."""
    a = ds.attrs
    return (
        f"sub-{a.get('subject', '?')}_ses-{a.get('session', '?')}"
        f"_task-{a.get('task', '?')}_run-{a.get('run', '?')}"
    )


def validate(ds: xr.Dataset, *, check_data: bool = False, where: str | None = None) -> xr.Dataset:
    """Check that a dataset follows the recording schema.

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset to check.
    check_data : bool
        Also scan every sample of ``signal``, behaviour and movie for NaN/Inf. This reads the
        whole recording (lazily, chunk by chunk); the store does this check while writing.
    where : str, optional
        Name used in the error message; defaults to the source path or the recording label.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so that calls can be chained.

    Raises
    ------
    SchemaError
        Listing every problem found.
    """
    if not isinstance(ds, xr.Dataset):
        raise SchemaError(
            [f"expected an xarray.Dataset, got {type(ds).__name__}"], where or "input"
        )
    problems: list[str] = []
    _check_attrs(ds, problems)
    _check_signal(ds, problems)
    t_start, t_stop = _check_time(ds, problems)
    _check_channels(ds, problems)
    if t_start is not None:
        _check_events(ds, t_start, t_stop, problems)
        _check_intervals(ds, t_start, t_stop, problems)
        _check_spikes(ds, t_start, t_stop, problems)
    _check_time_aligned(ds, problems)
    if check_data and not problems:
        problems.extend(nonfinite_problems(ds))
    if problems:
        if where is None:
            src = ds.attrs.get("source")
            path = src.get("path") if isinstance(src, Mapping) else None
            where = str(path) if path else recording_label(ds)
        raise SchemaError(problems, where)
    return ds


def nonfinite_problems(ds: xr.Dataset) -> list[str]:
    """Count NaN/Inf values in every floating-point time-aligned variable.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (NumPy- or Dask-backed).

    Returns
    -------
    list of str
        One sentence per variable that holds non-finite values.
    """
    import dask

    names = [
        n for n, v in ds.data_vars.items()
        if v.dims[:1] == ("time",) and np.issubdtype(v.dtype, np.floating)
    ]  # fmt: skip
    counts = dask.compute(*[(~np.isfinite(ds[n].data)).sum() for n in names])
    return [f"{n} holds {int(c)} NaN/Inf value(s)" for n, c in zip(names, counts, strict=True) if c]


def _check_attrs(ds: xr.Dataset, problems: list[str]) -> None:
    a = ds.attrs
    for key in _REQUIRED_ATTRS:
        if key not in a:
            problems.append(f"attribute {key!r} is missing")
    if "modality" in a and a["modality"] not in MODALITIES:
        problems.append(f"modality {a['modality']!r} is not one of {MODALITIES}")
    if "sfreq" in a:
        sf = a["sfreq"]
        if not isinstance(sf, int | float) or not math.isfinite(sf) or sf <= 0:
            problems.append(f"sfreq must be a positive finite number, got {sf!r}")
    for key in ("subject", "session", "task", "run"):
        if key in a and (not isinstance(a[key], str) or not a[key]):
            problems.append(f"attribute {key!r} must be a non-empty string, got {a[key]!r}")
    if "schema_version" in a and a["schema_version"] != SCHEMA_VERSION:
        problems.append(
            f"schema_version is {a['schema_version']!r}; this neurodecode reads {SCHEMA_VERSION!r}"
        )
    src = a.get("source")
    if not isinstance(src, Mapping):
        problems.append("attribute 'source' is missing or not a mapping (path, sha256, reader...)")
    else:
        missing = [k for k in _SOURCE_KEYS if k not in src]
        if missing:
            problems.append(f"source lacks {missing}")
    hist = a.get("history")
    if not isinstance(hist, list) or not all(isinstance(h, Mapping) and "step" in h for h in hist):
        problems.append("attribute 'history' must be a list of {'step': ..., 'params': ...}")


def _check_signal(ds: xr.Dataset, problems: list[str]) -> None:
    if "signal" not in ds:
        problems.append("variable 'signal' is missing")
        return
    sig = ds["signal"]
    if sig.dims != ("time", "channel"):
        problems.append(f"signal dims are {sig.dims}, expected ('time', 'channel')")
    if sig.dtype != np.float32:
        problems.append(f"signal dtype is {sig.dtype}, expected float32")
    if sig.size == 0:
        problems.append(f"signal is empty (shape {sig.shape})")


def _check_time(ds: xr.Dataset, problems: list[str]) -> tuple[float | None, float | None]:
    if "time" not in ds.coords:
        problems.append("coordinate 'time' is missing")
        return None, None
    t = np.asarray(ds["time"].values)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.floating):
        problems.append(f"time must be 1-D float seconds, got {t.dtype} with shape {t.shape}")
        return None, None
    if t.size == 0:
        return None, None
    if not np.isfinite(t).all():
        problems.append(f"time holds {int((~np.isfinite(t)).sum())} NaN/Inf value(s)")
        return None, None
    steps = np.diff(t)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        problems.append(
            f"time is not strictly increasing (sample {i + 1}: {t[i + 1]!r} after {t[i]!r})"
        )
        return None, None
    sf = ds.attrs.get("sfreq")
    step = 1.0 / sf if isinstance(sf, int | float) and sf > 0 and math.isfinite(sf) else None
    if step is not None and steps.size:
        med = float(np.median(steps))
        if abs(med - step) > 1e-3 * step:
            problems.append(
                f"sfreq {sf} Hz does not match the time axis (median step {med:.6g} s = "
                f"{1 / med:.6g} Hz)"
            )
    end = float(t[-1]) + (step if step is not None else 0.0)
    return float(t[0]), end


def _check_channels(ds: xr.Dataset, problems: list[str]) -> None:
    if "channel" not in ds.coords:
        problems.append("coordinate 'channel' is missing")
        return
    names = as_str_array(ds["channel"].values)
    uniq, counts = np.unique(names, return_counts=True)
    dups = uniq[counts > 1]
    if dups.size:
        problems.append(f"duplicate channel names: {', '.join(dups[:10].tolist())}")
    if (names == "").any():
        problems.append("some channel names are empty")
    for c in _CHANNEL_COORDS:
        if c not in ds.coords:
            problems.append(f"channel coordinate {c!r} is missing")
        elif ds[c].dims != ("channel",):
            problems.append(f"coordinate {c!r} must have dims ('channel',), got {ds[c].dims}")
    if "ch_type" in ds.coords:
        bad = sorted(set(as_str_array(ds["ch_type"].values).tolist()) - set(CH_TYPES))
        if bad:
            problems.append(f"unknown channel type(s) {bad}; allowed: {CH_TYPES}")
    if "units" in ds.coords and (as_str_array(ds["units"].values) == "").any():
        problems.append("some channels have no unit")


def _check_events(ds: xr.Dataset, t_start: float, t_stop: float | None, problems: list[str]):
    present = [v for v in _EVENT_VARS if v in ds]
    if not present:
        problems.append(f"event table is missing ({', '.join(_EVENT_VARS)})")
        return
    if len(present) < len(_EVENT_VARS):
        problems.append(
            f"event table is incomplete: missing {sorted(set(_EVENT_VARS) - set(present))}"
        )
        return
    if any(ds[v].dims != ("event",) for v in _EVENT_VARS):
        problems.append("event variables must all have dims ('event',)")
        return
    onset = np.asarray(ds["event_onset"].values, float)
    dur = np.asarray(ds["event_duration"].values, float)
    if not np.isfinite(onset).all():
        problems.append(f"{int((~np.isfinite(onset)).sum())} event onset(s) are NaN/Inf")
        return
    if (dur < 0).any() or not np.isfinite(dur).all():
        problems.append(
            f"{int(((dur < 0) | ~np.isfinite(dur)).sum())} event duration(s) are negative or NaN"
        )
        return
    if t_stop is not None:
        tol = 1e-6 * max(1.0, abs(t_stop))
        outside = (onset < t_start - tol) | (onset + dur > t_stop + tol)
        if outside.any():
            i = int(np.argmax(outside))
            label = as_str_array(ds["event_label"].values)[i]
            problems.append(
                f"{int(outside.sum())} event(s) lie outside the recording [{t_start:g}, "
                f"{t_stop:g}) s, e.g. {label!r} at {onset[i]:g} s lasting {dur[i]:g} s"
            )


def _check_intervals(ds: xr.Dataset, t_start: float, t_stop: float | None, problems: list[str]):
    if not all(v in ds for v in _INTERVAL_VARS):
        problems.append(f"split interval table is missing ({', '.join(_INTERVAL_VARS)})")
        return
    iv = intervals_frame(ds)
    bad_split = sorted(set(iv["split"].tolist()) - set(SPLITS))
    if bad_split:
        problems.append(f"unknown split name(s) {bad_split}; allowed: {SPLITS}")
    if (iv["stop"] <= iv["start"]).any():
        problems.append("some split intervals have stop <= start")
        return
    tol = 1e-6 * max(1.0, abs(t_stop or 0.0))
    if t_stop is not None and ((iv["start"] < t_start - tol) | (iv["stop"] > t_stop + tol)).any():
        problems.append(
            f"some split intervals lie outside the recording [{t_start:g}, {t_stop:g}) s"
        )
    iv = iv.sort_values("start")
    starts, stops, splits = iv["start"].to_numpy(), iv["stop"].to_numpy(), iv["split"].to_numpy()
    for i in range(1, len(iv)):
        if starts[i] < stops[:i].max() - tol:
            j = int(np.argmax(stops[:i] > starts[i]))
            problems.append(
                f"split intervals overlap: {splits[j]} [{starts[j]:g}, {stops[j]:g}) and "
                f"{splits[i]} [{starts[i]:g}, {stops[i]:g})"
            )
            break


def _check_spikes(ds: xr.Dataset, t_start: float, t_stop: float | None, problems: list[str]):
    present = [v for v in _SPIKE_VARS if v in ds]
    if not present:
        return
    if len(present) != 2:
        problems.append("spike_time and spike_unit must be stored together")
        return
    st = np.asarray(ds["spike_time"].values, float)
    su = np.asarray(ds["spike_unit"].values)
    if st.shape != su.shape:
        problems.append("spike_time and spike_unit differ in length")
        return
    if not np.isfinite(st).all():
        problems.append("spike_time holds NaN/Inf values")
        return
    if st.size and (np.diff(st) < 0).any():
        problems.append("spike_time is not sorted")
    n_ch = ds.sizes.get("channel", 0)
    if not np.issubdtype(su.dtype, np.integer) or (su.size and (su.min() < 0 or su.max() >= n_ch)):
        problems.append(f"spike_unit must be integer indices into the {n_ch} channels")
    if t_stop is not None and st.size and (st.min() < t_start or st.max() > t_stop):
        problems.append(f"spikes lie outside the recording [{t_start:g}, {t_stop:g}) s")


def _check_time_aligned(ds: xr.Dataset, problems: list[str]) -> None:
    for name, var in ds.data_vars.items():
        if name.startswith("behavior_") or name == "movie":
            if var.dims[:1] != ("time",):
                problems.append(f"{name} must have 'time' as its first dimension, got {var.dims}")
