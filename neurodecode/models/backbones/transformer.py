"""A transformer backbone over patches of the latent time series.

The time axis is cut into patches of ``patch`` steps (the last one zero-padded), each embedded
by a strided ``Conv1d`` into ``d_model``; a positional embedding (learned, or fixed sinusoidal)
is added, and ``n_layers`` pre-norm blocks
``x + Dropout(Attention(LayerNorm(x)))``, ``x + Dropout(MLP(LayerNorm(x)))`` follow. The
attention is a small multi-head module whose kernel is
:func:`torch.nn.functional.scaled_dot_product_attention` (fused/flash kernels where available).
The output is a learned CLS token or the mean over patches, after a final LayerNorm.
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import PartParams, register
from .base import Backbone

__all__ = ["MultiHeadSelfAttention", "TimeTransformer", "TransformerBlock", "TransformerParams",
           "sinusoidal_embedding"]


def sinusoidal_embedding(n_positions: int, d_model: int) -> torch.Tensor:
    """Fixed sine/cosine positional embedding (Vaswani et al., 2017).

    Parameters
    ----------
    n_positions, d_model : int

    Returns
    -------
    torch.Tensor
        ``(n_positions, d_model)``: ``sin`` on even columns, ``cos`` on odd ones.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                     * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return table


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on :func:`torch.nn.functional.scaled_dot_product_attention`.

    Parameters
    ----------
    d_model : int
    n_heads : int
        Must divide ``d_model``.
    dropout : float
        Dropout on the attention weights (training only).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over ``x`` ``(batch, tokens, d_model)``."""
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.n_heads, width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attention(LayerNorm(x))``, ``x + MLP(LayerNorm(x))``."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(d_model * mlp_ratio))
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerParams(PartParams):
    """Hyper-parameters every transformer backbone shares.

    Attributes
    ----------
    d_model : int
        Token width (a multiple of ``n_heads``).
    n_heads, n_layers : int
    dropout : float
        On attention weights, the MLP and both residual branches.
    mlp_ratio : float
        MLP hidden width over ``d_model``.
    """

    d_model: int = pydantic.Field(64, ge=1)
    n_heads: int = pydantic.Field(4, ge=1)
    n_layers: int = pydantic.Field(2, ge=0)
    dropout: float = pydantic.Field(0.1, ge=0, lt=1)
    mlp_ratio: float = pydantic.Field(2.0, gt=0)

    @pydantic.model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads})")
        return self


@register("backbone", "transformer")
class TimeTransformer(Backbone):
    """Pre-norm transformer over time patches of the latent.

    Parameters
    ----------
    params : TimeTransformer.Params
    in_features : int
        Latent width.
    n_times : int
        Time steps per sample; the patch is clipped to it and the positional table holds
        ``ceil(n_times / patch)`` patches. Shorter samples are accepted, longer ones are not.

    Attributes
    ----------
    out_features : int
        ``d_model``.
    patch : int
        The (clipped) patch length.
    n_patches : int
    """

    class Params(TransformerParams):
        """Hyper-parameters of :class:`TimeTransformer` (and :class:`TransformerParams`').

        Attributes
        ----------
        patch : int
            Time steps per token (clipped to ``n_times``).
        pool : {"cls", "mean"}
            Output: a learned CLS token, or the mean of the patch tokens.
        positional : {"learned", "sinusoidal"}
        """

        patch: int = pydantic.Field(10, ge=1)
        pool: Literal["cls", "mean"] = "cls"
        positional: Literal["learned", "sinusoidal"] = "learned"

    def __init__(self, params: TimeTransformer.Params, *, in_features: int, n_times: int
                 ) -> None:
        super().__init__(params, in_features=in_features, n_times=n_times)
        if self.n_times < 1:
            raise ValueError(f"transformer needs n_times >= 1, got {self.n_times}")
        d = params.d_model
        self.patch = min(params.patch, self.n_times)
        self.n_patches = math.ceil(self.n_times / self.patch)
        self.embed = nn.Conv1d(self.in_features, d, self.patch, stride=self.patch)
        n_tokens = self.n_patches + (params.pool == "cls")
        if params.pool == "cls":
            self.cls = nn.Parameter(torch.zeros(1, 1, d))
            nn.init.trunc_normal_(self.cls, std=0.02)
        if params.positional == "learned":
            self.position = nn.Parameter(torch.zeros(1, n_tokens, d))
            nn.init.trunc_normal_(self.position, std=0.02)
        else:
            self.register_buffer("position", sinusoidal_embedding(n_tokens, d)[None])
        self.drop = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, params.n_heads, params.mlp_ratio, params.dropout)
            for _ in range(params.n_layers))
        self.norm = nn.LayerNorm(d)
        self.out_features = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` ``(batch, time, in_features)`` to ``(batch, d_model)``."""
        if z.ndim != 3 or z.shape[2] != self.in_features:
            raise ValueError(f"transformer expects (batch, time, {self.in_features}), "
                             f"got {tuple(z.shape)}")
        n_times = z.shape[1]
        if n_times > self.n_times:
            raise ValueError(f"transformer was built for at most {self.n_times} time steps, "
                             f"got {n_times}")
        x = z.transpose(1, 2)
        pad = -n_times % self.patch
        if pad:
            x = F.pad(x, (0, pad))
        tokens = self.embed(x).transpose(1, 2)  # (batch, patches, d_model)
        if self.params.pool == "cls":
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.drop(tokens + self.position[:, : tokens.shape[1]])
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return tokens[:, 0] if self.params.pool == "cls" else tokens.mean(dim=1)
