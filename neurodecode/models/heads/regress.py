"""A regression head: a linear layer, MSE or Huber loss, R² averaged over outputs."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from torch import nn

from ..registry import PartParams, register
from .base import Head

__all__ = ["RegressHead"]


@register("head", "regress")
class RegressHead(Head):
    """``n_outputs`` continuous targets.

    Parameters
    ----------
    params : RegressHead.Params
    in_features : int
        Width of the backbone's features.
    n_outputs : int
        Target columns; targets are ``(batch, n_outputs)`` (or ``(batch,)`` for one).
    """

    task = "regress"
    metric = "r2"

    class Params(PartParams):
        """Hyper-parameters of :class:`RegressHead`.

        Attributes
        ----------
        loss : {"mse", "huber"}
        huber_delta : float
            Where the Huber loss turns from quadratic to linear.
        dropout : float
            Dropout on the features before the linear layer.
        """

        loss: Literal["mse", "huber"] = "mse"
        huber_delta: float = pydantic.Field(1.0, gt=0)
        dropout: float = pydantic.Field(0.0, ge=0, lt=1)

    def __init__(self, params: RegressHead.Params, *, in_features: int, n_outputs: int
                 ) -> None:
        super().__init__(params, in_features=in_features, n_outputs=n_outputs)
        if self.n_outputs < 1:
            raise ValueError(f"regress needs n_outputs >= 1, got {self.n_outputs}")
        self.dropout = nn.Dropout(params.dropout)
        self.linear = nn.Linear(self.in_features, self.n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted values ``(batch, n_outputs)``."""
        return self.linear(self.dropout(features))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error or Huber loss over every value of the batch."""
        target = target.to(output.dtype).reshape(output.shape)
        if self.params.loss == "huber":
            return F.huber_loss(output, target, delta=self.params.huber_delta)
        return F.mse_loss(output, target)

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Predicted values ``(batch, n_outputs)`` (float)."""
        return output.detach().float().cpu().numpy()

    def score(self, output: torch.Tensor, target: torch.Tensor | np.ndarray) -> float:
        """R² averaged over outputs (:func:`sklearn.metrics.r2_score`, uniform average)."""
        if isinstance(target, torch.Tensor):
            target = target.detach().float().cpu().numpy()
        pred = self.predict(output)
        target = np.asarray(target, dtype=np.float64).reshape(pred.shape)
        return float(r2_score(target, pred, multioutput="uniform_average"))
