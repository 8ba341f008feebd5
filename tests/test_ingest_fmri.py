"""fMRI readers: lazy NIfTI runs (Haxby, nipy), masks, atlases, cleaning, BIDS, bad inputs."""

from __future__ import annotations

import collections
import gzip
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.masking import compute_epi_mask
from nilearn.signal import clean

from neurodecode.ingest import base
from neurodecode.ingest.base import IngestError
from neurodecode.ingest.fmri import (
    events_to_volumes,
    list_bids_func,
    read_bids_func,
    read_nifti,
)
from neurodecode.schema import SchemaError, events_frame
from neurodecode.store import open_recording, write_recording

CATEGORIES = {"face", "house", "cat", "bottle", "scissors", "shoe", "chair", "scrambledpix"}
READER = "neurodecode.ingest.fmri.read_nifti"


@pytest.fixture(scope="module")
def haxby(sample_data):
    return sample_data / "fmri" / "haxby2001_sub001_slice"


@pytest.fixture(scope="module")
def nipy(sample_data):
    return sample_data / "fmri" / "nipy_functional" / "functional.nii.gz"


def voxel_ijk(ds) -> np.ndarray:
    """The (i, j, k) indices encoded in the channel names ``v{i}_{j}_{k}``."""
    return np.array([[int(x) for x in str(n)[1:].split("_")] for n in ds["channel"].values])


def reference(path, ds, dtype=np.float32) -> np.ndarray:
    """The channels of ``ds`` read the plain way: nibabel ``get_fdata`` (as float32)."""
    data = nib.load(path).get_fdata()
    i, j, k = voxel_ijk(ds).T
    return data[i, j, k].T.astype(dtype)


def save_nifti(path, data, *, tr=2.0, affine=None, time_unit="sec"):
    img = nib.Nifti1Image(np.asarray(data), np.diag([3.0, 3.0, 4.0, 1.0]) if affine is None
                          else affine)
    img.header.set_xyzt_units("mm", time_unit)
    if np.ndim(data) == 4:
        img.header.set_zooms((3.0, 3.0, 4.0, tr))
    nib.save(img, path)
    return path


def small_run(n_volumes=12, seed=0):
    rng = np.random.default_rng(seed)
    return (100 + rng.standard_normal((4, 5, 3, n_volumes))).astype(np.float32)


def assert_fails(tmp_path, read, error, *fragments):
    """Reading and writing fails with ``error`` naming every fragment; nothing is written."""
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        write_recording(read(), out / "rec.zarr")
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, message
    assert not out.exists() or not any(out.iterdir())
    return message


# --------------------------------------------------------------------------------------------
# Real recordings
# --------------------------------------------------------------------------------------------


def test_haxby_runs_have_the_documented_layout(haxby):
    runs = sorted(haxby.glob("run-*/bold_1slice.nii.gz"))
    assert len(runs) == 12
    for number, path in enumerate(runs, start=1):
        ds = read_nifti(path, subject="1", task="objectviewing", run=f"{number:02d}")
        assert ds.attrs["run"] == f"{number:02d}" and ds.attrs["subject"] == "1"
        assert ds.attrs["sfreq"] == pytest.approx(1 / 2.5)
        assert ds.attrs["spatial_shape"] == [40, 20, 1] and ds.attrs["coord_frame"] == "scanner"
        # 40 x 20 x 1 = 800 voxels in the slice; 530 of them vary (the rest are zero).
        assert ds.sizes["time"] == 121 and ds.sizes["channel"] == 530
        assert set(ds["ch_type"].values) == {"voxel"} and set(ds["units"].values) == {"a.u."}
        ev = events_frame(ds)
        # The bold_events.tsv beside each run: one 22.5 s block per category, 8 blocks.
        assert len(ev) == 8 and set(ev["label"]) == CATEGORIES
        assert (ev["duration"] == 22.5).all()
        counts = collections.Counter(events_to_volumes(ev, 2.5, 121))
        assert {c: counts[c] for c in CATEGORIES} == dict.fromkeys(CATEGORIES, 9)
        assert counts[""] == 121 - 8 * 9
        assert ds.attrs["source"]["companions"]["events"]["path"] == str(
            (path.parent / "bold_events.tsv").resolve())


