"""The fast store read path: :func:`read_signal` / :class:`StoredArray` and open_recording's blocks.

References are read independently of the fast path, with xarray's own Zarr backend
(``xr.open_zarr``), and compared with the in-memory data written.
"""

from __future__ import annotations

import os
import pickle
import tracemalloc

import numpy as np
import pytest
import xarray as xr
import zarr

from neurodecode.schema import make_recording
from neurodecode.simulate import (
    simulate_calcium,
    simulate_eeg,
    simulate_fmri,
    simulate_latent,
    simulate_spikes,
)
from neurodecode.store import (
    IntegrityError,
    StoredArray,
    open_recording,
    read_signal,
    write_recording,
)

SOURCE = {"path": "memory://read", "sha256": "", "reader": "tests", "reader_version": "0"}
# 64 float32 channels: 16 rows per 4 KiB chunk, 4 chunks (64 rows) per shard
SMALL = {"chunk_bytes": 4096, "shard_chunks": 4}


def _recording(signal, **kwargs):
    n_channels = signal.shape[1]
    return make_recording(
        signal, sfreq=100.0, ch_names=[f"C{i:05d}" for i in range(n_channels)], ch_types="eeg",
        units="V", modality="eeg", subject="01", task="read", source=SOURCE, **kwargs,
    )  # fmt: skip


def _zarr_values(path, name="signal"):
    """The variable as xarray's Zarr backend reads it (no neurodecode code involved)."""
    return xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)[name].values


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """1000 x 64 float32 in 16 shards of 4 chunks (the last shard and chunk partial)."""
    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    path = tmp_path_factory.mktemp("read") / "rec.zarr"
    write_recording(_recording(x), path, **SMALL)
    return path, x


def test_layout_of_the_fixture(sharded):
    path, x = sharded
    arr = StoredArray(path)
    assert arr._grid == (4, 1)
    assert (arr.chunk_rows, arr.shard_rows, arr.shape) == (16, 64, x.shape)
    assert arr.chunks == (16, 64) and arr.shards == (64, 64)
    assert len(list((path / "signal" / "c").iterdir())) == 16


@pytest.mark.parametrize(
    "start, stop",
    [(None, None), (0, 1000), (15, 17), (16, 32), (63, 65), (60, 200), (5, 990), (-30, None),
     (999, 1000), (0, 1), (128, 192), (500, 400), (None, 2000)],
)  # fmt: skip
def test_time_ranges_equal_open_recording(sharded, start, stop):
    path, x = sharded
    ref = _zarr_values(path)
    got = read_signal(path, start, stop)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref[start:stop])
    np.testing.assert_array_equal(got, x[start:stop])
    np.testing.assert_array_equal(open_recording(path)["signal"].values[start:stop], got)


@pytest.mark.parametrize(
    "channels",
    [[0], [63, 0, 5], np.arange(64)[::-1], slice(1, 40, 3), np.arange(64) % 3 == 0, [-1, -64],
     [7, 7, 2]],
)  # fmt: skip
@pytest.mark.parametrize("start, stop", [(None, None), (10, 70), (63, 65), (200, 201)])
def test_channel_subsets(sharded, channels, start, stop):
    path, x = sharded
    got = read_signal(path, start, stop, channels=channels)
    np.testing.assert_array_equal(got, _zarr_values(path)[start:stop][:, channels])
    np.testing.assert_array_equal(got, x[start:stop][:, channels])


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_thread_counts_give_the_same_values(sharded, threads):
    path, x = sharded
    np.testing.assert_array_equal(read_signal(path, 3, 997, threads=threads), x[3:997])


def test_read_into_out(sharded):
    path, x = sharded
    out = np.full((100, 64), 7.0, np.float32)
    got = read_signal(path, 30, 130, out=out)
    assert got is out
    np.testing.assert_array_equal(out, x[30:130])
    picked = np.zeros((50, 2), np.float32)
    read_signal(path, 0, 50, channels=[9, 1], out=picked)
    np.testing.assert_array_equal(picked, x[:50][:, [9, 1]])
    strided = np.zeros((64, 128), np.float32)[:, ::2]  # not C-contiguous: goes through a copy
    read_signal(path, 64, 128, out=strided)
    np.testing.assert_array_equal(strided, x[64:128])


