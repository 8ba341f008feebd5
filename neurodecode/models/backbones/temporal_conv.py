"""A temporal convolution backbone for time series (EEG, MEG, sEEG; ShallowFBCSPNet/EEGNet-like).

The adapters have already mixed each subject's sensors into the shared latent, so the latent
features are "virtual channels": the first block convolves them over time
(``Conv1d(latent, n_filters, kernel_size)``, i.e. a spatio-temporal filter bank), normalises
them, and then either

* ``square_log``: squares, averages over time windows and takes the log, the band-power
  features of ShallowFBCSPNet (Schirrmeister et al., Hum. Brain Mapp. 2017); or
* ``elu``: an ELU and an average pool, as in EEGNet (Lawhern et al., J. Neural Eng. 2018).

Further blocks (``depth > 1``) repeat ``Conv1d -> BatchNorm -> ELU -> AvgPool``. After dropout,
an adaptive average pool leaves ``n_pool_out`` steps, which are flattened. Every kernel and pool
is clipped to the length it sees, so the backbone works for any number of time steps, down to a
single one.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn

from ..registry import PartParams, register
from .base import Backbone

__all__ = ["TemporalConv"]

#: Floor of the pooled power before its log (as ShallowFBCSPNet's ``safe_log``).
LOG_EPS = 1e-6


class _SquareLogPool(nn.Module):
    """``log(clamp(AvgPool(x ** 2)))``: log band power over time windows."""

    def __init__(self, pool: int, stride: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool1d(pool, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.pool(x * x), min=LOG_EPS))


@register("backbone", "temporal_conv")
class TemporalConv(Backbone):
    """Temporal convolutions over the latent channels, pooled to a fixed number of steps.

    Parameters
    ----------
    params : TemporalConv.Params
    in_features : int
        Latent width (the virtual channels).
    n_times : int
        Time steps per sample; kernels and pools are clipped to fit it. Samples must have at
        least ``n_times`` steps.

    Attributes
    ----------
    out_features : int
        ``n_filters * n_pool_out``.
    kernel_sizes, pool_sizes : list of int
        The (clipped) kernel and pool size of each block.
    """

    class Params(PartParams):
        """Hyper-parameters of :class:`TemporalConv`.

        Attributes
        ----------
        n_filters : int
            Convolution filters of every block.
        kernel_size : int
            Temporal kernel of every block (clipped to the steps the block sees).
        pool_size, pool_stride : int
            Average pool of every block (the size is clipped like the kernel).
        nonlinearity : {"square_log", "elu"}
            Of the first block: log power (ShallowFBCSPNet) or ELU (EEGNet).
        depth : int
            Convolution blocks (the later ones use ELU).
        dropout : float
            Dropout before the final pool.
        n_pool_out : int
            Time steps left by the final adaptive average pool.
        """

        n_filters: int = pydantic.Field(40, ge=1)
        kernel_size: int = pydantic.Field(25, ge=1)
        pool_size: int = pydantic.Field(15, ge=1)
        pool_stride: int = pydantic.Field(5, ge=1)
        nonlinearity: Literal["square_log", "elu"] = "square_log"
        depth: int = pydantic.Field(1, ge=1, le=8)
        dropout: float = pydantic.Field(0.5, ge=0, lt=1)
        n_pool_out: int = pydantic.Field(4, ge=1)

    def __init__(self, params: TemporalConv.Params, *, in_features: int, n_times: int) -> None:
        super().__init__(params, in_features=in_features, n_times=n_times)
        if self.n_times < 1:
            raise ValueError(f"temporal_conv needs n_times >= 1, got {self.n_times}")
        blocks: list[nn.Module] = []
        self.kernel_sizes: list[int] = []
        self.pool_sizes: list[int] = []
        length, channels = self.n_times, self.in_features
        for i in range(params.depth):
            kernel = min(params.kernel_size, length)
            length = length - kernel + 1
            pool = min(params.pool_size, length)
            length = (length - pool) // params.pool_stride + 1
            self.kernel_sizes.append(kernel)
            self.pool_sizes.append(pool)
            if i == 0 and params.nonlinearity == "square_log":
                activation: list[nn.Module] = [_SquareLogPool(pool, params.pool_stride)]
            else:
                activation = [nn.ELU(), nn.AvgPool1d(pool, params.pool_stride)]
            blocks.append(nn.Sequential(
                nn.Conv1d(channels, params.n_filters, kernel, bias=False),
                nn.BatchNorm1d(params.n_filters),
                *activation,
            ))
            channels = params.n_filters
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(params.dropout)
        self.pool = nn.AdaptiveAvgPool1d(params.n_pool_out)
        self.out_features = params.n_filters * params.n_pool_out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` ``(batch, time, in_features)`` to ``(batch, n_filters * n_pool_out)``."""
        if z.ndim != 3 or z.shape[2] != self.in_features:
            raise ValueError(f"temporal_conv expects (batch, time, {self.in_features}), "
                             f"got {tuple(z.shape)}")
        if z.shape[1] < self.n_times:
            raise ValueError(f"temporal_conv was built for {self.n_times} time steps, got "
                             f"{z.shape[1]}")
        x = self.blocks(z.transpose(1, 2))
        return self.pool(self.dropout(x)).flatten(1)
