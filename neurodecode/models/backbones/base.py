"""What every backbone is: the shared network from latent sequences to features."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """Maps the shared latent ``(batch, time, in_features)`` to features ``(batch, out_features)``.

    Subclasses set :attr:`out_features` in ``__init__`` and implement ``forward``. They are built
    by :func:`neurodecode.models.registry.build` as ``cls(params, in_features=..., n_times=...)``.

    Parameters
    ----------
    params : PartParams
        The backbone's validated hyper-parameters.
    in_features : int
        Latent width (the adapter's output).
    n_times : int
        Time steps per sample.
    """

    out_features: int

    def __init__(self, params: Any, *, in_features: int, n_times: int) -> None:
        super().__init__()
        self.params = params
        self.in_features = int(in_features)
        self.n_times = int(n_times)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
