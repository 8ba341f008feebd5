"""Chance level and p-values by label permutation.

The chance level of a decoder is not ``1 / n_classes``: it depends on the class balance, the
number of test samples, the split and, for time series, on the autocorrelation of the target.
It is measured by refitting with permuted targets and scoring again, ``n`` times; the null
distribution's mean is the chance level and the p-value is

    ``p = (1 + #(null >= score)) / (1 + n)``

(``<=`` for metrics where lower is better), which is never 0 and is exact under exchangeability.

Schemes (:data:`SCHEMES`):

``"shuffle"``
    Permute the targets over all samples.
``"within"``
    Permute them within each group (recording); keeps each recording's class balance. Default
    for trials.
``"circular_shift"``
    Shift each recording's target sequence in time by a random offset, wrapping around. The
    target keeps its autocorrelation, so a decoder that merely follows slow drifts is not
    mistaken for a real one. Default for continuous targets and for overlapping windows, where
    shuffling destroys the autocorrelation and gives a chance level that is falsely low and a
    null distribution that is falsely narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.utils.multiclass import type_of_target

from neurodecode import verbosity

__all__ = [
    "SCHEMES",
    "PermutationResult",
    "default_scheme",
    "fixed_prediction_null",
    "permutation_p_value",
    "permutation_test",
    "permute_labels",
    "permuted_targets",
]

Scheme = Literal["shuffle", "within", "circular_shift"]

#: Permutation schemes, see the module docstring.
SCHEMES: tuple[str, ...] = ("shuffle", "within", "circular_shift")


def permute_labels(
    y: Any,
    *,
    scheme: Scheme = "shuffle",
    groups: Any = None,
    order: Any = None,
    min_shift: float = 0.1,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """One permutation of the targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Targets; rows are permuted.
    scheme : {"shuffle", "within", "circular_shift"}
    groups : array-like of shape (n_samples,), optional
        Group (recording) of each sample, for ``"within"`` and ``"circular_shift"``; one group
        when omitted.
    order : array-like of shape (n_samples,), optional
        Time of each sample (e.g. its start): ``"circular_shift"`` shifts along it. Default: the
        given order.
    min_shift : float
        ``"circular_shift"`` shifts by at least this fraction of the group's length (and at most
        ``1 - min_shift``), so that no permutation is nearly the identity; in [0, 0.5].
    rng : Generator or int, optional

    Returns
    -------
    ndarray
        ``y`` with its rows permuted.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES}")
    if not 0 <= min_shift <= 0.5:
        raise ValueError(f"min_shift must lie in [0, 0.5], got {min_shift}")
    y = np.asarray(y)
    rng = np.random.default_rng(rng)
    n = len(y)
    if scheme == "shuffle":
        return y[rng.permutation(n)]
    codes = np.zeros(n, int) if groups is None else pd.factorize(np.asarray(groups))[0]
    if len(codes) != n:
        raise ValueError(f"{len(codes)} groups for {n} samples")
    time = np.arange(n) if order is None else np.asarray(order)
    sorted_idx = np.lexsort((time, codes))
    bounds = np.flatnonzero(np.diff(codes[sorted_idx])) + 1
    perm = np.arange(n)
    for idx in np.split(sorted_idx, bounds):
        m = idx.size
        if scheme == "within":
            perm[idx] = rng.permutation(idx)
        elif m >= 2:
            lo = max(1, math.ceil(min_shift * m))
            hi = max(lo, m - lo)
            perm[idx] = np.roll(idx, int(rng.integers(lo, hi + 1)))
    return y[perm]


def permuted_targets(
    y: Any,
    n_permutations: int,
    *,
    scheme: Scheme = "shuffle",
    groups: Any = None,
    order: Any = None,
    random_state: int = 0,
) -> list[np.ndarray]:
    """``n_permutations`` independent permutations of ``y``, reproducible from one seed.

    Permutation ``i`` depends only on ``random_state`` and ``i`` (independent streams spawned
    from one :class:`numpy.random.SeedSequence`), not on how the work is spread over processes.

    Parameters
    ----------
    y, scheme, groups, order
        As for :func:`permute_labels`.
    n_permutations : int
    random_state : int

    Returns
    -------
    list of ndarray
    """
    seeds = np.random.SeedSequence(random_state).spawn(n_permutations)
    return [permute_labels(y, scheme=scheme, groups=groups, order=order,
                           rng=np.random.default_rng(s)) for s in seeds]


