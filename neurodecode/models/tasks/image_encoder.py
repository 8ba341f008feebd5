"""The Lightning task of the trained image encoder: a thin training step over the networks."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from ..vision.encoders import TokenDecoder, TokenEncoder, augment_views, info_nce

__all__ = ["ImageEncoderTask"]


class ImageEncoderTask(L.LightningModule):
    """Train a :class:`~neurodecode.models.vision.encoders.TokenEncoder` and its decoder.

    The loss is the pixel MSE of the decoder's reconstruction of each (clean) image plus
    ``contrastive_weight`` times the InfoNCE between the pooled embeddings of two augmented
    views (:func:`~neurodecode.models.vision.encoders.augment_views`). Augmentations draw from
    the task's own generators: training's from ``seed``, validation's restarted from
    ``seed + 1`` every epoch, so ``val_loss`` compares epochs on the same views. Logs ``loss``,
    ``recon_loss`` and ``nce_loss`` per epoch, and ``val_loss`` (same sum) on validation.

    Parameters
    ----------
    encoder : TokenEncoder
    decoder : TokenDecoder
    lr : float
        AdamW learning rate.
    contrastive_weight, temperature : float
    seed : int
    max_grad_norm : float
        Gradients are clipped to this norm before every step.
    """

    def __init__(self, encoder: TokenEncoder, decoder: TokenDecoder, *, lr: float,
                 contrastive_weight: float, temperature: float, seed: int = 0,
                 max_grad_norm: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.lr = lr
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.seed = seed
        self.max_grad_norm = max_grad_norm
        self.train_generator = torch.Generator().manual_seed(seed)
        self.val_generator = torch.Generator().manual_seed(seed + 1)

    def _losses(self, x: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
        recon = F.mse_loss(self.decoder(self.encoder(x)), x)
        if self.contrastive_weight == 0:
            return recon, torch.zeros((), device=x.device)
        views = torch.cat([augment_views(x, generator), augment_views(x, generator)])
        pooled = self.encoder.pooled(self.encoder(views))
        a, b = pooled.chunk(2)
        return recon, info_nce(a, b, self.temperature)

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        recon, nce = self._losses(x, self.train_generator)
        loss = recon + self.contrastive_weight * nce
        for key, value in (("loss", loss), ("recon_loss", recon), ("nce_loss", nce)):
            self.log(key, value, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_generator.manual_seed(self.seed + 1)

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        (x,) = batch
        recon, nce = self._losses(x, self.val_generator)
        self.log("val_loss", recon + self.contrastive_weight * nce, on_step=False,
                 on_epoch=True, batch_size=len(x))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the InfoNCE's early gradients can be large enough to collapse the embeddings
        torch.nn.utils.clip_grad_norm_(self.parameters(), self.max_grad_norm)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=1e-4)
