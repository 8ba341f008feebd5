"""The embed stage: contrastive embeddings of stores, decoded, compared, saved and plotted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from neurodecode.data.samples import open_recordings, windows
from neurodecode.models.contrastive import ContrastiveEmbedding
from neurodecode.pipelines import StageError, get_stage, read_provenance, run_stage
from neurodecode.pipelines.embed import EmbedConfig
from neurodecode.simulate import simulate_dataset
from neurodecode.store import recording_path, write_recording

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """Three simulated subjects, place-cell spikes, 60 s each, written as stores."""
    root = tmp_path_factory.mktemp("stores")
    sim = simulate_dataset(3, ("spikes",), duration=60.0, seed=0)
    for ds in sim.recordings:
        write_recording(ds, recording_path(root, "sim", ds))
    return root / "sim"


def _config(**overrides) -> dict:
    config = {
        "analysis": "sim_embedding",
        "samples": {"modality": "spikes", "bin_size": 0.05, "transform": "sqrt"},
        "condition_on": "position",
        "mode": "both",
        "model": {"output_dimension": 3, "n_iter": 150, "batch_size": 64,
                  "learning_rate": 0.003},
        "decoding": {"n_neighbors": 10, "n_permutations": 20, "metrics": ["r2"]},
        "consistency": {"n_bins": 20},
    }  # fmt: skip
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def both(stores, tmp_path_factory) -> tuple[Path, dict]:
    """The embed folder of a multi-session + per-recording run on the three subjects."""
    out = tmp_path_factory.mktemp("embed") / "sim"
    record = run_stage("embed", _config(), {"stores": [stores]}, {"embedding": out})
    return out, record


@pytest.mark.slow  # the shared fixture trains 4 models (~10 s)
def test_folder_format_and_held_out_decoding_beats_chance(both, stores):
    out, record = both
    summary = json.loads((out / "summary.json").read_text())
    assert {"recordings", "consistency", "model", "figures"} <= set(summary)
    assert summary["model"]["output_dimension"] == 3 and summary["model"]["n_iter"] == 150
    ids = sorted(str(p.resolve()) for p in stores.rglob("*.zarr"))
    assert sorted(r["id"] for r in summary["recordings"]) == ids
    for rec in summary["recordings"]:
        assert rec["modality"] == "spikes" and rec["subject"] in {"01", "02", "03"}
        assert rec["behavior"] == ["position", "speed"]
        assert rec["n_train"] + rec["n_test"] < rec["n_samples"] == 1200  # a gap between them
        for metric in ("r2", "r2 (per recording)"):
            entry = rec["decoding"][metric]
            assert set(entry) == {"score", "chance", "p_value"}
            assert entry["score"] > 0.5 > entry["chance"]
            assert entry["p_value"] < 0.05  # 1/21
    assert record["summary"]["decoding"][ids[0]]["r2"]["score"] > 0.5
    assert read_provenance(out)["stage"] == "embed"


@pytest.mark.slow  # the shared fixture trains 4 models (~10 s)
def test_embeddings_and_models_load_back(both):
    out, _ = both
    summary = json.loads((out / "summary.json").read_text())
    multi = ContrastiveEmbedding.load(out / "models" / "multi_session" / "model.pt")
    assert multi.n_sessions_ == 3 and multi.output_dim == 3
    for k, rec in enumerate(summary["recordings"]):
        with np.load(out / rec["embedding"], allow_pickle=False) as z:
            emb, behavior = z["embedding"], z["behavior"]
            assert emb.dtype == np.float32 and emb.shape == (rec["n_samples"], 3)
            assert z["time"].shape == (rec["n_samples"],)
            assert behavior.shape == (rec["n_samples"], 2)
            assert z["behavior_names"].tolist() == ["position", "speed"]
            assert z["train"].sum() == rec["n_train"] and z["test"].sum() == rec["n_test"]
        name = Path(rec["embedding"]).stem
        single = ContrastiveEmbedding.load(out / "models" / name / "model.pt")
        with np.load(out / "embeddings" / "per_recording" / f"{name}.npz") as z:
            assert single.n_sessions_ == 1 and z["embedding"].shape == emb.shape
        assert np.isfinite(emb).all() and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
        assert f"models/{name}/model.pt" in summary["models"]
        # the saved models re-embed the recording (50 ms sqrt counts) as saved
        recs = open_recordings([rec["id"]])
        X = np.sqrt(windows(recs, length=0.05, stride=0.05).X.sum(axis=2)).astype(np.float32)
        assert np.allclose(multi.transform(X, session=k), emb, atol=1e-5)
        with np.load(out / "embeddings" / "per_recording" / f"{name}.npz") as z:
            assert np.allclose(single.transform(X), z["embedding"], atol=1e-5)
    assert len(multi.log_["loss"]) == 150


@pytest.mark.slow  # the shared fixture trains 4 models (~10 s)
def test_consistency_matrix_and_figures(both):
    out, _ = both
    summary = json.loads((out / "summary.json").read_text())
    for key in ("consistency", "consistency_per_recording"):
        cons = summary[key]
        matrix = np.array(cons["matrix"], dtype=float)
        assert cons["labels"] == [r["id"] for r in summary["recordings"]]
        assert matrix.shape == (3, 3)
        assert np.isnan(np.diag(matrix)).all()
        off = matrix[~np.eye(3, dtype=bool)]
        assert np.all(off > 0.5) and cons["mean"] == pytest.approx(off.mean())
    figures = summary["figures"]
    assert "figures/consistency.png" in figures and "figures/loss.png" in figures
    assert sum(f.startswith("figures/embedding_") for f in figures) == 3
    for rel in figures:
        data = (out / rel).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000  # a real plot, not an empty canvas


def test_time_only_model_without_decoding_on_one_recording(stores, tmp_path):
    config = _config(
        samples={"modality": "spikes", "subjects": ["02"], "bin_size": 0.1},
        condition_on=None, mode="per_recording", decoding=None,
        model={"conditional": "time", "output_dimension": 2, "n_iter": 30, "batch_size": 32},
    )  # fmt: skip
    out = tmp_path / "embed"
    run_stage("embed", config, {"stores": [stores]}, {"embedding": out})
    summary = json.loads((out / "summary.json").read_text())
    (rec,) = summary["recordings"]
    assert rec["decoding"] is None and rec["n_train"] == rec["n_samples"] == 600
    assert summary["consistency"] is None
    with np.load(out / rec["embedding"]) as z:
        assert z["embedding"].shape == (600, 2) and z["train"].all()


def test_shuffled_label_chance_retrains_the_model(stores, tmp_path):
    config = _config(
        samples={"modality": "spikes", "subjects": ["01"], "bin_size": 0.05, "transform": "sqrt"},
        mode="per_recording",
        model={"output_dimension": 3, "n_iter": 60, "batch_size": 64, "learning_rate": 0.003},
        decoding={"n_neighbors": 10, "n_permutations": 3, "chance": "shuffled_labels",
                  "metrics": ["r2", "pearson_r"]},
    )  # fmt: skip
    out = tmp_path / "embed"
    run_stage("embed", config, {"stores": [stores]}, {"embedding": out})
    (rec,) = json.loads((out / "summary.json").read_text())["recordings"]
    for metric in ("r2", "pearson_r"):
        entry = rec["decoding"][metric]
        assert entry["score"] > entry["chance"]
        assert entry["p_value"] == pytest.approx(0.25)  # none of the 3 retrainings reaches it


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"modell": {}}, "unknown parameter 'modell'"),
        ({"model": {"n_iters": 3}}, "model: unknown parameter(s) ['n_iters']"),
        ({"condition_on": None}, "needs condition_on"),
        ({"mode": "joint"}, "mode: Input should be"),
        ({"model": {"device": "gpu"}}, "model.device: device 'gpu'"),
        ({"decoding": {"metrics": ["r2", "accuracy"]}}, "mix classification and regression"),
        ({"decoding": {"decoder": "ridge", "metrics": ["accuracy"]}}, "use knn"),
        ({"behavior": ["speed"]}, "condition_on 'position' is not in behavior"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_before_any_work(change, named, tmp_path):
    out = tmp_path / "embed"
    with pytest.raises(StageError) as err:
        run_stage("embed", _config(**change), {"stores": [tmp_path / "none"]},
                  {"embedding": out})  # fmt: skip
    assert str(err.value).startswith("stage embed") and named in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"condition_on": "heading"}, "samples: condition_on: "),
        ({"condition_on": "heading"}, "has no behaviour ['heading'] (behaviours: position, speed)"),
        ({"samples": {"modality": "eeg"}}, "no recording of the 3 store(s) matches"),
        ({"samples": {"modality": "spikes", "time_range": [0.0, 0.05]}}, "5 samples inside"),
    ],
)  # fmt: skip
def test_user_errors_while_running_are_one_line_stage_errors(stores, tmp_path, change, named):
    out = tmp_path / "embed"
    with pytest.raises(StageError) as err:
        run_stage("embed", _config(**change), {"stores": [stores]}, {"embedding": out})
    assert str(err.value).startswith("stage embed") and named in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()


def test_shipped_embed_configs_validate():
    names = sorted(p.name for p in PIPELINES.glob("embed*.yaml"))
    assert {"embed.yaml", "embed_rat_track.yaml", "embed_sim.yaml"} <= set(names)
    stage = get_stage("embed")
    for name in names:
        config = EmbedConfig.load(PIPELINES / name)
        assert isinstance(config, stage.Config) and config.description


@pytest.mark.realdata
@pytest.mark.slow
def test_rat_track_embedding_decodes_position(sample_data, tmp_path):
    from neurodecode.catalog import load_catalog
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    tasks = plan_entry(load_catalog()["nelpy_linear_track"], tmp_path / "stores", sample_data)
    assert all(
        r.status == "created" for r in run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
    )
    config = yaml.safe_load((PIPELINES / "embed_rat_track.yaml").read_text())
    config["model"]["n_iter"] = 300
    config["decoding"]["n_permutations"] = 10
    out = tmp_path / "embed"
    run_stage("embed", config, {"stores": [tmp_path / "stores"]}, {"embedding": out})
    (rec,) = json.loads((out / "summary.json").read_text())["recordings"]
    assert rec["behavior"] == ["position[0]", "position[1]", "speed"]
    assert rec["n_samples"] == 9849  # 100 ms bins of the first 985 s
    error = rec["decoding"]["median_absolute_error"]
    assert error["score"] < 0.6 * error["chance"] and error["p_value"] < 0.1  # 1/11
    with np.load(out / rec["embedding"]) as z:
        assert z["embedding"].shape == (9849, 8)


def test_discrete_conditional_decodes_classes(tmp_path):
    """Classes of a discrete behaviour (a third of the track), decoded by a kNN classifier."""
    (ds,) = simulate_dataset(1, ("spikes",), duration=60.0, seed=2).recordings
    zone = np.minimum(np.floor(ds["behavior_position"].values * 3), 2)
    ds = ds.assign(behavior_zone=("time", zone))
    write_recording(ds, recording_path(tmp_path / "stores", "sim", ds))
    config = _config(
        condition_on="zone", color_by="zone", mode="per_recording",
        model={"conditional": "discrete", "output_dimension": 3, "n_iter": 80, "batch_size": 64},
        decoding={"n_neighbors": 10, "n_permutations": 20,
                  "metrics": ["balanced_accuracy", "roc_auc"]},
    )  # fmt: skip
    out = tmp_path / "embed"
    run_stage("embed", config, {"stores": [tmp_path / "stores"]}, {"embedding": out})
    (rec,) = json.loads((out / "summary.json").read_text())["recordings"]
    assert rec["decoded"] == "zone" and "zone" in rec["behavior"]
    accuracy = rec["decoding"]["balanced_accuracy"]
    assert accuracy["score"] > 0.6 > accuracy["chance"] and accuracy["p_value"] < 0.05
    assert rec["decoding"]["roc_auc"]["score"] > rec["decoding"]["roc_auc"]["chance"]
