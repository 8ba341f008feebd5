"""The decode stage: samples from stores, cross-validation with chance, metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from neurodecode.pipelines import StageError, get_stage, read_provenance, run_stage
from neurodecode.pipelines.decode import DecodeConfig
from neurodecode.simulate import simulate_dataset
from neurodecode.store import recording_path, write_recording

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

#: Keys of metrics.json (the contract the report reads).
METRICS_KEYS = {
    "analysis", "description", "recordings", "samples", "n_samples", "classes", "estimator",
    "estimator_name", "cv", "n_splits", "n_permutations", "permutation", "metrics", "folds",
    "confusion", "seconds",
}  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """One simulated subject, EEG and spikes, two runs of 60 s, written as stores."""
    root = tmp_path_factory.mktemp("stores")
    sim = simulate_dataset(1, ("eeg", "spikes"), duration=60.0, n_runs=2, seed=0)
    for ds in sim.recordings:
        write_recording(ds, recording_path(root, "sim", ds))
    return root / "sim"


def _position_config(**overrides) -> dict:
    config = {
        "analysis": "sim_position",
        "description": "position from simulated spike counts",
        "samples": {"kind": "windows", "modality": "spikes", "length": 0.5, "stride": 0.25,
                    "target": "position", "features": "sum", "transform": "sqrt"},
        "estimator": {"name": "sklearn.linear_model:Ridge", "params": {"alpha": 1.0}},
        "cv": {"name": "ContiguousBlocks", "params": {"n_blocks": 5}},
        "metrics": ["r2", "median_absolute_error"],
        "n_permutations": 20,
    }  # fmt: skip
    config.update(overrides)
    return config


def test_position_beats_chance_and_shuffled_control_does_not(stores, tmp_path):
    out = tmp_path / "decode" / "metrics.json"
    record = run_stage("decode", _position_config(), {"stores": [stores]}, {"metrics": out})
    data = json.loads(out.read_text())
    assert METRICS_KEYS <= set(data)
    assert data["samples"]["kind"] == "windows" and data["classes"] is None
    assert data["confusion"] is None and data["permutation"] == "circular_shift"
    assert sorted(data["recordings"]) == sorted(
        str(p.resolve()) for p in stores.rglob("spikes/*.zarr")
    )
    assert data["n_splits"] == len(data["folds"]) == 5
    assert sum(f["n_test"] for f in data["folds"]) == data["n_samples"]
    r2 = data["metrics"]["r2"]
    assert set(r2) == {"score", "std", "chance", "p_value"}
    assert r2["score"] > 0.5 > r2["chance"]
    assert r2["p_value"] < 0.05  # 1/21: no permutation reaches the true score
    mae = data["metrics"]["median_absolute_error"]
    assert mae["score"] < mae["chance"] and mae["p_value"] < 0.05
    assert np.mean([f["r2"] for f in data["folds"]]) == pytest.approx(r2["score"])
    assert record["summary"]["r2"] == {k: r2[k] for k in ("score", "chance", "p_value")}
    assert read_provenance(out)["config"]["analysis"] == "sim_position"

    control = tmp_path / "control" / "metrics.json"
    run_stage("decode", _position_config(shuffle_targets=True), {"stores": [stores]},
              {"metrics": control})  # fmt: skip
    shuffled = json.loads(control.read_text())
    assert shuffled["shuffled_targets"] is True
    assert shuffled["metrics"]["r2"]["p_value"] >= 0.05
    assert shuffled["metrics"]["r2"]["score"] < 0.2


@pytest.mark.slow
def test_stimulus_classes_leave_one_run_out_with_confusion(stores, tmp_path):
    config = yaml.safe_load((PIPELINES / "decode_sim_stimulus.yaml").read_text())
    config.update(n_permutations=3, n_jobs=1)
    out = tmp_path / "metrics.json"
    run_stage("decode", config, {"stores": [stores]}, {"metrics": out})
    data = json.loads(out.read_text())
    from neurodecode.schema import events_frame
    from neurodecode.store import open_recording

    shown = {str(label) for store in stores.rglob("eeg/*.zarr")
             for label in events_frame(open_recording(store))["label"]}  # fmt: skip
    n_classes = len(data["classes"])
    assert data["classes"] == sorted(c for c in shown if c.startswith("stim/"))  # "stim/*"
    assert data["cv"] == "LeaveOneGroupOut(by='run')" and data["n_splits"] == 2
    assert {f["test_groups"] for f in data["folds"]} == {"01", "02"}
    matrix = np.array(data["confusion"]["matrix"])
    assert data["confusion"]["labels"] == data["classes"]
    assert matrix.shape == (n_classes, n_classes) and matrix.sum() == data["n_samples"]
    accuracy = np.trace(matrix) / matrix.sum()
    folds = [f["balanced_accuracy"] for f in data["folds"]]
    assert data["metrics"]["balanced_accuracy"]["score"] == pytest.approx(np.mean(folds))
    assert accuracy > 0.5 and data["metrics"]["balanced_accuracy"]["score"] > 0.5
    assert data["metrics"]["balanced_accuracy"]["chance"] < 1.5 / n_classes


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"n_permutation": 3}, "'n_permutation'"),
        ({"estimator": {"name": "csp_ldaa"}}, "estimator 'csp_ldaa'; did you mean 'csp_lda'"),
        ({"estimator": {"name": "ridge", "params": {"alpha": 1}}}, "parameter(s) ['alpha']"),
        ({"estimator": {"name": "sklearn.linear_model:Rigde"}}, "has no attribute 'Rigde'"),
        ({"cv": {"name": "LeaveOneRunOut"}}, "unknown splitter 'LeaveOneRunOut'"),
        ({"cv": {"name": "ContiguousBlocks", "params": {"blocks": 3}}}, "['blocks']"),
        ({"metrics": ["accuracy"]}, "metrics: metrics ['accuracy'] do not score"),
        ({"samples": {"kind": "windows", "length": 1, "stride": 1, "target": "position",
                      "lenght": 2}}, "samples.windows"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_before_any_work(change, named, tmp_path, monkeypatch):
    import neurodecode.pipelines.decode as decode_module

    def never(*args, **kwargs):
        raise AssertionError("a bad config must fail before the stores are read")

    monkeypatch.setattr(decode_module, "open_stores", never)
    missing = tmp_path / "not-there"  # the config is refused before inputs are even checked
    out = tmp_path / "metrics.json"
    with pytest.raises(StageError) as err:
        run_stage("decode", _position_config(**change), {"stores": [missing]}, {"metrics": out})
    assert str(err.value).startswith("stage decode")
    assert named in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"samples": {"kind": "epochs", "modality": "eeg", "tmin": 0.0, "tmax": 0.5,
                      "labels": ["stim/disk"]}, "metrics": None},
         "samples: labels: event label 'stim/disk' is in no recording"),
        ({"samples": {**_position_config()["samples"], "modality": "fmri"}},
         "no recording of the 4 store(s) matches {'modality': 'fmri'}"),
        ({"samples": {**_position_config()["samples"], "runs": ["01"]},
          "cv": {"name": "LeaveOneGroupOut", "params": {"by": "run"}}},
         "cv LeaveOneGroupOut: leave-one-run-out needs at least 2 groups"),
        ({"samples": {**_position_config()["samples"], "where": {"sped": {"above": 0.1}}}},
         "no behaviour 'behavior_sped'"),
        ({"estimator": {"name": "ridge", "fit_params": {"ridge__groups": "block"}}},
         "estimator: estimator.fit_params['ridge__groups']: the sample table has no column"),
    ],
)  # fmt: skip
def test_user_errors_while_running_are_one_line_stage_errors(stores, tmp_path, change, named):
    out = tmp_path / "metrics.json"
    with pytest.raises(StageError) as err:
        run_stage("decode", _position_config(**change), {"stores": [stores]}, {"metrics": out})
    message = str(err.value)
    assert message.startswith("stage decode (sim_position)") or message.startswith("stage decode")
    assert named in message and "\n" not in message
    assert not out.exists() and not list(tmp_path.glob(".metrics.json.tmp-*"))


def test_estimator_and_splitter_by_name_alone():
    config = DecodeConfig(**{**_position_config(), "estimator": "ridge", "cv": "LeaveOneGroupOut"})
    assert config.estimator.name == "ridge" and config.estimator.params == {}
    assert config.cv.name == "LeaveOneGroupOut" and config.cv.params == {}


def test_shipped_decode_configs_validate():
    names = sorted(p.name for p in PIPELINES.glob("decode*.yaml"))
    assert {"decode.yaml", "decode_eegbci_hands_feet.yaml", "decode_rat_position.yaml",
            "decode_sim.yaml"} <= set(names)  # fmt: skip
    stage = get_stage("decode")
    for name in names:
        config = DecodeConfig.load(PIPELINES / name)
        assert isinstance(config, stage.Config)
        assert config.analysis and config.description


@pytest.mark.slow
def test_default_config_decodes_simulated_calcium(tmp_path):
    sim = simulate_dataset(1, ("calcium",), duration=60.0, seed=1)
    root = tmp_path / "stores"
    for ds in sim.recordings:
        write_recording(ds, recording_path(root, "sim", ds))
    config = yaml.safe_load((PIPELINES / "decode.yaml").read_text())
    config.update(n_permutations=10, n_jobs=1)
    out = tmp_path / "metrics.json"
    run_stage("decode", config, {"stores": [root]}, {"metrics": out})
    data = json.loads(out.read_text())
    assert data["samples"]["kind"] == "time_samples" and data["n_samples"] == 1800
    assert data["metrics"]["r2"]["score"] > data["metrics"]["r2"]["chance"] + 0.3
    assert data["metrics"]["r2"]["p_value"] == pytest.approx(1 / 11)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_stores(sample_data, tmp_path_factory) -> Path:
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    out = tmp_path_factory.mktemp("real")
    catalog = load_catalog()
    tasks = [t for name in ("eegbci_s001", "nelpy_linear_track")
             for t in plan_entry(catalog[name], out, sample_data)]  # fmt: skip
    results = run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
    assert all(r.status == "created" for r in results), [r.error for r in results]
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_eegbci_hands_feet_matches_cross_validate(real_stores, tmp_path):
    """The shipped config reproduces benchmarks/real_data.py's leave-one-run-out row."""
    from neurodecode.data.samples import Samples, epochs, open_recordings
    from neurodecode.data.splits import LeaveOneGroupOut
    from neurodecode.evaluate import baselines, cross_validate

    config = yaml.safe_load((PIPELINES / "decode_eegbci_hands_feet.yaml").read_text())
    config.update(n_permutations=3, n_jobs=1)
    out = tmp_path / "metrics.json"
    run_stage("decode", config, {"stores": [real_stores / "eegbci_s001"]}, {"metrics": out})
    data = json.loads(out.read_text())

    recs = open_recordings(real_stores / "eegbci_s001", runs=["06", "10", "14"])
    s = epochs(recs, tmin=-1.0, tmax=4.0, l_freq=7.0, h_freq=30.0,
               labels={"imagine_both_fists": "hands", "imagine_both_feet": "feet"})  # fmt: skip
    keep = (s.times >= 1.0 - 1e-9) & (s.times <= 2.0 + 1e-9)
    s = Samples(s.X[:, :, keep], s.y, s.table, s.ch_names, s.sfreq, s.times[keep])
    direct = cross_validate(baselines.csp_lda(4), s.X, s.y, s.table, LeaveOneGroupOut("run"),
                            metrics=("accuracy", "balanced_accuracy", "roc_auc"),
                            n_permutations=3, permutation="within")  # fmt: skip
    assert data["n_samples"] == 45 and data["classes"] == ["feet", "hands"]
    assert len(data["recordings"]) == 3 and data["n_splits"] == 3
    for _, row in direct.summary.iterrows():
        got = data["metrics"][row["metric"]]
        assert got["score"] == pytest.approx(row["mean"], abs=1e-12)
        assert got["chance"] == pytest.approx(row["chance"], abs=1e-12)
        assert got["p_value"] == pytest.approx(row["p_value"], abs=1e-12)
    assert data["metrics"]["accuracy"]["score"] > 0.85  # MNE's example, leave-one-run-out


