"""Generative pretraining on spike tokens: tokenizer throughput and the model's figures.

Usage::

    python benchmarks/pretraining.py --quick --json outputs/pretraining_quick.json
    python benchmarks/pretraining.py --json outputs/pretraining.json       # full mode
    python benchmarks/pretraining.py --only tokenize --quick
    python benchmarks/pretraining.py --merge A.json B.json --json OUT.json   # sections run apart

Each section is one function ``section(quick, workdir) -> dict`` registered in
:data:`SECTIONS`; :func:`main` runs the chosen ones and writes their keys side by side in one
JSON object (plus ``"sections"``: the seconds each took).

Section ``tokenize``
    The same random spikes (Poisson, ``200 units x 20 Hz x 600 s`` = 2.4 M spikes; quick:
    120 s) cut into every Neuroformer-style window (50 ms current window, 150 ms past window,
    5 ms bins, a window every 50 ms) by

    (a) :class:`neurodecode.data.tokens.SpikeTokenizer`, in this process pinned to one CPU
        (``sched_setaffinity``), one torch thread, ``OMP_NUM_THREADS=1``; best of 3 runs, by
        the wall clock (``tokenize_spikes_per_s``) and by the thread's CPU time
        (``tokenize_cpu_spikes_per_s``: what it would be on an otherwise idle core; the load
        average is written beside it);
    (b) a Neuroformer-style per-window / per-bin / per-neuron Python loop
        (``benchmarks/peers/neuroformer_tokens.py``) on the first windows only (a subset;
        its rate is scaled to the whole recording as spikes per second) — and the tokens of
        that subset are compared with ours, token for token;
    (c) torch_brain's ``POYO.tokenize`` after ``Data.slice`` per window
        (``benchmarks/peers/torchbrain_tokens.py``) in its own environment
        ``.venv-bench-tb`` through a subprocess pinned to the same CPU, timed inside that
        process on the same spikes saved to ``.npz`` (also on a subset).

    A rate in spikes/s is ``n_spikes * (windows done / all windows) / seconds``: how fast a
    recording's spikes become training samples. Every spike is in 1 current and 3 past
    windows, so tokens/s are about 4x that (both are written).

Section ``task_baselines``
    The real tasks of :mod:`neurodecode.data.spike_tasks` (rat position, Golub directions,
    calcium speed; stores under ``outputs/real_data_stores``, ingested if missing): window
    counts, and ridge (LDA for classes) and KNN on square-root counts of the current window
    and of current + past, leave-one-block-out, with a permutation chance (permutations:
    quick: 5, full: 50).
Section ``train``
    Training throughput of :class:`~neurodecode.models.spikes.SpikePretrainer` on random
    Poisson spikes at several sequence lengths (the current window's tokens grow with the
    units' rate; the past window's with it), each in its own process so that its peak memory
    is its own: ``train_tokens_per_s`` and ``peak_rss_mb`` per length (``train``).

Section ``simulation``
    A coupled Poisson GLM with known directed connectivity
    (:func:`neurodecode.simulate.simulate_coupled_spikes`, two sessions of one circuit, each
    recording its own subset of units under new keys). The model is pretrained on session 01's
    train intervals with the behaviour as covariates, and scored on its test intervals:
    ``next_token_nll`` (nats/spike) beside the rate-only inhomogeneous Poisson baseline of the
    same covariates and a constant-rate one; ``connectivity_auroc`` (model connectivity vs the
    true edges among the recorded units, with its permutation chance, and the cross-correlogram
    reference); ``generation`` (spike trains rolled forward over the test span vs the real
    ones). Session 02 is the held-out session: its units are new, identified on its unlabelled
    training period, then position is decoded from 1/10/100 % of its labelled time with every
    weight fine-tuned (``pretrained``), the new unit embeddings and the head alone
    (``units``), the same network from scratch (``scratch``) and ridge on the same windows
    (``few_shot`` rows; ``new_session_recovery`` = units / pretrained at each fraction).

Section ``real``
    The real tasks, leave one block out (quick: the last block only): for each test block the
    model is pretrained without labels on every window of the other blocks (labelled or not:
    the rat at rest too), then fine-tuned on the earliest 1/10/100 % of their labelled time
    (of every segment's: each Golub trial cell gives its first windows, so that every
    direction is labelled), with early stopping on the last windows of every segment, beside
    the same network from scratch and ridge/KNN on the same windows; seeds 0, 1, 2 (quick: 0).
    ``few_shot`` rows per fold and seed, with permutation chance, then one row per dataset,
    variant and fraction with ``fold: "mean"``: the mean over folds, ``seed_spread`` (s.d. over
    seeds of the fold means), ``fold_spread``, ``baseline_full`` (ridge on 100 %) and, for
    ``pretrained`` at 10 %, ``meets_target`` (score >= ``baseline_full``). The environment
    variable ``NEURODECODE_BENCH_TASKS`` (comma-separated task names) runs a subset, e.g. one
    task per process, pooled with ``--merge``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.neuroformer_tokens import NeuroformerLoopTokenizer, bin_spikes  # noqa: E402

from neurodecode.data.tokens import N_SPECIAL, SpikeTokenizer, window_starts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The environment with torch_brain 0.2.1 (its ray/uv pins stay out of the main one).
TORCH_BRAIN_PYTHON = ROOT / ".venv-bench-tb" / "bin" / "python"
#: Tokenizer target of issue 14 (spikes per second on one core).
TOKENIZE_TARGET = 5e6

#: Window geometry of the tokenize section (Neuroformer's defaults).
WINDOW, PAST, DT = 0.05, 0.15, 0.005


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_spikes(n_units: int, rate: float, duration: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson spikes: sorted times (s) and unit index (from 0) of each."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(n_units * rate * duration))
    times = np.sort(rng.uniform(0.0, duration, n))
    return times, rng.integers(0, n_units, n).astype(np.int64)


def _one_cpu() -> int:
    """The CPU this process runs on from now on (the first it is allowed)."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _time_ours(tok: SpikeTokenizer, times: np.ndarray, units: np.ndarray, starts: np.ndarray,
               repeats: int = 3) -> tuple[float, float, object]:
    """Best wall-clock and best CPU seconds (this thread) of ``repeats`` runs, and the tokens.

    On a shared machine the wall clock also counts the time other processes hold the core;
    the CPU time of the (single) thread does not.
    """
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        out = tok(times, units, starts)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.thread_time() - c0)
    return best, best_cpu, out


