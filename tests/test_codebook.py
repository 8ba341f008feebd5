"""The codebook model family: quantiser health and restarts, masking, checkpoints, fine-tuning.

Covers :mod:`neurodecode.models.codebook` (the cosine codebook, the VQ-VAE and masked-code
models, :class:`CodebookPretrainer` and :func:`transfer`), the ``segment_transformer`` backbone,
the ``channels`` adapter, their configs, and ``simulate_ieeg(responsive=...)``.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from neurodecode.data.samples import epochs, open_recordings, windows
from neurodecode.data.subjects import SubjectScaler, TrialDataset, per_subject, subject_loader
from neurodecode.models import registry
from neurodecode.models._fit import fit_lightning
from neurodecode.models.adapters.base import SubjectSpec
from neurodecode.models.codebook import (
    CodebookPretrainer,
    MaskedCodeModel,
    SegmentVQVAE,
    VectorQuantizer,
    random_segment_mask,
    transfer,
)
from neurodecode.models.codebook.probe import LinearProbe, block_folds
from neurodecode.models.config import load_model_config
from neurodecode.models.cross_subject import CrossSubjectModel
from neurodecode.models.decoder import MODELS_DIR, CrossSubjectDecoder, resolve_config, spec_of
from neurodecode.models.tasks.pretrain import TokenizerTask
from neurodecode.simulate import (
    IEEG_REGIONS,
    SHAPE_FAMILIES,
    simulate_dataset,
    simulate_ieeg,
    simulate_latent,
)

#: Two stimulus classes of the simulation, as event label → class name.
STIM = {f"stim/{f}": f for f in SHAPE_FAMILIES[:2]}
#: Samples per window and per trial (0.4 s at 250 Hz): four segments of 25.
N_TIMES = 100
CODES = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny models train several times faster on one thread of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def codebook_config(channels: str = "fused", *, dropout: float = 0.1, lr: float = 1e-3,
                    **pretrain) -> dict:
    """A tiny codebook model: fused (subject_linear, 4 virtual channels) or single-channel."""
    fused = channels == "fused"
    return {
        "name": f"tiny_codebook_{channels}", "task": "classify",
        "latent_dim": 4 if fused else 12,
        "adapter": ({"name": "subject_linear", "params": {"dropout": dropout}} if fused
                    else {"name": "channels"}),
        "backbone": {"name": "segment_transformer",
                     "params": {"segment": 25, "d_model": 16, "n_heads": 2, "n_layers": 1,
                                "conv_channels": 8, "kernel": 3, "dropout": dropout,
                                "channels": channels}},
        "head": {"name": "classify"},
        "train": {"max_epochs": 1, "patience": 2, "batch_size": 32, "lr": lr},
        "pretrain": {"codebook_size": CODES, "code_dim": 8, "decay": 0.8, "dead_share": 0.2,
                     "restart_every": 5, "tokenizer_epochs": 3, "masked_epochs": 2,
                     "batch_size": 32, "patience": 2, **pretrain},
    }


@pytest.fixture(scope="module")
def recordings():
    """Three simulated sEEG subjects with 6-10 contacts each, 40 s, two stimulus classes."""
    sim = simulate_dataset(n_subjects=3, modalities=("seeg",), duration=40.0, n_classes=2,
                           seed=1, seeg={"n_electrodes": (6, 10)})
    return open_recordings(sim.recordings)


@pytest.fixture(scope="module")
def windows_by_subject(recordings):
    """Unlabelled 0.4 s windows (stride 0.2 s) of every subject."""
    out = per_subject(recordings, windows, length=0.4, stride=0.2)
    assert {t.n_times for t in out.values()} == {N_TIMES}
    return out


@pytest.fixture(scope="module")
def trials_by_subject(recordings):
    """Labelled 0.4 s trials after each stimulus onset (as long as the windows)."""
    out = per_subject(recordings, epochs, tmin=0.0, tmax=0.396, labels=STIM)
    assert {t.n_times for t in out.values()} == {N_TIMES}
    return out


@pytest.fixture(scope="module")
def pretrainer(windows_by_subject):
    """Both pretraining stages on the three subjects' windows (about 2 s)."""
    return CodebookPretrainer(codebook_config()).fit(windows_by_subject)


