"""The two networks of codebook pretraining: a VQ-VAE over segments, and a masked-code model.

Both start like the fine-tuned decoder (:class:`~neurodecode.models.cross_subject.
CrossSubjectModel`): a subject adapter into the shared latent ``(batch, time, latent_dim)`` and
a :class:`~neurodecode.models.backbones.segment_transformer.SegmentTransformer` over its time
segments, built from the same :class:`~neurodecode.models.config.ModelConfig` parts, so their
state dicts carry over key for key (``adapter.*``, ``backbone.*``).

* :class:`SegmentVQVAE` (stage 1) quantises each contextual segment token with the cosine
  codebook of :class:`~neurodecode.models.codebook.quantizer.VectorQuantizer` and
  reconstructs the subject's own channels from the codes (a small transformer decoder, then
  a per-subject readout: the adapter's inverse when it has one, a linear map otherwise).
* :class:`MaskedCodeModel` (stage 2) replaces the tokens of a random half of the segments by a
  learnt mask token and predicts, for each masked segment, the index of its stage-1 code; with
  the complementary mask it also predicts the other half from the first.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..adapters.base import SubjectAdapter, SubjectSpec
from ..backbones.segment_transformer import SegmentTransformer
from ..backbones.transformer import TransformerBlock
from ..config import ModelConfig
from ..cross_subject import encode_subjects
from .quantizer import VectorQuantizer

__all__ = ["MaskedCodeModel", "SegmentVQVAE", "random_segment_mask", "valid_groups"]


class _Front(nn.Module):
    """Adapter + segment transformer, as in the fine-tuned decoder."""

    def __init__(self, config: ModelConfig, subjects: Mapping[str, SubjectSpec], n_times: int
                 ) -> None:
        super().__init__()
        if config.backbone.name != "segment_transformer":
            raise ValueError(f"codebook pretraining needs the segment_transformer backbone, not "
                             f"{config.backbone.name!r}")
        if config.pretrain is None:
            raise ValueError(f"model {config.name!r} has no pretrain section")
        self.config = config
        self.n_times = int(n_times)
        a, b = config.adapter, config.backbone
        self.adapter: SubjectAdapter = registry.build(  # type: ignore[assignment]
            "adapter", a.name, a.params, latent_dim=config.latent_dim)
        self.adapter.prepare(subjects)
        self.subject_names: list[str] = []
        for name, spec in subjects.items():
            self.add_subject(name, spec)
        self.backbone: SegmentTransformer = registry.build(  # type: ignore[assignment]
            "backbone", b.name, b.params, in_features=config.latent_dim, n_times=n_times)

    def add_subject(self, name: str, spec: SubjectSpec) -> int:
        """Add a subject (its adapter weights) and return its index."""
        self.adapter.add_subject(name, spec)
        if name not in self.subject_names:
            self.subject_names.append(name)
        return self.subject_names.index(name)

    @property
    def specs(self) -> dict[str, SubjectSpec]:
        """Channels and positions of every subject, in index order."""
        return {n: self.adapter.specs[n] for n in self.subject_names}

    def encode(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Shared latent ``(batch, time, latent_dim)`` of a mixed-subject batch."""
        return encode_subjects(self.adapter, self.subject_names, x, subject)


