"""The ``decode`` stage: a baseline or any scikit-learn estimator, cross-validated with chance.

One job reads recording stores, builds samples from them with :mod:`neurodecode.data.samples`
(event-locked ``epochs``, sliding ``windows`` or ``time_samples``), and cross-validates an
estimator with :func:`neurodecode.evaluate.cross_validate`: every fold is checked for leakage,
scores come from held-out samples only, normalisation is a step of the estimator (fitted on the
training folds) and the chance level and p-value come from refitting on permuted targets. The
result is one ``metrics.json`` file (the format the report reads, see :func:`decode`).

A config names everything by value, so a workflow can hash it::

    analysis: eegbci_hands_vs_feet
    samples: {kind: epochs, tmin: -1.0, tmax: 4.0, l_freq: 7.0, h_freq: 30.0, crop: [1.0, 2.0],
              labels: {imagine_both_fists: hands, imagine_both_feet: feet}, runs: ["06", "10"]}
    estimator: {name: csp_lda, params: {n_components: 4}}
    cv: {name: LeaveOneGroupOut, params: {by: run}}
    metrics: [accuracy, roc_auc]

Every part is validated before any store is opened: an unknown key, baseline, import path,
splitter, parameter or metric is a :class:`~neurodecode.pipelines.StageError` naming it.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..config import StageConfig
from ..evaluate.baselines import FACTORIES
from .base import Slot, Stage, StageError, register

__all__ = [
    "BASELINES",
    "CLASSIFICATION_METRICS",
    "SPLITTERS",
    "BehaviorRange",
    "DecodeConfig",
    "DecodeStage",
    "EpochsSamples",
    "EstimatorConfig",
    "SamplesConfig",
    "SplitterConfig",
    "StepConfig",
    "TimeSamples",
    "WindowsSamples",
    "build_estimator",
    "build_samples",
    "build_splitter",
    "decode",
    "expand_labels",
    "find_stores",
    "open_stores",
]

#: Factories of :mod:`neurodecode.evaluate.baselines` that an ``estimator.name`` may give.
BASELINES = FACTORIES

#: Split rules of :mod:`neurodecode.data.splits` that a ``cv.name`` may give.
SPLITTERS = ("ContiguousBlocks", "LeaveOneGroupOut", "StoredIntervals", "WithinRecordingShuffle")

#: Metrics of classes (the others score continuous targets).
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "balanced_accuracy", "roc_auc", "top_2_accuracy", "top_5_accuracy"}
)

_DEFAULT_METRICS = {"classification": ["balanced_accuracy", "roc_auc"], "regression": ["r2"]}
_GLOB = set("*?[")


# --------------------------------------------------------------------------- config models


class _Part(StageConfig):
    """A part of a stage config: an unknown key is named with the keys of this part."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values: Any) -> Any:
        if isinstance(values, str) and "name" in cls.model_fields:
            return {"name": values}  # `estimator: csp_lda`, `cv: LeaveOneGroupOut`
        if isinstance(values, Mapping):
            unknown = [str(k) for k in values if k not in cls.model_fields]
            if unknown:
                hint = _hint(unknown[0], list(cls.model_fields))
                raise ValueError(
                    f"unknown parameter(s) {unknown}; {hint}parameters here: "
                    f"{', '.join(cls.model_fields)}"
                )
        return values


class BehaviorRange(_Part):
    """Keep samples whose behaviour lies strictly inside a range (e.g. running epochs).

    Attributes
    ----------
    above : float, optional
        Keep samples whose value is greater than this.
    below : float, optional
        Keep samples whose value is smaller than this.
    """

    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> BehaviorRange:
        if self.above is None and self.below is None:
            raise ValueError("give 'above', 'below' or both")
        if self.above is not None and self.below is not None and self.below <= self.above:
            raise ValueError(f"below ({self.below}) must be greater than above ({self.above})")
        return self


def _as_strings(value: Any) -> Any:
    """Subjects and runs as text (YAML reads ``runs: [06, 10]`` as numbers)."""
    if value is None or isinstance(value, str):
        return [value] if isinstance(value, str) else value
    return [str(v) for v in value]


