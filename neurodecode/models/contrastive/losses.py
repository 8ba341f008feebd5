"""InfoNCE objectives for contrastive embeddings.

The generalized InfoNCE loss of CEBRA (Schneider, Lee & Mathis, Nature 2023) is

.. math::

    L = \\frac{1}{n}\\sum_i -\\phi(r_i, p_i) + \\log \\sum_j e^{\\phi(r_i, n_j)}

where the positive is *not* part of the denominator and the negatives ``n_j`` are one uniform
draw shared by the whole batch. The first term is reported as *alignment*, the second as
*uniformity*; their sum relates to the goodness of fit ``log(batch_size) - L`` (in bits).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["InfoNCE", "goodness_of_fit_bits"]

Similarity = Literal["cosine", "euclidean"]


class InfoNCE(nn.Module):
    """Generalized InfoNCE with cosine or (negative squared) Euclidean similarity.

    Parameters
    ----------
    similarity : {"cosine", "euclidean"}
        ``"cosine"``: ``phi(x, y) = <x, y> / tau`` on L2-normalised embeddings (the encoder
        normalises its output). ``"euclidean"``: ``phi(x, y) = -||x - y||^2 / tau``.
    temperature : float
        The (initial) temperature ``tau``.
    learnable_temperature : bool
        If True, ``log(1 / tau)`` is a parameter trained with the encoder.
    min_temperature : float or None
        Lower bound of a learnable temperature (keeps the logits finite).
    """

    def __init__(
        self,
        similarity: Similarity = "cosine",
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        min_temperature: float | None = 0.01,
    ) -> None:
        super().__init__()
        if similarity not in ("cosine", "euclidean"):
            raise ValueError(f"similarity must be 'cosine' or 'euclidean', got {similarity!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.similarity = similarity
        self.learnable_temperature = bool(learnable_temperature)
        self.max_inverse_temperature = math.inf if min_temperature is None else 1 / min_temperature
        log_inv = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if self.learnable_temperature:
            self.log_inverse_temperature = nn.Parameter(log_inv)
        else:
            self.register_buffer("log_inverse_temperature", log_inv)

    def inverse_temperature(self) -> torch.Tensor:
        """Return ``1 / tau`` (clamped for a learnable temperature)."""
        inv = self.log_inverse_temperature.exp()
        if self.learnable_temperature:
            inv = inv.clamp(max=self.max_inverse_temperature)
        return inv

    @property
    def temperature(self) -> float:
        """The current temperature ``tau``."""
        with torch.no_grad():
            return float(1.0 / self.inverse_temperature())

    def similarities(
        self, ref: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``phi(ref_i, pos_i)`` (n,) and ``phi(ref_i, neg_j)`` (n, m)."""
        inv = self.inverse_temperature()
        pos_sim = (ref * pos).sum(dim=1)
        neg_sim = ref @ neg.T
        if self.similarity == "euclidean":
            ref_sq = (ref * ref).sum(dim=1)
            pos_sim = 2 * pos_sim - ref_sq - (pos * pos).sum(dim=1)
            neg_sim = 2 * neg_sim - ref_sq[:, None] - (neg * neg).sum(dim=1)[None]
        return pos_sim * inv, neg_sim * inv

    def forward(
        self, ref: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss, alignment, uniformity)``; ``loss = alignment + uniformity``.

        Parameters
        ----------
        ref, pos : torch.Tensor
            Reference and positive embeddings, shape (n, d).
        neg : torch.Tensor
            Negative embeddings, shape (m, d), shared by all references.
        """
        pos_sim, neg_sim = self.similarities(ref, pos, neg)
        # Numerically stable: subtract the (detached) row maximum before the log-sum-exp.
        c = neg_sim.detach().max(dim=1).values
        alignment = -(pos_sim - c).mean()
        uniformity = torch.logsumexp(neg_sim - c[:, None], dim=1).mean()
        loss = alignment + uniformity
        shift = c.mean()
        return loss, alignment - shift, uniformity + shift


def goodness_of_fit_bits(loss: float | torch.Tensor, batch_size: int, n_sessions: int = 1) -> float:
    """Convert an InfoNCE loss to goodness of fit in bits: ``(log N - loss) / log 2``.

    ``N = batch_size * n_sessions`` is the number of negatives a reference is compared with.
    A model at chance (embedding independent of the positive pair) scores 0 bits; the maximum
    is ``log2(N)``.

    Parameters
    ----------
    loss : float or torch.Tensor
        The InfoNCE loss in nats (as returned by :class:`InfoNCE`).
    batch_size : int
        Number of negatives per reference in one session.
    n_sessions : int
        Number of sessions trained jointly.

    Returns
    -------
    float
        Goodness of fit in bits.
    """
    n = int(batch_size) * int(n_sessions)
    if n < 1:
        raise ValueError("batch_size * n_sessions must be >= 1")
    return float((math.log(n) - float(loss)) / math.log(2))
