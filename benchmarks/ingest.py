"""Ingestion throughput, memory and parallel speed-up, against plain MNE / nibabel loads.

Figures (each measurement in a fresh process, so that its peak RSS is its own):

* EDF: ``neurodecode`` ingest (lazy MNE read → store) vs ``mne.io.read_raw_edf(preload=True)
  .get_data()`` + ``numpy.save`` of the same file, in MB/s of raw samples (float32), and ratio;
* NIfTI: ingest (lazy nibabel proxy → voxels → store) vs ``nibabel.load(...).get_fdata()`` +
  ``numpy.save``, same units;
* peak RSS while ingesting a synthetic NIfTI recording whose float32 signal is ≥ 2 GB;
* speed-up of a 2-worker over a 1-worker ``LocalCluster`` ingesting 8 files (cluster start-up
  excluded).

Usage::

    python benchmarks/ingest.py --quick --json outputs/bench_ingest.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import peak_rss_mb, run_in_subprocess

REPEATS = 3  # throughputs are the median of 3 warm runs; the 2 GB recording runs once


def make_edf(path: Path, seconds: float, n_channels: int = 64, sfreq: float = 256.0) -> None:
    """Write a synthetic EEG EDF (1/f-ish noise + alpha) with annotations."""
    import mne

    rng = np.random.default_rng(0)
    n = int(seconds * sfreq)
    data = np.cumsum(rng.standard_normal((n_channels, n)), axis=1) * 1e-7
    data -= data.mean(axis=1, keepdims=True)
    data += 1e-5 * np.sin(2 * np.pi * 10 * np.arange(n) / sfreq)
    info = mne.create_info([f"EEG{i:03d}" for i in range(n_channels)], sfreq, "eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    onsets = np.arange(5.0, seconds - 5, 4.0)
    raw.set_annotations(
        mne.Annotations(onsets, 1.0, ["T1", "T2"] * (len(onsets) // 2) + ["T1"] * (len(onsets) % 2))
    )
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")


def make_nifti(path: Path, shape: tuple[int, int, int], n_volumes: int, tr: float = 2.0) -> None:
    """Write an uncompressed int16 4-D NIfTI volume by volume (never all in memory)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((*shape, n_volumes))
    header.set_data_dtype(np.int16)
    header.set_zooms((3.0, 3.0, 3.0, tr))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(np.diag([3.0, 3.0, 3.0, 1.0]), code=1)
    header.set_sform(np.diag([3.0, 3.0, 3.0, 1.0]), code=1)
    rng = np.random.default_rng(0)
    base = rng.integers(500, 1500, size=shape, dtype=np.int16)
    with open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(b"\x00" * (int(header["vox_offset"]) - fh.tell()))
        for _ in range(n_volumes):
            vol = base + rng.integers(-20, 20, size=shape, dtype=np.int16)
            fh.write(np.asfortranarray(vol).tobytes(order="F"))


def _worker(mode: str, path: Path, out: Path, warm: Path | None = None) -> dict:
    """One timed measurement; ``warm`` (a small file of the same format) is processed first,
    untimed, so that one-off costs (imports, thread pools, codec set-up) are not counted."""
    if warm is not None:
        _measure(mode, warm, out / "warm")
        shutil.rmtree(out / "warm", ignore_errors=True)
    runs = [_measure(mode, path, out / str(i)) for i in range(REPEATS if warm else 1)]
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
    return {**best, "peak_rss_mb": peak_rss_mb(), "repeats": len(runs)}