def _loop_matches(tw, loop_out) -> bool:
    """Whether the loop's tokens equal ours, window by window.

    Current windows: the same sequence (ids and bins, canonical order). Past windows: the same
    tokens once put in canonical order (the past window is context, a set: the tokenizer may
    keep it in time order within a bin).
    """
    for i, (cur_ids, cur_dts, past_ids, past_dts) in enumerate(loop_out):
        c0, c1 = tw.cur_offsets[i], tw.cur_offsets[i + 1]
        p0, p1 = tw.past_offsets[i], tw.past_offsets[i + 1]
        past = sorted(zip(tw.past_dt[p0:p1].tolist(), tw.past_unit[p0:p1].tolist(), strict=True))
        if (tw.cur_unit[c0:c1].tolist() != cur_ids or tw.cur_dt[c0:c1].tolist() != cur_dts
                or past != list(zip(past_dts, past_ids, strict=True))):
            return False
    return True


def _torch_brain(npz: Path, max_windows: int, cpu: int) -> dict:
    """torch_brain's tokenizer in its own environment (or why it could not run)."""
    if not TORCH_BRAIN_PYTHON.exists():
        return {"error": f"{TORCH_BRAIN_PYTHON} not found: create it with `python -m venv "
                         ".venv-bench-tb` and `.venv-bench-tb/bin/pip install torch_brain==0.2.1`"}
    out = npz.with_suffix(".tb.json")
    script = Path(__file__).resolve().parent / "peers" / "torchbrain_tokens.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(TORCH_BRAIN_PYTHON), str(script), str(npz), "--max-windows", str(max_windows),
         "--json", str(out), "--cpu", str(cpu)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(out.read_text())


