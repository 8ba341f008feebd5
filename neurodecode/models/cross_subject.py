"""The cross-subject model: subject adapters → shared backbone → head.

:class:`CrossSubjectModel` is a plain :class:`torch.nn.Module` built from a
:class:`~neurodecode.models.config.ModelConfig` and the subjects it serves. A batch may mix
subjects with different channel counts (padded, as :func:`neurodecode.data.loader.collate_windows`
pads them): each sample goes through its own subject's adapter into the shared latent
``(batch, time, latent_dim)``, then through the shared backbone and head. Weights that belong to
one subject are under ``adapter.subjects.<name>.`` in the state dict; everything else is shared
(see :mod:`neurodecode.models.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from . import registry
from .adapters.base import SubjectAdapter, SubjectSpec
from .config import ModelConfig

__all__ = ["CrossSubjectModel", "encode_subjects"]

#: State-dict prefix of the per-subject weights.
ADAPTER_PREFIX = "adapter.subjects."


def encode_subjects(adapter: SubjectAdapter, names: Sequence[str], x: torch.Tensor,
                    subject: torch.Tensor, *, mask: torch.Tensor | None = None,
                    unknown: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample of a mixed-subject batch through its own subject's adapter.

    Parameters
    ----------
    adapter : SubjectAdapter
    names : sequence of str
        Subject names; ``subject`` indexes them.
    x : Tensor
        ``(batch, time, max_channels)``, zero-padded beyond each subject's channel count.
    subject : Tensor
        int ``(batch,)``.
    mask, unknown : Tensor, optional
        Channel mask ``(batch, max_channels)`` and shared-layer routing ``(batch,)``.

    Returns
    -------
    Tensor
        ``(batch, time, adapter.latent_dim)``.
    """
    z = x.new_zeros((*x.shape[:2], adapter.latent_dim))
    for s in torch.unique(subject).tolist():
        rows = torch.nonzero(subject == s).squeeze(1)
        name = names[s]
        n_ch = adapter.specs[name].n_channels
        if x.shape[2] < n_ch:
            raise ValueError(f"subject {name!r} has {n_ch} channels; the batch has "
                             f"{x.shape[2]}")
        z[rows] = adapter(
            x[rows, :, :n_ch], name,
            None if mask is None else mask[rows, :n_ch],
            None if unknown is None else unknown[rows]).to(z.dtype)
    return z


