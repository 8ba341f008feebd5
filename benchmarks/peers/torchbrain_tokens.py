"""torch_brain's POYO tokenizer on saved spikes, window by window, timed inside this process.

Run in the environment that has ``torch_brain`` (0.2.1; see ``benchmarks/pretraining.py``,
which calls this script through a subprocess with ``.venv-bench-tb/bin/python``)::

    .venv-bench-tb/bin/python benchmarks/peers/torchbrain_tokens.py spikes.npz --json out.json

The ``.npz`` holds ``times`` (float64, sorted, s), ``units`` (int64 neuron index from 0),
``n_units``, ``starts`` (current-window starts, s), ``window`` and ``past`` (s). Each sample is
what a torch_brain pipeline does per item: ``Data.slice`` of the span ``[start - past,
start + window)`` (times reset to the span's origin), then ``POYO.tokenize`` (unit ids through
the unit-embedding vocabulary, a start and an end token per unit, padding to a multiple of 8,
latent tokens). The whole span is one POYO context (``sequence_length = past + window``), so
every spike of the span becomes one token, as with neurodecode's current + past tokens.

Prints and writes ``{"windows", "seconds", "spikes_per_s", "tokens_per_s", "spike_tokens",
"torch_brain_version", "n_units"}``; ``spikes_per_s`` counts the recording's spikes at the rate
that the windows are covered: ``n_spikes * (windows done / all windows) / seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def build(npz: Path) -> tuple[object, object, dict]:
    """The ``Data`` object of the saved spikes and a small POYO model with its vocabularies."""
    import torch_brain
    from torch_brain.data import ArrayDict, Data, Interval, IrregularTimeSeries
    from torch_brain.models import POYO

    z = np.load(npz)
    times = np.asarray(z["times"], dtype=np.float64)
    units = np.asarray(z["units"], dtype=np.int64)
    n_units = int(z["n_units"])
    t_stop = float(times[-1]) + 1.0 if len(times) else 1.0
    unit_ids = np.array([f"unit{u:04d}" for u in range(n_units)])
    data = Data(
        spikes=IrregularTimeSeries(timestamps=times, unit_index=units,
                                   domain=Interval(0.0, t_stop)),
        units=ArrayDict(id=unit_ids),
        session=Data(id="session0"),
        domain=Interval(0.0, t_stop),
    )
    span = float(z["past"]) + float(z["window"])
    model = POYO(sequence_length=span, latent_step=span / 4, num_latents_per_step=8, dim_out=2,
                 dim=64, depth=1, dim_head=16, cross_heads=1, self_heads=2)
    model.unit_emb.initialize_vocab(list(unit_ids))
    model.session_emb.initialize_vocab(["session0"])
    meta = {"starts": np.asarray(z["starts"], dtype=np.float64), "window": float(z["window"]),
            "past": float(z["past"]), "n_spikes": len(times), "n_units": n_units,
            "version": torch_brain.__version__}
    return data, model, meta


def run(npz: Path, max_windows: int | None = None) -> dict:
    """Slice and tokenize the windows (the first ``max_windows``); time it."""
    data, model, meta = build(npz)
    starts = meta["starts"]
    todo = starts if max_windows is None else starts[:max_windows]
    model.tokenize(data.slice(todo[0] - meta["past"], todo[0] + meta["window"]))  # warm up
    spike_tokens = 0
    all_tokens = 0
    t0 = time.perf_counter()
    for s in todo:
        sample = data.slice(s - meta["past"], s + meta["window"])
        out = model.tokenize(sample)
        spike_tokens += int((np.asarray(out["input_token_type"])[
            np.asarray(out["input_mask"])] == 0).sum())
        all_tokens += int(np.asarray(out["input_mask"]).sum())
    seconds = time.perf_counter() - t0
    frac = len(todo) / max(len(starts), 1)
    return {
        "windows": len(todo),
        "windows_total": len(starts),
        "seconds": seconds,
        "spikes_per_s": meta["n_spikes"] * frac / seconds,
        "tokens_per_s": all_tokens / seconds,
        "spike_tokens": spike_tokens,
        "all_tokens": all_tokens,
        "n_units": meta["n_units"],
        "torch_brain_version": meta["version"],
        "pid": os.getpid(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path, help="saved spikes (see the module docstring)")
    parser.add_argument("--max-windows", type=int, help="tokenize only the first N windows")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import torch

    torch.set_num_threads(1)
    result = run(args.npz, args.max_windows)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