def section_tokenize(quick: bool, workdir: Path) -> dict:
    """Tokenizer throughput, ours vs a Neuroformer-style loop vs torch_brain (one core)."""
    import torch

    torch.set_num_threads(1)
    n_units, rate = 200, 20.0
    duration = 120.0 if quick else 600.0
    times, index = random_spikes(n_units, rate, duration)
    units = index + N_SPECIAL
    starts = window_starts(0.0, duration, WINDOW, WINDOW, PAST)
    # no truncation: every spike becomes a token in all three implementations
    tok = SpikeTokenizer(WINDOW, PAST, DT, max_tokens=4096, max_past=8192)
    previous = os.sched_getaffinity(0)
    cpu = _one_cpu()
    try:
        rss0 = peak_rss_mb()
        seconds, cpu_seconds, tw = _time_ours(tok, times, units, starts)
        rss_ours = peak_rss_mb()
        n_tokens = len(tw.cur_unit) + len(tw.past_unit)
        ours = len(times) / seconds

        n_loop = 100 if quick else 400
        counts = bin_spikes(times, index, n_units, DT, duration)
        loop = NeuroformerLoopTokenizer(counts, DT, token_offset=N_SPECIAL)
        start_bins = np.rint(starts[:n_loop] / DT).astype(np.int64)
        t0 = time.perf_counter()
        loop_out = loop(start_bins, tok.n_dt, tok.n_past_dt)
        loop_s = time.perf_counter() - t0
        loop_rate = len(times) * (n_loop / len(starts)) / loop_s
        identical = _loop_matches(tw.select(np.arange(n_loop)), loop_out)

        npz = workdir / "tokenize_spikes.npz"
        np.savez(npz, times=times, units=index, n_units=n_units, starts=starts,
                 window=WINDOW, past=PAST)
        n_tb = 500 if quick else 2000
        tb = _torch_brain(npz, n_tb, cpu)
    finally:
        os.sched_setaffinity(0, previous)
    peers = {"neuroformer_loop": loop_rate,
             "torch_brain": tb.get("spikes_per_s", float("nan"))}
    sub = tw.select(np.arange(min(n_tb, len(tw))))
    out = {
        "tokenize_spikes_per_s": ours,
        "tokenize_cpu_spikes_per_s": len(times) / cpu_seconds,
        "tokenize_tokens_per_s": n_tokens / seconds,
        "tokenize_target_spikes_per_s": TOKENIZE_TARGET,
        "tokenize_meets_target": bool(ours >= TOKENIZE_TARGET),
        "tokenize_peers": peers,
        "tokenize_vs_neuroformer": ours / loop_rate,
        "tokenize_vs_torch_brain": ours / peers["torch_brain"],
        "tokenize_identical_to_loop": bool(identical),
        "peak_rss_mb": rss_ours,
        "tokenize_detail": {
            "n_spikes": len(times),
            "n_units": n_units,
            "rate_hz": rate,
            "duration_s": duration,
            "n_windows": len(starts),
            "window_s": WINDOW,
            "past_s": PAST,
            "dt_s": DT,
            "stride_s": WINDOW,
            "tokens": n_tokens,
            "seconds_best_of_3": seconds,
            "cpu_seconds_best_of_3": cpu_seconds,
            "load_average_1min": os.getloadavg()[0],
            "cpus_online": os.cpu_count(),
            "cpu": cpu,
            "rss_before_mb": rss0,
            "neuroformer_loop": {"windows": n_loop, "seconds": loop_s,
                                 "note": "first windows only, rate scaled to the recording; "
                                         "binning at dt (vectorised) not timed"},
            "torch_brain": tb,
            "torch_brain_spike_tokens_match": (
                "error" not in tb
                and tb["spike_tokens"] == int(sub.cur_offsets[-1] + sub.past_offsets[-1])),
        },
    }
    return out


