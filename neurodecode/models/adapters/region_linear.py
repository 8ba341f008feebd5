"""A linear fusion per anatomical region (Du-IN's region tokens), any implant per subject."""

from __future__ import annotations

import math

import pydantic
import torch
from torch import nn

from ..registry import PartParams, register
from .base import SubjectAdapter, SubjectSpec

__all__ = ["RegionLinear"]


class _RegionMap(nn.Module):
    """One subject's weights: each region's channels → that region's virtual channels."""

    def __init__(self, block: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("block", block)  # bool (n_channels, latent_dim): allowed weights
        fan_in = block.sum(dim=0).clamp_min(1)  # channels feeding every slot
        weight = (torch.rand(block.shape) * 2 - 1) * math.sqrt(3.0) / fan_in.sqrt()
        self.weight = nn.Parameter(weight * block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight * self.block)


@register("adapter", "region_linear")
class RegionLinear(SubjectAdapter):
    """Per subject, a linear map from the channels of each region to its virtual channels.

    The latent is laid out region by region: ``latent_dim / len(regions)`` virtual channels
    for each name of ``regions``, in order, in every subject. Subject ``s``'s channels labelled
    with region ``r`` (:attr:`SubjectSpec.regions`, the stores' anatomical labels) feed
    region ``r``'s virtual channels only, through weights of their own; channels of a region
    not listed are not read; a region in which the subject has no channel stays zero
    (:meth:`present_slots`). So the backbone sees, in fixed slots, one fused signal per brain
    region whatever the implant (Du-IN fuses the ~16 contacts of one region into its tokens;
    with ``channels: grouped`` and ``group_width = latent_dim / len(regions)`` the segment
    transformer makes one token sequence per region).

    Parameters
    ----------
    params : RegionLinear.Params
        ``regions`` (the region names, in slot order) and ``dropout`` (on the input channels
        during training).
    latent_dim : int
        A multiple of ``len(regions)``.
    """

    class Params(PartParams):
        regions: list[str] = pydantic.Field(min_length=1)
        dropout: float = pydantic.Field(0.0, ge=0, lt=1)

    def __init__(self, params: Params, *, latent_dim: int) -> None:
        super().__init__(params, latent_dim=latent_dim)
        n = len(params.regions)
        if len(set(params.regions)) != n:
            raise ValueError(f"region_linear: regions listed twice in {params.regions}")
        if latent_dim % n:
            raise ValueError(f"region_linear: latent_dim {latent_dim} is not a multiple of the "
                             f"{n} regions")
        self.width = latent_dim // n
        self.drop = nn.Dropout(params.dropout)

    def _slots(self, spec: SubjectSpec) -> torch.Tensor:
        """bool ``(n_channels, latent_dim)``: the slots each channel may feed."""
        regions = list(self.params.regions)
        block = torch.zeros(spec.n_channels, self.latent_dim, dtype=torch.bool)
        for c, label in enumerate(spec.regions):
            if label in regions:
                k = regions.index(label) * self.width
                block[c, k : k + self.width] = True
        return block

    def make_subject(self, spec: SubjectSpec) -> nn.Module:
        if not spec.regions:
            raise ValueError("the region_linear adapter needs the channels' region labels "
                             "(the stores' 'region'), and this subject has none")
        block = self._slots(spec)
        if not block.any():
            found = sorted(set(spec.regions))
            raise ValueError(f"none of this subject's channel regions {found} is among the "
                             f"adapter's regions {list(self.params.regions)}")
        return _RegionMap(block)

    def add_subject(self, name: str, spec: SubjectSpec, *, weights: bool = True) -> None:
        try:
            super().add_subject(name, spec, weights=weights)
        except ValueError as err:
            raise ValueError(f"subject {name!r}: {err}") from None

    def forward(self, x: torch.Tensor, subject: str, mask: torch.Tensor | None = None,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        return self.subjects[subject](self.drop(x))

    def present_slots(self, name: str) -> torch.Tensor:
        """The slots of the regions in which subject ``name`` has channels."""
        return self.subjects[name].block.any(dim=0)
