"""Cross-subject decoding with subject adapters, and few-shot adaptation of new subjects.

Three parts, each with the same protocol (a held-out *new* subject adapted from the first
fraction of its training samples in time, scored on its own later test samples, beside
subject-specific models trained on exactly the same samples):

``sim_fmri``
    ≥ 8 simulated fMRI-like subjects (500–3,000 voxels, one shared latent stimulus space,
    event-related design, 4 classes; trials = 3 volumes 4–8 s after each stimulus block onset).
    The new subject has 3,000 voxels. Shared model: low-rank voxel adapters + residual MLP
    (``models/cross_subject_fmri.yaml``).
``sim_seeg``
    ≥ 6 simulated sEEG subjects (depth shafts through different regions, 40–120 contacts,
    class-specific evoked and high-gamma responses in three regions), trials 0–0.5 s after
    each stimulus. Shared model: per-subject linear maps + temporal conv
    (``models/cross_subject_ieeg.yaml``) for strategies a–d, and the position-aware spatial
    attention model (``models/cross_subject_ieeg_spatial.yaml``) for zero-shot (e).
``real`` (with ``../shared/data``)
    EEGBCI leave-one-subject-out with the new subject's first run / two runs, beside
    CSP+LDA, pyriemann tangent space + logistic regression and braindecode's ShallowFBCSPNet
    and EEGNet on the same folds (:mod:`benchmarks.adapters_real`).

Every score has its chance level: the mean balanced accuracy of the method's own predictions
against permuted test labels (the null of a fixed classifier), with its 95th percentile.

Usage::

    python benchmarks/adapters.py --quick --json outputs/bench_adapters.json
    python benchmarks/adapters.py --json outputs/bench_adapters_full.json   # 3 seeds, all parts

JSON keys: ``few_shot`` and ``subject_specific`` (rows ``{dataset, strategy, fraction,
n_train, metric, score, chance, ...}``), ``shared_vs_per_subject``, ``adapt_seconds``,
``adapt_peak_rss_mb``, ``zero_shot``, ``real`` and ``timing``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import peak_rss_mb  # noqa: E402

from neurodecode.data.samples import epochs, open_recordings  # noqa: E402
from neurodecode.data.subjects import SubjectTrials, per_subject  # noqa: E402
from neurodecode.evaluate import baselines  # noqa: E402
from neurodecode.evaluate.metrics import balanced_accuracy_rows  # noqa: E402
from neurodecode.evaluate.permutation import fixed_prediction_null  # noqa: E402
from neurodecode.models.decoder import CrossSubjectDecoder, resolve_config  # noqa: E402
from neurodecode.models.fewshot import holdout_split  # noqa: E402
from neurodecode.simulate import simulate_dataset  # noqa: E402

FRACTIONS = (0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
QUICK_FRACTIONS = (0.05, 0.1, 1.0)
N_PERMUTATIONS = 200


# ------------------------------------------------------------------------------ scoring


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y``."""
    return float(balanced_accuracy_rows(y, pred, classes))


def chance(y: np.ndarray, pred: np.ndarray, classes: np.ndarray, n: int = N_PERMUTATIONS,
           seed: int = 0) -> tuple[float, float]:
    """Mean and 95th percentile of the score of fixed predictions against permuted labels."""
    null = fixed_prediction_null(y, [pred], n, seed)
    return float(np.mean(null)), float(np.percentile(null, 95))


def _row(dataset: str, strategy: str, fraction: float, n_train: int, y: np.ndarray,
         preds: Sequence[np.ndarray], classes: np.ndarray, **extra: Any) -> dict[str, Any]:
    scores = [balanced_accuracy(y, p, classes) for p in preds]
    c, c95 = chance(y, preds[0], classes)
    return {"dataset": dataset, "strategy": strategy, "fraction": fraction,
            "n_train": int(n_train), "metric": "balanced_accuracy",
            "score": float(np.mean(scores)), "scores": [float(s) for s in scores],
            "seed_spread": float(np.std(scores)), "chance": c, "chance_p95": c95, **extra}


def _logistic(train: SubjectTrials) -> Any:
    X = np.swapaxes(train.X, 1, 2)  # baselines take (n, channel, time)
    return baselines.logistic().fit(X, train.y)


def _logistic_predict(model: Any, trials: SubjectTrials) -> np.ndarray:
    return model.predict(np.swapaxes(trials.X, 1, 2))


