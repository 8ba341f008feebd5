"""Samples from recording stores: event-locked trials, sliding windows and time steps.

Each function reads only what it needs from lazy (Dask-backed) recordings and returns a
:class:`Samples`: the array ``X``, the target ``y`` and the *sample table* (one row per sample:
``recording`` (the recording's unique id, see :class:`Recording`), ``subject``, ``session``,
``task``, ``run``, ``modality``, ``whole_run_steps`` (ingest steps that cleaned the whole
recording, ``""`` if none), ``start``, ``stop`` and more) that the split rules of
:mod:`neurodecode.data.splits` need to keep runs, sessions and subjects apart.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from ..schema import as_str_array, events_frame, recording_label
from ..store import find_recordings, open_recording

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_CH_TYPES",
    "Recording",
    "Samples",
    "epochs",
    "label_at",
    "label_map",
    "open_recordings",
    "pick_channels",
    "sample_positions",
    "target_at",
    "time_samples",
    "window_table",
    "windows",
]

#: Channel types that carry brain signal (auxiliary eog/ecg/emg/stim/misc are left out).
DATA_CH_TYPES = (
    "eeg",
    "meg",
    "mag",
    "grad",
    "seeg",
    "ecog",
    "dbs",
    "voxel",
    "parcel",
    "roi",
    "unit",
)

#: Recordings smaller than this are read in one go; larger ones window by window.
_READ_WHOLE_BYTES = 256 << 20


@dataclass(frozen=True)
class Recording:
    """A lazily opened recording and its unique id.

    Attributes
    ----------
    id : str
        What the sample table's ``recording`` column holds, unique among the recordings used
        together: the store path (absolute) of a store; for an in-memory recording
        ``memory:[<dataset>/]sub-<s>_ses-<x>_task-<t>_run-<r>_<modality>`` from its identity
        attributes (``dataset`` when it has one), or ``memory:<random hex>`` when it has none.
    ds : xarray.Dataset
        The recording.
    path : str
        The store path; ``""`` for an in-memory recording.
    """

    id: str
    ds: xr.Dataset = field(repr=False, compare=False)
    path: str = ""

    @property
    def identity(self) -> dict[str, str]:
        """``subject``, ``session``, ``task``, ``run`` and ``modality``."""
        return {k: str(self.ds.attrs.get(k, ""))
                for k in ("subject", "session", "task", "run", "modality")}

    @property
    def sfreq(self) -> float:
        """Sampling rate in Hz."""
        return float(self.ds.attrs["sfreq"])

    @property
    def whole_run_steps(self) -> str:
        """The history steps that cleaned the whole recording (``"scope": "recording"``).

        Returns
        -------
        str
            Step names with those of their cleaning parameters that are set, joined by
            ``"; "`` (e.g. ``"neurodecode.ingest.fmri.read_nifti(detrend, standardize,
            high_pass=0.01)"``); ``""`` when no step has that scope.
        """
        out = []
        for h in self.ds.attrs.get("history", []):
            if h.get("scope") != "recording":
                continue
            params = h.get("params") or {}
            used = [k if v is True else f"{k}={v}" for k, v in params.items()
                    if k in _CLEANING_PARAMS and v not in (None, False, "")]
            out.append(f"{h['step']}({', '.join(used)})" if used else str(h["step"]))
        return "; ".join(out)


#: History parameters that describe whole-run cleaning (named in ``Recording.whole_run_steps``).
_CLEANING_PARAMS = ("detrend", "standardize", "high_pass", "confounds", "dff", "dff_window_s")


def _memory_id(ds: xr.Dataset) -> str:
    a = ds.attrs
    if not any(str(a.get(k, "")) for k in ("subject", "session", "task", "run")):
        return f"memory:{uuid.uuid4().hex[:12]}"
    dataset = str(a.get("dataset", "") or "")
    return f"memory:{dataset + '/' if dataset else ''}{recording_label(ds)}_{a.get('modality', '')}"


def _check_unique(recordings: Sequence[Recording]) -> None:
    """Refuse recordings that share an id (their samples would be mixed up)."""
    counts = pd.Series([r.id for r in recordings], dtype=object).value_counts()
    twice = counts[counts > 1]
    if len(twice):
        listed = ", ".join(f"{i} ({n}x)" for i, n in twice.items())
        raise ValueError(
            f"recordings with the same id would mix their samples: {listed}; list each store "
            "once, and give in-memory recordings with the same dataset, subject, session, task, "
            "run and modality a distinct attrs['dataset'] (or write them to stores)"
        )


def open_recordings(
    stores: str | os.PathLike | Iterable[str | os.PathLike | xr.Dataset],
    *,
    modality: str | None = None,
    task: str | None = None,
    subjects: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
) -> list[Recording]:
    """Open recordings lazily, optionally keeping only some.

    Parameters
    ----------
    stores : path-like or iterable
        A store root (every recording below it), or store paths, or opened datasets
        (in-memory recordings, identified by their identity attributes; see
        :class:`Recording`).
    modality, task : str, optional
        Keep recordings with this modality / task.
    subjects, runs : sequence of str, optional
        Keep these subjects / runs (compared as strings, leading zeros ignored).

    Returns
    -------
    list of Recording
        Sorted by subject, session, task and run.

    Raises
    ------
    ValueError
        When two recordings have the same id (a store listed twice, or in-memory recordings
        with the same identity), naming the id.
    """
    if isinstance(stores, str | os.PathLike):
        stores = find_recordings(stores)
    recs = []
    for item in stores:
        if isinstance(item, xr.Dataset):
            recs.append(Recording(_memory_id(item), item))
        else:
            path = os.path.abspath(item)
            recs.append(Recording(path, open_recording(item), path))
    _check_unique(recs)

    def norm(v: str) -> str:
        return v.lstrip("0") or "0"

    keep = []
    for r in recs:
        ident = r.identity
        if modality and ident["modality"] != modality:
            continue
        if task and ident["task"] != task:
            continue
        if subjects and norm(ident["subject"]) not in {norm(str(s)) for s in subjects}:
            continue
        if runs and norm(ident["run"]) not in {norm(str(s)) for s in runs}:
            continue
        keep.append(r)
    return sorted(
        keep, key=lambda r: tuple(r.identity[k] for k in ("subject", "session", "task", "run"))
    )


@dataclass
class Samples:
    """Samples ready for an estimator.

    Attributes
    ----------
    X : ndarray
        ``(n, n_channels, n_times)`` for trials and windows, ``(n, n_channels)`` for time steps.
    y : ndarray or None
        Class labels (str) or continuous targets (float), one row per sample.
    table : DataFrame
        The sample table (see :mod:`neurodecode.data.splits`).
    ch_names : list of str
        Channel names, the same for every recording (see ``channels`` of :func:`epochs`; the
        channels left out with ``channels="common"`` are listed in ``table.attrs["history"]``).
    sfreq : float
        Sampling rate of ``X`` along time.
    times : ndarray or None
        Time of each column of ``X`` relative to the event or window start, in seconds.
    ch_types : list of str or None
        Channel type of each channel (schema names), when known.
    """

    X: np.ndarray
    y: np.ndarray | None
    table: pd.DataFrame
    ch_names: list[str]
    sfreq: float
    times: np.ndarray | None = None
    ch_types: list[str] | None = None

    def __len__(self) -> int:
        return len(self.table)

    def select(self, index: np.ndarray) -> Samples:
        """Return the samples at ``index`` (integer or boolean)."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return Samples(
            self.X[index],
            None if self.y is None else self.y[index],
            self.table.iloc[index].reset_index(drop=True),
            self.ch_names,
            self.sfreq,
            self.times,
            self.ch_types,
        )


