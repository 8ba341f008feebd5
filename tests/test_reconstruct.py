"""The reconstruction model and the ``reconstruct`` stage, end to end on tiny simulated subjects.

Everything is real (the simulator, the stores, the image encoder, the cross-subject decoders,
the diffusers UNet, the metrics) but tiny: 16-pixel images, a few epochs.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.config import SimulationConfig
from neurodecode.data.subjects import SubjectTrials
from neurodecode.models.vision import Reconstructor, select_by_embedding
from neurodecode.models.vision.config import load_reconstruction_config
from neurodecode.pipelines.base import StageError
from neurodecode.pipelines.reconstruct import (
    ReconstructStageConfig,
    _split_by_intervals,
    average_repeats,
    reconstruct,
)
from neurodecode.pipelines.simulate import simulate_to

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = {
    "image_size": 16,
    "encoder": {"params": {"grid": 4, "dim": 8, "width": 8, "max_epochs": 2}},
    "brain": {"lowlevel_size": 4,
              "embedding": {"train": {"max_epochs": 3}, "backbone": {"params": {"hidden": 32}},
                            "head": {"params": {"hidden": 32}}},
              "lowlevel": {"train": {"max_epochs": 3}, "backbone": {"params": {"hidden": 32}}}},
    "diffusion": {"image_size": 16, "block_out_channels": [16, 32], "max_epochs": 2,
                  "batch_size": 32},
    "sampling": {"steps": 4, "strength": 0.5, "n_samples": 2, "lowpass_size": 8},
    "braindive": {"n_images": 2, "steps": 3},
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vision")
    simulate_to(folder, SimulationConfig(
        dataset="vision", modalities=[], n_images=None,
        vision={"n_subjects": 3, "n_images": 64, "n_test_images": 10, "n_voxels": [40, 60],
                "image_size": 16, "seed": 1}))
    return folder


@pytest.fixture(scope="module")
def job(stores, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("recon") / "job"
    config = ReconstructStageConfig(analysis="tiny", params=TINY, subjects=["01", "02"],
                                    new_subjects=["03"], fractions=[0.3], n_permutations=3,
                                    threads=1)
    reconstruct(config, [stores], out)
    return out


@pytest.fixture(scope="module")
def parts(stores):
    from neurodecode.pipelines.cross_subject import subject_samples
    from neurodecode.pipelines.decode import EpochsSamples, open_stores
    from neurodecode.store import read_stimuli

    sel = EpochsSamples(kind="epochs", modality="fmri", tmin=3.0, tmax=7.0, labels=["image"],
                        l_freq=0.01)
    recs = open_stores([stores], sel)
    trials = subject_samples(recs, sel, "value")
    images = read_stimuli(stores / "stimuli.zarr")["images"]
    return {s: _split_by_intervals(t, recs) for s, t in trials.items()}, images


def test_stage_scores_every_method_and_the_new_subject(job):
    data = json.loads((job / "metrics.json").read_text())
    kinds = [(r["subject"], r["kind"]) for r in data["rows"]]
    assert kinds == [("01", "trained"), ("02", "trained"), ("03", "new")]
    for row in data["rows"]:
        assert set(row["methods"]) == {"reconstruction", "best_sample", "lowlevel",
                                       "ridge_to_pixels", "nearest_training_image",
                                       "ridge_time_mean"}
        for scores in row["methods"].values():
            for key in ("pixcorr", "ssim", "two_way_encoder", "two_way_random_cnn",
                        "retrieval_top1_brain_to_image", "retrieval_top1_image_to_brain"):
                assert -1.0 <= scores[key] <= 1.0
        assert row["chance"]["two_way"] == 0.5
        assert row["n_test"] == 10  # the repeats of each test image averaged
        assert row["unet_evals_per_image"] <= 20
    new = data["rows"][-1]
    # the new subject adapts from trials that all end before its test block starts
    assert new["adapt_last_stop"] < new["test_first_start"]
    assert new["n_train_trials"] < data["rows"][0]["n_train_trials"]
    assert data["sampling"]["unet_evals_per_image"] == 2 * 2 * 2  # 2 samples x 2 steps x CFG
    assert data["n_fit_images"] + data["n_test_images"] == data["n_images"]
    for name in data["grids"].values():
        assert (job / name).read_bytes()[:4] == b"\x89PNG"
    dive = data["braindive"]
    assert dive["region"] == "V4" and (job / dive["figure"]).is_file()
    assert set(dive["predicted_activation"]) == {"guided", "unguided", "stimuli"}
    assert set(dive["feature"]) == {"guided", "unguided", "stimuli"}  # simulator ground truth


def test_checkpoint_round_trips(job, parts):
    split, _ = parts
    test = average_repeats(split["01"]["test"])
    a = Reconstructor.load(job / "model.pt")
    a.save(job / "again.pt")
    b = Reconstructor.load(job / "again.pt")
    assert a.subjects_ == b.subjects_ == ["01", "02", "03"]
    np.testing.assert_array_equal(a.predict_tokens(test).numpy(), b.predict_tokens(test).numpy())
    ra, rb = a.reconstruct(test, seed=3), b.reconstruct(test, seed=3)
    np.testing.assert_array_equal(ra.images, rb.images)
    np.testing.assert_array_equal(ra.chosen, rb.chosen)
    np.testing.assert_array_equal(a.predict_lowlevel(test).numpy(),
                                  b.predict_lowlevel(test).numpy())
    assert a.inversion_weights_ == b.inversion_weights_
    assert a.samples_["event"] == "image"


def test_both_decoders_blend_the_network_with_each_subjects_inversion(job, parts):
    import torch.nn.functional as F

    from neurodecode.models.vision.reconstructor import _apply_inversion

    split, _ = parts
    model = Reconstructor.load(job / "model.pt")
    # an inversion per served subject and decoder, the new one's fitted on its adaptation trials
    assert sorted(model.inversion_) == sorted(model.inversion_weights_) == ["01", "02", "03"]
    grid = np.round(np.linspace(0, 1, 11), 2)  # "auto": chosen on validation trials
    for part in ("embedding", "lowlevel"):
        assert model.inversion_weights_["01"][part] == model.inversion_weights_["02"][part]
        assert model.inversion_weights_["01"][part] in grid
        assert model.inversion_weights_["03"][part] == 0.75  # inversion.weight_new
    s = model.config_.brain.lowlevel_size
    for subject in ("01", "03"):
        test = average_repeats(split[subject]["test"])
        weights, maps = model.inversion_weights_[subject], model.inversion_[subject]
        w = weights["lowlevel"]
        net = np.asarray(model.lowlevel_.decision_function(test))
        blend = torch.as_tensor((1 - w) * net + w * _apply_inversion(maps["lowlevel"], test),
                                dtype=torch.float32).clamp(0, 1)
        expected = F.interpolate(blend.reshape(-1, 3, s, s), size=(16, 16), mode="bilinear",
                                 align_corners=False).clamp(0, 1)
        np.testing.assert_allclose(model.predict_lowlevel(test).numpy(), expected.numpy(),
                                   atol=1e-5)
        w = weights["embedding"]
        net = np.asarray(model.embedding_.decision_function(test))
        blend = (1 - w) * net + w * _apply_inversion(maps["embedding"], test)
        tokens = blend * model.target_std_ + model.target_mean_
        np.testing.assert_allclose(model.predict_tokens(test).numpy().reshape(len(test), -1),
                                   tokens, rtol=1e-4, atol=1e-4)


def test_auto_weight_is_the_best_mean_correlation_on_the_validation_trials(job, parts):
    from neurodecode.data.images import as_array, resize
    from neurodecode.models.vision.reconstructor import _apply_inversion

    split, images = parts
    model = Reconstructor.load(job / "model.pt")
    grid = np.round(np.linspace(0, 1, 11), 2)
    for part in ("embedding", "lowlevel"):
        mean_r = np.zeros(len(grid))
        for subject in ("01", "02"):
            val = split[subject]["valid"]
            seen = as_array(resize(np.asarray(images)[np.asarray(val.keys).astype(int)],
                                   model.config_.image_size))
            truth = (model._standardise(model._raw_tokens(seen)).numpy() if part == "embedding"
                     else model._coarse(seen))
            net = np.asarray(getattr(model, f"{part}_").decision_function(val))
            inv = _apply_inversion(model.inversion_[subject][part], val)
            for i, w in enumerate(grid):
                mean_r[i] += sum(np.corrcoef(a, b)[0, 1] for a, b in
                                 zip((1 - w) * net + w * inv, truth, strict=True))
        assert model.inversion_weights_["01"][part] == grid[int(np.argmax(mean_r))]


def test_auto_weight_prefers_correlation_over_squared_error():
    """A shrunken, noisier network (low squared error) against a well-correlated but
    over-scaled inversion: the criterion is the correlation, so the inversion wins."""
    import pandas as pd

    from neurodecode.models.vision.reconstructor import row_correlations

    rng = np.random.default_rng(0)
    n, d = 120, 30
    truth = rng.normal(size=(n, d))
    net_pred = 0.5 * truth + 0.3 * rng.normal(size=(n, d))
    inv_resp = 3.0 * truth + 0.5 * rng.normal(size=(n, d))  # the inversion: identity map

    class Net:
        def decision_function(self, trials):
            return net_pred

    trials = SubjectTrials(subject="s", X=inv_resp[:, None, :], y=None,
                           table=pd.DataFrame(index=range(n)), ch_names=[f"c{i}" for i in
                                                                          range(d)],
                           keys=np.arange(n))
    model = Reconstructor()
    model.lowlevel_ = Net()
    model.inversion_ = {"s": {"lowlevel": {"coef": torch.eye(d), "intercept": torch.zeros(d),
                                           "time_weights": torch.ones(1, dtype=torch.float64)}}}
    grid = np.round(np.linspace(0, 1, 11), 2)
    blends = [(1 - w) * net_pred + w * inv_resp for w in grid]
    best_r = grid[int(np.argmax([row_correlations(b, truth).mean() for b in blends]))]
    best_mse = grid[int(np.argmin([np.sum((b - truth) ** 2) for b in blends]))]
    assert best_r >= best_mse + 0.4  # the two criteria disagree here
    assert model._choose_weight("auto", "lowlevel", {"s": trials}, truth) == best_r
    assert model._choose_weight(0.3, "lowlevel", {"s": trials}, truth) == 0.3


def test_a_new_subjects_inversion_weight_is_set_and_zero_is_the_network_alone(job, parts):
    import dataclasses

    split, images = parts
    model = Reconstructor.load(job / "model.pt")
    inversion = model.config_.brain.inversion.model_copy(update={"weight_new": 0.0})
    brain = model.config_.brain.model_copy(update={"inversion": inversion})
    model.config_ = model.config_.model_copy(update={"brain": brain})
    few = dataclasses.replace(split["03"]["train"], subject="03b")  # one more new subject
    new = model.adapt(few, None, images)
    assert new.inversion_weights_["03b"] == {"embedding": 0.0, "lowlevel": 0.0}
    assert "03b" in new.inversion_ and "03b" not in model.inversion_
    test = dataclasses.replace(average_repeats(split["03"]["test"]), subject="03b")
    net = np.asarray(new.lowlevel_.decision_function(test), np.float32)
    low = new.predict_lowlevel(test)
    assert low.shape == (len(test), 3, 16, 16) and 0 <= float(low.min()) <= float(low.max()) <= 1
    s = model.config_.brain.lowlevel_size
    coarse = torch.as_tensor(np.clip(net, 0, 1)).reshape(-1, 3, s, s)
    np.testing.assert_allclose(low.numpy(), torch.nn.functional.interpolate(
        coarse, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1).numpy(),
        atol=1e-6)


def test_selection_cannot_see_the_target(job, parts):
    split, _ = parts
    model = Reconstructor.load(job / "model.pt")
    assert list(inspect.signature(model.reconstruct).parameters) == ["trials", "seed",
                                                                     "batch_size"]
    assert list(inspect.signature(select_by_embedding).parameters) == ["candidate_tokens",
                                                                       "predicted_tokens"]
    test = average_repeats(split["02"]["test"])
    first = model.reconstruct(test, seed=1)
    # another subject's labels and image ids: the reconstruction reads neither
    scrambled = SubjectTrials(test.subject, test.X, None, test.table, test.ch_names,
                              test.positions, test.sfreq, test.coord_frame,
                              np.roll(np.asarray(test.keys), 3))
    second = model.reconstruct(scrambled, seed=1)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.selected, second.selected)
    assert first.candidates.shape[1] == 2
    kept = first.candidates[np.arange(len(first)), first.chosen]
    np.testing.assert_array_equal(kept, first.selected)


def test_reconstruction_is_the_mean_or_the_selected_sample(job, parts):
    split, _ = parts
    test = average_repeats(split["01"]["test"])
    model = Reconstructor.load(job / "model.pt")
    assert model.sampling_plan()["combine"] == "mean"
    mean = model.reconstruct(test, seed=2)
    np.testing.assert_allclose(mean.images, mean.candidates.mean(axis=1), atol=1e-6)
    assert not np.allclose(mean.images, mean.selected)  # the two samples differ
    model.config_ = model.config_.model_copy(update={"sampling": model.config_.sampling
                                                     .model_copy(update={"combine": "select"})})
    select = model.reconstruct(test, seed=2)
    np.testing.assert_array_equal(select.candidates, mean.candidates)  # same seed, same draws
    np.testing.assert_array_equal(select.images, select.selected)
    np.testing.assert_array_equal(select.selected, mean.selected)
    with pytest.raises(ValueError, match="combine"):
        load_reconstruction_config("reconstruction", sampling={"combine": "best"})


def test_select_by_embedding_keeps_the_closest_candidate():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 12, generator=g)
    cands = torch.randn(5, 3, 12, generator=g)
    cands[torch.arange(5), torch.tensor([2, 0, 1, 1, 2])] = pred * 2 + 0.1
    chosen, scores = select_by_embedding(cands, pred)
    assert chosen.tolist() == [2, 0, 1, 1, 2]
    assert scores.shape == (5, 3) and np.allclose(scores.max(axis=1), 1.0, atol=1e-5)


class _Guarded(np.ndarray):
    """An image table that fails when an image outside ``allowed`` is read."""

    allowed: set[int] = set()

    def __getitem__(self, index):
        ids = np.atleast_1d(np.asarray(index)).ravel()
        if ids.dtype.kind in "iu" and not set(ids.tolist()) <= self.allowed:
            raise AssertionError(f"read images {sorted(set(ids.tolist()) - self.allowed)}")
        return np.asarray(super().__getitem__(index))


def test_fit_and_adapt_never_read_a_test_image(parts):
    split, images = parts
    train = {s: split[s]["train"] for s in ("01", "02")}
    val = {s: split[s]["valid"] for s in ("01", "02")}
    allowed = {int(k) for t in [*train.values(), *val.values()] for k in t.keys}
    test_ids = {int(k) for k in split["01"]["test"].keys}
    assert allowed and not allowed & test_ids
    guarded = np.asarray(images).view(_Guarded)
    guarded.allowed = allowed
    config = load_reconstruction_config("reconstruction", **TINY)
    model = Reconstructor(config).fit(train, val, guarded)
    assert set(model.train_image_ids_.tolist()) == allowed
    few = split["03"]["train"].fraction(0.3)
    guarded.allowed = allowed | {int(k) for k in few.keys}
    adapted = model.adapt(few, None, guarded, reference=train)
    assert "03" in adapted.subjects_ and "03" not in model.subjects_
    out = adapted.reconstruct(average_repeats(split["03"]["test"]))
    assert out.images.shape == (10, 16, 16, 3)


def test_too_many_unet_evaluations_are_refused(job, parts):
    split, _ = parts
    model = Reconstructor.load(job / "model.pt")
    model.config_ = model.config_.model_copy(update={"sampling": model.config_.sampling
                                                     .model_copy(update={"n_samples": 6})})
    with pytest.raises(ValueError, match="max_unet_evals"):
        model.reconstruct(split["01"]["test"])


def test_bad_configs_are_named(stores, tmp_path):
    with pytest.raises(ValueError, match="needs a local path"):
        load_reconstruction_config("reconstruction", renderer={"kind": "pretrained"})
    with pytest.raises(ValueError, match="unknown key"):
        load_reconstruction_config("reconstruction", sampling={"n_sample": 3})
    with pytest.raises(ValueError, match="task must be 'regress'"):
        load_reconstruction_config("reconstruction", brain={
            "lowlevel": {"task": "classify", "head": {"name": "classify"}}})
    with pytest.raises(ValueError, match="weight must be in"):
        load_reconstruction_config("reconstruction", brain={"inversion": {"weight": 1.5}})
    with pytest.raises(ValueError, match="lowpass_size .* is larger than image_size"):
        load_reconstruction_config("reconstruction", sampling={"lowpass_size": 64})
    config = ReconstructStageConfig(analysis="x", params=TINY, new_subjects=["09"])
    with pytest.raises(StageError, match="new subject"):
        reconstruct(config, [stores], tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_cli_reconstructs_the_test_trials(job, stores, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["reconstruct", "--model", str(job / "model.pt"), "--store",
                                 str(stores), "--out", str(out), "--subject", "01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "reconstructions.json").read_text())
    assert data["subjects"]["01"]["n_trials"] == 10
    assert len(list((out / "images" / "01").glob("*.png"))) == 10
    assert 0.0 <= data["subjects"]["01"]["scores"]["two_way_encoder"] <= 1.0
    bad = runner.invoke(app, ["reconstruct", "--model", str(tmp_path / "none.pt"), "--store",
                              str(stores), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no such checkpoint" in bad.output
    assert not (tmp_path / "x").exists()


def test_the_pretrained_unclip_path_works_offline(parts, tmp_path, monkeypatch):
    from neurodecode.models.vision.pretrained import save_tiny_unclip_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = save_tiny_unclip_pipeline(tmp_path / "unclip", image_size=16, embed_dim=16)
    split, images = parts
    config = load_reconstruction_config("reconstruction", **{
        **TINY, "renderer": {"kind": "pretrained", "path": str(folder)},
        "sampling": {"steps": 3, "guidance_scale": 1.0, "n_samples": 2}})
    model = Reconstructor(config).fit({"01": split["01"]["train"]}, {"01": split["01"]["valid"]},
                                      images)
    assert model.diffusion_ is None and model.token_shape_ == (1, 16)
    out = model.reconstruct(average_repeats(split["01"]["test"]))
    assert out.images.shape == (10, 16, 16, 3) and out.unet_evals_per_image == 6
    model.save(tmp_path / "m.pt")
    again = Reconstructor.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(again.reconstruct(average_repeats(split["01"]["test"])).images,
                                  out.images)
    assert not any((tmp_path / "hf").rglob("*.safetensors"))


def test_matched_time_weights_follow_the_lags_that_carry_the_signal():
    from neurodecode.models.vision.config import InversionConfig
    from neurodecode.models.vision.reconstructor import matched_time_weights

    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 6))
    gain = np.array([0.0, 0.3, 1.0, 0.6, 0.0])  # an HRF-like profile over 5 time points
    X = (gain[None, :, None] * (y @ rng.normal(size=(6, 40)))[:, None, :]
         + rng.normal(size=(200, 5, 40)))
    cfg = InversionConfig(n_components=6)
    w = matched_time_weights(X, y, y, cfg)
    assert w.shape == (5,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert np.argmax(w) == 2 and w[2] > w[3] > w[1] > max(w[0], w[4])
    assert max(w[0], w[4]) < 0.1  # lags without signal weigh (almost) nothing
    flat = np.zeros((200, 5, 40))  # nothing explained at any lag: equal weights
    np.testing.assert_allclose(matched_time_weights(flat, y, y, cfg), 0.2)


def test_inversion_maps_without_time_weights_average_equally(job, parts):
    import dataclasses

    from neurodecode.models.vision.reconstructor import _apply_inversion, time_mean

    split, _ = parts
    model = Reconstructor.load(job / "model.pt")
    maps = model.inversion_["01"]["lowlevel"]
    assert maps["time_weights"].sum().item() == pytest.approx(1.0)
    test = average_repeats(split["01"]["test"])
    old = {k: v for k, v in maps.items() if k != "time_weights"}  # a map saved before them
    expected = time_mean(test) @ old["coef"].numpy().T.astype(np.float64) + old[
        "intercept"].numpy()
    np.testing.assert_allclose(_apply_inversion(old, test), expected, rtol=1e-4, atol=1e-4)
    cut = dataclasses.replace(test, X=np.asarray(test.X)[:, :-1])  # cut shorter than fitted
    with pytest.raises(ValueError, match="time points"):
        _apply_inversion(maps, cut)


def test_a_new_subject_borrows_the_served_subjects_time_weights(job):
    model = Reconstructor.load(job / "model.pt")
    for part in ("embedding", "lowlevel"):
        served = np.mean([model.inversion_[s][part]["time_weights"].numpy()
                          for s in ("01", "02")], axis=0)
        np.testing.assert_allclose(model.inversion_["03"][part]["time_weights"].numpy(),
                                   served, rtol=1e-6)
