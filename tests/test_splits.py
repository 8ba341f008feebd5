"""Split checks: vectorised interval arithmetic, modality gaps, whole-run cleaning warnings."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile

from neurodecode.data.samples import open_recordings, time_samples, window_table
from neurodecode.data.splits import (
    ContiguousBlocks,
    LeakageError,
    LeaveOneGroupOut,
    SplitChecker,
    StoredIntervals,
    TransductiveCleaningWarning,
    WithinRecordingShuffle,
    check_split,
    checked_folds,
    default_gap,
    resolve_gap,
)
from neurodecode.ingest.calcium import read_tiff_movie
from neurodecode.ingest.fmri import read_nifti
from neurodecode.schema import intervals_frame
from neurodecode.simulate import simulate_calcium, simulate_fmri, simulate_latent
from neurodecode.store import write_recording

# --------------------------------------------------------------------------- interval arithmetic


def _brute_near(table: pd.DataFrame, train: np.ndarray, test: np.ndarray, gap: float
                ) -> np.ndarray:
    """For each training row: is any test row of its recording within ``gap`` (all pairs)?"""
    a, b = table.iloc[train], table.iloc[test]
    same = a["recording"].to_numpy()[:, None] == b["recording"].to_numpy()[None, :]
    close = ((b["start"].to_numpy()[None, :] < a["stop"].to_numpy()[:, None] + gap)
             & (b["stop"].to_numpy()[None, :] > a["start"].to_numpy()[:, None] - gap))
    return (same & close).any(axis=1)


def _random_table(rng: np.random.Generator, n: int, n_rec: int, span: int) -> pd.DataFrame:
    """Intervals on an integer grid (many exact ties at the gap), of varied and nested lengths."""
    start = rng.integers(0, span, n).astype(float)
    return pd.DataFrame({
        "recording": rng.choice([f"r{i}" for i in range(n_rec)], n),
        "subject": "01", "session": "01", "run": "01",
        "start": start,
        "stop": start + rng.integers(1, 8, n),
    })


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_check_agrees_with_all_pairs(seed):
    rng = np.random.default_rng(seed)
    outcomes, ties = [], 0
    for gap in (0.0, 1.0, 2.0, 3.5):
        for _ in range(15):
            table = _random_table(rng, int(rng.integers(5, 120)), 3, span=400)
            side = rng.random(len(table))
            train, test = np.flatnonzero(side < 0.85), np.flatnonzero(side >= 0.95)
            expected = _brute_near(table, train, test, gap)
            np.testing.assert_array_equal(SplitChecker(table).near(train, test, gap), expected)
            if expected.any():
                with pytest.raises(LeakageError, match="lies within"):
                    check_split(table, train, test, within_recording=True, gap=gap)
            else:
                check_split(table, train, test, within_recording=True, gap=gap)
            outcomes.append(bool(expected.any()))
            a, b = table.iloc[train], table.iloc[test]
            same = a["recording"].to_numpy()[:, None] == b["recording"].to_numpy()[None, :]
            dist = np.maximum(b["start"].to_numpy()[None, :] - a["stop"].to_numpy()[:, None],
                              a["start"].to_numpy()[:, None] - b["stop"].to_numpy()[None, :])
            ties += int((same & (dist == gap)).sum())
    assert any(outcomes) and not all(outcomes)  # both outcomes were exercised ...
    assert ties > 0  # ... and distances of exactly the gap (allowed), where off-by-ones hide


def test_boundaries_are_exact():
    """Touching intervals do not overlap; a distance of exactly ``gap`` is allowed."""
    table = pd.DataFrame({"recording": "r", "subject": "1", "session": "1", "run": "1",
                          "start": [0.0, 2.0, 5.0], "stop": [2.0, 4.0, 7.0]})
    checker = SplitChecker(table)
    np.testing.assert_array_equal(checker.near([0, 2], [1], 0.0), [False, False])
    np.testing.assert_array_equal(checker.near([0, 2], [1], 1.0), [True, False])  # 0 and 1 s
    np.testing.assert_array_equal(checker.near([0, 2], [1], 1.5), [True, True])
    check_split(table, [0], [2], within_recording=True, gap=3.0)
    with pytest.raises(LeakageError, match=r"r: training sample \[0, 2\) s lies within 3.5 s of "
                                           r"test sample \[5, 7\) s"):
        check_split(table, [0], [2], within_recording=True, gap=3.5)
    with pytest.raises(LeakageError, match="same samples"):
        check_split(table, [0, 1], [1])
    with pytest.raises(LeakageError, match=r"1 recording\(s\) have samples in both train and test "
                                           r"\(e.g. r\)"):
        check_split(table, [0], [2])


def test_checked_folds_pass_good_folds_and_stop_at_a_leaky_one():
    table = _random_table(np.random.default_rng(0), 50, 5, span=60)
    rec = table["recording"].to_numpy()
    good = [(np.flatnonzero(rec != r), np.flatnonzero(rec == r)) for r in ("r0", "r1")]
    out = list(checked_folds(table, good))
    assert [len(t) for _, t in out] == [len(t) for _, t in good]
    leaky = [*good, (np.arange(0, 50, 2), np.arange(1, 50, 2))]
    with pytest.raises(LeakageError, match="both train and test"):
        list(checked_folds(table, leaky))


# --------------------------------------------------------------------------- default gaps


@pytest.fixture(scope="module")
def fmri_store(tmp_path_factory):
    """A simulated 120-volume fMRI run (TR 2 s), written to a store."""
    ds = simulate_fmri(simulate_latent(240.0, seed=2), seed=2, n_voxels=30)
    path = tmp_path_factory.mktemp("fmri") / "sub-01_fmri.zarr"
    write_recording(ds, path)
    return path


def test_fmri_default_gap_and_zero_gap_refused(fmri_store):
    recs = open_recordings([fmri_store])
    s = time_samples(recs, target="speed")
    assert set(s.table["modality"]) == {"fmri"}
    assert default_gap(s.table) == pytest.approx(2.0 + 12.0)  # one volume + the BOLD margin
    folds = list(ContiguousBlocks(n_blocks=4).split(groups=s.table))
    assert len(folds) == 4
    start, stop = s.table["start"].to_numpy(), s.table["stop"].to_numpy()
    for train, test in folds:
        # distance from every training volume to every test volume
        dist = np.maximum(start[test][None, :] - stop[train][:, None],
                          start[train][:, None] - stop[test][None, :])
        assert dist.min() >= 12.0
        assert len(train) + len(test) < len(s)  # volumes next to the test block were dropped
    for rule in (ContiguousBlocks(n_blocks=4, gap=0), ContiguousBlocks(n_blocks=4, gap=6.0),
                 StoredIntervals(intervals_frame(recs[0].ds).assign(recording=recs[0].id), gap=0),
                 WithinRecordingShuffle()):
        with pytest.raises(ValueError, match=r"fmri samples need a gap of at least 12 s .*BOLD"):
            list(rule.split(groups=s.table))
    assert resolve_gap(s.table, 12.0) == 12.0
    # across runs no gap is needed: leave-one-run-out ignores it
    assert LeaveOneGroupOut("run").resolve_gap(s.table) == 0.0


def test_calcium_and_eeg_margins():
    ca = simulate_calcium(simulate_latent(60.0, seed=1), seed=1, n_rois=4)
    s = time_samples(open_recordings([ca]), target="speed")
    assert default_gap(s.table) == pytest.approx(1 / 30 + 2.0)
    with pytest.raises(ValueError, match="calcium samples need a gap of at least 2 s"):
        resolve_gap(s.table, 1.0)
    eeg = pd.DataFrame({"recording": "r", "subject": "1", "session": "1", "run": "1",
                        "modality": "eeg", "start": [0.0, 1.0], "stop": [1.5, 2.5]})
    assert default_gap(eeg) == pytest.approx(2.0)  # 1.5 s window + 0.5 s
    assert resolve_gap(eeg, 0.0) == 0.0  # fast signals take any explicit gap
    no_modality = eeg.drop(columns="modality")
    assert default_gap(no_modality) == pytest.approx(1.5)


# --------------------------------------------------------------------------- whole-run cleaning


def _nifti(path, n_vol=60, seed=0):
    rng = np.random.default_rng(seed)
    data = (1000 + rng.standard_normal((3, 3, 2, n_vol)).cumsum(axis=3)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, path)
    return path


def test_whole_run_cleaning_is_recorded_and_warned_once(tmp_path):
    src = _nifti(tmp_path / "sub-01_task-x_bold.nii.gz")
    raw = read_nifti(src)
    cleaned = read_nifti(src, detrend=True, standardize=True, high_pass=0.02, run="02")
    assert "scope" not in raw.attrs["history"][0]
    assert cleaned.attrs["history"][0]["scope"] == "recording"
    stores = []
    for ds in (raw, cleaned):
        stores.append(tmp_path / f"run-{ds.attrs['run']}.zarr")
        write_recording(ds, stores[-1])
    recs = open_recordings(stores)
    table = window_table(recs, length=2.0, stride=2.0)
    steps = dict(zip(table["run"], table["whole_run_steps"], strict=False))
    assert steps[recs[0].identity["run"]] == ""
    assert steps["02"] == ("neurodecode.ingest.fmri.read_nifti"
                           "(detrend, standardize, high_pass=0.02)")
    with pytest.warns(TransductiveCleaningWarning) as caught:
        folds = list(ContiguousBlocks(n_blocks=3).split(groups=table))
    assert len(folds) == 3
    assert len(caught) == 1  # once for the whole split, not once per fold
    message = str(caught[0].message)
    assert f"{stores[1]}: neurodecode.ingest.fmri.read_nifti(detrend" in message
    assert "FoldClean" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransductiveCleaningWarning)
        list(LeaveOneGroupOut("run").split(groups=table))  # whole runs held out: no warning
        raw_only = table[table["whole_run_steps"] == ""].reset_index(drop=True)
        list(ContiguousBlocks(n_blocks=3).split(groups=raw_only))


def test_dff_at_ingest_is_recording_scope(tmp_path):
    rng = np.random.default_rng(0)
    movie = (100 + 10 * rng.random((40, 16, 16))).astype(np.float32)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie)
    kw = dict(fs=10.0, roi_method="grid", grid_px=8, keep_movie=False)
    with_dff = read_tiff_movie(path, dff_window_s=2.0, **kw)
    without = read_tiff_movie(path, dff=None, **kw)
    assert with_dff.attrs["history"][0]["scope"] == "recording"
    assert "scope" not in without.attrs["history"][0]
    rec_steps = open_recordings([with_dff])[0].whole_run_steps
    assert rec_steps == ("neurodecode.ingest.calcium.read_tiff_movie"
                         "(dff=percentile, dff_window_s=2.0)")
