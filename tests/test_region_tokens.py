"""Region tokens: anatomical labels from the stores, the ``region_linear`` adapter, the grouped
segment transformer, and codebook pretraining on them (Du-IN's one fused token per region).

Also the quantiser's ``valid`` vectors: tokens of padding channels or absent regions take no
part in the codebook's learning or its usage counts.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurodecode.data.samples import epochs, open_recordings, windows
from neurodecode.data.subjects import per_subject
from neurodecode.models import registry
from neurodecode.models.adapters.base import SubjectSpec
from neurodecode.models.codebook import CodebookPretrainer, SegmentVQVAE, VectorQuantizer
from neurodecode.models.codebook.model import valid_groups
from neurodecode.models.codebook.probe import LinearProbe
from neurodecode.models.config import load_model_config
from neurodecode.models.decoder import CrossSubjectDecoder, spec_of
from neurodecode.simulate import SHAPE_FAMILIES, simulate_dataset
from tests.test_codebook import _one_thread, codebook_config  # noqa: F401 (autouse fixture)

N_TIMES = 100
STIM = {f"stim/{f}": f for f in SHAPE_FAMILIES[:2]}
#: the tiny model's regions: two every subject has, one no subject has
REGIONS = ["FFA", "white_matter", "nowhere"]


def region_config(width: int = 2) -> dict:
    """A tiny region-token codebook model over :data:`REGIONS`."""
    return {
        "name": "tiny_codebook_regions", "task": "classify", "latent_dim": width * len(REGIONS),
        "adapter": {"name": "region_linear", "params": {"regions": REGIONS}},
        "backbone": {"name": "segment_transformer",
                     "params": {"segment": 25, "d_model": 16, "n_heads": 2, "n_layers": 1,
                                "conv_channels": 8, "kernel": 3, "dropout": 0.1,
                                "channels": "grouped", "group_width": width}},
        "head": {"name": "classify"},
        "train": {"max_epochs": 2, "patience": 2, "batch_size": 32},
        "pretrain": {"codebook_size": 16, "code_dim": 8, "decay": 0.8, "restart_every": 5,
                     "tokenizer_epochs": 3, "masked_epochs": 2, "batch_size": 32,
                     "patience": 2},
    }


def _adapter(regions: list[str], latent_dim: int, **params):
    return registry.build("adapter", "region_linear", {"regions": regions, **params},
                          latent_dim=latent_dim)


# --------------------------------------------------------------------------- labels


@pytest.fixture(scope="module")
def recordings():
    """Three simulated sEEG subjects (every one implanted in FFA), 40 s, two classes."""
    sim = simulate_dataset(n_subjects=3, modalities=("seeg",), duration=40.0, n_classes=2,
                           seed=1, seeg={"n_electrodes": (8, 12), "responsive": ["FFA"]})
    return open_recordings(sim.recordings)


@pytest.fixture(scope="module")
def windows_by_subject(recordings):
    return per_subject(recordings, windows, length=0.4, stride=0.2)


def test_samples_carry_the_stores_region_labels(recordings, windows_by_subject):
    for rec in recordings:
        t = windows_by_subject[rec.identity["subject"]]
        stored = dict(zip(rec.ds["channel"].values.astype(str),
                          rec.ds["region"].values.astype(str), strict=True))
        assert t.regions == [stored[c] for c in t.ch_names]
        assert "FFA" in t.regions
        assert t.select([0, 2]).regions == t.regions
        spec = spec_of(t)
        assert spec.regions == tuple(t.regions)
        assert SubjectSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "regions"}  # an older checkpoint
    assert SubjectSpec.from_dict(old).regions == ()
    with pytest.raises(ValueError, match="2 region labels for 3 channels"):
        SubjectSpec(3, regions=("a", "b"))


# --------------------------------------------------------------------------- the adapter


def test_region_linear_feeds_each_region_its_own_slots():
    torch.manual_seed(0)
    adapter = _adapter(["A", "B", "D"], 6)
    spec = SubjectSpec(5, regions=("A", "A", "B", "C", ""))
    adapter.add_subject("s", spec)
    assert adapter.present_slots("s").tolist() == [True] * 4 + [False] * 2
    x = torch.randn(2, 10, 5)
    ref = adapter(x, "s")
    assert ref.shape == (2, 10, 6)
    assert torch.count_nonzero(ref[..., 4:]) == 0  # region D: no channel
    for channel, slots in ((0, [0, 1]), (1, [0, 1]), (2, [2, 3]), (3, []), (4, [])):
        bumped = x.clone()
        bumped[..., channel] += 1.0
        changed = (adapter(bumped, "s") != ref).any(dim=(0, 1)).nonzero().flatten().tolist()
        assert changed == slots, channel
    # the channel mask (channel dropout) leaves a channel out
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 2] = False
    assert torch.count_nonzero(adapter(x, "s", mask)[..., 2:4]) == 0
    # the weights outside a channel's region get no gradient and stay zero
    adapter(x, "s").sum().backward()
    weight = adapter.subjects["s"].weight
    assert torch.count_nonzero(weight.grad[2, :2]) == 0
    assert torch.count_nonzero(weight[3:]) == 0


def test_region_linear_errors():
    with pytest.raises(ValueError, match="not a multiple"):
        _adapter(["A", "B"], 5)
    with pytest.raises(ValueError, match="listed twice"):
        _adapter(["A", "A"], 4)
    adapter = _adapter(["A", "B"], 4)
    with pytest.raises(ValueError, match="subject 'x'.*region labels"):
        adapter.add_subject("x", SubjectSpec(3))
    with pytest.raises(ValueError, match=r"subject 'y'.*\['C', 'E'\].*\['A', 'B'\]"):
        adapter.add_subject("y", SubjectSpec(2, regions=("C", "E")))


# --------------------------------------------------------------------------- the backbone


def _grouped(in_features: int = 6, width: int = 2):
    params = region_config(width)["backbone"]["params"]
    return registry.build("backbone", "segment_transformer", params, in_features=in_features,
                          n_times=N_TIMES)


def test_grouped_tokens_keep_every_group_apart():
    torch.manual_seed(0)
    bb = _grouped().eval()
    assert (bb.groups, bb.width, bb.out_features) == (3, 2, 3 * 16)
    z = torch.randn(2, N_TIMES, 6)
    z[1, :, 4:] = 0.0  # sample 1 has nothing in group 2 (a region without electrodes)
    with torch.no_grad():
        ref = bb.tokens(z)
        bumped = z.clone()
        bumped[:, :, 0] += 1.0  # group 0 only
        out = bb.tokens(bumped)
        features = bb(z)
        flat = bb.pool(bb.embed(z), z, flatten=True)
    assert ref.shape == (2, 3, bb.n_segments, 16)
    assert not torch.equal(out[:, 0], ref[:, 0])
    assert torch.equal(out[:, 1:], ref[:, 1:])
    assert torch.count_nonzero(ref[1, 2]) == 0
    assert features.shape == (2, 48)
    torch.testing.assert_close(features[:, :16], ref[:, 0].mean(dim=1))
    assert torch.count_nonzero(features[1, 32:]) == 0
    assert flat.shape == (2, 3 * bb.n_segments * 16)
    with pytest.raises(ValueError, match="groups of 4"):
        _grouped(6, 4)


def test_grouped_masked_segments_do_not_reach_the_tokens():
    torch.manual_seed(0)
    bb = _grouped().eval()
    z = torch.randn(3, N_TIMES, 6)
    mask = torch.zeros(3, bb.groups, bb.n_segments, dtype=torch.bool)
    mask[0, 1, 1] = True
    with torch.no_grad():
        ref = bb.tokens(z, mask)
        hidden = z.clone()
        hidden[0, 25:50, 2:4] += 3.0  # the masked segment of group 1
        shown = z.clone()
        shown[0, 50:75, 2:4] += 3.0
        assert torch.equal(bb.tokens(hidden, mask), ref)
        assert not torch.equal(bb.tokens(shown, mask)[0, 1], ref[0, 1])


# --------------------------------------------------------------------------- the quantiser


@pytest.mark.parametrize("update", ["ema", "straight_through"])
def test_invalid_vectors_take_no_part_in_the_codebook(update):
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, update=update, decay=0.5).train()
    real = torch.randn(6, 4)
    pad = torch.ones(26, 4)  # many identical padding tokens
    z = torch.cat([real, pad])[None]
    valid = torch.cat([torch.ones(6), torch.zeros(26)]).bool()[None]
    _, index, loss = q(z, valid)
    assert index.shape == (1, 32)
    assert q.counts.sum() == 6  # only the real vectors are counted
    # the codes started on the real vectors (6 distinct ones among the 8 codes), not on padding
    unit = torch.nn.functional.normalize(real, dim=1)
    cosine = q.normalized_codes() @ unit.T
    assert (cosine.amax(dim=0) > 0.99).all()
    q.eval()  # the loss is that of the real vectors alone
    torch.testing.assert_close(q(z, valid)[2], q(z[:, :6])[2])
    q.train()
    q.reset_counts()
    before = q.normalized_codes().clone()
    q(pad[None], torch.zeros(1, 26, dtype=torch.bool))
    assert q.counts.sum() == 0
    if update == "ema":
        assert torch.equal(q.normalized_codes(), before)


# --------------------------------------------------------------------------- pretraining


@pytest.fixture(scope="module")
def region_pretrainer(windows_by_subject):
    return CodebookPretrainer(region_config()).fit(windows_by_subject)


def test_region_pretraining_learns_only_from_present_regions(region_pretrainer,
                                                              windows_by_subject):
    pre = region_pretrainer
    model = pre.tokenizer_
    assert isinstance(model, SegmentVQVAE)
    assert model.backbone.groups == len(REGIONS)
    for name in pre.subjects_:
        slots = model.adapter.present_slots(name).reshape(len(REGIONS), -1).any(dim=1)
        expected = [r in windows_by_subject[name].regions for r in REGIONS]
        assert slots.tolist() == expected
        assert expected[0] and not expected[2]
    subject = torch.tensor([0, 1, 2])
    valid = valid_groups(model, subject, torch.Size((3, len(REGIONS), 4)))
    assert not valid[:, 2].any() and valid[:, 0].all()
    # the codebook learns from, and counts, the segments of the regions present only
    t = windows_by_subject["01"]
    present = sum(r in t.regions for r in REGIONS)
    copy = deepcopy(model).train()
    copy.quantizer.reset_counts()
    batch = next(iter(pre._batches(t)))
    with torch.no_grad():
        out = copy(batch["x"], batch["subject"])
    n = len(batch["x"]) * present * model.backbone.n_segments
    assert int(out["valid"].sum()) == n == int(copy.quantizer.counts.sum())
    features = pre.features(t)
    assert features.shape == (len(t), len(REGIONS) * model.backbone.n_segments * 16)
    assert np.count_nonzero(features[:, -model.backbone.n_segments * 16:]) == 0


def test_region_checkpoint_round_trips_and_fine_tunes(region_pretrainer, recordings, tmp_path):
    path = region_pretrainer.save(tmp_path / "regions.pt")
    again = CodebookPretrainer.load(path)
    trials = per_subject(recordings, epochs, tmin=0.0, tmax=0.396, labels=STIM)
    t = trials["02"]
    np.testing.assert_array_equal(again.features(t), region_pretrainer.features(t))
    assert again.tokenizer_.adapter.specs["02"].regions == tuple(t.regions)
    dec = CrossSubjectDecoder(region_config(), pretrained=path, seed=0).fit(trials)
    assert set(dec.predict(t)) <= set(STIM.values())
    probe = LinearProbe(again, Cs=(0.1,)).fit(trials)
    assert probe.n_features_ == features_width(again)


def features_width(pre: CodebookPretrainer) -> int:
    bb = pre.encoder_.backbone
    return bb.groups * bb.n_segments * bb.d_model


def test_shipped_region_config_builds():
    cfg = load_model_config("models/codebook_seeg_regions.yaml")
    assert cfg.backbone.params["channels"] == "grouped"
    regions = cfg.adapter.params["regions"]
    assert cfg.latent_dim == len(regions) * cfg.backbone.params["group_width"]


def test_single_channel_tokens_pooled_by_region(windows_by_subject):
    cfg = codebook_config("single")
    pre = CodebookPretrainer(cfg, tokenizer_epochs=1, masked_epochs=1).fit(windows_by_subject)
    t = windows_by_subject["02"].first(20)
    n = t.n_channels
    split = replace(t, regions=["A"] * 3 + ["B"] * (n - 3))
    whole, width = pre.features(t), pre.features(t).shape[1]
    a_b_c = pre.features(split, regions=["A", "B", "C"])
    assert a_b_c.shape == (20, 3 * width)
    assert np.count_nonzero(a_b_c[:, 2 * width:]) == 0  # no channel in C
    # the mean over all channels is the channel-weighted mean of the regions' means
    np.testing.assert_allclose((3 * a_b_c[:, :width] + (n - 3) * a_b_c[:, width:2 * width]) / n,
                               whole, rtol=1e-4, atol=1e-5)
    probe = LinearProbe(pre, regions=["A", "B"], Cs=(0.1,))
    assert probe.get_params()["regions"] == ["A", "B"]
    with pytest.raises(ValueError, match="no region labels"):
        pre.features(replace(t, regions=None), regions=["A"])


def test_region_pooling_needs_single_channel_tokens(region_pretrainer, windows_by_subject):
    with pytest.raises(ValueError, match="not single-channel"):
        region_pretrainer.features(windows_by_subject["01"], regions=["FFA"])
