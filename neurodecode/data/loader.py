"""The deep-learning data path: windows read straight from recording stores into PyTorch.

:class:`WindowDataset` serves the sliding windows of a sample table (see
:func:`neurodecode.data.samples.window_table`) from one or many Zarr stores, with the targets of
:func:`neurodecode.data.samples.windows` and the identity (subject, session, recording) that
subject adapters need. Each worker process opens the stores itself, on first use, and reads a
window as one slice of the ``signal`` array. :class:`Normalizer` holds per-recording mean/std
fitted on the training windows only, streamed shard by shard.

Reading whole chunks beats reading random rows: :class:`ChunkBatchSampler` draws batches from a
few chunks at a time, and :meth:`WindowDataset.__getitems__` reads the windows of a batch that
share a chunk span with one Zarr read. :class:`WindowDataModule` wires it all into Lightning,
with a leakage-checked split rule from :mod:`neurodecode.data.splits`.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import zarr
from sklearn.model_selection import BaseCrossValidator
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..schema import as_str_array
from ..store import find_recordings
from .samples import Recording, label_at, label_map, open_recordings, pick_channels, target_at
from .samples import window_table as _window_table
from .splits import ContiguousBlocks, check_split

__all__ = [
    "ChunkBatchSampler",
    "Normalizer",
    "RandomBatchSampler",
    "WindowDataModule",
    "WindowDataset",
    "collate_windows",
]

#: Rows of float64 working memory per block when fitting a :class:`Normalizer` (whole shards are
#: read; this caps a block when shards are very long).
_FIT_BLOCK_ROWS = 1 << 17


class WindowDataset(Dataset):
    """Sliding windows of one or many recording stores, read lazily from Zarr.

    Item ``i`` is a dict: ``x`` (float32 tensor ``(n_channels, n_times)``, normalised when a
    :attr:`normalizer` is set), ``y`` (the target; absent when ``target`` is None), and the
    integer indices ``subject``, ``session`` and ``recording`` (into :attr:`subjects`,
    :attr:`sessions` and :attr:`recordings`). Recordings may have different channel counts and
    sampling rates: each sample has its own shape (see :func:`collate_windows`).

    Parameters
    ----------
    recordings : path-like or sequence
        A store root (every recording below it), store paths, or :class:`Recording` objects
        opened from stores. They define the index maps, also for windows absent from ``table``.
    length, stride : float
        Window length and step in seconds.
    table : DataFrame, optional
        Rows of ``window_table(recordings, length=length, stride=stride)`` to serve, e.g. one
        side of a split. Default: every window.
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

    Attributes
    ----------
    table : DataFrame
        The windows served, in item order.
    recordings, subjects, sessions : list of str
        Index maps of the identity fields.
    classes : list of str or None
        Class names (``target="events"``).
    ch_names : list of list of str
        Channel names per recording.
    chunk_rows, shard_rows : list of int
        Rows per Zarr chunk / shard of each recording's ``signal``.
    """

    def __init__(
        self,
        recordings: str | os.PathLike | Sequence[str | os.PathLike | Recording],
        *,
        length: float,
        stride: float,
        table: pd.DataFrame | None = None,
        target: str | None = None,
        labels: Sequence[str] | Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        ch_types: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
        sessions: Sequence[str] | None = None,
        normalizer: Normalizer | None = None,
    ) -> None:
        recs = _as_recordings(recordings)
        full = _window_table(recs, length=length, stride=stride)
        if table is None:
            table = full
        else:
            _check_rows(table, full)
        self.recordings = [r.path for r in recs]
        self.subjects = _index_names(subjects, (r.identity["subject"] for r in recs))
        self.sessions = _index_names(sessions, (_session(r) for r in recs))
        self.ch_names, self.chunk_rows, self.shard_rows = [], [], []
        self._picks: list[np.ndarray | None] = []
        rec_subject, rec_session = [], []
        mapping = label_map(labels)
        kept, ys = [], []
        for rec in recs:
            picks = pick_channels(rec, ch_types)
            names = as_str_array(rec.ds["channel"].values)
            self.ch_names.append(names[picks].tolist())
            self._picks.append(None if np.array_equal(picks, np.arange(len(names))) else picks)
            arr = zarr.open_array(Path(rec.path) / "signal", mode="r")
            self.chunk_rows.append(int(arr.chunks[0]))
            self.shard_rows.append(int((arr.shards or arr.chunks)[0]))
            rec_subject.append(self.subjects.index(rec.identity["subject"]))
            rec_session.append(self.sessions.index(_session(rec)))
            rows = table[table["recording"] == rec.path]
            end = rows["stop"].to_numpy() - 1.0 / rec.sfreq
            if target == "events":
                y = label_at(rec, end, mapping)
                ok = y != ""
                y = y[ok]
            elif target is not None:
                y, ok = target_at(rec, target, end), np.ones(len(rows), bool)
            else:
                y, ok = None, np.ones(len(rows), bool)
            kept.append(rows[ok])
            ys.append(y)
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
        self._rec = self.table["recording"].map(
            {p: i for i, p in enumerate(self.recordings)}).to_numpy(np.int64)
        self._first = self.table["first"].to_numpy(np.int64)
        self._n = self.table["n_samples"].to_numpy(np.int64)
        self._rec_subject = np.asarray(rec_subject, dtype=np.int64)
        self._rec_session = np.asarray(rec_session, dtype=np.int64)
        self.normalizer = normalizer
        self._arrays: dict[int, zarr.Array] = {}
        self._pid = os.getpid()

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
        out._rec, out._first, out._n = self._rec[rows], self._first[rows], self._n[rows]
        out._y = None if self._y is None else self._y[rows]
        out._arrays, out._pid = {}, os.getpid()
        return out

    @property
    def max_channels(self) -> int:
        """The largest channel count of the recordings."""
        return max(len(c) for c in self.ch_names)

    def read_span(self, recording: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a recording's kept channels with one Zarr read (no scaling).

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
        block = self._array(recording)[start:stop]
        picks = self._picks[recording]
        return block if picks is None else block[:, picks]

    def _array(self, recording: int) -> zarr.Array:
        """The ``signal`` array, opened once per process (handles do not survive a fork)."""
        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get(recording)
        if arr is None:
            arr = zarr.open_array(Path(self.recordings[recording]) / "signal", mode="r")
            self._arrays[recording] = arr
        return arr

    def _sample(self, i: int, block: np.ndarray) -> dict[str, Any]:
        """The item for window ``i`` from its (normalised) ``(time, channel)`` rows."""
        r = int(self._rec[i])
        item: dict[str, Any] = {"x": torch.from_numpy(np.ascontiguousarray(block.T))}
        if self._y is not None:
            item["y"] = torch.tensor(self._y[i])
        item.update(subject=int(self._rec_subject[r]), session=int(self._rec_session[r]),
                    recording=r)
        return item

    def _scaled(self, block: np.ndarray, recording: int) -> np.ndarray:
        if self.normalizer is None:
            return block
        return self.normalizer.transform(block, self.recordings[recording])

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = range(len(self))[i]
        r, first = int(self._rec[i]), int(self._first[i])
        block = self.read_span(r, first, first + int(self._n[i]))
        return self._sample(i, self._scaled(block, r))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Read a batch with one Zarr read per run of nearby windows of each recording.

        The windows of each recording are sorted by their first sample and merged into spans
        while the next window starts less than one chunk after the current span ends (reading
        the few rows between them costs at most one more chunk to decode); each span is read
        with a single slice and normalised once, and the windows are cut out of it. Batches of
        :class:`ChunkBatchSampler` thus cost a few reads; random batches fall back to about
        one read per window.

        Parameters
        ----------
        indices : sequence of int

        Returns
        -------
        list of dict
            The items, in the order of ``indices``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        out: list[dict[str, Any] | None] = [None] * len(idx)
        order = np.lexsort((self._first[idx], self._rec[idx]))
        pos = 0
        while pos < len(order):
            r = int(self._rec[idx[order[pos]]])
            merge = self.chunk_rows[r]
            span = [order[pos]]
            lo = int(self._first[idx[order[pos]]])
            hi = lo + int(self._n[idx[order[pos]]])
            pos += 1
            while pos < len(order):
                j = idx[order[pos]]
                if int(self._rec[j]) != r or int(self._first[j]) >= hi + merge:
                    break
                hi = max(hi, int(self._first[j] + self._n[j]))
                span.append(order[pos])
                pos += 1
            block = self._scaled(self.read_span(r, lo, hi), r)
            for k in span:
                i = int(idx[k])
                a = int(self._first[i]) - lo
                out[k] = self._sample(i, block[a:a + int(self._n[i])])
        return out  # type: ignore[return-value]


def _as_recordings(
    recordings: str | os.PathLike | Sequence[str | os.PathLike | Recording],
) -> list[Recording]:
    if isinstance(recordings, str | os.PathLike):
        recordings = open_recordings(recordings)
    recs = [r if isinstance(r, Recording) else open_recordings([r])[0] for r in recordings]
    if not recs:
        raise ValueError("no recording given")
    for r in recs:
        if not (Path(r.path) / "signal" / "zarr.json").is_file():
            raise ValueError(f"{r.path}: not a recording store; WindowDataset reads from stores")
    if len({r.path for r in recs}) != len(recs):
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
    """Collate window items, zero-padding ``x`` when shapes differ.

    Recordings with different channel counts (or window lengths) share a batch by zero-padding
    ``x`` to the largest ``(n_channels, n_times)``; ``n_channels`` and ``n_times`` give each
    sample's true size, and ``subject``/``session``/``recording`` let a model pick per-subject
    input weights (padded channels are zero after normalisation, so they add nothing to a linear
    adapter). Same-shape batches are simply stacked. Other fields use PyTorch's default collate.

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
        ``x`` ``(batch, max_channels, max_times)`` float32, ``n_channels`` and ``n_times``
        (int64), and every other field collated (``y``, ``subject``, ``session``, ...).
    """
    xs = [b["x"] for b in batch]
    shapes = torch.tensor([tuple(x.shape) for x in xs], dtype=torch.int64)
    c, t = (int(v) for v in shapes.max(dim=0).values)
    c = max(c, n_channels)
    xs = [x if tuple(x.shape) == (c, t)
          else torch.nn.functional.pad(x, (0, t - x.shape[1], 0, c - x.shape[0])) for x in xs]
    # default_collate stacks straight into shared memory in a worker (no copy when sent)
    out = {key: default_collate([b[key] for b in batch]) for key in batch[0] if key != "x"}
    return {"x": default_collate(xs), "n_channels": shapes[:, 0], "n_times": shapes[:, 1], **out}


class Normalizer:
    """Per-recording mean/std, fitted on training windows only and applied to every window.

    Statistics are those of the stacked training windows of each recording (a sample covered by
    several overlapping windows counts that many times, exactly as in ``X[train].mean(...)``),
    computed in a single streamed pass over whole shards with float64 accumulators merged
    block by block (Chan et al.), so a recording is never loaded whole. They are keyed by store
    path (the sample table's ``recording``). Recordings without training windows (a held-out
    subject) get the statistics pooled over all training recordings: per channel when these all
    have the same channel count (a recording with another count is then refused), else one
    mean/std. Flat channels (zero variance) are only centred.

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
        """Recordings (store paths) with their own statistics."""
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
                count, mean, m2 = _merge_channels(count, mean, m2)
            self._stats[dataset.recordings[r]] = (mean, _std(mean, m2 / count))
        moments = list(per_rec.values())
        if self.per == "channel" and len({m[1].size for m in moments}) == 1:
            pooled = _merge(moments)
        else:
            pooled = _merge([_merge_channels(*m) for m in moments])
        self._pooled = (pooled[1], _std(pooled[1], pooled[2] / pooled[0]))
        return self

    def stats(self, recording: str, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std applied to a recording.

        Parameters
        ----------
        recording : str
            Store path (the sample table's ``recording``).
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
            Store path of the recording the block comes from.

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
    step = min(dataset.shard_rows[r], _FIT_BLOCK_ROWS)
    lo, hi = int(firsts[0]), int(ends[-1])
    moments = []
    for a in range((lo // step) * step, hi, step):
        a, b = max(a, lo), min(a + step, hi)
        t = np.arange(a, b)
        w = (np.searchsorted(firsts, t, side="right")
             - np.searchsorted(ends, t, side="right")).astype(np.float64)
        count = float(w.sum())
        if count == 0:
            continue
        x = dataset.read_span(r, a, b).astype(np.float64)
        mean = w @ x / count
        x -= mean
        np.square(x, out=x)
        moments.append((count, mean, w @ x))
    return _merge(moments)


def _merge(moments: Sequence[tuple[float, np.ndarray, np.ndarray]]
           ) -> tuple[float, np.ndarray, np.ndarray]:
    """Combine (count, mean, M2) of disjoint parts (Chan et al.'s parallel update)."""
    count, mean, m2 = moments[0]
    for c, m, s in moments[1:]:
        total = count + c
        delta = m - mean
        mean = mean + delta * (c / total)
        m2 = m2 + s + np.square(delta) * (count * c / total)
        count = total
    return count, mean, m2


def _merge_channels(count: float, mean: np.ndarray, m2: np.ndarray
                    ) -> tuple[float, np.ndarray, np.ndarray]:
    """Pool the per-channel moments of one recording into one."""
    return _merge([(count, mean[k:k + 1], m2[k:k + 1]) for k in range(mean.size)])


def _std(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Standard deviation, 1 where a channel is flat (it is then only centred)."""
    std = np.sqrt(np.maximum(var, 0.0))
    flat = std <= 1e-6 * np.abs(mean) + np.finfo(np.float32).tiny
    return np.where(flat, 1.0, std)


class _EpochSampler(Sampler[list[int]], ABC):
    """Batches whose order depends on ``(seed, epoch)``; each iteration advances the epoch."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.n, self.batch_size, self.drop_last, self.seed = n, batch_size, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration."""
        self.epoch = epoch

    @abstractmethod
    def _order(self, rng: np.random.Generator) -> np.ndarray:
        """Every position once, in the order of this epoch."""

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch advances on the first batch drawn, not when DataLoader calls
        # iter() and throws the iterator away (it does so once on its first epoch).
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = self._order(rng)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)


class ChunkBatchSampler(_EpochSampler):
    """Shuffled batches that each touch only a few chunks of the stores.

    Windows are grouped by recording and by the chunk (or shard) holding their first sample.
    Each epoch shuffles the order of the groups (seeded by ``seed`` and the epoch) and gathers
    them, in that order, into pools of ``pool`` groups (more when these hold fewer than
    ``batch_size`` windows, e.g. the short last chunk of a recording); it shuffles the windows
    within each pool and cuts the resulting sequence into batches. A batch thus draws from at
    most two consecutive pools, and :meth:`WindowDataset.__getitems__` reads it in a few slices
    instead of one per window. Every window is served once per epoch.

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
        Leave out the last, incomplete batch.
    seed : int
        Seed of the shuffles (combined with the epoch).
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
    ) -> None:
        super().__init__(len(dataset), batch_size, drop_last, seed)
        if group_by not in ("chunk", "shard"):
            raise ValueError(f"group_by must be 'chunk' or 'shard', got {group_by!r}")
        if pool < 1:
            raise ValueError(f"pool must be at least 1, got {pool}")
        self.pool = pool
        rows = np.asarray(dataset.chunk_rows if group_by == "chunk" else dataset.shard_rows)
        block = dataset._first // rows[dataset._rec]
        _, group = np.unique(np.stack([dataset._rec, block]), axis=1, return_inverse=True)
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
    """Uniformly shuffled batches (every window once per epoch), for comparison.

    Parameters
    ----------
    dataset : WindowDataset or int
        The dataset, or its length.
    batch_size : int
    drop_last : bool
    seed : int
        Seed of the shuffles (combined with the epoch).
    """

    def __init__(self, dataset: WindowDataset | int, batch_size: int, *,
                 drop_last: bool = False, seed: int = 0) -> None:
        super().__init__(dataset if isinstance(dataset, int) else len(dataset), batch_size,
                         drop_last, seed)

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.n)


class WindowDataModule(L.LightningDataModule):
    """Windows of recording stores, split without leakage, for Lightning.

    :meth:`setup` builds the sample table of every window, splits it with the rule (checked by
    :func:`neurodecode.data.splits.check_split`: training windows must lie at least ``gap``
    seconds from validation and test windows of the same recording, and rules that split
    recordings may not share one between sides), fits the :class:`Normalizer` on the training
    windows only and builds the three :class:`WindowDataset`. Training batches come from
    :class:`ChunkBatchSampler`; validation and test batches are sequential.

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
    split : split rule or mapping, optional
        A rule of :mod:`neurodecode.data.splits` (e.g. ``LeaveOneGroupOut("run")``), or explicit
        recording lists ``{"train": [...], "val": [...], "test": [...]}`` (``val`` optional).
        Default ``ContiguousBlocks(n_blocks=5, gap=gap)``.
    fold : int
        Fold of the rule used for testing.
    val_fold : int, "next" or None
        Fold of the same rule used for validation; training keeps the windows that are on the
        training side of both folds. ``"next"``: ``fold + 1`` (cyclically) when the rule has
        more than one fold, else no validation set. None: no validation set.
    gap : float, optional
        Minimum seconds between training and evaluation windows of one recording; default the
        window length.
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
        split: BaseCrossValidator | Mapping[str, Sequence[str | os.PathLike]] | None = None,
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
        self.gap = self.length if gap is None else float(gap)
        self.split = ContiguousBlocks(n_blocks=5, gap=self.gap) if split is None else split
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
        gap = max(self.gap, float(getattr(self.split, "gap", 0.0))) if within else 0.0
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
        folds = list(self.split.split(groups=table))
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
