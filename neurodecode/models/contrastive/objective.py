"""The contrastive training objective (encoder + InfoNCE over sampled pairs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders import OffsetEncoder
from .losses import InfoNCE

__all__ = ["ContrastiveObjective"]


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

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over :meth:`trainable_parameters`; everything else is frozen."""
        params = self.trainable_parameters()
        train = {id(p) for p in params}
        for p in [*self.encoder.parameters(), *self.criterion.parameters()]:
            p.requires_grad_(id(p) in train)
        return torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)

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

    def report(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Pass the step's loss terms (and the temperature) to ``on_step``."""
        if self.on_step is not None:
            stats = {k: float(v.detach()) for k, v in terms.items()}
            stats["temperature"] = self.criterion.temperature
            self.on_step(step, stats)