#: Stores of the real tasks (written by the catalog's ingestion, reused when up to date).
STORES = ROOT / "outputs" / "real_data_stores"
#: Datasets of the real tasks (:mod:`neurodecode.data.spike_tasks`).
TASK_DATASETS = ("nelpy_linear_track", "golub_bci", "svoboda_mouse_s1")


def ingest_tasks(stores: Path = STORES) -> Path:
    """Write (or reuse) the stores of the real spike-token tasks."""
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    catalog = load_catalog()
    tasks = [t for name in TASK_DATASETS for t in plan_entry(catalog[name], stores)]
    failed = [r.error for r in run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
              if r.status == "failed"]
    if failed:
        raise RuntimeError("\n".join(failed))
    return stores


def real_tasks(stores: Path = STORES) -> list:
    """The three real tasks (rat position, Golub directions, calcium speed) as SpikeTasks."""
    from neurodecode.data import spike_tasks as st

    ingest_tasks(stores)
    return [st.linear_track(stores), st.golub_directions(stores), st.calcium_speed(stores)]


def section_task_baselines(quick: bool, workdir: Path) -> dict:
    """Ridge/LDA and KNN on sqrt counts of the real tasks' windows, leave-one-block-out."""
    import warnings

    from neurodecode.data import spike_tasks as st
    from neurodecode.data.splits import TransductiveCleaningWarning

    rows, tasks = [], {}
    for task in real_tasks():
        counts = st.window_counts(task).sum(axis=1)
        tasks[task.name] = {
            "metric": task.metric, "n_windows": len(task), "n_units": len(task.unit_keys),
            "n_events": len(task.times), "window_s": task.window, "past_s": task.past,
            "dt_s": task.dt, "tokens_per_window_mean": float(counts.mean()),
            "tokens_per_window_max": int(counts.max()),
            "windows_per_block": np.bincount(task.blocks).tolist(), "gap_s": task.gap,
        }
        with warnings.catch_warnings():
            # calcium ΔF/F is cleaned over the whole run at ingest: the project's baseline
            # shares that caveat (see neurodecode.data.splits)
            warnings.simplefilter("ignore", TransductiveCleaningWarning)
            rows += st.baseline_scores(task, n_permutations=5 if quick else 50, n_jobs=2)
    return {"spike_tasks": tasks, "task_baselines": rows}


# --------------------------------------------------------------------------- model sections

#: Model sizes: quick (2 cores, minutes) and full.
SMALL = {"width": 32, "heads": 2, "layers": 1, "past_layers": 1, "dropout": 0.1}
FULL = {"width": 64, "heads": 4, "layers": 2, "past_layers": 1, "dropout": 0.1}


def _train_run(rate: float, n_units: int, width: int, layers: int, epochs: int,
               duration: float, queue) -> None:
    """One throughput run (in a child process): tokens/s and the child's peak memory."""
    import torch

    torch.set_num_threads(1)
    from neurodecode.data.tokens import UnitVocabulary
    from neurodecode.models.spikes import SpikePretrainer

    times, units = random_spikes(n_units, rate, duration, seed=1)
    vocab = UnitVocabulary([f"u{i}" for i in range(n_units)])
    tok = SpikeTokenizer(window=0.05, past=0.15, dt=0.005, max_tokens=400, max_past=1200)
    tw = tok(times, units + N_SPECIAL, window_starts(0.0, duration, 0.05, 0.05, 0.15))
    pre = SpikePretrainer(width=width, layers=layers, heads=4, past_layers=1,
                          max_tokens=400, max_past=1200, max_epochs=epochs, batch_size=32)
    pre.fit(tw, vocab)
    queue.put({"tokens_per_window": float(tw.n_tokens().mean()),
               "past_tokens_per_window": float(np.diff(tw.past_offsets).mean()),
               "train_tokens_per_s": float(pre.tokens_per_s_),
               "peak_rss_mb": peak_rss_mb()})