class _Selection(_Part):
    """Which recordings, channels and samples to keep (shared by every sample kind)."""

    modality: str | None = None
    task: str | None = None
    subjects: list[str] | None = None
    runs: list[str] | None = None
    ch_types: list[str] | None = None
    channels: Literal["strict", "common"] = "strict"
    time_range: tuple[float | None, float | None] | None = None
    where: dict[str, BehaviorRange] = Field(default_factory=dict)
    transform: Literal["none", "sqrt", "log1p"] = "none"

    @field_validator("subjects", "runs", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return _as_strings(value)

    @field_validator("time_range")
    @classmethod
    def _ordered(cls, value: tuple[float | None, float | None] | None) -> Any:
        if value is not None and None not in value and value[1] <= value[0]:
            raise ValueError(f"time_range stop ({value[1]}) must be after its start ({value[0]})")
        return value


class EpochsSamples(_Selection):
    """Event-locked trials (:func:`neurodecode.data.samples.epochs`), one class per label.

    Attributes
    ----------
    tmin, tmax : float
        Epoch limits around each event onset (s).
    labels : list of str or mapping, optional
        Event labels to keep (each its own class), or label → class. Shell-style patterns
        (``"stim/*"``) expand over the events of the recordings.
    baseline : (float, float), optional
        Interval whose per-channel mean is subtracted.
    l_freq, h_freq : float, optional
        Band-pass applied to each whole recording before epoching.
    decim : int
        Keep every ``decim``-th sample.
    crop : (float, float), optional
        Time window of each epoch kept after filtering and epoching (e.g. epochs of -1..4 s
        cropped to 1..2 s, so that the filter's edges fall outside the window).
    """

    kind: Literal["epochs"]
    tmin: float
    tmax: float
    labels: list[str] | dict[str, str] | None = None
    baseline: tuple[float, float] | None = None
    l_freq: float | None = Field(None, gt=0)
    h_freq: float | None = Field(None, gt=0)
    decim: int = Field(1, ge=1)
    crop: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _limits(self) -> EpochsSamples:
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be greater than tmin ({self.tmin})")
        if self.crop is not None:
            lo, hi = self.crop
            if not self.tmin <= lo < hi <= self.tmax:
                raise ValueError(
                    f"crop {list(self.crop)} must lie inside [tmin, tmax] = "
                    f"[{self.tmin}, {self.tmax}] with start < stop"
                )
        if self.l_freq is not None and self.h_freq is not None and self.h_freq <= self.l_freq:
            raise ValueError(f"h_freq ({self.h_freq}) must be above l_freq ({self.l_freq})")
        return self


class WindowsSamples(_Selection):
    """Sliding windows (:func:`neurodecode.data.samples.windows`), target at each window's end.

    Attributes
    ----------
    length, stride : float
        Window length and step (s).
    target : str
        A behaviour covariate (``position``) or ``"events"`` (the event label active at the
        window's end).
    labels : list of str or mapping, optional
        With ``target: events``: labels to keep, or label → class (patterns allowed).
    features : {"signal", "sum", "mean"}
        ``signal``: the windows as ``(n, channels, times)``; ``sum`` (spike counts per window)
        or ``mean``: one value per channel.
    """

    kind: Literal["windows"]
    length: float = Field(gt=0)
    stride: float = Field(gt=0)
    target: str
    labels: list[str] | dict[str, str] | None = None
    features: Literal["signal", "sum", "mean"] = "signal"


class TimeSamples(_Selection):
    """One sample per time step (:func:`neurodecode.data.samples.time_samples`).

    Attributes
    ----------
    target : str
        A behaviour covariate, or ``"events"`` (the label of the event active ``delay`` s
        earlier).
    delay : float
        Seconds from stimulus to response (fMRI: 4-6 s), or the neural lead over behaviour.
    labels : list of str or mapping, optional
        With ``target: events``: labels to keep, or label → class (patterns allowed).
    """

    kind: Literal["time_samples"]
    target: str
    delay: float = 0.0
    labels: list[str] | dict[str, str] | None = None


#: The ``samples`` part of a decode config, chosen by its ``kind``.
SamplesConfig = Annotated[EpochsSamples | WindowsSamples | TimeSamples, Field(discriminator="kind")]


def _task(samples: EpochsSamples | WindowsSamples | TimeSamples) -> str:
    if isinstance(samples, EpochsSamples) or samples.target == "events":
        return "classification"
    return "regression"


def _resolve(name: str, what: str) -> Any:
    """The object an import path ``"package.module:attribute"`` names."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"{what} {name!r}: an import path is 'module:callable' "
            "(e.g. 'sklearn.linear_model:RidgeCV')"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what} {name!r}: cannot import {module_name!r} ({err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {name!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {name!r} is not callable")
    return obj


def _hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_params(
    obj: Any, params: Mapping[str, Any], what: str, provided: Sequence[str] = ()
) -> None:
    """Refuse parameters that ``obj`` does not take (or required ones that are missing)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    names = [
        n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = [k for k in params if k not in names]
    if unknown and not accepts_any:
        raise ValueError(
            f"{what}: unknown parameter(s) {unknown} (parameters: {', '.join(names) or 'none'})"
        )
    missing = [
        n
        for n, p in sig.parameters.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in params
        and n not in provided
    ]
    if missing:
        raise ValueError(f"{what}: missing required parameter(s) {missing}")


class StepConfig(_Part):
    """One step of an estimator: a baseline name or an import path, and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    def factory(self) -> Any:
        """The callable the name refers to (checked, with the parameters)."""
        if ":" in self.name:
            obj = _resolve(self.name, "estimator")
        elif self.name in BASELINES:
            from ..evaluate import baselines

            obj = getattr(baselines, self.name)
        else:
            raise ValueError(
                f"unknown estimator {self.name!r}; {_hint(self.name, BASELINES)}give a baseline "
                f"({', '.join(BASELINES)}) or an import path 'module:callable' (e.g. "
                "'sklearn.linear_model:RidgeCV')"
            )
        _check_params(obj, self.params, f"estimator {self.name!r}", provided=("sfreq",))
        return obj

    @model_validator(mode="after")
    def _known(self) -> StepConfig:
        self.factory()
        return self


class EstimatorConfig(_Part):
    """The estimator: one baseline or callable, or a pipeline of ``steps``.

    Attributes
    ----------
    name : str, optional
        A baseline of :mod:`neurodecode.evaluate.baselines` (:data:`BASELINES`) or an import
        path ``"module:callable"`` of any scikit-learn estimator or factory.
    params : dict
        Its keyword arguments. A baseline that takes ``sfreq`` gets the samples' rate when
        not given.
    steps : list of StepConfig, optional
        Instead of ``name``: steps chained with :func:`sklearn.pipeline.make_pipeline` (named
        by their lower-cased class, e.g. ``ridge``).
    fit_params : dict of str to str
        Extra arguments of ``fit``, one value per sample: a column of the sample table
        (``{ridge__groups: run}``), or ``positions`` for
        :func:`~neurodecode.data.samples.sample_positions` (windows of a contrastive
        embedding must not span removed test blocks).
    """

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepConfig] | None = None
    fit_params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> EstimatorConfig:
        if (self.name is None) == (self.steps is None):
            raise ValueError("give either 'name' (with 'params') or 'steps'")
        if self.steps is not None and self.params:
            raise ValueError("'params' go with 'name'; give each step its own 'params'")
        if self.steps is not None and not self.steps:
            raise ValueError("'steps' is empty")
        if self.name is not None:
            StepConfig(name=self.name, params=self.params)
        return self

    @property
    def label(self) -> str:
        """The baseline name or import path (pipelines: the step names joined by ``→``)."""
        if self.name is not None:
            return self.name
        return " → ".join(step.name for step in self.steps or [])


class SplitterConfig(_Part):
    """The cross-validation splitter.

    Attributes
    ----------
    name : str
        A rule of :mod:`neurodecode.data.splits` (:data:`SPLITTERS`), or an import path of a
        scikit-learn splitter (``"sklearn.model_selection:GroupKFold"``).
    params : dict
        Its parameters (``{by: run}``, ``{n_blocks: 5, gap: 2.0}``). ``StoredIntervals`` reads
        its intervals from the stores (give ``train``, ``test``, ``gap``).
    groups : str or list of str, optional
        For a scikit-learn splitter: the sample-table column(s) whose values are its
        ``groups`` (``subject``, ``run``).
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    groups: str | list[str] | None = None

    def factory(self) -> Any:
        """The splitter class (checked, with the parameters)."""
        from ..data import splits

        if ":" in self.name:
            obj = _resolve(self.name, "splitter")
        elif self.name in SPLITTERS:
            obj = getattr(splits, self.name)
        else:
            raise ValueError(
                f"unknown splitter {self.name!r}; {_hint(self.name, SPLITTERS)}give a rule "
                f"({', '.join(SPLITTERS)}) or an import path 'module:Class' (e.g. "
                "'sklearn.model_selection:GroupKFold')"
            )
        provided = ("intervals",) if obj is splits.StoredIntervals else ()
        if "intervals" in self.params and provided:
            raise ValueError(
                "StoredIntervals reads 'intervals' from the stores; give only train, test and gap"
            )
        _check_params(obj, self.params, f"splitter {self.name!r}", provided=provided)
        return obj

    @model_validator(mode="after")
    def _known(self) -> SplitterConfig:
        from ..data.splits import SplitRule

        obj = self.factory()
        if self.groups is not None and isinstance(obj, type) and issubclass(obj, SplitRule):
            raise ValueError(
                f"'groups' is for scikit-learn splitters; {self.name} reads the "
                "sample table itself (choose its groups with params: {by: ...})"
            )
        return self


class DecodeConfig(StageConfig):
    """Config of the ``decode`` stage.

    Attributes
    ----------
    analysis : str
        Name of the analysis (in ``metrics.json`` and the report).
    description : str
        One line saying what is decoded from what.
    samples : EpochsSamples or WindowsSamples or TimeSamples
        How samples are built from the stores (``kind``: ``epochs``, ``windows``,
        ``time_samples``) and which recordings, channels and samples are kept.
    estimator : EstimatorConfig
    cv : SplitterConfig
    metrics : list of str, optional
        Names in :data:`neurodecode.evaluate.metrics.METRICS`; default ``balanced_accuracy``
        and ``roc_auc`` for classes, ``r2`` for continuous targets.
    n_permutations : int
        Refits with permuted targets for the chance level (0: none).
    permutation : {"auto", "shuffle", "within", "circular_shift"}
        Permutation scheme (see :func:`neurodecode.evaluate.cross_validate`).
    shuffle_targets : bool
        Negative control: permute the targets once (same scheme, another seed) before
        anything, so the score should be at chance.
    n_jobs : int
        Processes for the (permutation, fold) fits.
    seed : int
        Seed of the permutations.
    """

    analysis: str = Field(min_length=1)
    description: str = ""
    samples: SamplesConfig
    estimator: EstimatorConfig
    cv: SplitterConfig
    metrics: list[str] | None = None
    n_permutations: int = Field(100, ge=0)
    permutation: Literal["auto", "shuffle", "within", "circular_shift"] = "auto"
    shuffle_targets: bool = False
    n_jobs: int = 1
    seed: int = 0

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        from ..evaluate.metrics import METRICS

        if value is None:
            return value
        if not value:
            raise ValueError("give at least one metric (or leave 'metrics' out)")
        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown} (metrics: {', '.join(METRICS)})")
        samples = info.data.get("samples")
        if samples is not None:
            task = _task(samples)
            wrong = [
                m for m in value if (m in CLASSIFICATION_METRICS) != (task == "classification")
            ]
            if wrong:
                what = "classes" if task == "classification" else "continuous targets"
                raise ValueError(
                    f"metrics {wrong} do not score {what}, which samples of kind "
                    f"{samples.kind!r} with target {getattr(samples, 'target', 'events')!r} give"
                )
        return value

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``, from the samples' target."""
        return _task(self.samples)

    @property
    def metric_names(self) -> list[str]:
        """The metrics to compute (the defaults of the task when none are given)."""
        return list(self.metrics or _DEFAULT_METRICS[self.task])


# --------------------------------------------------------------------------- building blocks


def find_stores(paths: Sequence[str | Path], stage: str = "decode") -> list[Path]:
    """Every recording store named by ``paths`` (stores, or folders searched recursively).

    Parameters
    ----------
    paths : sequence of path-like
        Store paths or folders of stores.
    stage : str
        Stage name for the error message.

    Returns
    -------
    list of Path
        Each store once, in the order found.

    Raises
    ------
    StageError
        If a path holds no recording store.
    """
    from ..store import find_recordings

    out: dict[str, Path] = {}
    for path in paths:
        found = find_recordings(path)
        if not found:
            raise StageError(f"stage {stage}: input 'stores' {path} holds no recording store")
        for store in found:
            out.setdefault(str(Path(store).resolve()), Path(store))
    return list(out.values())


def open_stores(paths: Sequence[str | Path], selection: Any, stage: str = "decode") -> list:
    """Open the recordings of ``paths`` that ``selection`` keeps.

    Parameters
    ----------
    paths : sequence of path-like
        Store paths or folders of stores.
    selection : config with ``modality``, ``task``, ``subjects``, ``runs``
    stage : str

    Returns
    -------
    list of neurodecode.data.samples.Recording

    Raises
    ------
    StageError
        No store, or no recording left by the selection (naming it).
    """
    from ..data.samples import open_recordings

    stores = find_stores(paths, stage)
    recs = open_recordings(
        stores,
        modality=selection.modality,
        task=selection.task,
        subjects=selection.subjects,
        runs=selection.runs,
    )
    if not recs:
        asked = {
            k: getattr(selection, k)
            for k in ("modality", "task", "subjects", "runs")
            if getattr(selection, k) is not None
        }
        have = sorted(
            {f"{r.identity['modality']}/{r.identity['task']}" for r in open_recordings(stores)}
        )
        raise StageError(
            f"stage {stage}: samples: no recording of the {len(stores)} store(s) "
            f"matches {asked} (modality/task present: {', '.join(have)})"
        )
    return recs


def expand_labels(
    labels: Sequence[str] | Mapping[str, str] | None, recordings: Sequence[Any]
) -> dict[str, str] | None:
    """Event label → class, with shell-style patterns expanded over the recordings' events.

    Parameters
    ----------
    labels : list of str, mapping or None
        A list (each label its own class) or label → class; keys may be patterns such as
        ``"stim/*"`` (in a list, each matching label is its own class; in a mapping, every
        matching label maps to the value).
    recordings : sequence of Recording

    Returns
    -------
    dict or None

    Raises
    ------
    ValueError
        A label or pattern that no recording has (listing the events there are).
    """
    from ..schema import events_frame

    if labels is None:
        return None
    present = sorted({str(v) for rec in recordings for v in events_frame(rec.ds)["label"]})
    items = (
        [(label, None) for label in labels]
        if not isinstance(labels, Mapping)
        else list(labels.items())
    )
    out: dict[str, str] = {}
    for key, cls in items:
        matched = (
            fnmatch.filter(present, key) if _GLOB & set(key) else ([key] if key in present else [])
        )
        if not matched:
            shown = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "")
            raise ValueError(
                f"labels: event label {key!r} is in no recording (events: {shown or 'none'})"
            )
        for label in matched:
            out[label] = label if cls is None else cls
    return out


