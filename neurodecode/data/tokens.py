"""Spike tokens: every spike (or calcium event) of a window as a (unit, time offset) token.

A Neuroformer-style sample is a *current* window ``[s, s + window)`` whose spikes are predicted
one after the other, and the *past* window ``[s - past, s)`` before it as context. Each spike
becomes a token: the id of its unit in a :class:`UnitVocabulary` (which grows for new units and
sessions and never renumbers) and the bin of its time offset (``dt``) from the window's start.

:class:`SpikeTokenizer` cuts the tokens of any number of windows out of one recording's sorted
spike times in a handful of vectorised passes (no per-spike or per-window Python loop) into a
packed :class:`TokenWindows` (one flat array per field and CSR offsets per window), and
:meth:`SpikeTokenizer.collate` pads a batch of them into tensors. Within a window the tokens are
in one canonical order (by time bin, then unit id), so a window's token sequence is a one-to-one
code of its count matrix: the likelihood a generative model gives the sequence and the one a
Poisson model gives the counts are probabilities of the same event. The past window, context
only, stays in time order.

Any spike-like store gives events through :func:`recording_events`: exact spike times when the
store has them (``spike_time``/``spike_unit``), one event per count for binned spike counts
(:func:`events_from_counts`), and quantised rises of ΔF/F for calcium imaging
(:func:`calcium_events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .samples import Recording

__all__ = [
    "EOS",
    "N_SPECIAL",
    "PAD",
    "SOS",
    "SpikeTokenizer",
    "TokenWindows",
    "UnitVocabulary",
    "calcium_events",
    "events_from_counts",
    "SpikeWindows",
    "recording_events",
    "spike_windows",
    "unit_keys",
    "window_starts",
]

#: Reserved token ids: padding, start of a window's sequence, end of a window's sequence.
PAD, SOS, EOS = 0, 1, 2
#: The first id of a unit.
N_SPECIAL = 3


class UnitVocabulary:
    """Token ids of units, keyed by a unique name per unit; grows, never renumbers.

    Unit ``keys[i]`` has id ``N_SPECIAL + i``; ids ``0, 1, 2`` are :data:`PAD`, :data:`SOS` and
    :data:`EOS`. Adding the units of a new session appends ids, so a model's embedding rows of
    the known units keep their meaning.

    Parameters
    ----------
    keys : iterable of str
        Initial unit keys (see :func:`unit_keys`), in id order.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.add(keys)

    def add(self, keys: Iterable[str]) -> np.ndarray:
        """Ids of ``keys``, adding the unknown ones at the end.

        Parameters
        ----------
        keys : iterable of str
            Unit keys.

        Returns
        -------
        ndarray of int64
            One id per key.
        """
        out = []
        for key in keys:
            key = str(key)
            idx = self._index.get(key)
            if idx is None:
                idx = N_SPECIAL + len(self.keys)
                self._index[key] = idx
                self.keys.append(key)
            out.append(idx)
        return np.asarray(out, dtype=np.int64)

    def ids(self, keys: Iterable[str]) -> np.ndarray:
        """Ids of known ``keys``.

        Raises
        ------
        KeyError
            Naming the keys that are not in the vocabulary.
        """
        keys = [str(k) for k in keys]
        missing = [k for k in keys if k not in self._index]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                              else "")
            raise KeyError(f"{len(missing)} unit(s) not in the vocabulary: {shown}; add them "
                           "first (UnitVocabulary.add, or add_units on a model)")
        return np.asarray([self._index[k] for k in keys], dtype=np.int64)

    def __len__(self) -> int:
        return N_SPECIAL + len(self.keys)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._index

    def __repr__(self) -> str:
        return f"UnitVocabulary({len(self.keys)} units)"

    def state_dict(self) -> dict:
        """Plain-type state (safe for ``torch.load(weights_only=True)``)."""
        return {"keys": list(self.keys)}

    @classmethod
    def from_state(cls, state: dict) -> UnitVocabulary:
        """Rebuild from :meth:`state_dict`."""
        keys = state.get("keys") if isinstance(state, dict) else None
        if not isinstance(keys, list):
            raise ValueError("a unit vocabulary state is a dict with a list of 'keys'")
        if len(set(keys)) != len(keys):
            raise ValueError("a unit vocabulary state holds duplicate keys")
        return cls(keys)


