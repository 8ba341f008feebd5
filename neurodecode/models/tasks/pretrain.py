"""The Lightning tasks of codebook pretraining: thin training steps over the plain networks."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..adapters.base import SubjectSpec
from ..codebook.model import MaskedCodeModel, SegmentVQVAE, random_segment_mask
from ..config import ModelConfig

__all__ = ["MaskedCodeTask", "TokenizerTask"]


def _optimizer(module: torch.nn.Module, config: ModelConfig) -> torch.optim.Optimizer:
    pre = config.pretrain
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=pre.lr, weight_decay=pre.weight_decay)


class TokenizerTask(L.LightningModule):
    """Stage 1: train the :class:`~neurodecode.models.codebook.model.SegmentVQVAE`.

    The loss is the reconstruction error of each sample's own channels plus the VQ loss.
    Every ``restart_every`` steps dead codes are restarted on the batch's vectors. Per epoch
    it logs ``recon_loss``, the codebook's ``perplexity``, ``dead_fraction`` and ``codes_used``
    (codebook health, over the epoch's assignments) and ``restarts`` so far.

    Parameters
    ----------
    config : dict
        The :class:`~neurodecode.models.config.ModelConfig` as plain data.
    subjects : dict
        Subject name → :meth:`SubjectSpec.to_dict`.
    n_times : int
    """

    def __init__(self, config: dict[str, Any], subjects: dict[str, dict[str, Any]],
                 n_times: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = ModelConfig.model_validate(config)
        specs = {n: SubjectSpec.from_dict(d) for n, d in subjects.items()}
        self.model = SegmentVQVAE(self.config, specs, n_times)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, subject = batch["x"], batch["subject"]
        out = self.model(x, subject)
        if (self.global_step + 1) % self.config.pretrain.restart_every == 0:
            self.model.quantizer.restart_dead(out["vectors"].detach()[out["valid"]])
        recon = out["recon_loss"]
        self.log("recon_loss", recon, on_step=False, on_epoch=True, batch_size=len(x))
        return recon + out["vq_loss"]

    def on_train_epoch_start(self) -> None:
        self.model.quantizer.reset_counts()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after the epoch's last batch, before validation and the epoch-end callbacks (which
        # record the epoch's metrics)
        if batch_idx == self.trainer.num_training_batches - 1:
            self._log_health()

    def _log_health(self) -> None:
        health = self.model.quantizer.health()
        self.log("perplexity", health.perplexity)
        self.log("dead_fraction", health.dead_fraction)
        self.log("codes_used", float(health.used))
        self.log("restarts", float(self.model.quantizer.restarts))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        recon = self.model(batch["x"], batch["subject"])["recon_loss"]
        self.log("val_loss", recon, on_step=False, on_epoch=True, batch_size=len(batch["x"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.model, self.config)


class MaskedCodeTask(L.LightningModule):
    """Stage 2: train the :class:`~neurodecode.models.codebook.model.MaskedCodeModel`.

    Targets are the codes of a frozen stage-1 tokenizer (:attr:`teacher`, not trained, not in
    the hyper-parameters; give it with :meth:`for_models`). Each training batch draws a new
    random mask (``mask_ratio`` of the segments of every sample); validation uses a fixed one.
    Logs ``mask_loss`` and ``mask_accuracy`` (share of masked segments whose code is the top
    prediction) per epoch.

    Parameters
    ----------
    config, subjects, n_times
        As for :class:`TokenizerTask`.
    """

    def __init__(self, config: dict[str, Any], subjects: dict[str, dict[str, Any]],
                 n_times: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = ModelConfig.model_validate(config)
        specs = {n: SubjectSpec.from_dict(d) for n, d in subjects.items()}
        self.model = MaskedCodeModel(self.config, specs, n_times)
        self.teacher: SegmentVQVAE | None = None

    @classmethod
    def for_models(cls, model: MaskedCodeModel, teacher: SegmentVQVAE) -> MaskedCodeTask:
        """A task training ``model`` in place against ``teacher``'s codes (frozen)."""
        task = cls(model.config.model_dump(mode="json"),
                   {n: s.to_dict() for n, s in model.specs.items()}, model.n_times)
        task.model = model
        task.teacher = teacher.eval().requires_grad_(False)
        return task

    def _loss(self, batch: dict[str, Any], generator: torch.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.teacher is None:
            raise RuntimeError("MaskedCodeTask needs its teacher: build it with for_models()")
        x, subject = batch["x"], batch["subject"]
        self.teacher.to(x.device).eval()
        target = self.teacher.codes(x, subject)
        mask = random_segment_mask(tuple(target.shape), self.config.pretrain.mask_ratio,
                                   generator=generator, device="cpu").to(x.device)
        return self.model(x, subject, target, mask,
                          complementary=self.config.pretrain.complementary)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, accuracy = self._loss(batch, None)
        n = len(batch["x"])
        self.log("mask_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("mask_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)
        loss, accuracy = self._loss(batch, generator)
        n = len(batch["x"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("val_mask_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.model, self.config)
