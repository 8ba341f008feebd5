"""The deep-learning data path: WindowDataset, Normalizer, samplers, DataModule, Lightning."""

from __future__ import annotations

import json
import os

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurodecode.data.loader import (
    ChunkBatchSampler,
    Normalizer,
    RandomBatchSampler,
    WindowDataModule,
    WindowDataset,
    collate_windows,
)
from neurodecode.data.samples import open_recordings, windows
from neurodecode.data.splits import (
    MODALITY_MARGINS,
    ContiguousBlocks,
    LeakageError,
    LeaveOneGroupOut,
    WithinRecordingShuffle,
    default_gap,
)
from neurodecode.simulate import simulate_dataset
from neurodecode.store import recording_path, write_recording

from .conftest import small_recording

LENGTH, STRIDE = 1.0, 0.25
CHUNK_BYTES = 16384  # small chunks (2-4 s), so that 60 s recordings span many of them


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    """2 subjects (4 and 7 EEG channels) x 3 runs x 60 s at 250 Hz, in small chunks."""
    root = tmp_path_factory.mktemp("loader")
    sim = simulate_dataset(
        n_subjects=2, modalities=("eeg",), duration=60.0, n_runs=3, seed=1,
        eeg={"n_channels": (4, 8)},
    )  # fmt: skip
    for ds in sim.recordings:
        write_recording(ds, recording_path(root, "sim", ds), chunk_bytes=CHUNK_BYTES)
    return root


@pytest.fixture(scope="module")
def drift_store(tmp_path_factory):
    """One recording whose channels drift linearly, plus an EOG channel that is never served."""
    ds = small_recording(n_times=6000, n_channels=6, sfreq=100.0, seed=3,
                         ch_types=["eeg"] * 5 + ["eog"], subject="03")
    drift = np.linspace(0.0, 5e-5, 6000, dtype=np.float32)[:, None] * np.arange(1, 7)
    ds["signal"] = ds["signal"] + drift.astype(np.float32)
    path = tmp_path_factory.mktemp("drift") / "drift.zarr"
    write_recording(ds, path, chunk_bytes=1024)
    return path


def test_windows_and_targets_match_samples(sim_root):
    recs = open_recordings(sim_root)
    ds = WindowDataset(recs, length=LENGTH, stride=STRIDE, target="position")
    assert ds.subjects == ["01", "02"] and ds.sessions == ["01/01", "02/01"]
    assert len({len(c) for c in ds.ch_names}) == 2  # 4 and 7 channels
    for subject in ("01", "02"):
        sub = [r for r in recs if r.identity["subject"] == subject]
        ref = windows(sub, length=LENGTH, stride=STRIDE, target="position")
        rows = np.flatnonzero(ds.table["subject"] == subject)
        np.testing.assert_array_equal(ds.table.iloc[rows].reset_index(drop=True), ref.table)
        ref_x = ref.X.transpose(0, 2, 1)  # samples.windows is (n, channel, time)
        items = ds.__getitems__(rows)  # batched reads, (time, channel) per item ...
        np.testing.assert_array_equal(np.stack([it["x"].numpy() for it in items]), ref_x)
        np.testing.assert_array_equal(np.stack([it["y"].numpy() for it in items]),
                                      ref.y.astype(np.float32))
        for k in (0, 7, len(rows) - 1):  # ... and single ones
            item = ds[int(rows[k])]
            np.testing.assert_array_equal(item["x"].numpy(), ref_x[k])
            assert item["x"].dtype == torch.float32 and item["x"].shape == (250, ref.X.shape[1])
            assert ds.subjects[item["subject"]] == subject
            assert ds.sessions[item["session"]] == f"{subject}/01"
            assert ds.recordings[item["recording"]] == ref.table["recording"][k]


def test_event_targets_are_class_indices(sim_root):
    recs = open_recordings(sim_root, subjects=["01"])
    ds = WindowDataset(recs, length=LENGTH, stride=STRIDE, target="events")
    ref = windows(recs, length=LENGTH, stride=STRIDE, target="events")
    assert len(ds) == len(ref) < len(WindowDataset(recs, length=LENGTH, stride=STRIDE))
    assert ds.classes == sorted(set(ref.y))
    y = np.array([ds[i]["y"].item() for i in range(len(ds))])
    assert ds[0]["y"].dtype == torch.int64
    np.testing.assert_array_equal(np.asarray(ds.classes)[y], ref.y)
    stim = sorted(c for c in ds.classes if c.startswith("stim/"))
    mapping = {label: label.split("/")[1] for label in stim}
    ds2 = WindowDataset(recs, length=LENGTH, stride=STRIDE, target="events", labels=mapping)
    ref2 = windows(recs, length=LENGTH, stride=STRIDE, target="events", labels=mapping)
    assert ds2.classes == list(mapping.values())
    np.testing.assert_array_equal(np.asarray(ds2.classes)[ds2._y], ref2.y)


