"""Deep-learning data path: windows/s and MB/s from a store through a 2-worker DataLoader.

A synthetic 64-channel, 1 kHz EEG-like recording (30 min with ``--quick``, 60 min otherwise;
AR(1) noise plus a 10 Hz rhythm, float32) is written to a store with the default chunking
(~1 MiB chunks, 16 per shard) and to a ``.npy`` file. One-second windows every 0.25 s are then
read through :class:`torch.utils.data.DataLoader` with 2 worker processes, normalised and
collated into ``(batch, time, channel)`` batches of 64, as a training loop would:

* ``store_chunk``: :class:`~neurodecode.data.loader.ChunkBatchSampler` batches, each read by
  :meth:`WindowDataset.__getitems__` with one store read (:func:`neurodecode.store.read_signal`)
  per run of nearby windows;
* ``store_chunk_per_window``: the same batches, one read per window: what the span reads add;
* ``store_random``: :class:`~neurodecode.data.loader.RandomBatchSampler` batches (about one read
  per window);
* ``memmap_chunk`` / ``memmap_random``: the same pipeline over a NumPy memmap of the ``.npy``
  (the peer: no decompression, pages shared by the workers).

Store reads run with a cold page cache (the store's files are evicted with
``posix_fadvise(DONTNEED)`` first) and warm (``_warm``: the files were just read). The memmap
runs are warm, so the targets compare warm with warm: ``window_load_mb_s`` is ``store_chunk_warm``,
``windows_over_memmap`` its ratio to ``memmap_chunk`` and ``windows_over_codec`` its ratio to
the codec's own decompression speed of the same chunks (``codec_mb_s``, see
:func:`measure.whole_array_reads`, measured here beside the whole-array reads of the same
recording: ``store_read_mb_s``, ``memmap_read_mb_s``). Each measurement runs in a fresh process;
the first 2 batches (worker start-up) are not timed. Peak memory is VmHWM from
``/proc/<pid>/status`` of the main process and of each worker, reported as main + the largest
worker (pages shared between them, e.g. the memmap, count in both), beside the largest worker's
unique memory (USS) at the end. Throughput is over all timed batches, and also from the median
batch interval (robust to other jobs on shared cores). ``chunks/batch`` is the mean number of
distinct ~1 MiB chunks the windows of a batch overlap. ``fit`` streams the
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
from measure import (
    WHOLE_ARRAY_READS,
    eeg_like_block,
    peak_rss_mb,
    run_in_subprocess,
    whole_array_reads,
)

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


def _touch(path: Path) -> None:
    """Read a file, or every file of a folder, into the page cache."""
    for f in [path] if path.is_file() else path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


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


def _dataset(folder: Path, memmap: bool, per_window: bool):
    from neurodecode.data.loader import Normalizer, WindowDataset

    class Memmap(WindowDataset):
        """The same windows sliced from a NumPy memmap of the same samples."""

        signal: np.ndarray

        def read_span(self, recording: int, start: int, stop: int) -> np.ndarray:
            return np.asarray(self.signal[start:stop])

    class PerWindow(WindowDataset):
        """The same batches, one read per window."""

        def __getitems__(self, indices):
            return [item for i in indices for item in super().__getitems__([i])]

    cls = Memmap if memmap else WindowDataset
    if per_window:
        cls = type("PerWindow", (PerWindow, cls), {})
    ds = cls([folder / "rec.zarr"], length=LENGTH, stride=STRIDE)
    if memmap:
        ds.signal = np.load(folder / "signal.npy", mmap_mode="r")
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

    if mode == "whole_array_reads":
        return whole_array_reads(folder / "rec.zarr", folder / "signal.npy")
    source, sampling, *rest = mode.split("_", 2)
    cold = source == "store" and "warm" not in rest
    baseline = peak_rss_mb()
    ds = _dataset(folder, memmap=source == "memmap", per_window="per" in mode)
    if sampling == "chunk":
        sampler = ChunkBatchSampler(ds, BATCH, seed=0)
    else:
        sampler = RandomBatchSampler(ds, BATCH, seed=0)
    if cold:
        _evict(folder / "rec.zarr")
    else:  # warm: every file of the source read once, as a whole-array read leaves them
        _touch(folder / ("signal.npy" if source == "memmap" else "rec.zarr"))
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


QUICK_MODES = ("memmap_chunk", "store_chunk_warm", "store_chunk", "store_random")
MODES = (
    "memmap_random",
    "memmap_chunk",
    "store_random",
    "store_chunk_per_window",
    "store_chunk",
    "store_random_warm",
    "store_chunk_warm",
)


def measure(folder: Path, modes: tuple[str, ...], n_batches: int) -> dict[str, dict]:
    """Every measurement on ``folder`` (``rec.zarr``, ``signal.npy``), each in its own process:
    the Normalizer fit, the DataLoader ``modes`` and the whole-array reads."""
    common = ["--folder", str(folder)]
    res = {m: _run(["--_worker", m, "--n", str(n_batches), *common]) for m in ("fit", *modes)}
    return res | _run(["--_worker", "whole_array_reads", "--n", "0", *common])


def targets(res: dict[str, dict]) -> dict[str, float]:
    """The issue's target figures (warm page cache throughout) and their ratios."""
    window = res["store_chunk_warm"]["mb_per_s"]
    store, memmap = res["store_read"]["mb_per_s"], res["memmap_read"]["mb_per_s"]
    codec = res["codec"]["mb_per_s"]
    return {
        "store_read_mb_s": store,
        "window_load_mb_s": window,
        "memmap_read_mb_s": memmap,
        "memmap_window_load_mb_s": res["memmap_chunk"]["mb_per_s"],
        "codec_mb_s": codec,
        "codec_threads": res["codec"]["threads"],
        "store_over_memmap": store / memmap,
        "store_over_codec": store / codec,
        "windows_over_memmap": window / res["memmap_chunk"]["mb_per_s"],
        "windows_over_codec": window / codec,
        "store_read_peak_rss_mb": res["store_read"]["peak_rss_mb"],
        "store_read_rss_added_mb": res["store_read"]["rss_added_mb"],
        "memmap_read_rss_added_mb": res["memmap_read"]["rss_added_mb"],
        "codec_rss_added_mb": res["codec"]["rss_added_mb"],
        "whole_array_mb": res["store_read"]["data_mb"],
        "window_load_peak_rss_mb": res["store_chunk_warm"]["peak_rss_mb"],
    }


