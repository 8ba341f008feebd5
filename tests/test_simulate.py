"""The simulator: schema, determinism, and a ground truth that decoders can recover."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from neurodecode.schema import events_frame, intervals_frame, validate
from neurodecode.simulate import (
    IMAGE_PARAM_NAMES,
    LATENT_SFREQ,
    SHAPE_FAMILIES,
    double_gamma_hrf,
    simulate_calcium,
    simulate_dataset,
    simulate_eeg,
    simulate_fmri,
    simulate_latent,
    simulate_spikes,
    stimulus_images,
)

MODALITIES = ("eeg", "fmri", "calcium", "spikes")
EXPECTED = {
    "eeg": ("eeg", "V", "head", 250.0),
    "fmri": ("voxel", "a.u.", "voxel", 0.5),
    "calcium": ("roi", "dF/F", "pixel", 30.0),
    "spikes": ("unit", "count", "unknown", 100.0),
}


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Small linear models run much faster without BLAS threads on small machines."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset()


@pytest.fixture(scope="module")
def long_run():
    """One 300 s run with images, long enough for held-out decoding."""
    _, params, classes = stimulus_images(32, n_classes=4, seed=3)
    return simulate_latent(300.0, n_classes=4, image_classes=classes, image_params=params, seed=3)


def _class_index(labels) -> np.ndarray:
    return np.array([SHAPE_FAMILIES.index(label.split("/", 1)[1]) for label in labels])


# --------------------------------------------------------------------------------------------
# Schema, layout, determinism
# --------------------------------------------------------------------------------------------


def test_default_dataset_validates(dataset):
    assert len(dataset.recordings) == 3 * len(MODALITIES)
    assert dataset.images is None and dataset.image_params is None
    assert dataset.class_names == SHAPE_FAMILIES[:4]
    for ds in dataset.recordings:
        validate(ds, check_data=True)
        modality = ds.attrs["modality"]
        ch_type, unit, frame, sfreq = EXPECTED[modality]
        assert set(ds["ch_type"].values) == {ch_type}
        assert set(ds["units"].values) == {unit}
        assert ds.attrs["coord_frame"] == frame
        assert ds.attrs["sfreq"] == sfreq
        assert ds.attrs["task"] == "sim" and ds.attrs["session"] == "01" and ds.attrs["run"] == "01"
        assert ds.attrs["source"]["reader"] == "neurodecode.simulate"
        assert ds.attrs["source"]["path"].startswith("simulated://")
        assert ds.attrs["history"][0]["step"] == "simulate"
        assert ds.attrs["history"][0]["params"]["latent"]["duration"] == 120.0
        json.dumps(ds.attrs)  # provenance must be storable as JSON
        duration = ds.sizes["time"] / sfreq
        assert duration == pytest.approx(120.0)
        for name in ("behavior_position", "behavior_speed"):
            assert ds[name].dims == ("time",)
        assert ds["behavior_position"].min() >= 0 and ds["behavior_position"].max() <= 1
        assert ds["behavior_speed"].min() >= 0
    subjects = [ds.attrs["subject"] for ds in dataset.recordings]
    assert sorted(set(subjects)) == ["01", "02", "03"]


def test_eeg_scale_and_positions(dataset):
    eeg = next(ds for ds in dataset.recordings if ds.attrs["modality"] == "eeg")
    sd = float(eeg["signal"].std())
    assert 1e-6 < sd < 1e-4
    radius = np.sqrt(eeg["x"] ** 2 + eeg["y"] ** 2 + eeg["z"] ** 2).values
    np.testing.assert_allclose(radius, 0.095)


def test_channel_counts_differ_across_subjects(dataset):
    for modality in MODALITIES:
        counts = [ds.sizes["channel"] for ds in dataset.recordings
                  if ds.attrs["modality"] == modality]  # fmt: skip
        assert len(counts) == 3
        assert len(set(counts)) > 1, modality


def test_events_and_intervals(dataset):
    for ds in dataset.recordings:
        ev = events_frame(ds)
        stop = ds.sizes["time"] / ds.attrs["sfreq"]
        assert (ev["onset"] >= 0).all() and (ev["onset"] + ev["duration"] <= stop + 1e-9).all()
        trials = ev[ev["label"].str.startswith("stim/")]
        blocks = ev[ev["label"].str.startswith("block/")]
        assert len(trials) > len(blocks) > 3
        np.testing.assert_allclose(trials["duration"], 1.0)
        # Without images, each class is one stimulus: image index = class index.
        np.testing.assert_array_equal(trials["value"], _class_index(trials["label"]))
        iv = intervals_frame(ds)
        assert list(iv["split"]) == ["train", "valid", "test"]
        assert iv["start"].iloc[0] == 0 and iv["stop"].iloc[-1] == pytest.approx(stop)
        # the intervals of every modality are 12 s apart (the BOLD margin: fMRI is simulated)
        np.testing.assert_allclose(iv["start"].iloc[1:].to_numpy() - iv["stop"].iloc[:-1], 12.0)
        edges = np.array([0.7, 0.85]) * stop
        np.testing.assert_allclose(iv["stop"].iloc[:-1], edges - 6.0)
        np.testing.assert_allclose(iv["start"].iloc[1:], edges + 6.0)
        assert ds.attrs["history"][0]["params"]["split_gap"] == 12.0


@pytest.mark.parametrize(("modality", "gap"), [("eeg", 0.5), ("fmri", 12.0), ("calcium", 2.0),
                                               ("spikes", 0.5)])
def test_intervals_leave_the_modality_gap(modality, gap):
    ds = simulate_dataset(n_subjects=1, modalities=(modality,), duration=120.0).recordings[0]
    iv = intervals_frame(ds)
    np.testing.assert_allclose(iv["start"].iloc[1:].to_numpy() - iv["stop"].iloc[:-1], gap)
    # a sample table over the stored intervals splits with the default gap, without leakage
    from neurodecode.data.samples import open_recordings, time_samples
    from neurodecode.data.splits import StoredIntervals, check_split, default_gap

    s = time_samples(open_recordings([ds]), target="speed")
    rule = StoredIntervals(iv.assign(recording=s.table["recording"].iloc[0]), "train", "valid")
    ((train, test),) = rule.split(groups=s.table)
    step = 1.0 / ds.attrs["sfreq"]
    assert default_gap(s.table) == pytest.approx(step + gap)
    check_split(s.table, train, test, within_recording=True, gap=step + gap)
    stop, first = s.table["stop"].to_numpy(), s.table["start"].iloc[test].min()
    inside = stop <= iv["stop"].iloc[0]  # samples of the train interval ...
    far = first >= stop + step + gap  # ... minus those within the default gap are kept
    np.testing.assert_array_equal(train, np.flatnonzero(inside & far))
    # the stored gap is the margin; the default adds one sample: the last one (or two, where
    # the float sum rounds down) is dropped
    assert 1 <= (inside & ~far).sum() <= 2 and len(train) > 3 * len(test)
    # a gap longer than an interval leaves that interval out; the others stay further apart
    short = intervals_frame(simulate_dataset(n_subjects=1, modalities=(modality,), duration=60.0,
                                             split=(0.5, 0.1, 0.4), split_gap=10.0).recordings[0])
    assert short.to_dict("list") == {"start": [0.0, 41.0], "stop": [25.0, 60.0],
                                     "split": ["train", "test"]}


def test_modalities_of_a_run_share_the_latent(dataset):
    per_subject = [ds for ds in dataset.recordings if ds.attrs["subject"] == "02"]
    frames = [events_frame(ds) for ds in per_subject]
    for ev in frames[1:]:
        assert ev.equals(frames[0])
    latent = dataset.latent["02"].isel(run=0)
    assert latent.attrs["sfreq"] == LATENT_SFREQ
    for ds in per_subject:
        t = ds["time"].values
        expected = np.interp(t, latent["time"].values, latent["position"].values)
        np.testing.assert_allclose(ds["behavior_position"].values, expected, atol=0.01)
    # The latent's class code matches the trial events.
    trials = frames[0][frames[0]["label"].str.startswith("stim/")]
    idx = np.round((trials["onset"].to_numpy() + 0.5) * LATENT_SFREQ).astype(int)
    np.testing.assert_array_equal(latent["class_id"].values[idx], _class_index(trials["label"]))
    # Different subjects have different behaviour.
    other = dataset.latent["01"].isel(run=0)["position"].values
    assert not np.allclose(other, latent["position"].values)


def test_deterministic_given_seed():
    kwargs = dict(n_subjects=2, duration=20.0, n_images=8, seed=5)
    a, b = simulate_dataset(**kwargs), simulate_dataset(**kwargs)
    c = simulate_dataset(**{**kwargs, "seed": 6})
    np.testing.assert_array_equal(a.images, b.images)
    for ra, rb, rc in zip(a.recordings, b.recordings, c.recordings, strict=True):
        assert ra.identical(rb)
        assert ra["signal"].shape != rc["signal"].shape or not np.array_equal(
            ra["signal"].values, rc["signal"].values
        )
    assert not np.array_equal(a.images, c.images)


def test_runs_keep_the_subject_mapping_but_not_the_noise():
    data = simulate_dataset(n_subjects=1, modalities=("fmri", "spikes"), duration=30.0, n_runs=2)
    assert [ds.attrs["run"] for ds in data.recordings] == ["01", "01", "02", "02"]
    assert data.latent["01"].sizes["run"] == 2
    fmri1, fmri2 = data.recordings[0], data.recordings[2]
    assert fmri1.sizes["channel"] == fmri2.sizes["channel"]
    assert not np.array_equal(fmri1["signal"].values, fmri2["signal"].values)
    assert not events_frame(fmri1).equals(events_frame(fmri2))


def test_options_and_errors():
    data = simulate_dataset(
        n_subjects=1, modalities=("eeg", "calcium"), duration=10.0, n_classes=2,
        split=(0.5, 0.0, 0.5), eeg={"n_channels": 8}, calcium={"movie": True, "n_rois": 5},
    )  # fmt: skip
    eeg, calcium = data.recordings
    assert eeg.sizes["channel"] == 8 and calcium.sizes["channel"] == 5
    assert list(intervals_frame(eeg)["split"]) == ["train", "test"]
    assert calcium["movie"].shape == (300, 32, 32) and calcium["movie"].dtype == np.float32
    validate(calcium, check_data=True)
    with pytest.raises(ValueError, match="unknown modalities"):
        simulate_dataset(modalities=("meg",))
    with pytest.raises(TypeError, match="unexpected keyword"):
        simulate_dataset(meg={})
    with pytest.raises(ValueError, match="n_classes"):
        simulate_dataset(n_classes=9)
    with pytest.raises(ValueError, match="split"):
        simulate_dataset(n_subjects=1, duration=5.0, split=(0.5, 0.5))
    with pytest.raises(ValueError, match="too short"):
        simulate_fmri(simulate_latent(3.0), tr=2.0)


def test_short_run_without_trials_is_valid():
    latent = simulate_latent(4.0, seed=1)
    assert latent.trials.empty
    for simulate in (simulate_eeg, simulate_fmri, simulate_calcium, simulate_spikes):
        ds = validate(simulate(latent, seed=1), check_data=True)
        assert ds.sizes["event"] == 0


def test_movie_follows_roi_signal():
    latent = simulate_latent(30.0, seed=2)
    ds = simulate_calcium(latent, seed=2, n_rois=10, movie=True)
    movie, dff = ds["movie"].values, ds["signal"].values
    for roi in range(3):
        col = int(round(float(ds["x"][roi]) - 0.5))
        row = int(round(float(ds["y"][roi]) - 0.5))
        assert np.corrcoef(movie[:, row, col], dff[:, roi])[0, 1] > 0.5


def test_spike_times_reproduce_binned_counts():
    latent = simulate_latent(60.0, seed=4)
    ds = simulate_spikes(latent, seed=4)
    t, st, su = ds["time"].values, ds["spike_time"].values, ds["spike_unit"].values
    sfreq = ds.attrs["sfreq"]
    assert st.size > 1000
    assert st.min() >= t[0] and st.max() < t[-1] + 1 / sfreq
    assert np.all(np.diff(st) >= 0)
    bins = np.searchsorted(t, st, side="right") - 1
    counts = np.zeros(ds["signal"].shape, dtype=np.float32)
    np.add.at(counts, (bins, su), 1)
    np.testing.assert_array_equal(counts, ds["signal"].values)
    np.testing.assert_array_equal(np.floor((st - t[0]) * sfreq).astype(int), bins)


# --------------------------------------------------------------------------------------------
# Ground truth is recoverable
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("simulate", "smooth_s"), [(simulate_calcium, 0.0), (simulate_spikes, 0.5)]
)
def test_position_decodable(long_run, simulate, smooth_s):
    ds = simulate(long_run, seed=11)
    x = ds["signal"].values.astype(np.float64)
    width = int(smooth_s * ds.attrs["sfreq"])
    if width > 1:
        x = ndimage.uniform_filter1d(x, width, axis=0)
    y = ds["behavior_position"].values
    n = int(0.7 * len(y))
    model = Ridge(alpha=1.0).fit(x[:n], y[:n])
    assert r2_score(y[n:], model.predict(x[n:])) > 0.5
    shuffled = Ridge(alpha=1.0).fit(x[:n], np.random.default_rng(0).permutation(y[:n]))
    assert r2_score(y[n:], shuffled.predict(x[n:])) < 0.1


def test_image_params_decodable_from_spikes(long_run):
    ds = simulate_spikes(long_run, seed=12)
    ev = events_frame(ds)
    trials = ev[ev["label"].str.startswith("stim/")]
    start = np.round(trials["onset"].to_numpy() * ds.attrs["sfreq"]).astype(int)
    x = np.stack([ds["signal"].values[i : i + 100].sum(0) for i in start])
    y = long_run.image_params[trials["value"].to_numpy().astype(int)]
    assert y.shape[1] == len(IMAGE_PARAM_NAMES)
    n = int(0.7 * len(y))
    model = Ridge(alpha=10.0).fit(x[:n], y[:n])
    assert r2_score(y[n:], model.predict(x[n:])) > 0.3


def _held_out_accuracy(x, y, make_model, shuffle_seed=None):
    """Fit on the first 70 % of the samples (labels shuffled if asked), score on the rest."""
    n = int(0.7 * len(y))
    y_fit = y[:n]
    if shuffle_seed is not None:
        y_fit = np.random.default_rng(shuffle_seed).permutation(y_fit)
    return make_model().fit(x[:n], y_fit).score(x[n:], y[n:])


def test_fmri_class_decodable_from_blocks(long_run):
    ds = simulate_fmri(long_run, seed=13)
    ev = events_frame(ds)
    blocks = ev[ev["label"].str.startswith("block/")]
    t, signal = ds["time"].values, ds["signal"].values
    # Average the volumes of each block, shifted by the haemodynamic delay.
    x = np.stack([
        signal[(t >= onset + 4) & (t < onset + duration + 4)].mean(0)
        for onset, duration in zip(blocks["onset"], blocks["duration"], strict=True)
    ])  # fmt: skip
    y = blocks["value"].to_numpy().astype(int)
    assert len(y) >= 14

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    assert _held_out_accuracy(x, y, model) >= 0.6
    control = np.mean([_held_out_accuracy(x, y, model, seed) for seed in range(20)])
    assert control < 0.45


def test_eeg_class_decodable(long_run):
    ds = simulate_eeg(long_run, seed=14)
    ev = events_frame(ds)
    trials = ev[ev["label"].str.startswith("stim/")]
    sfreq = ds.attrs["sfreq"]
    signal = ds["signal"].values.astype(np.float64) * 1e6
    start = np.ceil(trials["onset"].to_numpy() * sfreq).astype(int)
    n_win, win = 12, int(0.05 * sfreq)  # twelve 50-ms windows after onset
    epochs = np.stack([signal[i : i + n_win * win] for i in start])
    x = epochs.reshape(len(start), n_win, win, -1).mean(2).reshape(len(start), -1)
    y = _class_index(trials["label"])
    assert len(y) > 100

    def model():
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")

    assert _held_out_accuracy(x, y, model) > 0.5
    control = np.mean([_held_out_accuracy(x, y, model, seed) for seed in range(10)])
    assert abs(control - 0.25) < 0.1


def test_eeg_alpha_depends_on_class(long_run):
    ds = simulate_eeg(long_run, seed=15)
    ev = events_frame(ds)
    blocks = ev[ev["label"].str.startswith("block/")]
    sfreq = ds.attrs["sfreq"]
    signal = ds["signal"].values.astype(np.float64)
    seg = int(2 * sfreq)  # 2-s segments
    segments = signal[: seg * (len(signal) // seg)].reshape(-1, seg, signal.shape[1])
    power = np.abs(np.fft.rfft(segments, axis=1)) ** 2
    freqs = np.fft.rfftfreq(seg, 1 / sfreq)
    alpha = np.log(power[:, (freqs >= 8) & (freqs <= 12)].mean(1))  # (n_segments, n_ch)
    seg_t = np.arange(len(alpha)) * 2.0 + 1.0
    cls = np.full(len(alpha), -1)
    for onset, duration, value in blocks[["onset", "duration", "value"]].itertuples(index=False):
        cls[(seg_t > onset + 1) & (seg_t < onset + duration - 1)] = int(value)
    keep = cls >= 0
    x, y = alpha[keep], cls[keep]

    def model():
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")

    assert _held_out_accuracy(x, y, model) > 0.45


# --------------------------------------------------------------------------------------------
# Images and HRF
# --------------------------------------------------------------------------------------------


def test_stimulus_images():
    images, params, classes = stimulus_images(400, size=24, n_classes=4, seed=1)
    assert images.shape == (400, 24, 24) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert params.shape == (400, len(IMAGE_PARAM_NAMES))
    assert params.min() >= 0 and params.max() <= 1
    np.testing.assert_array_equal(np.bincount(classes), [100] * 4)
    flat = images.reshape(400, -1)
    train, test = slice(0, 200), slice(200, 400)
    centroids = np.stack([flat[train][classes[train] == c].mean(0) for c in range(4)])
    distance = ((flat[test, None] - centroids) ** 2).sum(-1)
    accuracy = (distance.argmin(1) == classes[test]).mean()
    assert accuracy > 0.4
    # Contrast is visible: the spread of pixel values grows with it.
    spread = np.abs(flat - 0.5).max(1)
    assert np.corrcoef(spread, params[:, 3])[0, 1] > 0.8
    with pytest.raises(ValueError):
        stimulus_images(2, n_classes=4)


def test_dataset_with_images_sets_event_values():
    data = simulate_dataset(n_subjects=1, modalities=("spikes",), duration=40.0, n_images=12)
    assert data.images.shape == (12, 32, 32)
    ev = events_frame(data.recordings[0])
    trials = ev[ev["label"].str.startswith("stim/")]
    images = trials["value"].to_numpy().astype(int)
    assert images.min() >= 0 and images.max() < 12
    np.testing.assert_array_equal(data.image_classes[images], _class_index(trials["label"]))


def test_double_gamma_hrf():
    t = np.arange(0, 32, 0.01)
    h = double_gamma_hrf(t)
    assert t[h.argmax()] == pytest.approx(5.0, abs=0.1)
    assert t[h.argmin()] == pytest.approx(15.0, abs=1.0)
    assert h.min() < 0
    assert h.sum() * 0.01 == pytest.approx(5 / 6, abs=0.01)
    assert double_gamma_hrf(np.array([-1.0, 0.0]))[0] == 0
