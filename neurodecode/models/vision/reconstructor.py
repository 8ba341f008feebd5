"""Image reconstruction from brain activity: an estimator over the whole pipeline.

:class:`Reconstructor` (MindEye2 / MindBridge style, on ``diffusers``) learns, from the training
trials of several subjects and the images they saw:

1. **Image targets**: an image encoder (:mod:`neurodecode.models.vision.encoders`) trained on
   the training images (or a pretrained CLIP vision model from a local folder) gives every
   image its embedding tokens ``(n_tokens, dim)``; the targets are standardised with statistics
   of the training images only.
2. **Brain → embedding**: a :class:`~neurodecode.models.decoder.CrossSubjectDecoder` (per-subject
   adapters into a shared latent, a shared backbone, a contrastive + regression head) predicts
   the tokens; a second one (regression head) predicts a coarse image (the low-level branch).
   Each decoder's prediction is blended with a per-subject inverted encoding model
   (:class:`~neurodecode.models.inversion.EncodingInversion`: time-averaged responses as a
   linear function of the targets' principal components, inverted under their prior; the
   weight chosen on validation trials). Each subject's channels are standardised on its own
   training trials.
3. **Rendering**: a conditional ``UNet2DConditionModel`` trained on the training images with
   cross-attention on their tokens (classifier-free guidance, DPM-Solver++) renders the
   predicted tokens, starting from the coarse image (img2img) and keeping its low frequencies
   at every step (ILVR), so that the UNet draws the detail; or a pretrained unCLIP pipeline
   from a local folder renders the predicted image embedding.

:meth:`Reconstructor.reconstruct` draws ``n_samples`` images per trial. Its reconstruction is
their average (``sampling.combine: mean``, a Monte Carlo estimate of the posterior mean: the
least-squares image) or the one sample whose own tokens are closest to the brain-predicted
tokens (``select``, :func:`select_by_embedding`; returned either way as ``selected``). The
choice sees the brain prediction and the candidates, never the target image, which no method
of this module takes. :meth:`Reconstructor.adapt` adds a new subject from a few of its trials (the
few-shot strategies of :mod:`neurodecode.models.fewshot`, on both decoders).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from ...data.images import as_array, as_batch, resize
from ...data.subjects import SubjectTrials
from ...evaluate.reconstruction import row_correlations
from ..checkpoint import atomic_save, read_payload
from ..decoder import CrossSubjectDecoder, as_subject_dict
from .config import ReconstructionConfig, load_reconstruction_config

__all__ = ["Reconstructions", "Reconstructor", "matched_time_weights", "select_by_embedding",
           "time_mean", "trial_image_ids"]

FORMAT = "neurodecode.reconstruction"
VERSION = 2  # 2: encoding-model inversions replace the low-level ridge


def trial_image_ids(trials: SubjectTrials) -> np.ndarray:
    """The image id of every trial (its ``keys``), as int64; an error names a bad subject."""
    if trials.keys is None:
        raise ValueError(f"subject {trials.subject}: trials have no image ids (keys): build "
                         "them with keys='value' from the stimulus events")
    raw = np.asarray(trials.keys, dtype=np.float64)
    if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or np.any(raw < 0):
        raise ValueError(f"subject {trials.subject}: trial keys are not image ids")
    return raw.astype(np.int64)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(len(x), -1)
    return F.normalize(x - x.mean(dim=1, keepdim=True), dim=1)


def select_by_embedding(candidate_tokens: torch.Tensor, predicted_tokens: torch.Tensor
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Choose among samples with the brain-predicted embedding only.

    Parameters
    ----------
    candidate_tokens : Tensor
        ``(n_trials, n_samples, ...)``: the (standardised) embedding tokens of every candidate
        image, computed by the image encoder from the candidates themselves.
    predicted_tokens : Tensor
        ``(n_trials, ...)``: the (standardised) tokens the brain decoder predicted.

    Returns
    -------
    chosen : ndarray of int, shape (n_trials,)
        Index of the kept candidate of each trial.
    scores : ndarray, shape (n_trials, n_samples)
        Correlation of each candidate's tokens with the prediction.
    """
    n, k = candidate_tokens.shape[:2]
    if len(predicted_tokens) != n:
        raise ValueError(f"{n} trials of candidates but {len(predicted_tokens)} predictions")
    cand = _unit_rows(candidate_tokens.reshape(n * k, -1)).reshape(n, k, -1)
    pred = _unit_rows(predicted_tokens)
    scores = torch.einsum("nkf,nf->nk", cand, pred)
    return scores.argmax(dim=1).numpy(), scores.numpy()


