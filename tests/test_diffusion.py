"""The conditional diffusion UNet: training, checkpoints, DPM-Solver++ sampling, CFG, img2img,
gradient guidance."""

from __future__ import annotations

import pytest
import torch

from neurodecode.models.checkpoint import atomic_save, read_payload
from neurodecode.models.vision.diffusion import (
    ConditionalDiffusion,
    DiffusionConfig,
    fit_diffusion,
)
from neurodecode.models.vision.sampling import sample, unet_evals

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 16
TINY = {"image_size": SIZE, "block_out_channels": (16, 32)}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: fast and deterministic on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_images() -> torch.Tensor:
    """Two very different images: red over blue halves, and a green checkerboard."""
    a = torch.zeros(3, SIZE, SIZE)
    a[0, :SIZE // 2] = 1.0
    a[2, SIZE // 2:] = 1.0
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    b = torch.zeros(3, SIZE, SIZE)
    b[1] = ((yy // 4 + xx // 4) % 2).float()
    b[2] = 0.3
    return torch.stack([a, b])


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained on the two images, each with its own tokens."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pair = two_images()
    ta = torch.randn(2, 8)
    tokens = torch.stack([ta, -ta])
    cfg = DiffusionConfig(**TINY, max_epochs=60, batch_size=32, lr=3e-3, ema_decay=0.99)
    model = ConditionalDiffusion(cfg, n_tokens=2, token_dim=8)
    record = fit_diffusion(model, pair.repeat(16, 1, 1, 1), tokens.repeat(16, 1, 1))
    return model, pair, tokens, record


def untrained(**overrides) -> ConditionalDiffusion:
    torch.manual_seed(0)
    return ConditionalDiffusion(DiffusionConfig(**TINY, **overrides), n_tokens=2, token_dim=8)


def test_config_defaults_and_errors():
    cfg = DiffusionConfig()
    assert cfg.blocks() == (("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                            ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    assert (cfg.steps, cfg.guidance_scale, cfg.max_unet_evals) == (10, 2.0, 20)
    with pytest.raises(ValueError, match="unknown_key"):
        DiffusionConfig(unknown_key=1)
    with pytest.raises(ValueError, match="2 blocks for 3 levels"):
        DiffusionConfig(down_block_types=("DownBlock2D", "DownBlock2D"))
    with pytest.raises(ValueError, match="not divisible"):
        DiffusionConfig(image_size=30)
    model = untrained()
    with pytest.raises(ValueError, match=r"expected \(n, 2, 8\)"):
        model.loss(torch.rand(2, 3, SIZE, SIZE), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="values outside"):
        fit_diffusion(model, torch.rand(2, 3, SIZE, SIZE) + 1, torch.randn(2, 2, 8))


def held_out_loss(model: ConditionalDiffusion, images, tokens) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(float(model.loss(images, tokens, generator=gen)) for _ in range(8)) / 8


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_lowers_the_loss(prediction_type):
    model = untrained(prediction_type=prediction_type, max_epochs=10, batch_size=16, lr=3e-3,
                      ema_decay=0.0)
    images = two_images().repeat(8, 1, 1, 1)
    tokens = torch.randn(2, 2, 8).repeat(8, 1, 1)
    before = held_out_loss(model, images, tokens)
    record = fit_diffusion(model, images, tokens, val_images=images[:4], val_tokens=tokens[:4])
    after = held_out_loss(model, images, tokens)
    assert after < 0.7 * before
    assert record.epochs == 10 and record.best_epoch is not None
    assert record.history[-1]["train_loss"] < record.history[0]["train_loss"]
    assert record.train_images_per_s == pytest.approx(16 * 10 / record.train_seconds)
    assert 0 < record.train_seconds <= record.seconds


def test_eps_of_v_prediction_is_the_noise(trained):
    model, pair, tokens, _ = trained
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(pair.shape, generator=gen)
    t = torch.tensor([300, 600])
    x_t = model.scheduler.add_noise(pair * 2 - 1, noise, t)
    with torch.no_grad():
        err = float(((model.eps(x_t, t, tokens, ema=True) - noise) ** 2).mean())
    assert err < 0.2  # trained: the converted prediction is the noise, not the velocity


def test_checkpoint_round_trip(tmp_path):
    model = untrained(ema_decay=0.9)
    tokens = torch.randn(2, 2, 8)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.update_ema()
    path = atomic_save({"format": "test.diffusion", "version": 1, "model": model.to_state()},
                       tmp_path / "diffusion.pt")
    back = ConditionalDiffusion.from_state(
        read_payload(path, "test.diffusion", 1, "diffusion checkpoint")["model"])
    x_t, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([10, 900])
    with torch.no_grad():
        for ema in (False, True):
            assert torch.equal(model.eps(x_t, t, tokens, ema=ema),
                               back.eps(x_t, t, tokens, ema=ema))
        assert not torch.equal(model.eps(x_t, t, tokens), model.eps(x_t, t, tokens, ema=True))
    assert back.config == model.config and back.ema_updates == 1
    state = model.to_state()
    state["weights"].pop("conv_in.weight")
    with pytest.raises(ValueError, match="do not fit"):
        ConditionalDiffusion.from_state(state)


def test_sample_shape_range_and_determinism():
    model = untrained()
    tokens = torch.randn(3, 2, 8)
    runs = [sample(model, tokens, steps=4, generator=torch.Generator().manual_seed(s))
            for s in (0, 0, 1)]
    x = runs[0].images
    assert x.shape == (3, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, runs[1].images)
    assert not torch.equal(x, runs[2].images)
    assert runs[0].steps == 4 and runs[0].seconds > 0


def test_unet_evaluations_are_counted_and_capped():
    model = untrained()
    tokens = torch.randn(2, 2, 8)
    assert sample(model, tokens, steps=10, guidance_scale=2.0).unet_evals_per_image == 20
    assert sample(model, tokens, steps=10, guidance_scale=1.0).unet_evals_per_image == 10
    init = torch.rand(2, 3, SIZE, SIZE)
    out = sample(model, tokens, steps=10, init=init, strength=0.3)
    assert out.unet_evals_per_image == 6 == unet_evals(10, 2.0, 0.3, True)[1]

    def never(images):
        raise AssertionError("sampling ran")

    with pytest.raises(ValueError, match="need 22 UNet evaluations"):
        sample(model, tokens, steps=11, guidance_scale=2.0, guidance=never,
               guidance_scale_region=1.0)
    with pytest.raises(ValueError, match="init of shape"):
        sample(model, tokens, init=torch.rand(2, 3, 8, 8))


def test_img2img_small_strength_stays_near_init(trained):
    model, pair, tokens, _ = trained
    init = pair.flip(0)  # each image with the other's tokens: only the init keeps it there
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    near = sample(model, tokens, init=init, strength=0.1, generator=gen())
    far = sample(model, tokens, init=init, strength=1.0, generator=gen())
    d_near = float((near.images - init).abs().mean())
    d_far = float((far.images - init).abs().mean())
    assert d_near < 0.15 and d_near < 0.4 * d_far
    assert near.unet_evals_per_image == 2 < far.unet_evals_per_image == 20


def test_lowpass_conditioning_keeps_the_reference_low_frequencies(trained):
    model, pair, tokens, _ = trained
    torch.manual_seed(1)
    ref = 0.3 + 0.4 * torch.rand(2, 3, SIZE, SIZE)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pool = lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 4)  # noqa: E731
    kept = sample(model, tokens, steps=6, lowpass=ref, lowpass_size=4, generator=gen())
    free = sample(model, tokens, steps=6, generator=gen())
    off = sample(model, tokens, steps=6, lowpass=ref, lowpass_weight=0.0, generator=gen())
    # exact before the final clamp to [0, 1], which the detail drawn on top reaches here
    kept_err = float((pool(kept.images) - pool(ref)).abs().mean())
    free_err = float((pool(free.images) - pool(ref)).abs().mean())
    assert kept_err < 0.06 and kept_err < 0.2 * free_err
    torch.testing.assert_close(off.images, free.images)  # weight 0: no conditioning at all
    assert kept.unet_evals_per_image == free.unet_evals_per_image
    with pytest.raises(ValueError, match="lowpass of shape"):
        sample(model, tokens, lowpass=ref[:1])
    with pytest.raises(ValueError, match="lowpass_size"):
        sample(model, tokens, lowpass=ref, lowpass_size=SIZE + 1)
    with pytest.raises(ValueError, match="lowpass_weight"):
        sample(model, tokens, lowpass=ref, lowpass_weight=1.5)


def redness(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1].mean(dim=(1, 2))


def test_gradient_guidance_raises_the_objective(trained):
    model, _, tokens, _ = trained
    tokens = tokens.repeat(2, 1, 1)
    plain = sample(model, tokens, generator=torch.Generator().manual_seed(0))
    guided = sample(model, tokens, generator=torch.Generator().manual_seed(0), guidance=redness,
                    guidance_scale_region=30.0)
    assert guided.unet_evals_per_image == plain.unet_evals_per_image == 20
    assert torch.all(redness(guided.images) > redness(plain.images) + 0.05)
    off = sample(model, tokens, generator=torch.Generator().manual_seed(0), guidance=redness,
                 guidance_scale_region=0.0)
    assert torch.equal(off.images, plain.images)


@pytest.mark.slow
def test_samples_follow_their_tokens(trained):
    model, pair, tokens, record = trained
    assert record.history[-1]["train_loss"] < 0.5 * record.history[0]["train_loss"]
    out = sample(model, tokens.repeat(4, 1, 1), generator=torch.Generator().manual_seed(0))
    x = out.images
    own = ((x - pair.repeat(4, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3))
    other = ((x - pair.flip(0).repeat(4, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3))
    assert torch.all(own < other)
    assert float(own.mean()) < 0.5 * float(other.mean())


def test_channels_last_and_bf16_options_match_the_plain_unet():
    plain = untrained()
    x_t, t, tokens = torch.randn(2, 3, SIZE, SIZE), torch.tensor([50, 700]), torch.randn(2, 2, 8)
    with torch.no_grad():
        ref = plain.eps(x_t, t, tokens)
        for option, tol in (({"channels_last": True}, 1e-4), ({"precision": "bf16-mixed"}, 0.1)):
            other = untrained(**option)
            other.load_state_dict(plain.state_dict())
            out = other.eps(x_t, t, tokens)
            assert out.dtype == torch.float32
            assert float((out - ref).abs().max()) < tol
