"""Contrastive embeddings: encoder, InfoNCE, pair sampling, estimator, persistence, inputs.

Where the reference package ``cebra`` is installed, the encoder and the losses are compared with
it numerically. The estimator is trained (briefly) on simulated place-cell data, with a
block-shuffled label control, so that a model that learns nothing, or learns the labels without
the neural data, fails.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline

from neurodecode.models.contrastive import (
    ContrastiveEmbedding,
    ContrastiveModule,
    InfoNCE,
    LabelIndex,
    PairBatches,
    PairSampler,
    goodness_of_fit_bits,
)
from neurodecode.models.contrastive.objective import FunctionalAdam
from neurodecode.models.contrastive.sampling import valid_positions
from neurodecode.models.encoders import OffsetEncoder, TemporalLinear, layer_kernels

# Small, fast training settings shared by the estimator tests.
FAST = dict(output_dim=4, batch_size=256, learning_rate=3e-3, random_state=0)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Train with one thread: deterministic, and not slowed down by a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- data
def place_cells(
    n: int = 6000, n_neurons: int = 30, seed: int = 0, peak: float = 0.3, width: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson place cells on a smooth random walk in [0, 1] (10 ms bins, sparse spiking)."""
    rng = np.random.default_rng(seed)
    acc = 0.003 * rng.standard_normal(n)
    pos = np.empty(n)
    p, v = 0.5, 0.0
    for t in range(n):
        v = 0.97 * v + acc[t]
        p += v
        if p < 0:
            p, v = -p, -v
        if p > 1:
            p, v = 2 - p, -v
        pos[t] = p
    centers = np.linspace(0, 1, n_neurons)
    rate = 0.02 + peak * np.exp(-((pos[:, None] - centers[None]) ** 2) / (2 * width**2))
    return rng.poisson(rate).astype(np.float32), pos[:, None]


@pytest.fixture(scope="module")
def place():
    """(X, position, cut): the last 20 % (from ``cut`` on) is the held-out block."""
    X, pos = place_cells()
    return X, pos, int(0.8 * len(X))


@pytest.fixture(scope="module")
def trained(place):
    """A time_delta model trained on the first 80 % of the place-cell data."""
    X, pos, cut = place
    return ContrastiveEmbedding(conditional="time_delta", max_iter=150, **FAST).fit(
        X[:cut], pos[:cut]
    )


@pytest.fixture(scope="module")
def untrained(place):
    X, pos, cut = place
    return ContrastiveEmbedding(conditional="time_delta", max_iter=0, **FAST).fit(
        X[:cut], pos[:cut]
    )


@pytest.fixture(scope="module")
def sim_recording():
    from neurodecode.simulate import simulate_dataset

    return simulate_dataset(n_subjects=1, modalities=("spikes",), duration=60, seed=0).recordings[0]


def knn_r2(z_train, y_train, z_test, y_test) -> float:
    model = KNeighborsRegressor(n_neighbors=10).fit(z_train, y_train)
    return float(r2_score(y_test, model.predict(z_test)))


def smooth_walk(rng: np.random.Generator, n: int, step: float = 0.01) -> np.ndarray:
    return np.cumsum(rng.normal(0.0, step, n))


def window_ok(idx: np.ndarray, seg: np.ndarray, left: int, right: int) -> np.ndarray:
    """Whether the window [t - left, t + right) of each index lies inside one segment."""
    idx = np.asarray(idx)
    inside = (idx - left >= 0) & (idx + right - 1 < len(seg))
    a = np.clip(idx - left, 0, len(seg) - 1)
    b = np.clip(idx + right - 1, 0, len(seg) - 1)
    return inside & (seg[a] == seg[b])


# --------------------------------------------------------------------------- encoder
def _load_cebra_weights(cebra_model: torch.nn.Module, enc: OffsetEncoder) -> None:
    convs = [m for m in cebra_model.modules() if isinstance(m, torch.nn.Conv1d)]
    layers = [enc.input_layers[0], *enc.residual, enc.output_layer]
    assert len(convs) == len(layers)
    with torch.no_grad():
        for conv, lin in zip(convs, layers, strict=True):
            assert conv.kernel_size[0] == lin.kernel_size
            lin.weight.copy_(conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1))
            lin.bias.copy_(conv.bias)


