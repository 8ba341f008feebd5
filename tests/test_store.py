"""The recording store: round trips, atomicity, idempotency, laziness, bounded chunks."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from neurodecode.schema import SchemaError, events_frame, make_recording, validate
from neurodecode.store import (
    check_store,
    find_recordings,
    open_recording,
    recording_path,
    store_summary,
    verify_recording,
    write_recording,
    write_stimuli,
)

from .conftest import small_recording


def tree_digest(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def assert_same_recording(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(a.load(), b.load())


def test_round_trip_is_identical(tmp_path, recording):
    spikes = make_recording(
        recording["signal"].values,
        sfreq=100.0,
        ch_names=recording["channel"].values,
        ch_types="unit",
        units="count",
        modality="spikes",
        subject="02",
        task="track",
        spike_times=np.array([0.5, 0.1, 3.3]),
        spike_units=np.array([1, 0, 7]),
        source={
            "path": "memory://spikes",
            "sha256": "0" * 64,
            "reader": "r",
            "reader_version": "1",
        },
    )
    for ds in (recording, spikes):
        path = tmp_path / f"{ds.attrs['subject']}.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "unstable data type" or other zarr warnings
            result = write_recording(ds, path)
            back = open_recording(path)
        assert result.status == "created" and result.nbytes_stored > 0
        assert_same_recording(ds, back)
        assert back["channel"].dtype.kind == "U"
        assert back["event_label"].dtype.kind == "U"
    assert back["spike_time"].values.tolist() == [0.1, 0.5, 3.3]
    assert back["spike_unit"].values.tolist() == [0, 1, 7]


def test_open_is_lazy_and_chunked_by_shard(tmp_path):
    ds = small_recording(n_times=50_000, n_channels=4)
    path = tmp_path / "r.zarr"
    write_recording(ds, path, chunk_bytes=16_000, shard_chunks=4)
    back = open_recording(path)
    assert isinstance(back["signal"].data, da.Array)
    assert back["signal"].data.chunks[0][0] == 4000  # 4 chunks of 1000 samples x 4 ch x 4 B
    arr = zarr.open_array(path / "signal", mode="r")
    assert arr.chunks == (1000, 4) and arr.shards == (4000, 4)
    assert arr.compressors  # compressed
    np.testing.assert_array_equal(
        back["signal"][12_345:12_400].values, ds["signal"][12_345:12_400].values
    )


def test_dataset_ten_times_larger_than_a_chunk(tmp_path):
    """Streams shard by shard from a lazy source (memory is measured in benchmarks/)."""
    n_times, n_ch = 40_000, 16
    src = (
        da.random.RandomState(1)
        .standard_normal((n_times, n_ch), chunks=(3_000, n_ch))
        .astype(np.float32)
    )
    ds = small_recording(n_times=n_times, n_channels=n_ch)
    ds["signal"] = (("time", "channel"), src)
    path = tmp_path / "big.zarr"
    result = write_recording(ds, path, chunk_bytes=n_ch * 4 * 1_000, shard_chunks=2)
    n_chunks = n_times // 1_000
    assert n_chunks >= 10
    assert len(list((path / "signal" / "c").rglob("*"))) >= n_times // 2_000  # shard files
    np.testing.assert_array_equal(open_recording(path)["signal"].values, src.compute())
    assert result.nbytes >= n_times * n_ch * 4


def test_write_twice_is_idempotent(tmp_path, recording):
    path = tmp_path / "r.zarr"
    first = write_recording(recording, path)
    before = tree_digest(path)
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    second = write_recording(recording, path)
    assert second.status == "unchanged"
    assert second.content_sha256 == first.content_sha256
    assert tree_digest(path) == before and path.stat().st_mtime_ns == mtime
    # Two independent writes of the same content give byte-identical stores.
    write_recording(recording, tmp_path / "copy.zarr")
    assert tree_digest(tmp_path / "copy.zarr") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_changed_content_replaces_store(tmp_path, recording):
    path = tmp_path / "r.zarr"
    write_recording(recording, path)
    changed = recording.copy()
    changed["signal"] = recording["signal"] * 2
    result = write_recording(changed, path)
    assert result.status == "replaced"
    np.testing.assert_array_equal(open_recording(path)["signal"].values, changed["signal"].values)
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]


def test_if_exists_modes(tmp_path, recording):
    path = tmp_path / "r.zarr"
    write_recording(recording, path)
    with pytest.raises(FileExistsError, match="already exists"):
        write_recording(recording, path, if_exists="error")
    assert write_recording(recording, path, if_exists="skip").status == "skipped"


def _failing_source(n_times: int, n_ch: int, fail_block: int) -> da.Array:
    def block(b, block_info=None):
        if block_info[None]["chunk-location"][0] == fail_block:
            raise RuntimeError("disk pulled out mid-write")
        return np.ones(b.shape, np.float32)

    template = da.zeros((n_times, n_ch), chunks=(1000, n_ch), dtype=np.float32)
    return template.map_blocks(block, dtype=np.float32)


def test_write_failing_midway_leaves_nothing(tmp_path):
    ds = small_recording(n_times=20_000, n_channels=4)
    ds["signal"] = (("time", "channel"), _failing_source(20_000, 4, fail_block=10))
    path = tmp_path / "r.zarr"
    with pytest.raises(RuntimeError, match="disk pulled out"):
        write_recording(ds, path, chunk_bytes=4 * 4 * 1000, shard_chunks=1)
    assert list(tmp_path.iterdir()) == []
    # The same failure while replacing an existing store keeps the old one intact.
    good = small_recording(n_times=20_000, n_channels=4)
    write_recording(good, path)
    before = tree_digest(path)
    with pytest.raises(RuntimeError):
        write_recording(ds, path, chunk_bytes=4 * 4 * 1000, shard_chunks=1)
    assert tree_digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]
    assert write_recording(good, path).status == "unchanged"


def test_nan_samples_abort_the_write(tmp_path, recording):
    values = recording["signal"].values.copy()
    values[100, 2] = np.nan
    recording["signal"] = (("time", "channel"), values)
    with pytest.raises(SchemaError, match=r"memory://small .*\n.*signal holds 1 NaN/Inf"):
        write_recording(recording, tmp_path / "r.zarr")
    assert list(tmp_path.iterdir()) == []


def test_invalid_recording_is_not_written(tmp_path, recording):
    recording.attrs["sfreq"] = 1000.0
    with pytest.raises(SchemaError, match="does not match the time axis"):
        write_recording(recording, tmp_path / "r.zarr")
    assert list(tmp_path.iterdir()) == []


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import dask, dask.array as da, numpy as np
    from neurodecode.store import write_recording
    from tests.conftest import small_recording

    def slow(b):
        time.sleep(0.05)
        return b
    n = 400_000
    ds = small_recording(n_times=n, n_channels=4)
    src = da.ones((n, 4), chunks=(1000, 4), dtype=np.float32).map_blocks(slow)
    ds["signal"] = (("time", "channel"), src)
    print("writing", flush=True)
    with dask.config.set(scheduler="synchronous"):
        write_recording(ds, sys.argv[1], chunk_bytes=16_000, shard_chunks=1)
    """
)


