"""No fusion: each subject's own channels, placed in the first slots of the latent."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import PartParams, register
from .base import SubjectAdapter, SubjectSpec

__all__ = ["Channels"]


@register("adapter", "channels")
class Channels(SubjectAdapter):
    """The identity per channel: subject ``s``'s ``C_s`` channels fill latent slots ``0..C_s-1``.

    For backbones that treat every channel alone (single-channel tokens, as in BrainBERT or
    Brant): the latent is the subject's own channels, zero beyond its channel count, and there
    is nothing per subject to learn (so any subject is served, zero-shot). ``latent_dim`` must
    be at least the largest channel count.

    Parameters
    ----------
    params : Channels.Params
        (none)
    latent_dim : int
        Slots of the latent (the most channels a subject may have).
    """

    zero_shot = True
    invertible = True

    class Params(PartParams):
        pass

    def make_subject(self, spec: SubjectSpec) -> nn.Module:
        if spec.n_channels > self.latent_dim:
            raise ValueError(f"the channels adapter has {self.latent_dim} slots (latent_dim) "
                             f"and the subject has {spec.n_channels} channels: raise latent_dim")
        return nn.Identity()

    def add_subject(self, name: str, spec: SubjectSpec, *, weights: bool = True) -> None:
        self.make_subject(spec)  # checks the channel count
        super().add_subject(name, spec, weights=False)

    def forward(self, x: torch.Tensor, subject: str, mask: torch.Tensor | None = None,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[2] > self.latent_dim:
            raise ValueError(f"subject {subject!r}: {x.shape[2]} channels for "
                             f"{self.latent_dim} slots")
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        return F.pad(x, (0, self.latent_dim - x.shape[2]))

    def decode(self, z: torch.Tensor, subject: str) -> torch.Tensor:
        """The subject's channels of a latent (the inverse of :meth:`forward`)."""
        return z[..., : self.specs[subject].n_channels]

    def present_slots(self, name: str) -> torch.Tensor:
        """The first ``n_channels`` slots."""
        return torch.arange(self.latent_dim) < self.specs[name].n_channels
