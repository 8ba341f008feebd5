"""Behaviour decoding from spike-token windows: few-shot fine-tuning and new sessions.

:class:`SpikeDecoder` puts a small behaviour head (an MLP, regression or classification) on the
window embedding of a :class:`~neurodecode.models.spikes.model.SpikeTransformer`
(:meth:`~neurodecode.models.spikes.model.SpikeTransformer.features`) and trains it on labelled
windows. The transformer is either a fresh one (from scratch, the comparison) or a deep copy of a
pretrained one (:class:`~neurodecode.models.spikes.pretrainer.SpikePretrainer`); the pretrained
model is never modified. Units of the labelled windows that the pretrained vocabulary does not
know (a new session or animal) are added as new embedding rows, and ``train`` chooses what
learns:

``"all"``
    every weight (the pretrained ones at ``backbone_lr_scale`` × ``lr``);
``"units"``
    only the new units' embedding rows and the head (POYO's unit identification: every other
    weight stays bit-identical, which :meth:`SpikeDecoder.fit` checks);
``"head"``
    only the head, on frozen features.

Early stopping uses the last ``val_fraction`` (in time) of the labelled windows, a contiguous
block never drawn at random, with the training windows whose span (past window included)
reaches into it left out. Regression targets are standardised with statistics of the training
part only. :func:`fraction_blocks` picks a few-shot budget the same way: the *earliest*
``fraction`` of the labelled time.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from ...data.tokens import N_SPECIAL, TokenWindows, UnitVocabulary
from .._fit import fit_lightning
from ..checkpoint import atomic_save, read_payload
from .config import SpikeModelConfig, load_spike_config
from .embedding import UnitEmbedding
from .model import SpikeTransformer
from .pretrainer import SpikePretrainer, TokenBatches, _lightning_accelerator

__all__ = ["FORMAT", "BehaviourHead", "SpikeDecodeTask", "SpikeDecoder", "fraction_blocks",
           "time_holdout"]

FORMAT = "neurodecode.spike_decoder"
VERSION = 1

#: Config fields that make two spike models' networks and tokens the same shape.
NETWORK_FIELDS = ("window", "past", "dt", "max_tokens", "max_past", "width", "heads",
                  "past_layers", "layers", "mlp_ratio", "max_covariate_steps")


# ---- contiguous blocks in time ------------------------------------------------------------


def _groups(n: int, groups: np.ndarray | None) -> list[np.ndarray]:
    """Row indices of each group (one group of every row when ``groups`` is None)."""
    if groups is None:
        return [np.arange(n)]
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}; one group per window ({n}) needed")
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def _spans(n: int, starts: np.ndarray | None, stops: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    if starts is None:
        if stops is not None:
            raise ValueError("stops given without starts")
        order = np.arange(n, dtype=np.float64)
        return order, order + 1.0
    starts = np.asarray(starts, dtype=np.float64)
    stops = starts if stops is None else np.asarray(stops, dtype=np.float64)
    if starts.shape != (n,) or stops.shape != (n,):
        raise ValueError(f"starts {starts.shape} and stops {stops.shape} must hold one value per "
                         f"window ({n})")
    if np.any(stops < starts):
        raise ValueError("every window's stop must be >= its start")
    return starts, stops


def fraction_blocks(n_windows: int, fraction: float, starts: np.ndarray | None = None,
                    stops: np.ndarray | None = None, *, groups: np.ndarray | None = None,
                    min_windows: int = 1) -> np.ndarray:
    """The earliest ``fraction`` of the labelled time: a contiguous few-shot block.

    Few-shot budgets are the first labelled time (as a new recording would provide it), never
    a random subset of windows (whose neighbours, overlapping in time, would sit in the test
    set).

    Parameters
    ----------
    n_windows : int
        Labelled (training) windows.
    fraction : float
        Share of the labelled time, in ``(0, 1]``.
    starts, stops : ndarray of float, shape (n_windows,), optional
        Each window's span (e.g. :meth:`~neurodecode.data.tokens.SpikeTokenizer.spans`: past
        window included). The block is the windows that end before the time where the union of
        the spans has covered ``fraction`` of its length (gaps between intervals do not count).
        Without spans the rows are taken to be in time order and ``fraction`` is a share of
        the windows.
    groups : ndarray, shape (n_windows,), optional
        Recording (or session) of each window: every group gives its own earliest block (the
        times of different recordings are not comparable).
    min_windows : int
        Windows kept at least per group (the earliest ones).

    Returns
    -------
    ndarray of int64
        Row indices of the block, in time order within each group.
    """
    n_windows = int(n_windows)
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if min_windows < 1:
        raise ValueError(f"min_windows must be >= 1, got {min_windows}")
    lo, hi = _spans(n_windows, starts, stops)
    out = []
    for rows in _groups(n_windows, groups):
        rows = rows[np.lexsort((hi[rows], lo[rows]))]
        if starts is None:
            n = int(math.ceil(fraction * len(rows) - 1e-9))
        else:
            n = int(np.sum(hi[rows] <= _covered_until(lo[rows], hi[rows], fraction) + 1e-9))
        out.append(rows[: min(len(rows), max(n, min_windows))])
    return np.concatenate(out).astype(np.int64)


def _covered_until(lo: np.ndarray, hi: np.ndarray, fraction: float) -> float:
    """The time at which the union of the spans ``[lo, hi)`` (sorted by ``lo``) has covered
    ``fraction`` of its total length."""
    # merge the sorted spans into disjoint intervals
    ends = np.maximum.accumulate(hi)
    new = np.concatenate([[True], lo[1:] > ends[:-1]])
    first = np.flatnonzero(new)
    a = lo[first]
    b = np.append(ends[first[1:] - 1], ends[-1])
    lengths = b - a
    total = float(lengths.sum())
    if total <= 0:  # zero-length spans: fall back to a share of the windows
        return float(lo[max(0, int(math.ceil(fraction * len(lo))) - 1)])
    cum = np.cumsum(lengths)
    target = fraction * total
    k = int(np.searchsorted(cum, target - 1e-12 * total, side="left"))
    k = min(k, len(a) - 1)
    before = cum[k] - lengths[k]
    return float(a[k] + (target - before))


def time_holdout(starts: np.ndarray, stops: np.ndarray, val_fraction: float, *,
                 groups: np.ndarray | None = None, min_train: int = 2
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: the validation the last ``val_fraction`` in time.

    Training windows whose span reaches the first validation window's span are left out (a
    purge: overlapping windows share spikes). Per group when ``groups`` is given. A group too
    small for both sides (fewer than ``min_train`` training windows left, or no validation
    window) goes wholly to training.

    Returns
    -------
    train, val : ndarray of int64
        Row indices, in time order within each group.
    """
    n = len(starts)
    lo, hi = _spans(n, starts, stops)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for rows in _groups(n, groups):
        rows = rows[np.lexsort((hi[rows], lo[rows]))]
        n_val = int(round(val_fraction * len(rows)))
        if n_val < 1:
            train.append(rows)
            continue
        held = rows[len(rows) - n_val:]
        edge = lo[held].min()
        rest = rows[: len(rows) - n_val]
        rest = rest[hi[rest] <= edge + 1e-12]
        if len(rest) < min_train:
            train.append(rows)
            continue
        train.append(rest)
        val.append(held)
    return _cat(train), _cat(val)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


