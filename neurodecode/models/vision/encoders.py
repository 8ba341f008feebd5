"""Image targets behind one interface: what the brain is decoded into.

An :class:`ImageEncoder` turns images into embedding tokens ``(n, n_tokens, dim)`` (what the
brain decoders predict and the diffusion model is conditioned on) and into one pooled embedding
per image ``(n, embed_dim)`` (retrieval, two-way identification, BrainDiVE's encoding models).
Two implementations:

- :class:`TrainedImageEncoder` (default, offline): a small conv net trained on the stimulus set
  in the pipeline, with an autoencoding loss through a small conv decoder (kept:
  :meth:`TrainedImageEncoder.decode` is a fast rendering path without diffusion) and an InfoNCE
  between two mildly augmented views of each image;
- :class:`PretrainedImageEncoder`: a ``transformers`` CLIP vision model from a local folder
  (never a hub name), its preprocessing done in torch so that gradients reach the pixels.

Both accept arrays ``(n, H, W[, 3])`` or tensors ``(n, 3, H, W)`` in [0, 1], resize them to
their :attr:`~ImageEncoder.image_size`, and are differentiable when given a tensor that requires
grad (BrainDiVE guidance backpropagates through :meth:`~ImageEncoder.embed`). Their
:meth:`~ImageEncoder.state_dict` is plain types and tensors, and :func:`load_image_encoder`
rebuilds either from it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...data.images import as_batch, resize

__all__ = [
    "ImageEncoder",
    "PretrainedImageEncoder",
    "TokenDecoder",
    "TokenEncoder",
    "TrainedImageEncoder",
    "augment_views",
    "info_nce",
    "load_image_encoder",
]

#: Images per forward pass in :meth:`ImageEncoder.encode` / :meth:`ImageEncoder.embed`.
BATCH = 256
#: CLIP's pixel statistics (``transformers``' ``OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_images(images: Any, what: str) -> np.ndarray:
    a = np.asarray(images, dtype=np.float32)
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3):
        raise ValueError(f"{what} must be an (n, H, W) or (n, H, W, 3) array, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    if a.size and (a.min() < -1e-3 or a.max() > 1 + 1e-3):
        raise ValueError(f"{what} must be in [0, 1], got values in [{a.min():.3g}, "
                         f"{a.max():.3g}]")
    return a


class ImageEncoder(ABC):
    """Images to embedding tokens and pooled embeddings (the decoding targets).

    Attributes
    ----------
    name : str
        ``"trained"`` or ``"pretrained"`` (what :func:`load_image_encoder` dispatches on).
    n_tokens, dim : int
        Shape of the tokens of one image.
    embed_dim : int
        Width of the pooled embedding (``dim`` for the trained encoder, the projection width
        for CLIP).
    image_size : int
        Side the encoder works at (inputs are resized to it).
    """

    name: ClassVar[str]
    n_tokens: int
    dim: int
    embed_dim: int
    image_size: int

    @abstractmethod
    def fit(self, images: np.ndarray, *, seed: int = 0) -> ImageEncoder:
        """Train on the stimulus set (the training images only; the caller splits).

        Parameters
        ----------
        images : ndarray
            ``(n, H, W[, 3])`` in [0, 1].
        seed : int

        Returns
        -------
        ImageEncoder
            ``self``.
        """

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Embedding tokens ``(n, n_tokens, dim)`` float32.

        Parameters
        ----------
        images : array or Tensor
            ``(n, H, W[, 3])`` arrays or ``(n, 3, H, W)`` tensors in [0, 1]. A tensor that
            requires grad gives differentiable tokens; otherwise no graph is kept.
        """
        return self._batched(images, self._tokens, (self.n_tokens, self.dim))

    def embed(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pooled embeddings ``(n, embed_dim)`` float32 (differentiable as :meth:`encode`)."""
        return self._batched(images, self._pooled, (self.embed_dim,))

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything :func:`load_image_encoder` needs: plain types and tensors."""

    @abstractmethod
    def _modules(self) -> list[nn.Module]:
        """The networks to put in eval mode (raises if the encoder is not ready)."""

    @abstractmethod
    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens of a batch already resized to :attr:`image_size`."""

    @abstractmethod
    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings of a batch already resized to :attr:`image_size`."""

    def _batched(self, images: np.ndarray | torch.Tensor,
                 fn: Callable[[torch.Tensor], torch.Tensor],
                 shape: tuple[int, ...]) -> torch.Tensor:
        modules = self._modules()
        for m in modules:
            m.eval()
        device = next(modules[0].parameters()).device
        x = as_batch(images if isinstance(images, torch.Tensor) else _check_images(images,
                                                                                   "images"))
        grad = x.requires_grad
        # contiguous: a permuted (channels-last) view would take another conv path
        x = resize(x, self.image_size).contiguous()
        if len(x) == 0:
            return torch.zeros((0, *shape), dtype=torch.float32)
        with contextlib.nullcontext() if grad else torch.no_grad():
            out = [fn(x[i:i + BATCH].to(device)).float() for i in range(0, len(x), BATCH)]
            out = torch.cat(out)
        return out.to(x.device)


# ---- the trained encoder --------------------------------------------------------------------


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def _block(c_in: int, c_out: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.GroupNorm(_groups(c_out), c_out), nn.SiLU())


def _levels(image_size: int, grid: int) -> int:
    if image_size % grid or (image_size // grid) & (image_size // grid - 1):
        raise ValueError(f"image_size ({image_size}) must be grid ({grid}) times a power of 2")
    return int(math.log2(image_size // grid))


class TokenEncoder(nn.Module):
    """Strided convs (GroupNorm, SiLU) to a ``grid`` × ``grid`` map of ``dim``-wide tokens.

    The tokens get a learned positional embedding; :meth:`pooled` is the normalised projection
    (two-layer MLP) of their mean.

    Parameters
    ----------
    image_size, grid, dim, width : int
        ``image_size`` must be ``grid`` times a power of 2; channels double at every halving
        from ``width`` up to ``4 * width``.
    """

    def __init__(self, image_size: int, grid: int, dim: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_block(3, width)]
        c = width
        for i in range(_levels(image_size, grid)):
            c_out = width * min(2 ** (i + 1), 4)
            layers.append(_block(c, c_out, stride=2))
            c = c_out
        layers.append(nn.Conv2d(c, dim, 1))
        self.net = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(n, grid**2, dim)`` of images ``(n, 3, image_size, image_size)``."""
        return self.net(x).flatten(2).transpose(1, 2) + self.position

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(n, dim)`` of tokens."""
        return F.normalize(self.head(tokens.mean(dim=1)), dim=-1)


class TokenDecoder(nn.Module):
    """Tokens back to images: upsampling convs (GroupNorm, SiLU), a sigmoid at the end.

    Parameters
    ----------
    image_size, grid, dim, width : int
        As for :class:`TokenEncoder`.
    """

    def __init__(self, image_size: int, grid: int, dim: int, width: int) -> None:
        super().__init__()
        levels = _levels(image_size, grid)
        self.grid = grid
        c = width * min(2 ** levels, 4)
        layers: list[nn.Module] = [nn.Conv2d(dim, c, 1)]
        for i in reversed(range(levels)):
            c_out = width * min(2 ** i, 4)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _block(c, c_out)]
            c = c_out
        layers.append(nn.Conv2d(c, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 3, image_size, image_size)`` in [0, 1] of tokens ``(n, grid**2, dim)``."""
        n, _, dim = tokens.shape
        x = tokens.transpose(1, 2).reshape(n, dim, self.grid, self.grid)
        return torch.sigmoid(self.net(x))


def augment_views(x: torch.Tensor, generator: torch.Generator, *, shift: int = 2,
                  brightness: float = 0.1, contrast: float = 0.2, noise: float = 0.03
                  ) -> torch.Tensor:
    """A mildly jittered copy of a batch: position and content are kept, no flips.

    Parameters
    ----------
    x : Tensor
        ``(n, 3, H, W)`` in [0, 1].
    generator : torch.Generator
        The randomness (CPU).
    shift : int
        Largest shift in pixels along each axis (edges replicated).
    brightness, contrast : float
        Additive offset in ``[-brightness, brightness]``; contrast factor in
        ``[1 - contrast, 1 + contrast]`` around each image's mean.
    noise : float
        Standard deviation of the Gaussian pixel noise.

    Returns
    -------
    Tensor
        Same shape, clipped to [0, 1].
    """
    n, _, h, w = x.shape
    rand = torch.rand(n, 4, generator=generator).to(x.device)
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).tolist()
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    factor = (1 + contrast * (2 * rand[:, 0] - 1)).view(n, 1, 1, 1)
    offset = (brightness * (2 * rand[:, 1] - 1)).view(n, 1, 1, 1)
    out = (out - mean) * factor + mean + offset
    out = out + noise * torch.randn(out.shape, generator=generator).to(x.device)
    return out.clamp(0.0, 1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of paired unit-norm embeddings ``(n, d)`` (row i of each pairs)."""
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class TrainedImageEncoder(ImageEncoder):
    """A small conv encoder trained on the stimulus set: the default, offline image target.

    Tokens are a ``grid`` × ``grid`` map of ``dim``-wide vectors (:class:`TokenEncoder`). Training
    minimises the pixel MSE of a small conv decoder's reconstruction (:class:`TokenDecoder`,
    kept: :meth:`decode`) plus ``contrastive_weight`` times an InfoNCE between the pooled
    embeddings of two augmented views of each image (±2 px shifts, brightness/contrast jitter,
    pixel noise: no flips nor large shifts, since position is content). The last
    ``val_fraction`` of the images stop training early (best epoch kept). Deterministic given
    the seed.

    Parameters
    ----------
    image_size : int
        Side the encoder works at; ``grid`` times a power of 2.
    grid : int
        Tokens per side (``n_tokens = grid**2``).
    dim : int
        Token width (and embedding width).
    width : int
        Channels of the first conv (doubling at every halving, up to ``4 * width``).
    max_epochs, batch_size, patience : int
    lr : float
        AdamW learning rate (gradients clipped to norm 1; 2e-3 collapsed the embeddings of
        the default width on 400 procedural scenes).
    contrastive_weight : float
        Weight of the InfoNCE against the reconstruction loss (0: autoencoder only).
    temperature : float
        InfoNCE temperature.
    val_fraction : float
        Share of the images (the last ones) held out for early stopping; 0 trains
        ``max_epochs`` epochs.
    accelerator : str
        Lightning accelerator of the training; the networks come back to the CPU.

    Attributes
    ----------
    encoder_ : TokenEncoder
    decoder_ : TokenDecoder
    history_ : list of dict
        One row per epoch (``loss``, ``recon_loss``, ``nce_loss``, ``val_loss``...).
    best_epoch_ : int or None
        The epoch whose weights are kept (None without validation images).
    fit_seconds_ : float
    """

    name: ClassVar[str] = "trained"

    def __init__(self, image_size: int = 32, grid: int = 4, dim: int = 32, width: int = 32,
                 max_epochs: int = 40, batch_size: int = 64, lr: float = 1e-3,
                 contrastive_weight: float = 0.5, temperature: float = 0.1, patience: int = 8,
                 val_fraction: float = 0.1, accelerator: str = "cpu") -> None:
        self.image_size = int(image_size)
        self.grid = int(grid)
        self.dim = int(dim)
        self.width = int(width)
        self.max_epochs = int(max_epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.contrastive_weight = float(contrastive_weight)
        self.temperature = float(temperature)
        self.patience = int(patience)
        self.val_fraction = float(val_fraction)
        self.accelerator = str(accelerator)
        for key in ("image_size", "grid", "dim", "width", "max_epochs", "batch_size",
                    "patience"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        for key in ("lr", "temperature"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        _levels(self.image_size, self.grid)
        self.n_tokens = self.grid ** 2
        self.embed_dim = self.dim

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments (plain types)."""
        keys = ("image_size", "grid", "dim", "width", "max_epochs", "batch_size", "lr",
                "contrastive_weight", "temperature", "patience", "val_fraction", "accelerator")
        return {k: getattr(self, k) for k in keys}

    def _networks(self) -> tuple[TokenEncoder, TokenDecoder]:
        args = (self.image_size, self.grid, self.dim, self.width)
        return TokenEncoder(*args), TokenDecoder(*args)

    def fit(self, images: np.ndarray, *, seed: int = 0) -> TrainedImageEncoder:
        """Train on ``images`` (the stimulus set's training images only).

        Parameters
        ----------
        images : ndarray
            ``(n, H, W[, 3])`` in [0, 1]; resized to :attr:`image_size`. The last
            ``val_fraction`` of them are the early-stopping set.
        seed : int
            Seeds the weights, the batch order and the augmentations.

        Returns
        -------
        TrainedImageEncoder
        """
        from .._fit import fit_lightning
        from ..tasks.image_encoder import ImageEncoderTask

        x = resize(_check_images(images, "images"), self.image_size)
        n_val = int(round(len(x) * self.val_fraction)) if self.val_fraction > 0 else 0
        if len(x) - n_val < 2:
            raise ValueError(f"{len(x)} images are too few to train the image encoder with "
                             f"val_fraction {self.val_fraction} (it needs at least 2 training "
                             "images)")
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder, decoder = self._networks()
        task = ImageEncoderTask(encoder, decoder, lr=self.lr,
                                contrastive_weight=self.contrastive_weight,
                                temperature=self.temperature, seed=seed)
        train = torch.utils.data.TensorDataset(x[:len(x) - n_val])
        loader = torch.utils.data.DataLoader(
            train, batch_size=self.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(seed))
        val_loader = None
        if n_val:
            val_loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(x[len(x) - n_val:]), batch_size=self.batch_size)
        record = fit_lightning(task, loader, val_loader, max_epochs=self.max_epochs,
                               patience=self.patience, accelerator=self.accelerator)
        self.encoder_ = task.encoder.cpu().eval()
        self.decoder_ = task.decoder.cpu().eval()
        self.history_ = record.history
        self.best_epoch_ = record.best_epoch
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _modules(self) -> list[nn.Module]:
        if not hasattr(self, "encoder_"):
            raise ValueError("this TrainedImageEncoder is not fitted: call fit(images) first")
        return [self.encoder_, self.decoder_]

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_(x)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_.pooled(self.encoder_(x))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 3, image_size, image_size)`` in [0, 1] from tokens (no diffusion).

        Parameters
        ----------
        tokens : Tensor
            ``(n, n_tokens, dim)``, e.g. tokens predicted from brain activity.
        """
        modules = self._modules()
        tokens = torch.as_tensor(tokens, dtype=torch.float32)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (self.n_tokens, self.dim):
            raise ValueError(f"tokens must be (n, {self.n_tokens}, {self.dim}), got "
                             f"{tuple(tokens.shape)}")
        for m in modules:
            m.eval()
        if len(tokens) == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        with contextlib.nullcontext() if tokens.requires_grad else torch.no_grad():
            return torch.cat([self.decoder_(tokens[i:i + BATCH])
                              for i in range(0, len(tokens), BATCH)])

    def state_dict(self) -> dict[str, Any]:
        """Parameters, weights and training record (plain types and tensors)."""
        self._modules()
        return {
            "name": self.name,
            "params": self.get_params(),
            "encoder": {k: v.detach().cpu().clone() for k, v in self.encoder_.state_dict().items()},
            "decoder": {k: v.detach().cpu().clone() for k, v in self.decoder_.state_dict().items()},
            "history": copy.deepcopy(self.history_),
            "best_epoch": self.best_epoch_,
            "fit_seconds": float(self.fit_seconds_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrainedImageEncoder:
        """Rebuild a fitted encoder from :meth:`state_dict`."""
        try:
            enc = cls(**state["params"])
            enc.encoder_, enc.decoder_ = enc._networks()
            enc.encoder_.load_state_dict(state["encoder"])
            enc.decoder_.load_state_dict(state["decoder"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"not a trained image encoder state ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200]})") from None
        enc.encoder_.eval()
        enc.decoder_.eval()
        enc.history_ = list(state.get("history", []))
        enc.best_epoch_ = state.get("best_epoch")
        enc.fit_seconds_ = float(state.get("fit_seconds", 0.0))
        return enc


# ---- the pretrained CLIP vision model -------------------------------------------------------


def _model_folder(path: Path) -> Path:
    """The folder holding the CLIP vision model's ``config.json`` (``path`` or its
    ``image_encoder/``, as in a saved unCLIP pipeline)."""
    if not path.is_dir():
        raise ValueError(f"{path}: no such folder (expected a local CLIP vision model)")
    if (path / "config.json").is_file():
        return path
    if (path / "image_encoder" / "config.json").is_file():
        return path / "image_encoder"
    raise ValueError(f"{path}: no config.json (nor image_encoder/config.json): not a CLIP vision "
                     "model folder")


def _fingerprint(config_file: Path) -> str:
    return hashlib.sha256(config_file.read_bytes()).hexdigest()


def _pixel_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the model's preprocessing: its ``preprocessor_config.json`` (or the
    pipeline's ``feature_extractor/`` one), else CLIP's."""
    candidates = [folder / "preprocessor_config.json"]
    if folder.name == "image_encoder":
        candidates.append(folder.parent / "feature_extractor" / "preprocessor_config.json")
    for file in candidates:
        if file.is_file():
            try:
                cfg = json.loads(file.read_text())
                mean, std = cfg.get("image_mean", CLIP_MEAN), cfg.get("image_std", CLIP_STD)
                mean = tuple(float(v) for v in mean)
                std = tuple(float(v) for v in std)
            except (ValueError, TypeError, AttributeError) as err:
                raise ValueError(f"{file}: not a readable preprocessor config ({err})") from None
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ValueError(f"{file}: image_mean and image_std must be 3 values (std > 0)")
            return mean, std
    return CLIP_MEAN, CLIP_STD


def _load_clip_vision(folder: Path, config: dict[str, Any]) -> nn.Module:
    """A ``CLIPVisionModelWithProjection`` from a vision-only or a full CLIP folder; every
    weight of the vision tower and projection must be in the files (else ValueError)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a full CLIP's text weights are expected to be unused
    hf_logging.disable_progress_bar()
    try:
        kwargs: dict[str, Any] = {}
        if config.get("model_type") == "clip":
            vision = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
            vision.projection_dim = int(config.get("projection_dim", vision.projection_dim))
            kwargs["config"] = vision
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            folder, local_files_only=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise ValueError(f"{folder}: cannot load a CLIP vision model ({type(err).__name__}: "
                         f"{first})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    problems = [*info.get("missing_keys", []), *info.get("mismatched_keys", [])]
    if problems:
        raise ValueError(f"{folder}: weights missing or of the wrong shape for the CLIP vision "
                         f"model: {sorted(map(str, problems))[:5]}")
    return model


class PretrainedImageEncoder(ImageEncoder):
    """A pretrained CLIP vision model (``CLIPVisionModelWithProjection``) from a local folder.

    Tokens are its ``last_hidden_state`` ``(n, 1 + patches, hidden)``; the pooled embedding is
    its ``image_embeds`` ``(n, projection_dim)``. Preprocessing is done in torch (resize to
    :attr:`image_size`, normalise with the folder's ``preprocessor_config.json`` mean/std or
    CLIP's), so gradients reach the pixels. The weights are frozen; :meth:`fit` does nothing.

    Parameters
    ----------
    path : path-like
        A folder saved by ``save_pretrained`` (``config.json`` + weights), or a folder holding
        one in ``image_encoder/`` (a saved diffusers unCLIP pipeline). Never a hub name.
    image_size : int, optional
        Side the images are resized to (default the model's; another side interpolates the
        position embeddings).

    Attributes
    ----------
    path : Path
        As given (resolved).
    model_path : Path
        The folder the model is read from.
    model : CLIPVisionModelWithProjection
    mean, std : tuple of float
    fingerprint : str
        SHA-256 of the model's ``config.json``.

    Raises
    ------
    ValueError
        Naming the folder: missing, without a config, not a CLIP vision model, or unreadable.
    """

    name: ClassVar[str] = "pretrained"
    #: ``model_type`` values of configs a ``CLIPVisionModelWithProjection`` loads from.
    MODEL_TYPES: ClassVar[tuple[str, ...]] = ("clip_vision_model", "clip")

    def __init__(self, path: str | os.PathLike, *, image_size: int | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.model_path = _model_folder(self.path)
        config_file = self.model_path / "config.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{config_file}: not a readable model config ({err})") from None
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type not in self.MODEL_TYPES:
            raise ValueError(f"{self.model_path}: not a CLIP vision model (model_type "
                             f"{model_type!r}, expected one of {list(self.MODEL_TYPES)})")
        model = _load_clip_vision(self.model_path, config)
        self.model = model.float().eval().requires_grad_(False)
        self.fingerprint = _fingerprint(config_file)
        self.mean, self.std = _pixel_stats(self.model_path)
        vision = self.model.config
        self.native_size = int(vision.image_size)
        self.image_size = self.native_size if image_size is None else int(image_size)
        patch = int(vision.patch_size)
        if self.image_size < patch:
            raise ValueError(f"image_size ({self.image_size}) is smaller than the model's patch "
                             f"size ({patch})")
        self.n_tokens = 1 + (self.image_size // patch) ** 2
        self.dim = int(vision.hidden_size)
        self.embed_dim = int(vision.projection_dim)

    def fit(self, images: np.ndarray, *, seed: int = 0) -> PretrainedImageEncoder:
        """Nothing to train: the pretrained weights are kept. Returns ``self``."""
        return self

    def _modules(self) -> list[nn.Module]:
        return [self.model]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values the model reads, from a batch in [0, 1] (differentiable)."""
        x = resize(x, self.image_size)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _forward(self, x: torch.Tensor) -> Any:
        return self.model(pixel_values=self.preprocess(x),
                          interpolate_pos_encoding=self.image_size != self.native_size)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x).last_hidden_state

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x).image_embeds

    def state_dict(self) -> dict[str, Any]:
        """The folder and a fingerprint of its config (not the weights)."""
        return {"name": self.name, "path": str(self.path), "image_size": self.image_size,
                "config_sha256": self.fingerprint}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PretrainedImageEncoder:
        """Re-open the folder of :meth:`state_dict`; fail if it is missing or changed."""
        try:
            path, size, expected = state["path"], state["image_size"], state["config_sha256"]
        except KeyError as err:
            raise ValueError(f"not a pretrained image encoder state (no {err})") from None
        try:
            enc = cls(path, image_size=size)
        except ValueError as err:
            raise ValueError(f"the saved image encoder's folder {path} cannot be re-opened: "
                             f"{err}") from None
        if enc.fingerprint != expected:
            raise ValueError(f"{enc.model_path}: the CLIP vision model changed since it was "
                             "saved (config.json differs); outputs would not match")
        return enc


_ENCODERS: dict[str, type[TrainedImageEncoder] | type[PretrainedImageEncoder]] = {
    TrainedImageEncoder.name: TrainedImageEncoder,
    PretrainedImageEncoder.name: PretrainedImageEncoder,
}


def load_image_encoder(state: dict[str, Any]) -> ImageEncoder:
    """Rebuild an encoder from its :meth:`ImageEncoder.state_dict`.

    Parameters
    ----------
    state : dict
        A trained encoder's state (weights included) or a pretrained one's (folder re-opened).

    Returns
    -------
    ImageEncoder

    Raises
    ------
    ValueError
        An unknown ``name``, a state that does not fit, or a pretrained folder that is missing
        or changed (named).
    """
    name = state.get("name") if isinstance(state, dict) else None
    if name not in _ENCODERS:
        raise ValueError(f"not an image encoder state (name {name!r}, expected one of "
                         f"{sorted(_ENCODERS)})")
    return _ENCODERS[name].from_state(state)
