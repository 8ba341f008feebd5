"""Leakage-safe split rules: by run, session or subject, stored intervals, contiguous blocks.

Every sample (a trial, a window or a time step) is described by one row of a *sample table*
(:class:`pandas.DataFrame`) with at least the columns ``recording`` (the recording's unique id:
its store path, or the identity of an in-memory recording), ``subject``, ``session``, ``run``,
``start`` and ``stop`` (seconds within its recording); tables built by
:mod:`neurodecode.data.samples` add ``modality`` and ``whole_run_steps``. Rules split sample
tables, never arrays, so that they can check what they produce: :func:`check_split` refuses a
split that puts samples of one recording on both sides, or that puts a training sample within
``gap`` seconds of a test sample of the same recording.

Splits within a recording (:class:`ContiguousBlocks`, :class:`StoredIntervals`) always keep a
gap: by default (``gap=None``) the longest sample plus a margin of the modality
(:data:`MODALITY_MARGINS`; see :func:`default_gap`), and a slow signal refuses a smaller one
(:data:`MINIMUM_GAPS`: 12 s for BOLD fMRI, 2 s for calcium imaging). A within-recording split
of a recording cleaned as a whole at ingest (``history`` steps with ``"scope": "recording"``)
warns with :class:`TransductiveCleaningWarning`; clean per fold instead
(:class:`neurodecode.evaluate.cleaning.FoldClean`).

Each rule is also a scikit-learn cross-validator (``split(X, y, groups)`` with the sample table
as ``groups``), so it plugs into :func:`sklearn.model_selection.cross_validate`; scikit-learn's
own splitters go through :func:`neurodecode.evaluate.cross_validate` with a 1-D ``groups``
column and :func:`checked_folds`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator

__all__ = [
    "MINIMUM_GAPS",
    "MODALITY_MARGINS",
    "SAMPLE_COLUMNS",
    "ContiguousBlocks",
    "LeakageError",
    "LeaveOneGroupOut",
    "SplitChecker",
    "StoredIntervals",
    "TransductiveCleaningWarning",
    "WHOLE_RUN_COLUMN",
    "WithinRecordingShuffle",
    "check_split",
    "checked_folds",
    "chronological_intervals",
    "default_gap",
    "group_columns",
    "group_keys",
    "resolve_gap",
    "splitter_folds",
]

#: Columns every sample table has.
SAMPLE_COLUMNS = ("recording", "subject", "session", "run", "start", "stop")

#: Seconds added to the longest sample to form the default gap within a recording, per
#: modality: the BOLD response (about 12 s from onset to return to baseline), the decay of a
#: calcium indicator's fluorescence (2 s: about three decay time constants of GCaMP6f/m,
#: suite2p's ``tau`` 0.7–1.0 s; slower indicators such as GCaMP6s need a larger explicit gap),
#: and a small margin for the autocorrelation of electrophysiology and binned spikes.
#: A table without a ``modality`` column (or another modality) gets no margin.
MODALITY_MARGINS: dict[str, float] = {
    "fmri": 12.0,
    "calcium": 2.0,
    "eeg": 0.5,
    "meg": 0.5,
    "seeg": 0.5,
    "ecog": 0.5,
    "spikes": 0.5,
}

#: Smallest gap accepted within a recording of a slow signal; an explicit smaller one is
#: refused (the margin of :data:`MODALITY_MARGINS`, without the sample length).
MINIMUM_GAPS: dict[str, float] = {"fmri": 12.0, "calcium": 2.0}

_WHY = {
    "fmri": "the BOLD response lasts about 12 s",
    "calcium": "the indicator's fluorescence decays over about 2 s",
}

#: Sample-table column naming the ingest steps that cleaned each sample's whole recording.
WHOLE_RUN_COLUMN = "whole_run_steps"


class LeakageError(ValueError):
    """A split would let the test set leak into training."""


class TransductiveCleaningWarning(UserWarning):
    """A split within a recording meets a recording that was cleaned as a whole at ingest."""


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


def _modalities(samples: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """``(modality, rows)`` for each modality of the table ("" when it has no such column)."""
    if "modality" not in samples.columns:
        return [("", np.ones(len(samples), bool))]
    mod = samples["modality"].astype(str).to_numpy()
    return [(m, mod == m) for m in pd.unique(mod)]


def group_keys(samples: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One group label per sample: the values of ``columns`` as text, joined by ``"|"``.

    Parameters
    ----------
    samples : DataFrame
        The sample table.
    columns : sequence of str
        Its columns (e.g. ``["subject", "run"]``).

    Returns
    -------
    ndarray of str, shape (n_samples,)
    """
    keys = samples[columns[0]].astype(str)
    for col in columns[1:]:
        keys = keys + "|" + samples[col].astype(str)
    return keys.to_numpy()