# ---- networks and the Lightning task --------------------------------------------------------


class BehaviourHead(nn.Module):
    """A small MLP from a window embedding to behaviour outputs or class logits.

    Parameters
    ----------
    width : int
        Embedding width (the transformer's).
    n_outputs : int
        Regression outputs or classes.
    hidden : int
    dropout : float
    """

    def __init__(self, width: int, n_outputs: int, hidden: int = 64, dropout: float = 0.1
                 ) -> None:
        super().__init__()
        if n_outputs < 1 or hidden < 1:
            raise ValueError(f"n_outputs ({n_outputs}) and hidden ({hidden}) must be >= 1")
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class _DecoderNet(nn.Module):
    """The transformer's window embedding followed by the head."""

    def __init__(self, model: SpikeTransformer, head: BehaviourHead) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.model.features(batch))


class SpikeDecodeTask(L.LightningModule):
    """Train a transformer + behaviour head on labelled token batches (``batch["y"]``).

    Regression: mean squared error on standardised targets; classification: cross-entropy.
    Logs ``train_loss`` and ``val_loss`` per epoch. Only parameters with ``requires_grad`` are
    optimised; the transformer's at ``backbone_lr_scale`` × ``lr``; embeddings, biases, norms
    and learnt positions without weight decay (so that rows masked by
    :meth:`~neurodecode.models.spikes.embedding.UnitEmbedding.train_only` stay bit-identical).

    Parameters
    ----------
    net : nn.Module
        ``model`` (a SpikeTransformer) and ``head``; called on a batch, gives the head's output.
    classification : bool
    lr, weight_decay, backbone_lr_scale : float
    frozen_eval : bool
        Keep the transformer in eval mode while training (no dropout on frozen features).
    """

    def __init__(self, net: _DecoderNet, *, classification: bool, lr: float,
                 weight_decay: float, backbone_lr_scale: float = 1.0,
                 frozen_eval: bool = False) -> None:
        super().__init__()
        self.net = net
        self.classification = bool(classification)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.frozen_eval = bool(frozen_eval)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.net(batch).float()
        if self.classification:
            return F.cross_entropy(out, batch["y"])
        return F.mse_loss(out, batch["y"].to(out.dtype))

    def on_train_epoch_start(self) -> None:
        if self.frozen_eval:
            self.net.model.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True,
                 batch_size=batch["cur_mask"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), on_step=False, on_epoch=True,
                 batch_size=batch["cur_mask"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        model = self.net.model
        plain_ids = {id(p) for m in model.modules()
                     if isinstance(m, UnitEmbedding | nn.Embedding | nn.LayerNorm)
                     for p in m.parameters(recurse=False)}
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for owner, scale in ((model, self.backbone_lr_scale), (self.net.head, 1.0)):
            for name, p in owner.named_parameters():
                if not p.requires_grad:
                    continue
                plain = (p.ndim < 2 or id(p) in plain_ids
                         or name.split(".")[-1] in ("position", "covariate_position",
                                                     "modality", "past_start"))
                key = (self.lr * scale, 0.0 if plain else self.weight_decay)
                groups.setdefault(key, []).append(p)
        if not groups:
            raise ValueError("no trainable parameter")
        return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd}
                                  for (lr, wd), ps in groups.items()])


