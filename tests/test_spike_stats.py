"""Rate-only Poisson baseline, connectivity AUROC and generation statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from neurodecode.data.tokens import N_SPECIAL, SpikeTokenizer, window_starts
from neurodecode.evaluate.spike_stats import (
    PoissonRateBaseline,
    bin_widths,
    connectivity_auroc,
    covariates_at_bins,
    cross_correlogram_scores,
    generation_stats,
    nats_per_spike,
)
from neurodecode.simulate import simulate_coupled_spikes

BIN = 0.01


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _tuned_train(seed: int = 0, duration: float = 200.0, n_units: int = 6):
    """Inhomogeneous Poisson spikes whose rates are known functions of a 1-D covariate."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(duration / BIN)) * BIN
    x = 0.5 + 0.5 * np.sin(2 * np.pi * time / 13.0) * np.cos(2 * np.pi * time / 71.0)
    centres = rng.uniform(0.1, 0.9, n_units)
    true = 2.0 + 25.0 * np.exp(-0.5 * ((x[:, None] - centres) / 0.15) ** 2)
    counts = rng.poisson(true * BIN)
    b, u = np.nonzero(counts)
    b, u = np.repeat(b, counts[b, u]), np.repeat(u, counts[b, u])
    times = time[b] + rng.uniform(0.001, 0.999, len(b)) * BIN
    order = np.argsort(times)
    return time, x[:, None], true, counts, times[order], u[order]


def test_baseline_recovers_covariate_rates():
    time, X, true, counts, _, _ = _tuned_train()
    half = len(time) // 2
    base = PoissonRateBaseline().fit(counts[:half], X[:half], BIN)
    pred = base.rates(X[half:])
    assert pred.shape == true[half:].shape
    for u in range(true.shape[1]):
        assert np.corrcoef(pred[:, u], true[half:, u])[0, 1] > 0.95
    assert np.median(np.abs(pred / true[half:] - 1)) < 0.2
    const = PoissonRateBaseline().fit(counts, None, BIN)
    np.testing.assert_allclose(const.rates(n=3), np.tile(counts.mean(0) / BIN, (3, 1)))


def _brute_force_nll(base, tok, starts, times, units, time, X, ids):
    """-sum log Poisson over units x bins, counting spikes straight from the times."""
    widths = [min(tok.dt, tok.window - b * tok.dt) for b in range(tok.n_dt)]
    out = []
    for s in starts:
        inside = (times >= s) & (times < s + tok.window)
        k = np.minimum(np.floor((times[inside] - s) / tok.dt).astype(int), tok.n_dt - 1)
        n = np.zeros((tok.n_dt, len(ids)))
        np.add.at(n, (k, units[inside]), 1)
        total = 0.0
        for b in range(tok.n_dt):
            centre = s + b * tok.dt + widths[b] / 2
            x = None if X is None else X[np.searchsorted(time, centre, side="right") - 1][None]
            rate = base.rates(x, n=1)[0]
            total -= stats.poisson.logpmf(n[b], rate * widths[b]).sum()
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("with_covariates", [True, False])
def test_window_nll_matches_brute_force(with_covariates):
    time, X, _, counts, times, units = _tuned_train(seed=1, duration=60.0)
    X = X if with_covariates else None
    base = PoissonRateBaseline(n_knots=5).fit(counts, X, BIN)
    # 7 ms bins: the window's last bin is 1 ms wide.
    tok = SpikeTokenizer(window=0.05, past=0.02, dt=0.007, max_tokens=100)
    np.testing.assert_allclose(bin_widths(tok), [0.007] * 7 + [0.001])
    starts = window_starts(5.0, 30.0, tok.window, 0.37, tok.past)
    ids = np.arange(counts.shape[1]) + N_SPECIAL
    tw = tok(times, units + N_SPECIAL, starts)
    assert tw.n_tokens().sum() > 100 and tw.n_tokens().max() >= 2
    xb = None if X is None else covariates_at_bins(tok, starts, time, X)
    nll = base.window_nll(tw, ids, xb, tok)
    np.testing.assert_allclose(nll, _brute_force_nll(base, tok, starts, times, units, time, X,
                                                      ids), rtol=1e-10, atol=1e-10)
    # The unit order of unit_index maps token ids to baseline columns.
    shuffled = PoissonRateBaseline(n_knots=5).fit(counts[:, ::-1], X, BIN)
    np.testing.assert_allclose(shuffled.window_nll(tw, ids[::-1], xb, tok), nll, rtol=1e-6)
    nps = base.nll_per_spike(tw, ids, xb, tok)
    assert nps == pytest.approx(nll.sum() / tw.n_tokens().sum())


