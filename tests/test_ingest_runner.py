"""The data catalog and the parallel ingest runner: per-file failures, reruns, kills."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.catalog import CatalogEntry, load_catalog, load_entry
from neurodecode.cli import app
from neurodecode.ingest.runner import (
    ClusterConfig,
    IngestTask,
    guess_reader,
    plan_entry,
    plan_files,
    run_ingest,
)
from neurodecode.schema import validate
from neurodecode.store import find_recordings, open_recording

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

#: Files each catalog entry must resolve to in ../shared/data.
EXPECTED_FILES = {
    "eegbci_s001": 6,
    "eegbci_hands_feet": 9,
    "eeglab_tutorial": 1,
    "muse_p300": 5,
    "muse_n170": 4,
    "persyst_ecog": 1,
    "haxby2001_sub001_slice": 12,
    "nipy_functional": 1,
    "svoboda_mouse_s1": 1,
    "caiman_demo_traces": 1,
    "nelpy_linear_track": 1,
    "golub_bci": 2,
}


def test_catalog_covers_every_shared_dataset():
    catalog = load_catalog()
    assert set(catalog) == set(EXPECTED_FILES)
    for entry in catalog.values():
        assert entry.licence and entry.description and entry.checksums


def test_catalog_resolves_files_and_entities(sample_data):
    catalog = load_catalog()
    for name, n in EXPECTED_FILES.items():
        files = catalog[name].resolve_files(sample_data)
        assert len(files) == n, name
        for f in files:
            assert f["checksums"], f"{name}: {f['path']} has no pinned checksum"
    eegbci = {f["path"].name: f for f in catalog["eegbci_s001"].resolve_files(sample_data)}
    assert eegbci["S001R06.edf"]["entities"] == {
        "task": "imagery",
        "session": "01",
        "subject": "001",
        "run": "06",
    }
    assert eegbci["S001R06.edf"]["event_map"]["T2"] == "imagine_both_feet"
    assert eegbci["S001R04.edf"]["event_map"]["T2"] == "imagine_right_fist"
    haxby = catalog["haxby2001_sub001_slice"].resolve_files(sample_data)
    assert haxby[0]["reader_options"]["events"] == str(
        sample_data / "fmri/haxby2001_sub001_slice/run-001/bold_events.tsv"
    )
    golub = catalog["golub_bci"].resolve_files(sample_data)
    assert [g["reader_options"]["block"] for g in golub] == ["beforeLearning", "afterLearning"]


def test_catalog_entry_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodality: pet\n")
    with pytest.raises(ValueError, match="bad.yaml: invalid catalog entry"):
        load_entry(bad)
    with pytest.raises(ValueError, match="modality 'pet'"):
        CatalogEntry(
            name="x", modality="pet", description="", licence="", root=".", reader="mne", files=[]
        )


def test_guess_reader(tmp_path):
    assert guess_reader("a.edf") == "mne"
    assert guess_reader("sub-01_bold.nii.gz") == "nifti"
    assert guess_reader("movie.TIF") == "tiff_movie"
    with pytest.raises(ValueError, match="no reader for files like 'notes.docx'"):
        guess_reader(tmp_path / "notes.docx")


def _fmri_tasks(sample_data, out):
    entry = load_catalog()["haxby2001_sub001_slice"]
    return plan_entry(entry, out, sample_data)[:3] + plan_entry(
        load_catalog()["nipy_functional"], out, sample_data
    )


def test_parallel_ingest_then_rerun_is_up_to_date(sample_data, tmp_path, dask_client):
    tasks = _fmri_tasks(sample_data, tmp_path)
    results = run_ingest(tasks, client=dask_client)
    assert [r.status for r in results] == ["created"] * 4, [r.error for r in results]
    stores = find_recordings(tmp_path)
    assert len(stores) == 4
    for store in stores:
        ds = validate(open_recording(store), check_data=True)
        assert ds.attrs["source"]["sha256"]
    haxby = open_recording(results[0].store)
    assert haxby.sizes["time"] == 121 and haxby.attrs["sfreq"] == pytest.approx(0.4)
    assert sorted(set(haxby["event_label"].values)) == sorted(
        ["bottle", "cat", "chair", "face", "house", "scissors", "scrambledpix", "shoe"]
    )
    mtimes = [Path(r.store).stat().st_mtime_ns for r in results]
    again = run_ingest(tasks, client=dask_client)
    assert [r.status for r in again] == ["up-to-date"] * 4
    assert [Path(r.store).stat().st_mtime_ns for r in results] == mtimes
    # A changed reader parameter makes that one store out of date.
    changed = [
        IngestTask(**{**t.__dict__, "reader_options": {**t.reader_options, "detrend": True}})
        for t in tasks[:1]
    ]
    assert run_ingest(changed, client=dask_client)[0].status == "replaced"
    # --force always rewrites, even identical content.
    assert run_ingest(tasks[1:2], client=dask_client, force=True)[0].status == "replaced"
    assert Path(results[1].store).stat().st_mtime_ns != mtimes[1]


def test_one_bad_file_does_not_stop_the_others(sample_data, tmp_path, dask_client):
    src = sample_data / "fmri/nipy_functional/functional.nii.gz"
    good = tmp_path / "in" / "good.nii.gz"
    bad = tmp_path / "in" / "truncated.nii.gz"
    good.parent.mkdir()
    shutil.copy(src, good)
    raw = gzip.decompress(src.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    nan = tmp_path / "in" / "nan.npy"
    traces = np.random.default_rng(0).standard_normal((4, 500)).astype(np.float32)
    traces[2, 100] = np.nan
    np.save(nan, traces)
    tasks = plan_files([good, bad], tmp_path / "out") + plan_files(
        [nan], tmp_path / "out", reader="trace_array", fs=10.0
    )
    results = run_ingest(tasks, client=dask_client)
    status = {Path(r.path).name: r for r in results}
    assert status["good.nii.gz"].status == "created"
    assert status["truncated.nii.gz"].status == "failed"
    assert str(bad) in status["truncated.nii.gz"].error
    assert status["nan.npy"].status == "failed"
    assert str(nan) in status["nan.npy"].error and "NaN/Inf" in status["nan.npy"].error
    assert len(find_recordings(tmp_path / "out")) == 1
    hidden = [p for p in (tmp_path / "out").rglob(".*.partial-*")]
    assert hidden == []


def test_checksum_and_expectation_failures_name_the_file(sample_data, tmp_path):
    entry = load_catalog()["nipy_functional"]
    wrong = entry.model_copy(update={"checksums": {"functional.nii.gz": "0" * 64}})
    (result,) = run_ingest(
        plan_entry(wrong, tmp_path, sample_data), cluster=ClusterConfig(kind="threads")
    )
    assert result.status == "failed"
    assert "functional.nii.gz" in result.error and "differs from the catalog" in result.error
    wrong_rate = entry.model_copy(update={"expect": {"sfreq": 1.0}})
    (result,) = run_ingest(
        plan_entry(wrong_rate, tmp_path, sample_data), cluster=ClusterConfig(kind="threads")
    )
    assert result.status == "failed"
    assert "sampling rate 0.5 Hz differs from the dataset's 1 Hz" in result.error
    assert find_recordings(tmp_path) == []


def test_cli_catalog_and_adhoc_ingest(sample_data, tmp_path):
    result = runner.invoke(app, ["catalog", "list"])
    assert result.exit_code == 0 and "haxby2001_sub001_slice" in result.output
    result = runner.invoke(app, ["catalog", "show", "golub_bci"])
    assert result.exit_code == 0 and "exampleData.mat" in result.output
    assert runner.invoke(app, ["catalog", "show", "nope"]).exit_code == 2
    traces = tmp_path / "traces.npy"
    np.save(traces, np.random.default_rng(1).standard_normal((3, 200)).astype(np.float32))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an npy file")
    result = runner.invoke(
        app,
        [
            "ingest",
            str(traces),
            str(garbage),
            "--out",
            str(tmp_path / "out"),
            "--scheduler",
            "threads",
            "--reader",
            "trace_array",
            "-o",
            "fs=20",
            "--report",
            str(tmp_path / "report.json"),
        ],
    )
    assert result.exit_code == 1
    assert "1 created" in result.output and "1 failed" in result.output
    assert f"FAILED {garbage}:" in result.output
    (store,) = find_recordings(tmp_path / "out")
    assert f"{traces} -> {store.relative_to(tmp_path / 'out')}" in result.output
    assert open_recording(store).attrs["sfreq"] == 20.0
    assert json.loads((tmp_path / "report.json").read_text())[1]["status"] == "failed"
    missing = tmp_path / "missing.edf"
    result = runner.invoke(app, ["ingest", str(missing), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"unknown catalog entry or missing file {str(missing)!r}" in result.stderr


def test_cli_ingest_catalog_on_local_cluster(sample_data, tmp_path):
    result = runner.invoke(app, ["ingest", "golub_bci", "--out", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "2 created" in result.output
    runs = [open_recording(p) for p in find_recordings(tmp_path)]
    assert [r.sizes["channel"] for r in runs] == [86, 86]
    assert all(len(set(r["event_label"].values)) == 8 for r in runs)


KILL = """
import sys, time
import numpy as np
import neurodecode.ingest.calcium as calcium