@dataclass
class TokenWindows:
    """The tokens of many windows, packed (one flat array per field, CSR offsets per window).

    Attributes
    ----------
    start : ndarray of float64, shape (n,)
        Start of each current window (s).
    cur_offsets : ndarray of int64, shape (n + 1,)
        Window ``i``'s current tokens are ``cur_unit[cur_offsets[i]:cur_offsets[i + 1]]``.
    cur_unit, cur_dt : ndarray of int64
        Unit ids and time bins from the window start, by bin then unit id within a window.
    past_offsets, past_unit, past_dt : ndarray of int64
        The same for the past window (bins from ``start - past``), in time order (the past is
        context: its order carries no likelihood).
    n_truncated : ndarray of int64, shape (n,)
        Current-window spikes dropped by the tokenizer's ``max_tokens``.
    """

    start: np.ndarray
    cur_offsets: np.ndarray
    cur_unit: np.ndarray
    cur_dt: np.ndarray
    past_offsets: np.ndarray
    past_unit: np.ndarray
    past_dt: np.ndarray
    n_truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def n_tokens(self) -> np.ndarray:
        """Current-window tokens per window."""
        return np.diff(self.cur_offsets)

    def counts(self, n_vocab: int, side: str = "cur") -> np.ndarray:
        """Spike counts per window and unit id, ``(n, n_vocab)`` (columns of the special ids 0).

        Parameters
        ----------
        n_vocab : int
            Columns: the vocabulary size (``len(vocabulary)``).
        side : {"cur", "past"}
            The current or the past window.
        """
        if side not in ("cur", "past"):
            raise ValueError(f"side must be 'cur' or 'past', not {side!r}")
        offsets = getattr(self, f"{side}_offsets")
        unit = getattr(self, f"{side}_unit")
        rows = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(offsets))
        flat = np.bincount(rows * n_vocab + unit, minlength=len(self) * n_vocab)
        return flat.reshape(len(self), n_vocab)

    def select(self, idx: np.ndarray | Sequence[int] | slice) -> TokenWindows:
        """The windows ``idx`` (indices, a boolean mask or a slice), in that order."""
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        if idx.dtype == bool:
            if len(idx) != len(self):
                raise ValueError(f"a boolean mask of {len(idx)} for {len(self)} windows")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        cur_off, cur_rows = _gather(self.cur_offsets, idx)
        past_off, past_rows = _gather(self.past_offsets, idx)
        return TokenWindows(
            start=self.start[idx],
            cur_offsets=cur_off,
            cur_unit=self.cur_unit[cur_rows],
            cur_dt=self.cur_dt[cur_rows],
            past_offsets=past_off,
            past_unit=self.past_unit[past_rows],
            past_dt=self.past_dt[past_rows],
            n_truncated=self.n_truncated[idx],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[TokenWindows]) -> TokenWindows:
        """The windows of several packs (e.g. of several recordings) in one."""
        if not parts:
            raise ValueError("nothing to concatenate")

        def offsets(name: str) -> np.ndarray:
            lengths = np.concatenate([np.diff(getattr(p, name)) for p in parts])
            return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            start=cat("start"),
            cur_offsets=offsets("cur_offsets"),
            cur_unit=cat("cur_unit"),
            cur_dt=cat("cur_dt"),
            past_offsets=offsets("past_offsets"),
            past_unit=cat("past_unit"),
            past_dt=cat("past_dt"),
            n_truncated=cat("n_truncated"),
        )


