"""Store integrity: per-block digests, the file manifest, ``verify_recording``, ``check_store``,
NaN/Inf diagnostics, ``if_exists="replace"`` and no empty folders after a failed write."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

import neurodecode.store as store_module
from neurodecode.cli import app
from neurodecode.schema import SchemaError
from neurodecode.store import (
    IntegrityError,
    check_store,
    open_recording,
    verify_recording,
    write_recording,
    write_stimuli,
)

from .conftest import small_recording

runner = CliRunner()
N_TIMES, N_CH, SFREQ = 20_000, 4, 100.0
# 1000 rows per chunk, 2 chunks (2000 rows = 20 s) per shard: block i is the file signal/c/i/0.
LAYOUT = dict(chunk_bytes=N_CH * 4 * 1000, shard_chunks=2)
BLOCK_S = 2000 / SFREQ


def _recording(values: np.ndarray | None = None, seed: int = 0):
    ds = small_recording(n_times=N_TIMES, n_channels=N_CH, sfreq=SFREQ, seed=seed)
    if values is not None:
        ds["signal"] = (("time", "channel"), values)
    return ds


def _incompressible(seed: int = 0) -> np.ndarray:
    """Finite float32 samples whose every byte is random: Blosc stores them as they are, so
    changing one sample keeps every shard's size."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0x0080_0000, 0x7F00_0000, size=(N_TIMES, N_CH), dtype=np.uint32)
    return bits.view(np.float32)