class CrossSubjectModel(nn.Module):
    """Subject adapters into a shared latent, a shared backbone and a head.

    Parameters
    ----------
    config : ModelConfig
    subjects : mapping of str to SubjectSpec
        The training subjects, in index order (:attr:`subject_names`).
    n_times : int
        Time steps per sample.
    n_outputs : int
        Classes, target columns or embedding width.

    Attributes
    ----------
    adapter : SubjectAdapter
    backbone : Backbone
    head : Head
    subject_names : list of str
        Index order of the subjects (``batch["subject"]`` indexes it).
    """

    def __init__(self, config: ModelConfig, subjects: Mapping[str, SubjectSpec], *,
                 n_times: int, n_outputs: int) -> None:
        super().__init__()
        if not subjects:
            raise ValueError("a cross-subject model needs at least one subject")
        self.config = config
        self.n_times, self.n_outputs = int(n_times), int(n_outputs)
        a, b, h = config.adapter, config.backbone, config.head
        self.adapter: SubjectAdapter = registry.build(  # type: ignore[assignment]
            "adapter", a.name, a.params, latent_dim=config.latent_dim)
        self.adapter.prepare(subjects)
        self.subject_names: list[str] = []
        for name, spec in subjects.items():
            self.add_subject(name, spec)
        self.backbone = registry.build("backbone", b.name, b.params,
                                       in_features=config.latent_dim, n_times=n_times)
        self.head = registry.build("head", h.name, h.params,
                                   in_features=self.backbone.out_features, n_outputs=n_outputs)
        if self.head.task != config.task:
            raise ValueError(f"model {config.name!r}: head {h.name!r} does a {self.head.task!r} "
                             f"task, but the config's task is {config.task!r}")

    # ---- subjects -------------------------------------------------------------------------

    def add_subject(self, name: str, spec: SubjectSpec, *, weights: bool = True) -> int:
        """Add (or reset) a subject and return its index.

        ``weights=False`` registers only its channels and positions (zero-shot, for adapters
        that can serve subjects without weights).
        """
        self.adapter.add_subject(name, spec, weights=weights)
        if name not in self.subject_names:
            self.subject_names.append(name)
        return self.subject_names.index(name)

    @property
    def specs(self) -> dict[str, SubjectSpec]:
        """Channels and positions of every subject, in index order."""
        return {n: self.adapter.specs[n] for n in self.subject_names}

    def subject_index(self, names: Sequence[str]) -> torch.Tensor:
        """Indices of subject names (an error names an unknown subject)."""
        unknown = [n for n in names if n not in self.subject_names]
        if unknown:
            raise KeyError(f"subject(s) {sorted(set(unknown))} unknown to this model; it has "
                           f"{self.subject_names}")
        return torch.as_tensor([self.subject_names.index(n) for n in names])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters shared by all subjects (backbone, head, shared adapter parts)."""
        own = {id(p) for p in self.adapter.subjects.parameters()}
        return (p for p in self.parameters() if id(p) not in own)

    # ---- forward --------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, subject: torch.Tensor, *,
               mask: torch.Tensor | None = None, unknown: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Shared latent ``(batch, time, latent_dim)`` of a mixed-subject batch.

        Parameters
        ----------
        x : Tensor
            ``(batch, time, max_channels)``, zero-padded beyond each subject's channel count.
        subject : Tensor
            int ``(batch,)``: index into :attr:`subject_names`.
        mask : Tensor, optional
            bool ``(batch, max_channels)``, False for channels to leave out.
        unknown : Tensor, optional
            bool ``(batch,)``: samples to route through the adapter's shared layer.
        """
        return encode_subjects(self.adapter, self.subject_names, x, subject, mask=mask,
                               unknown=unknown)

    def features(self, x: torch.Tensor, subject: torch.Tensor, **kwargs) -> torch.Tensor:
        """Backbone features ``(batch, out_features)``."""
        return self.backbone(self.encode(x, subject, **kwargs))

    def forward(self, x: torch.Tensor, subject: torch.Tensor, **kwargs) -> torch.Tensor:
        """Head outputs of a mixed-subject batch (logits, values or embeddings)."""
        return self.head(self.features(x, subject, **kwargs))

    def cycle(self, z: torch.Tensor, subject: torch.Tensor, generator: torch.Generator | None
              = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cycle through another subject (MindBridge): latent → subject B's space → latent.

        Each sample's latent ``z`` (from subject A) is decoded into the channel space of a
        random other subject B by B's decoder and encoded back by B's adapter.

        Returns
        -------
        z_cycle : Tensor
            ``(batch, time, latent_dim)``, comparable with ``z``.
        x_b : Tensor
            ``(batch, time, max_channels)``, the samples rendered in B's space (padded).
        other : Tensor
            int ``(batch,)``, the index of B.
        """
        n = len(self.subject_names)
        if n < 2:
            raise ValueError("cycle reconstruction needs at least two subjects")
        shift = torch.randint(1, n, subject.shape, generator=generator, device=subject.device)
        other = (subject + shift) % n
        width = max(s.n_channels for s in self.adapter.specs.values())
        x_b = z.new_zeros((*z.shape[:2], width))
        z_cycle = torch.zeros_like(z)
        for s in torch.unique(other).tolist():
            rows = torch.nonzero(other == s).squeeze(1)
            name = self.subject_names[s]
            xb = self.adapter.decode(z[rows], name)
            x_b[rows, :, : xb.shape[2]] = xb
            z_cycle[rows] = self.adapter(xb, name)
        return z_cycle, x_b, other
