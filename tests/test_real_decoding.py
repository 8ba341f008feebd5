"""Classical baselines on real recordings, through stores, splits and the CV runner."""

from __future__ import annotations

import os

import pytest

from neurodecode.catalog import load_catalog
from neurodecode.data.samples import epochs, open_recordings, time_samples
from neurodecode.data.splits import LeaveOneGroupOut, WithinRecordingShuffle
from neurodecode.evaluate import baselines, cross_validate
from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")


@pytest.fixture(scope="module")
def stores(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    catalog = load_catalog()
    tasks = [
        t
        for name in ("eegbci_s001", "haxby2001_sub001_slice")
        for t in plan_entry(catalog[name], out, sample_data)
    ]
    results = run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
    assert all(r.status == "created" for r in results), [r.error for r in results]
    return out


def test_eegbci_csp_lda_reproduces_mne_example(stores):
    """MNE's motor imagery example: 0.933 accuracy, chance 0.533 (ShuffleSplit 10x, 20 %)."""
    recs = open_recordings(stores / "eegbci_s001", runs=["06", "10", "14"])
    s = epochs(
        recs,
        tmin=1.0,
        tmax=2.0,
        l_freq=7.0,
        h_freq=30.0,
        labels={"imagine_both_fists": "hands", "imagine_both_feet": "feet"},
    )
    assert s.X.shape == (45, 64, 161)
    majority = max((s.y == "hands").mean(), (s.y == "feet").mean())
    assert majority == pytest.approx(0.533, abs=1e-3)
    published = cross_validate(
        baselines.csp_lda(4),
        s.X,
        s.y,
        s.table,
        WithinRecordingShuffle(n_splits=10, test_size=0.2, random_state=42),
        metrics=("accuracy",),
        n_permutations=0,
    )
    assert published.summary["mean"].iloc[0] == pytest.approx(0.933, abs=0.01)
    loro = cross_validate(
        baselines.csp_lda(4),
        s.X,
        s.y,
        s.table,
        LeaveOneGroupOut("run"),
        metrics=("accuracy",),
        n_permutations=0,
    )
    assert loro.summary["mean"].iloc[0] > 0.85


def test_haxby_face_vs_house_leave_one_run_out(stores):
    recs = open_recordings(stores / "haxby2001_sub001_slice")
    s = time_samples(recs, target="events", delay=5.0, labels=["face", "house"])
    res = cross_validate(
        baselines.lda(),
        s.X,
        s.y,
        s.table,
        LeaveOneGroupOut("run"),
        metrics=("balanced_accuracy",),
        n_permutations=10,
    )
    row = res.summary.iloc[0]
    assert row["mean"] > 0.75
    assert row["chance"] < 0.65 and row["p_value"] <= 1 / 11 + 1e-9
