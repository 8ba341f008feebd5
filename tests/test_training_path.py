"""One training path: (batch, time, channel) windows with identity, spikes, behaviour, events
and stimuli read from stores; the Normalizer; rank-aware samplers; store-backed embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurodecode.data.loader import (
    ChunkBatchSampler,
    LazySignal,
    Normalizer,
    RandomBatchSampler,
    WindowDataset,
    channel_stats,
    collate_windows,
)
from neurodecode.data.samples import epochs, open_recordings, time_samples
from neurodecode.models.contrastive import ContrastiveEmbedding
from neurodecode.schema import events_frame
from neurodecode.simulate import simulate_dataset
from neurodecode.store import (
    StoredArray,
    open_recording,
    read_stimuli,
    recording_path,
    write_recording,
    write_stimuli,
)

from .conftest import small_recording

LENGTH, STRIDE = 1.0, 0.5
N_IMAGES = 6


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """2 subjects of binned spikes (100 Hz, exact spike times kept) x 30 s, small chunks, and
    the stimulus images their ``stim/*`` events show (events' value = image id)."""
    root = tmp_path_factory.mktemp("training_path")
    data = simulate_dataset(n_subjects=2, modalities=("spikes",), duration=30.0, n_runs=1,
                            n_images=N_IMAGES, seed=2)
    paths = []
    for ds in data.recordings:
        paths.append(recording_path(root, "sim", ds))
        write_recording(ds, paths[-1], chunk_bytes=2048)  # chunks of 11 and 23 rows
    stimuli = root / "sim" / "stimuli.zarr"
    write_stimuli(stimuli, data.images, data.image_classes, data.image_params)
    return {"root": root, "paths": paths, "stimuli": stimuli, "data": data}


def _signal(path):
    return np.asarray(open_recording(path)["signal"].values)


def test_batches_are_batch_time_channel_with_identity(sim):
    ds = WindowDataset(sim["root"], length=LENGTH, stride=STRIDE, target="position")
    assert ds.subjects == ["01", "02"] and ds.sessions == ["01/01", "02/01"]
    signals = [_signal(p) for p in ds.recordings]
    n_ch = [s.shape[1] for s in signals]
    assert n_ch[0] != n_ch[1]
    sampler = ChunkBatchSampler(ds, batch_size=32, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_windows)
    sampler.set_epoch(0)
    batches = list(loader)
    sampler.set_epoch(0)  # the same order again
    seen = []
    for batch, indices in zip(batches, list(sampler), strict=True):
        assert batch["x"].shape == (len(indices), 100, max(n_ch))  # (batch, time, channel)
        for k, i in enumerate(indices):
            row = ds.table.iloc[i]
            r = ds.recordings.index(row["recording"])
            assert batch["recording"][k] == r
            assert ds.subjects[batch["subject"][k]] == row["subject"]
            assert ds.sessions[batch["session"][k]] == f"{row['subject']}/{row['session']}"
            assert batch["n_channels"][k] == n_ch[r] and batch["n_times"][k] == 100
            expected = signals[r][row["first"]:row["first"] + 100]
            np.testing.assert_array_equal(batch["x"][k, :, : n_ch[r]].numpy(), expected)
            assert not batch["x"][k, :, n_ch[r]:].any()
            assert batch["start"][k].item() == pytest.approx(row["start"])
        seen.extend(indices)
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(ds)))


def test_trials_and_time_steps_in_the_same_layout(sim):
    recs = open_recordings(sim["paths"][:1])
    stim = sorted(v for v in events_frame(recs[0].ds)["label"].unique() if v.startswith("stim/"))
    trials = WindowDataset(recs, trials=(-0.2, 0.5), labels=stim)
    ref = epochs(recs, tmin=-0.2, tmax=0.5, labels=stim)
    assert len(trials) == len(ref) > 5 and trials.classes == stim
    batch = collate_windows(trials.__getitems__(np.arange(len(trials))))
    assert batch["x"].shape == (len(ref), 71, ref.X.shape[1])  # (batch, time, channel)
    np.testing.assert_array_equal(batch["x"].numpy(), ref.X.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.asarray(trials.classes)[batch["y"].numpy()], ref.y)
    np.testing.assert_allclose(trials.table["onset"], ref.table["onset"])
    # time steps: windows of one sample
    steps = WindowDataset(recs, length=0.01, stride=0.01, target="position")
    ref_steps = time_samples(recs, target="position")
    batch = collate_windows(steps.__getitems__(np.arange(0, len(steps), 7)))
    assert batch["x"].shape == (len(range(0, len(steps), 7)), 1, ref_steps.X.shape[1])
    np.testing.assert_array_equal(batch["x"][:, 0].numpy(), ref_steps.X[::7])
    np.testing.assert_allclose(batch["y"].numpy(), ref_steps.y[::7], rtol=1e-6)
    with pytest.raises(ValueError, match="either length and stride"):
        WindowDataset(recs, length=1.0, stride=1.0, trials=(0.0, 1.0))


def test_normalizer_fitted_on_training_windows_only_and_restored(sim):
    ds = WindowDataset(sim["paths"][:1], length=LENGTH, stride=LENGTH)  # disjoint windows
    train = np.flatnonzero(ds.table["stop"] <= 15.0)
    norm = Normalizer().fit(ds.subset(train))
    x = _signal(ds.recordings[0])
    rows = x[: int(ds.table["stop"].iloc[train[-1]] * 100)]
    mean, std = norm.stats(ds.recordings[0], x.shape[1])
    ref_mean, ref_std = channel_stats(rows)  # the same statistics, for an array
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(ref_mean, rows.astype(np.float64).mean(axis=0), rtol=1e-9,
                               atol=1e-12)
    sd = rows.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(ref_std, np.where(sd > 0, sd, 1.0), rtol=1e-9)
    whole = channel_stats(x)[0]
    assert np.abs(whole - ref_mean).max() > 1e-3  # the other windows would change them
    # (trials, channel, time) arrays: channels on axis 1, as ChannelStandardizer has them
    trials = np.stack([rows[a:a + 100].T for a in range(0, len(rows), 100)])
    np.testing.assert_allclose(channel_stats(trials, channel_axis=1)[0], ref_mean, rtol=1e-9)
    # saved with a model as JSON, restored into a new dataset: the same windows come out
    state = json.loads(json.dumps(norm.state_dict()))
    again = Normalizer()
    again.load_state_dict(state)
    served = WindowDataset(sim["paths"][:1], length=LENGTH, stride=LENGTH, normalizer=again)
    ds.normalizer = norm
    for i in (0, len(ds) - 1):
        np.testing.assert_array_equal(served[i]["x"], ds[i]["x"])
        first = int(ds.table["first"][i])
        np.testing.assert_allclose(served[i]["x"].numpy(),
                                   (x[first:first + 100] - mean) / std, rtol=1e-5, atol=1e-6)


def test_spike_times_per_window_equal_a_brute_force_selection(sim, tmp_path):
    ds = WindowDataset(sim["root"], length=LENGTH, stride=STRIDE, spikes=True)
    recs = [open_recording(p) for p in ds.recordings]
    picks = np.arange(len(ds))
    items = ds.__getitems__(picks)
    total = 0
    for i, item in zip(picks, items, strict=True):
        rec = recs[item["recording"]]
        t = np.asarray(rec["spike_time"].values)
        u = np.asarray(rec["spike_unit"].values)
        start, stop = ds.table["start"][i], ds.table["stop"][i]
        hit = (t >= start) & (t < stop)
        order = np.argsort(t[hit], kind="stable")
        np.testing.assert_array_equal(item["spike_time"].numpy(), (t[hit] - start)[order])
        np.testing.assert_array_equal(item["spike_unit"].numpy(), u[hit][order])
        assert item["spike_time"].dtype == torch.float64
        total += int(hit.sum())
    assert total > 1000  # windows overlap by half: every spike is in two windows
    # padded with a mask in a batch
    batch = collate_windows(items[:8])
    counts = [len(it["spike_time"]) for it in items[:8]]
    assert batch["spike_time"].shape == (8, max(counts))
    assert batch["spike_mask"].sum(dim=1).tolist() == counts
    for k, it in enumerate(items[:8]):
        assert torch.equal(batch["spike_time"][k, : counts[k]], it["spike_time"])
        assert (batch["spike_unit"][k, counts[k]:] == -1).all()
    # a store without spike times is refused, naming it
    eeg = tmp_path / "eeg.zarr"
    write_recording(small_recording(n_times=500), eeg)
    with pytest.raises(ValueError, match=r"eeg\.zarr.*no spike times"):
        WindowDataset([eeg], length=LENGTH, stride=STRIDE, spikes=True)


def test_behaviour_and_events_per_window(sim):
    ds = WindowDataset(sim["paths"][:1], length=LENGTH, stride=STRIDE,
                       behavior=["position", "behavior_speed"], events=True)
    rec = open_recording(ds.recordings[0])
    position = np.asarray(rec["behavior_position"].values)
    speed = np.asarray(rec["behavior_speed"].values)
    ev = events_frame(rec)
    n_events = 0
    for i in range(0, len(ds), 3):
        item = ds[i]
        first, start, stop = ds.table["first"][i], ds.table["start"][i], ds.table["stop"][i]
        np.testing.assert_allclose(item["behavior_position"], position[first:first + 100])
        np.testing.assert_allclose(item["behavior_speed"], speed[first:first + 100])
        assert item["behavior_position"].shape == (100, *position.shape[1:])
        end = ev["onset"] + ev["duration"]
        hit = (ev["onset"] < stop) & ((end > start) | (ev["onset"] >= start))
        np.testing.assert_allclose(item["event_onset"], ev["onset"][hit] - start)
        np.testing.assert_allclose(item["event_value"], ev["value"][hit])
        labels = [ds.event_labels[k] for k in item["event_label"].tolist()]
        assert labels == ev["label"][hit].tolist()
        n_events += int(hit.sum())
    assert n_events > 20
    batch = collate_windows([ds[i] for i in range(4)])
    assert batch["behavior_position"].shape == (4, 100, *position.shape[1:])
    assert batch["event_mask"].shape[0] == 4 and batch["event_mask"].dtype == torch.bool
    with pytest.raises(ValueError, match="no behaviour 'behavior_heading'"):
        WindowDataset(sim["paths"][:1], length=LENGTH, stride=STRIDE, behavior=["heading"])


def test_stimuli_round_trip_by_id_and_per_window(sim, tmp_path):
    data = sim["data"]
    got = read_stimuli(sim["stimuli"], ids=[3, 0, 3])
    np.testing.assert_array_equal(got["ids"], [3, 0, 3])
    np.testing.assert_array_equal(got["images"], data.images[[3, 0, 3]].astype(np.float32))
    np.testing.assert_array_equal(got["classes"], data.image_classes[[3, 0, 3]])
    np.testing.assert_array_equal(got["params"], data.image_params[[3, 0, 3]])
    every = read_stimuli(sim["stimuli"])
    assert every["images"].shape == (N_IMAGES, 32, 32)
    for bad in (N_IMAGES, -1, 1.5):
        with pytest.raises(ValueError, match=rf"stimuli\.zarr: stimulus id {bad}"):
            read_stimuli(sim["stimuli"], ids=[0, bad])
    with pytest.raises(FileNotFoundError, match="no stimulus store"):
        read_stimuli(tmp_path / "missing.zarr")
    # per window: the image whose stim/* event is active at the window's last sample
    ds = WindowDataset(sim["root"], length=LENGTH, stride=STRIDE, stimuli=sim["stimuli"],
                       stimulus_labels=["stim/*"])
    shown = 0
    items = ds.__getitems__(np.arange(len(ds)))
    stim_events = [events_frame(open_recording(p)) for p in ds.recordings]
    for i, item in enumerate(items):
        ev = stim_events[item["recording"]]
        ev = ev[ev["label"].str.startswith("stim/")]
        end = ds.table["stop"][i] - 0.01
        on = ev[(ev["onset"] <= end) & (end < ev["onset"] + ev["duration"])]
        expected = int(on["value"].iloc[-1]) if len(on) else -1
        assert item["stimulus_id"].item() == expected
        image = data.images[expected] if expected >= 0 else np.zeros((32, 32))
        np.testing.assert_array_equal(item["stimulus"].numpy(), image.astype(np.float32))
        shown += expected >= 0
    assert 0 < shown < len(ds)
    with pytest.raises(ValueError, match="stimulus_labels"):
        WindowDataset(sim["root"], length=LENGTH, stride=STRIDE, stimuli=sim["stimuli"])
    two = tmp_path / "two.zarr"
    write_stimuli(two, data.images[:2], data.image_classes[:2])
    with pytest.raises(ValueError, match=r"sub-01.*stim/.* not an image id of .*two\.zarr"):
        WindowDataset(sim["root"], length=LENGTH, stride=STRIDE, stimuli=two,
                      stimulus_labels=["stim/*"])


@pytest.mark.parametrize("kind", ["chunk", "random"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_get_disjoint_batches_and_every_window_once(sim, kind, drop_last):
    ds = WindowDataset(sim["root"], length=LENGTH, stride=0.25)
    n, bs = len(ds), 16

    def make(rank, num_replicas=2):
        if kind == "chunk":
            return ChunkBatchSampler(ds, bs, pool=2, drop_last=drop_last, seed=5,
                                     num_replicas=num_replicas, rank=rank)
        return RandomBatchSampler(ds, bs, drop_last=drop_last, seed=5,
                                  num_replicas=num_replicas, rank=rank)

    ranks = [make(0), make(1)]
    epochs = []
    for epoch in (0, 1):
        per_rank = []
        for s in ranks:
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])  # equal lengths
        flat = [np.concatenate(b) for b in per_rank]
        assert not np.intersect1d(flat[0], flat[1]).size  # disjoint
        both = np.concatenate(flat)
        assert len(np.unique(both)) == len(both)  # nothing repeated
        assert max(len(b) for r in per_rank for b in r) <= bs
        if drop_last:
            assert all(len(b) == bs for r in per_rank for b in r)
            assert len(both) == n // (2 * bs) * 2 * bs
        else:
            np.testing.assert_array_equal(np.sort(both), np.arange(n))  # every window once
        epochs.append(both)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled per epoch
    ranks[0].set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(list(ranks[0])),
                                  epochs[0][: len(np.concatenate(list(make(0))))])
    # one rank alone serves what the two serve together
    single = make(0, num_replicas=1)
    single.set_epoch(0)
    assert sum(len(b) for b in single) == (n // bs * bs if drop_last else n)


def test_ranks_default_from_torch_distributed(sim, monkeypatch):
    ds = WindowDataset(sim["paths"][:1], length=LENGTH, stride=STRIDE)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    sampler = ChunkBatchSampler(ds, batch_size=8)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    with pytest.raises(ValueError, match="rank must be in"):
        RandomBatchSampler(ds, batch_size=8, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="without repeating windows"):
        RandomBatchSampler(3, batch_size=1, num_replicas=2)


def test_store_backed_contrastive_fit_equals_in_memory(sim, monkeypatch):
    full = WindowDataset(sim["root"], length=LENGTH, stride=STRIDE)
    train = np.flatnonzero((full.table["stop"] <= 12.0) | (full.table["start"] >= 16.0))
    ds = full.subset(train)
    ds.normalizer = Normalizer().fit(ds)
    params = dict(conditional="time_delta", output_dim=3, hidden_dim=8, receptive_field=5,
                  batch_size=16, max_iter=25, random_state=4)
    spans = []
    read_span = WindowDataset.read_span

    def spy(self, recording, start, stop):
        spans.append((recording, stop - start))
        return read_span(self, recording, start, stop)

    monkeypatch.setattr(WindowDataset, "read_span", spy)
    trained = []  # reads made by the training steps (the anchors are embedded after them)
    lazy = ContrastiveEmbedding(**params).fit(ds, y="position",
                                              callback=lambda step, est: trained.append(len(spans)))
    monkeypatch.undo()
    # the same samples as arrays: covered rows, normalised, their behaviour and positions
    xs, ys, ps = [], [], []
    for path in ds.recordings:
        rec = open_recording(path)
        sel = ds.table["recording"] == path
        rows = np.unique(np.concatenate([np.arange(f, f + 100) for f in ds.table["first"][sel]]))
        assert rows.max() - rows.min() + 1 > len(rows)  # the split's gap cuts the session
        xs.append(ds.normalizer.transform(np.asarray(rec["signal"].values)[rows], path))
        ys.append(np.asarray(rec["behavior_position"].values)[rows])
        ps.append(rows)
    eager = ContrastiveEmbedding(**params).fit(xs, y=ys, positions=ps)
    for key, value in eager.encoder_.state_dict().items():
        np.testing.assert_array_equal(lazy.encoder_.state_dict()[key], value)  # identical
    np.testing.assert_array_equal(lazy.log_["loss"], eager.log_["loss"])
    for s, x in enumerate(xs):
        np.testing.assert_allclose(lazy.transform(x, session=s), eager.transform(x, session=s),
                                   rtol=1e-5, atol=1e-6)
    assert lazy.n_features_in_ == xs[0].shape[1] and lazy.n_sessions_ == 2
    # each training step read the rows of its batch (3 x 16 windows of 5 samples per session)
    # and at most a chunk more around each window, never a whole recording
    n_times = StoredArray(ds.recordings[0]).shape[0]
    assert len(trained) == 25
    for a, b in zip([0, *trained[:-1]], trained, strict=True):
        for r in (0, 1):
            rows = sum(n for rec, n in spans[a:b] if rec == r)
            assert 0 < rows <= 3 * 16 * (5 + ds.chunk_rows[r]) < n_times / 2
    sessions = ds.training_sessions("position")
    assert isinstance(sessions[0].signal, LazySignal)
    np.testing.assert_array_equal(sessions[0].signal.numpy(), xs[0])
    with pytest.raises(ValueError, match="needs y, the name of a behaviour covariate"):
        ContrastiveEmbedding(**params).fit(ds)
    with pytest.raises(TypeError, match="one at a time"):
        lazy.transform(ds)


def test_in_memory_recordings_are_refused_with_their_id():
    recs = open_recordings([small_recording(n_times=300)])
    with pytest.raises(ValueError, match=r"memory:.*not a recording store"):
        WindowDataset(recs, length=LENGTH, stride=STRIDE)
