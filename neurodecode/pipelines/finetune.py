"""The ``finetune`` stage: few-shot behaviour decoding from spike tokens, pretrained or not.

One job reads spike (or calcium) stores, cuts every recording into token windows
(:func:`neurodecode.data.tokens.spike_windows`: current window plus its past window) inside its
stored ``train``/``valid`` intervals (the labelled pool) and its ``test`` intervals (scored),
and decodes a behaviour (a ``behavior_*`` variable: regression) or the event label active in
each window (classification) with :class:`~neurodecode.models.spikes.SpikeDecoder`, from the
first ``fraction`` of the labelled time of each recording (the earliest block: few-shot means
little labelled time, never a random subset of windows). Each fraction trains:

* ``pretrained``: the model of a ``pretrain`` job (its ``pretrained`` input), every weight
  fine-tuned; units new to its vocabulary (a new session) get new embedding rows, first
  identified alone on the next-token likelihood of every window of the training period
  (unlabelled: no target is read);
* ``units``: the same, but only the new units' embeddings and the behaviour head learn
  (unit identification, POYO's recipe for a new session; everything else frozen);
* ``scratch``: the same network from a random initialisation;
* the baselines ``ridge`` and ``knn`` on square-root spike counts per unit of the current and
  past windows.

Every score comes with its permutation chance: the fixed test predictions scored against
permuted test targets (circular shifts for time series, shuffles within a recording for
trials), and a p-value. The test windows that overlap what the pretraining saw are counted
(``test_in_pretraining``; 0 when the pretraining kept to the stores' train intervals).

A config::

    analysis: sim_position
    target: position
    fractions: [0.01, 0.1, 1.0]
    variants: [pretrained, units, scratch]
    max_epochs: 20

The output folder::

    metrics.json    few_shot rows {dataset, variant, fraction, metric, score, chance, p_value,
                    baseline, baseline_name, n_labelled, seed}, the split, the pretraining
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from ..config import StageConfig
from .base import Slot, Stage, StageError, register
from .cross_subject import _dataset_name, compute_threads, samples_in_spans, sources_digest
from .decode import BehaviorRange, _as_strings, open_stores
from .pretrain import PretrainModel
from .spike_pretrain import with_intervals

__all__ = ["FinetuneStage", "FinetuneStageConfig", "finetune"]

Variant = Literal["pretrained", "units", "scratch"]
Baseline = Literal["ridge", "knn"]


class FinetuneStageConfig(StageConfig):
    """Config of the ``finetune`` stage.

    Attributes
    ----------
    analysis : str
        Name of the analysis (in ``metrics.json`` and the report).
    description : str
    dataset : str, optional
        Name of the dataset (default: the first store's name).
    model : PretrainModel
        The spike model config used without a ``pretrained`` input (with one, the
        pretraining's own config is used, so ``scratch`` is the same network).
    modality, task : str, optional
        Keep the recordings of this modality / task.
    subjects, runs : list of str, optional
    target : str, optional
        A ``behavior_*`` variable to decode (regression), e.g. ``position``.
    labels : dict of str to str, optional
        Event label → class (classification of the event active at each window's centre;
        windows without one are left out). Give ``target`` or ``labels``.
    where : dict of str to BehaviorRange
        Keep only windows whose behaviour at the centre lies in a range (``speed: {above:
        20}``: running epochs), training and test alike.
    fractions : list of float
        Shares of the labelled time, each the earliest block of every recording's training
        windows.
    variants : list of {"pretrained", "units", "scratch"}
        Models trained at each fraction; ``pretrained`` and ``units`` need a ``pretrained``
        input and are skipped without one.
    baselines : list of {"ridge", "knn"}
    train_intervals, test_intervals : list of str
        Stored intervals of the labelled pool and of the test windows.
    stride : float, optional
        Step between window starts (s); default the model's window.
    time_range : (float or None, float or None), optional
        Only this part of every recording (s).
    split : (float, float, float), optional
        Cut every recording in time into train / valid / test intervals with these fractions,
        ``split_gap`` seconds apart, instead of the stored ones (use the pretraining's split).
    split_gap : float
        Seconds between the blocks of ``split``; also the distance required between training
        and test spans (past windows included).
    val_fraction : float
        Last share in time of the labelled windows that stops training early.
    max_epochs, patience : int, optional
        Override the model config's values.
    lr : float, optional
    n_permutations : int
        Permuted test targets per chance level.
    seed : int
    threads : int, optional
        torch and BLAS threads (None: the libraries' defaults).
    """

    analysis: str = Field("finetune", min_length=1)
    description: str = ""
    dataset: str | None = None
    model: PretrainModel = Field(default_factory=lambda: PretrainModel(config="spike_gpt"))
    modality: str | None = None
    task: str | None = None
    subjects: list[str] | None = None
    runs: list[str] | None = None
    target: str | None = None
    labels: dict[str, str] | None = None
    where: dict[str, BehaviorRange] = Field(default_factory=dict)
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    variants: list[Variant] = Field(default_factory=lambda: ["pretrained", "units", "scratch"])
    baselines: list[Baseline] = Field(default_factory=lambda: ["ridge", "knn"])
    train_intervals: list[Literal["train", "valid", "test"]] = Field(
        default_factory=lambda: ["train", "valid"])
    test_intervals: list[Literal["train", "valid", "test"]] = Field(
        default_factory=lambda: ["test"])
    stride: float | None = Field(None, gt=0)
    time_range: tuple[float | None, float | None] | None = None
    split: tuple[float, float, float] | None = None
    split_gap: float = Field(2.0, ge=0)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    max_epochs: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    n_permutations: int = Field(100, ge=0)
    seed: int = 0
    threads: int | None = Field(1, ge=1)

    @field_validator("subjects", "runs", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return _as_strings(value)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < f <= 1 for f in value):
            raise ValueError(f"fractions {value} must be in (0, 1]")
        return sorted(set(value))

    @model_validator(mode="after")
    def _what(self) -> FinetuneStageConfig:
        if (self.target is None) == (self.labels is None):
            raise ValueError("give a behaviour `target` (regression) or event `labels` "
                             "(classification), not both or neither")
        if self.model.family != "spike_tokens":
            raise ValueError(f"model {self.model.config!r} is not a spike-token model (e.g. "
                             "spike_gpt); codebook models are fine-tuned by cross_subject")
        if set(self.train_intervals) & set(self.test_intervals):
            raise ValueError(f"train_intervals {self.train_intervals} and test_intervals "
                             f"{self.test_intervals} overlap")
        return self

    @property
    def kind(self) -> str:
        """``"regression"`` (a behaviour target) or ``"classification"`` (event labels)."""
        return "regression" if self.target is not None else "classification"


# --------------------------------------------------------------------------- targets


def _targets(recs: Sequence[Any], windows: Any, config: FinetuneStageConfig, window: float
             ) -> np.ndarray:
    """Each window's target at its current window's centre (object ``""``: no label)."""
    from ..data.samples import label_at, target_at

    by_id = {r.id: r for r in recs}
    table = windows.table
    centre = table["window_start"].to_numpy(float) + window / 2
    out: np.ndarray | None = None
    for rid, rows in table.groupby("recording", sort=False).indices.items():
        rec = by_id[rid]
        if config.target is not None:
            values = np.asarray(target_at(rec, config.target, centre[rows]), dtype=np.float64)
            values = values.reshape(len(rows), -1)
            if out is None:
                out = np.full((len(table), values.shape[1]), np.nan)
            out[rows] = values
        else:
            if out is None:
                out = np.full(len(table), "", dtype=object)
            out[rows] = label_at(rec, centre[rows], config.labels)
    assert out is not None
    return out


def _usable(y: np.ndarray, recs: Sequence[Any], windows: Any,
            where: Mapping[str, BehaviorRange], window: float) -> np.ndarray:
    """Windows with a target (finite behaviour, or a label) inside the ``where`` ranges."""
    from ..data.samples import target_at

    keep = y != "" if y.dtype == object else np.isfinite(y).all(axis=1)
    by_id = {r.id: r for r in recs}
    centre = windows.table["window_start"].to_numpy(float) + window / 2
    for name, bounds in where.items():
        values = np.empty(len(keep))
        for rid, rows in windows.table.groupby("recording", sort=False).indices.items():
            v = np.asarray(target_at(by_id[rid], name, centre[rows]), dtype=np.float64)
            if v.ndim != 1:
                raise StageError(f"stage finetune: where: behaviour {name!r} has "
                                 f"{v.shape[1]} dimensions; a range needs a 1-D behaviour")
            values[rows] = v
        if bounds.above is not None:
            keep &= values > bounds.above
        if bounds.below is not None:
            keep &= values < bounds.below
    return keep


def earliest(table: Any, fraction: float) -> np.ndarray:
    """Rows of the first ``fraction`` of every recording's labelled time (its earliest block).

    The time is the union of the windows' spans (past windows included; the gaps between
    intervals do not count), see :func:`~neurodecode.models.spikes.finetune.fraction_blocks`.
    With a ``segment`` column (e.g. trial cells of one condition each,
    :attr:`~neurodecode.data.spike_tasks.SpikeTask.segments`), every segment of a recording
    gives its own earliest block.
    """
    from ..models.spikes.finetune import fraction_blocks

    groups = table["recording"].astype(str)
    if "segment" in table.columns:
        groups = groups + "/" + table["segment"].astype(str)
    return fraction_blocks(len(table), fraction, table["start"].to_numpy(float),
                           table["stop"].to_numpy(float), groups=groups.to_numpy())


# --------------------------------------------------------------------------- scoring


def _metric(kind: str) -> tuple[str, Any]:
    from ..evaluate.metrics import balanced_accuracy, r2

    return ("r2", r2) if kind == "regression" else ("balanced_accuracy", balanced_accuracy)


def _scored(y: np.ndarray, pred: np.ndarray, kind: str, test: Any, n_permutations: int,
            seed: int) -> dict[str, float]:
    """Score, chance (mean of the permutation null) and p-value of fixed predictions."""
    from ..evaluate.permutation import default_scheme, permutation_p_value, permuted_targets

    _, fn = _metric(kind)
    y_fit = y if kind == "regression" else y.astype(str)
    pred = pred if kind == "regression" else np.asarray(pred).astype(str)
    score = float(fn(y_fit, pred))
    if n_permutations == 0:
        return {"score": score, "chance": float("nan"), "p_value": float("nan")}
    scheme = default_scheme(y_fit, test.table)
    perms = permuted_targets(y_fit, n_permutations, scheme=scheme,
                             groups=test.table["recording"].to_numpy(),
                             order=test.table["window_start"].to_numpy(float),
                             random_state=seed)
    null = np.array([fn(p, pred) for p in perms], dtype=float)
    return {"score": score, "chance": float(np.nanmean(null)),
            "p_value": float(permutation_p_value(score, null))}


def count_features(windows: Any, n_vocab: int, units: np.ndarray) -> np.ndarray:
    """Square-root spike counts per unit of the current and the past windows."""
    tokens = windows.tokens
    cur = tokens.counts(n_vocab, "cur")[:, units]
    past = tokens.counts(n_vocab, "past")[:, units]
    return np.sqrt(np.concatenate([cur, past], axis=1)).astype(np.float64)


def _baseline(name: str, kind: str, n_train: int) -> Any:
    """Ridge (logistic for classes) or 15-nearest-neighbours (fewer for tiny blocks)."""
    from ..evaluate import baselines

    if name == "ridge":
        return baselines.ridge() if kind == "regression" else baselines.logistic()
    return baselines.knn(max(1, min(15, n_train)), kind)


# --------------------------------------------------------------------------- the job


def finetune(config: FinetuneStageConfig, stores: Sequence[str | Path],
             pretrained: str | Path | None, folder: str | Path) -> dict[str, Any]:
    """Decode behaviour from few labels, pretrained and from scratch; write ``folder``.

    Parameters
    ----------
    config : FinetuneStageConfig
    stores : sequence of path-like
        Spike or calcium stores (or folders of them) with stored split intervals.
    pretrained : path-like, optional
        The folder of a spike-token ``pretrain`` job.
    folder : path-like
        The output folder (created).

    Returns
    -------
    dict
        The content of ``metrics.json`` (see the module docstring).

    Raises
    ------
    StageError
        No store or recording, no window inside the intervals, no labelled window, a
        pretraining of another family, a leaky split.
    """
    from ..data.splits import LeakageError, check_split
    from ..data.tokens import N_SPECIAL, UnitVocabulary, spike_windows
    from ..evaluate.cv import _jsonable
    from ..models.spikes import SpikeDecoder, SpikePretrainer

    t0 = time.perf_counter()
    folder = Path(folder)
    try:
        recs = with_intervals(open_stores(stores, config, stage="finetune"),
                              config.time_range, config.split, config.split_gap)
    except ValueError as err:
        raise StageError(f"stage finetune: {err}") from None
    pre, coverage, pre_info = None, {}, None
    if pretrained is not None:
        pretrained = Path(pretrained)
        metrics_file = pretrained / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as err:
            raise StageError(f"stage finetune: pretrained {metrics_file}: {err}") from None
        if metrics.get("family") != "spike_tokens":
            raise StageError(f"stage finetune: {pretrained} is not a spike-token pretraining "
                             "(a codebook one? fine-tune those with cross_subject)")
        try:
            pre = SpikePretrainer.load(pretrained / "pretrain.pt")
        except (OSError, ValueError) as err:
            raise StageError(f"stage finetune: {err}") from None
        spk = pre.config_
        vocab = UnitVocabulary.from_state(pre.vocabulary_.state_dict())
        coverage = metrics.get("coverage") or {}
        pre_info = {"path": str(pretrained.resolve()), "analysis": metrics.get("analysis")}
    else:
        spk = config.model.resolve_spikes()
        vocab = UnitVocabulary()
    known = len(vocab)
    tok = spk.tokenizer()
    try:
        pool = spike_windows(recs, tok, vocab, stride=config.stride,
                             intervals=config.train_intervals)
        test = spike_windows(recs, tok, vocab, stride=config.stride,
                             intervals=config.test_intervals)
    except ValueError as err:
        raise StageError(f"stage finetune: {err}") from None
    new_units = vocab.keys[known - N_SPECIAL:] if pre is not None else []
    # every window of the training period, labelled or not: what identifies the new units
    unlabelled = pool.tokens if new_units else None
    try:
        y_pool = _targets(recs, pool, config, tok.window)
        y_test = _targets(recs, test, config, tok.window)
    except ValueError as err:
        raise StageError(f"stage finetune: {err}") from None
    try:
        ok_pool = _usable(y_pool, recs, pool, config.where, tok.window)
        ok_test = _usable(y_test, recs, test, config.where, tok.window)
    except ValueError as err:
        raise StageError(f"stage finetune: {err}") from None
    pool, y_pool = pool.select(ok_pool), y_pool[ok_pool]
    test, y_test = test.select(ok_test), y_test[ok_test]
    for part, names in ((pool, config.train_intervals), (test, config.test_intervals)):
        if not len(part):
            raise StageError(f"stage finetune: no labelled window in the {'/'.join(names)} "
                             f"intervals ({config.target or 'labels ' + str(config.labels)})")
    both = pd.concat([pool.table, test.table], ignore_index=True)
    try:
        check_split(both, np.arange(len(pool)), np.arange(len(pool), len(both)),
                    # the blocks are split_gap apart: windows inside them too (rounding aside)
                    within_recording=True,
                    gap=max(0.0, config.split_gap - 1e-6) if config.split else 0.0)
    except LeakageError as err:
        raise StageError(f"stage finetune: {err}") from None
    if config.kind == "classification":
        y_pool, y_test = y_pool.astype(str), y_test.astype(str)
    units = np.arange(N_SPECIAL, len(vocab))
    present = np.unique(np.concatenate([pool.tokens.cur_unit, pool.tokens.past_unit,
                                        test.tokens.cur_unit, test.tokens.past_unit]))
    units = units[np.isin(units, present)]
    metric, _ = _metric(config.kind)
    dataset = _dataset_name(config, [Path(p) for p in stores])
    overrides = {k: v for k, v in (("max_epochs", config.max_epochs),
                                   ("patience", config.patience), ("lr", config.lr)) if v}
    variants = [v for v in config.variants if v == "scratch" or pre is not None]
    rows: list[dict[str, Any]] = []
    for fraction in config.fractions:
        labelled = earliest(pool.table, fraction)
        train, y_train = pool.select(labelled), y_pool[labelled]  # in time order
        base_scores: dict[str, float] = {}
        for name in config.baselines:
            X_train = count_features(train, len(vocab), units)
            est = _baseline(name, config.kind, len(train))
            try:
                est.fit(X_train, y_train)
            except ValueError as err:  # e.g. one class only in a tiny labelled block
                rows.append({"dataset": dataset, "variant": name, "fraction": fraction,
                             "metric": metric, "score": None, "chance": None, "p_value": None,
                             "n_labelled": int(len(train)), "error": str(err)})
                continue
            pred = est.predict(count_features(test, len(vocab), units))
            s = _scored(y_test, pred, config.kind, test, config.n_permutations, config.seed)
            base_scores[name] = s["score"]
            rows.append({"dataset": dataset, "variant": name, "fraction": fraction,
                         "metric": metric, **s, "n_labelled": int(len(train)),
                         "seed": config.seed})
        for variant in variants:
            decoder = SpikeDecoder(
                pretrained=None if variant == "scratch" else pre,
                config=spk, task=config.kind,
                train="units" if variant == "units" else "all",
                val_fraction=config.val_fraction, seed=config.seed, **overrides)
            try:
                decoder.fit(train.tokens, y_train, vocabulary=vocab,
                            unlabelled=None if variant == "scratch" else unlabelled)
            except ValueError as err:
                raise StageError(f"stage finetune: {variant} at fraction {fraction:g}: "
                                 f"{err}") from None
            pred = decoder.predict(test.tokens)
            s = _scored(y_test, pred, config.kind, test, config.n_permutations, config.seed)
            rows.append({"dataset": dataset, "variant": variant, "fraction": fraction,
                         "metric": metric, **s, "n_labelled": int(len(train)),
                         "seed": config.seed})
        ref = config.baselines[0] if config.baselines else None
        for row in rows:
            if row["fraction"] == fraction and ref is not None:
                row["baseline"] = base_scores.get(ref)
                row["baseline_name"] = ref
    data = {
        "family": "spike_tokens",
        "analysis": config.analysis,
        "description": config.description,
        "dataset": dataset,
        "target": config.target if config.target is not None else "labels",
        "task": config.kind,
        "metric": metric,
        "pretrained": pre_info,
        "model": {"name": spk.name, "window": tok.window, "past": tok.past, "dt": tok.dt},
        "split": {"train": "/".join(config.train_intervals),
                  "test": "/".join(config.test_intervals), "gap": config.split_gap,
                  "fractions": config.split, "time_range": config.time_range,
                  "n_train": int(len(pool)), "n_test": int(len(test))},
        "units": {"n": int(len(units)), "new": len(new_units)},
        "test_in_pretraining": samples_in_spans(test, coverage) if coverage else 0,
        "few_shot": rows,
        "seed": int(config.seed),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    data = _jsonable(data)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


@register
class FinetuneStage(Stage):
    """Few-shot behaviour decoding from spike tokens: pretrained, unit identification, scratch."""

    name = "finetune"
    Config = FinetuneStageConfig
    version = (f"1+{sources_digest('neurodecode/models/spikes/*.py', 'models/spike*.yaml')}"
               f"+{sources_digest('neurodecode/data/tokens.py')}")
    inputs = {"stores": Slot("spike or calcium stores with split intervals, or folders of them",
                             many=True),
              "pretrained": Slot("a spike-token pretrain stage's folder", required=False,
                                 folder=True)}
    outputs = {"finetuned": Slot("folder: metrics.json (few-shot rows with chance and "
                                 "baselines)", folder=True)}

    def run(self, config: FinetuneStageConfig, inputs: Mapping[str, list[Path]],
            outputs: Mapping[str, Path]) -> dict[str, Any]:
        """Fine-tune at every fraction, write the folder, return the scores."""
        pre = inputs.get("pretrained") or []
        with compute_threads(config.threads):
            data = finetune(config, inputs["stores"], pre[0] if pre else None,
                            outputs["finetuned"])
        return {"few_shot": [{k: r.get(k) for k in ("variant", "fraction", "score", "chance")}
                             for r in data["few_shot"]],
                "seconds": data["seconds"]}