def _mixed_batch(specs: dict[str, SubjectSpec], n: int = 4, n_times: int = N_TIMES
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples alternating over the subjects, zero-padded beyond each one's channels."""
    gen = torch.Generator().manual_seed(0)
    width = max(s.n_channels for s in specs.values())
    subject = torch.arange(n) % len(specs)
    x = torch.zeros(n, n_times, width)
    for i, s in enumerate(subject.tolist()):
        c = list(specs.values())[s].n_channels
        x[i, :, :c] = torch.randn(n_times, c, generator=gen)
    return x, subject


# --------------------------------------------------------------------------- the quantiser


def _one_code_codebook(update: str) -> tuple[VectorQuantizer, torch.Tensor]:
    """A codebook that sends every input of its batch to code 0, and that batch.

    Code 0 is a direction ``u``, every other code ``-u``; the inputs are ``u`` plus noise
    orthogonal to it, so each is nearer to code 0 (and stays so as EMA moves code 0).
    """
    torch.manual_seed(0)
    q = VectorQuantizer(CODES, 8, update=update, decay=0.5)
    u = F.normalize(torch.randn(8), dim=0)
    noise = torch.randn(512, 8)
    z = u + noise - (noise @ u)[:, None] * u
    with torch.no_grad():
        q.codes.copy_(-u.expand(CODES, 8))
        q.codes[0] = u
        if update == "ema":
            q.ema_sum.copy_(q.codes)
        q.initialized.fill_(True)  # keep the collapsed start (no data-dependent init)
    return q, z


@pytest.mark.parametrize("update", ["ema", "straight_through"])
def test_collapsed_codebook_is_detected_and_restarted(update):
    torch.manual_seed(0)
    fresh = VectorQuantizer(CODES, 8, update=update)
    assert not fresh.health(torch.bincount(fresh.assign(torch.randn(512, 8)),
                                           minlength=CODES)).collapsed

    q, z = _one_code_codebook(update)
    q.train()
    for _ in range(8):  # usage of the unchosen codes decays below the dead share
        q(z)
    health = q.health()
    assert health.collapsed and health.used == 1
    assert health.perplexity == pytest.approx(1.0)
    assert health.dead_fraction == (CODES - 1) / CODES

    worst = F.normalize(z, dim=1)[torch.argsort(F.normalize(z, dim=1) @ q.normalized_codes()[0])]
    assert q.restart_dead(z) == CODES - 1
    assert int(q.restarts) == CODES - 1
    # restarted codes sit on the inputs worst served by the collapsed code
    near = (q.normalized_codes()[1:] @ worst[: CODES - 1].T).amax(dim=1)
    assert (near > 0.99).all()

    q.reset_counts()
    q(z)
    health = q.health()
    assert not health.collapsed
    assert health.used >= CODES - 2 and health.perplexity > CODES / 2
    assert health.dead_fraction == 0.0
    assert q.restart_dead(z) == 0  # restarted codes are alive: nothing more to restart


@pytest.mark.parametrize("update", ["ema", "straight_through"])
def test_updates_move_the_assigned_code_towards_its_inputs(update):
    torch.manual_seed(1)
    q = VectorQuantizer(8, 4, update=update, decay=0.8).train()
    q.initialized.fill_(True)  # this test moves the random codes (data init tested apart)
    z = torch.randn(256, 4)
    k = int(torch.bincount(q.assign(z), minlength=8).argmax())
    z = z[q.assign(z) == k]  # the inputs of one code
    target = F.normalize(F.normalize(z, dim=1).mean(0), dim=0)
    before = q.normalized_codes().detach().clone()
    optimizer = torch.optim.SGD([q.codes], lr=0.5) if update == "straight_through" else None
    _, index, loss = q(z)  # one update
    assert (index == k).all()
    if optimizer is not None:
        loss.backward()
        optimizer.step()
    after = q.normalized_codes().detach()
    assert float(after[k] @ target) > float(before[k] @ target) + 0.01
    others = torch.arange(8) != k
    torch.testing.assert_close(after[others], before[others])
    assert isinstance(q.codes, torch.nn.Parameter) == (update == "straight_through")


def test_codes_start_on_the_first_training_batch():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4).train()
    z = F.normalize(torch.randn(64, 4), dim=1) * 0.1 + torch.tensor([3.0, 0, 0, 0])
    assert not bool(q.initialized)
    q(z)  # every vector sits in one small cap: a random codebook serves it with one code
    assert bool(q.initialized)
    # each code is (nearly) one of the batch's vectors
    sim = q.normalized_codes() @ F.normalize(z, dim=1).T
    assert float(sim.amax(dim=1).min()) > 0.99
    assert q.health(torch.bincount(q.assign(z), minlength=16).float()).used > 4
    fresh = VectorQuantizer(16, 4).eval()
    fresh(z)  # evaluation never initialises
    assert not bool(fresh.initialized)


# --------------------------------------------------------------------------- collapse in training


