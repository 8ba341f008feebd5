"""Cross-subject few-shot protocol on the real EEG recordings (``benchmarks/adapters_real.py``).

The folds must never show a test trial to ``adapt`` or ``pretrain``, adapt trials must come
before test trials in time, the permutation chance of a fixed classifier must sit at 1/2 for
two classes, and each peer must run on a fold without reading the other test trials.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "adapters_real.py"

pytestmark = pytest.mark.realdata


def _bench():
    spec = importlib.util.spec_from_file_location("adapters_real", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("adapters_real", module)
    spec.loader.exec_module(module)
    return sys.modules["adapters_real"]


ar = _bench()


@pytest.fixture(scope="module")
def work(sample_data, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters_real")


@pytest.fixture(scope="module")
def tasks(sample_data, work):
    return ar.load_tasks(work / "stores", sample_data)


def _keys(s) -> set[tuple[str, float]]:
    return set(zip(s.table["recording"], s.table["onset"].round(6), strict=True))


def test_tasks_through_the_data_path(tasks):
    assert list(tasks) == list(ar.TASKS)
    lr = tasks["eegbci_left_right"]
    assert sorted(lr) == ["001", "002", "003", "004"]
    for s in lr.values():
        assert s.X.shape == (45, 64, 161)
        assert set(s.y) == {"left", "right"}
        assert s.table.groupby("run").size().to_dict() == {"04": 15, "08": 15, "12": 15}
        assert np.allclose(s.times[[0, -1]], [1.0, 2.0])
    assert sorted(tasks["eegbci_hands_feet"]) == ["001", "002", "003"]
    assert {v for s in tasks["eegbci_hands_feet"].values() for v in s.y} == {"hands", "feet"}
    assert sorted(tasks["muse_n170"], key=int) == ["1", "2", "3", "11"]
    assert len(tasks["muse_p300"]) == 5
    for name in ("muse_n170", "muse_p300"):
        for s in tasks[name].values():
            assert s.ch_names == ["TP9", "AF7", "AF8", "TP10"]
            assert s.X.shape[1:] == (4, 58)
    for subjects in tasks.values():
        for s in subjects.values():
            # time order: by run, then onset; the trial column numbers it
            order = list(zip(s.table["run"], s.table["onset"], strict=True))
            assert order == sorted(order)
            assert s.table["trial"].tolist() == list(range(len(s)))


@pytest.mark.parametrize("common_test", [False, True])
def test_folds_keep_test_trials_out_of_training(tasks, common_test):
    for task in ar.TASKS:
        fs = ar.folds(tasks, task, common_test=common_test)
        subjects = tasks[task]
        assert {f.new_subject for f in fs} == set(subjects)
        for f in fs:
            test, adapt = _keys(f.test), _keys(f.adapt)
            pretrain = set().union(*(_keys(s) for s in f.pretrain.values()))
            assert test and not test & adapt and not test & pretrain
            assert f.new_subject not in f.pretrain
            assert len(f.pretrain) == len(subjects) - 1
            assert set(f.test.table["subject"]) == {f.new_subject}
            assert f.n_adapt == len(f.adapt)
            assert sum(map(len, f.pretrain.values())) == f.n_pretrain
            if not f.n_adapt:
                assert f.budget == "0 trials"
                if not common_test:
                    assert len(f.test) == len(subjects[f.new_subject])
                continue
            assert set(f.adapt.table["subject"]) == {f.new_subject}
            if task.startswith("eegbci"):
                # whole runs adapt, the other runs test, earlier runs first
                assert not set(f.adapt.table["run"]) & set(f.test.table["run"])
                assert f.adapt.table["run"].max() < f.test.table["run"].min()
                assert f.n_adapt == 15 * int(f.budget.split()[0])
            else:
                assert f.budget == f"{f.n_adapt} trials"
                assert f.adapt.table["trial"].tolist() == list(range(f.n_adapt))
                assert f.test.table["trial"].min() >= f.n_adapt + 1  # a gap of >= 1 trial
                assert f.adapt.table["stop"].max() < f.test.table["start"].min()
        if common_test:
            for subject in subjects:
                tests = [_keys(f.test) for f in fs if f.new_subject == subject]
                assert all(t == tests[-1] for t in tests)


def test_muse_budgets_and_gap(tasks):
    fs = ar.folds(tasks, "muse_n170", budgets=(10, 30), gap=3, zero_shot=False)
    assert [f.budget for f in fs[:2]] == ["10 trials", "30 trials"]
    assert all(f.test.table["trial"].min() >= f.n_adapt + 3 for f in fs)
    with pytest.raises(ValueError, match="gap"):
        ar.folds(tasks, "muse_n170", gap=0)


def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.choice(["a", "b", "c"], 60)
    pred = rng.choice(["a", "b", "c"], 60)
    got = ar.balanced_accuracy(y, pred, np.unique(y))
    assert float(got) == pytest.approx(balanced_accuracy_score(y, pred))
    rows = np.stack([y, np.roll(y, 1)])
    both = ar.balanced_accuracy(rows, pred, np.unique(y))
    assert both[1] == pytest.approx(balanced_accuracy_score(rows[1], pred))


def test_permutation_chance_of_fixed_predictions(tasks):
    fs = [f for f in ar.folds(tasks, "eegbci_left_right") if f.budget == "1 run"]

    def guess(fold, seed):  # a classifier that ignores the data
        return np.random.default_rng([seed, int(fold.new_subject)]).choice(
            ["left", "right"], len(fold.test)
        )

    def oracle(fold, seed):  # reads the test labels: the test must catch it
        return fold.test.y

    def constant(fold, seed):
        return np.full(len(fold.test), "left")

    rows = ar.evaluate("guess", guess, fs, seeds=(0, 1), n_permutations=500)
    subject = [r for r in rows if r["level"] == "subject"]
    mean = [r for r in rows if r["level"] == "mean"]
    assert len(subject) == 4 and len(mean) == 1
    for r in rows:
        assert r["chance"] == pytest.approx(0.5, abs=0.02)
        assert r["chance"] < r["chance_p95"] < 0.75
        assert 0 < r["p_value"] <= 1
        assert r["metric"] == "balanced_accuracy"
    assert all(r["n_train"] == 15 + 135 and r["n_test"] == 30 for r in subject)
    assert mean[0]["n_subjects"] == 4
    assert mean[0]["chance_p95"] < max(r["chance_p95"] for r in subject)  # mean of 4 nulls

    best = ar.evaluate("oracle", oracle, fs, seeds=(0,), n_permutations=200)
    assert all(r["score"] == 1.0 for r in best)
    assert all(r["p_value"] == pytest.approx(1 / 201) for r in best)

    flat = ar.evaluate("constant", constant, fs, seeds=(0,), n_permutations=100)
    assert all(r["score"] == 0.5 and r["chance"] == 0.5 and r["p_value"] == 1.0 for r in flat)


def test_evaluate_skips_folds_a_method_cannot_run(tasks):
    fs = ar.folds(tasks, "eegbci_left_right")
    rows = ar.evaluate("csp_lda/within", ar.CSPLDA("within"), fs, seeds=(0, 1, 2),
                       n_permutations=50)  # fmt: skip
    budgets = {r["budget"] for r in rows}
    assert budgets == {"1 run", "2 runs"}  # nothing to train on at 0 trials
    assert all(r["seed_spread"] < 1e-12 for r in rows)  # deterministic: run once
    assert all(r["n_train"] == r["n_adapt"] for r in rows if r["level"] == "subject")


def _subset(fold, n):
    return ar.Fold(fold.task, fold.new_subject, fold.pretrain, fold.adapt,
                   fold.test.select(np.arange(n)), fold.budget, fold.n_adapt)  # fmt: skip


@pytest.mark.parametrize(
    "task, make",
    [
        ("eegbci_left_right", lambda: ar.CSPLDA("within")),
        ("muse_p300", lambda: ar.ERPLDA("pooled")),
        ("muse_n170", lambda: ar.TangentSpaceLR("recentered")),
        ("eegbci_left_right", lambda: ar.TangentSpaceLR("recentered_pooled")),
        ("muse_p300", lambda: ar.DeepNet("shallow_fbcspnet", ar.QUICK_TRAIN)),
    ],
    ids=["csp_lda", "erp_lda", "ts_recentered", "ts_recentered_pooled", "shallow_fbcspnet"],
)
def test_peer_runs_on_one_fold_without_reading_other_test_trials(tasks, task, make):
    fold = next(f for f in ar.folds(tasks, task) if f.n_adapt)
    method = make()
    pred = method(fold, 0)
    assert pred.shape == (len(fold.test),)
    assert set(pred) <= set(fold.classes)
    rows = ar.evaluate("peer", method, [fold], seeds=(0,), n_permutations=100)
    assert np.isfinite(rows[0]["score"]) and 0.0 <= rows[0]["score"] <= 1.0
    # each test trial's prediction depends on the training data and on itself only
    np.testing.assert_array_equal(method(_subset(fold, 10), 0), pred[:10])


def test_recentering_needs_adapt_trials(tasks):
    zero = next(f for f in ar.folds(tasks, "muse_p300") if f.n_adapt == 0)
    with pytest.raises(ar.NotApplicable):
        ar.TangentSpaceLR("recentered")(zero, 0)
    assert ar.evaluate("rc", ar.TangentSpaceLR("recentered"), [zero], n_permutations=10) == []


def test_deep_net_zero_shot_and_fine_tune_on_muse(tasks):
    net = ar.DeepNet("eegnet", ar.QUICK_TRAIN)
    fs = [f for f in ar.folds(tasks, "muse_n170") if f.new_subject == "2"][:2]
    rows = ar.evaluate("eegnet", net, fs, seeds=(0, 1), n_permutations=100)
    subject = [r for r in rows if r["level"] == "subject"]
    assert [r["budget"] for r in subject] == ["0 trials", "20 trials"]
    assert all(np.isfinite(r["score"]) and len(r["scores"]) == 2 for r in subject)
    assert len(net._cache) == 2  # one pretrained model per (task, new subject, seed)


def test_within_subject_anchors(tasks):
    rows = ar.within_subject_rows(tasks, n_permutations=0)
    assert [(r["dataset"], r["subject"]) for r in rows] == [
        ("eegbci_left_right", s) for s in ("001", "002", "003", "004")
    ] + [("eegbci_hands_feet", s) for s in ("001", "002", "003")]
    assert all(r["published"] is not None for r in rows)
    s001 = next(r for r in rows if r["dataset"] == "eegbci_hands_feet" and r["subject"] == "001")
    assert s001["accuracy"] > 0.85  # MNE's example subject, as in test_real_decoding.py


@pytest.mark.slow
def test_main_writes_rows(sample_data, work, tmp_path):
    out = tmp_path / "rows.json"
    rows = ar.main(["--quick", "--work", str(work), "--data", str(sample_data), "--methods",
                    "csp_lda", "--permutations", "20", "--json", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["quick"] and saved["seeds"] == [0]
    assert len(saved["rows"]) == len(rows) > 0
    assert {r["method"] for r in rows} == {"csp_lda/within", "csp_lda/loso", "csp_lda/pooled"}