@dataclass(frozen=True)
class Reconstructions:
    """What :meth:`Reconstructor.reconstruct` returns for one subject's trials.

    Attributes
    ----------
    images : ndarray
        float32 ``(n, H, W, 3)``: the reconstruction of each trial (the mean of its samples,
        or the selected one: ``sampling.combine``).
    selected : ndarray
        float32 ``(n, H, W, 3)``: the sample chosen by the brain-predicted tokens.
    lowlevel : ndarray
        float32 ``(n, H, W, 3)``: the low-level branch's coarse image (upsampled).
    tokens : ndarray
        float32 ``(n, n_tokens, dim)``: the brain-predicted embedding tokens (target units).
    candidates : ndarray
        float32 ``(n, n_samples, H, W, 3)``: every sample drawn.
    chosen : ndarray of int
        ``(n,)``: index of the selected sample (by :func:`select_by_embedding`).
    selection_scores : ndarray
        ``(n, n_samples)``.
    unet_evals_per_image : int
        UNet evaluations spent per reconstructed image, every sample included.
    seconds : float
        Wall time of the sampling.
    """

    images: np.ndarray
    selected: np.ndarray
    lowlevel: np.ndarray
    tokens: np.ndarray
    candidates: np.ndarray
    chosen: np.ndarray
    selection_scores: np.ndarray
    unet_evals_per_image: int
    seconds: float

    def __len__(self) -> int:
        return len(self.images)


def time_mean(trials: SubjectTrials, weights: np.ndarray | None = None) -> np.ndarray:
    """Each trial's response averaged over its time points: ``(n, n_channels)`` float64.

    ``weights`` (one per time point, summing to 1) make it a weighted average; default equal.
    """
    return _average_times(np.asarray(trials.X, np.float64), weights, trials.subject)


def _average_times(X: np.ndarray, weights: np.ndarray | None, subject: str) -> np.ndarray:
    """``(n, n_times, n_channels)`` → ``(n, n_channels)``, weighted (equal if None); 2-D
    trials are flattened as they are."""
    if X.ndim != 3:
        return X.reshape(len(X), -1)
    if weights is None:
        return X.mean(axis=1)
    if len(weights) != X.shape[1]:
        raise ValueError(f"subject {subject!r}: trials of {X.shape[1]} time points, but the "
                         f"inversion was fitted on {len(weights)}: cut them the same way")
    return np.einsum("ntc,t->nc", X, np.asarray(weights, np.float64))


def matched_time_weights(X: np.ndarray, y: np.ndarray, prior: np.ndarray,
                         config: Any) -> np.ndarray:
    """Weights of a trial's time points for averaging it, from training trials alone.

    Each time point gets ``sqrt`` of the mean (over channels, negatives as 0) leave-one-out
    variance its own :class:`~neurodecode.models.inversion.EncodingInversion` explains. With
    a small explained share ``r2 ~ signal² / noise²``, so the weight is about the signal
    amplitude over the noise s.d. at that lag: the matched filter of the hemodynamic response
    (time points dominated by the neighbouring trials' responses weigh little). Equal weights
    where no time point explains anything.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_times, n_channels)
    y : ndarray of shape (n_trials, n_targets)
    prior : ndarray of shape (n_prior, n_targets)
    config : InversionConfig

    Returns
    -------
    ndarray of shape (n_times,)
        Non-negative, summing to 1.
    """
    from ..inversion import EncodingInversion

    r2 = np.array([np.maximum(EncodingInversion(n_components=config.n_components,
                                                alpha=config.alpha).fit(
        X[:, t], y, prior=prior).encoding_r2_, 0.0).mean() for t in range(X.shape[1])])
    weights = np.sqrt(r2)
    if not weights.sum() > 0:
        weights = np.ones(X.shape[1])
    return weights / weights.sum()


