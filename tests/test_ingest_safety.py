"""Ingest never overwrites silently, skips only verified stores, and repairs damaged ones.

Every source here is a real file written by MNE (``Raw.save`` for FIF, ``mne.export.export_raw``
for EDF); every store is written by the ingest itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
import yaml
import zarr
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.ingest.runner import (
    ClusterConfig,
    IngestTask,
    StoreCollisionError,
    repair,
    run_ingest,
)
from neurodecode.store import find_recordings, open_recording, verify_recording

runner = CliRunner()
THREADS = ["--scheduler", "threads"]
STORE = Path("adhoc/sub-01/ses-01/eeg/task-lr_run-01.zarr")


def _raw(seed: int = 0, n_channels: int = 4, n_times: int = 1200) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    info = mne.create_info([f"EEG{i}" for i in range(n_channels)], 100.0, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((n_channels, n_times)) * 1e-5, info, verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 4.0], [0.5, 0.5], ["left", "right"]))
    return raw


def _fif(folder: Path, name: str = "sub-01_task-lr_run-01_raw.fif", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _raw(seed).save(folder / name, verbose="error")
    return folder / name


def _edf(folder: Path, name: str = "sub-01_task-lr_run-01.edf", seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(folder / name, _raw(seed), fmt="edf", verbose="error")
    return folder / name


def _ingest(*args: str):
    return runner.invoke(app, ["ingest", *map(str, args)])


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def _shard(store: Path) -> Path:
    (shard,) = [p for p in (store / "signal" / "c").rglob("*") if p.is_file()]
    return shard


def _signal(store: Path) -> np.ndarray:
    return open_recording(store)["signal"].values


def test_two_sources_for_one_store_are_refused_and_nothing_is_written(tmp_path):
    fif, edf = _fif(tmp_path / "in"), _edf(tmp_path / "in")
    out = tmp_path / "out"
    result = _ingest(fif, edf, "--out", out, *THREADS)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert str(fif) in message and str(edf) in message and str(out / STORE) in message
    assert "nothing was written" in message
    assert _files(out) == []


def test_collision_of_cleaned_labels_is_refused_on_a_local_cluster(tmp_path, dask_client):
    fif = _fif(tmp_path / "in", "recording_raw.fif")
    tasks = [
        IngestTask("lab", fif, "mne", tmp_path / "out", entities={"subject": label})
        for label in ("1_a", "1-a")
    ]
    with pytest.raises(StoreCollisionError, match=r"sub-1-a/ses-01/eeg/task-unknown_run-01\.zarr"):
        run_ingest(tasks, client=dask_client)
    assert _files(tmp_path / "out") == []
    (result,) = run_ingest(tasks[:1], client=dask_client)
    assert result.status == "created", result.error
    ds = open_recording(result.store)
    assert ds.attrs["subject"] == "1-a"  # what the path holds
    assert ds.attrs["source"]["identity"] == {"subject": "1_a"}
    (again,) = run_ingest(tasks[:1], client=dask_client)
    assert again.status == "up-to-date"
    expected = _signal(Path(result.store))
    shutil.rmtree(Path(result.store) / "signal")
    (fixed,) = repair(tmp_path / "out", client=dask_client)
    assert fixed.status == "repaired" and "signal/ is missing" in fixed.problems
    np.testing.assert_array_equal(_signal(Path(result.store)), expected)


def test_a_store_of_another_source_is_replaced_only_with_force(tmp_path):
    edf, fif = _edf(tmp_path / "a"), _fif(tmp_path / "b")
    out = tmp_path / "out"
    assert _ingest(edf, "--out", out, *THREADS).exit_code == 0
    before = _signal(out / STORE)
    result = _ingest(fif, "--out", out, *THREADS)
    assert result.exit_code == 1
    assert f"already holds a recording of {edf.resolve()}" in result.output
    assert "--force replaces it" in result.output
    np.testing.assert_array_equal(_signal(out / STORE), before)
    result = _ingest(fif, "--out", out, *THREADS, "--force")
    assert result.exit_code == 0, result.output
    assert "replaced" in result.output
    ds = open_recording(out / STORE)
    assert ds.attrs["source"]["path"] == str(fif.resolve())
    np.testing.assert_allclose(ds["signal"].values.T, _raw(0).get_data(), rtol=1e-6)


def test_stores_are_printed_and_a_rerun_is_up_to_date_until_forced(tmp_path):
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    result = _ingest(fif, "--out", out, *THREADS)
    assert result.exit_code == 0, result.output
    assert f"{fif} -> {STORE}" in result.output and "1 created" in result.output
    (record,) = (out / "adhoc" / ".ingest").glob("*.json")
    saved = json.loads(record.read_text())
    assert saved["store"] == STORE.as_posix()  # relative to the store root
    assert saved["task"]["path"] == str(fif.resolve()) and saved["task"]["reader"] == "mne"
    attrs = zarr.open_group(out / STORE, mode="r").attrs
    assert saved["fingerprint"] == attrs["content_sha256"] and saved["key"] == attrs["ingest_key"]
    mtime = (out / STORE / "zarr.json").stat().st_mtime_ns
    result = _ingest(fif, "--out", out, *THREADS)
    assert "up-to-date" in result.output and "1 up-to-date" in result.output
    assert (out / STORE / "zarr.json").stat().st_mtime_ns == mtime
    result = _ingest(fif, "--out", out, *THREADS, "--force")
    assert result.exit_code == 0 and "1 replaced" in result.output
    assert (out / STORE / "zarr.json").stat().st_mtime_ns != mtime


def test_deleted_signal_or_shard_is_re_ingested_by_a_rerun(tmp_path):
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    assert _ingest(fif, "--out", out, *THREADS).exit_code == 0
    expected = _signal(out / STORE)
    shutil.rmtree(out / STORE / "signal")
    result = _ingest(fif, "--out", out, *THREADS)
    assert result.exit_code == 0, result.output
    assert "replaced" in result.output and "re-ingested:" in result.output
    assert "signal" in result.output.split("re-ingested:")[1]
    np.testing.assert_array_equal(_signal(out / STORE), expected)
    _shard(out / STORE).unlink()
    result = _ingest(fif, "--out", out, *THREADS)
    assert "re-ingested:" in result.output and "1 replaced" in result.output
    np.testing.assert_array_equal(_signal(out / STORE), expected)


def _swap_shard(out: Path, tmp_path: Path) -> np.ndarray:
    """Overwrite the shard of ``out``'s store with the shard of a store of other data.

    The result still decodes; only its fingerprint tells it apart. Returns the right samples.
    """
    other = tmp_path / "other"
    assert _ingest(_fif(tmp_path / "in2", seed=5), "--out", other, *THREADS).exit_code == 0
    expected = _signal(out / STORE)
    shutil.copyfile(_shard(other / STORE), _shard(out / STORE))
    assert not np.array_equal(_signal(out / STORE), expected)  # decodes, to the wrong data
    assert not verify_recording(out / STORE).ok
    return expected


def test_altered_shard_bytes_are_re_ingested_with_verify_and_repaired(tmp_path):
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    assert _ingest(fif, "--out", out, *THREADS).exit_code == 0
    expected = _signal(out / STORE)
    shard = _shard(out / STORE)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size: only reading the samples can tell
    shard.write_bytes(bytes(data))
    result = _ingest(fif, "--out", out, *THREADS)
    assert "1 up-to-date" in result.output  # the cheap metadata check reads no sample
    result = _ingest(fif, "--out", out, *THREADS, "--verify")
    assert result.exit_code == 0, result.output
    assert "1 replaced" in result.output and "re-ingested: signal: block 0" in result.output
    np.testing.assert_array_equal(_signal(out / STORE), expected)

    _swap_shard(out, tmp_path)
    result = runner.invoke(app, ["repair", str(out), *THREADS])
    assert result.exit_code == 0, result.output
    assert f"repaired  {STORE}" in result.output and "1 repaired" in result.output
    assert verify_recording(out / STORE).ok
    np.testing.assert_array_equal(_signal(out / STORE), expected)
    result = runner.invoke(app, ["repair", str(out), *THREADS])
    assert result.exit_code == 0 and "1 ok" in result.output


def test_a_copied_output_folder_reruns_and_repairs_in_the_copy(tmp_path):
    fif = _fif(tmp_path / "in")
    out, copy = tmp_path / "out", tmp_path / "copy"
    assert _ingest(fif, "--out", out, *THREADS).exit_code == 0
    shutil.copytree(out, copy)
    result = _ingest(fif, "--out", copy, *THREADS)
    assert result.exit_code == 0 and "1 up-to-date" in result.output, result.output
    assert f"-> {STORE}" in result.output
    original = (out / STORE / "zarr.json").stat().st_mtime_ns, _shard(out / STORE).read_bytes()
    expected = _swap_shard(copy, tmp_path)
    (res,) = repair(copy, cluster=ClusterConfig(kind="threads"))
    assert res.status == "repaired" and res.problems, res
    assert res.store == str((copy / STORE).absolute()) and res.source == str(fif.resolve())
    np.testing.assert_array_equal(_signal(copy / STORE), expected)
    now = (out / STORE / "zarr.json").stat().st_mtime_ns, _shard(out / STORE).read_bytes()
    assert now == original  # the original was never touched


def test_repair_reports_what_it_cannot_repair(tmp_path):
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    assert _ingest(fif, "--out", out, *THREADS).exit_code == 0
    _swap_shard(out, tmp_path)
    fif.unlink()
    result = runner.invoke(app, ["repair", str(out), *THREADS])
    assert result.exit_code == 1
    assert "broken" in result.output and f"its source {fif.resolve()} no longer exists" in (
        result.output
    )
    shutil.rmtree(out / "adhoc" / ".ingest")
    (res,) = repair(out, cluster=ClusterConfig(kind="threads"))
    assert res.status == "broken" and "no ingest record" in res.error
    result = runner.invoke(app, ["repair", str(tmp_path / "in"), *THREADS])
    assert result.exit_code == 2 and "no recording store at or below" in result.stderr


def test_unknown_option_fails_before_any_work(tmp_path, monkeypatch):
    import neurodecode.ingest.runner as runner_module

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(runner_module, "make_cluster", no_cluster)
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    result = _ingest(fif, "--out", out, "-o", "drop_flatt=true")
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "'drop_flatt'" in message and "did you mean 'drop_flat'" in message
    assert "valid options:" in message and "ch_types" in message
    result = _ingest(fif, "--out", out, "-o", "drop_flat=maybe")
    assert result.exit_code == 2 and "drop_flat" in result.stderr
    result = _ingest(fif, "--out", out, "-o", "noequals")
    assert result.exit_code == 2 and "is not KEY=VALUE" in result.stderr
    assert not out.exists()


def test_per_file_options_and_catalog_options_apply(tmp_path):
    first = _fif(tmp_path / "in", "sub-01_task-lr_run-01_raw.fif")
    second = _fif(tmp_path / "in", "sub-02_task-lr_run-01_raw.fif", seed=3)
    rules = tmp_path / "options.yaml"
    rules.write_text(yaml.safe_dump({"sub-02_*": {"ch_types": {"EEG0": "eog"}}}))
    out = tmp_path / "out"
    result = _ingest(first, second, "--out", out, *THREADS, "--options", rules)
    assert result.exit_code == 0, result.output
    types = {p.parts[-4]: list(open_recording(p)["ch_type"].values) for p in find_recordings(out)}
    assert types == {"sub-01": ["eeg"] * 4, "sub-02": ["eog", "eeg", "eeg", "eeg"]}

    catalog = tmp_path / "lab_catalog"
    catalog.mkdir()
    entry = {
        "name": "lab_lr",
        "modality": "eeg",
        "description": "two runs",
        "licence": "CC0",
        "root": str(tmp_path / "in"),
        "reader": "mne",
        "reader_options": {"ch_types": {"EEG1": "eog"}},
        "files": [{"glob": "sub-01_*.fif"}],
    }
    (catalog / "lab_lr.yaml").write_text(yaml.safe_dump(entry))
    lab = tmp_path / "lab"
    result = _ingest(
        "lab_lr", "--out", lab, *THREADS, "--catalog", catalog, "-o", "picks=[EEG1, EEG2]"
    )
    assert result.exit_code == 0, result.output
    (store,) = find_recordings(lab)
    ds = open_recording(store)
    assert list(ds["ch_type"].values) == ["eog", "eeg"]  # the entry's option, then -o on top
    result = _ingest("lab_lr", "--out", lab, *THREADS, "--catalog", catalog, "-o", "bogus=1")
    assert result.exit_code == 2 and "'bogus'" in result.stderr and "lab_lr" in result.stderr


def test_user_mistakes_are_one_line_with_exit_2_and_write_nothing(tmp_path):
    fif = _fif(tmp_path / "in")
    out = tmp_path / "out"
    result = _ingest("eegbci_s01", "--out", out, *THREADS)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown catalog entry or missing file 'eegbci_s01'; did you mean 'eegbci_s001'?"
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _ingest(fif, "--out", blocker / "out", *THREADS)
    assert result.exit_code == 2 and "--out" in result.stderr
    result = _ingest(fif, "--out", out, *THREADS, "--report", blocker / "report.json")
    assert result.exit_code == 2 and "--report" in result.stderr
    result = _ingest(fif, "--out", out, "--scheduler", "locl")
    assert result.exit_code == 2 and "did you mean 'local'" in result.stderr
    bad = tmp_path / "cluster.yaml"
    bad.write_text("kind: local\nn_workers: none\n")
    result = _ingest(fif, "--out", out, "--cluster-config", bad)
    assert result.exit_code == 2 and "n_workers" in result.stderr
    result = _ingest(fif, "--out", out, "--cluster-config", tmp_path / "absent.yaml")
    assert result.exit_code == 2 and "absent.yaml" in result.stderr
    assert not out.exists()


def test_a_failed_ingest_leaves_no_folder(tmp_path):
    raw = _raw()
    raw._data[2, 300] = np.nan
    source = tmp_path / "in" / "sub-01_task-lr_run-01_raw.fif"
    source.parent.mkdir()
    raw.save(source, verbose="error")
    out = tmp_path / "out"
    result = _ingest(source, "--out", out, *THREADS)
    assert result.exit_code == 1 and "NaN" in result.output, result.output
    assert not out.exists()
    out.mkdir()
    result = _ingest(source, "--out", out, *THREADS)
    assert result.exit_code == 1 and _files(out) == []


def test_ingest_help_lists_the_readers():
    result = runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in ("mne", "nifti", "suite2p", "trace_array", "nwb_units"):
        assert name in text
    assert "neurodecode readers" in text


def test_a_bids_root_ingests_the_selected_subject(tmp_path):
    from mne_bids import BIDSPath, write_raw_bids

    bids = tmp_path / "bids"
    for subject, seed in (("01", 0), ("02", 1)):
        raw = _raw(seed)
        raw.info["line_freq"] = 50.0
        path = BIDSPath(subject=subject, task="lr", run="01", datatype="eeg", root=bids)
        write_raw_bids(
            raw, path, format="BrainVision", allow_preload=True, overwrite=True, verbose="error"
        )
    out = tmp_path / "out"
    result = _ingest(bids, "--out", out, *THREADS, "--subject", "02", "--dataset", "lab")
    assert result.exit_code == 0, result.output
    (store,) = find_recordings(out)
    assert store.relative_to(out).as_posix() == "lab/sub-02/ses-01/eeg/task-lr_run-01.zarr"
    assert "-> lab/sub-02/ses-01/eeg/task-lr_run-01.zarr" in result.output
    ds = open_recording(store)
    np.testing.assert_allclose(ds["signal"].values.T, _raw(1).get_data(), rtol=1e-3, atol=1e-9)
    result = _ingest(bids, "--out", out, *THREADS, "--subject", "03")
    assert result.exit_code == 2 and "01, 02" in result.stderr
    result = _ingest(_fif(tmp_path / "in"), "--out", out, *THREADS, "--subject", "02")
    assert result.exit_code == 2 and "--subject" in result.stderr


def test_an_edited_events_tsv_makes_the_store_stale(tmp_path):
    """A companion file (here the BIDS events.tsv beside an EDF) is part of what a store was
    read from: editing it re-ingests instead of keeping a stale store 'up-to-date'."""
    edf = _edf(tmp_path / "in", "sub-01_task-lr_run-01_eeg.edf")
    events = edf.with_name("sub-01_task-lr_run-01_events.tsv")
    events.write_text("onset\tduration\ttrial_type\n1.0\t0.5\tleft\n")
    out = tmp_path / "out"
    assert _ingest(edf, "--out", out, *THREADS).exit_code == 0
    assert list(open_recording(out / STORE)["event_label"].values) == ["left"]
    assert "up-to-date" in _ingest(edf, "--out", out, *THREADS).output
    events.write_text("onset\tduration\ttrial_type\n1.0\t0.5\tleft\n4.0\t0.5\tright\n")
    rerun = _ingest(edf, "--out", out, *THREADS)
    assert rerun.exit_code == 0, rerun.output
    assert "up-to-date" not in rerun.output
    assert f"companion file {events.resolve()} changed" in rerun.output
    assert list(open_recording(out / STORE)["event_label"].values) == ["left", "right"]
