"""EEG/MEG/iEEG readers: real recordings in, valid lazy recordings out, bad files refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import dask.array as da
import mne
import numpy as np
import pandas as pd
import pytest

from neurodecode.ingest import IngestError
from neurodecode.ingest.eeg import list_bids_recordings, read_bids, read_mne, read_muse_csv
from neurodecode.schema import SchemaError, events_frame
from neurodecode.store import open_recording, write_recording

EEGBCI = "eeg/eegbci_S001/S001R04.edf"
EEGLAB = "eeg/eeglab/test_raw.set"
PERSYST = "ecog/persyst_pt1/sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay"
MUSE_P300 = "eeg/muse_p300/subject1-session1-data_2017-02-04-15_45_13.csv"  # column "Marker"
MUSE_N170 = "eeg/muse_n170/subject11-session1-recording_2018-06-06-18.42.19.csv.csv"  # jittery

realdata = pytest.mark.realdata


def round_trip(ds, tmp_path: Path):
    """Write a recording into ``tmp_path`` and reopen it."""
    result = write_recording(ds, tmp_path / "rec.zarr")
    assert result.status == "created"
    return open_recording(result.path)


def assert_refused(read, bad: Path, tmp_path: Path, *fragments: str, error=IngestError):
    """``read()`` (or writing its result) fails naming ``bad`` and the problem; nothing written."""
    out = tmp_path / "out.zarr"
    with pytest.raises(error) as info:
        write_recording(read(), out)
    message = str(info.value)
    assert str(bad) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    assert not out.exists()
    assert not list(tmp_path.glob(".out.zarr*"))
    return message


def write_fif(path: Path, data: np.ndarray, ch_names, ch_types, sfreq: float = 100.0,
              annotations: mne.Annotations | None = None, **kwargs) -> Path:
    info = mne.create_info(list(ch_names), sfreq, ch_types, verbose="error")
    raw = mne.io.RawArray(data, info, verbose="error", **kwargs)
    if annotations is not None:
        raw.set_annotations(annotations)
    raw.save(path, verbose="error")
    return path


def write_edf(path: Path, labels, samples_per_record, n_records: int = 10) -> Path:
    """A minimal EDF file (1 s records, int16 ramps) with the given per-channel rates."""
    def field(value, width):
        return str(value).ljust(width)[:width].encode("ascii")

    ns = len(labels)
    header = b"".join([field(0, 8), field("X X X X", 80), field("Startdate X X X X", 80),
                       field("01.01.20", 8), field("00.00.00", 8), field(256 * (ns + 1), 8),
                       field("", 44), field(n_records, 8), field(1, 8), field(ns, 4)])
    for width, values in [(16, labels), (80, [""] * ns), (8, ["uV"] * ns),
                          (8, [-3200] * ns), (8, [3200] * ns), (8, [-32768] * ns),
                          (8, [32767] * ns), (80, [""] * ns), (8, samples_per_record),
                          (32, [""] * ns)]:
        header += b"".join(field(v, width) for v in values)
    records = b"".join(np.arange(n, dtype="<i2").tobytes()
                       for _ in range(n_records) for n in samples_per_record)
    path.write_bytes(header + records)
    return path


# --------------------------------------------------------------------------- read_mne


@realdata
def test_eegbci_edf(sample_data, tmp_path):
    path = sample_data / EEGBCI
    ds = read_mne(path)
    assert isinstance(ds["signal"].data, da.Array)
    assert ds.sizes["channel"] == 64 and ds.sizes["time"] == 20000
    assert ds.attrs["sfreq"] == 160.0 and ds.attrs["modality"] == "eeg"
    assert set(ds["ch_type"].values) == {"eeg"} and set(ds["units"].values) == {"V"}
    assert ds.attrs["subject"] == "S001R04" and ds.attrs["task"] == "unknown"
    assert ds.attrs["source"]["reader"] == "neurodecode.ingest.eeg.read_mne"
    assert ds.attrs["source"]["reader_version"] == mne.__version__
    assert ds.attrs["history"][0]["step"] == "neurodecode.ingest.eeg.read_mne"
    ev = events_frame(ds)
    counts = ev["label"].value_counts().to_dict()
    assert len(ev) == 30 and counts["T0"] == 15 and {counts["T1"], counts["T2"]} == {7, 8}
    assert ev["value"].isna().all() and (ev["onset"] + ev["duration"] <= 125.0 + 1e-9).all()
    assert read_mne(path)["signal"].data.name == ds["signal"].data.name  # deterministic graph

    back = round_trip(ds, tmp_path)
    expected = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data(stop=1000)
    np.testing.assert_array_equal(back["signal"][:1000].values, expected.T.astype(np.float32))
    pd.testing.assert_frame_equal(events_frame(back), ev)
    assert back.attrs["sfreq"] == 160.0 and back.attrs["source"]["sha256"] == \
        ds.attrs["source"]["sha256"]


@realdata
def test_edf_picks_and_event_map(sample_data):
    ds = read_mne(sample_data / EEGBCI, picks=["Cz..", "Fc5."], event_map={"T0": "rest"},
                  task="imagery", subject="001")
    assert list(ds["channel"].values) == ["Cz..", "Fc5."]  # in the order asked for
    raw = mne.io.read_raw_edf(sample_data / EEGBCI, verbose="error")
    expected = raw.get_data(picks=[10, 0], stop=50).T.astype(np.float32)
    np.testing.assert_array_equal(ds["signal"][:50].values, expected)
    assert events_frame(ds)["label"].value_counts()["rest"] == 15
    assert (ds.attrs["subject"], ds.attrs["task"]) == ("001", "imagery")
    assert ds.attrs["history"][0]["params"]["picks"] == ["Cz..", "Fc5."]


@realdata
def test_eeglab_set(sample_data, tmp_path):
    ds = read_mne(sample_data / EEGLAB, task="visual")
    assert ds.sizes["channel"] == 32 and ds.attrs["sfreq"] == 128.0
    assert ds.sizes["time"] == 30504  # 238.3125 s
    assert ds.attrs["source"]["companions"]  # the .fdt that holds the samples
    back = round_trip(ds, tmp_path)
    assert events_frame(back)["label"].value_counts().to_dict() == {"square": 80, "rt": 74}
    assert back.attrs["task"] == "visual"


@realdata
def test_persyst_ecog(sample_data, tmp_path):
    path = sample_data / PERSYST
    default = read_mne(path)
    assert default.attrs["modality"] == "eeg" and set(default["ch_type"].values) == {"eeg"}
    ecog = read_mne(path, ch_types="ecog")
    names = list(default["channel"].values)
    by_name = read_mne(path, ch_types={n: "ecog" for n in names})
    for ds in (ecog, by_name):
        assert ds.attrs["modality"] == "ecog" and set(ds["ch_type"].values) == {"ecog"}
        assert ds.sizes["channel"] == 83 and ds.attrs["sfreq"] == 200.0
    # identity from the BIDS entities of the file name
    a = ecog.attrs
    assert (a["subject"], a["session"], a["task"], a["run"]) == ("pt1", "02", "monitor", "01")
    back = round_trip(ecog, tmp_path)
    assert back.attrs["modality"] == "ecog" and back.sizes["time"] == 847
    assert events_frame(back)["label"].value_counts()["seizure"] == 2


@realdata
def test_persyst_with_explicit_sidecars(sample_data, tmp_path):
    names = list(read_mne(sample_data / PERSYST)["channel"].values)
    channels = tmp_path / "channels.tsv"
    pd.DataFrame({"name": names, "type": ["ECOG"] * 82 + ["ECG"], "units": "µV"}).to_csv(
        channels, sep="\t", index=False)
    electrodes = tmp_path / "sub-pt1_ses-02_space-fsaverage_electrodes.tsv"
    pd.DataFrame({"name": names[:2], "x": [10.0, 20.0], "y": [1.0, "n/a"], "z": [0.0, 5.0]}).to_csv(
        electrodes, sep="\t", index=False)
    (tmp_path / "sub-pt1_ses-02_space-fsaverage_coordsystem.json").write_text(json.dumps(
        {"iEEGCoordinateSystem": "fsaverage", "iEEGCoordinateUnits": "mm"}))
    ds = read_mne(sample_data / PERSYST, channels_tsv=channels, electrodes_tsv=electrodes)
    assert ds.attrs["modality"] == "ecog" and ds.attrs["coord_frame"] == "fsaverage"
    assert list(ds["ch_type"].values[-2:]) == ["ecog", "ecg"]
    np.testing.assert_allclose(ds["x"].values[:2], [0.01, 0.02])
    assert np.isnan(ds["y"].values[1]) and np.isnan(ds["x"].values[2:]).all()
    assert str(electrodes) in ds.attrs["source"]["companions"]


def test_bids_sidecars_found_next_to_file(tmp_path):
    names = ["LA1", "LA2", "LA3", "G1", "G2", "ECG"]
    data = np.random.default_rng(0).standard_normal((6, 500)) * 1e-5
    path = write_fif(tmp_path / "sub-07_ses-01_task-rest_run-02_ieeg.fif", data, names, "eeg")
    pd.DataFrame({"name": names, "type": ["SEEG"] * 3 + ["ECOG"] * 2 + ["ECG"]}).to_csv(
        tmp_path / "sub-07_ses-01_task-rest_run-02_channels.tsv", sep="\t", index=False)
    pd.DataFrame({"name": names[:5], "x": [1, 2, 3, 4, 5], "y": 0, "z": 0}).to_csv(
        tmp_path / "sub-07_ses-01_space-ACPC_electrodes.tsv", sep="\t", index=False)
    (tmp_path / "sub-07_ses-01_space-ACPC_coordsystem.json").write_text(json.dumps(
        {"iEEGCoordinateSystem": "ACPC", "iEEGCoordinateUnits": "mm"}))
    ds = read_mne(path)
    assert list(ds["ch_type"].values) == ["seeg"] * 3 + ["ecog"] * 2 + ["ecg"]
    assert ds.attrs["modality"] == "seeg" and ds.attrs["coord_frame"] == "ACPC"
    np.testing.assert_allclose(ds["x"].values[:5], [0.001, 0.002, 0.003, 0.004, 0.005])
    a = ds.attrs
    assert (a["subject"], a["session"], a["task"], a["run"]) == ("07", "01", "rest", "02")
    assert a["history"][0]["params"]["channels_tsv"].endswith("_channels.tsv")


def test_meg_fif_units_positions_and_onsets(tmp_path):
    names = ["MEG0111", "MEG0112", "MEG0113", "EEG001", "STI014"]
    info = mne.create_info(names, 200.0, ["mag", "grad", "grad", "eeg", "stim"])
    info["chs"][0]["loc"][:3] = [0.01, 0.02, 0.03]
    shift = np.eye(4)
    shift[2, 3] = 0.05
    info["dev_head_t"] = mne.transforms.Transform("meg", "head", shift)
    raw = mne.io.RawArray(np.zeros((5, 1000)) + np.arange(1000) * 1e-13, info, first_samp=400,
                          verbose="error")
    raw.set_meas_date(1_600_000_000)
    raw.set_annotations(mne.Annotations([0.5, 3.0], [0.1, 0.0], ["7", "go"],
                                        orig_time=None))  # onsets from the first sample
    path = tmp_path / "meg_raw.fif"
    raw.save(path, verbose="error")
    ds = read_mne(path)
    assert ds.attrs["modality"] == "meg"
    assert list(ds["ch_type"].values) == ["mag", "grad", "grad", "eeg", "stim"]
    assert list(ds["units"].values) == ["T", "T/m", "T/m", "V", "V"]  # MNE's stim unit
    assert ds.attrs["coord_frame"] == "head"  # sensor moved from the device frame to the head
    np.testing.assert_allclose([ds["x"][0], ds["y"][0], ds["z"][0]], [0.01, 0.02, 0.08])
    assert np.isnan(ds["x"].values[1:]).all()
    ev = events_frame(ds)
    np.testing.assert_allclose(ev["onset"], [0.5, 3.0])
    assert ev["value"].iloc[0] == 7 and np.isnan(ev["value"].iloc[1])
    assert read_mne(path, modality="eeg", picks="eeg").attrs["modality"] == "eeg"


def test_drop_flat_channel(tmp_path, caplog):
    data = np.random.default_rng(1).standard_normal((3, 400)) * 1e-5
    data[1] = 2e-6
    path = write_fif(tmp_path / "flat_raw.fif", data, ["C3", "C4", "Cz"], "eeg")
    assert read_mne(path).sizes["channel"] == 3  # only when asked
    with caplog.at_level(logging.WARNING, logger="neurodecode.ingest.eeg"):
        ds = read_mne(path, drop_flat=True)
    assert list(ds["channel"].values) == ["C3", "Cz"]
    assert "C4" in caplog.text and "flat" in caplog.text
    back = round_trip(ds, tmp_path)
    steps = [h["step"] for h in back.attrs["history"]]
    assert steps == ["neurodecode.ingest.eeg.read_mne", "neurodecode.ingest.eeg.drop_flat"]
    assert back.attrs["history"][1]["params"] == {"channels": ["C4"]}
    assert back.attrs["history"][0]["params"]["drop_flat"] is True
    np.testing.assert_array_equal(back["signal"].values, data[[0, 2]].T.astype(np.float32))


def exported_edf(tmp_path: Path, name: str = "sub-05_task-oddball_run-2_eeg.edf") -> Path:
    """An EDF written by ``mne.export.export_raw``, with annotations of its own."""
    data = np.random.default_rng(5).standard_normal((4, 1000)) * 1e-5
    raw = mne.io.RawArray(data, mne.create_info(["Fz", "Cz", "Pz", "Oz"], 100.0, "eeg"),
                          verbose="error")
    raw.set_annotations(mne.Annotations([0.5, 7.0], [0.0, 0.0], ["annot_a", "annot_b"]))
    path = tmp_path / name
    mne.export.export_raw(path, raw, verbose="error")
    return path


def test_events_tsv_beside_an_edf_replaces_its_annotations(tmp_path):
    path = exported_edf(tmp_path)
    events = tmp_path / "sub-05_task-oddball_run-2_events.tsv"
    pd.DataFrame({"onset": [1.0, 2.5, 6.0], "duration": [0.2, "n/a", 0.2],
                  "trial_type": ["standard", "target", "standard"],
                  "value": [1, 2, 1], "sample": [100, 250, 600]}).to_csv(
        events, sep="\t", index=False, na_rep="n/a")
    back = round_trip(read_mne(path, event_map={"target": "deviant"}), tmp_path)
    ev = events_frame(back)
    assert ev["label"].tolist() == ["standard", "deviant", "standard"]
    np.testing.assert_allclose(ev["onset"], [1.0, 2.5, 6.0])
    np.testing.assert_allclose(ev["duration"], [0.2, 0.0, 0.2])
    assert ev["value"].tolist() == [1.0, 2.0, 1.0]
    assert str(events.resolve()) in back.attrs["source"]["companions"]
    assert back.attrs["history"][0]["params"]["events"] == str(events.resolve())
    # events=False keeps the annotations of the file; a DataFrame replaces both
    own = events_frame(read_mne(path, events=False))
    assert own["label"].tolist() == ["annot_a", "annot_b"]
    np.testing.assert_allclose(own["onset"], [0.5, 7.0])
    table = pd.DataFrame({"onset": [3.0], "duration": [0.0], "trial_type": ["x"]})
    given = read_mne(path, events=table)
    assert events_frame(given)["label"].tolist() == ["x"]
    assert given.attrs["history"][0]["params"]["events"].startswith("DataFrame sha256:")
    assert str(events.resolve()) not in given.attrs["source"]["companions"]


def test_events_tsv_outside_the_recording(tmp_path, caplog):
    path = exported_edf(tmp_path)
    events = tmp_path / "sub-05_task-oddball_run-2_events.tsv"
    pd.DataFrame({"onset": [1.0, 9.5], "duration": [0.0, 2.0],
                  "trial_type": ["in", "late"]}).to_csv(events, sep="\t", index=False)
    message = assert_refused(lambda: read_mne(path), path, tmp_path, "outside", "9.5")
    assert str(events) in message and "outside_events='drop'" in message
    with caplog.at_level(logging.WARNING, logger="neurodecode.ingest.eeg"):
        ds = read_mne(path, outside_events="drop")
    assert events_frame(ds)["label"].tolist() == ["in"]
    assert "1 event(s)" in caplog.text
    assert ds.attrs["history"][-1]["step"] == "neurodecode.ingest.eeg.drop_outside_events"
    bad = tmp_path / "bad_events.tsv"
    bad.write_text("onset\ttrial_type\n1.0\tx\n")
    assert_refused(lambda: read_mne(path, events=bad), bad, tmp_path, "lacks column(s)",
                   "duration")


def test_events_tsv_only_for_bids_names(tmp_path):
    path = exported_edf(tmp_path, "recording.edf")  # not a BIDS name: nothing is paired with it
    pd.DataFrame({"onset": [1.0], "duration": [0.0], "trial_type": ["x"]}).to_csv(
        tmp_path / "recording_events.tsv", sep="\t", index=False)
    ds = read_mne(path)
    assert events_frame(ds)["label"].tolist() == ["annot_a", "annot_b"]
    assert ds.attrs["history"][0]["params"]["events"] is None


def test_corrupt_fif_gz_is_reported_as_corrupt(tmp_path):
    data = np.random.default_rng(6).standard_normal((3, 20000)) * 1e-5
    path = write_fif(tmp_path / "rec_raw.fif.gz", data, ["C3", "C4", "Cz"], "eeg")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    bad = tmp_path / "bad_raw.fif.gz"
    bad.write_bytes(bytes(raw))
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "corrupt", "gzip")
    assert read_mne(path).sizes["channel"] == 3


# --------------------------------------------------------------------------- read_muse_csv


@realdata
@pytest.mark.parametrize("folder", ["muse_p300", "muse_n170"])
def test_every_muse_csv_reads(sample_data, folder):
    files = sorted((sample_data / "eeg" / folder).glob("*.csv"))
    assert files
    markers = set()
    for path in files:
        ds = read_muse_csv(path)
        markers.add(pd.read_csv(path, nrows=0).columns[-1])
        assert list(ds["channel"].values) == ["TP9", "AF7", "AF8", "TP10", "Right AUX"]
        assert list(ds["ch_type"].values) == ["eeg"] * 4 + ["misc"]
        # measured: 256 Hz (timestamps in ms steps of 3-4 ms; README's "250 Hz" is the median)
        assert 255.9 < ds.attrs["sfreq"] < 256.1, path
        assert set(events_frame(ds)["value"]) == {1.0, 2.0}
        assert ds.attrs["subject"] == path.name.split("-")[0].removeprefix("subject")
    assert markers <= {"Marker", "Marker0"}


@realdata
@pytest.mark.parametrize("name", [MUSE_P300, MUSE_N170])
def test_muse_values_events_and_store(sample_data, tmp_path, name):
    path = sample_data / name
    table = pd.read_csv(path)
    ds = read_muse_csv(path, marker_map={1: "house", 2: "face"}, event_map={"face": "faces"},
                       aux_as_eeg=True, task="n170")
    assert set(ds["ch_type"].values) == {"eeg"}
    expected = (table.iloc[:, 1:6].to_numpy() * 1e-6).astype(np.float32)
    back = round_trip(ds, tmp_path)
    np.testing.assert_array_equal(back["signal"].values, expected)
    ev = events_frame(back)
    marker = table.iloc[:, -1].to_numpy()
    idx = np.flatnonzero(marker)
    np.testing.assert_allclose(ev["onset"], idx / ds.attrs["sfreq"])
    assert (ev["duration"] == 0).all()
    assert list(ev["value"]) == list(marker[idx].astype(float))
    assert set(ev["label"]) == {"house", "faces"}
    assert back.attrs["history"][0]["params"]["marker_map"] == {"1": "house", "2": "face"}
    assert set(back["units"].values) == {"V"}


@realdata
def test_muse_drop_flat(sample_data, tmp_path):
    table = pd.read_csv(sample_data / MUSE_P300, nrows=3000)
    table["Right AUX"] = 0.0
    path = tmp_path / "flat.csv"
    table.to_csv(path, index=False)
    ds = read_muse_csv(path, drop_flat=True)
    assert list(ds["channel"].values) == ["TP9", "AF7", "AF8", "TP10"]
    assert ds.attrs["history"][-1] == {"step": "neurodecode.ingest.eeg.drop_flat",
                                       "params": {"channels": ["Right AUX"]}}


# --------------------------------------------------------------------------- read_bids


@pytest.fixture(scope="module")
def bids_root(sample_data, tmp_path_factory):
    """A BIDS dataset: EEGBCI run 4 as EEG, run 6 as sEEG with ACPC electrode positions."""
    import mne_bids

    root = tmp_path_factory.mktemp("bids")
    raw = mne.io.read_raw_edf(sample_data / EEGBCI, verbose="error")
    mne_bids.write_raw_bids(raw, mne_bids.BIDSPath(root=root, subject="001", task="motor",
                                                   run="04", datatype="eeg"), verbose="error")
    raw = mne.io.read_raw_edf(sample_data / "eeg/eegbci_S001/S001R06.edf", verbose="error")
    raw.set_channel_types({n: "seeg" for n in raw.ch_names}, verbose="error")
    pos = {n: np.array([i * 1e-3, 0.01, 0.02]) for i, n in enumerate(raw.ch_names)}
    raw.set_montage(mne.channels.make_dig_montage(ch_pos=pos, coord_frame="ras"))
    mne_bids.write_raw_bids(raw, mne_bids.BIDSPath(root=root, subject="002", session="01",
                                                   task="motor", run="06", datatype="ieeg"),
                            acpc_aligned=True, verbose="error")
    return root


@realdata
def test_list_bids_recordings(bids_root):
    found = list_bids_recordings(bids_root)
    assert [(d["subject"], d["session"], d["run"], d["datatype"]) for d in found] == [
        ("001", None, "04", "eeg"), ("002", "01", "06", "ieeg")]
    assert all(d["bids_root"] == str(bids_root) and d["task"] == "motor" for d in found)
    assert [d["subject"] for d in list_bids_recordings(bids_root, datatype="ieeg")] == ["002"]
    # every entry is exactly the keyword arguments that read this recording
    read = [read_bids(**entry) for entry in found]
    assert [(ds.attrs["subject"], ds.attrs["run"], ds.attrs["modality"]) for ds in read] == [
        ("001", "04", "eeg"), ("002", "06", "seeg")]
    assert [Path(ds.attrs["source"]["path"]).name for ds in read] == [
        "sub-001_task-motor_run-04_eeg.edf", "sub-002_ses-01_task-motor_run-06_ieeg.edf"]


@realdata
def test_read_bids_eeg(bids_root, tmp_path):
    ds = read_bids(**list_bids_recordings(bids_root, datatype="eeg")[0])
    a = ds.attrs
    assert (a["subject"], a["session"], a["task"], a["run"]) == ("001", "01", "motor", "04")
    assert ds.sizes["channel"] == 64 and ds.sizes["time"] == 20000 and a["sfreq"] == 160.0
    assert a["modality"] == "eeg" and a["source"]["reader"] == "neurodecode.ingest.eeg.read_bids"
    assert any(p.endswith("_events.tsv") for p in a["source"]["companions"])
    back = round_trip(ds, tmp_path)
    counts = events_frame(back)["label"].value_counts().to_dict()
    assert counts["T0"] == 15 and {counts["T1"], counts["T2"]} == {7, 8}


@realdata
def test_read_bids_ieeg(bids_root, tmp_path):
    ds = read_bids(bids_root, subject="002", task="motor", datatype="ieeg")
    assert ds.attrs["modality"] == "seeg" and set(ds["ch_type"].values) == {"seeg"}
    assert ds.attrs["coord_frame"] == "ACPC" and ds.attrs["session"] == "01"
    np.testing.assert_allclose(ds["x"].values[:3], [0.0, 0.001, 0.002])
    np.testing.assert_allclose(ds["z"].values, 0.02)
    back = round_trip(ds, tmp_path)
    assert back.sizes["channel"] == 64 and len(events_frame(back)) == 30


@realdata
def test_bids_events_past_the_end(bids_root, tmp_path, caplog):
    root = tmp_path / "bids"
    shutil.copytree(bids_root, root)
    events = next(root.rglob("sub-001*_events.tsv"))
    with open(events, "a") as fh:
        fh.write("500.0\t1.0\tT1\t2\t80000\n")
    read = lambda **kw: read_bids(root, subject="001", task="motor", **kw)  # noqa: E731
    data_file = next(root.rglob("sub-001*_eeg.edf"))
    message = assert_refused(read, data_file, tmp_path, "outside", "500")
    assert str(events) in message
    with caplog.at_level(logging.WARNING, logger="neurodecode.ingest.eeg"):
        ds = read(outside_events="drop")
    assert len(events_frame(ds)) == 30 and "outside" in caplog.text
    assert ds.attrs["history"][-1]["step"] == "neurodecode.ingest.eeg.drop_outside_events"


@realdata
def test_bids_no_match(bids_root):
    with pytest.raises(IngestError, match=r"no eeg/ieeg/meg recording\(s\) match subject=999"):
        read_bids(bids_root, subject="999", task="motor")


# --------------------------------------------------------------------------- bad inputs


@realdata
def test_truncated_edf(sample_data, tmp_path):
    data = (sample_data / EEGBCI).read_bytes()
    bad = tmp_path / "half.edf"
    bad.write_bytes(data[: len(data) // 2])
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "truncated")


@realdata
def test_corrupt_edf_header(sample_data, tmp_path):
    data = bytearray((sample_data / EEGBCI).read_bytes())
    data[:400] = b"\xff garbage \x00" * 33 + b"x"
    bad = tmp_path / "garbage.edf"
    bad.write_bytes(bytes(data))
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "cannot read", "corrupt")


@realdata
@pytest.mark.parametrize(("name", "fragment"), [("edf_bytes.txt", "cannot read"),
                                                ("recording.xyz", "unsupported file type")])
def test_wrong_extension(sample_data, tmp_path, name, fragment):
    bad = tmp_path / name
    shutil.copyfile(sample_data / EEGBCI, bad)
    assert_refused(lambda: read_mne(bad), bad, tmp_path, fragment)


def test_missing_file(tmp_path):
    bad = tmp_path / "nothing.edf"
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "does not exist")
    assert_refused(lambda: read_muse_csv(tmp_path / "x.csv"), tmp_path / "x.csv", tmp_path,
                   "does not exist")


@realdata
def test_duplicate_channel_names_edf(sample_data, tmp_path):
    data = bytearray((sample_data / EEGBCI).read_bytes())
    data[256 + 16: 256 + 32] = data[256: 256 + 16]  # channel 2 gets channel 1's label
    bad = tmp_path / "dups.edf"
    bad.write_bytes(bytes(data))
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "duplicate channel names", "Fc5.")


def test_duplicate_channel_names_fif(tmp_path):
    # MNE renames duplicates when the Raw is built; the FIF written from it is consistent, so the
    # reader sees unique (renamed) names and reads it.
    data = np.random.default_rng(2).standard_normal((2, 300)) * 1e-5
    path = write_fif(tmp_path / "dups_raw.fif", data, ["Cz", "Cz"], "eeg")
    assert list(read_mne(path)["channel"].values) == ["Cz-0", "Cz-1"]


def test_mixed_sampling_rates(tmp_path):
    bad = write_edf(tmp_path / "mixed.edf", ["Fast", "Slow"], [100, 50])
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "different rates", "Slow")
    ds = read_mne(bad, picks=["Fast"])  # the channels at the recording's rate read as they are
    assert ds.attrs["sfreq"] == 100.0
    expected = mne.io.read_raw_edf(bad, preload=True, verbose="error").get_data(picks=["Fast"])
    np.testing.assert_array_equal(ds["signal"].values, expected.T.astype(np.float32))


def test_empty_edf(tmp_path):
    bad = write_edf(tmp_path / "empty.edf", ["A", "B"], [100, 100], n_records=0)
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "empty", "0 samples")


def test_annotation_past_the_end_fif(tmp_path, caplog):
    data = np.random.default_rng(3).standard_normal((2, 1000)) * 1e-5
    raw = mne.io.RawArray(data, mne.create_info(["C3", "C4"], 100.0, "eeg"), verbose="error")
    raw.annotations.append(50.0, 1.0, "late")  # bypasses MNE's check; MNE drops it on reading
    raw.annotations.append(1.0, 1.0, "ok")
    bad = tmp_path / "late_raw.fif"
    raw.save(bad, verbose="error")
    assert_refused(lambda: read_mne(bad), bad, tmp_path, "outside", "omitted 1 of 2")
    with caplog.at_level(logging.WARNING, logger="neurodecode.ingest.eeg"):
        ds = read_mne(bad, outside_events="drop")
    assert list(events_frame(ds)["label"]) == ["ok"] and "outside" in caplog.text
    assert ds.attrs["history"][-1]["step"] == "neurodecode.ingest.eeg.drop_outside_events"


@realdata
def test_csv_duplicate_columns(sample_data, tmp_path):
    lines = (sample_data / MUSE_P300).read_text().splitlines()[:200]
    bad = tmp_path / "dups.csv"
    bad.write_text("\n".join(["timestamps,TP9,TP9,AF8,TP10,Right AUX,Marker", *lines[1:]]))
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, "duplicate", "TP9")


@realdata
def test_csv_header_only(sample_data, tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_text((sample_data / MUSE_P300).read_text().splitlines()[0] + "\n")
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, "no samples")


@realdata
def test_csv_wrong_extension(sample_data, tmp_path):
    bad = tmp_path / "muse.txt"
    shutil.copyfile(sample_data / MUSE_P300, bad)
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, "not a CSV")


@realdata
def test_csv_that_is_not_text(sample_data, tmp_path):
    bad = tmp_path / "binary.csv"
    shutil.copyfile(sample_data / EEGBCI, bad)
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, "cannot be read as a text CSV")


@realdata
def test_csv_truncated_mid_row(sample_data, tmp_path):
    text = (sample_data / MUSE_P300).read_text()[:200_000]
    bad = tmp_path / "cut.csv"
    bad.write_text(text[: text.rindex(",") + 3])  # the last row is cut short
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, "NaN", error=SchemaError)


@realdata
@pytest.mark.parametrize(("damage", "fragment"), [("gap", "irregular"),
                                                  ("reverse", "do not increase")])
def test_csv_irregular_timestamps(sample_data, tmp_path, damage, fragment):
    table = pd.read_csv(sample_data / MUSE_P300, nrows=6000)
    if damage == "gap":  # one second of samples missing
        table = table.drop(index=range(3000, 3256))
    else:
        table["timestamps"] = table["timestamps"].to_numpy()[::-1]
    bad = tmp_path / f"{damage}.csv"
    table.to_csv(bad, index=False)
    assert_refused(lambda: read_muse_csv(bad), bad, tmp_path, fragment)


@realdata
def test_csv_nan_samples_stop_the_write(sample_data, tmp_path):
    table = pd.read_csv(sample_data / MUSE_P300, nrows=2000)
    table.loc[1234, "AF7"] = np.nan
    bad = tmp_path / "nan.csv"
    table.to_csv(bad, index=False)
    ds = read_muse_csv(bad)  # samples are only read while writing
    assert_refused(lambda: ds, bad.resolve(), tmp_path, "NaN", error=SchemaError)


# --------------------------------------------------------------------------- distributed


@realdata
def test_edf_graph_runs_on_distributed_workers(sample_data, dask_client):
    # last in the file: the session-wide client becomes every later test's default scheduler
    path = sample_data / EEGBCI
    ds = read_mne(path)
    data = dask_client.compute(ds["signal"].data).result()
    expected = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data()
    np.testing.assert_array_equal(data, expected.T.astype(np.float32))