def _tree(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def altered(tmp_path):
    """A store whose block-3 shard was replaced by the same shard of slightly different data:
    the bytes still decode, into the wrong samples."""
    good, other = tmp_path / "good.zarr", tmp_path / "other.zarr"
    ds = _recording()
    write_recording(ds, good, **LAYOUT)
    changed = ds["signal"].values.copy()
    changed[6_500, 1] += 1.0  # row 6500 lies in block 3 (rows 6000-7999)
    write_recording(_recording(changed), other, **LAYOUT)
    shard = "signal/c/3/0"
    assert (good / shard).read_bytes() != (other / shard).read_bytes()
    shutil.copyfile(other / shard, good / shard)
    return good, ds


def test_clean_store_verifies(tmp_path):
    path = tmp_path / "r.zarr"
    ds = _recording()
    result = write_recording(ds, path, **LAYOUT)
    report = verify_recording(path)
    assert report.ok and report.problems == []
    time_aligned = ("signal", "behavior_speed", "behavior_position")
    assert report.nbytes_read == sum(ds[n].nbytes for n in time_aligned)
    assert report.nbytes_stored == result.nbytes_stored and report.seconds > 0
    assert check_store(path, result.content_sha256) is None
    report.raise_if_failed()  # nothing to raise
    assert verify_recording(path, progress=True).ok


def test_recording_without_events_verifies(tmp_path):
    """Empty string tables (no events, no splits) stay strings in the store and verify."""
    from neurodecode.schema import make_recording

    ds = make_recording(
        _incompressible()[:3000],
        sfreq=SFREQ,
        ch_names=["a", "b", "c", "d"],
        ch_types="eeg",
        units="V",
        modality="eeg",
        subject="01",
        task="rest",
        source={"path": "memory://rest", "sha256": "", "reader": "r", "reader_version": "1"},
    )
    assert ds.sizes.get("event", 0) == 0 and ds.sizes.get("interval", 0) == 0
    path = tmp_path / "rest.zarr"
    write_recording(ds, path)
    assert zarr.open_array(path / "event_label").dtype.kind == "T"
    assert verify_recording(path).problems == []
    xr.testing.assert_identical(open_recording(path).load(), ds)


def test_record_recomputes_the_fingerprint(tmp_path):
    """The whole fingerprint follows from the attributes, the small variables and the
    recorded block digests; every file of the store is in the manifest with its size."""
    path = tmp_path / "r.zarr"
    ds = _recording()
    result = write_recording(ds, path, **LAYOUT)
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    record = attrs["neurodecode_integrity"]
    signal = record["variables"]["signal"]
    assert signal["rows"] == 2000 and len(signal["xxh3_128"]) == N_TIMES // 2000
    files = {
        p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()
    }
    del files["zarr.json"]
    assert record["files"] == files
    back = open_recording(path)
    assert "neurodecode_integrity" not in back.attrs
    # The definition, spelled out: SHA-256 over the attributes, then each variable by name:
    # "name|dims|shape|dtype|" and its block digests (time-aligned) or its values.
    content = {k: v for k, v in attrs.items() if not k.startswith(("neurodecode_", "content_"))}
    h = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    lazy = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)
    assert sorted(map(str, lazy.variables)) == sorted(record["variables"])
    for name in sorted(record["variables"]):
        var, entry = lazy.variables[name], record["variables"][name]
        text = var.dtype.kind in "OUT"
        h.update(f"{name}|{var.dims}|{var.shape}|{'object' if text else var.dtype}|".encode())
        if "xxh3_128" in entry:
            h.update("".join(entry["xxh3_128"]).encode())
        elif text:
            h.update(json.dumps(var.values.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(var.values).view(np.uint8).data)
    assert h.hexdigest() == result.content_sha256 == attrs["content_sha256"]


def test_altered_shard_is_caught_naming_variable_and_block(altered):
    path, ds = altered
    # The codec still decodes the shard, into other samples: only the digests can tell.
    assert open_recording(path)["signal"][6_500, 1].values == ds["signal"][6_500, 1].values + 1
    report = verify_recording(path)
    assert not report.ok
    assert "signal: block 3 (t = 60-80 s) differs from its recorded digest" in report.problems
    assert not any(p.startswith("signal: block 2") for p in report.problems)
    with pytest.raises(IntegrityError, match=r"signal: block 3 \(t = 60-80 s\)") as err:
        report.raise_if_failed()
    assert isinstance(err.value, SchemaError) and str(path) in str(err.value)

    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"FAIL {path}: signal: block 3 (t = 60-80 s) differs from its recorded digest" in (
        result.output
    )
    assert "0 valid, 1 invalid" in result.output


def test_fast_validate_reads_no_sample(tmp_path, monkeypatch):
    values = _incompressible()
    path, other = tmp_path / "r.zarr", tmp_path / "other.zarr"
    write_recording(_recording(values), path, **LAYOUT)
    changed = values.copy()
    changed[2_345, 0] = np.float32(1.5)  # in block 1 (t = 20-40 s)
    write_recording(_recording(changed), other, **LAYOUT)
    shard = "signal/c/1/0"
    assert (path / shard).stat().st_size == (other / shard).stat().st_size
    shutil.copyfile(other / shard, path / shard)
    assert check_store(path) is None  # same files, same sizes: the metadata cannot tell

    fast = runner.invoke(app, ["validate", "--fast", str(path)])
    assert fast.exit_code == 0 and "1 valid, 0 invalid" in fast.output
    full = runner.invoke(app, ["validate", str(path)])
    assert full.exit_code == 1
    assert "signal: block 1 (t = 20-40 s) differs from its recorded digest" in full.output

    def no_samples(*args, **kwargs):
        raise AssertionError("--fast read a sample")

    monkeypatch.setattr(store_module, "_scan_block", no_samples)
    assert runner.invoke(app, ["validate", "--fast", str(path)]).exit_code == 0


def test_check_store_finds_missing_array_and_truncated_shard(tmp_path, monkeypatch):
    path = tmp_path / "r.zarr"
    result = write_recording(_recording(), path, **LAYOUT)
    deleted, truncated = tmp_path / "deleted.zarr", tmp_path / "truncated.zarr"
    shutil.copytree(path, deleted)
    shutil.copytree(path, truncated)
    shutil.rmtree(deleted / "signal")
    shard = truncated / "signal" / "c" / "3" / "0"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: size // 2])

    def no_reading(*args, **kwargs):
        raise AssertionError("check_store opened an array")

    with monkeypatch.context() as m:  # metadata only: zarr and xarray are never asked
        m.setattr(store_module.zarr, "open_group", no_reading)
        m.setattr(store_module.zarr, "open_array", no_reading)
        m.setattr(store_module.xr, "open_zarr", no_reading)
        assert check_store(path, result.content_sha256) is None
        assert check_store(deleted, result.content_sha256) == "signal/ is missing"
        assert check_store(truncated) == f"signal/c/3/0 is {size // 2} bytes, {size} recorded"
        assert "fingerprint" in check_store(path, "0" * 64)
        assert check_store(tmp_path / "nothing.zarr") == "the store does not exist"

    assert verify_recording(deleted).problems == ["signal/ is missing"]
    problems = verify_recording(truncated).problems
    assert problems[0] == f"signal/c/3/0 is {size // 2} bytes, {size} recorded"
    assert any(p.startswith("signal: block 3 (t = 60-80 s) ") for p in problems)
    for bad in (deleted, truncated):
        result_cli = runner.invoke(app, ["validate", "--fast", str(bad)])
        assert result_cli.exit_code == 1 and f"FAIL {bad}: signal/" in result_cli.output
    # A missing array is reported once, not again as the coordinates it carried.
    assert runner.invoke(app, ["validate", str(deleted)]).output.count("FAIL") == 1


def test_small_variables_attributes_and_record_are_verified(tmp_path):
    path = tmp_path / "r.zarr"
    write_recording(_recording(), path, **LAYOUT)
    copies = {k: tmp_path / f"{k}.zarr" for k in ("channel", "attrs", "record")}
    for copy in copies.values():
        shutil.copytree(path, copy)
    zarr.open_array(copies["channel"] / "ch_type", mode="r+")[0] = "misc"
    zarr.open_group(copies["attrs"], mode="r+").attrs["task"] = "other"
    group = zarr.open_group(copies["record"], mode="r+")
    record = dict(group.attrs["neurodecode_integrity"])
    record["variables"] = dict(record["variables"])
    blocks = record["variables"]["signal"] = dict(record["variables"]["signal"])
    blocks["xxh3_128"] = ["0" * 32, *blocks["xxh3_128"][1:]]
    group.attrs["neurodecode_integrity"] = record
    problems = {k: verify_recording(c).problems for k, c in copies.items()}
    assert "ch_type: differs from its recorded digest" in problems["channel"]
    assert problems["attrs"] == ["the attributes differ from their recorded digest"]
    assert "signal: block 0 (t = 0-20 s) differs from its recorded digest" in problems["record"]
    assert any(p.startswith("the content fingerprint") for p in problems["record"])


def test_store_without_record_is_not_trusted(tmp_path):
    path = tmp_path / "r.zarr"
    write_recording(_recording(), path)
    group = zarr.open_group(path, mode="r+")
    del group.attrs["neurodecode_integrity"]  # a store written before records existed
    assert "no integrity record" in check_store(path)
    assert not verify_recording(path).ok
    # An ordinary rewrite ("update") replaces it rather than keeping it as "unchanged".
    assert write_recording(_recording(), path).status == "replaced"
    assert verify_recording(path).ok


def test_nan_error_names_channels_and_first_time(tmp_path):
    values = _recording()["signal"].values.copy()
    values[321, 3] = np.nan
    values[400:411, 1] = np.inf
    root = tmp_path / "root"
    with pytest.raises(SchemaError) as err:
        write_recording(_recording(values), root / "a" / "b" / "r.zarr", **LAYOUT)
    assert str(err.value).splitlines() == [
        "memory://small does not follow the recording schema:",
        "  - signal holds 12 NaN/Inf value(s) in channel(s) EEG001, EEG003 (2 channels), "
        "first at t = 3.21 s (sample 321)",
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder left behind

    ds = small_recording(n_times=3_000, n_channels=8)
    signal = ds["signal"].values.copy()
    signal[2_999, :7] = -np.inf  # the last row of the second block
    ds["signal"] = (("time", "channel"), signal)
    speed = ds["behavior_speed"].values.copy()
    speed[[2_500, 17]] = np.nan
    ds["behavior_speed"] = ("time", speed)
    with pytest.raises(SchemaError) as err:
        write_recording(ds, tmp_path / "r.zarr", chunk_bytes=8 * 4 * 500, shard_chunks=3)
    assert err.value.problems == [
        "signal holds 7 NaN/Inf value(s) in channel(s) EEG000, EEG001, EEG002, EEG003, EEG004, "
        "... (7 channels), first at t = 29.99 s (sample 2999)",
        "behavior_speed holds 2 NaN/Inf value(s), first at t = 0.17 s (sample 17)",
    ]
    assert list(tmp_path.iterdir()) == []


def test_failed_writes_leave_no_folder(tmp_path):
    def fail(block, block_info=None):
        if block_info[None]["chunk-location"][0] == 5:
            raise RuntimeError("disk pulled out mid-write")
        return np.ones(block.shape, np.float32)

    source = da.zeros((N_TIMES, N_CH), chunks=(1000, N_CH), dtype=np.float32).map_blocks(
        fail, dtype=np.float32
    )
    root = tmp_path / "stores"
    target = root / "ds" / "sub-01" / "ses-01" / "eeg" / "task-x_run-1.zarr"
    with pytest.raises(RuntimeError, match="disk pulled out"):
        write_recording(_recording(source), target, **LAYOUT)
    assert not root.exists()
    # Folders that hold another store are kept; only the empty ones it created go.
    sibling = target.parent / "task-y_run-1.zarr"
    write_recording(_recording(), sibling, **LAYOUT)
    deeper = target.parent / "new" / "task-x_run-1.zarr"
    with pytest.raises(RuntimeError):
        write_recording(_recording(source), deeper, **LAYOUT)
    assert sorted(p.name for p in target.parent.iterdir()) == ["task-y_run-1.zarr"]
    with pytest.raises(ValueError):  # 2 images, 3 classes
        write_stimuli(tmp_path / "stim" / "ds" / "stimuli.zarr", np.zeros((2, 4, 4)), np.zeros(3))
    assert not (tmp_path / "stim").exists()


def test_replace_rewrites_an_identical_store(tmp_path):
    path = tmp_path / "r.zarr"
    first = write_recording(_recording(), path, **LAYOUT)
    before, mtime = _tree(path), path.stat().st_mtime_ns
    time.sleep(0.02)
    again = write_recording(_recording(), path, if_exists="replace", **LAYOUT)
    assert again.status == "replaced" and again.content_sha256 == first.content_sha256
    assert path.stat().st_mtime_ns != mtime and _tree(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]
    assert write_recording(_recording(), path, **LAYOUT).status == "unchanged"
    assert write_recording(_recording(), tmp_path / "new.zarr", if_exists="replace").status == (
        "created"
    )
    with pytest.raises(ValueError, match="if_exists must be"):
        write_recording(_recording(), path, if_exists="overwrite")


def test_update_repairs_a_damaged_store(tmp_path):
    """A store with the right fingerprint attribute but a missing array is not "unchanged"."""
    path = tmp_path / "r.zarr"
    write_recording(_recording(), path, **LAYOUT)
    shutil.rmtree(path / "behavior_speed")
    assert check_store(path) == "behavior_speed/ is missing"
    assert write_recording(_recording(), path, **LAYOUT).status == "replaced"
    assert check_store(path) is None and verify_recording(path).ok


def test_simulate_unknown_modality_is_one_line(tmp_path):
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "o"), "--modality", "meg"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid simulation settings: modalities: the simulator has no modality 'meg'; "
        "valid modalities: calcium, ecog, eeg, fmri, seeg, spikes"
    ]
    assert not (tmp_path / "o").exists()
