"""Behaviour decoding, new sessions, generation and connectivity from a spike-token model.

Covers :mod:`neurodecode.models.spikes.finetune` (:class:`SpikeDecoder`, the contiguous
few-shot and validation blocks), :mod:`neurodecode.models.spikes.generate` and
:mod:`neurodecode.models.spikes.connectivity`, on tiny models trained on simulated spikes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from neurodecode.data.tokens import EOS, N_SPECIAL, UnitVocabulary, window_starts
from neurodecode.evaluate.spike_stats import connectivity_auroc
from neurodecode.models.spikes import SpikePretrainer
from neurodecode.models.spikes.connectivity import model_connectivity
from neurodecode.models.spikes.finetune import (
    SpikeDecoder,
    _remap,
    fraction_blocks,
    time_holdout,
)
from neurodecode.models.spikes.generate import _sample, generate, generate_trains, step_logits

#: A tiny network (fast on one CPU thread).
TINY = dict(window=0.05, past=0.05, dt=0.005, max_tokens=32, max_past=48, width=16, heads=2,
            past_layers=1, layers=1, dropout=0.0, batch_size=64, max_epochs=2, patience=1,
            lr=3e-3)
N_UNITS = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _behaviour(t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * t / 8.0)


def _session(seed: int, duration: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Spikes of units tuned to the behaviour (thinned Poisson): times, unit index."""
    rng = np.random.default_rng(seed)
    peak = 40.0
    t = np.sort(rng.uniform(0, duration, rng.poisson(peak * N_UNITS * duration)))
    u = rng.integers(0, N_UNITS, len(t))
    centre = np.linspace(-0.8, 0.8, N_UNITS)
    rate = 2.0 + (peak - 2.0) * np.exp(-((_behaviour(t) - centre[u]) ** 2) / 0.1)
    keep = rng.random(len(t)) < rate / peak
    return t[keep], u[keep]


def _tokens(tok, vocab, keys, seed, duration=60.0):
    t, u = _session(seed, duration)
    starts = window_starts(0.0, duration, tok.window, tok.window, tok.past)
    return tok(t, vocab.ids(keys)[u], starts), _behaviour(starts + tok.window / 2)


KEYS = [f"sub-01/ses-01/unit{i:03d}" for i in range(N_UNITS)]
NEW_KEYS = [f"sub-02/ses-01/unit{i:03d}" for i in range(N_UNITS)]


@pytest.fixture(scope="module")
def pretrained():
    pre = SpikePretrainer(TINY)
    vocab = UnitVocabulary(KEYS)
    tok = pre._config().tokenizer()
    tokens, _ = _tokens(tok, vocab, KEYS, seed=0)
    return pre.fit(tokens, vocab), tok


# ---- contiguous blocks ----------------------------------------------------------------------


def test_fraction_blocks_are_the_earliest_contiguous_time():
    rng = np.random.default_rng(1)
    starts = np.concatenate([np.arange(0, 10, 0.5), np.arange(100, 110, 0.5)])  # a gap
    order = rng.permutation(len(starts))  # rows not in time order
    s, e = starts[order], starts[order] + 1.0
    block = fraction_blocks(len(s), 0.25, s, e)
    assert np.all(np.diff(s[block]) > 0)  # in time order
    chosen = np.sort(s[block])
    assert chosen[0] == 0.0 and np.allclose(np.diff(chosen), 0.5)  # contiguous from the start
    later = np.setdiff1d(np.arange(len(s)), block)
    assert s[block].max() < s[later].min()  # nothing later than an unchosen window
    assert 0.2 * len(s) <= len(block) <= 0.3 * len(s)
    # fractions nest, 1.0 takes everything, the smallest keeps min_windows
    assert set(block) <= set(fraction_blocks(len(s), 0.5, s, e))
    assert len(fraction_blocks(len(s), 1.0, s, e)) == len(s)
    assert len(fraction_blocks(len(s), 1e-6, s, e, min_windows=3)) == 3
    # without spans: the first rows
    np.testing.assert_array_equal(fraction_blocks(200, 0.1), np.arange(20))
    # per group: each recording's own earliest block
    groups = np.repeat([0, 1], 20)
    starts2 = np.concatenate([np.arange(20.0), np.arange(20.0)])
    blk = fraction_blocks(40, 0.1, starts2, starts2 + 1, groups=groups)
    np.testing.assert_array_equal(blk, [0, 1, 20, 21])
    with pytest.raises(ValueError, match="fraction"):
        fraction_blocks(10, 0.0)
    with pytest.raises(ValueError, match="one value per window"):
        fraction_blocks(10, 0.5, np.arange(5.0))