def _sample_times(samples: Any, rec: Any, config: Any, rows: np.ndarray) -> np.ndarray:
    """When each sample's target is read (for ``where``): as the samples functions do."""
    table = samples.table.iloc[rows]
    if config.kind == "epochs":
        return table["onset"].to_numpy(float)
    if config.kind == "windows":
        return table["stop"].to_numpy(float) - 1.0 / rec.sfreq
    return table["start"].to_numpy(float) + config.delay


def build_samples(
    recordings: Sequence[Any], config: EpochsSamples | WindowsSamples | TimeSamples
) -> Any:
    """Samples of ``recordings`` as ``config`` asks, through :mod:`neurodecode.data.samples`.

    Parameters
    ----------
    recordings : sequence of Recording
    config : EpochsSamples, WindowsSamples or TimeSamples

    Returns
    -------
    neurodecode.data.samples.Samples

    Raises
    ------
    ValueError
        What the samples functions refuse (no matching event, different channel sets, a
        missing behaviour), a selection that keeps no sample, or a transform of negative data.
    """
    from ..data.samples import Samples, epochs, target_at, time_samples, windows

    mapping = expand_labels(config.labels, recordings)
    common = dict(ch_types=config.ch_types, channels=config.channels)
    if config.kind == "epochs":
        s = epochs(
            recordings,
            tmin=config.tmin,
            tmax=config.tmax,
            labels=mapping,
            baseline=config.baseline,
            l_freq=config.l_freq,
            h_freq=config.h_freq,
            decim=config.decim,
            **common,
        )
        if config.crop is not None:
            keep = (s.times >= config.crop[0] - 1e-9) & (s.times <= config.crop[1] + 1e-9)
            s = Samples(
                s.X[:, :, keep], s.y, s.table, s.ch_names, s.sfreq, s.times[keep], s.ch_types
            )
    elif config.kind == "windows":
        s = windows(
            recordings,
            length=config.length,
            stride=config.stride,
            target=config.target,
            labels=mapping,
            **common,
        )
        if config.features != "signal":
            X = s.X.sum(axis=2) if config.features == "sum" else s.X.mean(axis=2)
            s = Samples(X, s.y, s.table, s.ch_names, s.sfreq, None, s.ch_types)
    else:
        s = time_samples(
            recordings, target=config.target, delay=config.delay, labels=mapping, **common
        )
    keep = np.ones(len(s), bool)
    if config.time_range is not None:
        lo, hi = config.time_range
        if lo is not None:
            keep &= s.table["start"].to_numpy(float) >= lo
        if hi is not None:
            keep &= s.table["stop"].to_numpy(float) <= hi
    ids = s.table["recording"].to_numpy()
    for name, bounds in config.where.items():
        values = np.empty(len(s))
        for rec in recordings:
            rows = np.flatnonzero(ids == rec.id)
            if rows.size:
                v = np.asarray(target_at(rec, name, _sample_times(s, rec, config, rows)))
                if v.ndim != 1:
                    raise ValueError(
                        f"where: behaviour {name!r} has {v.shape[1]} dimensions; "
                        "a range needs a 1-D behaviour (e.g. speed)"
                    )
                values[rows] = v
        if bounds.above is not None:
            keep &= values > bounds.above
        if bounds.below is not None:
            keep &= values < bounds.below
    if not keep.any():
        raise ValueError(f"time_range/where keep none of the {len(s)} samples")
    if not keep.all():
        s = s.select(keep)
    if config.transform != "none":
        X = np.asarray(s.X, dtype=np.float64)
        if X.min() < 0:
            raise ValueError(
                f"transform {config.transform!r} needs non-negative data (counts); "
                f"the signal reaches {X.min():g}"
            )
        X = (np.sqrt(X) if config.transform == "sqrt" else np.log1p(X)).astype(np.float32)
        s = Samples(X, s.y, s.table, s.ch_names, s.sfreq, s.times, s.ch_types)
    return s


