"""Position-aware spatial attention into fixed virtual channels (Défossez et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pydantic
import torch
from torch import nn

from ..registry import PartParams, register
from .base import SubjectAdapter, SubjectSpec

__all__ = ["SpatialAttention", "fourier_features"]


def fourier_features(positions: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Fourier features of positions in ``[-1, 1]^3``.

    Every frequency triple ``(k, l, m)`` in ``0 .. n_freqs - 1`` gives ``cos`` and ``sin`` of
    ``pi * (k x + l y + m z)``, so ``2 * n_freqs**3`` features (the 3-D version of the 2-D
    features of Défossez et al.).

    Parameters
    ----------
    positions : Tensor
        ``(n, 3)``.
    n_freqs : int

    Returns
    -------
    Tensor
        ``(n, 2 * n_freqs**3)``.
    """
    k = torch.arange(n_freqs, dtype=positions.dtype, device=positions.device)
    grid = torch.stack(torch.meshgrid(k, k, k, indexing="ij"), -1).reshape(-1, 3)
    phase = math.pi * positions @ grid.T
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class _SubjectLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)


@register("adapter", "spatial_attention")
class SpatialAttention(SubjectAdapter):
    """Any montage with channel positions → ``latent_dim`` virtual channels, + a subject layer.

    Each virtual channel ``j`` is a softmax-weighted sum of the input channels, with weights
    ``softmax_i(a_j(p_i))`` where ``a_j`` is a learnt linear function of the Fourier features
    of channel ``i``'s position ``p_i`` (positions centred and scaled by the training
    subjects' frame, stored with the model). The weights depend only on positions, so a
    montage never seen gets its virtual channels with no new weights (zero-shot). Then a
    per-subject linear layer (initialised to the identity); subjects without one go through
    the shared layer, which is trained on the samples routed to it (the training's
    ``subject_dropout``). Masked channels (padding, channel dropout, channels without a
    position) are left out of the softmax.

    Parameters
    ----------
    params : SpatialAttention.Params
        ``n_freqs`` (Fourier frequencies per axis), ``subject_layer``, ``dropout`` (on the
        virtual channels), ``position_scale`` (None: from the training subjects).
    latent_dim : int
        Number of virtual channels.
    """

    needs_positions = True
    zero_shot = True

    class Params(PartParams):
        n_freqs: int = pydantic.Field(4, ge=1, le=12)
        subject_layer: bool = True
        dropout: float = pydantic.Field(0.0, ge=0, lt=1)
        position_scale: float | None = pydantic.Field(None, gt=0)

    def __init__(self, params: Params, *, latent_dim: int) -> None:
        super().__init__(params, latent_dim=latent_dim)
        self.logits = nn.Linear(2 * params.n_freqs**3, latent_dim)
        self.shared_layer = _SubjectLayer(latent_dim) if params.subject_layer else None
        self.drop = nn.Dropout(params.dropout)
        self.register_buffer("centre", torch.zeros(3))
        self.register_buffer("scale", torch.tensor(float(params.position_scale or 0.0)))
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(self, specs: Mapping[str, SubjectSpec]) -> None:
        """Fix the position frame (centre and scale) from the training subjects."""
        pos = np.vstack([s.position_array() for s in specs.values() if s.positions is not None])
        pos = pos[np.isfinite(pos).all(axis=1)]
        if not len(pos):
            raise ValueError("the spatial_attention adapter needs channel positions")
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        self.centre.copy_(torch.as_tensor((lo + hi) / 2, dtype=torch.float32))
        if self.params.position_scale is None:
            self.scale.fill_(float(np.abs(pos - (lo + hi) / 2).max()) * 1.1 or 1.0)
        self._features.clear()

    def make_subject(self, spec: SubjectSpec) -> nn.Module:
        if self.shared_layer is None:
            return nn.Identity()
        return _SubjectLayer(self.latent_dim)

    def _subject_features(self, subject: str, device: torch.device
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._features.get(subject)
        if cached is None or cached[0].device != device:
            if float(self.scale) == 0.0:
                raise RuntimeError("call prepare() with the training subjects first")
            pos = torch.as_tensor(self.specs[subject].position_array(), device=device)
            valid = torch.isfinite(pos).all(dim=1)
            pos = torch.where(valid[:, None], (pos - self.centre) / self.scale, 0.0)
            cached = (fourier_features(pos.clamp(-1.5, 1.5), self.params.n_freqs), valid)
            self._features[subject] = cached
        return cached

    def attention(self, subject: str, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Weights ``(batch or 1, latent_dim, n_channels)`` of the virtual channels."""
        feats, valid = self._subject_features(subject, self.logits.weight.device)
        logits = self.logits(feats).T[None]  # (1, virtual, channels)
        keep = valid[None, None, :]
        if mask is not None:
            keep = keep & mask[:, None, :]
        return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor, subject: str, mask: torch.Tensor | None = None,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
        """Virtual channels of one subject's samples.

        Parameters
        ----------
        x : Tensor
            ``(batch, time, n_channels)``.
        subject : str
        mask : Tensor, optional
            bool ``(batch, n_channels)``, False for channels to leave out.
        unknown : Tensor, optional
            bool ``(batch,)``: samples to route through the shared layer.
        """
        z = torch.einsum("bvc,btc->btv", self.attention(subject, mask), x)
        z = self.drop(z)
        if self.shared_layer is None:
            return z
        if subject not in self.subjects:
            return self.shared_layer.linear(z)
        own = self.subjects[subject].linear(z)
        if unknown is None or not bool(unknown.any()):
            return own
        return torch.where(unknown[:, None, None], self.shared_layer.linear(z), own)
