"""Recording-store write/read throughput and peak memory, against plain ``numpy.save``/``load``.

Each measurement runs in a fresh Python process so that its peak RSS is its own; throughputs
are the median of 3 repetitions (the page cache is warm for reads, as in a training loop). The same
float32 (time, channel) signal is written and read back:

* ``numpy.save`` / ``numpy.load`` of the in-memory array (the peer, uncompressed);
* ``write_recording`` of the same in-memory array / ``open_recording(...).signal.values`` (the
  Dask path: one block per shard, then joined);
* ``write_recording`` from a lazy (Dask) source much larger than a shard: shows that memory
  stays bounded by a few shards, not by the recording;
* what ``neurodecode validate`` does to each store (schema check, then ``verify_recording``:
  every block read, digested and scanned for NaN/Inf), beside the plain read of the same stores
  in the same run: ``verify_over_read`` is the ratio of their times (target: at most 1.5).

Then the issue's throughput targets, on the same store and ``.npy``, warm page cache for all
(see :func:`measure.whole_array_reads` and ``data_loader.py``): the whole-array store read
``read_signal(path)`` (``store_read_mb_s``, target >= 1000), batched window loading through a
2-worker DataLoader (``window_load_mb_s``, target >= 500), a NumPy memmap read of the same
samples (``memmap_read_mb_s``; windows: ``memmap_window_load_mb_s``) and Blosc's own
decompression of the store's chunks in memory with as many threads (``codec_mb_s``: the
practical limit), with the ratios ``store_over_memmap``, ``store_over_codec``,
``windows_over_memmap`` and ``windows_over_codec``.

Usage::

    python benchmarks/store_io.py --quick --json outputs/bench_store.json
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
from data_loader import measure as measure_loading
from data_loader import print_targets, targets
from measure import eeg_like_block, peak_rss_mb, run_in_subprocess

N_CHANNELS = 64
SFREQ = 1000.0
REPEATS = 3  # median of 3 for the in-memory measurements


def _recording(signal):
    from neurodecode.schema import make_recording

    return make_recording(
        signal,
        sfreq=SFREQ,
        ch_names=[f"EEG{i:03d}" for i in range(signal.shape[1])],
        ch_types="eeg",
        units="V",
        modality="eeg",
        subject="bench",
        task="io",
        source={
            "path": "benchmark://store_io",
            "sha256": "",
            "reader": "benchmark",
            "reader_version": "0",
        },
    )


def _worker(mode: str, n_times: int, folder: Path) -> dict:
    """One measurement, in its own process."""
    import dask.array as da

    from neurodecode.ingest.base import blockwise_array
    from neurodecode.schema import validate
    from neurodecode.store import open_recording, verify_recording, write_recording

    nbytes = n_times * N_CHANNELS * 4
    base_rss = peak_rss_mb()
    times = []
    if mode in ("numpy_save", "store_write"):
        x = np.concatenate(
            [
                eeg_like_block(s, min(s + 100_000, n_times), N_CHANNELS, SFREQ)
                for s in range(0, n_times, 100_000)
            ]
        )
        rec = _recording(x)
        for i in range(REPEATS):
            target = folder / (f"x{i}.npy" if mode == "numpy_save" else f"x{i}.zarr")
            t0 = time.perf_counter()
            if mode == "numpy_save":
                np.save(target, x)
                os.sync()
            else:
                write_recording(rec, target)
            times.append(time.perf_counter() - t0)
    elif mode == "store_write_lazy":
        from functools import partial

        src = blockwise_array(
            partial(eeg_like_block, n_channels=N_CHANNELS, sfreq=SFREQ),
            (n_times, N_CHANNELS),
            np.float32,
            chunk_rows=65_536,
            name=f"bench-src-{n_times}",
        )
        assert isinstance(src, da.Array)
        t0 = time.perf_counter()
        write_recording(_recording(src), folder / "lazy.zarr")
        times.append(time.perf_counter() - t0)
    elif mode in ("numpy_load", "store_read"):
        for i in range(REPEATS):
            t0 = time.perf_counter()
            if mode == "numpy_load":
                x = np.load(folder / f"x{i}.npy")
            else:
                x = open_recording(folder / f"x{i}.zarr")["signal"].values
            times.append(time.perf_counter() - t0)
            del x
    elif mode == "store_verify":  # what `neurodecode validate` does to each store
        for i in range(REPEATS):
            path = folder / f"x{i}.zarr"
            t0 = time.perf_counter()
            validate(open_recording(path, check=False), where=str(path))
            report = verify_recording(path)
            times.append(time.perf_counter() - t0)
            assert report.ok and report.nbytes_read == nbytes, report
    else:
        raise ValueError(mode)
    seconds = float(np.median(times))
    first = folder / ("x0.npy" if mode.startswith("numpy") else "x0.zarr")
    if mode == "store_write_lazy":
        first = folder / "lazy.zarr"
    stored = (
        sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
        if first.is_dir()
        else (first.stat().st_size if first.exists() else 0)
    )
    return {
        "mode": mode,
        "seconds": seconds,
        "mb_per_s": nbytes / 1e6 / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": base_rss,
        "data_mb": nbytes / 1e6,
        "stored_mb": stored / 1e6,
    }


def _run(mode: str, n_times: int, folder: Path) -> dict:
    return run_in_subprocess(
        __file__, ["--_worker", mode, "--n-times", str(n_times), "--folder", str(folder)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 2 min on 2 cores)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n-times", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        print(json.dumps(_worker(args._worker, args.n_times, args.folder)))
        return

    n_mem = 1_000_000 if args.quick else 4_000_000  # 256 MB / 1 GB in memory
    n_lazy = 4_000_000 if args.quick else 8_000_000  # 1 GB / 2 GB streamed
    folder = Path(tempfile.mkdtemp(prefix="nd-bench-"))
    try:
        res = {
            m: _run(m, n_mem, folder)
            for m in ("numpy_save", "store_write", "numpy_load", "store_read", "store_verify")
        }
        res["store_write_lazy"] = _run("store_write_lazy", n_lazy, folder)
        loading = folder / "loading"  # the data loader's layout, over the same files
        loading.mkdir()
        (loading / "rec.zarr").symlink_to(folder / "x0.zarr")
        (loading / "signal.npy").symlink_to(folder / "x0.npy")
        n_batches = 30 if args.quick else 100
        goals = measure_loading(loading, ("memmap_chunk", "store_chunk_warm"), n_batches)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    from neurodecode.store import CHUNK_BYTES, SHARD_CHUNKS

    shard_mb = CHUNK_BYTES * SHARD_CHUNKS / 1e6
    figures = {
        **targets(goals),
        "n_channels": N_CHANNELS,
        "in_memory_mb": res["store_write"]["data_mb"],
        "write_mb_per_s": res["store_write"]["mb_per_s"],
        "numpy_save_mb_per_s": res["numpy_save"]["mb_per_s"],
        "write_ratio_vs_numpy": res["store_write"]["mb_per_s"] / res["numpy_save"]["mb_per_s"],
        "read_mb_per_s": res["store_read"]["mb_per_s"],
        "numpy_load_mb_per_s": res["numpy_load"]["mb_per_s"],
        "read_ratio_vs_numpy": res["store_read"]["mb_per_s"] / res["numpy_load"]["mb_per_s"],
        "read_mb_s": res["store_read"]["mb_per_s"],
        "verify_mb_s": res["store_verify"]["mb_per_s"],
        "verify_over_read": res["store_verify"]["seconds"] / res["store_read"]["seconds"],
        "verify_peak_rss_mb": res["store_verify"]["peak_rss_mb"],
        "compression_ratio": res["store_write"]["data_mb"] / res["store_write"]["stored_mb"],
        "peak_rss_mb": {m: r["peak_rss_mb"] for m, r in res.items()},
        "lazy_write_mb": res["store_write_lazy"]["data_mb"],
        "lazy_write_mb_per_s": res["store_write_lazy"]["mb_per_s"],
        "lazy_write_peak_rss_mb": res["store_write_lazy"]["peak_rss_mb"],
        "lazy_write_rss_above_import_mb": (
            res["store_write_lazy"]["peak_rss_mb"] - res["store_write_lazy"]["baseline_rss_mb"]
        ),
        "shard_mb": shard_mb,
        "targets_cache": "warm page cache for the store, the memmap and the codec's chunks",
        "lazy_write_size_in_shards": res["store_write_lazy"]["data_mb"] / shard_mb,
    }
    print(f"{'':24}{'MB/s':>10}{'peak RSS MB':>14}")
    for m, r in res.items():
        print(f"{m:24}{r['mb_per_s']:10.1f}{r['peak_rss_mb']:14.0f}")
    print(f"write ratio store/numpy.save : {figures['write_ratio_vs_numpy']:.2f}")
    print(f"read ratio  store/numpy.load : {figures['read_ratio_vs_numpy']:.2f}")
    print(f"compression (raw/on disk)    : {figures['compression_ratio']:.2f}x")
    print(
        f"validate (verify every block): {figures['verify_mb_s']:.0f} MB/s, "
        f"{figures['verify_over_read']:.2f}x the time of a plain read (target <= 1.5)"
    )
    print(
        f"lazy write of {figures['lazy_write_mb']:.0f} MB "
        f"({figures['lazy_write_size_in_shards']:.0f} shards): peak RSS "
        f"{figures['lazy_write_peak_rss_mb']:.0f} MB "
        f"({figures['lazy_write_rss_above_import_mb']:.0f} MB above the imports)"
    )
    print_targets(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