def test_haxby_run_round_trips_through_the_store(haxby, tmp_path):
    path = haxby / "run-003" / "bold_1slice.nii.gz"
    events = haxby / "run-003" / "bold_events.tsv"
    ds = read_nifti(path, events=events, subject="1", task="objectviewing", run="03",
                    event_map={"scrambledpix": "scrambled"})
    result = write_recording(ds, tmp_path / "haxby.zarr")
    assert result.status == "created"
    back = open_recording(result.path)
    np.testing.assert_array_equal(back["signal"].values, reference(path, ds))
    assert back["signal"].dtype == np.float32
    ev = events_frame(back)
    table = pd.read_csv(events, sep="\t")
    np.testing.assert_allclose(ev["onset"], table["onset"])
    assert sorted(ev["label"]) == sorted(CATEGORIES - {"scrambledpix"} | {"scrambled"})
    affine = nib.load(path).affine
    np.testing.assert_allclose(
        np.c_[back["x"], back["y"], back["z"]],
        nib.affines.apply_affine(affine, voxel_ijk(back)))
    assert back.attrs["source"]["reader"] == READER
    assert back.attrs["source"]["reader_version"] == nib.__version__
    step = back.attrs["history"][0]
    assert step["step"] == READER and step["params"]["tr"] == 2.5
    assert step["params"]["events"] == str(events.resolve())
    assert step["params"]["event_map"] == {"scrambledpix": "scrambled"}
    np.testing.assert_allclose(back["time"].values, np.arange(121) * 2.5)


def test_nipy_functional_lazy_blocks_equal_nibabel(nipy):
    ds = read_nifti(nipy, block_bytes=60_000)
    assert ds["signal"].data.numblocks[0] > 1  # read a few volumes at a time
    assert ds.sizes == {"time": 20, "channel": 17 * 21 * 3, "event": 0, "interval": 0}
    assert ds.attrs["sfreq"] == pytest.approx(0.5) and ds.attrs["coord_frame"] == "aligned"
    assert ds.attrs["subject"] == "functional" and ds.attrs["run"] == "01"
    np.testing.assert_array_equal(ds["signal"].values, reference(nipy, ds))
    again = read_nifti(nipy, block_bytes=60_000)
    assert again["signal"].data.name == ds["signal"].data.name  # deterministic graph
    whole = read_nifti(nipy)  # other blocks, other keys: both can share one graph
    assert whole["signal"].data.numblocks[0] == 1
    assert not bool((ds["signal"] - whole["signal"]).any())


def test_reading_and_writing_on_a_distributed_cluster(haxby, nipy, tmp_path, dask_client):
    path = haxby / "run-007" / "bold_1slice.nii.gz"
    for i, (src, kwargs) in enumerate([
        (path, {"block_bytes": 100_000}),
        (nipy, {"detrend": True, "standardize": True, "block_bytes": 50_000}),
    ]):
        ds = read_nifti(src, **kwargs)
        back = open_recording(write_recording(ds, tmp_path / f"rec{i}.zarr").path)
        if kwargs.get("detrend"):
            ref = clean(reference(src, back, np.float64), detrend=True, standardize="zscore_sample",
                        filter=False, t_r=2.0).astype(np.float32)
            np.testing.assert_allclose(back["signal"].values, ref, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(back["signal"].values, reference(src, back))


def test_masks_from_file_array_and_computed(nipy, tmp_path):
    img = nib.load(nipy)
    keep = np.zeros(img.shape[:3], dtype=np.uint8)
    keep[3:9, 5:15, 1] = 1
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(keep, img.affine), mask_path)
    ds = read_nifti(nipy, mask=mask_path)
    assert ds.sizes["channel"] == keep.sum() == 60
    assert {tuple(v) for v in voxel_ijk(ds)} == {tuple(v) for v in np.argwhere(keep)}
    assert ds.attrs["history"][0]["params"]["mask"] == str(mask_path.resolve())
    assert ds.attrs["source"]["companions"]["mask"]["path"] == str(mask_path.resolve())
    from_array = read_nifti(nipy, mask=keep.astype(bool))
    np.testing.assert_array_equal(from_array["signal"].values, ds["signal"].values)

    computed = read_nifti(nipy, mask="compute")
    mean_img = nib.Nifti1Image(img.get_fdata().mean(-1), img.affine)
    brain = np.asarray(compute_epi_mask(mean_img, opening=False).dataobj, dtype=bool)
    assert 0 < computed.sizes["channel"] == brain.sum() < 17 * 21 * 3
    np.testing.assert_array_equal(computed["signal"].values, reference(nipy, computed))


