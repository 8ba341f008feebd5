"""Positive-pair sampling for contrastive embeddings.

Every step draws ``batch_size`` reference samples and ``batch_size`` negatives uniformly from the
valid time points of each session (those whose whole receptive field lies inside one contiguous
segment), and one positive per reference from a conditional distribution:

``time``
    the sample ``time_offset`` steps after the reference (time-contrastive learning);
``time_delta``
    add a random *empirical* label increment ``y[t + time_offset] - y[t]`` to the reference's
    label and take the nearest valid sample in label space (CEBRA-Behavior);
``delta``
    add isotropic Gaussian jitter (``delta`` standard deviation) to the reference's label, then
    take the nearest sample;
``discrete``
    a uniformly drawn sample of the same class.

The nearest-neighbour search uses a KD-tree (or a sorted array for 1-D labels), built once, so the
cost of a step grows with ``log(n_samples)`` rather than with the recording's length. With several
sessions, positives for session ``s`` are searched in another session (a random derangement each
step), which ties the sessions' embeddings together through the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["CONDITIONALS", "LabelIndex", "PairIndex", "PairSampler", "valid_positions"]

Conditional = Literal["time", "time_delta", "delta", "discrete"]
CONDITIONALS: tuple[str, ...] = ("time", "time_delta", "delta", "discrete")


class LabelIndex:
    """Nearest-neighbour search over a set of labelled samples.

    Parameters
    ----------
    labels : ndarray, shape (n, d)
        Continuous labels of the candidate samples.
    positions : ndarray of int, shape (n,)
        What a query returns for each candidate (its time index in the session).

    Notes
    -----
    1-D labels are searched with :func:`numpy.searchsorted` on the sorted labels, higher
    dimensions with :class:`scipy.spatial.cKDTree`; both cost ``O(log n)`` per query.
    """

    def __init__(self, labels: np.ndarray, positions: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim == 1:
            labels = labels[:, None]
        if len(labels) == 0:
            raise ValueError("cannot build a label index without samples")
        self.dim = labels.shape[1]
        if self.dim == 1:
            order = np.argsort(labels[:, 0], kind="stable")
            self._sorted = labels[order, 0]
            self._positions = np.asarray(positions)[order]
            self._tree = None
        else:
            self._tree = cKDTree(labels, leafsize=16, balanced_tree=False, compact_nodes=False)
            self._positions = np.asarray(positions)

    def query(self, points: np.ndarray) -> np.ndarray:
        """Return the position of the nearest candidate to each query point."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim == 1:
            points = points[:, None]
        if self._tree is None:
            q = points[:, 0]
            hi = np.searchsorted(self._sorted, q).clip(1, len(self._sorted) - 1)
            lo = hi - 1
            if len(self._sorted) == 1:
                return self._positions[np.zeros(len(q), dtype=np.intp)]
            pick = np.where(np.abs(q - self._sorted[lo]) <= np.abs(self._sorted[hi] - q), lo, hi)
            return self._positions[pick]
        _, nearest = self._tree.query(points, k=1)
        return self._positions[nearest]


def valid_positions(segments: np.ndarray, left: int, right: int) -> np.ndarray:
    """Time indices whose window ``[t - left, t + right)`` lies inside one segment.

    Parameters
    ----------
    segments : ndarray of int, shape (n,)
        Segment id of each sample; a window never spans two segments (runs, trials, gaps).
    left, right : int
        Samples the encoder's receptive field reaches before (``left``) and from ``t`` on
        (``right``, including ``t`` itself).
    """
    segments = np.asarray(segments)
    n = len(segments)
    t = np.arange(left, n - right + 1)
    if len(t) == 0:
        return t
    # changes[i] = number of segment changes up to sample i: a window is valid iff it has none
    changes = np.concatenate([[0], np.cumsum(segments[1:] != segments[:-1])])
    ok = changes[t - left] == changes[t + right - 1]
    return t[ok]


