"""The ``adapt`` stage: a trained cross-subject decoder adapted to new subjects, few-shot.

One job reads a ``cross_subject`` model folder and the stores of one or more new subjects. It
builds each new subject's samples exactly as the model's were built (the sample spec, keys and
split stored in the model folder's ``metrics.json``: nothing is repeated in this config), splits
them in time into training, validation and test parts, and then, for every ``strategy`` of
:mod:`neurodecode.models.fewshot` and every ``fraction`` of the training part (its first
``fraction`` in time: :meth:`~neurodecode.data.subjects.SubjectTrials.fraction`), adapts the
decoder with those samples only and scores it on the new subject's test part, with the
permutation chance level of its fixed predictions. Subject-specific baselines get the same
budgets: ``scratch`` (a decoder of the same config trained on that subject alone, its
validation samples the tail of the budget, as :func:`~neurodecode.models.fewshot.holdout_split`
does) and ``linear`` (logistic regression for classes, ridge for continuous targets).

The new subject's validation and test parts never enter an adaptation: each adaptation gets the
budget only, and stops early on the budget's own tail (``adapt(..., val=None)``). The training
subjects' training parts (rebuilt from their stores: the ``reference`` input, or the stores the
model folder records) are the functional-alignment references of strategy ``d`` and initialise
the adapters of ``a``–``c``.

The output folder::

    fewshot.json        the few-shot curve: one row per subject, strategy (or baseline) and
                        fraction: dataset, subject, strategy, fraction, n_train, metric,
                        score, chance (and p_value, seconds, epochs); the saved models
    sub-<s>/model.pt    per new subject: the decoder adapted with ``strategy`` at ``budget``

``budget`` is ``"5min"`` (the samples within the first 5 minutes of the training part:
:meth:`~neurodecode.data.subjects.SubjectTrials.within`), ``"90s"``, ``"10%"`` (of the training
part), ``"15trials"`` (the first 15 samples) or ``"all"``.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, TypeAdapter, field_validator

from ..config import StageConfig
from .base import Slot, Stage, StageError, register
from .cross_subject import (
    SplitConfig,
    TestSet,
    baseline_name,
    compute_threads,
    evaluate_baseline,
    evaluate_decoder,
    sources_digest,
    split_subject,
    subject_samples,
)
from .decode import SamplesConfig, _as_strings, open_stores

__all__ = [
    "AdaptConfig",
    "AdaptStage",
    "Budget",
    "ModelFolder",
    "adapt_subjects",
    "parse_budget",
    "read_model_folder",
]

_BUDGET = re.compile(
    r"^\s*(?:(?P<all>all)|(?P<num>\d+(?:\.\d*)?)\s*(?P<unit>min|s|%|trials?|samples?))\s*$",
    re.IGNORECASE,
)
#: Keyword arguments of :func:`neurodecode.models.fewshot.adapt` that ``options`` may set (the
#: stage sets the others).
_SET_BY_STAGE = ("decoder", "train", "val", "strategy", "reference", "seed")


@dataclass(frozen=True)
class Budget:
    """How many of a new subject's training samples an adaptation gets (from their start).

    Attributes
    ----------
    text : str
        As given (``"5min"``, ``"90s"``, ``"10%"``, ``"15trials"``, ``"all"``).
    kind : {"seconds", "fraction", "count", "all"}
    value : float
    """

    text: str
    kind: Literal["seconds", "fraction", "count", "all"]
    value: float

    def take(self, trials: Any) -> Any:
        """The first samples of ``trials`` (in time) within this budget."""
        if self.kind == "all":
            return trials
        if self.kind == "seconds":
            return trials.within(self.value)
        if self.kind == "fraction":
            return trials.fraction(self.value)
        return trials.first(int(self.value))


def parse_budget(text: str) -> Budget:
    """Read a budget: ``"5min"``, ``"90s"``, ``"10%"``, ``"15trials"`` or ``"all"``.

    Raises
    ------
    ValueError
        Naming the accepted forms.
    """
    m = _BUDGET.match(str(text))
    forms = ("give minutes ('5min'), seconds ('90s'), a percentage of the new subject's "
             "training part ('10%'), a number of samples ('15trials') or 'all'")
    if m is None:
        raise ValueError(f"budget {text!r}: {forms}")
    if m["all"]:
        return Budget(str(text), "all", 1.0)
    value, unit = float(m["num"]), m["unit"].lower()
    if value <= 0:
        raise ValueError(f"budget {text!r} must be positive; {forms}")
    if unit == "min":
        return Budget(str(text), "seconds", 60.0 * value)
    if unit == "s":
        return Budget(str(text), "seconds", value)
    if unit == "%":
        if value > 100:
            raise ValueError(f"budget {text!r}: a percentage is at most 100%")
        return Budget(str(text), "fraction", value / 100.0)
    if value != int(value):
        raise ValueError(f"budget {text!r}: a number of samples is a whole number")
    return Budget(str(text), "count", value)


def _adapt_options() -> dict[str, Any]:
    """Keyword arguments of ``fewshot.adapt`` that ``options`` may set, with their defaults."""
    from ..models import fewshot

    params = inspect.signature(fewshot.adapt).parameters
    return {n: p.default for n, p in params.items()
            if p.kind is p.KEYWORD_ONLY and n not in _SET_BY_STAGE}


class AdaptConfig(StageConfig):
    """Config of the ``adapt`` stage.

    Attributes
    ----------
    analysis : str
        Name of the analysis (in ``fewshot.json`` and the report).
    description : str
    dataset : str, optional
        The rows' ``dataset`` (default the model's).
    subjects : list of str, optional
        New subjects to adapt to among the stores (default every subject there that the model
        does not serve; the others are skipped with a note).
    strategies : list of str
        Few-shot strategies of the curve (letters or names, :data:`~neurodecode.models.
        fewshot.STRATEGIES`); ``e`` (zero-shot) only with a position-aware adapter, else it
        is skipped with a note.
    fractions : list of float
        Shares of the new subject's training part (its first part in time) of the curve.
    baselines : list of {"scratch", "linear"}
        Subject-specific baselines at the same budgets: the model's config trained on the
        subject alone, and logistic (classes) or ridge (continuous targets) regression.
    strategy : str
        Strategy of the saved model.
    budget : str
        Budget of the saved model: ``"5min"``, ``"90s"``, ``"10%"``, ``"15trials"`` or
        ``"all"``.
    options : dict
        Other keyword arguments of :func:`neurodecode.models.fewshot.adapt` (``max_epochs``,
        ``patience``, ``init``, ``align_method``, ``lora_rank``, ``fixed_epochs``...); the
        epoch limits apply to the ``scratch`` baseline too.
    n_permutations : int
        Permuted test targets for each chance level.
    seed : int
        Seed of the adaptations and permutations.
    threads : int, optional
        torch intra-op and BLAS threads (1 is fastest on a small shared machine; None: the
        libraries' defaults).
    """

    analysis: str = Field("adapt", min_length=1)
    description: str = ""
    dataset: str | None = None
    subjects: list[str] | None = None
    strategies: list[str] = Field(default_factory=lambda: ["a", "b", "c", "d"],
                                  validate_default=True)
    fractions: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.25, 1.0],
                                   validate_default=True)
    baselines: list[Literal["scratch", "linear"]] = Field(
        default_factory=lambda: ["scratch", "linear"])
    strategy: str = Field("a", validate_default=True)
    budget: str = "5min"
    options: dict[str, Any] = Field(default_factory=dict)
    n_permutations: int = Field(200, ge=0)
    seed: int = 0
    threads: int | None = Field(1, ge=1)

    @field_validator("subjects", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return _as_strings(value)

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        from ..models.fewshot import parse_strategy

        names = [parse_strategy(s) for s in value]
        return list(dict.fromkeys(names))

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from ..models.fewshot import parse_strategy

        return parse_strategy(value)

    @field_validator("fractions")
    @classmethod
    def _in_unit_interval(cls, value: list[float]) -> list[float]:
        bad = [f for f in value if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions {bad} must lie in (0, 1]")
        return sorted(set(value))

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        parse_budget(value)
        return value

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        valid = _adapt_options()
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ValueError(f"options: unknown key(s) {unknown} (keys: {', '.join(valid)}; "
                             "strategy, reference and seed are set by the stage)")
        return value


# --------------------------------------------------------------------------- the model folder


@dataclass
class ModelFolder:
    """What a ``cross_subject`` model folder holds.

    Attributes
    ----------
    path : Path
    decoder : CrossSubjectDecoder
    metrics : dict
        Its ``metrics.json``.
    samples : EpochsSamples, WindowsSamples or TimeSamples
        The sample spec the model was trained with.
    split : SplitConfig
    keys : str or None
    stores : dict of str to list of str
        Each training subject's stores, as recorded.
    """

    path: Path
    decoder: Any
    metrics: dict[str, Any]
    samples: Any
    split: SplitConfig
    keys: str | None
    stores: dict[str, list[str]]


def read_model_folder(path: str | Path, stage: str = "adapt") -> ModelFolder:
    """Read a ``cross_subject`` model folder (``model.pt`` and ``metrics.json``).

    Raises
    ------
    StageError
        Not such a folder, or one whose files cannot be read.
    """
    from ..models.decoder import CrossSubjectDecoder

    folder = Path(path)
    where = f"stage {stage}: model {folder}"
    if not folder.is_dir():
        raise StageError(f"{where}: not a folder (the model folder the cross_subject stage "
                         "writes)")
    missing = [n for n in ("model.pt", "metrics.json") if not (folder / n).is_file()]
    if missing:
        raise StageError(f"{where}: no {' or '.join(missing)} (not a cross_subject model "
                         "folder)")
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        samples = TypeAdapter(SamplesConfig).validate_python(metrics["samples"])
        split = SplitConfig.model_validate(metrics.get("split") or {})
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(f"{where}: metrics.json has no valid sample spec "
                         f"({str(err).splitlines()[0]})") from None
    try:
        decoder = CrossSubjectDecoder.load(folder / "model.pt")
    except (ValueError, KeyError, OSError) as err:
        raise StageError(f"{where}: {str(err).splitlines()[0]}") from None
    stores = {str(s): list(v.get("stores") or [])
              for s, v in (metrics.get("subjects") or {}).items()}
    return ModelFolder(folder, decoder, metrics, samples, split, metrics.get("keys"), stores)


def _reference_trials(model: ModelFolder, paths: Sequence[Path], notes: list[str]
                      ) -> dict[str, Any]:
    """The training subjects' training parts: functional-alignment references."""
    served = set(model.decoder.subjects_)
    if not paths:
        recorded = [p for s, v in model.stores.items() if s in served for p in v]
        paths = [Path(p) for p in recorded if Path(p).exists()]
        if not paths:
            notes.append("no reference: the training subjects' stores recorded in the model "
                         "folder are gone and no reference input is given (strategy align is "
                         "skipped; the other adapters start from a random initialisation)")
            return {}
    selection = model.samples.model_copy(update={"subjects": sorted(served)})
    try:
        recs = open_stores(paths, selection, stage="adapt")
    except StageError as err:
        raise StageError(f"{err} (the reference input: the training subjects' stores)"
                         ) from None
    trials = subject_samples(recs, selection, model.keys, stage="adapt")
    out = {}
    for s, t in trials.items():
        if s in served:
            parts, _ = split_subject(t, model.split, stage="adapt")
            out[s] = parts["train"]
    missing = sorted(served - set(out))
    if missing:
        notes.append(f"reference subjects {missing} not found in the reference stores")
    return out


# --------------------------------------------------------------------------- adaptation


def _row(dataset: str, subject: str, strategy: str, letter: str | None, fraction: float | None,
         n_train: int, metric: str, result: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"dataset": dataset, "subject": subject, "strategy": strategy, "letter": letter,
            "kind": "adapt" if letter else "baseline", "fraction": fraction,
            "n_train": int(n_train), "metric": metric, "score": result.get("score"),
            "chance": result.get("chance"), "p_value": result.get("p_value"), **extra}


def _same_samples(a: Any, b: Any) -> bool:
    cols = ["recording", "start"]
    return len(a) == len(b) and bool((a.table[cols].to_numpy() == b.table[cols].to_numpy()).all())


def _letter(name: str) -> str:
    from ..models.fewshot import STRATEGIES

    return next(k for k, v in STRATEGIES.items() if v == name)


def _scratch(model_cfg: Any, budget: Any, options: Mapping[str, Any], seed: int) -> Any:
    """A decoder of the model's config trained on the budget alone (tail: validation)."""
    from ..models.decoder import CrossSubjectDecoder
    from ..models.fewshot import holdout_split

    defaults = _adapt_options()
    train, val = holdout_split(budget, float(options.get("val_fraction",
                                                         defaults["val_fraction"])))
    epochs = options.get("max_epochs") or model_cfg.train.max_epochs
    if val is None:
        epochs = min(epochs, int(options.get("fixed_epochs", defaults["fixed_epochs"])))
    dec = CrossSubjectDecoder(model_cfg, max_epochs=epochs, patience=options.get("patience"),
                              seed=seed)
    return dec.fit(train, val)


@dataclass
class _Curve:
    """The few-shot curve of one new subject after another, and their saved models."""

    config: AdaptConfig
    decoder: Any
    reference: Mapping[str, Any]
    strategies: list[str]
    dataset: str

    def _adapt(self, budget: Any, strategy: str) -> Any:
        return self.decoder.adapt(budget, None, strategy=strategy,
                                  reference=self.reference or None, seed=self.config.seed,
                                  **self.config.options)

    def rows(self, pool: Any, test: TestSet, rows: list[dict[str, Any]]
             ) -> list[tuple[Any, Any]]:
        """Append the curve's rows of one subject; return the (budget, decoder) pairs of the
        saved model's strategy (reused when the saved budget is one of the fractions)."""
        cfg, dec, metric = self.config, self.decoder, self.decoder.metric
        task, subject = dec.config_.task, pool.subject
        kept = []
        for fraction in cfg.fractions:
            few = pool.fraction(fraction)
            for name in self.strategies:
                start = time.perf_counter()
                try:
                    adapted = self._adapt(few, name)
                except ValueError as err:
                    rows.append(_row(self.dataset, subject, name, _letter(name), fraction,
                                     len(few), metric, {}, note=str(err).splitlines()[0]))
                    continue
                rows.append(_row(self.dataset, subject, name, _letter(name), fraction,
                                 len(few), metric, evaluate_decoder(adapted, test),
                                 seconds=round(time.perf_counter() - start, 3),
                                 epochs=adapted.adaptations_[-1].get("epochs")))
                if name == cfg.strategy:
                    kept.append((few, adapted))
            if "scratch" in cfg.baselines:
                start = time.perf_counter()
                try:
                    alone = _scratch(dec.config_, few, cfg.options, cfg.seed)
                    result = evaluate_decoder(alone, test, reference=dec)
                    extra = {"epochs": int(alone.epochs_)}
                except ValueError as err:
                    result, extra = {}, {"note": str(err).splitlines()[0]}
                rows.append(_row(self.dataset, subject, "scratch", None, fraction, len(few),
                                 metric, result, seconds=round(time.perf_counter() - start, 3),
                                 **extra))
            if "linear" in cfg.baselines:
                start = time.perf_counter()
                result = evaluate_baseline(task, few, test, dec.model_.head)
                note = {"note": result["note"]} if "note" in result else {}
                rows.append(_row(self.dataset, subject, baseline_name(task), None, fraction,
                                 len(few), metric, result,
                                 seconds=round(time.perf_counter() - start, 3), **note))
        return kept

    def save(self, pool: Any, test: TestSet, kept: Sequence[tuple[Any, Any]], path: Path
             ) -> dict[str, Any]:
        """Adapt with the saved model's strategy and budget (or reuse a curve's decoder),
        write it to ``path``, return its record for ``fewshot.json``."""
        cfg = self.config
        chosen = parse_budget(cfg.budget).take(pool)
        if not len(chosen):
            raise StageError(f"stage adapt: subject {pool.subject}: budget {cfg.budget!r} "
                             f"selects no sample of its {len(pool)} training samples")
        start = time.perf_counter()
        reused = next((a for few, a in kept if _same_samples(few, chosen)), None)
        try:
            saved = reused or self._adapt(chosen, cfg.strategy)
        except ValueError as err:
            raise StageError(f"stage adapt: subject {pool.subject}: strategy {cfg.strategy} "
                             f"at budget {cfg.budget!r}: {str(err).splitlines()[0]}") from None
        saved.save(path)
        return {"path": f"{path.parent.name}/{path.name}", "strategy": cfg.strategy,
                "budget": cfg.budget, "n_train": len(chosen), "reused": reused is not None,
                "seconds": round(time.perf_counter() - start, 3),
                **evaluate_decoder(saved, test)}


def adapt_subjects(config: AdaptConfig, model_path: str | Path, stores: Sequence[str | Path],
                   folder: str | Path, reference: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Adapt the model of ``model_path`` to the new subjects of ``stores``; write ``folder``.

    Parameters
    ----------
    config : AdaptConfig
    model_path : path-like
        A ``cross_subject`` model folder.
    stores : sequence of path-like
        Stores (or folders) of the new subjects.
    folder : path-like
        The output folder (created).
    reference : sequence of path-like
        Stores of the training subjects (default: those the model folder records, when they
        still exist).

    Returns
    -------
    dict
        The content of ``fewshot.json``: ``analysis``, ``description``, ``dataset``,
        ``model`` (``path``, ``name``, ``metric``, ``task``, ``subjects``), ``metric``,
        ``strategies``, ``fractions``, ``baselines``, ``strategy`` and ``budget`` (of the
        saved models), ``samples``, ``split``, ``notes``, ``subjects`` (per new subject:
        ``n_samples``, ``n_train``, ``n_val``, ``n_test``, ``gap``, ``stores``, ``saved``: the
        saved model's ``path``, ``n_train``, ``score``, ``chance``, ``p_value``, ``seconds``),
        ``rows`` (the few-shot curve), ``n_permutations``, ``seed``, ``seconds``.

    Raises
    ------
    StageError
        A model folder or store that cannot be read, samples the model cannot take (other
        lengths, labels it does not know), a subject the model already serves, a budget that
        selects no sample.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    model = read_model_folder(model_path)
    decoder = model.decoder
    task, metric = decoder.config_.task, decoder.metric
    served = set(decoder.subjects_)
    notes: list[str] = []
    selection = model.samples.model_copy(update={"subjects": None})
    recs = open_stores(stores, selection, stage="adapt")
    trials = subject_samples(recs, selection, model.keys, stage="adapt")
    if config.subjects is not None:
        unknown = sorted(set(config.subjects) - set(trials))
        if unknown:
            raise StageError(f"stage adapt: subjects {unknown} are not in the stores "
                             f"(subjects: {', '.join(sorted(trials))})")
        again = sorted(set(config.subjects) & served)
        if again:
            raise StageError(f"stage adapt: subjects {again} are training subjects of the "
                             "model; adapt takes new subjects")
        names = list(config.subjects)
    else:
        names = [s for s in sorted(trials) if s not in served]
        skipped = sorted(set(trials) & served)
        if skipped:
            notes.append(f"subjects {skipped} of the stores are training subjects of the "
                         "model: not adapted")
        if not names:
            raise StageError(f"stage adapt: every subject of the stores "
                             f"({', '.join(sorted(trials))}) is a training subject of the "
                             "model; give a new subject's stores")
    for s in names:
        t = trials[s]
        if t.n_times != decoder.n_times_:
            raise StageError(
                f"stage adapt: subject {s}: samples of {t.n_times} time steps; the model takes "
                f"{decoder.n_times_} (a store at another sampling rate?)")
        if task == "classify":
            unknown = sorted({str(v) for v in t.y} - {str(c) for c in decoder.classes_})
            if unknown:
                raise StageError(f"stage adapt: subject {s}: labels {unknown} are not among the "
                                 f"model's classes {list(decoder.classes_)}")
    strategies = list(config.strategies)
    if "zero_shot" in strategies and not decoder.model_.adapter.zero_shot:
        strategies.remove("zero_shot")
        notes.append(f"strategy e (zero_shot) skipped: the {decoder.model_.adapter.part_name} "
                     "adapter is not position-aware (zero-shot needs spatial_attention)")
    needs_reference = bool({*strategies, config.strategy} - {"zero_shot"})
    if needs_reference and task != "classify" and model.keys is None:
        needs_reference = False  # alignment pairs samples by stimulus keys or class labels
        notes.append("no reference: functional alignment pairs samples by stimulus keys or "
                     "class labels, and these continuous targets have no keys (strategy align "
                     "is skipped; the other adapters start from a random initialisation)")
    ref = _reference_trials(model, [Path(p) for p in reference], notes) \
        if needs_reference else {}
    if not ref and "align" in strategies:
        strategies.remove("align")
    if config.strategy == "align" and not ref:
        raise StageError("stage adapt: strategy align (the saved model's) needs the training "
                         "subjects' stores: give the reference input")
    if config.strategy == "zero_shot" and not decoder.model_.adapter.zero_shot:
        raise StageError(f"stage adapt: strategy zero_shot (the saved model's) needs a "
                         f"position-aware adapter, not {decoder.model_.adapter.part_name}")
    dataset = config.dataset or str(model.metrics.get("dataset") or "")
    job = _Curve(config, decoder, ref, strategies, dataset)
    rows: list[dict[str, Any]] = []
    subjects: dict[str, Any] = {}
    for k, s in enumerate(names):
        parts, gap = split_subject(trials[s], model.split, stage="adapt")
        test = TestSet.build(parts["test"], config.n_permutations, config.seed + k)
        kept = job.rows(parts["train"], test, rows)
        subjects[s] = {
            "n_samples": len(trials[s]), "n_train": len(parts["train"]),
            "n_val": len(parts["val"]), "n_test": len(parts["test"]),
            "n_channels": trials[s].n_channels, "gap": round(gap, 6),
            "stores": sorted({str(r) for r in trials[s].table["recording"]}),
            "saved": job.save(parts["train"], test, kept, folder / f"sub-{s}" / "model.pt"),
        }  # fmt: skip
    data = {
        "analysis": config.analysis,
        "description": config.description,
        "dataset": dataset,
        "model": {"path": str(model.path), "name": decoder.config_.name, "metric": metric,
                  "task": task, "adapter": decoder.model_.adapter.part_name,
                  "subjects": sorted(served)},
        "metric": metric,
        "strategies": strategies,
        "fractions": list(config.fractions),
        "baselines": list(config.baselines),
        "strategy": config.strategy,
        "budget": config.budget,
        "samples": model.samples.model_dump(mode="json"),
        "split": model.split.model_dump(mode="json"),
        "reference": sorted(ref),
        "notes": notes,
        "subjects": subjects,
        "rows": rows,
        "n_permutations": int(config.n_permutations),
        "seed": int(config.seed),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fewshot.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


@register
class AdaptStage(Stage):
    """Adapt a cross-subject model to new subjects: the few-shot curve and adapted models."""

    name = "adapt"
    Config = AdaptConfig
    version = (f"1+{sources_digest('neurodecode/models/**/*.py', 'models/*.yaml')}"
               f"+{sources_digest('neurodecode/pipelines/cross_subject.py')}")
    inputs = {
        "model": Slot("the model folder of the cross_subject stage", folder=True),
        "stores": Slot("recording stores of the new subject(s), or folders of them", many=True),
        "reference": Slot("stores of the model's training subjects (default: those the model "
                          "folder records, when they still exist)", many=True, required=False),
    }
    outputs = {"adapted": Slot("folder: fewshot.json (the few-shot curve) and "
                               "sub-<s>/model.pt per new subject", folder=True)}

    def run(
        self, config: AdaptConfig, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path],
    ) -> dict[str, Any]:
        """Adapt, write the folder, return each saved model's score and chance."""
        with compute_threads(config.threads):
            data = adapt_subjects(config, inputs["model"][0], inputs["stores"],
                                  outputs["adapted"], inputs.get("reference") or ())
        return {"metric": data["metric"], "notes": data["notes"],
                "subjects": {s: {k: v["saved"][k] for k in ("n_train", "score", "chance")}
                             for s, v in data["subjects"].items()},
                "rows": len(data["rows"]), "seconds": data["seconds"]}