def test_cleaning_per_run_matches_nilearn_on_the_whole_run(nipy, tmp_path):
    rng = np.random.default_rng(1)
    confounds = pd.DataFrame(rng.standard_normal((20, 3)), columns=["trans_x", "rot_z", "csf"])
    confounds.loc[0, "csf"] = np.nan  # fMRIPrep's n/a in the first row of derivatives
    conf_path = tmp_path / "confounds.tsv"
    confounds.to_csv(conf_path, sep="\t", index=False, na_rep="n/a")
    kwargs = dict(confounds=conf_path, confound_columns=["trans_x", "csf"], detrend=True,
                  standardize=True, high_pass=0.02)
    ds = read_nifti(nipy, block_bytes=10_000, **kwargs)
    assert ds["signal"].data.numblocks[0] > 1 and ds["signal"].data.numblocks[1] > 1
    used = confounds[["trans_x", "csf"]].fillna(confounds["csf"].mean()).to_numpy()
    expected = clean(reference(nipy, ds, np.float64), detrend=True,
                     standardize="zscore_sample", confounds=used, filter="cosine",
                     high_pass=0.02, t_r=2.0)
    np.testing.assert_allclose(ds["signal"].values, expected, rtol=1e-5, atol=1e-5)
    one_block = read_nifti(nipy, **kwargs)
    np.testing.assert_allclose(one_block["signal"].values, ds["signal"].values, atol=1e-6)
    params = ds.attrs["history"][0]["params"]
    assert params["detrend"] and params["standardize"] and params["high_pass"] == 0.02
    assert params["high_pass_filter"] == "cosine"
    assert params["confounds"] == str(conf_path.resolve())
    assert params["confound_columns"] == ["trans_x", "csf"] and "nilearn" in params["cleaning"]


def test_atlas_gives_parcel_means_and_named_centroids(nipy, tmp_path):
    img = nib.load(nipy)
    labels = np.zeros(img.shape[:3], dtype=np.int16)
    labels[2:8, 4:12, 0] = 1
    labels[8:14, 4:12, 1] = 2
    labels[5:10, 12:18, 2] = 7
    atlas = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, img.affine), atlas)
    names = tmp_path / "atlas_dseg.tsv"
    pd.DataFrame({"index": [1, 2, 7], "name": ["left", "right", "top"]}).to_csv(
        names, sep="\t", index=False)
    ds = read_nifti(nipy, atlas=atlas, atlas_labels=names)
    assert list(ds["channel"].values) == ["left", "right", "top"]
    assert list(ds["region"].values) == ["left", "right", "top"]
    assert set(ds["ch_type"].values) == {"parcel"}
    data = img.get_fdata()
    expected = np.stack([data[labels == v].mean(0) for v in (1, 2, 7)], axis=1)
    np.testing.assert_allclose(ds["signal"].values, expected, rtol=1e-6)
    centroid = nib.affines.apply_affine(img.affine, np.argwhere(labels == 7)).mean(0)
    np.testing.assert_allclose([float(ds[c][2]) for c in "xyz"], centroid)

    cleaned = read_nifti(nipy, atlas=atlas, detrend=True, high_pass=0.05,
                         high_pass_filter="butterworth", block_bytes=30)  # tiny blocks
    assert list(cleaned["channel"].values) == ["parcel1", "parcel2", "parcel7"]
    assert cleaned["signal"].data.numblocks[0] > 1
    np.testing.assert_allclose(
        cleaned["signal"].values,
        clean(expected, detrend=True, standardize=None, filter="butterworth", high_pass=0.05,
              t_r=2.0), rtol=1e-4, atol=1e-3)
    assert cleaned.attrs["history"][0]["params"]["high_pass_filter"] == "butterworth"