class SegmentVQVAE(_Front):
    """Stage 1: segment tokens → cosine codebook → reconstruction of the subject's channels.

    Parameters
    ----------
    config : ModelConfig
        With a ``segment_transformer`` backbone and a ``pretrain`` section.
    subjects : mapping of str to SubjectSpec
    n_times : int
        Time steps per window.
    """

    def __init__(self, config: ModelConfig, subjects: Mapping[str, SubjectSpec], n_times: int
                 ) -> None:
        super().__init__(config, subjects, n_times)
        pre, bb = config.pretrain, self.backbone
        d = bb.d_model
        self.to_code = nn.Linear(d, pre.code_dim)
        self.quantizer = VectorQuantizer(pre.codebook_size, pre.code_dim, update=pre.update,
                                         decay=pre.decay, commitment=pre.commitment,
                                         dead_share=pre.dead_share)
        self.from_code = nn.Linear(pre.code_dim, d)
        self.dec_position = nn.Parameter(torch.zeros(1, bb.n_segments, d))
        nn.init.trunc_normal_(self.dec_position, std=0.02)
        heads = bb.params.n_heads
        self.dec_blocks = nn.ModuleList(TransformerBlock(d, heads, bb.params.mlp_ratio, 0.0)
                                        for _ in range(pre.decoder_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.to_signal = nn.Linear(d, bb.segment * bb.width)
        self.readout = nn.ModuleDict()
        for name, spec in self.specs.items():
            self._add_readout(name, spec)

    def add_subject(self, name: str, spec: SubjectSpec) -> int:
        index = super().add_subject(name, spec)
        if "readout" in self._modules:  # built after the training subjects
            self._add_readout(name, spec)
        return index

    def _add_readout(self, name: str, spec: SubjectSpec) -> None:
        if not self.adapter.invertible:
            self.readout[name] = nn.Linear(self.config.latent_dim, spec.n_channels)

    def quantize(self, x: torch.Tensor, subject: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode and quantise a batch.

        Returns
        -------
        dict
            ``vectors`` ``(batch, groups, n_segments, code_dim)`` before quantisation,
            ``quantized`` (same shape, the codes with the straight-through gradient), ``index``
            int64 ``(batch, groups, n_segments)``, ``valid`` (:func:`valid_groups`: the
            sequences of real channels, the only ones the codebook learns from and counts) and
            ``vq_loss``.
        """
        vectors = self.to_code(self.backbone.tokens(self.encode(x, subject)))
        valid = valid_groups(self, subject, vectors.shape[:-1]).to(vectors.device)
        quantized, index, vq_loss = self.quantizer(vectors, valid)
        return {"vectors": vectors, "quantized": quantized, "index": index, "valid": valid,
                "vq_loss": vq_loss}

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Latent signal ``(batch, n_segments * segment, latent_dim)`` from quantised tokens."""
        batch, groups, n_seg, _ = quantized.shape
        h = self.from_code(quantized).flatten(0, 1) + self.dec_position
        for block in self.dec_blocks:
            h = block(h)
        seg = self.to_signal(self.dec_norm(h))  # (batch * groups, n_seg, segment * width)
        steps, width = n_seg * self.backbone.segment, self.backbone.width
        return (seg.reshape(batch, groups, steps, width).transpose(1, 2)
                .reshape(batch, steps, groups * width))

    def reconstruct(self, latent: torch.Tensor, name: str) -> torch.Tensor:
        """Subject ``name``'s channels ``(batch, time, n_channels)`` from a decoded latent."""
        if self.adapter.invertible:
            return self.adapter.decode(latent, name)
        return self.readout[name](latent)

    def forward(self, x: torch.Tensor, subject: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`quantize`'s outputs and ``recon_loss``, the reconstruction error.

        ``x`` ``(batch, time, max_channels)`` is zero-padded beyond each subject's channels;
        the reconstruction error is the mean squared error over each sample's own channels.
        """
        out = self.quantize(x, subject)
        latent = self.decode(out["quantized"])[:, : x.shape[1]]
        err, count = x.new_zeros(()), 0
        for s in torch.unique(subject).tolist():
            rows = torch.nonzero(subject == s).squeeze(1)
            name = self.subject_names[s]
            n_ch = self.adapter.specs[name].n_channels
            pred = self.reconstruct(latent[rows], name)
            err = err + ((pred - x[rows, :, :n_ch]) ** 2).sum()
            count += pred.numel()
        out["recon_loss"] = err / max(count, 1)
        return out

    @torch.no_grad()
    def codes(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Code index of every segment: int64 ``(batch, groups, n_segments)``."""
        return self.quantize(x, subject)["index"]

    @torch.no_grad()
    def reconstruction(self, x: torch.Tensor, subject: torch.Tensor) -> list[torch.Tensor]:
        """Each sample's reconstructed channels (a list: channel counts differ)."""
        latent = self.decode(self.quantize(x, subject)["quantized"])[:, : x.shape[1]]
        return [self.reconstruct(latent[i : i + 1], self.subject_names[int(s)])[0]
                for i, s in enumerate(subject.tolist())]


def valid_groups(model: _Front, subject: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """bool ``shape`` ``(batch, groups, n_segments)``: the token sequences of real channels.

    Every sequence for fused tokens; for single-channel tokens those of the channels each
    sample's subject has (not the padding); for grouped tokens those of the groups with a
    latent slot that carries the subject's signal (:meth:`SubjectAdapter.present_slots`: not
    the regions it has no electrode in).
    """
    bb = model.backbone
    if bb.groups == 1:
        return torch.ones(shape, dtype=torch.bool)
    present = {s: model.adapter.present_slots(model.subject_names[s])
               .reshape(bb.groups, bb.width).any(dim=1) for s in torch.unique(subject).tolist()}
    rows = torch.stack([present[s] for s in subject.tolist()])  # (batch, groups)
    return rows[..., None].expand(shape)


def random_segment_mask(shape: tuple[int, ...], ratio: float, *,
                        generator: torch.Generator | None = None,
                        device: torch.device | None = None) -> torch.Tensor:
    """bool mask of ``shape`` ``(..., n_segments)`` with ``round(ratio * n)`` True per row.

    At least one segment is masked and at least one is left visible (when there are two).
    """
    n = shape[-1]
    k = min(max(1, round(ratio * n)), max(1, n - 1))
    scores = torch.rand(shape, generator=generator, device=device)
    rank = scores.argsort(dim=-1).argsort(dim=-1)
    return rank < k


class MaskedCodeModel(_Front):
    """Stage 2: predict the stage-1 code of each masked segment from the visible ones.

    Parameters
    ----------
    config : ModelConfig
    subjects : mapping of str to SubjectSpec
    n_times : int
    """

    def __init__(self, config: ModelConfig, subjects: Mapping[str, SubjectSpec], n_times: int
                 ) -> None:
        super().__init__(config, subjects, n_times)
        self.code_head = nn.Linear(self.backbone.d_model, config.pretrain.codebook_size)

    def logits(self, x: torch.Tensor, subject: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
        """Code logits ``(batch, groups, n_segments, codebook_size)`` with ``mask`` applied."""
        return self.code_head(self.backbone.tokens(self.encode(x, subject), mask))

    def forward(self, x: torch.Tensor, subject: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor, *, complementary: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the masked segments (and on the others under the complement).

        Parameters
        ----------
        x : Tensor
            ``(batch, time, max_channels)``.
        subject : Tensor
        target : Tensor
            int64 ``(batch, groups, n_segments)``: stage-1 codes.
        mask : Tensor
            bool ``(batch, groups, n_segments)``, True = masked.
        complementary : bool

        Returns
        -------
        loss : Tensor
        accuracy : Tensor
            Share of masked segments whose code is the top prediction.
        """
        valid = valid_groups(self, subject, target.shape).to(x.device)
        passes = [mask, ~mask] if complementary else [mask]
        losses, hits, count = [], x.new_zeros(()), x.new_zeros(())
        for m in passes:
            out = self.logits(x, subject, m)
            use = m & valid
            losses.append(F.cross_entropy(out[use].float(), target[use]) if use.any()
                          else out.sum() * 0)
            hits = hits + (out[use].argmax(dim=-1) == target[use]).sum()
            count = count + use.sum()
        return torch.stack(losses).mean(), hits / count.clamp_min(1)