def test_table_subset_and_mixed_channel_counts_pad(sim_root, drift_store):
    recs = open_recordings(sim_root, runs=["01"]) + open_recordings([drift_store])
    full = WindowDataset(recs, length=LENGTH, stride=STRIDE)
    table = full.table[full.table["start"] < 10.0]
    ds = WindowDataset(recs, length=LENGTH, stride=STRIDE, table=table)
    assert len(ds) == len(table) and ds.recordings == full.recordings
    assert ds.ch_names[2] == [f"EEG{i:03d}" for i in range(5)]  # the EOG channel is left out
    assert "y" not in ds[0]
    bad = table.assign(first=table["first"] + 1)
    with pytest.raises(ValueError, match="not a window"):
        WindowDataset(recs, length=LENGTH, stride=STRIDE, table=bad)
    # windows of 4, 7 and 5 channels at 250 and 100 Hz in one batch: zero-padded, and
    # (batch, time, channel) like every model's input
    pick = [int(np.flatnonzero(ds.table["recording"] == r)[3]) for r in ds.recordings]
    batch = collate_windows([ds[i] for i in pick])
    assert batch["x"].shape == (3, 250, 7)
    assert batch["n_channels"].tolist() == [4, 7, 5] and batch["n_times"].tolist() == [250] * 2 + [
        100]
    for k, i in enumerate(pick):
        x = ds[i]["x"]
        assert torch.equal(batch["x"][k, : x.shape[0], : x.shape[1]], x)
        assert not batch["x"][k, x.shape[0]:].any() and not batch["x"][k, :, x.shape[1]:].any()
    assert batch["recording"].tolist() == [0, 1, 2] and batch["subject"].tolist() == [0, 1, 2]