def test_events_to_volumes_with_delay_and_markers():
    events = pd.DataFrame({"onset": [0.0, 4.0, 9.0], "duration": [4.0, 0.0, 2.0],
                           "trial_type": ["a", "marker", "b"]})
    assert events_to_volumes(events, 2.0, 6).tolist() == ["a", "a", "marker", "", "", "b"]
    assert events_to_volumes(events, 2.0, 6, delay=2.0).tolist() == ["", "a", "a", "marker",
                                                                     "", ""]


# --------------------------------------------------------------------------------------------
# BIDS
# --------------------------------------------------------------------------------------------


@pytest.fixture
def bids_root(nipy, tmp_path):
    root = tmp_path / "bids"
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.9.0"}')
    img = nib.load(nipy)
    for run in (1, 2):
        nib.save(img, func / f"sub-01_task-nback_run-{run}_bold.nii.gz")
        pd.DataFrame({"onset": [2.0, 20.0], "duration": [10.0, 10.0],
                      "trial_type": ["zero", "two"], "value": [0, 2]}).to_csv(
            func / f"sub-01_task-nback_run-{run}_events.tsv", sep="\t", index=False)
    rng = np.random.default_rng(2)
    pd.DataFrame({"trans_x": rng.standard_normal(20), "global_signal": rng.standard_normal(20)}
                 ).to_csv(func / "sub-01_task-nback_run-2_desc-confounds_timeseries.tsv",
                          sep="\t", index=False)
    return root


def test_bids_listing_and_reading(bids_root, tmp_path):
    runs = list_bids_func(bids_root)
    assert [(r["subject"], r["task"], r["run"]) for r in runs] == [("01", "nback", "1"),
                                                                  ("01", "nback", "2")]
    assert runs[0]["events"].endswith("sub-01_task-nback_run-1_events.tsv")
    assert all(r["bids_root"] == str(bids_root) for r in runs)
    # every entry is exactly the keyword arguments that read this run
    read = [read_bids_func(**entry) for entry in runs]
    assert [ds.attrs["run"] for ds in read] == ["1", "2"]
    assert [ds.attrs["source"]["path"].rsplit("/", 1)[1] for ds in read] == [
        "sub-01_task-nback_run-1_bold.nii.gz", "sub-01_task-nback_run-2_bold.nii.gz"]
    assert all(ds.attrs["history"][0]["params"]["confounds"] is None for ds in read)

    ds = read_bids_func(bids_root, subject="01", task="nback", run="01")
    assert (ds.attrs["subject"], ds.attrs["task"], ds.attrs["run"]) == ("01", "nback", "1")
    ev = events_frame(ds)
    assert ev["label"].tolist() == ["zero", "two"] and ev["value"].tolist() == [0.0, 2.0]
    back = open_recording(write_recording(ds, tmp_path / "bids.zarr").path)
    assert back.sizes["channel"] == 17 * 21 * 3 and back.sizes["time"] == 20
    # events found beside the file, identity from its name
    direct = read_nifti(bids_root / "sub-01" / "func" / "sub-01_task-nback_run-1_bold.nii.gz")
    assert direct.attrs["subject"] == "01" and len(events_frame(direct)) == 2

    cleaned = read_bids_func(bids_root, subject="01", task="nback", run=2,
                             confound_columns=["trans_x"], detrend=True)
    params = cleaned.attrs["history"][0]["params"]
    assert params["confounds"].endswith("run-2_desc-confounds_timeseries.tsv")
    assert params["confound_columns"] == ["trans_x"]


def test_bids_selection_errors_name_the_dataset(bids_root, tmp_path):
    assert_fails(tmp_path, lambda: read_bids_func(bids_root, subject="01", task="nback"),
                 IngestError, bids_root, "2 BOLD runs match", "run=")
    assert_fails(tmp_path, lambda: read_bids_func(bids_root, subject="02", task="nback"),
                 IngestError, bids_root, "no BOLD run matches sub-02")
    assert_fails(tmp_path, lambda: read_bids_func(bids_root, subject="01", task="nback", run=1,
                                                  confound_columns=["trans_x"]),
                 IngestError, "sub-01_task-nback_run-1_bold.nii.gz", "desc-confounds_timeseries")


# --------------------------------------------------------------------------------------------
# Bad inputs: the error names the file and the problem, and nothing is written
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02], ids=["half", "tail", "header"])
def test_truncated_gzip_is_refused(nipy, tmp_path, keep):
    raw = nipy.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    assert_fails(tmp_path, lambda: read_nifti(bad), IngestError, bad, "read")