@pytest.mark.parametrize(
    ("name", "rf", "normalize"),
    [("offset10-model", 10, True), ("offset5-model", 5, True), ("offset10-model-mse", 10, False)],
)
def test_encoder_matches_cebra(name, rf, normalize):
    cebra = pytest.importorskip("cebra")
    n_ch = 23
    torch.manual_seed(0)
    ref = cebra.models.init(name, n_ch, 32, 8).eval()
    enc = OffsetEncoder(n_ch, 8, 32, rf, normalize=normalize).eval()
    _load_cebra_weights(ref, enc)
    off = ref.get_offset()
    assert (enc.left, enc.right) == (off.left, off.right)

    x = torch.randn(64, n_ch, rf)
    with torch.no_grad():
        expected = ref(x)
        got = enc(x.transpose(1, 2).contiguous())
    assert got.shape == (64, 8)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, torch.zeros_like(got))

    # a whole sequence at once: row i is the window starting at sample i
    seq = torch.randn(200, n_ch)
    with torch.no_grad():
        windows = seq.unfold(0, rf, 1)  # (n_windows, n_ch, rf)
        torch.testing.assert_close(enc.forward_sequence(seq), ref(windows), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_in", [5, 32, 120])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_temporal_linear_equals_conv1d(n_in, k):
    """Both layouts (concatenate-then-project, and project-then-shift for wide inputs)."""
    torch.manual_seed(0)
    lin = TemporalLinear(n_in, 32, k)
    conv = torch.nn.Conv1d(n_in, 32, k)
    with torch.no_grad():
        conv.weight.copy_(lin.weight.view(32, k, n_in).permute(0, 2, 1))
        conv.bias.copy_(lin.bias)
    x = torch.randn(16, 9, n_in, requires_grad=True)
    xc = x.detach().transpose(1, 2).clone().requires_grad_(True)
    got, expected = lin(x), conv(xc).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(got)
    got.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, xc.grad.transpose(1, 2), atol=1e-5, rtol=1e-5)
    conv_grad = conv.weight.grad.permute(0, 2, 1).reshape(32, -1)
    torch.testing.assert_close(lin.weight.grad, conv_grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lin.bias.grad, conv.bias.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_functional_adam_equals_torch_adam(weight_decay):
    def net() -> torch.nn.Sequential:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))

    nets = [net(), net()]
    start = nets[0][0].weight.detach().clone()
    for n in nets:
        n[2].bias.requires_grad_(False)  # a parameter that never gets a gradient
    opts = [
        FunctionalAdam(list(nets[0].parameters()), lr=1e-2, weight_decay=weight_decay),
        torch.optim.Adam(nets[1].parameters(), lr=1e-2, weight_decay=weight_decay),
    ]
    for _ in range(25):
        x = torch.randn(8, 6)
        for n, opt in zip(nets, opts, strict=True):
            opt.zero_grad(set_to_none=True)
            n(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert (nets[0][0].weight - start).abs().max() > 1e-2  # the updates did happen


def test_plain_fit_does_not_import_the_compiler():
    """The CPU loop avoids ``torch.optim.Optimizer``, whose first use imports ``torch._dynamo``."""
    code = (
        "import sys, numpy as np, torch\n"
        "from neurodecode.models.contrastive import ContrastiveEmbedding\n"
        "x = np.random.default_rng(0).standard_normal((500, 4)).astype('float32')\n"
        "ContrastiveEmbedding(conditional='time', max_iter=3, batch_size=32).fit(x)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("rf", list(range(1, 13)))
def test_layer_kernels_add_up_to_receptive_field(rf):
    first, n_res, last = layer_kernels(rf)
    res_kernel = 3 if rf > 1 else 1
    assert 1 + (first - 1) + n_res * (res_kernel - 1) + (last - 1) == rf
    enc = OffsetEncoder(3, 2, 8, rf)
    assert enc.left + enc.right == rf
    assert enc.forward_sequence(torch.randn(rf + 6, 3)).shape == (7, 2)


@pytest.mark.parametrize("rf", [1, 5, 10])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_sequence_equals_window_forward(rf, causal):
    torch.manual_seed(1)
    enc = OffsetEncoder([7, 11], n_outputs=5, n_hidden=16, receptive_field=rf, causal=causal)
    for session, n_ch in enumerate(enc.n_inputs):
        seq = torch.randn(60, n_ch)
        with torch.no_grad():
            full = enc.forward_sequence(seq, session=session)
            windows = seq.unfold(0, rf, 1).transpose(1, 2)  # (n, rf, n_ch)
            each = enc(windows, session=session)
        assert full.shape == (60 - rf + 1, 5)
        torch.testing.assert_close(full, each, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="samples"):
        enc(torch.randn(4, rf + 1, 7))


def test_causal_encoder_ignores_the_future():
    torch.manual_seed(2)
    causal = OffsetEncoder(6, 4, 16, receptive_field=10, causal=True)
    centred = OffsetEncoder(6, 4, 16, receptive_field=10, causal=False)
    assert (causal.left, causal.right) == (9, 1)
    assert (centred.left, centred.right) == (5, 5)
    x = torch.randn(100, 6)
    t = 50
    x2 = x.clone()
    x2[t + 1 :] += 3.0 * torch.randn(100 - t - 1, 6)
    with torch.no_grad():
        for enc, changes in ((causal, False), (centred, True)):
            a, b = enc.forward_sequence(x), enc.forward_sequence(x2)
            row = t - enc.left  # embedding of sample t
            if changes:
                assert not torch.allclose(a[row], b[row])
            else:
                torch.testing.assert_close(a[: row + 1], b[: row + 1], rtol=0, atol=0)
            assert not torch.allclose(a[row + 1 :], b[row + 1 :])


def test_causal_estimator_transform_ignores_the_future(place):
    X = place[0][:400]
    t = 200
    X2 = X.copy()
    X2[t + 1 :] = X2[t + 1 :][::-1] + 1.0
    for causal in (True, False):
        model = ContrastiveEmbedding(conditional="time", causal=causal, max_iter=0).fit(X)
        a, b = model.transform(X), model.transform(X2)
        if causal:
            np.testing.assert_array_equal(a[: t + 1], b[: t + 1])
        else:
            assert not np.allclose(a[t], b[t])
            np.testing.assert_array_equal(a[: t - 4], b[: t - 4])  # right = 5 reaches t + 4


def test_encoder_output_norm():
    torch.manual_seed(3)
    x = torch.randn(40, 10, 9) * 5
    unit = OffsetEncoder(9, 6, 16, normalize=True)(x)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(40))
    free = OffsetEncoder(9, 6, 16, normalize=False)(x)
    assert not torch.allclose(free.norm(dim=1), torch.ones(40), atol=1e-2)


def test_add_session_and_shared_parameters():
    enc = OffsetEncoder([4, 6], 3, 8, 5)
    assert enc.n_sessions == 2 and enc.n_inputs == [4, 6]
    assert enc.add_session(9) == 2
    assert enc.n_inputs == [4, 6, 9]
    shared = {id(p) for p in enc.shared_parameters()}
    assert not shared & {id(p) for p in enc.input_layers.parameters()}
    assert len(shared) + len(list(enc.input_layers.parameters())) == len(list(enc.parameters()))
    assert enc.forward_sequence(torch.randn(20, 9), session=2).shape == (16, 3)


# --------------------------------------------------------------------------- InfoNCE
def _random_embeddings(normalize: bool, seed: int = 0, n: int = 64, m: int = 96, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    ref, pos, neg = (torch.randn(k, d, generator=g) for k in (n, n, m))
    pos = ref + 0.5 * pos  # correlated positives
    if normalize:
        ref, pos, neg = (torch.nn.functional.normalize(t, dim=1) for t in (ref, pos, neg))
    return ref, pos, neg


@pytest.mark.parametrize(
    ("kind", "similarity", "temperature", "learnable", "min_temperature"),
    [
        ("FixedCosineInfoNCE", "cosine", 1.0, False, None),
        ("FixedCosineInfoNCE", "cosine", 0.1, False, None),
        ("FixedEuclideanInfoNCE", "euclidean", 0.5, False, None),
        ("LearnableCosineInfoNCE", "cosine", 0.3, True, 0.01),
        ("LearnableCosineInfoNCE", "cosine", 0.05, True, 0.2),  # clamped at min_temperature
    ],
)
def test_infonce_matches_cebra(kind, similarity, temperature, learnable, min_temperature):
    pytest.importorskip("cebra")
    from cebra.models import criterions

    cls = getattr(criterions, kind)
    if learnable:
        theirs = cls(temperature=temperature, min_temperature=min_temperature)
    else:
        theirs = cls(temperature=temperature)
    ours = InfoNCE(similarity, temperature, learnable, min_temperature or 0.01)
    assert ours.temperature == pytest.approx(theirs.temperature, rel=1e-5)

    ref, pos, neg = _random_embeddings(normalize=similarity == "cosine")
    r1, r2 = ref.clone().requires_grad_(), ref.clone().requires_grad_()
    mine = ours(r1, pos, neg)
    other = theirs(r2, pos, neg)
    for a, b in zip(mine, other, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine[0], mine[1] + mine[2], atol=1e-5, rtol=1e-5)
    mine[0].backward()
    other[0].backward()
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-6, rtol=1e-4)
    if learnable:
        torch.testing.assert_close(
            ours.log_inverse_temperature.grad,
            theirs.log_inverse_temperature.grad,
            atol=1e-6,
            rtol=1e-4,
        )


def test_infonce_prefers_aligned_positives():
    crit = InfoNCE("cosine", temperature=0.1)
    ref, _, neg = _random_embeddings(normalize=True, seed=5)
    aligned = crit(ref, ref, neg)[0]
    random_pos = crit(ref, torch.roll(ref, 1, 0), neg)[0]
    assert aligned < random_pos - 1.0
    with pytest.raises(ValueError, match="similarity"):
        InfoNCE("dot")
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0.0)


