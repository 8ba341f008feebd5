"""BrainDiVE-style synthesis: images predicted to drive one brain region most.

BrainDiVE (Luo et al., NeurIPS 2023) guides a diffusion model with the gradient of an encoding
model of a region, so that the images it samples maximise the region's predicted activation.
Here the encoding model (:class:`RegionEncodingModel`) is a ridge regression from the image
encoder's embedding to the region's mean response, fitted on training trials only; the
synthesis (:func:`synthesize`) samples the reconstruction model's own diffusion UNet with that
gradient (:func:`neurodecode.models.vision.sampling.sample`, ``guidance=``), conditioned on the
tokens of random training images. :func:`braindive_summary` compares the guided images with the
unguided ones from the same tokens and noise, and with the stimuli themselves: by predicted
activation and, when a ground-truth feature of the region is known (a simulation), by that
feature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...data.images import as_array, as_batch
from .sampling import SampleResult, sample

__all__ = ["RegionEncodingModel", "braindive_summary", "synthesize"]


class RegionEncodingModel:
    """Ridge from image embeddings to the mean response of one region (differentiable).

    Parameters
    ----------
    alpha : float
        Ridge penalty (on standardised embedding features).

    Attributes
    ----------
    coef_ : Tensor
        ``(dim,)`` weights on the standardised features.
    intercept_ : float
    feature_mean_, feature_std_ : Tensor
        Statistics of the training embeddings.
    train_r_ : float
        Pearson r of the fit on its training trials.
    """

    def __init__(self, alpha: float = 10.0) -> None:
        self.alpha = alpha

    def fit(self, encoder: Any, images: Any, responses: np.ndarray) -> RegionEncodingModel:
        """Fit on training trials: the image shown in each and the region's response.

        Parameters
        ----------
        encoder : ImageEncoder
            Its ``embed`` gives the features (and, later, the gradient).
        images : array or Tensor
            One image per trial (repeats allowed).
        responses : ndarray, shape (n,)
            The region's response on each trial.
        """
        y = np.asarray(responses, np.float64).ravel()
        if len(y) != len(as_batch(images)) or len(y) < 3:
            raise ValueError(f"{len(as_batch(images))} images for {len(y)} responses: need one "
                             "response per image and at least 3")
        self.encoder_ = encoder
        with torch.no_grad():
            feats = encoder.embed(images).double()
        self.feature_mean_ = feats.mean(0)
        self.feature_std_ = feats.std(0).clamp_min(1e-6)
        z = (feats - self.feature_mean_) / self.feature_std_
        yt = torch.as_tensor(y)
        self.intercept_ = float(yt.mean())
        gram = z.T @ z + self.alpha * torch.eye(z.shape[1], dtype=z.dtype)
        self.coef_ = torch.linalg.solve(gram, z.T @ (yt - self.intercept_))
        self.train_r_ = float(np.corrcoef((z @ self.coef_).numpy(), y)[0, 1])
        return self

    def predict(self, images: Any) -> torch.Tensor:
        """Predicted response ``(n,)``; differentiable for a tensor that requires grad."""
        feats = self.encoder_.embed(as_batch(images) if not isinstance(images, torch.Tensor)
                                    else images)
        z = (feats.double() - self.feature_mean_) / self.feature_std_
        return (z @ self.coef_ + self.intercept_).float()

    def score(self, images: Any, responses: np.ndarray) -> float:
        """Pearson r between predicted and measured responses (held-out trials)."""
        with torch.no_grad():
            pred = self.predict(images).numpy()
        return float(np.corrcoef(pred, np.asarray(responses, float).ravel())[0, 1])


def synthesize(diffusion: Any, region: RegionEncodingModel, tokens: torch.Tensor, *,
               scale: float, steps: int = 10, guidance_scale: float = 1.0,
               seed: int = 0) -> tuple[SampleResult, SampleResult]:
    """Guided and unguided samples from the same tokens and the same noise.

    Parameters
    ----------
    diffusion : ConditionalDiffusion
    region : RegionEncodingModel
        Fitted; its gradient steers the guided samples.
    tokens : Tensor
        ``(n, n_tokens, dim)``: conditioning tokens (those of random training images).
    scale : float
        Gradient-guidance scale.
    steps : int
    guidance_scale : float
        Classifier-free guidance of the conditioning (1: none).
    seed : int

    Returns
    -------
    guided, unguided : SampleResult
    """
    runs = []
    for s in (scale, 0.0):
        gen = torch.Generator().manual_seed(int(seed))
        runs.append(sample(diffusion, tokens, steps=steps, guidance_scale=guidance_scale,
                           generator=gen, guidance=region.predict if s > 0 else None,
                           guidance_scale_region=s, max_unet_evals=10 * steps))
    return runs[0], runs[1]


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": int(len(values))}


def braindive_summary(region: RegionEncodingModel, guided: Any, unguided: Any, stimuli: Any,
                      *, feature: Callable[[np.ndarray], np.ndarray] | None = None,
                      n_permutations: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Do the guided images drive the region, and do they carry its preferred feature?

    Parameters
    ----------
    region : RegionEncodingModel
    guided, unguided : array or Tensor
        Synthesised images with and without the region's gradient (same tokens and noise).
    stimuli : array or Tensor
        Random stimuli (training images) to compare with.
    feature : callable, optional
        Ground truth of a simulation: images ``(n, H, W, 3)`` → the region's preferred feature.
    n_permutations : int
        Label permutations of the guided-vs-stimuli difference (its p-value).
    seed : int

    Returns
    -------
    dict
        ``predicted_activation`` (``guided``/``unguided``/``stimuli`` stats, in the region's
        response units), ``p_value`` (guided > stimuli, one-sided permutation),
        ``feature`` (the same stats of the ground-truth feature, when given).
    """
    sets = {"guided": as_array(guided), "unguided": as_array(unguided),
            "stimuli": as_array(stimuli)}
    with torch.no_grad():
        act = {k: region.predict(as_batch(v)).numpy() for k, v in sets.items()}
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([act["guided"], act["stimuli"]])
    n = len(act["guided"])
    observed = act["guided"].mean() - act["stimuli"].mean()
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        perm = rng.permutation(pooled)
        null[i] = perm[:n].mean() - perm[n:].mean()
    out: dict[str, Any] = {
        "predicted_activation": {k: _stats(v) for k, v in act.items()},
        "difference": float(observed),
        "p_value": float((1 + np.sum(null >= observed)) / (1 + n_permutations)),
        "encoding_train_r": float(region.train_r_),
    }
    if feature is not None:
        out["feature"] = {k: _stats(np.asarray(feature(v), float)) for k, v in sets.items()}
    return out
