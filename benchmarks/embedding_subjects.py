"""Contrastive embeddings across simulated subjects: consistency and few-shot adaptation.

Ground truth: every simulated subject (:func:`neurodecode.simulate.simulate_dataset`, spikes)
runs on the same linear track, so all subjects share a 1-D position latent, but each has its own
number of units (drawn from ``--units``, 8-20 by default: with the simulator's default 20-60
units every representation, PCA included, decodes position at R² ≈ 0.99 and the comparisons
saturate) and its own tuning (place fields, stimulus and speed gains). Spike counts are rebinned
from 10 ms to ``--bin`` seconds. Each recording is split in time: the first
``--fit-minutes`` are the training (and adaptation) pool, the rest is the held-out later part on
which everything below is measured.

Consistency (CEBRA, Schneider, Lee & Mathis 2023, Fig. 4): embeddings of the held-out parts of
all subjects, paired by position bin (``consistency_score``, 100 bins, empty bins left out),
mean off-diagonal held-out R² of the linear maps between subjects (each map fitted on
alternate bins and scored on the others), for

* ``joint``: one multi-session :class:`ContrastiveEmbedding` trained on all subjects at once
  (``time_delta`` on position; positives matched across subjects);
* ``single``: one single-session model per subject, trained independently (same settings);
* ``time``: one time-only model per subject (no labels), a reference;
* ``pca`` / ``pca_window``: PCA per subject with the same dimension, on the counts and on their
  mean over the encoder's receptive field.

Also printed: the same score with bin means scaled to unit norm (``normalize=True``, CEBRA's
default) and on the training parts, and the within-subject KNN R² of each embedding (decoder
fitted on the subject's training part), so that a consistent but uninformative embedding shows.

Few-shot adaptation: a multi-session model is trained on N-1 subjects, then ``adapt()`` adds the
held-out subject from its first 1, 2 and 5 minutes. Position is decoded on that subject's later
part with a KNN fitted

* ``cross``: only on the other subjects' embeddings (cross-subject transfer), or
* ``own``: on the adapted subject's own few minutes;

against a from-scratch single-session model (as many steps as ``adapt``), raw counts
(receptive-field mean, standardised) and PCA of them, each with a KNN fitted on the same few
minutes. ``*_consistency`` is the mean consistency R² between the adapted subject and the
training subjects: a linear measure, high even when the new session lands as a rotated copy of
the shared map (``cross`` then fails). When the estimator's ``adapt`` has an ``align`` switch
(anchoring to the training sessions' embeddings), both settings are run.

Usage::

    python benchmarks/embedding_subjects.py --quick --json outputs/bench_embedding_subjects.json

``--quick`` (≤ 2 min on 2 cores: 7 min per subject, batch 128, 200 steps, 150 to adapt) holds out
the last subject; the default (10 min per subject, batch 256, 1000 steps, 500 to adapt) holds
out every subject in turn. ``--threads`` sets torch's intra-op threads (1 is fastest on a small
shared machine).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import uniform_filter1d
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurodecode.models.contrastive import ContrastiveEmbedding, consistency_score
from neurodecode.simulate import simulate_dataset

MINUTES = (1.0, 2.0, 5.0)


@dataclass
class Subject:
    """One simulated subject, rebinned and split in time."""

    name: str
    X: np.ndarray  # (n_bins, n_units) spike counts
    y: np.ndarray  # (n_bins,) position on the track, in [0, 1]
    sfreq: float
    n_fit: int  # bins in the training / adaptation pool (the first part)

    @property
    def X_fit(self) -> np.ndarray:
        return self.X[: self.n_fit]

    @property
    def y_fit(self) -> np.ndarray:
        return self.y[: self.n_fit]

    @property
    def X_test(self) -> np.ndarray:
        return self.X[self.n_fit :]

    @property
    def y_test(self) -> np.ndarray:
        return self.y[self.n_fit :]

    def first(self, minutes: float) -> tuple[np.ndarray, np.ndarray]:
        """Counts and positions of the first ``minutes`` of the recording."""
        n = int(round(minutes * 60 * self.sfreq))
        if n > self.n_fit:
            pool = self.n_fit / self.sfreq / 60
            raise ValueError(f"{minutes} min exceed the {pool:.1f} min pool")
        return self.X[:n], self.y[:n]


def simulate_subjects(
    n_subjects: int,
    duration: float,
    fit_duration: float,
    *,
    bin_size: float = 0.05,
    seed: int = 0,
    n_units: int | tuple[int, int] | None = None,
) -> list[Subject]:
    """Simulate subjects (spikes) and rebin their counts to ``bin_size`` seconds.

    Parameters
    ----------
    n_subjects : int
    duration : float
        Seconds per subject.
    fit_duration : float
        Seconds at the start of each recording that form the training / adaptation pool.
    bin_size : float
        Bin width in seconds (a multiple of the simulator's 10 ms).
    seed : int
        Dataset seed.
    n_units : int or (int, int), optional
        Units per subject (default: the simulator's 20-60).

    Returns
    -------
    list of Subject
    """
    extra: dict[str, Any] = {} if n_units is None else {"spikes": {"n_units": n_units}}
    sim = simulate_dataset(n_subjects, ("spikes",), duration=duration, seed=seed, **extra)
    out = []
    for ds in sim.recordings:
        sfreq = float(ds.attrs["sfreq"])
        k = int(round(bin_size * sfreq))
        if k < 1 or abs(k / sfreq - bin_size) > 1e-9:
            raise ValueError(f"bin_size {bin_size} is not a multiple of 1/{sfreq} s")
        x = np.asarray(ds["signal"].data, dtype=np.float32)
        y = np.asarray(ds["behavior_position"].data, dtype=np.float64)
        n = len(x) // k * k
        xb = x[:n].reshape(-1, k, x.shape[1]).sum(1)
        yb = y[:n].reshape(-1, k).mean(1)
        rate = sfreq / k
        out.append(Subject(str(ds.attrs["subject"]), xb, yb, rate, int(round(fit_duration * rate))))
    return out


def window_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over a centred window of ``size`` bins (the encoder's receptive field)."""
    return uniform_filter1d(np.asarray(x, dtype=np.float64), size, axis=0, mode="nearest")


def knn(n_neighbors: int) -> Any:
    return KNeighborsRegressor(n_neighbors=n_neighbors)


def knn_r2(train_x, train_y, test_x, test_y, n_neighbors: int) -> float:
    """Held-out R² of a KNN regressor of position."""
    model = knn(n_neighbors).fit(np.asarray(train_x), np.asarray(train_y))
    return float(r2_score(test_y, model.predict(np.asarray(test_x))))


def model_params(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    params = dict(
        conditional="time_delta",
        output_dim=args.dim,
        hidden_dim=args.hidden,
        batch_size=args.batch_size,
        max_iter=args.max_iter,
        learning_rate=args.lr,
        time_offset=args.time_offset,
        random_state=args.seed,
    )
    params.update(overrides)
    return params


# -------------------------------------------------------------------------------- consistency
def consistency_section(subjects: list[Subject], args: argparse.Namespace) -> dict[str, Any]:
    """Fit every model family, embed the held-out parts, score consistency and decoding."""
    names = [s.name for s in subjects]
    rf = args.receptive_field
    labels = [s.y_test for s in subjects]
    embeddings: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}  # (fit, test)
    fit_s: dict[str, float] = {}

    start = time.perf_counter()
    joint = ContrastiveEmbedding(**model_params(args)).fit(
        [s.X_fit for s in subjects], [s.y_fit for s in subjects]
    )
    fit_s["joint"] = time.perf_counter() - start
    embeddings["joint"] = (
        [joint.transform(s.X_fit, k) for k, s in enumerate(subjects)],
        [joint.transform(s.X_test, k) for k, s in enumerate(subjects)],
    )
    for family, conditional in (("single", "time_delta"), ("time", "time")):
        start = time.perf_counter()
        fits, tests = [], []
        for k, s in enumerate(subjects):
            model = ContrastiveEmbedding(
                **model_params(args, conditional=conditional, random_state=args.seed + 1 + k)
            ).fit(s.X_fit, s.y_fit)
            fits.append(model.transform(s.X_fit))
            tests.append(model.transform(s.X_test))
        fit_s[family] = time.perf_counter() - start
        embeddings[family] = (fits, tests)
    for family, prep in (("pca", lambda x: x), ("pca_window", lambda x: window_mean(x, rf))):
        fits, tests = [], []
        for s in subjects:
            pca = PCA(args.dim, random_state=args.seed).fit(prep(s.X_fit))
            fits.append(pca.transform(prep(s.X_fit)))
            tests.append(pca.transform(prep(s.X_test)))
        embeddings[family] = (fits, tests)

    rows, matrices = [], {}
    for family, (fits, tests) in embeddings.items():
        scores = consistency_score(tests, labels, n_bins=args.n_bins, names=names)
        normed = consistency_score(tests, labels, n_bins=args.n_bins, normalize=True)
        on_fit = consistency_score(fits, [s.y_fit for s in subjects], n_bins=args.n_bins)
        off = scores.to_numpy()[~np.eye(len(names), dtype=bool)]
        decode = [
            knn_r2(f, s.y_fit, t, s.y_test, args.k)
            for f, t, s in zip(fits, tests, subjects, strict=True)
        ]
        rows.append({
            "model": family,
            "consistency_mean_r2": float(scores.attrs["mean"]),
            "consistency_min_r2": float(off.min()),
            "unexplained_1_minus_r2": float(1 - scores.attrs["mean"]),
            "consistency_normalized_r2": float(normed.attrs["mean"]),
            "consistency_train_part_r2": float(on_fit.attrs["mean"]),
            "n_bins_used": int(scores.attrs["n_bins_used"]),
            "within_subject_knn_r2": float(np.mean(decode)),
            "fit_s": fit_s.get(family, float("nan")),
        })  # fmt: skip
        matrices[family] = scores.round(4).to_dict()
    return {"table": rows, "matrices": matrices}


# -------------------------------------------------------------------------------- few-shot
def _adapt_variants() -> list[tuple[str, dict[str, Any]]]:
    """``adapt`` settings to compare: own labels only, and anchored when the API offers it."""
    params = inspect.signature(ContrastiveEmbedding.adapt).parameters
    if "align" in params:
        return [("adapt", {"align": False}), ("adapt_anchored", {"align": True})]
    return [("adapt", {})]


def fewshot_section(
    subjects: list[Subject], holdouts: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Train on N-1 subjects, adapt to the held-out one, decode its later part."""
    rf, k_nn = args.receptive_field, args.k
    variants = _adapt_variants()
    rows = []
    timings: dict[str, list[float]] = {}
    for h in holdouts:
        new = subjects[h]
        others = [s for i, s in enumerate(subjects) if i != h]
        start = time.perf_counter()
        base = ContrastiveEmbedding(**model_params(args)).fit(
            [s.X_fit for s in others], [s.y_fit for s in others]
        )
        timings.setdefault("base_fit_s", []).append(time.perf_counter() - start)
        pool_x = np.concatenate([base.transform(s.X_fit, i) for i, s in enumerate(others)])
        pool_y = np.concatenate([s.y_fit for s in others])
        cross = knn(k_nn).fit(pool_x, pool_y)
        others_test = [base.transform(s.X_test, i) for i, s in enumerate(others)]
        labels = [s.y_test for s in others] + [new.y_test]
        for minutes in MINUTES:
            xa, ya = new.first(minutes)
            row: dict[str, Any] = {"held_out": new.name, "minutes": minutes}
            for name, kwargs in variants:
                model = copy.deepcopy(base)
                start = time.perf_counter()
                session = model.adapt(xa, ya, max_iter=args.adapt_iter, **kwargs)
                timings.setdefault(f"{name}_s", []).append(time.perf_counter() - start)
                emb_a = model.transform(xa, session)
                emb_t = model.transform(new.X_test, session)
                row[f"{name}_cross"] = float(r2_score(new.y_test, cross.predict(emb_t)))
                row[f"{name}_own"] = knn_r2(emb_a, ya, emb_t, new.y_test, k_nn)
                # Linear consistency of the new subject with the training subjects: high even
                # when the new session is a rotated copy of the shared map (then "cross" fails).
                scores = consistency_score([*others_test, emb_t], labels, n_bins=args.n_bins)
                row[f"{name}_consistency"] = float(
                    np.nanmean(np.r_[scores.iloc[-1].to_numpy(), scores.iloc[:, -1].to_numpy()])
                )
            start = time.perf_counter()
            scratch = ContrastiveEmbedding(
                **model_params(args, max_iter=args.adapt_iter, random_state=args.seed + 100 + h)
            ).fit(xa, ya)
            timings.setdefault("scratch_s", []).append(time.perf_counter() - start)
            row["scratch_own"] = knn_r2(
                scratch.transform(xa), ya, scratch.transform(new.X_test), new.y_test, k_nn
            )
            wa, wt = window_mean(xa, rf), window_mean(new.X_test, rf)
            raw = make_pipeline(StandardScaler(), knn(k_nn)).fit(wa, ya)
            row["raw_own"] = float(r2_score(new.y_test, raw.predict(wt)))
            pca = make_pipeline(StandardScaler(), PCA(args.dim, random_state=args.seed))
            pca.fit(wa)
            row["pca_own"] = knn_r2(pca.transform(wa), ya, pca.transform(wt), new.y_test, k_nn)
            rows.append(row)
    return {
        "table": rows,
        "variants": [name for name, _ in variants],
        "timings_s": {k: float(np.mean(v)) for k, v in timings.items()},
    }


# -------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one held-out subject, fewer steps")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=None, help="minutes per subject")
    parser.add_argument("--fit-minutes", type=float, default=5.0, help="training/adaptation pool")
    parser.add_argument("--bin", type=float, default=0.05, help="bin width (s)")
    parser.add_argument(
        "--units",
        type=int,
        nargs=2,
        default=(8, 20),
        metavar=("MIN", "MAX"),
        help="units per subject (the simulator's default, 20 60, decodes at R² ≈ 0.99 from "
        "anything, so the comparisons saturate)",
    )
    parser.add_argument("--dim", type=int, default=3, help="embedding (and PCA) dimension")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--adapt-iter", type=int, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--time-offset", type=int, default=10)
    parser.add_argument("--n-bins", type=int, default=100, help="position bins for consistency")
    parser.add_argument("--k", type=int, default=10, help="KNN neighbours")
    parser.add_argument("--holdout", type=int, nargs="*", default=None, help="subject indices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.minutes is None:
        args.minutes = 7.0 if quick else 10.0
    if args.batch_size is None:
        args.batch_size = 128 if quick else 256
    if args.max_iter is None:
        args.max_iter = 200 if quick else 1000
    if args.adapt_iter is None:
        args.adapt_iter = 150 if quick else 500
    if args.holdout is None:
        args.holdout = [args.subjects - 1] if quick else list(range(args.subjects))
    args.receptive_field = 10  # the estimator's default offset10-model
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    total = time.perf_counter()
    subjects = simulate_subjects(
        args.subjects,
        args.minutes * 60,
        args.fit_minutes * 60,
        bin_size=args.bin,
        seed=args.seed,
        n_units=tuple(args.units),
    )
    print(
        f"{len(subjects)} subjects, units {[s.X.shape[1] for s in subjects]}, "
        f"{args.minutes:g} min at {args.bin * 1000:g} ms bins "
        f"(first {args.fit_minutes:g} min train/adapt, rest held out)"
    )
    cons = consistency_section(subjects, args)
    table = pd.DataFrame(cons["table"]).set_index("model")
    print("\nConsistency across subjects (held-out parts, position-binned linear maps)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    few = fewshot_section(subjects, args.holdout, args)
    ftab = pd.DataFrame(few["table"])
    print(f"\nFew-shot adaptation: held-out-later R² of position (KNN, k={args.k})")
    print(ftab.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    mean = ftab.drop(columns="held_out").groupby("minutes").mean()
    if len(args.holdout) > 1:
        print("\nMean over held-out subjects")
        print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nTimings (s):", {k: round(v, 1) for k, v in few["timings_s"].items()})
    results = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "n_units": {s.name: int(s.X.shape[1]) for s in subjects},
        "consistency": cons,
        "fewshot": {**few, "mean_by_minutes": mean.reset_index().to_dict("records")},
        "total_s": time.perf_counter() - total,
    }
    print(f"total {results['total_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