@pytest.mark.parametrize(
    ("loss", "batch_size", "sessions"), [(5.0, 512, 1), (3.2, 256, 3), (7.5, 1024, 1), (0.1, 8, 2)]
)
def test_goodness_of_fit_matches_cebra(loss, batch_size, sessions):
    pytest.importorskip("cebra")
    from cebra.integrations.sklearn.metrics import infonce_to_goodness_of_fit

    expected = infonce_to_goodness_of_fit(loss, batch_size=batch_size, num_sessions=sessions)
    assert goodness_of_fit_bits(loss, batch_size, sessions) == pytest.approx(expected, rel=1e-9)
    assert goodness_of_fit_bits(torch.tensor(loss), batch_size, sessions) == pytest.approx(
        expected, rel=1e-6
    )


def test_goodness_of_fit_chance_is_zero():
    assert goodness_of_fit_bits(math.log(512), 512) == pytest.approx(0.0, abs=1e-12)
    assert goodness_of_fit_bits(0.0, 256, 2) == pytest.approx(9.0)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("dim", [1, 3])
def test_label_index_is_nearest_neighbour(dim):
    rng = np.random.default_rng(dim)
    labels = rng.random((500, dim))
    positions = rng.permutation(500) * 3 + 7
    index = LabelIndex(labels[:, 0] if dim == 1 else labels, positions)
    queries = rng.uniform(-0.2, 1.2, (400, dim))  # some outside the label range
    got = index.query(queries[:, 0] if dim == 1 else queries)
    dist = np.linalg.norm(queries[:, None, :] - labels[None], axis=2)
    expected = positions[dist.argmin(axis=1)]
    np.testing.assert_array_equal(got, expected)


def test_label_index_single_sample_and_empty():
    index = LabelIndex(np.array([0.3]), np.array([42]))
    np.testing.assert_array_equal(index.query(np.array([-5.0, 0.3, 9.0])), [42, 42, 42])
    with pytest.raises(ValueError, match="without samples"):
        LabelIndex(np.zeros((0, 1)), np.zeros(0, dtype=int))


def _segments(lengths):
    return np.concatenate([np.full(n, k) for k, n in enumerate(lengths)])


def test_valid_positions_brute_force():
    seg = _segments([30, 7, 12, 3, 25])
    for left, right in [(5, 5), (9, 1), (0, 1), (2, 3)]:
        expected = [
            t
            for t in range(len(seg))
            if t - left >= 0 and t + right <= len(seg) and len(set(seg[t - left : t + right])) == 1
        ]
        np.testing.assert_array_equal(valid_positions(seg, left, right), expected)


def test_valid_positions_with_reused_segment_ids():
    seg = np.r_[np.zeros(10, dtype=int), np.ones(3, dtype=int), np.zeros(10, dtype=int)]
    np.testing.assert_array_equal(valid_positions(seg, 5, 5), [5, 18])


def test_time_positives_are_offset_and_stay_in_segment():
    seg = _segments([120, 40, 300, 9, 15, 200])
    sampler = PairSampler([seg], None, conditional="time", left=5, right=5, time_offset=10)
    p = sampler.sample(np.random.default_rng(0), 5000)
    ref, pos, neg = p.ref[0], p.pos[0], p.neg[0]
    np.testing.assert_array_equal(pos, ref + 10)
    for idx in (ref, pos, neg):
        assert window_ok(idx, seg, 5, 5).all()
    np.testing.assert_array_equal(seg[ref], seg[pos])
    # every segment long enough for a window provides references and negatives
    assert set(seg[ref]) == {0, 1, 2, 5}  # segment 4 (15 samples) has no partner 10 later
    assert set(seg[neg]) == {0, 1, 2, 4, 5}
    assert p.pos_session == [0] and p.pos_time is None


def _increments(y, seg, off):
    t = np.arange(len(y) - off)
    same = seg[t] == seg[t + off]
    return (y[t + off] - y[t])[same]


