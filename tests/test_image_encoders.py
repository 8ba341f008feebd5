"""Image encoders: the trained conv encoder and a pretrained CLIP vision model from a folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from neurodecode.data.images import resize
from neurodecode.models.checkpoint import atomic_save, read_payload
from neurodecode.models.vision.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    PretrainedImageEncoder,
    TrainedImageEncoder,
    augment_views,
    load_image_encoder,
)

SMALL = dict(grid=4, dim=16, width=8, batch_size=16, lr=3e-3, val_fraction=0.125)


def shapes(n: int, *, size: int = 32, seed: int = 0) -> np.ndarray:
    """Discs and squares of random colours at random places on a tinted background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        img = np.broadcast_to(rng.uniform(0.0, 0.4, 3), (size, size, 3)).copy()
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            r = rng.uniform(0.1, 0.25) * size
            if rng.random() < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            else:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
            img[mask] = rng.uniform(0.3, 1.0, 3)
        out[i] = img
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return shapes(64)


@pytest.fixture(scope="module")
def fitted(images: np.ndarray) -> TrainedImageEncoder:
    torch.set_num_threads(1)
    return TrainedImageEncoder(max_epochs=20, patience=20, **SMALL).fit(images, seed=0)


# ---- trained encoder ------------------------------------------------------------------------


def test_trained_fits_fast_and_records(fitted: TrainedImageEncoder) -> None:
    assert fitted.fit_seconds_ < 15
    assert fitted.best_epoch_ is not None and fitted.best_epoch_ >= 0
    rows = fitted.history_
    assert {"loss", "recon_loss", "nce_loss", "val_loss"} <= set(rows[-1])
    assert rows[-1]["recon_loss"] < 0.5 * rows[0]["recon_loss"]
    assert rows[-1]["nce_loss"] < rows[0]["nce_loss"]


def test_trained_autoencoder_beats_mean_image(fitted: TrainedImageEncoder,
                                              images: np.ndarray) -> None:
    held_out = shapes(32, seed=1)  # never seen in training
    target = resize(held_out, 32)
    recon = fitted.decode(fitted.encode(held_out))
    assert recon.shape == (32, 3, 32, 32)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    mse = float(((recon - target) ** 2).mean())
    mean_image = resize(images, 32).mean(0, keepdim=True)
    baseline = float(((mean_image - target) ** 2).mean())
    assert mse < 0.75 * baseline, (mse, baseline)


def test_trained_embeddings_identify_jittered_images(fitted: TrainedImageEncoder) -> None:
    x = resize(shapes(32, seed=2), 32)
    jittered = augment_views(x, torch.Generator().manual_seed(0), shift=1, brightness=0.03,
                             contrast=0.05, noise=0.01)
    a, b = fitted.embed(x), fitted.embed(jittered)
    sim = (a @ b.T).numpy()
    same = np.diag(sim)
    other = sim[~np.eye(len(sim), dtype=bool)]
    assert same.mean() > other.mean() + 0.2
    assert (sim.argmax(axis=1) == np.arange(len(sim))).mean() >= 0.7


