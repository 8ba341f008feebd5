"""The coupled Poisson GLM simulator: schema, determinism, stability, shared circuit, coupling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from neurodecode.data.samples import Recording
from neurodecode.data.tokens import unit_keys
from neurodecode.schema import intervals_frame, validate
from neurodecode.simulate import _glm_check_stable, simulate_coupled_spikes
from neurodecode.store import open_recording, write_recording

N_UNITS = 40
DURATION = 300.0
DELAY_MS = 3


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def sim():
    """Two sessions of one 40-unit circuit, each recording 30 of its units."""
    return simulate_coupled_spikes(n_units=N_UNITS, duration=DURATION, sessions=("01", "02"),
                                   session_units=30, seed=1)


def test_schema_and_ground_truth(sim, tmp_path):
    assert len(sim.recordings) == 2
    assert sim.weights.shape == (N_UNITS, N_UNITS)
    assert not np.diag(sim.weights).any()
    assert sim.edges.sum() > 0
    assert (sim.weights < 0).any() and (sim.weights > 0).any()
    for i, (ds, session) in enumerate(zip(sim.recordings, ("01", "02"), strict=True)):
        validate(ds, check_data=True)
        assert ds.attrs["modality"] == "spikes" and ds.attrs["session"] == session
        assert f"ses-{session}" in ds.attrs["source"]["path"]
        assert ds.attrs["sfreq"] == 100.0 and ds.sizes["channel"] == 30
        assert ds.attrs["network_unit"] == sim.network_units[i].tolist()
        np.testing.assert_array_equal(np.array(ds.attrs["coupling"]), sim.channel_weights(i))
        assert ds.attrs["kernel"]["delay"] == pytest.approx(DELAY_MS / 1000)
        assert {"behavior_position", "behavior_speed"} <= set(ds.data_vars)
        assert list(intervals_frame(ds)["split"]) == ["train", "valid", "test"]
        # Binning the exact spike times reproduces the stored counts.
        t, u = ds["spike_time"].values, ds["spike_unit"].values
        assert np.all(np.diff(t) >= 0)
        counts = np.zeros(ds["signal"].shape)
        np.add.at(counts, (np.floor(t * 100.0).astype(int), u), 1)
        np.testing.assert_array_equal(counts, ds["signal"].values)
    write_recording(sim.recordings[1], tmp_path / "s2.zarr")
    back = open_recording(tmp_path / "s2.zarr")
    assert back.attrs["network_unit"] == sim.recordings[1].attrs["network_unit"]
    np.testing.assert_array_equal(np.array(back.attrs["coupling"]), sim.channel_weights(1))


def test_deterministic_by_seed():
    a = simulate_coupled_spikes(n_units=12, duration=20.0, seed=3)
    b = simulate_coupled_spikes(n_units=12, duration=20.0, seed=3)
    c = simulate_coupled_spikes(n_units=12, duration=20.0, seed=4)
    np.testing.assert_array_equal(a.recordings[0]["spike_time"], b.recordings[0]["spike_time"])
    np.testing.assert_array_equal(a.recordings[0]["spike_unit"], b.recordings[0]["spike_unit"])
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.recordings[0].attrs == b.recordings[0].attrs
    assert not np.array_equal(a.weights, c.weights)
    assert a.recordings[0].sizes["spike"] != c.recordings[0].sizes["spike"]


def test_rates_realistic_and_stable(sim):
    for ds in sim.recordings:
        units = ds["spike_unit"].values
        t = ds["spike_time"].values
        rates = np.bincount(units, minlength=ds.sizes["channel"]) / DURATION
        assert rates.min() > 1.0 and rates.max() < 40.0, rates
        assert 2.0 < np.median(rates) < 30.0
        # No runaway: the population rate of the last third is that of the first third.
        first = np.sum(t < DURATION / 3)
        last = np.sum(t >= 2 * DURATION / 3)
        assert 0.8 < last / first < 1.25
        per_second = np.bincount(np.floor(t).astype(int) * 30 + units)
        assert per_second.max() < 100
    assert 0.0 < sim.params["branching_ratio"] < 1.0


def test_runaway_is_refused():
    with pytest.raises(ValueError, match="branching ratio"):
        simulate_coupled_spikes(n_units=40, duration=10.0, edge_density=0.5,
                                excitatory_weight=(2.5, 3.0))
    steps = np.repeat(np.arange(0, 1000, 5), 1)  # 200 spikes of one unit in one second
    with pytest.raises(RuntimeError, match="runaway"):
        _glm_check_stable(steps, np.zeros(len(steps), dtype=np.int64), 1, 1000, 0.001, 200.0)
    _glm_check_stable(steps[:50], np.zeros(50, dtype=np.int64), 1, 1000, 0.001, 200.0)


def test_sessions_share_the_circuit_under_new_unit_keys(sim):
    a, b = sim.network_units
    common = np.intersect1d(a, b)
    assert len(common) >= 15 and not np.array_equal(a, b)
    ia = np.array([np.flatnonzero(a == u)[0] for u in common])
    ib = np.array([np.flatnonzero(b == u)[0] for u in common])
    # Same network unit, same couplings (rows and columns), whatever its channel in a session.
    ca, cb = np.array(sim.recordings[0].attrs["coupling"]), np.array(sim.recordings[1].attrs[
        "coupling"])
    np.testing.assert_array_equal(ca[np.ix_(ia, ia)], cb[np.ix_(ib, ib)])
    np.testing.assert_array_equal(ca[np.ix_(ia, ia)], sim.weights[np.ix_(common, common)])
    # Same tuning: place tuning curves of one network unit agree across sessions.
    curves = []
    for ds in sim.recordings:
        pos = ds["behavior_position"].values
        edges = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(pos, edges) - 1, 0, 9)
        counts = ds["signal"].values
        occupancy = np.bincount(which, minlength=10)
        curves.append(np.stack([np.bincount(which, counts[:, c], minlength=10) / occupancy
                                for c in range(counts.shape[1])]))
    same = [np.corrcoef(curves[0][i], curves[1][j])[0, 1] for i, j in zip(ia, ib, strict=True)]
    other = [np.corrcoef(curves[0][i], curves[1][j])[0, 1]
             for i, j in zip(ia, np.roll(ib, 1), strict=True)]
    assert np.nanmedian(same) > 0.8 > np.nanmedian(other) + 0.3
    # The channel names repeat, the unit keys do not: a new session needs unit identification.
    keys = [unit_keys(Recording(f"memory:{i}", ds)) for i, ds in enumerate(sim.recordings)]
    assert list(sim.recordings[0]["channel"].values) == list(sim.recordings[1]["channel"].values)
    assert not set(keys[0]) & set(keys[1])


def test_cross_correlogram_peaks_at_the_kernel_delay(sim):
    """Summed over the strong excitatory edges, post spikes follow pre spikes by the delay."""
    ds = sim.recordings[0]
    w = sim.channel_weights(0)
    t, u = ds["spike_time"].values, ds["spike_unit"].values
    ccg = np.zeros(20)
    strong = np.argwhere(w > 1.0)
    assert len(strong) >= 10
    for post, pre in strong:
        t_pre, t_post = t[u == pre], t[u == post]
        lo = np.searchsorted(t_post, t_pre)
        hi = np.searchsorted(t_post, t_pre + 0.02)
        lags = np.concatenate([t_post[i:j] - s for s, i, j in zip(t_pre, lo, hi, strict=True)])
        ccg += np.bincount(np.floor(lags / 0.001).astype(int), minlength=20)[:20]
    # Spike times are uniform within 1 ms steps: a step lag of 3 spreads over (2, 4) ms, and
    # the kernel decays after it, so [3, 4) ms holds the most.
    assert np.argmax(ccg) == DELAY_MS
    flat = np.median(ccg[12:])
    assert ccg[DELAY_MS] > 2 * flat
    assert ccg[: DELAY_MS - 1].max() < 1.3 * flat  # nothing before the delay


def test_behaviour_is_decodable(sim):
    ds = sim.recordings[0]
    x = ndimage.gaussian_filter1d(ds["signal"].values, 10.0, axis=0)
    y = ds["behavior_position"].values
    t = ds["time"].values
    iv = intervals_frame(ds).set_index("split")
    train = (t >= iv.loc["train", "start"]) & (t < iv.loc["train", "stop"])
    test = (t >= iv.loc["test", "start"]) & (t < iv.loc["test", "stop"])
    model = Ridge(alpha=1.0).fit(x[train], y[train])
    assert r2_score(y[test], model.predict(x[test])) > 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": 0.003}, "whole number"),
        ({"kernel_delay": 0.0025}, "kernel_delay"),
        ({"kernel_delay": 0.0}, "kernel_delay"),
        ({"sessions": ("01", "01")}, "unique"),
        ({"session_units": 50}, "session_units"),
        ({"session_units": [[0, 1, 1]]}, "repeat"),
        ({"session_units": [[0, 99]]}, "unit indices"),
        ({"session_units": [[0, 1], [2, 3]]}, "2 lists for 1 sessions"),
        ({"self_weight": 1.0}, "self_weight"),
        ({"n_units": 1}, "n_units"),
        ({"duration": 0.01}, "too short"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    params = {"n_units": 10, "duration": 5.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_coupled_spikes(**params)
