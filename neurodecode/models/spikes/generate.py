"""Sample spike trains from a trained spike-token model.

:func:`generate` samples every window's current tokens given its past window (and covariates or
frames), batched over windows with one loop over token positions: at each position the unit
comes from the unit head (:data:`~neurodecode.data.tokens.EOS` ends the window; PAD and SOS are
never drawn, and ``units`` restricts the draw to the units of a recording), the time bin from
the dt head, restricted to bins at or after the previous token's (times do not go backwards).
The past window is encoded once per window; each step reruns the current window's blocks on
the tokens so far (no key-value cache: windows hold tens of tokens).

:func:`generate_trains` rolls forward over consecutive windows, every generated window becoming
part of the next one's past, and returns spike times and units over the whole span (compare
their statistics with held-out spikes in :mod:`neurodecode.evaluate.spike_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...data.tokens import EOS, N_SPECIAL, PAD, SOS, TokenWindows
from .model import SpikeTransformer
from .pretrainer import SpikePretrainer

__all__ = ["generate", "generate_trains", "step_logits"]

Batch = dict[str, torch.Tensor]


def step_logits(model: SpikeTransformer, ctx: dict[str, torch.Tensor], unit: torch.Tensor,
                dt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits after the tokens so far, on a context encoded once.

    The current-window half of :meth:`SpikeTransformer.forward` (same modules, same order),
    reading the position after each row's last token.

    Parameters
    ----------
    model : SpikeTransformer
    ctx : dict of Tensor
        :meth:`SpikeTransformer.encode_context`'s output for these rows.
    unit, dt : Tensor of int64, shape (B, N)
        Tokens so far (trailing padding).
    mask : Tensor of bool, shape (B, N)

    Returns
    -------
    unit_logits : Tensor, shape (B, V)
        PAD and SOS at ``-inf``.
    dt_logits : Tensor, shape (B, n_dt)
    """
    b = unit.shape[0]
    ids = torch.cat([unit.new_full((b, 1), SOS), unit], dim=1)
    dts = torch.cat([dt.new_full((b, 1), model.n_dt), dt], dim=1)
    n = ids.shape[1]
    x = model.drop(model.unit_embed(ids) + model.dt_embed(dts) + model.position[:n])
    context, attn_mask = ctx["context"], ctx["context_mask"][:, None, None, :]
    for block in model.blocks:
        x = block(x, context, attn_mask)
    count = mask.sum(dim=1)
    hidden = model.norm(x[torch.arange(b, device=x.device), count])
    unit_logits = model.unit_head.logits(hidden)
    unit_logits[:, [PAD, SOS]] = float("-inf")
    return unit_logits, model.dt_head(hidden)


