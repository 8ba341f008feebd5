"""Folders as sources: BIDS datasets (mne-bids, nibabel) and suite2p outputs, down to stores."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import mne_bids
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.ingest import IngestError
from neurodecode.ingest.eeg import read_bids_file
from neurodecode.ingest.folders import Source, expand_source
from neurodecode.ingest.runner import IngestTask, ingest_one
from neurodecode.schema import events_frame
from neurodecode.store import find_recordings, open_recording
from tests.test_ingest_calcium import _suite2p_plane

#: EEG channels of each subject of the dataset: every subject has its own montage.
N_CHANNELS = {"01": 8, "02": 12, "03": 16}


@pytest.fixture(scope="module")
def eeg_bids(tmp_path_factory) -> Path:
    """Three subjects written by ``mne_bids.write_raw_bids`` (BrainVision, through pybv),
    with 8, 12 and 16 EEG channels and annotations, so each gets its own events.tsv."""
    root = tmp_path_factory.mktemp("bids") / "ds"
    for i, (subject, n) in enumerate(N_CHANNELS.items()):
        info = mne.create_info([f"EEG{j:02d}" for j in range(n)], 100.0, "eeg")
        data = np.random.default_rng(i).standard_normal((n, 1000)) * 1e-5
        raw = mne.io.RawArray(data, info, verbose="error")
        raw.set_annotations(mne.Annotations([1.0 + i, 4.0, 6.5], [0.5, 0.0, 1.0],
                                            ["left", "right", "left"]))
        mne_bids.write_raw_bids(
            raw, mne_bids.BIDSPath(root=root, subject=subject, task="motor", datatype="eeg"),
            allow_preload=True, format="BrainVision", verbose="error")
    return root


def events_tsv(root: Path, subject: str) -> pd.DataFrame:
    return pd.read_csv(root / f"sub-{subject}" / "eeg" / f"sub-{subject}_task-motor_events.tsv",
                       sep="\t")


def ingest(source: Source, out: Path):
    task = IngestTask(dataset="ds", path=source.path, reader=source.reader, out_root=out,
                      entities=source.entities, reader_options=source.reader_options)
    result = ingest_one(task)
    assert result.status == "created", result.error
    return open_recording(result.store)


def test_bids_root_lists_every_subject(eeg_bids):
    sources = expand_source(eeg_bids)
    assert [s.path.name for s in sources] == [f"sub-{s}_task-motor_eeg.vhdr" for s in N_CHANNELS]
    assert {s.reader for s in sources} == {"bids"}
    assert [s.entities for s in sources] == [{"subject": s, "task": "motor"} for s in N_CHANNELS]


def test_each_bids_source_ingests_its_channels_and_events(eeg_bids, tmp_path):
    for source in expand_source(eeg_bids):
        back = ingest(source, tmp_path)
        subject = back.attrs["subject"]
        assert back.sizes["channel"] == N_CHANNELS[subject]
        assert back.attrs["source"]["reader"] == "neurodecode.ingest.eeg.read_bids_file"
        table = events_tsv(eeg_bids, subject)
        ev = events_frame(back)
        assert ev["label"].tolist() == table["trial_type"].tolist() == ["left", "right", "left"]
        np.testing.assert_allclose(ev["onset"], table["onset"])
        np.testing.assert_allclose(ev["onset"], [1.0 + int(subject) - 1, 4.0, 6.5])
        np.testing.assert_allclose(ev["duration"], [0.5, 0.0, 1.0])
        assert ev["value"].tolist() == table["value"].astype(float).tolist()
        companions = back.attrs["source"]["companions"]
        assert any(p.endswith(f"sub-{subject}_task-motor_events.tsv") for p in companions)
        raw = mne.io.read_raw_brainvision(source.path, verbose="error")
        np.testing.assert_allclose(back["signal"].values, raw.get_data().T, rtol=1e-6,
                                   atol=1e-12)


def test_bids_selection_and_its_errors(eeg_bids):
    assert [s.entities["subject"] for s in expand_source(eeg_bids, subject="02")] == ["02"]
    assert len(expand_source(eeg_bids, subject="sub-03", task="motor", datatype="eeg")) == 1
    with pytest.raises(IngestError, match=r"no recording of subject '09'; it has subject "
                                          r"01, 02, 03"):
        expand_source(eeg_bids, subject="09")
    with pytest.raises(IngestError, match="no recording of task 'rest'; it has task motor"):
        expand_source(eeg_bids, task="rest")
    with pytest.raises(IngestError, match="no recording of datatype 'meg'; it has datatype eeg"):
        expand_source(eeg_bids, datatype="meg")
    with pytest.raises(IngestError, match=r"datatype 'anat' is not one of \['eeg', 'func'"):
        expand_source(eeg_bids, datatype="anat")


def test_read_bids_file_checks_where_it_is(eeg_bids, tmp_path):
    vhdr = eeg_bids / "sub-02" / "eeg" / "sub-02_task-motor_eeg.vhdr"
    assert read_bids_file(vhdr, run="7").attrs["run"] == "7"  # identity can be overridden
    alone = tmp_path / "sub-02_task-motor_eeg.vhdr"
    alone.write_text(vhdr.read_text())
    with pytest.raises(IngestError, match="is not inside a BIDS dataset"):
        read_bids_file(alone)


@pytest.fixture
def func_bids(tmp_path) -> Path:
    """A BIDS dataset with one BOLD run (nibabel) with events.tsv and a JSON sidecar whose
    RepetitionTime (1.5 s) overrides the header's 2 s, and a derivatives run to leave out."""
    root = tmp_path / "fmri_ds"
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "f", "BIDSVersion": "1.9.0"}')
    data = (100 + np.random.default_rng(3).standard_normal((4, 5, 3, 20))).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 4.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((3.0, 3.0, 4.0, 2.0))
    nib.save(img, func / "sub-01_task-nback_bold.nii.gz")
    (func / "sub-01_task-nback_bold.json").write_text(json.dumps({"RepetitionTime": 1.5}))
    pd.DataFrame({"onset": [3.0, 15.0], "duration": [6.0, 6.0], "trial_type": ["zero", "two"],
                  "value": [0, 2]}).to_csv(func / "sub-01_task-nback_events.tsv", sep="\t",
                                           index=False)
    prep = root / "derivatives" / "prep" / "sub-01" / "func"
    prep.mkdir(parents=True)
    nib.save(img, prep / "sub-01_task-nback_space-MNI_desc-preproc_bold.nii.gz")
    return root


