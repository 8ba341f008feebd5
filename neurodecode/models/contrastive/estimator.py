"""A scikit-learn estimator for CEBRA-style contrastive embeddings."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .._lightning import quiet_lightning
from ..encoders import OffsetEncoder
from .batches import PairBatches
from .losses import InfoNCE, goodness_of_fit_bits
from .objective import ContrastiveObjective
from .sampling import CONDITIONALS, PairSampler, valid_positions

__all__ = ["ContrastiveEmbedding"]

_FORMAT = "neurodecode.ContrastiveEmbedding/1"


class ContrastiveEmbedding(TransformerMixin, BaseEstimator):
    """Consistent low-dimensional embeddings learned contrastively (CEBRA-style).

    Windows of neural activity are embedded so that a reference and its *positive* (a sample
    close in time, or with a similar behaviour label) are more similar than uniformly drawn
    negatives (InfoNCE). The labels are declared by ``conditional``, never guessed from their
    dtype: ``"time"`` uses none (``y`` is ignored), ``"time_delta"`` and ``"delta"`` treat ``y``
    as continuous behaviour, ``"discrete"`` as one class per sample.

    Parameters
    ----------
    conditional : {"time_delta", "time", "delta", "discrete"}
        Positive-pair distribution (see :mod:`neurodecode.models.contrastive.sampling`).
    output_dim : int
        Embedding dimension.
    hidden_dim : int
        Width of the encoder.
    receptive_field : int
        Samples seen per embedding (10 = CEBRA ``offset10-model``; 1 = per-sample MLP).
    causal : bool
        Use only past samples (online use); else the window is centred.
    similarity : {"cosine", "euclidean"}
        Similarity of the InfoNCE loss; cosine normalises the embedding to the unit sphere.
    temperature : float
        InfoNCE temperature (initial value when learnable).
    learnable_temperature : bool
        Learn the temperature with the encoder.
    min_temperature : float
        Lower bound of a learnable temperature.
    time_offset : int
        Samples between a reference and its ``time`` positive, and the horizon of the empirical
        label increments for ``time_delta``.
    delta : float
        Gaussian jitter (label units) for ``conditional="delta"``.
    hybrid : bool
        Add a ``time`` objective on all dimensions to the behaviour objective, which then uses
        the first ``hybrid_dims`` dimensions.
    hybrid_dims : int or None
        Dimensions of the behaviour part of a hybrid embedding (default ``output_dim // 2``).
    batch_size : int
        References (and negatives) per session and step.
    max_iter : int
        Optimiser steps.
    learning_rate, weight_decay : float
        Adam settings.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (a GPU when there is one).
    trainer : {"auto", "lightning", "loop"}
        ``"lightning"`` trains with a :class:`lightning.Trainer`; ``"loop"`` runs the same
        module's steps in a plain loop (identical updates, without the Trainer's per-step hooks,
        which matter for the ~10 ms steps of a small model on CPU); ``"auto"`` uses the loop on
        CPU and Lightning on GPUs.
    random_state : int
        Seed of initialisation and sampling.
    verbose : bool
        Report training progress on stderr. The plain loop prints a line about every
        ``max_iter / 10`` steps and at the last one (step, ``loss``, ``alignment``,
        ``uniformity``, the hybrid parts, a learnable temperature, and steps per second over
        the interval), Lightning shows its progress bar with the loss; both end with a line of
        the total time and speed. ``False`` prints nothing, Lightning's own messages included.
        Quiet training does no per-step formatting; verbose training adds none of its own
        device synchronisation (the loss terms are read once per step for ``log_`` anyway).

    Attributes
    ----------
    encoder_ : OffsetEncoder
        The trained encoder (on CPU after ``fit``).
    criterion_ : InfoNCE
    n_features_in_ : int
        Channels of the first session (what :meth:`transform` checks for ``session=0``).
    n_iter_ : int
        Optimiser steps of :meth:`fit`.
    n_sessions_ : int
        Sessions the model holds (training sessions plus adapted ones).
    log_ : dict of str to list of float
        Per step: ``loss``, ``alignment``, ``uniformity``, ``temperature`` (and the hybrid
        parts).
    fit_time_ : float
        Seconds spent in the training loop.

    Notes
    -----
    Inputs are a ``(n_samples, n_channels)`` array, an xarray recording (see
    :mod:`neurodecode.schema`), the path of a store, or a list of those for several sessions
    (one input layer each, one shared embedding; label-matched positives are searched across
    sessions; a list of rows of numbers is one session, as scikit-learn reads nested lists).
    Arrays are checked as scikit-learn does (``check_array``: 2-D, finite, numeric, dense;
    ``n_features_in_`` against session 0), so its estimator checks pass (see
    ``tests/test_sklearn_compliance.py``). ``positions`` marks contiguity: a window never spans
    two samples whose positions are not consecutive integers (blocks cut out by a
    cross-validation split, separate runs).
    """

    def __init__(
        self,
        conditional: Literal["time_delta", "time", "delta", "discrete"] = "time_delta",
        output_dim: int = 8,
        hidden_dim: int = 32,
        receptive_field: int = 10,
        causal: bool = False,
        similarity: Literal["cosine", "euclidean"] = "cosine",
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        min_temperature: float = 0.01,
        time_offset: int = 10,
        delta: float = 0.1,
        hybrid: bool = False,
        hybrid_dims: int | None = None,
        batch_size: int = 512,
        max_iter: int = 2000,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.0,
        device: str = "cpu",
        trainer: Literal["auto", "lightning", "loop"] = "auto",
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        self.conditional = conditional
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.receptive_field = receptive_field
        self.causal = causal
        self.similarity = similarity
        self.temperature = temperature
        self.learnable_temperature = learnable_temperature
        self.min_temperature = min_temperature
        self.time_offset = time_offset
        self.delta = delta
        self.hybrid = hybrid
        self.hybrid_dims = hybrid_dims
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.device = device
        self.trainer = trainer
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ inputs
    def _uses_labels(self) -> bool:
        return self.conditional != "time" or self.hybrid

    def _check_params(self) -> None:
        if self.conditional not in CONDITIONALS:
            raise ValueError(f"conditional must be one of {CONDITIONALS}, got {self.conditional!r}")
        if self.hybrid and self.conditional in ("time", "discrete"):
            raise ValueError("hybrid=True combines a continuous behaviour objective with time")
        for name in ("output_dim", "hidden_dim", "receptive_field", "batch_size", "time_offset"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.trainer not in ("auto", "lightning", "loop"):
            raise ValueError(f"trainer must be 'auto', 'lightning' or 'loop', got {self.trainer!r}")
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, got {self.max_iter}")

    def _sessions(
        self, X: Any, y: Any, positions: Any, *, need_y: bool, reset: bool | None = None,
        min_samples: int = 1,
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray]]:
        """Signals (float32, C order), labels and segment ids of every session.

        Every signal is checked by :func:`sklearn.utils.check_array` (2-D, finite, numeric,
        dense, at least ``min_samples`` samples); the first session's also by
        :func:`sklearn.utils.validation.validate_data`, which records (``reset=True``) or
        checks (``reset=False``) ``n_features_in_``. ``reset=None`` checks no feature count.
        """
        if _is_window_dataset(X):
            return self._dataset_sessions(X, y, positions, need_y=need_y, reset=reset,
                                          min_samples=min_samples)
        multi = _is_session_list(X)
        xs = list(X) if multi else [X]
        if y is None or not need_y:
            ys = [None] * len(xs)
        elif multi:
            if not isinstance(y, list | tuple) or len(y) != len(xs):
                raise ValueError("with a list of sessions, y must be a list of the same length")
            ys = list(y)
        else:
            ys = [y]
        if positions is None:
            ps = [None] * len(xs)
        elif multi:
            ps = list(positions)
        else:
            ps = [positions]
        signals, labels, segs = [], [], []
        for k, (x, lab, pos) in enumerate(zip(xs, ys, ps, strict=True)):
            sig, lab = _signal_and_labels(x, lab)
            checks = dict(dtype=np.float32, order="C", ensure_min_samples=min_samples)
            try:
                if k == 0 and reset is not None:
                    sig = validate_data(self, sig, reset=reset, **checks)
                else:
                    sig = check_array(sig, estimator=self, **checks)
            except ValueError as err:
                raise ValueError(f"session {k}: {err}" if multi else str(err)) from None
            signals.append(sig)
            if lab is not None:
                lab = np.asarray(lab)
                if len(lab) != len(sig):
                    raise ValueError(f"session {k}: {len(lab)} labels for {len(sig)} samples")
            labels.append(lab)
            segs.append(_segments(pos, len(sig), k))
        if need_y and any(lab is None for lab in labels):
            raise ValueError(
                f"{type(self).__name__} with conditional={self.conditional!r}"
                f"{' and hybrid' if self.hybrid else ''} requires y to be passed, but the target "
                "y is None: it needs labels y (continuous behaviour or classes)"
            )
        return signals, (labels if need_y else None), segs

    def _dataset_sessions(
        self, dataset: Any, y: Any, positions: Any, *, need_y: bool, reset: bool | None,
        min_samples: int,
    ) -> tuple[list[Any], list[np.ndarray] | None, list[np.ndarray]]:
        """Sessions of a :class:`~neurodecode.data.loader.WindowDataset`, read lazily.

        One session per recording: the samples its windows cover, as a
        :class:`~neurodecode.data.loader.LazySignal` (only the rows of each batch are read), the
        behaviour named by ``y`` at those samples, and segments cut wherever the windows leave
        samples out (see :meth:`WindowDataset.training_sessions
        <neurodecode.data.loader.WindowDataset.training_sessions>`).
        """
        where = f"{type(self).__name__} with a WindowDataset"
        if positions is not None:
            raise ValueError(f"{where}: positions come from the dataset's windows; do not pass "
                             "them")
        if need_y and not isinstance(y, str):
            raise ValueError(
                f"{where} and conditional={self.conditional!r}"
                f"{' and hybrid' if self.hybrid else ''} needs y, the name of a behaviour "
                f"covariate of its recordings (e.g. y='position'), got {type(y).__name__}"
            )
        sessions = dataset.training_sessions(y if need_y else None)
        if not sessions:
            raise ValueError(f"{where}: the dataset has no window")
        signals = [s.signal for s in sessions]
        for k, sig in enumerate(signals):
            if len(sig) < min_samples:
                raise ValueError(f"session {k} ({dataset.recordings[sig.recording]}): "
                                 f"{len(sig)} sample(s), at least {min_samples} needed")
        if reset:
            self.n_features_in_ = signals[0].shape[1]
        elif reset is False and signals[0].shape[1] != self.n_features_in_:
            raise ValueError(f"X has {signals[0].shape[1]} features, but {type(self).__name__} "
                             f"is expecting {self.n_features_in_} features as input")
        segs = [_segments(s.positions, len(s.signal), k) for k, s in enumerate(sessions)]
        labels = [s.labels for s in sessions] if need_y else None
        return signals, labels, segs

    def _class_codes(self, labels: Any) -> np.ndarray:
        """Class indices of labels for a fitted discrete model; unseen classes are an error."""
        labels = np.asarray(labels).ravel()
        codes = np.searchsorted(self.classes_, labels).clip(0, len(self.classes_) - 1)
        unseen = self.classes_[codes] != labels
        if np.any(unseen):
            raise ValueError(
                f"classes {sorted(set(labels[unseen].tolist()))} were not seen in fit "
                f"(known: {self.classes_.tolist()})"
            )
        return codes

    def _label_arrays(self, labels: list[np.ndarray]) -> list[np.ndarray]:
        if self.conditional == "discrete":
            classes = np.unique(np.concatenate([np.asarray(lab).ravel() for lab in labels]))
            self.classes_ = classes
            return [np.searchsorted(classes, np.asarray(lab).ravel()) for lab in labels]
        out = []
        for k, lab in enumerate(labels):
            lab = np.asarray(lab)
            if lab.dtype == object:  # numbers held as objects (a pandas object column)
                with contextlib.suppress(TypeError, ValueError):
                    lab = lab.astype(np.float64)
            if not np.issubdtype(lab.dtype, np.number):
                raise ValueError(
                    f"session {k}: conditional={self.conditional!r} needs numeric continuous "
                    f"labels, got dtype {lab.dtype}; use conditional='discrete' for classes"
                )
            lab = lab.astype(np.float64).reshape(len(lab), -1)
            if not np.all(np.isfinite(lab)):
                raise ValueError(f"session {k}: labels contain NaN or Inf")
            out.append(lab)
        return out

    def _new_session_labels(self, labels: list[np.ndarray] | None) -> list[np.ndarray] | None:
        """Encode a new session's labels like the training labels (fitted model)."""
        if labels is None:
            return None
        if self.conditional == "discrete":
            return [self._class_codes(labels[0])]
        return self._label_arrays(labels)

    def _sampler(self, segs, labels, anchors: np.ndarray | None = None) -> PairSampler:
        return PairSampler(
            segs,
            labels,
            conditional=self.conditional,
            left=self.encoder_.left,
            right=self.encoder_.right,
            time_offset=self.time_offset,
            delta=self.delta,
            hybrid=self.hybrid,
            anchors=anchors,
        )

    def _hybrid_dims(self) -> int | None:
        return int(self.hybrid_dims or max(1, self.output_dim // 2)) if self.hybrid else None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._uses_labels()
        # The encoder computes in float32: float32 input stays float32, float64 input too
        # returns float32 (the precision the embedding has).
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        positions: Any = None,
        callback: Callable[[int, Any], None] | None = None,
        callback_frequency: int | None = None,
    ) -> ContrastiveEmbedding:
        """Train the encoder.

        Parameters
        ----------
        X : array (n_samples, n_channels), recording, store path, list of them, or WindowDataset
            Neural data; a list trains one input layer per session. A
            :class:`~neurodecode.data.loader.WindowDataset` trains from its stores without
            loading them: one session per recording, made of the samples its windows cover
            (normalised by its ``normalizer``), each batch reading only its own rows; ``y`` then
            names a behaviour covariate and ``positions`` come from the windows. The result is
            the same as fitting the arrays of those samples (same seed, same weights).
        y : array, str or list, optional
            Labels per sample (a list per session): continuous ``(n_samples, n_dims)`` or
            classes, or the name of a behaviour covariate of a recording (``"position"``).
            Ignored for ``conditional="time"`` without ``hybrid``.
        positions : array of int, or list of arrays, optional
            Position of each sample on its recording's sample grid; windows never span a jump.
        callback : callable, optional
            Called as ``callback(step, self)`` every ``callback_frequency`` steps.
        callback_frequency : int, optional
            Steps between callbacks (default: every step).

        Returns
        -------
        self
        """
        self._check_params()
        signals, labels, segs = self._sessions(X, y, positions, need_y=self._uses_labels(),
                                               reset=True, min_samples=2)
        labels = None if labels is None else self._label_arrays(labels)
        torch.manual_seed(self.random_state)
        encoder = OffsetEncoder(
            [s.shape[1] for s in signals],
            self.output_dim,
            self.hidden_dim,
            self.receptive_field,
            causal=self.causal,
            normalize=self.similarity == "cosine",
        )
        criterion = InfoNCE(
            self.similarity, self.temperature, self.learnable_temperature, self.min_temperature
        )
        self.encoder_, self.criterion_ = encoder, criterion
        self.n_sessions_ = len(signals)
        self.log_ = {}
        self._train(
            signals,
            labels,
            segs,
            train_sessions=None,
            max_iter=self.max_iter,
            callback=callback,
            callback_frequency=callback_frequency,
        )
        self.n_iter_ = int(self.max_iter)
        self.anchors_ = None if labels is None else self._anchors(signals, labels, segs)
        return self

    def _anchors(self, signals, labels, segs, per_session: int = 4096) -> dict[str, np.ndarray]:
        """Labels and embeddings of a uniform subsample of the training sessions' samples."""
        enc = self.encoder_
        rng = np.random.default_rng(self.random_state)
        offsets = torch.arange(-enc.left, enc.right)
        out_labels, out_emb = [], []
        with torch.inference_mode():
            for s, (x, lab, seg) in enumerate(zip(signals, labels, segs, strict=True)):
                valid = valid_positions(seg, enc.left, enc.right)
                pick = np.sort(rng.choice(valid, min(len(valid), per_session), replace=False))
                rows = (torch.from_numpy(pick)[:, None] + offsets).reshape(-1)
                win = _tensor(x).index_select(0, rows).view(len(pick), len(offsets), -1)
                out_emb.append(enc(win, session=s).numpy())
                out_labels.append(np.asarray(lab)[pick])
        return {"labels": np.concatenate(out_labels), "embedding": np.concatenate(out_emb)}

    def adapt(
        self,
        X: Any,
        y: Any = None,
        *,
        positions: Any = None,
        max_iter: int | None = None,
        align: bool = True,
    ) -> int:
        """Add a session (e.g. a new subject) by training only a new input layer.

        The shared layers stay frozen, so a few minutes of data are enough. With ``align`` (and
        a label conditional), the positives of the new session's references are *anchors*: a
        subsample of the training sessions' samples stored with the model (``anchors_``),
        matched by label and kept at their trained embedding. The new session then lands where
        the training sessions embed the same behaviour, so decoders fitted on them transfer.
        Without it (or for ``conditional="time"``), the new layer is trained on the new
        session's own pairs only.

        Parameters
        ----------
        X, y, positions
            One session, as in :meth:`fit`.
        max_iter : int, optional
            Steps (default: ``self.max_iter``).
        align : bool
            Draw positives from the stored anchors (see above).

        Returns
        -------
        int
            The new session's index, for ``transform(X, session=...)``.
        """
        check_is_fitted(self, "encoder_")
        signals, labels, segs = self._sessions(X, y, positions, need_y=self._uses_labels(),
                                               min_samples=2)
        if len(signals) != 1:
            raise ValueError("adapt one session at a time")
        labels = self._new_session_labels(labels)
        anchors = getattr(self, "anchors_", None) if align and labels is not None else None
        session = self.encoder_.add_session(signals[0].shape[1])
        self.n_sessions_ = self.encoder_.n_sessions
        self._train(
            signals,
            labels,
            segs,
            train_sessions=[session],
            max_iter=self.max_iter if max_iter is None else max_iter,
            session_base=session,
            anchors=anchors,
        )
        return session

    def _train(
        self,
        signals,
        labels,
        segs,
        *,
        train_sessions,
        max_iter,
        callback=None,
        callback_frequency=None,
        session_base: int = 0,
        anchors: dict[str, np.ndarray] | None = None,
    ) -> None:
        enc = self.encoder_
        sampler = self._sampler(segs, labels, None if anchors is None else anchors["labels"])
        device = _device(self.device)
        tensors = [_tensor(s).to(device) for s in signals]
        stream = PairBatches(
            tensors,
            sampler,
            self.batch_size,
            enc.left,
            enc.right,
            seed=self.random_state + session_base,
        )
        log = self.log_
        every = max(1, int(callback_frequency or 1))
        use_loop = self.trainer == "loop" or (self.trainer == "auto" and device.type == "cpu")
        what = "fit" if train_sessions is None else f"adapt session {session_base}"
        lines = _TrainingLines(what, max_iter, self.learnable_temperature)
        report = lines if self.verbose and use_loop else None

        def on_step(step: int, stats: dict[str, float]) -> None:
            for key, value in stats.items():
                log.setdefault(key, []).append(value)
            if report is not None:
                report(step, stats)
            if callback is not None and (step + 1) % every == 0:
                callback(step + 1, self)

        module = ContrastiveObjective(
            enc,
            self.criterion_,
            sessions=[session_base + s for s in range(len(signals))],
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            hybrid_dims=self._hybrid_dims(),
            train_sessions=train_sessions,
            on_step=on_step,
            anchor_embedding=None if anchors is None else torch.from_numpy(anchors["embedding"]),
        )
        start = time.perf_counter()
        if max_iter > 0:
            if use_loop:
                _fit_loop(module, stream, max_iter)
            else:
                import lightning as L
                from torch.utils.data import DataLoader

                from .module import ContrastiveModule

                with quiet_lightning(quiet=not self.verbose):
                    trainer = L.Trainer(
                        max_steps=max_iter,
                        accelerator="cpu" if device.type == "cpu" else "gpu",
                        devices=1 if device.type == "cpu" else [device.index or 0],
                        logger=False,
                        enable_checkpointing=False,
                        enable_model_summary=False,
                        enable_progress_bar=self.verbose,
                        num_sanity_val_steps=0,
                    )
                    trainer.fit(ContrastiveModule.wrap(module, progress_bar=self.verbose),
                                DataLoader(stream, batch_size=None))
        self.fit_time_ = time.perf_counter() - start
        if self.verbose and max_iter > 0:
            lines.finish(self.fit_time_, log["loss"][-1])
        enc.to("cpu")
        self.criterion_.to("cpu")
        for p in [*enc.parameters(), *self.criterion_.parameters()]:
            p.requires_grad_(False)

    # ------------------------------------------------------------------ transform
    def transform(
        self, X: Any, session: int = 0, *, positions: Any = None, batch_size: int | None = 65536
    ) -> np.ndarray:
        """Embed every sample.

        Windows at the edges of the recording (and of each contiguous segment given by
        ``positions``) are completed by repeating the edge sample, so the output has one row per
        input row.

        Parameters
        ----------
        X : array (n_samples, n_channels), recording or store path
            One session.
        session : int
            Which input layer to use (0 for single-session models; see :meth:`adapt`).
        positions : array of int, optional
            Sample positions (see :meth:`fit`).
        batch_size : int or None
            Samples embedded per forward pass (bounded memory for long recordings); None embeds
            each segment at once.

        Returns
        -------
        ndarray, shape (n_samples, output_dim), float32
        """
        check_is_fitted(self, "encoder_")
        if _is_session_list(X):
            raise TypeError("transform takes one session; call it once per session")
        if _is_window_dataset(X):
            raise TypeError("transform embeds an array, a recording or a store; embed the "
                            "recordings of a WindowDataset one at a time")
        self._check_session(session)
        signals, _, segs = self._sessions(X, None, positions, need_y=False,
                                          reset=False if session == 0 else None)
        x, seg = signals[0], segs[0]
        self._check_channels(x, session)
        out = np.empty((len(x), self.output_dim), dtype=np.float32)
        bounds = np.flatnonzero(np.diff(seg)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(x)], strict=True):
            out[a:b] = self._embed_segment(x[a:b], session, batch_size)
        return out

    def _check_session(self, session: int) -> None:
        if not 0 <= session < self.encoder_.n_sessions:
            raise ValueError(f"session {session} does not exist ({self.encoder_.n_sessions} known)")

    def _check_channels(self, x: np.ndarray, session: int) -> None:
        """Refuse a signal whose channels are not those of the session's input layer."""
        if x.shape[1] != self.encoder_.n_inputs[session]:
            raise ValueError(
                f"X has {x.shape[1]} features (channels), but session {session} of "
                f"{type(self).__name__} is expecting {self.encoder_.n_inputs[session]} features "
                "as input"
            )

    def _embed_segment(self, x: np.ndarray, session: int, batch_size: int | None) -> np.ndarray:
        enc = self.encoder_
        left, right = enc.left, enc.right
        step = len(x) if not batch_size else int(batch_size)
        out = np.empty((len(x), self.output_dim), dtype=np.float32)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            for a in range(0, len(x), step):
                b = min(len(x), a + step)
                lo, hi = a - left, b + right - 1  # window rows needed, before edge padding
                idx = torch.arange(lo, hi).clamp_(0, len(x) - 1)
                chunk = xt.index_select(0, idx)
                out[a:b] = enc.forward_sequence(chunk, session=session).numpy()
        return out

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then embed ``X`` (single session) or return a list of embeddings (sessions)."""
        self.fit(X, y, **fit_params)
        positions = fit_params.get("positions")
        if _is_session_list(X):
            ps = positions if positions is not None else [None] * len(X)
            return [
                self.transform(x, s, positions=p)
                for s, (x, p) in enumerate(zip(X, ps, strict=True))
            ]
        return self.transform(X, positions=positions)

    # ------------------------------------------------------------------ score
    def score(
        self, X: Any, y: Any = None, *, session: int = 0, positions: Any = None, n_batches: int = 20
    ) -> float:
        """Goodness of fit in bits on (held-out) data: ``(log N - InfoNCE) / log 2``.

        Pairs are drawn from ``X`` (and ``y``) with the training distribution; 0 bits means the
        embedding does no better than chance at telling positives from negatives.

        Parameters
        ----------
        X, y, positions
            One session, as in :meth:`fit`.
        session : int
            Input layer to use.
        n_batches : int
            Batches averaged (with a fixed seed).
        """
        check_is_fitted(self, "encoder_")
        self._check_session(session)
        signals, labels, segs = self._sessions(X, y, positions, need_y=self._uses_labels(),
                                               reset=False if session == 0 else None)
        self._check_channels(signals[0], session)
        labels = self._new_session_labels(labels)
        enc = self.encoder_
        sampler = self._sampler(segs, labels)
        stream = PairBatches(
            [_tensor(signals[0])],
            sampler,
            self.batch_size,
            enc.left,
            enc.right,
            seed=12345,
        )
        module = ContrastiveObjective(
            enc,
            self.criterion_,
            sessions=[session],
            hybrid_dims=self._hybrid_dims(),
        )
        with torch.inference_mode():
            losses = [float(module.loss(stream.next_batch())["loss"]) for _ in range(n_batches)]
        n_terms = 2 if self.hybrid else 1
        return goodness_of_fit_bits(np.mean(losses) / n_terms, self.batch_size)

    @property
    def goodness_of_fit_(self) -> float:
        """Goodness of fit (bits) of the last 10 training steps."""
        check_is_fitted(self, "log_")
        if not self.log_.get("loss"):
            raise ValueError("the model was fitted with max_iter=0: no training loss to report")
        n_terms = 2 if self.hybrid else 1
        last = np.mean(self.log_["loss"][-10:]) / n_terms
        return goodness_of_fit_bits(last, self.batch_size, self.n_sessions_)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save parameters, weights and training log (a ``torch.save`` file, tensors on CPU).

        The file holds only tensors and plain Python values, so :meth:`load` reads it with
        ``torch.load(weights_only=True)`` (no code is unpickled).
        """
        check_is_fitted(self, "encoder_")
        path = Path(path)
        state = {
            "format": _FORMAT,
            "params": self.get_params(),
            "n_inputs": self.encoder_.n_inputs,
            "n_training_sessions": int(getattr(self, "n_training_sessions_", self.n_sessions_)),
            "encoder": {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()},
            "criterion": {k: v.detach().cpu() for k, v in self.criterion_.state_dict().items()},
            "log": {k: list(map(float, v)) for k, v in self.log_.items()},
            "classes": None if not hasattr(self, "classes_") else self.classes_.tolist(),
            "fit_time": float(getattr(self, "fit_time_", math.nan)),
            "anchors": None
            if getattr(self, "anchors_", None) is None
            else {k: torch.from_numpy(np.asarray(v)) for k, v in self.anchors_.items()},
        }
        tmp = path.with_name(path.name + ".partial")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ContrastiveEmbedding:
        """Load a model saved by :meth:`save` onto the CPU (``weights_only=True``)."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved ContrastiveEmbedding")
        est = cls(**state["params"])
        est.encoder_ = OffsetEncoder(
            state["n_inputs"],
            est.output_dim,
            est.hidden_dim,
            est.receptive_field,
            causal=est.causal,
            normalize=est.similarity == "cosine",
        )
        est.encoder_.load_state_dict(state["encoder"])
        est.criterion_ = InfoNCE(
            est.similarity, est.temperature, est.learnable_temperature, est.min_temperature
        )
        est.criterion_.load_state_dict(state["criterion"])
        for p in [*est.encoder_.parameters(), *est.criterion_.parameters()]:
            p.requires_grad_(False)
        est.n_features_in_ = state["n_inputs"][0]
        est.n_iter_ = int(est.max_iter)
        est.n_sessions_ = len(state["n_inputs"])
        est.log_ = state["log"]
        est.fit_time_ = state["fit_time"]
        anchors = state.get("anchors")
        est.anchors_ = None if anchors is None else {k: v.numpy() for k, v in anchors.items()}
        if state["classes"] is not None:
            est.classes_ = np.asarray(state["classes"])
        return est

    # ------------------------------------------------------------------ cebra compatibility
    @classmethod
    def from_cebra_params(cls, **params: Any) -> ContrastiveEmbedding:
        """Build an estimator from ``cebra.CEBRA`` keyword arguments (for migration).

        Supports ``model_architecture`` (``offset{1,5,10}-model``, ``offset{..}-model-mse``),
        ``batch_size``, ``learning_rate``, ``temperature``, ``temperature_mode``,
        ``min_temperature``, ``output_dimension``, ``num_hidden_units``, ``max_iterations``,
        ``distance``, ``conditional``, ``time_offsets``, ``delta``, ``hybrid``, ``device`` and
        ``verbose``; any other argument raises ``TypeError``.
        """
        mapping = {
            "batch_size": "batch_size",
            "learning_rate": "learning_rate",
            "temperature": "temperature",
            "min_temperature": "min_temperature",
            "output_dimension": "output_dim",
            "num_hidden_units": "hidden_dim",
            "max_iterations": "max_iter",
            "distance": "similarity",
            "time_offsets": "time_offset",
            "delta": "delta",
            "hybrid": "hybrid",
            "device": "device",
            "verbose": "verbose",
        }
        kwargs: dict[str, Any] = {}
        for key, value in params.items():
            if key == "model_architecture":
                name = str(value)
                mse = name.endswith("-mse")
                core = name.removesuffix("-mse")
                if not (core.startswith("offset") and core.endswith("-model")):
                    raise TypeError(f"unsupported model_architecture {value!r}")
                kwargs["receptive_field"] = int(core[len("offset") : -len("-model")])
                if mse:
                    kwargs["similarity"] = "euclidean"
            elif key == "temperature_mode":
                kwargs["learnable_temperature"] = value == "auto"
            elif key == "conditional":
                kwargs["conditional"] = {"delta_normal": "delta"}.get(value, value)
            elif key == "time_offsets":
                kwargs["time_offset"] = int(np.max(value))
            elif key in mapping:
                kwargs[mapping[key]] = value
            else:
                raise TypeError(f"unsupported cebra parameter {key!r}")
        if kwargs.get("device") == "cuda_if_available":
            kwargs["device"] = "auto"
        return cls(**kwargs)


def _fit_loop(objective: ContrastiveObjective, stream: PairBatches, max_iter: int) -> None:
    """The plain training loop: the same objective and optimiser as the Lightning path."""
    optimizer = objective.make_optimizer(functional=True)
    objective.train()
    for step in range(max_iter):
        batch = stream.next_batch()
        optimizer.zero_grad(set_to_none=True)
        terms = objective.loss(batch)
        terms["loss"].backward()
        optimizer.step()
        objective.report(step, terms)


class _TrainingLines:
    """Progress lines of a training run on stderr (step lines: the plain loop, when verbose).

    Parameters
    ----------
    what : str
        Run name at the start of each line (``"fit"``, ``"adapt session 2"``).
    max_iter : int
        Steps of the run.
    temperature : bool
        Also print the (learnable) temperature.
    """

    def __init__(self, what: str, max_iter: int, temperature: bool) -> None:
        self.what, self.max_iter, self.temperature = what, max_iter, temperature
        self.every = max(1, max_iter // 10)
        self.width = len(str(max_iter))
        self.last_step, self.last_time = 0, time.perf_counter()

    def __call__(self, step: int, stats: dict[str, float]) -> None:
        done = step + 1
        if done % self.every and done != self.max_iter:
            return
        now = time.perf_counter()
        rate = (done - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = done, now
        terms = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()
                          if k != "temperature" or self.temperature)
        print(f"{self.what}: step {done:>{self.width}}/{self.max_iter}  {terms}  "
              f"{rate:.1f} it/s", file=sys.stderr, flush=True)

    def finish(self, seconds: float, loss: float) -> None:
        """Print the closing line: total steps, time, mean speed and the last loss."""
        print(f"{self.what}: {self.max_iter} steps in {seconds:.2f} s "
              f"({self.max_iter / max(seconds, 1e-9):.1f} it/s), loss {loss:.4f}",
              file=sys.stderr, flush=True)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but CUDA is not available")
    return device


def _is_session_list(X: Any) -> bool:
    """Whether ``X`` is a list (or tuple) of sessions.

    A list whose items are all numbers or rows (lists, tuples or 1-D arrays) is one session
    written as nested lists, as scikit-learn allows for any array-like.
    """
    if not isinstance(X, list | tuple):
        return False
    rows = all(
        isinstance(r, int | float | np.number)
        or (isinstance(r, list | tuple | np.ndarray) and np.ndim(r) <= 1)
        for r in X
    )
    return not (X and rows)


def _is_window_dataset(X: Any) -> bool:
    """Whether ``X`` is a :class:`~neurodecode.data.loader.WindowDataset` (lazy sessions)."""
    return callable(getattr(X, "training_sessions", None))


def _tensor(signal: Any) -> Any:
    """A session's signal as a tensor: arrays are wrapped (no copy), lazy views kept as they are
    (they read the rows that ``index_select`` asks for)."""
    return torch.from_numpy(signal) if isinstance(signal, np.ndarray) else signal


def _segments(positions: Any, n: int, k: int) -> np.ndarray:
    """Segment id per sample from sample positions (a new segment at every jump)."""
    if positions is None:
        return np.zeros(n, dtype=np.int64)
    pos = np.asarray(positions)
    if pos.shape != (n,):
        raise ValueError(f"session {k}: positions must have shape ({n},), got {pos.shape}")
    jumps = np.diff(pos) != 1
    return np.concatenate([[0], np.cumsum(jumps)]).astype(np.int64)


def _signal_and_labels(x: Any, y: Any) -> tuple[np.ndarray, Any]:
    """Signal array and labels from an array, a recording or a store path."""
    if isinstance(x, str | os.PathLike):
        from ...store import open_recording

        x = open_recording(x)
    # xarray (and pandas) are imported only for recordings: plain arrays stay light.
    if type(x).__module__.startswith("xarray"):
        sig = np.asarray(x["signal"].data)
        if isinstance(y, str):
            name = y if y in x else f"behavior_{y}"
            if name not in x:
                known = [v for v in x.data_vars if str(v).startswith("behavior_")]
                raise KeyError(f"recording has no behaviour {y!r}; it has {known}")
            y = np.asarray(x[name].data)
        return sig, y
    if isinstance(y, str):
        raise TypeError("y names a behaviour covariate only when X is a recording or store")
    return x, y