def _ranges(first: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(first[i], first[i] + lengths[i])`` and the row of each element."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    idx = np.arange(total, dtype=np.int64) - np.repeat(ends - lengths - first, lengths)
    return idx, rows


def _gather(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New CSR offsets and flat element indices of the rows ``idx`` of a CSR layout."""
    lengths = (offsets[idx + 1] - offsets[idx]).astype(np.int64)
    flat, _ = _ranges(offsets[idx], lengths)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), flat


class SpikeTokenizer:
    """Cut (unit, dt) tokens of current and past windows out of sorted spike times.

    Parameters
    ----------
    window : float
        Length of the current window (s), whose tokens are predicted.
    past : float
        Length of the past window before it (s), the context; 0 for none.
    dt : float
        Width of a time bin (s): a token's ``dt`` is ``floor((t - window_start) / dt)``.
    max_tokens : int
        Current-window tokens kept (the first in time); the rest are counted in
        :attr:`TokenWindows.n_truncated`.
    max_past : int
        Past-window tokens kept (the last in time).
    """

    def __init__(self, window: float = 0.05, past: float = 0.15, dt: float = 0.005,
                 max_tokens: int = 100, max_past: int = 300) -> None:
        if not window > 0 or not dt > 0 or past < 0:
            raise ValueError(f"window ({window}) and dt ({dt}) must be > 0 and past ({past}) "
                             ">= 0")
        if dt > window:
            raise ValueError(f"dt ({dt}) is longer than the window ({window})")
        if max_tokens < 1 or max_past < 0:
            raise ValueError(f"max_tokens ({max_tokens}) must be >= 1 and max_past "
                             f"({max_past}) >= 0")
        self.window = float(window)
        self.past = float(past)
        self.dt = float(dt)
        self.max_tokens = int(max_tokens)
        self.max_past = int(max_past)

    @property
    def n_dt(self) -> int:
        """Time bins of the current window."""
        return int(np.ceil(self.window / self.dt - 1e-9))

    @property
    def n_past_dt(self) -> int:
        """Time bins of the past window (at least 1)."""
        return max(1, int(np.ceil(self.past / self.dt - 1e-9)))

    def __repr__(self) -> str:
        return (f"SpikeTokenizer(window={self.window}, past={self.past}, dt={self.dt}, "
                f"max_tokens={self.max_tokens}, max_past={self.max_past})")

    def spans(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each window touches, ``[start - past, start + window)``.

        Use these as the sample table's ``start``/``stop`` so that leakage checks (see
        :func:`neurodecode.data.splits.check_split`) count the past window too.
        """
        starts = np.asarray(starts, dtype=np.float64)
        return starts - self.past, starts + self.window

    def __call__(self, times: np.ndarray, units: np.ndarray, starts: np.ndarray) -> TokenWindows:
        """Tokens of the windows starting at ``starts``.

        Parameters
        ----------
        times : ndarray of float64, shape (n_spikes,)
            Spike times (s), sorted.
        units : ndarray of int, shape (n_spikes,)
            Token id of each spike's unit (from a :class:`UnitVocabulary`).
        starts : ndarray of float64, shape (n_windows,)
            Start of each current window (s).

        Returns
        -------
        TokenWindows
        """
        times = np.asarray(times, dtype=np.float64)
        units = np.asarray(units, dtype=np.int64)
        starts = np.atleast_1d(np.asarray(starts, dtype=np.float64))
        if times.shape != units.shape or times.ndim != 1:
            raise ValueError(f"times {times.shape} and units {units.shape} must be 1-D and of "
                             "one length")
        if len(times) > 1 and np.any(np.diff(times) < 0):
            raise ValueError("spike times must be sorted")
        if len(units) and units.min() < N_SPECIAL:
            raise ValueError(f"unit ids must be >= {N_SPECIAL} (ids 0-2 are PAD/SOS/EOS); map "
                             "units through a UnitVocabulary")
        cur_first = np.searchsorted(times, starts, side="left")
        cur_end = np.searchsorted(times, starts + self.window, side="left")
        n_cur = cur_end - cur_first
        keep = np.minimum(n_cur, self.max_tokens)
        past_first = np.maximum(np.searchsorted(times, starts - self.past, side="left"),
                                cur_first - self.max_past)
        cur = self._pack(times, units, starts, cur_first, keep, self.n_dt, 0.0, True)
        past = self._pack(times, units, starts, past_first, cur_first - past_first,
                          self.n_past_dt, self.past, False)
        return TokenWindows(starts, *cur, *past, (n_cur - keep).astype(np.int64))

    def _pack(self, times: np.ndarray, units: np.ndarray, starts: np.ndarray, first: np.ndarray,
              lengths: np.ndarray, n_bins: int, back: float, canonical: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets, unit ids and bins of one side (current or past)."""
        idx, rows = _ranges(first, lengths)
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # t >= origin for every spike taken, so truncation is the floor.
        dt = ((times[idx] - (starts - back)[rows]) / self.dt).astype(np.int64)
        np.minimum(dt, n_bins - 1, out=dt)
        unit = units[idx]
        if canonical and len(unit) > 1:
            # Time-sorted already: only spikes sharing a bin may be out of canonical order.
            key = (rows * n_bins + dt) * (int(unit.max()) + 1) + unit
            order = np.argsort(key, kind="stable")
            unit, dt = unit[order], dt[order]
        return offsets, unit, dt

    def collate(self, tw: TokenWindows, idx: np.ndarray | Sequence[int] | None = None
                ) -> dict[str, torch.Tensor]:
        """Padded tensors of the windows ``idx`` (all by default).

        Returns
        -------
        dict of Tensor
            ``cur_unit``, ``cur_dt`` (int64 ``(B, N)``, padded with :data:`PAD` / 0),
            ``cur_mask`` (bool, True on tokens), and ``past_unit``, ``past_dt``, ``past_mask``
            ``(B, M)``; ``N`` and ``M`` are the longest of the batch (at least 1).
        """
        import torch

        idx = np.arange(len(tw)) if idx is None else np.asarray(idx, dtype=np.int64)
        out: dict[str, torch.Tensor] = {}
        for side in ("cur", "past"):
            offsets = getattr(tw, f"{side}_offsets")
            lengths = (offsets[idx + 1] - offsets[idx]).astype(np.int64)
            width = max(1, int(lengths.max()) if len(lengths) else 1)
            flat, rows = _ranges(offsets[idx], lengths)
            cols = flat - offsets[idx][rows]
            unit = np.full((len(idx), width), PAD, dtype=np.int64)
            dt = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=bool)
            unit[rows, cols] = getattr(tw, f"{side}_unit")[flat]
            dt[rows, cols] = getattr(tw, f"{side}_dt")[flat]
            mask[rows, cols] = True
            out[f"{side}_unit"] = torch.from_numpy(unit)
            out[f"{side}_dt"] = torch.from_numpy(dt)
            out[f"{side}_mask"] = torch.from_numpy(mask)
        return out


def window_starts(t_start: float, t_stop: float, window: float, stride: float,
                  past: float = 0.0) -> np.ndarray:
    """Window starts ``s`` on a grid, with ``[s - past, s + window)`` inside ``[t_start, t_stop)``.

    Parameters
    ----------
    t_start, t_stop : float
        The span available (s), e.g. one stored interval.
    window, stride, past : float
        Current window length, step between starts and past window length (s).

    Returns
    -------
    ndarray of float64
    """
    if not stride > 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    first = t_start + past
    n = int(np.floor((t_stop - window - first) / stride + 1e-9)) + 1
    return first + stride * np.arange(max(n, 0), dtype=np.float64)


def events_from_counts(counts: np.ndarray, times: np.ndarray, width: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One event per count of binned spikes, at the bin's centre.

    Parameters
    ----------
    counts : ndarray, shape (n_times, n_channels)
        Non-negative integer counts per bin.
    times : ndarray, shape (n_times,)
        Start of each bin (s).
    width : float
        Bin width (s).

    Returns
    -------
    times, channels : ndarray of float64, ndarray of int64
        Sorted event times and the channel index of each.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or len(times) != len(counts):
        raise ValueError(f"counts {counts.shape} must be (n_times, n_channels) with one time "
                         f"per row ({len(times)} given)")
    finite = np.nan_to_num(counts, nan=0.0)
    if np.any(finite < 0) or np.any(finite != np.round(finite)):
        raise ValueError("counts must be non-negative integers (binned spikes)")
    bins, channels = np.nonzero(finite)
    per = finite[bins, channels].astype(np.int64)
    bins, channels = np.repeat(bins, per), np.repeat(channels, per)
    return np.asarray(times, dtype=np.float64)[bins] + width / 2, channels.astype(np.int64)


def calcium_events(dff: np.ndarray, times: np.ndarray, threshold: float = 2.5,
                   step: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quantised events of calcium traces: sharp rises of ΔF/F.

    Each ROI's frame-to-frame increments are scaled by their robust spread (1.4826 × median
    absolute deviation); an increment above ``threshold`` spreads emits
    ``max(1, floor(rise / step))`` events at that frame (bigger transients, more events).

    Parameters
    ----------
    dff : ndarray, shape (n_frames, n_rois)
        ΔF/F traces.
    times : ndarray, shape (n_frames,)
        Frame times (s).
    threshold : float
        Rise that counts as an event, in robust spreads of the increments.
    step : float, optional
        ΔF/F per event; default ``threshold`` spreads of each ROI.

    Returns
    -------
    times, rois : ndarray of float64, ndarray of int64
        Sorted event times and the ROI index of each.
    """
    dff = np.asarray(dff, dtype=np.float64)
    if dff.ndim != 2 or len(times) != len(dff):
        raise ValueError(f"dff {dff.shape} must be (n_frames, n_rois) with one time per frame "
                         f"({len(times)} given)")
    rise = np.diff(np.nan_to_num(dff), axis=0, prepend=np.nan_to_num(dff[:1]))
    med = np.median(rise, axis=0)
    spread = 1.4826 * np.median(np.abs(rise - med), axis=0)
    spread = np.where(spread > 0, spread, np.inf)
    per_event = threshold * spread if step is None else np.full(dff.shape[1], float(step))
    above = rise - med > threshold * spread
    frames, rois = np.nonzero(above)
    n = np.maximum(1, np.floor((rise - med)[frames, rois] / per_event[rois])).astype(np.int64)
    frames, rois = np.repeat(frames, n), np.repeat(rois, n)
    return np.asarray(times, dtype=np.float64)[frames], rois.astype(np.int64)


def recording_events(rec: Recording) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Spike-like events of a recording: exact spikes, binned counts or calcium rises.

    Parameters
    ----------
    rec : Recording
        A ``spikes`` recording (with ``spike_time``/``spike_unit``, or binned counts in
        ``signal``) or a ``calcium`` one (ΔF/F in ``signal``, through :func:`calcium_events`).

    Returns
    -------
    times : ndarray of float64
        Sorted event times (s).
    channels : ndarray of int64
        Index of each event's channel.
    names : list of str
        The channel names.
    """
    ds = rec.ds
    names = [str(c) for c in ds["channel"].values]
    modality = str(ds.attrs.get("modality", ""))
    if "spike_time" in ds:
        times = np.asarray(ds["spike_time"].values, dtype=np.float64)
        units = np.asarray(ds["spike_unit"].values, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        return times[order], units[order], names
    signal = np.asarray(ds["signal"].values)
    t = np.asarray(ds["time"].values, dtype=np.float64)
    if modality == "spikes":
        return (*events_from_counts(signal, t, 1.0 / float(ds.attrs["sfreq"])), names)
    if modality == "calcium":
        return (*calcium_events(signal, t), names)
    raise ValueError(f"{rec.id}: spike tokens need a spikes or calcium recording, not "
                     f"{modality or 'one without a modality'}")


def unit_keys(rec: Recording) -> list[str]:
    """A unique key per channel of a recording: ``[<dataset>/]sub-<s>/ses-<x>/<channel>``.

    Runs of one session share their units; another session (or subject) has new keys, so its
    units get new ids in a :class:`UnitVocabulary`.
    """
    ident = rec.identity
    dataset = str(rec.ds.attrs.get("dataset", ""))
    prefix = (f"{dataset}/" if dataset else "") + (
        f"sub-{ident['subject'] or 'none'}/ses-{ident['session'] or 'none'}")
    return [f"{prefix}/{c}" for c in rec.ds["channel"].values]


@dataclass
class SpikeWindows:
    """Token windows of many recordings with their sample table and behaviour.

    Attributes
    ----------
    tokens : TokenWindows
        The windows of every recording, in table order.
    table : DataFrame
        One row per window: the identity columns of a sample table (``recording``,
        ``subject``, ``session``, ``task``, ``run``, ``modality``, ``whole_run_steps``),
        ``start``/``stop`` = what the window touches, past included
        (:meth:`SpikeTokenizer.spans`), and ``window_start`` (the current window's start).
        Leakage checks (:func:`neurodecode.data.splits.check_split`) work on it as on any
        sample table.
    covariates : ndarray of float32, shape (n, n_steps, n_features), or None
        The behaviour asked for, at ``n_steps`` evenly spaced times of each current window.
    behavior : list of str
        The behaviour names, in feature order (a 2-D variable gives several features).
    """

    tokens: TokenWindows
    table: pd.DataFrame
    covariates: np.ndarray | None
    behavior: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, idx: np.ndarray | Sequence[int]) -> SpikeWindows:
        """The windows ``idx`` (indices or a boolean mask)."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        return SpikeWindows(self.tokens.select(idx), self.table.iloc[idx].reset_index(drop=True),
                            None if self.covariates is None else self.covariates[idx],
                            self.behavior)


def spike_windows(
    recordings: Sequence[Recording],
    tokenizer: SpikeTokenizer,
    vocabulary: UnitVocabulary,
    *,
    stride: float | None = None,
    intervals: Sequence[str] | None = None,
    behavior: Sequence[str] = (),
    n_steps: int = 4,
    grow: bool = True,
) -> SpikeWindows:
    """Token windows of recordings, read through the store API.

    Parameters
    ----------
    recordings : sequence of Recording
        Spikes or calcium recordings (see :func:`recording_events`).
    tokenizer : SpikeTokenizer
    vocabulary : UnitVocabulary
        Maps every recording's units (:func:`unit_keys`) to ids; with ``grow`` the unknown
        units are added (a new session's units get new ids, known ids stay).
    stride : float, optional
        Step between window starts (s); default the tokenizer's window (no overlap of current
        windows).
    intervals : sequence of str, optional
        Keep only windows whose whole span (past included) lies inside a stored interval of
        these names (``["train"]`` for pretraining); None: whole recordings.
    behavior : sequence of str
        ``behavior_*`` variables to serve as covariates (interpolated).
    n_steps : int
        Covariate samples per current window.
    grow : bool
        Add unknown units to the vocabulary; if False they raise ``KeyError``.

    Returns
    -------
    SpikeWindows
    """
    from ..schema import intervals_frame
    from .samples import _base_row, target_at

    stride = tokenizer.window if stride is None else float(stride)
    parts, rows, covs = [], [], []
    for rec in recordings:
        times, channels, _ = recording_events(rec)
        keys = unit_keys(rec)
        ids = vocabulary.add(keys) if grow else vocabulary.ids(keys)
        t = np.asarray(rec.ds["time"].values, dtype=np.float64)
        end = float(t[-1]) + 1.0 / float(rec.ds.attrs["sfreq"]) if len(t) else 0.0
        if intervals is None:
            spans = [(float(t[0]) if len(t) else 0.0, end)]
        else:
            frame = intervals_frame(rec.ds)
            if not len(frame):
                raise ValueError(f"store {rec.path or rec.id} has no stored split intervals; "
                                 "use intervals: null (whole recordings)")
            frame = frame[frame["split"].isin(list(intervals))]
            spans = list(zip(frame["start"], frame["stop"], strict=True))
        starts = np.concatenate(
            [window_starts(a, b, tokenizer.window, stride, tokenizer.past) for a, b in spans]
            or [np.zeros(0)])
        starts = np.sort(starts)
        parts.append(tokenizer(times, ids[channels], starts))
        lo, hi = tokenizer.spans(starts)
        rows.append(pd.DataFrame({**_base_row(rec), "start": lo, "stop": hi,
                                  "window_start": starts}))
        if behavior:
            at = (starts[:, None] + (np.arange(n_steps) + 0.5) * tokenizer.window / n_steps)
            cols = [target_at(rec, b, at.ravel()).reshape(len(starts) * n_steps, -1)
                    for b in behavior]
            covs.append(np.concatenate(cols, axis=1).reshape(len(starts), n_steps, -1))
    if not parts:
        raise ValueError("no recording given")
    table = pd.concat(rows, ignore_index=True)
    if not len(table):
        raise ValueError(f"no window of {tokenizer.window:g} s (past {tokenizer.past:g} s) fits "
                         + ("the recordings" if intervals is None else
                            f"inside the {'/'.join(intervals)} intervals"))
    cov = np.concatenate(covs).astype(np.float32) if behavior else None
    return SpikeWindows(TokenWindows.concatenate(parts), table, cov, list(behavior))
