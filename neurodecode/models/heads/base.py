"""What every head is: features to predictions, with its loss and its score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Head"]


class Head(nn.Module):
    """Maps features ``(batch, in_features)`` to the output of one task.

    Built as ``cls(params, in_features=..., n_outputs=...)`` (``n_outputs``: classes, target
    columns or embedding width). Subclasses implement :meth:`forward`, :meth:`loss`,
    :meth:`predict` and :meth:`score`.

    Attributes
    ----------
    task : {"classify", "regress", "embed"}
        What the head predicts (a model config's ``task`` must match).
    metric : str
        Name of :meth:`score`'s figure (higher is better).
    """

    task: str
    metric: str

    def __init__(self, params: Any, *, in_features: int, n_outputs: int) -> None:
        super().__init__()
        self.params = params
        self.in_features = int(in_features)
        self.n_outputs = int(n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss of a batch (a scalar)."""
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Predictions as numpy: class indices, target values or embeddings."""
        raise NotImplementedError

    def score(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """The head's metric on a set of outputs (higher is better)."""
        raise NotImplementedError