def test_bids_func_run_with_events_and_sidecar(func_bids, tmp_path):
    (source,) = expand_source(func_bids)  # the derivatives run is not part of the raw dataset
    assert source.reader == "nifti" and source.path.name == "sub-01_task-nback_bold.nii.gz"
    assert expand_source(func_bids, datatype="func") == [source]
    back = ingest(source, tmp_path)
    assert (back.attrs["subject"], back.attrs["task"]) == ("01", "nback")
    assert (back.sizes["time"], back.sizes["channel"]) == (20, 4 * 5 * 3)
    assert back.attrs["sfreq"] == pytest.approx(1 / 1.5)
    assert back.attrs["history"][0]["params"]["tr_from"] == "sidecar"
    ev = events_frame(back)
    assert ev["label"].tolist() == ["zero", "two"] and ev["value"].tolist() == [0.0, 2.0]
    assert back.attrs["source"]["companions"]["events"]["path"].endswith("_events.tsv")
    assert back.attrs["source"]["companions"]["sidecar"]["path"].endswith("_bold.json")


def test_suite2p_folder_gives_one_source_per_plane(tmp_path):
    plane0, _ = _suite2p_plane(tmp_path, n_rois=6)
    plane1, _ = _suite2p_plane(tmp_path, n_rois=6, name="plane1", seed=9)
    (plane0.parent / "combined").mkdir()  # suite2p's merged view is not a plane of its own
    for folder in (plane0.parent, plane0.parent.parent):  # suite2p/ or the experiment folder
        sources = expand_source(folder)
        assert [(s.path, s.reader, s.entities) for s in sources] == [
            (plane0, "suite2p", {"run": "plane0"}), (plane1, "suite2p", {"run": "plane1"})]
    assert expand_source(plane1) == [Source(plane1, "suite2p")]
    stores = [ingest(s, tmp_path / "out") for s in expand_source(plane0.parent)]
    assert [ds.attrs["run"] for ds in stores] == ["plane0", "plane1"]
    assert {ds.attrs["subject"] for ds in stores} == {"12"}
    assert not np.array_equal(stores[0]["signal"].values, stores[1]["signal"].values)


def test_other_folders_and_files(tmp_path, eeg_bids):
    (tmp_path / "misc").mkdir()
    with pytest.raises(IngestError, match=r"misc: is a folder that is not understood: expected "
                                          r"a BIDS dataset root"):
        expand_source(tmp_path / "misc")
    with pytest.raises(IngestError, match="does not exist"):
        expand_source(tmp_path / "nothing")
    vhdr = eeg_bids / "sub-01" / "eeg" / "sub-01_task-motor_eeg.vhdr"
    assert expand_source(vhdr) == [Source(vhdr, "mne")]
    with pytest.raises(IngestError, match=r"subject='01' select recordings of a BIDS dataset"):
        expand_source(vhdr, subject="01")


runner = CliRunner()


def test_cli_ingests_a_bids_root(eeg_bids, tmp_path):
    out = tmp_path / "stores"
    result = runner.invoke(app, ["ingest", str(eeg_bids), "--out", str(out),
                                 "--scheduler", "threads"])
    assert result.exit_code == 0, result.output
    stores = sorted(find_recordings(out))
    assert len(stores) == 3
    channels = {open_recording(p).attrs["subject"]: open_recording(p).sizes["channel"]
                for p in stores}
    assert channels == N_CHANNELS
    result = runner.invoke(app, ["ingest", str(eeg_bids), "--out", str(tmp_path / "one"),
                                 "--scheduler", "threads", "--subject", "02"])
    assert result.exit_code == 0, result.output
    assert [open_recording(p).sizes["channel"] for p in find_recordings(tmp_path / "one")] == [12]
    result = runner.invoke(app, ["ingest", str(eeg_bids), "--out", str(tmp_path / "none"),
                                 "--scheduler", "threads", "--subject", "09"])
    assert result.exit_code == 2
    assert "it has subject 01, 02, 03" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").rglob("*.zarr"))
