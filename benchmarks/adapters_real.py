"""Cross-subject few-shot decoding on real EEG: the protocol and the peer methods (issue 13).

A new subject is decoded by a model trained on the *other* subjects (leave one subject out),
optionally adapted with the new subject's first trials in time (its *budget*), and scored on
the trials that come after them. This module builds that protocol on the real recordings and
the peers that a cross-subject model with per-subject adapters must beat:

- :func:`load_tasks` — per task and subject, the epochs through our data path (catalog →
  stores → :func:`neurodecode.data.samples.epochs`), in time order (run, then onset);
- :class:`Fold` and :func:`folds` — leave-one-subject-out folds at each budget (zero-shot
  included); no test trial is ever in ``adapt`` or ``pretrain``, and adapt trials precede test
  trials in time;
- :func:`evaluate` — a *method* ``(fold, seed) -> predicted labels of fold.test`` scored by
  balanced accuracy, with the permutation null of its fixed predictions (``chance``,
  ``chance_p95``, ``p_value``), per new subject and averaged over new subjects;
- :func:`within_subject_rows` — the classical within-subject anchors (CSP(4)+LDA,
  leave-one-run-out) beside the values published for these subjects;
- peers: :class:`CSPLDA`, :class:`ERPLDA`, :class:`TangentSpaceLR` (with Riemannian
  re-centering) and :class:`DeepNet` (braindecode's ShallowFBCSPNet and EEGNetv4 in a plain
  torch loop), each as within-subject, zero-shot (LOSO) and pooled variants.

Tasks: ``eegbci_left_right`` (PhysioNet motor imagery, S001–S004, runs 04/08/12, imagined left
vs right fist), ``eegbci_hands_feet`` (S001–S003, runs 06/10/14, both fists vs both feet):
7–30 Hz on each whole recording, epochs 1–2 s after the cue, 45 trials per subject, budgets of
0, 1 and 2 runs (15 trials a run); ``muse_n170`` (faces vs houses, 4 subjects) and
``muse_p300`` (target vs non-target, 5 subjects): 1–30 Hz, −0.1–0.8 s, baseline −0.1–0 s,
decimated 4×, as in ``benchmarks/real_data.py``; budgets of 0, 20, 40 and 80 trials, the test
trials starting after a gap of at least one trial (and after the last adapt epoch ends).

Usage::

    python benchmarks/adapters_real.py --quick --json outputs/adapters_real_quick.json
    python benchmarks/adapters_real.py --json outputs/adapters_real.json   # all tasks, 3 seeds

A benchmark of another method imports the pieces (a script in ``benchmarks/`` has that folder
on ``sys.path``; tests load the file with ``importlib``)::

    from adapters_real import evaluate, folds, load_tasks, peers

    tasks = load_tasks(Path("outputs/adapters_real/stores"), data_root)
    fs = folds(tasks, "eegbci_left_right")
    rows = evaluate("mine", my_method, fs, seeds=(0, 1, 2), n_permutations=1000)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neurodecode.data.samples import Samples, epochs, open_recordings
from neurodecode.evaluate.metrics import balanced_accuracy_rows as balanced_accuracy
from neurodecode.evaluate.permutation import fixed_prediction_null

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")

__all__ = [
    "LEFT_RIGHT_ENTRY",
    "MUSE_BUDGETS",
    "PUBLISHED_WITHIN",
    "QUICK_TRAIN",
    "QUICK_TS_VARIANTS",
    "TASKS",
    "CSPLDA",
    "DeepNet",
    "ERPLDA",
    "Fold",
    "Method",
    "NotApplicable",
    "TangentSpaceLR",
    "TrainConfig",
    "balanced_accuracy",
    "evaluate",
    "folds",
    "ingest",
    "left_right_entry",
    "load_tasks",
    "main",
    "peers",
    "permutation_null",
    "within_subject_rows",
]

#: The tasks of :func:`load_tasks`, in the order of the report.
TASKS = ("eegbci_left_right", "eegbci_hands_feet", "muse_n170", "muse_p300")

#: Catalog entry of the left/right fist imagery runs of S001–S004 (no YAML of the catalog covers
#: them; checksums are taken from the data folder's ``SHA256SUMS``). The event map is the one of
#: ``data_catalog/eegbci_s001.yaml`` for the same runs.
LEFT_RIGHT_ENTRY: dict[str, Any] = {
    "name": "eegbci_left_right",
    "modality": "eeg",
    "description": "PhysioNet EEG Motor Movement/Imagery, subjects 1-4, imagery of the left "
    "vs right fist (runs 04/08/12)",
    "licence": "ODC-By 1.0",
    "citation": "Schalk et al. (2004) BCI2000. IEEE TBME 51(6); Goldberger et al. (2000) "
    "PhysioNet.",
    "root": "eeg",
    "reader": "mne",
    "entities": {"task": "imagery", "session": "01"},
    "expect": {"sfreq": 160.0, "n_channels": 64},
    "files": [
        {
            "glob": "eegbci_S00*/S*R*.edf",
            "pattern": r"eegbci_S\d+/S(?P<subject>\d+)R(?P<run>04|08|12)\.edf",
            "event_map": {"T0": "rest", "T1": "imagine_left_fist", "T2": "imagine_right_fist"},
        }
    ],
}

#: Within-subject CSP(4)+LDA accuracies (leave-one-run-out) quoted in issue 13 for these
#: subjects, to print beside ours.
PUBLISHED_WITHIN: dict[str, dict[str, float]] = {
    "eegbci_left_right": {"001": 0.62, "002": 0.67, "003": 0.49, "004": 0.31},
    "eegbci_hands_feet": {"001": 0.93, "002": 0.62, "003": 0.62},
}

_MOTOR = {
    "eegbci_left_right": (
        ("04", "08", "12"),
        {"imagine_left_fist": "left", "imagine_right_fist": "right"},
    ),
    "eegbci_hands_feet": (
        ("06", "10", "14"),
        {"imagine_both_fists": "hands", "imagine_both_feet": "feet"},
    ),
}
_MUSE = {
    "muse_n170": {"face": "face", "house": "house"},
    "muse_p300": {"target": "target", "nontarget": "nontarget"},
}
#: Adapt budgets (trials) of the Muse tasks; the EEGBCI tasks adapt on whole runs.
MUSE_BUDGETS = (20, 40, 80)


# --------------------------------------------------------------------------------------------
# Data


def _checksums(data_root: Path, root: str) -> dict[str, str]:
    """SHA-256 of the files below ``data_root/root`` from ``data_root/SHA256SUMS`` (if any)."""
    sums = data_root / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    prefix = f"./{root.strip('/')}/"
    for line in sums.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[1].startswith(prefix):
            out[parts[1][len(prefix) :]] = parts[0]
    return out


def left_right_entry(data_root: Path):
    """The :data:`LEFT_RIGHT_ENTRY` as a checked catalog entry, pinned by ``SHA256SUMS``.

    Parameters
    ----------
    data_root : Path
        The sample-data folder.

    Returns
    -------
    neurodecode.catalog.CatalogEntry
    """
    from neurodecode.catalog import CatalogEntry

    entry = dict(LEFT_RIGHT_ENTRY)
    sums = _checksums(Path(data_root), entry["root"])
    entry["checksums"] = {
        k: v for k, v in sums.items() if k.endswith(("R04.edf", "R08.edf", "R12.edf"))
    }
    return CatalogEntry(**entry)


def ingest(stores: Path, data_root: Path, names: Sequence[str] = TASKS) -> None:
    """Write (or reuse, when up to date) the stores of the tasks ``names`` under ``stores``.

    Parameters
    ----------
    stores : Path
        Store root; each task's stores go to ``stores/<entry name>``.
    data_root : Path
        The sample-data folder.
    names : sequence of str
        Tasks of :data:`TASKS`.

    Raises
    ------
    RuntimeError
        When a file fails to ingest (every error, one a line).
    """
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    catalog = load_catalog()
    tasks = []
    for name in names:
        entry = left_right_entry(data_root) if name == "eegbci_left_right" else catalog[name]
        tasks += plan_entry(entry, stores, data_root)
    failed = [
        r.error
        for r in run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
        if r.status == "failed"
    ]
    if failed:
        raise RuntimeError("\n".join(str(e) for e in failed))


def _time_ordered(s: Samples) -> dict[str, Samples]:
    """Split by subject; within a subject, trials in time order (run, then onset)."""
    out = {}
    for subject in sorted(set(s.table["subject"]), key=lambda v: (len(v), v)):
        one = s.select(s.table["subject"].to_numpy() == subject)
        order = np.lexsort((one.table["onset"].to_numpy(), one.table["run"].to_numpy()))
        one = one.select(order)
        one.table["trial"] = np.arange(len(one))
        out[subject] = one
    return out


def _motor_imagery(stores: Path, name: str) -> dict[str, Samples]:
    runs, labels = _MOTOR[name]
    recs = open_recordings(stores / name, runs=list(runs))
    s = epochs(recs, tmin=-1.0, tmax=4.0, l_freq=7.0, h_freq=30.0, labels=labels)
    keep = (s.times >= 1.0 - 1e-9) & (s.times <= 2.0 + 1e-9)
    s = Samples(
        np.ascontiguousarray(s.X[:, :, keep]), s.y, s.table, s.ch_names, s.sfreq, s.times[keep],
        s.ch_types,
    )  # fmt: skip
    return _time_ordered(s)


def _muse(stores: Path, name: str) -> dict[str, Samples]:
    recs = open_recordings(stores / name)
    s = epochs(
        recs,
        tmin=-0.1,
        tmax=0.8,
        labels=_MUSE[name],
        baseline=(-0.1, 0.0),
        l_freq=1.0,
        h_freq=30.0,
        decim=4,
    )
    return _time_ordered(s)


def load_tasks(
    stores: Path, data_root: Path, names: Sequence[str] = TASKS
) -> dict[str, dict[str, Samples]]:
    """Epochs of every task, per subject, through the catalog, the stores and ``epochs``.

    Parameters
    ----------
    stores : Path
        Store root (written when missing or out of date, reused otherwise).
    data_root : Path
        The sample-data folder.
    names : sequence of str
        Tasks to load (default :data:`TASKS`).

    Returns
    -------
    dict
        ``{task: {subject: Samples}}``. A subject's trials are in time order (by ``run``, then
        ``onset``; the table's ``trial`` column numbers them); ``y`` holds class names
        (``left``/``right``, ``hands``/``feet``, ``face``/``house``, ``target``/``nontarget``).
        EEGBCI: 64 channels, 161 samples (1–2 s after the cue, 160 Hz); Muse: the 4 EEG
        channels, 58 samples (−0.1–0.8 s, 64 Hz).
    """
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    stores, data_root = Path(stores), Path(data_root)
    ingest(stores, data_root, names)
    return {n: (_motor_imagery if n in _MOTOR else _muse)(stores, n) for n in names}


# --------------------------------------------------------------------------------------------
# Protocol


@dataclass
class Fold:
    """One new subject at one adaptation budget.

    Attributes
    ----------
    task : str
        The task (a key of :func:`load_tasks`).
    new_subject : str
        The held-out subject.
    pretrain : dict of str to Samples
        The other subjects, all their trials.
    adapt : Samples
        The new subject's first trials in time (empty at budget ``"0 trials"``).
    test : Samples
        The new subject's trials after ``adapt`` (other runs for EEGBCI; after a gap for Muse).
    budget : str
        ``"0 trials"``, ``"1 run"``, ``"2 runs"``, ``"20 trials"``, ...
    n_adapt : int
        ``len(adapt)``.
    """

    task: str
    new_subject: str
    pretrain: dict[str, Samples] = field(repr=False)
    adapt: Samples = field(repr=False)
    test: Samples = field(repr=False)
    budget: str = "0 trials"
    n_adapt: int = 0

    @property
    def classes(self) -> np.ndarray:
        """The classes of the task (sorted), from the pretraining subjects' labels."""
        return np.unique(np.concatenate([s.y for s in self.pretrain.values()]))

    @property
    def n_pretrain(self) -> int:
        """Trials of the pretraining subjects."""
        return sum(len(s) for s in self.pretrain.values())


