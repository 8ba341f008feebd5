"""What the benchmarks share: peak memory, one measurement per process, synthetic EEG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process in MB (VmHWM: its own, unlike ``ru_maxrss``, which a
    process inherits from its parent across fork/exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def run_in_subprocess(script: str, args: list[str]) -> dict:
    """Run ``python script *args`` and parse the JSON object on its last line of output."""
    out = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def eeg_like_block(start: int, stop: int, n_channels: int, sfreq: float) -> np.ndarray:
    """Deterministic EEG-like rows ``start:stop``: AR(1) noise plus a 10 Hz rhythm, in volts."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(start)
    noise = rng.standard_normal((stop - start, n_channels)).astype(np.float32)
    t = np.arange(start, stop) / sfreq
    x = lfilter([1.0], [1.0, -0.95], noise, axis=0) + 3 * np.sin(2 * np.pi * 10 * t)[:, None]
    return (x * 1e-6).astype(np.float32)
