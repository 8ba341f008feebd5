"""Scores for classification, regression and retrieval, and the registry the CV runner uses.

Every metric is a function ``metric(y_true, y_out, **kwargs) -> float`` where ``y_out`` is what
the estimator produced: predictions (``predict``), continuous scores (``decision_function``, or
``predict_proba`` where there is none) or class probabilities (``predict_proba``). The registry
:data:`METRICS` says which one each metric needs and whether higher is better; metrics that need
scores or probabilities are called with ``labels=estimator.classes_`` so that score columns are
matched to classes even when a test fold lacks a class.

Retrieval metrics compare predicted with true *feature matrices* (one row per sample, e.g. image
embeddings decoded from brain activity): each prediction is correlated (Pearson, across features)
with the true features of its own sample and of other samples (the distractors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "METRICS",
    "accuracy",
    "Metric",
    "balanced_accuracy",
    "balanced_accuracy_rows",
    "correlation_matrix",
    "median_absolute_error",
    "pearson_r",
    "r2",
    "roc_auc",
    "top_k_accuracy",
    "top_k_retrieval",
    "two_way_identification",
]

Multioutput = Literal["uniform_average", "raw_values"]


class Metric(NamedTuple):
    """A registered metric: what it computes, from which estimator output, in which direction.

    Attributes
    ----------
    func : callable
        ``func(y_true, y_out) -> float``; called with ``labels=`` (the estimator's
        ``classes_``) too when ``needs`` is ``"score"`` or ``"proba"``.
    needs : {"predict", "score", "proba"}
        ``"predict"``: ``estimator.predict``; ``"score"``: ``decision_function``, else
        ``predict_proba``; ``"proba"``: ``predict_proba``.
    greater_is_better : bool
        Direction used by the permutation p-value.
    """

    func: Callable[..., float]
    needs: Literal["predict", "score", "proba"]
    greater_is_better: bool


# --------------------------------------------------------------------------- classification


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of correct predictions.

    Use it to compare with published numbers that report it; prefer
    :func:`balanced_accuracy` when classes are unbalanced (its chance level is ``1 / n_classes``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)

    Returns
    -------
    float
    """
    return float(skm.accuracy_score(y_true, y_pred))


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean of the per-class recalls (chance is ``1 / n_classes`` whatever the class balance).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.

    Returns
    -------
    float
    """
    return float(skm.balanced_accuracy_score(y_true, y_pred))


def balanced_accuracy_rows(y_true: Any, y_pred: Any, classes: Any = None) -> np.ndarray:
    """Balanced accuracy of one prediction against each row of ``y_true``, vectorised.

    What a permutation null of fixed predictions needs (thousands of permuted label rows in
    milliseconds); for one row it equals :func:`balanced_accuracy`.

    Parameters
    ----------
    y_true : array-like of shape (n,) or (n_draws, n)
        True labels (each row a draw, e.g. a permutation).
    y_pred : array-like of shape (n,)
        Predicted labels.
    classes : array-like, optional
        Classes averaged over (default those of ``y_true``); a class absent from a row is left
        out of that row's mean.

    Returns
    -------
    ndarray of shape (n_draws,), or a 0-d array for 1-D ``y_true``
    """
    y, pred = np.asarray(y_true), np.asarray(y_pred)
    rows = np.atleast_2d(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    hits = np.zeros(len(rows))
    counted = np.zeros(len(rows))
    for c in classes:
        is_c = rows == c
        n_c = is_c.sum(axis=1)
        present = n_c > 0
        recall = np.divide((is_c & (pred == c)[None, :]).sum(axis=1), n_c,
                           out=np.zeros(len(rows)), where=present)
        hits += recall
        counted += present
    out = hits / np.maximum(counted, 1)
    return out[0] if y.ndim == 1 else out


def _score_columns(y_score: np.ndarray, labels: Sequence[Any] | None, y_true: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Scores as (n_samples, n_classes) columns with the class of each column."""
    classes = np.unique(y_true) if labels is None else np.asarray(labels)
    if y_score.ndim == 1:  # binary decision function: score of classes[1]
        if classes.size != 2:
            raise ValueError(f"1-D scores need exactly 2 classes, got {classes.size}")
        return np.column_stack([-y_score, y_score]), classes
    if y_score.shape[1] != classes.size:
        raise ValueError(f"{y_score.shape[1]} score columns for {classes.size} classes; pass "
                         "labels= (the estimator's classes_)")
    return y_score, classes