def test_bad_arguments_name_the_store(sharded, tmp_path):
    path, _ = sharded
    with pytest.raises(ValueError, match=rf"{path.name}.*out has shape \(3, 64\).*\(4, 64\)"):
        read_signal(path, 0, 4, out=np.zeros((3, 64), np.float32))
    with pytest.raises(ValueError, match="dtype float64"):
        read_signal(path, 0, 4, out=np.zeros((4, 64)))
    with pytest.raises(IndexError):
        read_signal(path, channels=[64])
    with pytest.raises(FileNotFoundError, match="no recording store"):
        read_signal(tmp_path / "missing.zarr")
    with pytest.raises(FileNotFoundError, match="has no variable 'movie'"):
        read_signal(path, variable="movie")
    with pytest.raises(ValueError, match="not a time-aligned variable"):
        StoredArray(path, "channel")


DTYPES = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool"]


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    """Behaviour variables of every numeric dtype (some all-zero chunks), and a movie."""
    n = 700
    rng = np.random.default_rng(1)
    behavior = {}
    for dt in DTYPES:
        v = (rng.integers(0, 2, n) if dt == "bool" else rng.integers(0, 100, (n, 3))).astype(dt)
        v[:200] = 0  # whole chunks equal to the fill value: zarr does not write them
        behavior[dt] = v
    movie = rng.integers(0, 4096, (n, 9, 7)).astype(np.uint16)
    movie[300:] = 0  # whole shards never written
    rec = _recording(rng.standard_normal((n, 4)).astype(np.float32), behavior=behavior,
                     movie=movie)  # fmt: skip
    path = tmp_path_factory.mktemp("typed") / "rec.zarr"
    write_recording(rec, path, chunk_bytes=256, shard_chunks=3)
    return path, behavior, movie


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("start, stop", [(None, None), (150, 260), (699, 700)])
def test_every_dtype(typed, dtype, start, stop):
    path, behavior, _ = typed
    name = f"behavior_{dtype}"
    got = read_signal(path, start, stop, variable=name)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, _zarr_values(path, name)[start:stop])
    np.testing.assert_array_equal(got, behavior[dtype][start:stop])
    lazy = open_recording(path)[name]
    assert lazy.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(lazy.values[start:stop], got)


def test_unwritten_chunks_and_shards_read_as_the_fill_value(typed):
    path, behavior, movie = typed
    arr = StoredArray(path, "movie")
    missing = [f for f in arr.shard_files() if not f.exists()]
    assert missing and len(missing) < len(arr.shard_files())
    np.testing.assert_array_equal(read_signal(path, variable="movie"), movie)
    np.testing.assert_array_equal(read_signal(path, 250, 400, channels=[8, 0], variable="movie"),
                                  movie[250:400][:, [8, 0]])  # fmt: skip
    np.testing.assert_array_equal(open_recording(path)["movie"].values, movie)


def test_channels_beyond_one_chunk(tmp_path):
    """More than 65536 channels: the rows of one shard are split into two chunks."""
    x = np.random.default_rng(2).standard_normal((9, 70_000)).astype(np.float32)
    path = tmp_path / "wide.zarr"
    write_recording(_recording(x), path)
    arr = StoredArray(path)
    assert arr.chunks[1] == 65_536 and arr._grid[1] == 2
    np.testing.assert_array_equal(read_signal(path), x)
    picks = [69_999, 3, 65_536, 65_535]
    np.testing.assert_array_equal(read_signal(path, 2, 7, channels=picks), x[2:7][:, picks])
    np.testing.assert_array_equal(read_signal(path, channels=[1, 2]), x[:, [1, 2]])
    np.testing.assert_array_equal(open_recording(path)["signal"].values, _zarr_values(path))


