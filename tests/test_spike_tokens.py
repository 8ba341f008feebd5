"""Spike tokens: exact against a per-spike reference, vocabulary growth, packing and events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.data.tokens import (
    EOS,
    N_SPECIAL,
    PAD,
    SOS,
    SpikeTokenizer,
    TokenWindows,
    UnitVocabulary,
    calcium_events,
    events_from_counts,
    recording_events,
    unit_keys,
    window_starts,
)


def _spikes(seed: int, n_units: int = 12, rate: float = 40.0, duration: float = 20.0):
    rng = np.random.default_rng(seed)
    n = rng.poisson(n_units * rate * duration)
    times = np.sort(rng.uniform(0, duration, n))
    # Some exact duplicates and spikes on bin edges: ties the canonical order must break.
    times[::97] = np.round(times[::97], 2)
    times = np.sort(times)
    units = rng.integers(N_SPECIAL, N_SPECIAL + n_units, n)
    return times, units


def _reference(tok: SpikeTokenizer, times, units, starts):
    """One window and one spike at a time: the definition, written plainly."""
    out = []
    for s in starts:
        cur, past = [], []
        for t, u in zip(times, units, strict=True):
            if s <= t < s + tok.window:
                cur.append((t, int(u)))
            elif s - tok.past <= t < s:
                past.append((t, int(u)))
        n_trunc = max(0, len(cur) - tok.max_tokens)
        cur = cur[: tok.max_tokens]
        past = past[len(past) - min(len(past), tok.max_past):]
        cur_tok = sorted((min(int(np.floor((t - s) / tok.dt)), tok.n_dt - 1), u) for t, u in cur)
        past_tok = [(min(int(np.floor((t - (s - tok.past)) / tok.dt)), tok.n_past_dt - 1), u)
                    for t, u in past]
        out.append((cur_tok, past_tok, n_trunc))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_tokens,max_past", [(1000, 1000), (7, 11)])
def test_tokens_match_per_spike_reference(seed, max_tokens, max_past):
    times, units = _spikes(seed)
    rng = np.random.default_rng(100 + seed)
    tok = SpikeTokenizer(window=0.05, past=0.12, dt=0.004, max_tokens=max_tokens,
                         max_past=max_past)
    # unaligned, unsorted starts, some overlapping, some at the very edges of the recording
    starts = np.concatenate([rng.uniform(-0.1, 20.1, 60), [0.0, 0.12, 19.95]])
    tw = tok(times, units, starts)
    ref = _reference(tok, times, units, starts)
    for i, (cur, past, n_trunc) in enumerate(ref):
        a, b = tw.cur_offsets[i], tw.cur_offsets[i + 1]
        assert list(zip(tw.cur_dt[a:b].tolist(), tw.cur_unit[a:b].tolist(), strict=True)) == cur
        a, b = tw.past_offsets[i], tw.past_offsets[i + 1]
        assert list(zip(tw.past_dt[a:b].tolist(), tw.past_unit[a:b].tolist(), strict=True)) == past
        assert tw.n_truncated[i] == n_trunc
    if max_tokens == 7:
        assert tw.n_truncated.sum() > 0  # the cap was exercised


def test_vocabulary_grows_without_renumbering():
    vocab = UnitVocabulary(["a/u1", "a/u2"])
    assert vocab.ids(["a/u1", "a/u2"]).tolist() == [N_SPECIAL, N_SPECIAL + 1]
    new = vocab.add(["b/u1", "a/u2", "b/u2"])
    assert new.tolist() == [N_SPECIAL + 2, N_SPECIAL + 1, N_SPECIAL + 3]
    assert vocab.ids(["a/u1", "a/u2"]).tolist() == [N_SPECIAL, N_SPECIAL + 1]
    assert len(vocab) == N_SPECIAL + 4 and "b/u2" in vocab
    again = UnitVocabulary.from_state(vocab.state_dict())
    assert again.keys == vocab.keys
    with pytest.raises(KeyError, match="c/u9"):
        vocab.ids(["c/u9"])
    with pytest.raises(ValueError, match="duplicate"):
        UnitVocabulary.from_state({"keys": ["x", "x"]})
    assert len({PAD, SOS, EOS}) == N_SPECIAL


def test_select_concatenate_and_collate():
    times, units = _spikes(3)
    tok = SpikeTokenizer(window=0.1, past=0.2, dt=0.01)
    starts = window_starts(0.0, 20.0, 0.1, 0.1, past=0.2)
    tw = tok(times, units, starts)
    part = tw.select([5, 2, 9])
    assert part.start.tolist() == starts[[5, 2, 9]].tolist()
    n = tw.n_tokens()
    assert part.n_tokens().tolist() == n[[5, 2, 9]].tolist()
    both = TokenWindows.concatenate([tw.select(slice(0, 10)), tw.select(slice(10, None))])
    for name in ("cur_offsets", "cur_unit", "cur_dt", "past_offsets", "past_unit", "past_dt"):
        np.testing.assert_array_equal(getattr(both, name), getattr(tw, name))
    counts = tw.counts(N_SPECIAL + 12)
    assert counts.sum(1).tolist() == n.tolist() and counts[:, :N_SPECIAL].sum() == 0
    assert tw.counts(N_SPECIAL + 12, "past").sum() == len(tw.past_unit)
    batch = tok.collate(tw, [5, 2, 9])
    assert batch["cur_unit"].shape == (3, int(n[[5, 2, 9]].max()))
    assert batch["cur_mask"].sum(1).tolist() == n[[5, 2, 9]].tolist()
    assert (batch["cur_unit"][~batch["cur_mask"]] == PAD).all()
    a, b = tw.cur_offsets[2], tw.cur_offsets[3]
    assert batch["cur_unit"][1, : b - a].tolist() == tw.cur_unit[a:b].tolist()
    empty = tok(times[:0], units[:0], starts[:4])
    assert tok.collate(empty)["cur_unit"].shape == (4, 1)
    lo, hi = tok.spans(starts[:2])
    assert np.allclose(lo, starts[:2] - 0.2) and np.allclose(hi, starts[:2] + 0.1)


def test_tokenizer_refuses_bad_input():
    tok = SpikeTokenizer()
    with pytest.raises(ValueError, match="sorted"):
        tok(np.array([0.2, 0.1]), np.array([3, 3]), np.array([0.0]))
    with pytest.raises(ValueError, match="UnitVocabulary"):
        tok(np.array([0.1]), np.array([0]), np.array([0.0]))
    with pytest.raises(ValueError, match="longer than the window"):
        SpikeTokenizer(window=0.01, dt=0.02)


def test_window_starts_stay_inside():
    s = window_starts(10.0, 20.0, window=0.5, stride=0.25, past=1.0)
    assert s[0] == pytest.approx(11.0) and s[-1] + 0.5 <= 20.0 + 1e-9
    assert s[-1] + 0.25 + 0.5 > 20.0
    assert len(window_starts(0.0, 1.0, window=0.8, stride=0.1, past=0.5)) == 0


def test_events_from_counts_rebin_exactly():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.7, size=(50, 6))
    t = np.arange(50) * 0.045
    times, ch = events_from_counts(counts, t, 0.045)
    assert np.all(np.diff(times) >= 0)
    rebinned = np.zeros_like(counts)
    np.add.at(rebinned, (np.floor(times / 0.045).astype(int), ch), 1)
    np.testing.assert_array_equal(rebinned, counts)
    with pytest.raises(ValueError, match="non-negative integers"):
        events_from_counts(counts + 0.5, t, 0.045)


def test_calcium_events_follow_transients():
    rng = np.random.default_rng(1)
    n = 400
    dff = 0.02 * rng.standard_normal((n, 3))
    onsets = [50, 200, 330]
    for k, o in enumerate(onsets):  # ROI 0: three transients; ROI 1: a bigger one; ROI 2: none
        dff[o:, 0] += 1.0 * np.exp(-np.arange(n - o) / 8.0)
        if k == 1:
            dff[o:, 1] += 3.0 * np.exp(-np.arange(n - o) / 8.0)
    t = np.arange(n) / 10.0
    times, rois = calcium_events(dff, t, threshold=6.0)
    assert set(np.round(times[rois == 0] * 10).astype(int)) == set(onsets)
    assert (rois == 1).sum() > (rois == 0).sum() / 3  # bigger rise, more events
    assert (rois == 2).sum() <= 2


def test_recording_events_and_keys_from_a_simulated_store(tmp_path):
    from neurodecode.data.samples import open_recordings
    from neurodecode.simulate import simulate_latent, simulate_spikes
    from neurodecode.store import write_recording

    ds = simulate_spikes(simulate_latent(duration=30.0, seed=0), subject="07", n_units=8)
    path = tmp_path / "sub-07.zarr"
    write_recording(ds, path)
    (rec,) = open_recordings([path])
    times, ch, names = recording_events(rec)
    assert len(times) == int(ds["signal"].sum()) and len(names) == 8
    keys = unit_keys(rec)
    assert keys[0].startswith("sub-07/ses-") and len(set(keys)) == 8
    # binned counts (no exact times) give one event per count in the right bin
    binned = ds.drop_vars(["spike_time", "spike_unit"])
    (rec2,) = open_recordings([binned])
    t2, ch2, _ = recording_events(rec2)
    assert len(t2) == len(times)
    np.testing.assert_array_equal(np.bincount(ch2, minlength=8), np.bincount(ch, minlength=8))


def test_spike_windows_stay_inside_their_intervals(tmp_path):
    from neurodecode.data.samples import open_recordings
    from neurodecode.data.splits import LeakageError, check_split
    from neurodecode.data.tokens import spike_windows
    from neurodecode.schema import intervals_frame
    from neurodecode.simulate import simulate_latent, simulate_spikes

    lat = simulate_latent(duration=60.0, seed=1)
    recs = open_recordings([simulate_spikes(lat, subject=s, n_units=6, seed=i)
                            for i, s in enumerate(("01", "02"))])
    tok = SpikeTokenizer(window=0.5, past=1.0, dt=0.01)
    vocab = UnitVocabulary()
    train = spike_windows(recs, tok, vocab, intervals=["train"], behavior=["position"])
    assert len(vocab.keys) == 12  # both subjects' units, new ids for the second
    assert train.covariates.shape[:2] == (len(train), 4) and train.behavior == ["position"]
    for rec in recs:
        rows = train.table["recording"] == rec.id
        frame = intervals_frame(rec.ds)
        tr = frame[frame["split"] == "train"]
        inside = np.zeros(rows.sum(), bool)
        for a, b in zip(tr["start"], tr["stop"], strict=True):
            inside |= ((train.table.loc[rows, "start"] >= a - 1e-9)
                       & (train.table.loc[rows, "stop"] <= b + 1e-9)).to_numpy()
        assert inside.all()
    test = spike_windows(recs, tok, vocab, intervals=["test"], grow=False)
    assert len(vocab.keys) == 12
    both = pd.concat([train.table, test.table], ignore_index=True)
    n = len(train)
    check_split(both, np.arange(n), np.arange(n, len(both)), within_recording=True, gap=0.0)
    # a window of the whole recording overlaps the test block, past included: caught
    whole = spike_windows(recs, tok, vocab, intervals=None)
    mixed = pd.concat([whole.table, test.table], ignore_index=True)
    with pytest.raises(LeakageError):
        check_split(mixed, np.arange(len(whole)), np.arange(len(whole), len(mixed)),
                    within_recording=True, gap=0.0)
    with pytest.raises(KeyError, match="not in the vocabulary"):
        other = open_recordings([simulate_spikes(lat, subject="03", n_units=4)])
        spike_windows(other, tok, vocab, grow=False)
