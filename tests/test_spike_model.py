"""The spike-token model: causality, padding, likelihood, training, growth, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import gammaln
from sklearn.base import clone

from neurodecode.data.tokens import EOS, N_SPECIAL, PAD, SOS, UnitVocabulary, window_starts
from neurodecode.models.spikes import (
    SpikePretrainer,
    SpikeTransformer,
    UnitEmbedding,
    load_spike_config,
)
from neurodecode.models.spikes.pretrainer import TokenBatches

torch.set_num_threads(1)

TINY = {"width": 16, "heads": 2, "layers": 2, "past_layers": 1, "dropout": 0.0,
        "mlp_ratio": 2.0, "max_tokens": 40, "max_past": 80, "batch_size": 32}


def poisson_spikes(n_units: int, rate: float, duration: float, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Independent homogeneous Poisson trains; unit ``i`` has token id ``N_SPECIAL + i``."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for u in range(n_units):
        t = rng.uniform(0, duration, rng.poisson(rate * duration))
        times.append(t)
        units.append(np.full(len(t), N_SPECIAL + u))
    t, u = np.concatenate(times), np.concatenate(units)
    order = np.argsort(t, kind="stable")
    return t[order], u[order]


def chained_spikes(duration: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit A fires at 15 Hz; unit B 10 ms and unit C 20 ms after every spike of A."""
    rng = np.random.default_rng(seed)
    a = np.sort(rng.uniform(0, duration, rng.poisson(15 * duration)))
    t = np.concatenate([a, a + 0.010, a + 0.020])
    u = np.concatenate([np.full(len(a), N_SPECIAL + i) for i in range(3)])
    order = np.argsort(t, kind="stable")
    keep = t[order] < duration
    return t[order][keep], u[order][keep]


def tokens_of(times: np.ndarray, units: np.ndarray, duration: float, **cfg: float):
    tok = load_spike_config(**{**TINY, **cfg}).tokenizer()
    starts = window_starts(0.0, duration, tok.window, tok.window, tok.past)
    return tok, tok(times, units, starts)


@pytest.fixture(scope="module")
def data():
    times, units = poisson_spikes(6, 15.0, 40.0)
    tok, tw = tokens_of(times, units, 40.0)
    vocab = UnitVocabulary([f"sub-01/ses-01/unit{i:03d}" for i in range(6)])
    return tok, tw, vocab


@pytest.fixture(scope="module")
def fitted(data):
    tok, tw, vocab = data
    n = len(tw)
    pre = SpikePretrainer(**TINY, max_epochs=2)
    pre.fit(tw.select(slice(0, n - 100)), vocab, val=(tw.select(slice(n - 80, n)), None))
    return pre


def make_model(n_vocab: int = 9, **kw) -> SpikeTransformer:
    torch.manual_seed(0)
    cfg = load_spike_config(**{**TINY, **kw})
    tok = cfg.tokenizer()
    return SpikeTransformer(n_vocab, tok.n_dt, tok.n_past_dt, cfg).eval()


def collate(tok, tw, idx):
    return tok.collate(tw, np.asarray(idx))


def rich_windows(tw, k: int = 4) -> np.ndarray:
    """Windows with at least 4 current and 1 past tokens."""
    ok = np.flatnonzero((tw.n_tokens() >= 4) & (np.diff(tw.past_offsets) >= 1))
    return ok[:k]


# ---- config -------------------------------------------------------------------------------

def test_shipped_config_and_errors(tmp_path):
    cfg = load_spike_config("spike_gpt")
    assert (cfg.width, cfg.heads, cfg.past_layers, cfg.layers) == (128, 4, 2, 4)
    assert cfg.tokenizer().n_dt == 10 and cfg.tokenizer().n_past_dt == 30
    assert cfg.resolved_precision("cpu") == "32-true"
    assert cfg.resolved_precision("gpu") == "bf16-mixed"
    assert load_spike_config("spike_gpt", window=0.1).tokenizer().n_dt == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text("width: 30\nheads: 4\nwidht: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*widht: unknown key"):
        load_spike_config(bad)
    with pytest.raises(ValueError, match="multiple of heads"):
        load_spike_config({"width": 30, "heads": 4})
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_spike_config("no_such_model")