def test_time_holdout_is_last_and_purged():
    starts = np.arange(100) * 0.05
    lo, hi = starts - 0.15, starts + 0.05  # overlapping spans (past window)
    train, val = time_holdout(lo, hi, 0.2)
    assert len(val) == 20 and np.all(val == np.arange(80, 100))
    assert hi[train].max() <= lo[val].min() + 1e-12  # no training span reaches validation
    assert len(train) == 80 - 3  # the three windows whose past overlaps are left out
    train0, val0 = time_holdout(lo, hi, 0.0)
    assert len(val0) == 0 and len(train0) == 100


# ---- decoding ---------------------------------------------------------------------------------


def test_scratch_and_pretrained_fit_predict(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, y = _tokens(tok, vocab, KEYS, seed=3, duration=30.0)
    y2 = np.stack([y, -2 * y + 1], axis=1)
    for source in (None, pre):
        dec = SpikeDecoder(source, config=TINY, max_epochs=2).fit(tokens, y2, vocab)
        pred = dec.predict(tokens)
        assert pred.shape == (len(tokens), 2) and np.isfinite(pred).all()
        assert np.isfinite(dec.score(tokens, y2))
        assert isinstance(dec.model_, type(pre.model_))
    dec = SpikeDecoder(pre, max_epochs=2).fit(tokens, y)  # the pretrained ids
    assert dec.predict(tokens).shape == (len(tokens),)
    labels = np.where(y > 0, "up", "down")
    clf = SpikeDecoder(pre, task="classification", max_epochs=2).fit(tokens, labels, vocab)
    assert set(clf.predict(tokens)) <= {"up", "down"}
    assert list(clf.classes_) == ["down", "up"]
    proba = clf.predict_proba(tokens)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert 0.0 <= clf.score(tokens, labels) <= 1.0
    # the pretrained model is a copy: the pretrainer is left as it was
    assert pre.model_ is not dec.model_


def test_early_stopping_block_per_group(pretrained):
    """With groups (trial cells of one class each), every cell gives its own last windows to
    the early-stopping block, so that it holds every class; without, the last cells' only."""
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, y = _tokens(tok, vocab, KEYS, seed=3, duration=30.0)
    cells = np.repeat(np.arange(4), int(np.ceil(len(tokens) / 4)))[:len(tokens)]
    labels = np.array(["a", "b", "c", "d"])[cells]
    dec = SpikeDecoder(pre, task="classification", max_epochs=1).fit(tokens, labels,
                                                                      groups=cells)
    assert set(labels[dec.val_index_]) == set(labels) == set(labels[dec.train_index_])
    for c in range(4):
        rows = np.flatnonzero(cells == c)
        val = np.intersect1d(dec.val_index_, rows)
        assert len(val) and val.min() > np.intersect1d(dec.train_index_, rows).max()
    plain = SpikeDecoder(pre, task="classification", max_epochs=1).fit(tokens, labels)
    assert set(labels[plain.val_index_]) == {"d"}
    with pytest.raises(ValueError, match="groups"):
        SpikeDecoder(pre, task="classification", max_epochs=1).fit(tokens, labels,
                                                                   groups=cells[:5])


def test_decoding_learns_the_behaviour(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, y = _tokens(tok, vocab, KEYS, seed=4, duration=60.0)
    half = len(tokens) // 2
    dec = SpikeDecoder(pre, max_epochs=8, patience=3, lr=3e-3).fit(tokens.select(
        np.arange(half)), y[:half])
    test = np.arange(half + 4, len(tokens))  # past the training span
    assert dec.score(tokens.select(test), y[test]) > 0.6


def test_units_mode_trains_only_new_rows_and_head(pretrained):
    pre, tok = pretrained
    before = {k: v.clone() for k, v in pre.model_.state_dict().items()}
    vocab = UnitVocabulary(NEW_KEYS)  # a new session: unknown units
    tokens, y = _tokens(tok, vocab, NEW_KEYS, seed=5, duration=30.0)
    dec = SpikeDecoder(pre, train="units", max_epochs=3, lr=1e-2).fit(tokens, y, vocab)
    n_old = len(pre.vocabulary_)
    assert n_old == N_SPECIAL + N_UNITS  # the caller's pretrainer did not grow
    np.testing.assert_array_equal(dec.new_units_, np.arange(n_old, n_old + N_UNITS))
    np.testing.assert_array_equal(dec.unit_map_[N_SPECIAL:], dec.new_units_)
    after = dec.model_.state_dict()
    for key, old in before.items():
        new = after[key]
        if key.startswith(("unit_embed.", "unit_head.")):
            assert torch.equal(new[:n_old], old), key
        else:
            assert torch.equal(new, old), key
    # the new rows did learn (they are not their initialisation)
    init = copy.deepcopy(pre)
    torch.manual_seed(dec.seed)
    init.add_units(NEW_KEYS)
    assert not torch.equal(dec.model_.unit_embed.weight[n_old:],
                           init.model_.unit_embed.weight[n_old:])
    # the same with train="all" changes the shared weights (so the check above can fail)
    full = SpikeDecoder(pre, train="all", max_epochs=1).fit(tokens, y, vocab)
    assert not torch.equal(full.model_.blocks[0].mlp[0].weight,
                           before["blocks.0.mlp.0.weight"])
    head = SpikeDecoder(pre, train="head", max_epochs=1).fit(tokens, y, vocab)
    for key, old in before.items():
        assert torch.equal(head.model_.state_dict()[key][: old.shape[0]], old), key


def test_scaler_is_fitted_on_the_training_part_only(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, y = _tokens(tok, vocab, KEYS, seed=6, duration=20.0)
    y = y.copy()
    n = len(y)
    y[int(0.8 * n):] += 100.0  # the validation block (last 20 %) is far off
    dec = SpikeDecoder(pre, max_epochs=1, val_fraction=0.2).fit(tokens, y)
    assert len(dec.val_index_) and dec.val_index_.min() >= int(0.8 * n) - 1
    assert dec.train_index_.max() < dec.val_index_.min()
    np.testing.assert_allclose(dec.scaler_.mean_, [y[dec.train_index_].mean()])
    np.testing.assert_allclose(dec.scaler_.scale_, [y[dec.train_index_].std()])
    assert abs(dec.scaler_.mean_[0]) < 5.0  # all windows would give ~20


def test_decoder_bad_input(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, y = _tokens(tok, vocab, KEYS, seed=7, duration=5.0)
    with pytest.raises(ValueError, match="train='units'"):
        SpikeDecoder(None, train="units", config=TINY).fit(tokens, y, vocab)
    with pytest.raises(ValueError, match="knows all"):
        SpikeDecoder(pre, train="units").fit(tokens, y, vocab)
    with pytest.raises(ValueError, match="vocabulary"):
        SpikeDecoder(None, config=TINY).fit(tokens, y)
    with pytest.raises(ValueError, match="task"):
        SpikeDecoder(pre, task="ranking").fit(tokens, y)
    with pytest.raises(ValueError, match="targets for"):
        SpikeDecoder(pre).fit(tokens, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        SpikeDecoder(pre).fit(tokens, np.where(np.arange(len(y)) == 3, np.nan, y))
    with pytest.raises(ValueError, match="2 classes"):
        SpikeDecoder(pre, task="classification").fit(tokens, np.zeros(len(y), dtype=int))
    with pytest.raises(ValueError, match="network"):
        SpikeDecoder(pre, config={**TINY, "width": 32}).fit(tokens, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        SpikeDecoder(pre).predict(tokens)


# ---- generation -------------------------------------------------------------------------------


def test_step_logits_match_the_forward_pass(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, _ = _tokens(tok, vocab, KEYS, seed=8, duration=5.0)
    batch = tok.collate(tokens, np.arange(16))
    model = pre.model_.eval()
    with torch.no_grad():
        out = model(batch)
        ul, dl = step_logits(model, model.encode_context(batch), batch["cur_unit"],
                             batch["cur_dt"], batch["cur_mask"])
    last = batch["cur_mask"].sum(1)
    rows = torch.arange(16)
    torch.testing.assert_close(ul, out["unit_logits"][rows, last])
    torch.testing.assert_close(dl, out["dt_logits"][rows, last])


def test_sampler_respects_order_and_allowed_units():
    gen = torch.Generator().manual_seed(0)
    v, n_dt, b = 10, 8, 500
    unit_logits = torch.zeros(b, v)
    unit_logits[:, 5] = 20.0  # a unit that is not allowed dominates
    dt_logits = torch.zeros(b, n_dt)
    dt_logits[:, 0] = 20.0  # bins before the previous one dominate
    prev = torch.randint(0, n_dt, (b,), generator=gen)
    prev_unit = torch.randint(2, 5, (b,), generator=gen)
    allowed = torch.zeros(v, dtype=torch.bool)
    allowed[[EOS, 3, 4]] = True
    unit, dt = _sample(unit_logits, dt_logits, prev, prev_unit, allowed, 1.0, gen)
    assert set(unit.tolist()) <= {EOS, 3, 4}
    real = unit != EOS
    assert torch.all(dt[real] >= prev[real])
    same = real & (dt == prev)
    assert same.any() and torch.all(unit[same] >= prev_unit[same])  # canonical order


def test_sampler_draws_the_distribution_the_likelihood_scores():
    """Frequencies of many draws at one position match exp(-NLL) of each outcome."""
    from neurodecode.models.spikes.model import SpikeTransformer

    gen = torch.Generator().manual_seed(1)
    v, n_dt, b = 7, 4, 60000
    torch.manual_seed(0)
    unit_logits = torch.randn(1, v).expand(b, v).clone()
    unit_logits[:, :2] = float("-inf")  # PAD, SOS
    dt_logits = torch.randn(1, n_dt).expand(b, n_dt).clone()
    prev, prev_unit = torch.full((b,), 1), torch.full((b,), 4)
    allowed = torch.ones(v, dtype=torch.bool)
    unit, dt = _sample(unit_logits, dt_logits, prev, prev_unit, allowed, 1.0, gen)
    out = {"unit_logits": unit_logits[:1, None], "dt_logits": dt_logits[:1, None]}
    lu, ld, log_z = SpikeTransformer.next_log_probs(out, prev_unit[:1, None], prev[:1, None])
    for u in range(3, v):
        for k in range(n_dt):
            allowed_here = k > 1 or (k == 1 and u >= 4)
            p = float(torch.exp(lu[0, 0, u] + ld[0, 0, k] - log_z[0, 0])) if allowed_here else 0
            freq = float(((unit == u) & (dt == k)).float().mean())
            assert freq == pytest.approx(p, abs=0.01)
    p_eos = float(torch.exp(lu[0, 0, EOS] - log_z[0, 0]))
    assert float((unit == EOS).float().mean()) == pytest.approx(p_eos, abs=0.01)


def test_generate_windows(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    tokens, _ = _tokens(tok, vocab, KEYS, seed=9, duration=5.0)
    ctx = tokens.select(np.arange(40))
    units = vocab.ids(KEYS[:3])
    a = generate(pre, ctx, seed=3, max_tokens=12, units=units)
    b = generate(pre, ctx, seed=3, max_tokens=12, units=units)
    c = generate(pre, ctx, seed=4, max_tokens=12, units=units)
    for f in ("cur_offsets", "cur_unit", "cur_dt", "n_truncated"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not (np.array_equal(a.cur_unit, c.cur_unit) and np.array_equal(a.cur_dt, c.cur_dt))
    assert set(np.unique(a.cur_unit)) <= set(units.tolist())
    assert a.n_tokens().max() <= 12
    np.testing.assert_array_equal(a.past_unit, ctx.past_unit)
    np.testing.assert_array_equal(a.start, ctx.start)
    assert a.cur_dt.min() >= 0 and a.cur_dt.max() < tok.n_dt
    for i in range(len(a)):  # canonical order: by bin, then unit
        lo, hi = a.cur_offsets[i], a.cur_offsets[i + 1]
        key = a.cur_dt[lo:hi] * 1000 + a.cur_unit[lo:hi]
        assert np.all(np.diff(key) >= 0)
    # the cap reached without EOS is flagged; EOS certain gives empty windows
    model = copy.deepcopy(pre)
    with torch.no_grad():
        model.model_.unit_head.bias[EOS] = -1e4
    capped = generate(model, ctx, max_tokens=5)
    assert np.all(capped.n_tokens() == 5) and np.all(capped.n_truncated == 1)
    with torch.no_grad():
        model.model_.unit_head.bias[EOS] = 1e4
    empty = generate(model, ctx, max_tokens=5)
    assert np.all(empty.n_tokens() == 0) and np.all(empty.n_truncated == 0)
    with pytest.raises(ValueError, match="max_tokens"):
        generate(pre, ctx, max_tokens=TINY["max_tokens"] + 1)
    with pytest.raises(ValueError, match="temperature"):
        generate(pre, ctx, temperature=0.0)
    with pytest.raises(ValueError, match="unit ids"):
        generate(pre, ctx, units=[1, 3])


def test_generate_trains_rolls_forward(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(KEYS)
    t, u = _session(10, 2.0)
    starts = window_starts(1.0, 3.0, tok.window, tok.window, 0.0)
    ctx = (t, vocab.ids(KEYS)[u])
    times, units = generate_trains(pre, starts, context=ctx, seed=1, max_tokens=8)
    again = generate_trains(pre, starts, context=ctx, seed=1, max_tokens=8)
    np.testing.assert_array_equal(times, again[0])
    np.testing.assert_array_equal(units, again[1])
    assert len(times) > 0 and np.all(np.diff(times) >= 0)
    assert times.min() >= starts[0] and times.max() < starts[-1] + tok.window
    assert set(np.unique(units)) <= set(vocab.ids(KEYS).tolist())
    chained = generate_trains(pre, starts, context=ctx, seed=1, max_tokens=8, chains=4)
    assert chained[0].min() >= starts[0] and chained[0].max() < starts[-1] + tok.window
    with pytest.raises(ValueError, match="overlap"):
        generate_trains(pre, np.array([0.0, 0.01]))


# ---- connectivity -----------------------------------------------------------------------------


def test_connectivity_recovers_a_driving_edge():
    rng = np.random.default_rng(0)
    duration = 100.0
    a = np.sort(rng.uniform(0, duration, rng.poisson(15 * duration)))
    follow = a[rng.random(len(a)) < 0.8]
    b = np.concatenate([follow + rng.uniform(0.002, 0.004, len(follow)),
                        rng.uniform(0, duration, rng.poisson(3 * duration))])
    others = [rng.uniform(0, duration, rng.poisson(10 * duration)) for _ in range(2)]
    trains = [a, b, *others]
    t = np.concatenate(trains)
    u = np.concatenate([np.full(len(x), i) for i, x in enumerate(trains)])
    order = np.argsort(t)
    t, u = t[order], u[order]
    keys = [f"u{i}" for i in range(4)]
    vocab = UnitVocabulary(keys)
    cfg = {**TINY, "window": 0.02, "past": 0.02, "dt": 0.002, "max_tokens": 16,
           "max_past": 16, "width": 32, "batch_size": 128, "max_epochs": 3}
    pre = SpikePretrainer(cfg)
    tok = pre._config().tokenizer()
    starts = window_starts(0, duration, tok.window, tok.window, tok.past)
    tokens = tok(t, vocab.ids(keys)[u], starts)
    pre.fit(tokens, vocab)
    score = model_connectivity(pre, tokens, n_windows=64, method="past")
    assert score.shape == (4, 4)
    assert score[0, 1] > score[1, 0] + 0.5  # A drives B, not the reverse
    off = ~np.eye(4, dtype=bool)
    assert score[0, 1] == score[off].max()
    edges = np.zeros((4, 4), dtype=bool)
    edges[0, 1] = True
    res = connectivity_auroc(score, edges, n_permutations=50)
    assert res["auroc"] == 1.0 and res["p_value"] < 0.2 and res["n_edges"] == 1
    current = model_connectivity(pre, tokens, n_windows=64, method="current")
    assert current[0, 1] > current[1, 0]  # read inside the current window: the same edge
    with pytest.raises(ValueError, match="method"):
        model_connectivity(pre, tokens, method="attention")
    sub = model_connectivity(pre, tokens, n_windows=8, units=vocab.ids(keys[:2]))
    assert sub.shape == (2, 2)
    with pytest.raises(ValueError, match="unit ids"):
        model_connectivity(pre, tokens, units=[0, 3])


def test_decoder_checkpoint_round_trip_and_clone(pretrained, tmp_path):
    from sklearn.base import clone

    pre, tok = pretrained
    vocab = UnitVocabulary(NEW_KEYS)
    tokens, y = _tokens(tok, vocab, NEW_KEYS, seed=11, duration=10.0)
    labels = np.where(y > 0, "up", "down")
    for task, target in (("regression", np.stack([y, 2 * y], 1)),
                         ("classification", labels)):
        dec = SpikeDecoder(pre, task=task, train="units", max_epochs=1).fit(tokens, target,
                                                                           vocab)
        back = SpikeDecoder.load(dec.save(tmp_path / f"{task}.pt"))
        np.testing.assert_array_equal(back.predict(tokens), dec.predict(tokens))
        assert back.vocabulary_.keys == dec.vocabulary_.keys
        np.testing.assert_array_equal(back.unit_map_, dec.unit_map_)
    # a clone shares the fitted pretrainer (sklearn would otherwise unfit it) and refits
    twin = clone(SpikeDecoder(pre, train="units", max_epochs=1))
    assert twin.pretrained is pre and not hasattr(twin, "model_")
    assert twin.fit(tokens, y, vocab).predict(tokens).shape == (len(tokens),)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        SpikeDecoder.load(tmp_path / "other.pt")
    pre.save(tmp_path / "pre.pt")
    with pytest.raises(ValueError, match="not a spike decoder checkpoint"):
        SpikeDecoder.load(tmp_path / "pre.pt")
    with pytest.raises(FileNotFoundError):
        SpikeDecoder.load(tmp_path / "missing.pt")
    # a checkpoint path as the pretrained model works like the pretrainer itself
    from_path = SpikeDecoder(tmp_path / "pre.pt", train="head", max_epochs=1).fit(tokens, y,
                                                                                 vocab)
    assert from_path.predict(tokens).shape == (len(tokens),)


def test_unit_identification_on_unlabelled_windows(pretrained):
    pre, tok = pretrained
    vocab = UnitVocabulary(NEW_KEYS)
    unlabelled, y = _tokens(tok, vocab, NEW_KEYS, seed=12, duration=30.0)
    labelled = fraction_blocks(len(unlabelled), 0.1, *tok.spans(unlabelled.start))
    before = {k: v.clone() for k, v in pre.model_.state_dict().items()}
    dec = SpikeDecoder(pre, train="head", max_epochs=2, identify_epochs=3).fit(
        unlabelled.select(labelled), y[labelled], vocab, unlabelled=unlabelled)
    assert 1 <= len(dec.identify_history_) <= 3
    assert "train_nll" in dec.identify_history_[0]
    n_old = len(pre.vocabulary_)
    after = dec.model_.state_dict()
    for key, old in before.items():
        assert torch.equal(after[key][: old.shape[0]], old), key
    init = copy.deepcopy(pre)
    torch.manual_seed(dec.seed)
    init.add_units(NEW_KEYS)
    assert not torch.equal(after["unit_embed.weight"][n_old:],
                           init.model_.unit_embed.weight[n_old:])
    # the identified rows make the new session's spikes likelier than fresh rows do
    ident = copy.deepcopy(init)
    ident.model_.load_state_dict(after)
    windows = _remap(unlabelled, dec.unit_map_)
    assert ident.nll_per_spike(windows) < init.nll_per_spike(windows)
    with pytest.raises(ValueError, match="from scratch"):
        SpikeDecoder(None, config=TINY).fit(unlabelled, y, vocab, unlabelled=unlabelled)


def test_unit_identification_with_covariates():
    pre = SpikePretrainer({**TINY, "max_epochs": 1})
    vocab = UnitVocabulary(KEYS)
    tok = pre._config().tokenizer()
    tokens, y = _tokens(tok, vocab, KEYS, seed=13, duration=10.0)
    cov = y[:, None, None].astype(np.float32)  # behaviour as a one-step covariate
    pre.fit(tokens, vocab, cov)
    new_vocab = UnitVocabulary(NEW_KEYS)
    unl, y2 = _tokens(tok, new_vocab, NEW_KEYS, seed=14, duration=10.0)
    cov2 = y2[:, None, None].astype(np.float32)
    dec = SpikeDecoder(pre, train="units", max_epochs=1, identify_epochs=1).fit(
        unl, y2, new_vocab, unlabelled=unl, unlabelled_covariates=cov2)
    assert len(dec.identify_history_) == 1
    assert dec.predict(unl).shape == (len(unl),)  # decoding itself takes no covariate
    alone = SpikeDecoder(pre, train="units", max_epochs=1, identify_epochs=2).fit(
        unl, y2, new_vocab, unlabelled=unl)  # spikes alone as the context
    assert len(alone.identify_history_) == 2
    with pytest.raises(ValueError, match="rows for"):
        SpikeDecoder(pre, train="units", max_epochs=1).fit(
            unl, y2, new_vocab, unlabelled=unl, unlabelled_covariates=cov2[:-1])
