"""A classification head: dropout, a linear layer, cross-entropy, balanced accuracy."""

from __future__ import annotations

import warnings

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ..registry import PartParams, register
from .base import Head

__all__ = ["ClassifyHead"]


def _labels(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1).astype(np.int64)


@register("head", "classify")
class ClassifyHead(Head):
    """Logits of ``n_outputs`` classes.

    Parameters
    ----------
    params : ClassifyHead.Params
    in_features : int
        Width of the backbone's features.
    n_outputs : int
        Number of classes (>= 2); targets are class indices ``0 .. n_outputs - 1``.
    """

    task = "classify"
    metric = "balanced_accuracy"

    class Params(PartParams):
        """Hyper-parameters of :class:`ClassifyHead`.

        Attributes
        ----------
        dropout : float
            Dropout on the features before the linear layer.
        label_smoothing : float
            Of the cross-entropy (0: none).
        """

        dropout: float = pydantic.Field(0.0, ge=0, lt=1)
        label_smoothing: float = pydantic.Field(0.0, ge=0, lt=1)

    def __init__(self, params: ClassifyHead.Params, *, in_features: int, n_outputs: int
                 ) -> None:
        super().__init__(params, in_features=in_features, n_outputs=n_outputs)
        if self.n_outputs < 2:
            raise ValueError(f"classify needs n_outputs >= 2 classes, got {self.n_outputs}")
        self.dropout = nn.Dropout(params.dropout)
        self.linear = nn.Linear(self.in_features, self.n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_outputs)``."""
        return self.linear(self.dropout(features))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (with label smoothing) of logits against class indices."""
        return F.cross_entropy(output, target.reshape(-1).long(),
                               label_smoothing=self.params.label_smoothing)

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Class indices (int64)."""
        return output.detach().argmax(dim=-1).cpu().numpy().astype(np.int64)

    def score(self, output: torch.Tensor, target: torch.Tensor | np.ndarray) -> float:
        """Balanced accuracy (:func:`sklearn.metrics.balanced_accuracy_score`)."""
        with warnings.catch_warnings():
            # a small set may miss classes that the model predicts: the score is still defined
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            return float(balanced_accuracy_score(_labels(target), self.predict(output)))
