"""The endless stream of gathered training batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .sampling import PairSampler

__all__ = ["PairBatches"]


class PairBatches(IterableDataset):
    """An endless stream of gathered training batches.

    Each item is ``(windows, pos_session)``. ``windows`` has, per session ``s``, a tensor
    ``(n_rows, receptive_field, n_ch_s)`` holding, in order: the references of ``s``, the
    positives *found in* ``s``, the negatives of ``s`` and, with ``hybrid``, the time positives of
    ``s``. ``pos_session[s]`` is the session whose data hold the positives of ``s``'s references
    (``s`` itself unless positives are matched across sessions). With anchors, ``pos_session`` is
    ``-1``, the positives' windows are left out and a third element gives their anchor rows.
    Windows are gathered with one ``index_select`` per session from the (unpadded) signal, so no
    copy of the recording is made.

    Parameters
    ----------
    signals : sequence of torch.Tensor
        Per session, the signal ``(n_samples, n_channels)`` (float32, contiguous).
    sampler : PairSampler
    batch_size : int
        References (and negatives) per session and step.
    left, right : int
        Encoder window around a sample.
    seed : int
        Seed of the sampling generator.
    """

    def __init__(
        self,
        signals: Sequence[torch.Tensor],
        sampler: PairSampler,
        batch_size: int,
        left: int,
        right: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.signals = list(signals)
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.offsets = torch.arange(-left, right)
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[int]]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> tuple[list[torch.Tensor], list[int]]:
        """Sample and gather one batch."""
        pairs = self.sampler.sample(self.rng, self.batch_size)
        anchored = pairs.pos_session[0] == -1
        source_of = {t: s for s, t in enumerate(pairs.pos_session)}
        out = []
        for s, x in enumerate(self.signals):
            parts = [pairs.ref[s]]
            if not anchored:
                parts.append(pairs.pos[source_of[s]])
            parts.append(pairs.neg[s])
            if pairs.pos_time is not None:
                parts.append(pairs.pos_time[s])
            rows = torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False))
            flat = (rows[:, None] + self.offsets).reshape(-1).to(x.device, non_blocking=True)
            out.append(x.index_select(0, flat).view(len(rows), len(self.offsets), x.shape[1]))
        if anchored:
            return out, pairs.pos_session, [torch.from_numpy(p) for p in pairs.pos]
        return out, pairs.pos_session
