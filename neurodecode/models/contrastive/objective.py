"""The contrastive training objective (encoder + InfoNCE over sampled pairs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam

from ..encoders import OffsetEncoder
from .losses import InfoNCE

__all__ = ["ContrastiveObjective", "FunctionalAdam"]


class FunctionalAdam:
    """Adam through :func:`torch.optim.adam.adam`, without the :class:`~torch.optim.Optimizer`.

    Gives the same updates as ``torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)``
    bit for bit (tested). Constructing any :class:`torch.optim.Optimizer` imports
    ``torch._dynamo`` (with sympy: about 65 MB and 1.3 s in a fresh process) for its
    compile guards; the plain CPU training loop needs none of that.

    Parameters
    ----------
    params : list of torch.nn.Parameter
    lr, weight_decay : float
    betas : tuple of float
    eps : float
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.steps = [torch.tensor(0.0) for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of the parameters that have a gradient."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        adam(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],
            [self.exp_avg[i] for i in live],
            [self.exp_avg_sq[i] for i in live],
            [],
            [self.steps[i] for i in live],
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=False,
        )


class ContrastiveObjective(nn.Module):
    """InfoNCE over the batches of :class:`PairBatches`: the training step, without a trainer.

    The plain training loop and :class:`ContrastiveModule` (Lightning) both run this.

    Parameters
    ----------
    encoder : OffsetEncoder
    criterion : InfoNCE
    learning_rate, weight_decay : float
        Adam settings.
    hybrid_dims : int or None
        With a hybrid objective, the behaviour loss uses the first ``hybrid_dims`` output
        dimensions and the time loss all of them.
    sessions : sequence of int or None
        Input layer of each batch session (default: batch session ``s`` uses layer ``s``).
    train_sessions : sequence of int or None
        Train only these input layers and freeze everything else (adaptation); None trains
        the whole encoder.
    anchor_embedding : torch.Tensor or None
        Fixed embeddings of anchor samples; batches with anchor rows take their positives from
        it (adapting a new session to a trained embedding).
    on_step : callable or None
        Called as ``on_step(step, stats)`` after each optimiser step, with the loss terms.
    """

    def __init__(
        self,
        encoder: OffsetEncoder,
        criterion: InfoNCE,
        *,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.0,
        hybrid_dims: int | None = None,
        sessions: Sequence[int] | None = None,
        train_sessions: Sequence[int] | None = None,
        anchor_embedding: torch.Tensor | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.criterion = criterion
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.hybrid_dims = hybrid_dims
        self.sessions = None if sessions is None else list(sessions)
        self.train_sessions = None if train_sessions is None else list(train_sessions)
        self.on_step = on_step
        self.register_buffer("anchor_embedding", anchor_embedding, persistent=False)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates."""
        if self.train_sessions is None:
            return [*self.encoder.parameters(), *self.criterion.parameters()]
        return [p for s in self.train_sessions for p in self.encoder.input_layers[s].parameters()]

    def make_optimizer(self, functional: bool = False) -> torch.optim.Optimizer | FunctionalAdam:
        """Adam over :meth:`trainable_parameters`; everything else is frozen.

        Parameters
        ----------
        functional : bool
            Return a :class:`FunctionalAdam` (same updates, bit for bit) instead of
            :class:`torch.optim.Adam`, for the plain training loop.
        """
        params = self.trainable_parameters()
        train = {id(p) for p in params}
        for p in [*self.encoder.parameters(), *self.criterion.parameters()]:
            p.requires_grad_(id(p) in train)
        cls = FunctionalAdam if functional else torch.optim.Adam
        return cls(params, lr=self.learning_rate, weight_decay=self.weight_decay)

    def embed_batch(self, batch: tuple[list[torch.Tensor], list[int]]) -> dict[str, torch.Tensor]:
        """Embed a batch from :class:`PairBatches`; return ref/pos/neg(/time) embeddings."""
        sessions, pos_session = batch[0], batch[1]
        anchor_rows = batch[2] if len(batch) > 2 else None
        n_sessions = len(sessions)
        source_of = {int(t): s for s, t in enumerate(pos_session)}
        n_parts = (2 if anchor_rows is not None else 3) + (self.hybrid_dims is not None)
        ref, pos, neg, tpos = [None] * n_sessions, [None] * n_sessions, [], []
        for s, windows in enumerate(sessions):
            layer = s if self.sessions is None else self.sessions[s]
            emb = self.encoder(windows, session=layer)
            b = len(windows) // n_parts
            ref[s] = emb[:b]
            if anchor_rows is None:
                pos[source_of[s]] = emb[b : 2 * b]
                rest = emb[2 * b :]
            else:
                pos[s] = self.anchor_embedding[anchor_rows[s].to(emb.device)]
                rest = emb[b:]
            neg.append(rest[:b])
            if self.hybrid_dims is not None:
                tpos.append(rest[b:])
        out = {"ref": torch.cat(ref), "pos": torch.cat(pos), "neg": torch.cat(neg)}
        if tpos:
            out["time"] = torch.cat(tpos)
        return out

    def loss(self, batch: tuple[list[torch.Tensor], list[int]]) -> dict[str, torch.Tensor]:
        """Loss terms of a batch (``loss``, ``alignment``, ``uniformity``)."""
        e = self.embed_batch(batch)
        if self.hybrid_dims is None:
            loss, align, unif = self.criterion(e["ref"], e["pos"], e["neg"])
            return {"loss": loss, "alignment": align, "uniformity": unif}
        k = self.hybrid_dims

        def part(x: torch.Tensor) -> torch.Tensor:
            x = x[:, :k]
            return F.normalize(x, dim=1) if self.encoder.normalize else x

        b_loss, b_align, b_unif = self.criterion(part(e["ref"]), part(e["pos"]), part(e["neg"]))
        t_loss, t_align, t_unif = self.criterion(e["ref"], e["time"], e["neg"])
        return {
            "loss": b_loss + t_loss,
            "alignment": b_align + t_align,
            "uniformity": b_unif + t_unif,
            "behavior_loss": b_loss,
            "time_loss": t_loss,
        }

    def report(self, step: int, terms: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """Pass the step's loss terms (and the temperature) to ``on_step``.

        Parameters
        ----------
        step : int
            Zero-based optimiser step.
        terms : dict of str to Tensor
            Output of :meth:`loss`.

        Returns
        -------
        dict of str to float or None
            The values passed (None without ``on_step``: nothing is read from the device).
        """
        if self.on_step is None:
            return None
        stats = {k: float(v.detach()) for k, v in terms.items()}
        stats["temperature"] = self.criterion.temperature
        self.on_step(step, stats)
        return stats