def _inversion_map(parts: list[SubjectTrials], targets: np.ndarray, prior: np.ndarray,
                   config: Any, time_weights: np.ndarray | None = None
                   ) -> dict[str, torch.Tensor]:
    """A subject's :class:`~neurodecode.models.inversion.EncodingInversion` (time-averaged
    responses → targets), as the tensors of its linear map and of the time points' weights:
    ``time_weights`` when given, else :func:`matched_time_weights` (``time_weights:
    matched``) or equal."""
    from ..inversion import EncodingInversion

    ids = np.concatenate([trial_image_ids(t) for t in parts])
    X = np.concatenate([np.asarray(t.X, np.float64) for t in parts])
    n_times = X.shape[1] if X.ndim == 3 else 1
    if time_weights is not None and len(time_weights) == n_times:
        weights = np.asarray(time_weights, np.float64)
    elif config.time_weights == "matched" and n_times > 1:
        weights = matched_time_weights(X, targets[ids], prior, config)
    else:
        weights = np.full(n_times, 1.0 / n_times)
    inv = EncodingInversion(n_components=config.n_components, alpha=config.alpha).fit(
        _average_times(X, weights, parts[0].subject), targets[ids], prior=prior)
    return {"coef": torch.as_tensor(inv.coef_, dtype=torch.float32),
            "intercept": torch.as_tensor(inv.intercept_, dtype=torch.float32),
            "time_weights": torch.as_tensor(weights, dtype=torch.float64)}


def _apply_inversion(weights: Mapping[str, torch.Tensor], trials: SubjectTrials) -> np.ndarray:
    """The inversion's prediction for trials (maps saved before ``time_weights``: equal)."""
    tw = weights.get("time_weights")
    x = torch.as_tensor(time_mean(trials, None if tw is None else tw.numpy()),
                        dtype=torch.float32)
    return (x @ weights["coef"].T + weights["intercept"]).numpy()


def _with_targets(trials: SubjectTrials, targets: np.ndarray) -> SubjectTrials:
    ids = trial_image_ids(trials)
    return dataclasses.replace(trials, y=np.asarray(targets[ids], np.float32))


class _ImageTable:
    """Images by id, holding only the ids it was given (any other id is an error)."""

    def __init__(self, n_images: int, ids: np.ndarray, images: np.ndarray) -> None:
        self._row = np.full(n_images, -1, dtype=np.int64)
        self._row[ids] = np.arange(len(ids))
        self._images = images

    def __len__(self) -> int:
        return len(self._row)

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        rows = self._row[np.asarray(ids)]
        if np.any(rows < 0):
            raise KeyError("an image outside the training trials was asked for")
        return self._images[rows]


