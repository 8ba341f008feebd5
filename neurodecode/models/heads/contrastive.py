"""A contrastive head toward stimulus embeddings (MindEye/MindBridge-style), and its metrics.

The head projects the backbone's features to the width of the targets, stimulus embeddings such
as the image features of a frozen vision model, and is trained with

.. math::

    L = w_c \\, L_{contrastive}(\\hat y, y) + w_{mse} \\, \\mathrm{MSE}(\\hat y, y)

where the contrastive term compares the L2-normalised predictions with the normalised targets of
the batch, either as the symmetric InfoNCE of CLIP (Radford et al., 2021), whose targets are
the matching pairs, or as the SoftCLIP loss of MindEye (Scotti et al., NeurIPS 2023), whose
targets are the softmax of the target-target similarities (so that similar stimuli are not
pushed apart). The MSE term regresses the embedding itself (MindBridge, Wang et al., CVPR 2024),
which reconstruction needs. A batch of one sample has no negatives: only the MSE term counts.

:func:`top1_retrieval` (the head's score) measures how well predicted embeddings identify their
stimulus among a set; :func:`neurodecode.evaluate.metrics.two_way_identification` and
``top_k_retrieval`` are the field's pairwise and N-way versions.
"""

from __future__ import annotations

import math

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import PartParams, register
from .base import Head

__all__ = [
    "ContrastiveHead",
    "info_nce_loss",
    "soft_clip_loss",
    "top1_retrieval",
]

#: Upper bound of a learnable inverse temperature (as CLIP's logit scale).
MAX_LOGIT_SCALE = 100.0


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be (batch, dim), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.shape[0] < 2:
        raise ValueError("a contrastive loss needs a batch of at least 2 samples")


def soft_clip_loss(pred: torch.Tensor, target: torch.Tensor,
                   temperature: float | torch.Tensor = 0.125) -> torch.Tensor:
    """SoftCLIP loss of MindEye: cross-entropy toward soft target-target similarities.

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(batch, dim)`` predictions and targets, batch >= 2; both are L2-normalised here.
    temperature : float or torch.Tensor
        Divides the cosine similarities.

    Returns
    -------
    torch.Tensor
        Scalar: the mean of the brain-to-stimulus and stimulus-to-brain cross-entropies
        against ``softmax(target @ target.T / temperature)`` (detached: a fixed soft label).
    """
    _check_pair(pred, target)
    pred, target = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    soft = torch.softmax(target @ target.T / temperature, dim=-1).detach()
    logits = pred @ target.T / temperature
    forward = -(torch.log_softmax(logits, dim=-1) * soft).sum(-1).mean()
    backward = -(torch.log_softmax(logits.T, dim=-1) * soft).sum(-1).mean()
    return (forward + backward) / 2


