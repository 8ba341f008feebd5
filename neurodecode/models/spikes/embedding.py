"""A unit embedding that grows with the vocabulary and can train only some of its rows.

A :class:`~neurodecode.data.tokens.UnitVocabulary` appends ids for the units of a new session;
:meth:`UnitEmbedding.grow` appends freshly initialised rows for them and leaves the others as
they were. :meth:`UnitEmbedding.train_only` then masks the gradient of every other row (unit
identification: only the new units learn). Rows outside the mask get an exact zero gradient, so
an optimiser with no weight decay on the table (:class:`~neurodecode.models.tasks.spikes.
SpikePretrainTask` never decays embeddings) and fresh state leaves them bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UnitEmbedding"]

_STD = 0.02


class UnitEmbedding(nn.Module):
    """Embedding rows over vocabulary ids, with an optional per-row output bias.

    Used both as the input embedding of unit tokens (:meth:`forward`) and as the unit head
    (:meth:`logits`: one row and one bias per id), so that both grow and freeze together.

    Parameters
    ----------
    n_rows : int
        Vocabulary size (special ids included).
    width : int
    bias : bool
        A learnt bias per row (for :meth:`logits`).

    Attributes
    ----------
    weight : Parameter
        ``(n_rows, width)``.
    bias : Parameter or None
        ``(n_rows,)``.
    """

    def __init__(self, n_rows: int, width: int, *, bias: bool = False) -> None:
        super().__init__()
        if n_rows < 1 or width < 1:
            raise ValueError(f"n_rows ({n_rows}) and width ({width}) must be >= 1")
        self.width = int(width)
        self.weight = nn.Parameter(torch.randn(n_rows, width) * _STD)
        self.bias = nn.Parameter(torch.zeros(n_rows)) if bias else None
        self.register_buffer("trainable", torch.ones(n_rows, dtype=torch.bool), persistent=False)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def n_rows(self) -> int:
        """Rows of the table."""
        return int(self.weight.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` (any shape) → ``(*ids.shape, width)``."""
        return F.embedding(ids, self.weight)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every row: ``hidden @ weight.T (+ bias)`` → ``(..., n_rows)``."""
        return F.linear(hidden, self.weight, self.bias)

    @torch.no_grad()
    def grow(self, n_total: int) -> None:
        """Append freshly initialised rows up to ``n_total``; existing rows stay unchanged.

        The new rows are trainable; a :meth:`train_only` mask keeps masking the old ones.
        """
        n_total = int(n_total)
        if n_total < self.n_rows:
            raise ValueError(f"cannot shrink a unit embedding from {self.n_rows} to {n_total} "
                             "rows")
        if n_total == self.n_rows:
            return
        extra = n_total - self.n_rows
        w = self.weight
        new = torch.randn(extra, self.width, device=w.device, dtype=w.dtype) * _STD
        self.weight = nn.Parameter(torch.cat([w.data, new]), requires_grad=w.requires_grad)
        if self.bias is not None:
            b = self.bias
            self.bias = nn.Parameter(torch.cat([b.data, b.new_zeros(extra)]),
                                     requires_grad=b.requires_grad)
        grown = torch.ones(extra, dtype=torch.bool, device=self.trainable.device)
        self.trainable = torch.cat([self.trainable, grown])
        if self._hooks:  # hooks live on the replaced parameters: put them on the new ones
            self._install()

    def train_only(self, ids: Sequence[int] | np.ndarray | torch.Tensor | None) -> None:
        """Let only the rows ``ids`` learn (their gradient is kept, the others' zeroed).

        Parameters
        ----------
        ids : sequence of int, or None
            Rows to train; None removes the mask (every row learns).
        """
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if ids is None:
            self.trainable = torch.ones_like(self.trainable)
            return
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n_rows):
            raise ValueError(f"train_only: ids must be in [0, {self.n_rows}), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        mask = torch.zeros(self.n_rows, dtype=torch.bool, device=self.trainable.device)
        mask[ids.to(mask.device)] = True
        self.trainable = mask
        self._install()

    def _install(self) -> None:
        def hook_weight(grad: torch.Tensor) -> torch.Tensor:
            return grad * self.trainable.to(grad.device, grad.dtype)[:, None]

        def hook_bias(grad: torch.Tensor) -> torch.Tensor:
            return grad * self.trainable.to(grad.device, grad.dtype)

        self._hooks = [self.weight.register_hook(hook_weight)]
        if self.bias is not None:
            self._hooks.append(self.bias.register_hook(hook_bias))

    @property
    def masked(self) -> bool:
        """Whether a :meth:`train_only` mask is active."""
        return bool(self._hooks)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # noqa: ANN001
        # a checkpoint of a grown table loads into a fresh, smaller one: grow it first
        key = prefix + "weight"
        if key in state_dict and state_dict[key].shape[0] > self.n_rows:
            self.grow(state_dict[key].shape[0])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.n_rows}, {self.width}, bias={self.bias is not None}"
