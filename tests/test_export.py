"""Back to MNE and nibabel: stores of MNE- and nibabel-written files round-trip exactly."""

from __future__ import annotations

import json

import mne
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurodecode.data.samples import epochs, open_recordings
from neurodecode.export import mask_image, to_mne_epochs, to_mne_raw, to_nifti
from neurodecode.ingest.eeg import read_mne
from neurodecode.ingest.fmri import read_nifti
from neurodecode.store import open_recording, write_recording

from .conftest import small_recording

SFREQ = 200.0
NAMES = ["Fz", "Cz", "Pz", "Oz", "EOG1", "ECG1", "STI"]
TYPES = ["eeg", "eeg", "eeg", "eeg", "eog", "ecg", "stim"]
# onsets on whole samples, so that MNE's own epoching and ours pick the same first sample
ONSETS = [1.0, 2.5, 4.0, 5.5, 7.0, 8.5]
LABELS = ["left", "right", "left", "right", "left", "right"]


def _mne_raw(seed: int = 0) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((len(NAMES), int(10 * SFREQ))) * 2e-5
    data[-1] = 0.0
    raw = mne.io.RawArray(data, mne.create_info(NAMES, SFREQ, TYPES), verbose="error")
    montage = mne.channels.make_standard_montage("colin27_1020")
    raw.set_montage(montage, on_missing="ignore", verbose="error")
    raw.set_annotations(
        mne.Annotations(ONSETS, [0.5, 0.5, 0.0, 1.0, 0.5, 0.25], LABELS), verbose="error"
    )
    return raw


@pytest.fixture(scope="module")
def fif_store(tmp_path_factory):
    """A FIF file written by MNE, and its store written by ``write_recording``."""
    root = tmp_path_factory.mktemp("fif")
    fif = root / "sub-07_task-motor_run-02_raw.fif"
    _mne_raw().save(fif, verbose="error")
    store = root / "rec.zarr"
    write_recording(read_mne(fif), store)
    return fif, store


def test_fif_round_trip_is_exact(fif_store):
    fif, store = fif_store
    ref = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    raw = to_mne_raw(store)
    assert isinstance(raw, mne.io.RawArray) and raw.preload
    assert raw.get_data().dtype == np.float64
    np.testing.assert_array_equal(raw.get_data(), ref.get_data().astype(np.float32))
    assert raw.ch_names == ref.ch_names
    assert raw.get_channel_types() == ref.get_channel_types() == TYPES
    assert [c["unit"] for c in raw.info["chs"]] == [c["unit"] for c in ref.info["chs"]]
    assert raw.info["sfreq"] == ref.info["sfreq"]
    np.testing.assert_array_equal(raw.annotations.onset, ref.annotations.onset - ref.first_time)
    np.testing.assert_array_equal(raw.annotations.duration, ref.annotations.duration)
    assert list(raw.annotations.description) == list(ref.annotations.description) == LABELS


def test_montage_positions_round_trip(fif_store):
    fif, store = fif_store
    ref = mne.io.read_raw_fif(fif, verbose="error").get_montage().get_positions()
    got = to_mne_raw(store).get_montage().get_positions()
    assert got["coord_frame"] == ref["coord_frame"] == "head"
    assert list(got["ch_pos"]) == ["Fz", "Cz", "Pz", "Oz"]  # EOG/ECG/stim have no position
    for name, pos in ref["ch_pos"].items():
        np.testing.assert_array_equal(got["ch_pos"][name], pos)


def test_identity_and_schema_metadata_in_info(fif_store):
    _, store = fif_store
    raw = to_mne_raw(store)
    assert raw.info["subject_info"]["his_id"] == "07"
    meta = json.loads(raw.info["description"])
    assert meta["recording"] == "sub-07_ses-01_task-motor_run-02"
    assert (meta["subject"], meta["task"], meta["run"], meta["modality"]) == (
        "07", "motor", "02", "eeg")  # fmt: skip
    assert meta["ch_type"] == TYPES
    assert meta["source"]["reader"] == "neurodecode.ingest.eeg.read_mne"


def test_picks_by_type_and_name(fif_store):
    _, store = fif_store
    assert to_mne_raw(store, picks="eeg").ch_names == ["Fz", "Cz", "Pz", "Oz"]
    raw = to_mne_raw(store, picks=["ECG1", "Fz"])
    assert raw.ch_names == ["ECG1", "Fz"]
    ref = open_recording(store)["signal"].sel(channel="ECG1").values
    np.testing.assert_array_equal(raw.get_data()[0], ref)
    with pytest.raises(ValueError, match=r"rec\.zarr: picks \['nope'\] are neither"):
        to_mne_raw(store, picks=["Fz", "nope"])


