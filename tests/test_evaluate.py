"""Evaluation: metric values, permutation chance levels, leakage guard rails, baselines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, KFold, PredefinedSplit, cross_val_score
from sklearn.model_selection import LeaveOneGroupOut as SkLeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurodecode.data.splits import (
    ContiguousBlocks,
    LeakageError,
    LeaveOneGroupOut,
    WithinRecordingShuffle,
)
from neurodecode.evaluate import EvaluationResult, Metric, cross_validate, permutation_test
from neurodecode.evaluate import baselines as bl
from neurodecode.evaluate import metrics as mt
from neurodecode.evaluate.cleaning import FoldClean
from neurodecode.evaluate.permutation import (
    PermutationResult,
    default_scheme,
    permutation_p_value,
    permute_labels,
    permuted_targets,
)

# --------------------------------------------------------------------------- synthetic data


def trial_table(n_runs: int, n_trials: int, length: float = 0.5, step: float = 2.0
                ) -> pd.DataFrame:
    """Sample table of ``n_trials`` trials in each of ``n_runs`` runs of one subject."""
    return pd.DataFrame({
        "recording": np.repeat([f"sub-01_run-{r + 1}" for r in range(n_runs)], n_trials),
        "subject": "01",
        "session": "01",
        "run": np.repeat(np.arange(1, n_runs + 1), n_trials),
        "start": np.tile(np.arange(n_trials) * step, n_runs),
        "stop": np.tile(np.arange(n_trials) * step + length, n_runs),
    })


def erp_epochs(n_runs: int = 4, n_trials: int = 30, n_channels: int = 6, n_times: int = 40,
               effect: float = 0.5, seed: int = 0):
    """Epochs where class 1 adds an evoked bump on the first channels."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.permutation(np.repeat([0, 1], n_trials // 2)) for _ in range(n_runs)])
    X = rng.standard_normal((len(y), n_channels, n_times))
    X[y == 1, :3] += effect * np.hanning(n_times)
    return X, y, trial_table(n_runs, n_trials)


# --------------------------------------------------------------------------- metrics


def test_classification_metrics_on_hand_computed_cases():
    assert mt.balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((2 / 3 + 1) / 2)
    # binary AUC: 3 of the 4 (positive, negative) pairs are ordered right
    y, s = np.array(["a", "a", "b", "b"]), np.array([0.1, 0.4, 0.35, 0.8])
    assert mt.roc_auc(y, s) == pytest.approx(0.75)
    assert mt.roc_auc(y, np.column_stack([1 - s, s]), labels=["a", "b"]) == pytest.approx(0.75)
    # multi-class one-vs-rest macro, from scores that are not probabilities
    rng = np.random.default_rng(0)
    y3 = np.repeat([0, 1, 2], 10)
    scores = rng.standard_normal((30, 3)) + np.eye(3)[y3]
    expected = np.mean([skm.roc_auc_score(y3 == c, scores[:, c]) for c in range(3)])
    assert mt.roc_auc(y3, scores, labels=[0, 1, 2]) == pytest.approx(expected)
    proba = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert mt.roc_auc(y3, proba) == pytest.approx(
        skm.roc_auc_score(y3, proba, multi_class="ovr", average="macro"))
    # top-k: true classes ranked 1st, 2nd, 3rd
    sc = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    yk, classes = np.array([0, 0, 2]), [0, 1, 2]
    assert mt.top_k_accuracy(yk, sc, k=1, labels=classes) == pytest.approx(1 / 3)
    assert mt.top_k_accuracy(yk, sc, k=2, labels=classes) == pytest.approx(2 / 3)
    assert mt.top_k_accuracy(yk, sc, k=3, labels=classes) == pytest.approx(1.0)
    # class 1 is absent from y: the columns cannot be matched without labels=
    with pytest.raises(ValueError, match="labels="):
        mt.top_k_accuracy(yk, sc)


