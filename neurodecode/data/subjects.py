"""Per-subject samples for cross-subject models: arrays, channel positions, the sample table.

:class:`SubjectTrials` holds one subject's samples (trials or windows) in the layout every model
takes, ``X`` ``(n, time, channel)``, with their targets, sample-table rows (run, onset...) and
channel names and positions. :func:`by_subject` splits a :class:`~neurodecode.data.samples.Samples`
(from :func:`~neurodecode.data.samples.epochs` and friends, with their band-pass filters) into
subjects, each with its own channels. :class:`TrialDataset` serves several subjects' samples as
the items of :class:`~neurodecode.data.loader.WindowDataset` (``x``, ``y``, ``subject``, plus
``index``: the sample's row), collated by :func:`~neurodecode.data.loader.collate_windows` (which
pads channel counts), and :class:`SubjectMixingSampler` makes every batch draw from every subject.

The per-subject scaling (:class:`SubjectScaler`) is fitted on training samples only: each
subject's own training samples, a new subject's adaptation samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .loader import collate_windows
from .samples import Recording, Samples
from .stats import channel_stats

__all__ = [
    "SubjectMixingSampler",
    "SubjectScaler",
    "SubjectTrials",
    "TrialDataset",
    "by_subject",
    "channel_positions",
    "per_subject",
    "subject_loader",
]


@dataclass
class SubjectTrials:
    """One subject's samples.

    Attributes
    ----------
    subject : str
    X : ndarray
        float32 ``(n, n_times, n_channels)``.
    y : ndarray or None
        Class labels (str) or continuous targets (float, ``(n,)`` or ``(n, k)``).
    table : DataFrame
        One sample-table row per sample (``recording``, ``run``, ``start``, ``onset``...), in
        time order.
    ch_names : list of str
    positions : ndarray or None
        ``(n_channels, 3)`` channel positions in the recordings' frame (NaN where unknown).
    sfreq : float
    coord_frame : str
        Frame of ``positions``.
    keys : ndarray or None
        Values pairing samples across subjects (e.g. the image shown).
    regions : list of str or None
        Anatomical label of every channel (the stores' ``region``; ``""`` where unknown).
    """

    subject: str
    X: np.ndarray
    y: np.ndarray | None
    table: pd.DataFrame
    ch_names: list[str]
    positions: np.ndarray | None = None
    sfreq: float = 1.0
    coord_frame: str = "unknown"
    keys: np.ndarray | None = field(default=None, repr=False)
    regions: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.X.ndim != 3:
            raise ValueError(f"subject {self.subject}: X must be (n, time, channel), got "
                             f"shape {self.X.shape}")
        if len(self.table) != len(self.X) or (self.y is not None and len(self.y) != len(self.X)):
            raise ValueError(f"subject {self.subject}: X, y and table differ in length")
        if len(self.ch_names) != self.X.shape[2]:
            raise ValueError(f"subject {self.subject}: {len(self.ch_names)} channel names for "
                             f"{self.X.shape[2]} channels")
        if self.regions is not None and len(self.regions) != self.X.shape[2]:
            raise ValueError(f"subject {self.subject}: {len(self.regions)} region labels for "
                             f"{self.X.shape[2]} channels")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def n_channels(self) -> int:
        """Channels per sample."""
        return int(self.X.shape[2])

    @property
    def n_times(self) -> int:
        """Time steps per sample."""
        return int(self.X.shape[1])

    def select(self, index: Any) -> SubjectTrials:
        """The samples at ``index`` (integers or a boolean mask), in that order."""
        index = np.asarray(index)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(int)
        return SubjectTrials(
            self.subject, self.X[index], None if self.y is None else self.y[index],
            self.table.iloc[index].reset_index(drop=True), self.ch_names, self.positions,
            self.sfreq, self.coord_frame, None if self.keys is None else self.keys[index],
            self.regions)

    def first(self, n: int) -> SubjectTrials:
        """The first ``n`` samples in time (the "first minutes" of a new subject)."""
        return self.select(np.arange(min(int(n), len(self))))

    def fraction(self, fraction: float, *, min_samples: int = 1) -> SubjectTrials:
        """The first ``fraction`` of the samples in time (at least ``min_samples``)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        return self.first(max(min_samples, int(round(fraction * len(self)))))

    def duration(self) -> float:
        """Seconds spanned by the samples (sum over recordings of last stop - first start)."""
        t = self.table
        return float(sum(g["stop"].max() - g["start"].min() for _, g in t.groupby("recording")))

    def within(self, seconds: float) -> SubjectTrials:
        """The samples that end within the first ``seconds`` of recording time (runs in
        order, each counted from its first sample)."""
        t = self.table
        used, keep = 0.0, np.zeros(len(t), bool)
        for _, g in t.groupby("recording", sort=False):
            t0 = g["start"].min()
            ok = (g["stop"] - t0) <= seconds - used
            keep[g.index[ok.to_numpy()]] = True
            used += float(g["stop"].max() - t0)
            if used >= seconds:
                break
        return self.select(keep)

    def chronological(self, fractions: Sequence[float] = (0.7, 0.15, 0.15), *,
                      names: Sequence[str] = ("train", "val", "test"), gap: float = 0.0
                      ) -> dict[str, SubjectTrials]:
        """Contiguous blocks in time order (e.g. train, validation, test), with gaps.

        Parameters
        ----------
        fractions : sequence of float
            Share of the samples in each block (summing to 1).
        names : sequence of str
            Name of each block.
        gap : float
            Seconds left out between blocks: a sample of a later block starts at least
            ``gap`` seconds after the end of every sample of the block before it (within a
            recording; e.g. the hemodynamic response's length for fMRI).

        Returns
        -------
        dict of str to SubjectTrials
        """
        if len(fractions) != len(names) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError("fractions must sum to 1, one per name")
        edges = np.round(np.cumsum([0, *fractions]) * len(self)).astype(int)
        rec = self.table["recording"].to_numpy()
        start, stop = self.table["start"].to_numpy(), self.table["stop"].to_numpy()
        out = {}
        for k, name in enumerate(names):
            idx = np.arange(edges[k], edges[k + 1])
            if k and len(idx) and edges[k] > 0:
                before = np.arange(0, edges[k])
                ok = np.array([not np.any((rec[before] == rec[i])
                                          & (stop[before] + gap > start[i])) for i in idx])
                idx = idx[ok]
            out[name] = self.select(idx)
        return out

    def split(self, column: str = "split") -> dict[str, SubjectTrials]:
        """Samples grouped by a table column (e.g. the stored interval ``split``)."""
        return {str(v): self.select(self.table[column].to_numpy() == v)
                for v in pd.unique(self.table[column])}


def channel_positions(recording: Recording, ch_names: Sequence[str]
                      ) -> tuple[np.ndarray, str, list[str]]:
    """Positions ``(n, 3)`` of the named channels of a recording, its coordinate frame, and
    the channels' anatomical labels (``""`` where unknown)."""
    ds = recording.ds
    names = [str(v) for v in ds["channel"].values]
    where = {n: i for i, n in enumerate(names)}
    missing = [c for c in ch_names if c not in where]
    if missing:
        raise ValueError(f"{recording.id}: no channel(s) {missing[:5]}")
    idx = np.array([where[c] for c in ch_names], dtype=int)
    xyz = np.column_stack([np.asarray(ds[k].values, dtype=np.float64)[idx] for k in "xyz"])
    labels = ([str(v) for v in np.asarray(ds["region"].values)[idx]] if "region" in ds.coords
              else [""] * len(idx))
    return xyz, str(ds.attrs.get("coord_frame", "unknown")), labels


def by_subject(samples: Samples, recordings: Sequence[Recording] | None = None,
               ) -> dict[str, SubjectTrials]:
    """Split samples into subjects (each with its channels and, from ``recordings``, positions).

    Parameters
    ----------
    samples : Samples
        Trials or windows, ``X`` ``(n, channel, time)`` (or ``(n, channel)`` for time steps).
    recordings : sequence of Recording, optional
        The recordings the samples came from, for the channel positions.

    Returns
    -------
    dict of str to SubjectTrials
        Keyed by subject, samples in time order (recording, then start).
    """
    X = samples.X[:, :, None] if samples.X.ndim == 2 else samples.X
    X = np.ascontiguousarray(np.swapaxes(X, 1, 2), dtype=np.float32)
    by_rec = {r.id: r for r in recordings or ()}
    out = {}
    for subject in sorted(pd.unique(samples.table["subject"])):
        rows = np.flatnonzero(samples.table["subject"].to_numpy() == subject)
        order = np.lexsort((samples.table["start"].to_numpy()[rows],
                            samples.table["recording"].to_numpy()[rows]))
        rows = rows[order]
        positions, frame, regions = None, "unknown", None
        rec_id = str(samples.table["recording"].iloc[rows[0]])
        if rec_id in by_rec:
            positions, frame, regions = channel_positions(by_rec[rec_id], samples.ch_names)
        out[str(subject)] = SubjectTrials(
            str(subject), X[rows], None if samples.y is None else samples.y[rows],
            samples.table.iloc[rows].reset_index(drop=True), list(samples.ch_names), positions,
            samples.sfreq, frame, regions=regions)
    return out


def per_subject(recordings: Sequence[Recording], sample: Callable[..., Samples],
                keys: str | None = None, **kwargs: Any) -> dict[str, SubjectTrials]:
    """Samples of each subject, drawn from its own recordings (its own channels).

    Parameters
    ----------
    recordings : sequence of Recording
    sample : callable
        A sampling function of :mod:`neurodecode.data.samples` (``epochs``, ``windows``...).
    keys : str, optional
        A sample-table column whose values pair samples across subjects (e.g. ``"value"`` of
        the stimulus events: the image shown), stored as :attr:`SubjectTrials.keys`.
    **kwargs
        Passed to ``sample``.

    Returns
    -------
    dict of str to SubjectTrials
    """
    groups: dict[str, list[Recording]] = {}
    for rec in recordings:
        groups.setdefault(rec.identity["subject"], []).append(rec)
    out = {}
    for subject in sorted(groups):
        recs = groups[subject]
        trials = by_subject(sample(recs, **kwargs), recs)[subject]
        if keys is not None:
            trials.keys = trials.table[keys].to_numpy()
        out[subject] = trials
    return out


class SubjectScaler:
    """Per-subject, per-channel standardisation fitted on training samples only.

    Attributes
    ----------
    stats_ : dict of str to (mean, std)
        float32 ``(n_channels,)`` per subject.
    """

    def __init__(self) -> None:
        self.stats_: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def fit(self, trials: SubjectTrials) -> SubjectScaler:
        """Fit (or refit) the statistics of ``trials.subject`` on ``trials``."""
        if not len(trials):
            raise ValueError(f"subject {trials.subject}: no sample to fit the scaling on")
        mean, std = channel_stats(trials.X, channel_axis=-1)
        self.stats_[trials.subject] = (mean.astype(np.float32), std.astype(np.float32))
        return self

    def transform(self, trials: SubjectTrials) -> np.ndarray:
        """Standardised ``X`` of ``trials`` (float32)."""
        if trials.subject not in self.stats_:
            raise ValueError(f"subject {trials.subject}: no scaling fitted (fit it on the "
                             "subject's training samples first)")
        mean, std = self.stats_[trials.subject]
        return ((trials.X - mean) / std).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Plain lists, for a checkpoint."""
        return {s: {"mean": m.tolist(), "std": d.tolist()} for s, (m, d) in self.stats_.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.stats_ = {s: (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32))
                       for s, v in state.items()}


class TrialDataset(Dataset):
    """Several subjects' (scaled) samples as window items.

    Parameters
    ----------
    arrays : sequence of (subject_index, X, y)
        Per subject: its index in the model's subject list, ``X`` ``(n, time, channel)`` and
        targets (integer classes or float values; None for unlabelled samples).
    """

    def __init__(self, arrays: Sequence[tuple[int, np.ndarray, np.ndarray | None]]) -> None:
        self._x = [torch.as_tensor(np.ascontiguousarray(x, np.float32)) for _, x, _ in arrays]
        self._y = [None if y is None else torch.as_tensor(y) for _, _, y in arrays]
        self.subject_of = np.concatenate(
            [np.full(len(x), s, np.int64) for s, x, _ in arrays]) if arrays else np.zeros(0, int)
        self._part = np.concatenate(
            [np.full(len(x), k, np.int64) for k, (_, x, _) in enumerate(arrays)]
        ) if arrays else np.zeros(0, int)
        self._row = np.concatenate(
            [np.arange(len(x)) for _, x, _ in arrays]) if arrays else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self._row)

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, r = int(self._part[i]), int(self._row[i])
        item = {"x": self._x[k][r], "subject": int(self.subject_of[i]), "index": i}
        if self._y[k] is not None:
            item["y"] = self._y[k][r]
        return item


class SubjectMixingSampler(Sampler[list[int]]):
    """Batches that mix subjects: each batch takes an equal share from every subject.

    Each subject's samples are shuffled per epoch and dealt round-robin into batches, so with
    ``batch_size >= n_subjects`` every batch holds every subject (a subject with fewer samples
    is recycled, so a large subject does not crowd out a small one).

    Parameters
    ----------
    subject_of : ndarray of int
        Subject index of each item.
    batch_size : int
    seed : int
    """

    def __init__(self, subject_of: np.ndarray, batch_size: int, seed: int = 0) -> None:
        self.groups = [np.flatnonzero(subject_of == s) for s in np.unique(subject_of)]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        n = max((len(g) for g in self.groups), default=0) * len(self.groups)
        self._n_batches = max(1, int(np.ceil(n / self.batch_size))) if n else 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the order (called by the training loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        longest = max(len(g) for g in self.groups)
        # every subject contributes `longest` draws per epoch (smaller subjects recycled)
        streams = [np.resize(rng.permutation(g), longest) for g in self.groups]
        dealt = np.stack(streams, axis=1).ravel()  # round-robin over subjects
        for a in range(0, len(dealt), self.batch_size):
            yield dealt[a : a + self.batch_size].tolist()


def subject_loader(dataset: TrialDataset, n_channels: int, *, train: bool, batch_size: int,
                   seed: int = 0) -> DataLoader:
    """Batches of a :class:`TrialDataset`, channels padded to ``n_channels``.

    Training batches mix subjects (:class:`SubjectMixingSampler`); otherwise the samples come in
    order, in batches of at least 256.
    """
    collate = partial(collate_windows, n_channels=n_channels)
    if train:
        sampler = SubjectMixingSampler(dataset.subject_of, batch_size, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    return DataLoader(dataset, batch_size=max(batch_size, 256), shuffle=False,
                      collate_fn=collate)
