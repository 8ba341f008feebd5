"""Codebook pretraining on the real EEG (``benchmarks/codebook_real.py``, quick protocol).

The quick real part runs on the sample recordings: every row has the schema that
``benchmarks/codebook.py`` merges, scores and chance levels are balanced accuracies, the
pretraining never sees an evaluated subject, and the folds never share a trial between training
and test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "codebook_real.py"

pytestmark = pytest.mark.realdata


def _bench():
    spec = importlib.util.spec_from_file_location("codebook_real", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("codebook_real", module)
    spec.loader.exec_module(module)
    return sys.modules["codebook_real"]


cr = _bench()

ROW_KEYS = {"dataset", "variant", "fraction", "metric", "score", "chance", "seed_spread",
            "n_seeds", "scores", "folds"}


@pytest.fixture(scope="module")
def work(sample_data, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("codebook_real")


@pytest.fixture(scope="module")
def result(sample_data, work):
    return cr.real_part(True, [0], sample_data, work=work, n_permutations=200, verbose=False)


@pytest.fixture(scope="module")
def real(result, sample_data, work):
    return cr.load(work / "stores", sample_data, quick=True)


def test_quick_rows(result):
    assert result["skipped"] is None and result["quick"] is True
    json.dumps(result)  # plain JSON types: benchmarks/codebook.py writes it without a default
    rows = result["few_shot"]
    assert {r["variant"] for r in rows} == set(cr.VARIANTS)
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["dataset"] == "eegbci_left_right_within" and r["fraction"] == 1.0
        assert r["metric"] == "balanced_accuracy" and r["n_seeds"] == 1
        assert 0.0 <= r["score"] <= 1.0 and 0.0 <= r["chance"] <= 1.0
        assert r["chance"] == pytest.approx(0.5, abs=0.1)  # a fixed classifier, two classes
        assert len(r["folds"]) == 6  # 2 subjects x 3 runs
        assert all(0.0 <= f["score"] <= 1.0 for f in r["folds"])
        assert r["score"] == pytest.approx(np.mean([f["score"] for f in r["folds"]]), abs=1e-3)
        assert r["seed_spread"] == 0.0  # one seed


def test_pretraining_never_sees_an_evaluated_subject(result):
    pre = result["pretraining"]
    (run,) = pre["runs"]
    evaluated = {f["fold"].split()[0] for r in result["few_shot"] for f in r["folds"]}
    assert evaluated == {"eegbci001", "eegbci002"}
    assert not evaluated & set(run["subjects"]) and evaluated <= set(run["excluded"])
    assert run["windows"]["eegbci"] > 0
    assert 1.0 <= run["perplexity"] <= run["codebook_size"]
    assert 0.0 <= run["dead_fraction"] <= 1.0
    assert math.isfinite(run["reconstruction_r2"]) and run["reconstruction_r2"] <= 1.0
    assert run["segments_per_s"]["tokenizer"] > 0 and run["segments_per_s"]["masked"] > 0
    assert pre["summary"]["reconstruction_r2"]["mean"] == run["reconstruction_r2"]


def test_prepared_recordings(real):
    assert {r.sfreq for r in real.recordings} == {cr.SFREQ}
    for s in real.tasks["eegbci_left_right"].values():
        assert s.X.shape == (45, 64, 100) and set(s.y) == {"left", "right"}
    for t in real.windows.values():
        assert t.n_times == 100 and np.isfinite(t.positions).all()


def _keys(s) -> set[tuple[str, float]]:
    return set(zip(s.table["recording"], s.table["onset"].round(6), strict=True))


def test_folds_keep_training_and_test_apart(real):
    subjects = real.tasks["eegbci_left_right"]
    within = cr.within_folds("eegbci_left_right", subjects, "lr_within")
    assert len(within) == 12
    for f in within:
        assert len(f.adapt) == 30 and len(f.test) == 15
        assert not _keys(f.adapt) & _keys(f.test)
        assert f.new_subject not in f.pretrain
    cross = cr.cross_folds(subjects, "lr_cross")
    assert [f.n_adapt for f in cross[:3]] == [2, 4, 15]
    for f in cross:
        assert not _keys(f.adapt) & _keys(f.test)
        assert set(f.adapt.table["run"]) == {"04"}  # the first run calibrates
        assert set(f.test.table["run"]) == {"08", "12"}  # the later runs test
        assert f.new_subject not in f.pretrain
    plain = cr.loso_folds(subjects, "lr_loso", calibrate=False)
    assert all(f.n_adapt == 0 for f in plain)
    calibrated = cr.loso_folds(subjects, "lr_loso", calibrate=True)
    assert all(_keys(f.adapt) == _keys(f.test) for f in calibrated)


def test_positions_from_site_names():
    pos = cr.standard_positions(["Fc5.", "EEG Fp1", "TP9"])
    assert pos.shape == (3, 3) and np.isfinite(pos).all()
    assert np.allclose(pos[0], cr.standard_positions(["FC5"])[0])
    with pytest.raises(ValueError, match=r"S001R04.*'ECG ECG'"):
        cr.standard_positions(["Fp1", "ECG ECG"], "S001R04")


def test_skips_without_data(tmp_path):
    out = cr.real_part(True, [0], tmp_path / "missing", work=tmp_path)
    assert out["few_shot"] == [] and "no sample data" in out["skipped"]
    assert str(tmp_path / "missing") in out["skipped"]
