"""The cross-subject model package: assembly, mixed batches, checkpoints, few-shot strategies."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from neurodecode.data.subjects import SubjectMixingSampler, SubjectTrials
from neurodecode.models import registry
from neurodecode.models.adapters.base import SubjectSpec
from neurodecode.models.adapters.lora import LoRA, add_lora, merge_lora
from neurodecode.models.checkpoint import AdapterMismatchError, load_model, read_checkpoint
from neurodecode.models.config import load_model_config
from neurodecode.models.cross_subject import CrossSubjectModel
from neurodecode.models.decoder import CrossSubjectDecoder
from neurodecode.models.fewshot import holdout_split, parse_strategy
from neurodecode.models.tasks.decode import DecodeTask

CLASSES = ("a", "b")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tiny models train several times faster on one thread of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_config(**train):
    return {
        "name": "test_linear", "task": "classify", "latent_dim": 8,
        "adapter": {"name": "subject_linear", "params": {"rank": 4, "invertible": True}},
        "backbone": {"name": "residual_mlp", "params": {"hidden": 16, "n_blocks": 1,
                                                        "dropout": 0.0}},
        "head": {"name": "classify"},
        "train": {"max_epochs": 15, "patience": 5, "batch_size": 32, "lr": 3e-3,
                  "cycle_weight": 0.1, **train},
    }


def spatial_config(**train):
    return {
        "name": "test_spatial", "task": "classify", "latent_dim": 8,
        "adapter": {"name": "spatial_attention", "params": {"n_freqs": 3}},
        "backbone": {"name": "residual_mlp", "params": {"hidden": 16, "n_blocks": 1,
                                                        "dropout": 0.0,
                                                        "pool_time": True}},
        "head": {"name": "classify"},
        "train": {"max_epochs": 25, "patience": 8, "batch_size": 32, "lr": 1e-2,
                  "subject_dropout": 0.3, "channel_dropout": 0.1, **train},
    }


def latent_subject(subject: str, n_channels: int, n: int = 120, seed: int = 0,
                   n_times: int = 2) -> SubjectTrials:
    """A subject whose channels mix a shared 2-class latent through its own random map."""
    rng = np.random.default_rng([seed, int(subject)])
    y = np.array(CLASSES)[np.arange(n) % 2]
    latent = np.where(y == "a", 1.0, -1.0)[:, None, None] * np.ones((n, n_times, 3))
    mix = rng.standard_normal((3, n_channels))
    X = latent @ mix + 1.5 * rng.standard_normal((n, n_times, n_channels))
    table = pd.DataFrame({"recording": f"sub-{subject}", "subject": subject,
                          "start": np.arange(n) * 2.0, "stop": np.arange(n) * 2.0 + 1.0,
                          "onset": np.arange(n) * 2.0})
    return SubjectTrials(subject, X.astype(np.float32), y, table,
                         [f"ch{i}" for i in range(n_channels)], None, 1.0)


def sensor_subject(subject: str, n_channels: int, n: int = 120, seed: int = 0
                   ) -> SubjectTrials:
    """Sensors at random places on a sphere; class a/b activates a source at (±0.6, 0, 0.8)."""
    rng = np.random.default_rng([seed, int(subject), 7])
    pos = rng.standard_normal((n_channels, 3))
    pos[:, 2] = np.abs(pos[:, 2])
    pos /= np.linalg.norm(pos, axis=1, keepdims=True)
    sources = np.array([[0.6, 0.0, 0.8], [-0.6, 0.0, 0.8]])
    gain = np.exp(-((pos[None] - sources[:, None]) ** 2).sum(-1) / 0.15)  # (2, C)
    y = np.array(CLASSES)[rng.permutation(np.arange(n) % 2)]
    amp = np.where(y[:, None] == "a", [1.0, 0.0], [0.0, 1.0])  # (n, 2)
    t = np.sin(np.linspace(0, np.pi, 10))
    X = (amp @ gain)[:, None, :] * t[None, :, None] * 3
    X = X + rng.standard_normal((n, 10, n_channels))
    table = pd.DataFrame({"recording": f"sub-{subject}", "subject": subject,
                          "start": np.arange(n) * 2.0, "stop": np.arange(n) * 2.0 + 1.0,
                          "onset": np.arange(n) * 2.0})
    return SubjectTrials(subject, X.astype(np.float32), y, table,
                         [f"s{i}" for i in range(n_channels)], pos, 100.0, "head")


@pytest.fixture(scope="module")
def linear_decoder():
    subjects = {s: latent_subject(s, c) for s, c in (("1", 30), ("2", 50), ("3", 40))}
    parts = {s: t.chronological((0.7, 0.15, 0.15)) for s, t in subjects.items()}
    dec = CrossSubjectDecoder(linear_config()).fit(
        {s: p["train"] for s, p in parts.items()}, {s: p["val"] for s, p in parts.items()})
    return dec, parts


# --------------------------------------------------------------------------- parts, configs


def test_registry_lists_and_rejects_with_suggestions():
    assert {"subject_linear", "spatial_attention"} <= set(registry.available("adapter"))
    assert {"residual_mlp", "temporal_conv", "transformer"} <= set(registry.available("backbone"))
    with pytest.raises(KeyError, match="did you mean 'residual_mlp'"):
        registry.get("backbone", "residual_mpl")


def test_model_config_names_file_part_and_parameter(tmp_path):
    path = tmp_path / "bad.yaml"
    cfg = linear_config()
    cfg["backbone"]["params"]["hiden"] = 3
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"bad\.yaml.*residual_mlp.*hiden.*unknown parameter"):
        load_model_config(path)
    with pytest.raises(ValueError, match="unknown key"):
        load_model_config({**linear_config(), "epochs": 3})


def test_shipped_model_configs_validate():
    from pathlib import Path

    import yaml

    from neurodecode.models.spikes.config import load_spike_config
    from neurodecode.models.vision.config import load_reconstruction_config

    loaders = {"spike_tokens": load_spike_config, "reconstruction": load_reconstruction_config}
    files = sorted((Path(__file__).parents[1] / "models").glob("*.yaml"))
    assert files
    for f in files:
        family = yaml.safe_load(f.read_text()).get("family", "codebook")
        assert loaders.get(family, load_model_config)(f).name == f.stem


# --------------------------------------------------------------------------- batches


def test_every_training_batch_mixes_subjects():
    subject_of = np.repeat([0, 1, 2], [100, 10, 40])
    sampler = SubjectMixingSampler(subject_of, batch_size=12, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for b in batches:
        assert set(subject_of[b]) == {0, 1, 2}
    # the small subject is recycled rather than crowded out
    counts = np.bincount(subject_of[np.concatenate(batches)])
    assert counts.min() == counts.max() == 100


def test_mixed_batch_routes_each_sample_through_its_adapter():
    torch.manual_seed(0)
    cfg = load_model_config(linear_config())
    specs = {"1": SubjectSpec(5), "2": SubjectSpec(9)}
    model = CrossSubjectModel(cfg, specs, n_times=2, n_outputs=2).eval()
    x = torch.randn(4, 2, 9)
    subject = torch.tensor([0, 1, 0, 1])
    out = model(x, subject)
    # subject 1 reads only its 5 channels: changing its padding changes nothing
    x2 = x.clone()
    x2[subject == 0, :, 5:] = 100.0
    assert torch.allclose(model(x2, subject), out)
    # and equals the same samples run alone
    alone = model(x[subject == 1], subject[subject == 1])
    assert torch.allclose(alone, out[subject == 1], atol=1e-6)


# --------------------------------------------------------------------------- training


def test_shared_model_decodes_every_subject(linear_decoder):
    dec, parts = linear_decoder
    for s, p in parts.items():
        assert dec.score(p["test"]) > 0.8, s
    assert dec.best_epoch_ is not None and dec.history_


def test_new_subject_with_unseen_channel_count(linear_decoder):
    dec, _ = linear_decoder
    new = latent_subject("9", 73).chronological((0.5, 0.0, 0.5), names=("train", "_", "test"))
    for strategy in "abcd":
        adapted = dec.adapt(new["train"], strategy=strategy,
                            reference={s: linear_decoder[1][s]["train"] for s in dec.subjects_})
        assert "9" in adapted.subjects_ and "9" not in dec.subjects_
        assert adapted.score(new["test"]) > 0.75, strategy
        assert adapted.model_.adapter.specs["9"].n_channels == 73
    with pytest.raises(ValueError, match="already served"):
        adapted.adapt(new["train"], strategy="a")


def test_adapter_only_strategy_leaves_shared_weights_untouched(linear_decoder):
    dec, parts = linear_decoder
    new = latent_subject("8", 20).first(40)
    adapted = dec.adapt(new, strategy="a", init="random")
    before = dict(dec.model_.named_parameters())
    for name, p in adapted.model_.named_parameters():
        if name.startswith("adapter.subjects.8."):
            continue
        assert torch.equal(p, before[name]), name
    for s in dec.subjects_:  # trained subjects still decoded as before
        assert adapted.score(parts[s]["test"]) == dec.score(parts[s]["test"])


def test_adaptation_never_sees_the_test_split(linear_decoder, monkeypatch):
    """A spy on every sample the decoder prepares during adapt: none is from the test part,
    and early stopping's validation samples are the budget's tail."""
    dec, _ = linear_decoder
    new = latent_subject("7", 25).chronological((0.6, 0.1, 0.3))
    test_onsets = set(new["test"].table["onset"])
    seen: list[tuple[str, set]] = []
    original = CrossSubjectDecoder._dataset

    def spy(self, trials, model, labelled=True):
        for t in trials.values():
            seen.append(("labelled" if labelled else "unlabelled", set(t.table["onset"])))
        return original(self, trials, model, labelled)

    monkeypatch.setattr(CrossSubjectDecoder, "_dataset", spy)
    budget = new["train"]
    for strategy in "abc":
        dec.adapt(budget, strategy=strategy, init="random")
    assert seen
    for _, onsets in seen:
        assert not onsets & test_onsets
        assert onsets <= set(budget.table["onset"])
    fit, val = holdout_split(budget)
    assert val is not None and fit.table["stop"].max() < val.table["start"].min()


def test_strategy_names():
    assert parse_strategy("d") == "align" and parse_strategy("LoRA") == "lora"
    with pytest.raises(ValueError, match=r"valid: a \(adapter\)"):
        parse_strategy("z")


# --------------------------------------------------------------------------- zero-shot


def test_zero_shot_on_a_montage_absent_from_training():
    subjects = {s: sensor_subject(s, c) for s, c in (("1", 20), ("2", 28), ("3", 24),
                                                     ("4", 32))}
    parts = {s: t.chronological((0.7, 0.15, 0.15)) for s, t in subjects.items()}
    torch.manual_seed(0)
    dec = CrossSubjectDecoder(spatial_config()).fit(
        {s: p["train"] for s, p in parts.items()}, {s: p["val"] for s, p in parts.items()})
    new = sensor_subject("9", 17, seed=5)
    assert not any(np.allclose(new.positions[:3], t.positions[:3]) for t in subjects.values())
    half = new.chronological((0.5, 0.0, 0.5), names=("calib", "_", "test"))
    zero = dec.adapt(half["calib"], strategy="e")
    assert not zero.model_.adapter.has_weights("9")
    n_params = sum(p.numel() for p in dec.model_.parameters())
    assert sum(p.numel() for p in zero.model_.parameters()) == n_params  # no new weight
    assert zero.score(half["test"]) > 0.75
    with pytest.raises(ValueError, match="position-aware"):
        CrossSubjectDecoder(linear_config(max_epochs=1)).fit(
            {"1": latent_subject("1", 5)}).adapt(latent_subject("2", 5), strategy="e")


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_weights_only(linear_decoder, tmp_path):
    dec, parts = linear_decoder
    path = dec.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert set(payload["adapters"]) == {"1", "2", "3"}
    assert not any(k.startswith("adapter.subjects.") for k in payload["shared"])
    back = CrossSubjectDecoder.load(path)
    for p in parts.values():
        np.testing.assert_array_equal(back.predict(p["test"]), dec.predict(p["test"]))


def test_missing_or_unexpected_adapter_is_an_error_naming_it(linear_decoder, tmp_path):
    dec, _ = linear_decoder
    path = dec.save(tmp_path / "model.pt")
    payload = read_checkpoint(path)
    del payload["adapters"]["2"]
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(AdapterMismatchError, match="no adapter for subject.*'2'"):
        load_model(tmp_path / "missing.pt")
    payload = read_checkpoint(path)
    payload["adapters"]["99"] = payload["adapters"]["1"]
    torch.save(payload, tmp_path / "unexpected.pt")
    with pytest.raises(AdapterMismatchError, match="unexpected adapter.*'99'"):
        load_model(tmp_path / "unexpected.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable model checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_lightning_checkpoint_restores_the_task_module(linear_decoder, tmp_path):
    dec, parts = linear_decoder
    task = DecodeTask.for_model(dec.model_, classes=list(dec.classes_))
    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    restored = DecodeTask.load_from_checkpoint(tmp_path / "task.ckpt", weights_only=True)
    x = torch.as_tensor(dec.scaler_.transform(parts["2"]["test"]))
    subject = torch.full((len(x),), dec.subjects_.index("2"))
    restored.eval()
    assert torch.allclose(restored.model(x, subject), dec.model_.eval()(x, subject))
    # a checkpoint whose adapters differ from its hyper-parameters is refused, by name
    ckpt = torch.load(tmp_path / "task.ckpt", weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items()
                          if not k.startswith("model.adapter.subjects.3.")}
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(AdapterMismatchError, match="'3'"):
        DecodeTask.load_from_checkpoint(tmp_path / "bad.ckpt", weights_only=True)


# --------------------------------------------------------------------------- LoRA


def test_lora_starts_as_the_base_layer_and_merges_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(),
                              torch.nn.Conv1d(5, 4, 3))
    x = torch.randn(2, 6)
    ref = net[0](x)
    wrapped = add_lora(net, rank=2)
    assert wrapped == ["0", "2"] and isinstance(net[0], LoRA)
    assert torch.allclose(net[0](x), ref)
    assert all(not p.requires_grad for p in net[0].base.parameters())
    with torch.no_grad():
        net[0].lora_b.normal_()
    updated = net[0](x)
    assert not torch.allclose(updated, ref)
    assert merge_lora(net) == 2 and isinstance(net[0], torch.nn.Linear)
    assert torch.allclose(net[0](x), updated, atol=1e-6)