def test_normalizer_fitted_on_training_windows_only(drift_store, monkeypatch):
    recs = open_recordings([drift_store])
    ds = WindowDataset(recs, length=LENGTH, stride=0.5)
    ref = windows(recs, length=LENGTH, stride=0.5)
    train = np.flatnonzero(ds.table["stop"] <= 40.0)
    reads = []
    read_span = WindowDataset.read_span

    def spy(self, recording, start, stop):
        reads.append((start, stop))
        return read_span(self, recording, start, stop)

    monkeypatch.setattr(WindowDataset, "read_span", spy)
    norm = Normalizer("channel").fit(ds.subset(train))
    monkeypatch.undo()
    # streamed: whole shards at most, and nothing past the last training window is read
    assert len(reads) > 1 and max(b - a for a, b in reads) <= ds.shard_rows[0]
    assert max(b for _, b in reads) == ds.table["first"][train[-1]] + 100
    x_train = ref.X[train].astype(np.float64)
    mean, std = norm.stats(str(drift_store), 5)
    np.testing.assert_allclose(mean, x_train.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, x_train.std(axis=(0, 2)), rtol=1e-5)
    all_mean = ref.X.astype(np.float64).mean(axis=(0, 2))
    assert np.all(np.abs(all_mean - mean) > 0.2 * std)  # the drift: train-only stats differ
    scalar = Normalizer("recording").fit(ds.subset(train))
    m1, s1 = scalar.stats(str(drift_store), 5)
    np.testing.assert_allclose(m1, x_train.mean(), rtol=1e-5)
    np.testing.assert_allclose(s1, x_train.std(), rtol=1e-5)
    # round trip through JSON
    state = json.loads(json.dumps(norm.state_dict()))
    again = Normalizer()
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.stats(str(drift_store), 5)[0], mean)
    # applied in __getitem__ and __getitems__
    ds.normalizer = again
    expected = (ref.X[50].T - mean) / std
    np.testing.assert_allclose(ds[50]["x"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds.__getitems__([49, 50])[1]["x"], ds[50]["x"])
    # a recording without training windows gets the pooled statistics
    np.testing.assert_allclose(again.stats("elsewhere.zarr", 5)[0], mean)


def _chunks(ds, batch):
    """(recording, chunk) pairs the windows of a batch overlap."""
    out = set()
    for i in batch:
        r, first, n = int(ds._rec[i]), int(ds._first[i]), int(ds._n[i])
        rows = ds.chunk_rows[r]
        out |= {(r, c) for c in range(first // rows, (first + n - 1) // rows + 1)}
    return out


def test_chunk_batch_sampler(sim_root):
    ds = WindowDataset(sim_root, length=LENGTH, stride=STRIDE, target="position")
    sampler = ChunkBatchSampler(ds, batch_size=16, pool=2, seed=3)
    span = max(-(-250 // rows) + 1 for rows in ds.chunk_rows)  # chunks a window may overlap
    group = {int(i): g for g, members in enumerate(sampler.groups) for i in members}
    # the most groups a pool can hold: the smallest ones, until they hold a batch
    sizes = np.cumsum(np.sort([len(g) for g in sampler.groups]))
    worst_pool = max(sampler.pool, int(np.searchsorted(sizes, 16)) + 1)
    epochs = []
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) == -(-len(ds) // 16)
        flat = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(flat), np.arange(len(ds)))
        groups = max(len({group[i] for i in b}) for b in batches)
        assert groups <= 2 * worst_pool  # a batch draws from at most 2 pools
        assert max(len(_chunks(ds, b)) for b in batches) <= 2 * worst_pool * span
        epochs.append(flat)
    assert not np.array_equal(epochs[0], epochs[1])
    sampler.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(list(sampler)), epochs[0])
    random = list(RandomBatchSampler(ds, batch_size=16, seed=3))
    np.testing.assert_array_equal(np.sort(np.concatenate(random)), np.arange(len(ds)))
    mean_chunks = np.mean([len(_chunks(ds, b)) for b in batches])
    assert mean_chunks < 0.5 * np.mean([len(_chunks(ds, b)) for b in random])
    shard = ChunkBatchSampler(ds, batch_size=16, group_by="shard")
    assert len(shard.groups) < len(sampler.groups)


def test_batched_reads_merge_nearby_windows(sim_root, monkeypatch):
    ds = WindowDataset(sim_root, length=LENGTH, stride=STRIDE)
    chunked = next(iter(ChunkBatchSampler(ds, batch_size=32, pool=2)))
    random = next(iter(RandomBatchSampler(ds, batch_size=32)))
    counts = []
    read_span = WindowDataset.read_span

    def spy(self, recording, start, stop):
        counts[-1] += 1
        return read_span(self, recording, start, stop)

    monkeypatch.setattr(WindowDataset, "read_span", spy)
    for batch in (chunked, random):
        counts.append(0)
        items = ds.__getitems__(batch)
        for i, item in zip(batch, items, strict=True):
            assert item["recording"] == ds._rec[i]
            np.testing.assert_array_equal(
                item["x"], read_span(ds, int(ds._rec[i]), int(ds._first[i]),
                                     int(ds._first[i] + ds._n[i])))
    assert counts[0] <= 4 < 16 <= counts[1]


class _PidWindows(WindowDataset):
    """Records which process read each window."""

    def __getitems__(self, indices):
        items = super().__getitems__(indices)
        for item in items:
            item["pid"] = os.getpid()
        return items


def test_dataloader_with_two_worker_processes(sim_root):
    ds = _PidWindows(open_recordings(sim_root, runs=["01"]), length=LENGTH, stride=STRIDE,
                     target="position")
    ds.normalizer = Normalizer().fit(ds.subset(np.arange(0, len(ds), 3)))
    ds[0]  # open the stores in this process first: workers must open their own
    sampler = ChunkBatchSampler(ds, batch_size=16, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=collate_windows)
    sampler.set_epoch(0)
    batches = list(loader)
    pids = {int(p) for b in batches for p in b["pid"]}
    assert len(pids) == 2 and os.getpid() not in pids
    sampler.set_epoch(0)
    for batch, indices in list(zip(batches, sampler, strict=True))[:5]:
        ref = collate_windows([ds[i] for i in indices])
        assert torch.equal(batch["x"], ref["x"]) and torch.equal(batch["y"], ref["y"])
        assert torch.equal(batch["subject"], ref["subject"])


class _Linear(L.LightningModule):
    """Per-channel window means -> position, through one linear layer."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_channels, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.losses: list[float] = []

    def _loss(self, batch):
        pred = self.linear(batch["x"].mean(dim=1)).squeeze(-1)  # mean over time
        return torch.nn.functional.mse_loss(pred, batch["y"])

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_lightning_fit_through_the_datamodule(sim_root, tmp_path):
    L.seed_everything(0, verbose=False)
    dm = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position",
                          split=LeaveOneGroupOut("run"), fold=0, batch_size=16, num_workers=2)
    model = _Linear(n_channels=7)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", limit_train_batches=25,
                        limit_val_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert len(model.losses) == 25
    assert np.mean(model.losses[-5:]) < 0.6 * np.mean(model.losses[:5])
    val_y = torch.stack([dm.val_dataset[i]["y"] for i in range(32)])
    assert trainer.callback_metrics["val_loss"] < 0.5 * torch.mean(val_y**2)  # untrained: y**2
    runs = {name: set(getattr(dm, f"{name}_dataset").table["run"]) for name in
            ("train", "val", "test")}
    assert runs == {"train": {"03"}, "val": {"02"}, "test": {"01"}}
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    ckpt = torch.load(tmp_path / "model.ckpt", weights_only=False)
    state = json.loads(json.dumps(ckpt["WindowDataModule"]))
    assert state["normalizer"]["per"] == "channel" and state["subjects"] == ["01", "02"]
    assert set(state["normalizer"]["recordings"]) == set(dm.train_dataset.recordings[2::3])


def test_datamodule_default_split_keeps_a_gap(sim_root):
    dm = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position", fold=1,
                          num_workers=0)
    dm.setup("fit")
    # the gap is derived from the samples: the window length plus the EEG margin
    assert isinstance(dm.split, ContiguousBlocks) and dm.split.gap is None
    gap = default_gap(dm.train_dataset.table)
    assert gap == pytest.approx(LENGTH + MODALITY_MARGINS["eeg"])
    train, test = dm.train_dataset.table, dm.test_dataset.table
    for rec, t in test.groupby("recording"):
        a = train[train["recording"] == rec]
        dist = np.maximum(a["start"].to_numpy()[:, None] - t["stop"].to_numpy()[None],
                          t["start"].to_numpy()[None] - a["stop"].to_numpy()[:, None])
        assert dist.min() >= gap - 1e-9
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (64, 250, 7)
    first = next(iter(dm.val_dataloader()))  # sequential, padded to 7 channels
    assert first["x"].shape[2] == 7 and first["n_channels"][0] == 4
    assert torch.equal(first["x"][0, :, :4], dm.val_dataset[0]["x"])


def test_datamodule_explicit_lists_state_and_leaky_splits(sim_root):
    recs = open_recordings(sim_root)
    ok = {"train": [r.path for r in recs[:4]], "test": [recs[5].path]}
    dm = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position", split=ok,
                          num_workers=0)
    dm.setup("fit")
    assert dm.normalizer.fitted_on == [r.path for r in recs[:4]]
    assert dm.val_dataloader() == [] and set(dm.test_dataset.table["recording"]) == {recs[5].path}
    # a model's DataModule state restores the normaliser and the index maps, before or after
    # setup, instead of refitting
    state = json.loads(json.dumps(dm.state_dict()))
    assert state["subjects"] == ["01", "02"] and state["classes"] is None
    mean = dm.normalizer.stats(recs[0].path, 4)[0]
    for before_setup in (True, False):
        dm2 = WindowDataModule([r.path for r in recs[4:]], length=LENGTH, stride=STRIDE,
                               target="position", num_workers=0,
                               split={"train": [recs[4].path], "test": [recs[5].path]})
        if not before_setup:
            dm2.setup("test")
            assert dm2.test_dataset.subjects == ["02"]
        dm2.load_state_dict(state)
        dm2.setup("test")
        assert dm2.test_dataset.subjects == ["01", "02"] and dm2.test_dataset[0]["subject"] == 1
        np.testing.assert_array_equal(dm2.normalizer.stats(recs[0].path, 4)[0], mean)


def test_datamodule_refuses_leaky_splits(sim_root):
    recs = open_recordings(sim_root)
    leaky = {"train": [recs[0].path, recs[1].path], "test": [recs[1].path]}
    rules = [leaky, WithinRecordingShuffle(n_splits=2), ContiguousBlocks(n_blocks=5, gap=0.0)]
    for rule in rules:
        dm = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position",
                              split=rule, num_workers=0)
        with pytest.raises(LeakageError):
            dm.setup("fit")


def test_datamodule_takes_scikit_learn_splitters(sim_root):
    """GroupKFold over subjects keeps each subject on one side; KFold over windows leaks."""
    from sklearn.model_selection import GroupKFold, KFold

    dm = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position",
                          split=GroupKFold(2), groups="subject", val_fold=None, num_workers=0)
    dm.setup("fit")
    train, test = dm.train_dataset.table, dm.test_dataset.table
    assert len(set(test["subject"])) == 1 and not set(test["subject"]) & set(train["subject"])
    assert len(train) + len(test) == len(dm.train_dataset.table) + len(dm.test_dataset.table)
    leaky = WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position",
                             split=KFold(5), val_fold=None, num_workers=0)
    with pytest.raises(LeakageError):
        leaky.setup("fit")
    with pytest.raises(ValueError, match="no column"):
        WindowDataModule(sim_root, length=LENGTH, stride=STRIDE, target="position",
                         split=GroupKFold(2), groups="animal", num_workers=0).setup("fit")
