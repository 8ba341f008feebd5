"""Deep-learning data path: windows/s and MB/s from a store through a 2-worker DataLoader.

A synthetic 64-channel, 1 kHz EEG-like recording (30 min with ``--quick``, 60 min otherwise;
AR(1) noise plus a 10 Hz rhythm, float32) is written to a store with the default chunking
(~1 MiB chunks, 16 per shard) and to a ``.npy`` file. One-second windows every 0.25 s are then
read through :class:`torch.utils.data.DataLoader` with 2 worker processes, normalised and
collated into batches of 64, as a training loop would:

* ``store_chunk``: :class:`~neurodecode.data.loader.ChunkBatchSampler` batches, each read by
  :meth:`WindowDataset.__getitems__` with one Zarr read per run of nearby windows;
* ``store_chunk_per_window``: the same batches, one Zarr read per window (``__getitems__``
  disabled): what the span reads add;
* ``store_random``: :class:`~neurodecode.data.loader.RandomBatchSampler` batches (about one read
  per window);
* ``numpy_chunk`` / ``numpy_random``: the same pipeline over the whole signal held in memory as
  a NumPy array (loaded before the workers fork, shared copy-on-write) — the peer.

Store reads run with a cold page cache (the store's files are evicted with
``posix_fadvise(DONTNEED)`` first) and again warm. Each measurement runs in a fresh process;
the first 2 batches (worker start-up) are not timed. Peak memory is VmHWM from
``/proc/<pid>/status`` of the main process and of each worker, reported as main + the largest
worker (pages shared between them, e.g. the in-memory array, count in both), beside the largest
worker's unique memory (USS) at the end. Throughput is over all timed batches, and also from the
median batch interval (robust to other jobs on shared cores). ``chunks/batch`` is
the mean number of distinct ~1 MiB chunks the windows of a batch overlap. ``fit`` streams the
:class:`~neurodecode.data.loader.Normalizer` over every window (cold cache).

Usage::

    python benchmarks/data_loader.py --quick --json outputs/bench_data_loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import eeg_like_block, peak_rss_mb, run_in_subprocess

N_CHANNELS = 64
SFREQ = 1000.0
LENGTH, STRIDE = 1.0, 0.25
BATCH = 64
WARMUP_BATCHES = 2
BLOCK_ROWS = 100_000


def _evict(folder: Path) -> None:
    """Drop a folder's files from the page cache (clean pages; no root needed)."""
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _prepare(folder: Path, n_times: int) -> dict:
    """Write the recording to ``signal.npy`` and to a store, block by block."""
    import dask.array as da

    from neurodecode.schema import make_recording
    from neurodecode.store import write_recording

    npy = np.lib.format.open_memmap(
        folder / "signal.npy", mode="w+", dtype=np.float32, shape=(n_times, N_CHANNELS)
    )
    for s in range(0, n_times, BLOCK_ROWS):
        npy[s : s + BLOCK_ROWS] = eeg_like_block(s, min(s + BLOCK_ROWS, n_times), N_CHANNELS, SFREQ)
    npy.flush()
    del npy
    signal = da.from_array(np.load(folder / "signal.npy", mmap_mode="r"), chunks=(65_536, -1))
    rec = make_recording(
        signal, sfreq=SFREQ, ch_names=[f"EEG{i:03d}" for i in range(N_CHANNELS)],
        ch_types="eeg", units="V", modality="eeg", subject="bench", task="loader",
        source={"path": "benchmark://data_loader", "sha256": "", "reader": "benchmark",
                "reader_version": "0"},
    )  # fmt: skip
    t0 = time.perf_counter()
    res = write_recording(rec, folder / "rec.zarr")
    return {
        "write_seconds": time.perf_counter() - t0,
        "nbytes": res.nbytes,
        "nbytes_stored": res.nbytes_stored,
    }