def roc_auc(y_true: Any, y_score: Any, *, labels: Sequence[Any] | None = None) -> float:
    """Area under the ROC curve; one-vs-rest macro average for more than two classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        ``decision_function`` output (1-D: the score of ``labels[1]``) or ``predict_proba``.
        Multi-class scores need not be probabilities.
    labels : sequence, optional
        Class of each score column (``estimator.classes_``); default the sorted labels of
        ``y_true``.

    Returns
    -------
    float
        Binary: the AUC of ``labels[1]`` against ``labels[0]``. Multi-class: the mean over
        classes of each class-against-the-rest AUC, over the classes present in ``y_true``
        (and not alone in it); NaN when there is no such class.
    """
    y_true = np.asarray(y_true)
    scores, classes = _score_columns(np.asarray(y_score, dtype=float), labels, y_true)
    columns = [1] if classes.size == 2 else range(classes.size)
    aucs = []
    for j in columns:
        positive = y_true == classes[j]
        if positive.any() and not positive.all():
            aucs.append(skm.roc_auc_score(positive, scores[:, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


def top_k_accuracy(y_true: Any, y_score: Any, *, k: int = 2,
                   labels: Sequence[Any] | None = None) -> float:
    """Fraction of samples whose true class is among the ``k`` highest-scored classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Decision scores or probabilities, as for :func:`roc_auc`.
    k : int
        Number of guesses; chance is ``k / n_classes``.
    labels : sequence, optional
        Class of each score column (``estimator.classes_``).

    Returns
    -------
    float
    """
    y_true = np.asarray(y_true)
    scores, classes = _score_columns(np.asarray(y_score, dtype=float), labels, y_true)
    # rank of the true class: how many classes score strictly higher (ties count half)
    index = {c: i for i, c in enumerate(classes.tolist())}
    col = np.array([index[t] for t in y_true.tolist()], dtype=int)
    true = scores[np.arange(len(y_true)), col][:, None]
    higher = (scores > true).sum(axis=1)
    ties = (scores == true).sum(axis=1) - 1
    return float(np.mean(np.clip((k - higher) / (ties + 1), 0.0, 1.0)))


# --------------------------------------------------------------------------- regression


def _as_2d(y: Any) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    return y[:, None] if y.ndim == 1 else y


def _reduce(values: np.ndarray, multioutput: Multioutput) -> float | np.ndarray:
    if multioutput == "raw_values":
        return values
    if multioutput == "uniform_average":
        return float(np.mean(values))
    raise ValueError(f"multioutput must be 'uniform_average' or 'raw_values', got {multioutput!r}")


def r2(y_true: Any, y_pred: Any, *, multioutput: Multioutput = "uniform_average"
       ) -> float | np.ndarray:
    """Coefficient of determination, per target or averaged over targets.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_targets)
    multioutput : {"uniform_average", "raw_values"}
        Average over targets, or return one value per target.

    Returns
    -------
    float or ndarray of shape (n_targets,)
        1 is perfect; 0 is predicting the test mean; negative is worse than that.
    """
    values = skm.r2_score(_as_2d(y_true), _as_2d(y_pred), multioutput="raw_values")
    return _reduce(np.asarray(values), multioutput)


def median_absolute_error(y_true: Any, y_pred: Any, *, scale: float | Sequence[float] = 1.0,
                          multioutput: Multioutput = "uniform_average") -> float | np.ndarray:
    """Median absolute error, optionally in physical units.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_targets)
    scale : float or sequence of float
        Units per unit of the target (per target), e.g. the track length in cm when positions
        are in track lengths, or the standard deviation used to z-score the target.
    multioutput : {"uniform_average", "raw_values"}

    Returns
    -------
    float or ndarray of shape (n_targets,)
    """
    err = np.abs(_as_2d(y_true) - _as_2d(y_pred)) * np.asarray(scale, dtype=float)
    return _reduce(np.median(err, axis=0), multioutput)


def pearson_r(y_true: Any, y_pred: Any, *, multioutput: Multioutput = "uniform_average"
              ) -> float | np.ndarray:
    """Pearson correlation between true and predicted values, per target or averaged.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_targets)
    multioutput : {"uniform_average", "raw_values"}

    Returns
    -------
    float or ndarray of shape (n_targets,)
        NaN for a target where either side is constant.
    """
    a, b = _as_2d(y_true), _as_2d(y_pred)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    return _reduce(r, multioutput)


# --------------------------------------------------------------------------- retrieval


def correlation_matrix(y_pred: Any, y_true: Any) -> np.ndarray:
    """Pearson correlation of every predicted row with every true row.

    Parameters
    ----------
    y_pred, y_true : array-like of shape (n_samples, n_features)
        ``n_features >= 2``.

    Returns
    -------
    ndarray of shape (n_samples, n_samples)
        Entry ``[i, j]`` correlates prediction ``i`` with true features ``j``; 0 where a row is
        constant.
    """
    p, t = np.asarray(y_pred, dtype=float), np.asarray(y_true, dtype=float)
    if p.ndim != 2 or p.shape != t.shape or p.shape[1] < 2:
        raise ValueError("retrieval needs predicted and true feature matrices of one shape "
                         f"(n_samples, n_features >= 2), got {p.shape} and {t.shape}")

    def unit(m: np.ndarray) -> np.ndarray:
        m = m - m.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        return np.divide(m, norm, out=np.zeros_like(m), where=norm > 0)

    return unit(p) @ unit(t).T


def top_k_retrieval(y_true: Any, y_pred: Any, *, k: int = 1, n_candidates: int = 100,
                    n_repeats: int = 10, random_state: int = 0) -> float:
    """Top-k retrieval accuracy among ``n_candidates`` true feature vectors.

    For each sample, its prediction is compared with its own true features and with
    ``n_candidates - 1`` distractors drawn at random from the other samples; it is a hit when
    the true features are among the ``k`` most correlated candidates (ties broken at random, in
    expectation). Averaged over samples and over ``n_repeats`` random draws.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, n_features)
    k : int
        Number of guesses.
    n_candidates : int
        Candidates per query, the true one included; capped at ``n_samples``. Chance is
        ``k / n_candidates``.
    n_repeats : int
        Random draws of distractors to average over.
    random_state : int
        Seed of the draws.

    Returns
    -------
    float
    """
    sim = correlation_matrix(y_pred, y_true)
    n = sim.shape[0]
    n_distract = min(n_candidates, n) - 1
    if n_distract < 1:
        raise ValueError("retrieval needs at least 2 samples")
    true = np.diag(sim)[:, None]
    rng = np.random.default_rng(random_state)
    hits = []
    for _ in range(n_repeats):
        keys = rng.random((n, n))
        np.fill_diagonal(keys, np.inf)  # never draw the sample itself
        picked = np.argpartition(keys, n_distract - 1, axis=1)[:, :n_distract]
        d = np.take_along_axis(sim, picked, axis=1)
        higher, ties = (d > true).sum(axis=1), (d == true).sum(axis=1)
        hits.append(np.clip((k - higher) / (ties + 1), 0.0, 1.0).mean())
    return float(np.mean(hits))


def two_way_identification(y_true: Any, y_pred: Any) -> float:
    """Fraction of distractors less correlated with a prediction than its own true features.

    For each sample ``i`` and each other sample ``j``, the pair is identified when
    ``corr(pred_i, true_i) > corr(pred_i, true_j)`` (ties count half). Averaged over all pairs.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, n_features)

    Returns
    -------
    float
        1 for perfect predictions of distinct samples; chance is 0.5.
    """
    sim = correlation_matrix(y_pred, y_true)
    n = sim.shape[0]
    if n < 2:
        raise ValueError("two-way identification needs at least 2 samples")
    true = np.diag(sim)[:, None]
    won = (sim < true).sum(axis=1) + 0.5 * ((sim == true).sum(axis=1) - 1)
    return float(np.mean(won / (n - 1)))


#: Metric name → :class:`Metric`, used by :func:`neurodecode.evaluate.cross_validate`.
METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, "predict", True),
    "balanced_accuracy": Metric(balanced_accuracy, "predict", True),
    "roc_auc": Metric(roc_auc, "score", True),
    "top_2_accuracy": Metric(partial(top_k_accuracy, k=2), "score", True),
    "top_5_accuracy": Metric(partial(top_k_accuracy, k=5), "score", True),
    "r2": Metric(r2, "predict", True),
    "median_absolute_error": Metric(median_absolute_error, "predict", False),
    "pearson_r": Metric(pearson_r, "predict", True),
    "top_1_retrieval": Metric(partial(top_k_retrieval, k=1), "predict", True),
    "top_5_retrieval": Metric(partial(top_k_retrieval, k=5), "predict", True),
    "two_way_identification": Metric(two_way_identification, "predict", True),
}