class Reconstructor(BaseEstimator):
    """Reconstruct seen images from brain activity across subjects.

    Parameters
    ----------
    config : str, path-like, dict or ReconstructionConfig
        A reconstruction config (``models/reconstruction.yaml`` by default).
    seed : int, optional
        Overrides the config's seed (every part is seeded from it).
    accelerator : str
        Lightning accelerator of the training (``"cpu"``, ``"gpu"``).
    verbose : bool

    Attributes
    ----------
    config_ : ReconstructionConfig
    encoder_ : ImageEncoder
    embedding_ : CrossSubjectDecoder
        Brain → standardised embedding tokens (flattened).
    lowlevel_ : CrossSubjectDecoder
        Brain → coarse image (flattened ``3 × s × s``).
    inversion_ : dict of str to dict of str to dict of Tensor
        Per subject and decoder (``embedding``, ``lowlevel``), the linear map of its
        encoding-model inversion from time-averaged responses to the decoder's targets
        (``coef``, ``intercept``) and the weights of the time points in that average
        (``time_weights``).
    inversion_weights_ : dict of str to dict of str to float
        Per subject and decoder, the inversion's weight beside the network's: one per decoder
        for the trained subjects (``brain.inversion.weight``), ``brain.inversion.weight_new``
        for a new subject.
    diffusion_ : ConditionalDiffusion or None
        The trained renderer (None with a pretrained renderer).
    renderer_ : PretrainedRenderer or None
    target_mean_, target_std_ : ndarray
        Statistics of the training images' tokens (standardisation of the targets).
    train_image_ids_ : ndarray
        Ids of the images the encoder and the renderer were trained on.
    timings_ : dict
        Seconds per part and ``train_images_per_s`` of the diffusion training.
    samples_ : dict
        How the trials were cut (``event``, ``tmin``, ``tmax``, ``l_freq``...), set by the
        caller and saved, so that new trials are cut the same way.
    """

    def __init__(self, config: Any = "reconstruction", *, seed: int | None = None,
                 accelerator: str = "cpu", verbose: bool = False) -> None:
        self.config = config
        self.seed = seed
        self.accelerator = accelerator
        self.verbose = verbose

    # ---- configuration --------------------------------------------------------------------

    def _config(self) -> ReconstructionConfig:
        cfg = load_reconstruction_config(self.config)
        if self.seed is not None:
            cfg = cfg.model_copy(update={"seed": int(self.seed)})
        return cfg

    def _decoder(self, part: str) -> CrossSubjectDecoder:
        return CrossSubjectDecoder(self.config_.brain.model(part), seed=self.config_.seed,
                                   accelerator=self.accelerator, verbose=self.verbose)

    @property
    def pretrained_renderer(self) -> bool:
        """Whether a pretrained unCLIP pipeline renders (else the trained UNet)."""
        return self.config_.renderer.kind == "pretrained"

    # ---- targets --------------------------------------------------------------------------

    def _raw_tokens(self, images: Any) -> torch.Tensor:
        if self.pretrained_renderer:
            return self.encoder_.embed(images)[:, None, :]
        return self.encoder_.encode(images)

    def _standardise(self, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(len(tokens), -1)
        return (flat - torch.as_tensor(self.target_mean_)) / torch.as_tensor(self.target_std_)

    def _unstandardise(self, flat: np.ndarray) -> torch.Tensor:
        raw = np.asarray(flat, np.float32) * self.target_std_ + self.target_mean_
        return torch.as_tensor(raw).reshape(len(raw), *self.token_shape_)

    def _coarse(self, images: np.ndarray) -> np.ndarray:
        s = self.config_.brain.lowlevel_size
        return resize(images, s).reshape(len(images), -1).numpy()

    # ---- training -------------------------------------------------------------------------

    def fit(self, train: Any, val: Any, images: np.ndarray) -> Reconstructor:
        """Train every part on the training trials and the images they saw.

        Parameters
        ----------
        train : SubjectTrials, sequence or mapping of them
            Each subject's training trials; ``keys`` hold the image id of each trial.
        val : SubjectTrials, sequence or mapping of them
            Validation trials of the same subjects (early stopping of the brain decoders).
        images : ndarray
            The stimulus set, indexed by image id (``(n_images, H, W[, 3])`` in [0, 1]). Only
            the images of ``train`` and ``val`` trials are read: test images may be in the
            array, they reach no part of the training.

        Returns
        -------
        Reconstructor
            ``self``.
        """
        from .diffusion import ConditionalDiffusion, fit_diffusion
        from .encoders import PretrainedImageEncoder, TrainedImageEncoder

        train_d, val_d = as_subject_dict(train), as_subject_dict(val)
        if not train_d:
            raise ValueError("no training subject")
        self.config_ = cfg = self._config()
        seen = np.unique(np.concatenate([trial_image_ids(t) for t in
                                         [*train_d.values(), *val_d.values()]]))
        n_images = len(images)
        if seen.max() >= n_images:
            raise ValueError(f"trial image id {int(seen.max())} is beyond the {n_images} "
                             "images of the stimulus set")
        # only the seen images are read; every table below is indexed by image id
        stimuli = _ImageTable(n_images, seen, as_array(resize(images[seen], cfg.image_size)))
        self.train_image_ids_ = seen
        timings: dict[str, float] = {}
        start = time.perf_counter()
        self.renderer_ = None
        if self.pretrained_renderer:
            from .pretrained import PretrainedRenderer

            self.renderer_ = PretrainedRenderer.from_folder(cfg.renderer.path)
            self.encoder_ = PretrainedImageEncoder(self.renderer_.image_encoder_path)
        elif cfg.encoder.kind == "pretrained":
            self.encoder_ = PretrainedImageEncoder(cfg.encoder.path)
        else:
            self.encoder_ = TrainedImageEncoder(
                **{"image_size": cfg.image_size, "accelerator": self.accelerator,
                   **cfg.encoder.params})
        self.encoder_.fit(stimuli[seen], seed=cfg.seed)
        timings["encoder_s"] = time.perf_counter() - start

        # targets: every seen image's tokens, standardised with the training images' statistics
        raw = self._raw_tokens(stimuli[seen])
        self.token_shape_ = tuple(int(d) for d in raw.shape[1:])
        flat = raw.reshape(len(raw), -1).numpy()
        self.target_mean_ = flat.mean(axis=0).astype(np.float32)
        self.target_std_ = np.maximum(flat.std(axis=0), 1e-6).astype(np.float32)
        targets = np.zeros((n_images, flat.shape[1]), np.float32)
        targets[seen] = self._standardise(raw).numpy()
        coarse = np.zeros((n_images, 3 * cfg.brain.lowlevel_size ** 2), np.float32)
        coarse[seen] = self._coarse(stimuli[seen])

        start = time.perf_counter()
        self.embedding_ = self._decoder("embedding").fit(
            {n: _with_targets(t, targets) for n, t in train_d.items()},
            {n: _with_targets(t, targets) for n, t in val_d.items()})
        timings["embedding_s"] = time.perf_counter() - start
        start = time.perf_counter()
        self.lowlevel_ = self._decoder("lowlevel").fit(
            {n: _with_targets(t, coarse) for n, t in train_d.items()},
            {n: _with_targets(t, coarse) for n, t in val_d.items()})
        self._fit_inversions(train_d, val_d, {"embedding": targets, "lowlevel": coarse}, seen)
        timings["lowlevel_s"] = time.perf_counter() - start

        self.diffusion_ = None
        if not self.pretrained_renderer:
            start = time.perf_counter()
            torch.manual_seed(cfg.seed)
            self.diffusion_ = ConditionalDiffusion(cfg.diffusion, n_tokens=self.token_shape_[0],
                                                   token_dim=self.token_shape_[1])
            # the renderer's own early stopping: the last tenth of the training images
            n_val = max(1, len(seen) // 10) if len(seen) >= 20 else 0
            order = np.random.default_rng(cfg.seed).permutation(len(seen))
            fit_ids, val_ids = seen[order[n_val:]], seen[order[:n_val]]
            record = fit_diffusion(
                self.diffusion_, as_batch(stimuli[fit_ids]), self._raw_tokens(stimuli[fit_ids]),
                val_images=as_batch(stimuli[val_ids]) if n_val else None,
                val_tokens=self._raw_tokens(stimuli[val_ids]) if n_val else None,
                accelerator=self.accelerator, verbose=self.verbose)
            timings["diffusion_s"] = time.perf_counter() - start
            timings["diffusion_epochs"] = float(record.epochs)
            timings["train_images_per_s"] = float(getattr(
                record, "train_images_per_s", len(fit_ids) * record.epochs / record.seconds))
        self.timings_ = timings
        return self

    def _fit_inversions(self, train: Mapping[str, SubjectTrials],
                        val: Mapping[str, SubjectTrials], tables: Mapping[str, np.ndarray],
                        prior_ids: np.ndarray) -> None:
        """Every trained subject's encoding-model inversions and their weights.

        One :class:`~neurodecode.models.inversion.EncodingInversion` per subject and decoder
        (tokens, coarse image), on the subject's training trials, with the prior of the targets
        of ``prior_ids`` (the training images); one weight per decoder for all trained
        subjects (``brain.inversion.weight``; ``auto``: the best correlation on ``val``).
        """
        cfg = self.config_.brain.inversion
        self.inversion_ = {n: {part: _inversion_map([t], table, table[prior_ids], cfg)
                               for part, table in tables.items()} for n, t in train.items()}
        weights = {part: self._choose_weight(cfg.weight, part, val, table)
                   for part, table in tables.items()}
        self.inversion_weights_ = {n: dict(weights) for n in train}

    def _choose_weight(self, setting: float | str, part: str,
                       val: Mapping[str, SubjectTrials], table: np.ndarray) -> float:
        """The configured inversion weight of a decoder, or (``auto``) the one whose blend
        correlates best with the targets on ``val``: the mean over validation trials of the
        Pearson r between a trial's prediction and its target (as PixCorr, two-way
        identification and retrieval score them; the network alone without validation
        trials)."""
        if setting != "auto":
            return float(setting)
        if not any(len(t) for t in val.values()):
            return 0.0
        grid = np.round(np.linspace(0.0, 1.0, 11), 2)
        total, count = np.zeros(len(grid)), 0
        for name, trials in val.items():
            if not len(trials):
                continue
            net = np.asarray(getattr(self, f"{part}_").decision_function(trials))
            inv = _apply_inversion(self.inversion_[name][part], trials)
            truth = table[trial_image_ids(trials)]
            total += [row_correlations((1 - w) * net + w * inv, truth).sum() for w in grid]
            count += len(trials)
        return float(grid[int(np.argmax(total / count))])

    def _blend(self, part: str, trials: SubjectTrials) -> np.ndarray:
        """A decoder's prediction: the network blended with the subject's inversion."""
        net = np.asarray(getattr(self, f"{part}_").decision_function(trials), np.float32)
        w = self.inversion_weights_.get(trials.subject, {}).get(part, 0.0)
        if w > 0:
            inv = _apply_inversion(self.inversion_[trials.subject][part], trials)
            net = ((1 - w) * net + w * inv).astype(np.float32)
        return net

    # ---- prediction -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise RuntimeError("this Reconstructor is not fitted: call fit() or load()")

    @property
    def subjects_(self) -> list[str]:
        """Subjects the reconstructor serves."""
        self._check_fitted()
        return self.embedding_.subjects_

    def predict_tokens(self, trials: SubjectTrials) -> torch.Tensor:
        """Brain-predicted embedding tokens ``(n, n_tokens, dim)``, in the encoder's units."""
        self._check_fitted()
        return self._unstandardise(self._blend("embedding", trials))

    def predict_lowlevel(self, trials: SubjectTrials) -> torch.Tensor:
        """The low-level branch's coarse images, upsampled: ``(n, 3, H, W)`` in [0, 1].

        The network's prediction blended with the subject's encoding-model inversion (its
        weight in ``inversion_weights_``).
        """
        self._check_fitted()
        s = self.config_.brain.lowlevel_size
        flat = np.clip(self._blend("lowlevel", trials), 0.0, 1.0)
        coarse = torch.as_tensor(flat).reshape(-1, 3, s, s)
        size = self.config_.image_size
        up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        return up.clamp(0.0, 1.0)

    def sampling_plan(self) -> dict[str, Any]:
        """Steps, guidance, strength and UNet evaluations per reconstructed image."""
        from .sampling import unet_evals

        self._check_fitted()
        s, d = self.config_.sampling, self.config_.diffusion
        steps = s.steps or d.steps
        guidance = s.guidance_scale or d.guidance_scale
        img2img = s.img2img and not self.pretrained_renderer
        strength = (s.strength or d.strength) if img2img else 1.0
        _, per_sample = unet_evals(steps, guidance, strength, img2img=img2img)
        lowpass = None if self.pretrained_renderer else s.lowpass_size
        return {"steps": steps, "guidance_scale": guidance, "strength": strength,
                "img2img": img2img, "lowpass_size": lowpass,
                "lowpass_weight": s.lowpass_weight if lowpass else None,
                "n_samples": s.n_samples, "combine": s.combine,
                "unet_evals_per_sample": per_sample,
                "unet_evals_per_image": per_sample * s.n_samples}

    @torch.no_grad()
    def reconstruct(self, trials: SubjectTrials, *, seed: int = 0,
                    batch_size: int = 64) -> Reconstructions:
        """Reconstruct the image seen in every trial of one subject.

        Only the trials' brain data is read (not their ``y`` or ``keys``): the predicted tokens
        condition the sampling and choose among its samples.

        Parameters
        ----------
        trials : SubjectTrials
            One subject (trained or adapted) .
        seed : int
            Seed of the sampling noise.
        batch_size : int
            Trials sampled together.

        Returns
        -------
        Reconstructions
        """
        from .sampling import sample

        self._check_fitted()
        plan = self.sampling_plan()
        limit = self.config_.sampling.max_unet_evals
        if plan["unet_evals_per_image"] > limit:
            raise ValueError(f"sampling needs {plan['unet_evals_per_image']} UNet evaluations "
                             f"per image ({plan['n_samples']} samples x "
                             f"{plan['unet_evals_per_sample']}), more than max_unet_evals "
                             f"= {limit}")
        start = time.perf_counter()
        tokens = self.predict_tokens(trials)
        low = self.predict_lowlevel(trials)
        k = plan["n_samples"]
        generator = torch.Generator().manual_seed(int(seed))
        cands = []
        for i in range(0, len(tokens), batch_size):
            tok, init = tokens[i:i + batch_size], low[i:i + batch_size]
            rows = []
            for _ in range(k):
                if self.renderer_ is not None:
                    out = self.renderer_.render(tok[:, 0], steps=plan["steps"],
                                                guidance_scale=plan["guidance_scale"],
                                                generator=generator)
                else:
                    out = sample(self.diffusion_, tok, steps=plan["steps"],
                                 guidance_scale=plan["guidance_scale"],
                                 init=init if plan["img2img"] else None,
                                 strength=plan["strength"], generator=generator,
                                 lowpass=init if plan["lowpass_size"] else None,
                                 lowpass_size=plan["lowpass_size"] or 1,
                                 lowpass_weight=plan["lowpass_weight"] or 0.0,
                                 max_unet_evals=plan["unet_evals_per_sample"])
                rows.append(resize(out.images, self.config_.image_size))
            cands.append(torch.stack(rows, dim=1))
        candidates = torch.cat(cands) if cands else torch.zeros(
            (0, k, 3, self.config_.image_size, self.config_.image_size))
        n = len(candidates)
        cand_tokens = self._standardise(self._raw_tokens(candidates.reshape(n * k, *candidates
                                                                            .shape[2:])))
        chosen, scores = select_by_embedding(cand_tokens.reshape(n, k, -1),
                                             self._standardise(tokens))
        selected = candidates[torch.arange(n), torch.as_tensor(chosen)]
        images = candidates.mean(dim=1) if plan["combine"] == "mean" else selected
        return Reconstructions(
            images=as_array(images), selected=as_array(selected), lowlevel=as_array(low),
            tokens=tokens.numpy(),
            candidates=np.stack([as_array(c) for c in candidates]) if n else np.zeros(
                (0, k, *images.shape[2:], 3), np.float32),
            chosen=chosen, selection_scores=scores,
            unet_evals_per_image=int(plan["unet_evals_per_image"]),
            seconds=time.perf_counter() - start)

    def image_tokens(self, images: Any) -> torch.Tensor:
        """Embedding tokens of images (the targets' space, encoder units)."""
        self._check_fitted()
        return self._raw_tokens(resize(images, self.config_.image_size))

    # ---- new subjects ---------------------------------------------------------------------

    def adapt(self, train: SubjectTrials, val: SubjectTrials | None, images: np.ndarray, *,
              strategy: str = "a", reference: Mapping[str, SubjectTrials] | None = None,
              **options: Any) -> Reconstructor:
        """A copy that also serves a new subject, adapted from a few of its trials.

        Both decoders get the subject through :func:`neurodecode.models.fewshot.adapt`, and
        each an encoding-model inversion fitted on the subject's ``train`` and ``val``
        trials (the prior: the images of every trial given here, ``reference`` included; the
        time points weighed as the served subjects' inversions weigh them, on average),
        blended with the weight ``brain.inversion.weight_new``; the image encoder and the
        renderer are shared and unchanged.

        Parameters
        ----------
        train, val : SubjectTrials
            The new subject's adaptation (and validation) trials, ``keys`` = image ids.
        images : ndarray
            The stimulus set (only the images of ``train``/``val`` and ``reference`` trials are
            read).
        strategy : str
            A few-shot strategy (``a``/``adapter``: a new adapter, shared parts frozen).
        reference : mapping of str to SubjectTrials, optional
            Trained subjects' training trials, for an aligned starting point.
        **options
            More keyword arguments of :func:`~neurodecode.models.fewshot.adapt`.

        Returns
        -------
        Reconstructor
        """
        self._check_fitted()
        new = copy.copy(self)
        parts = [train, *([] if val is None else [val]), *(reference or {}).values()]
        ids = np.unique(np.concatenate([trial_image_ids(t) for t in parts]))
        n_images = len(images)
        if ids.max() >= n_images:
            raise ValueError(f"trial image id {int(ids.max())} is beyond the {n_images} "
                             "images of the stimulus set")
        seen = as_array(resize(images[ids], self.config_.image_size))
        targets = np.zeros((n_images, int(np.prod(self.token_shape_))), np.float32)
        targets[ids] = self._standardise(self._raw_tokens(seen)).numpy()
        coarse = np.zeros((n_images, 3 * self.config_.brain.lowlevel_size ** 2), np.float32)
        coarse[ids] = self._coarse(seen)
        for name, table in (("embedding_", targets), ("lowlevel_", coarse)):
            ref = None if reference is None else {n: _with_targets(t, table)
                                                  for n, t in reference.items()}
            decoder = getattr(self, name).adapt(
                _with_targets(train, table), None if val is None else _with_targets(val, table),
                strategy=strategy, reference=ref, **options)
            setattr(new, name, decoder)
        # the subject's inversions, with the prior of every image read here (training images)
        own = [train, *([] if val is None else [val])]
        cfg = self.config_.brain.inversion
        new.inversion_ = {**self.inversion_, train.subject: {
            part: _inversion_map(own, table, table[ids], cfg, self._served_time_weights(part))
            for part, table in (("embedding", targets), ("lowlevel", coarse))}}
        new.inversion_weights_ = {**self.inversion_weights_, train.subject:
                                  dict.fromkeys(("embedding", "lowlevel"), cfg.weight_new)}
        return new

    def _served_time_weights(self, part: str) -> np.ndarray | None:
        """The mean time weights of a decoder's inversions over the subjects served (None
        with ``time_weights: equal`` or maps saved without them). A new subject's few trials
        pin the hemodynamic lag profile down far worse than the served subjects' thousands."""
        if self.config_.brain.inversion.time_weights != "matched":
            return None
        found = [maps[part]["time_weights"].numpy() for maps in self.inversion_.values()
                 if "time_weights" in maps[part]]
        if not found or len({len(w) for w in found}) > 1:
            return None
        return np.mean(found, axis=0)  # each sums to 1, so does their mean

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole model (encoder, decoders, renderer) to one checkpoint file."""
        self._check_fitted()
        payload = {
            "format": FORMAT, "version": VERSION,
            "config": self.config_.model_dump(mode="json"),
            "encoder": self.encoder_.state_dict(),
            "embedding": self.embedding_.to_payload(),
            "lowlevel": self.lowlevel_.to_payload(),
            "inversion": dict(self.inversion_),
            "inversion_weights": dict(self.inversion_weights_),
            "diffusion": None if self.diffusion_ is None else self.diffusion_.to_state(),
            "token_shape": list(self.token_shape_),
            "target_mean": torch.as_tensor(self.target_mean_),
            "target_std": torch.as_tensor(self.target_std_),
            "train_image_ids": torch.as_tensor(self.train_image_ids_),
            "timings": dict(self.timings_),
            "samples": dict(getattr(self, "samples_", {})),
        }
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **params: Any) -> Reconstructor:
        """Load a reconstructor written by :meth:`save` (``torch.load(weights_only=True)``)."""
        from .diffusion import ConditionalDiffusion
        from .encoders import load_image_encoder

        payload = read_payload(path, FORMAT, VERSION, "reconstruction checkpoint")
        config = load_reconstruction_config(payload["config"])
        rec = cls(config, **params)
        rec.config_ = config
        rec.encoder_ = load_image_encoder(payload["encoder"])
        rec.embedding_ = CrossSubjectDecoder.from_payload(payload["embedding"],
                                                          where=f"{path} (embedding)")
        rec.lowlevel_ = CrossSubjectDecoder.from_payload(payload["lowlevel"],
                                                         where=f"{path} (lowlevel)")
        rec.inversion_ = dict(payload["inversion"])
        rec.inversion_weights_ = {str(k): {part: float(w) for part, w in v.items()}
                                  for k, v in payload["inversion_weights"].items()}
        rec.diffusion_ = (None if payload["diffusion"] is None
                          else ConditionalDiffusion.from_state(payload["diffusion"]).eval())
        rec.renderer_ = None
        if config.renderer.kind == "pretrained":
            from .pretrained import PretrainedRenderer

            rec.renderer_ = PretrainedRenderer.from_folder(config.renderer.path)
        rec.token_shape_ = tuple(int(d) for d in payload["token_shape"])
        rec.target_mean_ = payload["target_mean"].numpy()
        rec.target_std_ = payload["target_std"].numpy()
        rec.train_image_ids_ = payload["train_image_ids"].numpy()
        rec.timings_ = dict(payload.get("timings", {}))
        rec.samples_ = dict(payload.get("samples", {}))
        return rec
