"""Samples from stores (trials, windows, time steps) and the leakage-safe split rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.data.samples import epochs, open_recordings, time_samples, window_table, windows
from neurodecode.data.splits import (
    ContiguousBlocks,
    LeakageError,
    LeaveOneGroupOut,
    StoredIntervals,
    WithinRecordingShuffle,
    check_split,
)
from neurodecode.schema import intervals_frame
from neurodecode.simulate import simulate_dataset
from neurodecode.store import recording_path, write_recording

from .conftest import small_recording


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    sim = simulate_dataset(
        n_subjects=2,
        modalities=("eeg", "spikes"),
        duration=60.0,
        n_runs=2,
        seed=5,
        eeg={"n_channels": 8},
    )
    for ds in sim.recordings:
        write_recording(ds, recording_path(root, "sim", ds))
    return root


def test_open_recordings_filters(sim_root):
    recs = open_recordings(sim_root, modality="eeg")
    assert len(recs) == 4
    assert [r.identity["run"] for r in recs] == ["01", "02", "01", "02"]
    assert len(open_recordings(sim_root, modality="eeg", subjects=["1"], runs=["2"])) == 1


def test_epochs_match_direct_slicing(sim_root):
    recs = open_recordings(sim_root, modality="eeg", subjects=["01"])
    s = epochs(recs, tmin=-0.1, tmax=0.5, labels=None, baseline=None)
    assert s.X.shape[1:] == (8, int(round(0.6 * 250)) + 1)
    assert len(s) == len(s.table) == len(s.y)
    row = s.table.iloc[3]
    rec = next(r for r in recs if r.path == row["recording"])
    first = int(round((row["onset"] - 0.1) * 250))
    direct = rec.ds["signal"].values[first : first + s.X.shape[2]].T
    np.testing.assert_array_equal(s.X[3], direct)
    assert set(s.table.columns) >= {
        "recording",
        "subject",
        "session",
        "run",
        "start",
        "stop",
        "onset",
        "label",
    }


def test_epochs_label_mapping_and_baseline(sim_root):
    recs = open_recordings(sim_root, modality="eeg")
    ev_labels = sorted(
        {lab for r in recs for lab in r.ds["event_label"].values if lab.startswith("stim/")}
    )
    mapping = {lab: ("a" if i % 2 else "b") for i, lab in enumerate(ev_labels)}
    s = epochs(recs, tmin=-0.2, tmax=0.4, labels=mapping, baseline=(-0.2, 0.0))
    assert set(s.y) == {"a", "b"}
    pre = s.X[:, :, s.times <= 0]
    np.testing.assert_allclose(pre.mean(axis=2), 0, atol=1e-10)


def test_epochs_reject_unknown_labels(sim_root):
    with pytest.raises(ValueError, match="no event matched"):
        epochs(open_recordings(sim_root, modality="eeg"), tmin=0, tmax=0.1, labels=["nope"])


def test_windows_with_behaviour_target(sim_root):
    recs = open_recordings(sim_root, modality="spikes", subjects=["01"])
    s = windows(recs, length=0.5, stride=0.25, target="position")
    table = window_table(recs, length=0.5, stride=0.25)
    assert len(s) == len(table)
    rec = recs[0]
    i = 7
    first = int(s.table["first"].iloc[i])
    np.testing.assert_array_equal(s.X[i], rec.ds["signal"].values[first : first + 50].T)
    end = first + 49
    assert s.y[i] == pytest.approx(float(rec.ds["behavior_position"].values[end]))


def test_windows_with_event_labels(sim_root):
    recs = open_recordings(sim_root, modality="eeg", subjects=["02"], runs=["01"])
    s = windows(recs, length=0.2, stride=0.2, target="events")
    assert len(s) > 0 and (s.y != "").all()
    assert set(s.y) <= set(recs[0].ds["event_label"].values)


def test_time_samples_with_delay(sim_root):
    recs = open_recordings(sim_root, modality="spikes", subjects=["01"], runs=["01"])
    s = time_samples(recs, target="events", delay=0.5)
    t = s.table["start"].to_numpy()
    ev = recs[0].ds
    onset = ev["event_onset"].values
    dur = ev["event_duration"].values
    labels = ev["event_label"].values
    k = 10
    active = [lab for o, d, lab in zip(onset, dur, labels, strict=True) if o <= t[k] - 0.5 < o + d]
    assert s.y[k] == active[-1]
    cont = time_samples(recs, target="speed")
    assert cont.X.shape == (recs[0].ds.sizes["time"], recs[0].ds.sizes["channel"])


def _table(n_rec=3, n=10, width=1.0):
    return pd.DataFrame(
        {
            "recording": np.repeat([f"r{i}" for i in range(n_rec)], n),
            "subject": np.repeat(["1", "1", "2"][:n_rec], n),
            "session": "1",
            "run": np.repeat([str(i) for i in range(n_rec)], n),
            "start": np.tile(np.arange(n) * width, n_rec),
            "stop": np.tile(np.arange(n) * width + width, n_rec),
        }
    )


def test_leave_one_group_out_never_mixes_recordings():
    t = _table()
    folds = list(LeaveOneGroupOut("run").split(groups=t))
    assert len(folds) == 3
    for train, test in folds:
        assert not set(t.iloc[train]["recording"]) & set(t.iloc[test]["recording"])
    assert LeaveOneGroupOut("subject").get_n_splits(groups=t) == 2


def test_random_windows_of_one_run_are_refused():
    t = _table()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(t))
    with pytest.raises(LeakageError, match="both train and test"):
        check_split(t, idx[:20], idx[20:])
    # Trials that do not overlap may be shuffled only when asked for explicitly ...
    folds = list(WithinRecordingShuffle(n_splits=3).split(groups=t))
    assert len(folds) == 3
    # ... and overlapping windows are refused even then.
    overlapping = _table(n_rec=1, n=10, width=2.0)
    overlapping["stop"] = overlapping["start"] + 3.0
    with pytest.raises(LeakageError, match="lies within"):
        list(WithinRecordingShuffle(n_splits=5, test_size=0.3).split(groups=overlapping))


def test_contiguous_blocks_keep_a_gap():
    t = _table(n_rec=2, n=100, width=0.5)
    for train, test in ContiguousBlocks(n_blocks=4, gap=2.0).split(groups=t):
        for rec in t["recording"].unique():
            a = t.iloc[train][t.iloc[train]["recording"] == rec]
            b = t.iloc[test][t.iloc[test]["recording"] == rec]
            dist = np.minimum(
                np.abs(a["start"].to_numpy()[:, None] - b["stop"].to_numpy()),
                np.abs(b["start"].to_numpy()[None, :] - a["stop"].to_numpy()[:, None]),
            )
            assert dist.min() >= 2.0 - 1e-9


def test_stored_intervals_split(sim_root):
    recs = open_recordings(sim_root, modality="spikes", subjects=["01"], runs=["01"])
    s = windows(recs, length=1.0, stride=1.0, target="position")
    iv = intervals_frame(recs[0].ds).assign(recording=recs[0].path)
    ((train, test),) = StoredIntervals(iv, "train", "test").split(groups=s.table)
    assert s.table.iloc[train]["stop"].max() <= s.table.iloc[test]["start"].min()
    assert len(train) > 3 * len(test) > 0


def test_sample_table_is_required():
    with pytest.raises(TypeError, match="sample table"):
        list(LeaveOneGroupOut().split(np.zeros((4, 2)), groups=np.arange(4)))


@pytest.fixture(scope="module")
def channel_sets(tmp_path_factory):
    """Three EEG stores: A, B (one channel of A missing, one extra) and C (A's, reversed)."""
    root = tmp_path_factory.mktemp("channel_sets")
    a = [f"EEG{i:03d}" for i in range(8)]
    b = [c for c in a if c != "EEG003"] + ["X1"]
    stores = {}
    for key, names, seed in (("A", a, 1), ("B", b, 2), ("C", a[::-1], 3)):
        ds = small_recording(n_channels=len(names), ch_names=names, seed=seed, run=key)
        stores[key] = root / f"{key}.zarr"
        write_recording(ds, stores[key])
    return stores


def test_different_channel_sets_are_named(channel_sets):
    recs = open_recordings([channel_sets["A"], channel_sets["B"]])
    a, b = (str(channel_sets[k]) for k in "AB")
    for gather in (
        lambda: epochs(recs, tmin=0.0, tmax=0.2),
        lambda: windows(recs, length=1.0, stride=1.0),
        lambda: time_samples(recs, target="speed"),
    ):
        with pytest.raises(ValueError) as err:
            gather()
        msg = str(err.value)
        assert msg.startswith("recordings have different channel sets:")
        assert f"{b} lacks [EEG003] that {a} has" in msg
        assert f"{b} has [X1] that {a} lacks" in msg
        assert "pass channels='common' to keep the 7 channels common to all" in msg


def test_common_channels_kept_and_recorded(channel_sets):
    recs = open_recordings([channel_sets["A"], channel_sets["B"]])
    s = epochs(recs, tmin=0.0, tmax=0.2, channels="common")
    common = [f"EEG{i:03d}" for i in range(8) if i != 3]
    assert s.ch_names == common and s.ch_types == ["eeg"] * 7
    row = int(np.flatnonzero(s.table["recording"] == str(channel_sets["B"]))[0])
    rec = recs[1]
    first = int(round(s.table["onset"].iloc[row] * rec.sfreq))
    direct = rec.ds["signal"].sel(channel=common).values[first : first + s.X.shape[2]].T
    np.testing.assert_array_equal(s.X[row], direct)
    (step,) = s.table.attrs["history"]
    assert step["step"] == "neurodecode.data.samples.common_channels"
    assert step["params"] == {
        "kept": 7,
        "dropped": {str(channel_sets["A"]): ["EEG003"], str(channel_sets["B"]): ["X1"]},
    }
    assert s.select(np.arange(2)).table.attrs["history"] == [step]
    assert s.select(np.arange(2)).ch_types == s.ch_types
    with pytest.raises(ValueError, match="channels must be 'strict' or 'common'"):
        epochs(recs, tmin=0.0, tmax=0.2, channels="union")


def test_same_channels_in_another_order_follow_names(channel_sets):
    recs = open_recordings([channel_sets["A"], channel_sets["C"]])
    s = epochs(recs, tmin=0.0, tmax=0.2)
    assert s.ch_names == [f"EEG{i:03d}" for i in range(8)]
    assert s.table.attrs["history"] == []
    row = int(np.flatnonzero(s.table["recording"] == str(channel_sets["C"]))[0])
    first = int(round(s.table["onset"].iloc[row] * recs[1].sfreq))
    direct = recs[1].ds["signal"].sel(channel=s.ch_names).values[first : first + s.X.shape[2]]
    np.testing.assert_array_equal(s.X[row], direct.T)


# --------------------------------------------------------------------------- recording ids


def _constant_recording(subject: str, value: float, **kwargs):
    """An in-memory EEG recording whose every sample is ``value`` (20 one-second windows)."""
    from neurodecode.schema import make_recording

    return make_recording(np.full((200, 2), value, np.float32), sfreq=10.0, ch_names=["a", "b"],
                          ch_types="eeg", units="V", modality="eeg", subject=subject,
                          task="t", **kwargs)


def test_in_memory_subjects_keep_their_own_rows():
    """Two in-memory recordings (no source path) used to share the id "" and mix rows."""
    recs = open_recordings([_constant_recording("01", 1.0), _constant_recording("02", 2.0)])
    assert [r.id for r in recs] == ["memory:sub-01_ses-01_task-t_run-01_eeg",
                                    "memory:sub-02_ses-01_task-t_run-01_eeg"]
    assert [r.path for r in recs] == ["", ""]
    s = windows(recs, length=1.0, stride=1.0)
    assert len(s) == 40
    for subject, value in (("01", 1.0), ("02", 2.0)):
        rows = (s.table["subject"] == subject).to_numpy()
        assert rows.sum() == 20
        np.testing.assert_array_equal(s.X[rows], value)
        assert set(s.table["recording"][rows]) == {f"memory:sub-{subject}_ses-01_task-t_run-01_eeg"}
    by_subject = s.table["subject"].to_numpy() == "01"
    check_split(s.table, np.flatnonzero(by_subject), np.flatnonzero(~by_subject))
    with pytest.raises(LeakageError, match=r"^2 recording\(s\) have samples in both"):
        check_split(s.table, np.arange(0, 40, 2), np.arange(1, 40, 2))
    assert LeaveOneGroupOut("subject").get_n_splits(groups=s.table) == 2


def test_duplicate_ids_are_refused(tmp_path, monkeypatch):
    a, b = _constant_recording("01", 1.0), _constant_recording("01", 2.0)
    with pytest.raises(ValueError, match=r"same id would mix their samples: "
                                         r"memory:sub-01_ses-01_task-t_run-01_eeg \(2x\)"):
        open_recordings([a, b])
    # another dataset attribute makes them distinct
    recs = open_recordings([a, _constant_recording("01", 2.0, extra_attrs={"dataset": "other"})])
    assert sorted(r.id for r in recs) == ["memory:other/sub-01_ses-01_task-t_run-01_eeg",
                                          "memory:sub-01_ses-01_task-t_run-01_eeg"]
    # a store listed twice, even spelled differently
    store = tmp_path / "a.zarr"
    write_recording(a, store)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"{store} \(2x\)"):
        open_recordings([store, "a.zarr"])
    # gathering functions check the recordings they are given too
    rec = open_recordings([store])[0]
    for gather in (lambda: windows([rec, rec], length=1.0, stride=1.0),
                   lambda: time_samples([rec, rec], target="speed"),
                   lambda: window_table([rec, rec], length=1.0, stride=1.0)):
        with pytest.raises(ValueError, match="same id"):
            gather()


def test_recordings_without_identity_get_generated_ids():
    import xarray as xr

    bare = [xr.Dataset({"signal": (("time", "channel"), np.zeros((10, 1), np.float32))},
                       attrs={"sfreq": 10.0, "modality": "eeg"}) for _ in range(2)]
    ids = [r.id for r in open_recordings(bare)]
    assert all(i.startswith("memory:") and len(i) == len("memory:") + 12 for i in ids)
    assert ids[0] != ids[1]
