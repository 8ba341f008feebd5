"""Streamed per-channel statistics: one implementation for stores and arrays.

:class:`~neurodecode.data.loader.Normalizer` (windows streamed from stores) and
:class:`~neurodecode.evaluate.baselines.ChannelStandardizer` (in-memory arrays) both fit their
means and standard deviations here: float64 (count, mean, M2) accumulators computed block by
block and merged with Chan et al.'s parallel update, and a standard deviation of 1 for flat
channels (they are then only centred). The module imports only NumPy, so scikit-learn
pipelines do not pay for torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "FIT_BLOCK_ROWS",
    "channel_stats",
    "merge_channels",
    "merge_moments",
    "moments",
    "safe_std",
]

#: Rows per block of the streamed moments (bounds the float64 copy of a block).
FIT_BLOCK_ROWS = 1 << 17


def moments(block: np.ndarray, w: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
    """Count, mean and M2 per column of ``(rows, columns)`` rows, weighted by ``w`` if given."""
    x = block.astype(np.float64)
    if w is None:
        count = float(len(x))
        mean = x.sum(axis=0) / count
        x -= mean
        np.square(x, out=x)
        return count, mean, x.sum(axis=0)
    count = float(w.sum())
    mean = w @ x / count
    x -= mean
    np.square(x, out=x)
    return count, mean, w @ x


def merge_moments(
    moments: Sequence[tuple[float, np.ndarray, np.ndarray]],
) -> tuple[float, np.ndarray, np.ndarray]:
    """Combine (count, mean, M2) of disjoint parts (Chan et al.'s parallel update)."""
    count, mean, m2 = moments[0]
    for c, m, s in moments[1:]:
        total = count + c
        delta = m - mean
        mean = mean + delta * (c / total)
        m2 = m2 + s + np.square(delta) * (count * c / total)
        count = total
    return count, mean, m2


def merge_channels(
    count: float, mean: np.ndarray, m2: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Pool the per-channel moments of one recording into one."""
    return merge_moments([(count, mean[k : k + 1], m2[k : k + 1]) for k in range(mean.size)])


def safe_std(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Standard deviation, 1 where a channel is flat (it is then only centred)."""
    std = np.sqrt(np.maximum(var, 0.0))
    flat = std <= 1e-6 * np.abs(mean) + np.finfo(np.float32).tiny
    return np.where(flat, 1.0, std)


def channel_stats(X: Any, channel_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an in-memory array.

    The statistics of :class:`~neurodecode.data.loader.Normalizer` (float64 accumulators
    merged block by block, std 1 for a flat channel, so that it is only centred), for arrays:
    what
    :class:`~neurodecode.evaluate.baselines.ChannelStandardizer` fits.

    Parameters
    ----------
    X : array-like
        Any shape; every axis but ``channel_axis`` is pooled (samples, time points).
    channel_axis : int
        The axis of the channels.

    Returns
    -------
    mean, std : ndarray
        float64 ``(n_channels,)``.
    """
    x = np.moveaxis(np.asarray(X), channel_axis, -1)
    x = x.reshape(-1, x.shape[-1])
    if not len(x):
        raise ValueError("cannot compute channel statistics of an empty array")
    count, mean, m2 = merge_moments(
        [moments(x[a : a + FIT_BLOCK_ROWS], None) for a in range(0, len(x), FIT_BLOCK_ROWS)]
    )
    return mean, safe_std(mean, m2 / count)
