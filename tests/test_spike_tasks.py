"""Real decoding tasks as spike-token windows: blocks, label alignment, baselines."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from neurodecode.data import spike_tasks as st
from neurodecode.data.splits import check_split
from neurodecode.data.tokens import N_SPECIAL, UnitVocabulary
from neurodecode.schema import make_recording

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")


def _min_distance_between_blocks(lo: np.ndarray, hi: np.ndarray, blocks: np.ndarray) -> float:
    """Smallest distance between spans of different blocks (negative: they overlap)."""
    best = np.inf
    for a in np.unique(blocks):
        for b in np.unique(blocks):
            if a >= b:
                continue
            A, B = blocks == a, blocks == b
            d = np.maximum(lo[B][None, :] - hi[A][:, None], lo[A][:, None] - hi[B][None, :])
            best = min(best, float(d.min()))
    return best


def _check_blocks(lo: np.ndarray, hi: np.ndarray, blocks: np.ndarray, gap: float) -> None:
    order = np.argsort(lo, kind="stable")
    assert np.all(np.diff(blocks[order]) >= 0), "blocks are not contiguous in time"
    assert _min_distance_between_blocks(lo, hi, blocks) >= 2 * gap - 1e-9


def test_contiguous_blocks_drop_spans_near_boundaries():
    rng = np.random.default_rng(0)
    lo = np.sort(rng.uniform(0, 95, 400))
    hi = lo + rng.uniform(0.1, 5, 400)
    blocks = st.contiguous_blocks(lo, hi, [(0.0, 100.0)], n_blocks=5, gap=2.0)
    keep = blocks >= 0
    assert set(blocks[keep]) == {0, 1, 2, 3, 4}
    _check_blocks(lo[keep], hi[keep], blocks[keep], 2.0)
    edges = np.linspace(0, 100, 6)[1:-1]
    for e in edges:  # every dropped-or-kept decision follows the rule
        near = (lo < e + 2.0) & (hi > e - 2.0)
        assert np.all(blocks[near] == -1)
    assert np.all(blocks[hi > 100.0] == -1)
    # a span crossing a boundary is dropped even without a gap
    assert st.contiguous_blocks(np.array([19.0]), np.array([21.0]), [(0.0, 100.0)], 5)[0] == -1


def test_contiguous_blocks_segments_and_bad_input():
    lo = np.arange(0.0, 20.0, 1.0)
    hi = lo + 1.0
    blocks = st.contiguous_blocks(lo, hi, [(0.0, 10.0), (10.0, 20.0)], n_blocks=2)
    assert blocks.tolist() == [0] * 5 + [1] * 5 + [0] * 5 + [1] * 5
    assert st.contiguous_blocks(np.array([9.5]), np.array([10.5]), [(0.0, 10.0),
                                                                   (10.0, 20.0)], 2)[0] == -1
    with pytest.raises(ValueError, match="n_blocks"):
        st.contiguous_blocks(lo, hi, [(0.0, 20.0)], n_blocks=1)
    with pytest.raises(ValueError, match="gap"):
        st.contiguous_blocks(lo, hi, [(0.0, 20.0)], gap=-1.0)
    with pytest.raises(ValueError, match="stop >= start"):
        st.contiguous_blocks(hi, lo, [(0.0, 20.0)])
    with pytest.raises(ValueError, match="empty"):
        st.contiguous_blocks(lo, hi, [(5.0, 5.0)])


def _track_recording(duration: float = 200.0, sfreq: float = 40.0, seed: int = 0):
    """Spikes whose unit codes the position; position = 2 * time (px), speed 30 px/s."""
    rng = np.random.default_rng(seed)
    n = int(duration * sfreq)
    t = np.arange(n) / sfreq
    times = np.sort(rng.uniform(0, duration, 3000))
    units = (times // (duration / 4)).astype(np.int64)  # unit k fires in quarter k only
    position = np.stack([2.0 * t, np.zeros(n)], axis=1)
    speed = np.full(n, 30.0)
    speed[(t > 50) & (t < 60)] = 5.0  # resting: left out
    return make_recording(
        np.zeros((n, 4)), sfreq=sfreq, ch_names=[f"u{i}" for i in range(4)], ch_types="unit",
        units="count", modality="spikes", subject="rat", task="track",
        behavior={"position": position, "speed": speed}, spike_times=times, spike_units=units,
    )


def test_linear_track_labels_align_with_time():
    ds = _track_recording()
    task = st.linear_track([ds], window=0.5, past=1.0, dt=0.01, stride=0.25, gap=1.0,
                           t_stop=200.0)
    end = task.starts + task.window - 1.0 / 40.0
    np.testing.assert_allclose(task.y[:, 0], 2.0 * end, atol=1e-6)
    assert not np.any((end > 50) & (end < 60))  # resting windows dropped
    lo, hi = task.spans()
    assert lo.min() >= 0.0 and hi.max() <= 200.0
    _check_blocks(lo, hi, task.blocks, task.gap)
    # counts of the current window: the unit of the quarter, brute force
    counts = st.window_counts(task)
    times, units = ds["spike_time"].values, ds["spike_unit"].values
    for i in range(0, len(task), 97):
        inside = (times >= task.starts[i]) & (times < task.starts[i] + task.window)
        np.testing.assert_array_equal(counts[i], np.bincount(units[inside], minlength=4))
    past = st.window_counts(task, "past")
    i = len(task) // 2
    inside = (times >= task.starts[i] - task.past) & (times < task.starts[i])
    np.testing.assert_array_equal(past[i], np.bincount(units[inside], minlength=4))
    with pytest.raises(ValueError, match="side"):
        st.window_counts(task, "future")


def test_task_tokens_match_counts_and_never_truncate():
    task = st.linear_track([_track_recording()], t_stop=200.0)
    vocab = UnitVocabulary(["other/unit"])
    tw = task.tokens(vocab)
    assert vocab.ids(task.unit_keys).tolist() == [N_SPECIAL + 1 + k for k in range(4)]
    assert tw.n_truncated.sum() == 0
    counts = st.window_counts(task)
    np.testing.assert_array_equal(tw.n_tokens(), counts.sum(axis=1))
    i = int(np.argmax(counts.sum(axis=1)))
    ids = tw.cur_unit[tw.cur_offsets[i]:tw.cur_offsets[i + 1]] - (N_SPECIAL + 1)
    np.testing.assert_array_equal(np.bincount(ids, minlength=4), counts[i])


def test_block_folds_are_leakage_free():
    task = st.linear_track([_track_recording()], t_stop=200.0)
    table = task.table()
    folds = list(st.BlockFolds(gap=2 * task.gap).split(groups=table))
    assert len(folds) == 5
    for k, (train, test) in enumerate(folds):
        assert set(table["block"].iloc[test]) == {k}
        check_split(table, train, test, within_recording=True, gap=2 * task.gap)
    with pytest.raises(ValueError, match="block"):
        next(st.BlockFolds().split(groups=table.drop(columns="block")))


def _golub_recording(run: str, seed: int):
    """Binned counts in 4 cells of 10 bins; unit k fires only in cell k."""
    rng = np.random.default_rng(seed)
    bin_s, n_cells, per = 0.045, 4, 10
    counts = np.zeros((n_cells * per, 4))
    for k in range(n_cells):
        counts[k * per:(k + 1) * per, k] = rng.integers(1, 5, per)
    events = pd.DataFrame({"onset": np.arange(n_cells) * per * bin_s,
                           "duration": np.full(n_cells, per * bin_s),
                           "label": [f"direction_{45 * k}" for k in range(n_cells)],
                           "value": np.arange(n_cells, dtype=float)})
    return make_recording(counts, sfreq=1.0 / bin_s, ch_names=[f"unit{i}" for i in range(4)],
                          ch_types="unit", units="count", modality="spikes", subject="J",
                          task="bci", run=run, events=events), counts


def test_golub_windows_are_bins_labelled_by_their_cell():
    (a, ca), (b, cb) = _golub_recording("01", 0), _golub_recording("02", 1)
    task = st.golub_directions([a, b], n_blocks=2, gap_bins=1)
    assert task.window == pytest.approx(0.045) and task.dt == pytest.approx(0.045)
    counts = st.window_counts(task)
    # every window holds exactly its bin's counts, and its label names the firing unit
    fired = counts.argmax(axis=1)
    assert np.all(counts.sum(axis=1) > 0)
    assert [f"direction_{45 * k}" for k in fired] == task.y.tolist()
    both = np.concatenate([ca, cb])
    assert {tuple(r) for r in counts} <= {tuple(r) for r in both}
    # 2 pieces of 5 bins per cell, minus 1 bin each side of the middle: 4 + 4 bins per cell
    assert len(task) == 2 * 4 * 8
    assert np.bincount(task.blocks).tolist() == [32, 32]
    for cell in range(8):  # blocks contiguous within each cell
        rows = slice(8 * cell, 8 * (cell + 1))
        assert task.blocks[rows].tolist() == [0] * 4 + [1] * 4
    tw = task.tokens(UnitVocabulary())
    assert tw.n_truncated.sum() == 0 and np.all(tw.cur_dt == 0)


def test_golub_segments_give_every_direction_a_few_shot_block():
    from neurodecode.pipelines.finetune import earliest

    (a, _), (b, _) = _golub_recording("01", 0), _golub_recording("02", 1)
    task = st.golub_directions([a, b], n_blocks=2, gap_bins=1)
    # windows are in cell order: 8 cells (4 per run) of 8 windows
    np.testing.assert_array_equal(task.segments, np.repeat(np.arange(8), 8))
    table = task.table()
    assert (table.groupby("segment")["block"].nunique() == 2).all()
    # the earliest quarter of every cell: every direction, each from both runs' cells
    keep = earliest(table, 0.25)
    assert sorted(set(task.y[keep])) == sorted(set(task.y))
    np.testing.assert_array_equal(np.bincount(task.segments[keep]), np.full(8, 2))
    for cell in range(8):
        rows = np.flatnonzero(task.segments == cell)
        assert set(keep) & set(rows) == set(rows[:2])  # the cell's first windows
    # without segments, the earliest quarter of the time line holds the first cells only
    first = earliest(table.drop(columns="segment"), 0.25)
    assert set(task.y[first]) < set(task.y)
    with pytest.raises(ValueError, match="segments"):
        st.SpikeTask("t", "r2", task.times, task.units, task.unit_keys, task.starts, task.y,
                     task.blocks, task.window, task.past, task.dt, segments=np.zeros(3))


def test_linear_track_unlabelled_windows_include_rest_within_blocks():
    task = st.linear_track([_track_recording()], t_stop=200.0)
    assert len(task.unlabelled_starts) > len(task.starts)
    assert set(task.starts) <= set(task.unlabelled_starts)
    rest = np.setdiff1d(task.unlabelled_starts, task.starts)
    end = rest + task.window - 1.0 / 40.0
    assert np.any((end > 50) & (end < 60))  # the resting windows the labels leave out
    lo = task.unlabelled_starts - task.past
    hi = task.unlabelled_starts + task.window
    _check_blocks(lo, hi, task.unlabelled_blocks, task.gap)
    # a block's unlabelled windows keep the gap from every labelled window of the others
    starts = task.unlabelled([0, 1, 2, 3])
    test = task.blocks == 4
    t_lo, t_hi = task.spans()
    d = np.maximum(t_lo[test][None, :] - (starts + task.window)[:, None],
                   (starts - task.past)[:, None] - t_hi[test][None, :])
    assert d.min() >= 2 * task.gap - 1e-9
    assert np.all(np.diff(starts) > 0)


def test_calcium_windows_and_bad_input():
    rng = np.random.default_rng(0)
    n, sfreq = 600, 10.0
    dff = rng.normal(0, 0.05, (n, 3))
    dff[100::37, 1] += 3.0  # sharp transients of ROI 1
    speed = np.arange(n, dtype=float)
    ds = make_recording(dff, sfreq=sfreq, ch_names=["roi0", "roi1", "roi2"], ch_types="roi",
                        units="dF/F", modality="calcium", subject="m", task="run",
                        behavior={"running_speed": speed})
    task = st.calcium_speed([ds], frames=3, past_frames=5, gap=1.0)
    last = np.rint((task.starts + task.window - 0.1) * sfreq)
    np.testing.assert_allclose(task.y, last)  # the speed at the window's last frame
    lo, hi = task.spans()
    _check_blocks(lo, hi, task.blocks, task.gap)
    assert task.table()["modality"].iloc[0] == "calcium"
    with pytest.raises(FileNotFoundError, match="svoboda_mouse_s1"):
        st.calcium_speed("/nonexistent/stores")
    with pytest.raises(ValueError, match="frames"):
        st.calcium_speed([ds], frames=0)
    with pytest.raises(ValueError, match="past_bins"):
        st.golub_directions([ds], past_bins=-1)
    with pytest.raises(ValueError, match="stride"):
        st.linear_track([ds], stride=0.0)


@pytest.fixture(scope="module")
def real_stores(sample_data, tmp_path_factory):
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    out = tmp_path_factory.mktemp("spike_tasks")
    catalog = load_catalog()
    tasks = [t for name in ("nelpy_linear_track", "golub_bci", "svoboda_mouse_s1")
             for t in plan_entry(catalog[name], out, sample_data)]
    results = run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
    assert all(r.status == "created" for r in results), [r.error for r in results]
    return out


def test_real_tasks_and_baselines(real_stores):
    """The three tasks on the real stores; ridge reproduces the project's rat figure."""
    track = st.linear_track(real_stores)
    assert len(track.unit_keys) == 31 and track.n_blocks == 5
    assert 8 <= st.window_counts(track).sum(axis=1).mean() <= 14  # about 12 tokens a window
    _check_blocks(*track.spans(), track.blocks, track.gap)
    rows = {(r["estimator"], r["features"]): r["score"] for r in st.baseline_scores(track)}
    # 1.5 s of counts (current + past): at least the project's 1 s ridge R2 (0.457)
    assert rows[("ridge", "current+past")] > 0.45
    assert rows[("ridge", "current")] > 0.2

    golub = st.golub_directions(real_stores)
    assert len(golub.unit_keys) == 86 and len(set(golub.y)) == 8
    for k in range(5):
        assert len(set(golub.y[golub.blocks == k])) == 8  # every block holds every direction
    scores = {r["estimator"]: r["score"] for r in st.baseline_scores(golub)}
    assert scores["lda"] > 0.3  # chance 0.125

    calcium = st.calcium_speed(real_stores)
    assert len(calcium.unit_keys) == 41 and calcium.n_blocks == 5
    _check_blocks(*calcium.spans(), calcium.blocks, calcium.gap)