def flip_middle(good, bad, n=16):
    """Copy ``good`` to ``bad`` with ``n`` bytes in the middle inverted."""
    raw = bytearray(good.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + n] = bytes(b ^ 0xFF for b in raw[middle:middle + n])
    bad.write_bytes(bytes(raw))
    return bad


def test_corrupt_middle_of_a_gzip_is_reported_as_corrupt(tmp_path):
    data = (100 + np.random.default_rng(8).standard_normal((8, 9, 6, 40))).astype(np.float32)
    good = save_nifti(tmp_path / "good.nii.gz", data)
    bad = flip_middle(good, tmp_path / "bad.nii.gz")
    message = assert_fails(tmp_path, lambda: read_nifti(bad), IngestError, bad, "corrupt",
                           "gzip")
    assert "NaN" not in message
    # the check runs once per file version: a second read of the good file costs no decompression
    checks = base._gzip_problem.cache_info()
    first = read_nifti(good)
    second = read_nifti(good)
    after = base._gzip_problem.cache_info()
    assert (after.misses - checks.misses, after.hits - checks.hits) == (1, 1)
    np.testing.assert_array_equal(first["signal"].values, second["signal"].values)
    events = tmp_path / "events.tsv"
    pd.DataFrame({"onset": np.arange(0.0, 60.0, 0.5), "duration": 0.5,
                  "trial_type": "a"}).to_csv(events, sep="\t", index=False)
    with gzip.open(tmp_path / "events.tsv.gz", "wb") as fh:
        fh.write(events.read_bytes())
    bad_events = flip_middle(tmp_path / "events.tsv.gz", tmp_path / "bad_events.tsv.gz", n=4)
    assert_fails(tmp_path, lambda: read_nifti(good, events=bad_events), IngestError,
                 bad_events, "corrupt")
    assert len(events_frame(read_nifti(good, events=tmp_path / "events.tsv.gz"))) == 120


def test_repetition_time_from_the_json_sidecar(tmp_path, caplog):
    path = save_nifti(tmp_path / "sub-01_task-x_bold.nii.gz", small_run(), tr=2.0)
    sidecar = tmp_path / "sub-01_task-x_bold.json"
    sidecar.write_text('{"RepetitionTime": 2.5, "TaskName": "x"}')
    with caplog.at_level("WARNING", logger="neurodecode.ingest.fmri"):
        ds = read_nifti(path)
    assert ds.attrs["sfreq"] == pytest.approx(0.4)
    assert ds.attrs["history"][0]["params"]["tr_from"] == "sidecar"
    assert "2 s" in caplog.text and "2.5 s" in caplog.text
    assert ds.attrs["source"]["companions"]["sidecar"]["path"] == str(sidecar.resolve())
    assert read_nifti(path, tr=2.0).attrs["history"][0]["params"]["tr_from"] == "argument"
    sidecar.write_text('{"RepetitionTime": -1}')
    assert_fails(tmp_path, lambda: read_nifti(path), IngestError, sidecar, "RepetitionTime")


def test_truncated_uncompressed_file_is_refused(tmp_path):
    full = save_nifti(tmp_path / "full.nii", small_run())
    bad = tmp_path / "cut.nii"
    bad.write_bytes(full.read_bytes()[:-100])
    assert_fails(tmp_path, lambda: read_nifti(bad), IngestError, bad, "truncated")


def test_three_dimensional_image_is_refused(tmp_path):
    bad = save_nifti(tmp_path / "anat.nii.gz", small_run()[..., 0])
    assert_fails(tmp_path, lambda: read_nifti(bad), IngestError, bad, "3-D", "4-D")


def test_mask_of_the_wrong_shape_or_grid_is_refused(tmp_path):
    path = save_nifti(tmp_path / "run.nii.gz", small_run())
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 2), np.uint8), np.diag([3.0, 3.0, 4.0, 1.0])), mask)
    assert_fails(tmp_path, lambda: read_nifti(path, mask=mask), IngestError,
                 mask, path, "(4, 5, 2)", "(4, 5, 3)")
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), np.uint8), np.diag([2.0, 3.0, 4.0, 1.0])),
             shifted)
    assert_fails(tmp_path, lambda: read_nifti(path, mask=shifted), IngestError,
                 shifted, path, "affines differ")
    assert_fails(tmp_path, lambda: read_nifti(path, mask=np.ones((4, 5), bool)), IngestError,
                 path, "(4, 5)", "(4, 5, 3)")


