"""The Lightning task of the reconstruction's diffusion UNet: a thin step over the plain model."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from ..vision.diffusion import ConditionalDiffusion

__all__ = ["DiffusionTask"]


class DiffusionTask(L.LightningModule):
    """Train a :class:`~neurodecode.models.vision.diffusion.ConditionalDiffusion` in place.

    Batches are ``(images (n, 3, H, W) in [0, 1], tokens (n, n_tokens, token_dim))``. The
    training noise, timesteps and condition dropout come from a generator seeded with the
    config's ``seed``; the validation loss (``val_loss``, of the EMA weights when kept) draws
    them from a generator re-seeded every epoch, so that epochs are compared on the same noise.
    AdamW (fused on CUDA) over the trainable parameters; one EMA update after every batch.

    Parameters
    ----------
    model : ConditionalDiffusion
        Shared, not copied: training changes its weights.

    Attributes
    ----------
    train_seconds : float
        Wall time of the training epochs (data, forward, backward, optimiser and EMA steps).
    train_images : int
        Training images processed.
    """

    def __init__(self, model: ConditionalDiffusion) -> None:
        super().__init__()
        self.model = model
        self.train_seconds = 0.0
        self.train_images = 0
        self._generator = torch.Generator().manual_seed(model.config.seed)
        self._val_generator = torch.Generator()
        self._epoch_start = 0.0

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor],
                      batch_idx: int) -> torch.Tensor:
        images, tokens = batch
        loss = self.model.loss(images, tokens, generator=self._generator)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        self.train_images += len(images)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.model.update_ema()
        if batch_idx == self.trainer.num_training_batches - 1:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - self._epoch_start

    def on_validation_epoch_start(self) -> None:
        self._val_generator.manual_seed(self.model.config.seed + 1)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, tokens = batch
        loss = self.model.loss(images, tokens, generator=self._val_generator,
                               ema=self.model.ema_unet is not None)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.model.config
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=self.device.type == "cuda" or None)
