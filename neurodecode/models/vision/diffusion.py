"""A conditional diffusion model of the stimulus images, conditioned on their embedding tokens.

:class:`ConditionalDiffusion` wraps a ``diffusers`` ``UNet2DConditionModel`` working on RGB
pixels (no autoencoder: the stimuli are small) whose cross-attention reads the image encoder's
embedding tokens ``(n, n_tokens, token_dim)`` as ``encoder_hidden_states``. A learned set of
null tokens stands for "no condition": in training a sample's tokens are replaced by them with
probability ``p_uncond``, so that one network gives both the conditional and the unconditional
prediction of classifier-free guidance (:func:`neurodecode.models.vision.sampling.sample`).

The loss is the mean squared error of the predicted velocity (``prediction_type="v_prediction"``,
the default) or noise (``"epsilon"``) at a uniformly drawn timestep of a ``DDPMScheduler`` with
the config's schedule; images are scaled from [0, 1] to [-1, 1] inside. An exponential moving
average (EMA) of the weights is kept when ``ema_decay > 0``; sampling and the validation loss use
it. :func:`fit_diffusion` trains the model with the project's Lightning loop
(:func:`~neurodecode.models._fit.fit_lightning`, through
:class:`~neurodecode.models.tasks.reconstruct.DiffusionTask`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .._fit import FitRecord, fit_lightning

__all__ = ["ConditionalDiffusion", "DiffusionConfig", "DiffusionFitRecord", "fit_diffusion"]

_BLOCKS = {"DownBlock2D", "CrossAttnDownBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"}


class DiffusionConfig(pydantic.BaseModel):
    """The conditional UNet, its noise schedule, its training and its sampling defaults.

    Attributes
    ----------
    image_size : int
        Side of the (square) images, divisible by ``2 ** (len(block_out_channels) - 1)``.
    block_out_channels : tuple of int
        Channels of each resolution level (each divisible by ``norm_num_groups``).
    layers_per_block : int
    attention_head_dim : int
        Channels per attention head.
    norm_num_groups : int
        Groups of the UNet's group norms.
    down_block_types, up_block_types : tuple of str, optional
        ``diffusers`` block names, one per level. Default: a plain block at full resolution,
        cross-attention blocks below (``DownBlock2D, CrossAttnDownBlock2D, ...`` and the mirror
        image for the way up).
    num_train_timesteps : int
    beta_schedule : {"squaredcos_cap_v2", "linear", "scaled_linear"}
    prediction_type : {"v_prediction", "epsilon"}
        What the UNet predicts and its loss scores; :meth:`ConditionalDiffusion.eps` always
        returns the noise. Velocity is the default: in pixel space, after a short training, the
        noise prediction's error is amplified into the predicted clean image at the high-noise
        steps (``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``, ``a`` near 0), and its samples
        miss the images they are conditioned on; the velocity's do not (``tests/test_diffusion``).
    p_uncond : float
        Probability that a training sample's tokens are replaced by the null tokens.
    lr, weight_decay : float
        AdamW.
    batch_size, max_epochs, patience, seed : int
        Training; ``patience`` applies when validation images are given.
    ema_decay : float
        Decay of the weights' moving average (0: off). The decay of update ``k`` is
        ``min(ema_decay, (1 + k) / (10 + k))``, so that a short training is not averaged with
        the initial weights.
    channels_last : bool
        UNet weights and inputs in channels-last memory format.
    precision : {"32-true", "bf16-mixed"}
        ``bf16-mixed``: the UNet runs under bfloat16 autocast (training and sampling).
    compile : bool
        Run the UNet's forward through ``torch.compile``.
    steps, guidance_scale, strength, max_unet_evals
        Sampling defaults: DPM-Solver++ steps, classifier-free guidance (1: none), img2img
        strength, UNet evaluations allowed per image.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    image_size: int = pydantic.Field(32, ge=8)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = pydantic.Field(1, ge=1)
    attention_head_dim: int = pydantic.Field(8, ge=1)
    norm_num_groups: int = pydantic.Field(8, ge=1)
    down_block_types: tuple[str, ...] | None = None
    up_block_types: tuple[str, ...] | None = None
    num_train_timesteps: int = pydantic.Field(1000, ge=10)
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    p_uncond: float = pydantic.Field(0.1, ge=0.0, lt=1.0)
    lr: float = pydantic.Field(1e-3, gt=0.0)
    weight_decay: float = pydantic.Field(0.0, ge=0.0)
    batch_size: int = pydantic.Field(64, ge=1)
    max_epochs: int = pydantic.Field(60, ge=1)
    patience: int = pydantic.Field(10, ge=1)
    seed: int = 0
    ema_decay: float = pydantic.Field(0.999, ge=0.0, lt=1.0)
    channels_last: bool = False
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    compile: bool = False
    steps: int = pydantic.Field(10, ge=1)
    guidance_scale: float = pydantic.Field(2.0, ge=1.0)
    strength: float = pydantic.Field(0.6, gt=0.0, le=1.0)
    max_unet_evals: int = pydantic.Field(20, ge=1)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> DiffusionConfig:
        levels = len(self.block_out_channels)
        if levels < 1 or any(c < 1 for c in self.block_out_channels):
            raise ValueError("block_out_channels: one positive channel count per level")
        bad = [c for c in self.block_out_channels
               if c % self.norm_num_groups or c % self.attention_head_dim]
        if bad:
            raise ValueError(f"block_out_channels {bad} not divisible by norm_num_groups "
                             f"({self.norm_num_groups}) and attention_head_dim "
                             f"({self.attention_head_dim})")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {self.image_size} not divisible by "
                             f"2 ** {levels - 1} (the UNet's downsamplings)")
        for name in ("down_block_types", "up_block_types"):
            blocks = getattr(self, name)
            if blocks is None:
                continue
            if len(blocks) != levels:
                raise ValueError(f"{name}: {len(blocks)} blocks for {levels} levels")
            unknown = sorted(set(blocks) - _BLOCKS)
            if unknown:
                raise ValueError(f"{name}: unknown block(s) {unknown} (known: {sorted(_BLOCKS)})")
        return self

    def blocks(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The down and up block types (the defaults filled in)."""
        n = len(self.block_out_channels)
        down = self.down_block_types or ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
        up = self.up_block_types or ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
        return tuple(down), tuple(up)


def _scheduler(config: DiffusionConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type)


class ConditionalDiffusion(nn.Module):
    """A pixel-space ``UNet2DConditionModel`` conditioned on embedding tokens, with null tokens.

    Parameters
    ----------
    config : DiffusionConfig or dict
    n_tokens, token_dim : int
        Shape of the conditioning tokens of one image.

    Attributes
    ----------
    unet : UNet2DConditionModel
    null_tokens : Parameter
        ``(n_tokens, token_dim)``: the learned "no condition" of classifier-free guidance.
    ema_unet : UNet2DConditionModel or None
        Moving average of ``unet`` (``ema_decay > 0``), not trained by gradient.
    ema_null_tokens : Tensor or None
        Buffer: moving average of ``null_tokens``.
    ema_updates : int
        EMA updates made so far.
    alphas_cumprod : Tensor
        Buffer ``(num_train_timesteps,)``: the training schedule's cumulative alphas.
    """

    def __init__(self, config: DiffusionConfig | dict[str, Any], *, n_tokens: int,
                 token_dim: int) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        if n_tokens < 1 or token_dim < 1:
            raise ValueError(f"n_tokens ({n_tokens}) and token_dim ({token_dim}) must be >= 1")
        self.config = DiffusionConfig.model_validate(config)
        self.n_tokens, self.token_dim = int(n_tokens), int(token_dim)
        cfg = self.config
        down, up = cfg.blocks()
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size, in_channels=3, out_channels=3,
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=cfg.attention_head_dim, cross_attention_dim=self.token_dim)
        self.null_tokens = nn.Parameter(0.02 * torch.randn(self.n_tokens, self.token_dim))
        self.ema_unet: nn.Module | None = None
        if cfg.ema_decay > 0:
            self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
            self.register_buffer("ema_null_tokens", self.null_tokens.detach().clone())
        else:
            self.ema_null_tokens = None
        self.ema_updates = 0
        self.scheduler = _scheduler(cfg)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float().clone(),
                             persistent=False)
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            if self.ema_unet is not None:
                self.ema_unet.to(memory_format=torch.channels_last)
        # plain callables, not submodules: the state dict stays the UNets' own
        self._forward: Callable[..., Any] = self.unet.forward
        self._ema_forward: Callable[..., Any] | None = (
            None if self.ema_unet is None else self.ema_unet.forward)
        if cfg.compile:
            self._forward = torch.compile(self.unet.forward)
            if self.ema_unet is not None:
                self._ema_forward = torch.compile(self.ema_unet.forward)

    # ---- prediction -----------------------------------------------------------------------

    def null(self, n: int, *, ema: bool = False) -> torch.Tensor:
        """``n`` copies of the null tokens ``(n, n_tokens, token_dim)``."""
        null = self.ema_null_tokens if ema and self.ema_null_tokens is not None \
            else self.null_tokens
        return null.unsqueeze(0).expand(n, -1, -1)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (self.n_tokens, self.token_dim):
            raise ValueError(f"tokens of shape {tuple(tokens.shape)}, expected "
                             f"(n, {self.n_tokens}, {self.token_dim})")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, *,
                ema: bool = False) -> torch.Tensor:
        """The UNet's raw prediction (noise or velocity, per ``prediction_type``), float32.

        Parameters
        ----------
        x_t : Tensor
            ``(n, 3, H, W)`` noisy images in the model's [-1, 1] scale.
        t : Tensor
            ``(n,)`` or scalar integer timesteps.
        tokens : Tensor
            ``(n, n_tokens, token_dim)``.
        ema : bool
            Use the EMA weights (when kept).
        """
        forward = self._ema_forward if ema and self._ema_forward is not None else self._forward
        if self.config.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        bf16 = self.config.precision == "bf16-mixed"
        with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x_t, t, encoder_hidden_states=tokens).sample
        return out.float()

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, *,
            ema: bool = False) -> torch.Tensor:
        """The predicted noise of ``x_t`` at timestep(s) ``t`` given ``tokens``.

        A v-prediction model's output is converted: ``eps = sqrt(a) v + sqrt(1 - a) x_t``
        (``a`` the cumulative alpha of ``t``).
        """
        self._check_tokens(tokens)
        out = self.forward(x_t, t, tokens, ema=ema)
        if self.config.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod.to(x_t.device)[t.long()].reshape(-1, 1, 1, 1)
        return a.sqrt() * out + (1 - a).sqrt() * x_t

    # ---- training -------------------------------------------------------------------------

    def loss(self, images: torch.Tensor, tokens: torch.Tensor, *,
             generator: torch.Generator | None = None, ema: bool = False) -> torch.Tensor:
        """Mean squared error of the UNet's prediction at random timesteps.

        Parameters
        ----------
        images : Tensor
            ``(n, 3, H, W)`` float in [0, 1].
        tokens : Tensor
            ``(n, n_tokens, token_dim)``.
        generator : torch.Generator, optional
            A CPU generator for the noise, the timesteps and the condition dropout.
        ema : bool
            Score the EMA weights (validation).

        Returns
        -------
        Tensor
            Scalar. In training mode each sample's tokens are replaced by the null tokens with
            probability ``p_uncond``; in eval mode the loss is the conditional one.
        """
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"images of shape {tuple(images.shape)}, expected "
                             f"(n, 3, {size}, {size})")
        self._check_tokens(tokens)
        if len(tokens) != len(images):
            raise ValueError(f"{len(images)} images but {len(tokens)} token sets")
        n, device = len(images), images.device
        noise = torch.randn(images.shape, generator=generator).to(device)
        t = torch.randint(0, self.config.num_train_timesteps, (n,), generator=generator)
        drop = torch.rand(n, generator=generator) < self.config.p_uncond
        t = t.to(device)
        if self.training and bool(drop.any()):
            keep = (~drop).to(device).reshape(n, 1, 1).to(tokens.dtype)
            tokens = keep * tokens + (1 - keep) * self.null(n, ema=ema).to(tokens.dtype)
        x0 = images * 2 - 1
        x_t = self.scheduler.add_noise(x0, noise, t)
        target = noise if self.config.prediction_type == "epsilon" \
            else self.scheduler.get_velocity(x0, noise, t)
        pred = self.forward(x_t, t, tokens, ema=ema)
        return torch.nn.functional.mse_loss(pred, target)

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step towards the current weights (nothing when ``ema_decay`` is 0)."""
        if self.ema_unet is None:
            return
        k = self.ema_updates
        decay = min(self.config.ema_decay, (1 + k) / (10 + k))
        for avg, p in zip(self.ema_unet.parameters(), self.unet.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - decay)
        self.ema_null_tokens.lerp_(self.null_tokens.detach(), 1 - decay)
        self.ema_updates = k + 1

    # ---- checkpoints ----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain types and tensors (``atomic_save``-safe): config, shapes, weights, EMA."""
        weights = {k: v.detach().cpu().clone() for k, v in self.unet.state_dict().items()}
        weights["null_tokens"] = self.null_tokens.detach().cpu().clone()
        ema = None
        if self.ema_unet is not None:
            ema = {k: v.detach().cpu().clone() for k, v in self.ema_unet.state_dict().items()}
            ema["null_tokens"] = self.ema_null_tokens.detach().cpu().clone()
        return {"config": self.config.model_dump(mode="json"), "n_tokens": self.n_tokens,
                "token_dim": self.token_dim, "weights": weights, "ema": ema,
                "ema_updates": int(self.ema_updates)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConditionalDiffusion:
        """The model :meth:`to_state` described, weights and EMA loaded.

        Raises
        ------
        ValueError
            A missing key, or weights that do not fit the config.
        """
        missing = sorted({"config", "n_tokens", "token_dim", "weights", "ema"} - set(state))
        if missing:
            raise ValueError(f"diffusion state: missing {missing}")
        model = cls(state["config"], n_tokens=int(state["n_tokens"]),
                    token_dim=int(state["token_dim"]))
        if (state["ema"] is None) != (model.ema_unet is None):
            raise ValueError("diffusion state: EMA weights present/absent against its config's "
                             f"ema_decay ({model.config.ema_decay})")
        try:
            weights = dict(state["weights"])
            with torch.no_grad():
                model.null_tokens.copy_(weights.pop("null_tokens"))
                model.unet.load_state_dict(weights)
                if model.ema_unet is not None:
                    ema = dict(state["ema"])
                    model.ema_null_tokens.copy_(ema.pop("null_tokens"))
                    model.ema_unet.load_state_dict(ema)
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"diffusion state: weights do not fit the config "
                             f"({str(err).splitlines()[0][:200]})") from None
        model.ema_updates = int(state.get("ema_updates", 0))
        return model


@dataclass
class DiffusionFitRecord(FitRecord):
    """A :class:`~neurodecode.models._fit.FitRecord` with the training throughput.

    Attributes
    ----------
    train_seconds : float
        Wall time of the training epochs (data, forward, backward, optimiser and EMA steps; no
        validation).
    train_images_per_s : float
        Training images processed per second of ``train_seconds``.
    """

    train_seconds: float = 0.0
    train_images_per_s: float = 0.0


def _as_images(images: Any, size: int, what: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                        dtype=torch.float32)
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"{what} of shape {tuple(x.shape)}, expected (n, 3, {size}, {size})")
    if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"{what}: values outside [0, 1]")
    return x


