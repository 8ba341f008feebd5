"""A residual MLP backbone for spatial patterns (fMRI volumes; MindEye-style).

The latent sequence is flattened (time x features) or averaged over time, projected to a hidden
width, and refined by residual blocks ``x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))`` as in
the MLP backbone of MindEye (Scotti et al., NeurIPS 2023), then layer-normalised.
"""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from ..registry import PartParams, register
from .base import Backbone

__all__ = ["ResidualMLP"]


class _ResidualBlock(nn.Module):
    """``x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register("backbone", "residual_mlp")
class ResidualMLP(Backbone):
    """Residual MLP on the flattened (or time-averaged) latent.

    Parameters
    ----------
    params : ResidualMLP.Params
    in_features : int
        Latent width.
    n_times : int
        Time steps per sample (1 for a single fMRI volume). Without ``pool_time`` the input
        layer has ``n_times * in_features`` inputs, so every sample must have ``n_times`` steps.

    Attributes
    ----------
    out_features : int
        ``params.hidden``.
    """

    class Params(PartParams):
        """Hyper-parameters of :class:`ResidualMLP`.

        Attributes
        ----------
        hidden : int
            Width of the hidden layers and of the output.
        n_blocks : int
            Residual blocks (0: a single linear layer and the final LayerNorm).
        dropout : float
            Dropout inside each residual block.
        pool_time : bool
            Average the latent over time instead of flattening it (any number of steps).
        """

        hidden: int = pydantic.Field(256, ge=1)
        n_blocks: int = pydantic.Field(2, ge=0)
        dropout: float = pydantic.Field(0.3, ge=0, lt=1)
        pool_time: bool = False

    def __init__(self, params: ResidualMLP.Params, *, in_features: int, n_times: int) -> None:
        super().__init__(params, in_features=in_features, n_times=n_times)
        n_in = self.in_features if params.pool_time else self.in_features * self.n_times
        self.input = nn.Linear(n_in, params.hidden)
        self.blocks = nn.Sequential(
            *(_ResidualBlock(params.hidden, params.dropout) for _ in range(params.n_blocks)))
        self.norm = nn.LayerNorm(params.hidden)
        self.out_features = params.hidden

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` ``(batch, time, in_features)`` to ``(batch, hidden)``."""
        if z.ndim != 3 or z.shape[2] != self.in_features:
            raise ValueError(f"residual_mlp expects (batch, time, {self.in_features}), "
                             f"got {tuple(z.shape)}")
        if self.params.pool_time:
            x = z.mean(dim=1)
        else:
            if z.shape[1] != self.n_times:
                raise ValueError(f"residual_mlp was built for {self.n_times} time steps, got "
                                 f"{z.shape[1]} (set pool_time: true for variable lengths)")
            x = z.reshape(z.shape[0], -1)
        return self.norm(self.blocks(self.input(x)))
