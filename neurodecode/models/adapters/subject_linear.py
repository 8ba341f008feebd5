"""Per-subject linear and low-rank maps into the shared latent (MindEye2, MindBridge)."""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from ..registry import PartParams, register
from .base import SubjectAdapter, SubjectSpec

__all__ = ["SubjectLinear"]


class _SubjectMap(nn.Module):
    """One subject's weights: channels → latent (and back, when invertible)."""

    def __init__(self, n_channels: int, latent_dim: int, rank: int | None, bias: bool,
                 invertible: bool) -> None:
        super().__init__()
        if rank is None or rank >= min(n_channels, latent_dim):
            self.encode = nn.Linear(n_channels, latent_dim, bias=bias)
        else:
            self.encode = nn.Sequential(nn.Linear(n_channels, rank, bias=False),
                                        nn.Linear(rank, latent_dim, bias=bias))
        self.decode = nn.Linear(latent_dim, n_channels) if invertible else None


@register("adapter", "subject_linear")
class SubjectLinear(SubjectAdapter):
    """A linear (or low-rank) map per subject from its channels to the latent, per time step.

    Subject ``s`` with ``C_s`` channels gets ``W_s`` (``C_s × latent``; with ``rank`` the
    product of ``C_s × rank`` and ``rank × latent`` maps, for subjects with thousands of
    voxels and few samples). Padded channels beyond ``C_s`` are never read. With
    ``invertible``, each subject also gets a decoder ``latent → C_s`` for the cycle
    reconstruction between subjects (MindBridge): :meth:`decode`.

    Parameters
    ----------
    params : SubjectLinear.Params
        ``rank`` (None: full rank), ``bias``, ``dropout`` (on the input channels during
        training), ``invertible``.
    latent_dim : int
    """

    class Params(PartParams):
        rank: int | None = pydantic.Field(None, ge=1)
        bias: bool = True
        dropout: float = pydantic.Field(0.0, ge=0, lt=1)
        invertible: bool = False

    def __init__(self, params: Params, *, latent_dim: int) -> None:
        super().__init__(params, latent_dim=latent_dim)
        self.invertible = params.invertible
        self.drop = nn.Dropout(params.dropout)

    def make_subject(self, spec: SubjectSpec) -> nn.Module:
        p = self.params
        return _SubjectMap(spec.n_channels, self.latent_dim, p.rank, p.bias, p.invertible)

    def forward(self, x: torch.Tensor, subject: str, mask: torch.Tensor | None = None,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        return self.subjects[subject].encode(self.drop(x))

    def decode(self, z: torch.Tensor, subject: str) -> torch.Tensor:
        dec = self.subjects[subject].decode
        if dec is None:
            raise NotImplementedError("pass invertible: true to the subject_linear adapter")
        return dec(z)
