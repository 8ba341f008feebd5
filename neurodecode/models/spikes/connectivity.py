"""Directed unit-to-unit influence read from a trained spike-token model.

:func:`model_connectivity` asks the model a counterfactual question per window: how does the
log-probability that the *next* spike of the current window comes from unit ``j`` change when
one spike of unit ``i`` is added at the very end of the past window? Averaged over windows this
is a directed ``i → j`` score (excitatory edges raise it, inhibitory ones lower it, a unit's own
row holds its refractoriness or bursting). All ``U`` insertions of a window and its unaltered
copy go through the model in one batch.

With ``method="current"`` the question is asked inside the current window instead, where
the causal self-attention learns from every pair of tokens: the log-probability that the
token after a first token ``(i, bin 0)`` comes from unit ``j``, minus its mean over the first
units ``i`` (what is left is ``i``'s own effect on ``j``).
:func:`neurodecode.evaluate.spike_stats.connectivity_auroc` scores such a matrix against known
edges (e.g. of :func:`neurodecode.simulate.simulate_coupled_spikes`) with its permutation
chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...data.tokens import N_SPECIAL, TokenWindows
from .pretrainer import SpikePretrainer

__all__ = ["model_connectivity"]


def _pick(n: int, n_windows: int) -> np.ndarray:
    """``n_windows`` rows spread evenly over ``n`` (all when fewer)."""
    if n <= n_windows:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, n_windows)).astype(np.int64))


@torch.no_grad()
def model_connectivity(pretrainer: SpikePretrainer, tokens: TokenWindows,
                       covariates: np.ndarray | None = None, n_windows: int = 256, *,
                       units: Sequence[int] | np.ndarray | None = None,
                       frames: np.ndarray | None = None, batch_size: int = 1024,
                       method: str = "current") -> np.ndarray:
    """Directed influence ``score[i, j]`` of a spike of unit ``i`` on the next spike's unit ``j``.

    ``score[i, j]`` is the mean over windows of ``log p(first current token = j | past + one
    spike of i in the past window's last bin) - log p(first current token = j | past)``.

    Parameters
    ----------
    pretrainer : SpikePretrainer
        A fitted model.
    tokens : TokenWindows
        Held-out windows (their past windows are the contexts; current tokens are not used).
    covariates : ndarray, optional
        ``(n_windows, T, F)`` for a model trained with covariates.
    n_windows : int
        Windows used at most, spread evenly over ``tokens``.
    units : array of int, optional
        Unit ids to score (e.g. one recording's); default every unit of the vocabulary.
    frames : ndarray, optional
        ``(n_windows, C, H, W)``.
    batch_size : int
        Sequences per forward pass (a window takes ``len(units) + 1``).
    method : {"current", "past"}
        Make the spike of ``i`` the current window's first token (column-centred; the
        default, see the module docstring), or insert it at the end of the past window.

    Returns
    -------
    ndarray of float64, shape (U, U)
        Rows: the inserted unit ``i`` (source); columns: the predicted unit ``j`` (target), in
        the order of ``units`` (default: id ``N_SPECIAL + k`` at index ``k``).
    """
    if not isinstance(pretrainer, SpikePretrainer):
        raise TypeError(f"pretrainer must be a SpikePretrainer, not {type(pretrainer).__name__}")
    pretrainer._check_fitted()
    if not isinstance(tokens, TokenWindows):
        raise TypeError(f"tokens must be TokenWindows, not {type(tokens).__name__}")
    if not len(tokens):
        raise ValueError("no window to read connectivity from")
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    model = pretrainer.model_
    v = model.n_vocab
    ids = (np.arange(N_SPECIAL, v, dtype=np.int64) if units is None
           else np.asarray(units, dtype=np.int64).reshape(-1))
    if not len(ids) or ids.min() < N_SPECIAL or ids.max() >= v:
        raise ValueError(f"units must be a non-empty set of unit ids in {N_SPECIAL}..{v - 1}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("units holds duplicate ids")
    for name, arr in (("covariates", covariates), ("frames", frames)):
        if arr is not None and len(arr) != len(tokens):
            raise ValueError(f"{name} has {len(arr)} rows for {len(tokens)} windows")
    if method not in ("past", "current"):
        raise ValueError(f"method must be 'past' or 'current', not {method!r}")
    rows = _pick(len(tokens), int(n_windows))
    sub = tokens.select(rows)
    cov = None if covariates is None else np.asarray(covariates)[rows]
    frm = None if frames is None else np.asarray(frames)[rows]
    u = len(ids)
    per = u + 1
    chunk = max(1, int(batch_size) // per)
    device = pretrainer.device_
    model.to(device).eval()
    ids_t = torch.from_numpy(ids).to(device)
    last_bin = model.n_past_dt - 1
    total = torch.zeros(u, u, dtype=torch.float64, device=device)
    try:
        if method == "current":
            for batch in pretrainer.batches(sub, cov, max(1, int(batch_size) // u), frames=frm):
                b = batch["past_unit"].shape[0]
                rep = {k: batch[k].repeat_interleave(u, 0)
                       for k in ("past_unit", "past_dt", "past_mask", "covariates", "frames")
                       if k in batch}
                rep["cur_unit"] = ids_t.repeat(b)[:, None]
                rep["cur_dt"] = torch.zeros_like(rep["cur_unit"])
                rep["cur_mask"] = torch.ones_like(rep["cur_unit"], dtype=torch.bool)
                logp = torch.log_softmax(model(rep)["unit_logits"][:, 1].double(), dim=-1)
                logp = logp[:, ids_t].reshape(b, u, u)
                total += (logp - logp.mean(1, keepdim=True)).sum(0)
            return (total / len(rows)).cpu().numpy()
        for batch in pretrainer.batches(sub, cov, chunk, frames=frm):
            b = batch["past_unit"].shape[0]
            past_u, past_d, past_m = batch["past_unit"], batch["past_dt"], batch["past_mask"]
            length = past_m.sum(1)
            # (b * per) rows: the unaltered window, then one insertion per unit
            pu = torch.nn.functional.pad(past_u, (0, 1)).repeat_interleave(per, 0)
            pd = torch.nn.functional.pad(past_d, (0, 1)).repeat_interleave(per, 0)
            pm = torch.nn.functional.pad(past_m, (0, 1)).repeat_interleave(per, 0)
            ins = torch.arange(b * per, device=device) % per > 0
            col = length.repeat_interleave(per)[ins]
            r = torch.nonzero(ins).squeeze(1)
            pu[r, col] = ids_t.repeat(b)
            pd[r, col] = last_bin
            pm[r, col] = True
            rep = {"past_unit": pu, "past_dt": pd, "past_mask": pm,
                   "cur_unit": pu.new_zeros(b * per, 1), "cur_dt": pd.new_zeros(b * per, 1),
                   "cur_mask": pm.new_zeros(b * per, 1)}
            for key in ("covariates", "frames"):
                if key in batch:
                    rep[key] = batch[key].repeat_interleave(per, 0)
            logp = torch.log_softmax(model(rep)["unit_logits"][:, 0].double(), dim=-1)
            logp = logp[:, ids_t].reshape(b, per, u)
            total += (logp[:, 1:] - logp[:, :1]).sum(0)
    finally:
        model.to("cpu")
    return (total / len(rows)).cpu().numpy()
