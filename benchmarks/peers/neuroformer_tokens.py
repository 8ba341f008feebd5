"""Neuroformer-style tokenization: a per-window, per-bin, per-neuron Python loop.

A re-implementation (our own code) of how Neuroformer's public data loader
(``neuroformer/data_utils.py``, ``NFDataloader.get_interval``, a-antoniades/Neuroformer) turns
spikes into tokens, written to time it beside :class:`neurodecode.data.tokens.SpikeTokenizer`
on the same spikes:

1. the spikes are first binned at the token resolution ``dt`` into a ``(n_neurons, n_bins)``
   count array (Neuroformer loads such arrays, e.g. ``spikerates_dt_0.01.npy``; this vectorised
   step is *not* timed as part of the loop);
2. for every window (past and current alike), Python loops over the window's bins and, within a
   bin, over every neuron, appending ``[neuron] * count`` ids and ``[bin time] * count`` times;
3. each id and each time offset is then encoded one by one through ``stoi`` dictionaries (the
   offset rounded to the ``dt`` grid first, as Neuroformer's ``Tokenizer.encode`` does).

The result is in the same canonical order as ours (by bin, then neuron), so the two can be
compared token for token. Padding to a block size and the SOS/EOS tokens that Neuroformer adds
are left out: neurodecode adds them at collation, and they do not change the per-spike cost.
"""

from __future__ import annotations

import numpy as np


def bin_spikes(times: np.ndarray, units: np.ndarray, n_units: int, dt: float,
               t_stop: float) -> np.ndarray:
    """Count array ``(n_units, n_bins)`` of spikes in bins ``[k dt, (k + 1) dt)``.

    Parameters
    ----------
    times : ndarray of float64
        Spike times (s), in ``[0, t_stop)``.
    units : ndarray of int
        Neuron index of each spike, in ``[0, n_units)``.
    n_units : int
        Number of neurons.
    dt : float
        Bin width (s).
    t_stop : float
        End of the recording (s).

    Returns
    -------
    ndarray of int64
    """
    n_bins = int(np.ceil(t_stop / dt - 1e-9))
    bins = np.floor(np.asarray(times) / dt).astype(np.int64)
    if len(bins) and (bins.min() < 0 or bins.max() >= n_bins):
        raise ValueError(f"spike times must lie in [0, {t_stop})")
    counts = np.zeros((n_units, n_bins), dtype=np.int64)
    np.add.at(counts, (np.asarray(units, dtype=np.int64), bins), 1)
    return counts


class NeuroformerLoopTokenizer:
    """Per-spike Python expansion of windows of binned spikes, Neuroformer's way.

    Parameters
    ----------
    counts : ndarray of int, shape (n_neurons, n_bins)
        Spikes binned at ``dt`` (see :func:`bin_spikes`).
    dt : float
        Bin width and token time resolution (s).
    token_offset : int
        Token id of neuron 0 (neurodecode's ``N_SPECIAL``, so that ids match ours).
    """

    def __init__(self, counts: np.ndarray, dt: float, token_offset: int = 0) -> None:
        counts = np.asarray(counts)
        if counts.ndim != 2:
            raise ValueError(f"counts must be (n_neurons, n_bins), got shape {counts.shape}")
        self.counts = counts
        self.dt = float(dt)
        # Neuroformer's vocabularies: neuron -> id and rounded time offset -> id.
        self.stoi = {n: token_offset + n for n in range(counts.shape[0])}
        self.stoi_dt: dict[float, int] = {}

    def _encode_dt(self, offset: float) -> int:
        key = round(self.dt * round(offset / self.dt), 6)
        if key not in self.stoi_dt:
            self.stoi_dt[key] = int(round(key / self.dt))
        return self.stoi_dt[key]

    def interval(self, first_bin: int, n_bins: int) -> tuple[list[int], list[int]]:
        """Token ids and dt ids of the bins ``[first_bin, first_bin + n_bins)``.

        Parameters
        ----------
        first_bin, n_bins : int
            The window, in bins of the count array.

        Returns
        -------
        ids, dts : list of int
        """
        if first_bin < 0 or first_bin + n_bins > self.counts.shape[1]:
            raise ValueError(f"bins [{first_bin}, {first_bin + n_bins}) outside the "
                             f"{self.counts.shape[1]} bins of the recording")
        neuron_array = self.counts[:, first_bin:first_bin + n_bins]
        time_array = [i * self.dt for i in range(neuron_array.shape[1])]
        firings: list[int] = []
        timings: list[float] = []
        for idx, time in enumerate(time_array):
            column = neuron_array[:, idx]
            for neuron, spikes in enumerate(column):
                spikes = int(round(spikes))
                firings += [neuron] * spikes
                timings += [time] * spikes
        ids = [self.stoi[n] for n in firings]
        dts = [self._encode_dt(t) for t in timings]
        return ids, dts

    def __call__(self, start_bins: np.ndarray, n_dt: int, n_past_dt: int
                 ) -> list[tuple[list[int], list[int], list[int], list[int]]]:
        """Current and past tokens of windows starting at bins ``start_bins``.

        Returns
        -------
        list of (cur_ids, cur_dts, past_ids, past_dts)
        """
        out = []
        for b in np.asarray(start_bins, dtype=np.int64).tolist():
            past_ids, past_dts = self.interval(b - n_past_dt, n_past_dt)
            cur_ids, cur_dts = self.interval(b, n_dt)
            out.append((cur_ids, cur_dts, past_ids, past_dts))
        return out