def _measure(mode: str, path: Path, out: Path) -> dict:
    import mne
    import nibabel as nib

    from neurodecode.ingest.runner import ingest_one, plan_files
    from neurodecode.store import open_recording

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if mode == "mne_load":
        x = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data()
        np.save(out / "x.npy", x.astype(np.float32))
        n_samples = x.size
    elif mode == "nibabel_load":
        x = nib.load(path).get_fdata(dtype=np.float32)
        np.save(out / "x.npy", x)
        n_samples = x.size
    elif mode in ("ingest_edf", "ingest_nifti"):
        (task,) = plan_files([path], out, dataset="bench")
        result = ingest_one(task, force=True)
        if result.status == "failed":
            raise RuntimeError(result.error)
    else:
        raise ValueError(mode)
    seconds = time.perf_counter() - t0
    if mode.startswith("ingest"):
        n_samples = int(np.prod(open_recording(result.store)["signal"].shape))
    return {
        "mode": mode,
        "seconds": seconds,
        "mb": n_samples * 4 / 1e6,
        "mb_per_s": n_samples * 4 / 1e6 / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def _run(mode: str, path: Path, out: Path, warm: Path | None) -> dict:
    extra = ["--warm", str(warm)] if warm else []
    return run_in_subprocess(
        __file__, ["--_worker", mode, "--path", str(path), "--out", str(out), *extra]
    )


def _speedup(files: list[Path], out: Path) -> dict:
    from dask.distributed import Client, LocalCluster

    from neurodecode.ingest.runner import plan_files, run_ingest

    timings = {}
    for n_workers in (1, 2):
        tasks = plan_files(files, out / f"w{n_workers}", dataset="bench")
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: __import__("neurodecode.ingest.fmri"))  # warm imports
            t0 = time.perf_counter()
            results = run_ingest(tasks, client=client, force=True)
            timings[n_workers] = time.perf_counter() - t0
        failed = [r.error for r in results if r.status == "failed"]
        if failed:
            raise RuntimeError(failed)
    return {
        "files": len(files),
        "seconds_1_worker": timings[1],
        "seconds_2_workers": timings[2],
        "speedup_2_over_1": timings[1] / timings[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2 min)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        print(json.dumps(_worker(args._worker, args.path, args.out, args.warm)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="nd-bench-ingest-"))
    try:
        edf = tmp / "synthetic.edf"
        make_edf(edf, seconds=1800 if args.quick else 3600)
        nii = tmp / "synthetic_bold.nii"
        make_nifti(nii, (64, 64, 32), 800 if args.quick else 1600)
        big = tmp / "big_bold.nii"
        make_nifti(big, (64, 64, 32), 4200)  # float32 signal: 64*64*32*4200*4 B = 2.2 GB
        warm_edf, warm_nii = tmp / "warm.edf", tmp / "warm_bold.nii"
        make_edf(warm_edf, seconds=20)
        make_nifti(warm_nii, (64, 64, 32), 5)
        res = {}
        for mode, path, warm in (
            ("mne_load", edf, warm_edf),
            ("ingest_edf", edf, warm_edf),
            ("nibabel_load", nii, warm_nii),
            ("ingest_nifti", nii, warm_nii),
            ("ingest_big_nifti", big, warm_nii),
        ):
            out = tmp / f"out-{mode}"
            res[mode] = _run(mode.replace("_big", ""), path, out, None if "big" in mode else warm)
            shutil.rmtree(out)
        files = []
        for i in range(8):
            files.append(tmp / f"run{i}_bold.nii")
            make_nifti(files[-1], (64, 64, 32), 60 if args.quick else 200)
        speed = _speedup(files, tmp / "speedup")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "edf_mb": res["ingest_edf"]["mb"],
        "edf_ingest_mb_per_s": res["ingest_edf"]["mb_per_s"],
        "edf_mne_load_save_mb_per_s": res["mne_load"]["mb_per_s"],
        "edf_ratio": res["ingest_edf"]["mb_per_s"] / res["mne_load"]["mb_per_s"],
        "nifti_mb": res["ingest_nifti"]["mb"],
        "nifti_ingest_mb_per_s": res["ingest_nifti"]["mb_per_s"],
        "nifti_nibabel_load_save_mb_per_s": res["nibabel_load"]["mb_per_s"],
        "nifti_ratio": res["ingest_nifti"]["mb_per_s"] / res["nibabel_load"]["mb_per_s"],
        "peak_rss_mb": {m: r["peak_rss_mb"] for m, r in res.items()},
        "big_recording_mb": res["ingest_big_nifti"]["mb"],
        "big_recording_peak_rss_mb": res["ingest_big_nifti"]["peak_rss_mb"],
        "big_recording_mb_per_s": res["ingest_big_nifti"]["mb_per_s"],
        **speed,
    }
    print(f"{'':22}{'MB':>9}{'MB/s':>9}{'peak RSS MB':>13}")
    for m, r in res.items():
        print(f"{m:22}{r['mb']:9.0f}{r['mb_per_s']:9.1f}{r['peak_rss_mb']:13.0f}")
    print(f"EDF   ingest / (mne load + np.save)     : {figures['edf_ratio']:.2f}")
    print(f"NIfTI ingest / (nibabel load + np.save) : {figures['nifti_ratio']:.2f}")
    print(
        f"{figures['big_recording_mb'] / 1e3:.1f} GB recording ingested with peak RSS "
        f"{figures['big_recording_peak_rss_mb']:.0f} MB"
    )
    print(
        f"8 files: 1 worker {speed['seconds_1_worker']:.1f} s, 2 workers "
        f"{speed['seconds_2_workers']:.1f} s, speed-up {speed['speedup_2_over_1']:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
