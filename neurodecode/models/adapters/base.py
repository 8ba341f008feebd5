"""What every subject adapter is: per-subject weights mapping a subject's channels to a latent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["UNKNOWN_SUBJECT", "SubjectAdapter", "SubjectSpec"]

#: Key of the shared layer that serves subjects without weights of their own (zero-shot).
UNKNOWN_SUBJECT = "__unknown__"


@dataclass(frozen=True)
class SubjectSpec:
    """What an adapter needs to know about a subject's recordings.

    Attributes
    ----------
    n_channels : int
        Channels (sensors, electrodes, voxels, units) of the subject's samples.
    positions : tuple of (x, y, z), optional
        Position of each channel in a frame shared by all subjects (metres for EEG/MEG in the
        head frame, millimetres for sEEG/ECoG in MNI space...); needed by position-aware
        adapters. NaN rows are channels without a position.
    ch_names : tuple of str
        Channel names (informative; checked in length only).
    regions : tuple of str
        Anatomical label of each channel (``""`` where unknown), or empty when not known;
        needed by region-wise adapters.
    """

    n_channels: int
    positions: tuple[tuple[float, float, float], ...] | None = None
    ch_names: tuple[str, ...] = field(default=())
    regions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {self.n_channels}")
        if self.positions is not None and len(self.positions) != self.n_channels:
            raise ValueError(f"{len(self.positions)} positions for {self.n_channels} channels")
        if self.ch_names and len(self.ch_names) != self.n_channels:
            raise ValueError(f"{len(self.ch_names)} channel names for {self.n_channels} channels")
        if self.regions and len(self.regions) != self.n_channels:
            raise ValueError(f"{len(self.regions)} region labels for {self.n_channels} channels")

    @classmethod
    def from_arrays(cls, n_channels: int, positions: Any = None,
                    ch_names: Sequence[str] = (), regions: Sequence[str] | None = ()
                    ) -> SubjectSpec:
        """Build from array-likes (positions ``(n_channels, 3)``)."""
        pos = None
        if positions is not None:
            arr = np.asarray(positions, dtype=np.float64).reshape(n_channels, 3)
            pos = tuple(tuple(float(v) for v in row) for row in arr)
        return cls(int(n_channels), pos, tuple(str(c) for c in ch_names),
                   tuple(str(r) for r in regions or ()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML form (what a checkpoint's hyper-parameters hold)."""
        return {"n_channels": self.n_channels,
                "positions": None if self.positions is None else [list(p) for p in self.positions],
                "ch_names": list(self.ch_names), "regions": list(self.regions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubjectSpec:
        """Inverse of :meth:`to_dict`."""
        return cls.from_arrays(data["n_channels"], data.get("positions"),
                               data.get("ch_names") or (), data.get("regions"))

    def position_array(self) -> np.ndarray | None:
        """Positions as float32 ``(n_channels, 3)``, or None."""
        return None if self.positions is None else np.asarray(self.positions, np.float32)


class SubjectAdapter(nn.Module, ABC):
    """Maps each subject's samples ``(batch, time, n_channels)`` into ``(batch, time, latent)``.

    Weights that belong to one subject live in :attr:`subjects` (a :class:`torch.nn.ModuleDict`
    keyed by subject name), so that a checkpoint stores them under ``adapter.subjects.<name>.``
    and everything else of the model is shared. Subclasses implement :meth:`make_subject`
    (the new subject's module) and :meth:`forward`.

    Parameters
    ----------
    params : PartParams
        The adapter's validated hyper-parameters.
    latent_dim : int
        Width of the shared latent.
    """

    #: True when :meth:`forward` needs :attr:`SubjectSpec.positions`.
    needs_positions: bool = False
    #: True when a subject without weights of its own can be served (zero-shot).
    zero_shot: bool = False
    #: True when :meth:`decode` maps latents back into a subject's channel space.
    invertible: bool = False

    def __init__(self, params: Any, *, latent_dim: int) -> None:
        super().__init__()
        self.params = params
        self.latent_dim = int(latent_dim)
        self.subjects = nn.ModuleDict()
        self.specs: dict[str, SubjectSpec] = {}

    @abstractmethod
    def make_subject(self, spec: SubjectSpec) -> nn.Module:
        """A freshly initialised module holding one subject's weights."""

    @abstractmethod
    def forward(self, x: torch.Tensor, subject: str, mask: torch.Tensor | None = None,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
        """Map one subject's samples ``(batch, time, n_channels)`` to ``(batch, time, latent)``.

        Parameters
        ----------
        x : Tensor
            ``(batch, time, n_channels)``, the subject's own channels (no padding).
        subject : str
            A name in :attr:`specs`; adapters with :attr:`zero_shot` also serve a subject
            whose spec is known but whose weights are not (through their shared layer).
        mask : Tensor, optional
            bool ``(batch, n_channels)``: False for channels to leave out (channel dropout).
        unknown : Tensor, optional
            bool ``(batch,)``: samples to route through the shared layer (subject dropout), for
            adapters with :attr:`zero_shot`.
        """

    def prepare(self, specs: Mapping[str, SubjectSpec]) -> None:  # noqa: B027 - optional hook
        """Fix what the adapter derives from the training subjects (before adding them)."""

    def add_subject(self, name: str, spec: SubjectSpec, *, weights: bool = True) -> None:
        """Register a subject.

        Parameters
        ----------
        name : str
        spec : SubjectSpec
        weights : bool
            Create the subject's own (trainable) weights. ``False`` registers only its spec, for
            zero-shot use by an adapter with :attr:`zero_shot`.
        """
        if name == UNKNOWN_SUBJECT:
            raise ValueError(f"{UNKNOWN_SUBJECT!r} is reserved")
        if self.needs_positions and spec.positions is None:
            raise ValueError(f"subject {name!r}: the {self.part_name} adapter needs channel "
                             "positions, and its recordings have none")
        if not weights and not self.zero_shot:
            raise ValueError(f"the {self.part_name} adapter cannot serve a subject without "
                             "weights of its own (no zero-shot)")
        self.specs[name] = spec
        if weights:
            self.subjects[name] = self.make_subject(spec)
        elif name in self.subjects:
            del self.subjects[name]

    def has_weights(self, name: str) -> bool:
        """Whether ``name`` has weights of its own."""
        return name in self.subjects

    def subject_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """The parameters that belong to subject ``name`` (none without weights of its own)."""
        return self.subjects[name].parameters() if name in self.subjects else iter(())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The adapter's parameters shared by all subjects."""
        own = {id(p) for p in self.subjects.parameters()}
        return (p for p in self.parameters() if id(p) not in own)

    def decode(self, z: torch.Tensor, subject: str) -> torch.Tensor:
        """Map latents ``(batch, time, latent)`` back into ``subject``'s channel space."""
        raise NotImplementedError(f"the {self.part_name} adapter is not invertible")

    def present_slots(self, name: str) -> torch.Tensor:
        """bool ``(latent_dim,)``: the latent slots that carry subject ``name``'s signal.

        All of them, unless the adapter leaves some at zero for this subject (the channel slots
        beyond its channel count, the regions it has no electrode in).
        """
        return torch.ones(self.latent_dim, dtype=torch.bool)
