"""Segment tokens and a transformer over them (Du-IN's encoder), fused, per region or per channel.

The time axis is cut into segments of ``segment`` steps (the last one zero-padded). A 1-D
convolutional tokenizer turns each segment into one token of width ``d_model``; its
convolutions run inside the segment only, so a token carries nothing of its neighbours'
samples (what masked modelling needs: a masked segment leaks nothing through the tokens
around it). ``n_layers`` pre-norm transformer blocks follow, over the segments of a sample.

Three layouts of the latent's channels:

* ``channels: fused`` (Du-IN's region tokens): all latent channels of a time segment make one
  multivariate token, so the adapter before the backbone (a per-subject linear fusion, or the
  spatial attention over electrode positions) decides which electrodes a token sees;
* ``channels: grouped`` (region tokens, one sequence per region): the latent's channels are cut
  into consecutive groups of ``group_width`` (the virtual channels of one region, from the
  ``region_linear`` adapter); each group is tokenized alone by the same tokenizer, the
  transformer attends over time within a group, and the features of the groups are laid side
  by side (the groups are the same regions in every subject; a group that is exactly zero,
  a region without electrodes, gives zero features);
* ``channels: single`` (BrainBERT/Brant-like single-channel tokens, Du-IN's comparison): every
  channel is tokenized alone by the same tokenizer and the transformer attends over time within
  a channel; features are pooled over segments, then averaged over the channels present (a
  channel that is exactly zero over the whole sample, as padding is, does not count).

In the grouped and single layouts a sequence that is exactly zero throughout is not computed.
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register
from .base import Backbone
from .transformer import TransformerBlock, TransformerParams

__all__ = ["SegmentTokenizer", "SegmentTransformer"]


class SegmentTokenizer(nn.Module):
    """One token per time segment, from convolutions within the segment.

    Parameters
    ----------
    in_channels : int
        Channels of a segment (the latent's, or 1 for single-channel tokens).
    segment : int
        Time steps per segment.
    d_model : int
        Token width.
    conv_channels : int
        Width of the convolutional stage.
    kernel : int
        Kernel of the convolutions (clipped to the segment).
    """

    def __init__(self, in_channels: int, segment: int, d_model: int, conv_channels: int,
                 kernel: int) -> None:
        super().__init__()
        kernel = max(1, min(kernel, segment))
        self.segment = int(segment)
        # no normalisation inside a segment: a segment's amplitude is information
        self.conv = nn.Sequential(
            nn.Conv1d(in_channels, conv_channels, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(conv_channels, conv_channels, kernel, padding=kernel // 2), nn.GELU())
        self.proj = nn.Linear(conv_channels * 2, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(batch, n_segments, d_model)`` of ``x`` ``(batch, n_segments * segment, C)``."""
        batch, n_times, channels = x.shape
        n_seg = n_times // self.segment
        seg = x.reshape(batch * n_seg, self.segment, channels).transpose(1, 2)
        h = self.conv(seg)  # (batch * n_seg, conv, segment): zero padding stays in the segment
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.proj(pooled).reshape(batch, n_seg, -1)


@register("backbone", "segment_transformer")
class SegmentTransformer(Backbone):
    """Segment tokenizer + transformer (the encoder of Du-IN-style codebook pretraining).

    Parameters
    ----------
    params : SegmentTransformer.Params
    in_features : int
        Latent width (virtual channels of the adapter).
    n_times : int
        Time steps per sample.

    Attributes
    ----------
    out_features : int
        ``d_model`` (``groups * d_model`` when grouped).
    d_model : int
        Token width.
    n_segments : int
        Segments (tokens) per sample and channel group.
    width : int
        Latent channels per token: ``in_features`` (fused), ``group_width`` (grouped), 1
        (single).
    groups : int
        Token sequences per sample: ``in_features / width``.
    """

    class Params(TransformerParams):
        """Hyper-parameters of :class:`SegmentTransformer` (and :class:`TransformerParams`').

        Attributes
        ----------
        segment : int
            Time steps per token (clipped to ``n_times``).
        conv_channels, kernel : int
            The tokenizer's convolutions.
        channels : {"fused", "grouped", "single"}
            One token per segment of all channels, of each group of ``group_width``
            channels, or of each channel.
        group_width : int
            Channels per group (``channels: grouped``).
        """

        segment: int = pydantic.Field(25, ge=1)
        conv_channels: int = pydantic.Field(32, ge=1)
        kernel: int = pydantic.Field(5, ge=1)
        channels: Literal["fused", "grouped", "single"] = "fused"
        group_width: int = pydantic.Field(1, ge=1)

    def __init__(self, params: SegmentTransformer.Params, *, in_features: int, n_times: int
                 ) -> None:
        super().__init__(params, in_features=in_features, n_times=n_times)
        if self.n_times < 1:
            raise ValueError(f"segment_transformer needs n_times >= 1, got {self.n_times}")
        d = params.d_model
        self.segment = min(params.segment, self.n_times)
        self.n_segments = math.ceil(self.n_times / self.segment)
        self.single = params.channels == "single"
        self.grouped = params.channels == "grouped"
        self.width = (1 if self.single else params.group_width if self.grouped
                      else self.in_features)
        if self.in_features % self.width:
            raise ValueError(f"segment_transformer: {self.in_features} latent channels do not "
                             f"make groups of {self.width}")
        self.groups = self.in_features // self.width
        self.d_model = d
        self.tokenizer = SegmentTokenizer(self.width, self.segment, d, params.conv_channels,
                                          params.kernel)
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.position = nn.Parameter(torch.zeros(1, self.n_segments, d))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.drop = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, params.n_heads, params.mlp_ratio, params.dropout)
            for _ in range(params.n_layers))
        self.norm = nn.LayerNorm(d)
        self.out_features = d * self.groups if self.grouped else d

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 3 or z.shape[2] != self.in_features:
            raise ValueError(f"segment_transformer expects (batch, time, {self.in_features}), "
                             f"got {tuple(z.shape)}")
        if z.shape[1] > self.n_times:
            raise ValueError(f"segment_transformer was built for at most {self.n_times} time "
                             f"steps, got {z.shape[1]}")

    def segments(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` padded and laid out per token sequence: ``(batch * groups, n_seg * segment, C)``.

        ``C`` is :attr:`width`; this is also what a decoder reconstructs, segment by segment.
        """
        self._check(z)
        pad = self.n_segments * self.segment - z.shape[1]
        if pad:
            z = F.pad(z, (0, 0, 0, pad))
        if self.groups > 1:
            batch, n_times, _ = z.shape
            z = (z.reshape(batch, n_times, self.groups, self.width).permute(0, 2, 1, 3)
                 .reshape(batch * self.groups, n_times, self.width))
        return z

    def _present(self, seqs: torch.Tensor) -> torch.Tensor | None:
        """Rows of :meth:`segments` with any signal (padding channels, absent regions: none)."""
        if self.groups == 1:
            return None
        return torch.nonzero(seqs.abs().amax(dim=(1, 2)) > 0).squeeze(1)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Segment tokens before the transformer: ``(batch, groups, n_segments, d_model)``.

        Sequences that are zero throughout (padding channels, absent regions) are not
        computed: their tokens are zero.
        """
        seqs = self.segments(z)
        rows = self._present(seqs)
        tokens = self.tokenizer(seqs if rows is None else seqs[rows])
        return self._scatter(tokens, rows, z.shape[0])

    def _scatter(self, h: torch.Tensor, rows: torch.Tensor | None, batch: int) -> torch.Tensor:
        if rows is not None:
            full = h.new_zeros((batch * self.groups, *h.shape[1:]))
            h = full.index_copy(0, rows, h)
        return h.reshape(batch, self.groups, self.n_segments, -1)

    def tokens(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Contextual tokens ``(batch, groups, n_segments, d_model)``.

        Parameters
        ----------
        z : Tensor
            ``(batch, time, in_features)``.
        mask : Tensor, optional
            bool ``(batch, groups, n_segments)``: True for segments whose token is replaced by
            the learnt mask token (masked modelling); their samples reach nothing.
        """
        seqs = self.segments(z)
        rows = self._present(seqs)
        if rows is not None:
            seqs = seqs[rows]
        tokens = self.tokenizer(seqs)  # (sequences, n_segments, d_model)
        if mask is not None:
            flat = mask.reshape(-1, self.n_segments)
            flat = flat if rows is None else flat[rows]
            tokens = torch.where(flat[..., None], self.mask_token.to(tokens.dtype), tokens)
        h = self.drop(tokens + self.position)
        for block in self.blocks:
            h = block(h)
        return self._scatter(self.norm(h), rows, z.shape[0])

    def pool(self, tokens: torch.Tensor, z: torch.Tensor, *, flatten: bool = False
             ) -> torch.Tensor:
        """Features ``(batch, out_features)``: mean over segments, then (single) over the
        channels present, or (grouped) the groups side by side.

        ``flatten``: every segment's token side by side instead of their mean
        (``n_segments`` times more features, the time course kept: a linear probe's features).
        """
        per_group = tokens.flatten(2) if flatten else tokens.mean(dim=2)  # (batch, groups, f)
        if self.grouped:
            return per_group.flatten(1)
        if not self.single:
            return per_group[:, 0]
        present = (z.abs().amax(dim=1) > 0).to(per_group.dtype)  # (batch, channels)
        weight = present / present.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.einsum("bg,bgd->bd", weight, per_group)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` ``(batch, time, in_features)`` to ``(batch, d_model)``."""
        return self.pool(self.tokens(z), z)
