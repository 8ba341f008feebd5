"""The ``embed`` stage: CEBRA-style contrastive embeddings per recording and across recordings.

One job reads recording stores and trains :class:`~neurodecode.models.contrastive.
ContrastiveEmbedding` models on them, conditioned on a behaviour (``time_delta`` on position,
say) or on time alone:

* ``per_recording``: one model per recording;
* ``multi_session``: one model over all recordings at once (one input layer per recording, one
  shared embedding; positives are matched by behaviour across recordings), so that the
  embeddings of different subjects land in one space;
* ``both``.

Each recording is split in time: the models and the behaviour decoders are trained on its first
part, and the last ``decoding.test_fraction`` (after a gap) is held out. On that part a kNN or
ridge decoder maps the embedding to behaviour; its chance level and p-value come from circular
shifts of the behaviour (``chance: permutation``: the decoder refitted on shifted targets) or
from whole models retrained on shifted behaviour (``chance: shuffled_labels``). With several
recordings, the consistency of their embeddings (:func:`~neurodecode.models.contrastive.
consistency_score`: held-out R² of linear maps between recordings, paired by behaviour bins) is
a matrix.

The output folder::

    summary.json                         recordings, decoding, consistency, model, figures
    embeddings/<recording>.npz           embedding, time, behavior, behavior_names, train, test
    embeddings/per_recording/<rec>.npz   (mode "both": the per-recording models' embeddings)
    models/<recording>/model.pt          per-recording models (ContrastiveEmbedding.save)
    models/multi_session/model.pt        the multi-session model
    figures/*.png                        embeddings coloured by behaviour, consistency, loss

``<recording>`` is the recording's ``sub-<s>_ses-<x>_task-<t>_run-<r>_<modality>`` label.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..config import StageConfig
from ..verbosity import progress
from .base import Slot, Stage, StageError, register
from .decode import CLASSIFICATION_METRICS, _Part, open_stores

__all__ = [
    "ConsistencyConfig",
    "DecodingConfig",
    "EmbedConfig",
    "EmbedSamples",
    "EmbedStage",
    "ModelConfig",
    "embed",
]

MODES = ("per_recording", "multi_session")
_MAX_POINTS = 4000  # points drawn per embedding scatter


# --------------------------------------------------------------------------- config models


class EmbedSamples(_Part):
    """Which recordings and which samples of each are embedded.

    Attributes
    ----------
    modality, task : str, optional
        Keep recordings of this modality / task.
    subjects, runs : list of str, optional
        Keep these subjects / runs.
    ch_types : list of str, optional
        Channel types used (default the brain-signal types).
    bin_size : float, optional
        Seconds per sample: the signal summed (``features: sum``, spike counts) or averaged
        over consecutive bins; default the recording's own samples.
    features : {"sum", "mean"}
        How bins are formed.
    transform : {"none", "sqrt", "log1p"}
        Element-wise transform (``sqrt``: variance-stabilised counts).
    time_range : (float or None, float or None), optional
        Keep the samples inside this part of each recording (s).
    standardize : bool
        z-score every channel with the mean and deviation of the recording's training part.
    """

    modality: str | None = None
    task: str | None = None
    subjects: list[str] | None = None
    runs: list[str] | None = None
    ch_types: list[str] | None = None
    bin_size: float | None = Field(None, gt=0)
    features: Literal["sum", "mean"] = "sum"
    transform: Literal["none", "sqrt", "log1p"] = "none"
    time_range: tuple[float | None, float | None] | None = None
    standardize: bool = False

    @field_validator("subjects", "runs", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return [value] if isinstance(value, str) else value
        return [str(v) for v in value]


_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?|mps)$")


class ModelConfig(_Part):
    """Parameters of the :class:`~neurodecode.models.contrastive.ContrastiveEmbedding`.

    Attributes
    ----------
    conditional : {"time_delta", "time", "delta", "discrete"}
        Positive pairs: behaviour increments (``time_delta``), time alone (``time``: no
        behaviour used), behaviour with Gaussian jitter (``delta``), same class
        (``discrete``).
    output_dimension, hidden_units, receptive_field : int
        Embedding dimension, encoder width, samples seen per embedding.
    time_offset : int
        Samples between a reference and its time positive.
    n_iter : int
        Optimiser steps (each model).
    batch_size : int
        References per recording and step.
    learning_rate, temperature, delta : float
    learnable_temperature, hybrid : bool
    similarity : {"cosine", "euclidean"}
    device : str
        ``cpu``, ``cuda``, ``cuda:<n>`` or ``auto``.
    """

    conditional: Literal["time_delta", "time", "delta", "discrete"] = "time_delta"
    output_dimension: int = Field(8, ge=1)
    hidden_units: int = Field(32, ge=1)
    receptive_field: int = Field(10, ge=1)
    time_offset: int = Field(10, ge=1)
    n_iter: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    learning_rate: float = Field(1e-3, gt=0)
    temperature: float = Field(1.0, gt=0)
    learnable_temperature: bool = False
    similarity: Literal["cosine", "euclidean"] = "cosine"
    hybrid: bool = False
    delta: float = Field(0.1, gt=0)
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device {value!r}: use cpu, cuda, cuda:<n>, mps or auto")
        return value

    @model_validator(mode="after")
    def _hybrid(self) -> ModelConfig:
        if self.hybrid and self.conditional in ("time", "discrete"):
            raise ValueError(
                "hybrid combines a continuous behaviour objective with time: use "
                "conditional time_delta or delta"
            )
        return self

    @property
    def uses_labels(self) -> bool:
        """Whether training reads the behaviour."""
        return self.conditional != "time" or self.hybrid

    def estimator(self, seed: int, verbose: bool = False) -> Any:
        """An unfitted :class:`ContrastiveEmbedding` with these parameters."""
        from ..models.contrastive import ContrastiveEmbedding

        return ContrastiveEmbedding(
            conditional=self.conditional, output_dim=self.output_dimension,
            hidden_dim=self.hidden_units, receptive_field=self.receptive_field,
            time_offset=self.time_offset, max_iter=self.n_iter, batch_size=self.batch_size,
            learning_rate=self.learning_rate, temperature=self.temperature,
            learnable_temperature=self.learnable_temperature, similarity=self.similarity,
            hybrid=self.hybrid, delta=self.delta, device=self.device, random_state=seed,
            verbose=verbose,
        )  # fmt: skip


class DecodingConfig(_Part):
    """Held-out decoding of a behaviour from the embedding.

    Attributes
    ----------
    behavior : str, optional
        Behaviour decoded (default ``condition_on``, else the first behaviour).
    decoder : {"knn", "ridge"}
        k nearest neighbours (cosine distance for cosine embeddings) or ridge regression with
        its penalty chosen on blocked inner folds (:class:`~neurodecode.evaluate.baselines.
        BlockedRidgeCV`; regression only).
    n_neighbors : int
        Neighbours of the kNN decoder.
    metrics : list of str
        Names in :data:`neurodecode.evaluate.metrics.METRICS` (classification metrics decode
        the behaviour as classes).
    test_fraction : float
        Last part of every recording held out from the models and the decoders.
    gap : float, optional
        Seconds left out between the training and the held-out part; default the longest
        sample plus the modality's margin (:func:`neurodecode.data.splits.default_gap`), and at
        least the encoder's receptive field.
    chance : {"permutation", "shuffled_labels"}
        ``permutation``: the decoder refitted on circularly shifted behaviour
        (``n_permutations`` times, the embedding fixed); ``shuffled_labels``: whole models
        retrained on circularly shifted behaviour (``n_permutations`` trainings).
    n_permutations : int
    """

    behavior: str | None = None
    decoder: Literal["knn", "ridge"] = "knn"
    n_neighbors: int = Field(25, ge=1)
    metrics: list[str] = Field(default_factory=lambda: ["r2"])
    test_fraction: float = Field(0.2, gt=0, lt=0.9)
    gap: float | None = Field(None, ge=0)
    chance: Literal["permutation", "shuffled_labels"] = "permutation"
    n_permutations: int = Field(100, ge=0)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        from ..evaluate.metrics import METRICS

        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown} (metrics: {', '.join(METRICS)})")
        if not value:
            raise ValueError("give at least one metric")
        kinds = {m in CLASSIFICATION_METRICS for m in value}
        if len(kinds) > 1:
            raise ValueError(f"metrics {value} mix classification and regression metrics")
        return value

    @model_validator(mode="after")
    def _decoder(self) -> DecodingConfig:
        if self.classification and self.decoder == "ridge":
            raise ValueError("decoder ridge regresses: use knn for classification metrics")
        return self

    @property
    def classification(self) -> bool:
        """Whether the behaviour is decoded as classes."""
        return self.metrics[0] in CLASSIFICATION_METRICS


class ConsistencyConfig(_Part):
    """Consistency of the embeddings across recordings (:func:`consistency_score`).

    Attributes
    ----------
    behavior : str, optional
        Behaviour whose bins pair the samples of different recordings (default
        ``condition_on``, else the decoded behaviour).
    n_bins : int
        Bins per behaviour dimension (over the range common to all recordings).
    normalize : bool
        Scale bin means to unit norm (CEBRA's default).
    part : {"test", "all"}
        Score the held-out parts (default) or whole recordings.
    """

    behavior: str | None = None
    n_bins: int = Field(50, ge=4)
    normalize: bool = False
    part: Literal["test", "all"] = "test"


class EmbedConfig(StageConfig):
    """Config of the ``embed`` stage.

    Attributes
    ----------
    analysis : str
        Name of the analysis (in ``summary.json`` and the report).
    description : str
    samples : EmbedSamples
    behavior : list of str, optional
        Behaviour variables kept beside each embedding (default every ``behavior_*`` variable
        of the recordings except the ``*_valid`` masks).
    condition_on : str, optional
        Behaviour the model's positives are conditioned on (required unless
        ``model.conditional`` is ``time``).
    color_by : str, optional
        Behaviour colouring the embedding figures (default ``condition_on``, else the first).
    mode : {"per_recording", "multi_session", "both"}
    model : ModelConfig
    decoding : DecodingConfig or None
        None: no held-out part, models trained on whole recordings, no decoding.
    consistency : ConsistencyConfig
    seed : int
        Seed of the models and permutations.
    threads : int, optional
        torch intra-op threads while training (1 is fastest on a small shared machine; None:
        torch's default).
    progress : bool, optional
        Training progress lines on stderr (default: when stderr is a terminal).
    """

    analysis: str = Field("embedding", min_length=1)
    description: str = ""
    samples: EmbedSamples = Field(default_factory=EmbedSamples)
    behavior: list[str] | None = None
    condition_on: str | None = None
    color_by: str | None = None
    mode: Literal["per_recording", "multi_session", "both"] = "multi_session"
    model: ModelConfig = Field(default_factory=ModelConfig)
    decoding: DecodingConfig | None = Field(default_factory=DecodingConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    seed: int = 0
    threads: int | None = Field(1, ge=1)
    progress: bool | None = None

    @model_validator(mode="after")
    def _behaviours(self) -> EmbedConfig:
        if self.model.uses_labels and self.condition_on is None:
            raise ValueError(
                f"model.conditional {self.model.conditional!r} needs condition_on "
                "(the behaviour to condition on, e.g. position)"
            )
        if self.behavior is not None:
            names = [_short(b) for b in self.behavior]
            for key, value in (
                ("condition_on", self.condition_on),
                ("color_by", self.color_by),
                ("decoding.behavior", self.decoding and self.decoding.behavior),
                ("consistency.behavior", self.consistency.behavior),
            ):
                if value is not None and _short(value) not in names:
                    raise ValueError(f"{key} {value!r} is not in behavior {self.behavior}")
        return self

    @property
    def modes(self) -> list[str]:
        """The trainings to run, multi-session first."""
        return list(MODES[::-1]) if self.mode == "both" else [self.mode]

    def decoded(self, names: Sequence[str]) -> str:
        """The decoded behaviour (``names``: those available)."""
        wanted = (self.decoding and self.decoding.behavior) or self.condition_on
        return _short(wanted) if wanted else names[0]


def _short(name: str) -> str:
    return name.removeprefix("behavior_")


# --------------------------------------------------------------------------- data


@dataclass
class _Data:
    """One recording, ready to embed."""

    rec: Any
    name: str
    X: np.ndarray  # (n, channels) float32
    times: np.ndarray  # (n,)
    sfreq: float
    behavior: dict[str, np.ndarray]  # name -> (n, k)
    train: np.ndarray  # bool (n,)
    test: np.ndarray  # bool (n,)
    columns: list[str] = field(default_factory=list)

    def matrix(self) -> np.ndarray:
        """Every behaviour column side by side, ``(n, k)``."""
        if not self.behavior:
            return np.zeros((len(self.X), 0))
        return np.concatenate([v for v in self.behavior.values()], axis=1)


def _behaviour_names(rec: Any, config: EmbedConfig) -> list[str]:
    """The behaviours kept of one recording; every behaviour the config names must be there."""
    have = [
        str(v).removeprefix("behavior_")
        for v in rec.ds.data_vars
        if str(v).startswith("behavior_") and not str(v).endswith("_valid")
    ]
    named = {
        "behavior": list(config.behavior or []),
        "condition_on": [config.condition_on] if config.model.uses_labels else [],
        "color_by": [config.color_by],
        "decoding.behavior": [config.decoding and config.decoding.behavior],
        "consistency.behavior": [config.consistency.behavior],
    }
    for key, values in named.items():
        missing = [_short(v) for v in values if v and _short(v) not in have]
        if missing:
            raise ValueError(
                f"{key}: {rec.id} has no behaviour {missing} (behaviours: "
                f"{', '.join(have) or 'none'})"
            )
    return have if config.behavior is None else [_short(w) for w in config.behavior]


def _display_names(recs: Sequence[Any]) -> list[str]:
    """Short names: the identity parts that differ between the recordings."""
    keys = ("subject", "session", "task", "run", "modality")
    prefix = {"subject": "sub-", "session": "ses-", "task": "task-", "run": "run-", "modality": ""}
    vary = [k for k in keys if len({r.identity[k] for r in recs}) > 1] or ["subject", "modality"]
    return [" ".join(f"{prefix[k]}{r.identity[k]}" for k in vary) for r in recs]


def _safe_names(recs: Sequence[Any]) -> list[str]:
    from ..schema import recording_label

    out, seen = [], {}
    for rec in recs:
        base = re.sub(
            r"[^A-Za-z0-9._+-]", "_", f"{recording_label(rec.ds)}_{rec.identity['modality']}"
        )
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def _prepare(rec: Any, name: str, config: EmbedConfig) -> _Data:
    """Samples, behaviours and the train/test split of one recording."""
    from ..data.samples import target_at, windows
    from ..data.splits import check_split, resolve_gap

    s_cfg = config.samples
    step = s_cfg.bin_size if s_cfg.bin_size is not None else 1.0 / rec.sfreq
    s = windows([rec], length=step, stride=step, ch_types=s_cfg.ch_types)
    X = s.X.sum(axis=2) if s_cfg.features == "sum" else s.X.mean(axis=2)
    table = s.table
    keep = np.ones(len(table), bool)
    if s_cfg.time_range is not None:
        lo, hi = s_cfg.time_range
        if lo is not None:
            keep &= table["start"].to_numpy(float) >= lo
        if hi is not None:
            keep &= table["stop"].to_numpy(float) <= hi
    if keep.sum() < 10:
        raise ValueError(
            f"{rec.id}: {int(keep.sum())} samples inside time_range {list(s_cfg.time_range or [])}"
        )
    table = table[keep].reset_index(drop=True)
    X = np.asarray(X[keep], dtype=np.float64)
    if s_cfg.transform != "none":
        if X.min() < 0:
            raise ValueError(
                f"{rec.id}: transform {s_cfg.transform!r} needs non-negative data "
                f"(counts); the signal reaches {X.min():g}"
            )
        X = np.sqrt(X) if s_cfg.transform == "sqrt" else np.log1p(X)
    times = table["stop"].to_numpy(float) - 1.0 / rec.sfreq  # as windows() reads targets
    behavior = {}
    for b in _behaviour_names(rec, config):
        v = np.asarray(target_at(rec, b, times), dtype=np.float64)
        behavior[b] = v.reshape(len(v), -1)
    n = len(X)
    train = np.ones(n, bool)
    test = np.zeros(n, bool)
    if config.decoding is not None:
        n_test = int(round(config.decoding.test_fraction * n))
        gap = resolve_gap(table, config.decoding.gap, what="decoding.gap")
        gap = max(gap, config.model.receptive_field * step)
        test[n - n_test :] = True
        first_test = float(table["start"].iloc[n - n_test])
        train = table["stop"].to_numpy(float) <= first_test - gap
        if train.sum() < max(2 * config.model.receptive_field, 10) or n_test < 10:
            raise ValueError(
                f"{rec.id}: {int(train.sum())} training and {n_test} test samples "
                f"(gap {gap:g} s); give a longer recording or another test_fraction"
            )
        check_split(
            table, np.flatnonzero(train), np.flatnonzero(test), within_recording=True, gap=gap
        )
    if config.samples.standardize:
        mean, std = X[train].mean(0), X[train].std(0)
        X = (X - mean) / np.where(std > 0, std, 1.0)
    data = _Data(rec, name, X.astype(np.float32), times, 1.0 / step, behavior, train, test)
    data.columns = [
        b if v.shape[1] == 1 else f"{b}[{j}]"
        for b, v in behavior.items()
        for j in range(v.shape[1])
    ]
    return data


# --------------------------------------------------------------------------- training


def _labels(data: _Data, config: EmbedConfig) -> np.ndarray | None:
    if not config.model.uses_labels:
        return None
    label = data.behavior[_short(config.condition_on)]
    if config.model.conditional == "discrete":
        return label[:, 0]
    return label


def _train(
    config: EmbedConfig,
    mode: str,
    items: Sequence[_Data],
    labels: Sequence[np.ndarray | None],
    verbose: bool,
) -> tuple[list[Any], list[np.ndarray]]:
    """Fit the models of one mode; return them and each recording's embedding (all samples)."""
    if mode == "multi_session":
        model = config.model.estimator(config.seed, verbose)
        ys = (
            None
            if labels[0] is None
            else [lab[d.train] for d, lab in zip(items, labels, strict=True)]
        )
        model.fit([d.X[d.train] for d in items], ys)
        return [model], [model.transform(d.X, k) for k, d in enumerate(items)]
    models, embs = [], []
    for d, lab in zip(items, labels, strict=True):
        model = config.model.estimator(config.seed, verbose)
        model.fit(d.X[d.train], None if lab is None else lab[d.train])
        models.append(model)
        embs.append(model.transform(d.X))
    return models, embs


def _shuffled_nulls(config: EmbedConfig, mode: str, items: Sequence[_Data]) -> list[np.ndarray]:
    """Scores of models retrained on circularly shifted behaviour: ``(n_permutations, metrics)``.

    Each permutation shifts every behaviour of a recording by one random offset (along time,
    wrapping around), then trains the mode's models on it and decodes the shifted behaviour, so
    that the whole pipeline sees behaviour with its own autocorrelation but no relation to the
    neural data.
    """
    from ..evaluate.permutation import permute_labels

    dec = config.decoding
    seeds = np.random.SeedSequence([config.seed, 2]).spawn(dec.n_permutations)
    runs = []
    for seed in progress(
        seeds, len(seeds), f"{mode}: retraining on shifted behaviour", config.progress
    ):
        rng = np.random.default_rng(seed)
        fake = []
        for d in items:
            order = permute_labels(np.arange(len(d.X)), scheme="circular_shift", rng=rng)
            shifted = {b: v[order] for b, v in d.behavior.items()}
            fake.append(_Data(d.rec, d.name, d.X, d.times, d.sfreq, shifted, d.train, d.test))
        _, embs = _train(config, mode, fake, [_labels(f, config) for f in fake], False)
        decoded = config.decoded(list(items[0].behavior))
        runs.append(
            [
                _scores(dec, config.model.similarity, e, f.behavior[decoded], f)
                for e, f in zip(embs, fake, strict=True)
            ]
        )
    return [np.asarray([run[k] for run in runs], dtype=float) for k in range(len(items))]


# --------------------------------------------------------------------------- decoding


def _decoder(config: DecodingConfig, similarity: str) -> Any:
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    from ..evaluate.baselines import BlockedRidgeCV

    metric = "cosine" if similarity == "cosine" else "minkowski"
    if config.decoder == "ridge":
        return BlockedRidgeCV()
    cls = KNeighborsClassifier if config.classification else KNeighborsRegressor
    return cls(n_neighbors=config.n_neighbors, metric=metric)


def _scores(
    config: DecodingConfig, similarity: str, emb: np.ndarray, target: np.ndarray, data: _Data
) -> list[float]:
    """Every metric of a decoder fitted on the training part, scored on the held-out part."""
    from sklearn.base import clone

    from ..evaluate.metrics import METRICS

    y = target[:, 0] if target.shape[1] == 1 else target
    if config.classification:
        y = y.astype(str)
    model = clone(_decoder(config, similarity)).fit(emb[data.train], y[data.train])
    outputs: dict[str, np.ndarray] = {}
    out = []
    for name in config.metrics:
        metric = METRICS[name]
        if metric.needs == "predict":
            if "predict" not in outputs:
                outputs["predict"] = model.predict(emb[data.test])
            out.append(float(metric.func(y[data.test], outputs["predict"])))
        else:
            if "proba" not in outputs:
                outputs["proba"] = model.predict_proba(emb[data.test])
            out.append(float(metric.func(y[data.test], outputs["proba"], labels=model.classes_)))
    return out


def _entry(score: float, null: np.ndarray, greater: bool) -> dict[str, float | None]:
    from ..evaluate.permutation import PermutationResult

    res = PermutationResult(score, np.asarray(null, dtype=float), greater)
    return {
        k: (v if math.isfinite(v) else None)
        for k, v in (("score", score), ("chance", res.chance), ("p_value", res.p_value))
    }


def _decode(
    config: EmbedConfig,
    items: Sequence[_Data],
    embs: Sequence[np.ndarray],
    nulls: Sequence[np.ndarray] | None,
) -> list[dict[str, Any]]:
    """Held-out decoding of each recording, with its chance level.

    ``nulls`` (shuffled-label chance): per recording, the scores ``(n, n_metrics)`` of models
    retrained on shifted behaviour; None: permute the decoder's targets here.
    """
    from ..evaluate.metrics import METRICS
    from ..evaluate.permutation import permuted_targets

    dec = config.decoding
    out = []
    for k, (d, emb) in enumerate(zip(items, embs, strict=True)):
        target = d.behavior[config.decoded(list(d.behavior))]
        score = _scores(dec, config.model.similarity, emb, target, d)
        if nulls is not None:
            null = np.asarray(nulls[k], dtype=float).reshape(-1, len(dec.metrics))
        else:
            shifted = permuted_targets(
                target,
                dec.n_permutations,
                scheme="circular_shift",
                order=d.times,
                random_state=config.seed + k,
            )
            loop = progress(shifted, len(shifted), f"chance of {d.name}", config.progress)
            null = np.asarray(
                [_scores(dec, config.model.similarity, emb, t, d) for t in loop], dtype=float
            ).reshape(-1, len(dec.metrics))
        out.append(
            {
                m: _entry(score[j], null[:, j], METRICS[m].greater_is_better)
                for j, m in enumerate(dec.metrics)
            }
        )
    return out


def _consistency(
    config: EmbedConfig,
    items: Sequence[_Data],
    embs: Sequence[np.ndarray],
    notes: list[str],
    what: str,
) -> dict[str, Any] | None:
    from ..models.contrastive import consistency_score

    if len(items) < 2:
        return None
    behaviour = (
        config.consistency.behavior
        or config.condition_on
        or config.decoded(list(items[0].behavior))
    )
    rows = [
        d.test if config.consistency.part == "test" and d.test.any() else np.ones(len(d.X), bool)
        for d in items
    ]
    try:
        scores = consistency_score(
            [e[r] for e, r in zip(embs, rows, strict=True)],
            [d.behavior[_short(behaviour)][r] for d, r in zip(items, rows, strict=True)],
            n_bins=config.consistency.n_bins, names=[d.rec.id for d in items],
            normalize=config.consistency.normalize,
        )  # fmt: skip
    except ValueError as err:
        notes.append(f"{what} consistency not computed: {err}")
        return None
    matrix = [
        [None if not math.isfinite(v) else float(v) for v in row] for row in scores.to_numpy()
    ]
    return {
        "labels": [d.rec.id for d in items],
        "matrix": matrix,
        "behavior": _short(behaviour),
        "mean": float(scores.attrs["mean"]),
        "n_bins_used": int(scores.attrs["n_bins_used"]),
    }


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _embedding_figure(
    path: Path, d: _Data, panels: Sequence[tuple[str, np.ndarray]], color_by: str
) -> None:
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(d.X), min(len(d.X), _MAX_POINTS), replace=False))
    color = d.behavior[color_by][idx, 0] if color_by in d.behavior else d.times[idx]
    label = color_by if color_by in d.behavior else "time (s)"
    fig = _figure(4.2 * len(panels) + 0.8, 4.0)
    for k, (title, emb) in enumerate(panels):
        three = emb.shape[1] >= 3
        ax = fig.add_subplot(1, len(panels), k + 1, projection="3d" if three else None)
        pts = emb[idx]
        if three:
            sc = ax.scatter(
                pts[:, 0], pts[:, 1], pts[:, 2], c=color, s=2, cmap="viridis", linewidths=0
            )
            ax.set_zticks([])
        else:
            second = pts[:, 1] if emb.shape[1] > 1 else np.zeros(len(pts))
            sc = ax.scatter(pts[:, 0], second, c=color, s=2, cmap="viridis", linewidths=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\n{d.name}", fontsize=8)
    fig.colorbar(sc, ax=fig.axes, shrink=0.7, label=label)
    fig.savefig(path, dpi=100)


def _consistency_figure(
    path: Path, result: dict[str, Any], names: Sequence[str], title: str
) -> None:
    matrix = np.array([[np.nan if v is None else v for v in row] for row in result["matrix"]])
    n = len(names)
    fig = _figure(max(4.5, 2.5 + 0.7 * n), max(3.8, 2.2 + 0.6 * n))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0, cmap="magma")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] < 0.6 else "black",
                )
    ax.set_xlabel("aligned to")
    ax.set_ylabel("reference")
    ax.set_title(f"{title}\nheld-out R² of linear maps, mean {result['mean']:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)


def _loss_figure(path: Path, curves: Sequence[tuple[str, Sequence[float]]]) -> None:
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    for name, loss in curves:
        loss = np.asarray(loss, dtype=float)
        width = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax.plot(np.arange(len(smooth)) + width - 1, smooth, lw=1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("training loss", fontsize=9)
    if len(curves) <= 10:
        ax.legend(fontsize=6)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- the stage


def _torch_threads(threads: int | None) -> Any:
    import contextlib

    import torch

    @contextlib.contextmanager
    def scope() -> Any:
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return scope()


def embed(config: EmbedConfig, stores: Sequence[str | Path], folder: str | Path) -> dict[str, Any]:
    """Train the embeddings of ``config`` on ``stores`` and write the embed folder.

    Parameters
    ----------
    config : EmbedConfig
    stores : sequence of path-like
        Store paths or folders of stores.
    folder : path-like
        The output folder (created).

    Returns
    -------
    dict
        The content of ``summary.json``: ``analysis``, ``description``, ``mode``,
        ``recordings`` (``id``, ``subject``, ``modality``, ``n_samples``, ``n_train``,
        ``n_test``, ``behavior`` (column names), ``embedding`` (its npz file) and
        ``decoding``: metric → ``score``, ``chance``, ``p_value``; metrics of the
        per-recording models are suffixed `` (per recording)`` in mode ``both``),
        ``consistency`` (``labels``, ``matrix``, ``mean``; None for one recording; in mode
        ``both`` of the multi-session model, and ``consistency_per_recording`` of the others),
        ``model`` (the model config and the mode), ``models``, ``figures``, ``notes`` and
        ``seconds``.

    Raises
    ------
    StageError
        Naming the analysis and what is wrong (no matching recording, a missing behaviour,
        recordings too short for the held-out part).
    """
    t0 = time.perf_counter()
    where = f"stage embed ({config.analysis})"
    folder = Path(folder)
    recs = open_stores(stores, config.samples, stage="embed")
    names = _safe_names(recs)
    try:
        items = [_prepare(r, n, config) for r, n in zip(recs, names, strict=True)]
        labels = [_labels(d, config) for d in items]
    except (ValueError, KeyError) as err:
        raise StageError(f"{where}: samples: {err}") from None
    decoded = config.decoded(list(items[0].behavior)) if items[0].behavior else None
    if config.decoding is not None and decoded is None:
        raise StageError(
            f"{where}: decoding: the recordings have no behaviour to decode; set decoding: null"
        )
    if config.mode == "multi_session":
        dims = {lab.shape[1:] for lab in labels if lab is not None}
        if len(dims) > 1:
            raise StageError(
                f"{where}: condition_on {config.condition_on!r} has different "
                f"dimensions across recordings: {sorted(dims)}"
            )
    verbose = sys.stderr.isatty() if config.progress is None else bool(config.progress)
    for sub in ("embeddings", "models", "figures"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    with _torch_threads(config.threads):
        for mode in config.modes:
            try:
                models, embs = _train(config, mode, items, labels, verbose)
            except (ValueError, RuntimeError) as err:
                raise StageError(f"{where}: model ({mode}): {err}") from None
            dec = config.decoding
            nulls = None
            if dec is not None and dec.chance == "shuffled_labels" and dec.n_permutations:
                nulls = _shuffled_nulls(config, mode, items)
            decoding = _decode(config, items, embs, nulls) if dec is not None else None
            consistency = _consistency(config, items, embs, notes, mode)
            results[mode] = {
                "models": models,
                "embs": embs,
                "decoding": decoding,
                "consistency": consistency,
            }
    primary = config.modes[0]
    written_models, figures = [], []
    for mode, res in results.items():
        for k, model in enumerate(res["models"]):
            sub = folder / "models" / ("multi_session" if mode == "multi_session" else names[k])
            sub.mkdir(parents=True, exist_ok=True)
            model.save(sub / "model.pt")
            written_models.append(str((sub / "model.pt").relative_to(folder)))
        target = folder / "embeddings" if mode == primary else folder / "embeddings" / mode
        target.mkdir(parents=True, exist_ok=True)
        for d, emb in zip(items, res["embs"], strict=True):
            np.savez(
                target / f"{d.name}.npz",
                embedding=emb.astype(np.float32),
                time=d.times,
                behavior=d.matrix(),
                behavior_names=np.array(d.columns, dtype=str),
                train=d.train,
                test=d.test,
            )
    color_by = _short(config.color_by or config.condition_on or (decoded or ""))
    for d, k in zip(items, range(len(items)), strict=True):
        panels = [(mode.replace("_", " "), results[mode]["embs"][k]) for mode in config.modes]
        rel = f"figures/embedding_{d.name}.png"
        _embedding_figure(folder / rel, d, panels, color_by)
        figures.append(rel)
    for mode in config.modes:
        cons = results[mode]["consistency"]
        if cons is not None:
            rel = (
                "figures/consistency.png" if mode == primary else f"figures/consistency_{mode}.png"
            )
            _consistency_figure(
                folder / rel,
                cons,
                _display_names([d.rec for d in items]),
                f"consistency, {mode.replace('_', ' ')}",
            )
            figures.append(rel)
    curves = []
    for mode in config.modes:
        for k, model in enumerate(results[mode]["models"]):
            label = "multi-session" if mode == "multi_session" else items[k].name
            curves.append((label, model.log_.get("loss", [])))
    _loss_figure(folder / "figures/loss.png", curves)
    figures.append("figures/loss.png")

    recordings = []
    for k, d in enumerate(items):
        decoding: dict[str, Any] = {}
        for mode in config.modes:
            part = results[mode]["decoding"]
            if part is None:
                continue
            suffix = "" if mode == primary else " (per recording)"
            decoding.update({f"{m}{suffix}": v for m, v in part[k].items()})
        recordings.append({
            "id": d.rec.id, "subject": d.rec.identity["subject"],
            "modality": d.rec.identity["modality"], "n_samples": int(len(d.X)),
            "n_train": int(d.train.sum()), "n_test": int(d.test.sum()),
            "behavior": d.columns, "decoded": decoded, "embedding": f"embeddings/{d.name}.npz",
            "decoding": decoding or None,
        })  # fmt: skip
    summary = {
        "analysis": config.analysis,
        "description": config.description,
        "mode": config.mode,
        "recordings": recordings,
        "consistency": results[primary]["consistency"],
        "model": {**config.model.model_dump(mode="json"), "mode": config.mode},
        "models": written_models,
        "figures": figures,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if config.mode == "both":
        summary["consistency_per_recording"] = results["per_recording"]["consistency"]
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


@register
class EmbedStage(Stage):
    """Contrastive embeddings per recording and across recordings, decoded and compared."""

    name = "embed"
    Config = EmbedConfig
    inputs = {"stores": Slot("recording stores, or folders of stores", many=True)}
    outputs = {
        "embedding": Slot("folder: summary.json, embeddings/*.npz, models/, figures/", folder=True)
    }

    def run(
        self, config: EmbedConfig, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]
    ) -> dict[str, Any]:
        """Embed, write the folder, return the decoding scores and the mean consistency."""
        summary = embed(config, inputs["stores"], outputs["embedding"])
        cons = summary["consistency"]
        return {
            "decoding": {r["id"]: r["decoding"] for r in summary["recordings"]},
            "consistency_mean": None if cons is None else cons["mean"],
            "seconds": summary["seconds"],
        }