def test_time_delta_positives_follow_empirical_increments():
    rng = np.random.default_rng(1)
    seg = _segments([700, 500, 800])
    y = smooth_walk(rng, len(seg))
    sampler = PairSampler([seg], [y], conditional="time_delta", left=5, right=5, time_offset=10)
    p = sampler.sample(np.random.default_rng(2), 8000)
    ref, pos = p.ref[0], p.pos[0]
    assert window_ok(ref, seg, 5, 5).all() and window_ok(pos, seg, 5, 5).all()
    inc = _increments(y, seg, 10)
    valid_labels = np.sort(y[valid_positions(seg, 5, 5)])
    max_gap = np.diff(valid_labels).max()
    diff = y[pos] - y[ref]
    # the positive is the nearest sample to (ref label + one empirical increment)
    assert np.all(np.abs(diff) <= np.abs(inc).max() + max_gap / 2 + 1e-12)
    # ... so label differences are distributed like the increments, not like random pairs
    assert np.std(diff) == pytest.approx(np.std(inc), rel=0.2)
    assert np.std(diff) < 0.3 * np.std(y[pos] - y[rng.permutation(ref)])
    assert np.mean(pos == ref) < 0.2


def test_delta_positives_jitter_the_label():
    rng = np.random.default_rng(3)
    seg = np.zeros(3000, dtype=int)
    y = rng.random((3000, 2))
    sampler = PairSampler([seg], [y], conditional="delta", left=5, right=5, delta=0.05)
    p = sampler.sample(np.random.default_rng(4), 4000)
    diff = y[p.pos[0]] - y[p.ref[0]]
    assert np.abs(np.std(diff, axis=0) - 0.05).max() < 0.015
    assert window_ok(p.pos[0], seg, 5, 5).all()


def test_discrete_positives_share_the_class():
    seg = _segments([400, 300, 500])
    cls = (np.arange(len(seg)) // 37) % 4
    sampler = PairSampler([seg], [cls], conditional="discrete", left=5, right=5)
    p = sampler.sample(np.random.default_rng(5), 5000)
    ref, pos, neg = p.ref[0], p.pos[0], p.neg[0]
    np.testing.assert_array_equal(cls[pos], cls[ref])
    for idx in (ref, pos, neg):
        assert window_ok(idx, seg, 5, 5).all()
    assert set(cls[ref]) == {0, 1, 2, 3}
    assert np.mean(pos == ref) < 0.05
    # positives spread over the class, not one fixed sample
    assert len(np.unique(pos[cls[ref] == 2])) > 100


def test_sessions_positives_come_from_a_derangement():
    rng = np.random.default_rng(6)
    lengths = [500, 1500, 3000]
    segs = [np.zeros(n, dtype=int) for n in lengths]
    ys = [
        0.5 + 0.45 * np.sin(2 * np.pi * np.arange(n) / (150 + 40 * k) + rng.uniform(0, 6))
        for k, n in enumerate(lengths)
    ]
    sampler = PairSampler(segs, ys, conditional="time_delta", left=5, right=5, time_offset=10)
    max_inc = max(np.abs(_increments(y, s, 10)).max() for y, s in zip(ys, segs, strict=True))
    seen = set()
    draw = np.random.default_rng(7)
    for _ in range(30):
        p = sampler.sample(draw, 600)
        target = p.pos_session
        assert sorted(target) == [0, 1, 2]
        assert all(t != s for s, t in enumerate(target)), target
        seen.add(tuple(target))
        for s, t in enumerate(target):
            assert window_ok(p.ref[s], segs[s], 5, 5).all()
            assert window_ok(p.neg[s], segs[s], 5, 5).all()
            assert window_ok(p.pos[s], segs[t], 5, 5).all()  # indexes the target session
            gap = np.diff(np.sort(ys[t][valid_positions(segs[t], 5, 5)])).max()
            close = np.abs(ys[t][p.pos[s]] - ys[s][p.ref[s]])
            assert np.all(close <= max_inc + gap / 2 + 1e-9)
    assert seen == {(1, 2, 0), (2, 0, 1)}  # both 3-cycles


def test_sampler_rejects_bad_setups():
    seg = np.zeros(100, dtype=int)
    with pytest.raises(ValueError, match="conditional"):
        PairSampler([seg], None, conditional="nearest")
    with pytest.raises(ValueError, match="needs labels"):
        PairSampler([seg], None, conditional="time_delta")
    with pytest.raises(ValueError, match="too short"):
        PairSampler([np.zeros(8, dtype=int)], None, conditional="time", left=5, right=5)
    with pytest.raises(ValueError, match="labels"):
        PairSampler([seg], [np.zeros(99)], conditional="time_delta")
    with pytest.raises(ValueError, match="NaN"):
        PairSampler([seg], [np.full(100, np.nan)], conditional="time_delta")


def test_hybrid_time_positives_stay_in_segment():
    rng = np.random.default_rng(8)
    seg = _segments([300, 200, 400])
    y = smooth_walk(rng, len(seg))
    sampler = PairSampler(
        [seg], [y], conditional="time_delta", left=5, right=5, time_offset=10, hybrid=True
    )
    p = sampler.sample(np.random.default_rng(9), 4000)
    assert window_ok(p.pos_time[0], seg, 5, 5).all()
    np.testing.assert_array_equal(p.pos_time[0], p.ref[0] + 10)


class _Recorder:
    def __init__(self, sampler):
        self.sampler, self.last = sampler, None

    def sample(self, rng, batch_size):
        self.last = self.sampler.sample(rng, batch_size)
        return self.last


class _CentreEncoder(torch.nn.Module):
    """Returns the first two channels (time index, session id) of each window's centre."""

    normalize = False

    def __init__(self, left):
        super().__init__()
        self.left = left
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, session=0):
        return x[:, self.left, :2]


