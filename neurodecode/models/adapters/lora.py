"""Low-rank updates (LoRA, Hu et al. 2022) of a trained network's linear and conv layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LoRA", "add_lora", "lora_parameters", "merge_lora"]


class LoRA(nn.Module):
    """A frozen ``nn.Linear`` or ``nn.Conv1d`` plus a trainable low-rank update of its weight.

    ``W' = W + (alpha / rank) * B @ A`` with ``A`` ``(rank, fan_in)`` (Kaiming-initialised)
    and ``B`` ``(out, rank)`` (zeros), so the wrapped layer starts exactly as the original.

    Parameters
    ----------
    base : nn.Linear or nn.Conv1d
        The layer to update; its own parameters are frozen.
    rank : int
    alpha : float
    """

    def __init__(self, base: nn.Module, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear | nn.Conv1d):
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv1d, not {type(base).__name__}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        out, fan_in = base.weight.shape[0], base.weight[0].numel()
        self.rank = int(min(rank, out, fan_in))
        self.scaling = float(alpha) / self.rank
        self.lora_a = nn.Parameter(torch.empty(self.rank, fan_in))
        self.lora_b = nn.Parameter(torch.zeros(out, self.rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def weight(self) -> torch.Tensor:
        """The updated weight."""
        delta = (self.lora_b @ self.lora_a).view_as(self.base.weight)
        return self.base.weight + self.scaling * delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Linear):
            return F.linear(x, self.weight(), self.base.bias)
        return self.base._conv_forward(x, self.weight(), self.base.bias)

    def merged(self) -> nn.Module:
        """The base layer with the update folded in (a plain, trainable layer)."""
        with torch.no_grad():
            self.base.weight.copy_(self.weight())
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base


def add_lora(module: nn.Module, rank: int = 4, alpha: float = 8.0,
             exclude: Sequence[str] = ()) -> list[str]:
    """Wrap every ``nn.Linear``/``nn.Conv1d`` inside ``module`` in :class:`LoRA`, in place.

    Parameters
    ----------
    module : nn.Module
    rank, alpha : see :class:`LoRA`
    exclude : sequence of str
        Qualified names (prefixes) of layers to leave as they are.

    Returns
    -------
    list of str
        Names of the wrapped layers.
    """
    wrapped = []
    for name, child in list(module.named_modules()):
        for attr, layer in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(layer, LoRA) or any(full.startswith(e) for e in exclude):
                continue
            if isinstance(layer, nn.Linear | nn.Conv1d) and not isinstance(child, LoRA):
                setattr(child, attr, LoRA(layer, rank, alpha))
                wrapped.append(full)
    return wrapped


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The low-rank factors of every :class:`LoRA` inside ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRA) for p in (m.lora_a, m.lora_b)]


def merge_lora(module: nn.Module) -> int:
    """Fold every :class:`LoRA` inside ``module`` back into a plain layer, in place.

    Returns
    -------
    int
        Number of layers merged.
    """
    n = 0
    for child in list(module.modules()):
        for attr, layer in list(child.named_children()):
            if isinstance(layer, LoRA):
                setattr(child, attr, layer.merged())
                n += 1
    return n