def test_empty_mask_is_refused(tmp_path):
    path = save_nifti(tmp_path / "run.nii.gz", small_run())
    mask = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.uint8), np.diag([3.0, 3.0, 4.0, 1.0])), mask)
    assert_fails(tmp_path, lambda: read_nifti(path, mask=mask), IngestError,
                 mask, "selects no voxel")
    flat = save_nifti(tmp_path / "flat.nii.gz", np.full((4, 5, 3, 6), 7.0, np.float32))
    assert_fails(tmp_path, lambda: read_nifti(flat), IngestError, flat, "no voxel changes")


def test_confounds_with_the_wrong_number_of_rows_are_refused(tmp_path):
    path = save_nifti(tmp_path / "run.nii.gz", small_run(n_volumes=12))
    conf = tmp_path / "confounds.tsv"
    pd.DataFrame({"trans_x": np.arange(11.0)}).to_csv(conf, sep="\t", index=False)
    assert_fails(tmp_path, lambda: read_nifti(path, confounds=conf), IngestError,
                 conf, "11 rows", "12 volumes")
    assert_fails(tmp_path, lambda: read_nifti(path, confounds=conf, confound_columns=["csf"]),
                 IngestError, conf, "lacks column(s) ['csf']")


def test_events_past_the_end_of_the_run_are_refused(tmp_path):
    path = save_nifti(tmp_path / "run.nii.gz", small_run(n_volumes=12), tr=2.0)
    events = tmp_path / "events.tsv"
    pd.DataFrame({"onset": [2.0, 20.0], "duration": [4.0, 6.0],
                  "trial_type": ["a", "late"]}).to_csv(events, sep="\t", index=False)
    assert_fails(tmp_path, lambda: read_nifti(path, events=events), IngestError,
                 events, "outside the run", "24 s", "'late' at 20 s")


@pytest.mark.parametrize(("name", "content"), [
    ("run.txt", None),
    ("junk.nii.gz", b"this is not a NIfTI image" * 20),
    ("junk.nii", b"\x00\x01 not a header" * 40),
])
def test_non_nifti_files_are_refused(tmp_path, name, content):
    bad = tmp_path / name
    if content is None:
        save_nifti(tmp_path / "run.nii", small_run())
        shutil.copy(tmp_path / "run.nii", bad)
        problem = "not a NIfTI file"
    else:
        bad.write_bytes(content)
        problem = "not gzip-compressed" if name.endswith(".gz") else "cannot be read as NIfTI"
    assert_fails(tmp_path, lambda: read_nifti(bad), IngestError, bad, problem)


def test_nan_voxels_abort_the_write_naming_the_file(tmp_path):
    data = small_run()
    data[1, 2, 0, 4:7] = np.nan
    data[3, 0, 2, :] = np.nan  # constant NaN: still kept by the default mask
    path = save_nifti(tmp_path / "nan.nii.gz", data)
    ds = read_nifti(path)
    assert ds.sizes["channel"] == 4 * 5 * 3
    message = assert_fails(tmp_path, lambda: ds, SchemaError, path.resolve(), "NaN/Inf")
    assert "15 NaN/Inf" in message


def test_missing_repetition_time_is_refused_unless_given(tmp_path):
    path = save_nifti(tmp_path / "nort.nii.gz", small_run(), tr=0.0)
    assert_fails(tmp_path, lambda: read_nifti(path), IngestError, path, "no repetition time",
                 "tr=")
    ds = read_nifti(path, tr=1.5)
    assert ds.attrs["sfreq"] == pytest.approx(1 / 1.5)
    assert ds.attrs["history"][0]["params"]["tr_from"] == "argument"
    ms = save_nifti(tmp_path / "ms.nii.gz", small_run(), tr=1500.0, time_unit="msec")
    assert read_nifti(ms).attrs["sfreq"] == pytest.approx(1 / 1.5)