def _run_splits(s: Samples) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """EEGBCI budgets: the first k runs adapt, the remaining runs test (k = 1 .. n_runs - 1)."""
    runs = list(dict.fromkeys(s.table["run"].tolist()))  # time order
    run = s.table["run"].to_numpy()
    out = []
    for k in range(1, len(runs)):
        adapt = np.isin(run, runs[:k])
        out.append((f"{k} run{'s' if k > 1 else ''}", np.flatnonzero(adapt),
                    np.flatnonzero(~adapt)))  # fmt: skip
    return out


def _trial_splits(
    s: Samples, budgets: Sequence[int], gap: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Muse budgets: the first n trials adapt; test from trial n + gap, after the last adapt
    epoch has ended (so that no test epoch overlaps an adapt epoch)."""
    start = s.table["start"].to_numpy()
    stop = s.table["stop"].to_numpy()
    out = []
    for n in budgets:
        if n + gap >= len(s):
            continue
        first = n + gap
        while first < len(s) and start[first] <= stop[n - 1]:
            first += 1
        out.append((f"{n} trials", np.arange(n), np.arange(first, len(s))))
    return out


def folds(
    tasks: Mapping[str, Mapping[str, Samples]],
    task: str,
    *,
    budgets: Sequence[int] | None = None,
    gap: int = 1,
    zero_shot: bool = True,
    common_test: bool = False,
) -> list[Fold]:
    """Leave-one-subject-out folds of ``task`` at every adaptation budget.

    Parameters
    ----------
    tasks : mapping
        What :func:`load_tasks` returns.
    task : str
        The task.
    budgets : sequence of int, optional
        Adapt trials of trial-budget tasks (Muse; default :data:`MUSE_BUDGETS`). EEGBCI tasks
        adapt on their first 1 and 2 runs.
    gap : int
        Trials left out between the adapt and the test trials of trial-budget tasks (at least
        1; more are left out while a test epoch would overlap the last adapt epoch).
    zero_shot : bool
        Add the ``"0 trials"`` fold of every subject (empty ``adapt``, every trial tested).
    common_test : bool
        Test every budget of a subject (zero-shot included) on the same trials: those of its
        largest budget. Default False: each budget tests on all the trials after its own.

    Returns
    -------
    list of Fold
        Ordered by new subject, then budget (zero-shot first).
    """
    if gap < 1:
        raise ValueError(f"gap must be at least 1 trial, got {gap}")
    subjects = tasks[task]
    if len(subjects) < 2:
        raise ValueError(f"{task}: leave-one-subject-out needs 2 subjects, got {len(subjects)}")
    out = []
    for new, s in subjects.items():
        pretrain = {k: v for k, v in subjects.items() if k != new}
        if task in _MOTOR:
            splits = _run_splits(s)
        else:
            splits = _trial_splits(s, MUSE_BUDGETS if budgets is None else budgets, gap)
        if zero_shot:
            splits.insert(0, ("0 trials", np.arange(0), np.arange(len(s))))
        if common_test and splits:
            last = splits[-1][2]
            splits = [(b, a, last) for b, a, _ in splits]
        for budget, adapt, test in splits:
            out.append(Fold(task, new, pretrain, s.select(adapt), s.select(test), budget,
                            len(adapt)))  # fmt: skip
    return out


#: A method: ``(fold, seed) -> predicted class labels of fold.test`` (str, one per test trial).
#: An optional attribute ``uses`` (``"adapt"``, ``"pretrain"`` or ``"both"``, default
#: ``"both"``) says whose labelled trials it trains on (the ``n_train`` of :func:`evaluate`);
#: ``deterministic = True`` lets :func:`evaluate` run it once for all seeds.
Method = Callable[[Fold, int], np.ndarray]


class NotApplicable(Exception):
    """Raised by a method that cannot run on a fold (e.g. within-subject at 0 trials)."""


def permutation_null(
    y: np.ndarray, preds: Sequence[np.ndarray], n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Null of the seed-averaged balanced accuracy of fixed predictions (permuted test labels;
    :func:`neurodecode.evaluate.permutation.fixed_prediction_null`)."""
    return fixed_prediction_null(y, preds, n_permutations, rng)


def _n_train(method: Method, fold: Fold) -> int:
    uses = getattr(method, "uses", "both")
    return {"adapt": fold.n_adapt, "pretrain": fold.n_pretrain}.get(
        uses, fold.n_adapt + fold.n_pretrain
    )


def evaluate(
    name: str,
    method: Method,
    folds: Sequence[Fold],
    seeds: Sequence[int] = (0,),
    n_permutations: int = 1000,
    *,
    random_state: int = 0,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Score ``method`` on every fold; per new subject and averaged over new subjects.

    Parameters
    ----------
    name : str
        The method's name in the rows.
    method : Method
        ``(fold, seed) -> labels``; folds where it raises :class:`NotApplicable` are skipped.
    folds : sequence of Fold
    seeds : sequence of int
        Seeds of the method (a ``deterministic`` method runs once).
    n_permutations : int
        Permutations of the test labels for the chance level and p-value (at least 1).
    random_state : int
        Seed of the permutations (the same draws for every method).
    verbose : bool
        Print one line per fold.

    Returns
    -------
    list of dict
        Per (fold): ``level="subject"``, ``dataset``, ``method``, ``new_subject``, ``budget``,
        ``n_train`` (labelled training trials), ``n_adapt``, ``n_test``, ``metric``
        (``"balanced_accuracy"``), ``score`` (mean over seeds), ``scores`` (per seed),
        ``seed_spread`` (standard deviation over seeds), ``chance`` (mean of the permutation
        null of the method's own predictions), ``chance_p95`` (its 95th percentile),
        ``p_value`` (``(1 + #null >= score) / (1 + n_permutations)``), ``seconds``. Then, per
        (dataset, method, budget): ``level="mean"``, ``new_subject="mean"``, ``score`` (mean
        over new subjects), ``score_std`` (their standard deviation), ``n_subjects``, and
        ``chance``, ``chance_p95``, ``p_value`` of the mean over subjects (the subjects' nulls
        drawn independently).
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    rows, nulls = [], {}
    deterministic = bool(getattr(method, "deterministic", False))
    for fold in folds:
        t0 = time.perf_counter()
        preds = []
        try:
            for i, seed in enumerate(seeds):
                if deterministic and i:
                    preds.append(preds[0])
                    continue
                pred = np.asarray(method(fold, int(seed))).astype(str)
                if pred.shape != (len(fold.test),):
                    raise ValueError(
                        f"{name} returned {pred.shape} predictions for {len(fold.test)} trials"
                    )
                preds.append(pred)
        except NotApplicable:
            continue
        y = fold.test.y
        classes = np.unique(y)
        scores = np.array([float(balanced_accuracy(y, p, classes)) for p in preds])
        score = float(scores.mean())
        # the same draws for every method, independent draws for every subject and budget
        tag = zlib.crc32(f"{fold.task}|{fold.new_subject}|{fold.budget}".encode())
        rng = np.random.default_rng([random_state, tag])
        null = permutation_null(y, preds, n_permutations, rng)
        key = (fold.task, fold.budget)
        nulls.setdefault(key, []).append(null)
        row = {
            "level": "subject",
            "dataset": fold.task,
            "method": name,
            "new_subject": fold.new_subject,
            "budget": fold.budget,
            "n_train": _n_train(method, fold),
            "n_adapt": fold.n_adapt,
            "n_test": len(fold.test),
            "metric": "balanced_accuracy",
            "score": score,
            "scores": scores.round(4).tolist(),
            "seed_spread": float(scores.std()),
            "chance": float(null.mean()),
            "chance_p95": float(np.percentile(null, 95)),
            "p_value": float((1 + np.sum(null >= score - 1e-12)) / (1 + n_permutations)),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        rows.append(row)
        if verbose:
            print(_line(row), flush=True)
    return rows + _aggregate(rows, nulls, n_permutations)


def _aggregate(
    rows: list[dict[str, Any]], nulls: dict[tuple[str, str], list[np.ndarray]], n_perm: int
) -> list[dict[str, Any]]:
    out = []
    keys = list(dict.fromkeys((r["dataset"], r["method"], r["budget"]) for r in rows))
    for dataset, method, budget in keys:
        group = [
            r for r in rows if (r["dataset"], r["method"], r["budget"]) == (dataset, method, budget)
        ]
        scores = np.array([r["score"] for r in group])
        null = np.mean(nulls[(dataset, budget)], axis=0)
        score = float(scores.mean())
        out.append({
            "level": "mean",
            "dataset": dataset,
            "method": method,
            "new_subject": "mean",
            "budget": budget,
            "n_train": float(np.mean([r["n_train"] for r in group])),
            "n_adapt": float(np.mean([r["n_adapt"] for r in group])),
            "n_test": float(np.mean([r["n_test"] for r in group])),
            "n_subjects": len(group),
            "metric": "balanced_accuracy",
            "score": score,
            "score_std": float(scores.std()),
            "seed_spread": float(np.mean([r["seed_spread"] for r in group])),
            "chance": float(null.mean()),
            "chance_p95": float(np.percentile(null, 95)),
            "p_value": float((1 + np.sum(null >= score - 1e-12)) / (1 + n_perm)),
            "seconds": round(sum(r["seconds"] for r in group), 2),
        })  # fmt: skip
    return out


def _number(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def within_subject_rows(
    tasks: Mapping[str, Mapping[str, Samples]], n_permutations: int = 100
) -> list[dict[str, Any]]:
    """Classical within-subject anchors: CSP(4)+LDA, leave-one-run-out, every EEGBCI subject.

    Parameters
    ----------
    tasks : mapping
        What :func:`load_tasks` returns (its EEGBCI tasks are used).
    n_permutations : int
        Permutations (labels shuffled within each run) for the chance level; 0 for none.

    Returns
    -------
    list of dict
        ``dataset``, ``subject``, ``accuracy``, ``balanced_accuracy``, ``chance`` and
        ``p_value`` (of the balanced accuracy; None without permutations), ``published``
        (:data:`PUBLISHED_WITHIN`, accuracy) and ``n_trials``.
    """
    from neurodecode.data.splits import LeaveOneGroupOut
    from neurodecode.evaluate import baselines
    from neurodecode.evaluate.cv import cross_validate

    rows = []
    for task in (t for t in tasks if t in _MOTOR):
        for subject, s in tasks[task].items():
            with _one_blas_thread():
                res = cross_validate(
                    baselines.csp_lda(4),
                    s.X,
                    s.y,
                    s.table,
                    LeaveOneGroupOut("run"),
                    metrics=("accuracy", "balanced_accuracy"),
                    n_permutations=n_permutations,
                    permutation="within",
                    n_jobs=1,
                )
            summary = res.summary.set_index("metric")
            rows.append({
                "dataset": task,
                "subject": subject,
                "method": "csp_lda/leave_one_run_out",
                "n_trials": len(s),
                "accuracy": float(summary.loc["accuracy", "mean"]),
                "balanced_accuracy": float(summary.loc["balanced_accuracy", "mean"]),
                "chance": _number(summary.loc["balanced_accuracy", "chance"]),
                "p_value": _number(summary.loc["balanced_accuracy", "p_value"]),
                "published": PUBLISHED_WITHIN.get(task, {}).get(subject),
            })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# Peers

Variant = Literal["within", "loso", "pooled"]
_USES = {"within": "adapt", "loso": "pretrain", "pooled": "both"}


def _stack(parts: Sequence[Samples]) -> tuple[np.ndarray, np.ndarray]:
    parts = [p for p in parts if len(p)]
    return (np.concatenate([p.X for p in parts]).astype(np.float64),
            np.concatenate([p.y for p in parts]))  # fmt: skip


def _training_parts(fold: Fold, variant: str) -> list[Samples]:
    """The labelled training trials of a variant.

    Raises NotApplicable for ``within`` at 0 trials (nothing to train on) and for ``pooled``
    at 0 trials (the same model as ``loso``: not reported twice).
    """
    if variant in ("within", "pooled") and not fold.n_adapt:
        raise NotApplicable(f"{variant} needs adapt trials")
    if variant == "within":
        return [fold.adapt]
    if variant == "loso":
        return list(fold.pretrain.values())
    return [*fold.pretrain.values(), fold.adapt]


def _one_blas_thread():
    """One BLAS thread: many small eigendecompositions (CSP, Riemannian means) run up to 25x
    slower with OpenBLAS's threads fighting over shared cores."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class _SklearnPeer(ABC):
    """A scikit-learn pipeline trained on a variant's trials (refitted per fold, cached)."""

    deterministic = True

    def __init__(self, variant: Variant = "pooled"):
        if variant not in _USES:
            raise ValueError(f"variant must be one of {list(_USES)}, got {variant!r}")
        self.variant = variant
        self.uses = _USES[variant]
        self._cache: dict[tuple[str, str], Any] = {}

    @abstractmethod
    def pipeline(self, fold: Fold):
        """The unfitted estimator for ``fold``."""

    def __call__(self, fold: Fold, seed: int) -> np.ndarray:
        with _one_blas_thread():
            return self._predict(fold)

    def _predict(self, fold: Fold) -> np.ndarray:
        X, y = _stack(_training_parts(fold, self.variant))
        if len(np.unique(y)) < 2:  # a small budget with a single class: predict it
            return np.full(len(fold.test), y[0])
        key = (fold.task, fold.new_subject)
        if self.variant == "loso" and key in self._cache:
            model = self._cache[key]  # same pretraining subjects at every budget
        else:
            model = self.pipeline(fold).fit(X, y)
            if self.variant == "loso":
                self._cache[key] = model
        return model.predict(fold.test.X.astype(np.float64))


class CSPLDA(_SklearnPeer):
    """CSP(4)+LDA (:func:`neurodecode.evaluate.baselines.csp_lda`) with equal class priors.

    Parameters
    ----------
    variant : {"within", "loso", "pooled"}
        Train on the new subject's adapt trials only, on the pretraining subjects only
        (zero-shot, the same model at every budget), or on both pooled.

    Notes
    -----
    The LDA's priors are set to equal (the metric is balanced accuracy; the P300 task has one
    target for five non-targets); the EEGBCI classes are balanced, so priors barely matter
    there.
    """

    def pipeline(self, fold: Fold):
        from neurodecode.evaluate import baselines

        k = len(fold.classes)
        return baselines.csp_lda(4).set_params(lda__priors=np.full(k, 1.0 / k))


class ERPLDA(_SklearnPeer):
    """Shrinkage LDA on time-binned evoked responses (:func:`~neurodecode.evaluate.baselines.
    erp_lda`, bins of ~50 ms), equal class priors: the classical peer of the ERP (Muse) tasks.

    Parameters
    ----------
    variant : {"within", "loso", "pooled"}
        As for :class:`CSPLDA`.
    """

    def pipeline(self, fold: Fold):
        from neurodecode.evaluate import baselines

        k = len(fold.classes)
        sfreq = next(iter(fold.pretrain.values())).sfreq
        decim = max(1, int(round(sfreq / 20)))
        return baselines.erp_lda(decim=decim).set_params(lda__priors=np.full(k, 1.0 / k))


def _covariances(X: np.ndarray) -> np.ndarray:
    """OAS covariance of each trial (pyriemann), in float64."""
    from pyriemann.estimation import Covariances

    return Covariances(estimator="oas").fit_transform(X.astype(np.float64))


class _CovarianceCache:
    """Trial covariances by (recording, onset): each trial's is computed once per run."""

    def __init__(self) -> None:
        self._covs: dict[tuple[str, float], np.ndarray] = {}

    def __call__(self, s: Samples) -> np.ndarray:
        keys = list(zip(s.table["recording"], s.table["onset"].round(6), strict=True))
        missing = [i for i, k in enumerate(keys) if k not in self._covs]
        if missing:
            for i, c in zip(missing, _covariances(s.X[missing]), strict=True):
                self._covs[keys[i]] = c
        if not keys:
            n = s.X.shape[1]
            return np.empty((0, n, n))
        return np.stack([self._covs[k] for k in keys])


def _recentre(covs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whiten ``covs`` by the Riemannian mean of ``reference``: ``M^-1/2 C M^-1/2``."""
    from pyriemann.geometry.base import invsqrtm
    from pyriemann.geometry.mean import mean_riemann

    w = invsqrtm(mean_riemann(reference))
    return w @ covs @ w


class TangentSpaceLR:
    """OAS covariances → tangent space (Riemannian) → logistic regression (pyriemann).

    Parameters
    ----------
    variant : {"within", "loso", "pooled", "recentered", "recentered_pooled"}
        ``within``, ``loso``, ``pooled``: as for :class:`CSPLDA`. ``recentered``: every
        pretraining subject's covariances are whitened by the Riemannian mean of its own
        trials, the new subject's (adapt and test) by the mean of its *adapt* trials only
        (never a test trial); the classifier is trained on the recentred pretraining subjects,
        the adapt trials' labels unused (unsupervised calibration). ``recentered_pooled``: the
        same, the recentred adapt trials added to the training set with their labels. Both
        need adapt trials (not applicable at 0 trials).
    C : float
        Inverse L2 penalty of the logistic regression (balanced class weights).

    Notes
    -----
    Covariances are of the band-passed epochs as they come (EEGBCI: 7–30 Hz, 1 s; Muse:
    1–30 Hz, 0.9 s, 4 channels). Re-centering is the Riemannian Procrustes analysis' first
    step (Zanini et al. 2018; Rodrigues et al. 2019).
    """

    deterministic = True
    VARIANTS = ("within", "loso", "pooled", "recentered", "recentered_pooled")

    def __init__(self, variant: str = "recentered", C: float = 1.0):
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {list(self.VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.C = C
        self.uses = {"recentered": "pretrain", "recentered_pooled": "both"}.get(
            variant, _USES.get(variant)
        )
        self._cache: dict[tuple[str, str], Any] = {}
        self._covs = _CovarianceCache()

    def _classifier(self):
        from pyriemann.tangentspace import TangentSpace
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        return make_pipeline(
            TangentSpace(metric="riemann"),
            LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000),
        )

    def _pretrain_covs(self, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
        """Each pretraining subject's covariances, recentred by its own mean (cached)."""
        key = (fold.task, fold.new_subject, "covs")
        if key not in self._cache:
            covs, ys = [], []
            for s in fold.pretrain.values():
                c = self._covs(s)
                covs.append(_recentre(c, c))
                ys.append(s.y)
            self._cache[key] = (np.concatenate(covs), np.concatenate(ys))
        return self._cache[key]

    def __call__(self, fold: Fold, seed: int) -> np.ndarray:
        with _one_blas_thread():
            return self._predict(fold)

    def _predict(self, fold: Fold) -> np.ndarray:
        covs_of = self._covs
        if not self.variant.startswith("recentered"):
            parts = _training_parts(fold, self.variant)
            y = np.concatenate([p.y for p in parts])
            if len(np.unique(y)) < 2:  # a small budget with a single class: predict it
                return np.full(len(fold.test), y[0])
            key = (fold.task, fold.new_subject)
            if self.variant == "loso" and key in self._cache:
                model = self._cache[key]
            else:
                model = self._classifier().fit(np.concatenate([covs_of(p) for p in parts]), y)
                if self.variant == "loso":
                    self._cache[key] = model
            return model.predict(covs_of(fold.test))
        if not fold.n_adapt:
            raise NotApplicable("re-centering needs the new subject's adapt trials")
        covs, y = self._pretrain_covs(fold)
        adapt = covs_of(fold.adapt)
        test = _recentre(covs_of(fold.test), adapt)
        if self.variant == "recentered_pooled":
            covs = np.concatenate([covs, _recentre(adapt, adapt)])
            y = np.concatenate([y, fold.adapt.y])
        return self._classifier().fit(covs, y).predict(test)


def _channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over trials and time."""
    mean = X.mean(axis=(0, 2))
    std = X.std(axis=(0, 2))
    return mean, np.where(std > 0, std, 1.0)


def _zscore(X: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean, std = stats
    return ((X - mean[None, :, None]) / std[None, :, None]).astype(np.float32)


@dataclass
class TrainConfig:
    """Settings of :class:`DeepNet`'s plain torch training loop.

    Attributes
    ----------
    max_epochs : int
        Pretraining epochs at most (early stopping on the validation part).
    patience : int
        Pretraining stops after this many epochs without a lower validation loss; the weights
        of the best epoch are kept.
    val_fraction : float
        Fraction of the pretraining trials (stratified by subject and class) held out for
        early stopping; never a trial of the new subject.
    finetune_epochs : int
        Fine-tuning epochs on the adapt trials (fixed: too few trials to hold some out).
    lr, finetune_lr : float
        AdamW learning rates.
    weight_decay : float
        AdamW weight decay.
    batch_size, finetune_batch_size : int
        Mini-batch sizes (a last batch of one trial is skipped: batch norm needs two).
    threads : int
        Torch threads while a :class:`DeepNet` trains or predicts (restored afterwards); one
        is the fastest on 2 shared cores (small convolutions scale badly).
    """

    max_epochs: int = 60
    patience: int = 10
    val_fraction: float = 0.2
    finetune_epochs: int = 30
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-3
    batch_size: int = 32
    finetune_batch_size: int = 16
    threads: int = 1


def _build(arch: str, n_chans: int, n_times: int, n_outputs: int, sfreq: float):
    """braindecode's network with kernels scaled to the sampling rate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from braindecode.models import EEGNetv4, ShallowFBCSPNet

        if arch == "shallow_fbcspnet":
            # defaults are for 250 Hz: 25-sample filters (100 ms), pool 75 (300 ms), stride 15
            return ShallowFBCSPNet(
                n_chans=n_chans,
                n_outputs=n_outputs,
                n_times=n_times,
                filter_time_length=max(3, int(round(0.1 * sfreq))),
                pool_time_length=max(2, int(round(0.3 * sfreq))),
                pool_time_stride=max(1, int(round(0.06 * sfreq))),
                final_conv_length="auto",
                add_log_softmax=False,
            )
        if arch == "eegnet":
            # kernel_length 64 at 128 Hz: half a second
            return EEGNetv4(
                n_chans=n_chans,
                n_outputs=n_outputs,
                n_times=n_times,
                kernel_length=max(4, int(round(0.5 * sfreq))),
            )
    raise ValueError(f"arch must be 'shallow_fbcspnet' or 'eegnet', got {arch!r}")


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    out = [order[i : i + size] for i in range(0, n, size)]
    return [b for b in out if len(b) > 1]


def _fit(
    model,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    rng: np.random.Generator,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    patience: int = 0,
) -> int:
    """Train ``model`` (in place) with AdamW and class-balanced cross-entropy.

    With ``val``, keep the weights of the epoch of lowest validation loss and stop after
    ``patience`` epochs without improvement. Returns the epochs run.
    """
    import torch

    counts = np.bincount(y, minlength=_model_outputs(model))
    weight = torch.tensor(
        np.where(counts > 0, len(y) / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0),
        dtype=torch.float32,
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    if val is not None:
        Xv, yv = torch.from_numpy(val[0]), torch.from_numpy(val[1])
    best, best_state, since = np.inf, None, 0
    epoch = 0
    for epoch in range(1, epochs + 1):  # noqa: B007 (the epochs run are returned)
        model.train()
        for b in _batches(len(y), min(batch_size, len(y)), rng):
            opt.zero_grad()
            loss_fn(model(Xt[b]), yt[b]).backward()
            opt.step()
        if val is None:
            continue
        model.eval()
        with torch.no_grad():
            v = float(loss_fn(model(Xv), yv))
        if v < best - 1e-4:
            best, best_state, since = v, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return epoch


def _model_outputs(model) -> int:
    """The number of classes a braindecode model outputs."""
    return int(getattr(model, "n_outputs", None) or model.n_classes)


def _stratified_holdout(
    groups: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of a random ``fraction`` of each group (at least one when it has 2+)."""
    val = np.zeros(len(groups), bool)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            val[rng.choice(idx, max(1, k), replace=False)] = True
    return val


class DeepNet:
    """A braindecode network pretrained on the other subjects, fine-tuned on the adapt trials.

    Parameters
    ----------
    arch : {"shallow_fbcspnet", "eegnet"}
        braindecode's ``ShallowFBCSPNet`` or ``EEGNetv4``, with their temporal kernels scaled
        from their published sampling rates (250 Hz, 128 Hz) to the task's.
    config : TrainConfig, optional
        Training settings.
    variant : {"finetune", "within"}
        ``finetune``: pretrain on the other subjects (early stopping on a stratified 20 % of
        their trials), then, at a budget above 0, fine-tune all weights on the adapt trials for
        a fixed number of epochs; at 0 trials the pretrained model is the zero-shot
        prediction. ``within``: train from scratch on the adapt trials only (fixed epochs:
        ``finetune_epochs`` times 3).

    Notes
    -----
    Normalisation is a per-subject channel z-score: a pretraining subject's statistics come
    from all its trials; the new subject's from its adapt trials only (applied to them and to
    its test trials). At 0 trials (zero-shot) no trial of the new subject may be used, so its
    test trials are z-scored with the pooled statistics of all the pretraining trials. The
    pretrained model depends on (task, new subject, seed) only and is cached across budgets.
    """

    deterministic = False

    def __init__(
        self,
        arch: Literal["shallow_fbcspnet", "eegnet"] = "shallow_fbcspnet",
        config: TrainConfig | None = None,
        variant: Literal["finetune", "within"] = "finetune",
    ):
        if variant not in ("finetune", "within"):
            raise ValueError(f"variant must be 'finetune' or 'within', got {variant!r}")
        self.arch = arch
        self.config = config or TrainConfig()
        self.variant = variant
        self.uses = "adapt" if variant == "within" else "both"
        self._cache: dict[tuple[str, str, int], Any] = {}

    def _new_model(self, fold: Fold, seed: int):
        import torch

        torch.manual_seed(seed)
        s = next(iter(fold.pretrain.values()))
        return _build(self.arch, s.X.shape[1], s.X.shape[2], len(fold.classes), s.sfreq)

    def _pretrained(self, fold: Fold, seed: int):
        """(model, pooled stats) pretrained on the fold's other subjects (cached)."""
        key = (fold.task, fold.new_subject, seed)
        if key not in self._cache:
            cfg = self.config
            classes = fold.classes
            rng = np.random.default_rng([seed, 1])
            X = np.concatenate([_zscore(s.X, _channel_stats(s.X)) for s in
                                fold.pretrain.values()])  # fmt: skip
            y = np.searchsorted(classes, np.concatenate([s.y for s in fold.pretrain.values()]))
            groups = np.concatenate([np.char.add(f"{k}|", s.y.astype(str))
                                     for k, s in fold.pretrain.items()])  # fmt: skip
            val = _stratified_holdout(groups, cfg.val_fraction, rng)
            model = self._new_model(fold, seed)
            _fit(model, X[~val], y[~val], epochs=cfg.max_epochs, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, rng=rng,
                 val=(X[val], y[val]), patience=cfg.patience)  # fmt: skip
            pooled = _channel_stats(np.concatenate([s.X for s in fold.pretrain.values()]))
            self._cache[key] = (copy.deepcopy(model.state_dict()), pooled)
        state, pooled = self._cache[key]
        model = self._new_model(fold, seed)
        model.load_state_dict(state)
        return model, pooled

    def __call__(self, fold: Fold, seed: int) -> np.ndarray:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            return self._predict(fold, seed)
        finally:
            torch.set_num_threads(before)

    def _predict(self, fold: Fold, seed: int) -> np.ndarray:
        import torch

        cfg = self.config
        classes = fold.classes
        rng = np.random.default_rng([seed, 2, fold.n_adapt])
        if self.variant == "within":
            if not fold.n_adapt:
                raise NotApplicable("within-subject needs adapt trials")
            if len(np.unique(fold.adapt.y)) < 2:
                return np.full(len(fold.test), fold.adapt.y[0])
            model = self._new_model(fold, seed)
            stats = _channel_stats(fold.adapt.X)
            _fit(model, _zscore(fold.adapt.X, stats), np.searchsorted(classes, fold.adapt.y),
                 epochs=3 * cfg.finetune_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                 batch_size=cfg.finetune_batch_size, rng=rng)  # fmt: skip
        else:
            model, pooled = self._pretrained(fold, seed)
            stats = pooled
            if fold.n_adapt:
                stats = _channel_stats(fold.adapt.X)
                torch.manual_seed(seed)
                _fit(model, _zscore(fold.adapt.X, stats), np.searchsorted(classes, fold.adapt.y),
                     epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                     weight_decay=cfg.weight_decay, batch_size=cfg.finetune_batch_size,
                     rng=rng)  # fmt: skip
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(_zscore(fold.test.X, stats)))
        return classes[out.argmax(dim=1).numpy()]


#: Tangent-space variants of ``--quick`` (the others cost a Riemannian mean per fold each).
QUICK_TS_VARIANTS = ("within", "loso", "recentered_pooled")

#: Training settings of ``--quick`` (a few epochs: a smoke test of the loop, not a result).
QUICK_TRAIN = TrainConfig(max_epochs=8, patience=4, finetune_epochs=5)


def peers(quick: bool = False, tasks: Sequence[str] = TASKS) -> dict[str, Method]:
    """The peer methods by name (``family/variant``).

    Parameters
    ----------
    quick : bool
        CSP+LDA, tangent space (:data:`QUICK_TS_VARIANTS`) and ShallowFBCSPNet
        (:data:`QUICK_TRAIN` epochs) only.
    tasks : sequence of str
        The tasks they will run on (ERP-LDA is added when a Muse task is among them).

    Returns
    -------
    dict of str to Method
    """
    out: dict[str, Method] = {f"csp_lda/{v}": CSPLDA(v) for v in ("within", "loso", "pooled")}
    if not quick and any(t in _MUSE for t in tasks):
        out.update({f"erp_lda/{v}": ERPLDA(v) for v in ("within", "loso", "pooled")})
    variants = QUICK_TS_VARIANTS if quick else TangentSpaceLR.VARIANTS
    out.update({f"tangent_space_lr/{v}": TangentSpaceLR(v) for v in variants})
    if quick:
        out["shallow_fbcspnet/finetune"] = DeepNet("shallow_fbcspnet", QUICK_TRAIN)
        return out
    for arch in ("shallow_fbcspnet", "eegnet"):
        out[f"{arch}/finetune"] = DeepNet(arch)
    return out


# --------------------------------------------------------------------------------------------
# Command line


def _line(row: Mapping[str, Any]) -> str:
    return (
        f"{row['dataset']:18} {row['method']:34} {str(row['new_subject']):5} "
        f"{row['budget']:9} n_train={row['n_train']:<6g} score={row['score']:.3f}"
        f"{' ±' + format(row['score_std'], '.3f') if 'score_std' in row else '      '} "
        f"(chance {row['chance']:.3f}, p95 {row['chance_p95']:.3f}, p={row['p_value']:.3g}, "
        f"seeds ±{row['seed_spread']:.3f}) {row['seconds']:.1f}s"
    )


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the mean rows: method × budget per dataset."""
    lines = []
    means = [r for r in rows if r["level"] == "mean"]
    for dataset in dict.fromkeys(r["dataset"] for r in means):
        sub = [r for r in means if r["dataset"] == dataset]
        n_adapt = {r["budget"]: r["n_adapt"] for r in sub}
        budgets = sorted(n_adapt, key=n_adapt.get)
        lines += [f"\n{dataset} (balanced accuracy, mean ± sd over new subjects; "
                  "chance p95 of the mean in brackets)\n",
                  "| method | " + " | ".join(budgets) + " |",
                  "|---|" + "---|" * len(budgets)]  # fmt: skip
        for method in dict.fromkeys(r["method"] for r in sub):
            cells = []
            for b in budgets:
                r = next((r for r in sub if r["method"] == method and r["budget"] == b), None)
                cells.append(
                    "—"
                    if r is None
                    else f"{r['score']:.3f} ± {r['score_std']:.3f} [{r['chance_p95']:.2f}]"
                )
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the protocol with every peer and print the per-subject rows and the summary table.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    list of dict
        Every row (:func:`evaluate`'s, plus ``within_subject_rows`` with ``level="within"``).
    """
    from neurodecode.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="EEGBCI left/right only, 1 seed, CSP, tangent space, a short "
                             "ShallowFBCSPNet (about a minute on 2 cores)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every row to this JSON file")
    parser.add_argument("--work", type=Path, default=Path("outputs/adapters_real"),
                        help="work folder (stores cached in WORK/stores)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=None,
                        help="sample-data folder (default: NEURODECODE_SAMPLE_DATA or "
                             "../shared/data)")  # fmt: skip
    parser.add_argument("--tasks", nargs="*", choices=TASKS, help="subset of the tasks")
    parser.add_argument("--methods", nargs="*", help="subset of the peers (names or families)")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 1 quick, 3 full)")
    parser.add_argument("--permutations", type=int, default=1000,
                        help="test-label permutations per fold")  # fmt: skip
    parser.add_argument(
        "--common-test",
        action="store_true",
        help="test every budget on the trials of the largest budget",
    )
    args = parser.parse_args(argv)
    data = args.data or get_settings().sample_data
    if not Path(data).is_dir():
        parser.error(f"sample data not found at {data}; pass --data or set "
                     "NEURODECODE_SAMPLE_DATA")  # fmt: skip
    names = tuple(args.tasks or (("eegbci_left_right",) if args.quick else TASKS))
    seeds = tuple(range(args.seeds or (1 if args.quick else 3)))
    t0 = time.perf_counter()
    tasks = load_tasks(args.work / "stores", Path(data), names)
    print(f"loaded {', '.join(f'{t}: {len(v)} subjects, {sum(map(len, v.values()))} trials' for t, v in tasks.items())} "  # noqa: E501
          f"in {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
    methods = peers(args.quick, names)
    if args.methods:
        methods = {k: m for k, m in methods.items()
                   if k in args.methods or k.split("/")[0] in args.methods}  # fmt: skip
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for task in names:
        fs = folds(tasks, task, common_test=args.common_test)
        for name, method in methods.items():
            if task in _MOTOR and name.startswith("erp_lda"):
                continue
            t1 = time.perf_counter()
            out = evaluate(name, method, fs, seeds, args.permutations, verbose=False)
            timings[f"{task}/{name}"] = round(time.perf_counter() - t1, 1)
            rows += out
            for r in out:
                if r["level"] == "mean":
                    print(_line(r), flush=True)
    within = []
    if not args.quick and any(t in _MOTOR for t in names):
        t1 = time.perf_counter()
        within = [{"level": "within", **r} for r in within_subject_rows(tasks, 100)]
        timings["within_subject_rows"] = round(time.perf_counter() - t1, 1)
        print("\nwithin-subject CSP(4)+LDA, leave-one-run-out (ours vs published accuracy)")
        for r in within:
            print(f"{r['dataset']:18} S{r['subject']} acc={r['accuracy']:.3f} "
                  f"bal_acc={r['balanced_accuracy']:.3f} (chance {r['chance']}, "
                  f"p={r['p_value']}) published={r['published']}")  # fmt: skip
    print(_table(rows))
    total = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {total}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "seeds": list(seeds), "n_permutations": args.permutations, "quick": args.quick,
            "common_test": args.common_test, "seconds": total, "timings": timings,
            "rows": rows + within,
        }, indent=2, default=float))  # fmt: skip
    return rows + within


if __name__ == "__main__":
    main()