def section_train(quick: bool, workdir: Path) -> dict:
    """Training tokens/s and peak memory at several sequence lengths (one process each)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for rate in ((10.0, 40.0) if quick else (10.0, 20.0, 40.0, 80.0)):
        q = ctx.Queue()
        proc = ctx.Process(target=_train_run,
                           args=(rate, 50, 64, 2, 1 if quick else 2, 15.0 if quick else 60.0, q))
        proc.start()
        row = q.get()
        proc.join()
        rows.append({"rate_hz": rate, "n_units": 50, "width": 64, "layers": 2, **row})
    return {"train": rows,
            "train_tokens_per_s": {f"{r['tokens_per_window']:.0f}": r["train_tokens_per_s"]
                                   for r in rows}}


def _simulated(quick: bool):
    from neurodecode.simulate import simulate_coupled_spikes

    return simulate_coupled_spikes(n_units=20 if quick else 40,
                                   duration=150.0 if quick else 600.0,
                                   sessions=("01", "02"), session_units=16 if quick else 32,
                                   seed=0)


def _few_shot_rows(dataset: str, metric: str, kind: str, pool, y_pool, test, y_test, vocab,
                   pre, fractions, epochs: int, seed: int, unlabelled=None,
                   variants=("pretrained", "units", "scratch"), n_perm: int = 20,
                   baselines: bool = True) -> list:
    """Every variant and the baselines at every fraction, with permutation chance
    (``baselines=False``: the variants only, e.g. for a further seed: ridge and KNN are
    deterministic)."""
    from neurodecode.models.spikes import SpikeDecoder
    from neurodecode.pipelines.finetune import _baseline, _scored, count_features, earliest

    units = np.arange(N_SPECIAL, len(vocab))
    rows = []
    for fraction in fractions:
        keep = earliest(pool.table, fraction)  # row indices, in time order
        train, y_train = pool.select(keep), y_pool[keep]
        base = {}
        for name in ("ridge", "knn") if baselines else ():
            est = _baseline(name, kind, len(train))
            try:
                est.fit(count_features(train, len(vocab), units), y_train)
            except ValueError as err:  # e.g. one class in a 1 % block
                rows.append({"dataset": dataset, "variant": name, "fraction": fraction,
                             "metric": metric, "score": None, "chance": None,
                             "n_labelled": int(len(train)), "seed": seed, "error": str(err)})
                continue
            pred = est.predict(count_features(test, len(vocab), units))
            sc = _scored(y_test, pred, kind, test, n_perm, seed)
            base[name] = sc["score"]
            rows.append({"dataset": dataset, "variant": name, "fraction": fraction,
                         "metric": metric, **sc, "n_labelled": int(len(train)), "seed": seed})
        for variant in variants:
            if variant != "scratch" and pre is None:
                continue
            t0 = time.perf_counter()
            dec = SpikeDecoder(pretrained=None if variant == "scratch" else pre,
                               config=pre.config_ if pre is not None else None, task=kind,
                               train="units" if variant == "units" else "all",
                               max_epochs=epochs, patience=4, seed=seed)
            new = unlabelled is not None and variant != "scratch"
            try:
                dec.fit(train.tokens, y_train, vocabulary=vocab,
                        unlabelled=unlabelled if new else None,
                        groups=(train.table["segment"].to_numpy()
                                if "segment" in train.table else None))
            except ValueError as err:  # e.g. one class in a 1 % block
                rows.append({"dataset": dataset, "variant": variant, "fraction": fraction,
                             "metric": metric, "score": None, "chance": None,
                             "n_labelled": int(len(train)), "seed": seed, "error": str(err)})
                continue
            sc = _scored(y_test, dec.predict(test.tokens), kind, test, n_perm, seed)
            rows.append({"dataset": dataset, "variant": variant, "fraction": fraction,
                         "metric": metric, **sc, "n_labelled": int(len(train)), "seed": seed,
                         "fit_seconds": round(time.perf_counter() - t0, 1)})
        for row in rows:
            if row["fraction"] == fraction:
                row["baseline"], row["baseline_name"] = base.get("ridge"), "ridge"
    return rows


def section_simulation(quick: bool, workdir: Path) -> dict:
    """NLL vs Poisson, connectivity, generation, and a held-out session (coupled GLM)."""
    import torch

    torch.set_num_threads(1)
    from neurodecode.data.samples import open_recordings, target_at
    from neurodecode.data.tokens import UnitVocabulary, spike_windows, unit_keys
    from neurodecode.evaluate.spike_stats import (
        connectivity_auroc,
        cross_correlogram_scores,
        nats_per_spike,
    )
    from neurodecode.models.spikes import SpikePretrainer
    from neurodecode.models.spikes.connectivity import model_connectivity
    from neurodecode.pipelines.spike_pretrain import _generation, _poisson_nll, split_in_time

    sim = _simulated(quick)
    recs = open_recordings(sim.recordings)
    first, second = recs
    size = SMALL if quick else FULL
    pre = SpikePretrainer(max_epochs=3 if quick else 12, patience=3, batch_size=64,
                          seed=0, **size)
    tok = pre._config().tokenizer()
    vocab = UnitVocabulary()
    behavior = ["position", "speed"]
    train_all = spike_windows([first], tok, vocab, intervals=["train"], behavior=behavior)
    is_train, is_val = split_in_time(train_all, 0.15)
    train, val = train_all.select(is_train), train_all.select(is_val)
    test = spike_windows([first], tok, vocab, intervals=["test"], behavior=behavior,
                         grow=False)
    pre.fit(train.tokens, vocab, train.covariates, val=(val.tokens, val.covariates))
    model_nll = nats_per_spike(pre.nll(test.tokens, test.covariates), test.tokens)
    base = _poisson_nll([first], train, test, tok, vocab, behavior)
    nll = {"model": model_nll,
           "poisson": nats_per_spike(base["poisson"], test.tokens),
           "constant": nats_per_spike(base["constant"], test.tokens),
           "n_spikes": int(test.tokens.n_tokens()[test.tokens.n_truncated == 0].sum()),
           "split": "session 01 test intervals"}
    nll["beats_poisson"] = bool(nll["model"] < nll["poisson"])
    ids = vocab.ids(unit_keys(first))
    scores = model_connectivity(pre, test.tokens, test.covariates, n_windows=512, units=ids)
    true = sim.channel_edges(0).T  # [post, pre] -> [i -> j]
    conn = connectivity_auroc(np.abs(scores), true, n_permutations=1000)
    conn_signed = connectivity_auroc(scores, true, n_permutations=1000)
    excitatory = sim.channel_weights(0).T > 0
    conn_exc = connectivity_auroc(scores, excitatory, n_permutations=1000)
    past = model_connectivity(pre, test.tokens, test.covariates, n_windows=512, units=ids,
                              method="past")
    conn_past = connectivity_auroc(np.abs(past), true, n_permutations=1000)
    times = np.asarray(first.ds["spike_time"].values)
    chans = np.asarray(first.ds["spike_unit"].values)
    ccg = cross_correlogram_scores(times, chans, len(ids))
    conn_ccg = connectivity_auroc(np.abs(ccg.T), true, n_permutations=1000)
    print(f"  nll {nll} connectivity {conn['auroc']:.3f} (ccg {conn_ccg['auroc']:.3f})",
          flush=True)
    gen = _generation(pre, first, test, tok, 10.0 if quick else 120.0, 0)
    # the held-out session: new units, identified on its unlabelled training period
    new_vocab = UnitVocabulary.from_state(pre.vocabulary_.state_dict())
    pool = spike_windows([second], tok, new_vocab, intervals=["train", "valid"])
    held = spike_windows([second], tok, new_vocab, intervals=["test"], grow=False)

    def position(w):  # at the centre of each current window, as the finetune stage reads it
        centre = w.table["window_start"].to_numpy(float) + tok.window / 2
        return np.asarray(target_at(second, "position", centre)).reshape(len(w), -1)

    y_pool, y_test = position(pool), position(held)
    few = _few_shot_rows("sim_new_session", "r2", "regression", pool, y_pool, held, y_test,
                         new_vocab, pre, (0.1, 1.0) if quick else (0.01, 0.1, 1.0),
                         2 if quick else 8, 0, unlabelled=pool.tokens)
    recovery = {}
    for f in sorted({r["fraction"] for r in few}):
        by = {r["variant"]: r["score"] for r in few if r["fraction"] == f}
        if by.get("pretrained"):
            recovery[str(f)] = by["units"] / by["pretrained"] if by["pretrained"] > 0 else None
    return {"next_token_nll": nll,
            "connectivity_auroc": {**conn, "method": "current-window insertion, |score|",
                                   "signed": conn_signed["auroc"],
                                   "excitatory_signed": conn_exc["auroc"],
                                   "excitatory_chance_p95": conn_exc["chance_p95"],
                                   "past_window_insertion": conn_past["auroc"],
                                   "cross_correlogram": conn_ccg["auroc"]},
            "generation": gen, "few_shot_sim": few, "new_session_recovery": recovery,
            "simulation": {"n_units": sim.params.get("n_units"),
                           "duration": sim.params.get("duration"),
                           "n_edges": int(sim.edges.sum()), "model": size,
                           "epochs": len(pre.history_), "fit_seconds": pre.fit_seconds_,
                           "train_tokens_per_s": pre.tokens_per_s_}}


def _real_summary(rows: list[dict]) -> list[dict]:
    """Pool leave-one-block-out rows: per variant and fraction, the mean over folds of each
    seed, then the mean and spread (s.d.) over seeds; ``baseline_full`` is ridge on 100 %."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r.get("score") is not None])
    ridge = df[df["variant"] == "ridge"].groupby(["dataset", "fraction"])["score"].mean()
    out = []
    for (dataset, variant, fraction), part in df.groupby(["dataset", "variant", "fraction"]):
        per_seed = part.groupby("seed")["score"].mean()
        per_fold = part.groupby("fold")["score"].mean()
        full = float(ridge.get((dataset, 1.0), np.nan))
        row = {"dataset": dataset, "variant": variant, "fraction": float(fraction),
               "metric": part["metric"].iloc[0], "fold": "mean",
               "score": float(per_seed.mean()),
               "seed_spread": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
               "fold_spread": float(per_fold.std(ddof=1)) if len(per_fold) > 1 else 0.0,
               "chance": float(part["chance"].mean()), "n_folds": len(per_fold),
               "n_seeds": len(per_seed), "n_labelled": float(part["n_labelled"].mean()),
               "baseline": float(ridge.get((dataset, fraction), np.nan)),
               "baseline_name": "ridge", "baseline_full": full}
        if variant == "pretrained" and fraction == 0.1:
            row["meets_target"] = bool(row["score"] >= full)
        out.append(row)
    return out