# ---- the network --------------------------------------------------------------------------

def test_forward_shapes(data):
    tok, tw, _ = data
    model = make_model()
    batch = collate(tok, tw, range(8))
    out = model(batch)
    b, n = batch["cur_unit"].shape
    assert out["unit_logits"].shape == (b, n + 1, 9)
    assert out["dt_logits"].shape == (b, n + 1, tok.n_dt)
    assert out["hidden"].shape == (b, n + 1, 16)
    assert out["context"].shape[:2] == out["context_mask"].shape
    assert torch.isneginf(out["unit_logits"][..., [PAD, SOS]]).all()
    assert torch.isfinite(out["unit_logits"][..., EOS:]).all()
    assert model.features(batch).shape == (b, 16)


def test_causal(data):
    tok, tw, _ = data
    model = make_model()
    idx = rich_windows(tw)
    batch = collate(tok, tw, idx)
    ref = model(batch)
    for j in range(3):  # token j sits at input position j + 1
        changed = {k: v.clone() for k, v in batch.items()}
        changed["cur_unit"][:, j] = N_SPECIAL + (changed["cur_unit"][:, j] - N_SPECIAL + 1) % 6
        changed["cur_dt"][:, j] = (changed["cur_dt"][:, j] + 3) % tok.n_dt
        out = model(changed)
        for key in ("unit_logits", "dt_logits"):
            torch.testing.assert_close(out[key][:, : j + 1], ref[key][:, : j + 1],
                                       rtol=0, atol=1e-6)
            assert not torch.allclose(out[key][:, j + 1], ref[key][:, j + 1])