def test_time_offset_and_schema_types(tmp_path):
    events = pd.DataFrame({"onset": [6.0, 7.5], "duration": [0.0, 1.0], "label": ["a", "b"]})
    intervals = pd.DataFrame({"start": [5.0], "stop": [25.0], "split": ["train"]})
    ds = small_recording(t0=5.0, events=events, intervals=intervals,
                         ch_types=["eeg"] * 6 + ["meg", "roi"], units=["V"] * 6 + ["T/m", "dF/F"])
    store = tmp_path / "offset.zarr"
    write_recording(ds, store)
    raw = to_mne_raw(store)
    assert raw.first_samp == 500 and raw.first_time == 5.0
    np.testing.assert_array_equal(raw.annotations.onset, [6.0, 7.5])
    assert raw.get_channel_types()[-2:] == ["grad", "misc"]
    assert json.loads(raw.info["description"])["units"][-2:] == ["T/m", "dF/F"]
    np.testing.assert_array_equal(raw.get_data(), ds["signal"].values.T)
    with pytest.raises(ValueError, match="picks is empty"):
        to_mne_raw(store, picks=[])


def test_edf_round_trip_is_exact(tmp_path):
    raw = _mne_raw(seed=1)
    raw.pick(["Fz", "Cz", "Pz", "Oz", "EOG1"])
    edf = tmp_path / "rec.edf"
    mne.export.export_raw(edf, raw, fmt="edf", verbose="error")
    ref = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    store = tmp_path / "rec.zarr"
    write_recording(read_mne(edf), store)
    out = to_mne_raw(store)
    np.testing.assert_array_equal(out.get_data(), ref.get_data().astype(np.float32))
    assert out.ch_names == ref.ch_names
    assert out.get_channel_types() == ref.get_channel_types()
    np.testing.assert_array_equal(out.annotations.onset, ref.annotations.onset - ref.first_time)
    np.testing.assert_array_equal(out.annotations.duration, ref.annotations.duration)
    assert list(out.annotations.description) == list(ref.annotations.description)


def test_epochs_array_matches_epochs_and_mne(fif_store):
    fif, store = fif_store
    recs = open_recordings([store])
    s = epochs(recs, tmin=-0.2, tmax=0.5, labels=["left", "right"])
    ep = to_mne_epochs(s)
    assert isinstance(ep, mne.EpochsArray)
    assert ep.get_data().shape == s.X.shape == (6, 4, 141)
    np.testing.assert_array_equal(ep.get_data(), s.X)
    assert ep.event_id == {"left": 1, "right": 2}
    assert [ep.event_id[c] for c in s.y] == ep.events[:, 2].tolist()
    assert ep.tmin == pytest.approx(-0.2) and ep.ch_names == s.ch_names
    assert ep.get_channel_types() == ["eeg"] * 4
    assert ep.metadata["onset"].tolist() == ONSETS
    assert ep.metadata["recording"].tolist() == [str(store)] * 6
    # the same trials as MNE's own epoching of the file
    ref_raw = mne.io.read_raw_fif(fif, preload=True, verbose="error").pick("eeg")
    events, ids = mne.events_from_annotations(ref_raw, verbose="error")
    ref = mne.Epochs(ref_raw, events, ids, tmin=-0.2, tmax=0.5, baseline=None, preload=True,
                     verbose="error")
    np.testing.assert_array_equal(ep.get_data(), ref.get_data().astype(np.float32))
    np.testing.assert_array_equal(ep.events[:, 0], ref.events[:, 0])
    assert ep["left"].get_data().shape[0] == 3


def test_epochs_array_on_eegbci(sample_data, tmp_path):
    edfs = [sample_data / "eeg" / "eegbci_S001" / f"S001R{r}.edf" for r in ("04", "08")]
    stores = []
    for i, edf in enumerate(edfs):
        stores.append(tmp_path / f"r{i}.zarr")
        write_recording(read_mne(edf, run=str(i + 1)), stores[-1])
    recs = open_recordings(stores)
    s = epochs(recs, tmin=0.0, tmax=1.0, labels={"T1": "left", "T2": "right"})
    ep = to_mne_epochs(s, event_id={"left": 7, "right": 9})
    assert ep.get_data().shape == s.X.shape and s.X.shape[1:] == (64, 161)
    assert ep.event_id == {"left": 7, "right": 9}
    np.testing.assert_array_equal(ep.events[:, 2], np.where(s.y == "left", 7, 9))
    assert len(np.unique(ep.events[:, 0])) == len(ep)  # two runs, never one sample twice
    assert set(ep.metadata["run"]) == {"1", "2"}
    with pytest.raises(ValueError, match=r"no code for the class\(es\) \['right'\]"):
        to_mne_epochs(s, event_id={"left": 1})


