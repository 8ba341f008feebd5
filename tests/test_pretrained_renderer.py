"""The pretrained unCLIP renderer, on a tiny random pipeline saved to disk and loaded offline."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch

from neurodecode.models.vision.pretrained import PretrainedRenderer, save_tiny_unclip_pipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random StableUnCLIPImg2ImgPipeline folder (embedding width 32, 32 px)."""
    return save_tiny_unclip_pipeline(tmp_path_factory.mktemp("unclip") / "tiny", seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Another tiny pipeline: embedding width 16, 16 px."""
    return save_tiny_unclip_pipeline(tmp_path_factory.mktemp("unclip16") / "small",
                                     image_size=16, embed_dim=16, seed=1)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No hub: offline flags, an empty cache in tmp_path, and every socket connection refused."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return cache


@pytest.fixture()
def renderer(tiny, offline):
    return PretrainedRenderer.from_folder(tiny)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_saved_folder_is_an_unclip_pipeline(tiny):
    index = json.loads((tiny / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    for part in ("image_encoder", "image_normalizer", "image_noising_scheduler", "tokenizer",
                 "text_encoder", "unet", "scheduler", "vae", "feature_extractor"):
        assert (tiny / part).is_dir(), part
    unet = json.loads((tiny / "unet" / "config.json").read_text())
    assert unet["class_embed_type"] == "projection"
    assert unet["projection_class_embeddings_input_dim"] == 64


def test_loads_offline_and_renders(renderer, offline, tiny):
    from transformers import CLIPVisionModelWithProjection

    assert renderer.embed_dim == 32 and renderer.image_size == 32
    assert renderer.image_encoder_path == tiny / "image_encoder"
    vision = CLIPVisionModelWithProjection.from_pretrained(renderer.image_encoder_path,
                                                           local_files_only=True)
    assert vision.config.projection_dim == renderer.embed_dim
    out = renderer.render(torch.randn(2, 32, generator=_gen(0)), steps=4, generator=_gen(0))
    assert out.images.shape == (2, 3, 32, 32) and out.images.dtype == torch.float32
    assert 0.0 <= float(out.images.min()) and float(out.images.max()) <= 1.0
    assert float(out.images.std()) > 0.01
    assert out.steps == 4 and out.unet_evals_per_image == 4 and out.seconds > 0
    assert not any(offline.rglob("*"))  # nothing cached from a hub


def test_seeded_renders_are_deterministic_and_embeds_matter(renderer):
    embeds = torch.randn(2, 32, generator=_gen(1))
    a = renderer.render(embeds, steps=3, generator=_gen(5)).images
    b = renderer.render(embeds, steps=3, generator=_gen(5)).images
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    other_seed = renderer.render(embeds, steps=3, generator=_gen(6)).images
    assert (a - other_seed).abs().mean() > 1e-2
    other_embeds = renderer.render(torch.randn(2, 32, generator=_gen(2)), steps=3,
                                   generator=_gen(5)).images
    assert (a - other_embeds).abs().mean() > 1e-3
    prompted = renderer.render(embeds, steps=3, generator=_gen(5), prompt="a red cat").images
    assert (a - prompted).abs().mean() > 1e-3


def test_unet_evaluations_are_counted_per_image(renderer):
    embeds = torch.randn(3, 32, generator=_gen(3))
    assert renderer.render(embeds, steps=5, generator=_gen(0)).unet_evals_per_image == 5
    guided = renderer.render(embeds, steps=4, guidance_scale=3.0, generator=_gen(0))
    assert guided.unet_evals_per_image == 8 and guided.steps == 4
    noised = renderer.render(embeds, steps=2, noise_level=500, generator=_gen(0))
    assert noised.unet_evals_per_image == 2


def test_too_many_unet_evaluations_are_refused(renderer):
    embeds = torch.randn(1, 32, generator=_gen(4))
    with pytest.raises(ValueError, match="21 UNet evaluations.*max_unet_evals = 20"):
        renderer.render(embeds, steps=21)
    with pytest.raises(ValueError, match="22 UNet evaluations"):
        renderer.render(embeds, steps=11, guidance_scale=2.0)
    with pytest.raises(ValueError, match="6 UNet evaluations.*max_unet_evals = 5"):
        renderer.render(embeds, steps=3, guidance_scale=2.0, max_unet_evals=5)
    out = renderer.render(embeds, steps=3, guidance_scale=2.0, max_unet_evals=6)
    assert out.unet_evals_per_image == 6


def test_a_scheduler_with_two_evaluations_per_step_is_counted_and_stopped(renderer):
    from diffusers import HeunDiscreteScheduler

    pipe = renderer.pipeline
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    embeds = torch.randn(2, 32, generator=_gen(5))
    assert renderer.render(embeds, steps=3, generator=_gen(0)).unet_evals_per_image == 5
    with pytest.raises(ValueError, match="HeunDiscreteScheduler.*max_unet_evals"):
        renderer.render(embeds, steps=3, generator=_gen(0), max_unet_evals=4)


@pytest.mark.parametrize("embeds, match", [
    (torch.zeros(2, 31), r"\(n, 32\)"),
    (torch.zeros(32), r"\(n, 32\)"),
    (torch.zeros(0, 32), r"\(n, 32\)"),
    (torch.full((1, 32), float("nan")), "NaN"),
])
def test_bad_embeddings_are_refused(renderer, embeds, match):
    with pytest.raises(ValueError, match=match):
        renderer.render(embeds, steps=1)


def test_bad_settings_are_refused(renderer):
    embeds = torch.zeros(1, 32)
    with pytest.raises(ValueError, match="steps"):
        renderer.render(embeds, steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        renderer.render(embeds, steps=1, guidance_scale=0.5)
    with pytest.raises(ValueError, match="noise_level"):
        renderer.render(embeds, steps=1, noise_level=1000)


def test_other_sizes(small, offline):
    rend = PretrainedRenderer.from_folder(str(small))
    assert rend.embed_dim == 16 and rend.image_size == 16
    out = rend.render(torch.randn(2, 16, generator=_gen(0)), steps=2, generator=_gen(0))
    assert out.images.shape == (2, 3, 16, 16)


def test_missing_folder_or_index(tmp_path, offline):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"{missing}.*does not exist"):
        PretrainedRenderer.from_folder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*no model_index.json"):
        PretrainedRenderer.from_folder(empty)


def test_a_pipeline_of_another_class_is_refused(tmp_path, offline):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    folder = tmp_path / "ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    with pytest.raises(ValueError, match=f"{folder}.*'DDPMPipeline'.*StableUnCLIPImg2Img"):
        PretrainedRenderer.from_folder(folder)


def test_broken_or_inconsistent_pipelines_are_refused(tiny, small, tmp_path, offline):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match=f"cannot load the pipeline in '{broken}'"):
        PretrainedRenderer.from_folder(broken)
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny, mixed)
    shutil.rmtree(mixed / "image_encoder")
    shutil.copytree(small / "image_encoder", mixed / "image_encoder")
    with pytest.raises(ValueError, match="embedding_dim 32 disagrees.*projection_dim': 16"):
        PretrainedRenderer.from_folder(mixed)


def test_tiny_pipeline_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        save_tiny_unclip_pipeline(tmp_path / "a", image_size=12)
    with pytest.raises(ValueError, match="embed_dim"):
        save_tiny_unclip_pipeline(tmp_path / "b", embed_dim=1)


def test_the_pipeline_image_encoder_gives_the_embeddings_it_renders(renderer):
    import numpy as np

    from neurodecode.models.vision.encoders import PretrainedImageEncoder

    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    encoder = PretrainedImageEncoder(renderer.image_encoder_path).fit(images)
    embeds = encoder.embed(images)
    assert tuple(embeds.shape) == (3, renderer.embed_dim)
    assert renderer.render(embeds, steps=2, generator=_gen(0)).images.shape == (3, 3, 32, 32)
    tokens = encoder.encode(images)  # hidden states (width 48), not the projected embedding
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        renderer.render(tokens[:, 0], steps=1)