def test_regression_metrics_on_hand_computed_cases():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    pred = np.array([[1.0, 4.0], [2.0, 4.0], [3.0, 4.0]])  # target 2 predicted by its mean
    np.testing.assert_allclose(mt.r2(y, pred, multioutput="raw_values"), [1.0, 0.0])
    assert mt.r2(y, pred) == pytest.approx(0.5)
    err = mt.median_absolute_error([0.0, 0.0, 0.0], [1.0, -2.0, 3.0], scale=10.0)
    assert err == pytest.approx(20.0)
    np.testing.assert_allclose(
        mt.median_absolute_error(y, pred, scale=[1.0, 100.0], multioutput="raw_values"),
        [0.0, 200.0])
    x = np.arange(5.0)
    assert mt.pearson_r(x, 3 * x + 1) == pytest.approx(1.0)
    assert mt.pearson_r(x, -x) == pytest.approx(-1.0)
    np.testing.assert_allclose(mt.pearson_r(np.c_[x, x], np.c_[x, -x], multioutput="raw_values"),
                               [1.0, -1.0])


def test_retrieval_metrics():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((200, 16))
    assert mt.two_way_identification(true, true) == 1.0
    assert mt.top_k_retrieval(true, true, k=1, n_candidates=50) == 1.0
    noise = rng.standard_normal((200, 16))
    assert mt.two_way_identification(true, noise) == pytest.approx(0.5, abs=0.03)
    assert mt.top_k_retrieval(true, noise, k=5, n_candidates=50) == pytest.approx(0.1, abs=0.03)
    # constant predictions tie with every candidate: exactly chance
    flat = np.ones((200, 16))
    assert mt.two_way_identification(true, flat) == 0.5
    assert mt.top_k_retrieval(true, flat, k=2, n_candidates=10) == pytest.approx(0.2)

    # hand-computed: prediction 0 matches 0, prediction 1 matches 2 better than 1,
    # prediction 2 matches 2 best and 1 second
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.4, 1.0], [0.0, 0.3, 1.0]])
    # pair (i, j != i) wins when corr(p_i, t_i) > corr(p_i, t_j): row 0 wins 2/2, row 1 1/2
    # (beats t_0, loses to t_2), row 2 2/2
    assert mt.two_way_identification(t, p) == pytest.approx((1 + 0.5 + 1) / 3)
    # among all 3 candidates: rows 0 and 2 are top-1 hits, row 1 only a top-2 hit
    assert mt.top_k_retrieval(t, p, k=1, n_candidates=3) == pytest.approx(2 / 3)
    assert mt.top_k_retrieval(t, p, k=2, n_candidates=3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="feature matrices"):
        mt.two_way_identification(x := np.arange(4.0), x)


def test_metric_registry():
    for name, metric in mt.METRICS.items():
        assert metric.needs in ("predict", "score", "proba"), name
        assert isinstance(metric.greater_is_better, bool)
    assert mt.METRICS["median_absolute_error"].greater_is_better is False
    func, needs, greater = mt.METRICS["roc_auc"]
    assert (func, needs, greater) == (mt.roc_auc, "score", True)


# --------------------------------------------------------------------------- permutation


def test_p_value_formula_and_result():
    null = np.array([0.4, 0.5, 0.6, 0.7, np.nan])
    assert permutation_p_value(0.65, null) == pytest.approx((1 + 1) / (1 + 4))
    assert permutation_p_value(0.65, null, greater_is_better=False) == pytest.approx(4 / 5)
    assert permutation_p_value(0.9, null) == pytest.approx(1 / 5)
    assert np.isnan(permutation_p_value(0.9, []))
    res = PermutationResult(0.65, null[:4])
    assert res.chance == pytest.approx(0.55)
    assert res.p_value == pytest.approx(2 / 5)
    assert res.n_permutations == 4


def test_permutation_test_of_fixed_predictions():
    y = np.tile([0, 1], 30)
    groups = np.repeat(["a", "b", "c"], 20)
    res = permutation_test(lambda t: mt.balanced_accuracy(t, y), y, groups=groups,
                           n_permutations=50, random_state=1)
    assert res.score == 1.0
    assert res.p_value == pytest.approx(1 / 51)
    assert res.chance == pytest.approx(0.5, abs=0.05)