slow = calcium._trace_rows
def _slow(*args, **kwargs):
    time.sleep(0.2)
    return slow(*args, **kwargs)
calcium._trace_rows = _slow
from neurodecode.cli import app
print("start", flush=True)
app(sys.argv[1:])
"""


def test_killed_ingest_leaves_no_store_and_rerun_works(tmp_path):
    traces = tmp_path / "big.npy"
    np.save(traces, np.random.default_rng(2).standard_normal((400_000, 8)).astype(np.float32))
    args = [
        "ingest",
        str(traces),
        "--out",
        str(tmp_path / "out"),
        "--scheduler",
        "threads",
        "--reader",
        "trace_array",
        "-o",
        "fs=1000",
        "-o",
        "orientation=time_first",
        "-o",
        "chunk_frames=20000",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ},
    )
    assert proc.stdout.readline().strip() == b"start"
    deadline = time.time() + 60
    while not list((tmp_path / "out").rglob(".*.partial-*/signal")):
        assert time.time() < deadline and proc.poll() is None, "ingest never started writing"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert find_recordings(tmp_path / "out") == []
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (store,) = find_recordings(tmp_path / "out")
    assert open_recording(store).sizes["time"] == 400_000
    assert list((tmp_path / "out").rglob(".*.partial-*")) == []


def test_every_catalog_dataset_ingests_with_known_facts(sample_data, tmp_path, dask_client):
    """All real recordings in ../shared/data, through the catalog, on a 2-worker cluster."""
    catalog = load_catalog()
    tasks = [
        t
        for name in EXPECTED_FILES
        if name != "eegbci_hands_feet"  # the same files as eegbci_s001 and more of its kind
        for t in plan_entry(catalog[name], tmp_path, sample_data)
    ]
    results = run_ingest(tasks, client=dask_client)
    failed = [r.error for r in results if r.status != "created"]
    assert failed == []
    stores = {(Path(r.path).name, r.store) for r in results}
    by_name: dict[str, list] = {}
    for name, store in stores:
        by_name.setdefault(name, []).append(open_recording(store))

    (r04,) = by_name["S001R04.edf"]
    assert r04.sizes == {**r04.sizes, "time": 20000, "channel": 64}
    assert r04.attrs["sfreq"] == 160.0
    labels = list(r04["event_label"].values)
    assert len(labels) == 30 and labels.count("rest") == 15
    assert sorted([labels.count("imagine_left_fist"), labels.count("imagine_right_fist")]) == [7, 8]
    (r06,) = by_name["S001R06.edf"]
    assert {"imagine_both_fists", "imagine_both_feet"} <= set(r06["event_label"].values)

    haxby = [
        ds for name, ds_list in by_name.items() if name == "bold_1slice.nii.gz" for ds in ds_list
    ]
    assert len(haxby) == 12
    for ds in haxby:
        assert ds.sizes["time"] == 121 and ds.attrs["sfreq"] == pytest.approx(1 / 2.5)
        assert len(set(ds["event_label"].values)) == 8 and ds.sizes["event"] == 8

    (movie,) = by_name["movie.tif"]
    assert movie["movie"].shape == (500, 64, 64)
    assert movie["behavior_running_speed"].shape == (500,)

    (track,) = by_name["nelpy_linear_track"]
    assert track.sizes["channel"] == 31 and track.sizes["spike"] == 28_829
    assert "behavior_position" in track

    golub = by_name["exampleData.mat"]
    assert [g.sizes["channel"] for g in golub] == [86, 86]
    assert all(len(set(g["event_label"].values)) == 8 for g in golub)

    muse = [ds for name, lst in by_name.items() if name.startswith("subject") for ds in lst]
    assert len(muse) == 9
    for ds in muse:
        assert (ds["ch_type"].values == "eeg").sum() == 4
        assert set(ds["event_label"].values) in ({"target", "nontarget"}, {"face", "house"})

    (ecog,) = by_name["sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay"]
    assert ecog.attrs["modality"] == "ecog" and ecog.sizes["channel"] == 83
    (eeglab,) = by_name["test_raw.set"]
    assert eeglab.sizes["channel"] == 32 and eeglab.attrs["sfreq"] == 128.0


def test_fetch_remote_files_from_a_local_server(tmp_path):
    """pooch download with SHA-256 check, from an HTTP server on 127.0.0.1."""
    import hashlib
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from neurodecode.catalog import RemoteFile, fetch_entry

    served = tmp_path / "served"
    served.mkdir()
    payload = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    np.save(served / "traces.npy", payload)
    sha = hashlib.sha256((served / "traces.npy").read_bytes()).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/traces.npy"
        entry = CatalogEntry(
            name="remote",
            modality="calcium",
            description="d",
            licence="l",
            root="remote",
            reader="trace_array",
            reader_options={"fs": 10.0},
            files=[{"glob": "*.npy"}],
            remote=[RemoteFile(path="sub/traces.npy", url=url, sha256=sha)],
        )
        (path,) = fetch_entry(entry, tmp_path / "data")
        assert path == tmp_path / "data" / "remote" / "sub" / "traces.npy"
        np.testing.assert_array_equal(np.load(path), payload)
        fetch_entry(entry, tmp_path / "data")  # present and valid: not downloaded again
        bad = entry.model_copy(
            update={"remote": [RemoteFile(path="other.npy", url=url, sha256="0" * 64)]}
        )
        with pytest.raises(ValueError, match="SHA256|hash"):
            fetch_entry(bad, tmp_path / "data")
    finally:
        server.shutdown()


def test_slurm_cluster_config_builds_a_job_script():
    pytest.importorskip("dask_jobqueue")
    from neurodecode.ingest.runner import make_cluster

    config = ClusterConfig(
        kind="slurm",
        n_workers=4,
        slurm={
            "queue": "normal",
            "account": "lab42",
            "cores": 4,
            "memory": "16GB",
            "walltime": "01:00:00",
        },
    )
    with make_cluster(config, scale=False) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p normal" in script and "#SBATCH -A lab42" in script
    assert "#SBATCH -t 01:00:00" in script and "--cpus-per-task=4" in script
    assert "--nworkers 4" in script  # one worker process per core: one file each
