"""Sampling the conditional diffusion model: DPM-Solver++, classifier-free guidance, img2img,
gradient guidance.

:func:`sample` integrates a :class:`~neurodecode.models.vision.diffusion.ConditionalDiffusion`
with ``diffusers``' ``DPMSolverMultistepScheduler`` (``dpmsolver++``, second order) on the
training noise schedule:

- the solver clips ``lambda`` at -5.1 (the first step starts just below ``t = T``, where the
  cosine schedule's ``alpha_bar`` is ~0) and dynamically thresholds the predicted clean image
  to [-1, 1] (Imagen), as ``diffusers`` recommends for pixel-space models on that schedule;
- **classifier-free guidance**: ``eps = eps_u + g (eps_c - eps_u)``, the conditional and the
  unconditional (null-token) predictions from one batched UNet call; ``g = 1`` is the plain
  conditional prediction, one UNet evaluation per step;
- **img2img**: from an initial image (e.g. the low-level branch's coarse reconstruction), noised
  with the scheduler's ``add_noise`` to the timestep ``strength`` of the way along the schedule,
  then only the last ``int(steps * strength)`` steps run (as ``diffusers``' img2img pipelines);
- **low-frequency conditioning** (ILVR, Choi et al. 2021): after every step the low-pass part
  of ``x_t`` (area-downsampled to ``lowpass_size`` and bilinearly upsampled back) is replaced by
  that of a reference image noised to the same timestep, so that the sample keeps the
  reference's coarse layout and colours (the low-level branch's prediction) while the model
  draws the detail its tokens ask for; no extra UNet evaluation;
- **gradient guidance** (BrainDiVE, Luo et al. 2023): the gradient of an objective of the
  predicted clean image (a region's predicted activation) with respect to ``x_t`` steers every
  step, classifier-guidance style.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SampleResult", "sample", "unet_evals"]


@dataclass
class SampleResult:
    """Images sampled and what they cost.

    Attributes
    ----------
    images : Tensor
        ``(n, 3, H, W)`` float32 in [0, 1].
    unet_evals_per_image : int
        UNet forward passes per image (classifier-free guidance counts 2 per step).
    steps : int
        Steps of the schedule (img2img runs only the last part of them).
    seconds : float
        Wall time of the sampling.
    """

    images: torch.Tensor
    unet_evals_per_image: int
    steps: int
    seconds: float = 0.0


def unet_evals(steps: int, guidance_scale: float, strength: float = 1.0,
               img2img: bool = False) -> tuple[int, int]:
    """Steps run and UNet evaluations per image of a sampling.

    Parameters
    ----------
    steps : int
    guidance_scale : float
        Above 1: classifier-free guidance, 2 evaluations per step.
    strength : float
    img2img : bool
        Only the last ``max(1, int(steps * strength))`` steps run.

    Returns
    -------
    run, evals : int
    """
    run = min(steps, max(1, int(steps * strength))) if img2img else steps
    return run, run * (2 if guidance_scale != 1.0 else 1)


def sample(model: Any, tokens: torch.Tensor, *, steps: int | None = None,
           guidance_scale: float | None = None, init: torch.Tensor | None = None,
           strength: float | None = None, generator: torch.Generator | None = None,
           guidance: Callable[[torch.Tensor], torch.Tensor] | None = None,
           guidance_scale_region: float = 0.0, lowpass: torch.Tensor | None = None,
           lowpass_size: int = 8, lowpass_weight: float = 1.0,
           max_unet_evals: int | None = None) -> SampleResult:
    """Sample images conditioned on embedding tokens.

    Parameters
    ----------
    model : ConditionalDiffusion
        Its EMA weights are used when it keeps them.
    tokens : Tensor
        ``(n, n_tokens, token_dim)``: one condition per image.
    steps, guidance_scale, strength, max_unet_evals : optional
        Default the model config's. ``guidance_scale`` >= 1 (1: no classifier-free guidance);
        ``strength`` in (0, 1] applies with ``init`` only.
    init : Tensor, optional
        ``(n, 3, H, W)`` in [0, 1]: img2img from these images.
    generator : torch.Generator, optional
        A CPU generator of the initial noise: the same seed gives the same images.
    guidance : callable, optional
        Maps the predicted clean images ``(n, 3, H, W)`` in [0, 1] (differentiably) to an
        objective ``(n,)`` to maximise. Every step, its gradient ``g`` with respect to ``x_t``
        (through the UNet; the clamp to [0, 1] passes the gradient straight through) is
        normalised to unit L2 norm per sample (over its ``3 H W`` values) and the noise
        prediction becomes ``eps - guidance_scale_region * sqrt(1 - alpha_bar_t) * g``.
    guidance_scale_region : float
        Scale of the gradient guidance (0: off).
    lowpass : Tensor, optional
        ``(n, 3, H, W)`` in [0, 1]: reference images whose low frequencies every step keeps
        (ILVR). After each solver step ``x <- x + w (phi(ref_t) - phi(x))``, ``phi`` the
        low-pass filter and ``ref_t`` the reference noised to the step's next timestep with the
        initial noise (the clean reference after the last step).
    lowpass_size : int
        Side the low-pass filter averages down to (8: the low-level branch's 8 x 8 image).
    lowpass_weight : float
        ``w`` in [0, 1] (1: the low frequencies are the reference's).

    Returns
    -------
    SampleResult

    Raises
    ------
    ValueError
        Bad tokens, ``init``, steps, scales, or more UNet evaluations per image than
        ``max_unet_evals`` (checked before any is run).
    """
    from diffusers import DPMSolverMultistepScheduler

    cfg = model.config
    steps = cfg.steps if steps is None else int(steps)
    guidance_scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
    strength = cfg.strength if strength is None else float(strength)
    max_unet_evals = cfg.max_unet_evals if max_unet_evals is None else int(max_unet_evals)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance_scale < 1.0:
        raise ValueError(f"guidance_scale must be >= 1 (1: no guidance), got {guidance_scale}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if guidance_scale_region < 0:
        raise ValueError(f"guidance_scale_region must be >= 0, got {guidance_scale_region}")
    steer = guidance is not None and guidance_scale_region > 0
    tokens = torch.as_tensor(tokens, dtype=torch.float32)
    model._check_tokens(tokens)
    n, size = len(tokens), cfg.image_size
    if init is not None:
        init = torch.as_tensor(init, dtype=torch.float32)
        if tuple(init.shape) != (n, 3, size, size):
            raise ValueError(f"init of shape {tuple(init.shape)}, expected ({n}, 3, {size}, "
                             f"{size})")
    if lowpass is not None:
        lowpass = torch.as_tensor(lowpass, dtype=torch.float32)
        if tuple(lowpass.shape) != (n, 3, size, size):
            raise ValueError(f"lowpass of shape {tuple(lowpass.shape)}, expected ({n}, 3, "
                             f"{size}, {size})")
        if not 1 <= lowpass_size <= size:
            raise ValueError(f"lowpass_size must be in [1, {size}], got {lowpass_size}")
        if not 0.0 <= lowpass_weight <= 1.0:
            raise ValueError(f"lowpass_weight must be in [0, 1], got {lowpass_weight}")
    run, evals = unet_evals(steps, guidance_scale, strength, init is not None)
    if evals > max_unet_evals:
        raise ValueError(f"{run} steps{' with classifier-free guidance' if evals > run else ''}"
                         f" need {evals} UNet evaluations per image, more than max_unet_evals "
                         f"= {max_unet_evals}")

    start = time.perf_counter()
    param = next(model.unet.parameters())
    device = param.device
    ema = model.ema_unet is not None
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2,
        lambda_min_clipped=-5.1, thresholding=True, sample_max_value=1.0)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps[steps - run:]
    scheduler.set_begin_index(steps - run)
    noise = torch.randn((n, 3, size, size), generator=generator).to(device)
    tokens = tokens.to(device)
    if init is not None:
        x = scheduler.add_noise(init.to(device) * 2 - 1, noise, timesteps[:1].repeat(n))
    else:
        x = noise * scheduler.init_noise_sigma
    cond = tokens if guidance_scale == 1.0 else torch.cat([model.null(n, ema=ema), tokens])
    alphas = model.alphas_cumprod.to(device)
    rows = [0]

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_in = x_t if guidance_scale == 1.0 else torch.cat([x_t, x_t])
        eps = model.eps(x_in, t.reshape(1).expand(len(x_in)), cond, ema=ema)
        rows[0] += len(x_in)
        if guidance_scale == 1.0:
            return eps
        eps_u, eps_c = eps.chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    ref = None if lowpass is None else lowpass.to(device) * 2 - 1

    def phi(z: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(z, lowpass_size)
        return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)

    for i, t in enumerate(timesteps):
        sigma = (1 - alphas[t]).sqrt()
        if steer:
            with torch.enable_grad():
                x_t = x.detach().requires_grad_(True)
                eps = predict(x_t, t)
                x0 = ((x_t - sigma * eps) / alphas[t].sqrt() + 1) / 2
                # clamped to [0, 1] straight-through: the gradient also reaches pixels the
                # (early, rough) prediction puts out of range
                objective = guidance(x0 + (x0.clamp(0.0, 1.0) - x0).detach())
                grad, = torch.autograd.grad(objective.sum(), x_t)
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
            eps = eps.detach() - guidance_scale_region * sigma * grad / norm
        else:
            with torch.no_grad():
                eps = predict(x, t)
        x = scheduler.step(eps, t, x).prev_sample.detach()
        if ref is not None:
            ref_t = ref if i + 1 == len(timesteps) else scheduler.add_noise(
                ref, noise, timesteps[i + 1:i + 2].repeat(n))
            x = x + lowpass_weight * (phi(ref_t) - phi(x))
    images = ((x + 1) / 2).clamp(0.0, 1.0).float().cpu()
    return SampleResult(images=images, unet_evals_per_image=rows[0] // max(n, 1), steps=steps,
                        seconds=time.perf_counter() - start)