def test_pair_batches_gather_and_align_sessions():
    lengths, n_ch = [300, 700, 500], [2, 3, 4]
    signals, ys = [], []
    for s, (n, c) in enumerate(zip(lengths, n_ch, strict=True)):
        x = np.zeros((n, c), dtype=np.float32)
        x[:, 0] = np.arange(n)
        x[:, 1] = s
        signals.append(torch.from_numpy(x))
        ys.append(np.sin(np.arange(n) / (30.0 + 10 * s)))
    segs = [np.zeros(n, dtype=int) for n in lengths]
    sampler = _Recorder(PairSampler(segs, ys, conditional="time_delta", left=3, right=4))
    stream = PairBatches(signals, sampler, batch_size=50, left=3, right=4, seed=0)
    batch = stream.next_batch()
    pairs = sampler.last
    windows, pos_session = batch
    assert pos_session == pairs.pos_session
    offsets = np.arange(-3, 4)
    for s, w in enumerate(windows):
        assert w.shape == (150, 7, n_ch[s])
        np.testing.assert_array_equal(w[:, :, 1].numpy(), s)  # gathered from session s
        source = pairs.pos_session.index(s)  # whose positives lie in session s
        rows = np.concatenate([pairs.ref[s], pairs.pos[source], pairs.neg[s]])
        np.testing.assert_array_equal(w[:, :, 0].numpy(), rows[:, None] + offsets)

    # the module pairs each reference with its own positive, from the target session
    module = ContrastiveModule(_CentreEncoder(3), InfoNCE())
    e = module.embed_batch(batch)
    for s in range(3):
        blk = slice(50 * s, 50 * (s + 1))
        np.testing.assert_array_equal(e["ref"][blk, 0].numpy(), pairs.ref[s])
        np.testing.assert_array_equal(e["ref"][blk, 1].numpy(), s)
        np.testing.assert_array_equal(e["pos"][blk, 0].numpy(), pairs.pos[s])
        np.testing.assert_array_equal(e["pos"][blk, 1].numpy(), pairs.pos_session[s])


# --------------------------------------------------------------------------- estimator: learning
def test_time_delta_embedding_decodes_position(place, trained):
    X, pos, cut = place
    z = trained.transform(X)
    assert z.shape == (len(X), 4) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    r2 = knn_r2(z[:cut], pos[:cut], z[cut:], pos[cut:])
    pca = PCA(4).fit(X[:cut])
    r2_pca = knn_r2(pca.transform(X[:cut]), pos[:cut], pca.transform(X[cut:]), pos[cut:])
    assert r2 > 0.75, r2
    assert r2 > r2_pca - 0.05, (r2, r2_pca)


