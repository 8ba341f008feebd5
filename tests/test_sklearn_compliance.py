"""scikit-learn's estimator checks for every estimator a user can put in a Pipeline.

``parametrize_with_checks`` runs scikit-learn's API checks (input validation, ``n_features_in_``,
cloning, pickling, dtypes, idempotent fits, ...) on each estimator below. The checks feed small
2-D arrays of 1–100 samples; the instances are configured for that (short epochs for
``BandPower``, a short time offset and few steps for ``ContrastiveEmbedding``). A check that
cannot apply to time series is listed in ``EXPECTED_FAILURES`` with its reason, and
``xfail_strict`` makes a listed check that passes an error, so the list stays exact.

The second part shows that :func:`~neurodecode.evaluate.baselines.ridge` tunes its penalty on
blocked inner folds (whole groups, or contiguous blocks in time), not by leave-one-out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mne.decoding import CSP, XdawnTransformer
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from neurodecode.evaluate import baselines as bl
from neurodecode.evaluate.cleaning import FoldClean
from neurodecode.models.adapters.alignment import FunctionalAlignment
from neurodecode.models.contrastive import ContrastiveEmbedding
from neurodecode.models.inversion import EncodingInversion


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tiny models of the checks train ~10x faster on one thread of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Small, fast settings for the checks' 10–100-sample arrays.
SMALL = dict(max_iter=5, batch_size=16, hidden_dim=8, output_dim=2, time_offset=1)

ESTIMATORS = [
    FunctionalAlignment(),
    FunctionalAlignment(method="procrustes"),
    bl.ChannelStandardizer(),
    bl.Flatten(),
    bl.Decimate(2),
    # Bands that hold a frequency bin even for epochs of one sample (the checks' "epochs" are
    # 1-10 samples long; the default bands need epochs of 250 ms at least).
    bl.BandPower(sfreq=10.0, bands=((0.0, 2.0), (0.0, 5.0))),
    bl.BlockedRidgeCV(alphas=(0.1, 10.0), n_splits=3),
    bl.MNEVerbose(StandardScaler()),
    bl.MNEVerbose(CSP(n_components=2)),
    bl.MNEVerbose(XdawnTransformer(n_components=1)),
    FoldClean(),
    EncodingInversion(),
    ContrastiveEmbedding(conditional="time", receptive_field=5, **SMALL),
    ContrastiveEmbedding(conditional="discrete", receptive_field=1, **SMALL),
    ContrastiveEmbedding(conditional="time_delta", hybrid=True, receptive_field=1,
                         **{**SMALL, "output_dim": 4}),
]

_WINDOWS = ("transform embeds each sample from a window of receptive_field consecutive samples: "
            "reordering the rows of a time series, or taking a subset of them, changes every "
            "window (the check passes with receptive_field=1)")

#: Checks that cannot apply, per estimator, with the reason.
EXPECTED_FAILURES = {
    "windowed ContrastiveEmbedding": {
        "check_methods_sample_order_invariance": _WINDOWS,
        "check_methods_subset_invariance": _WINDOWS,
    },
    "procrustes FunctionalAlignment": {
        "check_regressors_train": "a Procrustes map is a scaled rotation, not a least-squares "
                                  "fit: on the check's one-column target it does not reach "
                                  "R² > 0.5 (by design; the ridge method passes)",
    },
    "MNEVerbose(XdawnTransformer)": {
        "check_fit2d_1sample": "MNE's XdawnTransformer itself fails on one epoch with scipy's "
                               "'not positive definite' error instead of naming the sample count "
                               "(the same without the wrapper)",
    },
}


def expected_failures(estimator) -> dict[str, str]:
    """The checks expected to fail for ``estimator`` (see ``EXPECTED_FAILURES``)."""
    if isinstance(estimator, ContrastiveEmbedding) and estimator.receptive_field > 1:
        return EXPECTED_FAILURES["windowed ContrastiveEmbedding"]
    if isinstance(estimator, FunctionalAlignment) and estimator.method == "procrustes":
        return EXPECTED_FAILURES["procrustes FunctionalAlignment"]
    if isinstance(estimator, bl.MNEVerbose) and isinstance(estimator.estimator,
                                                           XdawnTransformer):
        return EXPECTED_FAILURES["MNEVerbose(XdawnTransformer)"]
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures,
                         xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- behaviour


def test_float32_is_preserved_and_features_checked():
    rng = np.random.default_rng(0)
    epochs = rng.normal(size=(6, 3, 40)).astype(np.float32)
    for est in (bl.ChannelStandardizer(), bl.Decimate(4), bl.Flatten()):
        out = est.fit_transform(epochs)
        assert out.dtype == np.float32, type(est).__name__
        assert est.n_features_in_ == 3
        with pytest.raises(ValueError, match="X has 2 features, but .* expecting 3 features"):
            est.transform(epochs[:, :2])
    z = bl.ChannelStandardizer().fit(epochs).transform(epochs)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, rtol=1e-4)
    # float64 statistics, float32 output: as exact as float32 allows
    ref = (epochs.astype(float) - epochs.astype(float).mean(axis=(0, 2))[:, None]) \
        / epochs.astype(float).std(axis=(0, 2))[:, None]
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bl.Decimate(4).fit_transform(epochs),
                               epochs.reshape(6, 3, 10, 4).mean(-1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fitted on epochs of 40 samples, got 20"):
        bl.Decimate(4).fit(epochs).transform(epochs[..., :20])


def test_two_d_epochs_are_one_channel():
    sfreq = 100.0
    t = np.arange(200) / sfreq
    X = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 20 * t)])  # 2 epochs, 1 channel
    bp = bl.BandPower(sfreq, bands=((8.0, 13.0), (13.0, 30.0)), log=False)
    power = bp.fit_transform(X)
    np.testing.assert_allclose(power, bp.fit_transform(X[:, None, :]))
    assert power[0, 0] > 100 * power[0, 1] and power[1, 1] > 100 * power[1, 0]
    with pytest.raises(ValueError, match="fitted on epochs of 200 samples"):
        bl.BandPower(sfreq).fit(X[:, None, :]).transform(X[:, None, :100])
    with pytest.raises(ValueError, match=r"band \[10.2, 10.8\) Hz holds no frequency bin"):
        bl.BandPower(sfreq, bands=((10.2, 10.8),)).fit(X)


def test_mne_verbose_delegates_only_fitted_attributes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4, 50))
    y = np.repeat([0, 1], 15)
    wrapped = bl.MNEVerbose(CSP(n_components=2)).fit(X, y)
    assert wrapped.patterns_.shape == wrapped.estimator_.patterns_.shape
    assert wrapped.n_features_in_ == 4
    assert callable(wrapped.plot_patterns)
    assert not hasattr(wrapped, "fit_transform_")
    scaler = bl.MNEVerbose(StandardScaler()).fit(X[:, :, 0])
    assert not hasattr(scaler, "partial_fit")  # would run outside the MNE log level
    assert not hasattr(bl.MNEVerbose(CSP()), "patterns_")  # not fitted


def test_embedding_takes_nested_lists_and_checks_features():
    X = np.random.default_rng(0).poisson(1.0, (60, 3)).astype(np.float64)
    model = ContrastiveEmbedding(conditional="time", receptive_field=5, **SMALL).fit(X.tolist())
    assert model.n_features_in_ == 3 and model.n_iter_ == SMALL["max_iter"]
    z = model.transform(X)
    assert z.dtype == np.float32 and z.shape == (60, 2)
    np.testing.assert_array_equal(model.transform(X.tolist()), z)  # rows, not sessions
    with pytest.raises(ValueError, match="X has 2 features, but ContrastiveEmbedding is "
                                         "expecting 3 features"):
        model.transform(X[:, :2])
    with pytest.raises(ValueError, match="Found array with 1 sample"):
        ContrastiveEmbedding(conditional="time", **SMALL).fit(X[:1])
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        ContrastiveEmbedding(conditional="delta", **SMALL).fit(X)
    # labels held as Python objects (a pandas object column) are numbers all the same
    y = np.linspace(0, 1, 60).astype(object)
    fitted = ContrastiveEmbedding(conditional="delta", receptive_field=1, **SMALL).fit(X, y)
    assert fitted.n_iter_ == SMALL["max_iter"]


def test_windowed_embedding_depends_on_sample_order():
    """The reason for the expected failures: neighbours in time shape each embedding."""
    X = np.random.default_rng(1).normal(size=(80, 3))
    order = np.random.default_rng(2).permutation(80)
    windowed = ContrastiveEmbedding(conditional="time", receptive_field=5, **SMALL).fit(X)
    assert not np.allclose(windowed.transform(X)[order], windowed.transform(X[order]))
    pointwise = ContrastiveEmbedding(conditional="time", receptive_field=1, **SMALL).fit(X)
    np.testing.assert_allclose(pointwise.transform(X)[order], pointwise.transform(X[order]),
                               rtol=1e-6)


# --------------------------------------------------------------------------- blocked ridge


def _ar1(n: int, k: int, rho: float, seed: int) -> np.ndarray:
    """``k`` independent AR(1) series of length ``n`` (autocorrelation ``rho`` per sample)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, k))
    out[0] = rng.normal(size=k)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=k)
    return out