def section_real(quick: bool, workdir: Path) -> dict:
    """Leave one block out on the real tasks: pretrain on the other blocks without labels,
    fine-tune on the earliest 1/10/100 % of their labelled time (every segment's), score the
    held-out block; several seeds."""
    import warnings

    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from neurodecode.data.splits import TransductiveCleaningWarning
    from neurodecode.data.tokens import SpikeWindows, UnitVocabulary
    from neurodecode.models.spikes import SpikePretrainer

    rows, info = [], {}
    seeds = (0,) if quick else (0, 1, 2)
    only = os.environ.get("NEURODECODE_BENCH_TASKS", "").split(",")
    for task in real_tasks():
        if (quick and task.name != "linear_track_position") or (only != [""]
                                                                and task.name not in only):
            continue
        vocab = UnitVocabulary(task.unit_keys)
        tok = task.tokenizer()
        tw = tok(task.times, vocab.ids(task.unit_keys)[task.units], task.starts)
        lo, hi = task.spans()
        table = pd.DataFrame({"recording": task.name, "window_start": task.starts,
                              "start": lo, "stop": hi, "segment": task.segments})
        windows = SpikeWindows(tw, table, None, [])
        kind = "regression" if task.metric == "r2" else "classification"
        size = SMALL if quick else FULL
        folds = [task.n_blocks - 1] if quick else range(task.n_blocks)
        info[task.name] = []
        for fold in folds:
            is_test = task.blocks == fold
            pool, test = windows.select(~is_test), windows.select(is_test)
            y_pool, y_test = task.y[~is_test], task.y[is_test]
            pre = SpikePretrainer(window=tok.window, past=tok.past, dt=tok.dt,
                                  max_tokens=tok.max_tokens, max_past=tok.max_past,
                                  max_epochs=2 if quick else 15, patience=3, seed=0, **size)
            # the unlabelled activity of the other blocks (the rat's rest too), in time order
            other = [b for b in range(task.n_blocks) if b != fold]
            unlabelled = tok(task.times, vocab.ids(task.unit_keys)[task.units],
                             task.unlabelled(other))
            n = len(unlabelled)
            cut = int(0.85 * n)
            pre.fit(unlabelled.select(np.arange(cut)), vocab,
                    val=(unlabelled.select(np.arange(cut, n)), None))
            for seed in seeds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TransductiveCleaningWarning)
                    got = _few_shot_rows(task.name, task.metric, kind, pool, y_pool, test,
                                         y_test, vocab, pre,
                                         (0.1, 1.0) if quick else (0.01, 0.1, 1.0),
                                         2 if quick else 20, seed,
                                         variants=("pretrained", "scratch"),
                                         baselines=seed == seeds[0])
                rows += [{**r, "fold": fold} for r in got]
            info[task.name].append({
                "fold": fold, "n_pretrain": n, "n_labelled": len(pool),
                "n_test": int(is_test.sum()),
                "pretrain_epochs": len(pre.history_),
                "pretrain_val_nll": pre.history_[-1].get("val_nll") if pre.history_ else None})
            print(f"  {task.name} fold {fold}: "
                  + ", ".join(f"{r['variant']} {r['fraction']} {r['score']:.3f}"
                              for r in rows if r.get("fold") == fold
                              and r["dataset"] == task.name and r.get("score") is not None),
                  flush=True)
    return {"few_shot_real": rows + _real_summary(rows), "real_pretraining": info}