def group_columns(groups: str | Sequence[str] | None, samples: pd.DataFrame,
                  cv: Any = None) -> list[str]:
    """The sample-table columns named by ``groups``, checked.

    Parameters
    ----------
    groups : str, sequence of str or None
        Column(s) whose values are a scikit-learn splitter's ``groups`` (e.g. ``"subject"``).
    samples : DataFrame
        The sample table.
    cv : splitter, optional
        The splitter they are for: neurodecode's rules read the table themselves and refuse
        ``groups``.

    Returns
    -------
    list of str
        The columns (empty for ``groups=None``).

    Raises
    ------
    ValueError
        For a rule, or a column the table lacks.
    """
    if groups is None:
        return []
    if isinstance(cv, SplitRule):
        raise ValueError(f"groups={groups!r} is for scikit-learn splitters; {type(cv).__name__} "
                         "reads the sample table itself (choose its groups with `by`)")
    cols = [groups] if isinstance(groups, str) else list(groups)
    missing = [c for c in cols if c not in samples.columns]
    if missing or not cols:
        raise ValueError(f"groups={groups!r}: the sample table has no column {missing or cols}; "
                         f"its columns are {list(samples.columns)}")
    return cols


def splitter_folds(cv: Any, samples: pd.DataFrame, *, groups: str | Sequence[str] | None = None,
                   X: Any = None, y: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every fold of any splitter over a sample table, each checked once for leakage.

    neurodecode's rules get the table (and check their own folds); a splitter with a
    ``within_recording`` attribute gets the table too and is checked with its ``gap``; any other
    scikit-learn splitter (``GroupKFold``, ``PredefinedSplit``, ``KFold``...) gets the 1-D
    ``groups`` built from the named columns and must keep every recording on one side.

    Parameters
    ----------
    cv : splitter
        Anything with ``split(X, y, groups)``.
    samples : DataFrame
        The sample table, one row per sample.
    groups : str or sequence of str, optional
        Columns for a scikit-learn splitter's ``groups`` (see :func:`group_columns`).
    X, y : array-like, optional
        Passed to ``split`` (default: a placeholder of one column per sample).

    Returns
    -------
    list of (train, test) index arrays

    Raises
    ------
    LeakageError
        If a fold mixes samples of one recording where the splitter may not, or breaks the gap.
    """
    X = np.zeros((len(samples), 1)) if X is None else X
    if isinstance(cv, SplitRule):  # a rule checks its own folds
        return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(X, y, groups=samples)]
    cols = group_columns(groups, samples, cv)
    if hasattr(cv, "within_recording"):  # neurodecode's protocol: the table as groups
        within = bool(cv.within_recording)
        gap = (resolve_gap(samples, getattr(cv, "gap", None), what=type(cv).__name__)
               if within else 0.0)
        raw = cv.split(X, y, groups=samples)
    else:
        within, gap = False, 0.0
        raw = cv.split(X, y, groups=group_keys(samples, cols) if cols else None)
    return list(checked_folds(samples, raw, within_recording=within, gap=gap))


def default_gap(samples: pd.DataFrame) -> float:
    """The default gap of a split within a recording: longest sample plus the modality margin.

    Parameters
    ----------
    samples : DataFrame
        The sample table (``start``, ``stop`` and, from :mod:`neurodecode.data.samples`,
        ``modality``).

    Returns
    -------
    float
        Seconds: the largest, over the modalities in the table, of the longest sample
        (``stop - start``: the window, epoch or time step) plus
        :data:`MODALITY_MARGINS` of that modality (0 for an unknown one).
    """
    samples = _as_table(samples)
    length = (samples["stop"] - samples["start"]).to_numpy(dtype=float)
    gaps = [float(length[rows].max()) + MODALITY_MARGINS.get(m, 0.0)
            for m, rows in _modalities(samples) if rows.any()]
    return max(gaps, default=0.0)


def resolve_gap(samples: pd.DataFrame, gap: float | None, *, what: str = "this split") -> float:
    """The gap a split within a recording keeps: ``gap``, or :func:`default_gap` when None.

    Parameters
    ----------
    samples : DataFrame
        The sample table.
    gap : float or None
        Seconds asked for; None for the default.
    what : str
        Name of the split, for the error message.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When ``gap`` is negative, or smaller than :data:`MINIMUM_GAPS` of a modality in the
        table (the message names the modality and the minimum).
    """
    samples = _as_table(samples)
    if gap is None:
        return default_gap(samples)
    gap = float(gap)
    if not gap >= 0:
        raise ValueError(f"{what}: gap must be >= 0 seconds, got {gap}")
    for modality, rows in _modalities(samples):
        least = MINIMUM_GAPS.get(modality)
        if least is not None and rows.any() and gap < least:
            why = _WHY.get(modality, "a slow signal")
            raise ValueError(
                f"{what}: {modality} samples need a gap of at least {least:g} s between training "
                f"and test samples of one recording ({why}), got gap={gap:g}; pass "
                f"gap=None for the default ({default_gap(samples):g} s here) or split by run"
            )
    return gap


class SplitChecker:
    """Checks folds of one sample table: its recordings and intervals are indexed once.

    Parameters
    ----------
    samples : DataFrame
        The sample table.

    Notes
    -----
    The test intervals of every recording are sorted by start (one ordering of the table,
    reused by every fold) with a running maximum of their stops; for each training sample,
    :func:`numpy.searchsorted` counts the test samples of its recording that start before its
    stop plus the gap, and the running maximum says whether any of them stops after its start
    minus the gap. That is ``O(n log n)`` per fold, in a loop over recordings only.
    """

    def __init__(self, samples: pd.DataFrame) -> None:
        table = _as_table(samples)
        self.samples = table
        codes, ids = pd.factorize(table["recording"])
        self._codes = codes.astype(np.intp)
        self._ids = np.asarray(ids, dtype=object)
        self._start = table["start"].to_numpy(dtype=float)
        self._stop = table["stop"].to_numpy(dtype=float)
        self._order = np.lexsort((self._start, self._codes))
        self._cleaned: dict[int, str] = {}
        if WHOLE_RUN_COLUMN in table.columns:  # one value per recording: read its first row
            steps = table[WHOLE_RUN_COLUMN].astype(str).to_numpy()
            _, first = np.unique(self._codes, return_index=True)
            self._cleaned = {code: steps[row] for code, row in enumerate(first) if steps[row]}
        self._warned = False

    def _rows(self, index: Any, side: str) -> np.ndarray:
        arr = np.asarray(index)
        if arr.dtype == bool:
            if arr.shape != (len(self._codes),):
                raise ValueError(f"{side} mask has shape {arr.shape}, the table has "
                                 f"{len(self._codes)} rows")
            return np.flatnonzero(arr)
        arr = arr.astype(np.intp, copy=False).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= len(self._codes)):
            raise IndexError(f"{side} rows outside the table's {len(self._codes)} rows")
        return arr

    def _grouped(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows in ``mask`` sorted by (recording, start), and each recording's bounds."""
        rows = self._order[mask[self._order]]
        return rows, np.searchsorted(self._codes[rows], np.arange(len(self._ids) + 1))

    def near(self, train: np.ndarray, test: np.ndarray, gap: float) -> np.ndarray:
        """Which training rows lie within ``gap`` seconds of a test row of their recording.

        Two half-open intervals ``[s, e)`` and ``[s', e')`` lie within ``gap`` when
        ``s' < e + gap`` and ``e' > s - gap`` (with ``gap = 0``: when they overlap).

        Parameters
        ----------
        train, test : ndarray of int
            Row indices.
        gap : float
            Seconds.

        Returns
        -------
        ndarray of bool, shape (len(train),)
        """
        train, test = self._rows(train, "train"), self._rows(test, "test")
        n = len(self._codes)
        in_train, in_test = np.zeros(n, bool), np.zeros(n, bool)
        in_train[train], in_test[test] = True, True
        tr, tr_bounds = self._grouped(in_train)
        te, te_bounds = self._grouped(in_test)
        hit = np.zeros(n, bool)
        for code in np.flatnonzero((np.diff(te_bounds) > 0) & (np.diff(tr_bounds) > 0)):
            t = te[te_bounds[code]: te_bounds[code + 1]]
            starts, reach = self._start[t], np.maximum.accumulate(self._stop[t])
            rows = tr[tr_bounds[code]: tr_bounds[code + 1]]
            k = np.searchsorted(starts, self._stop[rows] + gap, side="left")
            close = k > 0
            close[close] = reach[k[close] - 1] > self._start[rows[close]] - gap
            hit[rows] = close
        return hit[train]

    def check(
        self,
        train: np.ndarray,
        test: np.ndarray,
        *,
        within_recording: bool = False,
        gap: float = 0.0,
    ) -> None:
        """Refuse one fold that leaks; see :func:`check_split`.

        Warns (:class:`TransductiveCleaningWarning`, once per checker) when a fold puts samples
        of a recording cleaned as a whole at ingest on both sides.
        """
        train, test = self._rows(train, "train"), self._rows(test, "test")
        n = len(self._codes)
        in_test = np.zeros(n, bool)
        in_test[test] = True
        if in_test[train].any():
            raise LeakageError("the same samples are in both train and test")
        count = len(self._ids)
        shared = np.flatnonzero((np.bincount(self._codes[train], minlength=count) > 0)
                                & (np.bincount(self._codes[test], minlength=count) > 0))
        if not shared.size:
            return
        if not within_recording:
            raise LeakageError(
                f"{shared.size} recording(s) have samples in both train and test (e.g. "
                f"{self._ids[shared[0]]}); windows of one run must not be split at random. "
                "Split by run, session or subject, or use ContiguousBlocks with a gap"
            )
        close = self.near(train, test, gap)
        if close.any():
            self._raise_close(train[np.argmax(close)], test, gap)
        self._warn_cleaned(shared)

    def _raise_close(self, row: int, test: np.ndarray, gap: float) -> None:
        s, e = self._start[row], self._stop[row]
        same = test[self._codes[test] == self._codes[row]]
        hit = same[(self._start[same] < e + gap) & (self._stop[same] > s - gap)]
        j = hit[np.argmin(self._start[hit])]
        raise LeakageError(
            f"{self._ids[self._codes[row]]}: training sample [{s:g}, {e:g}) s lies within "
            f"{gap:g} s of test sample [{self._start[j]:g}, {self._stop[j]:g}) s"
        )

    def _warn_cleaned(self, shared: np.ndarray) -> None:
        cleaned = [int(c) for c in shared if int(c) in self._cleaned]
        if self._warned or not cleaned:
            return
        self._warned = True
        first = cleaned[0]
        warnings.warn(
            f"{len(cleaned)} recording(s) split within the recording were cleaned as a whole at "
            f"ingest (e.g. {self._ids[first]}: {self._cleaned[first]}), so their training "
            "samples carry statistics of their test samples; ingest without whole-run cleaning "
            "and clean per fold (neurodecode.evaluate.cleaning.FoldClean), or split by run",
            TransductiveCleaningWarning,
            stacklevel=4,
        )


def chronological_intervals(t_start: float, t_stop: float, split: Sequence[float], gap: float
                            ) -> pd.DataFrame:
    """Train/valid/test blocks of ``[t_start, t_stop)`` in that order, ``gap`` seconds apart.

    Half of the gap is cut from each side of a boundary; a block that the gap leaves empty is
    left out (the blocks that remain are then further apart than ``gap``).

    Parameters
    ----------
    t_start, t_stop : float
        The span (s).
    split : sequence of 3 float
        Non-negative train / valid / test fractions (normalised).
    gap : float
        Seconds between consecutive blocks.

    Returns
    -------
    DataFrame
        Columns ``start``, ``stop``, ``split`` (the stored-interval layout).
    """
    fractions = np.asarray(split, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split must be three non-negative train/valid/test fractions: {split}")
    if not gap >= 0:
        raise ValueError(f"split_gap must be >= 0 seconds, got {gap}")
    span = t_stop - t_start
    edges = t_start + span * np.concatenate([[0.0], np.cumsum(fractions) / fractions.sum()])
    edges[-1] = t_stop
    kept = [(edges[i], edges[i + 1], name) for i, name in enumerate(("train", "valid", "test"))
            if edges[i + 1] > edges[i]]
    rows = []
    for i, (lo, hi, name) in enumerate(kept):
        lo, hi = lo + (gap / 2 if i > 0 else 0.0), hi - (gap / 2 if i < len(kept) - 1 else 0.0)
        if hi > lo:
            rows.append((lo, hi, name))
    return pd.DataFrame(rows, columns=["start", "stop", "split"])


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
        every test sample of the same recording, and a recording cleaned as a whole at ingest
        (its ``whole_run_steps``) warns with :class:`TransductiveCleaningWarning`.
    gap : float
        Minimum distance in seconds between training and test samples of one recording (the
        distance between their ``[start, stop)`` intervals).

    Raises
    ------
    LeakageError
        Naming the recording and the offending samples.

    See Also
    --------
    SplitChecker : the same check for many folds of one table.
    """
    SplitChecker(samples).check(train, test, within_recording=within_recording, gap=gap)


def checked_folds(
    samples: pd.DataFrame,
    folds: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    within_recording: bool = False,
    gap: float = 0.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the folds of any splitter, each checked by :func:`check_split`.

    Parameters
    ----------
    samples : DataFrame
        The sample table the folds index.
    folds : iterable of (ndarray, ndarray)
        ``(train, test)`` row indices, e.g. ``KFold(5).split(X)``.
    within_recording, gap
        As in :func:`check_split`.

    Yields
    ------
    (ndarray, ndarray)
        The folds unchanged. The transductive-cleaning warning is given at most once.
    """
    checker = SplitChecker(samples)
    for train, test in folds:
        checker.check(train, test, within_recording=within_recording, gap=gap)
        yield np.asarray(train), np.asarray(test)


class SplitRule(BaseCrossValidator):
    """Base of neurodecode's split rules: they take the sample table as ``groups``.

    A rule resolves its gap on the table (:meth:`resolve_gap`), yields its folds and checks
    each one once with a :class:`SplitChecker`; :func:`neurodecode.evaluate.cross_validate`
    trusts those checks instead of repeating them.
    """

    within_recording = False
    gap: float | None = 0.0

    def _folds(
        self, samples: pd.DataFrame, gap: float, checker: SplitChecker
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def resolve_gap(self, samples: pd.DataFrame) -> float:
        """The gap this rule keeps on ``samples`` (0 for rules that never split a recording).

        Parameters
        ----------
        samples : DataFrame
            The sample table.

        Returns
        -------
        float

        Raises
        ------
        ValueError
            When the rule's ``gap`` is below the minimum of a slow modality
            (see :func:`resolve_gap`).
        """
        if not self.within_recording:
            return 0.0
        return resolve_gap(samples, self.gap, what=type(self).__name__)

    def split(
        self, X: Any = None, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train, test)`` row indices, each fold checked by :func:`check_split`.

        Parameters
        ----------
        X, y : ignored
            Present for scikit-learn compatibility.
        groups : DataFrame
            The sample table.

        Yields
        ------
        (ndarray, ndarray)
        """
        samples = _as_table(groups)
        gap = self.resolve_gap(samples)
        checker = SplitChecker(samples)
        for train, test in self._folds(samples, gap, checker):
            checker.check(train, test, within_recording=self.within_recording, gap=gap)
            yield train, test

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds for this sample table."""
        samples = _as_table(groups)
        gap = self.resolve_gap(samples)
        return sum(1 for _ in self._folds(samples, gap, SplitChecker(samples)))


@dataclass
class LeaveOneGroupOut(SplitRule):
    """Leave one run, session, subject (or any column value) out per fold.

    Parameters
    ----------
    by : str or sequence of str
        Column(s) whose distinct values define the groups: ``"run"`` (leave-one-run-out within a
        subject: runs of different subjects with the same number form one group unless ``by``
        also names ``"subject"``), ``"session"``, ``"subject"`` (leave-one-subject-out).
    """

    by: str | Sequence[str] = "run"

    def _folds(
        self, samples: pd.DataFrame, gap: float, checker: SplitChecker
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cols = [self.by] if isinstance(self.by, str) else list(self.by)
        keys = group_keys(samples, cols)
        values = pd.unique(keys)
        if len(values) < 2:
            raise ValueError(
                f"leave-one-{'/'.join(cols)}-out needs at least 2 groups, got {len(values)}"
            )
        for v in values:
            yield np.flatnonzero(keys != v), np.flatnonzero(keys == v)


@dataclass
class ContiguousBlocks(SplitRule):
    """K-fold over contiguous time blocks of each recording, with a gap on each side.

    Each recording's time span is cut into ``n_blocks`` equal blocks; fold ``k`` tests on
    block ``k`` of every recording and trains on the other blocks, minus the samples within
    the gap of a test sample (they are dropped, not moved).

    Parameters
    ----------
    n_blocks : int
        Number of folds.
    gap : float, optional
        Seconds kept between training and test samples of one recording (longer than the
        temporal autocorrelation of the signal and of the target). None (default): the longest
        sample plus the modality's margin (:func:`default_gap`: at least 12 s for fMRI); an
        explicit gap below :data:`MINIMUM_GAPS` of the samples' modality is refused.
    """

    n_blocks: int = 5
    gap: float | None = None
    within_recording = True

    def _folds(
        self, samples: pd.DataFrame, gap: float, checker: SplitChecker
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.n_blocks < 2:
            raise ValueError("ContiguousBlocks needs n_blocks >= 2")
        t0 = samples.groupby("recording")["start"].transform("min").to_numpy()
        t1 = samples.groupby("recording")["stop"].transform("max").to_numpy()
        width = (t1 - t0) / self.n_blocks
        start = samples["start"].to_numpy()
        block = np.minimum(
            ((start - t0) // np.where(width > 0, width, 1)).astype(int), self.n_blocks - 1
        )
        for k in range(self.n_blocks):
            test = np.flatnonzero(block == k)
            if not test.size:
                continue
            train = np.flatnonzero(block != k)
            train = train[~checker.near(train, test, gap)]
            if train.size:
                yield train, test


@dataclass
class StoredIntervals(SplitRule):
    """The train/test intervals stored in each recording (one fold).

    Training samples closer than the gap to a test sample of their recording are dropped.

    Parameters
    ----------
    intervals : DataFrame
        Columns ``recording``, ``start``, ``stop``, ``split`` (e.g. from
        :func:`neurodecode.schema.intervals_frame` of each store, with the recording's id
        added).
    train, test : str
        Split names used for each side (e.g. ``train``/``test`` or ``train``/``valid``).
    gap : float, optional
        Seconds kept between the two sides; None (default) as in :class:`ContiguousBlocks`.
    """

    intervals: pd.DataFrame
    train: str = "train"
    test: str = "test"
    gap: float | None = None
    within_recording = True

    def _folds(
        self, samples: pd.DataFrame, gap: float, checker: SplitChecker
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        side = np.full(len(samples), "", dtype=object)
        rec = samples["recording"].to_numpy()
        start, stop = samples["start"].to_numpy(), samples["stop"].to_numpy()
        for row in self.intervals.itertuples():
            inside = (rec == row.recording) & (start >= row.start) & (stop <= row.stop)
            side[inside] = row.split
        train, test = np.flatnonzero(side == self.train), np.flatnonzero(side == self.test)
        if not train.size or not test.size:
            raise ValueError(
                f"no sample lies inside the stored {self.train!r}/{self.test!r} intervals"
            )
        train = train[~checker.near(train, test, gap)]
        if not train.size:
            raise ValueError(f"every {self.train!r} sample lies within {gap:g} s of a "
                             f"{self.test!r} sample")
        yield train, test


@dataclass
class WithinRecordingShuffle(SplitRule):
    """Random trial splits that ignore recordings — for reproducing published numbers only.

    Trials (not overlapping windows) of one run end up on both sides; the estimate is optimistic
    for anything that drifts within a session. Use it beside a leakage-safe rule, never alone.
    Overlapping samples on both sides are still refused, and so are samples of slow signals
    (:data:`MINIMUM_GAPS`), which a random split cannot keep apart.

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
    gap = 0.0

    def _folds(
        self, samples: pd.DataFrame, gap: float, checker: SplitChecker
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import ShuffleSplit

        cv = ShuffleSplit(self.n_splits, test_size=self.test_size, random_state=self.random_state)
        yield from cv.split(np.zeros(len(samples)))