def build_estimator(config: EstimatorConfig, sfreq: float | None = None) -> Any:
    """An unfitted estimator from its config.

    Parameters
    ----------
    config : EstimatorConfig
    sfreq : float, optional
        Sampling rate of the samples, given to factories that take ``sfreq`` and were not
        given one.

    Returns
    -------
    estimator
        Cloneable by :func:`sklearn.base.clone`.

    Raises
    ------
    ValueError
        If the result is not an estimator (no ``fit``).
    """
    from sklearn.pipeline import make_pipeline

    steps = (
        config.steps
        if config.steps is not None
        else [StepConfig(name=config.name, params=config.params)]
    )
    built = []
    for step in steps:
        factory = step.factory()
        params = dict(step.params)
        try:
            takes_sfreq = "sfreq" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_sfreq = False
        if takes_sfreq and "sfreq" not in params and sfreq is not None:
            params["sfreq"] = float(sfreq)
        try:
            est = factory(**params)
        except (TypeError, ValueError) as err:
            raise ValueError(f"estimator {step.name!r}: {err}") from None
        if not hasattr(est, "fit"):
            raise ValueError(
                f"estimator {step.name!r} built a {type(est).__name__}, which has no fit method"
            )
        built.append(est)
    return built[0] if len(built) == 1 else make_pipeline(*built)


