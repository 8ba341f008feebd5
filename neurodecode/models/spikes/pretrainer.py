"""Spike-token pretraining as an estimator: token windows → a generative spike model.

:class:`SpikePretrainer` trains a :class:`~neurodecode.models.spikes.model.SpikeTransformer`
on :class:`~neurodecode.data.tokens.TokenWindows` (with optional per-window behaviour
covariates and stimulus frames) through :class:`~neurodecode.models.tasks.spikes.
SpikePretrainTask` and :func:`~neurodecode.models._fit.fit_lightning` (early stopping on
validation windows, best weights kept), scores held-out windows (:meth:`~SpikePretrainer.nll`,
:meth:`~SpikePretrainer.nll_per_spike`, in the NLL convention of :mod:`neurodecode.data.tokens`),
and takes in new units (:meth:`~SpikePretrainer.add_units`; ``fit(..., train_units=ids)``
then trains their rows alone: unit identification of a new session).

Checkpoints are one ``torch.save`` file of plain types and tensors
(``torch.load(weights_only=True)``)::

    {"format": "neurodecode.spike_gpt", "version": 1, "config": {...},
     "vocabulary": {"keys": [...]}, "shape": {"n_vocab", "n_dt", "n_past_dt", "n_covariates",
     "frame_shape"}, "state": {key: tensor},
     "extra": {"history": [...], "fit_seconds": float, "tokens_per_s": float}}
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ...data.tokens import N_SPECIAL, SpikeTokenizer, TokenWindows, UnitVocabulary
from .._fit import fit_lightning
from ..checkpoint import atomic_save, read_payload
from .config import SpikeModelConfig, load_spike_config
from .model import SpikeTransformer

__all__ = ["FORMAT", "SpikePretrainer", "TokenBatches"]

FORMAT = "neurodecode.spike_gpt"
VERSION = 1

#: Config fields a warm start may change (the rest fix the network and its tokens).
TRAIN_FIELDS = frozenset({"temperature", "checkpointing", "compile", "precision", "lr",
                          "weight_decay", "batch_size", "max_epochs", "patience", "seed"})

Val = tuple[TokenWindows, np.ndarray | None] | tuple[TokenWindows, np.ndarray | None,
                                                     np.ndarray | None]


def _lightning_accelerator(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        return "gpu"
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


class TokenBatches:
    """Re-iterable padded batches (CPU tensors) of token windows, for Lightning and loops.

    Each batch is :meth:`~neurodecode.data.tokens.SpikeTokenizer.collate`'s dict plus
    ``truncated`` (bool ``(B,)``: the tokenizer dropped spikes of that window), ``index``
    (int64 ``(B,)``: the windows' rows in ``tokens``) and, when given, ``covariates``
    (float32 ``(B, T, F)``) and ``frames`` (float32 ``(B, C, H, W)``). Shuffled batches draw
    a new order at every pass from one seeded generator.
    """

    def __init__(self, tokens: TokenWindows, covariates: np.ndarray | None = None,
                 frames: np.ndarray | None = None, *, batch_size: int = 64,
                 shuffle: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokens, self.covariates, self.frames = tokens, covariates, frames
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        self._rng = np.random.default_rng(seed)
        self._collate = SpikeTokenizer().collate  # collation does not depend on the settings

    def __len__(self) -> int:
        return math.ceil(len(self.tokens) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.tokens)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for lo in range(0, n, self.batch_size):
            idx = order[lo: lo + self.batch_size]
            batch = self._collate(self.tokens, idx)
            batch["truncated"] = torch.from_numpy(self.tokens.n_truncated[idx] > 0)
            batch["index"] = torch.from_numpy(idx.astype(np.int64))
            if self.covariates is not None:
                batch["covariates"] = torch.from_numpy(
                    np.ascontiguousarray(self.covariates[idx], dtype=np.float32))
            if self.frames is not None:
                batch["frames"] = torch.from_numpy(
                    np.ascontiguousarray(self.frames[idx], dtype=np.float32))
            yield batch


class SpikePretrainer(BaseEstimator):
    """Generative pretraining on spike tokens (Neuroformer-style), as an estimator.

    Parameters
    ----------
    config : str, path-like, dict or SpikeModelConfig
        A spike model config (``models/spike_gpt.yaml`` by default, or its name).
    accelerator : str
        ``"cpu"``, ``"gpu"`` (= ``"cuda"``) or ``"auto"``.
    verbose : bool
        Show Lightning's messages and progress bar.
    **overrides
        Config fields to replace (``layers=2, window=0.1, max_epochs=5``).

    Attributes
    ----------
    config_ : SpikeModelConfig
    model_ : SpikeTransformer
        On the CPU, in eval mode, after :meth:`fit`.
    vocabulary_ : UnitVocabulary
        The model's units (a copy of the one given to :meth:`fit`, grown by
        :meth:`add_units`).
    tokenizer_ : SpikeTokenizer
        The config's tokenizer (cut windows with it).
    history_ : list of dict
        Per-epoch record of the last fit (``train_nll``, ``val_nll`` in nats per spike).
    best_epoch_ : int or None
    fit_seconds_ : float
    tokens_per_s_ : float
        Current-window tokens trained on per second of training epochs (no validation).
    """

    def __init__(self, config: str | os.PathLike | dict[str, Any] | SpikeModelConfig
                 = "spike_gpt", accelerator: str = "cpu", verbose: bool = False,
                 **overrides: Any) -> None:
        self.config = config
        self.accelerator = accelerator
        self.verbose = verbose
        self.overrides = overrides

    # sklearn's get_params does not take **kwargs: the overrides are parameters too
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"config": self.config, "accelerator": self.accelerator,
                "verbose": self.verbose, **self.overrides}

    def set_params(self, **params: Any) -> SpikePretrainer:
        for key, value in params.items():
            if key in ("config", "accelerator", "verbose"):
                setattr(self, key, value)
            else:
                self.overrides[key] = value
        return self

    def _config(self) -> SpikeModelConfig:
        return load_spike_config(self.config, **self.overrides)

    @property
    def device_(self) -> torch.device:
        """Where batches and the model go for scoring (from ``accelerator``)."""
        acc = _lightning_accelerator(self.accelerator)
        if acc == "gpu":
            if not torch.cuda.is_available():
                raise RuntimeError("accelerator 'gpu' asked for, but CUDA is not available")
            return torch.device("cuda")
        return torch.device("cpu")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this SpikePretrainer is not fitted: call fit() or load()")

    # ---- data -------------------------------------------------------------------------------

    def _check_inputs(self, tokens: TokenWindows, n_vocab: int, covariates: np.ndarray | None,
                      frames: np.ndarray | None, what: str = "tokens",
                      cfg: SpikeModelConfig | None = None) -> None:
        cfg = self.config_ if cfg is None else cfg
        if not isinstance(tokens, TokenWindows):
            raise TypeError(f"{what} must be TokenWindows (SpikeTokenizer output), not "
                            f"{type(tokens).__name__}")
        if not len(tokens):
            raise ValueError(f"{what}: no window")
        tok = cfg.tokenizer()
        for side, n_bins in (("cur", tok.n_dt), ("past", tok.n_past_dt)):
            unit, dt = getattr(tokens, f"{side}_unit"), getattr(tokens, f"{side}_dt")
            if len(unit) and (unit.min() < N_SPECIAL or unit.max() >= n_vocab):
                raise ValueError(f"{what}: {side} unit ids span {unit.min()}..{unit.max()}, "
                                 f"outside the vocabulary's units {N_SPECIAL}..{n_vocab - 1}")
            if len(dt) and (dt.min() < 0 or dt.max() >= n_bins):
                raise ValueError(f"{what}: {side} dt bins reach {dt.max()} but the config's "
                                 f"tokenizer has {n_bins} (window {cfg.window}, past "
                                 f"{cfg.past}, dt {cfg.dt}): cut the windows with "
                                 "the config's tokenizer (pretrainer.tokenizer_)")
        longest = int(tokens.n_tokens().max())
        if longest > cfg.max_tokens:
            raise ValueError(f"{what}: a window has {longest} tokens, more than max_tokens="
                             f"{cfg.max_tokens}")
        for name, arr, ndim in (("covariates", covariates, 3), ("frames", frames, 4)):
            if arr is not None and (np.ndim(arr) != ndim or len(arr) != len(tokens)):
                raise ValueError(f"{what}: {name} must be one {ndim}-D array row per window "
                                 f"({len(tokens)}), got shape {np.shape(arr)}")

    def batches(self, tokens: TokenWindows, covariates: np.ndarray | None = None,
                batch_size: int | None = None, shuffle: bool = False, *,
                frames: np.ndarray | None = None, seed: int | None = None
                ) -> Iterator[dict[str, torch.Tensor]]:
        """Padded batches of ``tokens`` on :attr:`device_` (see :class:`TokenBatches`).

        Parameters
        ----------
        tokens : TokenWindows
        covariates : ndarray, optional
            ``(n_windows, T, F)``, aligned with ``tokens``.
        batch_size : int, optional
            Default: the config's.
        shuffle : bool
        frames : ndarray, optional
            ``(n_windows, C, H, W)``.
        seed : int, optional
            Shuffling seed (default: the config's).

        Yields
        ------
        dict of Tensor
        """
        cfg = getattr(self, "config_", None) or self._config()
        loader = TokenBatches(tokens, covariates, frames,
                              batch_size=batch_size or cfg.batch_size, shuffle=shuffle,
                              seed=cfg.seed if seed is None else seed)
        device = self.device_
        for batch in loader:
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def _warm_config(self) -> SpikeModelConfig:
        """The fitted config with the training fields of the current overrides."""
        over = dict(self.overrides)
        unknown = sorted(set(over) - set(SpikeModelConfig.model_fields))
        if unknown:
            raise ValueError(f"spike model config: unknown key(s) {unknown}")
        fixed = {k: v for k, v in over.items() if k not in TRAIN_FIELDS
                 and getattr(self.config_, k, v) != v}
        if fixed:
            raise ValueError(f"warm start keeps the fitted model's architecture and tokens; "
                             f"cannot change {sorted(fixed)}")
        update = {k: v for k, v in over.items() if k in TRAIN_FIELDS}
        return SpikeModelConfig.model_validate({**self.config_.model_dump(), **update})

    # ---- training ---------------------------------------------------------------------------

    def fit(self, tokens: TokenWindows, vocabulary: UnitVocabulary,
            covariates: np.ndarray | None = None, val: Val | None = None, *,
            frames: np.ndarray | None = None, train_units: np.ndarray | None = None,
            warm_start: bool = False) -> SpikePretrainer:
        """Train on token windows.

        Parameters
        ----------
        tokens : TokenWindows
            Training windows (cut with :attr:`tokenizer_`'s settings: the config's).
        vocabulary : UnitVocabulary
            The units of ``tokens`` (the model has ``len(vocabulary)`` unit rows).
        covariates : ndarray, optional
            Behaviour per window, float ``(n_windows, T, F)``.
        val : tuple, optional
            ``(tokens, covariates)`` or ``(tokens, covariates, frames)`` of validation
            windows: early stopping on their NLL per spike, best epoch kept. None: the
            config's ``max_epochs``, last weights kept.
        frames : ndarray, optional
            Stimulus frames per window, float ``(n_windows, C, H, W)``.
        train_units : array of int, optional
            Train only these unit rows (embedding and head), everything else frozen: unit
            identification of a new session on the fitted model (implies ``warm_start``).
        warm_start : bool
            Continue from the fitted model (its vocabulary grown to ``vocabulary``, which must
            extend it) instead of a fresh one.

        Returns
        -------
        SpikePretrainer
            ``self``.
        """
        from ..tasks.spikes import SpikePretrainTask  # tasks import this package

        if not isinstance(vocabulary, UnitVocabulary):
            raise TypeError(f"vocabulary must be a UnitVocabulary, not "
                            f"{type(vocabulary).__name__}")
        continuing = warm_start or train_units is not None
        n_cov = 0 if covariates is None else int(np.shape(covariates)[-1])
        frame_shape = None if frames is None else tuple(int(s) for s in np.shape(frames)[1:])
        if continuing:
            self._check_fitted()
            cfg = self._warm_config()
            old = self.vocabulary_.keys
            if vocabulary.keys[: len(old)] != old:
                raise ValueError("warm start: the vocabulary must extend the fitted one (same "
                                 "keys in the same order first); add units with add_units()")
            model = self.model_
            # covariates may be left out (a context of spikes alone), not changed
            if (n_cov not in (0, model.n_covariates)
                    or frame_shape not in (None, model.frame_shape)):
                raise ValueError(f"warm start: the model was built for {model.n_covariates} "
                                 f"covariates and frames {model.frame_shape}, got {n_cov} and "
                                 f"{frame_shape}")
        else:
            cfg = self._config()
        self._check_inputs(tokens, len(vocabulary), covariates, frames, cfg=cfg)
        val_loader = None
        if val is not None:
            val_tokens, val_cov, val_frames = (tuple(val) + (None,))[:3]
            self._check_inputs(val_tokens, len(vocabulary), val_cov, val_frames, "val tokens",
                               cfg=cfg)
            if (val_cov is None) != (covariates is None) or (val_frames is None) != (
                    frames is None):
                raise ValueError("val must have covariates/frames exactly when the training "
                                 "windows have them")
            val_loader = TokenBatches(val_tokens, val_cov, val_frames,
                                      batch_size=cfg.batch_size)
        if continuing:
            model.grow_vocabulary(len(vocabulary))
            model.config = self.config_ = cfg
        else:
            tok = cfg.tokenizer()
            torch.manual_seed(cfg.seed)
            model = SpikeTransformer(len(vocabulary), tok.n_dt, tok.n_past_dt, cfg, n_cov,
                                     frame_shape)
            self.config_, self.tokenizer_ = cfg, tok
        self.vocabulary_ = UnitVocabulary.from_state(vocabulary.state_dict())
        self.model_ = model
        train_loader = TokenBatches(tokens, covariates, frames, batch_size=cfg.batch_size,
                                    shuffle=True, seed=cfg.seed)
        accelerator = _lightning_accelerator(self.accelerator)
        task = SpikePretrainTask.for_model(model)
        if cfg.compile and accelerator == "gpu":
            task.compile_forward()
        if train_units is not None:
            model.train_only_units(train_units)
        model.train()
        start = time.perf_counter()
        try:
            record = fit_lightning(task, train_loader, val_loader, max_epochs=cfg.max_epochs,
                                   patience=cfg.patience,
                                   precision=cfg.resolved_precision(accelerator),
                                   accelerator=accelerator, verbose=self.verbose)
        finally:
            if train_units is not None:
                model.train_only_units(None)
            model.to("cpu").eval()
        self.fit_seconds_ = time.perf_counter() - start
        self.history_ = record.history
        self.best_epoch_ = record.best_epoch
        epochs = max(len(record.history), 1)
        self.tokens_per_s_ = float(tokens.n_tokens().sum() * epochs
                                   / max(task.train_seconds, 1e-9))
        return self

    def add_units(self, keys: Any) -> np.ndarray:
        """Add units (e.g. of a new session) to the vocabulary and the model.

        Parameters
        ----------
        keys : iterable of str
            Unit keys (:func:`~neurodecode.data.tokens.unit_keys`); known ones keep their ids.

        Returns
        -------
        ndarray of int64
            The id of every key.
        """
        self._check_fitted()
        ids = self.vocabulary_.add(keys)
        self.model_.grow_vocabulary(len(self.vocabulary_))
        return ids

    # ---- scoring ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        device = self.device_
        if device.type == "cuda" and "bf16" in self.config_.resolved_precision("gpu"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def nll(self, tokens: TokenWindows, covariates: np.ndarray | None = None, *,
            frames: np.ndarray | None = None, batch_size: int | None = None) -> np.ndarray:
        """Negative log-probability (nats) of every window's tokens, in eval mode.

        Truncated windows (``n_truncated > 0``) are scored without their EOS term.

        Returns
        -------
        ndarray of float64, shape (n_windows,)
        """
        self._check_fitted()
        self._check_inputs(tokens, self.model_.n_vocab, covariates, frames)
        model = self.model_.to(self.device_).eval()
        out = np.empty(len(tokens), dtype=np.float64)
        try:
            with self._autocast():
                for batch in self.batches(tokens, covariates, batch_size, frames=frames):
                    out[batch["index"].cpu().numpy()] = model.token_nll(batch).double().cpu(
                    ).numpy()
        finally:
            model.to("cpu")
        return out

    def nll_per_spike(self, tokens: TokenWindows, covariates: np.ndarray | None = None, *,
                      frames: np.ndarray | None = None) -> float:
        """Sum of window NLLs over their spikes (nats per spike), complete windows only.

        Only windows with ``n_truncated == 0`` count (the NLL convention of
        :mod:`neurodecode.data.tokens`).
        """
        self._check_fitted()
        keep = np.flatnonzero(tokens.n_truncated == 0)
        if not len(keep):
            raise ValueError("every window was truncated by max_tokens: none to score")
        sub = tokens.select(keep)
        spikes = int(sub.n_tokens().sum())
        if not spikes:
            raise ValueError("the complete windows hold no spike: nats per spike undefined")
        nll = self.nll(sub, None if covariates is None else np.asarray(covariates)[keep],
                       frames=None if frames is None else np.asarray(frames)[keep])
        return float(nll.sum() / spikes)

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model, its config and vocabulary and the fit record (atomically)."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        m = self.model_
        payload = {
            "format": FORMAT, "version": VERSION,
            "config": self.config_.model_dump(mode="json"),
            "vocabulary": self.vocabulary_.state_dict(),
            "shape": {"n_vocab": int(m.n_vocab), "n_dt": int(m.n_dt),
                      "n_past_dt": int(m.n_past_dt), "n_covariates": int(m.n_covariates),
                      "frame_shape": None if m.frame_shape is None else list(m.frame_shape)},
            "state": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            "extra": {"history": [dict(r) for r in getattr(self, "history_", [])],
                      "best_epoch": getattr(self, "best_epoch_", None),
                      "fit_seconds": float(getattr(self, "fit_seconds_", 0.0)),
                      "tokens_per_s": float(getattr(self, "tokens_per_s_", 0.0))}}
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **params: Any) -> SpikePretrainer:
        """Load a pretrainer written by :meth:`save` (``torch.load(weights_only=True)``).

        Parameters
        ----------
        path : path-like
        **params
            Constructor parameters (``accelerator="gpu"``); the config is the checkpoint's.

        Raises
        ------
        FileNotFoundError, ValueError
            Naming the file: missing, unreadable, or not a spike-model checkpoint.
        """
        path = Path(path)
        data = read_payload(path, FORMAT, VERSION, "spike model checkpoint")
        try:
            cfg = SpikeModelConfig.model_validate(data["config"])
            shape = data["shape"]
            vocab = UnitVocabulary.from_state(data["vocabulary"])
            frame_shape = shape["frame_shape"]
            model = SpikeTransformer(int(shape["n_vocab"]), int(shape["n_dt"]),
                                     int(shape["n_past_dt"]), cfg, int(shape["n_covariates"]),
                                     None if frame_shape is None else tuple(frame_shape))
            model.load_state_dict(data["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: a damaged spike model checkpoint ({err})") from None
        if len(vocab) != model.n_vocab:
            raise ValueError(f"{path}: vocabulary of {len(vocab)} ids for {model.n_vocab} "
                             "model rows")
        params.pop("config", None)
        pre = cls(cfg, **params)
        pre.config_, pre.tokenizer_ = cfg, cfg.tokenizer()
        pre.model_, pre.vocabulary_ = model.eval(), vocab
        extra = data.get("extra", {})
        pre.history_ = list(extra.get("history", []))
        pre.best_epoch_ = extra.get("best_epoch")
        pre.fit_seconds_ = float(extra.get("fit_seconds", 0.0))
        pre.tokens_per_s_ = float(extra.get("tokens_per_s", 0.0))
        return pre
