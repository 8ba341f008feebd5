"""Classical decoding baselines on the real recordings, with leakage-safe splits and chance.

Every figure is computed from stores written by the catalog's ingestion (reused when up to
date) and evaluated with :func:`neurodecode.evaluate.cross_validate`: scores on held-out data
only, normalisation inside the estimator (fitted on training folds), chance level and p-value by
label permutation.

Usage::

    python benchmarks/real_data.py --quick --json outputs/real_data.json

``--quick`` uses fewer permutations (10 instead of 200: p-values are then at best 1/11); the
scores themselves are the same. The contrastive-embedding analyses retrain the embedding for
every fold and permutation (about 30 min with 20 permutations on 2 cores), so ``--quick`` leaves
them out unless they are named with ``--only``::

    python benchmarks/real_data.py --only embedding_linear_track embedding_calcium \
        --permutations 20 --json outputs/real_embeddings.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from neurodecode.data.samples import Samples, epochs, open_recordings, time_samples, windows
from neurodecode.data.splits import ContiguousBlocks, LeaveOneGroupOut, WithinRecordingShuffle
from neurodecode.evaluate import baselines
from neurodecode.evaluate.cv import cross_validate

N_JOBS = 2  # permutations in parallel (2 cores)

DATASETS = [
    "eegbci_s001",
    "haxby2001_sub001_slice",
    "muse_n170",
    "muse_p300",
    "golub_bci",
    "nelpy_linear_track",
    "svoboda_mouse_s1",
]


def ingest(stores: Path) -> None:
    """Write (or reuse) the stores of every dataset used here."""
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    catalog = load_catalog()
    tasks = [t for name in DATASETS for t in plan_entry(catalog[name], stores)]
    failed = [
        r.error
        for r in run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
        if r.status == "failed"
    ]
    if failed:
        raise RuntimeError("\n".join(failed))


def _evaluate(
    estimator,
    samples: Samples,
    cv,
    metrics: tuple[str, ...],
    permutation: str,
    n_perm: int,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
):
    """Cross-validate on ``samples`` (or on features ``X`` of its rows) with a chance level."""
    return cross_validate(
        estimator,
        samples.X if X is None else X,
        samples.y if y is None else y,
        samples.table,
        cv,
        metrics=metrics,
        n_permutations=n_perm,
        permutation=permutation,
        n_jobs=N_JOBS,
    )


def _row(name: str, samples: Samples, cv, result, note: str = "") -> dict:
    summary = result.summary.set_index("metric")
    out = {"analysis": name, "n_samples": len(samples), "cv": repr(cv), "note": note}
    for metric, r in summary.iterrows():
        out[metric] = {
            "score": float(r["mean"]),
            "std": float(r["std"]),
            "chance": float(r["chance"]),
            "p_value": float(r["p_value"]),
        }
    return out


def eegbci(stores: Path, n_perm: int) -> list[dict]:
    """Hands vs feet imagery (runs 6/10/14), 7–30 Hz, epochs 1–2 s, CSP(4)+LDA (MNE's example)."""
    recs = open_recordings(stores / "eegbci_s001", runs=["06", "10", "14"])
    s = epochs(
        recs,
        tmin=-1.0,
        tmax=4.0,
        l_freq=7.0,
        h_freq=30.0,
        labels={"imagine_both_fists": "hands", "imagine_both_feet": "feet"},
    )
    keep = (s.times >= 1.0 - 1e-9) & (s.times <= 2.0 + 1e-9)
    s = Samples(s.X[:, :, keep], s.y, s.table, s.ch_names, s.sfreq, s.times[keep])
    rows = []
    for cv, note in (
        (
            WithinRecordingShuffle(n_splits=10, test_size=0.2, random_state=42),
            "MNE's published protocol: trials of one run on both sides (optimistic)",
        ),
        (LeaveOneGroupOut("run"), "leave-one-run-out (leakage-safer)"),
    ):
        res = _evaluate(
            baselines.csp_lda(4),
            s,
            cv,
            ("accuracy", "balanced_accuracy", "roc_auc"),
            "within",
            n_perm,
        )
        rows.append(_row("eegbci_hands_vs_feet_csp_lda", s, cv, res, note))
    return rows


def haxby(stores: Path, n_perm: int) -> list[dict]:
    """Face vs house and 8-way categories, leave-one-run-out, labels 5 s after the stimulus."""
    recs = open_recordings(stores / "haxby2001_sub001_slice")
    rows = []
    for name, labels in (("haxby_face_vs_house", ["face", "house"]), ("haxby_8_way", None)):
        s = time_samples(recs, target="events", delay=5.0, labels=labels)
        cv = LeaveOneGroupOut("run")
        metrics = ("balanced_accuracy", "roc_auc") if labels else ("balanced_accuracy",)
        res = _evaluate(baselines.lda(), s, cv, metrics, "within", n_perm)
        rows.append(
            _row(
                name,
                s,
                cv,
                res,
                "volumes labelled by the block active 5 s earlier (hemodynamic delay); "
                "voxel standardisation fitted on training runs; shrinkage LDA",
            )
        )
    return rows


def muse(stores: Path, n_perm: int) -> list[dict]:
    """N170 (faces vs houses) and P300 (target vs non-target): within-subject and LOSO."""
    rows = []
    for dataset, labels in (
        ("muse_n170", {"face": "face", "house": "house"}),
        ("muse_p300", {"target": "target", "nontarget": "nontarget"}),
    ):
        recs = open_recordings(stores / dataset)
        s = epochs(
            recs,
            tmin=-0.1,
            tmax=0.8,
            labels=labels,
            baseline=(-0.1, 0.0),
            l_freq=1.0,
            h_freq=30.0,
            decim=4,
        )
        for subject in sorted(set(s.table["subject"]), key=int):
            one = s.select(s.table["subject"].to_numpy() == subject)
            cv = ContiguousBlocks(n_blocks=5, gap=1.0)
            res = _evaluate(
                baselines.erp_lda(decim=4),
                one,
                cv,
                ("roc_auc", "balanced_accuracy"),
                "within",
                n_perm,
            )
            rows.append(
                _row(
                    f"{dataset}_erp_lda_sub-{subject}",
                    one,
                    cv,
                    res,
                    "within-subject: 5 contiguous blocks, 1 s gap",
                )
            )
        cv = LeaveOneGroupOut("subject")
        res = _evaluate(
            baselines.erp_lda(decim=4), s, cv, ("roc_auc", "balanced_accuracy"), "within", n_perm
        )
        rows.append(_row(f"{dataset}_erp_lda_loso", s, cv, res, "leave-one-subject-out"))
    return rows


def golub(stores: Path, n_perm: int) -> list[dict]:
    """8 cursor-to-target directions from 86 M1 units (45 ms bins), across learning blocks."""
    recs = open_recordings(stores / "golub_bci")
    s = time_samples(recs, target="events")
    s = Samples(np.sqrt(s.X), s.y, s.table, s.ch_names, s.sfreq)  # variance-stabilised counts
    cv = LeaveOneGroupOut("run")
    res = _evaluate(baselines.lda(), s, cv, ("balanced_accuracy",), "within", n_perm)
    return [
        _row(
            "golub_8_directions",
            s,
            cv,
            res,
            "train before learning, test after, and the reverse; sqrt spike counts",
        )
    ]


def linear_track(stores: Path, n_perm: int) -> list[dict]:
    """Rat position (x, y pixels) from 31 units: 1 s windows every 250 ms, while running."""
    recs = open_recordings(stores / "nelpy_linear_track")
    s = windows(recs, length=1.0, stride=0.25, target="position")
    speed = windows(recs, length=1.0, stride=0.25, target="speed").y
    # the first 985 s (afterwards the tracker is stuck at one spot), running epochs only
    keep = (s.table["stop"].to_numpy() <= 985.0) & (speed > 20.0)
    s = s.select(keep)
    X = np.sqrt(s.X.sum(axis=2))  # variance-stabilised spike counts per unit
    cv = ContiguousBlocks(n_blocks=5, gap=2.0)
    rows = []
    for est_name, est in (("ridge", baselines.ridge()), ("knn", baselines.knn(15, "regression"))):
        res = _evaluate(est, s, cv, ("r2", "median_absolute_error"), "circular_shift", n_perm, X=X)
        rows.append(
            _row(
                f"linear_track_position_{est_name}",
                s,
                cv,
                res,
                "pixels (scale unknown); tracked 985 s; speed > 20 px/s",
            )
        )
    return rows


def calcium_speed(stores: Path, n_perm: int) -> list[dict]:
    """Running speed from ROI ΔF/F, contiguous blocks."""
    recs = open_recordings(stores / "svoboda_mouse_s1")
    s = time_samples(recs, target="running_speed")
    cv = ContiguousBlocks(n_blocks=5, gap=2.0)
    res = _evaluate(baselines.ridge(cv=5), s, cv, ("r2", "pearson_r"), "circular_shift", n_perm)
    return [
        _row(
            "calcium_running_speed_ridge",
            s,
            cv,
            res,
            "ΔF/F of built-in ROIs; ridge alpha by contiguous inner folds; 500 frames",
        )
    ]


#: Every permutation of an embedding pipeline is a full retraining (5 folds x ``max_iter`` steps),
#: so embedding rows use at most this many permutations (``--permutations`` caps it further).
EMBED_MAX_PERMUTATIONS = 20

#: Settings of the contrastive embedding on the rat linear track (100 ms bins).
TRACK_EMBEDDING = dict(
    conditional="time_delta",
    output_dim=8,
    hidden_dim=32,
    receptive_field=10,
    time_offset=10,
    batch_size=256,
    max_iter=1000,
    learning_rate=1e-3,
    random_state=0,
)


def _cross_validate_rows(
    name: str,
    samples: Samples,
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    metrics: tuple[str, ...],
    n_perm: int,
    note: str,
    fit_params: dict | None = None,
) -> dict:
    """One row: ``cross_validate`` with ContiguousBlocks(5, 2 s) and circular-shift chance."""
    cv = ContiguousBlocks(n_blocks=5, gap=2.0)
    t0 = time.perf_counter()
    res = cross_validate(
        estimator,
        X,
        y,
        samples.table,
        cv,
        metrics=metrics,
        n_permutations=n_perm,
        permutation="circular_shift",
        n_jobs=N_JOBS,
        fit_params=fit_params,
    )
    row = _row(name, samples, cv, res, note)
    row["n_permutations"] = n_perm
    row["fit_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def track_bins(stores: Path, bin_size: float = 0.1) -> tuple[Samples, np.ndarray]:
    """Rat linear track as consecutive bins of sqrt spike counts over the tracked 985 s.

    Returns the samples (``X``: ``(n_bins, 31)`` variance-stabilised counts, ``y``: (x, y)
    position in pixels at each bin's end, ``sfreq = 1 / bin_size``) and each bin's integer
    position on the time grid (for :meth:`ContrastiveEmbedding.fit`). All bins are kept, running
    or not, so that every test block is contiguous: the embedding's windows (and the smoothing
    of the baselines) never bridge a hole at prediction time.
    """
    from neurodecode.data.samples import sample_positions

    recs = open_recordings(stores / "nelpy_linear_track")
    s = windows(recs, length=bin_size, stride=bin_size, target="position")
    s = s.select(s.table["stop"].to_numpy() <= 985.0)  # tracker stuck afterwards
    counts = np.sqrt(s.X.sum(axis=2)).astype(np.float32)
    s = Samples(counts, s.y, s.table, s.ch_names, 1.0 / bin_size)
    return s, sample_positions(s.table, s.sfreq)


def embedding_linear_track(stores: Path, n_perm: int) -> list[dict]:
    """Rat position from a CEBRA-style embedding + KNN vs KNN/PCA baselines, 100 ms bins.

    The embedding (``time_delta`` on the (x, y) position, 10-bin = 1 s centred receptive
    field) is trained inside each fold on the training blocks only, with sample positions so
    that no window spans a cut-out test block; a cosine KNN (k = 25) maps it to position. The
    baselines get the same 1 s support: a centred 10-bin boxcar of the counts (a fixed filter:
    with the 2 s gap no training feature mixes test bins). The shuffled-label row trains and
    tests the embedding pipeline on positions circularly shifted by a third of the session.
    """
    from scipy.ndimage import uniform_filter1d
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.models.contrastive import ContrastiveEmbedding

    s, positions = track_bins(stores)
    smooth = uniform_filter1d(s.X, size=10, axis=0)
    metrics = ("r2", "median_absolute_error")
    n_emb = min(n_perm, EMBED_MAX_PERMUTATIONS)
    embed = make_pipeline(
        ContrastiveEmbedding(**TRACK_EMBEDDING), KNeighborsRegressor(25, metric="cosine")
    )
    fit_params = {"contrastiveembedding__positions": positions}
    cfg = "time_delta, dim 8, rf 10 bins, 1000 steps, batch 256"
    rows = [
        _cross_validate_rows(
            "linear_track_embedding_knn",
            s,
            embed,
            s.X,
            s.y,
            metrics,
            n_emb,
            f"CEBRA-style ({cfg}) + cosine KNN k=25; 100 ms sqrt counts, all 985 s (running "
            f"or not); chance from {n_emb} permutations (each a full refit, capped at "
            f"{EMBED_MAX_PERMUTATIONS})",
            fit_params,
        )
    ]
    shifted = np.roll(s.y, len(s.y) // 3, axis=0)
    rows.append(
        _cross_validate_rows(
            "linear_track_embedding_shuffled_labels",
            s,
            embed,
            s.X,
            shifted,
            metrics,
            0,
            "control: same embedding pipeline trained and scored on positions circularly "
            "shifted by 1/3 of the session (one draw of the null); must be near R2 0",
            fit_params,
        )
    )
    for name, est, X, note in (
        (
            "linear_track_bins_knn_raw",
            make_pipeline(StandardScaler(), KNeighborsRegressor(25)),
            s.X,
            "KNN k=25 on standardised sqrt counts of single 100 ms bins (no smoothing)",
        ),
        (
            "linear_track_bins_knn_smoothed",
            make_pipeline(StandardScaler(), KNeighborsRegressor(25)),
            smooth,
            "KNN k=25 on counts smoothed by a centred 1 s boxcar (the embedding's support)",
        ),
        (
            "linear_track_bins_pca_knn",
            make_pipeline(StandardScaler(), PCA(8), KNeighborsRegressor(25)),
            smooth,
            "PCA(8) + KNN k=25 on the 1 s boxcar-smoothed counts",
        ),
    ):
        rows.append(_cross_validate_rows(name, s, est, X, s.y, metrics, n_perm, note))
    return rows


def embedding_calcium(stores: Path, n_perm: int) -> list[dict]:
    """Running speed from ΔF/F: contrastive embedding + KNN and plain KNN, contiguous blocks.

    Only 500 frames (10 Hz): a small encoder (5-frame receptive field, ``time_delta`` on speed
    with 5-frame increments, batch 128, 500 steps), trained on ~360 frames per fold.
    """
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.data.samples import sample_positions
    from neurodecode.models.contrastive import ContrastiveEmbedding

    recs = open_recordings(stores / "svoboda_mouse_s1")
    s = time_samples(recs, target="running_speed")
    positions = sample_positions(s.table, s.sfreq)
    metrics = ("r2", "pearson_r")
    n_emb = min(n_perm, EMBED_MAX_PERMUTATIONS)
    embed = make_pipeline(
        StandardScaler(),
        ContrastiveEmbedding(
            conditional="time_delta",
            output_dim=8,
            receptive_field=5,
            time_offset=5,
            batch_size=128,
            max_iter=500,
            learning_rate=1e-3,
            random_state=0,
        ),
        KNeighborsRegressor(25, metric="cosine"),
    )
    return [
        _cross_validate_rows(
            "calcium_running_speed_embedding_knn",
            s,
            embed,
            s.X,
            s.y,
            metrics,
            n_emb,
            f"ΔF/F → embedding (rf 5 frames, dim 8, 500 steps) + cosine KNN k=25; 500 frames; "
            f"{n_emb} permutations (capped at {EMBED_MAX_PERMUTATIONS})",
            {"contrastiveembedding__positions": positions},
        ),
        _cross_validate_rows(
            "calcium_running_speed_knn",
            s,
            make_pipeline(StandardScaler(), KNeighborsRegressor(25)),
            s.X,
            s.y,
            metrics,
            n_perm,
            "KNN k=25 on standardised ΔF/F (no embedding); compare with the ridge row",
        ),
    ]


ANALYSES = {
    "eegbci": eegbci,
    "haxby": haxby,
    "muse": muse,
    "golub": golub,
    "linear_track": linear_track,
    "calcium": calcium_speed,
    "embedding_linear_track": embedding_linear_track,
    "embedding_calcium": embedding_calcium,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 permutations instead of 200")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--permutations", type=int, help="number of label permutations")
    parser.add_argument("--stores", type=Path, default=Path("outputs/real_data_stores"))
    parser.add_argument("--only", nargs="*", choices=sorted(ANALYSES), help="subset to run")
    args = parser.parse_args()
    n_perm = args.permutations or (10 if args.quick else 200)
    ingest(args.stores)
    results = []
    default = [n for n in ANALYSES if not (args.quick and n.startswith("embedding_"))]
    for name in args.only or default:
        t0 = time.perf_counter()
        for row in ANALYSES[name](args.stores, n_perm):
            row["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            metrics = {k: v for k, v in row.items() if isinstance(v, dict)}
            text = "  ".join(
                f"{m}={v['score']:.3f} (chance {v['chance']:.3f}, p={v['p_value']:.3g})"
                for m, v in metrics.items()
            )
            print(
                f"{row['analysis']:36} n={row['n_samples']:<6} {row['note'][:48]:48} {text}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n_permutations": n_perm, "results": results}, indent=2))


if __name__ == "__main__":
    main()