class _Labelled:
    """:class:`TokenBatches` with each window's target as ``batch["y"]``."""

    def __init__(self, tokens: TokenWindows, y: np.ndarray | None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0) -> None:
        self.batches = TokenBatches(tokens, batch_size=batch_size, shuffle=shuffle, seed=seed)
        self.y = None if y is None else torch.from_numpy(np.ascontiguousarray(y))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.batches:
            if self.y is not None:
                batch["y"] = self.y[batch["index"]]
            yield batch


# ---- the estimator --------------------------------------------------------------------------


def _remap(tokens: TokenWindows, lut: np.ndarray) -> TokenWindows:
    """The same windows with unit ids sent through the lookup table ``lut``."""
    for side in ("cur", "past"):
        unit = getattr(tokens, f"{side}_unit")
        if len(unit) and (unit.min() < N_SPECIAL or unit.max() >= len(lut)):
            raise ValueError(f"{side} unit ids span {unit.min()}..{unit.max()}, outside the "
                             f"vocabulary's units {N_SPECIAL}..{len(lut) - 1}")
    return TokenWindows(tokens.start, tokens.cur_offsets, lut[tokens.cur_unit], tokens.cur_dt,
                        tokens.past_offsets, lut[tokens.past_unit], tokens.past_dt,
                        tokens.n_truncated)