def test_nats_per_spike_leaves_truncated_windows_out():
    _, _, _, _, times, units = _tuned_train(seed=2, duration=30.0)
    tok = SpikeTokenizer(window=0.1, past=0.0, dt=0.01, max_tokens=3)
    tw = tok(times, units + N_SPECIAL, window_starts(0.0, 30.0, 0.1, 0.1))
    assert 0 < (tw.n_truncated > 0).sum() < len(tw)
    nll = np.arange(len(tw), dtype=float)
    keep = tw.n_truncated == 0
    assert nats_per_spike(nll, tw) == pytest.approx(nll[keep].sum() / tw.n_tokens()[keep].sum())
    with pytest.raises(ValueError, match="shape"):
        nats_per_spike(nll[:-1], tw)


def test_baseline_bad_input_is_named():
    time, X, _, counts, times, units = _tuned_train(seed=3, duration=20.0)
    with pytest.raises(ValueError, match="bin_width"):
        PoissonRateBaseline().fit(counts, X)
    with pytest.raises(ValueError, match="non-negative integers"):
        PoissonRateBaseline().fit(counts - 1, X, BIN)
    with pytest.raises(ValueError, match="rows"):
        PoissonRateBaseline().fit(counts, X[:-1], BIN)
    base = PoissonRateBaseline().fit(counts, X, BIN)
    with pytest.raises(ValueError, match="pass X"):
        base.rates(None)
    with pytest.raises(ValueError, match="covariates"):
        base.rates(np.zeros((3, 2)))
    tok = SpikeTokenizer(window=0.05, past=0.0, dt=0.005)
    starts = window_starts(1.0, 10.0, 0.05, 0.05)
    tw = tok(times, units + N_SPECIAL, starts)
    xb = covariates_at_bins(tok, starts, time, X)
    ids = np.arange(counts.shape[1]) + N_SPECIAL
    with pytest.raises(ValueError, match="not in unit_index"):
        base.window_nll(tw, ids + 1, xb, tok)
    with pytest.raises(ValueError, match="ids for the baseline"):
        base.window_nll(tw, ids[:-1], xb, tok)
    with pytest.raises(ValueError, match="X_at_bins"):
        base.window_nll(tw, ids, xb[:, 0], tok)
    with pytest.raises(ValueError, match="outside the covariate"):
        covariates_at_bins(tok, np.array([50.0]), time, X)


def test_auroc_of_true_and_random_scores():
    rng = np.random.default_rng(0)
    true = rng.random((30, 30)) < 0.1
    np.fill_diagonal(true, False)
    exact = connectivity_auroc(true.astype(float) + rng.normal(0, 0.01, true.shape), true,
                               n_permutations=500)
    assert exact["auroc"] == 1.0 and exact["p_value"] == pytest.approx(1 / 501)
    assert exact["n_pairs"] == 30 * 29 and exact["n_edges"] == true.sum()
    assert abs(exact["chance_mean"] - 0.5) < 0.02 and 0.5 < exact["chance_p95"] < 0.6
    inverted = connectivity_auroc(-true.astype(float), true, n_permutations=200)
    assert inverted["auroc"] == 0.0 and inverted["p_value"] == 1.0
    # The diagonal is ignored: a huge self score changes nothing.
    diag = true.astype(float) + np.eye(30) * 100
    assert connectivity_auroc(diag, true, n_permutations=10)["auroc"] == 1.0
    aurocs, ps = [], []
    for seed in range(20):
        r = connectivity_auroc(np.random.default_rng(seed).random(true.shape), true,
                               n_permutations=200, seed=seed)
        aurocs.append(r["auroc"])
        ps.append(r["p_value"])
    assert abs(np.mean(aurocs) - 0.5) < 0.03
    assert np.mean(np.array(ps) < 0.05) <= 0.15  # calibrated: few false positives
    # Tied scores: the rank null still centres on 0.5.
    tied = connectivity_auroc(rng.integers(0, 3, true.shape).astype(float), true)
    assert abs(tied["chance_mean"] - 0.5) < 0.02


