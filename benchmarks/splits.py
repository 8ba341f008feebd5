"""Leakage checks of split folds: the vectorised ``check_split`` against the old per-sample loop.

A sample table of sliding windows (1 s long, every 0.25 s, so neighbours overlap) over several
recordings is split by ``ContiguousBlocks(n_blocks=5, gap=2.0)``; the folds are made once, then
checked:

* ``check_split_seconds``: the 5 folds checked by one :class:`~neurodecode.data.splits.SplitChecker`
  (what the rules and ``cross_validate`` do: the table is indexed once), index included;
* ``check_split_calls_seconds``: 5 calls of the public :func:`~neurodecode.data.splits.check_split`
  (each indexes the table again);
* ``split_seconds``: the whole ``ContiguousBlocks.split`` (making the folds, dropping the gap,
  checking);
* the old implementation (a Python loop over the training samples of each shared recording),
  copied below, on a smaller table (``old_n_samples``) beside the new one on that same table:
  ``old_check_seconds``, ``new_check_seconds_same_size`` and their ratio ``speedup``.

Target: 1 M samples x 5 folds checked in at most 2 s.

Usage::

    python benchmarks/splits.py --quick --json outputs/bench_splits.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neurodecode.data.splits import ContiguousBlocks, LeakageError, SplitChecker, check_split

N_FOLDS = 5
GAP = 2.0
LENGTH, STRIDE = 1.0, 0.25


def window_table(n_samples: int, n_recordings: int) -> pd.DataFrame:
    """Sliding windows split evenly over ``n_recordings`` EEG recordings."""
    per = n_samples // n_recordings
    start = np.tile(np.arange(per) * STRIDE, n_recordings)
    return pd.DataFrame({
        "recording": np.repeat([f"/stores/sub-{i:03d}.zarr" for i in range(n_recordings)], per),
        "subject": np.repeat([f"{i:03d}" for i in range(n_recordings)], per),
        "session": "01",
        "run": "01",
        "modality": "eeg",
        "start": start,
        "stop": start + LENGTH,
    })


def old_check_split(samples: pd.DataFrame, train: np.ndarray, test: np.ndarray, *,
                    within_recording: bool = False, gap: float = 0.0) -> None:
    """``check_split`` as it was before it was vectorised (a loop per training sample)."""
    samples = samples.reset_index(drop=True)
    if np.intersect1d(train, test).size:
        raise LeakageError("the same samples are in both train and test")
    tr, te = samples.iloc[train], samples.iloc[test]
    shared = sorted(set(tr["recording"]) & set(te["recording"]))
    if not shared:
        return
    if not within_recording:
        raise LeakageError(f"{len(shared)} recording(s) have samples in both train and test")
    for rec in shared:
        a = tr[tr["recording"] == rec].sort_values("start")
        b = te[te["recording"] == rec].sort_values("start")
        starts, stops = b["start"].to_numpy(), b["stop"].to_numpy()
        for s, e in zip(a["start"].to_numpy(), a["stop"].to_numpy(), strict=True):
            lo = np.searchsorted(stops, s - gap, side="right")
            hi = np.searchsorted(starts, e + gap, side="left")
            close = np.flatnonzero((starts[lo:hi] < e + gap) & (stops[lo:hi] > s - gap))
            if close.size:
                raise LeakageError(f"{rec}: training sample [{s:g}, {e:g}) s is too close")


def _folds(table: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    rule = ContiguousBlocks(n_blocks=N_FOLDS, gap=GAP)
    return list(rule._folds(table, GAP, SplitChecker(table)))


def _best(fn, repeats: int) -> float:
    """Best of ``repeats`` wall-clock times of ``fn()`` (the machine is shared)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(n_samples: int, n_recordings: int, old_n_samples: int, repeats: int) -> dict:
    """Every figure of the benchmark (see the module docstring)."""
    table = window_table(n_samples, n_recordings)
    folds = _folds(table)
    assert len(folds) == N_FOLDS

    def vectorised(tab, tab_folds):
        def run() -> None:
            checker = SplitChecker(tab)
            for train, test in tab_folds:
                checker.check(train, test, within_recording=True, gap=GAP)

        return run

    with_checker = vectorised(table, folds)

    def with_calls() -> None:
        for train, test in folds:
            check_split(table, train, test, within_recording=True, gap=GAP)

    rule = ContiguousBlocks(n_blocks=N_FOLDS, gap=GAP)
    small = window_table(old_n_samples, n_recordings)
    small_folds = _folds(small)

    new_small = vectorised(small, small_folds)

    def old_small() -> None:
        for train, test in small_folds:
            old_check_split(small, train, test, within_recording=True, gap=GAP)

    out = {
        "n_samples": len(table),
        "n_recordings": n_recordings,
        "n_folds": len(folds),
        "gap_s": GAP,
        "check_split_seconds": _best(with_checker, repeats),
        "check_split_calls_seconds": _best(with_calls, repeats),
        "split_seconds": _best(lambda: list(rule.split(groups=table)), repeats),
        "old_n_samples": len(small),
        "old_check_seconds": _best(old_small, 1),
        "new_check_seconds_same_size": _best(new_small, repeats),
        "target_seconds": 2.0,
    }
    out["speedup"] = out["old_check_seconds"] / out["new_check_seconds_same_size"]
    out["meets_target"] = out["check_split_seconds"] <= out["target_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="old implementation on 20 000 samples instead of 100 000; 2 repeats")
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-recordings", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    result = measure(args.n_samples, args.n_recordings,
                     old_n_samples=20_000 if args.quick else 100_000,
                     repeats=2 if args.quick else 5)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
