"""What the benchmarks share: peak memory, one measurement per process, synthetic EEG, and
the whole-array reads of a store beside a NumPy memmap and the codec's own speed."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path

import numpy as np


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process in MB (VmHWM: its own, unlike ``ru_maxrss``, which a
    process inherits from its parent across fork/exec)."""
    return _status_mb("VmHWM", pid)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now, in MB (VmRSS)."""
    return _status_mb("VmRSS", pid)


def _status_mb(field: str, pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def run_in_subprocess(script: str, args: list[str]) -> dict:
    """Run ``python script *args`` and parse the JSON object on its last line of output.

    A failing run raises :class:`RuntimeError` with the end of its standard error.
    """
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def eeg_like_block(start: int, stop: int, n_channels: int, sfreq: float) -> np.ndarray:
    """Deterministic EEG-like rows ``start:stop``: AR(1) noise plus a 10 Hz rhythm, in volts."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(start)
    noise = rng.standard_normal((stop - start, n_channels)).astype(np.float32)
    t = np.arange(start, stop) / sfreq
    x = lfilter([1.0], [1.0, -0.95], noise, axis=0) + 3 * np.sin(2 * np.pi * 10 * t)[:, None]
    return (x * 1e-6).astype(np.float32)


def compressed_chunks(store: Path, variable: str = "signal") -> tuple[list[bytes], dict]:
    """The compressed bytes of every time chunk of a store variable, read into memory.

    Parses each shard's index (Zarr v3 sharding: ``(offset, nbytes)`` little-endian uint64 per
    chunk, then a CRC32C, at the end of the shard file). Only arrays with one chunk across the
    non-time axes (all the benchmarks write) are handled.
    """
    import zarr

    arr = zarr.open_array(Path(store) / variable, mode="r")
    chunk_rows, shard_rows = arr.chunks[0], arr.shards[0]
    if tuple(arr.chunks[1:]) != tuple(arr.shape[1:]):
        raise ValueError(f"{store}/{variable}: more than one chunk across the non-time axes")
    per_shard = shard_rows // chunk_rows
    n_chunks = -(-arr.shape[0] // chunk_rows)
    chunks: list[bytes] = []
    for shard in range(-(-arr.shape[0] // shard_rows)):
        key = arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
        raw = (Path(store) / variable / key).read_bytes()
        index = np.frombuffer(raw[-(per_shard * 16 + 4) : -4], "<u8").reshape(per_shard, 2)
        for offset, nbytes in index[: n_chunks - len(chunks)]:
            chunks.append(raw[int(offset) : int(offset + nbytes)])
    layout = {"shape": arr.shape, "dtype": np.dtype(arr.dtype), "chunks": arr.chunks}
    return chunks, layout


def codec_decompress(chunks: list[bytes], layout: dict, threads: int) -> np.ndarray:
    """Decompress in-memory Blosc chunks into one new array, on ``threads`` threads.

    The codec's own speed on this machine: what any reader of these chunks must do (no file
    access, no indexing, each whole chunk decompressed straight into its place), on a pool of
    threads kept between calls as the store reader keeps its own.
    """
    from numcodecs import blosc

    shape, dtype, chunk_shape = layout["shape"], layout["dtype"], layout["chunks"]
    rows = chunk_shape[0]
    out = np.empty(shape, dtype)

    def run(part: range) -> None:
        for i in part:
            a, b = i * rows, min((i + 1) * rows, shape[0])
            if b - a == rows:
                blosc.decompress(chunks[i], out[a:b])
            else:  # the last, partial chunk is stored whole
                scratch = np.empty(chunk_shape, dtype)
                blosc.decompress(chunks[i], scratch)
                out[a:b] = scratch[: b - a]

    bounds = np.linspace(0, len(chunks), threads + 1).round().astype(int)
    parts = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if threads == 1:
        run(parts[0])
    else:
        list(_pool(threads).map(run, parts))
    return out


@cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, "codec")


WHOLE_ARRAY_READS = ("store_read", "memmap_read", "codec")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def whole_array_reads(store: Path, npy: Path, repeats: int = 5) -> dict[str, dict]:
    """MB/s of the three whole-array reads of the same float32 signal, warm page cache.

    ``store_read``: :func:`neurodecode.store.read_signal`; ``memmap_read``: a NumPy memmap of
    the ``.npy`` holding the same samples, copied into a new array; ``codec``: Blosc
    decompression of the store's chunks already in memory (:func:`codec_decompress`), with as
    many threads as the reader uses (one per CPU). Each read makes a new array, so all three
    pay the same page faults. The three run in turn, ``repeats`` rounds after an untimed one
    (which warms the page cache and the thread pools), and each reports its median: the
    ratios stay fair when other jobs share the cores. ``peak_rss_mb`` is the largest VmHWM
    during one read (reset before it), ``rss_before_mb`` the resident memory before it (the
    compressed chunks the codec reads from, and the memmap's pages once read, are held
    throughout) and ``rss_added_mb`` the most one read added (the result: 1.0x the data).
    """
    import os
    import time

    from neurodecode.store import read_signal

    threads = os.cpu_count() or 1
    ref = np.load(npy, mmap_mode="r")
    if not np.array_equal(read_signal(store, 0, 1000), ref[:1000]):
        raise RuntimeError(f"{store} and {npy} do not hold the same signal")
    chunks, layout = compressed_chunks(store)
    runs = {
        "store_read": partial(read_signal, store),
        "memmap_read": partial(np.array, ref),  # a new ndarray (subok=False)
        "codec": partial(codec_decompress, chunks, layout, threads),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[float]] = {k: [] for k in runs}
    before: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats + 1):
        for kind, run in runs.items():
            before[kind].append(rss_mb())
            reset_peak_rss()
            t0 = time.perf_counter()
            x = run()
            seconds = time.perf_counter() - t0
            peaks[kind].append(peak_rss_mb())
            del x
            if r:
                times[kind].append(seconds)
    return {
        kind: {
            "mode": kind,
            "seconds": float(np.median(times[kind])),
            "mb_per_s": ref.nbytes / 1e6 / float(np.median(times[kind])),
            "threads": threads,
            "data_mb": ref.nbytes / 1e6,
            "peak_rss_mb": max(peaks[kind]),
            "rss_before_mb": max(before[kind]),
            "rss_added_mb": max(p - b for p, b in zip(peaks[kind], before[kind], strict=True)),
        }
        for kind in runs
    }