def test_padding_never_attended(data):
    tok, tw, _ = data
    model = make_model()
    idx = rich_windows(tw)
    batch = collate(tok, tw, idx)
    ref = model(batch)
    padded = {}
    gen = torch.Generator().manual_seed(1)
    for side in ("cur", "past"):
        unit, dt, mask = (batch[f"{side}_{k}"] for k in ("unit", "dt", "mask"))
        extra = 7
        # garbage ids and bins under the padding: it must not matter
        junk_u = torch.randint(N_SPECIAL, 9, (len(unit), extra), generator=gen)
        junk_d = torch.randint(0, tok.n_dt, (len(unit), extra), generator=gen)
        padded[f"{side}_unit"] = torch.cat([unit.masked_fill(~mask, 5), junk_u], 1)
        padded[f"{side}_dt"] = torch.cat([dt.masked_fill(~mask, 2), junk_d], 1)
        padded[f"{side}_mask"] = torch.cat([mask, mask.new_zeros(len(mask), extra)], 1)
    out = model(padded)
    valid = torch.cat([torch.ones(len(idx), 1, dtype=torch.bool), batch["cur_mask"]], 1)
    n = valid.shape[1]
    for key in ("unit_logits", "dt_logits", "hidden"):
        torch.testing.assert_close(out[key][:, :n][valid], ref[key][valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.token_nll(padded), model.token_nll(batch), rtol=0,
                               atol=1e-4)
    torch.testing.assert_close(model.features(padded), model.features(batch), rtol=0,
                               atol=1e-5)


def test_interior_padding_is_refused(data):
    tok, tw, _ = data
    model = make_model()
    batch = collate(tok, tw, rich_windows(tw))
    batch["cur_mask"][0, 0] = False
    with pytest.raises(ValueError, match="prefix"):
        model(batch)


def test_token_nll_matches_hand_computation(data):
    tok, tw, _ = data
    model = make_model()
    idx = rich_windows(tw, 3)
    batch = collate(tok, tw, idx)
    batch["truncated"] = torch.tensor([False, True, False])
    with torch.no_grad():
        out = model(batch)
        nll = model.token_nll(batch)
    for b in range(len(idx)):
        lu = torch.log_softmax(out["unit_logits"][b].double(), -1)
        ld = torch.log_softmax(out["dt_logits"][b].double(), -1)
        units = tw.cur_unit[tw.cur_offsets[idx[b]]: tw.cur_offsets[idx[b] + 1]]
        dts = tw.cur_dt[tw.cur_offsets[idx[b]]: tw.cur_offsets[idx[b] + 1]]
        pu, pk = lu.exp(), ld.exp()

        def log_z(i, prev_u, prev_k, pu=pu, pk=pk):
            """Total weight of what may follow (u', k') in canonical order, by enumeration."""
            z = pu[i, EOS]
            for uu in range(N_SPECIAL, pu.shape[1]):
                if uu == EOS:
                    continue
                for kk in range(pk.shape[1]):
                    if kk > prev_k or (kk == prev_k and uu >= prev_u):
                        z = z + pu[i, uu] * pk[i, kk]
            return float(torch.log(z))

        want, prev_u, prev_k = 0.0, N_SPECIAL - 1, 0
        for i, (u, k) in enumerate(zip(units, dts, strict=True)):
            want -= float(lu[i, u] + ld[i, k]) - log_z(i, prev_u, prev_k)
            prev_u, prev_k = int(u), int(k)
        if b != 1:  # the truncated window has no EOS term
            want -= float(lu[len(units), EOS]) - log_z(len(units), prev_u, prev_k)
        assert float(nll[b]) == pytest.approx(want, rel=1e-5)


def test_every_next_token_has_a_probability_at_most_one():
    """Two spikes of one unit in one bin (binned counts, bursts) are a valid continuation:
    each token's conditional NLL (a prefix difference) is >= 0, also for the repeats."""
    model = make_model()
    units = torch.tensor([[3, 3, 3, 5, 5, 8]])
    dts = torch.tensor([[0, 0, 0, 2, 2, 2]])
    past = {"past_unit": torch.tensor([[4]]), "past_dt": torch.tensor([[1]]),
            "past_mask": torch.tensor([[True]])}
    prefix = []
    with torch.no_grad():
        for n in range(units.shape[1] + 1):
            batch = {**past, "cur_unit": units[:, :max(n, 1)], "cur_dt": dts[:, :max(n, 1)],
                     "cur_mask": torch.arange(max(n, 1))[None, :] < n,
                     "truncated": torch.tensor([True])}
            prefix.append(float(model.token_nll(batch)[0]))
    steps = np.diff(prefix)
    assert np.all(steps > 0), steps
    # a confident model: the repeat of the last token is almost certain, and still <= 1
    unit_logits = torch.full((1, 1, 9), -5.0)
    unit_logits[..., :2] = float("-inf")
    unit_logits[..., 3] = 10.0
    dt_logits = torch.full((1, 1, 4), -5.0)
    dt_logits[..., 0] = 10.0
    out = {"unit_logits": unit_logits, "dt_logits": dt_logits}
    lu, ld, log_z = SpikeTransformer.next_log_probs(out, torch.tensor([[3]]),
                                                    torch.tensor([[0]]))
    p_repeat = float(torch.exp(lu[0, 0, 3] + ld[0, 0, 0] - log_z[0, 0]))
    assert 0.9 < p_repeat <= 1.0


def test_checkpointing_same_loss_and_gradients(data):
    tok, tw, _ = data
    batch = collate(tok, tw, range(16))
    grads = []
    for flag in (False, True):
        model = make_model(checkpointing=flag).train()
        loss = model.token_nll(batch).sum()
        loss.backward()
        grads.append((float(loss.detach()), model.blocks[0].attn.qkv.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_covariates_frames_and_contrastive(data):
    tok, tw, _ = data
    torch.manual_seed(0)
    cfg = load_spike_config(**TINY, contrastive=1.0, max_covariate_steps=5)
    model = SpikeTransformer(9, tok.n_dt, tok.n_past_dt, cfg, n_covariates=3,
                             frame_shape=(1, 12, 12))
    batch = collate(tok, tw, range(8))
    batch["covariates"] = torch.randn(8, 5, 3)
    batch["frames"] = torch.randn(8, 1, 12, 12)
    out = model(batch)
    # context: past start + past tokens + 5 covariate steps + 4 frame tokens
    assert out["context"].shape[1] == 1 + batch["past_unit"].shape[1] + 5 + 4
    loss = model.contrastive_loss(batch)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert model.covariate_proj.weight.grad.abs().sum() > 0
    # the behaviour embedding never sees the spikes, the neural one never the covariates
    other = dict(batch, covariates=torch.randn(8, 5, 3))
    torch.testing.assert_close(model(other)["neural"], out["neural"])
    batch["covariates"] = torch.randn(8, 6, 3)
    with pytest.raises(ValueError, match="max_covariate_steps"):
        model(batch)
    with pytest.raises(ValueError, match="covariates"):
        make_model().contrastive_loss(collate(tok, tw, range(4)))


# ---- embeddings: growth and partial training ------------------------------------------------

def test_unit_embedding_grow_and_train_only():
    torch.manual_seed(0)
    emb = UnitEmbedding(5, 4)
    old = emb.weight.detach().clone()
    emb.grow(8)
    assert emb.weight.shape == (8, 4) and torch.equal(emb.weight[:5], old)
    emb.train_only([6, 7])
    emb(torch.tensor([[0, 3, 6, 7]])).sum().backward()
    assert emb.weight.grad[:6].abs().sum() == 0 and emb.weight.grad[6:].abs().sum() > 0
    emb.grow(9)  # the mask stays on the old rows after growth
    emb.weight.grad = None
    emb(torch.tensor([3, 8])).sum().backward()
    assert emb.weight.grad[3].abs().sum() == 0 and emb.weight.grad[8].abs().sum() > 0
    emb.train_only(None)
    emb.weight.grad = None
    emb(torch.tensor([3])).sum().backward()
    assert emb.weight.grad[3].abs().sum() > 0
    with pytest.raises(ValueError, match="shrink"):
        emb.grow(4)
    with pytest.raises(ValueError, match="ids must be in"):
        emb.train_only([9])


def test_growing_vocabulary_keeps_old_logits(data):
    tok, tw, _ = data
    model = make_model()
    batch = collate(tok, tw, range(8))
    ref = model(batch)
    model.grow_vocabulary(14)
    assert model.n_vocab == 14
    out = model(batch)
    assert out["unit_logits"].shape[-1] == 14
    # equal up to float rounding: a wider output matrix may take another BLAS kernel
    torch.testing.assert_close(out["unit_logits"][..., :9], ref["unit_logits"], rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(out["dt_logits"], ref["dt_logits"], rtol=0, atol=1e-6)


def test_new_session_trains_only_new_rows(fitted, tmp_path):
    assert clone(fitted).get_params() == fitted.get_params()
    fitted = SpikePretrainer.load(fitted.save(tmp_path / "base.pt"))  # leave the fixture be
    before = {k: v.clone() for k, v in fitted.model_.state_dict().items()}
    ids = fitted.add_units([f"sub-02/ses-01/unit{i:03d}" for i in range(4)])
    assert ids.tolist() == [9, 10, 11, 12] and len(fitted.vocabulary_) == 13
    assert fitted.add_units(["sub-01/ses-01/unit002"]).tolist() == [5]  # known: same id
    times, units = poisson_spikes(4, 15.0, 10.0, seed=3)
    _, tw_new = tokens_of(times, units + 6, 10.0)  # ids 9..12
    grown = {k: v.clone() for k, v in fitted.model_.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot change \['width'\]"):
        fitted.set_params(width=32).fit(tw_new, fitted.vocabulary_, train_units=ids)
    fitted.set_params(width=16, max_epochs=1, lr=1e-2)
    fitted.fit(tw_new, fitted.vocabulary_, train_units=ids)
    assert len(fitted.history_) == 1 and fitted.config_.lr == 1e-2
    after = fitted.model_.state_dict()
    for key, value in after.items():
        if key.startswith(("unit_embed.", "unit_head.")):
            assert torch.equal(value[:9], before[key]), key
            assert not torch.equal(value[9:], grown[key][9:]), key
        else:
            assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in fitted.model_.parameters())  # unfrozen again


# ---- training -------------------------------------------------------------------------------

def rate_only_nll_per_spike(tw, train_rates: np.ndarray, dt: float, n_dt: int) -> float:
    """The contract's constant-rate Poisson baseline over complete windows."""
    keep = np.flatnonzero(tw.n_truncated == 0)
    sub = tw.select(keep)
    n_units = len(train_rates)
    counts = np.zeros((len(sub), n_units, n_dt))
    rows = np.repeat(np.arange(len(sub)), sub.n_tokens())
    np.add.at(counts, (rows, sub.cur_unit - N_SPECIAL, sub.cur_dt), 1)
    lam = train_rates[None, :, None] * dt
    nll = lam - counts * np.log(lam) + gammaln(counts + 1)
    return float(nll.sum() / counts.sum())


def test_training_beats_constant_rate_on_structured_spikes():
    duration = 90.0
    times, units = chained_spikes(duration)
    tok, tw = tokens_of(times, units, duration)
    n_train = int(0.8 * len(tw))
    train, test = tw.select(slice(0, n_train)), tw.select(slice(n_train + 4, len(tw)))
    vocab = UnitVocabulary(["A", "B", "C"])
    pre = SpikePretrainer(**TINY, max_epochs=6, lr=3e-3)
    pre.fit(train, vocab)
    train_end = train.start[-1] + tok.window
    rates = np.bincount(units[times < train_end] - N_SPECIAL, minlength=3) / train_end
    baseline = rate_only_nll_per_spike(test, rates, tok.dt, tok.n_dt)
    first, last = pre.history_[0]["train_nll"], pre.history_[-1]["train_nll"]
    model_nll = pre.nll_per_spike(test)
    assert last < first
    print(f"structured: model {model_nll:.3f} vs rate-only {baseline:.3f} nats/spike")
    assert model_nll < baseline - 0.3, (model_nll, baseline)
    assert pre.tokens_per_s_ > 0 and pre.fit_seconds_ > 0


def test_fit_records_and_scores(fitted, data):
    _, tw, vocab = data
    hist = fitted.history_
    assert len(hist) == 2 and {"train_nll", "val_nll", "val_loss"} <= set(hist[0])
    assert fitted.best_epoch_ in (0, 1)
    nll = fitted.nll(tw.select(slice(0, 50)))
    assert nll.shape == (50,) and np.isfinite(nll).all() and (nll > 0).all()
    # per spike: complete windows only
    tw2 = tw.select(slice(0, 50))
    tw2.n_truncated = tw2.n_truncated.copy()
    tw2.n_truncated[:10] = 1
    sub = tw2.select(slice(10, 50))
    assert fitted.nll_per_spike(tw2) == pytest.approx(nll[10:].sum() / sub.n_tokens().sum())
    batches = list(fitted.batches(tw2, batch_size=16))
    assert len(batches) == 4 and batches[0]["truncated"][:10].all()
    assert batches[-1]["index"].tolist() == list(range(48, 50))


def test_bad_inputs(fitted, data):
    tok, tw, vocab = data
    wrong = load_spike_config(**TINY, dt=0.002).tokenizer()
    times, units = poisson_spikes(6, 15.0, 5.0)
    tw_wrong = wrong(times, units, window_starts(0, 5.0, wrong.window, wrong.window,
                                                 wrong.past))
    with pytest.raises(ValueError, match="dt bins"):
        fitted.nll(tw_wrong)
    tw_unknown = tok(times, units + 10, window_starts(0, 5.0, tok.window, tok.window, tok.past))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fitted.nll(tw_unknown)
    with pytest.raises(ValueError, match="covariates"):
        fitted.nll(tw.select(slice(0, 5)), np.zeros((4, 2, 1)))
    with pytest.raises(RuntimeError, match="not fitted"):
        SpikePretrainer().nll(tw)
    with pytest.raises(TypeError, match="UnitVocabulary"):
        SpikePretrainer(**TINY).fit(tw, ["a"])


def test_token_batches_shuffle_covers_every_window(data):
    _, tw, _ = data
    loader = TokenBatches(tw.select(slice(0, 70)), batch_size=32, shuffle=True, seed=0)
    first = np.concatenate([b["index"].numpy() for b in loader])
    second = np.concatenate([b["index"].numpy() for b in loader])
    assert sorted(first) == list(range(70)) and not np.array_equal(first, second)


# ---- checkpoints ----------------------------------------------------------------------------

def test_save_load_round_trip(fitted, data, tmp_path):
    _, tw, _ = data
    path = fitted.save(tmp_path / "spk.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "neurodecode.spike_gpt"
    loaded = SpikePretrainer.load(path)
    assert loaded.vocabulary_.keys == fitted.vocabulary_.keys
    assert loaded.config_ == fitted.config_ and loaded.history_ == fitted.history_
    sub = tw.select(slice(0, 40))
    np.testing.assert_array_equal(loaded.nll(sub), fitted.nll(sub))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file is gone


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        SpikePretrainer.load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "neurodecode.codebook"}, other)
    with pytest.raises(ValueError, match=r"other\.pt: not a spike model checkpoint"):
        SpikePretrainer.load(other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.pt: not a readable"):
        SpikePretrainer.load(text)
    damaged = tmp_path / "damaged.pt"
    torch.save({"format": "neurodecode.spike_gpt", "version": 1, "config": {}}, damaged)
    with pytest.raises(ValueError, match=r"damaged\.pt: a damaged"):
        SpikePretrainer.load(damaged)


def test_fit_with_covariates_and_contrastive(data):
    tok, tw, vocab = data
    sub = tw.select(slice(0, 96))
    rng = np.random.default_rng(0)
    cov = rng.normal(size=(len(sub), 4, 2)).astype(np.float32)
    pre = SpikePretrainer(**TINY, max_epochs=1, contrastive=0.5, max_covariate_steps=4)
    pre.fit(sub, vocab, cov, val=(sub.select(slice(0, 32)), cov[:32]))
    assert {"train_contrastive", "train_nll", "val_nll"} <= set(pre.history_[0])
    assert pre.model_.n_covariates == 2
    assert np.isfinite(pre.nll(sub, cov)).all()
    with pytest.raises(ValueError, match="covariates/frames"):
        pre.fit(sub, vocab, cov, val=(sub.select(slice(0, 32)), None))
    with pytest.raises(ValueError, match="covariates"):
        pre.fit(sub, vocab, cov[..., :1], warm_start=True)  # other covariates: refused
    pre.fit(sub, vocab, warm_start=True)  # none at all: a context of spikes alone
    assert np.isfinite(pre.nll(sub)).all()


def test_empty_windows_score_their_eos():
    tok = load_spike_config(**TINY).tokenizer()
    times = np.array([0.30, 0.31, 0.32])
    units = np.array([3, 4, 3])
    tw = tok(times, units, np.array([0.35, 1.0, 0.3]))  # past only; nothing; current only
    assert tw.n_tokens().tolist() == [0, 0, 3]
    assert np.diff(tw.past_offsets).tolist() == [3, 0, 0]
    model = make_model(n_vocab=5)
    batch = tok.collate(tw)
    with torch.no_grad():
        out = model(batch)
        nll = model.token_nll(batch)
    assert torch.isfinite(out["hidden"]).all() and torch.isfinite(nll).all()
    eos = -torch.log_softmax(out["unit_logits"][:2, 0], -1)[:, EOS]
    torch.testing.assert_close(nll[:2], eos)