# ------------------------------------------------------------------------------ data


def fmri_subjects(quick: bool) -> tuple[dict[str, SubjectTrials], str]:
    """Simulated fMRI-like subjects and the name of the new (3,000-voxel) one."""
    n_train = 8
    duration = 600.0 if quick else 1200.0
    latent = {"block_duration": (2.0, 2.0), "rest_duration": (3.0, 5.0)}
    sim = simulate_dataset(n_subjects=n_train, modalities=("fmri",), duration=duration,
                           n_classes=4, seed=0, fmri={"n_voxels": (500, 3000)}, latent=latent)
    new = simulate_dataset(n_subjects=1, modalities=("fmri",), duration=duration, n_classes=4,
                           seed=1, fmri={"n_voxels": 3000}, latent=latent)
    new_rec = new.recordings[0].assign_attrs(subject="new")
    recs = open_recordings([*sim.recordings, new_rec])
    labels = {f"block/{c}": c for c in sim.class_names}
    return per_subject(recs, epochs, tmin=4.0, tmax=8.0, labels=labels), "new"


def seeg_subjects(quick: bool) -> tuple[dict[str, SubjectTrials], str]:
    """Simulated sEEG subjects (the last one is the new subject, on its own montage)."""
    n = 7
    latent = {"block_duration": (2.0, 2.0), "rest_duration": (1.0, 2.0)}  # event-related
    sim = simulate_dataset(n_subjects=n, modalities=("seeg",), duration=480.0 if quick else 900.0,
                           n_classes=4, seed=3, latent=latent)
    recs = open_recordings(sim.recordings)
    labels = {f"stim/{c}": c for c in sim.class_names}
    subjects = per_subject(recs, epochs, tmin=0.0, tmax=0.5, labels=labels, l_freq=60.0,
                           h_freq=110.0)
    return {s: high_gamma_envelope(t) for s, t in subjects.items()}, sorted(subjects)[-1]


def high_gamma_envelope(trials: SubjectTrials, bin_seconds: float = 0.1) -> SubjectTrials:
    """Log power of band-passed trials in consecutive bins: ``(n, n_bins, channel)``."""
    width = max(1, int(round(bin_seconds * trials.sfreq)))
    n_bins = trials.n_times // width
    x = trials.X[:, : n_bins * width].reshape(len(trials), n_bins, width, -1)
    power = np.log((x.astype(np.float64) ** 2).mean(axis=2) + 1e-30).astype(np.float32)
    return SubjectTrials(trials.subject, power, trials.y, trials.table, trials.ch_names,
                         trials.positions, trials.sfreq / width, trials.coord_frame, trials.keys,
                         trials.regions)


# ------------------------------------------------------------------------------ protocol


