"""The visual simulator: procedural scenes, the encoding model and the NSD-like fMRI design."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge

from neurodecode.config import SimulationConfig, get_settings
from neurodecode.data.images import load_image_folder
from neurodecode.data.splits import MODALITY_MARGINS
from neurodecode.evaluate.metrics import two_way_identification
from neurodecode.pipelines.simulate import simulate_to
from neurodecode.schema import events_frame, intervals_frame, validate
from neurodecode.simulate_visual import (
    PREFERRED_COLOR,
    REGIONS,
    RESPONSE_WINDOW,
    SCENE_PARAM_NAMES,
    SCENE_SHAPES,
    VisualCortex,
    procedural_scenes,
    simulate_visual_fmri,
)

SMALL = {"n_subjects": 2, "n_images": 60, "n_test_images": 10, "n_voxels": (40, 90)}


@pytest.fixture(scope="module")
def small():
    return simulate_visual_fmri(**SMALL, seed=3)


@pytest.fixture(scope="module")
def cortex():
    return VisualCortex(seed=11, n_voxels=300)


def _uniform(rgb, n=1, size=32):
    return np.broadcast_to(np.asarray(rgb, np.float32), (n, size, size, 3)).copy()


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def test_scenes_are_deterministic_and_described():
    a, b = procedural_scenes(30, seed=1), procedural_scenes(30, seed=1)
    c = procedural_scenes(30, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    assert a.images.shape == (30, 32, 32, 3) and a.images.dtype == np.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    assert list(a.params.columns) == list(SCENE_PARAM_NAMES)
    assert a.class_names == list(SCENE_SHAPES)
    np.testing.assert_array_equal(a.classes, a.params["shape"].to_numpy().astype(int))
    assert np.bincount(a.classes, minlength=6).tolist() == [5] * 6  # balanced
    assert set(a.params["n_shapes"]) == {1.0, 2.0}
    one = a.params["n_shapes"] == 1
    assert (a.params.loc[one, [c for c in a.params if c.startswith("s2_")]] == 0).all().all()


def test_scene_pixels_follow_their_parameters():
    scenes = procedural_scenes(120, size=48, seed=5)
    p = scenes.params
    # plain discs and squares, alone in the scene: the centre pixel has the shape's colour
    rows = np.flatnonzero((p["shape"].isin([0, 1])) & (p["texture"] == 0) & (p["n_shapes"] == 1))
    assert len(rows) >= 3
    for i in rows:
        cy, cx = int(p["y"][i] * 48), int(p["x"][i] * 48)
        np.testing.assert_allclose(scenes.images[i, cy, cx], p.loc[i, ["r", "g", "b"]], atol=1e-5)
        # a corner pixel is background (faint stripes around the background colour)
        bg = p.loc[i, ["bg_r", "bg_g", "bg_b"]].to_numpy(float)
        assert np.abs(scenes.images[i, 0, 0] - bg).max() <= 0.1 * bg.max() + 1e-6
    # anti-aliased edges: intermediate values exist between shape and background
    assert len(np.unique(scenes.images[rows[0]].round(3).reshape(-1, 3), axis=0)) > 30


def test_scene_input_errors():
    with pytest.raises(ValueError, match="at least 1 scene"):
        procedural_scenes(0)
    with pytest.raises(ValueError, match="size must be at least 8"):
        procedural_scenes(3, size=4)


# --------------------------------------------------------------------------------------------
# Encoding model
# --------------------------------------------------------------------------------------------


def test_cortex_regions_and_reference_zscore(cortex):
    regions = np.array(cortex.regions)
    assert len(regions) == cortex.n_voxels == 300
    assert list(dict.fromkeys(regions)) == list(REGIONS)
    assert np.bincount(np.unique(regions, return_inverse=True)[1]).min() >= 60
    r = cortex.responses(procedural_scenes(64, seed=77).images)
    assert r.shape == (64, 300) and np.isfinite(r).all()
    # z-scored on reference scenes: other scenes give about zero mean, unit s.d.
    assert abs(r.mean()) < 0.3 and 0.6 < r.std(0).mean() < 1.4
    # subject-specific: another seed gives other pRFs and another voxel count
    other = VisualCortex(seed=12)
    assert other.n_voxels != cortex.n_voxels or not np.allclose(other.prf, cortex.prf)
    with pytest.raises(ValueError, match="unknown region 'IT'"):
        cortex.region_feature(r[:1], "IT")


def test_v4_prefers_the_region_colour(cortex):
    red, green = _uniform([0.9, 0.2, 0.1]), _uniform([0.1, 0.8, 0.2])
    images = np.concatenate([red, green])
    feature = cortex.region_feature(images, "V4")
    assert feature[0] > 0.5 and feature[1] < -0.15
    assert PREFERRED_COLOR @ np.ones(3) == pytest.approx(0.0, abs=1e-12)
    v4 = np.array(cortex.regions) == "V4"
    resp = cortex.responses(images)[:, v4]
    assert resp[0].mean() > resp[1].mean() + 1.0
    assert (resp[0] > resp[1]).mean() > 0.8  # voxels scatter around the region's preference


def test_v1_voxels_respond_to_a_grating_in_their_prf(cortex):
    v1 = np.flatnonzero(np.array(cortex.regions) == "V1")[:40]
    grid = (np.arange(32) + 0.5) / 32
    u, v = np.meshgrid(grid, grid)
    gratings = []
    for i in v1:
        x, y, sd = cortex.prf[i]
        ori, freq = cortex.v1_preference[i]  # cycles per pixel
        window = np.exp(-0.5 * ((u - x) ** 2 + (v - y) ** 2) / (1.5 * sd) ** 2)
        wave = np.cos(2 * np.pi * freq * 32 * (np.cos(ori) * u + np.sin(ori) * v))
        gratings.append(0.5 + 0.4 * window * wave)
    gratings = np.repeat(np.stack(gratings)[..., None], 3, axis=-1)
    blank = _uniform([0.5, 0.5, 0.5])
    resp = cortex.responses(np.concatenate([gratings, blank]))
    own = resp[np.arange(len(v1)), v1]
    assert (own > resp[-1, v1]).all()
    assert np.mean(own - resp[-1, v1]) > 2.0
    feat = cortex.region_feature(np.concatenate([gratings[:1], blank]), "V1")
    assert feat[0] > feat[1] == pytest.approx(0.0, abs=1e-6)


def test_lo_feature_sees_an_object(cortex):
    scenes = procedural_scenes(6, seed=0).images
    blank = _uniform([0.5, 0.5, 0.5])
    feat = cortex.region_feature(np.concatenate([scenes, blank]), "LO")
    assert (feat[:-1] > 10 * feat[-1] + 1e-3).all()


def test_cortex_works_on_photographs(cortex):
    folder = get_settings().sample_data / "images" / "haxby_face_house"
    if not folder.is_dir():
        pytest.skip(f"no sample photographs at {folder}")
    photos = load_image_folder(folder, size=64)
    resp = cortex.responses(photos.images[:20])  # resized to the cortex's 32 pixels
    assert resp.shape == (20, 300) and np.isfinite(resp).all() and resp.std() > 0.1
    assert np.isfinite(cortex.region_feature(photos.images[:20], "V4")).all()


# --------------------------------------------------------------------------------------------
# fMRI experiment
# --------------------------------------------------------------------------------------------


def test_fmri_is_deterministic(small):
    again = simulate_visual_fmri(**SMALL, seed=3)
    other = simulate_visual_fmri(**SMALL, seed=4)
    for a, b in zip(small.recordings, again.recordings, strict=True):
        np.testing.assert_array_equal(a.signal.values, b.signal.values)
    assert not np.array_equal(small.recordings[0].signal.values[:50, :20],
                              other.recordings[0].signal.values[:50, :20])


def test_fmri_recordings_follow_the_schema(small):
    counts = set()
    for ds, (subject, brain) in zip(small.recordings, small.cortex.items(), strict=True):
        validate(ds, check_data=True)
        assert ds.attrs["modality"] == "fmri" and ds.attrs["subject"] == subject
        assert ds.attrs["sfreq"] == 1.0 and ds.attrs["task"] == "vision"
        assert list(ds.region.values) == brain.regions
        assert set(ds.region.values) == set(REGIONS)
        assert ds.channel.values[0] == "vox0001"
        np.testing.assert_allclose(np.column_stack([ds.x, ds.y, ds.z]), brain.prf)
        assert ds.attrs["vision"]["test_ids"] == small.test_ids.tolist()
        counts.add(ds.sizes["channel"])
    assert len(counts) == 2  # voxel counts differ per subject


def test_nsd_like_design(small):
    n = len(small.stimuli)
    np.testing.assert_array_equal(small.test_ids, np.arange(n - 10, n))
    orders = []
    for ds in small.recordings:
        ev = events_frame(ds)
        assert set(ev["label"]) == {"image"}
        ids = ev["value"].to_numpy().astype(int)
        shown = np.bincount(ids, minlength=n)
        assert (shown[: n - 10] == 1).all() and (shown[n - 10:] == 2).all()
        iv = intervals_frame(ds).sort_values("start")
        assert list(iv["split"]) == ["train", "valid", "test"]
        gaps = iv["start"].to_numpy()[1:] - iv["stop"].to_numpy()[:-1]
        assert (gaps >= MODALITY_MARGINS["fmri"] - 1e-9).all()
        test = iv[iv["split"] == "test"].iloc[0]
        onsets = ev["onset"].to_numpy()
        is_test = np.isin(ids, small.test_ids)
        # test images only in the test block, whose response windows stay inside `test`
        assert onsets[is_test].min() >= test["start"]
        assert (onsets[is_test] + RESPONSE_WINDOW <= test["stop"]).all()
        assert not ((onsets[~is_test] + RESPONSE_WINDOW) > test["start"]).any()
        for _, row in iv.iterrows():  # every trial's window inside one interval
            inside = (onsets >= row["start"]) & (onsets + RESPONSE_WINDOW <= row["stop"])
            assert inside.sum() == np.sum((onsets >= row["start"]) & (onsets < row["stop"]))
        assert ds.time.values[-1] + 1.0 >= iv["stop"].max()
        valid = small.trial_tables[ds.attrs["subject"]]["split"].value_counts()
        assert valid["valid"] == round(0.15 * (n - 10)) and valid["test"] == 20
        soa = np.diff(onsets[: valid["train"]])
        assert soa.min() >= 4.0 - 1e-9 and soa.max() <= 6.0 + 1e-9
        orders.append(ids[: n - 10])
    assert not np.array_equal(orders[0], orders[1])  # each subject its own order


def _trial_responses(ds, table):
    x = ds.signal.values.astype(np.float64)
    x = 100 * (x / x.mean(0) - 1)
    t = ds.time.values
    return np.stack([x[(t >= o + 4) & (t <= o + 7)].mean(0) for o in table["onset"]])


def test_snr_is_realistic():
    """Ridge from trial responses to 8 x 8 pixels: clearly above chance, far from perfect."""
    scores = {}
    for noise in (0.0, 1.0):
        sim = simulate_visual_fmri(n_subjects=1, n_images=240, n_test_images=40,
                                   n_voxels=300, noise=noise, seed=0)
        ds, table = sim.recordings[0], sim.trial_tables["01"]
        x = _trial_responses(ds, table)
        pixels = sim.stimuli.images.reshape(240, 8, 4, 8, 4, 3).mean((2, 4)).reshape(240, -1)
        y = pixels[table["image"].to_numpy()]
        train = table["split"].to_numpy() != "test"
        mu, sd = x[train].mean(0), x[train].std(0)
        model = Ridge(alpha=1000.0).fit((x[train] - mu) / sd, y[train])
        pred = model.predict((x[~train] - mu) / sd)
        scores[noise] = two_way_identification(y[~train], pred)
    assert 0.7 < scores[1.0] < 0.95
    assert scores[0.0] > scores[1.0] + 0.03


def test_fmri_input_errors():
    scenes = procedural_scenes(12)
    with pytest.raises(ValueError, match="either images or n_images"):
        simulate_visual_fmri(scenes, n_images=12)
    with pytest.raises(ValueError, match="n_test_images must be between 1 and 11"):
        simulate_visual_fmri(scenes, n_test_images=12)
    with pytest.raises(ValueError, match="split_gap must be at least 12"):
        simulate_visual_fmri(scenes, n_test_images=2, split_gap=5.0)
    with pytest.raises(ValueError, match="at least one subject, with distinct names"):
        simulate_visual_fmri(scenes, n_test_images=2, subjects=["a", "a"])


# --------------------------------------------------------------------------------------------
# Config and stage
# --------------------------------------------------------------------------------------------


def test_config_validates_vision():
    with pytest.raises(ValidationError, match="vision: unknown parameter.*'n_voxel'.*valid "
                                              "parameters: n_subjects"):
        SimulationConfig(modalities=[], vision={"n_voxel": 100})
    with pytest.raises(ValidationError, match="vision and n_images both ask for stimulus"):
        SimulationConfig(modalities=["fmri"], n_images=48, vision={})
    with pytest.raises(ValidationError, match="vision.images must be"):
        SimulationConfig(modalities=[], vision={"images": 3})
    assert SimulationConfig(modalities=["fmri"], n_images=None, vision={}).vision == {}
    shipped = SimulationConfig.load("pipelines/simulate_vision.yaml")
    assert shipped.vision["n_subjects"] == 5 and shipped.modalities == []


def test_stage_writes_recordings_and_stimuli(tmp_path):
    from neurodecode.store import open_recording, read_stimuli

    config = SimulationConfig(dataset="vis", modalities=[], n_images=None, seed=1,
                              vision={**SMALL, "n_voxels": [40, 90], "isi": [3.0, 4.0]})
    first = simulate_to(tmp_path, config)
    assert [r.status for r in first] == ["created", "created"]
    for r in first:
        ds = open_recording(r.path)
        assert ds.attrs["task"] == "vision" and set(ds.region.values) == set(REGIONS)
    stim = read_stimuli(tmp_path / "stimuli.zarr", [0, 59])
    assert stim["images"].shape == (2, 32, 32, 3)
    assert stim["params"].shape == (2, len(SCENE_PARAM_NAMES))
    meta = json.loads((tmp_path / "stimuli.json").read_text())
    assert meta["param_names"] == list(SCENE_PARAM_NAMES)
    assert meta["test_ids"] == list(range(50, 60)) and meta["class_names"] == list(SCENE_SHAPES)
    direct = simulate_visual_fmri(**SMALL, seed=1)
    np.testing.assert_allclose(stim["params"][1], direct.stimuli.params.iloc[59].to_numpy())
    again = simulate_to(tmp_path, config)
    assert [r.status for r in again] == ["unchanged", "unchanged"]


def test_stage_reads_an_image_folder(tmp_path):
    from PIL import Image

    from neurodecode.store import read_stimuli

    for cls, colour in (("red", (220, 30, 20)), ("green", (20, 200, 40))):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = np.full((40, 40, 3), colour, np.uint8)
            pixels[10 + i: 20 + i, 10:30] = 255
            Image.fromarray(pixels).save(tmp_path / "images" / cls / f"{i}.png")
    config = SimulationConfig(dataset="photos", modalities=[], n_images=None, vision={
        "images": str(tmp_path / "images"), "n_subjects": 1, "n_test_images": 4,
        "n_voxels": 30})
    simulate_to(tmp_path / "out", config)
    stim = read_stimuli(tmp_path / "out" / "stimuli.zarr")
    assert stim["images"].shape == (12, 32, 32, 3) and "params" not in stim
    meta = json.loads((tmp_path / "out" / "stimuli.json").read_text())
    assert meta["class_names"] == ["green", "red"] and meta["param_names"] == []
