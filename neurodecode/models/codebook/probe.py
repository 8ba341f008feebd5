"""A linear probe on frozen codebook-pretrained features: few-shot decoding without fine-tuning.

Fine-tuning a whole pretrained network on a few dozen labelled trials per subject overfits in a
few epochs, and early stopping on a handful of validation trials picks its epoch by chance.
The standard read-out of a self-supervised representation is a linear probe instead: the
pretrained adapter and backbone stay frozen, and a regularised multinomial logistic regression
is fitted on their features, pooled over subjects (one classifier for all: the pretrained
adapters map every montage into the same token space). Its regularisation is chosen by
cross-validation inside the training trials only, over contiguous blocks in time of every
subject (no shuffling of neighbouring trials between folds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ...data.subjects import SubjectTrials
from ...evaluate.metrics import balanced_accuracy
from ..decoder import TrialsLike, as_subject_dict
from .pretrainer import FEATURE_LAYERS, CodebookPretrainer

__all__ = ["LinearProbe", "block_folds"]


def block_folds(lengths: Sequence[int], n_folds: int) -> np.ndarray:
    """Fold of every sample: each subject's samples (in time order) cut into ``n_folds``
    contiguous blocks, the subjects' samples concatenated in order.

    Parameters
    ----------
    lengths : sequence of int
        Samples per subject.
    n_folds : int

    Returns
    -------
    ndarray of int
        ``(sum(lengths),)``, values ``0 .. n_folds - 1``.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    return np.concatenate([np.arange(n) * n_folds // max(n, 1) for n in lengths]
                          or [np.zeros(0, int)]).astype(int)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic regression on the frozen features of a :class:`CodebookPretrainer`.

    Parameters
    ----------
    pretrained : CodebookPretrainer or path-like
        A fitted pretrainer, or its checkpoint (:meth:`CodebookPretrainer.save`). Every
        subject to decode must have been in its pretraining (its adapter is used frozen).
    layer : {"embed", "tokens"}
        Which features (:meth:`CodebookPretrainer.features`).
    regions : sequence of str, optional
        Single-channel models: pool the channels' tokens within each of these anatomical
        regions (:meth:`CodebookPretrainer.features`) instead of over all channels.
    Cs : sequence of float
        Inverse L2 strengths tried.
    n_folds : int
        Contiguous blocks per subject for choosing ``C`` (fewer when a class is too rare).
    max_iter : int

    Attributes
    ----------
    pretrainer_ : CodebookPretrainer
    classes_ : ndarray of str
    model_ : Pipeline
        Standardisation + logistic regression, refitted on all the training trials with the
        chosen ``C``.
    C_ : float
        The regularisation chosen (best mean balanced accuracy over the folds; the
        standardisation is refitted within every fold).
    cv_scores_ : ndarray
        That mean for every value of ``Cs``.
    n_features_ : int
    """

    def __init__(self, pretrained: CodebookPretrainer | str | os.PathLike, *,
                 layer: str = "embed", regions: Sequence[str] | None = None,
                 Cs: Sequence[float] = (0.001, 0.01, 0.1, 1.0), n_folds: int = 5,
                 max_iter: int = 2000) -> None:
        self.pretrained = pretrained
        self.layer = layer
        self.regions = regions
        self.Cs = Cs
        self.n_folds = n_folds
        self.max_iter = max_iter

    def _features(self, trials: SubjectTrials) -> np.ndarray:
        return self.pretrainer_.features(trials, layer=self.layer, regions=self.regions)

    def fit(self, train: TrialsLike, val: TrialsLike | None = None, *,
            classes: Sequence[str] | None = None) -> LinearProbe:
        """Fit on every subject's labelled trials (``val``, if given, joins them: the probe
        chooses its regularisation by cross-validation, not on held-out trials).

        Parameters
        ----------
        train, val : SubjectTrials, sequence or mapping of them
        classes : sequence of str, optional
            Every class (default: those in the trials).

        Returns
        -------
        LinearProbe
            ``self``.
        """
        if self.layer not in FEATURE_LAYERS:
            raise ValueError(f"layer must be one of {FEATURE_LAYERS}, got {self.layer!r}")
        pre = self.pretrained
        self.pretrainer_ = (pre if isinstance(pre, CodebookPretrainer)
                            else CodebookPretrainer.load(pre))
        parts = _subject_parts(as_subject_dict(train), as_subject_dict(val))
        if not parts:
            raise ValueError("no training subject")
        missing = sorted(set(parts) - set(self.pretrainer_.subjects_))
        if missing:
            raise ValueError(f"subjects {missing} were not in the pretraining (it has "
                             f"{self.pretrainer_.subjects_}): a linear probe uses their "
                             "pretrained adapters")
        X = np.concatenate([self._features(t) for ts in parts.values() for t in ts])
        y = np.concatenate([_labels(t) for ts in parts.values() for t in ts])
        found = set(y)
        self.classes_ = np.array(sorted(found if classes is None else map(str, classes)))
        if found - set(self.classes_):
            raise ValueError(f"labels {sorted(found - set(self.classes_))} are not among the "
                             f"classes {list(self.classes_)}")
        if len(found) < 2:
            raise ValueError("the training trials hold one class only")
        rarest = int(min(np.sum(y == c) for c in found))
        lengths = [sum(len(t) for t in ts) for ts in parts.values()]
        folds = block_folds(lengths, max(2, min(self.n_folds, rarest)))
        search = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=self.max_iter)),
            {"logisticregression__C": list(self.Cs)}, cv=PredefinedSplit(folds),
            scoring="balanced_accuracy")
        search.fit(X, y)
        self.model_: Pipeline = search.best_estimator_
        self.C_ = float(search.best_params_["logisticregression__C"])
        self.cv_scores_ = search.cv_results_["mean_test_score"].astype(float)
        self.n_features_ = int(X.shape[1])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this LinearProbe is not fitted: call fit()")

    def decision_function(self, trials: SubjectTrials) -> np.ndarray:
        """Class log-probabilities ``(n, n_classes)``, columns in ``classes_`` order."""
        self._check_fitted()
        logp = self.model_.predict_log_proba(self._features(trials))
        out = np.full((len(logp), len(self.classes_)), -np.inf)
        index = {c: i for i, c in enumerate(self.classes_)}
        for j, c in enumerate(self.model_.classes_):
            out[:, index[c]] = logp[:, j]
        return out

    def predict(self, trials: SubjectTrials) -> np.ndarray:
        """Predicted class names of one subject's trials."""
        scores = self.decision_function(trials)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, trials: SubjectTrials) -> float:
        """Balanced accuracy on one subject's labelled trials."""
        return float(balanced_accuracy(_labels(trials), self.predict(trials)))


def _labels(trials: SubjectTrials) -> np.ndarray:
    if trials.y is None:
        raise ValueError(f"subject {trials.subject}: trials have no labels")
    return np.asarray(trials.y).astype(str)


def _subject_parts(train: Mapping[str, SubjectTrials], val: Mapping[str, SubjectTrials]
                   ) -> dict[str, list[SubjectTrials]]:
    """Each subject's training trials, then its validation trials (later in time)."""
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise ValueError(f"validation subjects {unknown} have no training trials")
    return {s: [t, val[s]] if s in val else [t] for s, t in train.items()}