def run_dataset(dataset: str, subjects: Mapping[str, SubjectTrials], new_name: str, *,
                config: str, strategies: Sequence[str], fractions: Sequence[float],
                seeds: Sequence[int], gap: float, zero_shot_config: str | None = None,
                max_epochs: int | None = None) -> dict[str, Any]:
    """Train the shared model, compare it with per-subject models, adapt the new subject."""
    parts = {s: t.chronological((0.7, 0.15, 0.15), gap=gap) for s, t in subjects.items()}
    trained = [s for s in subjects if s != new_name]
    train = {s: parts[s]["train"] for s in trained}
    val = {s: parts[s]["val"] for s in trained}
    classes = np.unique(np.concatenate([t.y for t in train.values()]))
    cfg = resolve_config(config)
    t0 = time.perf_counter()
    shared = CrossSubjectDecoder(cfg, max_epochs=max_epochs).fit(train, val)
    shared_seconds = time.perf_counter() - t0
    print(f"[{dataset}] shared model on {len(trained)} subjects: {shared_seconds:.1f} s, "
          f"{shared.epochs_} epochs", flush=True)

    # shared model vs per-subject models trained on all of each subject's training data
    versus = []
    for s in trained:
        test = parts[s]["test"]
        scratch = CrossSubjectDecoder(cfg, max_epochs=max_epochs).fit(
            {s: parts[s]["train"]}, {s: parts[s]["val"]})
        lr = _logistic(parts[s]["train"])
        row = {"dataset": dataset, "subject": s, "n_train": len(parts[s]["train"]),
               "n_test": len(test), "metric": "balanced_accuracy"}
        for name, pred in (("shared", shared.predict(test)), ("scratch", scratch.predict(test)),
                           ("logistic", _logistic_predict(lr, test))):
            row[name] = balanced_accuracy(test.y, pred, classes)
            row[f"{name}_chance"] = chance(test.y, pred, classes)[0]
        versus.append(row)
        print(f"[{dataset}] sub-{s}: shared {row['shared']:.3f}  scratch {row['scratch']:.3f}  "
              f"logistic {row['logistic']:.3f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in versus])) for k in ("shared", "scratch", "logistic")}

    new = parts[new_name]
    few_shot, specific, seconds, rss = [], [], {}, {}
    for fraction in fractions:
        budget = new["train"].fraction(fraction)
        n = len(budget)
        for strategy in strategies:
            preds, secs = [], []
            for seed in seeds:
                rss_before = peak_rss_mb()
                ad = shared.adapt(budget, strategy=strategy, reference=train, seed=seed)
                secs.append(ad.adaptations_[-1]["seconds"])
                rss[strategy] = max(rss.get(strategy, 0.0), peak_rss_mb() - rss_before)
                preds.append(ad.predict(new["test"]))
            few_shot.append(_row(dataset, strategy, fraction, n, new["test"].y, preds, classes,
                                 seconds=float(np.mean(secs))))
            if abs(fraction - 0.1) < 1e-9:
                seconds[strategy] = float(np.mean(secs))
            print(f"[{dataset}] new subject, {fraction:>6.1%} ({n:>3} samples) {strategy}: "
                  f"{few_shot[-1]['score']:.3f} (chance {few_shot[-1]['chance']:.3f}) "
                  f"{np.mean(secs):.1f} s", flush=True)
        fit, fit_val = holdout_split(budget)
        preds = []
        for seed in seeds:
            scratch = CrossSubjectDecoder(cfg, seed=seed, max_epochs=max_epochs).fit(
                {new_name: fit}, None if fit_val is None else {new_name: fit_val},
                classes=classes)
            preds.append(scratch.predict(new["test"]))
        specific.append(_row(dataset, "scratch", fraction, n, new["test"].y, preds, classes))
        try:
            pred = _logistic_predict(_logistic(budget), new["test"])
        except ValueError:  # a budget holding one class only
            pred = np.full(len(new["test"]), budget.y[0])
        specific.append(_row(dataset, "logistic", fraction, n, new["test"].y, [pred], classes))
        print(f"[{dataset}] new subject, {fraction:>6.1%}: scratch {specific[-2]['score']:.3f}"
              f"  logistic {specific[-1]['score']:.3f}", flush=True)

    zero = None
    if zero_shot_config is not None:
        t0 = time.perf_counter()
        spatial = CrossSubjectDecoder(zero_shot_config, max_epochs=max_epochs).fit(train, val)
        fit_s = time.perf_counter() - t0
        # the channel scaling comes from the unlabelled training part; no label, no weight
        zs = spatial.adapt(new["train"], strategy="e")
        pred = zs.predict(new["test"])
        zero = _row(dataset, "zero_shot", 0.0, 0, new["test"].y, [pred], classes,
                    n_calibration_unlabelled=len(new["train"]), shared_fit_seconds=fit_s,
                    trained_subjects_score=float(np.mean([spatial.score(parts[s]["test"])
                                                          for s in trained])))
        print(f"[{dataset}] zero-shot on a new montage: {zero['score']:.3f} "
              f"(chance {zero['chance']:.3f})", flush=True)
    return {"few_shot": few_shot, "subject_specific": specific, "versus": versus,
            "mean": mean, "adapt_seconds": seconds, "adapt_peak_rss_mb": rss,
            "shared_fit_seconds": shared_seconds, "zero_shot": zero,
            "n_voxels_new": subjects[new_name].n_channels}


def real_part(quick: bool, seeds: Sequence[int], data: Path | None, work: Path) -> dict:
    """EEGBCI leave-one-subject-out with our strategies beside the peers (needs the data)."""
    import adapters_real as ar

    from neurodecode.config import get_settings
    from neurodecode.data.subjects import by_subject

    root = Path(data or get_settings().sample_data)
    if not root.is_dir():
        return {"skipped": f"no sample data at {root} (set NEURODECODE_SAMPLE_DATA or --data)"}
    names = ("eegbci_left_right",) if quick else ar.TASKS
    tasks = ar.load_tasks(work / "stores", root, names)
    rows = []
    pretrained: dict[tuple[str, str, int], tuple[CrossSubjectDecoder, dict]] = {}
    for task in tasks:
        fs = ar.folds(tasks, task)

        def shared_for(fold: ar.Fold, seed: int) -> tuple[CrossSubjectDecoder, dict]:
            """The model pretrained on the other subjects (once per new subject and seed)."""
            key = (fold.task, fold.new_subject, seed)
            if key not in pretrained:
                train = {s: by_subject(v)[s] for s, v in fold.pretrain.items()}
                halves = {s: t.chronological((0.85, 0.15), names=("train", "val"))
                          for s, t in train.items()}
                dec = CrossSubjectDecoder("cross_subject_eeg", seed=seed).fit(
                    {s: h["train"] for s, h in halves.items()},
                    {s: h["val"] for s, h in halves.items()})
                pretrained[key] = (dec, train)
            return pretrained[key]

        def ours(strategy: str):
            def method(fold: ar.Fold, seed: int) -> np.ndarray:
                if fold.n_adapt == 0:  # zero-shot needs the spatial attention model
                    raise ar.NotApplicable
                dec, train = shared_for(fold, seed)
                budget = by_subject(fold.adapt)[fold.new_subject]
                test = by_subject(fold.test)[fold.new_subject]
                return dec.adapt(budget, strategy=strategy, reference=train,
                                 seed=seed).predict(test)
            return method

        for strategy in ("a", "d") if quick else ("a", "b", "c", "d"):
            rows += ar.evaluate(f"ours_{strategy}", ours(strategy), fs, seeds)
        for name, peer in ar.peers(quick, (task,)).items():
            rows += ar.evaluate(name, peer, fs, seeds)
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (≤ 2 min on 2 cores)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--only", nargs="+", choices=("sim_fmri", "sim_seeg", "real"))
    parser.add_argument("--data", type=Path, help="sample data folder (real part)")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_adapters"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (tiny models run fastest on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy's BLAS too: small SVDs stall on idle threads
    quick = args.quick
    seeds = (0,) if quick else (0, 1, 2)
    fractions = QUICK_FRACTIONS if quick else FRACTIONS
    parts = args.only or (["sim_fmri", "sim_seeg"] if quick else ["sim_fmri", "sim_seeg", "real"])
    start = time.perf_counter()
    out: dict[str, Any] = {"quick": quick, "seeds": list(seeds), "fractions": list(fractions),
                           "torch_threads": args.threads}
    results = {}
    if "sim_fmri" in parts:
        subjects, new = fmri_subjects(quick)
        results["sim_fmri"] = run_dataset(
            "sim_fmri", subjects, new, config="cross_subject_fmri",
            strategies=("a", "d") if quick else ("a", "b", "c", "d"), fractions=fractions,
            seeds=seeds, gap=12.0)
    if "sim_seeg" in parts:
        subjects, new = seeg_subjects(quick)
        results["sim_seeg"] = run_dataset(
            "sim_seeg", subjects, new, config="cross_subject_ieeg",
            strategies=("a", "d") if quick else ("a", "b", "c", "d"), fractions=fractions,
            seeds=seeds, gap=1.0, zero_shot_config="cross_subject_ieeg_spatial")
    out["few_shot"] = [r for v in results.values() for r in v["few_shot"]]
    out["subject_specific"] = [r for v in results.values() for r in v["subject_specific"]]
    out["shared_vs_per_subject"] = {k: {"subjects": v["versus"], "mean": v["mean"]}
                                    for k, v in results.items()}
    out["adapt_seconds"] = {k: v["adapt_seconds"] for k, v in results.items()}
    out["adapt_peak_rss_mb"] = {k: v["adapt_peak_rss_mb"] for k, v in results.items()}
    out["zero_shot"] = {k: v["zero_shot"] for k, v in results.items() if v["zero_shot"]}
    out["shared_fit_seconds"] = {k: v["shared_fit_seconds"] for k, v in results.items()}
    if "real" in parts:
        out["real"] = real_part(quick, seeds, args.data, args.work)
    out["timing"] = {"total_seconds": time.perf_counter() - start,
                     "peak_rss_mb": peak_rss_mb(),
                     "max_rss_mb_getrusage": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                     / 1024}
    print(f"total {out['timing']['total_seconds']:.1f} s, peak RSS "
          f"{out['timing']['peak_rss_mb']:.0f} MB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