def _sample(unit_logits: torch.Tensor, dt_logits: torch.Tensor, prev_dt: torch.Tensor,
            prev_unit: torch.Tensor, allowed: torch.Tensor, temperature: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One (unit, dt) draw per row from the canonical-order distribution of the model.

    The outcomes are EOS, a later bin than ``prev_dt`` (any allowed unit) or the same bin
    with a unit id ``>= prev_unit`` (int ``(B,)`` each), weighted by the heads' product
    ``p(u) p(k)`` — the distribution whose likelihood
    :meth:`~neurodecode.models.spikes.model.SpikeTransformer.nll_from` scores. Units outside
    ``allowed`` (bool ``(V,)``) have probability zero.
    """
    neg = float("-inf")
    pu = F.softmax(unit_logits.float().masked_fill(~allowed, neg) / temperature, dim=-1)
    pk = F.softmax(dt_logits.float() / temperature, dim=-1)
    v, k = pu.shape[1], pk.shape[1]
    ids = torch.arange(v, device=pu.device)
    units = pu.masked_fill((ids == EOS)[None, :], 0.0)
    higher = units.masked_fill(ids[None, :] < prev_unit[:, None], 0.0)
    bins = torch.arange(k, device=pk.device)[None, :]
    weight = torch.where(bins > prev_dt[:, None], pk * units.sum(1, keepdim=True),
                         torch.where(bins == prev_dt[:, None],
                                     pk * higher.sum(1, keepdim=True), 0.0))
    outcomes = torch.cat([pu[:, EOS:EOS + 1], weight], 1)
    # nothing can follow with any weight left (an underflow after the last bin): end
    outcomes[:, 0] += (outcomes.sum(1) <= 0).float()
    choice = torch.multinomial(outcomes.cpu(), 1, generator=generator).squeeze(1).to(pu.device)
    dt = (choice - 1).clamp_min(0)
    same = dt == prev_dt
    pool = torch.where(same[:, None], higher, units)
    pool = torch.where(pool.sum(1, keepdim=True) > 0, pool, units + (units.sum(1, keepdim=True)
                                                                     == 0).float())
    unit = torch.multinomial(pool.cpu(), 1, generator=generator).squeeze(1).to(pu.device)
    unit = torch.where(choice == 0, torch.full_like(unit, EOS), unit)
    return unit, dt


def _allowed(n_vocab: int, units: Sequence[int] | np.ndarray | None,
             device: torch.device) -> torch.Tensor:
    allowed = torch.zeros(n_vocab, dtype=torch.bool, device=device)
    if units is None:
        allowed[N_SPECIAL:] = True
    else:
        ids = np.unique(np.asarray(units, dtype=np.int64))
        if len(ids) and (ids.min() < N_SPECIAL or ids.max() >= n_vocab):
            raise ValueError(f"units must be unit ids in {N_SPECIAL}..{n_vocab - 1}, got "
                             f"{ids.min()}..{ids.max()}")
        allowed[torch.from_numpy(ids).to(device)] = True
    allowed[EOS] = True
    return allowed


def _check(pretrainer: SpikePretrainer, tokens: TokenWindows, temperature: float,
           max_tokens: int | None) -> int:
    if not isinstance(pretrainer, SpikePretrainer):
        raise TypeError(f"pretrainer must be a SpikePretrainer, not {type(pretrainer).__name__}")
    pretrainer._check_fitted()
    if not isinstance(tokens, TokenWindows):
        raise TypeError(f"context_tokens must be TokenWindows, not {type(tokens).__name__}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    cap = pretrainer.config_.max_tokens
    if max_tokens is not None:
        if not 1 <= max_tokens <= cap:
            raise ValueError(f"max_tokens must be in 1..{cap} (the model's max_tokens), got "
                             f"{max_tokens}")
        cap = int(max_tokens)
    past = tokens.past_unit
    if len(past) and (past.min() < N_SPECIAL or past.max() >= pretrainer.model_.n_vocab):
        raise ValueError(f"past unit ids span {past.min()}..{past.max()}, outside the model's "
                         f"units {N_SPECIAL}..{pretrainer.model_.n_vocab - 1}")
    if len(tokens.past_dt) and tokens.past_dt.max() >= pretrainer.model_.n_past_dt:
        raise ValueError(f"past dt bins reach {tokens.past_dt.max()}; the model has "
                         f"{pretrainer.model_.n_past_dt}: cut windows with its tokenizer_")
    return cap


@torch.no_grad()
def _generate(pretrainer: SpikePretrainer, tokens: TokenWindows, covariates: Any,
              frames: Any, temperature: float, generator: torch.Generator, cap: int,
              allowed_units: Any, batch_size: int) -> TokenWindows:
    model = pretrainer.model_
    device = pretrainer.device_
    model.to(device).eval()
    allowed = _allowed(model.n_vocab, allowed_units, device)
    n = len(tokens)
    units_out = np.full((n, cap), PAD, dtype=np.int64)
    dts_out = np.zeros((n, cap), dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    ended = np.zeros(n, dtype=bool)
    try:
        for batch in pretrainer.batches(tokens, covariates, batch_size, frames=frames):
            rows = batch["index"].cpu().numpy()
            b = len(rows)
            ctx = model.encode_context(batch)
            unit = torch.full((b, cap), PAD, dtype=torch.long, device=device)
            dt = torch.zeros((b, cap), dtype=torch.long, device=device)
            mask = torch.zeros((b, cap), dtype=torch.bool, device=device)
            active = torch.ones(b, dtype=torch.bool, device=device)
            prev = torch.zeros(b, dtype=torch.long, device=device)
            prev_unit = torch.full((b,), N_SPECIAL - 1, dtype=torch.long, device=device)
            for step in range(cap):
                width = max(step, 1)
                ul, dl = step_logits(model, ctx, unit[:, :width], dt[:, :width],
                                     mask[:, :width])
                u, k = _sample(ul, dl, prev, prev_unit, allowed, temperature, generator)
                stop = u == EOS
                take = active & ~stop
                unit[take, step] = u[take]
                dt[take, step] = k[take]
                mask[take, step] = True
                prev = torch.where(take, k, prev)
                prev_unit = torch.where(take, u, prev_unit)
                ended_now = active & stop
                ended[rows[ended_now.cpu().numpy()]] = True
                active = take
                if not bool(active.any()):
                    break
            counts[rows] = mask.sum(1).cpu().numpy()
            units_out[rows] = unit.cpu().numpy()
            dts_out[rows] = dt.cpu().numpy()
    finally:
        model.to("cpu")
    # canonical order within a window: by time bin, then unit id
    keep = np.arange(cap)[None, :] < counts[:, None]
    key = np.where(keep, dts_out * (model.n_vocab + 1) + units_out, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    units_sorted = np.take_along_axis(units_out, order, 1)[keep]
    dts_sorted = np.take_along_axis(dts_out, order, 1)[keep]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TokenWindows(start=tokens.start.copy(), cur_offsets=offsets,
                        cur_unit=units_sorted.astype(np.int64),
                        cur_dt=dts_sorted.astype(np.int64),
                        past_offsets=tokens.past_offsets.copy(),
                        past_unit=tokens.past_unit.copy(), past_dt=tokens.past_dt.copy(),
                        n_truncated=(~ended & (counts == cap)).astype(np.int64))


def generate(pretrainer: SpikePretrainer, context_tokens: TokenWindows,
             covariates: np.ndarray | None = None, temperature: float = 1.0, seed: int = 0,
             max_tokens: int | None = None, *, frames: np.ndarray | None = None,
             units: Sequence[int] | np.ndarray | None = None, batch_size: int = 256
             ) -> TokenWindows:
    """Sample the current tokens of windows given their past windows.

    Parameters
    ----------
    pretrainer : SpikePretrainer
        A fitted model.
    context_tokens : TokenWindows
        Windows whose past tokens (and start) condition the draw; their current tokens are
        ignored.
    covariates : ndarray, optional
        Behaviour per window ``(n_windows, T, F)`` (a model trained with covariates).
    temperature : float
        Divides the logits of both heads (> 0; 1 samples the model's distribution).
    seed : int
        Seed of the draws (the same seed gives the same tokens).
    max_tokens : int, optional
        Tokens drawn per window at most (default and upper bound: the model's ``max_tokens``).
    frames : ndarray, optional
        Stimulus frames per window ``(n_windows, C, H, W)``.
    units : array of int, optional
        Unit ids that may be drawn (e.g. those of one recording); default all units.
    batch_size : int
        Windows sampled together.

    Returns
    -------
    TokenWindows
        The context windows' starts and past tokens with generated current tokens, in
        canonical order; ``n_truncated`` is 1 where ``max_tokens`` was reached before EOS.
    """
    cap = _check(pretrainer, context_tokens, temperature, max_tokens)
    generator = torch.Generator().manual_seed(int(seed))
    return _generate(pretrainer, context_tokens, covariates, frames, float(temperature),
                     generator, cap, units, batch_size)


def generate_trains(pretrainer: SpikePretrainer, starts: np.ndarray, *,
                    context: tuple[np.ndarray, np.ndarray] | None = None,
                    covariates: np.ndarray | None = None, frames: np.ndarray | None = None,
                    units: Sequence[int] | np.ndarray | None = None, chains: int = 1,
                    temperature: float = 1.0, seed: int = 0, max_tokens: int | None = None,
                    jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Roll the model forward: spike trains over consecutive windows.

    Window ``i`` is sampled given a past window made of what was generated before it (and of
    the real ``context`` spikes before the first window), so the trains are the model's own
    continuation.

    Parameters
    ----------
    pretrainer : SpikePretrainer
    starts : ndarray of float
        Increasing window starts at least one window apart (``window`` apart for a span with no
        gap, e.g. :func:`~neurodecode.data.tokens.window_starts` with ``stride=window``).
    context : (times, units), optional
        Real spikes (times in s, sorted; unit token ids) before the windows, e.g. the
        recording's spikes before ``starts[0]``; only spikes before each chain's first start
        are used.
    covariates, frames : ndarray, optional
        Per window (aligned with ``starts``), as for :func:`generate`.
    units : array of int, optional
        Unit ids that may be drawn.
    chains : int
        The starts are cut into this many contiguous runs sampled side by side (one batch):
        each run starts from the real context before it, so runs are independent continuations
        and ``chains`` times faster to draw.
    temperature, seed, max_tokens
        As for :func:`generate`.
    jitter : bool
        Place each spike uniformly within its time bin (seeded); False: at the bin centre.

    Returns
    -------
    times : ndarray of float64
        Sorted spike times (s).
    units : ndarray of int64
        Unit token id of each spike.
    """
    if not isinstance(pretrainer, SpikePretrainer):
        raise TypeError(f"pretrainer must be a SpikePretrainer, not {type(pretrainer).__name__}")
    pretrainer._check_fitted()
    tok = pretrainer.tokenizer_
    starts = np.asarray(starts, dtype=np.float64)
    if starts.ndim != 1 or not len(starts):
        raise ValueError("starts must be a non-empty 1-D array of window starts")
    if len(starts) > 1 and np.any(np.diff(starts) < tok.window - 1e-9):
        raise ValueError(f"starts must increase by at least the window ({tok.window} s): "
                         "generated windows may not overlap")
    if not 1 <= chains <= len(starts):
        raise ValueError(f"chains must be in 1..{len(starts)}, got {chains}")
    for name, arr in (("covariates", covariates), ("frames", frames)):
        if arr is not None and len(arr) != len(starts):
            raise ValueError(f"{name} has {len(arr)} rows for {len(starts)} windows")
    if context is None:
        ctx_t, ctx_u = np.zeros(0), np.zeros(0, dtype=np.int64)
    else:
        ctx_t = np.asarray(context[0], dtype=np.float64)
        ctx_u = np.asarray(context[1], dtype=np.int64)
        if ctx_t.shape != ctx_u.shape or ctx_t.ndim != 1:
            raise ValueError("context must be (times, units) of one length")
        if len(ctx_t) > 1 and np.any(np.diff(ctx_t) < 0):
            raise ValueError("context spike times must be sorted")
    empty = TokenWindows(np.zeros(1), np.zeros(2, dtype=np.int64), np.zeros(0, dtype=np.int64),
                         np.zeros(0, dtype=np.int64), np.zeros(2, dtype=np.int64),
                         np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                         np.zeros(1, dtype=np.int64))
    cap = _check(pretrainer, empty, temperature, max_tokens)
    generator = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    runs = np.array_split(np.arange(len(starts)), chains)
    history = []
    for run in runs:
        real = ctx_t < starts[run[0]]
        history.append((ctx_t[real], ctx_u[real]))
    out_t: list[np.ndarray] = []
    out_u: list[np.ndarray] = []
    for step in range(max(len(r) for r in runs)):
        live = [c for c, r in enumerate(runs) if step < len(r)]
        rows = np.array([runs[c][step] for c in live])
        windows = TokenWindows.concatenate(
            [tok(history[c][0], history[c][1], starts[runs[c][step]: runs[c][step] + 1])
             for c in live])
        gen = _generate(pretrainer, windows, None if covariates is None else covariates[rows],
                        None if frames is None else frames[rows], float(temperature),
                        generator, cap, units, len(live))
        for i, c in enumerate(live):
            s = starts[runs[c][step]]
            lo, hi = gen.cur_offsets[i], gen.cur_offsets[i + 1]
            offset = rng.uniform(0.0, 1.0, hi - lo) if jitter else np.full(hi - lo, 0.5)
            t = s + (gen.cur_dt[lo:hi] + offset) * tok.dt
            t = np.minimum(t, np.nextafter(s + tok.window, -np.inf))
            order = np.argsort(t, kind="stable")
            t, u = t[order], gen.cur_unit[lo:hi][order]
            out_t.append(t)
            out_u.append(u)
            # keep only what a later past window can reach
            h_t, h_u = history[c]
            nxt = runs[c][step + 1] if step + 1 < len(runs[c]) else None
            keep_from = -np.inf if nxt is None else starts[nxt] - tok.past
            old = h_t >= keep_from
            history[c] = (np.concatenate([h_t[old], t]), np.concatenate([h_u[old], u]))
    times = np.concatenate(out_t) if out_t else np.zeros(0)
    unit_ids = np.concatenate(out_u) if out_u else np.zeros(0, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    return times[order], unit_ids[order].astype(np.int64)