def print_targets(fig: dict[str, float]) -> None:
    """One line per target: the figure, its ratios and whether it is met."""
    print(
        f"whole-array read   : store {fig['store_read_mb_s']:6.0f} MB/s (target >= 1000: "
        f"{'met' if fig['store_read_mb_s'] >= 1000 else 'NOT met'}), memmap "
        f"{fig['memmap_read_mb_s']:.0f}, codec {fig['codec_mb_s']:.0f} "
        f"({fig['codec_threads']} threads); store/memmap {fig['store_over_memmap']:.2f}, "
        f"store/codec {fig['store_over_codec']:.2f}"
    )
    print(
        f"window loading     : store {fig['window_load_mb_s']:6.0f} MB/s (target >= 500: "
        f"{'met' if fig['window_load_mb_s'] >= 500 else 'NOT met'}), memmap "
        f"{fig['memmap_window_load_mb_s']:.0f}; windows/memmap {fig['windows_over_memmap']:.2f}, "
        f"windows/codec {fig['windows_over_codec']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="30 min recording, 30 batches per measurement, 4 DataLoader runs (chunk batches "
        "from memmap, warm and cold store; random batches from the cold store); < 2 min",
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
    modes = QUICK_MODES if args.quick else MODES
    n_times = int(minutes * 60 * SFREQ)
    folder = Path(tempfile.mkdtemp(prefix="nd-bench-loader-"))
    try:
        prep = _run(["--_worker", "prepare", "--n", str(n_times), "--folder", str(folder)])
        res = measure(folder, modes, n_batches)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    reads = {m: res[m] for m in modes}
    figures = {
        **targets(res),
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
        "whole_array_reads": {m: res[m] for m in WHOLE_ARRAY_READS},
        "ratio_store_vs_memmap": {},
        "speedup_chunk_vs_random": {},
        "normalizer_fit_mb_per_s": res["fit"]["mb_per_s"],
        "normalizer_fit_peak_rss_mb": res["fit"]["main_peak_rss_mb"],
        "peak_rss": "VmHWM of the main process + VmHWM of the largest worker",
    }
    if "store_chunk_per_window" in reads:
        figures["speedup_span_reads_vs_per_window"] = _speed(
            reads, "store_chunk", "store_chunk_per_window"
        )
    for cache in ("", "_warm"):
        key = "cold" if not cache else "warm"
        for sampling in ("chunk", "random"):
            if {f"store_{sampling}{cache}", f"memmap_{sampling}"} <= set(reads):
                figures["ratio_store_vs_memmap"][f"{sampling}_{key}"] = _speed(
                    reads, f"store_{sampling}{cache}", f"memmap_{sampling}"
                )
        if {f"store_chunk{cache}", f"store_random{cache}"} <= set(reads):
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
    for k, v in figures["ratio_store_vs_memmap"].items():
        print(f"store / memmap, {k:<13}: {v:.2f}")
    for k, v in figures["speedup_chunk_vs_random"].items():
        print(f"chunk / random sampler, {k:<5}: {v:.1f}x")
    if "speedup_span_reads_vs_per_window" in figures:
        print(f"span reads / per-window reads: {figures['speedup_span_reads_vs_per_window']:.1f}x")
    print(
        f"Normalizer.fit (streamed)     : {figures['normalizer_fit_mb_per_s']:.0f} MB/s, "
        f"peak RSS {figures['normalizer_fit_peak_rss_mb']:.0f} MB"
    )
    print_targets(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
