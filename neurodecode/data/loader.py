"""The one training-data path: samples of recording stores, read lazily into PyTorch.

:class:`WindowDataset` serves the sliding windows of a sample table (see
:func:`neurodecode.data.samples.window_table`) from one or many recording stores, in the tensor
layout of every model: ``x`` is ``(time, channel)`` per item and ``(batch, time, channel)`` per
batch (:func:`collate_windows`), with the targets of :func:`neurodecode.data.samples.windows` and
the identity (subject, session, recording indices) that subject adapters need. On request, each
window also carries the exact spike times inside it (the input of a spike tokenizer), behaviour
covariates over its samples, the events overlapping it and the stimulus image shown at its end.
Samples are read through the store API (:func:`neurodecode.store.read_signal` and
:class:`neurodecode.store.StoredArray`, the fast read path), only the rows of the windows asked
for.

:class:`Normalizer` holds per-recording mean/std fitted on the training windows only (streamed
shard by shard) and travels with a model as a JSON state; :func:`channel_stats` is the same
statistics for in-memory arrays (what :class:`~neurodecode.evaluate.baselines.ChannelStandardizer`
computes).

Reading whole chunks beats reading random rows: :class:`ChunkBatchSampler` draws batches from a
few chunks at a time, and :meth:`WindowDataset.read_windows` reads the windows of a batch that
share a chunk span with one read. Both samplers are rank-aware (distributed data parallel: each
rank gets disjoint batches, every window once per epoch). :class:`LazySignal` lets
:class:`~neurodecode.models.contrastive.ContrastiveEmbedding` train from stores larger than
memory through the same reads. :class:`WindowDataModule` wires it all into Lightning, with a
leakage-checked split rule from :mod:`neurodecode.data.splits`.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import zarr
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..schema import as_str_array, events_frame
from ..store import StoredArray, find_recordings, read_signal, read_stimuli
from .samples import (
    Recording,
    _base_row,
    label_at,
    label_map,
    open_recordings,
    pick_channels,
    target_at,
)
from .samples import window_table as _window_table
from .splits import ContiguousBlocks, check_split, default_gap, splitter_folds
from .stats import FIT_BLOCK_ROWS, channel_stats, merge_channels, merge_moments, moments, safe_std

__all__ = [
    "ChunkBatchSampler",
    "LazySignal",
    "Normalizer",
    "RandomBatchSampler",
    "TrainingSession",
    "WindowDataModule",
    "WindowDataset",
    "channel_stats",
    "collate_windows",
]

#: Rows of float64 working memory per block when computing statistics (whole shards are read;
#: this caps a block when shards are very long).

#: Per-window fields of variable length, padded together in a batch, and their mask.
_RAGGED = {
    "spike_mask": ("spike_time", "spike_unit"),
    "event_mask": ("event_onset", "event_duration", "event_label", "event_value"),
}


class WindowDataset(Dataset):
    """Sliding windows of one or many recording stores, read lazily.

    Item ``i`` is a dict: ``x`` (float32 tensor ``(n_times, n_channels)``, normalised when a
    :attr:`normalizer` is set), ``y`` (the target; absent when ``target`` is None), the integer
    indices ``subject``, ``session`` and ``recording`` (into :attr:`subjects`, :attr:`sessions`
    and :attr:`recordings`) and ``start`` (the window's start time in seconds, float64). Asked
    for, it also holds:

    - ``spikes=True``: ``spike_time`` (float64 ``(n_spikes,)``, seconds from the window start,
      exact, sorted) and ``spike_unit`` (int64, index into the recording's served channels) of
      the spikes in ``[start, stop)``, from the store's ``spike_time``/``spike_unit``;
    - ``behavior=["position", ...]``: ``behavior_<name>`` (float32 ``(n_times, ...)``), the
      covariate at every sample of the window;
    - ``events=True``: the events overlapping the window (an event spans ``[onset, onset +
      duration)``; an instantaneous one counts when its onset is inside the window):
      ``event_onset`` (seconds from the window start, may be negative), ``event_duration``,
      ``event_label`` (int64 index into :attr:`event_labels`) and ``event_value``;
    - ``stimuli=<stimulus store>``: ``stimulus_id`` (int64, -1 when none) and ``stimulus``
      (float32 image, zeros when none): the image whose event (one of ``stimulus_labels``, its
      ``value`` the image id, see :func:`neurodecode.store.read_stimuli`) is active at the
      window's last sample.

    Recordings may have different channel counts and sampling rates: each sample has its own
    shape (see :func:`collate_windows`).

    Parameters
    ----------
    recordings : path-like or sequence
        A store root (every recording below it), store paths, or :class:`Recording` objects
        opened from stores. They define the index maps, also for windows absent from ``table``.
    length, stride : float, optional
        Window length and step in seconds (sliding windows). ``length = stride = 1 / sfreq``
        serves time steps (``x`` of one row).
    trials : (float, float), optional
        ``(tmin, tmax)`` instead of ``length``/``stride``: event-locked trials, one per event
        (of ``labels``), from ``onset + tmin`` to ``onset + tmax`` (both included, as in
        :func:`neurodecode.data.samples.epochs`; trials that do not fit are left out), ``y``
        the class index of the event's label. The table adds ``onset`` and ``label``.
    table : DataFrame, optional
        Rows of ``window_table(recordings, length=length, stride=stride)`` (or of the trials) to
        serve, e.g. one side of a split. Default: every window.
    target : str, optional
        As in :func:`neurodecode.data.samples.windows`: a behaviour covariate (``"position"``)
        interpolated at the last sample of each window (float32), or ``"events"`` for the class
        index of the event label active there (int64; windows without one are left out).
    labels : sequence of str or mapping, optional
        With ``target="events"``: labels to keep, or label → class name.
    classes : sequence of str, optional
        Class names in index order. Default: the order of ``labels`` (or of the mapping's
        classes), else the sorted labels found.
    ch_types : sequence of str, optional
        Channel types to keep; default the brain-signal types.
    subjects, sessions : sequence of str, optional
        Index maps to keep (e.g. those a model was trained with); sessions are named
        ``"<subject>/<session>"``. Names not listed are appended in sorted order.
    normalizer : Normalizer, optional
        Applied to every window.
    spikes : bool
        Serve each window's exact spike times (recordings without spikes are refused).
    behavior : sequence of str, optional
        Behaviour covariates to serve per sample (``"position"`` or ``"behavior_position"``).
    events : bool
        Serve the events overlapping each window.
    stimuli : path-like, optional
        A stimulus store written by :func:`neurodecode.store.write_stimuli`.
    stimulus_labels : sequence of str, optional
        With ``stimuli`` (required then): the event labels (or :mod:`fnmatch` patterns such as
        ``"stim/*"``) whose ``value`` is an image id. Every such event's value must be an id of
        the store.

    Attributes
    ----------
    table : DataFrame
        The windows served, in item order.
    recordings, subjects, sessions : list of str
        Index maps of the identity fields (``recordings`` holds the recording ids: store paths).
    classes : list of str or None
        Class names (``target="events"``).
    event_labels : list of str
        Labels indexed by ``event_label`` (every label of the recordings, sorted).
    ch_names : list of list of str
        Channel names per recording.
    sfreqs : list of float
        Sampling rate of each recording.
    chunk_rows, shard_rows : list of int
        Rows per Zarr chunk / shard of each recording's ``signal``.
    """

    def __init__(
        self,
        recordings: str | os.PathLike | Sequence[str | os.PathLike | Recording],
        *,
        length: float | None = None,
        stride: float | None = None,
        trials: tuple[float, float] | None = None,
        table: pd.DataFrame | None = None,
        target: str | None = None,
        labels: Sequence[str] | Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        ch_types: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
        sessions: Sequence[str] | None = None,
        normalizer: Normalizer | None = None,
        spikes: bool = False,
        behavior: Sequence[str] | None = None,
        events: bool = False,
        stimuli: str | os.PathLike | None = None,
        stimulus_labels: Sequence[str] | None = None,
    ) -> None:
        recs = _as_recordings(recordings)
        mapping = label_map(labels)
        if trials is not None:
            if length is not None or stride is not None:
                raise ValueError("pass either length and stride (sliding windows) or trials")
            if target not in (None, "events"):
                raise ValueError("trials are labelled by their event: target must be 'events'")
            target = "events"
            full = _trial_table(recs, float(trials[0]), float(trials[1]), mapping)
        elif length is None or stride is None:
            raise ValueError("pass length and stride (sliding windows) or trials=(tmin, tmax)")
        else:
            full = _window_table(recs, length=length, stride=stride)
        if table is None:
            table = full
        else:
            _check_rows(table, full)
        self.length = None if length is None else float(length)
        self.stride = None if stride is None else float(stride)
        self.trials = None if trials is None else (float(trials[0]), float(trials[1]))
        self.recordings = [r.id for r in recs]
        self.subjects = _index_names(subjects, (r.identity["subject"] for r in recs))
        self.sessions = _index_names(sessions, (_session(r) for r in recs))
        self.sfreqs = [r.sfreq for r in recs]
        self.behavior = [b if b.startswith("behavior_") else f"behavior_{b}"
                         for b in (behavior or [])]
        self.stimuli = None if stimuli is None else str(stimuli)
        self.ch_names, self.chunk_rows, self.shard_rows = [], [], []
        self._picks: list[np.ndarray | None] = []
        self._spikes: list[tuple[np.ndarray, np.ndarray]] | None = [] if spikes else None
        ev_tables = [events_frame(r.ds) for r in recs]
        self.event_labels = sorted({str(v) for ev in ev_tables for v in ev["label"]})
        self._events: list[dict[str, np.ndarray]] | None = [] if events else None
        rec_subject, rec_session = [], []
        kept, ys, stim_ids = [], [], []
        image_count = self._stimulus_count(stimulus_labels)
        for rec, ev in zip(recs, ev_tables, strict=True):
            picks = pick_channels(rec, ch_types)
            names = as_str_array(rec.ds["channel"].values)
            self.ch_names.append(names[picks].tolist())
            self._picks.append(None if np.array_equal(picks, np.arange(len(names))) else picks)
            arr = StoredArray(rec.path)
            self.chunk_rows.append(arr.chunk_rows)
            self.shard_rows.append(arr.shard_rows)
            rec_subject.append(self.subjects.index(rec.identity["subject"]))
            rec_session.append(self.sessions.index(_session(rec)))
            for name in self.behavior:
                if name not in rec.ds:
                    have = [str(v) for v in rec.ds.data_vars if str(v).startswith("behavior_")]
                    raise ValueError(f"{rec.id}: no behaviour {name!r}; available: {have}")
            if self._spikes is not None:
                self._spikes.append(_spike_arrays(rec, picks))
            if self._events is not None:
                self._events.append(self._event_arrays(ev))
            rows = table[table["recording"] == rec.id]
            end = rows["stop"].to_numpy() - 1.0 / rec.sfreq
            if trials is not None:  # each trial's own event
                y = rows["label"].to_numpy(dtype=object)
                y = np.array([mapping[v] for v in y] if mapping else y, dtype=object)
                ok = np.ones(len(rows), bool)
            elif target == "events":
                y = label_at(rec, end, mapping)
                ok = y != ""
                y = y[ok]
            elif target is not None:
                y, ok = target_at(rec, target, end), np.ones(len(rows), bool)
            else:
                y, ok = None, np.ones(len(rows), bool)
            kept.append(rows[ok])
            ys.append(y)
            if image_count is not None:
                stim_ids.append(_stimulus_ids(rec, ev, end[ok], stimulus_labels, image_count,
                                              self.stimuli))
        self.table = pd.concat(kept, ignore_index=True)
        self.classes: list[str] | None = None
        if target == "events":
            labels_found = np.concatenate(ys).astype(str)
            self.classes = _class_names(classes, mapping, labels_found)
            index = {c: i for i, c in enumerate(self.classes)}
            unknown = sorted(set(labels_found) - set(index))
            if unknown:
                raise ValueError(f"labels {unknown} are not among the classes {self.classes}")
            self._y = np.array([index[v] for v in labels_found], dtype=np.int64)
        elif target is not None:
            self._y = np.concatenate(ys).astype(np.float32)
        else:
            self._y = None
        self._stim = np.concatenate(stim_ids) if stim_ids else None
        self._rec = self.table["recording"].map(
            {p: i for i, p in enumerate(self.recordings)}).to_numpy(np.int64)
        self._first = self.table["first"].to_numpy(np.int64)
        self._n = self.table["n_samples"].to_numpy(np.int64)
        self._start = self.table["start"].to_numpy(np.float64)
        self._stop = self.table["stop"].to_numpy(np.float64)
        self._rec_subject = np.asarray(rec_subject, dtype=np.int64)
        self._rec_session = np.asarray(rec_session, dtype=np.int64)
        self._paths = [r.path for r in recs]
        self.normalizer = normalizer
        self._arrays: dict[tuple[int, str], StoredArray] = {}
        self._pid = os.getpid()

    def _stimulus_count(self, stimulus_labels: Sequence[str] | None) -> int | None:
        """Images in the stimulus store (None without one); checks the options."""
        if self.stimuli is None:
            if stimulus_labels is not None:
                raise ValueError("stimulus_labels needs stimuli (a stimulus store)")
            return None
        if not stimulus_labels:
            raise ValueError(f"{self.stimuli}: pass stimulus_labels, the event labels whose "
                             "value is an image id of this store (e.g. ['stim/*'])")
        empty = read_stimuli(self.stimuli, ids=np.empty(0, np.int64))
        self._image_shape = tuple(empty["images"].shape[1:])
        return int(zarr.open_array(Path(self.stimuli) / "images", mode="r").shape[0])

    def _event_arrays(self, ev: pd.DataFrame) -> dict[str, np.ndarray]:
        codes = {label: i for i, label in enumerate(self.event_labels)}
        return {
            "onset": ev["onset"].to_numpy(np.float64),
            "duration": ev["duration"].to_numpy(np.float64),
            "label": np.array([codes[str(v)] for v in ev["label"]], dtype=np.int64),
            "value": ev["value"].to_numpy(np.float64),
        }

    def __len__(self) -> int:
        return len(self._first)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"], state["_pid"] = {}, None  # never ship open handles to a worker
        return state

    def subset(self, rows: Sequence[int] | np.ndarray) -> WindowDataset:
        """The windows at positions ``rows`` (same index maps, classes and normaliser).

        Parameters
        ----------
        rows : sequence of int
            Positions in this dataset (e.g. one side of a split of :attr:`table`).

        Returns
        -------
        WindowDataset
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = copy.copy(self)
        out.table = self.table.iloc[rows].reset_index(drop=True)
        for name in ("_rec", "_first", "_n", "_start", "_stop"):
            setattr(out, name, getattr(self, name)[rows])
        out._y = None if self._y is None else self._y[rows]
        out._stim = None if self._stim is None else self._stim[rows]
        out._arrays, out._pid = {}, os.getpid()
        return out

    @property
    def max_channels(self) -> int:
        """The largest channel count of the recordings."""
        return max(len(c) for c in self.ch_names)

    # ------------------------------------------------------------------ reading
    def read_span(self, recording: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a recording's served channels with one read (no scaling).

        Read with :func:`neurodecode.store.read_signal`: only the chunks of those rows are
        decompressed, straight into the result, on one thread in a DataLoader worker (the
        workers are the parallelism) and on a thread per CPU otherwise.

        Parameters
        ----------
        recording : int
            Index into :attr:`recordings`.
        start, stop : int
            Sample indices.

        Returns
        -------
        ndarray
            float32 ``(stop - start, n_channels)``.
        """
        in_worker = torch.utils.data.get_worker_info() is not None
        return read_signal(self._paths[recording], start, stop, channels=self._picks[recording],
                           threads=1 if in_worker else None)

    def read_windows(self, recording: int, firsts: np.ndarray, n: int) -> np.ndarray:
        """Windows of ``n`` samples starting at ``firsts`` (normalised), with few reads.

        The windows are sorted by their first sample and merged into spans while the next
        window starts less than one chunk after the current span ends (reading the few rows
        between them costs at most one more chunk to decode) and the span stays within one
        shard's rows (or one window, if longer): memory is bounded by a shard whatever the
        recording's length. Each span is read with :meth:`read_span` and normalised once, and
        the windows are cut out of it. Batches of :class:`ChunkBatchSampler` thus cost a few
        reads; random batches about one per window.

        Parameters
        ----------
        recording : int
            Index into :attr:`recordings`.
        firsts : ndarray of int
            First sample of each window (any order, repeats allowed).
        n : int
            Samples per window.

        Returns
        -------
        ndarray
            float32 ``(len(firsts), n, n_channels)``, in the order of ``firsts``.
        """
        return self._gather(recording, firsts, n, len(self.ch_names[recording]),
                            lambda a, b: self._scaled(self.read_span(recording, a, b), recording))

    def _gather(self, recording: int, firsts: np.ndarray, n: int, width: Any,
                read: Callable[[int, int], np.ndarray], dtype: Any = np.float32) -> np.ndarray:
        """Cut windows out of merged spans read by ``read(start, stop)`` (see
        :meth:`read_windows`)."""
        firsts = np.asarray(firsts, dtype=np.int64)
        shape = (width,) if isinstance(width, int) else tuple(width)
        out = np.empty((len(firsts), n, *shape), dtype=dtype)
        if not len(firsts):
            return out
        order = np.argsort(firsts, kind="stable")
        lo_all = firsts[order]
        merge, cap = self.chunk_rows[recording], max(self.shard_rows[recording], n)
        parts, begin, lo, hi = [], 0, int(lo_all[0]), int(lo_all[0]) + n
        for j in range(1, len(lo_all)):
            f = int(lo_all[j])
            if f >= hi + merge or f + n - lo > cap:
                parts.append((begin, j, lo, hi))
                begin, lo, hi = j, f, f + n
            else:
                hi = max(hi, f + n)
        parts.append((begin, len(lo_all), lo, hi))
        for a, b, lo, hi in parts:
            block = read(lo, hi)
            for j, f in zip(order[a:b], lo_all[a:b] - lo, strict=True):
                out[j] = block[f : f + n]  # slice copies: ~3x faster than a fancy-index gather
        return out

    def _array(self, recording: int, name: str = "signal") -> StoredArray:
        """A time-aligned store variable (behaviour), opened once per process."""
        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        key = (recording, name)
        arr = self._arrays.get(key)
        if arr is None:
            arr = StoredArray(self._paths[recording], name)
            self._arrays[key] = arr
        return arr

    def _scaled(self, block: np.ndarray, recording: int) -> np.ndarray:
        if self.normalizer is None:
            return block
        return self.normalizer.transform(block, self.recordings[recording])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([range(len(self))[i]])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Read a batch: per recording, its windows with :meth:`read_windows`.

        Parameters
        ----------
        indices : sequence of int

        Returns
        -------
        list of dict
            The items, in the order of ``indices``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        out: list[dict[str, Any]] = [{} for _ in idx]
        recs = self._rec[idx]
        for r in np.unique(recs):
            r = int(r)
            ks = np.flatnonzero(recs == r)
            firsts, n = self._first[idx[ks]], int(self._n[idx[ks[0]]])
            xs = self.read_windows(r, firsts, n)
            extra = {name: self._gather(r, firsts, n, self._array(r, name).shape[1:],
                                        partial(_rows, self._array(r, name)))
                     for name in self.behavior}
            for j, k in enumerate(ks):
                out[k] = self._sample(int(idx[k]), xs[j], {m: v[j] for m, v in extra.items()})
        if self._stim is not None:
            self._add_stimuli(idx, out)
        return out

    def _sample(self, i: int, x: np.ndarray, behavior: dict[str, np.ndarray]) -> dict[str, Any]:
        """The item of window ``i`` from its (normalised) ``(time, channel)`` rows."""
        r = int(self._rec[i])
        item: dict[str, Any] = {"x": torch.from_numpy(x)}
        if self._y is not None:
            item["y"] = torch.tensor(self._y[i])
        item.update(subject=int(self._rec_subject[r]), session=int(self._rec_session[r]),
                    recording=r, start=float(self._start[i]))
        for name, values in behavior.items():
            item[name] = torch.from_numpy(values)
        start, stop = self._start[i], self._stop[i]
        if self._spikes is not None:
            times, units = self._spikes[r]
            a, b = np.searchsorted(times, [start, stop], side="left")
            item["spike_time"] = torch.from_numpy(times[a:b] - start)
            item["spike_unit"] = torch.from_numpy(units[a:b])
        if self._events is not None:
            ev = self._events[r]
            hit = (ev["onset"] < stop) & ((ev["onset"] + ev["duration"] > start)
                                          | (ev["onset"] >= start))
            item["event_onset"] = torch.from_numpy(ev["onset"][hit] - start)
            item["event_duration"] = torch.from_numpy(ev["duration"][hit])
            item["event_label"] = torch.from_numpy(ev["label"][hit])
            item["event_value"] = torch.from_numpy(ev["value"][hit])
        return item

    def _add_stimuli(self, idx: np.ndarray, out: list[dict[str, Any]]) -> None:
        """Add ``stimulus_id`` and ``stimulus`` to the items (one read of the batch's images)."""
        ids = self._stim[idx]
        shown = np.unique(ids[ids >= 0])
        images = read_stimuli(self.stimuli, shown)["images"] if shown.size else None
        blank = np.zeros(self._image_shape, np.float32)
        for item, sid in zip(out, ids, strict=True):
            item["stimulus_id"] = torch.tensor(int(sid))
            image = blank if sid < 0 else images[np.searchsorted(shown, sid)]
            item["stimulus"] = torch.from_numpy(np.array(image, dtype=np.float32))

    # ------------------------------------------------------------------ contrastive training
    def training_sessions(self, target: str | None = None) -> list[TrainingSession]:
        """The samples these windows cover, one session per recording, read lazily.

        What :meth:`ContrastiveEmbedding.fit
        <neurodecode.models.contrastive.ContrastiveEmbedding.fit>` trains from when given this
        dataset: each recording's samples covered by at least one window of :attr:`table`, as a
        :class:`LazySignal` (normalised with :attr:`normalizer`), their positions on the
        recording's sample grid (windows of a model never span a jump: a split's gap, another
        side's block) and, with ``target``, the behaviour at each of them. Only the labels and
        positions are held in memory (8 bytes per sample and label dimension), never the signal.

        Parameters
        ----------
        target : str, optional
            A behaviour covariate (``"position"``), read at every covered sample.

        Returns
        -------
        list of TrainingSession
            In the order of :attr:`recordings` (recordings without a window are left out).
        """
        out = []
        for r in np.unique(self._rec):
            r = int(r)
            sel = self._rec == r
            rows = _covered(self._first[sel], int(self._n[sel][0]))
            labels = None
            if target is not None:
                name = target if target.startswith("behavior_") else f"behavior_{target}"
                try:
                    arr = self._array(r, name)
                except FileNotFoundError as err:
                    raise ValueError(f"{self.recordings[r]}: no behaviour {name!r}") from err
                labels = self._gather(r, rows, 1, arr.shape[1:], partial(_rows, arr),
                                      arr.dtype)[:, 0]
            out.append(TrainingSession(LazySignal(self, r, rows), labels, rows))
        return out


def _trial_table(recs: Sequence[Recording], tmin: float, tmax: float,
                 mapping: Mapping[str, str] | None) -> pd.DataFrame:
    """The sample table of event-locked trials (no data read), as :func:`epochs` cuts them."""
    if tmax <= tmin:
        raise ValueError(f"trials need tmin < tmax, got ({tmin}, {tmax})")
    parts = []
    for rec in recs:
        n = int(round((tmax - tmin) * rec.sfreq)) + 1
        ev = events_frame(rec.ds)
        if mapping is not None:
            ev = ev[ev["label"].isin(list(mapping))]
        t = rec.ds["time"].values
        first = np.round((ev["onset"].to_numpy() + tmin - t[0]) * rec.sfreq).astype(np.int64)
        ok = (first >= 0) & (first + n <= len(t))
        ev, first = ev[ok], first[ok]
        parts.append(pd.DataFrame({
            **_base_row(rec), "start": t[first], "stop": t[first] + n / rec.sfreq,
            "first": first, "n_samples": n, "onset": ev["onset"].to_numpy(),
            "label": ev["label"].to_numpy(dtype=object),
        }))  # fmt: skip
    table = pd.concat(parts, ignore_index=True)
    if not len(table):
        raise ValueError("no event matched: check `labels` against the recordings' events")
    return table


def _rows(arr: StoredArray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a store variable."""
    in_worker = torch.utils.data.get_worker_info() is not None
    return arr.read(start, stop, threads=1 if in_worker else None)


def _covered(firsts: np.ndarray, n: int) -> np.ndarray:
    """Sorted sample indices covered by windows of ``n`` samples starting at ``firsts``."""
    firsts = np.unique(firsts)
    ends = firsts + n
    # merge overlapping windows into runs, then list each run's rows
    starts_run = np.r_[True, firsts[1:] > np.maximum.accumulate(ends)[:-1]]
    run_lo = firsts[starts_run]
    run_hi = np.maximum.reduceat(ends, np.flatnonzero(starts_run))
    return np.concatenate([np.arange(a, b) for a, b in zip(run_lo, run_hi, strict=True)])


@dataclass(frozen=True)
class TrainingSession:
    """One recording's training samples for a contrastive model (see
    :meth:`WindowDataset.training_sessions`).

    Attributes
    ----------
    signal : LazySignal
        The samples, read on demand.
    labels : ndarray or None
        Behaviour at each sample.
    positions : ndarray of int64
        Sample index of each row in its recording.
    """

    signal: LazySignal
    labels: np.ndarray | None
    positions: np.ndarray


class LazySignal:
    """Some rows of a recording's signal, read from the store only when indexed.

    A tensor-like view of ``n`` samples (those at ``positions`` of a :class:`WindowDataset`'s
    recording) for training loops that gather windows with ``index_select``: it has ``shape``,
    ``device``, :meth:`to` and :meth:`index_select`, and reads only the rows asked for (merged
    into spans by :meth:`WindowDataset.read_windows`, normalised by the dataset's normaliser).
    Memory does not grow with the recording: a batch reads a batch's rows.

    Parameters
    ----------
    dataset : WindowDataset
    recording : int
        Index into the dataset's recordings.
    positions : ndarray of int
        Sample indices (in the recording) of the rows of this view.
    device : torch.device or str
        Where :meth:`index_select` puts its result.
    """

    def __init__(self, dataset: WindowDataset, recording: int, positions: np.ndarray,
                 device: torch.device | str = "cpu") -> None:
        self.dataset, self.recording = dataset, int(recording)
        self.positions = np.asarray(positions, dtype=np.int64)
        self.device = torch.device(device)
        self.shape = (len(self.positions), len(dataset.ch_names[self.recording]))
        self.dtype = torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LazySignal:
        """The same view, its reads delivered on ``device``."""
        return LazySignal(self.dataset, self.recording, self.positions, device)

    def index_select(self, dim: int, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rows ``index`` of the view, read from the store.

        Parameters
        ----------
        dim : int
            Must be 0 (rows).
        index : tensor or ndarray of int
            Row indices into the view.

        Returns
        -------
        torch.Tensor
            float32 ``(len(index), n_channels)`` on :attr:`device`.
        """
        if dim != 0:
            raise ValueError("a LazySignal is indexed along its rows (dim=0) only")
        rows = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for a view of {len(self)} samples")
        block = self.dataset.read_windows(self.recording, self.positions[rows], 1)[:, 0]
        return torch.from_numpy(block).to(self.device)

    def numpy(self) -> np.ndarray:
        """Every row at once (for small data and tests: this reads the whole view)."""
        return self.index_select(0, np.arange(len(self))).cpu().numpy()


def _spike_arrays(rec: Recording, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted spike times (s) and unit indices into the served channels of a recording."""
    if "spike_time" not in rec.ds:
        raise ValueError(f"{rec.id}: the store holds no spike times (spike_time/spike_unit); "
                         "spikes=True needs them")
    times = np.asarray(rec.ds["spike_time"].values, dtype=np.float64)
    units = np.asarray(rec.ds["spike_unit"].values, dtype=np.int64)
    where = np.full(rec.ds.sizes["channel"], -1, dtype=np.int64)
    where[picks] = np.arange(len(picks))
    units = where[units]
    keep = units >= 0
    order = np.argsort(times[keep], kind="stable")
    return times[keep][order], units[keep][order]


def _stimulus_ids(rec: Recording, ev: pd.DataFrame, times: np.ndarray,
                  patterns: Sequence[str], n_images: int, store: str) -> np.ndarray:
    """Image id of the stimulus event active at each time (-1 none); ids are checked."""
    match = np.array([any(fnmatch.fnmatchcase(str(v), p) for p in patterns)
                      for v in ev["label"]], dtype=bool)
    ev = ev[match] if len(ev) else ev
    values = ev["value"].to_numpy(np.float64) if len(ev) else np.empty(0)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= n_images)
    if bad.any():
        row = ev.iloc[int(np.flatnonzero(bad)[0])]
        raise ValueError(f"{rec.id}: event {row['label']!r} at {row['onset']:g} s has value "
                         f"{row['value']!r}, which is not an image id of {store} (0 to "
                         f"{n_images - 1})")
    out = np.full(len(times), -1, dtype=np.int64)
    for onset, dur, value in zip(ev["onset"], ev["duration"], values, strict=True):
        out[(times >= onset) & (times < onset + max(dur, 1e-12))] = int(value)
    return out


def _as_recordings(
    recordings: str | os.PathLike | Sequence[str | os.PathLike | Recording],
) -> list[Recording]:
    if isinstance(recordings, str | os.PathLike):
        recordings = open_recordings(recordings)
    recs = [r if isinstance(r, Recording) else open_recordings([r])[0] for r in recordings]
    if not recs:
        raise ValueError("no recording given")
    for r in recs:
        if not r.path or not (Path(r.path) / "signal" / "zarr.json").is_file():
            raise ValueError(f"{r.id}: not a recording store; WindowDataset reads from stores "
                             "(write in-memory recordings with neurodecode.store.write_recording)")
    if len({r.id for r in recs}) != len(recs):
        raise ValueError("the same recording is listed twice")
    return recs


def _session(rec: Recording) -> str:
    return f"{rec.identity['subject']}/{rec.identity['session']}"


def _index_names(known: Sequence[str] | None, names: Any) -> list[str]:
    out = list(known or [])
    return out + sorted(set(names) - set(out))


def _check_rows(table: pd.DataFrame, full: pd.DataFrame) -> None:
    """Refuse table rows that are not windows of these recordings with this length/stride."""
    keys = ["recording", "first", "n_samples"]
    missing = table[keys].merge(full[keys], how="left", on=keys, indicator=True)
    bad = missing["_merge"] != "both"
    if bad.any():
        row = missing[bad].iloc[0]
        raise ValueError(f"table row {row['recording']} first={row['first']} "
                         f"n_samples={row['n_samples']} is not a window of these recordings "
                         "with this length and stride")


def _class_names(classes: Sequence[str] | None, mapping: Mapping[str, str] | None,
                 found: np.ndarray) -> list[str]:
    if classes is not None:
        return [str(c) for c in classes]
    if mapping is not None:
        return list(dict.fromkeys(mapping.values()))
    return sorted(set(found.tolist()))


def collate_windows(batch: Sequence[dict[str, Any]], n_channels: int = 0) -> dict[str, Any]:
    """Collate window items into ``(batch, time, channel)`` tensors, padding what differs.

    Recordings with different channel counts (or window lengths) share a batch by zero-padding
    ``x`` to the largest ``(n_times, n_channels)``; ``n_times`` and ``n_channels`` give each
    sample's true size, and ``subject``/``session``/``recording`` let a model pick per-subject
    input weights (padded channels are zero after normalisation, so they add nothing to a linear
    adapter). Behaviour covariates are padded along time like ``x``. The ragged per-window
    fields are padded to the batch's largest count with a boolean mask (True where real):
    ``spike_time``/``spike_unit`` with ``spike_mask`` ``(batch, max_spikes)``, and the
    ``event_*`` fields with ``event_mask``; padding is 0 (times, values) or -1 (indices). Other
    fields use PyTorch's default collate.

    Parameters
    ----------
    batch : sequence of dict
        Items of :class:`WindowDataset`.
    n_channels : int
        Pad to at least this many channels (e.g. :attr:`WindowDataset.max_channels`, for the
        same shape in every batch).

    Returns
    -------
    dict
        ``x`` ``(batch, max_times, max_channels)`` float32, ``n_times`` and ``n_channels``
        (int64), the padded ragged fields with their masks, and every other field collated
        (``y``, ``subject``, ``session``, ...).
    """
    xs = [b["x"] for b in batch]
    shapes = torch.tensor([tuple(x.shape) for x in xs], dtype=torch.int64)
    t, c = (int(v) for v in shapes.max(dim=0).values)
    c = max(c, n_channels)
    out: dict[str, Any] = {"x": default_collate(_pad_rows(xs, t, c)),
                           "n_times": shapes[:, 0], "n_channels": shapes[:, 1]}
    ragged = {key: mask for mask, keys in _RAGGED.items() for key in keys}
    for key in batch[0]:
        if key == "x" or key in ragged:
            continue
        values = [b[key] for b in batch]
        if key.startswith("behavior_"):
            values = _pad_rows(values, t, None)
        # default_collate stacks straight into shared memory in a worker (no copy when sent)
        out[key] = default_collate(values)
    for mask, keys in _RAGGED.items():
        if keys[0] not in batch[0]:
            continue
        counts = torch.tensor([len(b[keys[0]]) for b in batch], dtype=torch.int64)
        width = int(counts.max()) if len(counts) else 0
        out[mask] = torch.arange(width)[None, :] < counts[:, None]
        for key in keys:
            fill = 0 if batch[0][key].dtype.is_floating_point else -1
            padded = torch.full((len(batch), width), fill, dtype=batch[0][key].dtype)
            for k, b in enumerate(batch):
                padded[k, : len(b[key])] = b[key]
            out[key] = padded
    return out


def _pad_rows(values: list[torch.Tensor], n_rows: int, n_cols: int | None) -> list[torch.Tensor]:
    """Zero-pad tensors to ``n_rows`` rows (and ``n_cols`` columns when given)."""
    out = []
    for v in values:
        rows = n_rows - v.shape[0]
        cols = 0 if n_cols is None else n_cols - v.shape[1]
        if rows or cols:
            # F.pad lists (before, after) from the last axis back
            inner = [0, cols] if n_cols is not None else [0, 0] * (v.ndim - 1)
            v = torch.nn.functional.pad(v, [*inner, 0, rows])
        out.append(v)
    return out


class Normalizer:
    """Per-recording mean/std, fitted on training windows only and applied to every window.

    Statistics are those of the stacked training windows of each recording (a sample covered by
    several overlapping windows counts that many times, exactly as in ``X[train].mean(...)``),
    computed in a single streamed pass over whole shards with float64 accumulators merged
    block by block (Chan et al.), so a recording is never loaded whole. They are keyed by
    recording id (the sample table's ``recording``: the store path). Recordings without
    training windows (a held-out subject) get the statistics pooled over all training
    recordings: per channel when these all have the same channel count (a recording with
    another count is then refused), else one mean/std. Flat channels (zero variance) are only
    centred. :meth:`state_dict` is plain JSON, saved with a model (e.g. in a Lightning
    checkpoint through :meth:`WindowDataModule.state_dict`).

    Parameters
    ----------
    per : {"channel", "recording"}
        One mean/std per channel of each recording, or one per recording.
    """

    def __init__(self, per: Literal["channel", "recording"] = "channel") -> None:
        if per not in ("channel", "recording"):
            raise ValueError(f"per must be 'channel' or 'recording', got {per!r}")
        self.per = per
        self._stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._pooled: tuple[np.ndarray, np.ndarray] | None = None
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def fitted_on(self) -> list[str]:
        """Recordings (ids) with their own statistics."""
        return list(self._stats)

    def fit(self, dataset: WindowDataset) -> Normalizer:
        """Fit on the windows of ``dataset`` (the training side of a split).

        Parameters
        ----------
        dataset : WindowDataset
            Training windows; only the shards they cover are read.

        Returns
        -------
        Normalizer
            ``self``.
        """
        if not len(dataset):
            raise ValueError("cannot fit a Normalizer on an empty dataset")
        per_rec = {}
        for r in np.unique(dataset._rec):
            sel = dataset._rec == r
            per_rec[int(r)] = _window_moments(dataset, int(r), np.sort(dataset._first[sel]),
                                              int(dataset._n[sel][0]))
        self._stats, self._cache = {}, {}
        for r, (count, mean, m2) in per_rec.items():
            if self.per == "recording":
                count, mean, m2 = merge_channels(count, mean, m2)
            self._stats[dataset.recordings[r]] = (mean, safe_std(mean, m2 / count))
        parts = list(per_rec.values())
        if self.per == "channel" and len({m[1].size for m in parts}) == 1:
            pooled = merge_moments(parts)
        else:
            pooled = merge_moments([merge_channels(*m) for m in parts])
        self._pooled = (pooled[1], safe_std(pooled[1], pooled[2] / pooled[0]))
        return self

    def stats(self, recording: str, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std applied to a recording.

        Parameters
        ----------
        recording : str
            Recording id (the sample table's ``recording``).
        n_channels : int
            Its channel count.

        Returns
        -------
        mean, std : ndarray
            float32 ``(n_channels,)``.
        """
        key = (recording, n_channels)
        if key not in self._cache:
            if self._pooled is None:
                raise RuntimeError("the Normalizer is not fitted")
            mean, std = self._stats.get(recording, self._pooled)
            if mean.size not in (1, n_channels):
                raise ValueError(f"{recording}: {n_channels} channels, but the statistics have "
                                 f"{mean.size}")
            self._cache[key] = tuple(  # type: ignore[assignment]
                np.broadcast_to(v, (n_channels,)).astype(np.float32) for v in (mean, std))
        return self._cache[key]

    def transform(self, block: np.ndarray, recording: str) -> np.ndarray:
        """Normalise a block whose last axis is the channels (e.g. ``(time, channel)`` rows).

        Parameters
        ----------
        block : ndarray
        recording : str
            Id of the recording the block comes from.

        Returns
        -------
        ndarray
            float32, same shape.
        """
        mean, std = self.stats(recording, block.shape[-1])
        return ((block - mean) / std).astype(np.float32, copy=False)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (plain floats and lists) to store with a model."""
        if self._pooled is None:
            raise RuntimeError("the Normalizer is not fitted")

        def pack(v: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
            if self.per == "recording" or v[0].size == 1:
                return {"mean": float(v[0].ravel()[0]), "std": float(v[1].ravel()[0])}
            return {"mean": v[0].tolist(), "std": v[1].tolist()}

        return {"per": self.per, "recordings": {k: pack(v) for k, v in self._stats.items()},
                "pooled": pack(self._pooled)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state of :meth:`state_dict`."""

        def unpack(v: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
            return (np.atleast_1d(np.asarray(v["mean"], dtype=np.float64)),
                    np.atleast_1d(np.asarray(v["std"], dtype=np.float64)))

        self.per = state["per"]
        self._stats = {k: unpack(v) for k, v in state["recordings"].items()}
        self._pooled = unpack(state["pooled"])
        self._cache = {}


def _window_moments(dataset: WindowDataset, r: int, firsts: np.ndarray, n: int
                    ) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted count, mean and M2 per channel over the windows ``firsts`` of recording ``r``.

    The weight of sample ``t`` is the number of windows covering it; it is computed per block
    from the sorted window starts, and blocks no window covers are never read.
    """
    ends = firsts + n
    step = min(dataset.shard_rows[r], FIT_BLOCK_ROWS)
    lo, hi = int(firsts[0]), int(ends[-1])
    parts = []
    for a in range((lo // step) * step, hi, step):
        a, b = max(a, lo), min(a + step, hi)
        t = np.arange(a, b)
        w = (np.searchsorted(firsts, t, side="right")
             - np.searchsorted(ends, t, side="right")).astype(np.float64)
        if w.sum() == 0:
            continue
        parts.append(moments(dataset.read_span(r, a, b), w))
    return merge_moments(parts)


def _distributed(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``, by default those of an initialised ``torch.distributed``."""
    ready = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if ready else 1
    if rank is None:
        rank = torch.distributed.get_rank() if ready else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
    return int(num_replicas), int(rank)


class _EpochSampler(Sampler[list[int]], ABC):
    """Batches whose order depends on ``(seed, epoch)``; each iteration advances the epoch.

    Every rank computes the same epoch order and cuts it into the same global batches, then
    keeps every ``num_replicas``-th one, starting at its ``rank``: ranks get disjoint batches
    and equally many of them. ``drop_last=False``: every window once per epoch across ranks;
    when the batches do not divide evenly among the ranks, the windows after the last full
    batches are spread over smaller batches (never repeated), so that each rank gets
    ``ceil(ceil(n / batch_size) / num_replicas)`` batches. ``drop_last=True``: full batches only,
    each rank ``n // (batch_size * num_replicas)``; the windows left out change every epoch.
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int,
                 num_replicas: int | None, rank: int | None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.n, self.batch_size, self.drop_last, self.seed = n, batch_size, drop_last, seed
        self.num_replicas, self.rank = _distributed(num_replicas, rank)
        self.epoch = 0
        if not drop_last and self._n_global() > n:
            raise ValueError(
                f"{n} windows cannot fill {self._n_global()} batches (batch_size "
                f"{batch_size}, {self.num_replicas} ranks) without repeating windows; pass "
                "drop_last=True or a larger batch_size")

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (the same on every rank)."""
        self.epoch = epoch

    @abstractmethod
    def _order(self, rng: np.random.Generator) -> np.ndarray:
        """Every position once, in the order of this epoch."""

    def _n_global(self) -> int:
        """Batches of one epoch over all ranks."""
        if self.drop_last:
            return self.n // (self.batch_size * self.num_replicas) * self.num_replicas
        batches = -(-self.n // self.batch_size)
        per_rank = -(-batches // self.num_replicas)
        return per_rank * self.num_replicas

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        """The global batches of one epoch order (see the class docstring)."""
        total, bs = self._n_global(), self.batch_size
        if self.drop_last:
            return list(order[: total * bs].reshape(total, bs)) if total else []
        full = min(self.n // bs, (self.n - total) // (bs - 1)) if bs > 1 else self.n
        head = list(order[: full * bs].reshape(full, bs))
        rest = total - full
        return head + (np.array_split(order[full * bs:], rest) if rest else [])

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch advances on the first batch drawn, not when DataLoader calls
        # iter() and throws the iterator away (it does so once on its first epoch).
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        batches = self._batches(self._order(rng))
        for batch in batches[self.rank::self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self._n_global() // self.num_replicas


class ChunkBatchSampler(_EpochSampler):
    """Shuffled batches that each touch only a few chunks of the stores (rank-aware).

    Windows are grouped by recording and by the chunk (or shard) holding their first sample.
    Each epoch shuffles the order of the groups (seeded by ``seed`` and the epoch) and gathers
    them, in that order, into pools of ``pool`` groups (more when these hold fewer than
    ``batch_size`` windows, e.g. the short last chunk of a recording); it shuffles the windows
    within each pool and cuts the resulting sequence into batches. A batch thus draws from at
    most two consecutive pools, and :meth:`WindowDataset.read_windows` reads it in a few slices
    instead of one per window. Every window is served once per epoch (see below for ranks).

    With several ranks (distributed data parallel), every rank draws the same order and keeps
    its share of the batches: disjoint, equally many, every window once per epoch over all
    ranks with ``drop_last=False`` (the last windows are then spread over smaller batches
    rather than repeated); ``drop_last=True`` keeps full batches only. Call :meth:`set_epoch`
    with the epoch on every rank (Lightning does) to reshuffle; without it, each iteration
    moves to the next epoch. With Lightning, pass ``Trainer(use_distributed_sampler=False)``:
    the sampler takes the ranks from ``torch.distributed`` itself.

    Parameters
    ----------
    dataset : WindowDataset
    batch_size : int
    group_by : {"chunk", "shard"}
        Unit of grouping: a chunk (~1 MiB, the unit of decompression) or a shard (16 chunks,
        one file: fewer file opens and more mixing per group).
    pool : int
        Groups mixed together; larger mixes better and touches more chunks per batch.
    drop_last : bool
        Serve full batches only.
    seed : int
        Seed of the shuffles (combined with the epoch).
    num_replicas, rank : int, optional
        Number of ranks and this one's; default ``torch.distributed``'s when it is
        initialised, else 1 and 0.
    """

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        *,
        group_by: Literal["chunk", "shard"] = "chunk",
        pool: int = 4,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(len(dataset), batch_size, drop_last, seed, num_replicas, rank)
        if group_by not in ("chunk", "shard"):
            raise ValueError(f"group_by must be 'chunk' or 'shard', got {group_by!r}")
        if pool < 1:
            raise ValueError(f"pool must be at least 1, got {pool}")
        self.pool = pool
        rows = np.asarray(dataset.chunk_rows if group_by == "chunk" else dataset.shard_rows)
        block = dataset._first // rows[dataset._rec]
        _, group = np.unique(np.stack([dataset._rec, block]), axis=1, return_inverse=True)
        group = np.asarray(group).ravel()
        order = np.argsort(group, kind="stable")
        cuts = np.flatnonzero(np.diff(group[order])) + 1
        self.groups = np.split(order, cuts) if len(order) else []

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        if not self.groups:
            return np.empty(0, dtype=np.int64)
        pools, current, size = [], [], 0
        for g in rng.permutation(len(self.groups)):
            current.append(self.groups[g])
            size += len(self.groups[g])
            if len(current) >= self.pool and size >= self.batch_size:
                pools.append(rng.permutation(np.concatenate(current)))
                current, size = [], 0
        if current:
            pools.append(rng.permutation(np.concatenate(current)))
        return np.concatenate(pools)


class RandomBatchSampler(_EpochSampler):
    """Uniformly shuffled batches (every window once per epoch), for comparison; rank-aware
    as :class:`ChunkBatchSampler`.

    Parameters
    ----------
    dataset : WindowDataset or int
        The dataset, or its length.
    batch_size : int
    drop_last : bool
    seed : int
        Seed of the shuffles (combined with the epoch).
    num_replicas, rank : int, optional
        Number of ranks and this one's; default ``torch.distributed``'s when it is
        initialised, else 1 and 0.
    """

    def __init__(self, dataset: WindowDataset | int, batch_size: int, *,
                 drop_last: bool = False, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        super().__init__(dataset if isinstance(dataset, int) else len(dataset), batch_size,
                         drop_last, seed, num_replicas, rank)

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.n)


class WindowDataModule(L.LightningDataModule):
    """Windows of recording stores, split without leakage, for Lightning.

    :meth:`setup` builds the sample table of every window, splits it with the rule (checked by
    :func:`neurodecode.data.splits.check_split`: training windows must lie at least ``gap``
    seconds from validation and test windows of the same recording, and rules that split
    recordings may not share one between sides), fits the :class:`Normalizer` on the training
    windows only and builds the three :class:`WindowDataset`. Training batches come from
    :class:`ChunkBatchSampler` (rank-aware: with distributed data parallel, pass
    ``Trainer(use_distributed_sampler=False)`` and every rank gets its own disjoint share of
    the batches); validation and test batches are sequential. Batches are ``(batch, time,
    channel)`` (see :func:`collate_windows`).

    Parameters
    ----------
    stores : path-like or sequence of path-like
        A store root or store paths.
    length, stride : float
        Window length and step in seconds.
    target : str, optional
        Behaviour covariate or ``"events"`` (see :class:`WindowDataset`).
    labels : sequence of str or mapping, optional
        With ``target="events"``: labels to keep, or label → class name.
    modality, task : str, optional
        Keep only these recordings of ``stores``.
    ch_types : sequence of str, optional
        Channel types to keep.
    split : splitter or mapping, optional
        A rule of :mod:`neurodecode.data.splits` (e.g. ``LeaveOneGroupOut("run")``), any
        scikit-learn splitter (``GroupKFold(5)`` with ``groups="subject"``...; its folds are
        leakage-checked: a recording stays on one side), or explicit recording lists
        ``{"train": [...], "val": [...], "test": [...]}`` (``val`` optional). Default
        ``ContiguousBlocks(n_blocks=5, gap=gap)``.
    groups : str or sequence of str, optional
        Sample-table column(s) whose values are a scikit-learn splitter's ``groups``.
    fold : int
        Fold of the rule used for testing.
    val_fold : int, "next" or None
        Fold of the same rule used for validation; training keeps the windows that are on the
        training side of both folds. ``"next"``: ``fold + 1`` (cyclically) when the rule has
        more than one fold, else no validation set. None: no validation set.
    gap : float, optional
        Minimum seconds between training and evaluation windows of one recording, checked on
        top of the split's own gap; default the window length plus the modality's margin (see
        :func:`neurodecode.data.splits.default_gap`).
    normalize : {"channel", "recording"} or None
        Normaliser statistics (see :class:`Normalizer`), or none.
    batch_size : int
        Training batch size.
    eval_batch_size : int, optional
        Validation/test batch size; default ``batch_size``.
    num_workers : int
        DataLoader worker processes.
    persistent_workers : bool
        Keep the workers (and their open stores) across epochs.
    group_by : {"chunk", "shard"}
        Grouping of :class:`ChunkBatchSampler`.
    pool : int
        Groups mixed by :class:`ChunkBatchSampler`.
    seed : int
        Seed of the training order.
    """

    def __init__(
        self,
        stores: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        length: float,
        stride: float,
        target: str | None = None,
        labels: Sequence[str] | Mapping[str, str] | None = None,
        modality: str | None = None,
        task: str | None = None,
        ch_types: Sequence[str] | None = None,
        split: Any = None,
        groups: str | Sequence[str] | None = None,
        fold: int = 0,
        val_fold: int | Literal["next"] | None = "next",
        gap: float | None = None,
        normalize: Literal["channel", "recording"] | None = "channel",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        persistent_workers: bool = True,
        group_by: Literal["chunk", "shard"] = "chunk",
        pool: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.stores, self.length, self.stride = stores, float(length), float(stride)
        self.target, self.labels, self.ch_types = target, labels, ch_types
        self.modality, self.task = modality, task
        self.gap = None if gap is None else float(gap)
        self.split = ContiguousBlocks(n_blocks=5, gap=self.gap) if split is None else split
        self.groups = groups
        self.fold, self.val_fold, self.normalize = fold, val_fold, normalize
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers, self.persistent_workers = num_workers, persistent_workers
        self.group_by, self.pool, self.seed = group_by, pool, seed
        self.train_dataset: WindowDataset | None = None
        self.val_dataset: WindowDataset | None = None
        self.test_dataset: WindowDataset | None = None
        self.normalizer: Normalizer | None = None
        self._loaded: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build the sample table, split it, fit the normaliser (once; later calls do nothing).

        Raises
        ------
        LeakageError
            If the split puts windows of one recording on both sides where the rule may not,
            or training windows closer than ``gap`` to evaluation windows.
        """
        if self.train_dataset is not None:
            return
        roots = [self.stores] if isinstance(self.stores, str | os.PathLike) else self.stores
        recs = open_recordings([p for root in roots for p in find_recordings(root)],
                               modality=self.modality, task=self.task)
        if not recs:
            raise ValueError(f"no recording found in {self.stores}")
        loaded = self._loaded or {}
        full = WindowDataset(recs, length=self.length, stride=self.stride, target=self.target,
                             labels=self.labels, classes=loaded.get("classes"),
                             ch_types=self.ch_types, subjects=loaded.get("subjects"),
                             sessions=loaded.get("sessions"))
        train, val, test = self._sides(full.table)
        within = bool(getattr(self.split, "within_recording", False))
        rule_gap = (self.split.resolve_gap(full.table) if hasattr(self.split, "resolve_gap")
                    else getattr(self.split, "gap", None))
        own = default_gap(full.table) if self.gap is None else self.gap  # the module's floor
        gap = max(own, float(rule_gap or 0.0)) if within else 0.0
        for other in (val, test):
            if other is not None:
                check_split(full.table, train, other, within_recording=within, gap=gap)
        if val is not None and np.intersect1d(val, test).size:
            raise ValueError("validation and test share windows; choose another val_fold")
        self.train_dataset = full.subset(train)
        self.val_dataset = None if val is None else full.subset(val)
        self.test_dataset = full.subset(test)
        if self.normalize is not None:
            self.normalizer = Normalizer(self.normalize)
            if "normalizer" in loaded:
                self.normalizer.load_state_dict(loaded["normalizer"])
            else:
                self.normalizer.fit(self.train_dataset)
            for ds in (self.train_dataset, self.val_dataset, self.test_dataset):
                if ds is not None:
                    ds.normalizer = self.normalizer

    def _sides(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Row indices of train, validation (or None) and test."""
        if isinstance(self.split, Mapping):
            unknown = sorted(set(self.split) - {"train", "val", "test"})
            if unknown or "train" not in self.split or "test" not in self.split:
                raise ValueError("explicit splits need 'train' and 'test' recording lists "
                                 f"(and optionally 'val'); got {sorted(self.split)}")
            known = set(table["recording"])
            sides = {}
            for name, stores in self.split.items():
                names = {str(Path(s)) for s in stores}
                if names - known:
                    raise ValueError(f"{name}: {sorted(names - known)[0]} is not among the "
                                     "recordings found")
                sides[name] = np.flatnonzero(table["recording"].isin(names).to_numpy())
            return sides["train"], sides.get("val"), sides["test"]
        folds = splitter_folds(self.split, table, groups=self.groups)
        if not -len(folds) <= self.fold < len(folds):
            raise ValueError(f"fold {self.fold} does not exist: the rule gives {len(folds)}")
        train, test = folds[self.fold]
        val_fold = self.val_fold
        if val_fold == "next":
            val_fold = (self.fold + 1) % len(folds) if len(folds) > 1 else None
        if val_fold is None:
            return train, None, test
        val_train, val = folds[val_fold]
        train = np.intersect1d(train, val_train)
        if not train.size:
            raise ValueError(f"folds {self.fold} (test) and {val_fold} (validation) leave no "
                             "training window; pass another val_fold or val_fold=None")
        return train, val, test

    def _loader(self, dataset: WindowDataset | None, **kwargs: Any) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() first")
        # the same channel count in every batch, whichever recordings it draws from
        collate = partial(collate_windows, n_channels=dataset.max_channels)
        return DataLoader(dataset, num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.persistent_workers and self.num_workers > 0,
                          **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Training batches from :class:`ChunkBatchSampler`."""
        sampler = None if self.train_dataset is None else ChunkBatchSampler(
            self.train_dataset, self.batch_size, group_by=self.group_by, pool=self.pool,
            seed=self.seed)
        return self._loader(self.train_dataset, batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Sequential validation batches (an empty list when there is no validation set)."""
        if self.train_dataset is not None and self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Sequential test batches."""
        return self._loader(self.test_dataset, batch_size=self.eval_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Normaliser statistics and index maps (JSON-serialisable), saved in checkpoints."""
        if self.train_dataset is None:
            return dict(self._loaded or {})
        state: dict[str, Any] = {"subjects": self.train_dataset.subjects,
                                 "sessions": self.train_dataset.sessions,
                                 "recordings": self.train_dataset.recordings,
                                 "classes": self.train_dataset.classes}
        if self.normalizer is not None:
            state["normalizer"] = self.normalizer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: the normaliser is loaded instead of fitted, and the
        subject, session and class indices are those the model was trained with (datasets
        already set up are rebuilt)."""
        if "normalizer" in state_dict and self.normalize is None:
            raise ValueError("this DataModule does not normalise (normalize=None)")
        self._loaded = dict(state_dict)
        if self.train_dataset is not None:
            self.train_dataset = self.val_dataset = self.test_dataset = None
            self.setup()