def build_splitter(config: SplitterConfig, recordings: Sequence[Any]) -> Any:
    """The splitter of ``config`` (``StoredIntervals`` gets the stores' intervals).

    Parameters
    ----------
    config : SplitterConfig
    recordings : sequence of Recording

    Returns
    -------
    cross-validator
    """
    import pandas as pd

    from ..data.splits import StoredIntervals
    from ..schema import intervals_frame

    factory = config.factory()
    params = dict(config.params)
    if factory is StoredIntervals:
        frames = [intervals_frame(r.ds).assign(recording=r.id) for r in recordings]
        params["intervals"] = pd.concat(frames, ignore_index=True)
    try:
        return factory(**params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"splitter {config.name!r}: {err}") from None


def _fit_params(config: EstimatorConfig, samples: Any) -> dict[str, np.ndarray]:
    from ..data.samples import sample_positions

    out = {}
    for key, column in config.fit_params.items():
        if column == "positions":
            out[key] = sample_positions(samples.table, samples.sfreq)
        elif column in samples.table.columns:
            out[key] = samples.table[column].to_numpy()
        else:
            raise ValueError(
                f"estimator.fit_params[{key!r}]: the sample table has no column "
                f"{column!r} (columns: {', '.join(samples.table.columns)}; or "
                "'positions')"
            )
    return out


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _confusion(
    estimator: Any,
    X: np.ndarray,
    y: np.ndarray,
    samples: Any,
    cv: Any,
    groups: Any,
    fit_params: Mapping[str, np.ndarray],
    classes: list[str],
) -> dict[str, Any]:
    """Held-out confusion matrix summed over the folds (one refit per fold, true targets)."""
    from sklearn.base import clone
    from sklearn.metrics import confusion_matrix

    from ..data.splits import splitter_folds
    from ..verbosity import mne_log_level, mne_verbose

    level = mne_log_level(None)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for train, test in splitter_folds(cv, samples.table, groups=groups, X=X, y=y):
        params = {k: v[train] for k, v in fit_params.items()}
        with mne_verbose(level):
            model = clone(estimator).fit(X[train], y[train], **params)
            pred = model.predict(X[test])
        matrix += confusion_matrix(y[test], pred, labels=classes)
    return {"labels": classes, "matrix": matrix.tolist()}