def test_killed_writer_leaves_no_visible_store(tmp_path):
    path = tmp_path / "r.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.stdout.readline().strip() == b"writing"
    deadline = time.time() + 60
    while not any((tmp_path / p.name / "signal").exists() for p in tmp_path.iterdir()):
        assert time.time() < deadline and proc.poll() is None, "writer never started writing"
        time.sleep(0.05)
    time.sleep(0.5)  # some shards are on disk now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not path.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".r.zarr.partial-")
    assert find_recordings(tmp_path) == []
    # A rerun succeeds and cleans up what the dead writer left.
    write_recording(small_recording(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]
    validate(open_recording(path), check_data=True)


def test_write_on_distributed_cluster(tmp_path, dask_client):
    ds = small_recording(n_times=30_000, n_channels=8)
    ds["signal"] = (
        ("time", "channel"),
        da.random.RandomState(3).standard_normal((30_000, 8), chunks=(2_500, 8)).astype(np.float32),
    )
    path = tmp_path / "r.zarr"
    result = write_recording(ds, path, chunk_bytes=8 * 4 * 1000, shard_chunks=2)
    assert result.status == "created"
    back = open_recording(path)
    assert float(back["signal"].std().compute()) == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(back["signal"].values, ds["signal"].values)
    assert write_recording(ds, path, chunk_bytes=8 * 4 * 1000, shard_chunks=2).status == "unchanged"


def test_layout_and_discovery(tmp_path, recording):
    path = recording_path(tmp_path, "my_data", recording)
    assert path == tmp_path / "my_data" / "sub-01" / "ses-01" / "eeg" / "task-test_run-01.zarr"
    write_recording(recording, path)
    write_stimuli(tmp_path / "my_data" / "stimuli.zarr", np.zeros((2, 4, 4)), np.array([0, 1]))
    (tmp_path / "my_data" / ".task-x.zarr.partial-1-0123abcd").mkdir()
    assert find_recordings(tmp_path) == [path]
    assert find_recordings(path) == [path]
    summary = store_summary(path)
    assert summary["n_channels"] == 8 and summary["sfreq"] == 100.0
    assert summary["events"] == {"left": 2, "right": 1}
    assert summary["splits"] == {"test": pytest.approx(6.0), "train": pytest.approx(14.0)}
    assert summary["source"]["path"] == "memory://small"


def test_stimuli_round_trip_and_idempotent(tmp_path):
    images = np.random.default_rng(0).random((3, 8, 8))
    path = tmp_path / "stimuli.zarr"
    assert write_stimuli(path, images, np.array([0, 1, 1])).status == "created"
    assert write_stimuli(path, images, np.array([0, 1, 1])).status == "unchanged"
    back = xr.open_zarr(path, zarr_format=3, consolidated=False)
    np.testing.assert_allclose(back["images"].values, images.astype(np.float32))


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recording store"):
        open_recording(tmp_path / "missing.zarr")
    write_stimuli(tmp_path / "s.zarr", np.zeros((1, 2, 2)), np.array([0]))
    with pytest.raises(SchemaError, match="not written by neurodecode"):
        open_recording(tmp_path / "s.zarr")


def test_events_survive_round_trip(tmp_path, recording):
    path = tmp_path / "r.zarr"
    write_recording(recording, path)
    a, b = events_frame(recording), events_frame(open_recording(path))
    assert a.equals(b)


@pytest.fixture(scope="module")
def simulated():
    from neurodecode.simulate import simulate_dataset

    return simulate_dataset(
        n_subjects=1, duration=40.0, n_images=8, seed=3, calcium={"movie": True}
    )


@pytest.mark.parametrize("modality", ["eeg", "fmri", "calcium", "spikes"])
def test_round_trip_every_modality(tmp_path, simulated, modality):
    ds = next(r for r in simulated.recordings if r.attrs["modality"] == modality)
    path = recording_path(tmp_path, "sim", ds)
    result = write_recording(ds, path)
    back = open_recording(path)
    assert_same_recording(ds, back)
    validate(back, check_data=True)
    # Every variable kind (strings, positions, ROI masks, movies, spikes) verifies as written.
    assert check_store(path, result.content_sha256) is None
    report = verify_recording(path)
    assert report.problems == [] and report.nbytes_read >= ds["signal"].nbytes
    extra = {"calcium": "movie", "spikes": "spike_time"}.get(modality)
    if extra:
        assert extra in back
