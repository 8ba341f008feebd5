"""A normalised (cosine) vector-quantisation codebook with EMA or straight-through updates.

Vectors and codes live on the unit sphere (Du-IN's normalised codebook, as in ViT-VQGAN): the
nearest code is the one of largest cosine similarity, and the codebook loss is the squared
distance between unit vectors. Updates are either exponential moving averages of the vectors
assigned to each code (``update="ema"``, van den Oord et al. 2017's appendix) or gradients
through a codebook loss (``update="straight_through"``); the encoder always gets the
straight-through gradient and a commitment loss.

Codebooks collapse: a few codes take every input and the rest are never chosen. The
quantiser keeps an EMA of each code's share of assignments; a code whose share falls below
``dead_share`` of the uniform share is *dead*, and :meth:`VectorQuantizer.restart_dead` moves
dead codes onto vectors of the current batch (the ones worst served by their code first), so
that they are chosen again. :meth:`VectorQuantizer.health` reports the codebook's perplexity
(``exp`` of the entropy of code usage: 1 when one code takes everything, ``codebook_size``
when usage is uniform), the dead fraction and whether it has collapsed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CodebookHealth", "VectorQuantizer", "perplexity"]


def perplexity(counts: torch.Tensor) -> float:
    """``exp(entropy)`` of a usage histogram (1 = one code used, n = n codes used evenly)."""
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    p = counts.double() / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass(frozen=True)
class CodebookHealth:
    """Usage statistics of a codebook.

    Attributes
    ----------
    perplexity : float
        ``exp`` of the entropy of code usage.
    used : int
        Codes chosen at least once (in the counted assignments).
    dead_fraction : float
        Share of codes whose EMA usage is below the dead threshold.
    codebook_size : int
    collapsed : bool
        Perplexity below 2 or at most one code used: every input gets (almost) the same code.
    """

    perplexity: float
    used: int
    dead_fraction: float
    codebook_size: int
    collapsed: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain JSON form."""
        return asdict(self)


