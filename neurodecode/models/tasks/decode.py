"""The Lightning task of cross-subject decoding: a thin training step over the plain model."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from ..adapters.base import SubjectSpec
from ..adapters.lora import add_lora
from ..checkpoint import check_adapters
from ..config import ModelConfig
from ..cross_subject import ADAPTER_PREFIX, CrossSubjectModel

__all__ = ["DecodeTask"]


class DecodeTask(L.LightningModule):
    """Train a :class:`~neurodecode.models.cross_subject.CrossSubjectModel` on mixed batches.

    Batches are the dicts of :func:`neurodecode.data.loader.collate_windows`: ``x``
    ``(batch, time, max_channels)``, ``y`` and ``subject`` (index into the model's subjects).
    The step adds what the config's ``train`` asks for: channel dropout, subject dropout
    (samples routed through the adapter's shared layer), and the cycle reconstruction loss
    between subjects (with cycle-translated samples as augmentation). Only parameters with
    ``requires_grad`` are optimised, so few-shot strategies freeze by flag. All
    hyper-parameters are plain data (``save_hyperparameters``): the task restores from a
    Lightning checkpoint with ``DecodeTask.load_from_checkpoint(path, weights_only=True)``;
    a checkpoint whose subject adapters differ from the hyper-parameters' subjects raises
    :class:`~neurodecode.models.checkpoint.AdapterMismatchError`.

    Parameters
    ----------
    config : dict
        A :class:`~neurodecode.models.config.ModelConfig` as a dict.
    subjects : dict of str to dict
        :meth:`SubjectSpec.to_dict` of each subject, in index order.
    n_times, n_outputs : int
    classes : list of str, optional
        Class names (classification).
    lora : dict, optional
        ``{"rank", "alpha"}``: low-rank layers added to the backbone.
    lr_scale : float
        Factor on the config's learning rates (few-shot fine-tuning uses smaller ones).
    """

    def __init__(self, config: dict[str, Any], subjects: dict[str, dict[str, Any]], n_times: int,
                 n_outputs: int, classes: list[str] | None = None,
                 lora: dict[str, Any] | None = None, lr_scale: float = 1.0) -> None:
        super().__init__()
        # plain Python values only, so that the checkpoint loads with weights_only=True
        classes = None if classes is None else [str(c) for c in classes]
        lr_scale = float(lr_scale)
        self.save_hyperparameters()
        cfg = ModelConfig.model_validate(config)
        specs = {n: SubjectSpec.from_dict(d) for n, d in subjects.items()}
        self.model = CrossSubjectModel(cfg, specs, n_times=n_times, n_outputs=n_outputs)
        if lora:
            add_lora(self.model.backbone, **lora)
        self.train_config = cfg.train
        self._val_out: list[torch.Tensor] = []
        self._val_y: list[torch.Tensor] = []
        self.seen_indices: list[np.ndarray] = []  # dataset rows of every batch trained on

    @classmethod
    def for_model(cls, model: CrossSubjectModel, *, classes: list[str] | None = None,
                  lora: dict[str, Any] | None = None, lr_scale: float = 1.0) -> DecodeTask:
        """A task training an existing model in place (its modules are shared, not copied)."""
        task = cls(model.config.model_dump(mode="json"),
                   {n: s.to_dict() for n, s in model.specs.items()}, model.n_times,
                   model.n_outputs, classes, lora, lr_scale)
        task.model = model
        return task

    # ---- steps ----------------------------------------------------------------------------

    def _masks(self, x: torch.Tensor, n_channels: torch.Tensor | None
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tc = self.train_config
        mask = unknown = None
        if tc.channel_dropout > 0:
            mask = torch.rand(x.shape[0], x.shape[2], device=x.device) >= tc.channel_dropout
            if n_channels is not None:  # keep at least one real channel per sample
                first = torch.randint(0, 1 << 30, (x.shape[0],), device=x.device) % n_channels
                mask[torch.arange(x.shape[0]), first] = True
        if tc.subject_dropout > 0 and self.model.adapter.zero_shot:
            unknown = torch.rand(x.shape[0], device=x.device) < tc.subject_dropout
        return mask, unknown

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y, subject = batch["x"], batch["y"], batch["subject"]
        if "index" in batch:
            self.seen_indices.append(batch["index"].detach().cpu().numpy())
        mask, unknown = self._masks(x, batch.get("n_channels"))
        z = self.model.encode(x, subject, mask=mask, unknown=unknown)
        out = self.model.head(self.model.backbone(z))
        loss = self.model.head.loss(out, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        tc = self.train_config
        if tc.cycle_weight > 0 and self.model.adapter.invertible \
                and len(self.model.subject_names) > 1:
            cycle = self._cycle_loss(x, z, subject, y)
            self.log("cycle_loss", cycle, on_step=False, on_epoch=True, batch_size=len(x))
            loss = loss + tc.cycle_weight * cycle
        return loss

    def _cycle_loss(self, x: torch.Tensor, z: torch.Tensor, subject: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
        """Reconstruction of each sample in its own space + latent cycle through another."""
        recon = x.new_zeros(())
        for s in torch.unique(subject).tolist():
            rows = torch.nonzero(subject == s).squeeze(1)
            name = self.model.subject_names[s]
            xs = x[rows, :, : self.model.adapter.specs[name].n_channels]
            recon = recon + F.mse_loss(self.model.adapter.decode(z[rows], name), xs,
                                       reduction="sum") / xs[0].numel()
        recon = recon / len(x)
        z_cycle, x_b, other = self.model.cycle(z, subject)
        loss = recon + F.mse_loss(z_cycle, z)
        if self.train_config.cycle_augment:
            out_b = self.model(x_b, other)
            loss = loss + self.model.head.loss(out_b, y)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch["x"], batch["subject"])
        loss = self.model.head.loss(out, batch["y"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        self._val_out.append(out.detach().float().cpu())
        self._val_y.append(batch["y"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if self._val_out:
            score = self.model.head.score(torch.cat(self._val_out), torch.cat(self._val_y))
            self.log("val_score", float(score))
        self._val_out, self._val_y = [], []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        tc, scale = self.train_config, float(self.hparams.lr_scale)
        own = {id(p) for p in self.model.adapter.subjects.parameters()}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) in own],
             "lr": scale * (tc.adapter_lr or tc.lr)},
            {"params": [p for p in trainable if id(p) not in own], "lr": scale * tc.lr},
        ]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("no trainable parameter: check the adaptation strategy")
        return torch.optim.AdamW(groups, weight_decay=tc.weight_decay)

    # ---- checkpoints ----------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose adapters are not those of the hyper-parameters."""
        prefix = f"model.{ADAPTER_PREFIX}"
        found = {k[len(prefix):].split(".", 1)[0] for k in checkpoint.get("state_dict", {})
                 if k.startswith(prefix)}
        check_adapters(found, self.model.adapter.subjects.keys(), "Lightning checkpoint")