def _eval_health(model: SegmentVQVAE, dataset: TrialDataset, width: int):
    """Codebook health of a model's eval-mode codes over a whole dataset."""
    model.eval()
    counts = torch.zeros(CODES)
    for b in subject_loader(dataset, width, train=False, batch_size=64):
        counts += torch.bincount(model.codes(b["x"], b["subject"]).flatten(),
                                 minlength=CODES).float()
    return model.quantizer.health(counts)


@pytest.fixture(scope="module")
def collapsed_runs(windows_by_subject):
    """Tokenizer trainings from a collapsed codebook, with restarts every 5 steps and never.

    Every code starts identical (each input gets code 0). Returns, per ``restart_every``, the
    start and end health of the eval-mode codes, the fit record and the quantiser.
    """
    scaler = SubjectScaler()
    for t in windows_by_subject.values():
        scaler.fit(t)
    names = list(windows_by_subject)
    dataset = TrialDataset([(i, scaler.transform(windows_by_subject[n]), None)
                            for i, n in enumerate(names)])
    width = max(t.n_channels for t in windows_by_subject.values())
    specs = {n: spec_of(t).to_dict() for n, t in windows_by_subject.items()}
    out = {}
    for every in (5, 10_000):
        torch.manual_seed(0)
        cfg = load_model_config(codebook_config(dropout=0.0, restart_every=every))
        task = TokenizerTask(cfg.model_dump(mode="json"), specs, N_TIMES)
        q = task.model.quantizer
        with torch.no_grad():
            q.codes.copy_(q.codes[:1].expand_as(q.codes))
            q.ema_sum.copy_(q.codes)
            q.initialized.fill_(True)
        start = _eval_health(task.model, dataset, width)
        task.model.train()
        loader = subject_loader(dataset, width, train=True, batch_size=32)
        record = fit_lightning(task, loader, max_epochs=3, patience=2)
        out[every] = {"start": start, "end": _eval_health(task.model, dataset, width),
                      "record": record, "quantizer": q, "steps": record.epochs * len(loader)}
    return out


def test_training_recovers_from_a_collapsed_codebook_by_restarts(collapsed_runs):
    on, off = collapsed_runs[5], collapsed_runs[10_000]
    assert 5 < off["steps"] < 10_000
    for run in (on, off):
        assert run["start"].collapsed and run["start"].used == 1
    assert int(on["quantizer"].restarts) > 0
    assert not on["end"].collapsed and on["end"].perplexity > 4.0
    # the same training without restarts stays collapsed: the restarts are what fixes it
    assert int(off["quantizer"].restarts) == 0
    assert off["end"].collapsed and off["end"].perplexity < 2.0
    assert on["end"].perplexity > 2 * off["end"].perplexity


def test_history_holds_each_epochs_codebook_health(collapsed_runs):
    run = collapsed_runs[5]
    rows, q = run["record"].history, run["quantizer"]
    assert all("perplexity" in row for row in rows)
    last = q.health()  # counts of the last epoch's training assignments
    assert rows[-1]["perplexity"] == pytest.approx(last.perplexity)
    assert rows[-1]["restarts"] == int(q.restarts)


