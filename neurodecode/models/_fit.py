"""One training loop for the models' Lightning tasks: early stopping, best weights, history.

Apart from :mod:`._lightning` so that importing a model that does not train with Lightning
(the contrastive embedding's plain loop) does not import Lightning and its compiler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from ._lightning import quiet_lightning

__all__ = ["BestState", "FitRecord", "History", "fit_lightning"]


class BestState(L.Callback):
    """Keep the weights of the epoch with the lowest ``val_loss``; restore them at the end."""

    def __init__(self) -> None:
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and float(loss) < self.best:
            self.best, self.best_epoch = float(loss), trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


class History(L.Callback):
    """One row per training epoch: every logged metric."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


@dataclass
class FitRecord:
    """What :func:`fit_lightning` reports: per-epoch history, epoch kept, epochs, seconds."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    epochs: int = 0
    seconds: float = 0.0


def fit_lightning(task: L.LightningModule, train_loader: Any, val_loader: Any = None, *,
                  max_epochs: int, patience: int, precision: str = "32-true",
                  accelerator: str = "cpu", verbose: bool = False) -> FitRecord:
    """Train ``task``; with validation batches, stop early and keep the best epoch's weights.

    Parameters
    ----------
    task : LightningModule
        Logging ``val_loss`` in its validation step.
    train_loader, val_loader : DataLoader
        ``val_loader`` None: a fixed number of epochs, the last weights kept.
    max_epochs, patience : int
    precision, accelerator : str
    verbose : bool
        Show Lightning's messages and progress bar.

    Returns
    -------
    FitRecord
    """
    start = time.perf_counter()
    history = History()
    callbacks: list[L.Callback] = [history]
    best = None
    if val_loader is not None:
        best = BestState()
        callbacks += [best, L.pytorch.callbacks.EarlyStopping("val_loss", patience=patience,
                                                              mode="min")]
    with quiet_lightning(not verbose):
        trainer = L.Trainer(
            max_epochs=max_epochs, accelerator=accelerator, devices=1, logger=False,
            enable_checkpointing=False, enable_model_summary=False,
            enable_progress_bar=verbose, num_sanity_val_steps=0, precision=precision,
            callbacks=callbacks, log_every_n_steps=1)
        trainer.fit(task, train_loader, val_loader)
    return FitRecord(history.rows, None if best is None else best.best_epoch,
                     trainer.current_epoch, time.perf_counter() - start)
