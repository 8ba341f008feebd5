"""Simulated sEEG/ECoG and standard-montage EEG: layout, schema, and recoverable ground truth."""

from __future__ import annotations

import hashlib
import json
import re
import time

import numpy as np
import pytest
from scipy import signal as sps
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from neurodecode.schema import events_frame, intervals_frame, validate
from neurodecode.simulate import (
    IEEG_REGIONS,
    IEEG_RESPONSIVE,
    IEEG_TRACKING,
    SHAPE_FAMILIES,
    simulate_dataset,
    simulate_eeg,
    simulate_ieeg,
    simulate_latent,
    stimulus_images,
)
from neurodecode.store import open_recording, write_recording

#: Regions farther than 25 mm from every responsive region centre.
FAR_REGIONS = ("HPC", "M1", "PFC", "TPJ")
#: SHA-256 of ``simulate_eeg(simulate_latent(20, seed=1), seed=3)["signal"]`` (float32, C order),
#: computed before ``simulate_eeg`` had a ``montage`` parameter.
EEG_DEFAULT_SHA256 = "28e8703424e2ac9acf7e1b8bb064404d26a0c6c77d7804e1862fe22f13c41e1c"


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Small linear models run much faster without BLAS threads on small machines."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def long_run():
    """A 300 s run with images (about 130 trials), long enough for held-out decoding."""
    _, params, classes = stimulus_images(32, n_classes=4, seed=3)
    return simulate_latent(300.0, n_classes=4, image_classes=classes, image_params=params, seed=3)


@pytest.fixture(scope="module")
def short_run():
    return simulate_latent(10.0, seed=4)


@pytest.fixture(scope="module")
def high_gamma(long_run):
    """High-gamma features of two sEEG and two ECoG subjects, and whether each contact is in a
    responsive region."""
    out = {}
    for kind in ("seeg", "ecog"):
        for s in (0, 1):
            ds = simulate_ieeg(long_run, seed=s, kind=kind)
            out[kind, s] = (*_high_gamma(ds), np.isin(ds["region"].values, IEEG_RESPONSIVE))
    return out


def _positions(ds) -> np.ndarray:
    return np.column_stack([ds[a].values for a in "xyz"])


def _trial_table(ds):
    ev = events_frame(ds)
    trials = ev[ev["label"].str.startswith("stim/")]
    y = np.array([SHAPE_FAMILIES.index(label.split("/", 1)[1]) for label in trials["label"]])
    return trials["onset"].to_numpy(), y