def test_permutation_schemes():
    rng = np.random.default_rng(0)
    n = 400
    groups = np.repeat(["r1", "r2"], n // 2)
    # AR(1) target, samples given in reverse time order in the second recording
    y = np.zeros(n)
    for i in range(1, n):
        y[i] = 0.95 * y[i - 1] + rng.standard_normal()
    order = np.r_[np.arange(n // 2), np.arange(n // 2)[::-1]]
    y[n // 2:] = y[n // 2:][::-1]

    def lag1(v: np.ndarray) -> float:
        parts = [v[: n // 2], v[n // 2:][::-1]]  # each recording in time order
        return float(np.mean([np.corrcoef(p[:-1], p[1:])[0, 1] for p in parts]))

    shifted = permute_labels(y, scheme="circular_shift", groups=groups, order=order, rng=0)
    assert lag1(shifted) == pytest.approx(lag1(y), abs=0.03)
    assert abs(lag1(permute_labels(y, scheme="within", groups=groups, rng=0))) < 0.15
    # a circular shift is a rotation of each recording's sequence, by at least 10 %
    for part in (slice(0, n // 2), slice(n // 2, n)):
        a, b = y[part], shifted[part]
        shifts = [s for s in range(a.size) if np.array_equal(np.roll(a, s), b)]
        assert len(shifts) == 1 and 0.1 * a.size <= shifts[0] <= 0.9 * a.size
    # within keeps each group's values; shuffle mixes them
    labels = np.repeat([0, 1], n // 2)
    np.testing.assert_array_equal(permute_labels(labels, scheme="within", groups=groups, rng=0),
                                  labels)
    assert permute_labels(labels, scheme="shuffle", rng=0)[: n // 2].mean() == pytest.approx(
        0.5, abs=0.1)
    # reproducible from the seed, different across permutations
    a, b = permuted_targets(y, 3, random_state=4), permuted_targets(y, 3, random_state=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="scheme"):
        permute_labels(y, scheme="bogus")


def test_default_scheme():
    trials = trial_table(2, 10)
    assert default_scheme(np.tile([0, 1], 10), trials) == "within"
    assert default_scheme(np.linspace(0, 1, 20), trials) == "circular_shift"
    windows = trial_table(2, 10, length=1.0, step=0.5)  # overlapping sliding windows
    assert default_scheme(np.tile([0, 1], 10), windows) == "circular_shift"


# --------------------------------------------------------------------------- guard rails


def test_shuffled_labels_stay_at_chance_and_real_effect_is_significant():
    X, y, samples = erp_epochs()
    cv = LeaveOneGroupOut(by="run")
    real = cross_validate(bl.erp_lda(decim=5), X, y, samples, cv, n_permutations=20)
    row = real.summary.set_index("metric").loc["balanced_accuracy"]
    assert row["mean"] > 0.75
    assert row["p_value"] < 0.05
    assert row["chance"] == pytest.approx(0.5, abs=0.05)
    assert real.permutation == "within"

    # labels shuffled within each run: the effect is gone. (Under this null the p-value is
    # uniform, so any fixed seed has a 5 % chance of p <= 0.05; seed 0 is an ordinary draw.)
    y_shuffled = permute_labels(y, scheme="within", groups=samples["recording"], rng=0)
    null = cross_validate(bl.erp_lda(decim=5), X, y_shuffled, samples, cv, n_permutations=20)
    row = null.summary.set_index("metric").loc["balanced_accuracy"]
    assert row["mean"] == pytest.approx(0.5, abs=0.1)
    assert row["p_value"] > 0.05


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_splits_mixing_windows_of_one_run_are_refused():
    rng = np.random.default_rng(0)
    windows = trial_table(3, 20, length=1.0, step=0.5)  # overlapping windows
    X, y = rng.standard_normal((60, 4)), np.tile([0, 1], 30)
    est = bl.logistic()
    with pytest.raises(LeakageError, match="both train and test"):
        cross_validate(est, X, y, windows, KFold(5, shuffle=True, random_state=0),
                       n_permutations=0)
    with pytest.raises(LeakageError, match="within 0 s"):
        cross_validate(est, X, y, windows, WithinRecordingShuffle(n_splits=2), n_permutations=0)

    class HalvesWithoutGap:
        """A foreign splitter that claims a gap it does not keep."""

        within_recording, gap = True, 2.0

        def split(self, X, y=None, groups=None):
            first = (groups["start"] < 5.0).to_numpy()
            yield np.flatnonzero(first), np.flatnonzero(~first)

    with pytest.raises(LeakageError, match="within 2 s"):
        cross_validate(est, X, y, windows, HalvesWithoutGap(), n_permutations=0)

    # separate trials may be split at random within a recording (reproducing published work)
    trials = trial_table(3, 20)
    res = cross_validate(est, X, y, trials, WithinRecordingShuffle(n_splits=2),
                         metrics=["balanced_accuracy"], n_permutations=0)
    assert len(res.folds) == 2


def test_normalisation_is_fitted_on_training_rows_only(monkeypatch):
    X, y, samples = erp_epochs(n_runs=3, n_trials=10, n_channels=2, n_times=4)
    X = X.reshape(len(X), -1)
    X[:, 0] = np.arange(len(X))  # the sample's row number, to see who was fitted on what
    seen = []
    fit = bl.ChannelStandardizer.fit

    def spy(self, X, y=None):
        seen.append(np.sort(np.asarray(X)[:, 0]).astype(int))
        return fit(self, X, y)

    monkeypatch.setattr(bl.ChannelStandardizer, "fit", spy)
    cv = LeaveOneGroupOut(by="run")
    cross_validate(bl.logistic(), X, y, samples, cv, metrics=["balanced_accuracy"],
                   n_permutations=0)
    train_sets = [np.sort(train) for train, _ in cv.split(X, y, groups=samples)]
    assert len(seen) == len(train_sets) == 3
    for rows, train in zip(seen, train_sets, strict=True):
        np.testing.assert_array_equal(rows, train)


# --------------------------------------------------------------------------- baselines


def test_csp_lda_separates_band_power_classes():
    rng = np.random.default_rng(1)
    n_runs, n_trials, n_ch, sfreq = 3, 30, 6, 100.0
    t = np.arange(100) / sfreq
    y = np.tile(np.repeat([0, 1], n_trials // 2), n_runs)
    sources = rng.standard_normal((len(y), n_ch, t.size))
    alpha = np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (len(y), 1)))
    sources[:, 0] += np.where(y == 0, 3.0, 0.5)[:, None] * alpha
    sources[:, 1] += np.where(y == 1, 3.0, 0.5)[:, None] * alpha
    X = np.einsum("ij,njt->nit", rng.standard_normal((n_ch, n_ch)), sources) * 1e-5
    res = cross_validate(bl.csp_lda(n_components=4), X, y, trial_table(n_runs, n_trials),
                         LeaveOneGroupOut(by="run"), n_permutations=0)
    assert res.summary.set_index("metric").loc["balanced_accuracy", "mean"] > 0.9


def test_ridge_through_contiguous_blocks_recovers_true_r2():
    rng = np.random.default_rng(2)
    n_rec, n = 2, 600
    samples = trial_table(n_rec, n, length=0.1, step=0.1)
    feats = rng.standard_normal((n_rec * n, 5))
    for i in range(1, len(feats)):  # autocorrelated features
        feats[i] += 0.8 * feats[i - 1]
    feats /= feats.std(axis=0)
    w = np.array([1.0, -0.5, 0.5, 0.0, 0.25])
    signal = feats @ w
    truth = 0.75
    y = signal + rng.standard_normal(len(signal)) * np.sqrt(signal.var() * (1 - truth) / truth)
    res = cross_validate(bl.ridge(), feats, y, samples, ContiguousBlocks(n_blocks=5, gap=2.0),
                         metrics=["r2", "pearson_r", "median_absolute_error"], n_permutations=10)
    summary = res.summary.set_index("metric")
    assert summary.loc["r2", "mean"] == pytest.approx(truth, abs=0.05)
    assert summary.loc["pearson_r", "mean"] == pytest.approx(np.sqrt(truth), abs=0.05)
    assert res.permutation == "circular_shift"
    assert summary.loc["r2", "chance"] < 0.1
    assert summary.loc["r2", "p_value"] == pytest.approx(1 / 11)
    assert (res.folds["n_train"] + res.folds["n_test"] < n_rec * n).all()  # gap dropped


def test_evaluation_result_round_trips_through_json(tmp_path):
    X, y, samples = erp_epochs(n_runs=3, n_trials=10, n_channels=3, n_times=10)
    metrics = {"balanced_accuracy": mt.METRICS["balanced_accuracy"],
               "top1": Metric(mt.top_k_accuracy, "score", True)}
    res = cross_validate(bl.erp_lda(decim=2), X, y, samples, LeaveOneGroupOut(by="run"),
                         metrics=metrics, n_permutations=3)
    path = res.to_json(tmp_path / "result.json")
    data = json.loads(path.read_text())
    assert data == res.to_dict()
    assert [r["metric"] for r in data["summary"]] == ["balanced_accuracy", "top1"]
    assert {r["test_groups"] for r in data["folds"]} == {"1", "2", "3"}
    back = EvaluationResult.from_json(path)
    assert back.to_dict() == res.to_dict()
    pd.testing.assert_frame_equal(back.summary, res.summary)
    assert "balanced_accuracy" in repr(res) and "3 permutations (within)" in repr(res)
    # without permutations: no chance level, written as null
    none = cross_validate(bl.erp_lda(decim=2), X, y, samples, LeaveOneGroupOut(by="run"),
                          n_permutations=0)
    row = none.to_dict()["summary"][0]
    assert row["chance"] is None and row["p_value"] is None and row["n_permutations"] == 0
    assert EvaluationResult.from_dict(json.loads(json.dumps(none.to_dict()))).to_dict() == \
        none.to_dict()


def test_parallel_permutations_match_sequential():
    X, y, samples = erp_epochs(n_runs=3, n_trials=10, n_channels=3, n_times=10)
    runs = [cross_validate(bl.erp_lda(decim=2), X, y, samples, LeaveOneGroupOut(by="run"),
                           n_permutations=4, n_jobs=1)]
    # threads: same dispatch and reassembly as processes, without seconds of worker start-up
    with parallel_config(backend="threading"):
        runs.append(cross_validate(bl.erp_lda(decim=2), X, y, samples,
                                   LeaveOneGroupOut(by="run"), n_permutations=4, n_jobs=2))
    assert runs[0].to_dict() == runs[1].to_dict()


def test_transformers():
    sfreq = 100.0
    t = np.arange(200) / sfreq
    X = np.stack([np.sin(2 * np.pi * 10 * t), 0.1 * np.sin(2 * np.pi * 20 * t)])[None]
    bp = bl.BandPower(sfreq, log=False).fit(X)
    power = bp.transform(X).reshape(2, 3)  # channel-major
    assert power[0].argmax() == 1 and power[1].argmax() == 2  # alpha, beta
    assert power[0, 1] == pytest.approx(0.5, rel=0.1)  # a unit sine has power 1/2
    assert bl.BandPower(sfreq).fit_transform(X).shape == (1, 6)
    with pytest.raises(ValueError, match="no frequency bin"):
        bl.BandPower(sfreq, bands=((10.2, 10.8),)).fit_transform(X)

    dec = bl.Decimate(3).fit_transform(np.arange(7.0).reshape(1, 1, 7))
    np.testing.assert_allclose(dec, [[[1.0, 4.0, 6.0]]])
    assert bl.Flatten().fit_transform(np.zeros((4, 3, 2))).shape == (4, 6)

    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, (20, 4, 30))
    std = bl.ChannelStandardizer().fit(train)
    z = std.transform(train)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1)
    test = rng.normal(5.0, 3.0, (5, 4, 30))
    np.testing.assert_allclose(std.transform(test), (test - std.mean_[:, None])
                               / std.scale_[:, None])
    flat = bl.ChannelStandardizer().fit(train[:, :, 0])
    assert flat.mean_.shape == (4,)
    with pytest.raises(ValueError, match="task"):
        bl.knn(task="ranking")


@pytest.mark.parametrize("factory", [
    lambda: bl.ridge(),
    lambda: bl.ridge(cv=3),
    lambda: bl.logistic(),
    lambda: bl.logistic(C=[0.1, 1.0]),
    lambda: bl.bandpower_logistic(100.0),
    lambda: bl.csp_lda(2),
    lambda: bl.erp_lda(5),
    lambda: bl.xdawn_lda(1, decim=5),
    lambda: bl.knn(3),
    lambda: bl.knn(3, task="regression"),
], ids=["ridge", "ridge_cv", "logistic", "logistic_cv", "bandpower_logistic", "csp_lda",
        "erp_lda", "xdawn_lda", "knn", "knn_regression"])
def test_factories_clone_fit_and_predict(factory):
    X, y, _ = erp_epochs(n_runs=1, n_trials=40, n_channels=4, n_times=100, effect=2.0)
    est = factory()
    twin = clone(est)
    assert twin.get_params().keys() == est.get_params().keys()
    regression = "ridge" in repr(est) or "Regressor" in repr(est)
    target = y + 0.1 * np.arange(len(y)) / len(y) if regression else y
    pred = twin.fit(X, target).predict(X)
    assert pred.shape == (len(y),)
    if not regression:
        assert set(pred) <= {0, 1}


def test_cross_validate_rejects_bad_arguments():
    X, y, samples = erp_epochs(n_runs=2, n_trials=10, n_channels=2, n_times=8)
    cv = LeaveOneGroupOut(by="run")
    with pytest.raises(KeyError, match="unknown metric"):
        cross_validate(bl.erp_lda(2), X, y, samples, cv, metrics=["accuracy!"])
    with pytest.raises(TypeError, match="decision_function or predict_proba"):
        cross_validate(bl.ridge(), X, y.astype(float), samples, cv, metrics=["roc_auc"],
                       n_permutations=0)
    with pytest.raises(ValueError, match="rows"):
        cross_validate(bl.erp_lda(2), X[:-1], y, samples, cv)
    with pytest.raises(ValueError, match="permutation"):
        cross_validate(bl.erp_lda(2), X, y, samples, cv, permutation="rotate")


# --------------------------------------------------------------------------- scikit-learn splitters


def subject_table(n_subjects: int = 4, n_runs: int = 2, n_trials: int = 20) -> pd.DataFrame:
    """Separate trials in ``n_runs`` runs of each of ``n_subjects`` subjects."""
    sub = np.repeat([f"{s + 1:02d}" for s in range(n_subjects)], n_runs * n_trials)
    run = np.tile(np.repeat([str(r + 1) for r in range(n_runs)], n_trials), n_subjects)
    start = np.tile(np.arange(n_trials) * 2.0, n_subjects * n_runs)
    return pd.DataFrame({"recording": [f"sub-{s}_run-{r}" for s, r in zip(sub, run, strict=True)],
                         "subject": sub, "session": "01", "run": run, "start": start,
                         "stop": start + 0.5, "block": np.arange(len(sub)) % 2})


def _features(samples: pd.DataFrame, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, len(samples))
    X = rng.standard_normal((len(samples), 5))
    X[:, 0] += 2.5 * y
    return X, y


@pytest.mark.parametrize(("make_cv", "groups", "held_out"), [
    (lambda t: GroupKFold(n_splits=2), "subject", None),
    (lambda t: SkLeaveOneGroupOut(), "subject", ["01", "02", "03", "04"]),
    (lambda t: SkLeaveOneGroupOut(), "run", ["1", "2"]),
    (lambda t: SkLeaveOneGroupOut(), ["subject", "run"], None),
    (lambda t: PredefinedSplit(t["run"].astype(int).to_numpy() - 1), None, None),
], ids=["GroupKFold", "LeaveOneGroupOut-subject", "LeaveOneGroupOut-run",
        "LeaveOneGroupOut-subject-run", "PredefinedSplit"])
def test_sklearn_splitters_through_cross_validate(make_cv, groups, held_out):
    samples = subject_table()
    X, y = _features(samples)
    est = make_pipeline(StandardScaler(), LogisticRegression())
    cv = make_cv(samples)
    res = cross_validate(est, X, y, samples, cv, groups=groups, metrics=["balanced_accuracy"],
                         n_permutations=0)
    cols = [groups] if isinstance(groups, str) else groups
    keys = None if cols is None else samples[cols].astype(str).agg("|".join, axis=1).to_numpy()
    expected = cross_val_score(est, X, y, groups=keys, cv=cv, scoring="balanced_accuracy")
    np.testing.assert_allclose(res.folds["score"], expected)
    assert len(res.folds) == cv.get_n_splits(X, y, keys) and (res.folds["score"] > 0.6).all()
    if held_out is not None:
        assert res.folds["test_groups"].tolist() == held_out
    if groups == ["subject", "run"]:
        assert res.folds["test_groups"].tolist()[0] == "01|1" and len(res.folds) == 8


def test_sklearn_splitters_are_still_checked_for_leakage():
    samples = subject_table()
    X, y = _features(samples)
    est = make_pipeline(StandardScaler(), LogisticRegression())
    # groups that do not keep recordings together: every run is on both sides
    with pytest.raises(LeakageError, match=r"8 recording\(s\) have samples in both"):
        cross_validate(est, X, y, samples, GroupKFold(2), groups="block", n_permutations=0)
    # KFold over the overlapping windows of one recording
    one = trial_table(1, 40, length=1.0, step=0.5)
    X1, y1 = _features(one)
    with pytest.raises(LeakageError, match=r"\(e.g. sub-01_run-1\)"):
        cross_validate(est, X1, y1, one, KFold(5), n_permutations=0)
    with pytest.raises(ValueError, match=r"groups='subjects': the sample table has no column"):
        cross_validate(est, X, y, samples, GroupKFold(2), groups="subjects", n_permutations=0)
    with pytest.raises(ValueError, match="reads the sample table itself"):
        cross_validate(est, X, y, samples, LeaveOneGroupOut("run"), groups="run",
                       n_permutations=0)


def test_folds_are_checked_once(monkeypatch):
    from neurodecode.data import splits

    calls = []
    check = splits.SplitChecker.check
    monkeypatch.setattr(splits.SplitChecker, "check",
                        lambda self, *a, **k: calls.append(1) or check(self, *a, **k))
    X, y, samples = erp_epochs(n_runs=3, n_trials=10, n_channels=2, n_times=4)
    X = X.reshape(len(X), -1)
    est = make_pipeline(StandardScaler(), LogisticRegression())
    cross_validate(est, X, y, samples, LeaveOneGroupOut("run"), metrics=["balanced_accuracy"],
                   n_permutations=0)
    assert len(calls) == 3
    cross_validate(est, X, y, samples, SkLeaveOneGroupOut(), groups="run",
                   metrics=["balanced_accuracy"], n_permutations=0)
    assert len(calls) == 6


# --------------------------------------------------------------------------- per-fold cleaning


def test_fold_clean_matches_nilearn_on_the_training_block():
    from nilearn.signal import clean

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6)).cumsum(axis=0) + np.linspace(0, 5, 120)[:, None]
    fc = FoldClean(t_r=2.0, detrend=True, high_pass=0.01)
    expected = clean(X[:80], detrend=True, standardize="zscore_sample", filter="butterworth",
                     high_pass=0.01, t_r=2.0)
    np.testing.assert_allclose(fc.fit_transform(X[:80]), expected, atol=1e-10)
    # the test block: its own detrending and filtering, the training block's mean and scale
    own = clean(X[80:], detrend=True, standardize=None, filter="butterworth", high_pass=0.01,
                t_r=2.0)
    np.testing.assert_allclose(fc.transform(X[80:]), (own - fc.mean_) / fc.scale_, atol=1e-10)
    assert fc.transform(X[80:].astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="need t_r"):
        FoldClean(high_pass=0.01).fit(X)


def test_fold_clean_uses_no_test_statistics():
    rng = np.random.default_rng(1)
    train = rng.normal(0.0, 1.0, (200, 3))
    test = rng.normal(3.0, 2.0, (50, 3))  # a shifted, wider test block
    fold = FoldClean().fit(train)
    z = fold.transform(test)
    np.testing.assert_allclose(z, (test - train.mean(0)) / train.std(0, ddof=1))
    assert (z.mean(axis=0) > 2.0).all()  # the shift is kept: the test block was not re-centred
    everything = FoldClean().fit(np.vstack([train, test]))
    assert not np.allclose(everything.transform(test), z)  # what fitting on all would leak
    # changing the test data changes nothing fitted on the training block
    np.testing.assert_array_equal(FoldClean().fit(train).transform(train), fold.transform(train))


def test_fold_clean_in_cross_validate_is_fitted_on_training_rows(monkeypatch):
    X, y, samples = erp_epochs(n_runs=3, n_trials=10, n_channels=2, n_times=4)
    X = X.reshape(len(X), -1)
    X[:, 0] = np.arange(len(X))  # the row number, to see what each fold was fitted on
    seen = []
    fit = FoldClean.fit

    def spy(self, X, y=None, runs=None):
        seen.append((np.sort(np.asarray(X)[:, 0]).astype(int), np.asarray(runs)))
        return fit(self, X, y, runs=runs)

    monkeypatch.setattr(FoldClean, "fit", spy)
    est = make_pipeline(FoldClean(), LogisticRegression())
    runs = samples["recording"].to_numpy()
    cv = ContiguousBlocks(n_blocks=3, gap=1.0)
    cross_validate(est, X, y, samples, cv, metrics=["balanced_accuracy"], n_permutations=0,
                   fit_params={"foldclean__runs": runs})
    folds = list(cv.split(X, y, groups=samples))
    assert len(seen) == len(folds) == 3
    for (rows, fold_runs), (train, _) in zip(seen, folds, strict=True):
        np.testing.assert_array_equal(rows, np.sort(train))
        np.testing.assert_array_equal(np.sort(fold_runs), np.sort(runs[train]))


def test_balanced_accuracy_rows_and_the_null_of_fixed_predictions():
    from sklearn.metrics import balanced_accuracy_score

    from neurodecode.evaluate.permutation import fixed_prediction_null

    rng = np.random.default_rng(0)
    y = rng.choice(["a", "b", "c"], 60)
    pred = np.where(rng.random(60) < 0.6, y, rng.choice(["a", "b", "c"], 60))
    rows = np.stack([y, rng.permutation(y), rng.permutation(y)])
    got = mt.balanced_accuracy_rows(rows, pred)
    assert got.shape == (3,)
    for row, value in zip(rows, got, strict=True):
        assert value == pytest.approx(balanced_accuracy_score(row, pred))
    assert float(mt.balanced_accuracy_rows(y, pred)) == pytest.approx(mt.balanced_accuracy(y, pred))
    # a constant predictor scores exactly 1 / n_classes under every permutation
    null = fixed_prediction_null(y, [np.full(60, "a")], 50, rng=1)
    assert null.shape == (50,) and np.allclose(null, 1 / 3)
    # a good predictor's null sits near chance, far below its score
    null = fixed_prediction_null(y, [pred, pred], 200, rng=2)
    assert abs(null.mean() - 1 / 3) < 0.05 and null.max() < mt.balanced_accuracy(y, pred)
