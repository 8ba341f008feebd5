"""Evaluation: metrics, permutation chance levels, leakage-checked CV and classical baselines.

- :mod:`~neurodecode.evaluate.metrics` — classification, regression and retrieval scores and
  the :data:`~neurodecode.evaluate.metrics.METRICS` registry;
- :mod:`~neurodecode.evaluate.permutation` — chance level and p-value by label permutation
  (global, within recording, circular shift);
- :mod:`~neurodecode.evaluate.cv` — :func:`cross_validate` and :class:`EvaluationResult`;
- :mod:`~neurodecode.evaluate.baselines` — band power, CSP, ERP, xDAWN, ridge, logistic and
  kNN pipelines;
- :mod:`~neurodecode.evaluate.cleaning` — :class:`FoldClean`, cleaning fitted on training folds;
- :mod:`~neurodecode.evaluate.spike_stats` — the rate-only Poisson baseline of spike tokens,
  connectivity AUROC and generated-vs-real spike statistics.
"""

from neurodecode.evaluate.cleaning import FoldClean
from neurodecode.evaluate.cv import EvaluationResult, cross_validate
from neurodecode.evaluate.metrics import METRICS, Metric
from neurodecode.evaluate.permutation import PermutationResult, permutation_test

__all__ = [
    "METRICS",
    "EvaluationResult",
    "FoldClean",
    "Metric",
    "PermutationResult",
    "cross_validate",
    "permutation_test",
]
