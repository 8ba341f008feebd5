"""Backbones and heads of the cross-subject models: building, shapes, learning, losses, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.models import registry
from neurodecode.models.backbones import Backbone, TemporalConv, TimeTransformer
from neurodecode.models.heads import (
    ContrastiveHead,
    Head,
    info_nce_loss,
    soft_clip_loss,
    top1_retrieval,
)

LATENT = 4

#: Small configurations of every backbone (several variants each).
BACKBONES = {
    "mlp": ("residual_mlp", {"hidden": 32, "n_blocks": 2, "dropout": 0.1}),
    "mlp_pooled": ("residual_mlp", {"hidden": 16, "n_blocks": 1, "pool_time": True}),
    "conv_power": ("temporal_conv", {"n_filters": 8, "kernel_size": 25, "dropout": 0.2}),
    "conv_elu_deep": ("temporal_conv", {"n_filters": 6, "kernel_size": 7, "pool_size": 4,
                                        "pool_stride": 2, "nonlinearity": "elu", "depth": 2,
                                        "n_pool_out": 3}),
    "transformer_cls": ("transformer", {"d_model": 16, "n_heads": 2, "n_layers": 2, "patch": 10}),
    "transformer_mean": ("transformer", {"d_model": 12, "n_heads": 3, "n_layers": 1, "patch": 7,
                                         "pool": "mean", "positional": "sinusoidal"}),
}

#: Backbones small enough to overfit in 100 steps, without dropout.
FAST_BACKBONES = {
    "residual_mlp": {"hidden": 32, "n_blocks": 1, "dropout": 0.0},
    "temporal_conv": {"n_filters": 8, "kernel_size": 5, "pool_size": 4, "pool_stride": 2,
                      "dropout": 0.0},
    "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "patch": 4, "dropout": 0.0},
}

HEADS = {
    "classify": {"dropout": 0.0},
    "regress": {},
    "contrastive": {"hidden": 32, "temperature": 0.1},
}


def build_backbone(key: str, n_times: int) -> Backbone:
    name, params = BACKBONES[key]
    return registry.build("backbone", name, params, in_features=LATENT, n_times=n_times)


# --- registry ----------------------------------------------------------------------------------


def test_builtin_parts_are_registered():
    assert {"residual_mlp", "temporal_conv", "transformer"} <= set(registry.available("backbone"))
    assert {"classify", "regress", "contrastive"} <= set(registry.available("head"))


@pytest.mark.parametrize("key", sorted(BACKBONES))
def test_backbone_builds_from_dict(key):
    name, params = BACKBONES[key]
    model = registry.build("backbone", name, params, in_features=LATENT, n_times=50)
    assert isinstance(model, Backbone)
    assert type(model) is registry.get("backbone", name)
    assert model.part_name == name
    for field, value in params.items():
        assert getattr(model.params, field) == value
    assert model.out_features >= 1


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_builds_from_dict(name):
    head = registry.build("head", name, HEADS[name], in_features=8, n_outputs=3)
    assert isinstance(head, Head)
    assert head.task in {"classify", "regress", "embed"}
    assert head.metric in {"balanced_accuracy", "r2", "top1_retrieval"}
    assert head(torch.randn(5, 8)).shape == (5, 3)


@pytest.mark.parametrize(("kind", "name"), [("backbone", "residual_mlp"),
                                            ("backbone", "temporal_conv"),
                                            ("backbone", "transformer"), ("head", "classify"),
                                            ("head", "regress"), ("head", "contrastive")])
def test_unknown_parameter_is_named(kind, name):
    context = ({"in_features": LATENT, "n_times": 10} if kind == "backbone"
               else {"in_features": 8, "n_outputs": 2})
    with pytest.raises(ValueError, match=r"n_hiden: unknown parameter.*valid parameters"):
        registry.build(kind, name, {"n_hiden": 3}, **context)


@pytest.mark.parametrize(("kind", "name", "params", "message"), [
    ("backbone", "transformer", {"d_model": 30, "n_heads": 4}, "multiple of n_heads"),
    ("backbone", "temporal_conv", {"nonlinearity": "relu"}, "nonlinearity"),
    ("backbone", "residual_mlp", {"dropout": 1.5}, "dropout"),
    ("head", "contrastive", {"contrastive_weight": 0, "mse_weight": 0}, "both be 0"),
    ("head", "regress", {"loss": "l1"}, "loss"),
])
def test_bad_parameter_values_fail_validation(kind, name, params, message):
    with pytest.raises(ValueError, match=message):
        registry.validate(kind, name, params)


# --- backbone shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_times", [1, 2, 321])
@pytest.mark.parametrize("key", sorted(BACKBONES))
def test_backbone_output_shape(key, n_times):
    torch.manual_seed(0)
    model = build_backbone(key, n_times)
    z = torch.randn(3, n_times, LATENT)
    for training in (True, False):
        model.train(training)
        out = model(z)
        assert out.shape == (3, model.out_features)
        assert torch.isfinite(out).all()


def test_temporal_conv_clips_kernels_and_pools():
    model = build_backbone("conv_elu_deep", 1)
    assert model.kernel_sizes == [1, 1] and model.pool_sizes == [1, 1]
    assert model.out_features == 6 * 3
    model = registry.build("backbone", "temporal_conv", {}, in_features=LATENT, n_times=321)
    assert model.kernel_sizes == [25] and model.pool_sizes == [15]
    assert model.out_features == 40 * 4
    model = registry.build("backbone", "temporal_conv", {}, in_features=LATENT, n_times=30)
    assert model.kernel_sizes == [25] and model.pool_sizes == [6]  # 30 - 25 + 1 = 6 steps left


def test_transformer_patches_cover_every_step():
    model = build_backbone("transformer_cls", 321)
    assert (model.patch, model.n_patches) == (10, 33)
    assert build_backbone("transformer_cls", 2).patch == 2
    model.eval()
    z = torch.randn(2, 321, LATENT)
    changed = z.clone()
    changed[:, -1] += 10.0  # the last step lies in the zero-padded patch
    assert not torch.allclose(model(z), model(changed))
    assert model(z[:, :100]).shape == (2, 16)  # shorter samples use the first positions
    with pytest.raises(ValueError, match="at most 321"):
        model(torch.randn(2, 322, LATENT))


def test_backbones_reject_bad_shapes():
    with pytest.raises(ValueError, match="built for 5 time steps"):
        build_backbone("mlp", 5)(torch.randn(2, 6, LATENT))
    assert build_backbone("mlp_pooled", 5)(torch.randn(2, 9, LATENT)).shape == (2, 16)
    with pytest.raises(ValueError, match="built for 20 time steps"):
        build_backbone("conv_power", 20)(torch.randn(2, 10, LATENT))
    with pytest.raises(ValueError, match=r"expects \(batch, time, 4\)"):
        build_backbone("transformer_cls", 20)(torch.randn(2, 20, LATENT + 1))


def test_transformer_attention_calls_sdpa(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append(q.shape)
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = build_backbone("transformer_cls", 45)  # 2 layers, d_model 16, 2 heads, patch 10
    model(torch.randn(3, 45, LATENT))
    # one call per layer: (batch, heads, CLS + ceil(45 / 10) patches, head_dim)
    assert calls == [torch.Size([3, 2, 6, 8])] * 2
    with torch.no_grad():
        # the attention is SDPA: the transformer's output depends on it
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                            lambda q, k, v, *a, **kw: torch.zeros_like(v))
        model.eval()
        zeroed = model(torch.ones(1, 45, LATENT))
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", real)
        assert not torch.allclose(zeroed, model(torch.ones(1, 45, LATENT)))


def test_sinusoidal_positions_are_fixed():
    model = build_backbone("transformer_mean", 30)
    names = {name for name, _ in model.named_parameters()}
    assert "position" not in names and "cls" not in names
    assert model.position.shape == (1, 5, 12)
    assert torch.allclose(model.position[0, 0, 1::2], torch.ones(6))  # cos(0) = 1


# --- learning ----------------------------------------------------------------------------------


def _problem(head: str, n: int = 32, n_times: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_times, LATENT, generator=gen)
    if head == "classify":
        y = torch.arange(n) % 2
        x[y == 1, :, 0] += 1.5
        return x, y, 2
    if head == "regress":
        w = torch.randn(LATENT, 2, generator=gen)
        return x, x.mean(dim=1) @ w * 3, 2
    return x, torch.randn(n, 8, generator=gen), 8


@pytest.mark.parametrize("head_name", sorted(HEADS))
@pytest.mark.parametrize("backbone_name", sorted(FAST_BACKBONES))
def test_backbone_and_head_overfit_a_tiny_problem(backbone_name, head_name):
    torch.manual_seed(0)
    x, y, n_outputs = _problem(head_name)
    backbone = registry.build("backbone", backbone_name, FAST_BACKBONES[backbone_name],
                              in_features=LATENT, n_times=x.shape[1])
    head = registry.build("head", head_name, HEADS[head_name],
                          in_features=backbone.out_features, n_outputs=n_outputs)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = head.loss(head(backbone(x)), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    backbone.eval()
    head.eval()
    with torch.no_grad():
        output = head(backbone(x))
    score = head.score(output, y)
    if head_name == "classify":
        assert score == 1.0
        assert losses[-1] < 0.05 * losses[0]
    elif head_name == "regress":
        assert score > 0.95
        assert losses[-1] < 0.05 * losses[0]
    else:
        assert score == 1.0
        assert losses[-1] < 0.5 * losses[0]


# --- heads -------------------------------------------------------------------------------------


def test_classify_predict_score_and_smoothing():
    head = registry.build("head", "classify", {}, in_features=3, n_outputs=3)
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    pred = head.predict(logits)
    assert pred.dtype == np.int64 and pred.tolist() == [0, 0, 0, 1]
    # majority guess on an imbalanced set: accuracy 0.75, balanced accuracy 0.5
    assert head.score(logits, torch.tensor([0, 0, 0, 1])) == 1.0
    assert head.score(torch.tensor([[5.0, 0, 0]] * 4), torch.tensor([0, 0, 0, 1])) == 0.5
    smooth = registry.build("head", "classify", {"label_smoothing": 0.2}, in_features=3,
                            n_outputs=3)
    target = torch.tensor([0, 0, 0, 1])
    assert float(smooth.loss(logits, target)) > float(head.loss(logits, target)) + 0.1
    with pytest.raises(ValueError, match="n_outputs >= 2"):
        registry.build("head", "classify", {}, in_features=3, n_outputs=1)


def test_regress_score_and_huber():
    head = registry.build("head", "regress", {}, in_features=2, n_outputs=2)
    target = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]])
    assert head.score(target, target) == pytest.approx(1.0)
    mean = target.mean(dim=0).expand_as(target)
    assert head.score(mean, target) == pytest.approx(0.0)
    # R² averaged over outputs: output 0 perfect, output 1 the mean
    assert head.score(torch.stack([target[:, 0], mean[:, 1]], 1), target) == pytest.approx(0.5)
    huber = registry.build("head", "regress", {"loss": "huber", "huber_delta": 1.0},
                           in_features=2, n_outputs=2)
    far = target + 10.0
    assert float(head.loss(far, target)) == pytest.approx(100.0)
    assert float(huber.loss(far, target)) == pytest.approx(9.5)
    one = registry.build("head", "regress", {}, in_features=2, n_outputs=1)
    assert float(one.loss(torch.zeros(3, 1), torch.ones(3))) == pytest.approx(1.0)


def test_contrastive_losses_prefer_matching_targets():
    gen = torch.Generator().manual_seed(0)
    pred = torch.nn.functional.normalize(torch.randn(16, 10, generator=gen), dim=-1)
    shuffled = pred[torch.roll(torch.arange(16), 1)]
    for loss in (soft_clip_loss, info_nce_loss):
        matched, wrong = float(loss(pred, pred, 0.1)), float(loss(pred, shuffled, 0.1))
        assert matched < wrong - 1.0, loss.__name__
    # SoftCLIP with targets equal to predictions reaches its minimum, the soft labels' entropy
    soft = torch.softmax(pred @ pred.T / 0.1, dim=-1)
    entropy = float(-(soft * soft.log()).sum(-1).mean())
    assert entropy > 0.05
    assert float(soft_clip_loss(pred, pred, 0.1)) == pytest.approx(entropy, rel=1e-4)
    assert float(soft_clip_loss(pred, pred, 0.1)) > float(info_nce_loss(pred, pred, 0.1)) + 0.05
    noisy = pred + 0.3 * torch.randn(16, 10, generator=gen)
    assert float(soft_clip_loss(noisy, pred, 0.1)) > float(soft_clip_loss(pred, pred, 0.1))
    # the losses compare directions only: scaling the predictions changes nothing
    assert float(info_nce_loss(3 * pred, pred, 0.1)) == pytest.approx(
        float(info_nce_loss(pred, pred, 0.1)), rel=1e-5)


def test_contrastive_head_loss_terms():
    torch.manual_seed(0)
    output, target = torch.randn(6, 5), torch.randn(6, 5)
    both = registry.build("head", "contrastive", {"soft": False, "mse_weight": 2.0},
                          in_features=3, n_outputs=5)
    expected = 2.0 * torch.nn.functional.mse_loss(output, target) + info_nce_loss(
        output, target, 0.125)
    assert float(both.loss(output, target)) == pytest.approx(float(expected), rel=1e-5)
    soft_only = registry.build("head", "contrastive", {"mse_weight": 0.0},
                               in_features=3, n_outputs=5)
    assert float(soft_only.loss(output, target)) == pytest.approx(
        float(soft_clip_loss(output, target, 0.125)), rel=1e-5)
    with pytest.raises(ValueError, match="embeddings"):
        both.loss(output, target[:, :4])


@pytest.mark.parametrize("params", [{}, {"soft": False}, {"mse_weight": 0.0},
                                    {"learnable_temperature": True}])
def test_contrastive_batch_of_one(params):
    head = registry.build("head", "contrastive", params, in_features=4, n_outputs=3)
    features = torch.randn(1, 4, requires_grad=True)
    target = torch.randn(1, 3)
    loss = head.loss(head(features), target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    expected = params.get("mse_weight", 1.0) * torch.nn.functional.mse_loss(head(features), target)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    loss.backward()
    assert features.grad is not None
    with pytest.raises(ValueError, match="at least 2"):
        info_nce_loss(torch.randn(1, 3), torch.randn(1, 3))


def test_learnable_temperature_is_trained():
    head = registry.build("head", "contrastive", {"learnable_temperature": True,
                                                  "temperature": 0.5}, in_features=4, n_outputs=3)
    assert float(head.temperature.detach()) == pytest.approx(0.5)
    head.loss(head(torch.randn(8, 4)), torch.randn(8, 3)).backward()
    assert head.log_logit_scale.grad is not None and float(head.log_logit_scale.grad) != 0
    fixed = registry.build("head", "contrastive", {}, in_features=4, n_outputs=3)
    assert "log_logit_scale" not in dict(fixed.named_parameters())


def test_top1_retrieval():
    rng = np.random.default_rng(1)
    target = rng.standard_normal((20, 8))
    assert top1_retrieval(target, target) == 1.0
    assert top1_retrieval(np.roll(target, 1, axis=0), target) == 0.0
    assert top1_retrieval(rng.standard_normal((20, 8)), target) < 0.5
    # a stimulus shown twice: retrieving either copy is correct
    repeated = np.concatenate([target[:5], target[:5]])
    assert top1_retrieval(repeated + 1e-3 * rng.standard_normal((10, 8)), repeated) == 1.0
    head = registry.build("head", "contrastive", {}, in_features=4, n_outputs=8)
    assert head.score(torch.as_tensor(target), torch.as_tensor(target)) == 1.0
    prediction = head.predict(torch.as_tensor(target, dtype=torch.float32))
    assert prediction.dtype == np.float32 and prediction.shape == (20, 8)


# --- determinism and gradients -----------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(BACKBONES))
def test_backbones_are_deterministic_under_seed(key):
    outputs, states = [], []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_backbone(key, 40)
        z = torch.randn(4, 40, LATENT)
        outputs.append(model(z))  # training mode: dropout draws from the same seed
        states.append(model.state_dict())
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(4)
    assert not torch.equal(build_backbone(key, 40)(z), outputs[0])


@pytest.mark.parametrize("head_name", sorted(HEADS))
def test_heads_are_deterministic_under_seed(head_name):
    outputs = []
    for _ in range(2):
        torch.manual_seed(5)
        head = registry.build("head", head_name, HEADS[head_name], in_features=6, n_outputs=3)
        outputs.append(head(torch.randn(4, 6)))
    assert torch.equal(outputs[0], outputs[1])


def _targets(head_name: str, n: int) -> torch.Tensor:
    if head_name == "classify":
        return torch.arange(n) % 3
    return torch.randn(n, 3)


@pytest.mark.parametrize("key", sorted(BACKBONES))
@pytest.mark.parametrize("head_name", sorted(HEADS))
def test_gradients_reach_every_parameter(key, head_name):
    torch.manual_seed(0)
    backbone = build_backbone(key, 40)
    params = dict(HEADS[head_name])
    if head_name == "contrastive":
        params["learnable_temperature"] = True
    head = registry.build("head", head_name, params, in_features=backbone.out_features,
                          n_outputs=3)
    loss = head.loss(head(backbone(torch.randn(6, 40, LATENT))), _targets(head_name, 6))
    loss.backward()
    for part in (backbone, head):
        for name, param in part.named_parameters():
            assert param.grad is not None, f"{type(part).__name__}.{name} has no gradient"
            assert float(param.grad.abs().sum()) > 0, f"{type(part).__name__}.{name} is dead"


def test_transformer_and_conv_classes_are_the_registered_ones():
    assert registry.get("backbone", "transformer") is TimeTransformer
    assert registry.get("backbone", "temporal_conv") is TemporalConv
    assert registry.get("head", "contrastive") is ContrastiveHead
