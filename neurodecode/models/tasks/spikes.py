"""The Lightning task of spike-token pretraining: a thin training step over the plain model."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from ..spikes.config import SpikeModelConfig
from ..spikes.embedding import UnitEmbedding
from ..spikes.model import SpikeTransformer

__all__ = ["SpikePretrainTask"]


class SpikePretrainTask(L.LightningModule):
    """Train a :class:`~neurodecode.models.spikes.model.SpikeTransformer` on token batches.

    The loss is the mean next-token NLL per spike of the batch (the sum of its windows' NLLs
    over its spikes), plus ``config.contrastive`` × the InfoNCE alignment when the batch has
    covariates. Logs ``train_nll`` and ``val_nll`` per epoch in nats per spike (summed over
    the epoch's windows, then divided by its spikes); ``val_loss`` (= ``val_nll``) drives early
    stopping in :func:`~neurodecode.models._fit.fit_lightning`. AdamW (fused on CUDA), no
    weight decay on embeddings, biases and norms. Only parameters with ``requires_grad`` are
    optimised (unit identification freezes by flag).

    Parameters
    ----------
    config : dict
        A :class:`~neurodecode.models.spikes.config.SpikeModelConfig` as plain data.
    n_vocab, n_dt, n_past_dt, n_covariates : int
    frame_shape : list of int, optional

    Attributes
    ----------
    train_seconds : float
        Wall time spent in training epochs (data, forward, backward, step; no validation).
    """

    def __init__(self, config: dict[str, Any], n_vocab: int, n_dt: int, n_past_dt: int,
                 n_covariates: int = 0, frame_shape: list[int] | None = None) -> None:
        super().__init__()
        frame_shape = None if frame_shape is None else [int(s) for s in frame_shape]
        self.save_hyperparameters()
        self.config = SpikeModelConfig.model_validate(config)
        self.model = SpikeTransformer(n_vocab, n_dt, n_past_dt, self.config, n_covariates,
                                      None if frame_shape is None else tuple(frame_shape))
        self.train_seconds = 0.0
        self._sums: dict[str, list[torch.Tensor]] = {}
        self._epoch_start = 0.0
        self._forward: Any = None

    def compile_forward(self) -> None:
        """Run the model's forward through ``torch.compile`` (the weights stay shared)."""
        self._forward = torch.compile(self.model.forward, dynamic=True)

    @classmethod
    def for_model(cls, model: SpikeTransformer) -> SpikePretrainTask:
        """A task training ``model`` in place (its modules are shared, not copied)."""
        task = cls(model.config.model_dump(mode="json"), model.n_vocab, model.n_dt,
                   model.n_past_dt, model.n_covariates,
                   None if model.frame_shape is None else list(model.frame_shape))
        task.model = model
        return task

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self.model(batch) if self._forward is None else self._forward(batch)
        nll = self.model.nll_from(out, batch).sum()
        spikes = batch["cur_mask"].sum()
        loss = nll / spikes.clamp_min(1)
        sums = self._sums.setdefault(stage, [nll.new_zeros(()), nll.new_zeros(())])
        sums[0] = sums[0] + nll.detach()
        sums[1] = sums[1] + spikes.detach()
        if (stage == "train" and self.config.contrastive > 0 and "covariates" in batch
                and batch["cur_mask"].shape[0] > 1):
            contrast = self.model.contrastive_loss(batch, out)
            self.log("train_contrastive", contrast, on_step=False, on_epoch=True,
                     batch_size=batch["cur_mask"].shape[0])
            loss = loss + self.config.contrastive * contrast
        return loss

    def _epoch_value(self, stage: str) -> torch.Tensor:
        nll, spikes = self._sums.pop(stage, [torch.zeros(()), torch.zeros(())])
        return nll / spikes.clamp_min(1)

    def on_train_epoch_start(self) -> None:
        self._sums.pop("train", None)
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        p = self.config.covariate_dropout
        if p > 0 and "covariates" in batch and float(torch.rand(())) < p:
            # a batch without its covariates: the model also learns the context of spikes alone
            # (what decoding that behaviour, or identifying a new session, gives it)
            batch = {k: v for k, v in batch.items() if k != "covariates"}
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after the epoch's last batch, before validation and the epoch-end callbacks (which
        # record the epoch's metrics)
        if batch_idx == self.trainer.num_training_batches - 1:
            self.log("train_nll", self._epoch_value("train"))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - self._epoch_start

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        value = self._epoch_value("val")
        self.log("val_nll", value)
        self.log("val_loss", value)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        embeddings = {id(p) for m in self.model.modules()
                      if isinstance(m, UnitEmbedding | torch.nn.Embedding)
                      for p in m.parameters(recurse=False)}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            plain = (p.ndim < 2 or id(p) in embeddings
                     or name.split(".")[-1] in ("position", "covariate_position", "modality",
                                                 "past_start"))
            (no_decay if plain else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.config.lr, fused=fused or None)