@pytest.mark.realdata
def test_rat_position_matches_cross_validate(real_stores, tmp_path):
    """The shipped rat config is benchmarks/real_data.py's linear_track ridge protocol."""
    from neurodecode.data.samples import open_recordings, windows
    from neurodecode.data.splits import ContiguousBlocks
    from neurodecode.evaluate import baselines, cross_validate

    config = yaml.safe_load((PIPELINES / "decode_rat_position.yaml").read_text())
    config.update(n_permutations=0, n_jobs=1)
    out = tmp_path / "metrics.json"
    run_stage("decode", config, {"stores": [real_stores / "nelpy_linear_track"]},
              {"metrics": out})  # fmt: skip
    data = json.loads(out.read_text())

    recs = open_recordings(real_stores / "nelpy_linear_track")
    s = windows(recs, length=1.0, stride=0.25, target="position")
    speed = windows(recs, length=1.0, stride=0.25, target="speed").y
    s = s.select((s.table["stop"].to_numpy() <= 985.0) & (speed > 20.0))
    direct = cross_validate(
        baselines.ridge(),
        np.sqrt(s.X.sum(axis=2)),
        s.y,
        s.table,
        ContiguousBlocks(n_blocks=5, gap=2.0),
        metrics=("r2", "median_absolute_error"),
        n_permutations=0,
    )
    assert data["n_samples"] == len(s)
    for _, row in direct.summary.iterrows():
        assert data["metrics"][row["metric"]]["score"] == pytest.approx(row["mean"], rel=1e-9)
    assert data["metrics"]["r2"]["chance"] is None and data["permutation"] == "none"
    assert data["metrics"]["r2"]["score"] > 0.3