def pick_channels(rec: Recording, ch_types: Sequence[str] | None) -> np.ndarray:
    """Indices of the channels of the given types (default: :data:`DATA_CH_TYPES`)."""
    types = as_str_array(rec.ds["ch_type"].values)
    wanted = DATA_CH_TYPES if ch_types is None else tuple(ch_types)
    picks = np.flatnonzero(np.isin(types, wanted))
    if not picks.size:
        raise ValueError(f"{rec.id}: no channel of type {wanted}")
    return picks


def _signal(rec: Recording, picks: np.ndarray, l_freq: float | None, h_freq: float | None) -> Any:
    """The picked signal, loaded (filtered if asked) or lazy when large."""
    sig = rec.ds["signal"].data[:, picks]
    if l_freq is None and h_freq is None and sig.nbytes > _READ_WHOLE_BYTES:
        return sig
    data = np.asarray(sig)
    if l_freq is not None or h_freq is not None:
        import mne

        data = mne.filter.filter_data(
            data.T.astype(np.float64), rec.sfreq, l_freq, h_freq, verbose="error"
        ).T.astype(np.float32)
    return data


def _gather(sig: Any, starts: np.ndarray, length: int) -> np.ndarray:
    """Rows ``start:start+length`` for each start, as ``(n, n_channels, length)``."""
    if isinstance(sig, np.ndarray):
        idx = starts[:, None] + np.arange(length)[None, :]
        return np.ascontiguousarray(sig[idx].transpose(0, 2, 1))
    import dask.array as da

    if not len(starts):
        return np.empty((0, sig.shape[1], length), np.float32)
    return np.asarray(da.stack([sig[s : s + length].T for s in starts]).compute())