def test_inner_folds_are_contiguous_blocks_without_groups():
    folds = bl.blocked_folds(103, 5)
    tests = [test for _, test in folds]
    assert len(folds) == 5
    np.testing.assert_array_equal(np.concatenate(tests), np.arange(103))  # in order, once each
    for train, test in folds:
        assert np.all(np.diff(test) == 1)  # one contiguous block
        np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(103))
    with pytest.raises(ValueError, match="n_splits >= 2"):
        bl.blocked_folds(10, 1)
    with pytest.raises(ValueError, match=r"groups must have shape \(10,\)"):
        bl.blocked_folds(10, 5, groups=np.zeros(9))


def test_inner_folds_keep_groups_whole():
    runs = np.repeat(["r1", "r2", "r3", "r4"], [30, 20, 25, 25])
    folds = bl.blocked_folds(len(runs), 5, groups=runs)
    assert len(folds) == 4  # min(n_splits, n_groups)
    for train, test in folds:
        assert len(set(runs[test])) == 1
        assert not set(runs[train]) & set(runs[test])
    # one group only: contiguous blocks within it
    single = bl.blocked_folds(50, 5, groups=np.zeros(50))
    assert [len(test) for _, test in single] == [10] * 5
    assert all(np.all(np.diff(test) == 1) for _, test in single)


