"""Leakage-safe split rules: by run, session or subject, stored intervals, contiguous blocks.

Every sample (a trial, a window or a time step) is described by one row of a *sample table*
(:class:`pandas.DataFrame`) with at least the columns ``recording`` (store path or label),
``subject``, ``session``, ``run``, ``start`` and ``stop`` (seconds within its recording). Rules
split sample tables, never arrays, so that they can check what they produce:
:func:`check_split` refuses a split that puts samples of one recording on both sides, or that
puts a training sample within ``gap`` seconds of a test sample of the same recording.

Each rule is also a scikit-learn cross-validator (``split(X, y, groups)`` with the sample table
as ``groups``), so it plugs into :func:`sklearn.model_selection.cross_validate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator

__all__ = [
    "ContiguousBlocks",
    "LeakageError",
    "LeaveOneGroupOut",
    "StoredIntervals",
    "SAMPLE_COLUMNS",
    "WithinRecordingShuffle",
    "check_split",
]

#: Columns every sample table has.
SAMPLE_COLUMNS = ("recording", "subject", "session", "run", "start", "stop")


class LeakageError(ValueError):
    """A split would let the test set leak into training."""


def _as_table(groups: Any) -> pd.DataFrame:
    if not isinstance(groups, pd.DataFrame):
        raise TypeError(
            "split rules need the sample table (a DataFrame with columns "
            f"{SAMPLE_COLUMNS}) as `groups`, got {type(groups).__name__}"
        )
    missing = [c for c in SAMPLE_COLUMNS if c not in groups.columns]
    if missing:
        raise ValueError(f"sample table lacks column(s) {missing}")
    return groups.reset_index(drop=True)


def check_split(
    samples: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    *,
    within_recording: bool = False,
    gap: float = 0.0,
) -> None:
    """Refuse splits that leak test data into training.

    Parameters
    ----------
    samples : DataFrame
        The sample table.
    train, test : ndarray of int
        Row indices of each side.
    within_recording : bool
        Whether the rule may put samples of one recording on both sides (contiguous blocks,
        stored intervals). Then every training sample must lie at least ``gap`` seconds away from
        every test sample of the same recording.
    gap : float
        Minimum distance in seconds between training and test samples of one recording.

    Raises
    ------
    LeakageError
        Naming the recording and the offending samples.
    """
    samples = _as_table(samples)
    if np.intersect1d(train, test).size:
        raise LeakageError("the same samples are in both train and test")
    tr, te = samples.iloc[train], samples.iloc[test]
    shared = sorted(set(tr["recording"]) & set(te["recording"]))
    if not shared:
        return
    if not within_recording:
        rec = shared[0]
        raise LeakageError(
            f"{len(shared)} recording(s) have samples in both train and test (e.g. {rec}); "
            "windows of one run must not be split at random. Split by run, session or subject, "
            "or use ContiguousBlocks with a gap"
        )
    for rec in shared:
        a = tr[tr["recording"] == rec].sort_values("start")
        b = te[te["recording"] == rec].sort_values("start")
        # distance between intervals [start, stop): positive when apart
        starts, stops = b["start"].to_numpy(), b["stop"].to_numpy()
        for s, e in zip(a["start"].to_numpy(), a["stop"].to_numpy(), strict=True):
            lo = np.searchsorted(stops, s - gap, side="right")
            hi = np.searchsorted(starts, e + gap, side="left")
            close = np.flatnonzero((starts[lo:hi] < e + gap) & (stops[lo:hi] > s - gap))
            if close.size:
                j = lo + int(close[0])
                raise LeakageError(
                    f"{rec}: training sample [{s:g}, {e:g}) s lies within {gap:g} s of test "
                    f"sample [{starts[j]:g}, {stops[j]:g}) s"
                )


class _Rule(BaseCrossValidator):
    """Common machinery: iterate folds, check each one."""

    within_recording = False
    gap = 0.0

    def _folds(self, samples: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def split(
        self, X: Any = None, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train, test)`` row indices, each fold checked by :func:`check_split`."""
        samples = _as_table(groups)
        for train, test in self._folds(samples):
            check_split(samples, train, test, within_recording=self.within_recording, gap=self.gap)
            yield train, test

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds for this sample table."""
        return sum(1 for _ in self._folds(_as_table(groups)))


@dataclass
class LeaveOneGroupOut(_Rule):
    """Leave one run, session, subject (or any column value) out per fold.

    Parameters
    ----------
    by : str or sequence of str
        Column(s) whose distinct values define the groups: ``"run"`` (leave-one-run-out within a
        subject: runs of different subjects with the same number form one group unless ``by``
        also names ``"subject"``), ``"session"``, ``"subject"`` (leave-one-subject-out).
    """

    by: str | Sequence[str] = "run"

    def _folds(self, samples: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cols = [self.by] if isinstance(self.by, str) else list(self.by)
        keys = samples[cols].astype(str).agg("|".join, axis=1)
        values = pd.unique(keys)
        if len(values) < 2:
            raise ValueError(
                f"leave-one-{'/'.join(cols)}-out needs at least 2 groups, got {len(values)}"
            )
        for v in values:
            test = np.flatnonzero(keys.to_numpy() == v)
            yield np.flatnonzero(keys.to_numpy() != v), test


@dataclass
class ContiguousBlocks(_Rule):
    """K-fold over contiguous time blocks of each recording, with a gap on each side.

    Each recording's time span is cut into ``n_blocks`` equal blocks; fold ``k`` tests on
    block ``k`` of every recording and trains on the other blocks, minus the samples within
    ``gap`` seconds of the test block (they are dropped, not moved).

    Parameters
    ----------
    n_blocks : int
        Number of folds.
    gap : float
        Seconds dropped between training and test samples (longer than the temporal
        autocorrelation of the signal and of the target, and than any window length).
    """

    n_blocks: int = 5
    gap: float = 0.0
    within_recording = True

    def _folds(self, samples: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.n_blocks < 2:
            raise ValueError("ContiguousBlocks needs n_blocks >= 2")
        t0 = samples.groupby("recording")["start"].transform("min").to_numpy()
        t1 = samples.groupby("recording")["stop"].transform("max").to_numpy()
        width = (t1 - t0) / self.n_blocks
        start, stop = samples["start"].to_numpy(), samples["stop"].to_numpy()
        block = np.minimum(
            ((start - t0) // np.where(width > 0, width, 1)).astype(int), self.n_blocks - 1
        )
        rec = samples["recording"].to_numpy()
        for k in range(self.n_blocks):
            test = np.flatnonzero(block == k)
            if not test.size:
                continue
            # the test block's actual extent per recording (windows may run past the block edge)
            extent = (
                samples.iloc[test].groupby("recording").agg(lo=("start", "min"), hi=("stop", "max"))
            )
            lo = extent["lo"].reindex(rec).to_numpy()
            hi = extent["hi"].reindex(rec).to_numpy()
            far = np.isnan(lo) | (stop <= lo - self.gap) | (start >= hi + self.gap)
            train = np.flatnonzero((block != k) & far)
            if train.size:
                yield train, test


@dataclass
class StoredIntervals(_Rule):
    """The train/test intervals stored in each recording (one fold).

    Parameters
    ----------
    intervals : DataFrame
        Columns ``recording``, ``start``, ``stop``, ``split`` (e.g. from
        :func:`neurodecode.schema.intervals_frame` of each store, with the recording added).
    train, test : str
        Split names used for each side (e.g. ``train``/``test`` or ``train``/``valid``).
    gap : float
        Minimum distance between the two sides, checked.
    """

    intervals: pd.DataFrame
    train: str = "train"
    test: str = "test"
    gap: float = 0.0
    within_recording = True

    def _folds(self, samples: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        side = np.full(len(samples), "", dtype=object)
        for row in self.intervals.itertuples():
            inside = (
                (samples["recording"] == row.recording)
                & (samples["start"] >= row.start)
                & (samples["stop"] <= row.stop)
            ).to_numpy()
            side[inside] = row.split
        train, test = np.flatnonzero(side == self.train), np.flatnonzero(side == self.test)
        if not train.size or not test.size:
            raise ValueError(
                f"no sample lies inside the stored {self.train!r}/{self.test!r} intervals"
            )
        yield train, test


@dataclass
class WithinRecordingShuffle(_Rule):
    """Random trial splits that ignore recordings — for reproducing published numbers only.

    Trials (not overlapping windows) of one run end up on both sides; the estimate is optimistic
    for anything that drifts within a session. Use it beside a leakage-safe rule, never alone.
    Overlapping samples on both sides are still refused.

    Parameters
    ----------
    n_splits : int
    test_size : float
    random_state : int
    """

    n_splits: int = 10
    test_size: float = 0.2
    random_state: int = 42
    within_recording = True

    def _folds(self, samples: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import ShuffleSplit

        cv = ShuffleSplit(self.n_splits, test_size=self.test_size, random_state=self.random_state)
        yield from cv.split(np.zeros(len(samples)))
