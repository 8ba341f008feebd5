"""Lightning module for contrastive training (imported only when Lightning is used)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from .objective import ContrastiveObjective

__all__ = ["ContrastiveModule"]


class ContrastiveModule(L.LightningModule):
    """Train an :class:`~neurodecode.models.encoders.OffsetEncoder` with InfoNCE in Lightning.

    A thin wrapper: every argument goes to :class:`ContrastiveObjective`, whose loss is the
    training step, so a :class:`lightning.Trainer` and the estimator's plain loop make the same
    updates. Batches come from :class:`~neurodecode.models.contrastive.batches.PairBatches`
    (``DataLoader(stream, batch_size=None)``).

    Parameters
    ----------
    *args, **kwargs
        Arguments of :class:`ContrastiveObjective`.
    progress_bar : bool
        Show ``loss``, ``alignment`` and ``uniformity`` in the trainer's progress bar (values
        the objective already read for its log: no extra device synchronisation).
    """

    def __init__(self, *args: Any, progress_bar: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.objective = ContrastiveObjective(*args, **kwargs)
        self.progress_bar = progress_bar

    @classmethod
    def wrap(cls, objective: ContrastiveObjective, *, progress_bar: bool = False
             ) -> ContrastiveModule:
        """A module training an existing objective (sharing its encoder and criterion).

        Parameters
        ----------
        objective : ContrastiveObjective
        progress_bar : bool
            As for the constructor.

        Returns
        -------
        ContrastiveModule
        """
        module = cls.__new__(cls)
        L.LightningModule.__init__(module)
        module.objective = objective
        module.progress_bar = progress_bar
        return module

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoder being trained."""
        return self.objective.encoder

    @property
    def criterion(self) -> torch.nn.Module:
        """The InfoNCE criterion."""
        return self.objective.criterion

    def embed_batch(self, batch: Any) -> dict[str, torch.Tensor]:
        """See :meth:`ContrastiveObjective.embed_batch`."""
        return self.objective.embed_batch(batch)

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """See :meth:`ContrastiveObjective.loss`."""
        return self.objective.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.objective.make_optimizer()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        terms = self.objective.loss(batch)
        stats = self.objective.report(self.global_step, terms)
        if self.progress_bar and stats is not None:
            shown = {k: stats[k] for k in ("loss", "alignment", "uniformity")}
            self.log_dict(shown, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return terms["loss"]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        windows, rest = batch[0], batch[1:]
        return ([x.to(device, non_blocking=True) for x in windows], *rest)
