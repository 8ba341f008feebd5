"""Cross-validation with leakage checks and permutation chance levels.

:func:`cross_validate` fits a fresh clone of a scikit-learn estimator on the training samples of
every fold of a split rule (:mod:`neurodecode.data.splits`) or of any scikit-learn splitter
(``GroupKFold``, ``LeaveOneGroupOut``, ``PredefinedSplit``, ... with ``groups="subject"``),
scores it on the test samples, then repeats the whole cross-validation with permuted targets to
measure the chance level and a p-value (:mod:`neurodecode.evaluate.permutation`). Every fold is
checked once with :func:`neurodecode.data.splits.check_split` whatever produced it, so a
splitter that puts windows of one run on both sides raises
:class:`~neurodecode.data.splits.LeakageError` instead of reporting an optimistic score. The
result is an :class:`EvaluationResult`, whose :meth:`~EvaluationResult.to_dict` is the format
reports and workflows consume.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone

from neurodecode import verbosity
from neurodecode.data.splits import group_columns, group_keys, splitter_folds
from neurodecode.evaluate.metrics import METRICS, Metric
from neurodecode.evaluate.permutation import (
    SCHEMES,
    PermutationResult,
    default_scheme,
    permuted_targets,
)

__all__ = ["EvaluationResult", "cross_validate"]

_FOLD_COLUMNS = ("fold", "metric", "score", "n_train", "n_test", "test_groups")
_SUMMARY_COLUMNS = ("metric", "mean", "std", "chance", "p_value", "n_permutations",
                    "greater_is_better", "permutation", "cv", "estimator")


@dataclass
class EvaluationResult:
    """Per-fold scores and permutation null distributions of one cross-validation.

    Attributes
    ----------
    folds : DataFrame
        One row per fold and metric: ``fold``, ``metric``, ``score``, ``n_train``, ``n_test``,
        ``test_groups`` (the held-out groups: values of the rule's ``by`` columns, else the
        test recordings).
    null : dict of str to ndarray
        Per metric, the mean-over-folds score of each permutation (empty without permutations).
    greater_is_better : dict of str to bool
        Direction of each metric, in the order they were requested.
    estimator, cv : str
        Descriptions of the estimator and of the split rule.
    permutation : str
        Permutation scheme of the null distributions (``"none"`` without permutations).
    random_state : int
        Seed of the permutations.
    """

    folds: pd.DataFrame
    null: dict[str, np.ndarray]
    greater_is_better: dict[str, bool]
    estimator: str
    cv: str
    permutation: str
    random_state: int

    @property
    def summary(self) -> pd.DataFrame:
        """One row per metric: mean and sample std over folds, chance (mean of the null), p-value.

        The p-value compares the mean over folds with the null distribution
        (:func:`~neurodecode.evaluate.permutation.permutation_p_value`); folds where a metric is
        undefined (NaN, e.g. an AUC on a one-class test set) are left out of means.
        """
        rows = []
        for name, greater in self.greater_is_better.items():
            scores = self.folds.loc[self.folds["metric"] == name, "score"].to_numpy(float)
            finite = scores[np.isfinite(scores)]
            perm = PermutationResult(float(finite.mean()) if finite.size else math.nan,
                                     np.asarray(self.null.get(name, ()), dtype=float), greater)
            rows.append({
                "metric": name,
                "mean": perm.score,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                "chance": perm.chance,
                "p_value": perm.p_value,
                "n_permutations": perm.n_permutations,
                "greater_is_better": greater,
                "permutation": self.permutation,
                "cv": self.cv,
                "estimator": self.estimator,
            })
        return pd.DataFrame(rows, columns=list(_SUMMARY_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable content (NaN written as ``None``).

        Returns
        -------
        dict
            ``estimator``, ``cv``, ``permutation``, ``random_state``, ``summary`` (list of
            rows), ``folds`` (list of rows) and ``null`` (metric → list of scores).
        """
        out = {
            "estimator": self.estimator,
            "cv": self.cv,
            "permutation": self.permutation,
            "random_state": self.random_state,
            "summary": self.summary.to_dict(orient="records"),
            "folds": self.folds.to_dict(orient="records"),
            "null": {k: np.asarray(v, dtype=float).tolist() for k, v in self.null.items()},
        }
        return _jsonable(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output.

        Parameters
        ----------
        data : mapping

        Returns
        -------
        EvaluationResult
        """
        folds = pd.DataFrame(list(data["folds"]), columns=list(_FOLD_COLUMNS))
        folds["score"] = folds["score"].astype(float)  # None (NaN) back to NaN
        return cls(
            folds=folds,
            null={k: np.array([math.nan if v is None else v for v in vals], dtype=float)
                  for k, vals in data["null"].items()},
            greater_is_better={row["metric"]: bool(row["greater_is_better"])
                               for row in data["summary"]},
            estimator=data["estimator"],
            cv=data["cv"],
            permutation=data["permutation"],
            random_state=int(data["random_state"]),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
        """
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        """Read a result written by :meth:`to_json`.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        EvaluationResult
        """
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        table = self.summary[["metric", "mean", "std", "chance", "p_value"]]
        n = int(self.summary["n_permutations"].max()) if len(table) else 0
        estimator = self.estimator if len(self.estimator) <= 150 else self.estimator[:147] + "..."
        head = (f"EvaluationResult\n  estimator: {estimator}\n  cv: {self.cv}, "
                f"{self.folds['fold'].nunique()} folds; {n} permutations ({self.permutation})")
        return head + "\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def cross_validate(
    estimator: Any,
    X: Any,
    y: Any,
    samples: pd.DataFrame,
    cv: Any,
    *,
    groups: str | Sequence[str] | None = None,
    metrics: Sequence[str] | Mapping[str, Metric] = ("balanced_accuracy", "roc_auc"),
    n_permutations: int = 100,
    permutation: Literal["auto", "shuffle", "within", "circular_shift"] = "auto",
    random_state: int = 0,
    n_jobs: int | None = 1,
    fit_params: Mapping[str, Any] | None = None,
    verbose: verbosity.Verbose = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Cross-validate an estimator under a leakage-checked split, with a permutation null.

    For each fold of ``cv`` a clone of ``estimator`` is fitted on the training samples and
    scored on the test samples. Everything fitted from data —
    normalisation (:class:`~neurodecode.evaluate.baselines.ChannelStandardizer`), spatial
    filters, feature selection, hyper-parameter search — must be a step of ``estimator`` (a
    :class:`~sklearn.pipeline.Pipeline`), so that it is fitted on the training samples of each
    fold only. Normalising the whole data set beforehand leaks test statistics into training.

    The chance level follows :func:`sklearn.model_selection.permutation_test_score`: the
    targets are permuted and the same cross-validation is run again, ``n_permutations`` times;
    each run's mean-over-folds score is one draw of the null distribution.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Cloned for every fit; it is never fitted itself.
    X : array-like of shape (n_samples, ...)
        Features, epochs (n_samples, n_channels, n_times) or anything the estimator takes.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Targets.
    samples : DataFrame
        The sample table (one row per sample, columns ``recording``, ``subject``, ``session``,
        ``run``, ``start``, ``stop``).
    cv : cross-validator
        A rule of :mod:`neurodecode.data.splits` (it receives ``samples`` as ``groups`` and
        checks its own folds), or any object with ``split(X, y, groups)``: a scikit-learn
        splitter receives the 1-D ``groups`` column below, and its folds are checked by
        :func:`~neurodecode.data.splits.check_split` (each recording must stay on one side).
        A foreign splitter with a ``within_recording = True`` attribute receives ``samples``
        like a rule and must keep its ``gap`` attribute (None or absent: the default gap of
        :func:`~neurodecode.data.splits.default_gap`).
    groups : str or sequence of str, optional
        Column(s) of ``samples`` whose values are the ``groups`` of a scikit-learn splitter
        (``"subject"`` for ``GroupKFold``/``LeaveOneGroupOut`` across subjects, ``"run"``, ...;
        several columns are combined). Default None: the splitter gets ``groups=None``.
        Refused with a rule of :mod:`neurodecode.data.splits` (use its ``by``).
    metrics : sequence of str or mapping of str to Metric
        Names in :data:`~neurodecode.evaluate.metrics.METRICS`, or ``{name: Metric(...)}``.
    n_permutations : int
        Permutation runs of the whole cross-validation; 0 skips them (no chance, no p-value).
        The smallest possible p-value is ``1 / (n_permutations + 1)``.
    permutation : {"auto", "shuffle", "within", "circular_shift"}
        Permutation scheme, within/along each recording; ``"auto"`` uses
        :func:`~neurodecode.evaluate.permutation.default_scheme` (``"circular_shift"`` for
        continuous targets and overlapping windows, ``"within"`` otherwise).
    random_state : int
        Seed of the permutations.
    n_jobs : int, optional
        Processes for :class:`joblib.Parallel` over all (permutation, fold) fits.
    fit_params : mapping of str to array-like, optional
        Extra arguments of ``estimator.fit``, one value per sample (sliced with the training
        rows of each fold), e.g. ``{"contrastiveembedding__positions": sample_positions(...)}``
        for a pipeline whose embedding must not window across removed test blocks.
    verbose : bool, str, int or None
        MNE log level of every fit and prediction, in MNE's convention (``True`` = ``"info"``);
        ``None`` runs MNE at ``"warning"`` unless ``MNE_LOGGING_LEVEL`` or
        :func:`mne.set_log_level` says otherwise (:func:`neurodecode.verbosity.mne_verbose`).
        Applied in joblib workers too.
    progress : bool, optional
        Progress bar over the (1 + ``n_permutations``) × folds fits on stderr; ``None`` shows
        it only when stderr is an interactive terminal (:func:`neurodecode.verbosity.progress`).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    LeakageError
        When a fold puts samples of one recording on both sides (or closer than the rule's gap).
    ValueError
        When ``groups`` names a column the table lacks, or is given with a neurodecode rule.
    """
    X, y = np.asarray(X), np.asarray(y)
    if not isinstance(samples, pd.DataFrame):
        raise TypeError(f"samples must be the sample table (DataFrame), got {type(samples)}")
    samples = samples.reset_index(drop=True)
    if not len(X) == len(y) == len(samples):
        raise ValueError(f"X, y and samples have {len(X)}, {len(y)} and {len(samples)} rows")
    scorers = _resolve_metrics(metrics)
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}")
    if permutation != "auto" and permutation not in SCHEMES:
        raise ValueError(f"permutation must be 'auto' or one of {SCHEMES}, got {permutation!r}")
    scheme = default_scheme(y, samples) if permutation == "auto" else permutation
    fit_params = dict(fit_params or {})
    for key, value in fit_params.items():
        fit_params[key] = value = np.asarray(value)
        if len(value) != len(X):
            raise ValueError(f"fit_params[{key!r}] has {len(value)} rows, X has {len(X)}")

    cols = group_columns(groups, samples, cv)
    folds = splitter_folds(cv, samples, groups=cols or None, X=X, y=y)
    if not folds:
        raise ValueError(f"{_describe(cv)} produced no fold")

    level = verbosity.mne_log_level(verbose)
    targets = [y] + permuted_targets(y, n_permutations, scheme=scheme,
                                     groups=samples["recording"].to_numpy(),
                                     order=samples["start"].to_numpy(), random_state=random_state)
    fits = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_fit_score)(estimator, X, t, train, test, scorers, fit_params, level)
        for t in targets for train, test in folds
    )
    what = f"{len(folds)} folds" + (f" × {len(targets)} runs" if n_permutations else "")
    flat = list(verbosity.progress(fits, len(targets) * len(folds),
                                   f"cross-validation ({what})", progress))
    scores = np.asarray(flat, dtype=float).reshape(len(targets), len(folds), len(scorers))

    held_out = _test_groups(cv, samples, [test for _, test in folds], cols)
    rows = [
        {"fold": k, "metric": name, "score": scores[0, k, j], "n_train": len(train),
         "n_test": len(test), "test_groups": held_out[k]}
        for k, (train, test) in enumerate(folds) for j, name in enumerate(scorers)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a permutation whose folds are all NaN
        null = np.nanmean(scores[1:], axis=1)
    return EvaluationResult(
        folds=pd.DataFrame(rows, columns=list(_FOLD_COLUMNS)),
        null={name: null[:, j] for j, name in enumerate(scorers)},
        greater_is_better={name: m.greater_is_better for name, m in scorers.items()},
        estimator=_describe(estimator),
        cv=_describe(cv),
        permutation=scheme if n_permutations else "none",
        random_state=random_state,
    )


def _resolve_metrics(metrics: Sequence[str] | Mapping[str, Metric]) -> dict[str, Metric]:
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError("no metric requested")
    if isinstance(metrics, Mapping):
        return {str(k): Metric(*v) for k, v in metrics.items()}
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    return {m: METRICS[m] for m in metrics}


def _fit_score(estimator: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray,
               test: np.ndarray, scorers: Mapping[str, Metric],
               fit_params: Mapping[str, np.ndarray] | None = None,
               level: int | None = None) -> list[float]:
    """Fit a clone on ``train``, return each metric on ``test``; MNE logs at ``level``."""
    params = {k: v[train] for k, v in (fit_params or {}).items()}
    with verbosity.mne_verbose(level):
        model = clone(estimator).fit(X[train], y[train], **params)
        outputs: dict[str, np.ndarray] = {}
        scores = []
        for name, metric in scorers.items():
            if metric.needs not in outputs:
                outputs[metric.needs] = _output(model, X[test], metric.needs, name)
            kwargs = {} if metric.needs == "predict" else {"labels": model.classes_}
            scores.append(float(metric.func(y[test], outputs[metric.needs], **kwargs)))
    return scores


def _output(model: Any, X: np.ndarray, needs: str, name: str) -> np.ndarray:
    if needs == "predict":
        return model.predict(X)
    if needs == "score" and hasattr(model, "decision_function"):
        return model.decision_function(X)
    if needs in ("score", "proba") and hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    what = "decision_function or predict_proba" if needs == "score" else "predict_proba"
    raise TypeError(f"metric {name!r} needs {what}, which {type(model).__name__} lacks")


def _test_groups(cv: Any, samples: pd.DataFrame, tests: list[np.ndarray],
                 group_cols: list[str]) -> list[str]:
    by = getattr(cv, "by", None)
    cols = (list(group_cols) if group_cols else ["recording"] if by is None
            else [by] if isinstance(by, str) else list(by))
    keys = group_keys(samples, cols)
    return [", ".join(pd.unique(keys[test])) for test in tests]


def _describe(obj: Any) -> str:
    """One-line description: the estimator's repr, or a dataclass's fields (tables summarised)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        parts = []
        for f in fields(obj):
            value = getattr(obj, f.name)
            text = (f"<table of {len(value)} rows>" if isinstance(value, pd.DataFrame)
                    else repr(value))
            parts.append(f"{f.name}={text}")
        return f"{type(obj).__name__}({', '.join(parts)})"
    return " ".join(repr(obj).split())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
