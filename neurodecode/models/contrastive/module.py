"""Lightning module and batch stream for contrastive training."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from ..encoders import OffsetEncoder
from .losses import InfoNCE
from .sampling import PairSampler

__all__ = ["ContrastiveModule", "PairBatches"]


class PairBatches(IterableDataset):
    """An endless stream of gathered training batches.

    Each item is ``(windows, pos_session)``. ``windows`` has, per session ``s``, a tensor
    ``(n_rows, receptive_field, n_ch_s)`` holding, in order: the references of ``s``, the
    positives *found in* ``s``, the negatives of ``s`` and, with ``hybrid``, the time positives of
    ``s``. ``pos_session[s]`` is the session whose data hold the positives of ``s``'s references
    (``s`` itself unless positives are matched across sessions). With anchors, ``pos_session`` is
    ``-1``, the positives' windows are left out and a third element gives their anchor rows.
    Windows are gathered with one ``index_select`` per session from the (unpadded) signal, so no
    copy of the recording is made.

    Parameters
    ----------
    signals : sequence of torch.Tensor
        Per session, the signal ``(n_samples, n_channels)`` (float32, contiguous).
    sampler : PairSampler
    batch_size : int
        References (and negatives) per session and step.
    left, right : int
        Encoder window around a sample.
    seed : int
        Seed of the sampling generator.
    """

    def __init__(
        self,
        signals: Sequence[torch.Tensor],
        sampler: PairSampler,
        batch_size: int,
        left: int,
        right: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.signals = list(signals)
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.offsets = torch.arange(-left, right)
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[int]]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> tuple[list[torch.Tensor], list[int]]:
        """Sample and gather one batch."""
        pairs = self.sampler.sample(self.rng, self.batch_size)
        anchored = pairs.pos_session[0] == -1
        source_of = {t: s for s, t in enumerate(pairs.pos_session)}
        out = []
        for s, x in enumerate(self.signals):
            parts = [pairs.ref[s]]
            if not anchored:
                parts.append(pairs.pos[source_of[s]])
            parts.append(pairs.neg[s])
            if pairs.pos_time is not None:
                parts.append(pairs.pos_time[s])
            rows = torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False))
            flat = (rows[:, None] + self.offsets).reshape(-1).to(x.device, non_blocking=True)
            out.append(x.index_select(0, flat).view(len(rows), len(self.offsets), x.shape[1]))
        if anchored:
            return out, pairs.pos_session, [torch.from_numpy(p) for p in pairs.pos]
        return out, pairs.pos_session


class ContrastiveModule(L.LightningModule):
    """Train an :class:`~neurodecode.models.encoders.OffsetEncoder` with InfoNCE.

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

    def configure_optimizers(self) -> torch.optim.Optimizer:
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

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        terms = self.loss(batch)
        if self.on_step is not None:
            stats = {k: float(v.detach()) for k, v in terms.items()}
            stats["temperature"] = self.criterion.temperature
            self.on_step(self.global_step, stats)
        return terms["loss"]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        windows, rest = batch[0], batch[1:]
        return ([x.to(device, non_blocking=True) for x in windows], *rest)