def fit_diffusion(model: ConditionalDiffusion, images: Any, tokens: Any, *,
                  val_images: Any = None, val_tokens: Any = None, accelerator: str = "cpu",
                  verbose: bool = False) -> DiffusionFitRecord:
    """Train ``model`` in place on training images and their embedding tokens.

    Parameters
    ----------
    model : ConditionalDiffusion
    images : Tensor or ndarray
        ``(n, 3, H, W)`` in [0, 1]: the TRAINING images only.
    tokens : Tensor or ndarray
        ``(n, n_tokens, token_dim)``: their encoder tokens.
    val_images, val_tokens : optional
        Held-out training images: early stopping on their loss (EMA weights when kept, a fixed
        noise draw every epoch), the best epoch's weights kept.
    accelerator : str
    verbose : bool

    Returns
    -------
    DiffusionFitRecord
        ``train_images_per_s`` = images processed / seconds of the training epochs.
    """
    from ..tasks.reconstruct import DiffusionTask

    cfg = model.config
    x = _as_images(images, cfg.image_size, "images")
    tok = torch.as_tensor(tokens, dtype=torch.float32)
    model._check_tokens(tok)
    if len(tok) != len(x) or len(x) == 0:
        raise ValueError(f"{len(x)} images and {len(tok)} token sets (need as many, >= 1)")
    if (val_images is None) != (val_tokens is None):
        raise ValueError("give both val_images and val_tokens, or neither")
    loader = DataLoader(TensorDataset(x, tok), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = None
    if val_images is not None:
        vx = _as_images(val_images, cfg.image_size, "val_images")
        vt = torch.as_tensor(val_tokens, dtype=torch.float32)
        model._check_tokens(vt)
        if len(vt) != len(vx) or len(vx) == 0:
            raise ValueError(f"{len(vx)} val_images and {len(vt)} val_tokens (need as many, "
                             ">= 1)")
        val_loader = DataLoader(TensorDataset(vx, vt), batch_size=cfg.batch_size)
    task = DiffusionTask(model)
    record = fit_lightning(task, loader, val_loader, max_epochs=cfg.max_epochs,
                           patience=cfg.patience, precision=cfg.precision,
                           accelerator=accelerator, verbose=verbose)
    seconds = task.train_seconds
    return DiffusionFitRecord(
        history=record.history, best_epoch=record.best_epoch, epochs=record.epochs,
        seconds=record.seconds, train_seconds=seconds,
        train_images_per_s=task.train_images / seconds if seconds > 0 else 0.0)