def test_pretrain_tasks_import_on_their_own():
    done = subprocess.run([sys.executable, "-c", "import neurodecode.models.tasks.pretrain"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize(("n", "ratio", "masked"), [
    (10, 0.5, 5), (10, 0.3, 3), (8, 0.75, 6), (10, 0.01, 1), (10, 0.99, 9), (2, 0.9, 1)])
def test_random_segment_mask_counts(n, ratio, masked):
    gen = torch.Generator().manual_seed(0)
    mask = random_segment_mask((400, 3, n), ratio, generator=gen)
    assert mask.dtype == torch.bool and mask.shape == (400, 3, n)
    assert (mask.sum(dim=-1) == masked).all()  # never none, never all
    share = mask.float().mean(dim=(0, 1))  # every position equally likely
    assert torch.allclose(share, torch.full((n,), masked / n), atol=0.06)
    again = random_segment_mask((400, 3, n), ratio, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def _backbone(channels: str, in_features: int) -> torch.nn.Module:
    params = codebook_config(channels)["backbone"]["params"]
    return registry.build("backbone", "segment_transformer", params, in_features=in_features,
                          n_times=N_TIMES)


def _perturbed(x: torch.Tensor, sample: int, segment: int, channel: int | None = None
               ) -> torch.Tensor:
    """``x`` with new values in one segment (25 steps) of one sample (one channel or all)."""
    out = x.clone()
    rows = slice(25 * segment, 25 * (segment + 1))
    cols = slice(None) if channel is None else channel
    out[sample, rows, cols] += 3.0 * torch.randn_like(out[sample, rows, cols])
    return out


def _mask_one(shape: tuple[int, ...], sample: int, group: int, segment: int) -> torch.Tensor:
    mask = random_segment_mask(shape, 0.5, generator=torch.Generator().manual_seed(3))
    mask[sample, group, segment] = True
    mask[sample, group, segment + 1] = False
    return mask


@pytest.mark.parametrize("channels", ["fused", "single"])
def test_masked_segments_do_not_reach_the_tokens(channels):
    torch.manual_seed(0)
    bb = _backbone(channels, 4).eval()
    z = torch.randn(3, N_TIMES, 4)
    group = 2 if channels == "single" else 0
    channel = 2 if channels == "single" else None
    mask = _mask_one((3, bb.groups, bb.n_segments), 0, group, 1)
    with torch.no_grad():
        ref = bb.tokens(z, mask)
        hidden = bb.tokens(_perturbed(z, 0, 1, channel), mask)
        shown = bb.tokens(_perturbed(z, 0, 2, channel), mask)
    assert torch.equal(hidden, ref)  # nothing anywhere changes
    assert not torch.equal(shown[0], ref[0])  # a visible segment does change sample 0
    assert torch.equal(shown[1:], ref[1:])


@pytest.mark.parametrize("channels", ["fused", "single"])
def test_masked_segments_do_not_reach_the_code_logits(channels):
    torch.manual_seed(0)
    specs = {"a": SubjectSpec(5), "b": SubjectSpec(3)}
    model = MaskedCodeModel(load_model_config(codebook_config(channels)), specs, N_TIMES)
    x, subject = _mixed_batch(specs)
    groups, n_seg = model.backbone.groups, model.backbone.n_segments
    group = 2 if channels == "single" else 0
    channel = 2 if channels == "single" else None
    mask = _mask_one((len(x), groups, n_seg), 0, group, 1)
    model.eval()
    with torch.no_grad():
        ref = model.logits(x, subject, mask)
        hidden = model.logits(_perturbed(x, 0, 1, channel), subject, mask)
        shown = model.logits(_perturbed(x, 0, 2, channel), subject, mask)
    assert torch.equal(hidden, ref)
    assert not torch.equal(shown[0], ref[0])

    # no gradient reaches a masked segment's samples, even in training mode (dropout on)
    model.train()
    x = x.clone().requires_grad_(True)
    out = model.logits(x, subject, mask)
    (out * torch.randn_like(out)).sum().backward()
    cols = slice(None) if channel is None else channel
    assert torch.count_nonzero(x.grad[0, 25:50, cols]) == 0
    assert torch.count_nonzero(x.grad[0, 50:75, cols]) > 0


@pytest.mark.parametrize("channels", ["fused", "single"])
def test_complementary_mask_averages_both_halves(channels):
    torch.manual_seed(0)
    specs = {"a": SubjectSpec(5), "b": SubjectSpec(3)}
    model = MaskedCodeModel(load_model_config(codebook_config(channels)), specs, N_TIMES).eval()
    x, subject = _mixed_batch(specs, n=6)
    shape = (len(x), model.backbone.groups, model.backbone.n_segments)
    target = torch.randint(0, CODES, shape)
    mask = random_segment_mask(shape, 0.5, generator=torch.Generator().manual_seed(1))
    n_ch = torch.tensor([specs[n].n_channels for n in ("a", "b")])[subject]
    valid = torch.ones(shape, dtype=torch.bool) if channels == "fused" else (
        torch.arange(shape[1])[None, :, None] < n_ch[:, None, None]).expand(shape)
    with torch.no_grad():
        loss, accuracy = model(x, subject, target, mask, complementary=True)
        one, one_accuracy = model(x, subject, target, mask, complementary=False)
        halves, hits, count = [], 0, 0
        for m in (mask, ~mask):
            use = m & valid
            logits = model.logits(x, subject, m)[use]
            halves.append(F.cross_entropy(logits, target[use]))
            hits += int((logits.argmax(-1) == target[use]).sum())
            count += int(use.sum())
    assert not torch.isclose(halves[0], halves[1])
    torch.testing.assert_close(loss, (halves[0] + halves[1]) / 2)
    torch.testing.assert_close(one, halves[0])
    assert float(accuracy) == pytest.approx(hits / count)
    use = mask & valid
    assert float(one_accuracy) == pytest.approx(
        float((model.logits(x, subject, mask)[use].argmax(-1) == target[use]).float().mean()))


# --------------------------------------------------------------------------- the estimator


def test_pretrainer_records_health_and_throughput(pretrainer, windows_by_subject):
    assert pretrainer.subjects_ == ["01", "02", "03"]
    assert set(pretrainer.history_) == {"tokenizer", "masked"}
    assert {"recon_loss", "val_loss"} <= set(pretrainer.history_["tokenizer"][-1])
    assert {"mask_loss", "mask_accuracy", "val_loss"} <= set(pretrainer.history_["masked"][-1])
    assert set(pretrainer.health_) == {"perplexity", "used", "dead_fraction", "codebook_size",
                                       "collapsed"}
    assert pretrainer.segments_per_s_["tokenizer"] > 0 and pretrainer.segments_per_s_["masked"] > 0
    codes = pretrainer.codes(windows_by_subject["02"])
    assert codes.shape == (len(windows_by_subject["02"]), 1, 4)
    assert codes.min() >= 0 and codes.max() < CODES


def test_checkpoint_round_trips(pretrainer, windows_by_subject, tmp_path):
    path = pretrainer.save(tmp_path / "pre.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "neurodecode.codebook"
    loaded = CodebookPretrainer.load(path)
    assert loaded.subjects_ == pretrainer.subjects_
    for name, t in windows_by_subject.items():
        np.testing.assert_array_equal(loaded.codes(t), pretrainer.codes(t))
        x = torch.as_tensor(pretrainer.scaler_.transform(t)[:8])
        subject = torch.full((len(x),), pretrainer.subjects_.index(name))
        for a, b in zip(loaded.tokenizer_.reconstruction(x, subject),
                        pretrainer.tokenizer_.reconstruction(x, subject), strict=True):
            assert torch.equal(a, b)
    assert loaded.health(windows_by_subject) == pretrainer.health(windows_by_subject)
    assert loaded.reconstruction_r2(windows_by_subject) == pretrainer.reconstruction_r2(
        windows_by_subject)
    assert loaded.mask_accuracy(windows_by_subject) == pretrainer.mask_accuracy(
        windows_by_subject)
    assert loaded.health_ == pretrainer.health_
    assert loaded.history_ == pretrainer.history_
    assert loaded.segments_per_s_ == pretrainer.segments_per_s_
    for a, b in ((loaded.encoder_, pretrainer.encoder_), (loaded.tokenizer_,
                                                          pretrainer.tokenizer_)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_errors_name_the_file(pretrainer, trials_by_subject, tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        CodebookPretrainer.load(missing)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(text)) + ".*not a readable"):
        CodebookPretrainer.load(text)
    other = tmp_path / "other.pt"
    torch.save({"format": "something.else", "version": 1}, other)
    with pytest.raises(ValueError, match=re.escape(str(other)) + ".*not a codebook pretraining"
                       ".*something.else"):
        CodebookPretrainer.load(other)
    pickled = tmp_path / "pickled.pt"  # objects that only a full unpickler rebuilds: refused
    torch.save({"format": "neurodecode.codebook", "where": Path("/tmp")}, pickled)
    with pytest.raises(ValueError, match=re.escape(str(pickled)) + ".*not a readable"):
        CodebookPretrainer.load(pickled)
    decoder = CrossSubjectDecoder(codebook_config()).fit(trials_by_subject["01"],
                                                         classes=list(STIM.values()))
    path = decoder.save(tmp_path / "decoder.pt")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a codebook pretraining"):
        CodebookPretrainer.load(path)
    with pytest.raises(RuntimeError, match="not fitted"):
        CodebookPretrainer(codebook_config()).save(tmp_path / "unfitted.pt")


# --------------------------------------------------------------------------- fine-tuning


def _state_equal(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.allclose(sa[k].float(), sb[k].float(), rtol=0.0, atol=atol) for k in sa)


def test_transfer_copies_the_pretrained_encoder(pretrainer, trials_by_subject):
    specs = {n: spec_of(trials_by_subject[n]) for n in ("01", "02")}
    model = CrossSubjectModel(pretrainer.config_, specs, n_times=N_TIMES, n_outputs=2)
    enc = pretrainer.encoder_
    assert not _state_equal(model.backbone, enc.backbone)
    left = transfer(pretrainer, model)
    assert _state_equal(model.backbone, enc.backbone)
    for name in specs:
        assert _state_equal(model.adapter.subjects[name], enc.adapter.subjects[name])
    assert set(left) == {"03"}
    want = enc.adapter.subjects["03"].state_dict()
    assert left["03"].keys() == want.keys()
    assert all(torch.equal(left["03"][k], want[k]) for k in want)

    other = CrossSubjectModel(pretrainer.config_, {"01": SubjectSpec(3)}, n_times=N_TIMES,
                              n_outputs=2)
    with pytest.raises(ValueError, match="subject '01' has 3 channels here and had 9"):
        transfer(pretrainer, other)
    shorter = CrossSubjectModel(pretrainer.config_, specs, n_times=N_TIMES - 10, n_outputs=2)
    with pytest.raises(ValueError, match=f"windows of {N_TIMES} time steps"):
        transfer(pretrainer, shorter)


def test_fine_tuning_starts_from_the_pretraining(pretrainer, trials_by_subject, tmp_path):
    train = {n: trials_by_subject[n] for n in ("01", "02")}
    classes = list(STIM.values())
    frozen = codebook_config(lr=1e-9)  # one epoch at a negligible rate: the starting point
    dec = CrossSubjectDecoder(frozen, pretrained=pretrainer).fit(train, classes=classes)
    scratch = CrossSubjectDecoder(frozen).fit(train, classes=classes)
    enc = pretrainer.encoder_
    assert _state_equal(dec.model_.backbone, enc.backbone, atol=1e-5)
    assert _state_equal(dec.model_.adapter.subjects["01"], enc.adapter.subjects["01"], atol=1e-5)
    assert not _state_equal(scratch.model_.backbone, enc.backbone, atol=1e-3)
    from_file = CrossSubjectDecoder(frozen, pretrained=pretrainer.save(tmp_path / "p.pt")).fit(
        train, classes=classes)
    assert _state_equal(from_file.model_.backbone, enc.backbone, atol=1e-5)

    # subjects seen only in pretraining start a few-shot adaptation from their adapter
    assert set(dec.pretrained_adapters_) == {"03"}
    new = dec.adapt(trials_by_subject["03"], strategy="a", init="auto", max_epochs=1)
    assert new.adaptations_[-1]["init"] == "pretrained"
    assert _state_equal(new.model_.adapter.subjects["03"], enc.adapter.subjects["03"],
                        atol=1e-5)
    stranger = dataclasses.replace(trials_by_subject["03"], subject="04")
    assert dec.adapt(stranger, strategy="a", max_epochs=1).adaptations_[-1]["init"] == "random"
    with pytest.raises(ValueError, match="'04' was not in this decoder's pretraining"):
        dec.adapt(stranger, strategy="a", init="pretrained", max_epochs=1)

    # the decoder's checkpoint keeps them
    loaded = CrossSubjectDecoder.load(dec.save(tmp_path / "dec.pt"))
    assert set(loaded.pretrained_adapters_) == {"03"}
    assert all(torch.equal(loaded.pretrained_adapters_["03"][k], v)
               for k, v in dec.pretrained_adapters_["03"].items())


def test_fine_tuning_from_a_checkpoint_is_the_same_as_from_the_object(pretrainer,
                                                                      trials_by_subject,
                                                                      tmp_path):
    train = {n: trials_by_subject[n] for n in ("01", "02")}
    classes = list(STIM.values())
    path = pretrainer.save(tmp_path / "p.pt")
    from_object = CrossSubjectDecoder(codebook_config(), pretrained=pretrainer).fit(
        train, classes=classes)
    from_file = CrossSubjectDecoder(codebook_config(), pretrained=path).fit(train,
                                                                           classes=classes)
    assert _state_equal(from_file.model_, from_object.model_)


def test_fine_tuning_refuses_another_backbone(pretrainer, trials_by_subject):
    cfg = codebook_config()
    cfg["backbone"]["params"]["d_model"] = 32
    dec = CrossSubjectDecoder(cfg, pretrained=pretrainer)
    with pytest.raises(ValueError, match=r"backbone\.params\.d_model 16 vs 32"):
        dec.fit(trials_by_subject["01"], classes=list(STIM.values()))


def test_block_folds_cut_each_subject_into_contiguous_blocks():
    folds = block_folds([5, 3], 2)
    assert folds.tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    assert block_folds([10], 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        block_folds([4], 1)


def test_linear_probe_reads_the_frozen_pretraining(pretrainer, trials_by_subject, tmp_path):
    classes = list(STIM.values())
    train = {n: trials_by_subject[n].first(10) for n in ("01", "02", "03")}
    val = {n: trials_by_subject[n].select(np.arange(10, 13)) for n in ("01", "02")}
    test = trials_by_subject["01"].select(np.arange(13, len(trials_by_subject["01"])))
    before = {k: v.clone() for k, v in pretrainer.encoder_.state_dict().items()}
    probe = LinearProbe(pretrainer, Cs=(0.01, 1.0), n_folds=3).fit(
        train, val, classes=[*classes, "unseen"])
    assert all(torch.equal(v, pretrainer.encoder_.state_dict()[k]) for k, v in before.items())
    d = pretrainer.encoder_.backbone.out_features * pretrainer.encoder_.backbone.n_segments
    assert probe.n_features_ == d and pretrainer.features(test).shape == (len(test), d)
    assert probe.C_ in (0.01, 1.0) and probe.cv_scores_.shape == (2,)
    scores = probe.decision_function(test)
    assert scores.shape == (len(test), 3) and np.all(np.isneginf(scores[:, 2]))
    assert set(probe.predict(test)) <= set(classes)
    assert 0.0 <= probe.score(test) <= 1.0
    # the same from the checkpoint, and sklearn can clone it
    again = LinearProbe(pretrainer.save(tmp_path / "p.pt"), Cs=(0.01, 1.0), n_folds=3).fit(
        train, val, classes=[*classes, "unseen"])
    np.testing.assert_allclose(again.decision_function(test), scores, rtol=1e-5, atol=1e-6)
    assert clone(probe).get_params()["Cs"] == (0.01, 1.0)
    # tokens after the transformer are the other layer
    tokens = LinearProbe(pretrainer, layer="tokens", Cs=(1.0,)).fit(train, classes=classes)
    assert tokens.n_features_ == d


def test_linear_probe_errors(pretrainer, trials_by_subject):
    classes = list(STIM.values())
    stranger = dataclasses.replace(trials_by_subject["01"], subject="09")
    with pytest.raises(ValueError, match=r"subjects \['09'\] were not in the pretraining"):
        LinearProbe(pretrainer).fit(stranger, classes=classes)
    with pytest.raises(ValueError, match="layer must be one of"):
        LinearProbe(pretrainer, layer="latent").fit(trials_by_subject["01"], classes=classes)
    unlabelled = dataclasses.replace(trials_by_subject["01"], y=None)
    with pytest.raises(ValueError, match="subject 01: trials have no labels"):
        LinearProbe(pretrainer).fit(unlabelled)
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearProbe(pretrainer).predict(trials_by_subject["01"])
    with pytest.raises(ValueError, match=r"validation subjects \['02'\] have no training"):
        LinearProbe(pretrainer).fit(trials_by_subject["01"], trials_by_subject["02"],
                                    classes=classes)


# --------------------------------------------------------------------------- configs


def test_pretrain_needs_the_segment_transformer(tmp_path):
    cfg = codebook_config()
    cfg["backbone"] = {"name": "residual_mlp", "params": {"hidden": 8}}
    path = tmp_path / "mlp_pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"mlp_pretrain\.yaml.*segment_transformer.*"
                                         r"'residual_mlp'"):
        load_model_config(path)
    del cfg["pretrain"]
    assert load_model_config(cfg).pretrain is None  # the same backbone is fine without it
    with pytest.raises(ValueError, match="has no pretrain section"):
        CodebookPretrainer(cfg)._config()


@pytest.mark.parametrize(("name", "adapter", "channels"), [
    ("codebook_seeg", "subject_linear", "fused"), ("codebook_seeg_single", "channels", "single"),
    ("codebook_seeg_spatial", "spatial_attention", "fused")])
def test_shipped_codebook_configs_load_and_build(name, adapter, channels):
    cfg = load_model_config(MODELS_DIR / f"{name}.yaml")
    assert resolve_config(name) == cfg
    assert cfg.pretrain is not None and cfg.backbone.name == "segment_transformer"
    assert cfg.adapter.name == adapter and cfg.backbone.params["channels"] == channels
    rng = np.random.default_rng(0)
    specs = {s: SubjectSpec(n, positions=tuple(map(tuple, rng.uniform(-0.06, 0.06, (n, 3)))))
             for s, n in (("a", 7), ("b", 12))}
    vq = SegmentVQVAE(cfg, specs, 250)
    out = vq(*_mixed_batch(specs, n=2, n_times=250))
    groups = 1 if channels == "fused" else cfg.latent_dim
    assert out["index"].shape == (2, groups, 10)
    assert torch.isfinite(out["recon_loss"])


# --------------------------------------------------------------------------- model parts


def test_segment_transformer_shapes_and_errors():
    torch.manual_seed(0)
    for channels, groups in (("fused", 1), ("single", 4)):
        params = {**codebook_config(channels)["backbone"]["params"], "segment": 30}
        bb = registry.build("backbone", "segment_transformer", params, in_features=4,
                            n_times=N_TIMES)
        z = torch.randn(2, N_TIMES, 4)
        assert bb.n_segments == 4  # 100 steps: three segments of 30 and a padded one
        assert bb.embed(z).shape == bb.tokens(z).shape == (2, groups, 4, 16)
        assert bb(z).shape == (2, 16)
        with pytest.raises(ValueError, match=r"expects \(batch, time, 4\)"):
            bb(torch.randn(2, N_TIMES, 5))
        with pytest.raises(ValueError, match=f"at most {N_TIMES} time steps"):
            bb(torch.randn(2, N_TIMES + 1, 4))
    with pytest.raises(ValueError, match=r"d_model \(16\) must be a multiple of n_heads \(3\)"):
        registry.validate("backbone", "segment_transformer", {"d_model": 16, "n_heads": 3})


def test_channels_adapter_pads_refuses_and_serves_anyone():
    adapter = registry.build("adapter", "channels", {}, latent_dim=8)
    adapter.add_subject("a", SubjectSpec(3))
    x = torch.randn(2, 10, 3)
    z = adapter(x, "a")
    assert z.shape == (2, 10, 8)
    assert torch.equal(z[..., :3], x) and not z[..., 3:].any()
    assert torch.equal(adapter.decode(z, "a"), x)
    assert adapter.zero_shot and adapter.invertible and not adapter.has_weights("a")
    assert not list(adapter.parameters())
    with pytest.raises(ValueError, match=r"8 slots \(latent_dim\).*9 channels.*raise latent_dim"):
        adapter.add_subject("big", SubjectSpec(9))
    with pytest.raises(ValueError, match="subject 'a': 9 channels for 8 slots"):
        adapter(torch.randn(2, 10, 9), "a")


def test_single_channel_features_ignore_padded_channels():
    torch.manual_seed(0)
    bb8 = _backbone("single", 8).eval()
    bb3 = _backbone("single", 3).eval()
    bb3.load_state_dict(bb8.state_dict())  # the same weights: one tokenizer for every channel
    x = torch.randn(2, N_TIMES, 3)
    with torch.no_grad():
        alone = bb3(x)
        padded = bb8(F.pad(x, (0, 5)))
        extra = bb8(torch.cat([x, torch.randn(2, N_TIMES, 1), torch.zeros(2, N_TIMES, 4)], 2))
    torch.testing.assert_close(padded, alone, rtol=0.0, atol=1e-6)
    assert not torch.allclose(extra, alone, atol=1e-3)  # a fourth real channel does count

    # through a model: a 3-channel subject in a batch padded to 3 or to 8 channels
    cfg = load_model_config(codebook_config("single"))
    model = CrossSubjectModel(cfg, {"a": SubjectSpec(3), "b": SubjectSpec(8)}, n_times=N_TIMES,
                              n_outputs=2).eval()
    model.add_subject("new", SubjectSpec(5), weights=False)  # zero-shot: nothing to learn
    subject = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(model.features(F.pad(x, (0, 5)), subject),
                                   model.features(x, subject), rtol=0.0, atol=1e-6)
        assert model(torch.randn(2, N_TIMES, 5), torch.full((2,), 2)).shape == (2, 2)


# --------------------------------------------------------------------------- the simulator


def test_simulated_response_in_one_region_only():
    """``responsive=("FFA",)``: every subject has FFA contacts; V1 and LO carry no response.

    The stimulus response of a simulation is what changes when ``response_gain`` is 0 (same
    subject, same noise).
    """
    latent = simulate_latent(20.0, seed=2)
    ffa = 1000.0 * np.asarray(IEEG_REGIONS["FFA"])
    default_lacks_ffa = False
    silent, loud = [], []
    for seed in range(8):
        default = simulate_ieeg(latent, seed=seed, n_electrodes=(12, 24))
        default_lacks_ffa |= "FFA" not in default["region"].values
        for responsive in (("FFA",), None):
            kw = {"seed": seed, "n_electrodes": (12, 24), "responsive": responsive}
            ds = simulate_ieeg(latent, **kw)
            response = (ds["signal"].values.astype(np.float64)
                        - simulate_ieeg(latent, **kw, response_gain=0.0)["signal"].values)
            rms = np.sqrt((response**2).mean(axis=0))
            region = ds["region"].values
            assert "FFA" in region or responsive is None
            if "FFA" not in region:
                continue
            pos = 1000.0 * np.column_stack([ds[a].values for a in "xyz"])
            # V1/LO contacts away from FFA's field (s.d. 9 mm)
            far = np.isin(region, ["V1", "LO"]) & (np.linalg.norm(pos - ffa, axis=1) > 25.0)
            if far.any():
                (silent if responsive else loud).append(rms[far].max() / rms[region == "FFA"].max())
    assert default_lacks_ffa  # without the option some subject has no FFA contact
    assert silent and loud
    assert max(silent) < 0.05 < 0.3 < min(loud)