def test_auroc_bad_input_is_named():
    true = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="both edges and non-edges"):
        connectivity_auroc(np.zeros((4, 4)), true)
    true[0, 1] = True
    with pytest.raises(ValueError, match="differ in shape"):
        connectivity_auroc(np.zeros((3, 3)), true)
    with pytest.raises(ValueError, match="square"):
        connectivity_auroc(np.zeros((4, 3)), true[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        connectivity_auroc(np.full((4, 4), np.nan), true)


@pytest.fixture(scope="module")
def glm_sim():
    return simulate_coupled_spikes(n_units=20, duration=120.0, seed=2)


@pytest.fixture(scope="module")
def glm_train(glm_sim):
    ds = glm_sim.recordings[0]
    return ds["spike_time"].values, ds["spike_unit"].values.astype(np.int64), 20, 120.0


def test_cross_correlogram_scores_find_the_edges(glm_sim, glm_train):
    t, u, n, _ = glm_train
    score = cross_correlogram_scores(t, u, n)
    w = glm_sim.channel_weights(0)
    assert score.shape == (n, n) and not np.diag(score).any()
    assert connectivity_auroc(np.abs(score), w != 0, n_permutations=200)["auroc"] > 0.8
    assert np.median(score[w > 0]) > 2 and np.median(score[w < 0]) < -1
    # A hand-made pair: unit 1 fires 3 ms after every spike of unit 0.
    pre = np.sort(np.random.default_rng(0).uniform(0, 100, 500))
    times = np.concatenate([pre, pre + 0.003])
    order = np.argsort(times)
    hand = cross_correlogram_scores(times[order], np.repeat([0, 1], 500)[order], 2)
    assert hand[1, 0] > 20 and hand[0, 1] == -hand[1, 0]
    with pytest.raises(ValueError, match="window"):
        cross_correlogram_scores(t, u, n, window=(0.0, 0.01))


def test_generation_stats_of_identical_data_agree_perfectly(glm_train):
    t, u, n, duration = glm_train
    out = generation_stats(t, u, t, u, n, duration)
    json.dumps(out, allow_nan=False)
    g = out["generated"]
    assert g["rate_corr"] == pytest.approx(1.0) and g["rate_ratio_error"] == 0.0
    assert g["isi_ks"] == 0.0 and g["isi_ks_unit"] == 0.0 and g["isi_cv_error"] == 0.0
    assert g["corr_match"] == pytest.approx(1.0) and g["corr_mae"] == 0.0
    assert g["mean_rate"] == out["real"]["mean_rate"] == pytest.approx(len(t) / duration / n)
    assert out["rates_real"] == out["rates_generated"]
    ref = out["poisson_surrogate"]
    assert ref["n_spikes"] == len(t) and ref["rate_ratio_error"] == pytest.approx(0.0)
    # The coupled network's ISIs (refractoriness) and correlations are not Poisson.
    assert ref["isi_ks"] > 0.02 and ref["corr_match"] < 0.5
    assert ref["isi_below_2ms"] > out["real"]["isi_below_2ms"]


def test_generation_stats_of_shuffled_times_are_worse(glm_train):
    t, u, n, duration = glm_train
    rng = np.random.default_rng(0)
    half = t < duration / 2
    # Real: first half; generated: the second half shifted (same process) or its times
    # shuffled across spikes (same rates per unit over the span, no ISI structure).
    gen_t, gen_u = t[~half] - duration / 2, u[~half]
    same = generation_stats(t[half], u[half], gen_t, gen_u, n, duration / 2)
    shuffled = generation_stats(t[half], u[half], rng.permutation(gen_t), gen_u, n,
                                duration / 2)
    assert same["generated"]["rate_corr"] > 0.9
    assert shuffled["generated"]["isi_ks"] > 2 * same["generated"]["isi_ks"]
    assert shuffled["generated"]["isi_ks_unit"] > same["generated"]["isi_ks_unit"]
    assert shuffled["generated"]["corr_match"] < same["generated"]["corr_match"]
    with pytest.raises(ValueError, match="outside"):
        generation_stats(t, u, t + duration, u, n, duration)
    with pytest.raises(ValueError, match="unit indices"):
        generation_stats(t, u, t, u + n, n, duration)
