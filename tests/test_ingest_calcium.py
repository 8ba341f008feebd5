"""Calcium-imaging readers: TIFF movies, suite2p folders, NWB ophys files, trace arrays."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile

from neurodecode.ingest import IngestError
from neurodecode.ingest.calcium import (
    delta_f_over_f,
    read_nwb_ophys,
    read_suite2p,
    read_tiff_movie,
    read_trace_array,
)
from neurodecode.schema import SchemaError, events_frame, validate
from neurodecode.store import open_recording, write_recording

#: The shared data state no frame rate for the Svoboda movie (README, covariates.json and TIFF
#: tags are silent), and the reader never guesses one; the tests pass this nominal rate, on which
#: only the time axis depends.
SVOBODA_FS = 10.0


def _svoboda(sample_data: Path) -> tuple[Path, Path]:
    folder = sample_data / "calcium" / "svoboda_mouse_s1"
    return folder / "movie.tif", folder / "covariates.json"


def _expected_dff(f: np.ndarray, window: int, percentile: float = 8.0) -> np.ndarray:
    """ΔF/F straight from SciPy on the whole trace matrix."""
    f0 = ndi.percentile_filter(f, percentile, size=(window, 1), mode="nearest")
    return (f - f0) / f0


def _fails(tmp_path: Path, read, error=IngestError) -> str:
    """Read then write a bad input: the error is raised and no store appears."""
    out = tmp_path / "out" / "bad.zarr"
    with pytest.raises(error) as info:
        write_recording(read(), out)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    return str(info.value)


# ---------------------------------------------------------------- real data: Svoboda movie


@pytest.mark.realdata
def test_svoboda_traces_match_numpy_for_given_masks(sample_data, tmp_path):
    movie_path, _ = _svoboda(sample_data)
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 64, 64), np.float32)
    masks[0, 10:14, 20:24] = 1
    masks[1, 30:33, 40:45] = rng.random((3, 5))  # weights, not only booleans
    masks[2, 50:60, 5:8] = 1
    masks[3] = rng.random((64, 64))
    np.save(tmp_path / "rois.npy", masks)
    ds = read_tiff_movie(movie_path, fs=SVOBODA_FS, rois=tmp_path / "rois.npy", dff=None,
                         keep_movie=False, chunk_frames=70)
    assert "movie" not in ds and ds["signal"].data.numblocks[0] == 8
    frames = tifffile.imread(movie_path).astype(np.float64)
    expected = np.einsum("tyx,ryx->tr", frames, masks) / masks.sum((1, 2))
    np.testing.assert_allclose(ds["signal"].values, expected, rtol=1e-5)
    assert set(ds["units"].values) == {"a.u."}
    assert ds.attrs["source"]["rois"]["sha256"] == ds.attrs["history"][0]["params"]["rois"][
        "sha256"]


# ---------------------------------------------------------------- real data: CaImAn traces


@pytest.mark.realdata
def test_caiman_trace_matrix(sample_data, tmp_path):
    path = sample_data / "calcium" / "caiman_demo_traces" / "groundtruth_demoMovie.npz"
    archive = np.load(path, allow_pickle=True, encoding="latin1")
    fs = float(archive["information"].item()["params"]["final_frate"])  # the demo's own rate
    ds = read_trace_array(path, key="C_full", fs=fs, chunk_frames=500)
    assert ds.sizes == {**ds.sizes, "time": 2000, "channel": 16}
    assert ds["signal"].data.numblocks == (4, 1)
    back = open_recording(write_recording(ds, tmp_path / "caiman.zarr").path)
    np.testing.assert_allclose(back["signal"].values, archive["C_full"].T.astype(np.float32))
    assert back.attrs["sfreq"] == 10.0 and back["channel"].values[-1] == "roi015"


@pytest.mark.realdata
def test_caiman_traces_need_fs(sample_data, tmp_path):
    path = sample_data / "calcium" / "caiman_demo_traces" / "groundtruth_demoMovie.npz"
    msg = _fails(tmp_path, lambda: read_trace_array(path, key="C_full"))
    assert str(path) in msg and "frame rate is unknown" in msg
    msg = _fails(tmp_path, lambda: read_trace_array(path, key="nope", fs=10.0))
    assert "'nope'" in msg and "C_full" in msg


def test_trace_array_npy_time_first(tmp_path):
    data = np.random.default_rng(1).random((300, 5)).astype(np.float32)
    np.save(tmp_path / "sub-07_task-rest_traces.npy", data)
    ds = read_trace_array(tmp_path / "sub-07_task-rest_traces.npy", fs=20.0, run=2,
                          orientation="time_first", ch_names=list("abcde"), chunk_frames=64)
    np.testing.assert_array_equal(ds["signal"].values, data)
    assert (ds.attrs["subject"], ds.attrs["task"], ds.attrs["run"]) == ("07", "rest", "2")
    assert list(ds["channel"].values) == list("abcde")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
def test_corrupt_npz_member_is_reported_as_corrupt(tmp_path, save):
    data = np.random.default_rng(2).random((5, 2000))
    save(tmp_path / "good.npz", traces=data)
    raw = bytearray((tmp_path / "good.npz").read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 8] = bytes(b ^ 0xFF for b in raw[middle:middle + 8])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    msg = _fails(tmp_path, lambda: read_trace_array(bad, fs=10.0))
    assert str(bad) in msg and "corrupt" in msg and "CRC" in msg
    good = read_trace_array(tmp_path / "good.npz", fs=10.0)
    np.testing.assert_array_equal(good["signal"].values, data.T.astype(np.float32))


def test_corrupt_gzip_covariates_are_reported_as_corrupt(tmp_path):
    import gzip

    frames = _movie(n=60)
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, frames, imagej=True, metadata={"axes": "TYX", "finterval": 0.1})
    table = "speed\n" + "\n".join(f"{v:.6f}" for v in np.linspace(0, 1, 60)) + "\n"
    good = tmp_path / "cov.csv.gz"
    with gzip.open(good, "wt") as fh:
        fh.write(table)
    raw = bytearray(good.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4] = bytes(b ^ 0xFF for b in raw[middle:middle + 4])
    bad = tmp_path / "bad_cov.csv.gz"
    bad.write_bytes(bytes(raw))
    msg = _fails(tmp_path, lambda: read_tiff_movie(movie, roi_method="grid", covariates=bad))
    assert str(bad) in msg and "corrupt" in msg
    ds = read_tiff_movie(movie, roi_method="grid", covariates=good)
    np.testing.assert_allclose(ds["behavior_speed"].values, np.linspace(0, 1, 60), atol=1e-6)


# ---------------------------------------------------------------- synthetic TIFF movies


def _movie(n=120, h=24, w=20, seed=0, dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 20 * rng.random((n, h, w))).astype(dtype)


def test_compressed_tiff_pages_and_imagej_rate(tmp_path):
    frames = _movie()
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, frames, imagej=True, compression="zlib",
                     metadata={"axes": "TYX", "finterval": 0.05})
    ds = read_tiff_movie(path, roi_method="grid", grid_px=8, dff=None, chunk_frames=25)
    assert ds.attrs["sfreq"] == pytest.approx(20.0)
    assert ds.attrs["history"][0]["params"]["fs_source"] == "imagej finterval"
    np.testing.assert_array_equal(ds["movie"].values, frames)  # read page by page
    assert ds.sizes["channel"] == 3 * 3  # 24x20 in 8-pixel tiles
    np.testing.assert_allclose(ds["signal"].values[:, 0], frames[:, :8, :8].mean((1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(ds["signal"].values[:, -1], frames[:, 16:, 16:].mean((1, 2)),
                               rtol=1e-5)
    assert (ds["x"].values[-1], ds["y"].values[-1]) == (17.5, 19.5)
    assert read_tiff_movie(path, fs=4.0, roi_method="grid").attrs["sfreq"] == 4.0


def test_frame_rate_from_imagej_fps_and_scanimage(tmp_path):
    frames = _movie(n=30)
    tifffile.imwrite(tmp_path / "fps.tif", frames, imagej=True,
                     metadata={"axes": "TYX", "fps": 15.0})
    assert read_tiff_movie(tmp_path / "fps.tif", roi_method="grid").attrs["sfreq"] == 15.0
    si = "SI.hRoiManager.scanFrameRate = 30.5\nSI.hChannels.channelSave = 1\n"
    tifffile.imwrite(tmp_path / "si.tif", frames, software=si, metadata=None)
    ds = read_tiff_movie(tmp_path / "si.tif", roi_method="grid", dff=None)
    assert ds.attrs["sfreq"] == 30.5
    tifffile.imwrite(tmp_path / "si3.tif", frames, metadata=None,
                     description="state.acq.frameRate=7.8\nstate.acq.numberOfChannelsSave=1")
    assert read_tiff_movie(tmp_path / "si3.tif", roi_method="grid").attrs["sfreq"] == 7.8


def test_peak_rois_find_planted_cells(tmp_path):
    rng = np.random.default_rng(3)
    frames = 100 + rng.normal(0, 1, (200, 32, 32))
    cells = [(8, 8), (20, 24), (25, 6)]
    for y, x in cells:
        spikes = (rng.random(200) < 0.05).astype(float)
        activity = np.convolve(spikes, np.exp(-np.arange(20) / 4.0))[:200]
        frames[:, y - 1:y + 2, x - 1:x + 2] += 40 * activity[:, None, None]
    tifffile.imwrite(tmp_path / "cells.tif", frames.astype(np.float32))
    ds = read_tiff_movie(tmp_path / "cells.tif", fs=10.0, roi_radius_px=2)
    found = sorted(zip(ds["y"].values.round().astype(int), ds["x"].values.round().astype(int),
                       strict=True))
    assert found == sorted(cells)


# ---------------------------------------------------------------- TIFF: bad inputs


def test_truncated_tiff(tmp_path):
    for name, kwargs in (("plain.tif", {}), ("zlib.tif", {"compression": "zlib"})):
        path = tmp_path / name
        tifffile.imwrite(path, _movie(), **kwargs)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        msg = _fails(tmp_path, lambda p=path: read_tiff_movie(p, fs=10.0, roi_method="grid"))
        assert str(path) in msg and "truncated" in msg


def test_not_a_tiff(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"this is not an image")
    msg = _fails(tmp_path, lambda: read_tiff_movie(path, fs=10.0))
    assert str(path) in msg and "not a readable TIFF" in msg


def test_single_image_and_wrong_axes(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", _movie()[0])
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "one.tif", fs=10.0))
    assert str(tmp_path / "one.tif") in msg and "single 24x20 image, not a movie" in msg
    tifffile.imwrite(tmp_path / "zstack.tif", _movie(), metadata={"axes": "ZYX"})
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "zstack.tif", fs=10.0))
    assert str(tmp_path / "zstack.tif") in msg and "axes 'ZYX'" in msg
    si = "SI.hRoiManager.scanFrameRate = 30\nSI.hChannels.channelSave = [1;2]\n"
    tifffile.imwrite(tmp_path / "si2.tif", _movie(), software=si, metadata=None)
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "si2.tif"))
    assert str(tmp_path / "si2.tif") in msg and "2 saved channel(s)" in msg
    si = "SI.hRoiManager.scanFrameRate = 30\nSI.hStackManager.numSlices = 3\n"
    tifffile.imwrite(tmp_path / "si3.tif", _movie(), software=si, metadata=None)
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "si3.tif"))
    assert str(tmp_path / "si3.tif") in msg and "3 plane(s) interleaved" in msg


def test_event_map_without_events(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", _movie())
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "m.tif", fs=10.0,
                                                   event_map={"1": "left"}))
    assert str(tmp_path / "m.tif") in msg and "holds no events" in msg


def test_empty_movie(tmp_path):
    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((0, 16, 16), np.int16))
    msg = _fails(tmp_path, lambda: read_tiff_movie(path, fs=10.0))
    assert str(path) in msg and "holds no frames" in msg


def test_missing_frame_rate(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", _movie())
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "m.tif", roi_method="grid"))
    assert str(tmp_path / "m.tif") in msg and "frame rate is unknown" in msg


def test_roi_masks_of_wrong_shape(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", _movie())
    masks = np.ones((2, 20, 24), bool)
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "m.tif", fs=10.0, rois=masks))
    assert str(tmp_path / "m.tif") in msg and "(20, 24)" in msg and "(24, 20)" in msg


def test_covariates_length_mismatch(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", _movie())
    cov = tmp_path / "cov.json"
    cov.write_text(json.dumps({"runningSpeed": list(range(119))}))
    msg = _fails(tmp_path, lambda: read_tiff_movie(tmp_path / "m.tif", fs=10.0,
                                                   roi_method="grid", covariates=cov))
    assert str(cov) in msg and "'runningSpeed' has 119 values" in msg and "120 frames" in msg
    csv = tmp_path / "cov.csv"
    csv.write_text("lickRate,pupil\n" + "\n".join(f"{i},{i / 2}" for i in range(120)))
    ds = read_tiff_movie(tmp_path / "m.tif", fs=10.0, roi_method="grid", covariates=csv)
    np.testing.assert_array_equal(ds["behavior_lick_rate"].values, np.arange(120))


def test_nan_frames_fail_the_write(tmp_path):
    frames = _movie().astype(np.float32)
    frames[7, 3:5, 3:5] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, frames)
    msg = _fails(tmp_path, lambda: read_tiff_movie(path, fs=10.0, roi_method="grid"),
                 error=SchemaError)
    assert str(path.resolve()) in msg and "movie holds 4 NaN/Inf" in msg
    msg = _fails(tmp_path, lambda: read_tiff_movie(path, fs=10.0))  # peaks need finite frames
    assert str(path) in msg and "NaN/Inf" in msg


# ---------------------------------------------------------------- ΔF/F


def test_dff_blockwise_equals_whole_trace():
    rng = np.random.default_rng(2)
    f = 50 + 5 * rng.random((1000, 3)) + np.linspace(0, 20, 1000)[:, None]
    f[:, 2] = -1.0  # a non-positive baseline has no ΔF/F
    lazy = delta_f_over_f(da.from_array(f, chunks=(37, 3)), fs=10.0, window_s=30.0)
    out = lazy.compute()
    np.testing.assert_allclose(out[:, :2], _expected_dff(f[:, :2], 300), rtol=1e-5)
    assert np.isnan(out[:, 2]).all() and out.dtype == np.float32


# ---------------------------------------------------------------- suite2p


def _suite2p_plane(root: Path, n_rois=6, n_frames=400, fs=30.0, name="plane0",
                   seed=4) -> tuple[Path, dict]:
    """A suite2p plane folder (``<root>/sub-12_ses-3/suite2p/<name>``) as suite2p writes it."""
    plane = root / "sub-12_ses-3" / "suite2p" / name
    plane.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    f = (200 + 30 * rng.random((n_rois, n_frames))).astype(np.float32)
    fneu = (80 + 10 * rng.random((n_rois, n_frames))).astype(np.float32)
    spks = np.maximum(rng.normal(0, 1, (n_rois, n_frames)), 0).astype(np.float32)
    iscell = np.column_stack([np.array([1, 0, 1, 1, 0, 1], float), rng.random(n_rois)])
    stat = []
    for i in range(n_rois):
        ypix = np.repeat(np.arange(3) + 5 * i, 3).astype(np.int32)
        xpix = np.tile(np.arange(3) + 2 * i, 3).astype(np.int32)
        stat.append({"ypix": ypix, "xpix": xpix, "lam": np.ones(9, np.float32),
                     "med": [int(np.median(ypix)), int(np.median(xpix))], "npix": 9})
    ops = {"fs": fs, "Ly": 64, "Lx": 64, "nframes": n_frames, "neucoeff": 0.7, "tau": 1.0}
    for name, arr in (("F", f), ("Fneu", fneu), ("spks", spks), ("iscell", iscell)):
        np.save(plane / f"{name}.npy", arr)
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(plane / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
    return plane, {"F": f, "Fneu": fneu, "spks": spks, "cells": np.array([0, 2, 3, 5])}


def test_suite2p_plane(tmp_path):
    plane, truth = _suite2p_plane(tmp_path)
    ds = read_suite2p(plane, chunk_frames=64, dff_window_s=5.0)
    cells = truth["cells"]
    assert list(ds["channel"].values) == [f"roi{i:03d}" for i in cells]
    assert (ds.attrs["subject"], ds.attrs["session"], ds.attrs["sfreq"]) == ("12", "3", 30.0)
    corrected = (truth["F"] - np.float32(0.7) * truth["Fneu"])[cells].T.astype(np.float64)
    back = open_recording(write_recording(ds, tmp_path / "s2p.zarr").path)
    np.testing.assert_allclose(back["signal"].values, _expected_dff(corrected, 150), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(back["x"].values, 2 * cells + 1)
    np.testing.assert_array_equal(back["y"].values, 5 * cells + 1)
    assert set(back["units"].values) == {"dF/F"}
    assert "Fneu.npy" in back.attrs["source"]["companions"]
    spks = read_suite2p(plane, use="spks", only_cells=False)
    np.testing.assert_array_equal(spks["signal"].values, truth["spks"].T)
    assert set(spks["units"].values) == {"a.u."} and spks.sizes["channel"] == 6


def test_suite2p_without_f(tmp_path):
    plane, _ = _suite2p_plane(tmp_path)
    (plane / "F.npy").unlink()
    msg = _fails(tmp_path, lambda: read_suite2p(plane))
    assert str(plane) in msg and "lacks F.npy" in msg


def test_suite2p_mismatched_f_and_fneu(tmp_path):
    plane, truth = _suite2p_plane(tmp_path)
    np.save(plane / "Fneu.npy", truth["Fneu"][:, :399])
    msg = _fails(tmp_path, lambda: read_suite2p(plane))
    assert str(plane) in msg and "(6, 400)" in msg and "(6, 399)" in msg


def test_suite2p_without_frame_rate(tmp_path):
    plane, _ = _suite2p_plane(tmp_path)
    np.save(plane / "ops.npy", np.array({"Ly": 64}, dtype=object), allow_pickle=True)
    msg = _fails(tmp_path, lambda: read_suite2p(plane))
    assert str(plane) in msg and "frame rate is unknown" in msg
    assert read_suite2p(plane, fs=15.0).attrs["sfreq"] == 15.0


# ---------------------------------------------------------------- NWB


def _nwb_file(path: Path, *, timestamps: np.ndarray | None = None, kind: str = "DfOverF",
              n_frames: int = 200) -> dict:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import Position
    from pynwb.file import Subject
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

    rng = np.random.default_rng(5)
    nwb = NWBFile(session_description="synthetic", identifier=path.stem,
                  session_start_time=datetime(2024, 1, 1, tzinfo=UTC),
                  subject=Subject(subject_id="mouse7", species="Mus musculus"))
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(
        name="plane0", description="L2/3", device=device, excitation_lambda=920.0,
        indicator="GCaMP6s", location="S1",
        optical_channel=OpticalChannel(name="green", description="g", emission_lambda=525.0),
    )
    ophys = nwb.create_processing_module(name="ophys", description="optical physiology")
    segmentation = ImageSegmentation()
    ophys.add(segmentation)
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="rois",
                                                  imaging_plane=plane)
    for i in range(3):
        mask = np.zeros((16, 16), np.float32)
        mask[2 + 4 * i:5 + 4 * i, 3:6] = 1.0
        rois.add_roi(image_mask=mask)
    region = rois.create_roi_table_region(region=[0, 1, 2], description="all")
    data = (1.0 + rng.random((n_frames, 3))).astype(np.float32)
    container = DfOverF() if kind == "DfOverF" else Fluorescence()
    ophys.add(container)
    timing = {"rate": 10.0, "starting_time": 1.0} if timestamps is None else {
        "timestamps": timestamps}
    container.create_roi_response_series(name="RoiResponseSeries", data=data, rois=region,
                                         unit="n.a.", **timing)
    position = rng.random((700, 2))
    behavior = nwb.create_processing_module(name="behavior", description="behaviour")
    tracker = Position()
    behavior.add(tracker)
    tracker.create_spatial_series(name="position", data=position, reference_frame="track",
                                  rate=30.0, starting_time=0.0)
    nwb.add_trial_column(name="trial_type", description="side")
    for start, stop, side in ((2.0, 4.0, "left"), (5.0, 6.0, "right"), (30.0, 31.0, "left")):
        nwb.add_trial(start_time=start, stop_time=stop, trial_type=side)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return {"data": data, "position": position}


def test_nwb_dff_series_behaviour_and_trials(tmp_path):
    path = tmp_path / "session.nwb"
    truth = _nwb_file(path)
    ds = read_nwb_ophys(path, event_map={"left": "go_left"}, chunk_frames=50)
    assert ds["signal"].data.numblocks == (4, 1)
    assert ds.attrs["subject"] == "mouse7" and ds.attrs["sfreq"] == 10.0
    back = open_recording(write_recording(ds, tmp_path / "nwb.zarr").path)
    np.testing.assert_array_equal(back["signal"].values, truth["data"])
    times = 1.0 + np.arange(200) / 10.0
    np.testing.assert_allclose(back["time"].values, times)
    assert set(back["units"].values) == {"dF/F"} and set(back["region"].values) == {"S1"}
    np.testing.assert_array_equal(back["x"].values, [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(back["y"].values, [3.0, 7.0, 11.0])
    expected = np.column_stack([np.interp(times, np.arange(700) / 30.0, truth["position"][:, j])
                                for j in range(2)])
    np.testing.assert_allclose(back["behavior_position"].values, expected)
    events = events_frame(back)
    assert events["label"].tolist() == ["go_left", "right"]  # the third trial is after imaging
    assert events["onset"].tolist() == [2.0, 5.0] and events["duration"].tolist() == [2.0, 1.0]
    assert back.attrs["history"][0]["params"]["events_outside"] == 1


def test_nwb_fluorescence_with_regular_timestamps(tmp_path):
    path = tmp_path / "fluo.nwb"
    jitter = np.random.default_rng(6).uniform(-1e-4, 1e-4, 200)
    truth = _nwb_file(path, kind="Fluorescence", timestamps=np.arange(200) / 10.0 + jitter)
    ds = read_nwb_ophys(path, series="Fluorescence/RoiResponseSeries", dff_window_s=10.0)
    validate(ds, check_data=True)
    np.testing.assert_allclose(ds["signal"].values,
                               _expected_dff(truth["data"].astype(np.float64), 100), rtol=1e-4)
    assert set(ds["units"].values) == {"dF/F"}


def test_nwb_irregular_timestamps(tmp_path):
    path = tmp_path / "irregular.nwb"
    stamps = np.cumsum(np.where(np.arange(200) % 50 == 0, 0.3, 0.1))
    _nwb_file(path, timestamps=stamps)
    msg = _fails(tmp_path, lambda: read_nwb_ophys(path))
    assert str(path) in msg and "irregular" in msg


def test_not_nwb_or_no_ophys(tmp_path):
    import h5py
    from pynwb import NWBHDF5IO, NWBFile

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    msg = _fails(tmp_path, lambda: read_nwb_ophys(path))
    assert str(path) in msg and "not a readable NWB file" in msg
    path = tmp_path / "empty.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(NWBFile(session_description="none", identifier="empty",
                         session_start_time=datetime(2024, 1, 1, tzinfo=UTC)))
    msg = _fails(tmp_path, lambda: read_nwb_ophys(path))
    assert str(path) in msg and "holds no RoiResponseSeries" in msg


# ---------------------------------------------------------------- distributed (last: the
# session-wide client stays the default for every later computation)


@pytest.mark.realdata
def test_svoboda_movie_to_store_on_distributed_cluster(sample_data, dask_client, tmp_path):
    movie_path, cov_path = _svoboda(sample_data)
    ds = read_tiff_movie(movie_path, fs=SVOBODA_FS, roi_radius_px=2, covariates=cov_path,
                         chunk_frames=128)
    assert isinstance(ds["movie"].data, da.Array) and isinstance(ds["signal"].data, da.Array)
    assert ds["movie"].shape == (500, 64, 64) and ds["movie"].dtype == np.int16
    n_rois = ds.sizes["channel"]
    assert 10 <= n_rois <= 200
    masks = ds["roi_mask"].values
    assert masks.shape == (n_rois, 64, 64) and (masks.sum(axis=0) <= 1).all()  # no overlap
    yy, xx = np.indices((64, 64))
    np.testing.assert_allclose(ds["x"].values, (masks * xx).sum((1, 2)) / masks.sum((1, 2)))
    np.testing.assert_allclose(ds["y"].values, (masks * yy).sum((1, 2)) / masks.sum((1, 2)))
    covariates = {c["name"]: c["value"] for c in json.loads(cov_path.read_text())}
    assert ds.attrs["source"]["covariates"]["sha256"]

    result = write_recording(ds, tmp_path / "svoboda.zarr")  # runs on the 2-worker cluster
    assert result.status == "created"
    back = open_recording(result.path)
    frames = tifffile.imread(movie_path)
    np.testing.assert_array_equal(back["movie"].values, frames)
    speed = back["behavior_running_speed"].values
    assert speed.shape == (500,)
    np.testing.assert_array_equal(speed, covariates["runningSpeed"])
    np.testing.assert_array_equal(back["behavior_corridor_position"].values,
                                  covariates["corridorPosition"])
    assert back.attrs["sfreq"] == SVOBODA_FS and back.attrs["coord_frame"] == "pixel"
    assert set(back["units"].values) == {"dF/F"} and set(back["ch_type"].values) == {"roi"}
    weights = (masks / masks.sum((1, 2), keepdims=True)).reshape(n_rois, -1)
    fluo = frames.reshape(500, -1).astype(np.float64) @ weights.T
    window = 500  # 60 s at the nominal rate, clamped to the recording
    np.testing.assert_allclose(back["signal"].values, _expected_dff(fluo, window), rtol=1e-4,
                               atol=1e-5)
