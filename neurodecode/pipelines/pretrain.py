"""The ``pretrain`` stage: codebook pretraining on unlabelled windows of many subjects.

One job reads the recording stores of any number of subjects (EEG, sEEG, ECoG; each subject with
its own channels and montage), cuts every subject's recordings into sliding windows (band-passed
first if asked) and runs both stages of Du-IN-style pretraining
(:class:`~neurodecode.models.codebook.CodebookPretrainer`): the VQ-VAE tokenizer with its cosine
codebook, then the masked-code model. No label is read. By default only the stores' ``train``
intervals are used (``intervals: [train]``), so that the samples a later fine-tuning tests on
never reach the pretraining; ``intervals: null`` takes whole recordings (then choose the runs).
The last ``val_fraction`` of each subject's windows in time (one window length apart from the
rest) stops both stages early and scores the result.

A config::

    analysis: seeg_codebook
    model: {config: codebook_seeg, params: {pretrain: {codebook_size: 64}}}
    modality: seeg
    length: 0.5                 # s per window: 125 samples at 250 Hz
    stride: 0.5
    intervals: [train]
    tokenizer_epochs: 10

The output folder::

    pretrain.pt     the pretrained tokenizer and encoder (CodebookPretrainer.save)
    config.yaml     the resolved model config (its file with params and overrides merged in)
    metrics.json    codebook health, reconstruction R² and masked-code accuracy on the
                    validation windows, throughput, per-epoch history, the subjects and their
                    window counts, and the time spans of every recording that the windows
                    cover (what ``cross_subject`` checks its test samples against)

A ``cross_subject`` job given this folder as its ``pretrained`` input fine-tunes from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from ..config import StageConfig
from .base import Slot, Stage, StageError, register
from .cross_subject import (
    TASKS,
    ModelChoice,
    _dataset_name,
    _model_file,
    compute_threads,
    sources_digest,
)
from .decode import _as_strings, open_stores

__all__ = [
    "PretrainModel",
    "PretrainStage",
    "PretrainStageConfig",
    "pretrain",
    "subject_windows",
]


class PretrainModel(ModelChoice):
    """The model to pretrain: a codebook config (a ``pretrain`` section) or a spike-token one.

    Attributes
    ----------
    config : str
        A ``models/*.yaml`` file or a shipped model's name (default ``codebook_seeg``;
        ``spike_gpt`` for spike tokens).
    params : dict
        Deep-merged over the file (``{pretrain: {codebook_size: 64}}``; ``{window: 0.5}``).
    """

    config: str = "codebook_seeg"

    @property
    def family(self) -> str:
        """``"spike_tokens"`` (a config with ``family: spike_tokens``) or ``"codebook"``."""
        return model_family(self.config)

    def resolve_spikes(self) -> Any:
        """The validated :class:`~neurodecode.models.spikes.SpikeModelConfig`."""
        from ..config import deep_merge
        from ..models.spikes.config import load_spike_config

        path = _model_file(self.config)
        data = yaml.safe_load(path.read_text()) or {}
        try:
            return load_spike_config(deep_merge(data, self.params))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @model_validator(mode="after")
    def _loads(self) -> PretrainModel:  # replaces ModelChoice's check: either family
        if self.family == "spike_tokens":
            self.resolve_spikes()
            return self
        cfg = self.resolve()
        if cfg.task not in TASKS:
            raise ValueError(f"model task {cfg.task!r}: a codebook model fine-tunes to "
                             f"{' or '.join(TASKS)}")
        if cfg.pretrain is None:
            raise ValueError(
                f"model config {self.config!r} ({cfg.name}) has no pretrain section: give a "
                "codebook model (a segment_transformer backbone and a pretrain section, e.g. "
                "codebook_seeg) or a spike-token model (spike_gpt)"
            )
        return self

    def resolve(self) -> Any:
        """The codebook model's :class:`~neurodecode.models.config.ModelConfig`."""
        if self.family == "spike_tokens":
            raise ValueError(f"model config {self.config!r} is a spike-token model")
        return super().resolve()


def model_family(config: str) -> str:
    """The family of the model config a name or file gives (``family`` key; ``codebook``)."""
    path = _model_file(config)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"model config {path}: not YAML ({err})") from None
    return str(data.get("family", "codebook")) if isinstance(data, dict) else "codebook"


class PretrainStageConfig(StageConfig):
    """Config of the ``pretrain`` stage.

    Attributes
    ----------
    analysis : str
        Name of the pretraining (in ``metrics.json`` and the report).
    description : str
    dataset : str, optional
        Name of the dataset (default: the name of the first ``stores`` input).
    model : PretrainModel
        The model config (a file or a shipped name, with ``params``).
    modality, task : str, optional
        Keep the recordings of this modality / task.
    subjects, runs : list of str, optional
        Keep these subjects / runs (default all).
    ch_types : list of str, optional
        Channel types to keep (default the brain-signal types).
    channels : {"strict", "common"}
        A subject whose recordings have different channel sets: refused, or reduced to the
        channels all its recordings have.
    intervals : list of {"train", "valid", "test"}, optional
        Windows lying wholly inside the stores' split intervals of these names (default
        ``["train"]``); None: whole recordings.
    length, stride : float
        Window length and step (s); ``stride`` defaults to ``length`` (no overlap). The
        labelled trials of a fine-tuning must have the same number of time steps.
    l_freq, h_freq : float, optional
        Band-pass (FIR) of each whole recording before windowing.
    val_fraction : float
        Share of each subject's windows (the last in time) that stops both stages early and
        scores the codebook; 0: none (fixed epochs, scored on the training windows).
    tokenizer_epochs, masked_epochs, batch_size : int, optional
        Override the model config's ``pretrain`` values (codebook models; ``batch_size`` also
        for spike-token models).
    max_epochs : int, optional
        Spike-token models: override the config's ``max_epochs``.
    behavior : list of str
        Spike-token models: ``behavior_*`` variables served as covariates (the model
        cross-attends to them; the Poisson baseline's rates depend on them).
    generate_seconds : float
        Spike-token models: seconds of held-out activity generated and compared with the real
        spike trains (0: none).
    time_range : (float or None, float or None), optional
        Spike-token models: only this part of every recording (s), e.g. the tracked part.
    split : (float, float, float), optional
        Spike-token models: cut every recording (its ``time_range``) in time into train /
        valid / test intervals with these fractions, ``split_gap`` seconds apart, instead of
        the stored ones (stores without intervals, e.g. ingested ones). A ``finetune`` of the
        same stores must use the same split, so that its test windows stay unseen.
    split_gap : float
        Seconds between the blocks of ``split``.
    seed : int
        Seed of initialisation, batch order and masks.
    threads : int, optional
        torch intra-op and BLAS threads (1 is fastest on a small shared machine; None: the
        libraries' defaults).
    """

    analysis: str = Field("pretrain", min_length=1)
    description: str = ""
    dataset: str | None = None
    model: PretrainModel = Field(default_factory=PretrainModel)
    modality: str | None = None
    task: str | None = None
    subjects: list[str] | None = None
    runs: list[str] | None = None
    ch_types: list[str] | None = None
    channels: Literal["strict", "common"] = "strict"
    intervals: list[Literal["train", "valid", "test"]] | None = Field(
        default_factory=lambda: ["train"])
    length: float = Field(1.0, gt=0)
    stride: float | None = Field(None, gt=0)
    l_freq: float | None = Field(None, gt=0)
    h_freq: float | None = Field(None, gt=0)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    tokenizer_epochs: int | None = Field(None, ge=1)
    masked_epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    behavior: list[str] = Field(default_factory=list)
    generate_seconds: float = Field(30.0, ge=0)
    time_range: tuple[float | None, float | None] | None = None
    split: tuple[float, float, float] | None = None
    split_gap: float = Field(2.0, ge=0)
    seed: int = 0
    threads: int | None = Field(1, ge=1)

    @field_validator("subjects", "runs", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return _as_strings(value)

    @field_validator("intervals")
    @classmethod
    def _some(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one interval name (train, valid, test), or null "
                             "for whole recordings")
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _band(self) -> PretrainStageConfig:
        if self.l_freq is not None and self.h_freq is not None and self.h_freq <= self.l_freq:
            raise ValueError(f"h_freq ({self.h_freq}) must be above l_freq ({self.l_freq})")
        return self

    @property
    def step(self) -> float:
        """The stride in seconds (the window length when not set)."""
        return self.length if self.stride is None else self.stride


# --------------------------------------------------------------------------- windows


def _band_passed(rec: Any, config: PretrainStageConfig) -> Any:
    """The recording with its brain channels band-passed (same id: sample tables match)."""
    import mne

    from ..data.samples import Recording, pick_channels

    picks = pick_channels(rec, config.ch_types)
    signal = rec.ds["signal"]
    data = np.array(signal.values)
    data[:, picks] = mne.filter.filter_data(
        data[:, picks].T.astype(np.float64), rec.sfreq, config.l_freq, config.h_freq,
        verbose="error").T.astype(data.dtype)  # fmt: skip
    return Recording(rec.id, rec.ds.assign(signal=(signal.dims, data)), rec.path)


def _inside_intervals(samples: Any, recordings: Sequence[Any], names: Sequence[str]
                      ) -> np.ndarray:
    """Which windows lie wholly inside a stored interval of one of ``names``."""
    from ..schema import intervals_frame

    table = samples.table
    rec, start = table["recording"].to_numpy(), table["start"].to_numpy(float)
    stop = table["stop"].to_numpy(float)
    keep = np.zeros(len(table), bool)
    for r in recordings:
        frame = intervals_frame(r.ds)
        if not len(frame):
            raise ValueError(f"store {r.path or r.id} has no stored split intervals; use "
                             "intervals: null (whole recordings) and choose the runs")
        rows = rec == r.id
        for row in frame[frame["split"].isin(list(names))].itertuples():
            keep |= rows & (start >= row.start - 1e-9) & (stop <= row.stop + 1e-9)
    return keep


def subject_windows(recordings: Sequence[Any], config: PretrainStageConfig) -> Any:
    """One subject's pretraining windows, as :class:`~neurodecode.data.subjects.SubjectTrials`.

    Parameters
    ----------
    recordings : sequence of Recording
        The subject's recordings.
    config : PretrainStageConfig

    Returns
    -------
    SubjectTrials
        Windows ``(n, n_times, channel)`` in time order, without targets.

    Raises
    ------
    ValueError
        A recording shorter than a window or without the channel types, recordings with
        different channels, no stored intervals, or no window inside the intervals.
    """
    from ..data.samples import windows
    from ..data.subjects import per_subject

    for rec in recordings:
        n = int(round(config.length * rec.sfreq))
        have = int(rec.ds.sizes["time"])
        if have < n:
            raise ValueError(f"windows of {config.length:g} s ({n} samples) are longer than "
                             f"recording {rec.path or rec.id} ({have / rec.sfreq:g} s)")

    def sample(recs: Sequence[Any]) -> Any:
        if config.l_freq is not None or config.h_freq is not None:
            recs = [_band_passed(r, config) for r in recs]
        s = windows(recs, length=config.length, stride=config.step, ch_types=config.ch_types,
                    channels=config.channels)
        if config.intervals is None:
            return s
        keep = _inside_intervals(s, recs, config.intervals)
        if not keep.any():
            raise ValueError(f"no {config.length:g} s window lies inside the "
                             f"{'/'.join(config.intervals)} intervals of its "
                             f"{len(recs)} recording(s)")
        return s.select(keep)

    return next(iter(per_subject(recordings, sample).values()))


def _coverage(trials: Any) -> dict[str, list[list[float]]]:
    """Per recording, the merged ``[start, stop]`` spans (s) that the windows cover."""
    out: dict[str, list[list[float]]] = {}
    table = trials.table.sort_values(["recording", "start"])
    for rec, group in table.groupby("recording", sort=True):
        spans: list[list[float]] = []
        for start, stop in zip(group["start"].to_numpy(float), group["stop"].to_numpy(float),
                               strict=True):
            if spans and start <= spans[-1][1] + 1e-9:
                spans[-1][1] = max(spans[-1][1], stop)
            else:
                spans.append([start, stop])
        out[str(rec)] = [[round(a, 6), round(b, 6)] for a, b in spans]
    return out


# --------------------------------------------------------------------------- the job


def pretrain(config: PretrainStageConfig, stores: Sequence[str | Path], folder: str | Path
             ) -> dict[str, Any]:
    """Pretrain the codebook model of ``config`` on the windows of ``stores``; write ``folder``.

    Parameters
    ----------
    config : PretrainStageConfig
    stores : sequence of path-like
        Store paths or folders of stores (any number of subjects and montages).
    folder : path-like
        The output folder (created).

    Returns
    -------
    dict
        The content of ``metrics.json``: ``analysis``, ``description``, ``dataset``,
        ``model`` (``name``, ``config``, ``file``, ``adapter``, ``backbone``, ``tokens``,
        ``codebook_size``), ``windows`` (``length``, ``stride``, ``n_times``, ``sfreq``,
        ``l_freq``, ``h_freq``, ``intervals``, ``runs``, ``val_fraction``), ``subjects`` (per
        subject: ``n_windows``, ``n_train``, ``n_val``, ``n_channels``, ``stores``),
        ``coverage`` (recording → covered ``[start, stop]`` spans), ``scored_on``
        (``"validation"`` or ``"training"``), ``health`` (perplexity, used, dead_fraction,
        codebook_size, collapsed), ``reconstruction_r2``, ``mask_accuracy`` (``accuracy``,
        ``majority``, ``perplexity``), ``segments_per_s`` (``tokenizer``, ``masked``),
        ``epochs`` (per stage), ``history`` (per stage, per epoch), ``seed``,
        ``fit_seconds`` and ``seconds``.

    Raises
    ------
    StageError
        No store or recording, a subject without usable channels or windows, windows longer
        than a recording, windows of different lengths across subjects (other sampling
        rates), a model that cannot take the windows.
    """
    from ..evaluate.cv import _jsonable
    from ..models.codebook import CodebookPretrainer

    if config.model.family == "spike_tokens":
        from .spike_pretrain import pretrain_spikes

        return pretrain_spikes(config, stores, folder)
    t0 = time.perf_counter()
    folder = Path(folder)
    model_cfg = config.model.resolve()
    recs = open_stores(stores, config, stage="pretrain")
    groups: dict[str, list[Any]] = {}
    for rec in recs:
        groups.setdefault(rec.identity["subject"], []).append(rec)
    windows: dict[str, Any] = {}
    for subject, group in sorted(groups.items()):
        try:
            windows[subject] = subject_windows(group, config)
        except ValueError as err:
            raise StageError(f"stage pretrain: subject {subject}: {err}") from None
    lengths = {s: t.n_times for s, t in windows.items()}
    if len(set(lengths.values())) > 1:
        raise StageError(f"stage pretrain: windows of {config.length:g} s have different "
                         f"numbers of samples across subjects ({lengths}): resample the "
                         "stores to one rate, or pretrain them apart")
    train, val = {}, {}
    for s, t in windows.items():
        if config.val_fraction > 0:
            parts = t.chronological((1 - config.val_fraction, config.val_fraction),
                                    names=("train", "val"), gap=config.length)
            train[s] = parts["train"]
            if len(parts["val"]):
                val[s] = parts["val"]
        else:
            train[s] = t
    empty = sorted(s for s, t in train.items() if not len(t))
    if empty:
        raise StageError(f"stage pretrain: subjects {empty} keep no training window after "
                         f"the validation share {config.val_fraction:g} (more windows: a "
                         "shorter stride, or val_fraction: 0)")
    pretrainer = CodebookPretrainer(model_cfg, tokenizer_epochs=config.tokenizer_epochs,
                                    masked_epochs=config.masked_epochs,
                                    batch_size=config.batch_size, seed=config.seed)
    try:
        pretrainer.fit(train, val)
    except ValueError as err:
        raise StageError(f"stage pretrain: model: {err}") from None
    scored = val or train
    resolved = pretrainer.config_
    folder.mkdir(parents=True, exist_ok=True)
    pretrainer.save(folder / "pretrain.pt")
    (folder / "config.yaml").write_text(
        "# the resolved model config of this pretraining (its file with params and the "
        "stage's overrides merged in)\n"
        + yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    first = next(iter(windows.values()))
    data = {
        "analysis": config.analysis,
        "description": config.description,
        "dataset": _dataset_name(config, [Path(p) for p in stores]),
        "model": {"name": resolved.name, "config": "config.yaml", "file": "pretrain.pt",
                  "adapter": resolved.adapter.name, "backbone": resolved.backbone.name,
                  "tokens": resolved.backbone.params.get("channels", "fused"),
                  "codebook_size": resolved.pretrain.codebook_size},
        "windows": {"length": config.length, "stride": config.step,
                    "n_times": int(first.n_times), "sfreq": float(first.sfreq),
                    "l_freq": config.l_freq, "h_freq": config.h_freq,
                    "intervals": config.intervals, "runs": config.runs,
                    "val_fraction": config.val_fraction},
        "subjects": {s: {"n_windows": len(t), "n_train": len(train[s]),
                         "n_val": len(val[s]) if s in val else 0, "n_channels": t.n_channels,
                         "stores": sorted({str(r) for r in t.table["recording"]})}
                     for s, t in windows.items()},
        "coverage": {rec: spans for t in windows.values()
                     for rec, spans in _coverage(t).items()},
        "scored_on": "validation" if val else "training",
        "health": pretrainer.health_,
        "reconstruction_r2": pretrainer.reconstruction_r2(scored),
        "mask_accuracy": pretrainer.mask_accuracy(scored, seed=config.seed),
        "segments_per_s": pretrainer.segments_per_s_,
        "epochs": {stage: len(rows) for stage, rows in pretrainer.history_.items()},
        "history": pretrainer.history_,
        "seed": int(config.seed),
        "fit_seconds": round(float(pretrainer.fit_seconds_), 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    data = _jsonable(data)
    (folder / "metrics.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


@register
class PretrainStage(Stage):
    """Pretrain a codebook model (any montage) or a spike-token model (any session)."""

    name = "pretrain"
    Config = PretrainStageConfig
    version = (f"1+{sources_digest('neurodecode/models/**/*.py', 'models/*.yaml')}"
               f"+{sources_digest('neurodecode/pipelines/cross_subject.py')}"
               f"+{sources_digest('neurodecode/pipelines/spike_pretrain.py')}"
               f"+{sources_digest('neurodecode/data/tokens.py')}")
    inputs = {"stores": Slot("recording stores of any number of subjects, or folders of them",
                             many=True)}
    outputs = {"pretrained": Slot("folder: pretrain.pt, config.yaml (resolved model config), "
                                  "metrics.json (codebook health, history, subjects, coverage)",
                                  folder=True)}

    def run(
        self, config: PretrainStageConfig, inputs: Mapping[str, list[Path]],
        outputs: Mapping[str, Path],
    ) -> dict[str, Any]:
        """Pretrain, write the folder, return the codebook's health and scores."""
        with compute_threads(config.threads):
            data = pretrain(config, inputs["stores"], outputs["pretrained"])
        if data.get("family") == "spike_tokens":
            return {"recordings": {r: v["n_windows"] for r, v in data["recordings"].items()},
                    "next_token_nll": data["next_token_nll"], "epochs": data["epochs"],
                    "seconds": data["seconds"]}
        return {"subjects": {s: v["n_windows"] for s, v in data["subjects"].items()},
                "health": data["health"], "reconstruction_r2": data["reconstruction_r2"],
                "mask_accuracy": data["mask_accuracy"], "epochs": data["epochs"],
                "seconds": data["seconds"]}