class VectorQuantizer(nn.Module):
    """Cosine vector quantiser.

    Parameters
    ----------
    codebook_size : int
        Number of codes.
    dim : int
        Width of a code (inputs are projected to it by the caller).
    update : {"ema", "straight_through"}
        How codes move: EMA of assigned vectors, or gradients of the codebook loss.
    decay : float
        EMA decay of code vectors and usage.
    commitment : float
        Weight of the commitment loss (encoder towards its code).
    dead_share : float
        A code is dead when its EMA usage share is below ``dead_share / codebook_size``.

    Attributes
    ----------
    codes : Tensor
        ``(codebook_size, dim)``, unit rows (a buffer under EMA, a parameter otherwise).
    usage : Tensor
        EMA share of assignments per code (sums to about 1 once warm).
    counts : Tensor
        Assignments per code since :meth:`reset_counts` (for :meth:`health`).
    restarts : Tensor
        Codes restarted so far.
    initialized : Tensor
        False until the first training batch, whose vectors the codes start on (a random
        codebook on the sphere would leave most codes far from every input).
    """

    def __init__(self, codebook_size: int, dim: int, *,
                 update: Literal["ema", "straight_through"] = "ema", decay: float = 0.99,
                 commitment: float = 0.25, dead_share: float = 0.03) -> None:
        super().__init__()
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        self.codebook_size, self.dim = int(codebook_size), int(dim)
        self.update, self.decay = update, float(decay)
        self.commitment, self.dead_share = float(commitment), float(dead_share)
        init = F.normalize(torch.randn(codebook_size, dim), dim=1)
        if update == "ema":
            self.register_buffer("codes", init)
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codes = nn.Parameter(init)
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size))
        self.register_buffer("counts", torch.zeros(codebook_size))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def normalized_codes(self) -> torch.Tensor:
        """Unit code vectors ``(codebook_size, dim)``."""
        return F.normalize(self.codes, dim=1)

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each unit vector ``z`` ``(..., dim)``."""
        return (F.normalize(z, dim=-1) @ self.normalized_codes().T).argmax(dim=-1)

    def forward(self, z: torch.Tensor, valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z`` ``(..., dim)``.

        Parameters
        ----------
        z : Tensor
        valid : Tensor, optional
            bool ``z.shape[:-1]``: the vectors to learn from (default all). The others (e.g.
            the tokens of padding channels) are quantised too, but take no part in the loss,
            the codebook's initialisation, its updates or its usage counts.

        Returns
        -------
        quantized : Tensor
            The codes (unit vectors) with the straight-through gradient to ``z``.
        index : Tensor
            int64 ``(...)``.
        loss : Tensor
            Commitment loss (+ the codebook loss under straight-through updates).
        """
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=1)
        use = (torch.ones(len(flat), dtype=torch.bool, device=flat.device) if valid is None
               else valid.reshape(-1).to(flat.device))
        learn = bool(use.any())
        if self.training and not bool(self.initialized) and learn:
            self._init_from(flat.detach()[use])
        index = (flat @ self.normalized_codes().T).argmax(dim=1)
        chosen = self.normalized_codes()[index]
        if learn:
            loss = self.commitment * F.mse_loss(flat[use], chosen[use].detach())
            if self.update == "straight_through":
                loss = loss + F.mse_loss(chosen[use], flat[use].detach())
        else:
            loss = (flat * 0).sum()
        if self.training and learn:
            self._track(flat.detach()[use], index[use])
        quantized = flat + (chosen - flat).detach()
        return (quantized.reshape(z.shape).to(z.dtype), index.reshape(z.shape[:-1]),
                loss)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        """Codes on vectors of the first training batch (random draws, a little noise)."""
        take = torch.randint(0, len(flat), (self.codebook_size,), device=flat.device)
        take[: min(len(flat), self.codebook_size)] = torch.randperm(len(flat), device=flat.device
                                                                    )[: self.codebook_size]
        new = F.normalize(flat[take] + 0.01 * torch.randn_like(flat[take]), dim=1)
        if self.update == "ema":
            self.codes.copy_(new)
            self.ema_sum.copy_(new)
        else:
            self.codes.data.copy_(new)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _track(self, flat: torch.Tensor, index: torch.Tensor) -> None:
        onehot = F.one_hot(index, self.codebook_size).to(flat.dtype)
        n = onehot.sum(dim=0)
        self.counts += n
        self.usage.mul_(self.decay).add_(n / n.sum(), alpha=1 - self.decay)
        if self.update == "ema":
            assigned = onehot.T @ flat
            used = n > 0
            self.ema_sum[used] = (self.decay * self.ema_sum[used]
                                  + (1 - self.decay) * assigned[used])
            self.codes.copy_(F.normalize(self.ema_sum, dim=1))

    def dead(self) -> torch.Tensor:
        """bool ``(codebook_size,)``: codes whose usage share is below the dead threshold."""
        return self.usage < self.dead_share / self.codebook_size

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move dead codes onto vectors of ``z`` ``(..., dim)``; return how many moved.

        The vectors farthest from their current code are taken first (they are the inputs the
        codebook serves worst), with a little noise so that restarted codes differ.
        """
        dead = torch.nonzero(self.dead()).squeeze(1)
        if not len(dead):
            return 0
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=1)
        fit = (flat @ self.normalized_codes().T).amax(dim=1)
        order = torch.argsort(fit)  # worst served first
        take = order[torch.arange(len(dead), device=order.device) % len(order)]
        noise = 0.01 * torch.randn(len(dead), self.dim, generator=generator,
                                   device=flat.device)
        new = F.normalize(flat[take] + noise, dim=1)
        if self.update == "ema":
            self.ema_sum[dead] = new
            self.codes[dead] = new
        else:
            self.codes.data[dead] = new
        self.usage[dead] = 1.0 / self.codebook_size
        self.restarts += len(dead)
        return int(len(dead))

    def reset_counts(self) -> None:
        """Start counting assignments afresh (e.g. at each epoch)."""
        self.counts.zero_()

    def health(self, counts: torch.Tensor | None = None) -> CodebookHealth:
        """Usage statistics from ``counts`` (default: those since :meth:`reset_counts`)."""
        counts = self.counts if counts is None else counts
        ppl = perplexity(counts)
        used = int((counts > 0).sum())
        return CodebookHealth(ppl, used, float(self.dead().float().mean()), self.codebook_size,
                              bool(ppl < 2.0 or used <= 1))