def _high_gamma(ds, window: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log high-gamma (60-110 Hz) power 0-0.5 s after each onset, the same before, labels."""
    sfreq = ds.attrs["sfreq"]
    sos = sps.butter(4, [60.0, 110.0], "bandpass", fs=sfreq, output="sos")
    power = sps.sosfiltfilt(sos, ds["signal"].values.astype(np.float64) * 1e6, axis=0) ** 2
    onsets, y = _trial_table(ds)
    start, w = np.round(onsets * sfreq).astype(int), int(window * sfreq)
    after = np.log(np.stack([power[i : i + w].mean(0) for i in start]))
    before = np.log(np.stack([power[i - w : i].mean(0) for i in start]))
    return after, before, y


def _held_out_accuracy(x, y, shuffle_seed=None) -> float:
    """Logistic regression fitted on the first 70 % of the trials, scored on the rest."""
    n = int(0.7 * len(y))
    y_fit = y[:n]
    if shuffle_seed is not None:
        y_fit = np.random.default_rng(shuffle_seed).permutation(y_fit)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return model.fit(x[:n], y_fit).score(x[n:], y[n:])


# --------------------------------------------------------------------------------------------
# Schema, store, events, determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seeg", "ecog"])
def test_recording_follows_the_schema_and_stores(kind, short_run, tmp_path):
    ds = simulate_ieeg(short_run, seed=2, kind=kind, subject="07", run="02")
    validate(ds, check_data=True)
    assert ds.attrs["modality"] == kind and ds.attrs["sfreq"] == 250.0
    assert (ds.attrs["subject"], ds.attrs["run"], ds.attrs["task"]) == ("07", "02", "sim")
    assert ds.attrs["coord_frame"] == "mni_tal"
    assert set(ds["ch_type"].values) == {kind} and set(ds["units"].values) == {"V"}
    assert 40 <= ds.sizes["channel"] <= 120 and ds.sizes["time"] == 2500
    pattern = r"L[A-Z]\d{1,2}" if kind == "seeg" else r"G\d{2,3}|S[A-Z]\d"
    assert all(re.fullmatch(pattern, str(name)) for name in ds["channel"].values)
    far = "white_matter" if kind == "seeg" else "unknown"
    assert set(ds["region"].values) <= {*IEEG_REGIONS, far}
    sd = ds["signal"].values.std(0)
    assert (sd > 1e-5).all() and (sd < 1e-4).all()  # volts: tens of microvolts
    pos = _positions(ds)  # metres, left hemisphere of an MNI-sized brain
    assert np.isfinite(pos).all() and (np.abs(pos) < 0.11).all() and (pos[:, 0] < 0).all()
    params = ds.attrs["history"][0]["params"]
    assert params["kind"] == kind and params["n_electrodes"] == ds.sizes["channel"]
    json.dumps(ds.attrs)
    write_recording(ds, tmp_path / "ieeg.zarr")
    back = open_recording(tmp_path / "ieeg.zarr")
    np.testing.assert_array_equal(back["signal"].values, ds["signal"].values)
    np.testing.assert_array_equal(back["region"].values, ds["region"].values)
    np.testing.assert_array_equal(_positions(back), pos)


def test_events_and_behaviour_are_those_of_the_other_modalities(long_run):
    ieeg = simulate_ieeg(long_run, seed=1, n_electrodes=40)
    eeg = simulate_eeg(long_run, seed=1, n_channels=8)
    assert events_frame(ieeg).equals(events_frame(eeg))
    onsets, y = _trial_table(ieeg)
    np.testing.assert_allclose(onsets, long_run.trials["onset"])
    np.testing.assert_array_equal(y, long_run.trials["class"])
    t = ieeg["time"].values
    np.testing.assert_allclose(ieeg["behavior_position"].values, long_run.position(t))
    np.testing.assert_allclose(ieeg["behavior_speed"].values, long_run.speed(t))
    assert intervals_frame(ieeg).equals(intervals_frame(eeg))  # same 0.5 s margin


@pytest.mark.parametrize("kind", ["seeg", "ecog"])
def test_deterministic_and_subject_specific(kind, short_run):
    a = simulate_ieeg(short_run, seed=5, kind=kind)
    assert a.identical(simulate_ieeg(short_run, seed=5, kind=kind))
    # another run of the same subject: same electrodes, other noise
    other_run = simulate_ieeg(simulate_latent(10.0, seed=9), seed=5, kind=kind)
    np.testing.assert_array_equal(_positions(other_run), _positions(a))
    np.testing.assert_array_equal(other_run["channel"].values, a["channel"].values)
    assert not np.array_equal(other_run["signal"].values, a["signal"].values)
    # other subjects: other counts, placements and coverage
    subjects = [simulate_ieeg(short_run, seed=s, kind=kind) for s in range(6)]
    counts = [ds.sizes["channel"] for ds in subjects]
    assert len(set(counts)) >= 4
    coverage = {frozenset(ds["region"].values.tolist()) for ds in subjects}
    assert len(coverage) >= 3
    for ds in subjects:
        # decoding stays possible: every subject covers at least two responsive regions
        assert len(set(ds["region"].values) & set(IEEG_RESPONSIVE)) >= 2


def test_seeg_shafts_are_linear_arrays(short_run):
    ds = simulate_ieeg(short_run, seed=3, kind="seeg", n_electrodes=90)
    names = ds["channel"].values.astype(str)
    pos = _positions(ds) * 1000.0
    shafts = sorted({re.match(r"L[A-Z]", n).group() for n in names})
    assert len(shafts) >= 3
    for shaft in shafts:
        idx = [i for i, n in enumerate(names) if re.fullmatch(shaft + r"\d+", n)]
        numbers = [int(names[i][2:]) for i in idx]
        assert numbers == list(range(1, len(idx) + 1))
        steps = np.diff(pos[idx], axis=0)
        np.testing.assert_allclose(np.linalg.norm(steps, axis=1), 3.5)  # 3.5 mm apart
        np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-9)
        assert steps[0, 0] < 0  # contact 1 is the deepest (most medial)
    gaps = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e3
    assert gaps.min() >= 3.5 - 1e-9  # shafts keep clear of each other


def test_ecog_grid_and_strips(short_run):
    ds = simulate_ieeg(short_run, seed=3, kind="ecog", n_electrodes=80)
    names = ds["channel"].values.astype(str)
    grid = [i for i, n in enumerate(names) if n.startswith("G")]
    strips = [i for i, n in enumerate(names) if n.startswith("S")]
    assert len(grid) + len(strips) == 80 and len(grid) >= 40 and len(strips) >= 4
    assert names[grid[0]] == "G01"
    params = ds.attrs["history"][0]["params"]["electrodes"]
    rows, cols = params[0]["shape"]
    assert params[0]["name"] == "G" and rows * cols == len(grid)
    pos = _positions(ds) * 1000.0
    neighbours = np.linalg.norm(np.diff(pos[grid].reshape(rows, cols, 3), axis=1), axis=-1)
    assert np.all((neighbours > 7.0) & (neighbours < 11.0))  # 10 mm pitch, bent on the cortex
    gaps = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e3
    assert gaps.min() > 3.0
    # surface electrodes lie outside the deepest region centres (the cortex is a shell)
    centre = np.array([0.0, -16.0, 14.0])
    hpc = np.linalg.norm(1000 * np.array(IEEG_REGIONS["HPC"]) - centre)
    assert (np.linalg.norm(pos - centre, axis=1) > hpc + 10).all()


def test_positions_share_one_frame(short_run):
    """Contacts named after a region lie near its fixed centre in every subject."""
    near: dict[str, list[np.ndarray]] = {}
    for s in range(6):
        ds = simulate_ieeg(short_run, seed=s, kind="seeg")
        pos, regions = _positions(ds), ds["region"].values
        for name, centre in IEEG_REGIONS.items():
            here = pos[regions == name]
            if len(here):
                assert np.linalg.norm(here - centre, axis=1).max() < 0.020
                near.setdefault(name, []).append(here)
    for name in IEEG_RESPONSIVE:
        assert len(near[name]) >= 2
        a, b = near[name][:2]  # two subjects' contacts in one region are close to each other
        assert np.linalg.norm(a[:, None] - b[None], axis=-1).min() < 0.012


def test_errors_and_options(short_run):
    with pytest.raises(ValueError, match="kind"):
        simulate_ieeg(short_run, kind="meg")
    with pytest.raises(ValueError, match="unknown regions"):
        simulate_ieeg(short_run, regions=("V1", "IT"))
    with pytest.raises(ValueError, match="at least one"):
        simulate_ieeg(short_run, regions=())
    with pytest.raises(ValueError, match="sfreq"):
        simulate_ieeg(short_run, sfreq=100.0)
    one = simulate_ieeg(short_run, seed=1, n_electrodes=8, regions="FFA")
    assert one.attrs["history"][0]["params"]["regions"] == ["FFA"]
    ds = simulate_ieeg(short_run, seed=1, n_electrodes=24, regions=("PFC", "M1"))
    assert ds.sizes["channel"] == 24
    assert set(ds["region"].values) & set(IEEG_RESPONSIVE) == set()
    targets = [e["target"] for e in ds.attrs["history"][0]["params"]["electrodes"]]
    assert {"PFC", "M1"} <= set(targets)
    fast = simulate_ieeg(short_run, seed=1, sfreq=1000.0, n_electrodes=10, kind="ecog")
    assert fast.sizes["time"] == 10000 and fast.sizes["channel"] == 10
    assert fast.attrs["history"][0]["params"]["high_gamma"] == [70.0, 150.0]


def test_dataset_modalities(short_run):
    data = simulate_dataset(
        n_subjects=2, modalities=("seeg", "ecog"), duration=20.0, seeg={"n_electrodes": 30}
    )
    assert [ds.attrs["modality"] for ds in data.recordings] == ["seeg", "ecog"] * 2
    for ds in data.recordings:
        validate(ds, check_data=True)
        assert set(ds["ch_type"].values) == {ds.attrs["modality"]}
        iv = intervals_frame(ds)
        np.testing.assert_allclose(iv["start"].iloc[1:].to_numpy() - iv["stop"].iloc[:-1], 0.5)
    assert [ds.sizes["channel"] for ds in data.recordings[::2]] == [30, 30]
    ecog = [ds.sizes["channel"] for ds in data.recordings[1::2]]
    assert all(40 <= n <= 120 for n in ecog)
    with pytest.raises(TypeError, match="kind"):  # the modality fixes the kind
        simulate_dataset(n_subjects=1, modalities=("seeg",), duration=5.0, seeg={"kind": "ecog"})


@pytest.mark.slow
def test_fast_enough(long_run):
    """Ten subjects of 300 s at 250 Hz with 100 contacts: a few seconds of CPU (here < 20 s)."""
    start = time.process_time()
    for s in range(10):
        simulate_ieeg(long_run, seed=s, kind=("seeg", "ecog")[s % 2], n_electrodes=100)
    assert time.process_time() - start < 20.0


# --------------------------------------------------------------------------------------------
# Ground truth: class, position and speed information where it should be
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seeg", "ecog"])
def test_high_gamma_decodes_the_class(kind, high_gamma):
    accuracy, control = [], []
    for s in (0, 1):
        after, before, y, responsive = high_gamma[kind, s]
        assert len(y) > 100
        accuracy.append(_held_out_accuracy(after, y))
        control += [_held_out_accuracy(after, y, seed) for seed in range(5)]
        # the responsive contacts raise their high-gamma power after each stimulus
        rise = (after - before).mean(0)
        assert rise[responsive].max() > 0.4
        assert np.median(rise[responsive]) > 2 * max(np.median(rise[~responsive]), 0.02)
    assert min(accuracy) > 0.4 and np.mean(accuracy) > 0.55  # chance: 0.25
    assert abs(np.mean(control) - 0.25) < 0.08


def test_class_information_is_in_the_responsive_regions(long_run):
    ds = simulate_ieeg(long_run, seed=2, regions=("V1", "LO", "FFA", *FAR_REGIONS))
    after, _, y = _high_gamma(ds)
    regions = ds["region"].values
    responsive, far = np.isin(regions, IEEG_RESPONSIVE), np.isin(regions, FAR_REGIONS)
    assert responsive.sum() >= 8 and far.sum() >= 8
    f_stat, _ = f_classif(after, y)
    assert np.median(f_stat[responsive]) > 3.0 and np.median(f_stat[far]) < 2.0
    assert np.max(f_stat[responsive]) > 10 * np.median(f_stat[far])
    n = min(responsive.sum(), far.sum())
    assert _held_out_accuracy(after[:, np.flatnonzero(responsive)[:n]], y) > 0.5
    assert _held_out_accuracy(after[:, np.flatnonzero(far)[:n]], y) < 0.45


def _class_profiles(ds) -> np.ndarray:
    """Mean high-gamma rise per class at every contact, centred across classes, (n_ch, n_cls)."""
    after, before, y = _high_gamma(ds)
    profile = np.stack([(after - before)[y == c].mean(0) for c in range(4)], axis=1)
    return profile - profile.mean(1, keepdims=True)


def test_class_patterns_transfer_across_subjects_by_position(long_run):
    """A subject's class tuning, read at the positions of another's contacts, predicts theirs."""
    kwargs = dict(kind="seeg", regions=IEEG_RESPONSIVE)
    a, b = (simulate_ieeg(long_run, seed=s, **kwargs) for s in (3, 4))
    pa, pb = _class_profiles(a), _class_profiles(b)
    xa, xb = _positions(a), _positions(b)
    weight = np.exp(-0.5 * (np.linalg.norm(xb[:, None] - xa[None], axis=-1) / 0.004) ** 2)
    ok = (weight.sum(1) > 0.3) & np.isin(b["region"].values, IEEG_RESPONSIVE)
    assert ok.sum() >= 8
    predicted = weight[ok] @ pa / weight[ok].sum(1, keepdims=True)
    r = np.corrcoef(predicted.ravel(), pb[ok].ravel())[0, 1]
    # without positions: the same tuning (a's mean over its responsive contacts) everywhere
    mean = np.broadcast_to(pa[np.isin(a["region"].values, IEEG_RESPONSIVE)].mean(0), pb[ok].shape)
    r_mean = np.corrcoef(mean.ravel(), pb[ok].ravel())[0, 1]
    shuffled = predicted[np.random.default_rng(0).permutation(ok.sum())]
    r_shuffled = np.corrcoef(shuffled.ravel(), pb[ok].ravel())[0, 1]
    assert r > 0.6 and r > r_mean + 0.2 and r > r_shuffled + 0.2


def test_tracking_regions_follow_position_and_speed(long_run):
    ds = simulate_ieeg(long_run, seed=1, regions=("PPA", "HPC", "M1", "PFC", "TPJ"))
    sfreq, step = ds.attrs["sfreq"], 25
    x = ds["signal"].values.astype(np.float64) * 1e6
    lowpass = sps.butter(2, 1.0, fs=sfreq, output="sos")

    def power(lo, hi):  # slow log power in a band, every 0.1 s
        band = sps.sosfiltfilt(sps.butter(4, [lo, hi], "bandpass", fs=sfreq, output="sos"), x,
                               axis=0)  # fmt: skip
        return np.log(sps.sosfiltfilt(lowpass, band**2, axis=0).clip(1e-6))[::step]

    slow, beta, gamma = sps.sosfiltfilt(lowpass, x, axis=0)[::step], power(15, 28), power(60, 110)
    position = ds["behavior_position"].values[::step]
    speed = ds["behavior_speed"].values[::step]
    regions = ds["region"].values
    half = len(position) // 2

    def r2(target, keep, *features):
        f = np.hstack([feature[:, keep] for feature in features])
        model = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(f[:half], target[:half])
        return r2_score(target[half:], model.predict(f[half:]))

    place, m1 = np.isin(regions, ["PPA", "HPC"]), regions == "M1"
    distractors = np.isin(regions, ["PFC", "TPJ"])
    assert place.sum() >= 4 and m1.sum() >= 4 and distractors.sum() >= 4
    assert r2(position, place, slow, gamma) > 0.5
    assert r2(position, distractors, slow, gamma) < 0.05
    assert r2(speed, m1, beta, gamma) > 0.4 and r2(speed, m1, beta) > 0.1
    assert r2(speed, distractors, beta, gamma) < 0.05
    assert set(IEEG_TRACKING) == {"PPA", "HPC", "M1"}


@pytest.mark.realdata
def test_scale_and_spectrum_match_a_real_ecog_clip(sample_data, short_run):
    """Amplitude and 1/f slope (2-40 Hz) of simulated ECoG against the sample clinical clip."""
    import mne

    name = "sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay"
    lay = sample_data / "ecog" / "persyst_pt1" / name
    if not lay.is_file():
        pytest.skip(f"the sample ECoG clip is not at {lay}")
    real = mne.io.read_raw_persyst(lay, verbose="error").get_data()
    sim = simulate_ieeg(short_run, seed=0, kind="ecog")["signal"].values.T.astype(np.float64)

    def slope(x, sfreq):
        f, p = sps.welch(x, sfreq, nperseg=256)
        band = (f >= 2) & (f <= 40)
        return np.polyfit(np.log10(f[band]), np.log10(np.median(p[:, band], 0)), 1)[0]

    ratio = np.median(real.std(1)) / np.median(sim.std(1))
    assert 1 / 5 < ratio < 5
    assert abs(slope(real, 200.0) - slope(sim, 250.0)) < 0.5


# --------------------------------------------------------------------------------------------
# EEG on a standard montage
# --------------------------------------------------------------------------------------------


def test_eeg_without_montage_is_unchanged():
    latent = simulate_latent(20, seed=1)
    ds = simulate_eeg(latent, seed=3)
    digest = hashlib.sha256(np.ascontiguousarray(ds["signal"].values).tobytes()).hexdigest()
    assert digest == EEG_DEFAULT_SHA256
    assert ds.sizes["channel"] == 62 and ds["channel"].values[0] == "EEG001"
    assert "montage" not in ds.attrs["history"][0]["params"]
    assert ds.identical(simulate_eeg(latent, seed=3, montage=None))


def _mne_sites(montage: str) -> dict[str, np.ndarray]:
    import mne

    mont = mne.channels.make_standard_montage(montage)
    info = mne.create_info(mont.ch_names, 100.0, "eeg")
    info.set_montage(mont, verbose=False)
    return {ch["ch_name"]: ch["loc"][:3] for ch in info["chs"]}


@pytest.mark.filterwarnings("ignore:Montage name:FutureWarning")  # renamed in MNE 1.13
def test_eeg_montage_subsets_with_mne_positions(short_run):
    sites = _mne_sites("standard_1020")
    subjects = [simulate_eeg(short_run, seed=s, montage="standard_1020") for s in range(4)]
    core = {"Cz", "Pz", "Oz", "C3", "C4", "P3", "P4", "O1", "O2", "CPz", "POz"}
    for ds in subjects:
        validate(ds, check_data=True)
        names = ds["channel"].values.astype(str).tolist()
        assert set(names) <= set(sites) and core <= set(names) and len(set(names)) == len(names)
        assert not {"T3", "T4", "T5", "T6"} & set(names)  # same places as T7, T8, P7, P8
        assert names == sorted(names, key=list(sites).index)  # in the montage's order
        np.testing.assert_allclose(_positions(ds), np.array([sites[n] for n in names]))
        assert ds.attrs["coord_frame"] == "head"
        assert ds.attrs["history"][0]["params"]["montage"] == "standard_1020"
        assert 16 <= ds.sizes["channel"] <= 64
    assert len({tuple(ds["channel"].values) for ds in subjects}) == 4
    assert len({ds.sizes["channel"] for ds in subjects}) >= 2
    everything = simulate_eeg(short_run, seed=0, montage="standard_1020", n_channels=500)
    assert everything.sizes["channel"] == len(sites) - 4


def test_eeg_montage_without_10_20_names_keeps_a_posterior_core(short_run):
    sites = _mne_sites("GSN-HydroCel-129")
    ds = simulate_eeg(short_run, seed=1, montage="GSN-HydroCel-129", n_channels=11)
    names = ds["channel"].values.astype(str)
    assert ds.sizes["channel"] == 11 and set(names) <= set(sites)
    pos = _positions(ds)
    assert (pos[:, 1] < 0.03).all()  # central, parietal and occipital: none frontal
    assert (pos[:, 1] < -0.03).sum() >= 6
    small = simulate_eeg(short_run, seed=1, montage="biosemi16", n_channels=(16, 64))
    assert small.sizes["channel"] == 16


def test_eeg_montage_class_decodable(long_run):
    ds = simulate_eeg(long_run, seed=14, montage="biosemi64")
    onsets, y = _trial_table(ds)
    sfreq = ds.attrs["sfreq"]
    x = ds["signal"].values.astype(np.float64) * 1e6
    start = np.ceil(onsets * sfreq).astype(int)
    n_win, win = 12, int(0.05 * sfreq)  # twelve 50-ms windows after onset
    epochs = np.stack([x[i : i + n_win * win] for i in start])
    features = epochs.reshape(len(start), n_win, win, -1).mean(2).reshape(len(start), -1)
    n = int(0.7 * len(y))
    model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(features[:n], y[:n])
    assert model.score(features[n:], y[n:]) > 0.5