# ------------------------------------------------------------------------------------ NIfTI


def _affine() -> np.ndarray:
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1.0]])  # fmt: skip
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.5, 3.0, 3.5])
    affine[:3, 3] = [-40.0, 12.5, -7.25]
    return affine


@pytest.fixture(scope="module")
def nifti_store(tmp_path_factory):
    """A 4-D NIfTI written by nibabel (rotated, anisotropic affine), a mask, and the store."""
    root = tmp_path_factory.mktemp("nifti")
    rng = np.random.default_rng(3)
    shape = (6, 7, 5)
    data = (1000 + 50 * rng.standard_normal((*shape, 12))).astype(np.float32)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*img.header.get_zooms()[:3], 2.0))
    img.set_sform(_affine(), code="mni")
    path = root / "sub-02_task-faces_run-01_bold.nii.gz"
    nib.save(img, path)
    mask = np.zeros(shape, dtype=bool)
    mask[1:5, 2:6, 1:4] = True
    mask[0, 0, 0] = True
    store = root / "bold.zarr"
    write_recording(read_nifti(path, mask=mask), store)
    return path, mask, store


def test_to_nifti_round_trip(nifti_store, tmp_path):
    path, mask, store = nifti_store
    src = nib.load(path)
    img = to_nifti(store)
    assert img.shape == src.shape
    np.testing.assert_array_equal(img.affine, src.affine)
    data = np.asarray(img.dataobj)
    orig = np.asarray(src.dataobj)
    np.testing.assert_array_equal(data[mask], orig[mask])
    assert not data[~mask].any()
    assert img.header.get_zooms()[3] == pytest.approx(2.0)
    np.testing.assert_allclose(img.header.get_zooms()[:3], src.header.get_zooms()[:3], rtol=1e-6)
    # saved and read back by nibabel, the affine and frame code survive
    nib.save(img, tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(back.affine, src.affine)
    assert int(back.header["sform_code"]) == int(src.header["sform_code"]) == 4
    np.testing.assert_array_equal(np.asarray(back.dataobj)[mask], orig[mask])


def test_to_nifti_volumes_and_mask(nifti_store):
    path, mask, store = nifti_store
    orig = np.asarray(nib.load(path).dataobj)
    img = to_nifti(store, volumes=slice(3, 7))
    assert img.shape == (*mask.shape, 4)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[mask], orig[mask][:, 3:7])
    assert img.header["toffset"] == pytest.approx(6.0)
    m = mask_image(store)
    np.testing.assert_array_equal(np.asarray(m.dataobj).astype(bool), mask)
    np.testing.assert_array_equal(m.affine, nib.load(path).affine)


def test_voxel_store_to_raw_keeps_schema_types(nifti_store):
    _, mask, store = nifti_store
    raw = to_mne_raw(store)
    assert set(raw.get_channel_types()) == {"misc"}
    assert len(raw.ch_names) == mask.sum()
    meta = json.loads(raw.info["description"])
    assert set(meta["ch_type"]) == {"voxel"} and set(meta["units"]) == {"a.u."}
    assert raw.info["sfreq"] == pytest.approx(0.5)


def test_parcel_store_is_refused(nifti_store, tmp_path):
    path, mask, _ = nifti_store
    atlas = np.zeros(mask.shape, dtype=np.int16)
    atlas[:3] = 1
    atlas[3:] = 2
    store = tmp_path / "parcels.zarr"
    write_recording(read_nifti(path, atlas=atlas), store)
    with pytest.raises(ValueError, match=r"parcels\.zarr: a parcel store cannot be put back on "
                                         r"voxels"):
        to_nifti(store)
    with pytest.raises(ValueError, match="parcel store"):
        mask_image(store)


def test_non_voxel_store_is_refused(fif_store):
    _, store = fif_store
    with pytest.raises(ValueError, match=r"rec\.zarr: only voxel recordings can become NIfTI"):
        to_nifti(store)


def test_quiet_unless_asked(fif_store, capsys):
    _, store = fif_store
    capsys.readouterr()
    to_mne_raw(store)
    assert "Creating RawArray" not in capsys.readouterr().out
    to_mne_raw(store, verbose="info")
    assert "Creating RawArray" in capsys.readouterr().out