def test_trained_shapes_and_inputs(fitted: TrainedImageEncoder, images: np.ndarray) -> None:
    assert (fitted.n_tokens, fitted.dim, fitted.embed_dim) == (16, 16, 16)
    tokens = fitted.encode(images[:5])
    emb = fitted.embed(images[:5])
    assert tokens.shape == (5, 16, 16) and tokens.dtype == torch.float32
    assert emb.shape == (5, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    assert not tokens.requires_grad and not emb.requires_grad
    # a tensor batch, a larger image (resized) and grayscale give consistent results
    torch.testing.assert_close(fitted.encode(torch.from_numpy(images[:5]).permute(0, 3, 1, 2)),
                               tokens)
    big = np.repeat(np.repeat(images[:5], 2, axis=1), 2, axis=2)
    torch.testing.assert_close(fitted.encode(big), tokens, atol=1e-5, rtol=1e-5)
    assert fitted.embed(images[:5, :, :, 0]).shape == (5, 16)
    assert fitted.encode(images[:0]).shape == (0, 16, 16)


def test_trained_gradient_reaches_input(fitted: TrainedImageEncoder, images: np.ndarray) -> None:
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).clone().requires_grad_(True)
    fitted.embed(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x.grad = None
    fitted.encode(x).pow(2).mean().backward()
    assert x.grad.abs().sum() > 0


def test_trained_state_round_trip(fitted: TrainedImageEncoder, images: np.ndarray,
                                  tmp_path) -> None:
    state = fitted.state_dict()
    again = load_image_encoder(state)
    assert isinstance(again, TrainedImageEncoder)
    torch.testing.assert_close(again.encode(images[:8]), fitted.encode(images[:8]),
                               rtol=0, atol=0)
    path = atomic_save({"format": "test.encoder", "version": 1, "encoder": state},
                       tmp_path / "enc.pt")
    loaded = load_image_encoder(read_payload(path, "test.encoder", 1, "encoder")["encoder"])
    torch.testing.assert_close(loaded.embed(images[:8]), fitted.embed(images[:8]),
                               rtol=0, atol=0)
    tokens = fitted.encode(images[:3])
    torch.testing.assert_close(loaded.decode(tokens), fitted.decode(tokens), rtol=0, atol=0)
    assert loaded.history_ == fitted.history_ and loaded.get_params() == fitted.get_params()


def test_trained_is_deterministic_given_seed(images: np.ndarray) -> None:
    kw = dict(SMALL, max_epochs=2, val_fraction=0.0)
    a = TrainedImageEncoder(**kw).fit(images[:32], seed=3).embed(images[:4])
    b = TrainedImageEncoder(**kw).fit(images[:32], seed=3).embed(images[:4])
    c = TrainedImageEncoder(**kw).fit(images[:32], seed=4).embed(images[:4])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_trained_bad_input(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="grid"):
        TrainedImageEncoder(image_size=32, grid=5)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainedImageEncoder(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainedImageEncoder(**SMALL).fit(images * 255)
    with pytest.raises(ValueError, match="too few"):
        TrainedImageEncoder(**SMALL).fit(images[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrainedImageEncoder(max_epochs=1, **SMALL).fit(images[:8]).encode(images[:2] * 255)
    with pytest.raises(ValueError, match="not fitted"):
        TrainedImageEncoder().embed(images[:2])
    with pytest.raises(ValueError, match="name"):
        load_image_encoder({"name": "vq"})


def test_augment_keeps_content_and_position() -> None:
    x = resize(shapes(8, seed=5), 32)
    y = augment_views(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    # mild: far closer to its own image than to the others
    d = ((y[:, None] - x[None]) ** 2).mean(dim=(2, 3, 4))
    assert (d.argmin(dim=1) == torch.arange(8)).all()


# ---- pretrained CLIP vision model -----------------------------------------------------------


def _tiny_clip(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16)).eval()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    model = _tiny_clip()
    model.save_pretrained(folder)
    return folder, model


def _reference(model, x: torch.Tensor, mean, std):
    pixels = (resize(x, 32) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    return out.last_hidden_state, out.image_embeds


def test_pretrained_matches_transformers_forward(clip_folder, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, model = clip_folder
    enc = PretrainedImageEncoder(folder)
    assert (enc.n_tokens, enc.dim, enc.embed_dim, enc.image_size) == (17, 32, 16, 32)
    assert enc.fit(shapes(2)) is enc
    x = shapes(6, size=48, seed=3)  # resized to 32 by the encoder
    tokens, embeds = _reference(model, resize(x, 32), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(enc.encode(x), tokens)
    torch.testing.assert_close(enc.embed(x), embeds)
    assert enc.encode(x).shape == (6, 17, 32) and enc.embed(x).shape == (6, 16)


def test_pretrained_gradient_reaches_input(clip_folder) -> None:
    enc = PretrainedImageEncoder(clip_folder[0])
    x = torch.from_numpy(shapes(3)).permute(0, 3, 1, 2).clone().requires_grad_(True)
    enc.embed(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in enc.model.parameters())


def test_pretrained_other_image_size(clip_folder) -> None:
    enc = PretrainedImageEncoder(clip_folder[0], image_size=48)
    assert enc.n_tokens == 1 + 36
    assert enc.encode(shapes(2)).shape == (2, 37, 32)


def test_pretrained_state_round_trip_and_changes(clip_folder, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(clip_folder[0], folder)
    enc = PretrainedImageEncoder(folder)
    x = shapes(4, seed=4)
    state = enc.state_dict()
    assert not any(isinstance(v, torch.Tensor) for v in state.values())  # no weights
    path = atomic_save({"format": "test.encoder", "version": 1, "encoder": state},
                       tmp_path / "enc.pt")
    again = load_image_encoder(read_payload(path, "test.encoder", 1, "encoder")["encoder"])
    torch.testing.assert_close(again.embed(x), enc.embed(x), rtol=0, atol=0)
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="changed"):
        load_image_encoder(state)
    shutil.rmtree(folder)
    with pytest.raises(ValueError, match=str(folder)):
        load_image_encoder(state)


def test_pretrained_pipeline_subfolder_and_stats(clip_folder, tmp_path) -> None:
    from transformers import CLIPImageProcessor

    pipe = tmp_path / "pipe"
    shutil.copytree(clip_folder[0], pipe / "image_encoder")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    CLIPImageProcessor(image_mean=mean, image_std=std).save_pretrained(pipe / "feature_extractor")
    (pipe / "model_index.json").write_text("{}")
    enc = PretrainedImageEncoder(pipe)
    assert enc.model_path == (pipe / "image_encoder").resolve()
    assert enc.mean == tuple(mean) and enc.std == tuple(std)
    x = shapes(3, seed=6)
    tokens, embeds = _reference(clip_folder[1], resize(x, 32), mean, std)
    torch.testing.assert_close(enc.encode(x), tokens)
    torch.testing.assert_close(enc.embed(x), embeds)
    # the image_encoder/ folder given directly finds the pipeline's preprocessing too
    assert PretrainedImageEncoder(pipe / "image_encoder").mean == tuple(mean)


def test_pretrained_full_clip_folder(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    layers = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4)
    model = CLIPModel(CLIPConfig(
        text_config=dict(num_hidden_layers=1, **layers), projection_dim=16,
        vision_config=dict(num_hidden_layers=2, image_size=32, patch_size=8, **layers))).eval()
    model.save_pretrained(tmp_path)
    enc = PretrainedImageEncoder(tmp_path)
    x = torch.from_numpy(shapes(3, seed=7)).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = model.visual_projection(model.vision_model(
            pixel_values=enc.preprocess(x)).pooler_output)
    assert enc.embed_dim == 16
    torch.testing.assert_close(enc.embed(x), ref)


def test_pretrained_bad_folders(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=str(missing)):
        PretrainedImageEncoder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json"):
        PretrainedImageEncoder(empty)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a CLIP vision model"):
        PretrainedImageEncoder(bert)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(ValueError, match=str(broken)):
        PretrainedImageEncoder(broken)  # a config but no weights
