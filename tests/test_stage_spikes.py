"""The spike-token stages: ``simulate`` with a circuit, ``pretrain`` with a spike-token model,
``finetune`` of a new session, ``neurodecode pretrain`` and the report, on a tiny simulated
circuit (16 units, 120 s, two sessions of 12 units each; a tiny model, 2 epochs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.data.samples import open_recordings
from neurodecode.data.tokens import spike_windows
from neurodecode.models.spikes import SpikePretrainer
from neurodecode.pipelines import StageError, run_stage
from neurodecode.pipelines.spike_pretrain import split_in_time
from neurodecode.report import write_report

runner = CliRunner()

CIRCUIT = {"dataset": "circuit", "modalities": [],
           "circuit": {"n_units": 16, "duration": 120.0, "sessions": ["01", "02"],
                       "session_units": 12, "seed": 2}}
TINY = {"width": 32, "heads": 2, "layers": 1, "past_layers": 1}
PRETRAIN = {"analysis": "tiny_spikes", "model": {"config": "spike_gpt", "params": TINY},
            "modality": "spikes", "behavior": ["position"], "max_epochs": 2,
            "generate_seconds": 5.0}
FINETUNE = {"analysis": "tiny_new_session", "model": "spike_gpt", "target": "position",
            "fractions": [0.2, 1.0], "variants": ["pretrained", "units", "scratch"],
            "max_epochs": 2, "n_permutations": 20}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spikes")
    stores = root / "stores"
    run_stage("simulate", CIRCUIT, {}, {"stores": stores})
    first = stores / "sub-circuit" / "ses-01"
    second = stores / "sub-circuit" / "ses-02"
    run_stage("pretrain", PRETRAIN, {"stores": [first]}, {"pretrained": root / "pre"})
    run_stage("finetune", FINETUNE, {"stores": [second], "pretrained": [root / "pre"]},
              {"finetuned": root / "ft"})
    return root, first, second


def test_pretrain_scores_against_poisson_connectivity_and_generation(run):
    root, first, _ = run
    data = json.loads((root / "pre" / "metrics.json").read_text())
    assert data["family"] == "spike_tokens"
    nll = data["next_token_nll"]
    assert nll["split"] == "valid" and nll["n_spikes"] > 0
    for key in ("model", "poisson", "constant"):
        assert np.isfinite(nll[key]) and nll[key] > 0
    conn = data["connectivity"]  # the simulated store carries its true coupling
    assert 0 <= conn["auroc"] <= 1 and conn["n_edges"] > 0 and 0.3 < conn["chance_mean"] < 0.7
    gen = data["generation"]
    assert gen["generated"]["n_spikes"] > 0 and gen["real"]["n_spikes"] > 0
    assert data["tokens"]["n_units"] == 12 and data["epochs"] >= 1
    pre = SpikePretrainer.load(root / "pre" / "pretrain.pt")
    assert len(pre.vocabulary_.keys) == 12


def test_pretraining_windows_never_touch_valid_or_test(run):
    """Windows (past included) lie inside the train intervals; early stopping is cut apart."""
    root, first, _ = run
    data = json.loads((root / "pre" / "metrics.json").read_text())
    (rec,) = open_recordings(first)
    from neurodecode.schema import intervals_frame

    frame = intervals_frame(rec.ds)
    other = frame[frame["split"] != "train"]
    for spans in data["coverage"].values():
        for lo, hi in spans:
            assert not ((other["start"] < hi) & (other["stop"] > lo)).any()
    from neurodecode.data.tokens import SpikeTokenizer, UnitVocabulary

    w = spike_windows([rec], SpikeTokenizer(0.05, 0.15, 0.005), UnitVocabulary(),
                      intervals=["train"])
    train, val = split_in_time(w, 0.15)
    assert train.any() and val.any() and not (train & val).any()
    assert w.table["stop"][train].max() <= w.table["start"][val].min() + 1e-9


def test_finetune_new_session_rows(run):
    root, _, second = run
    data = json.loads((root / "ft" / "metrics.json").read_text())
    assert data["units"]["new"] == 12  # session 02's units are new keys
    assert data["test_in_pretraining"] == 0
    variants = {(r["variant"], r["fraction"]) for r in data["few_shot"]}
    for v in ("pretrained", "units", "scratch", "ridge", "knn"):
        assert (v, 0.2) in variants and (v, 1.0) in variants
    for row in data["few_shot"]:
        assert {"dataset", "fraction", "metric", "score", "chance", "baseline"} <= set(row)
        assert row["metric"] == "r2" and np.isfinite(row["chance"])
    few = [r for r in data["few_shot"] if r["variant"] == "ridge"]
    assert few[0]["n_labelled"] < few[1]["n_labelled"]


def test_finetune_counts_test_windows_the_pretraining_saw(run, tmp_path):
    """A pretraining on whole recordings covers the test intervals: the count says so."""
    root, first, _ = run
    whole = {**PRETRAIN, "intervals": None, "max_epochs": 1, "generate_seconds": 0}
    run_stage("pretrain", whole, {"stores": [first]}, {"pretrained": tmp_path / "pre"})
    ft = {**FINETUNE, "variants": ["pretrained"], "fractions": [1.0], "max_epochs": 1,
          "baselines": []}
    run_stage("finetune", ft, {"stores": [first], "pretrained": [tmp_path / "pre"]},
              {"finetuned": tmp_path / "ft"})
    data = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert data["test_in_pretraining"] > 0 and data["units"]["new"] == 0


def test_bad_inputs_are_named(run, tmp_path):
    root, first, second = run
    with pytest.raises(StageError, match="not a spike-token pretraining"):
        (tmp_path / "fake").mkdir()
        (tmp_path / "fake" / "metrics.json").write_text('{"analysis": "codebook"}')
        run_stage("finetune", FINETUNE, {"stores": [second], "pretrained": [tmp_path / "fake"]},
                  {"finetuned": tmp_path / "ft"})
    assert not (tmp_path / "ft").exists()  # nothing half-written
    with pytest.raises(StageError, match="target"):
        run_stage("finetune", {**FINETUNE, "target": None}, {"stores": [second]},
                  {"finetuned": tmp_path / "ft2"})
    with pytest.raises(StageError, match="behaviour"):
        run_stage("finetune", {**FINETUNE, "target": "nonexistent"}, {"stores": [second]},
                  {"finetuned": tmp_path / "ft3"})


def test_cli_pretrain_with_a_spike_model(run, tmp_path):
    _, first, _ = run
    out = tmp_path / "cli"
    result = runner.invoke(app, ["pretrain", "--model", "spike_gpt", "--store", str(first),
                                 "--out", str(out), "--max-epochs", "1", "--behavior",
                                 "position"])
    assert result.exit_code == 0, result.output
    assert "nats/spike" in result.output and "inhomogeneous Poisson" in result.output
    assert (out / "pretrain.pt").is_file()


def test_report_shows_both_spike_sections(run, tmp_path):
    root, _, _ = run
    summary = write_report(tmp_path / "report.html", pretrain=[root / "pre"],
                           finetune=[root / "ft"], thumbnails=False)
    html = (tmp_path / "report.html").read_text()
    assert "Spike-token pretraining" in html and "Few-shot behaviour decoding" in html
    assert summary["finetunes"] == 1