#: Sections in the order they run; the model sections are added here.
SECTIONS: dict[str, Callable[[bool, Path], dict]] = {
    "tokenize": section_tokenize,
    "task_baselines": section_task_baselines,
    "train": section_train,
    "simulation": section_simulation,
    "real": section_real,
}


def main(argv: list[str] | None = None) -> dict:
    """Run the sections and write their results as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems (minutes)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="subset to run")
    parser.add_argument("--merge", nargs="+", type=Path,
                        help="pool the JSON of runs of different sections (run apart, e.g. in "
                             "parallel processes) into one, instead of running")
    args = parser.parse_args(argv)
    if args.merge:
        results = {"quick": False, "sections": {}, "few_shot": []}
        for path in args.merge:
            part = json.loads(path.read_text())
            results["few_shot"] += part.pop("few_shot", [])
            results["sections"].update(part.pop("sections", {}))
            results["quick"] = results["quick"] or part.pop("quick", False)
            if "peak_rss_mb" in results and "peak_rss_mb" in part:
                part["peak_rss_mb"] = max(part["peak_rss_mb"], results["peak_rss_mb"])
            if "real_pretraining" in results and "real_pretraining" in part:
                part["real_pretraining"] = {**results["real_pretraining"],
                                            **part["real_pretraining"]}
            results.update(part)
        text = json.dumps(results, indent=2, default=float)
        if args.json:
            args.json.write_text(text)
        print(text)
        return results
    results: dict = {"quick": args.quick, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="pretraining_bench_") as tmp:
        for name in args.only or list(SECTIONS):
            t0 = time.perf_counter()
            results.update(SECTIONS[name](args.quick, Path(tmp)))
            results["sections"][name] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {results['sections'][name]} s", flush=True)
    results["few_shot"] = results.pop("few_shot_sim", []) + results.pop("few_shot_real", [])
    results["peak_rss_mb"] = max(results.get("peak_rss_mb", 0.0), peak_rss_mb())  # this process
    text = json.dumps(results, indent=2, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