def decode(config: DecodeConfig, stores: Sequence[str | Path]) -> dict[str, Any]:
    """Run one decoding analysis on recording stores.

    Parameters
    ----------
    config : DecodeConfig
    stores : sequence of path-like
        Store paths or folders of stores.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``analysis``, ``description``, ``recordings`` (their
        ids, the store paths), ``samples`` (the config's sample parameters), ``n_samples``,
        ``classes`` (None for continuous targets), ``estimator`` (its repr),
        ``estimator_name``, ``cv`` (the splitter's repr), ``n_splits``, ``n_permutations``,
        ``permutation`` (the scheme used), ``shuffled_targets``, ``metrics`` (metric →
        ``score`` (mean over folds), ``std``, ``chance``, ``p_value``; None where undefined),
        ``folds`` (``fold``, ``n_train``, ``n_test``, ``test_groups`` and each metric),
        ``confusion`` (held-out counts summed over folds, for classes) and ``seconds``.

    Raises
    ------
    StageError
        Naming the analysis and the part of the config at fault (samples, estimator, cv).
    """
    from ..evaluate import cross_validate
    from ..evaluate.permutation import default_scheme, permute_labels

    t0 = time.perf_counter()
    where = f"stage decode ({config.analysis})"
    recs = open_stores(stores, config.samples)
    try:
        samples = build_samples(recs, config.samples)
    except (ValueError, KeyError) as err:
        raise StageError(f"{where}: samples: {err}") from None
    X, y = samples.X, samples.y
    classification = config.task == "classification"
    classes = sorted(map(str, np.unique(y))) if classification else None
    if classification and len(classes) < 2:
        raise StageError(f"{where}: samples: one class only ({classes[0]!r}); check labels")
    try:
        estimator = build_estimator(config.estimator, samples.sfreq)
        fit_params = _fit_params(config.estimator, samples)
    except ValueError as err:
        raise StageError(f"{where}: estimator: {err}") from None
    try:
        cv = build_splitter(config.cv, recs)
    except ValueError as err:
        raise StageError(f"{where}: cv: {err}") from None
    if config.shuffle_targets:
        scheme = (
            default_scheme(y, samples.table) if config.permutation == "auto" else config.permutation
        )
        y = permute_labels(
            y,
            scheme=scheme,
            groups=samples.table["recording"].to_numpy(),
            order=samples.table["start"].to_numpy(),
            rng=np.random.SeedSequence([config.seed, 1]).generate_state(1)[0],
        )
    try:
        result = cross_validate(
            estimator, X, y, samples.table, cv, groups=config.cv.groups,
            metrics=config.metric_names, n_permutations=config.n_permutations,
            permutation=config.permutation, random_state=config.seed, n_jobs=config.n_jobs,
            fit_params=fit_params,
        )  # fmt: skip
        confusion = (
            _confusion(estimator, X, y, samples, cv, config.cv.groups, fit_params, classes)
            if classification
            else None
        )
    except (ValueError, TypeError) as err:  # leakage, too few groups, a fold it cannot fit,
        # a metric that needs scores the estimator does not give
        raise StageError(f"{where}: cv {config.cv.name}: {err}") from None
    summary = result.summary
    metrics = {
        str(r["metric"]): {"score": _finite(r["mean"]), "std": _finite(r["std"]),
                           "chance": _finite(r["chance"]), "p_value": _finite(r["p_value"])}
        for _, r in summary.iterrows()
    }  # fmt: skip
    folds = []
    for k, rows in result.folds.groupby("fold", sort=True):
        first = rows.iloc[0]
        entry = {
            "fold": int(k),
            "n_train": int(first["n_train"]),
            "n_test": int(first["n_test"]),
            "test_groups": str(first["test_groups"]),
        }
        entry.update({str(r["metric"]): _finite(r["score"]) for _, r in rows.iterrows()})
        folds.append(entry)
    return {
        "analysis": config.analysis,
        "description": config.description,
        "recordings": [r.id for r in recs],
        "samples": config.samples.model_dump(mode="json"),
        "n_samples": int(len(samples)),
        "classes": classes,
        "estimator": result.estimator,
        "estimator_name": config.estimator.label,
        "cv": result.cv,
        "n_splits": len(folds),
        "n_permutations": int(config.n_permutations),
        "permutation": result.permutation,
        "shuffled_targets": bool(config.shuffle_targets),
        "metrics": metrics,
        "folds": folds,
        "confusion": confusion,
        "seconds": round(time.perf_counter() - t0, 3),
    }


@register
class DecodeStage(Stage):
    """Cross-validate a baseline or any estimator on samples of stores, with permutation chance."""

    name = "decode"
    Config = DecodeConfig
    inputs = {"stores": Slot("recording stores, or folders of stores", many=True)}
    outputs = {"metrics": Slot("metrics.json: scores, chance levels and p-values per metric")}

    def run(
        self, config: DecodeConfig, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]
    ) -> dict[str, Any]:
        """Decode, write ``metrics.json``, return metric → score, chance, p-value."""
        data = decode(config, inputs["stores"])
        outputs["metrics"].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        return {
            m: {k: v[k] for k in ("score", "chance", "p_value")} for m, v in data["metrics"].items()
        }