def fixed_prediction_null(y: Any, preds: Sequence[Any], n_permutations: int,
                          rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Null distribution of the (seed-averaged) balanced accuracy of fixed predictions.

    The test labels are permuted (the same permutation for every prediction); the predictions
    stay as they are: the null of a classifier that learnt nothing about these labels,
    whatever its bias towards one class. No model is refitted, so it is cheap enough for every
    point of a few-shot curve.

    Parameters
    ----------
    y : array-like of shape (n,)
        True test labels.
    preds : sequence of array-like of shape (n,)
        One prediction per seed (or a single one).
    n_permutations : int
    rng : numpy Generator or int, optional

    Returns
    -------
    ndarray of shape (n_permutations,)
    """
    from .metrics import balanced_accuracy_rows

    rng = np.random.default_rng(rng)
    y = np.asarray(y)
    classes = np.unique(y)
    perms = np.stack([rng.permutation(y) for _ in range(n_permutations)])
    return np.mean([balanced_accuracy_rows(perms, p, classes) for p in preds], axis=0)


def permutation_p_value(score: float, null: Any, *, greater_is_better: bool = True) -> float:
    """``(1 + #(null >= score)) / (1 + n)``, or with ``<=`` when lower is better.

    Parameters
    ----------
    score : float
        The score with the true targets.
    null : array-like of shape (n,)
        Scores with permuted targets; non-finite ones (undefined scores) are left out.
    greater_is_better : bool

    Returns
    -------
    float
        NaN when ``score`` is not finite or no null score is.
    """
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not null.size or not np.isfinite(score):
        return float("nan")
    extreme = null >= score if greater_is_better else null <= score
    return float((1 + np.count_nonzero(extreme)) / (1 + null.size))


@dataclass(frozen=True)
class PermutationResult:
    """A score beside its permutation null distribution.

    Attributes
    ----------
    score : float
        The score with the true targets.
    null : ndarray of shape (n_permutations,)
        The scores with permuted targets.
    greater_is_better : bool
    scheme : str
    """

    score: float
    null: np.ndarray
    greater_is_better: bool = True
    scheme: str = "shuffle"

    @property
    def n_permutations(self) -> int:
        """Number of permutations."""
        return int(np.asarray(self.null).size)

    @property
    def chance(self) -> float:
        """Mean of the null distribution (over its finite values)."""
        null = np.asarray(self.null, dtype=float)
        null = null[np.isfinite(null)]
        return float(null.mean()) if null.size else float("nan")

    @property
    def p_value(self) -> float:
        """See :func:`permutation_p_value`."""
        return permutation_p_value(self.score, self.null, greater_is_better=self.greater_is_better)


def permutation_test(
    score_fn: Callable[[np.ndarray], float],
    y: Any,
    *,
    scheme: Scheme = "within",
    groups: Any = None,
    order: Any = None,
    n_permutations: int = 100,
    greater_is_better: bool = True,
    random_state: int = 0,
    n_jobs: int | None = 1,
    verbose: verbosity.Verbose = None,
    progress: bool | None = None,
) -> PermutationResult:
    """Score ``y`` and ``n_permutations`` permutations of it with one function.

    ``score_fn(y)`` may refit a model (as :func:`neurodecode.evaluate.cross_validate` does) or
    only compare fixed predictions with ``y`` — the affordable test for a model too expensive to
    refit (e.g. a deep network trained once): ``score_fn = lambda t: metric(t[test], pred)``.
    That tests the predictions, not the training procedure.

    Parameters
    ----------
    score_fn : callable
        Targets → score.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
    scheme, groups, order
        As for :func:`permute_labels`.
    n_permutations : int
        Default 100 (smallest possible p-value ``1 / 101``).
    greater_is_better : bool
    random_state : int
    n_jobs : int, optional
        Processes for :class:`joblib.Parallel`.
    verbose : bool, str, int or None
        MNE log level while ``score_fn`` runs, in MNE's convention; ``None`` runs MNE at
        ``"warning"`` unless the user set another level
        (:func:`neurodecode.verbosity.mne_verbose`). Applied in joblib workers too.
    progress : bool, optional
        Progress bar over the permutations on stderr; ``None`` shows it only when stderr is an
        interactive terminal (:func:`neurodecode.verbosity.progress`).

    Returns
    -------
    PermutationResult
    """
    y = np.asarray(y)
    level = verbosity.mne_log_level(verbose)
    targets = permuted_targets(y, n_permutations, scheme=scheme, groups=groups, order=order,
                               random_state=random_state)
    score = _score(score_fn, y, level)
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_score)(score_fn, t, level) for t in targets)
    null = list(verbosity.progress(runs, n_permutations, f"{n_permutations} permutations",
                                   progress))
    return PermutationResult(score, np.asarray(null, dtype=float), greater_is_better, scheme)


def _score(score_fn: Callable[[np.ndarray], float], y: np.ndarray, level: int) -> float:
    with verbosity.mne_verbose(level):
        return float(score_fn(y))


def default_scheme(y: Any, samples: pd.DataFrame) -> Scheme:
    """The permutation scheme that suits these targets and samples.

    ``"circular_shift"`` for continuous targets, and for samples that touch or overlap in time
    within a recording (sliding windows: a time series); ``"within"`` (recording) otherwise.

    Parameters
    ----------
    y : array-like
        Targets.
    samples : DataFrame
        The sample table (columns ``recording``, ``start``, ``stop``).

    Returns
    -------
    str
    """
    if type_of_target(y).startswith("continuous"):
        return "circular_shift"
    table = samples[["recording", "start", "stop"]].sort_values(["recording", "start"])
    prev_stop = table.groupby("recording")["stop"].shift()
    return "circular_shift" if bool((table["start"] <= prev_stop).any()) else "within"
