"""The real decoding tasks of spike-token pretraining: token windows with labels and blocks.

Each function reads one dataset's stores (as the catalog ingestion writes them, see
``benchmarks/real_data.py``) and returns a :class:`SpikeTask`: the events of the recording as
one sorted stream (``times``, ``units`` indexing ``unit_keys``), the start of every labelled
window, its label, and its contiguous block for leave-one-block-out evaluation:

==========================  =================  =============================================
task                        metric             windows (current / past / dt)
==========================  =================  =============================================
:func:`linear_track`        r2                 rat (x, y) position, 31 units, the first 985 s
                                               (the tracker is stuck afterwards), running only
                                               (speed > 20 px/s): 0.5 s / 1.0 s / 10 ms every
                                               250 ms
:func:`golub_directions`    balanced_accuracy  8 cursor-to-target directions, 86 M1 units,
                                               one window per 45 ms bin of the binned counts
                                               (one event per count, at the bin centre): 45 ms
                                               / none / 45 ms
:func:`calcium_speed`       r2                 mouse running speed from 41 ROIs (quantised
                                               ΔF/F rises), 0.3 s (3 frames) / 0.5 s / 0.1 s
                                               every frame
==========================  =================  =============================================

Blocks: every *segment* (the whole span of a recording; for Golub each trial cell, since its
time axis runs through the cells end to end and each cell holds one direction) is cut into
``n_blocks`` equal pieces in time, piece ``k`` of every segment forming block ``k``. A window
whose span ``[start - past, start + window)`` crosses a piece boundary or comes within ``gap``
of one (or leaves its segment) is dropped, so spans of different blocks are at least
``2 * gap`` apart. :class:`BlockFolds` turns the blocks into leave-one-block-out folds that
:func:`neurodecode.evaluate.cross_validate` checks for leakage on the sample table of
:meth:`SpikeTask.table` (spans as ``start``/``stop``); :func:`baseline_scores` runs the
project's ridge / KNN (regression) and LDA / KNN (classification) baselines on square-root
spike counts of the same windows and blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from ..schema import events_frame
from .samples import Recording, label_at, open_recordings, target_at
from .splits import SplitChecker, SplitRule
from .tokens import SpikeTokenizer, TokenWindows, UnitVocabulary, recording_events, unit_keys

__all__ = [
    "BlockFolds",
    "SpikeTask",
    "baseline_scores",
    "calcium_speed",
    "contiguous_blocks",
    "golub_directions",
    "linear_track",
    "window_counts",
]

#: A store root (the dataset's folder below it is read) or in-memory recordings.
Stores = str | os.PathLike | Sequence[xr.Dataset]

#: The tracker of the rat linear track is stuck after this time (s); see benchmarks/real_data.
TRACK_TRACKED_S = 985.0
#: Running epochs of the rat (px/s), as in the project's ridge/KNN baselines.
TRACK_MIN_SPEED = 20.0


@dataclass
class SpikeTask:
    """A decoding task as token windows of one event stream, with labels and blocks.

    Attributes
    ----------
    name : str
        Task name (also the sample table's ``recording``: the stream is one time line).
    metric : {"r2", "balanced_accuracy"}
        How predictions are scored.
    times : ndarray of float64, shape (n_events,)
        Sorted event (spike) times of the stream (s).
    units : ndarray of int64, shape (n_events,)
        Index of each event's unit in ``unit_keys``.
    unit_keys : list of str
        One key per unit (:func:`neurodecode.data.tokens.unit_keys`); map them to token ids
        with a :class:`~neurodecode.data.tokens.UnitVocabulary`.
    starts : ndarray of float64, shape (n_windows,)
        Start of each labelled current window (s).
    y : ndarray, shape (n_windows,) or (n_windows, n_targets)
        Label of each window: float targets (``r2``) or class names (``balanced_accuracy``).
    blocks : ndarray of int64, shape (n_windows,)
        Contiguous block of each window, ``0 .. n_blocks - 1``.
    window, past, dt : float
        Current window, past window and token time bin (s).
    covariates : ndarray, optional
        Per-window behaviour covariates for the model (None: none).
    modality : str
        ``"spikes"`` or ``"calcium"`` (the sample table's ``modality``: sets minimum gaps).
    gap : float
        Seconds kept between every window span and a block boundary.
    whole_run_steps : str
        Ingest steps that cleaned the whole recording (calcium ΔF/F), for the leakage warning.
    segments : ndarray of int64, shape (n_windows,), optional
        Segment (a contiguous span of real time: the recording, or a Golub trial cell) of each
        window; None: one segment. Few-shot budgets take the earliest labelled time of every
        segment (:meth:`table`'s ``segment``), as the blocks take a piece of each.
    unlabelled_starts, unlabelled_blocks : ndarray, optional
        Starts and blocks of every window of the recording on the task's grid, labelled or not
        (e.g. the rat's windows at rest too): the unlabelled activity a pretraining may use,
        block by block. None: the labelled windows (``starts``, ``blocks``).
    """

    name: str
    metric: Literal["r2", "balanced_accuracy"]
    times: np.ndarray
    units: np.ndarray
    unit_keys: list[str]
    starts: np.ndarray
    y: np.ndarray
    blocks: np.ndarray
    window: float
    past: float
    dt: float
    covariates: np.ndarray | None = None
    modality: str = "spikes"
    gap: float = 0.0
    whole_run_steps: str = ""
    segments: np.ndarray | None = None
    unlabelled_starts: np.ndarray | None = None
    unlabelled_blocks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.segments is None:
            self.segments = np.zeros(len(self.starts), dtype=np.int64)
        self.segments = np.asarray(self.segments, dtype=np.int64)
        if self.segments.shape != (len(self.starts),):
            raise ValueError(f"segments has shape {self.segments.shape}; one per window "
                             f"({len(self.starts)}) needed")
        if (self.unlabelled_starts is None) != (self.unlabelled_blocks is None):
            raise ValueError("give unlabelled_starts and unlabelled_blocks together")
        if self.unlabelled_starts is None:
            self.unlabelled_starts, self.unlabelled_blocks = self.starts, self.blocks
        if np.shape(self.unlabelled_starts) != np.shape(self.unlabelled_blocks):
            raise ValueError("unlabelled_starts and unlabelled_blocks differ in shape")

    def unlabelled(self, blocks: Sequence[int]) -> np.ndarray:
        """Starts of the grid's windows (labelled or not) in ``blocks``, in time order."""
        keep = np.isin(self.unlabelled_blocks, np.asarray(blocks))
        return np.sort(np.asarray(self.unlabelled_starts)[keep])

    def __len__(self) -> int:
        return len(self.starts)

    def __repr__(self) -> str:
        return (f"SpikeTask({self.name!r}, {len(self)} windows, {len(self.unit_keys)} units, "
                f"{len(self.times)} events, window={self.window}, past={self.past}, "
                f"dt={self.dt}, blocks={np.bincount(self.blocks).tolist()})")

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return int(self.blocks.max()) + 1 if len(self.blocks) else 0

    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        """What each window touches, ``[start - past, start + window)``."""
        return self.starts - self.past, self.starts + self.window

    def table(self) -> pd.DataFrame:
        """The sample table of the windows (spans as ``start``/``stop``, and ``block``)."""
        start, stop = self.spans()
        return pd.DataFrame({
            "recording": self.name, "subject": "", "session": "", "run": "",
            "modality": self.modality, "whole_run_steps": self.whole_run_steps,
            "start": start, "stop": stop, "block": self.blocks, "segment": self.segments,
        })

    def tokenizer(self, max_tokens: int | None = None, max_past: int | None = None
                  ) -> SpikeTokenizer:
        """A tokenizer of the task's geometry; by default one that truncates no window."""
        cur = window_counts(self, "current").sum(axis=1)
        past = window_counts(self, "past").sum(axis=1) if self.past > 0 else np.zeros(1)
        return SpikeTokenizer(
            self.window, self.past, self.dt,
            max_tokens=max_tokens or max(1, int(cur.max(initial=0))),
            max_past=max_past if max_past is not None else int(past.max(initial=0)),
        )

    def tokens(self, vocab: UnitVocabulary, tokenizer: SpikeTokenizer | None = None
               ) -> TokenWindows:
        """Token windows of the labelled windows, unit ids from ``vocab`` (grown if needed)."""
        ids = vocab.add(self.unit_keys)
        tok = tokenizer or self.tokenizer()
        return tok(self.times, ids[self.units], self.starts)


def contiguous_blocks(span_start: np.ndarray, span_stop: np.ndarray,
                      segments: Sequence[tuple[float, float]], n_blocks: int = 5,
                      gap: float = 0.0) -> np.ndarray:
    """Block of each window span: piece ``k`` of every segment, or -1 (dropped).

    Parameters
    ----------
    span_start, span_stop : ndarray of float64
        What each window touches, ``[start - past, start + window)``.
    segments : sequence of (float, float)
        Disjoint ``[start, stop)`` spans of real, contiguous time (a recording, a trial cell).
    n_blocks : int
        Pieces per segment (equal lengths).
    gap : float
        Seconds a span must keep from every piece boundary inside a segment.

    Returns
    -------
    ndarray of int64
        ``0 .. n_blocks - 1``, or -1 for a span outside every segment, across a boundary or
        within ``gap`` of one.
    """
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be >= 2, got {n_blocks}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    lo = np.asarray(span_start, dtype=np.float64)
    hi = np.asarray(span_stop, dtype=np.float64)
    if lo.shape != hi.shape or np.any(hi < lo):
        raise ValueError("span_start and span_stop must have one shape, with stop >= start")
    out = np.full(len(lo), -1, dtype=np.int64)
    for a, b in segments:
        if not b > a:
            raise ValueError(f"segment [{a}, {b}) is empty")
        edges = np.linspace(a, b, n_blocks + 1)
        inside = (lo >= a) & (hi <= b)
        k = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, n_blocks - 1)
        left = np.where(k > 0, edges[k] + gap, a)
        right = np.where(k < n_blocks - 1, edges[k + 1] - gap, b)
        ok = inside & (lo >= left) & (hi <= right) & (out < 0)
        out[ok] = k[ok]
    return out


@dataclass
class BlockFolds(SplitRule):
    """Leave one block out: fold ``k`` tests on the windows of block ``k`` (column ``block``).

    Parameters
    ----------
    gap : float
        Seconds checked between training and test spans (by :class:`SplitChecker`); the blocks
        of :func:`contiguous_blocks` with its ``gap`` keep ``2 * gap``.
    """

    gap: float | None = 0.0
    within_recording = True

    def _folds(self, samples: pd.DataFrame, gap: float, checker: SplitChecker
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if "block" not in samples.columns:
            raise ValueError("BlockFolds needs a 'block' column in the sample table")
        block = samples["block"].to_numpy()
        values = np.unique(block)
        if len(values) < 2:
            raise ValueError(f"leave-one-block-out needs at least 2 blocks, got {len(values)}")
        for v in values:
            test = np.flatnonzero(block == v)
            train = np.flatnonzero(block != v)
            train = train[~checker.near(train, test, gap)]
            if train.size:
                yield train, test


def window_counts(task: SpikeTask, side: Literal["current", "past"] = "current") -> np.ndarray:
    """Events per unit in each window's current ``[s, s + window)`` or past ``[s - past, s)``.

    Returns
    -------
    ndarray of float64, shape (n_windows, n_units)
    """
    if side == "current":
        lo, hi = task.starts, task.starts + task.window
    elif side == "past":
        lo, hi = task.starts - task.past, task.starts
    else:
        raise ValueError(f"side must be 'current' or 'past', got {side!r}")
    n_units = len(task.unit_keys)
    out = np.zeros((len(task.starts), n_units), dtype=np.float64)
    order = np.argsort(task.units, kind="stable")
    bounds = np.searchsorted(task.units[order], np.arange(n_units + 1))
    for u in range(n_units):
        t = task.times[order[bounds[u]:bounds[u + 1]]]  # sorted: a stable sort of sorted times
        out[:, u] = np.searchsorted(t, hi, side="left") - np.searchsorted(t, lo, side="left")
    return out


def baseline_scores(task: SpikeTask, *, features: Sequence[str] = ("current", "current+past"),
                    n_neighbors: int = 15, n_permutations: int = 0, n_jobs: int = 1
                    ) -> list[dict]:
    """The project's baselines on the task's windows, leave-one-block-out.

    Regression (``r2``): :func:`~neurodecode.evaluate.baselines.ridge` and
    :func:`~neurodecode.evaluate.baselines.knn`; classification: shrinkage
    :func:`~neurodecode.evaluate.baselines.lda` and KNN — on square-root spike counts of the
    current window (``"current"``), with those of the past window appended
    (``"current+past"``).

    Parameters
    ----------
    task : SpikeTask
    features : sequence of {"current", "current+past"}
    n_neighbors : int
        KNN's ``k``.
    n_permutations : int
        Label permutations for a chance level (circular shifts for regression, shuffles within
        the stream for classes); 0: none.
    n_jobs : int
        Processes of the cross-validation.

    Returns
    -------
    list of dict
        ``{task, estimator, features, metric, score, std, chance, n_windows, n_folds}``.
    """
    from ..evaluate import baselines
    from ..evaluate.cv import cross_validate

    if task.metric == "r2":
        estimators = {"ridge": baselines.ridge(), "knn": baselines.knn(n_neighbors, "regression")}
        scheme = "circular_shift"
    elif task.metric == "balanced_accuracy":
        estimators = {"lda": baselines.lda(), "knn": baselines.knn(n_neighbors)}
        scheme = "within"
    else:
        raise ValueError(f"unknown metric {task.metric!r}")
    cur = np.sqrt(window_counts(task, "current"))
    table = task.table()
    rows = []
    for feat in features:
        if feat == "current":
            X = cur
        elif feat == "current+past":
            if task.past <= 0:
                continue
            X = np.hstack([cur, np.sqrt(window_counts(task, "past"))])
        else:
            raise ValueError(f"features must be 'current' or 'current+past', got {feat!r}")
        for est_name, est in estimators.items():
            res = cross_validate(est, X, task.y, table, BlockFolds(gap=2 * task.gap),
                                 metrics=(task.metric,), n_permutations=n_permutations,
                                 permutation=scheme, n_jobs=n_jobs)
            r = res.summary.set_index("metric").loc[task.metric]
            rows.append({"task": task.name, "estimator": est_name, "features": feat,
                         "metric": task.metric, "score": float(r["mean"]),
                         "std": float(r["std"]), "chance": float(r["chance"]),
                         "n_windows": len(task), "n_folds": int(res.folds["fold"].nunique())})
    return rows


def _recordings(stores: Stores, dataset: str) -> list[Recording]:
    """The recordings of ``dataset`` under a store root, or the given in-memory ones."""
    if not isinstance(stores, str | os.PathLike):
        recs = open_recordings(list(stores))
        if not recs:
            raise ValueError(f"no recording given for {dataset}")
        return recs
    root = Path(stores) / dataset
    if not root.is_dir():
        raise FileNotFoundError(f"no stores of {dataset} at {root}; write them first "
                                "(benchmarks/real_data.py: ingest())")
    recs = open_recordings(root)
    if not recs:
        raise FileNotFoundError(f"{root} holds no recording")
    return recs


def _grid(first: float, last: float, stride: float) -> np.ndarray:
    n = int(np.floor((last - first) / stride + 1e-9)) + 1
    return first + stride * np.arange(max(n, 0), dtype=np.float64)


def linear_track(stores: Stores, *, window: float = 0.5, past: float = 1.0,
                 dt: float = 0.01, stride: float = 0.25, n_blocks: int = 5, gap: float = 1.0,
                 min_speed: float = TRACK_MIN_SPEED, t_stop: float = TRACK_TRACKED_S
                 ) -> SpikeTask:
    """Rat (x, y) position on the linear track (pixels) from 31 units' exact spike times.

    The label is the position at the current window's last behaviour sample (its end), the
    windows those where the speed there exceeds ``min_speed`` px/s, within the first
    ``t_stop`` s. One segment (the tracked span), ``n_blocks`` blocks. Every window of the grid
    inside a block, running or not, is in ``unlabelled_starts`` (for pretraining).

    Parameters
    ----------
    stores : path-like or sequence of xarray.Dataset
        The store root (``<stores>/nelpy_linear_track`` is read) or the recording itself.
    window, past, dt, stride : float
        Current window, past window, token bin and step between window starts (s).
    n_blocks : int
        Contiguous blocks in time.
    gap : float
        Seconds between any window span and a block boundary.
    min_speed : float
        Windows whose speed at the end is at most this (px/s) are left out.
    t_stop : float
        End of the tracked span (s).

    Returns
    -------
    SpikeTask
    """
    if not (window > 0 and dt > 0 and stride > 0 and past >= 0):
        raise ValueError(f"window ({window}), dt ({dt}) and stride ({stride}) must be > 0 and "
                         f"past ({past}) >= 0")
    rec = _recordings(stores, "nelpy_linear_track")[0]
    times, units, _ = recording_events(rec)
    t = rec.ds["time"].values
    t0, t1 = float(t[0]), min(float(t_stop), float(t[-1]) + 1.0 / rec.sfreq)
    keep = (times >= t0) & (times < t1)
    starts = _grid(t0 + past, t1 - window, stride)
    end = starts + window - 1.0 / rec.sfreq
    y = target_at(rec, "position", end)
    running = target_at(rec, "speed", end) > min_speed
    blocks = contiguous_blocks(starts - past, starts + window, [(t0, t1)], n_blocks, gap)
    ok = running & (blocks >= 0)
    inside = blocks >= 0
    return SpikeTask("linear_track_position", "r2", times[keep], units[keep], unit_keys(rec),
                     starts[ok], y[ok], blocks[ok], window, past, dt, modality="spikes",
                     gap=gap, unlabelled_starts=starts[inside],
                     unlabelled_blocks=blocks[inside])


def golub_directions(stores: Stores, *, past_bins: int = 0, n_blocks: int = 5,
                     gap_bins: int = 1, separation: float = 10.0) -> SpikeTask:
    """Cursor-to-target direction (8 classes) from 86 M1 units' binned counts (45 ms).

    Both runs (before and after learning; one session, so the same unit keys) are put on one
    time line, the second shifted by the first's duration plus ``separation`` s. Every count
    becomes events at its bin's centre (:func:`~neurodecode.data.tokens.events_from_counts`),
    and each bin is one window (``window = dt = bin``; ``past_bins`` bins of past), labelled
    with the direction of its trial cell. Each cell is one segment cut into ``n_blocks``
    pieces (so every block holds every direction); spans keep ``gap_bins`` bins from piece
    boundaries and never leave their cell.

    Parameters
    ----------
    stores : path-like or sequence of xarray.Dataset
        The store root (``<stores>/golub_bci`` is read) or the recordings (runs of one
        session, binned alike).
    past_bins : int
        Bins of past window.
    n_blocks : int
        Pieces per trial cell.
    gap_bins : int
        Bins between any window span and a piece boundary.
    separation : float
        Seconds between the runs on the common time line.

    Returns
    -------
    SpikeTask
    """
    if past_bins < 0 or gap_bins < 0:
        raise ValueError(f"past_bins ({past_bins}) and gap_bins ({gap_bins}) must be >= 0")
    recs = _recordings(stores, "golub_bci")
    keys = unit_keys(recs[0])
    all_t, all_u, all_s, all_y, segments = [], [], [], [], []
    offset = 0.0
    bin_s = 1.0 / recs[0].sfreq
    for rec in recs:
        if unit_keys(rec) != keys:
            raise ValueError(f"{rec.id}: its units differ from those of {recs[0].id}")
        if abs(1.0 / rec.sfreq - bin_s) > 1e-9:
            raise ValueError(f"{rec.id}: bins of {1.0 / rec.sfreq} s, not {bin_s} s")
        times, units, _ = recording_events(rec)
        t = np.asarray(rec.ds["time"].values, dtype=np.float64)
        labels = label_at(rec, t + bin_s / 2, None)
        ev = events_frame(rec.ds)
        segments += [(offset + a, offset + a + d) for a, d in zip(ev["onset"], ev["duration"],
                                                                   strict=True)]
        has = labels != ""
        all_t.append(times + offset)
        all_u.append(units)
        all_s.append(t[has] + offset)
        all_y.append(labels[has])
        offset += float(t[-1]) + bin_s + separation
    starts = np.concatenate(all_s)
    y = np.concatenate(all_y).astype(str)
    window, past = bin_s, past_bins * bin_s
    # spans are whole bins: shrink them by a hair so that float sums do not cross boundaries
    eps = 1e-6 * bin_s
    blocks = contiguous_blocks(starts - past + eps, starts + window - eps, segments, n_blocks,
                               gap_bins * bin_s - 2 * eps if gap_bins else 0.0)
    ok = blocks >= 0
    # the cell of each kept window (blocks >= 0: inside exactly one of the disjoint cells)
    cell_starts = np.sort([a for a, _ in segments])
    cell = np.searchsorted(cell_starts, starts - past + eps, side="right") - 1
    times = np.concatenate(all_t)
    order = np.argsort(times, kind="stable")
    return SpikeTask("golub_directions", "balanced_accuracy", times[order],
                     np.concatenate(all_u)[order], keys, starts[ok], y[ok], blocks[ok], window,
                     past, bin_s, modality="spikes", gap=gap_bins * bin_s, segments=cell[ok])


def calcium_speed(stores: Stores, *, frames: int = 3, past_frames: int = 5,
                  n_blocks: int = 5, gap: float = 1.0) -> SpikeTask:
    """Mouse running speed from 41 ROIs' quantised ΔF/F rises (10 Hz, 500 frames).

    Events: :func:`~neurodecode.data.tokens.calcium_events` at frame times. A window starts
    at every frame with ``frames`` frames of current window and ``past_frames`` of past
    (``dt`` = one frame); its label is the speed at its last frame. ``gap`` is 1 s on each
    side of a block boundary: 2 s between blocks, the calcium minimum of the split rules.

    Parameters
    ----------
    stores : path-like or sequence of xarray.Dataset
        The store root (``<stores>/svoboda_mouse_s1`` is read) or the recording itself.
    frames, past_frames : int
        Frames of current and past window.
    n_blocks : int
        Contiguous blocks in time.
    gap : float
        Seconds between any window span and a block boundary.

    Returns
    -------
    SpikeTask
    """
    if frames < 1 or past_frames < 0:
        raise ValueError(f"frames ({frames}) must be >= 1 and past_frames ({past_frames}) >= 0")
    rec = _recordings(stores, "svoboda_mouse_s1")[0]
    times, units, _ = recording_events(rec)
    frame = 1.0 / rec.sfreq
    t = np.asarray(rec.ds["time"].values, dtype=np.float64)
    window, past = round(frames * frame, 12), round(past_frames * frame, 12)
    # starts on frame times; spans shrunk by a hair (events sit exactly on frame times)
    first, last = past_frames, len(t) - frames
    starts = t[first:last + 1]
    eps = 1e-6 * frame
    t0, t1 = float(t[0]), float(t[-1]) + frame
    blocks = contiguous_blocks(starts - past + eps, starts + window - eps, [(t0, t1)], n_blocks,
                               gap)
    y = target_at(rec, "running_speed", starts + window - frame)
    ok = blocks >= 0
    return SpikeTask("calcium_running_speed", "r2", times, units, unit_keys(rec), starts[ok],
                     y[ok], blocks[ok], window, past, frame, modality="calcium", gap=gap,
                     whole_run_steps=rec.whole_run_steps)