@dataclass
class PairIndex:
    """Indices of one training batch: per session, reference, positive and negative rows.

    ``ref[s]``, ``neg[s]`` index session ``s``; ``pos[s]`` indexes session ``pos_session[s]``
    (the same session unless positives are matched across sessions).
    """

    ref: list[np.ndarray]
    pos: list[np.ndarray]
    neg: list[np.ndarray]
    pos_session: list[int]
    pos_time: list[np.ndarray] | None = None


@dataclass
class _Session:
    valid: np.ndarray  # valid reference positions
    time_next: np.ndarray | None  # positions t with t + offset valid in the same segment
    labels: np.ndarray | None
    increments: np.ndarray | None  # empirical label increments over time_offset
    index: LabelIndex | None
    class_starts: np.ndarray | None = None
    class_members: np.ndarray | None = None
    class_of: np.ndarray | None = None


class PairSampler:
    """Draw reference / positive / negative indices for one or more sessions.

    Parameters
    ----------
    segments : list of ndarray of int
        Per session, the segment id of each sample (see :func:`valid_positions`).
    labels : list of ndarray or None
        Per session, continuous labels (n, d) or integer classes (n,); None for ``time``.
    conditional : {"time", "time_delta", "delta", "discrete"}
        How positives are drawn (module docstring).
    left, right : int
        Receptive field of the encoder around a sample.
    time_offset : int
        Offset in samples for ``time`` positives and for ``time_delta`` increments.
    delta : float
        Standard deviation of the Gaussian jitter for ``delta``.
    hybrid : bool
        Also draw a ``time`` positive for every reference (behaviour + time objectives).
    across_sessions : bool
        With several sessions, search label-matched positives in another session.
    anchors : ndarray, optional
        Labels of fixed anchor samples (e.g. of a trained model's sessions). Positives are then
        drawn among the anchors (``pos`` holds anchor rows and ``pos_session`` is ``-1``): a new
        session learns to embed a label where the anchors already are.
    """

    def __init__(
        self,
        segments: list[np.ndarray],
        labels: list[np.ndarray] | None,
        *,
        conditional: Conditional = "time_delta",
        left: int = 5,
        right: int = 5,
        time_offset: int = 10,
        delta: float = 0.1,
        hybrid: bool = False,
        across_sessions: bool = True,
        anchors: np.ndarray | None = None,
    ) -> None:
        if conditional not in CONDITIONALS:
            raise ValueError(f"conditional must be one of {CONDITIONALS}, got {conditional!r}")
        if conditional != "time" and labels is None:
            raise ValueError(f"conditional={conditional!r} needs labels")
        if time_offset < 1:
            raise ValueError(f"time_offset must be >= 1, got {time_offset}")
        self.conditional = conditional
        self.time_offset = int(time_offset)
        self.delta = float(delta)
        self.hybrid = bool(hybrid)
        self.n_sessions = len(segments)
        self.across_sessions = bool(across_sessions) and self.n_sessions > 1
        self.sessions = [
            self._prepare(np.asarray(seg), None if labels is None else labels[s], left, right, s)
            for s, seg in enumerate(segments)
        ]
        self.anchors = None
        if anchors is not None:
            if conditional == "time":
                raise ValueError("anchors need a label conditional, not 'time'")
            n = len(anchors)
            self.anchors = self._prepare(
                np.zeros(n, dtype=np.int64), anchors, 0, 1, "anchors", increments=False
            )

    def _prepare(self, seg, labels, left, right, s, increments: bool = True) -> _Session:
        valid = valid_positions(seg, left, right)
        if len(valid) < 2:
            raise ValueError(
                f"session {s}: only {len(valid)} samples have a full receptive field "
                f"({left} before, {right} after); the recording is too short for this encoder"
            )
        off = self.time_offset
        is_valid = np.zeros(len(seg) + off, dtype=bool)
        is_valid[valid] = True
        time_next = valid[
            is_valid[valid + off] & (seg[np.minimum(valid + off, len(seg) - 1)] == seg[valid])
        ]
        need_time = self.conditional == "time" or self.hybrid
        if need_time and len(time_next) == 0:
            raise ValueError(
                f"session {s}: no sample has a valid partner {off} samples later; lower time_offset"
            )
        session = _Session(valid, time_next, None, None, None)
        if labels is None or self.conditional == "time":
            return session
        labels = np.asarray(labels)
        if len(labels) != len(seg):
            raise ValueError(f"session {s}: {len(labels)} labels for {len(seg)} samples")
        if self.conditional == "discrete":
            cls = labels.reshape(len(labels), -1)
            if cls.shape[1] != 1:
                raise ValueError("discrete labels must be one integer class per sample")
            cls = cls[:, 0]
            order = np.argsort(cls[valid], kind="stable")
            members = valid[order]
            uniq, starts, counts = np.unique(cls[members], return_index=True, return_counts=True)
            session.class_members = members
            session.class_starts = np.stack([starts, counts], 1)
            session.class_of = {c: i for i, c in enumerate(uniq.tolist())}
            session.labels = cls
            return session
        labels = labels.astype(np.float64).reshape(len(labels), -1)
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"session {s}: labels contain NaN or Inf")
        session.labels = labels
        session.index = LabelIndex(labels[valid], valid)
        if self.conditional == "time_delta" and increments:
            t = np.arange(len(seg) - off)
            same = seg[t] == seg[t + off]
            inc = labels[t + off][same] - labels[t][same]
            if len(inc) == 0:
                raise ValueError(f"session {s}: no label increment over {off} samples")
            session.increments = inc
        return session

    def _conditional(
        self, rng: np.random.Generator, ref: np.ndarray, src: _Session, dst: _Session, name: str
    ) -> np.ndarray:
        """Positives in ``dst`` for references ``ref`` of ``src``."""
        if self.conditional == "discrete":
            cls = src.labels[ref]
            rows = np.fromiter((dst.class_of.get(c, -1) for c in cls.tolist()), np.intp, len(cls))
            if np.any(rows < 0):
                missing = sorted(set(cls[rows < 0].tolist()))
                raise ValueError(f"classes {missing} have no valid sample in {name}")
            starts, counts = dst.class_starts[rows, 0], dst.class_starts[rows, 1]
            pick = starts + (rng.random(len(ref)) * counts).astype(np.intp)
            return dst.class_members[pick]
        query = src.labels[ref]
        if self.conditional == "time_delta":
            query = query + src.increments[rng.integers(0, len(src.increments), len(ref))]
        else:
            query = query + rng.normal(0.0, self.delta, size=query.shape)
        return dst.index.query(query)

    def sample(self, rng: np.random.Generator, batch_size: int) -> PairIndex:
        """Draw one batch of indices (``batch_size`` references per session)."""
        n = self.n_sessions
        if self.anchors is not None:
            target = [-1] * n
        elif self.across_sessions and self.conditional != "time":
            perm = rng.permutation(n)
            # A derangement: shift by a random non-zero amount so no session maps to itself.
            target = list(np.roll(perm, int(rng.integers(1, n)))[np.argsort(perm)])
        else:
            target = list(range(n))
        refs, poss, negs, times = [], [], [], []
        for s, sess in enumerate(self.sessions):
            if self.conditional == "time":
                ref = sess.time_next[rng.integers(0, len(sess.time_next), batch_size)]
                pos = ref + self.time_offset
            else:
                # With hybrid, references also need a partner for the time objective.
                pool = sess.time_next if self.hybrid else sess.valid
                ref = pool[rng.integers(0, len(pool), batch_size)]
                if self.anchors is not None:
                    pos = self._conditional(rng, ref, sess, self.anchors, "the anchors")
                else:
                    t = int(target[s])
                    pos = self._conditional(rng, ref, sess, self.sessions[t], f"session {t}")
            neg = sess.valid[rng.integers(0, len(sess.valid), batch_size)]
            if self.hybrid:
                times.append(ref + self.time_offset)
            refs.append(ref)
            poss.append(pos)
            negs.append(neg)
        return PairIndex(refs, poss, negs, [int(t) for t in target], times if self.hybrid else None)