def test_ridge_pipeline_uses_blocked_folds_and_groups():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4, 3))
    y = X[:, 0, 0] + 0.1 * rng.normal(size=120)
    model = bl.ridge(cv=4).fit(X, y)
    tests = [test for _, test in model["ridge"].folds_]
    assert [(t[0], t[-1]) for t in tests] == [(0, 29), (30, 59), (60, 89), (90, 119)]
    runs = np.repeat([0, 1, 2], 40)
    grouped = bl.ridge(cv=4).fit(X, y, ridge__groups=runs)
    assert sorted(tuple(np.unique(runs[t])) for _, t in grouped["ridge"].folds_) == [
        (0,), (1,), (2,)]
    assert grouped.score(X, y) > 0.9


def test_blocked_folds_see_that_autocorrelated_noise_does_not_generalise():
    """Smooth features and an unrelated smooth target: leave-one-out validates every sample on
    a model fitted on its near-identical neighbours and rates the fit highly (R² 0.79-0.92 on
    seeds 0-2); the blocked folds that choose the penalty of ``ridge`` rate it at chance or
    below."""
    X, y = _ar1(300, 40, 0.99, seed=0), _ar1(300, 1, 0.99, seed=10)[:, 0]
    alphas = np.logspace(-2, 6, 17)
    loo = RidgeCV(alphas=alphas).fit(X, y)  # best_score_: minus the leave-one-out MSE
    assert 1 + loo.best_score_ / y.var() > 0.5
    blocked = bl.BlockedRidgeCV(alphas=alphas).fit(X, y)  # best_score_: blocked inner R²
    assert blocked.best_score_ < 0.1, blocked.best_score_
    assert [len(test) for _, test in blocked.folds_] == [60] * 5
