"""The ``cross_subject`` stage: one decoder shared by several subjects, each with its channels.

One job reads the recording stores of several subjects, builds each subject's samples from its
own recordings (the ``samples`` part of a decode config: event-locked ``epochs``, sliding
``windows`` or ``time_samples``; every subject keeps its own channels), splits every subject in
time into training, validation and test parts (contiguous blocks, ``split.gap`` seconds apart)
and trains a :class:`~neurodecode.models.decoder.CrossSubjectDecoder` (subject adapters into a
shared latent, a shared backbone and head; ``models/*.yaml``) on every subject's training part,
with early stopping on their validation parts. Each subject's test part then scores:

* the shared model;
* a subject-specific baseline fitted on that subject's training part alone (flattened samples,
  standardised inside the pipeline): :func:`~neurodecode.evaluate.baselines.logistic` for
  classes, :func:`~neurodecode.evaluate.baselines.ridge` for continuous targets;
* the permutation chance level of each: the fixed predictions scored against permuted test
  targets (``n_permutations``; within each recording for trials, circular shifts for time
  series), the null distribution of a classifier that does not change.

A config::

    analysis: xsub_fmri_blocks
    model: {config: cross_subject_fmri, params: {train: {max_epochs: 30}}}
    samples: {kind: epochs, tmin: 4.0, tmax: 8.0, labels: ["block/*"]}
    subjects: ["01", "02", "03", "04", "05", "06", "07", "08"]
    split: {fractions: [0.7, 0.15, 0.15]}          # gap: the modality's default

With a ``pretrained`` input (the folder of a ``pretrain`` job: a codebook pretraining of the
same adapter and backbone), the decoder is fine-tuned from the pretrained weights instead of a
random initialisation; the subjects' samples must then have the pretraining windows' number of
time steps. Unless ``scratch: false``, the same config is also trained from scratch on the same
split and scored on the same test parts (pretrained against scratch, each with its chance
level), and the test samples that lie in spans the pretraining windows covered are counted
(0 when the pretraining kept to the stores' training intervals).

The output folder::

    model.pt        the trained decoder (CrossSubjectDecoder.save)
    config.yaml     the resolved model config (the YAML file with params merged in)
    metrics.json    per subject: shared score, baseline, chance levels; the sample spec and
                    the split, so that the ``adapt`` stage builds a new subject's samples
                    the same way (see :func:`cross_subject`)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from ..config import StageConfig
from .base import Slot, Stage, StageError, register
from .decode import SamplesConfig, _as_strings, _Part, build_samples, open_stores

__all__ = [
    "CrossSubjectConfig",
    "CrossSubjectStage",
    "ModelChoice",
    "Pretrained",
    "SplitConfig",
    "TestSet",
    "balanced_accuracy",
    "baseline_name",
    "compute_threads",
    "cross_subject",
    "evaluate_baseline",
    "evaluate_decoder",
    "read_pretrained",
    "resolve_model",
    "samples_in_spans",
    "sources_digest",
    "split_subject",
    "subject_samples",
]

#: Where relative model config paths are also looked for: the shipped stage configs' folder
#: (so that ``../models/x.yaml`` in ``pipelines/*.yaml`` resolves from any working folder).
PIPELINES_DIR = Path(__file__).resolve().parents[2] / "pipelines"

#: Model tasks this stage trains (an ``embed`` head needs stimulus embeddings as targets).
TASKS = ("classify", "regress")

_PACKAGE = Path(__file__).resolve().parents[1]


def sources_digest(*patterns: str) -> str:
    """Digest of the files matching ``patterns`` (relative to the repository), read as bytes.

    Part of a stage's version: a change to the model code (``neurodecode/models``), to a
    shipped model config (``models/*.yaml``) or to a helper module re-runs the stage's jobs,
    while loading the stage registry stays light (nothing is imported).
    """
    import hashlib

    h = hashlib.sha256()
    root = _PACKAGE.parent
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- config models


def _model_file(config: str) -> Path:
    """The YAML file a model ``config`` names: a path, or a shipped name."""
    from ..models.decoder import MODELS_DIR

    path = Path(config).expanduser()
    candidates = [path] if path.is_absolute() else [path, PIPELINES_DIR / path]
    if not path.suffix:
        candidates.append(MODELS_DIR / f"{config}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
    raise ValueError(
        f"model config {config!r}: no such file (looked in the working folder and "
        f"{PIPELINES_DIR}) and no shipped model of that name (shipped: {shipped or 'none'})"
    )


class ModelChoice(_Part):
    """The model: a config file or a shipped model's name, with parameters overridden.

    Attributes
    ----------
    config : str
        A ``models/*.yaml`` file (absolute, relative to the working folder, or relative to
        the shipped ``pipelines/`` folder, e.g. ``../models/cross_subject_fmri.yaml``) or the
        name of a shipped model (``cross_subject_fmri``).
    params : dict
        Deep-merged over the file (``{train: {max_epochs: 20}, adapter: {params: {rank:
        16}}}``).
    """

    config: str = "cross_subject_fmri"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, values: Any) -> Any:
        return {"config": values} if isinstance(values, str) else values

    @model_validator(mode="after")
    def _loads(self) -> ModelChoice:
        cfg = self.resolve()
        if cfg.task not in TASKS:
            raise ValueError(
                f"model task {cfg.task!r}: this stage trains {' or '.join(TASKS)} models (an "
                "embed head needs stimulus embeddings as targets, which samples do not give)"
            )
        return self

    def resolve(self) -> Any:
        """The validated :class:`~neurodecode.models.config.ModelConfig`."""
        return resolve_model(self)


def resolve_model(choice: ModelChoice) -> Any:
    """The :class:`~neurodecode.models.config.ModelConfig` of a model choice.

    Raises
    ------
    ValueError
        No such file or shipped name, not YAML, or a config that does not validate (naming the
        file and every problem).
    """
    from ..models.config import load_model_config

    path = _model_file(choice.config)
    try:
        return load_model_config(path, **choice.params)
    except ValueError as err:
        if not choice.params:
            raise
        raise ValueError(f"{err} (with params {choice.params})") from None


class SplitConfig(_Part):
    """Each subject split in time into training, validation and test parts.

    Attributes
    ----------
    fractions : (float, float, float)
        Shares of each subject's samples (in time order) in the three parts; they sum to 1.
    gap : float, optional
        Seconds between the parts within a recording; default the longest sample plus the
        modality's margin (:func:`neurodecode.data.splits.default_gap`: 12 s more for fMRI).
    """

    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    gap: float | None = Field(None, ge=0)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"fractions {list(value)} must be positive and sum to 1")
        return value


class CrossSubjectConfig(StageConfig):
    """Config of the ``cross_subject`` stage.

    Attributes
    ----------
    analysis : str
        Name of the analysis (in ``metrics.json`` and the report).
    description : str
    dataset : str, optional
        Name of the dataset (default: the name of the first ``stores`` input).
    model : ModelChoice
        The model config (a file or a shipped name, with ``params``).
    samples : EpochsSamples or WindowsSamples or TimeSamples
        How each subject's samples are built (as in the decode stage).
    subjects : list of str, optional
        Subjects trained on (default every subject of the stores).
    exclude : list of str
        Subjects left out (held out for adaptation).
    split : SplitConfig
    keys : str, optional
        A sample-table column whose values pair samples across subjects (``value``: the
        stimulus image of each event), kept for functional alignment.
    n_permutations : int
        Permuted test targets for each chance level.
    seed : int
        Seed of the permutations.
    scratch : bool
        With a ``pretrained`` input: also train the same model from a random initialisation
        on the same split and score it beside the fine-tuned one (ignored without one).
    probe : bool
        With a ``pretrained`` input and a classification task: also score a linear probe on
        the frozen pretrained features (:class:`~neurodecode.models.codebook.probe.
        LinearProbe`, fitted on the training and validation parts) beside the fine-tuned
        model. Needs every subject in the pretraining; otherwise skipped, and the metrics say
        why.
    threads : int, optional
        torch intra-op and BLAS threads (1 is fastest on a small shared machine; None: the
        libraries' defaults).
    """

    analysis: str = Field("cross_subject", min_length=1)
    description: str = ""
    dataset: str | None = None
    model: ModelChoice = Field(default_factory=ModelChoice)
    samples: SamplesConfig
    subjects: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    split: SplitConfig = Field(default_factory=SplitConfig)
    keys: str | None = None
    n_permutations: int = Field(200, ge=0)
    seed: int = 0
    scratch: bool = True
    probe: bool = True
    threads: int | None = Field(1, ge=1)

    @field_validator("subjects", "exclude", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return _as_strings(value)

    @model_validator(mode="after")
    def _task_matches(self) -> CrossSubjectConfig:
        task = self.model.resolve().task
        classes = self.samples.kind == "epochs" or self.samples.target == "events"
        if (task == "classify") != classes:
            what = "class labels" if classes else "continuous targets"
            raise ValueError(
                f"samples of kind {self.samples.kind!r} give {what}; the model's task is "
                f"{task!r} (use a {'classify' if classes else 'regress'} model)"
            )
        return self


# --------------------------------------------------------------------------- building blocks


@contextlib.contextmanager
def compute_threads(threads: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads and the BLAS threads (NumPy, SciPy) to ``threads``.

    Both matter on a small shared machine: a two-thread OpenBLAS SVD next to other busy
    processes runs many times slower than a one-thread one. None leaves both as they are.
    """
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)



def subject_samples(
    recordings: Sequence[Any], samples: Any, keys: str | None = None, stage: str = "cross_subject"
) -> dict[str, Any]:
    """Every subject's samples, each built from its own recordings only.

    Parameters
    ----------
    recordings : sequence of Recording
    samples : EpochsSamples, WindowsSamples or TimeSamples
    keys : str, optional
        Sample-table column stored as the trials' ``keys``.
    stage : str
        Stage name for the error message.

    Returns
    -------
    dict of str to SubjectTrials

    Raises
    ------
    StageError
        What building the samples refuses (no matching event, a missing key column...).
    """
    from ..data.subjects import per_subject

    def build(recs: Sequence[Any]) -> Any:
        return build_samples(recs, samples)

    try:
        return per_subject(recordings, build, keys=keys)
    except KeyError as err:
        raise StageError(f"stage {stage}: keys: the sample table has no column {err}") from None
    except ValueError as err:
        raise StageError(f"stage {stage}: samples: {err}") from None


def split_subject(trials: Any, split: SplitConfig, stage: str = "cross_subject"
                  ) -> tuple[dict[str, Any], float]:
    """A subject's ``train``, ``val`` and ``test`` parts in time order, and the gap used.

    Raises
    ------
    StageError
        When a part is left empty (too few samples for the fractions and the gap).
    """
    from ..data.splits import default_gap

    gap = float(split.gap) if split.gap is not None else default_gap(trials.table)
    parts = trials.chronological(split.fractions, gap=gap)
    empty = [name for name, part in parts.items() if not len(part)]
    if empty:
        raise StageError(
            f"stage {stage}: subject {trials.subject}: {len(trials)} samples leave no "
            f"{' or '.join(empty)} sample with fractions {list(split.fractions)} and a "
            f"{gap:g} s gap (more samples, or other fractions)"
        )
    return parts, gap


@dataclass
class TestSet:
    """One subject's test samples and the permuted targets of their chance level.

    Attributes
    ----------
    trials : SubjectTrials
    permutations : list of ndarray
        Permuted copies of ``trials.y`` (the same for every model scored on these samples).
    """

    trials: Any
    permutations: list[np.ndarray]

    @classmethod
    def build(cls, trials: Any, n_permutations: int, seed: int) -> TestSet:
        """Permute the test targets ``n_permutations`` times (scheme from the samples)."""
        from ..evaluate.permutation import default_scheme, permuted_targets

        y = np.asarray(trials.y)
        scheme = default_scheme(y, trials.table)
        perms = permuted_targets(
            y, n_permutations, scheme=scheme, groups=trials.table["recording"].to_numpy(),
            order=trials.table["start"].to_numpy(), random_state=seed,
        )  # fmt: skip
        return cls(trials, perms)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes of ``y`` (scikit-learn's ``balanced_accuracy_score``).

    Labels are compared as text; thousands of calls (a permutation null) cost milliseconds.
    """
    from ..evaluate.metrics import balanced_accuracy_rows

    return float(balanced_accuracy_rows(np.asarray(y).astype(str), np.asarray(pred).astype(str)))


def _score_fn(task: str, head: Any) -> Callable[[np.ndarray, np.ndarray], float]:
    """``score(y_true, output)``: balanced accuracy of labels, else the head's metric."""
    if task == "classify":
        return balanced_accuracy
    import torch

    def score_values(y: np.ndarray, pred: np.ndarray) -> float:
        y = np.asarray(y, np.float32).reshape(len(y), -1)
        out = np.asarray(pred, np.float32).reshape(len(y), -1)
        return float(head.score(torch.as_tensor(out), torch.as_tensor(y)))

    return score_values


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _fixed_null(score_fn: Callable[[np.ndarray, np.ndarray], float], pred: np.ndarray,
                test: TestSet) -> dict[str, Any]:
    from ..evaluate.permutation import permutation_p_value

    score = score_fn(test.trials.y, pred)
    null = np.array([score_fn(y, pred) for y in test.permutations], dtype=float)
    chance = float(np.nanmean(null)) if null.size and np.isfinite(null).any() else float("nan")
    return {"score": _finite(score), "chance": _finite(chance),
            "p_value": _finite(permutation_p_value(score, null))}


def evaluate_decoder(decoder: Any, test: TestSet, reference: Any = None) -> dict[str, Any]:
    """Score a cross-subject decoder on one subject's test samples, with its chance level.

    Parameters
    ----------
    decoder : CrossSubjectDecoder
        Serving ``test.trials.subject``.
    test : TestSet
    reference : CrossSubjectDecoder, optional
        Whose head scores continuous outputs (default ``decoder``'s).

    Returns
    -------
    dict
        ``score``, ``chance`` (mean score of the same predictions against the permuted
        targets) and ``p_value``; None where undefined.
    """
    task = decoder.config_.task
    pred = decoder.predict(test.trials) if task == "classify" \
        else decoder.decision_function(test.trials)
    head = (reference or decoder).model_.head
    return _fixed_null(_score_fn(task, head), pred, test)


def baseline_name(task: str) -> str:
    """The subject-specific baseline of a task: ``logistic`` (classes) or ``ridge``."""
    return "logistic" if task == "classify" else "ridge"


def evaluate_baseline(task: str, train: Any, test: TestSet, head: Any = None) -> dict[str, Any]:
    """Fit the subject-specific baseline on ``train`` and score it on ``test``.

    Parameters
    ----------
    task : {"classify", "regress"}
    train : SubjectTrials
        The subject's training samples (flattened; standardised inside the pipeline).
    test : TestSet
    head : Head, optional
        The head whose metric scores continuous targets (R² when None).

    Returns
    -------
    dict
        ``name``, ``score``, ``chance``, ``p_value`` (None where undefined), and ``note`` when
        the baseline cannot be fitted on these samples (one class only, too few samples).
    """
    from sklearn.base import clone

    from ..evaluate import baselines

    name = baseline_name(task)
    X = train.X.reshape(len(train), -1)
    if task == "classify":
        model = baselines.logistic()
    else:
        model = baselines.ridge(cv=int(np.clip(len(train) // 4, 2, 5)))
    try:
        fitted = clone(model).fit(X, np.asarray(train.y))
        pred = fitted.predict(test.trials.X.reshape(len(test.trials), -1))
    except ValueError as err:
        return {"name": name, "score": None, "chance": None, "p_value": None,
                "note": f"not fitted on {len(train)} samples: {str(err).splitlines()[0]}"}
    if task != "classify" and head is None:
        from ..evaluate.metrics import r2

        def score_fn(y: np.ndarray, out: np.ndarray) -> float:
            return float(r2(y, out))
    else:
        score_fn = _score_fn(task, head)
    return {"name": name, **_fixed_null(score_fn, pred, test)}


def _dataset_name(config: Any, stores: Sequence[Path]) -> str:
    """The config's ``dataset``, else the name of the first store (or folder of stores)."""
    if config.dataset:
        return config.dataset
    first = Path(stores[0]).resolve()
    return first.stem if first.suffix == ".zarr" else first.name


@dataclass
class Pretrained:
    """What a ``pretrain`` output folder holds.

    Attributes
    ----------
    path : Path
    pretrainer : CodebookPretrainer
        Loaded from its ``pretrain.pt``.
    metrics : dict
        Its ``metrics.json``.
    coverage : dict of str to list of [float, float]
        Per recording (the sample table's ``recording``: the store path), the time spans the
        pretraining windows covered.
    """

    path: Path
    pretrainer: Any
    metrics: dict[str, Any]
    coverage: dict[str, list[list[float]]]


def read_pretrained(path: str | Path, stage: str = "cross_subject") -> Pretrained:
    """Read a ``pretrain`` output folder (``pretrain.pt`` and ``metrics.json``).

    Raises
    ------
    StageError
        Not such a folder, or one whose files cannot be read.
    """
    from ..models.codebook import CodebookPretrainer

    folder = Path(path)
    where = f"stage {stage}: pretrained {folder}"
    if not folder.is_dir():
        raise StageError(f"{where}: not a folder (the folder the pretrain stage writes)")
    missing = [n for n in ("pretrain.pt", "metrics.json") if not (folder / n).is_file()]
    if missing:
        raise StageError(f"{where}: no {' or '.join(missing)} (not a pretrain stage's folder)")
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        coverage = {str(k): [[float(a), float(b)] for a, b in v]
                    for k, v in (metrics.get("coverage") or {}).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise StageError(f"{where}: metrics.json cannot be read ({str(err).splitlines()[0]})"
                         ) from None
    try:
        pretrainer = CodebookPretrainer.load(folder / "pretrain.pt")
    except (ValueError, KeyError, OSError) as err:
        raise StageError(f"{where}: {str(err).splitlines()[0]}") from None
    return Pretrained(folder, pretrainer, metrics, coverage)


def samples_in_spans(trials: Any, coverage: Mapping[str, Sequence[Sequence[float]]]) -> int:
    """How many samples overlap a span of ``coverage`` in their own recording."""
    table = trials.table
    rec, start = table["recording"].astype(str).to_numpy(), table["start"].to_numpy(float)
    stop = table["stop"].to_numpy(float)
    hit = np.zeros(len(table), bool)
    for recording, spans in coverage.items():
        rows = rec == recording
        for lo, hi in spans:
            hit |= rows & (start < hi) & (stop > lo)
    return int(hit.sum())


def _check_lengths(trials: Mapping[str, Any], pre: Pretrained) -> None:
    """Refuse samples whose length is not the pretraining windows' (naming how to fix it)."""
    n = int(pre.pretrainer.n_times_)
    for s, t in trials.items():
        if t.n_times != n:
            raise StageError(
                f"stage cross_subject: subject {s}: samples of {t.n_times} time steps; the "
                f"pretraining {pre.path} took windows of {n} ({n / t.sfreq:g} s at "
                f"{t.sfreq:g} Hz): epochs hold (tmax - tmin) * sfreq + 1 steps, so make "
                f"tmax - tmin (or the crop) {(n - 1) / t.sfreq:g} s; windows: length "
                f"{n / t.sfreq:g} s")


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def cross_subject(config: CrossSubjectConfig, stores: Sequence[str | Path], folder: str | Path,
                  pretrained: str | Path | None = None) -> dict[str, Any]:
    """Train the shared decoder of ``config`` on ``stores`` and write the model folder.

    Parameters
    ----------
    config : CrossSubjectConfig
    stores : sequence of path-like
        Store paths or folders of stores (several subjects).
    folder : path-like
        The model folder to write (created).
    pretrained : path-like, optional
        A ``pretrain`` stage's folder: fine-tune from its pretrained adapter and backbone.

    Returns
    -------
    dict
        The content of ``metrics.json``: ``analysis``, ``description``, ``dataset``, ``model``
        (``name``, ``task``, ``config``: the resolved file), ``metric``, ``classes``,
        ``samples`` (the sample spec), ``split`` (``fractions``, ``gap`` as configured),
        ``keys``, ``subjects`` (per subject: ``n_train``, ``n_val``, ``n_test``,
        ``n_channels``, ``gap`` used, ``stores``, ``shared`` and ``baseline`` with ``score``,
        ``chance``, ``p_value``), ``excluded``, ``mean`` (``shared``, ``baseline``,
        ``chance``), ``n_permutations``, ``seed``, ``epochs``, ``best_epoch``,
        ``fit_seconds`` and ``seconds``. With ``pretrained``: ``pretrained`` (``path``,
        ``analysis``, ``model``, ``subjects`` of the pretraining, ``only_in_pretraining``,
        ``n_times``, ``health``, ``test_samples_in_pretraining``), per subject ``scratch``
        (``score``, ``chance``, ``p_value``) and ``test_in_pretraining``, ``mean.scratch``
        and ``scratch`` (``epochs``, ``best_epoch``, ``fit_seconds``) unless ``config.scratch``
        is false; per subject ``probe``, ``mean.probe`` and ``probe`` (``layer``, ``C``,
        ``n_features``; or ``skipped``: why) unless ``config.probe`` is false; else
        ``pretrained`` is None.

    Raises
    ------
    StageError
        No store or recording, unknown subjects, a subject whose split leaves a part empty,
        samples the model cannot take (or not of the pretraining windows' length), a
        pretrained folder that cannot be read or whose model does not fit the config.
    """
    from ..models.decoder import CrossSubjectDecoder

    t0 = time.perf_counter()
    folder = Path(folder)
    model_cfg = config.model.resolve()
    selection = config.samples
    recs = open_stores(stores, selection, stage="cross_subject")
    trials = subject_samples(recs, selection, config.keys)
    found = sorted(trials)
    wanted = config.subjects if config.subjects is not None else found
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise StageError(f"stage cross_subject: subjects {unknown} are not in the stores "
                         f"(subjects: {', '.join(found)})")
    names = [s for s in wanted if s not in set(config.exclude)]
    if not names:
        raise StageError(f"stage cross_subject: no subject left to train on (subjects "
                         f"{wanted}, exclude {config.exclude})")
    pre = read_pretrained(pretrained) if pretrained is not None else None
    if pre is not None:
        _check_lengths({s: trials[s] for s in names}, pre)
    parts, gaps = {}, {}
    for s in names:
        parts[s], gaps[s] = split_subject(trials[s], config.split)
    fits = [("shared", pre.pretrainer if pre is not None else None)]
    if pre is not None and config.scratch:
        fits.append(("scratch", None))
    decoders = {}
    for name, start in fits:
        try:
            decoders[name] = CrossSubjectDecoder(model_cfg, pretrained=start).fit(
                {s: p["train"] for s, p in parts.items()},
                {s: p["val"] for s, p in parts.items()})
        except ValueError as err:
            raise StageError(f"stage cross_subject: model: {err}") from None
    decoder, scratch = decoders["shared"], decoders.get("scratch")
    probe, probe_note = _fit_probe(config, model_cfg.task, pre, parts, decoder.classes_)
    folder.mkdir(parents=True, exist_ok=True)
    decoder.save(folder / "model.pt")
    (folder / "config.yaml").write_text(
        "# the resolved model config of this model (its file with params merged in)\n"
        + yaml.safe_dump(model_cfg.model_dump(mode="json"), sort_keys=False))
    subjects = {}
    for k, (s, p) in enumerate(parts.items()):
        test = TestSet.build(p["test"], config.n_permutations, config.seed + k)
        shared = evaluate_decoder(decoder, test)
        base = evaluate_baseline(model_cfg.task, p["train"], test, decoder.model_.head)
        subjects[s] = {
            "n_train": len(p["train"]), "n_val": len(p["val"]), "n_test": len(p["test"]),
            "n_channels": trials[s].n_channels, "gap": round(gaps[s], 6),
            "stores": sorted({str(r) for r in trials[s].table["recording"]}),
            "shared": shared, "baseline": base,
        }  # fmt: skip
        if scratch is not None:
            subjects[s]["scratch"] = evaluate_decoder(scratch, test)
        if probe is not None:
            subjects[s]["probe"] = _fixed_null(balanced_accuracy, probe.predict(test.trials),
                                               test)
        if pre is not None:
            subjects[s]["test_in_pretraining"] = samples_in_spans(p["test"], pre.coverage)
    mean = {
        "shared": _mean([v["shared"]["score"] for v in subjects.values()]),
        "baseline": _mean([v["baseline"]["score"] for v in subjects.values()]),
        "chance": _mean([v["shared"]["chance"] for v in subjects.values()]),
    }
    if scratch is not None:
        mean["scratch"] = _mean([v["scratch"]["score"] for v in subjects.values()])
    if probe is not None:
        mean["probe"] = _mean([v["probe"]["score"] for v in subjects.values()])
    data = {
        "analysis": config.analysis,
        "description": config.description,
        "dataset": _dataset_name(config, [Path(p) for p in stores]),
        "model": {"name": model_cfg.name, "task": model_cfg.task, "config": "config.yaml",
                  "file": "model.pt", "adapter": model_cfg.adapter.name},
        "metric": decoder.metric,
        "classes": None if decoder.classes_ is None else [str(c) for c in decoder.classes_],
        "samples": selection.model_dump(mode="json"),
        "split": config.split.model_dump(mode="json"),
        "keys": config.keys,
        "subjects": subjects,
        "excluded": sorted(set(found) - set(names)),
        "mean": mean,
        "pretrained": None if pre is None else {
            "path": str(pre.path), "analysis": pre.metrics.get("analysis"),
            "model": (pre.metrics.get("model") or {}).get("name"),
            "subjects": pre.pretrainer.subjects_,
            "only_in_pretraining": sorted(set(pre.pretrainer.subjects_) - set(names)),
            "n_times": int(pre.pretrainer.n_times_), "health": pre.metrics.get("health"),
            "test_samples_in_pretraining": sum(v["test_in_pretraining"]
                                               for v in subjects.values()),
        },
        "n_permutations": int(config.n_permutations),
        "seed": int(config.seed),
        "epochs": int(decoder.epochs_),
        "best_epoch": decoder.best_epoch_,
        "fit_seconds": round(float(decoder.fit_seconds_), 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if scratch is not None:
        data["scratch"] = {"epochs": int(scratch.epochs_), "best_epoch": scratch.best_epoch_,
                           "fit_seconds": round(float(scratch.fit_seconds_), 3)}
    if probe is not None:
        data["probe"] = {"layer": probe.layer, "C": probe.C_, "n_features": probe.n_features_}
    elif probe_note:
        data["probe"] = {"skipped": probe_note}
    (folder / "metrics.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


def _fit_probe(config: CrossSubjectConfig, task: str, pre: Pretrained | None,
               parts: Mapping[str, Mapping[str, Any]], classes: Any
               ) -> tuple[Any, str | None]:
    """The linear probe on the frozen pretraining (or None), and why it was skipped."""
    if pre is None or not config.probe:
        return None, None
    if task != "classify":
        return None, f"a linear probe classifies; this model's task is {task!r}"
    missing = sorted(set(parts) - set(pre.pretrainer.subjects_))
    if missing:
        return None, f"subjects {missing} were not in the pretraining"
    from ..models.codebook.probe import LinearProbe

    try:
        probe = LinearProbe(pre.pretrainer).fit({s: p["train"] for s, p in parts.items()},
                                                {s: p["val"] for s, p in parts.items()},
                                                classes=None if classes is None else list(classes))
    except ValueError as err:
        raise StageError(f"stage cross_subject: linear probe: {err}") from None
    return probe, None


@register
class CrossSubjectStage(Stage):
    """Train one decoder across subjects; score it per subject against a baseline and chance."""

    name = "cross_subject"
    Config = CrossSubjectConfig
    version = f"1+{sources_digest('neurodecode/models/**/*.py', 'models/*.yaml')}"
    inputs = {"stores": Slot("recording stores of several subjects, or folders of them",
                             many=True),
              "pretrained": Slot("a pretrain stage's folder: fine-tune from its pretrained "
                                 "adapter and backbone (default: a random initialisation)",
                                 required=False, folder=True)}
    outputs = {"model": Slot("folder: model.pt, config.yaml (resolved model config), "
                             "metrics.json (per-subject scores, the sample spec and split)",
                             folder=True)}

    def run(
        self, config: CrossSubjectConfig, inputs: Mapping[str, list[Path]],
        outputs: Mapping[str, Path],
    ) -> dict[str, Any]:
        """Train (or fine-tune), write the model folder, return the mean scores."""
        pretrained = inputs.get("pretrained") or [None]
        with compute_threads(config.threads):
            data = cross_subject(config, inputs["stores"], outputs["model"], pretrained[0])
        return {"metric": data["metric"], "subjects": list(data["subjects"]),
                "mean": data["mean"], "epochs": data["epochs"],
                "pretrained": (data["pretrained"] or {}).get("path"),
                "seconds": data["seconds"]}
