"""Spike readers: real tetrode and BCI recordings, synthetic NumPy/MATLAB/NWB files, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from neurodecode.ingest import IngestError
from neurodecode.ingest.spikes import (
    load_video_position_tracking,
    read_golub_bci,
    read_matclust,
    read_nelpy_linear_track,
    read_nwb_units,
    read_spike_times,
)
from neurodecode.schema import SchemaError, events_frame, validate
from neurodecode.store import open_recording, write_recording

NELPY = "spikes/nelpy_linear_track"
GOLUB = "spikes/golub_bci/exampleData.mat"
_FIELDS = [("time", "<u4"), ("xloc", "<u2"), ("yloc", "<u2"), ("xloc2", "<u2"), ("yloc2", "<u2")]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def histogram_counts(ds) -> np.ndarray:
    """Bin the stored exact spike times per unit with np.histogram."""
    n_times, n_units = ds.sizes["time"], ds.sizes["channel"]
    edges = np.arange(n_times + 1) * ds.attrs["bin_size"]
    st, su = ds["spike_time"].values, ds["spike_unit"].values
    return np.stack([np.histogram(st[su == u], bins=edges)[0] for u in range(n_units)], axis=1)


def assert_rejected(read, bad: Path, problem: str, store: Path, error=IngestError) -> None:
    """Reading ``bad`` (and writing the result) fails naming the file and the problem."""
    with pytest.raises(error) as info:
        write_recording(read(), store)
    message = str(info.value)
    assert str(bad) in message, message
    assert problem in message, message
    assert not store.exists()
    assert not list(store.parent.glob(f".{store.name}.partial-*"))


def write_position_file(path: Path, ticks, xy, *, clockrate: int = 30000,
                        pixel_scale: float = 0) -> Path:
    header = (
        "<Start settings>\nthreshold: 199\ndark: 0\n"
        f"clockrate: {clockrate}\ncamera resolution: 640x480\npixel scale: {pixel_scale:g} pix/cm\n"
        "Fields: <time uint32><xloc uint16><yloc uint16><xloc2 uint16><yloc2 uint16>\n"
        "<End settings>\n"
    )
    rec = np.zeros(len(ticks), dtype=_FIELDS)
    rec["time"] = ticks
    rec["xloc"], rec["yloc"] = np.asarray(xy).T
    path.write_bytes(header.encode() + rec.tobytes())
    return path


def write_matclust_file(path: Path, tetrodes, timerange) -> Path:
    """A Frank-lab spikes{day}{epoch}{tetrode}{cluster} file; None marks an empty cell."""
    tt = np.empty((1, len(tetrodes)), dtype=object)
    for i, clusters in enumerate(tetrodes):
        if clusters is None:
            tt[0, i] = np.zeros((1, 0))
            continue
        cells = np.empty((1, len(clusters)), dtype=object)
        for j, times in enumerate(clusters):
            cells[0, j] = np.zeros((1, 0)) if times is None else {
                "time": np.asarray(times, float).reshape(-1, 1),
                "timerange": np.asarray(timerange, float), "meanrate": 1.0}
        tt[0, i] = cells
    epoch = np.empty((1, 1), dtype=object)
    epoch[0, 0] = tt
    day = np.empty((1, 1), dtype=object)
    day[0, 0] = epoch
    scipy.io.savemat(path, {"spikes": day})
    return path


def cell(values) -> np.ndarray:
    out = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        out[0, i] = v
    return out


# ---------------------------------------------------------------------------------------------
# real recordings
# ---------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_nelpy_linear_track_round_trip(sample_data, tmp_path):
    folder = sample_data / NELPY
    ds = read_nelpy_linear_track(folder)
    assert ds.sizes["channel"] == 31 and ds.sizes["spike"] == 28829
    assert ds.attrs["sfreq"] == 40.0 and ds.attrs["spike_time_unit"] == "s"
    assert ds.attrs["time_origin"] == pytest.approx(4396.9975)  # the clusters' timerange
    assert ds.attrs["position_units"] == "pixel" and "unknown" in ds.attrs["pixel_scale"]
    src = ds.attrs["source"]
    assert src["reader"] == "neurodecode.ingest.spikes.read_matclust"
    assert len(src["position_sha256"]) == 64
    assert ds.attrs["history"][0]["params"]["position_units"] == "pixel"
    assert set(np.asarray(ds["region"].values).tolist()) == {"hippocampus"}
    assert ds["channel"].values[0] == "tt01_c01"
    # position: on the camera's 640x480 pixels, tracked almost everywhere, speed finite
    pos, valid = ds["behavior_position"].values, ds["behavior_position_valid"].values
    assert pos.shape == (ds.sizes["time"], 2)
    assert 0.99 < valid.mean() < 1.0  # the video starts 34 ms after the sorted epoch
    assert not valid[0] and valid[100]
    assert (pos[:, 0] < 640).all() and (pos[:, 1] < 480).all() and (pos >= 0).all()
    assert np.isfinite(ds["behavior_speed"].values).all()

    result = write_recording(ds, tmp_path / "track.zarr")
    back = open_recording(result.path)
    assert back.sizes == ds.sizes and back.attrs["source"] == src
    counts = back["signal"].values
    assert counts.sum() == 28829
    assert np.array_equal(counts, histogram_counts(back))
    assert np.array_equal(back["time"].values, np.arange(back.sizes["time"]) * 0.025)
    np.testing.assert_array_equal(back["behavior_position"].values, pos)
    np.testing.assert_array_equal(back["behavior_speed_valid"].values,
                                  ds["behavior_speed_valid"].values)


@pytest.mark.realdata
def test_video_position_tracking_file(sample_data):
    track = load_video_position_tracking(sample_data / NELPY / "trajectory.videoPositionTracking")
    assert track.attrs["clockrate"] == 30000.0 and np.isnan(track.attrs["pixel_scale"])
    assert track.attrs["header"]["camera resolution"] == "640x480"
    assert len(track) == 118964  # 118,965 records, one repeating its predecessor's timestamp
    assert (np.diff(track["time"]) > 0).all()
    assert track["time"].iloc[0] == pytest.approx(4397.0317)
    assert track[["x2", "y2"]].isna().all().all()  # a single LED was tracked


@pytest.mark.realdata
def test_lazy_counts_on_distributed_cluster(sample_data, dask_client):
    # 5 ms bins: ~394k rows, several store shards, so several blocks
    ds = read_nelpy_linear_track(sample_data / NELPY, bin_size=0.005)
    again = read_nelpy_linear_track(sample_data / NELPY, bin_size=0.005)
    lazy = ds["signal"].data
    assert lazy.numblocks[0] > 1 and lazy.name == again["signal"].data.name
    distributed = dask_client.compute(lazy).result()
    np.testing.assert_array_equal(distributed, histogram_counts(ds))


@pytest.mark.realdata
@pytest.mark.parametrize(("block", "run"), [("beforeLearning", "01"), ("afterLearning", "02")])
def test_golub_bci_blocks(sample_data, tmp_path, block, run):
    path = sample_data / GOLUB
    ds = read_golub_bci(path, block=block)
    assert ds.sizes["channel"] == 86 and ds.sizes["time"] == 8 * 69
    assert "spike_time" not in ds  # binned counts only: no spike times are invented
    assert ds.attrs["bin_size"] == 0.045 and ds.attrs["sfreq"] == pytest.approx(1 / 0.045)
    assert (ds.attrs["subject"], ds.attrs["task"], ds.attrs["run"]) == ("Jeffy", "bci", run)
    assert len(ds.attrs["trials"]) == 50
    raw = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)[block].clouds
    np.testing.assert_array_equal(ds["signal"].values, np.concatenate([c.T for c in raw.spikes]))
    ev = events_frame(ds)
    assert ev["label"].tolist() == [f"direction_{a}" for a in range(0, 360, 45)]
    assert ev["value"].tolist() == list(range(8))
    np.testing.assert_allclose(ev["duration"], 69 * 0.045)
    # each cell's steps point within 22.5 degrees of its direction
    d = ds["behavior_cursor_to_target_direction"].values
    angle = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    expected = np.repeat(np.arange(0, 360, 45), 69)
    assert (np.abs((angle - expected + 180) % 360 - 180) <= 22.5).all()
    assert ds["behavior_vraw_perturbed_valid"].values.all()

    back = open_recording(write_recording(ds, tmp_path / f"{block}.zarr").path)
    np.testing.assert_array_equal(back["signal"].values, ds["signal"].values)
    pd.testing.assert_frame_equal(events_frame(back), ev)


# ---------------------------------------------------------------------------------------------
# synthetic files of each layout
# ---------------------------------------------------------------------------------------------


def test_npz_unsorted_spikes_are_sorted_and_binned_exactly(tmp_path):
    rng = np.random.default_rng(1)
    times = rng.uniform(2.0, 12.0, 500)  # deliberately unsorted
    clusters = rng.choice([3, 7, 12], 500)
    path = tmp_path / "kilosort.npz"
    np.savez(path, spike_times=times, spike_clusters=clusters)
    ds = read_spike_times(path, bin_size=0.1, subject="m1", task="run")
    assert ds["channel"].values.tolist() == ["unit3", "unit7", "unit12"]
    assert (ds.attrs["subject"], ds.attrs["task"], ds.attrs["session"]) == ("m1", "run", "01")
    st = ds["spike_time"].values
    assert (np.diff(st) >= 0).all() and st[0] == 0.0  # starts at the first spike
    np.testing.assert_allclose(np.sort(times) - times.min(), st)
    assert ds.attrs["time_origin"] == times.min()
    order = np.argsort(times, kind="stable")
    names = np.array(["unit3", "unit7", "unit12"])
    expected = np.char.add("unit", clusters[order].astype(str))
    assert (names[ds["spike_unit"].values] == expected).all()
    back = open_recording(write_recording(ds, tmp_path / "ks.zarr").path)
    assert np.array_equal(back["signal"].values, histogram_counts(back))
    assert back["signal"].values.sum() == 500


def test_phy_folder_with_sample_index_times(tmp_path):
    samples = np.array([[30], [300], [3000], [30000], [45000]], dtype=np.uint64)  # Kilosort (n, 1)
    np.save(tmp_path / "spike_times.npy", samples)
    np.save(tmp_path / "spike_clusters.npy", np.array([0, 1, 0, 1, 1], dtype=np.int32))
    ds = read_spike_times(tmp_path / "spike_times.npy", time_unit="samples",
                          sampling_rate=30000, t_start=0.0, t_stop=2.0, bin_size=0.5)
    np.testing.assert_allclose(ds["spike_time"].values, [0.001, 0.01, 0.1, 1.0, 1.5])
    assert ds.sizes["time"] == 4 and ds.attrs["time_origin"] == 0.0
    np.testing.assert_array_equal(ds["signal"].values, [[2, 1], [0, 0], [0, 1], [0, 1]])
    assert ds.attrs["source"]["units_sha256"]
    assert ds.attrs["history"][0]["params"]["time_unit"] == "samples"
    assert ds.attrs["subject"] == tmp_path.name.replace("_", "")  # the phy folder, not the file


def test_identity_from_bids_names_and_arguments(tmp_path):
    path = tmp_path / "sub-rat3_ses-2_task-maze_run-4_spikes.npz"
    np.savez(path, spike_times=np.array([0.1, 0.2]), spike_clusters=np.array([1, 2]))
    ds = read_spike_times(path)
    identity = [ds.attrs[k] for k in ("subject", "session", "task", "run")]
    assert identity == ["rat3", "2", "maze", "4"]
    ds = read_spike_times(path, subject="rat9", run="01")
    assert (ds.attrs["subject"], ds.attrs["run"], ds.attrs["task"]) == ("rat9", "01", "maze")


def test_spikes_on_the_extent_edges_are_counted(tmp_path):
    path = tmp_path / "edges.npz"
    np.savez(path, spike_times=np.array([0.0, 4.99, 10.0]), spike_clusters=np.array([1, 1, 2]))
    ds = read_spike_times(path, t_start=0.0, t_stop=10.0, bin_size=0.5)
    counts = ds["signal"].values
    assert counts.sum() == 3 and counts[-1].tolist() == [0, 1]  # the spike at t_stop
    assert np.array_equal(counts, histogram_counts(ds))


def test_mat_cell_array_and_struct_of_spike_trains(tmp_path):
    trains = [np.array([1.0, 2.0, 3.5]), np.array([0.5]), np.array([2.25, 2.75])]
    scipy.io.savemat(tmp_path / "cells.mat", {"spike_times": cell(trains),
                                              "names": cell(["pyr_a", "int_b", "pyr_c"])})
    ds = read_spike_times(tmp_path / "cells.mat", units_key="names", bin_size=0.25)
    assert ds["channel"].values.tolist() == ["pyr_a", "int_b", "pyr_c"]
    assert ds["signal"].values.sum(axis=0).tolist() == [3, 1, 2]
    assert ds.attrs["time_origin"] == 0.5

    scipy.io.savemat(tmp_path / "unnamed.mat", {"spike_times": cell(trains)})
    unnamed = read_spike_times(tmp_path / "unnamed.mat")
    assert unnamed["channel"].values.tolist() == ["unit1", "unit2", "unit3"]

    scipy.io.savemat(tmp_path / "struct.mat",
                     {"spikes": {"cellA": trains[0], "cellB": trains[2]}})
    st = read_spike_times(tmp_path / "struct.mat", times_key="spikes", bin_size=1.0)
    assert st["channel"].values.tolist() == ["cellA", "cellB"]
    np.testing.assert_array_equal(st["signal"].values, histogram_counts(st))


def test_behaviour_gaps_are_masked_and_never_reach_the_store_as_nan(tmp_path):
    path = tmp_path / "units.npz"
    np.savez(path, spike_times=np.linspace(0.0, 10.0, 200), spike_clusters=np.zeros(200, int))
    t = np.arange(0.0, 10.0, 0.1)
    x = t * 2.0
    x[40:60] = np.nan  # 2 s untracked
    ds = read_spike_times(path, bin_size=0.25, behavior={"time": t, "x": x, "xy": np.c_[t, -t]})
    valid = ds["behavior_x_valid"].values
    centres = ds["time"].values + 0.125
    gap = (centres > 3.9) & (centres < 6.0)
    assert not valid[gap].any() and valid[~gap & (centres < 9.9)].all()
    assert not valid[-1]  # after the last sample
    np.testing.assert_allclose(ds["behavior_x"].values[valid], 2 * centres[valid])
    assert ds["behavior_xy"].shape == (ds.sizes["time"], 2) and ds["behavior_xy_valid"][20]
    params = ds.attrs["history"][0]["params"]
    assert params["max_gap"]["x"] == pytest.approx(0.5) and params["behavior"] == ["x", "xy"]
    back = open_recording(write_recording(ds, tmp_path / "beh.zarr").path)
    assert np.isfinite(back["behavior_x"].values).all()
    np.testing.assert_array_equal(back["behavior_x_valid"].values, valid)


def test_behaviour_file_is_recorded_as_a_companion(tmp_path):
    path = tmp_path / "units.npz"
    np.savez(path, spike_times=np.array([0.0, 1.0, 2.0]), spike_clusters=np.array([1, 1, 1]))
    beh = tmp_path / "speed.tsv"
    pd.DataFrame({"time": [0.0, 1.0, 2.0], "runSpeed": [0.0, 5.0, 10.0]}).to_csv(
        beh, sep="\t", index=False)
    ds = read_spike_times(path, bin_size=0.5, behavior=beh)
    np.testing.assert_allclose(ds["behavior_run_speed"].values[:4], [1.25, 3.75, 6.25, 8.75])
    assert ds.attrs["source"]["behavior_path"] == str(beh.resolve())
    assert len(ds.attrs["source"]["behavior_sha256"]) == 64


def test_matclust_ticks_untracked_frames_and_known_pixel_scale(tmp_path):
    clock = 30000
    spikes = write_matclust_file(
        tmp_path / "spikes.mat",
        [[np.array([10.2, 11.0, 12.5]) * clock, None, np.zeros(0)], None,
         [np.array([10.5, 13.9]) * clock]],
        timerange=[10.0 * clock, 14.0 * clock])
    ticks = 10 * clock + 1000 * np.arange(120)  # 30 frames per second for 4 s
    xy = np.c_[100 + 2 * np.arange(ticks.size), np.full(ticks.size, 50)]  # 60 px/s
    xy[30:60] = 0  # 1 s untracked: (0, 0)
    position = write_position_file(tmp_path / "run.videoPositionTracking", ticks, xy,
                                   pixel_scale=2.0)
    ds = read_matclust(spikes, position=position, bin_size=0.1)
    assert ds.attrs["spike_time_unit"] == "ticks"  # resolved against the video clock
    assert ds["channel"].values.tolist() == ["tt01_c01", "tt03_c01"]
    assert ds.attrs["time_origin"] == pytest.approx(10.0) and ds.sizes["time"] == 40
    assert ds.attrs["position_units"] == "cm" and ds.attrs["speed_units"] == "cm/s"
    valid = ds["behavior_position_valid"].values
    assert not valid[10:20].any() and valid[:9].all() and valid[21:39].all()
    np.testing.assert_allclose(ds["behavior_position"].values[valid, 1], 25.0)  # 50 px / 2
    speed = ds["behavior_speed"].values[ds["behavior_speed_valid"].values]
    np.testing.assert_allclose(speed, 30.0, rtol=1e-6)  # 60 px/s at 2 px/cm
    back = open_recording(write_recording(ds, tmp_path / "mc.zarr").path)
    assert back["signal"].values.sum() == 5 and np.isfinite(back["behavior_speed"].values).all()


def test_nwb_units_trials_and_position(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.file import Subject

    nwb = NWBFile(session_description="synthetic", identifier="nd-test",
                  session_start_time=datetime(2024, 1, 1, tzinfo=UTC),
                  session_id="day1", subject=Subject(subject_id="mouse-7", species="Mus musculus"))
    group = nwb.create_electrode_group("shank0", description="", location="hippocampus",
                                       device=nwb.create_device("probe"))
    for location in ("CA1", "CA3", "DG"):
        nwb.add_electrode(location=location, group=group)
    rng = np.random.default_rng(2)
    trains = [np.sort(rng.uniform(0.5, 9.5, 40 + u)) for u in range(3)]
    for u, train in enumerate(trains):
        nwb.add_unit(spike_times=train, electrodes=[u], id=10 + u)
    nwb.add_trial_column("target", "target index")
    for k in range(5):
        nwb.add_trial(start_time=1.0 + 2 * k, stop_time=1.9 + 2 * k, target=k % 2)
    t = np.arange(0.0, 10.0, 1 / 30)
    module = nwb.create_processing_module("behavior", "behaviour")
    module.add(Position(spatial_series=SpatialSeries(
        name="position", data=np.c_[t, 2 * t], timestamps=t, reference_frame="arena", unit="m")))
    path = tmp_path / "session.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb)

    ds = read_nwb_units(path, bin_size=0.05, trial_label="target",
                        event_map={"target_1": "right"})
    assert ds["channel"].values.tolist() == ["unit10", "unit11", "unit12"]
    assert ds["region"].values.tolist() == ["CA1", "CA3", "DG"]
    assert (ds.attrs["subject"], ds.attrs["session"]) == ("mouse7", "day1")
    assert ds.attrs["time_origin"] == 0.0 and ds.attrs["behavior_units"] == {"position": "m"}
    ev = events_frame(ds)
    assert ev["label"].tolist() == ["target_0", "right", "target_0", "right", "target_0"]
    assert ev["onset"].tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert ev["value"].tolist() == [0, 1, 0, 1, 0]
    assert ds.attrs["history"][0]["params"]["t_stop"] == pytest.approx(9.9)  # the last trial
    centres = ds["time"].values + 0.025
    np.testing.assert_allclose(ds["behavior_position"].values[:, 1], 2 * centres)
    back = open_recording(write_recording(ds, tmp_path / "nwb.zarr").path)
    np.testing.assert_array_equal(back["signal"].values.sum(axis=0), [len(x) for x in trains])
    assert np.array_equal(back["signal"].values, histogram_counts(back))

    with pytest.raises(IngestError, match=r"1 event\(s\) lie outside the recording \[0, 9.7\]"):
        read_nwb_units(path, t_stop=9.7)  # every spike is before 9.5 s, the last trial ends at 9.9


# ---------------------------------------------------------------------------------------------
# bad input: every case names the file and the problem, and nothing is written
# ---------------------------------------------------------------------------------------------


def test_truncated_mat_file(tmp_path):
    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"spike_times": np.arange(1000.0), "spike_clusters": np.ones(1000)})
    bad = tmp_path / "truncated.mat"
    bad.write_bytes(good.read_bytes()[:4000])
    assert_rejected(lambda: read_spike_times(bad), bad, "cannot be read as a MATLAB .mat file",
                    tmp_path / "out.zarr")


def test_wrong_extension_and_non_mat_bytes(tmp_path):
    txt = tmp_path / "spikes.txt"
    txt.write_text("0.1 0.2 0.3\n")
    assert_rejected(lambda: read_spike_times(txt), txt, "unsupported file type '.txt'",
                    tmp_path / "a.zarr")
    fake = tmp_path / "fake.mat"
    fake.write_bytes(b"this is not a MAT-file at all " * 20)
    assert_rejected(lambda: read_spike_times(fake), fake, "not a MAT-file", tmp_path / "b.zarr")
    assert_rejected(lambda: read_golub_bci(fake), fake, "not a MAT-file", tmp_path / "c.zarr")
    nwb = tmp_path / "fake.nwb"
    nwb.write_bytes(b"\x00" * 64)
    assert_rejected(lambda: read_nwb_units(nwb), nwb, "cannot be read as an NWB file",
                    tmp_path / "d.zarr")


def test_spikes_outside_an_explicit_extent(tmp_path):
    path = tmp_path / "units.npz"
    np.savez(path, spike_times=np.array([1.0, 2.0, 30.0]), spike_clusters=np.array([0, 0, 1]))
    assert_rejected(lambda: read_spike_times(path, t_start=0.0, t_stop=10.0), path,
                    "1 spike(s) lie outside the recording [0, 10] s", tmp_path / "out.zarr")


def test_duplicate_unit_names(tmp_path):
    path = tmp_path / "dups.mat"
    scipy.io.savemat(path, {"spike_times": cell([np.array([1.0]), np.array([2.0])]),
                            "names": cell(["pyr", "pyr"])})
    assert_rejected(lambda: read_spike_times(path, units_key="names"), path,
                    "duplicate unit names: pyr", tmp_path / "out.zarr")


def test_event_map_for_a_file_without_events(tmp_path):
    path = tmp_path / "units.npz"
    np.savez(path, spike_times=np.array([0.1, 0.2]), spike_clusters=np.array([1, 2]))
    assert_rejected(lambda: read_spike_times(path, event_map={"T1": "left"}), path,
                    "the file holds no events", tmp_path / "out.zarr")


def test_no_spikes_at_all(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, spike_times=np.zeros(0), spike_clusters=np.zeros(0, int))
    assert_rejected(lambda: read_spike_times(path), path, "holds no spikes", tmp_path / "a.zarr")
    mc = write_matclust_file(tmp_path / "spikes.mat", [[np.zeros(0)], None], timerange=[0, 1])
    assert_rejected(lambda: read_matclust(mc), mc, "holds no spikes", tmp_path / "b.zarr")


def test_nan_spike_times(tmp_path):
    path = tmp_path / "nan.npz"
    np.savez(path, spike_times=np.array([0.5, np.nan, 1.5]), spike_clusters=np.array([0, 1, 1]))
    assert_rejected(lambda: read_spike_times(path), path, "1 spike time(s) are NaN or infinite",
                    tmp_path / "out.zarr")


def test_position_file_with_a_corrupt_header(tmp_path):
    spikes = write_matclust_file(tmp_path / "spikes.mat", [[np.array([1.0, 2.0])]],
                                 timerange=[0.0, 3.0])
    good = write_position_file(tmp_path / "good.videoPositionTracking",
                               np.arange(0, 90000, 1000), np.full((90, 2), 10))
    raw = good.read_bytes()
    no_end = tmp_path / "no_end.videoPositionTracking"
    no_end.write_bytes(raw.replace(b"<End settings>", b"<End setings>"))
    assert_rejected(lambda: read_matclust(spikes, position=no_end), no_end, "corrupt header",
                    tmp_path / "a.zarr")
    no_clock = tmp_path / "no_clock.videoPositionTracking"
    no_clock.write_bytes(raw.replace(b"clockrate: 30000\n", b""))
    assert_rejected(lambda: read_matclust(spikes, position=no_clock), no_clock,
                    "corrupt header: bad field type or clockrate", tmp_path / "b.zarr")
    cut = tmp_path / "cut.videoPositionTracking"
    cut.write_bytes(raw[:-3])
    assert_rejected(lambda: load_video_position_tracking(cut), cut, "truncated",
                    tmp_path / "c.zarr")


def test_infinite_behaviour_is_rejected_and_nan_is_caught_by_the_store(tmp_path):
    path = tmp_path / "units.npz"
    np.savez(path, spike_times=np.array([0.0, 1.0, 2.0]), spike_clusters=np.array([1, 1, 1]))
    beh = tmp_path / "beh.npz"
    np.savez(beh, time=np.array([0.0, 1.0, 2.0]), x=np.array([0.0, np.inf, 1.0]))
    assert_rejected(lambda: read_spike_times(path, behavior=beh), beh,
                    "behaviour 'x' holds 1 infinite value(s)", tmp_path / "a.zarr")

    def corrupted():  # a NaN slipped in after reading: the store refuses it while writing
        ds = read_spike_times(path, behavior={"time": [0.0, 1.0, 2.0], "x": [0.0, 1.0, 2.0]})
        ds["behavior_x"] = ds["behavior_x"].copy(data=np.full(ds.sizes["time"], np.nan))
        return validate(ds)

    assert_rejected(corrupted, path.resolve(), "behavior_x holds", tmp_path / "b.zarr",
                    error=SchemaError)