def info_nce_loss(pred: torch.Tensor, target: torch.Tensor,
                  temperature: float | torch.Tensor = 0.125) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss): each prediction's positive is its own target.

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(batch, dim)``, batch >= 2; both are L2-normalised here.
    temperature : float or torch.Tensor
        Divides the cosine similarities.

    Returns
    -------
    torch.Tensor
        Scalar: the mean of the two directions' cross-entropies.
    """
    _check_pair(pred, target)
    pred, target = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    logits = pred @ target.T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _as_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def top1_retrieval(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Top-1 retrieval accuracy of predicted embeddings among the targets of the set.

    For each prediction, the target of highest cosine similarity among all targets of the set
    is retrieved; it is correct if it is the prediction's own target (or an identical copy of
    it: a stimulus shown several times).

    Parameters
    ----------
    pred, target : array-like
        ``(n, dim)``.

    Returns
    -------
    float
        Fraction of correct retrievals (chance ``1 / n`` for distinct targets).
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.ndim != 2 or p.shape != t.shape or p.shape[0] < 1:
        raise ValueError(f"pred and target must both be (n, dim), got {tuple(p.shape)} and "
                         f"{tuple(t.shape)}")
    sim = F.normalize(p, dim=-1) @ F.normalize(t, dim=-1).T
    best = sim.argmax(dim=1)
    correct = (t[best] == t).all(dim=1)
    return float(correct.double().mean())


@register("head", "contrastive")
class ContrastiveHead(Head):
    """Predicted stimulus embeddings ``(batch, n_outputs)`` trained contrastively.

    Parameters
    ----------
    params : ContrastiveHead.Params
    in_features : int
        Width of the backbone's features.
    n_outputs : int
        Width of the target embeddings; targets are float ``(batch, n_outputs)``.
    """

    task = "embed"
    metric = "top1_retrieval"

    class Params(PartParams):
        """Hyper-parameters of :class:`ContrastiveHead`.

        Attributes
        ----------
        hidden : int
            Hidden width of the projector ``Linear -> LayerNorm -> GELU -> Dropout -> Linear``.
        dropout : float
            In the projector.
        soft : bool
            SoftCLIP (MindEye) instead of the symmetric InfoNCE.
        temperature : float
            (Initial) temperature of the contrastive term.
        learnable_temperature : bool
            Train ``log(1 / temperature)`` (bounded by :data:`MAX_LOGIT_SCALE`).
        contrastive_weight, mse_weight : float
            Weights of the contrastive and the MSE (regression) terms; not both 0.
        """

        hidden: int = pydantic.Field(512, ge=1)
        dropout: float = pydantic.Field(0.0, ge=0, lt=1)
        soft: bool = True
        temperature: float = pydantic.Field(0.125, gt=0)
        learnable_temperature: bool = False
        contrastive_weight: float = pydantic.Field(1.0, ge=0)
        mse_weight: float = pydantic.Field(1.0, ge=0)

        @pydantic.model_validator(mode="after")
        def _some_loss(self) -> ContrastiveHead.Params:
            if self.contrastive_weight == 0 and self.mse_weight == 0:
                raise ValueError("contrastive_weight and mse_weight cannot both be 0")
            return self

    def __init__(self, params: ContrastiveHead.Params, *, in_features: int, n_outputs: int
                 ) -> None:
        super().__init__(params, in_features=in_features, n_outputs=n_outputs)
        if self.n_outputs < 1:
            raise ValueError(f"contrastive needs n_outputs >= 1, got {self.n_outputs}")
        self.projector = nn.Sequential(
            nn.Linear(self.in_features, params.hidden),
            nn.LayerNorm(params.hidden),
            nn.GELU(),
            nn.Dropout(params.dropout),
            nn.Linear(params.hidden, self.n_outputs),
        )
        log_scale = torch.tensor(math.log(1.0 / params.temperature), dtype=torch.float32)
        if params.learnable_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    @property
    def temperature(self) -> torch.Tensor:
        """The current temperature (``1 / logit scale``, the scale bounded)."""
        return 1.0 / self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted embeddings ``(batch, n_outputs)`` (not normalised)."""
        return self.projector(features)

    def contrastive_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The contrastive term alone (SoftCLIP or InfoNCE; batch >= 2)."""
        loss = soft_clip_loss if self.params.soft else info_nce_loss
        return loss(output, target.to(output.dtype), self.temperature)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``contrastive_weight * contrastive + mse_weight * MSE`` (MSE only for one sample)."""
        target = target.to(output.dtype)
        if target.shape != output.shape:
            raise ValueError(f"contrastive targets must be {tuple(output.shape)} embeddings, "
                             f"got {tuple(target.shape)}")
        total = output.new_zeros(())
        if self.params.mse_weight > 0:
            total = total + self.params.mse_weight * F.mse_loss(output, target)
        if self.params.contrastive_weight > 0 and output.shape[0] >= 2:
            total = total + self.params.contrastive_weight * self.contrastive_loss(output, target)
        if not total.requires_grad and output.requires_grad:
            total = total + 0.0 * output.sum()  # keep the graph (e.g. one sample, no MSE term)
        return total

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Predicted embeddings ``(batch, n_outputs)`` (float)."""
        return output.detach().float().cpu().numpy()

    def score(self, output: torch.Tensor, target: torch.Tensor | np.ndarray) -> float:
        """Top-1 retrieval accuracy among the set (:func:`top1_retrieval`)."""
        return top1_retrieval(output, target)