def _dataset(folder: Path, in_memory: bool, per_window: bool):
    from neurodecode.data.loader import Normalizer, WindowDataset

    class InMemory(WindowDataset):
        """The same windows sliced from the whole signal held in memory."""

        signal: np.ndarray

        def read_span(self, recording: int, start: int, stop: int) -> np.ndarray:
            return self.signal[start:stop]

    cls = InMemory if in_memory else WindowDataset
    if per_window:
        cls = type("PerWindow", (cls,), {"__getitems__": None})  # DataLoader then reads 1 by 1
    ds = cls([folder / "rec.zarr"], length=LENGTH, stride=STRIDE)
    if in_memory:
        ds.signal = np.load(folder / "signal.npy")
    ds.normalizer = Normalizer()
    ds.normalizer.load_state_dict(json.loads((folder / "normalizer.json").read_text()))
    return ds


def _chunks_per_batch(ds, batches: list[list[int]]) -> float:
    rows = ds.chunk_rows[0]
    counts = []
    for b in batches:
        first = ds._first[b]
        counts.append(
            len(
                {
                    c
                    for f, n in zip(first, ds._n[b], strict=True)
                    for c in range(f // rows, (f + n - 1) // rows + 1)
                }
            )
        )
    return float(np.mean(counts))


def _worker(mode: str, folder: Path, n_batches: int) -> dict:
    """One measurement, in its own process."""
    import psutil
    from torch.utils.data import DataLoader

    from neurodecode.data.loader import (
        ChunkBatchSampler,
        Normalizer,
        RandomBatchSampler,
        WindowDataset,
        collate_windows,
    )

    if mode == "fit":
        ds = WindowDataset([folder / "rec.zarr"], length=LENGTH, stride=STRIDE)
        _evict(folder / "rec.zarr")
        t0 = time.perf_counter()
        norm = Normalizer().fit(ds)
        seconds = time.perf_counter() - t0
        (folder / "normalizer.json").write_text(json.dumps(norm.state_dict()))
        nbytes = (int(ds._first[-1] + ds._n[-1])) * N_CHANNELS * 4
        return {
            "mode": mode,
            "seconds": seconds,
            "mb_per_s": nbytes / 1e6 / seconds,
            "main_peak_rss_mb": peak_rss_mb(),
        }

    source, sampling, *rest = mode.split("_", 2)
    cold = "warm" not in rest
    baseline = peak_rss_mb()
    ds = _dataset(folder, in_memory=source == "numpy", per_window="per" in mode)
    if sampling == "chunk":
        sampler = ChunkBatchSampler(ds, BATCH, seed=0)
    else:
        sampler = RandomBatchSampler(ds, BATCH, seed=0)
    if source == "store" and cold:
        _evict(folder / "rec.zarr")
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=collate_windows)
    me = psutil.Process()
    workers: dict[int, float] = {}
    n_windows, stamps = 0, []
    batches = iter(loader)  # kept alive, with its workers, until the end
    for k, batch in enumerate(batches):
        if k >= WARMUP_BATCHES - 1:
            stamps.append(time.perf_counter())
        if k >= WARMUP_BATCHES:
            n_windows += len(batch["x"])
        for child in me.children():
            try:
                workers[child.pid] = peak_rss_mb(child.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        if k + 1 == WARMUP_BATCHES + n_batches:
            break
    seconds = stamps[-1] - stamps[0]
    # the median batch interval: robust to other jobs briefly taking the (shared) cores
    median_interval = float(np.median(np.diff(stamps)))
    # memory only the worker holds (not shared with the main process), while it still runs
    uss = max(child.memory_full_info().uss for child in me.children()) / 2**20
    del batches
    sampler.set_epoch(0)
    timed = list(sampler)[WARMUP_BATCHES : WARMUP_BATCHES + n_batches]
    window_mb = N_CHANNELS * int(ds._n[0]) * 4 / 1e6
    main = peak_rss_mb()
    return {
        "mode": mode,
        "windows": n_windows,
        "seconds": seconds,
        "windows_per_s": n_windows / seconds,
        "windows_per_s_median_batch": BATCH / median_interval,
        "mb_per_s": n_windows * window_mb / seconds,
        "chunks_per_batch": _chunks_per_batch(ds, timed),
        "main_peak_rss_mb": main,
        "main_rss_after_imports_mb": baseline,
        "max_worker_peak_rss_mb": max(workers.values()),
        "max_worker_uss_mb": uss,
        "n_workers_seen": len(workers),
        "peak_rss_mb": main + max(workers.values()),
    }


def _speed(reads: dict, a: str, b: str) -> float:
    return reads[a]["windows_per_s"] / reads[b]["windows_per_s"]


def _run(args: list[str]) -> dict:
    return run_in_subprocess(__file__, args)


MODES = ("numpy_random", "numpy_chunk", "store_random", "store_chunk_per_window", "store_chunk")
WARM_MODES = ("store_random_warm", "store_chunk_warm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="30 min recording, 30 batches "
        "per measurement, no warm-cache runs (< 2 min on 2 cores)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker == "prepare":
        print(json.dumps(_prepare(args.folder, args.n)))
        return
    if args._worker:
        print(json.dumps(_worker(args._worker, args.folder, args.n)))
        return

    minutes = 30 if args.quick else 60
    n_batches = 30 if args.quick else 200
    modes = MODES if args.quick else MODES + WARM_MODES
    n_times = int(minutes * 60 * SFREQ)
    folder = Path(tempfile.mkdtemp(prefix="nd-bench-loader-"))
    try:
        common = ["--folder", str(folder)]
        prep = _run(["--_worker", "prepare", "--n", str(n_times), *common])
        res = {m: _run(["--_worker", m, "--n", str(n_batches), *common]) for m in ("fit", *modes)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    reads = {m: res[m] for m in modes}
    figures = {
        "recording": {
            "n_channels": N_CHANNELS,
            "sfreq": SFREQ,
            "minutes": minutes,
            "mb": prep["nbytes"] / 1e6,
            "stored_mb": prep["nbytes_stored"] / 1e6,
        },
        "windows": {
            "length_s": LENGTH,
            "stride_s": STRIDE,
            "batch_size": BATCH,
            "timed_batches": n_batches,
            "num_workers": 2,
        },
        "reads": reads,
        "ratio_store_vs_numpy": {},
        "speedup_chunk_vs_random": {},
        "speedup_span_reads_vs_per_window": _speed(reads, "store_chunk", "store_chunk_per_window"),
        "normalizer_fit_mb_per_s": res["fit"]["mb_per_s"],
        "normalizer_fit_peak_rss_mb": res["fit"]["main_peak_rss_mb"],
        "peak_rss": "VmHWM of the main process + VmHWM of the largest worker",
    }
    for cache in ("", "_warm"):
        if f"store_chunk{cache}" not in reads:
            continue
        key = "cold" if not cache else "warm"
        for sampling in ("chunk", "random"):
            figures["ratio_store_vs_numpy"][f"{sampling}_{key}"] = _speed(
                reads, f"store_{sampling}{cache}", f"numpy_{sampling}"
            )
        figures["speedup_chunk_vs_random"][key] = _speed(
            reads, f"store_chunk{cache}", f"store_random{cache}"
        )
    print(
        f"{minutes} min x {N_CHANNELS} ch x {SFREQ:g} Hz ({figures['recording']['mb']:.0f} MB), "
        f"{LENGTH:g} s windows every {STRIDE:g} s, batches of {BATCH}, 2 workers"
    )
    print(
        f"{'':24}{'windows/s':>10}{'(median)':>9}{'MB/s':>7}{'chunks/batch':>14}"
        f"{'main+worker RSS MB':>20}{'worker USS MB':>15}"
    )
    for m, r in reads.items():
        print(
            f"{m:24}{r['windows_per_s']:10.0f}{r['windows_per_s_median_batch']:9.0f}"
            f"{r['mb_per_s']:7.0f}{r['chunks_per_batch']:14.1f}"
            f"{r['main_peak_rss_mb']:11.0f} +{r['max_worker_peak_rss_mb']:6.0f}"
            f"{r['max_worker_uss_mb']:17.0f}"
        )
    for k, v in figures["ratio_store_vs_numpy"].items():
        print(f"store / numpy, {k:<14}: {v:.2f}")
    for k, v in figures["speedup_chunk_vs_random"].items():
        print(f"chunk / random sampler, {k:<5}: {v:.1f}x")
    print(f"span reads / per-window reads : {figures['speedup_span_reads_vs_per_window']:.1f}x")
    print(
        f"Normalizer.fit (streamed)     : {figures['normalizer_fit_mb_per_s']:.0f} MB/s, "
        f"peak RSS {figures['normalizer_fit_peak_rss_mb']:.0f} MB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