class SpikeDecoder(BaseEstimator):
    """Decode behaviour from spike-token windows, from scratch or from a pretrained model.

    Parameters
    ----------
    pretrained : SpikePretrainer, path-like or None
        A fitted pretrainer (or its checkpoint) whose model is copied and fine-tuned; None
        trains a fresh transformer of ``config``.
    task : {"regression", "classification"}
    train : {"all", "units", "head"}
        What learns (see the module docstring); ``"units"`` needs a pretrained model and units
        it does not know.
    config : str, dict or SpikeModelConfig, optional
        The network of a model from scratch (default ``"spike_gpt"``). With ``pretrained`` it
        may be given only if its network is the pretrained one (a from-scratch comparison
        passes the same config to both).
    max_epochs, patience, batch_size : int
    lr : float
        Learning rate of the head (and of the new units).
    backbone_lr_scale : float
        Factor on ``lr`` for the transformer's weights when ``train="all"``.
    weight_decay : float
    hidden, dropout : int, float
        The head's hidden width and dropout.
    seed : int
    val_fraction : float
        Share of the labelled windows, the last in time, kept for early stopping (0: none, a
        fixed ``max_epochs``); the same for the unlabelled windows of unit identification.
    identify_epochs : int, optional
        Most epochs of unit identification (``fit(..., unlabelled=...)``); default the
        pretrained config's ``max_epochs``.
    accelerator : str
        ``"cpu"``, ``"gpu"`` or ``"auto"``.
    verbose : bool

    Attributes
    ----------
    model_ : SpikeTransformer
    head_ : BehaviourHead
    config_ : SpikeModelConfig
    tokenizer_ : SpikeTokenizer
        The config's (window spans for the holdout).
    vocabulary_ : UnitVocabulary
        The model's units (the pretrained vocabulary grown by the new ones).
    unit_map_ : ndarray of int64
        Token id of the fitted windows' vocabulary → the model's id.
    new_units_ : ndarray of int64
        Model ids of the units the pretrained vocabulary did not have (all, from scratch).
    scaler_ : StandardScaler or None
        Regression targets' statistics (training part only).
    classes_ : ndarray or None
    n_outputs_ : int
    train_index_, val_index_ : ndarray of int64
        Rows of the fitted windows trained on and used for early stopping.
    history_ : list of dict
    identify_history_ : list of dict
        Per-epoch record of unit identification (empty without unlabelled windows).
    best_epoch_ : int or None
    fit_seconds_ : float
    """

    def __init__(self, pretrained: SpikePretrainer | str | os.PathLike | None = None,
                 task: Literal["regression", "classification"] = "regression",
                 train: Literal["all", "units", "head"] = "all",
                 config: str | dict[str, Any] | SpikeModelConfig | None = None, *,
                 max_epochs: int = 30, lr: float = 1e-3, patience: int = 5,
                 batch_size: int = 64, backbone_lr_scale: float = 1.0,
                 weight_decay: float = 0.01, hidden: int = 64, dropout: float = 0.1,
                 seed: int = 0, val_fraction: float = 0.2,
                 identify_epochs: int | None = None, accelerator: str = "cpu",
                 verbose: bool = False) -> None:
        self.pretrained = pretrained
        self.task = task
        self.train = train
        self.config = config
        self.max_epochs = max_epochs
        self.lr = lr
        self.patience = patience
        self.batch_size = batch_size
        self.backbone_lr_scale = backbone_lr_scale
        self.weight_decay = weight_decay
        self.hidden = hidden
        self.dropout = dropout
        self.seed = seed
        self.val_fraction = val_fraction
        self.identify_epochs = identify_epochs
        self.accelerator = accelerator
        self.verbose = verbose

    def __sklearn_clone__(self) -> SpikeDecoder:
        """An unfitted copy sharing the (never modified) pretrained model.

        ``sklearn.base.clone`` would otherwise clone the pretrainer too, into an unfitted one.
        """
        return type(self)(**self.get_params(deep=False))

    # ---- set-up -----------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', not {self.task!r}")
        if self.train not in ("all", "units", "head"):
            raise ValueError(f"train must be 'all', 'units' or 'head', not {self.train!r}")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError(f"max_epochs ({self.max_epochs}), patience ({self.patience}) and "
                             f"batch_size ({self.batch_size}) must be >= 1")
        if not self.lr > 0 or not self.backbone_lr_scale >= 0:
            raise ValueError(f"lr ({self.lr}) must be > 0 and backbone_lr_scale "
                             f"({self.backbone_lr_scale}) >= 0")

    def _pretrainer(self) -> SpikePretrainer | None:
        pre = self.pretrained
        if pre is None:
            return None
        if isinstance(pre, str | os.PathLike):
            return SpikePretrainer.load(Path(pre))
        if not isinstance(pre, SpikePretrainer):
            raise TypeError(f"pretrained must be a SpikePretrainer, a checkpoint path or None, "
                            f"not {type(pre).__name__}")
        pre._check_fitted()
        return copy.deepcopy(pre)  # add_units grows it: never the caller's

    def _build(self, vocabulary: UnitVocabulary | None
               ) -> tuple[SpikeTransformer, np.ndarray, SpikePretrainer | None]:
        """The model to fine-tune, the new units' model ids and the pretrainer copy holding the
        model (None from scratch); sets the vocabulary fields."""
        pre = self._pretrainer()
        if pre is None:
            if self.train == "units":
                raise ValueError("train='units' trains the new units of a pretrained model: "
                                 "give pretrained=, or use train='all' from scratch")
            if not isinstance(vocabulary, UnitVocabulary):
                raise ValueError("a model from scratch needs the tokens' vocabulary "
                                 "(fit(tokens, y, vocabulary=...))")
            self.config_ = load_spike_config(self.config or "spike_gpt")
            self.tokenizer_ = self.config_.tokenizer()
            self.vocabulary_ = UnitVocabulary.from_state(vocabulary.state_dict())
            self.unit_map_ = np.arange(len(vocabulary), dtype=np.int64)
            torch.manual_seed(self.seed)
            tok = self.tokenizer_
            model = SpikeTransformer(len(vocabulary), tok.n_dt, tok.n_past_dt, self.config_)
            return model, np.arange(N_SPECIAL, len(vocabulary), dtype=np.int64), None
        self.config_ = pre.config_
        if self.config is not None:
            mine = load_spike_config(self.config)
            diff = [f"{k} {getattr(mine, k)!r} vs {getattr(pre.config_, k)!r}"
                    for k in NETWORK_FIELDS if getattr(mine, k) != getattr(pre.config_, k)]
            if diff:
                raise ValueError("config is not the pretrained model's network: "
                                 + "; ".join(diff))
        self.tokenizer_ = pre.tokenizer_
        known = len(pre.vocabulary_)
        if vocabulary is None:
            self.unit_map_ = np.arange(known, dtype=np.int64)
        else:
            if not isinstance(vocabulary, UnitVocabulary):
                raise TypeError(f"vocabulary must be a UnitVocabulary, not "
                                f"{type(vocabulary).__name__}")
            new_keys = [k for k in vocabulary.keys if k not in pre.vocabulary_]
            if new_keys:
                torch.manual_seed(self.seed)  # the new rows' initialisation
                pre.add_units(new_keys)
            self.unit_map_ = np.concatenate([np.arange(N_SPECIAL, dtype=np.int64),
                                             pre.vocabulary_.ids(vocabulary.keys)])
        self.vocabulary_ = pre.vocabulary_
        new = np.arange(known, len(pre.vocabulary_), dtype=np.int64)
        if self.train == "units" and not len(new):
            raise ValueError(f"train='units' trains the units the pretrained model does not "
                             f"know, but it knows all {known - N_SPECIAL} of these; use "
                             "train='head' or 'all'")
        return pre.model_, new, pre

    def _targets(self, y: Any, n: int) -> np.ndarray:
        y = np.asarray(y)
        if len(y) != n:
            raise ValueError(f"{len(y)} targets for {n} windows")
        if self.task == "classification":
            if y.ndim != 1:
                raise ValueError(f"classification targets must be 1-D, got shape {y.shape}")
            if y.dtype.kind == "f" and np.isnan(y).any():
                raise ValueError(f"{int(np.isnan(y).sum())} targets are NaN: drop those "
                                 "windows first")
            return y
        if y.ndim not in (1, 2):
            raise ValueError(f"regression targets must be (n,) or (n, outputs), got {y.shape}")
        y = y.astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            rows = int(bad.reshape(n, -1).any(1).sum())
            raise ValueError(f"{rows} windows have NaN or infinite targets: drop them first")
        return y

    # ---- fit --------------------------------------------------------------------------------

    def fit(self, tokens: TokenWindows, y: Any, vocabulary: UnitVocabulary | None = None,
            unlabelled: TokenWindows | None = None, *,
            unlabelled_covariates: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> SpikeDecoder:
        """Train on labelled windows.

        Parameters
        ----------
        tokens : TokenWindows
            Labelled windows, cut with the (pretrained) config's tokenizer, in time order.
        y : array-like, shape (n_windows,) or (n_windows, n_outputs)
            Behaviour per window (class labels for classification).
        vocabulary : UnitVocabulary, optional
            The vocabulary of ``tokens``' unit ids. Its keys that the pretrained model does not
            know are added to (a copy of) it. Required from scratch; None with a pretrained
            model means ``tokens`` use the pretrained vocabulary's ids.
        unlabelled : TokenWindows, optional
            Unlabelled windows of the new units' recordings (same vocabulary as ``tokens``;
            e.g. all of the training period, of which ``tokens`` is the labelled part). With a
            pretrained model and new units, these first identify the new units: their rows
            alone are trained on the next-token likelihood (every other weight frozen; early
            stopping on the last ``val_fraction`` in time), before the behaviour fit. Never
            pass test-period windows.
        unlabelled_covariates : ndarray, optional
            ``(n_unlabelled, T, F)``, for a pretrained model trained with covariates:
            identification then runs its likelihood with them (without, on spikes alone). The
            behaviour fit itself never sees covariates.
        groups : ndarray, shape (n_windows,), optional
            Segment of each labelled window (e.g. trial cells of one condition each): the
            early-stopping block is then the last ``val_fraction`` of every segment, so that it
            holds every condition; None: of all the windows.

        Returns
        -------
        SpikeDecoder
            ``self``.
        """
        self._check_params()
        if not isinstance(tokens, TokenWindows):
            raise TypeError(f"tokens must be TokenWindows, not {type(tokens).__name__}")
        if not len(tokens):
            raise ValueError("no labelled window")
        y = self._targets(y, len(tokens))
        model, new, pre = self._build(vocabulary)
        tokens = _remap(tokens, self.unit_map_)
        cfg, tok = self.config_, self.tokenizer_
        longest = int(tokens.n_tokens().max())
        if longest > cfg.max_tokens:
            raise ValueError(f"a window has {longest} tokens, more than max_tokens="
                             f"{cfg.max_tokens}: cut the windows with the config's tokenizer")
        self.new_units_ = new
        lo, hi = tok.spans(tokens.start)
        self.train_index_, self.val_index_ = time_holdout(lo, hi, self.val_fraction,
                                                          groups=groups)
        if self.task == "classification":
            self.classes_, target = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"classification needs 2 classes at least, got "
                                 f"{list(self.classes_)}")
            target = target.astype(np.int64)
            self.scaler_, self.n_outputs_ = None, len(self.classes_)
        else:
            self.classes_ = None
            y2 = y.reshape(len(y), -1)
            self.y_ndim_ = y.ndim
            self.scaler_ = StandardScaler().fit(y2[self.train_index_])
            target = self.scaler_.transform(y2).astype(np.float32)
            self.n_outputs_ = y2.shape[1]
        torch.manual_seed(self.seed)
        head = BehaviourHead(cfg.width, self.n_outputs_, self.hidden, self.dropout)
        snapshot = self._snapshot(model, new) if self.train != "all" else None
        self.identify_history_: list[dict[str, float]] = []
        if unlabelled is not None:
            self._identify(pre, new, unlabelled, unlabelled_covariates)
        self._freeze(model, new)
        net = _DecoderNet(model, head)
        task = SpikeDecodeTask(net, classification=self.task == "classification", lr=self.lr,
                               weight_decay=self.weight_decay,
                               backbone_lr_scale=(self.backbone_lr_scale
                                                  if self.train == "all" else 1.0),
                               frozen_eval=self.train == "head")
        train_loader = _Labelled(tokens.select(self.train_index_), target[self.train_index_],
                                 batch_size=self.batch_size, shuffle=True, seed=self.seed)
        val_loader = (_Labelled(tokens.select(self.val_index_), target[self.val_index_],
                                batch_size=self.batch_size) if len(self.val_index_) else None)
        accelerator = _lightning_accelerator(self.accelerator)
        start = time.perf_counter()
        net.train()
        try:
            record = fit_lightning(task, train_loader, val_loader, max_epochs=self.max_epochs,
                                   patience=self.patience,
                                   precision=cfg.resolved_precision(accelerator),
                                   accelerator=accelerator, verbose=self.verbose)
        finally:
            model.train_only_units(None)  # every parameter trainable again, masks removed
            net.to("cpu").eval()
        self.fit_seconds_ = time.perf_counter() - start
        self.history_, self.best_epoch_ = record.history, record.best_epoch
        self.model_, self.head_ = model, head
        if snapshot is not None:
            self._check_frozen(model, new, snapshot)
        return self

    def _identify(self, pre: SpikePretrainer | None, new: np.ndarray,
                  unlabelled: TokenWindows, covariates: np.ndarray | None) -> None:
        """Unit identification: the new units' rows alone, on the next-token likelihood."""
        if pre is None:
            raise ValueError("unlabelled windows identify new units of a pretrained model; "
                             "from scratch there is none (give pretrained=)")
        if not isinstance(unlabelled, TokenWindows) or not len(unlabelled):
            raise ValueError("unlabelled must be non-empty TokenWindows")
        if not len(new):
            raise ValueError("unlabelled windows given, but the pretrained model knows every "
                             "unit: nothing to identify")
        pre.accelerator = self.accelerator
        windows = _remap(unlabelled, self.unit_map_)
        lo, hi = self.tokenizer_.spans(windows.start)
        fit_rows, val_rows = time_holdout(lo, hi, self.val_fraction)
        if self.identify_epochs is not None:  # a training field: a warm start takes it
            pre.set_params(max_epochs=int(self.identify_epochs))
        if covariates is not None:
            covariates = np.asarray(covariates)
            if len(covariates) != len(windows):
                raise ValueError(f"unlabelled_covariates has {len(covariates)} rows for "
                                 f"{len(windows)} unlabelled windows")

        def part(rows: np.ndarray) -> np.ndarray | None:
            return None if covariates is None else covariates[rows]

        val = (windows.select(val_rows), part(val_rows)) if len(val_rows) else None
        pre.fit(windows.select(fit_rows), pre.vocabulary_, part(fit_rows), val=val,
                train_units=new)
        self.identify_history_ = [dict(r) for r in pre.history_]

    def _freeze(self, model: SpikeTransformer, new: np.ndarray) -> None:
        """Set what trains."""
        if self.train == "all":
            model.train_only_units(None)
        elif self.train == "units":
            model.train_only_units(new)
        else:
            model.requires_grad_(False)

    @staticmethod
    def _snapshot(model: SpikeTransformer, new: np.ndarray) -> dict[str, torch.Tensor]:
        keep = np.setdiff1d(np.arange(model.n_vocab), new)
        out = {}
        for name, p in model.named_parameters():
            if name.startswith(("unit_embed.", "unit_head.")):
                out[name] = p.detach()[torch.from_numpy(keep)].clone()
            else:
                out[name] = p.detach().clone()
        return out

    @classmethod
    def _check_frozen(cls, model: SpikeTransformer, new: np.ndarray,
                      before: dict[str, torch.Tensor]) -> None:
        after = cls._snapshot(model, new)
        changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
        if changed:
            raise RuntimeError("frozen weights changed during fine-tuning: "
                               + ", ".join(changed[:5]))

    # ---- use --------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise RuntimeError("this SpikeDecoder is not fitted: call fit()")

    @torch.no_grad()
    def _outputs(self, tokens: TokenWindows) -> np.ndarray:
        self._check_fitted()
        if not isinstance(tokens, TokenWindows):
            raise TypeError(f"tokens must be TokenWindows, not {type(tokens).__name__}")
        tokens = _remap(tokens, self.unit_map_)
        device = torch.device("cuda" if _lightning_accelerator(self.accelerator) == "gpu"
                              else "cpu")
        net = _DecoderNet(self.model_, self.head_).to(device).eval()
        out = np.empty((len(tokens), self.n_outputs_), dtype=np.float64)
        try:
            for batch in _Labelled(tokens, None, batch_size=max(self.batch_size, 256)):
                batch = {k: v.to(device) for k, v in batch.items()}
                out[batch["index"].cpu().numpy()] = net(batch).double().cpu().numpy()
        finally:
            net.to("cpu")
        return out

    def predict(self, tokens: TokenWindows) -> np.ndarray:
        """Behaviour of each window (the vocabulary of the fitted windows).

        Returns
        -------
        ndarray
            ``(n,)`` or ``(n, n_outputs)`` like the fitted targets; class labels for
            classification.
        """
        out = self._outputs(tokens)
        if self.task == "classification":
            return self.classes_[out.argmax(1)]
        pred = self.scaler_.inverse_transform(out)
        return pred[:, 0] if self.y_ndim_ == 1 else pred

    def predict_proba(self, tokens: TokenWindows) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (classification)."""
        if self.task != "classification":
            raise ValueError("predict_proba is for task='classification'")
        out = self._outputs(tokens)
        out = np.exp(out - out.max(1, keepdims=True))
        return out / out.sum(1, keepdims=True)

    def score(self, tokens: TokenWindows, y: Any) -> float:
        """R² averaged over outputs (regression) or balanced accuracy (classification)."""
        y = np.asarray(y)
        pred = self.predict(tokens)
        if self.task == "classification":
            return float(balanced_accuracy_score(y, pred))
        return float(r2_score(y, pred, multioutput="uniform_average"))

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted decoder to one checkpoint (atomically; plain types and tensors).

        The pretrained model is not needed to load it: the fine-tuned transformer is saved
        whole.
        """
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        m = self.model_
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("pretrained", "config")}
        scaler = None if self.scaler_ is None else {
            "mean": self.scaler_.mean_.tolist(), "scale": self.scaler_.scale_.tolist(),
            "var": self.scaler_.var_.tolist(), "n": int(self.scaler_.n_samples_seen_)}
        payload = {
            "format": FORMAT, "version": VERSION, "params": params,
            "config": self.config_.model_dump(mode="json"),
            "vocabulary": self.vocabulary_.state_dict(),
            "shape": {"n_vocab": int(m.n_vocab), "n_dt": int(m.n_dt),
                      "n_past_dt": int(m.n_past_dt), "n_covariates": int(m.n_covariates),
                      "frame_shape": None if m.frame_shape is None else list(m.frame_shape),
                      "n_outputs": int(self.n_outputs_),
                      "y_ndim": int(getattr(self, "y_ndim_", 1))},
            "model": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            "head": {k: v.detach().cpu() for k, v in self.head_.state_dict().items()},
            "classes": None if self.classes_ is None else self.classes_.tolist(),
            "scaler": scaler,
            "unit_map": torch.from_numpy(self.unit_map_.copy()),
            "new_units": torch.from_numpy(self.new_units_.copy()),
            "extra": {"history": [dict(r) for r in self.history_],
                      "best_epoch": self.best_epoch_, "fit_seconds": float(self.fit_seconds_)}}
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpikeDecoder:
        """Load a decoder written by :meth:`save` (``torch.load(weights_only=True)``).

        Raises
        ------
        FileNotFoundError, ValueError
            Naming the file: missing, unreadable or not a spike decoder checkpoint.
        """
        path = Path(path)
        data = read_payload(path, FORMAT, VERSION, "spike decoder checkpoint")
        try:
            cfg = SpikeModelConfig.model_validate(data["config"])
            shape = data["shape"]
            frame_shape = shape["frame_shape"]
            model = SpikeTransformer(int(shape["n_vocab"]), int(shape["n_dt"]),
                                     int(shape["n_past_dt"]), cfg, int(shape["n_covariates"]),
                                     None if frame_shape is None else tuple(frame_shape))
            model.load_state_dict(data["model"])
            dec = cls(None, config=cfg, **data["params"])
            head = BehaviourHead(cfg.width, int(shape["n_outputs"]), dec.hidden, dec.dropout)
            head.load_state_dict(data["head"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: a damaged spike decoder checkpoint ({err})") from None
        dec.config_, dec.tokenizer_ = cfg, cfg.tokenizer()
        dec.model_, dec.head_ = model.eval(), head.eval()
        dec.vocabulary_ = UnitVocabulary.from_state(data["vocabulary"])
        dec.n_outputs_, dec.y_ndim_ = int(shape["n_outputs"]), int(shape["y_ndim"])
        dec.classes_ = None if data["classes"] is None else np.asarray(data["classes"])
        dec.scaler_ = None
        if data["scaler"] is not None:
            sc = data["scaler"]
            dec.scaler_ = StandardScaler()
            dec.scaler_.mean_ = np.asarray(sc["mean"], dtype=np.float64)
            dec.scaler_.scale_ = np.asarray(sc["scale"], dtype=np.float64)
            dec.scaler_.var_ = np.asarray(sc["var"], dtype=np.float64)
            dec.scaler_.n_samples_seen_ = int(sc["n"])
            dec.scaler_.n_features_in_ = len(dec.scaler_.mean_)
        dec.unit_map_ = data["unit_map"].numpy().astype(np.int64)
        dec.new_units_ = data["new_units"].numpy().astype(np.int64)
        extra = data.get("extra", {})
        dec.history_ = list(extra.get("history", []))
        dec.best_epoch_ = extra.get("best_epoch")
        dec.fit_seconds_ = float(extra.get("fit_seconds", 0.0))
        dec.train_index_ = dec.val_index_ = np.zeros(0, dtype=np.int64)
        return dec