def test_block_shuffled_labels_do_not_decode_held_out(place):
    """Over-fitting control: labels circularly shifted by half the training block."""
    X, pos, cut = place
    shuffled = np.roll(pos[:cut], cut // 2, axis=0)
    model = ContrastiveEmbedding(conditional="time_delta", max_iter=150, **FAST)
    z = model.fit(X[:cut], shuffled).transform(X)
    r2 = knn_r2(z[:cut], shuffled, z[cut:], pos[cut:])
    assert r2 < 0.2, r2


def test_time_conditional_learns_position(place):
    X, pos, cut = place
    model = ContrastiveEmbedding(conditional="time", max_iter=100, **FAST)
    z = model.fit(X[:cut], y=np.full(cut, np.nan)).transform(X)  # y is ignored
    assert knn_r2(z[:cut], pos[:cut], z[cut:], pos[cut:]) > 0.3


@pytest.fixture(scope="module")
def discrete(place):
    """(model, class labels): a discrete model of three position zones with string names."""
    X, pos, cut = place
    names = np.array(["left", "middle", "right"])
    cls = names[np.digitize(pos[:, 0], [1 / 3, 2 / 3])]
    model = ContrastiveEmbedding(conditional="discrete", max_iter=100, **FAST)
    return model.fit(X[:cut], cls[:cut]), cls


def test_discrete_conditional_separates_classes(place, discrete, tmp_path):
    X, _, cut = place
    model, cls = discrete
    np.testing.assert_array_equal(model.classes_, ["left", "middle", "right"])
    z = model.transform(X)
    acc = KNeighborsClassifier(10).fit(z[:cut], cls[:cut]).score(z[cut:], cls[cut:])
    chance = pd.Series(cls[cut:]).value_counts(normalize=True).max()
    assert acc > chance + 0.3, (acc, chance)
    assert model.score(X[cut:], cls[cut:]) > 0.3
    loaded = ContrastiveEmbedding.load(model.save(tmp_path / "d.pt"))
    np.testing.assert_array_equal(loaded.classes_, model.classes_)


def test_unseen_classes_are_rejected_or_kept_apart(place, discrete):
    X, _, cut = place
    model, cls = discrete
    held = cls[cut:]
    reference = model.score(X[cut:], held)
    for new_name in ("zz", "m"):  # sorts after every class / between 'left' and 'middle'
        renamed = np.where(held == "left", new_name, held)
        try:
            score = model.score(X[cut:], renamed)
        except ValueError as err:
            assert new_name in str(err)
        else:  # the same partition of the samples must give the same score
            assert score == pytest.approx(reference, abs=0.05), (new_name, score, reference)


def test_loss_decreases_and_goodness_of_fit(place, trained, untrained):
    X, pos, cut = place
    loss = np.asarray(trained.log_["loss"])
    assert len(loss) == 150
    for key in ("alignment", "uniformity", "temperature"):
        assert len(trained.log_[key]) == 150
    np.testing.assert_allclose(
        loss, np.add(trained.log_["alignment"], trained.log_["uniformity"]), atol=1e-4
    )
    assert loss[:10].mean() - loss[-10:].mean() > 0.1
    expected = goodness_of_fit_bits(loss[-10:].mean(), 256)
    assert trained.goodness_of_fit_ == pytest.approx(expected)
    assert trained.goodness_of_fit_ > 0.3
    held_out = trained.score(X[cut:], pos[cut:])
    assert held_out > 0.3
    assert trained.score(X[cut:], pos[cut:]) == held_out  # fixed seed
    chance = untrained.score(X[cut:], pos[cut:])
    assert abs(chance) < 0.3
    assert held_out > chance + 0.3


def test_learnable_temperature_moves_and_is_saved(place, tmp_path):
    X, pos, cut = place
    model = ContrastiveEmbedding(
        conditional="time_delta",
        learnable_temperature=True,
        temperature=1.0,
        max_iter=30,
        **{**FAST, "learning_rate": 1e-2},
    ).fit(X[:2000], pos[:2000])
    temps = model.log_["temperature"]
    assert abs(temps[-1] - 1.0) > 0.02
    assert model.criterion_.temperature == pytest.approx(temps[-1], rel=1e-5)
    loaded = ContrastiveEmbedding.load(model.save(tmp_path / "t.pt"))
    assert loaded.criterion_.temperature == pytest.approx(model.criterion_.temperature)


def test_hybrid_logs_both_objectives(place):
    X, pos, cut = place
    model = ContrastiveEmbedding(
        conditional="time_delta",
        hybrid=True,
        learnable_temperature=True,
        max_iter=40,
        **{**FAST, "learning_rate": 1e-2},
    ).fit(X[:cut], pos[:cut])
    log = model.log_
    assert len(log["behavior_loss"]) == len(log["time_loss"]) == 40
    np.testing.assert_allclose(
        log["loss"], np.add(log["behavior_loss"], log["time_loss"]), rtol=1e-5
    )
    assert abs(log["temperature"][-1] - 1.0) > 0.02
    z = model.transform(X[cut:])
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_adapt_trains_only_a_new_input_layer(place):
    X, pos, cut = place
    model = ContrastiveEmbedding(conditional="time_delta", max_iter=20, **FAST).fit(
        X[:cut], pos[:cut]
    )
    before = {k: v.clone() for k, v in model.encoder_.state_dict().items()}
    other = X[cut:, ::-1][:, :25].copy()  # a "new subject" with 25 channels
    session = model.adapt(other, pos[cut:], max_iter=20)
    assert session == 1 and model.n_sessions_ == 2
    after = model.encoder_.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert len(model.log_["loss"]) == 40
    assert model.transform(other, session=1).shape == (len(other), 4)
    assert model.encoder_.input_layers[1].weight.shape == (32, 2 * 25)


def test_adapt_aligns_a_new_subject_with_anchors(place, trained, tmp_path):
    """A new subject (other neurons, other walk) lands where the training session embeds the
    same position: a decoder fitted on the training session transfers."""
    X, pos, cut = place
    X_new, pos_new = place_cells(3000, 25, seed=5)
    z_train = trained.transform(X[:cut])
    decoder = KNeighborsRegressor(n_neighbors=10).fit(z_train, pos[:cut])
    path = trained.save(tmp_path / "base.pt")
    transfer = {}
    for align in (True, False):
        model = ContrastiveEmbedding.load(path)
        if align:
            assert model.anchors_["labels"].shape[0] == model.anchors_["embedding"].shape[0]
            np.testing.assert_array_equal(model.anchors_["labels"], trained.anchors_["labels"])
        session = model.adapt(X_new[:2000], pos_new[:2000], max_iter=50, align=align)
        z_new = model.transform(X_new[2000:], session=session)
        transfer[align] = r2_score(pos_new[2000:], decoder.predict(z_new))
        within = knn_r2(
            model.transform(X_new[:2000], session=session), pos_new[:2000], z_new, pos_new[2000:]
        )
        assert within > 0.6, (align, within)
        np.testing.assert_array_equal(model.transform(X[cut:]), trained.transform(X[cut:]))
    assert transfer[True] > 0.6, transfer
    assert transfer[True] > transfer[False], transfer


# --------------------------------------------------------------------------- scikit-learn
def test_clone_and_params():
    model = ContrastiveEmbedding(output_dim=3, max_iter=5, conditional="time")
    params = model.get_params()
    assert params["output_dim"] == 3 and params["conditional"] == "time"
    assert set(params) >= {"hybrid_dims", "time_offset", "similarity", "random_state"}
    model.set_params(output_dim=5, temperature=0.2)
    assert model.output_dim == 5 and model.temperature == 0.2
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    model.fit(np.random.default_rng(0).poisson(1.0, (200, 6)).astype(np.float32))
    assert model.transform(np.ones((30, 6), dtype=np.float32)).shape == (30, 5)
    with pytest.raises(NotFittedError):
        clone(model).transform(np.ones((30, 6)))


def test_pipeline_and_grid_search(place):
    X, pos, cut = place
    X, y = X[:3000], pos[:3000, 0]
    pipe = make_pipeline(
        ContrastiveEmbedding(conditional="time_delta", max_iter=60, **FAST),
        KNeighborsRegressor(n_neighbors=10),
    )
    pipe.fit(X[:2400], y[:2400])
    assert pipe.predict(X[2400:]).shape == (600,)
    assert pipe.score(X[2400:], y[2400:]) > 0.6

    grid = GridSearchCV(
        make_pipeline(
            ContrastiveEmbedding(conditional="time_delta", max_iter=15, **FAST),
            KNeighborsRegressor(n_neighbors=10),
        ),
        {"contrastiveembedding__output_dim": [2, 3]},
        cv=KFold(n_splits=2, shuffle=False),
    ).fit(X, y)
    assert grid.best_params_["contrastiveembedding__output_dim"] in (2, 3)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert (
        grid.best_estimator_[0].transform(X[:50]).shape[1]
        == grid.best_params_["contrastiveembedding__output_dim"]
    )


_SEEN_POSITIONS: list[np.ndarray | None] = []


class _PositionsSpy(ContrastiveEmbedding):
    """Records the positions each clone is fitted with."""

    def fit(self, X, y=None, *, positions=None, **kwargs):
        _SEEN_POSITIONS.append(None if positions is None else np.asarray(positions))
        return super().fit(X, y, positions=positions, **kwargs)


def test_cross_validate_with_contiguous_blocks(place):
    from neurodecode.data.samples import sample_positions
    from neurodecode.data.splits import ContiguousBlocks
    from neurodecode.evaluate import cross_validate

    X, pos, _ = place
    sfreq = 100.0
    start = np.arange(len(X)) / sfreq
    table = pd.DataFrame(
        {
            "recording": "sub-01_run-01",
            "subject": "01",
            "session": "01",
            "run": "01",
            "start": start,
            "stop": start + 1 / sfreq,
        }
    )
    positions = sample_positions(table, sfreq)
    np.testing.assert_array_equal(positions, np.arange(len(X)))
    pipe = Pipeline(
        [
            ("contrastiveembedding", _PositionsSpy(conditional="time_delta", max_iter=60, **FAST)),
            ("knn", KNeighborsRegressor(n_neighbors=10)),
        ]
    )
    _SEEN_POSITIONS.clear()
    result = cross_validate(
        pipe,
        X,
        pos[:, 0],
        table,
        ContiguousBlocks(n_blocks=3, gap=0.5),
        metrics=("r2",),
        n_permutations=0,
        fit_params={"contrastiveembedding__positions": positions},
    )
    scores = result.folds["score"].to_numpy()
    assert len(scores) == 3 and np.all(np.isfinite(scores))
    assert scores.mean() > 0.6, scores
    # each fold's training rows reached the estimator with their positions: the middle fold
    # trains on two blocks separated by the cut-out test block (one jump)
    jumps = [int(np.sum(np.diff(p) != 1)) for p in _SEEN_POSITIONS]
    assert jumps == [0, 1, 0]
    assert all(len(p) < 4000 for p in _SEEN_POSITIONS)


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip(place, trained, tmp_path):
    X, pos, cut = place
    path = trained.save(tmp_path / "model.pt")
    assert path.exists() and not list(tmp_path.glob("*.partial"))
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and raw["params"]["output_dim"] == 4
    loaded = ContrastiveEmbedding.load(path)
    np.testing.assert_array_equal(loaded.transform(X[cut:]), trained.transform(X[cut:]))
    assert loaded.get_params() == trained.get_params()
    assert loaded.log_.keys() == trained.log_.keys()
    for key, values in trained.log_.items():
        np.testing.assert_allclose(loaded.log_[key], values, rtol=1e-7)
    assert loaded.goodness_of_fit_ == pytest.approx(trained.goodness_of_fit_)
    assert loaded.n_sessions_ == 1 and loaded.n_features_in_ == X.shape[1]
    assert loaded.score(X[cut:], pos[cut:]) == pytest.approx(trained.score(X[cut:], pos[cut:]))

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a saved"):
        ContrastiveEmbedding.load(other)


def test_multi_session_round_trip(tmp_path):
    X1, y1 = place_cells(2500, 20, seed=1)
    X2, y2 = place_cells(3000, 27, seed=2)
    model = ContrastiveEmbedding(conditional="time_delta", max_iter=20, **FAST)
    z1, z2 = model.fit_transform([X1, X2], [y1, y2])
    assert model.n_sessions_ == 2 and model.encoder_.n_inputs == [20, 27]
    assert z1.shape == (2500, 4) and z2.shape == (3000, 4)
    loaded = ContrastiveEmbedding.load(model.save(tmp_path / "multi.pt"))
    assert loaded.encoder_.n_inputs == [20, 27] and loaded.n_sessions_ == 2
    np.testing.assert_array_equal(loaded.transform(X1, session=0), z1)
    np.testing.assert_array_equal(loaded.transform(X2, session=1), z2)
    with pytest.raises(ValueError, match="X has 27 features, but ContrastiveEmbedding is "
                                         "expecting 20 features"):
        loaded.transform(X2, session=0)
    with pytest.raises(ValueError, match="X has 20 features .* session 1 .* expecting 27"):
        loaded.transform(X1, session=1)
    assert model.goodness_of_fit_ == pytest.approx(
        goodness_of_fit_bits(np.mean(model.log_["loss"][-10:]), 256, 2)
    )


# --------------------------------------------------------------------------- inputs
def test_recording_and_store_inputs(sim_recording, tmp_path):
    from neurodecode.store import write_recording

    rec = sim_recording
    kw = dict(conditional="time_delta", max_iter=20, **{**FAST, "batch_size": 128})
    from_rec = ContrastiveEmbedding(**kw).fit(rec, y="position")
    signal = np.asarray(rec["signal"].values)
    from_array = ContrastiveEmbedding(**kw).fit(signal, np.asarray(rec["behavior_position"]))
    z = from_rec.transform(rec)
    assert z.shape == (rec.sizes["time"], 4)
    np.testing.assert_allclose(from_array.transform(signal), z, atol=1e-6)

    path = write_recording(rec, tmp_path / "sub-01.zarr").path
    from_store = ContrastiveEmbedding(**kw).fit(path, y="position")
    np.testing.assert_allclose(from_store.transform(path), z, atol=1e-6)
    np.testing.assert_allclose(from_store.transform(str(path)), z, atol=1e-6)
    assert from_store.score(path, "position") == pytest.approx(from_rec.score(rec, "position"))

    with pytest.raises(KeyError, match="no behaviour"):
        ContrastiveEmbedding(**kw).fit(rec, y="heading")
    with pytest.raises(TypeError, match="recording"):
        ContrastiveEmbedding(**kw).fit(signal, y="position")


@pytest.fixture(scope="module")
def random_encoder(place):
    X = place[0]
    return ContrastiveEmbedding(conditional="time", max_iter=0, output_dim=4).fit(X[:500])


def test_transform_with_positions_splits_segments(place, random_encoder):
    X = place[0][:700]
    model = random_encoder
    k = 300
    positions = np.r_[np.arange(k), np.arange(k + 100, k + 100 + len(X) - k)]
    joined = model.transform(X, positions=positions)
    separate = np.vstack([model.transform(X[:k]), model.transform(X[k:])])
    np.testing.assert_allclose(joined, separate, atol=1e-6)
    plain = model.transform(X)
    assert not np.allclose(plain[k - 3 : k + 3], joined[k - 3 : k + 3])
    np.testing.assert_allclose(plain[: k - 5], joined[: k - 5], atol=1e-6)
    with pytest.raises(ValueError, match="positions"):
        model.transform(X, positions=positions[:-1])


def test_transform_chunks_and_edge_padding(place, random_encoder):
    X = place[0][:500]
    model = random_encoder
    whole = model.transform(X, batch_size=None)
    for bs in (1, 7, 64, 499):
        np.testing.assert_allclose(model.transform(X, batch_size=bs), whole, atol=1e-6)
    enc = model.encoder_
    idx = np.clip(np.arange(-enc.left, enc.right), 0, len(X) - 1)
    first = enc(torch.from_numpy(X[idx][None])).numpy()[0]
    np.testing.assert_allclose(whole[0], first, atol=1e-6)
    idx = np.clip(np.arange(len(X) - 1 - enc.left, len(X) - 1 + enc.right), 0, len(X) - 1)
    last = enc(torch.from_numpy(X[idx][None])).numpy()[0]
    np.testing.assert_allclose(whole[-1], last, atol=1e-6)


def test_fit_respects_positions():
    rng = np.random.default_rng(11)
    X = rng.poisson(1.0, (400, 5)).astype(np.float32)
    short_runs = np.arange(400) + (np.arange(400) // 8) * 3  # a jump every 8 samples
    with pytest.raises(ValueError, match="too short"):
        ContrastiveEmbedding(conditional="time", max_iter=1).fit(X, positions=short_runs)
    runs = np.arange(400) + (np.arange(400) // 100) * 3  # 4 runs of 100 samples
    model = ContrastiveEmbedding(conditional="time", max_iter=2, batch_size=32).fit(
        X, positions=runs
    )
    assert len(model.log_["loss"]) == 2
    with pytest.raises(ValueError, match="positions"):
        ContrastiveEmbedding(conditional="time", max_iter=1).fit(X, positions=runs[:-1])


@pytest.mark.parametrize(
    ("conditional", "similarity", "dims"),
    [("delta", "cosine", 1), ("time_delta", "euclidean", 2), ("delta", "euclidean", 3)],
)
def test_other_conditionals_and_similarities(place, conditional, similarity, dims):
    X, pos, _ = place
    y = np.hstack([pos[:1000]] * dims) + np.arange(dims)
    model = ContrastiveEmbedding(
        conditional=conditional,
        similarity=similarity,
        max_iter=5,
        delta=0.05,
        **{**FAST, "batch_size": 64},
    ).fit(X[:1000], y)
    z = model.transform(X[:300])
    assert z.shape == (300, 4) and np.all(np.isfinite(z))
    norms = np.linalg.norm(z, axis=1)
    if similarity == "cosine":
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
        assert np.ptp(norms) > 1e-3
    assert len(model.log_["loss"]) == 5 and np.all(np.isfinite(model.log_["loss"]))


def test_fit_is_deterministic(place):
    X, pos, _ = place
    kw = dict(conditional="time_delta", max_iter=10, **{**FAST, "batch_size": 64})
    a = ContrastiveEmbedding(**kw).fit(X[:1000], pos[:1000])
    b = ContrastiveEmbedding(**kw).fit(X[:1000], pos[:1000])
    c = ContrastiveEmbedding(**{**kw, "random_state": 1}).fit(X[:1000], pos[:1000])
    np.testing.assert_array_equal(a.transform(X[:200]), b.transform(X[:200]))
    assert a.log_["loss"] == b.log_["loss"]
    assert not np.allclose(a.transform(X[:200]), c.transform(X[:200]))


# --------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors(place, random_encoder):
    X, pos, _ = place
    X, y = X[:600], pos[:600]
    kw = dict(max_iter=0)
    bad = X.copy()
    bad[10, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ContrastiveEmbedding(**kw).fit(bad, y)
    with pytest.raises(ValueError, match="needs labels"):
        ContrastiveEmbedding(conditional="time_delta", **kw).fit(X)
    with pytest.raises(ValueError, match="discrete"):
        ContrastiveEmbedding(conditional="time_delta", **kw).fit(
            X, np.where(y[:, 0] > 0.5, "a", "b")
        )
    with pytest.raises(ValueError, match="NaN"):
        ContrastiveEmbedding(conditional="time_delta", **kw).fit(X, np.where(y > 0.9, np.nan, y))
    with pytest.raises(ValueError, match="labels"):
        ContrastiveEmbedding(conditional="time_delta", **kw).fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has 20 features, but ContrastiveEmbedding is "
                                         f"expecting {X.shape[1]} features"):
        random_encoder.transform(X[:, :20])
    with pytest.raises(ValueError, match="does not exist"):
        random_encoder.transform(X, session=1)
    with pytest.raises(ValueError, match="does not exist"):
        random_encoder.transform(X, session=-1)
    with pytest.raises(TypeError, match="one session"):
        random_encoder.transform([X, X])
    with pytest.raises(ValueError, match="conditional must be one of"):
        ContrastiveEmbedding(conditional="behaviour", **kw).fit(X, y)
    with pytest.raises(ValueError, match="hybrid"):
        ContrastiveEmbedding(conditional="discrete", hybrid=True, **kw).fit(X, y[:, 0] > 0.5)
    with pytest.raises(ValueError, match="too short"):
        ContrastiveEmbedding(conditional="time", **kw).fit(X[:8])
    with pytest.raises(ValueError, match="too short"):
        ContrastiveEmbedding(conditional="time", receptive_field=20, **kw).fit(X[:15])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        ContrastiveEmbedding(conditional="time", **kw).fit(X[:, 0])
    with pytest.raises(ValueError, match="output_dim"):
        ContrastiveEmbedding(output_dim=0, **kw).fit(X, y)
    with pytest.raises(ValueError, match="same length"):
        ContrastiveEmbedding(**kw).fit([X, X], y)
    with pytest.raises(NotFittedError):
        ContrastiveEmbedding().transform(X)


# --------------------------------------------------------------------------- cebra parameters
def test_from_cebra_params():
    model = ContrastiveEmbedding.from_cebra_params(
        model_architecture="offset10-model-mse",
        temperature_mode="auto",
        temperature=0.5,
        min_temperature=0.05,
        output_dimension=3,
        num_hidden_units=16,
        batch_size=128,
        max_iterations=50,
        learning_rate=1e-3,
        conditional="time_delta",
        time_offsets=[1, 5],
        device="cuda_if_available",
        verbose=False,
    )
    p = model.get_params()
    assert p["similarity"] == "euclidean" and p["receptive_field"] == 10
    assert p["learnable_temperature"] is True and p["temperature"] == 0.5
    assert p["min_temperature"] == 0.05 and p["output_dim"] == 3 and p["hidden_dim"] == 16
    assert p["batch_size"] == 128 and p["max_iter"] == 50 and p["learning_rate"] == 1e-3
    assert p["time_offset"] == 5 and p["device"] == "auto"

    cosine = ContrastiveEmbedding.from_cebra_params(
        model_architecture="offset5-model", temperature_mode="constant", conditional="delta_normal"
    )
    assert cosine.similarity == "cosine" and cosine.receptive_field == 5
    assert cosine.learnable_temperature is False and cosine.conditional == "delta"
    assert ContrastiveEmbedding.from_cebra_params(distance="euclidean").similarity == "euclidean"

    with pytest.raises(TypeError, match="max_adapt_iterations"):
        ContrastiveEmbedding.from_cebra_params(max_adapt_iterations=10)
    with pytest.raises(TypeError, match="model_architecture"):
        ContrastiveEmbedding.from_cebra_params(model_architecture="supervised-model")