def _simulated():
    latent = simulate_latent(duration=30.0, seed=3)
    return {
        "eeg": simulate_eeg(latent, sfreq=100.0, n_channels=8),
        "fmri": simulate_fmri(latent, n_voxels=40),
        "calcium": simulate_calcium(latent, n_rois=10, movie=True, movie_size=16),
        "spikes": simulate_spikes(latent, n_units=12),
    }


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    out = {}
    for modality, ds in _simulated().items():
        path = root / f"{modality}.zarr"
        write_recording(ds, path, chunk_bytes=2048, shard_chunks=2)
        out[modality] = (path, ds)
    return out


@pytest.mark.parametrize("modality", ["eeg", "fmri", "calcium", "spikes"])
def test_every_simulated_modality(simulated, modality):
    path, ds = simulated[modality]
    opened = open_recording(path)
    aligned = [n for n, v in ds.data_vars.items() if v.dims[0] == "time"]
    assert "signal" in aligned
    if modality == "calcium":
        assert "movie" in aligned
    for name in aligned:
        ref = ds[name].values
        got = read_signal(path, variable=name)
        np.testing.assert_array_equal(got, ref, err_msg=name)
        np.testing.assert_array_equal(opened[name].values, ref, err_msg=name)
        n = len(ref)
        np.testing.assert_array_equal(read_signal(path, n // 3, n // 2 + 1, variable=name),
                                      ref[n // 3 : n // 2 + 1], err_msg=name)  # fmt: skip
    picks = np.arange(ds.sizes["channel"])[::-3]
    np.testing.assert_array_equal(read_signal(path, channels=picks), ds["signal"].values[:, picks])


def _corrupt(file):
    """Overwrite a file with garbage of the same size."""
    size = file.stat().st_size
    file.write_bytes(np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes())


def test_a_read_touches_only_the_shards_and_chunks_it_needs(tmp_path):
    """Every other shard, and the chunks of the shard outside the range, are destroyed."""
    x = np.random.default_rng(4).standard_normal((1000, 64)).astype(np.float32)
    path = tmp_path / "rec.zarr"
    write_recording(_recording(x), path, **SMALL)
    arr = StoredArray(path)
    start, stop = 70, 110  # rows of shard 1 (64-127), in its chunks 0-2 (rows 64-111)
    assert arr.shard_files(start, stop) == [path / "signal" / "c" / "1" / "0"]
    for f in (path / "signal" / "c").iterdir():
        if f.name != "1":
            _corrupt(f / "0")
    shard = path / "signal" / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(raw[-(4 * 16 + 4) : -4]), "<u8").reshape(4, 2)
    offset, nbytes = (int(v) for v in index[3])  # chunk 3: rows 112-127, outside the range
    raw[offset : offset + nbytes] = b"\xff" * nbytes
    shard.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_signal(path, start, stop), x[start:stop])
    np.testing.assert_array_equal(read_signal(path, start, stop, threads=4), x[start:stop])
    with pytest.raises(IntegrityError, match=r"signal/c/1/0: time chunk 7 cannot be decomp"):
        read_signal(path, 70, 113)
    with pytest.raises(IntegrityError, match=r"signal/c/2/0: the shard index fails its CRC32C"):
        read_signal(path, 128, 130)


def test_truncated_shard(sharded, tmp_path):
    path = tmp_path / "rec.zarr"
    write_recording(_recording(sharded[1]), path, **SMALL)
    shard = path / "signal" / "c" / "5" / "0"
    raw = shard.read_bytes()
    index = raw[-(4 * 16 + 4) :]
    shard.write_bytes(raw[: len(raw) // 2] + index)  # index intact, data cut short
    with pytest.raises(
        IntegrityError, match=r"(?s)rec\.zarr.*signal/c/5/0: the shard is truncated"
    ):
        read_signal(path, 320, 384)
    np.testing.assert_array_equal(read_signal(path, 0, 320), sharded[1][:320])


def test_memory_of_a_small_read_from_a_large_store(tmp_path):
    x = np.random.default_rng(5).standard_normal((400_000, 64)).astype(np.float32)  # 102 MB
    path = tmp_path / "big.zarr"
    write_recording(_recording(x), path)
    chunk = StoredArray(path).chunk_rows * 64 * 4  # 1 MiB
    tracemalloc.start()
    try:
        got = read_signal(path, 200_000, 201_000)  # 256 kB from 2 chunks (rows 196608-204799)
        _, peak = tracemalloc.get_traced_memory()
        for start in range(0, 400_000, 20_000):
            read_signal(path, start, start + 5000)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, x[200_000:201_000])
    # the result, and per chunk read at most a compressed and a decompressed chunk buffer, plus
    # 1 MiB of slack for the store's metadata and the first use of the thread pool: far below
    # one shard (16 chunks, 16 MiB), let alone the 102 MB recording
    assert peak < got.nbytes + 2 * 2 * (chunk + 4096) + (1 << 20), peak
    assert peak < StoredArray(path).shard_rows * 64 * 4 / 2, peak
    # what stays between reads: those buffers, one pair per reading thread, reused
    assert kept < got.nbytes + ((os.cpu_count() or 1) + 1) * 2 * (chunk + 4096) + (1 << 20), kept
    tracemalloc.start()
    try:
        whole = read_signal(path, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # no second copy, no shard buffer
    assert peak < whole.nbytes + 2 * 2 * (chunk + 4096) + (1 << 20), peak
    np.testing.assert_array_equal(whole, x)


def test_other_layouts_are_read_with_zarr(tmp_path):
    """An array not written by write_recording (no shards, Zstd) reads the same, via Zarr."""
    path = tmp_path / "other.zarr"
    x = np.arange(3000, dtype=np.int32).reshape(1000, 3)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arr = group.create_array(
        "signal", shape=x.shape, chunks=(64, 3), dtype=x.dtype,
        compressors=zarr.codecs.ZstdCodec(), dimension_names=("time", "channel"),
    )  # fmt: skip
    arr[:] = x
    stored = StoredArray(path)
    assert stored._grid is None and stored.shards is None
    np.testing.assert_array_equal(stored.read(10, 500, channels=[2, 0]), x[10:500][:, [2, 0]])
    np.testing.assert_array_equal(stored[::3, 1], x[::3, 1])


def test_indexing_pickling_and_dask(sharded):
    path, x = sharded
    arr = StoredArray(path)
    np.testing.assert_array_equal(arr[5], x[5])
    np.testing.assert_array_equal(arr[::7, 3], x[::7, 3])
    np.testing.assert_array_equal(arr[[900, 2, 64]], x[[900, 2, 64]])
    np.testing.assert_array_equal(arr[..., 1], x[..., 1])
    np.testing.assert_array_equal(arr[40:80, 2:5], x[40:80, 2:5])
    assert arr[10:10].shape == (0, 64) and arr[np.array([], int)].shape == (0, 64)
    copy = pickle.loads(pickle.dumps(arr))
    np.testing.assert_array_equal(copy.read(100, 300), x[100:300])
    lazy = open_recording(path)["signal"]
    assert lazy.data.chunks[0] == (64,) * 15 + (40,)
    np.testing.assert_array_equal(lazy.isel(time=slice(63, 130), channel=[4, 1]).values,
                                  x[63:130][:, [4, 1]])  # fmt: skip
    np.testing.assert_allclose(lazy.mean("time").values, x.mean(0), atol=1e-6)
    graph = pickle.loads(pickle.dumps(lazy.data))
    np.testing.assert_array_equal(graph.compute(scheduler="sync"), x)


def test_a_replaced_store_is_read_anew(tmp_path):
    path = tmp_path / "rec.zarr"
    a = np.ones((200, 64), np.float32)
    b = np.full((300, 64), 2.0, np.float32)
    write_recording(_recording(a), path, **SMALL)
    np.testing.assert_array_equal(read_signal(path), a)
    first = open_recording(path)["signal"].data.name
    write_recording(_recording(b), path, **SMALL)
    np.testing.assert_array_equal(read_signal(path), b)
    assert open_recording(path)["signal"].data.name != first