def _base_row(rec: Recording) -> dict[str, str]:
    ident = rec.identity
    return {
        "recording": rec.id,
        "subject": ident["subject"],
        "session": ident["session"],
        "task": ident["task"],
        "run": ident["run"],
        "modality": ident["modality"],
        "whole_run_steps": rec.whole_run_steps,
    }


#: ``channels`` options of the functions that gather samples across recordings.
ChannelSet = Literal["strict", "common"]
_COMMON_STEP = "neurodecode.data.samples.common_channels"


@dataclass(frozen=True)
class _Channels:
    """The channels gathered from each recording, in one order for all."""

    picks: list[np.ndarray]
    names: list[str]
    types: list[str]
    dropped: dict[str, list[str]]

    def record(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with its ``attrs``: the channels left out (if any) in ``history``."""
        table.attrs.setdefault("history", [])
        if any(self.dropped.values()):
            table.attrs["history"].append({
                "step": _COMMON_STEP,
                "params": {"kept": len(self.names),
                           "dropped": {r: d for r, d in self.dropped.items() if d}},
            })  # fmt: skip
        return table


def _channel_sets(
    recs: Sequence[Recording], ch_types: Sequence[str] | None, channels: ChannelSet
) -> _Channels:
    """Pick the same channels, by name and in the first recording's order, in every recording.

    ``"strict"``: every recording must have the same channel set (an order that differs is
    followed by name); ``"common"``: keep the channels that every recording has.
    """
    if channels not in ("strict", "common"):
        raise ValueError(f"channels must be 'strict' or 'common', got {channels!r}")
    if not recs:
        raise ValueError("no recording given")
    _check_unique(recs)
    picks = [pick_channels(r, ch_types) for r in recs]
    names = [as_str_array(r.ds["channel"].values[p]).tolist() for r, p in zip(recs, picks,
                                                                               strict=True)]
    first = names[0]
    common = set(first).intersection(*map(set, names[1:]))
    if channels == "strict" and any(set(n) != set(first) for n in names[1:]):
        raise ValueError(_mismatch_message(recs, names, len(common)))
    keep = [c for c in first if c in common]
    if not keep:
        raise ValueError(f"the {len(recs)} recordings have no channel in common: "
                         + _mismatch_message(recs, names, 0))
    out_picks, dropped = [], {}
    for rec, p, n in zip(recs, picks, names, strict=True):
        where = {c: i for i, c in enumerate(n)}
        out_picks.append(p[[where[c] for c in keep]])
        dropped[rec.id] = [c for c in n if c not in common]
    if any(dropped.values()):
        logger.info("channels not in every recording left out: %s",
                       {r: d for r, d in dropped.items() if d})
    types = as_str_array(recs[0].ds["ch_type"].values[out_picks[0]]).tolist()
    return _Channels(out_picks, keep, types, dropped)


def _mismatch_message(recs: Sequence[Recording], names: list[list[str]], n_common: int) -> str:
    first = set(names[0])
    parts = []
    for rec, n in zip(recs[1:], names[1:], strict=True):
        lacks = [c for c in names[0] if c not in set(n)]
        extra = [c for c in n if c not in first]
        if lacks:
            parts.append(f"{rec.id} lacks {_few(lacks)} that {recs[0].id} has")
        if extra:
            parts.append(f"{rec.id} has {_few(extra)} that {recs[0].id} lacks")
    return ("recordings have different channel sets: " + "; ".join(parts)
            + f"; pass channels='common' to keep the {n_common} channels common to all")


def _few(names: list[str], n: int = 10) -> str:
    shown = ", ".join(names[:n])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > n else ''}]"


def label_map(labels: Sequence[str] | Mapping[str, str] | None) -> Mapping[str, str] | None:
    """Event label → class mapping from a list of labels (each its own class) or a mapping."""
    if labels is None or isinstance(labels, Mapping):
        return labels
    return {label: label for label in labels}


def epochs(
    recordings: Sequence[Recording],
    *,
    tmin: float,
    tmax: float,
    labels: Sequence[str] | Mapping[str, str] | None = None,
    baseline: tuple[float, float] | None = None,
    ch_types: Sequence[str] | None = None,
    l_freq: float | None = None,
    h_freq: float | None = None,
    decim: int = 1,
    channels: ChannelSet = "strict",
) -> Samples:
    """Event-locked trials.

    Parameters
    ----------
    recordings : sequence of Recording
        Recordings with the same channels (see ``channels``).
    tmin, tmax : float
        Epoch limits around each event onset, in seconds (both included, as in MNE).
    labels : sequence of str or mapping, optional
        Event labels to keep (each its own class), or a mapping from event label to class name
        (several labels may share a class). Default: every event.
    baseline : (float, float), optional
        Interval (relative to the onset) whose per-channel mean is subtracted from each epoch.
    ch_types : sequence of str, optional
        Channel types to keep; default the brain-signal types (:data:`DATA_CH_TYPES`).
    l_freq, h_freq : float, optional
        Band-pass (FIR, MNE's defaults) applied to each whole recording before epoching — a
        filter never sees across recordings, and it uses no label.
    decim : int
        Keep every ``decim``-th sample (after filtering).
    channels : {"strict", "common"}
        Channels of the picked types gathered from each recording, by name and in the first
        recording's order. ``"strict"``: recordings with different channel sets are refused
        with a ``ValueError`` naming them and the channels each lacks; ``"common"``: only the
        channels that every recording has are kept, and those left out are listed (per
        recording) in ``table.attrs["history"]``.

    Returns
    -------
    Samples
        ``y`` holds class names; the table adds ``onset``, ``label`` and ``value`` (the event's
        numeric code: the image id of a stimulus event). Epochs that do not fit
        inside their recording are left out (counted in ``table.attrs["dropped"]``).
    """
    mapping = label_map(labels)
    chans = _channel_sets(recordings, ch_types, channels)
    X, rows, dropped = [], [], 0
    n = int(round((tmax - tmin) * recordings[0].sfreq)) + 1
    for rec, picks in zip(recordings, chans.picks, strict=True):
        # rates may differ by clock drift (fitted rates of consumer devices), as long as an
        # epoch's last sample moves by less than half a sample
        if abs(rec.sfreq - recordings[0].sfreq) * (tmax - tmin) >= 0.5:
            raise ValueError(
                f"{rec.id}: sampling rate {rec.sfreq:g} Hz differs from "
                f"{recordings[0].sfreq:g} Hz; resample first"
            )
        ev = events_frame(rec.ds)
        if mapping is not None:
            ev = ev[ev["label"].isin(list(mapping))]
        t0 = float(rec.ds["time"].values[0])
        first = np.round((ev["onset"].to_numpy() + tmin - t0) * rec.sfreq).astype(int)
        ok = (first >= 0) & (first + n <= rec.ds.sizes["time"])
        dropped += int((~ok).sum())
        ev, first = ev[ok], first[ok]
        if not len(ev):
            continue
        X.append(_gather(_signal(rec, picks, l_freq, h_freq), first, n))
        base = _base_row(rec)
        for onset, label, value in zip(ev["onset"], ev["label"], ev["value"], strict=True):
            rows.append(
                {
                    **base,
                    "start": onset + tmin,
                    "stop": onset + tmax,
                    "onset": onset,
                    "label": label,
                    "value": value,
                }
            )
    if not rows:
        raise ValueError("no event matched: check `labels` against the recordings' events")
    data = np.concatenate(X)
    times = tmin + np.arange(n) / recordings[0].sfreq
    if baseline is not None:
        sel = (times >= baseline[0] - 1e-9) & (times <= baseline[1] + 1e-9)
        data = data - data[:, :, sel].mean(axis=2, keepdims=True)
    table = chans.record(pd.DataFrame(rows))
    table.attrs["dropped"] = dropped
    y = table["label"].map(mapping).to_numpy() if mapping else table["label"].to_numpy()
    return Samples(
        np.ascontiguousarray(data[:, :, ::decim]),
        y.astype(str),
        table,
        chans.names,
        recordings[0].sfreq / decim,
        times[::decim],
        chans.types,
    )


def window_table(recordings: Sequence[Recording], *, length: float, stride: float) -> pd.DataFrame:
    """The sample table of sliding windows (no data read).

    Parameters
    ----------
    recordings : sequence of Recording
    length, stride : float
        Window length and step in seconds.

    Returns
    -------
    DataFrame
        One row per window with ``first`` (index of its first sample) and ``n_samples``.
    """
    _check_unique(recordings)
    rows = []
    for rec in recordings:
        n = int(round(length * rec.sfreq))
        step = max(1, int(round(stride * rec.sfreq)))
        if n < 1:
            raise ValueError(f"window length {length} s is shorter than one sample")
        t = rec.ds["time"].values
        firsts = np.arange(0, len(t) - n + 1, step)
        base = _base_row(rec)
        rows.append(
            pd.DataFrame(
                {
                    **base,
                    "start": t[firsts],
                    "stop": t[firsts] + n / rec.sfreq,
                    "first": firsts,
                    "n_samples": n,
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def target_at(rec: Recording, target: str, times: np.ndarray) -> np.ndarray:
    """Behaviour ``target`` (a ``behavior_*`` name) interpolated at ``times``."""
    name = target if target.startswith("behavior_") else f"behavior_{target}"
    if name not in rec.ds:
        have = [v for v in rec.ds.data_vars if v.startswith("behavior_")]
        raise ValueError(f"{rec.id}: no behaviour {name!r}; available: {have}")
    values = np.asarray(rec.ds[name].values, dtype=np.float64)
    t = rec.ds["time"].values
    flat = values.reshape(len(t), -1)
    out = np.stack([np.interp(times, t, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out[:, 0] if values.ndim == 1 else out


def label_at(rec: Recording, times: np.ndarray, mapping: Mapping[str, str] | None) -> np.ndarray:
    """The event label active at each time (an event spans [onset, onset + duration)); ''."""
    ev = events_frame(rec.ds)
    if mapping is not None:
        ev = ev[ev["label"].isin(list(mapping))]
    out = np.full(len(times), "", dtype=object)
    for onset, dur, label in zip(ev["onset"], ev["duration"], ev["label"], strict=True):
        out[(times >= onset) & (times < onset + max(dur, 1e-12))] = (
            mapping[label] if mapping else label
        )
    return out


def windows(
    recordings: Sequence[Recording],
    *,
    length: float,
    stride: float,
    target: str | None = None,
    labels: Sequence[str] | Mapping[str, str] | None = None,
    ch_types: Sequence[str] | None = None,
    channels: ChannelSet = "strict",
) -> Samples:
    """Sliding windows with a target at each window's end.

    Parameters
    ----------
    recordings : sequence of Recording
    length, stride : float
        Window length and step, in seconds.
    target : str, optional
        A behaviour covariate (``"position"`` or ``"behavior_position"``) taken at the end of
        each window (what a causal decoder may use); or ``"events"`` for the event label active
        at the window's end (windows without one are left out).
    labels : sequence of str or mapping, optional
        With ``target="events"``: labels to keep, or label → class.
    ch_types : sequence of str, optional
        Channel types to keep.
    channels : {"strict", "common"}
        Recordings with different channel sets: refused, or reduced to their common channels
        (see :func:`epochs`).

    Returns
    -------
    Samples
    """
    mapping = label_map(labels)
    chans = _channel_sets(recordings, ch_types, channels)
    table = window_table(recordings, length=length, stride=stride)
    X, ys, keep_rows = [], [], []
    for rec, picks in zip(recordings, chans.picks, strict=True):
        rows = table[table["recording"] == rec.id]
        end = rows["stop"].to_numpy() - 1.0 / rec.sfreq
        if target == "events":
            y = label_at(rec, end, mapping)
            ok = y != ""
        elif target is not None:
            y, ok = target_at(rec, target, end), np.ones(len(rows), bool)
        else:
            y, ok = None, np.ones(len(rows), bool)
        rows = rows[ok]
        X.append(
            _gather(
                _signal(rec, picks, None, None),
                rows["first"].to_numpy(),
                int(rows["n_samples"].iloc[0]) if len(rows) else 1,
            )
        )
        ys.append(None if y is None else y[ok])
        keep_rows.append(rows)
    out = chans.record(pd.concat(keep_rows, ignore_index=True))
    y_all = None if target is None else np.concatenate(ys)
    if target == "events":
        y_all = y_all.astype(str)
    n = int(out["n_samples"].iloc[0]) if len(out) else 0
    return Samples(
        np.concatenate(X),
        y_all,
        out,
        chans.names,
        recordings[0].sfreq,
        np.arange(n) / recordings[0].sfreq,
        chans.types,
    )


def time_samples(
    recordings: Sequence[Recording],
    *,
    target: str,
    delay: float = 0.0,
    labels: Sequence[str] | Mapping[str, str] | None = None,
    ch_types: Sequence[str] | None = None,
    channels: ChannelSet = "strict",
) -> Samples:
    """One sample per time step (a volume, a frame, a bin).

    Parameters
    ----------
    recordings : sequence of Recording
    target : str
        A behaviour covariate, or ``"events"`` for the label of the event active at
        ``t - delay`` (steps without one are left out).
    delay : float
        Seconds between the stimulus and the response sampled at ``t``: the hemodynamic delay for
        fMRI (about 4–6 s), or a neural lead for behaviour (the behaviour at ``t + delay`` is
        then the target).
    labels : sequence of str or mapping, optional
        With ``target="events"``: labels to keep, or label → class.
    ch_types : sequence of str, optional
        Channel types to keep.
    channels : {"strict", "common"}
        Recordings with different channel sets: refused, or reduced to their common channels
        (see :func:`epochs`).

    Returns
    -------
    Samples
        ``X`` is ``(n_steps, n_channels)``.
    """
    mapping = label_map(labels)
    chans = _channel_sets(recordings, ch_types, channels)
    X, ys, rows = [], [], []
    for rec, picks in zip(recordings, chans.picks, strict=True):
        t = rec.ds["time"].values
        if target == "events":
            y = label_at(rec, t - delay, mapping)
            ok = y != ""
        else:
            y = target_at(rec, target, t + delay)
            ok = (t + delay >= t[0]) & (t + delay <= t[-1])
        X.append(np.asarray(rec.ds["signal"].data[:, picks])[ok])
        ys.append(y[ok])
        base = _base_row(rec)
        rows.append(pd.DataFrame({**base, "start": t[ok], "stop": t[ok] + 1.0 / rec.sfreq}))
    y_all = np.concatenate(ys)
    return Samples(
        np.concatenate(X),
        y_all.astype(str) if target == "events" else y_all,
        chans.record(pd.concat(rows, ignore_index=True)),
        chans.names,
        recordings[0].sfreq,
        None,
        chans.types,
    )


def sample_positions(table: pd.DataFrame, sfreq: float) -> np.ndarray:
    """Integer position of each time-step sample on one grid, for contiguity-aware estimators.

    Consecutive samples of one recording get consecutive integers; different recordings are
    separated by a gap, so that a position jump marks every place where a model's temporal
    window must not reach across (another recording, or rows removed by a split). Slicing the
    result with a split's training rows keeps that meaning: positions jump where test blocks
    were cut out.

    Parameters
    ----------
    table : DataFrame
        A sample table (columns ``recording`` and ``start``), e.g. ``time_samples(...).table``.
    sfreq : float
        Sampling rate of the samples.

    Returns
    -------
    ndarray of int64, shape (n_samples,)
    """
    if not {"recording", "start"} <= set(table.columns):
        raise ValueError("the sample table needs 'recording' and 'start' columns")
    steps = np.rint(table["start"].to_numpy(dtype=float) * float(sfreq)).astype(np.int64)
    codes, _ = pd.factorize(table["recording"])
    out = np.empty(len(table), dtype=np.int64)
    offset = 0
    for code in range(codes.max() + 1 if len(codes) else 0):
        rows = codes == code
        local = steps[rows] - steps[rows].min()
        out[rows] = local + offset
        offset += int(local.max()) + 2
    return out
