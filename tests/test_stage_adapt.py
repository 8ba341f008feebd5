"""The ``cross_subject`` and ``adapt`` stages, the ``neurodecode adapt`` command and the report's
few-shot section, on small simulated fMRI subjects (300-600 voxels, 360 s, 5 epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.config import SimulationConfig
from neurodecode.models.decoder import CrossSubjectDecoder
from neurodecode.pipelines import (
    StageError,
    get_stage,
    read_provenance,
    run_stage,
    validate_config,
)
from neurodecode.pipelines.adapt import AdaptConfig, parse_budget, read_model_folder
from neurodecode.pipelines.cross_subject import split_subject, subject_samples
from neurodecode.pipelines.decode import open_stores
from neurodecode.report import write_report
from neurodecode.report.html import FEWSHOT_KEYS

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

SIMULATION = {
    "dataset": "xsub", "n_subjects": 4, "modalities": ["fmri"], "duration": 360.0,
    "n_images": None, "seed": 3,
    "options": {"fmri": {"n_voxels": [300, 600]},
                "latent": {"block_duration": [2.0, 2.0], "rest_duration": [3.0, 5.0]}},
}  # fmt: skip
SAMPLES = {"kind": "epochs", "modality": "fmri", "tmin": 4.0, "tmax": 8.0, "labels": ["block/*"]}
CROSS = {
    "analysis": "small_xsub",
    "model": {"config": "cross_subject_fmri",
              "params": {"train": {"max_epochs": 5, "batch_size": 16}}},
    "samples": SAMPLES, "exclude": ["04"], "n_permutations": 50,
}  # fmt: skip
ADAPT = {
    "strategies": ["a", "d", "e"], "fractions": [0.25, 1.0], "budget": "2min",
    "strategy": "d", "options": {"max_epochs": 5}, "n_permutations": 200,
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Stores of 4 subjects, a model of 01-03, and its adaptation to 04 (spied on)."""
    root = tmp_path_factory.mktemp("xsub")
    stores = root / "stores"
    run_stage("simulate", SIMULATION, {}, {"stores": stores})
    run_stage("cross_subject", CROSS, {"stores": [stores]}, {"model": root / "model"})
    calls: list[dict] = []
    original_adapt, original_fit = CrossSubjectDecoder.adapt, CrossSubjectDecoder.fit

    def adapt(self, train, val=None, **kw):
        calls.append({"what": "adapt", "train": train, "val": val,
                      "reference": kw.get("reference")})
        return original_adapt(self, train, val, **kw)

    def fit(self, train, val=None):
        calls.append({"what": "fit", "train": train, "val": val})
        return original_fit(self, train, val)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CrossSubjectDecoder, "adapt", adapt)
        mp.setattr(CrossSubjectDecoder, "fit", fit)
        run_stage("adapt", ADAPT, {"model": root / "model", "stores": [stores / "sub-04"]},
                  {"adapted": root / "adapted"})
    return {"root": root, "stores": stores, "model": root / "model",
            "adapted": root / "adapted", "calls": calls}


def _new_subject_parts(run, subject="04"):
    folder = read_model_folder(run["model"])
    selection = folder.samples.model_copy(update={"subjects": None})
    trials = subject_samples(open_stores([run["stores"] / f"sub-{subject}"], selection),
                             selection)[subject]
    return split_subject(trials, folder.split)


def test_options_reach_the_simulator_and_typos_are_refused(run):
    from neurodecode.store import find_recordings, open_recording

    counts = [open_recording(p).sizes["channel"] for p in find_recordings(run["stores"])]
    assert len(counts) == 4 and all(300 <= n <= 600 for n in counts)
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'fmir'; valid keys: .*fmri.*latent"):
        SimulationConfig(options={"fmir": {"n_voxels": 10}})
    with pytest.raises(ValueError, match=r"options.fmri: unknown parameter.*'voxels'.*n_voxels"):
        SimulationConfig(options={"fmri": {"voxels": 10}})


def test_cross_subject_folder_has_model_metrics_and_provenance(run):
    folder = run["model"]
    assert {p.name for p in folder.iterdir()} == {"model.pt", "metrics.json", "config.yaml"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["metric"] == "balanced_accuracy" and metrics["excluded"] == ["04"]
    assert metrics["samples"]["kind"] == "epochs" and metrics["samples"]["tmin"] == 4.0
    assert metrics["split"] == {"fractions": [0.7, 0.15, 0.15], "gap": None}
    assert sorted(metrics["subjects"]) == ["01", "02", "03"] and metrics["dataset"] == "stores"
    for entry in metrics["subjects"].values():
        assert entry["n_train"] > entry["n_test"] > 0 and entry["gap"] > 12.0
        assert entry["baseline"]["name"] == "logistic"
        for part in ("shared", "baseline"):
            assert abs(entry[part]["chance"] - 0.25) < 0.08
            assert 0 < entry[part]["p_value"] <= 1
        assert all(Path(s).is_dir() for s in entry["stores"])
    # the simulated classes are easy: the shared model beats chance on average
    assert metrics["mean"]["shared"] > metrics["mean"]["chance"] + 0.2
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    assert resolved["train"]["max_epochs"] == 5 and resolved["train"]["batch_size"] == 16
    assert resolved["adapter"]["name"] == "subject_linear"
    assert metrics["epochs"] <= 5
    record = read_provenance(folder)
    assert record["stage"] == "cross_subject" and record["config"]["exclude"] == ["04"]
    assert record["summary"]["subjects"] == ["01", "02", "03"]


def test_fewshot_rows_have_every_key_and_chance_near_one_in_four(run):
    data = json.loads((run["adapted"] / "fewshot.json").read_text())
    rows = data["rows"]
    # 2 fractions x (a, d, scratch, logistic); e skipped: the adapter is not position-aware
    assert len(rows) == 8 and any("zero_shot" in n for n in data["notes"])
    assert {r["strategy"] for r in rows} == {"adapter", "align", "scratch", "logistic"}
    parts, _ = _new_subject_parts(run)
    n_classes = len(set(parts["test"].y))
    for row in rows:
        assert set(FEWSHOT_KEYS) <= set(row)
        assert row["dataset"] == "stores" and row["subject"] == "04"
        assert row["fraction"] in (0.25, 1.0) and row["metric"] == "balanced_accuracy"
        assert row["n_train"] == len(parts["train"].fraction(row["fraction"]))
        assert row["score"] is not None and abs(row["chance"] - 1 / n_classes) < 0.08, row
    saved = data["subjects"]["04"]["saved"]
    assert saved["strategy"] == "align" and saved["budget"] == "2min"
    assert saved["n_train"] == len(parts["train"].within(120.0)) < len(parts["train"])
    assert data["reference"] == ["01", "02", "03"]
    record = read_provenance(run["adapted"])
    assert record["stage"] == "adapt" and record["summary"]["subjects"]["04"]["n_train"] > 0


def test_the_adapted_model_loads_and_serves_the_new_subject(run):
    path = run["adapted"] / "sub-04" / "model.pt"
    dec = CrossSubjectDecoder.load(path)
    assert dec.subjects_ == ["01", "02", "03", "04"]
    assert dec.adaptations_[-1]["strategy"] == "align"
    parts, _ = _new_subject_parts(run)
    pred = dec.predict(parts["test"])
    assert len(pred) == len(parts["test"]) and set(pred) <= set(dec.classes_)
    saved = json.loads((run["adapted"] / "fewshot.json").read_text())["subjects"]["04"]["saved"]
    assert dec.score(parts["test"]) == pytest.approx(saved["score"])


def test_adaptation_never_sees_the_new_subjects_validation_or_test_part(run):
    parts, gap = _new_subject_parts(run)
    pool, later = parts["train"], [parts["val"], parts["test"]]
    first_later = min(float(p.table["start"].min()) for p in later)
    used = [c for c in run["calls"] if c["train"] is not None and c["train"].subject == "04"]
    assert {c["what"] for c in used} == {"adapt", "fit"}  # strategies and the scratch baseline
    assert len([c for c in used if c["what"] == "adapt"]) == 2 * 2 + 1  # curve + saved model
    for call in used:
        assert call["what"] == "fit" or call["val"] is None  # early stopping: the budget's tail
        for given in (call["train"], call["val"]):
            if given is None:
                continue
            assert float(given.table["stop"].max()) + gap <= first_later + 1e-9
            starts = set(pool.table["start"])
            assert set(given.table["start"]) <= starts
        if call["what"] == "adapt":
            assert sorted(call["reference"]) == ["01", "02", "03"]


def test_bad_adapt_configs_name_the_problem():
    stage = get_stage("adapt")
    for config, message in (
        ({"strategies": ["z"]}, r"unknown adaptation strategy 'z'; valid: a \(adapter\)"),
        ({"budget": "5 minutes"}, r"budget '5 minutes': give minutes \('5min'\)"),
        ({"fractions": [0.0, 0.5]}, r"fractions \[0.0\] must lie in \(0, 1\]"),
        ({"options": {"lora_rnk": 2}}, r"options: unknown key\(s\) \['lora_rnk'\].*lora_rank"),
        ({"baselines": ["svm"]}, r"baselines"),
    ):
        with pytest.raises(StageError, match=message):
            validate_config(stage, config)
    assert parse_budget("5min").value == 300.0 and parse_budget("10%").value == 0.1
    assert parse_budget("15trials").kind == "count" and parse_budget("all").kind == "all"
    assert AdaptConfig().strategies == ["adapter", "lora", "full", "align"]
    with pytest.raises(StageError, match=r"model config 'no_such_model': no such file"):
        validate_config(get_stage("cross_subject"), {**CROSS, "model": "no_such_model"})
    with pytest.raises(StageError, match=r"train.max_epochs: Input should be greater"):
        validate_config(get_stage("cross_subject"), {
            **CROSS, "model": {"config": "cross_subject_fmri",
                               "params": {"train": {"max_epochs": 0}}}})


def test_adapt_refuses_a_training_subject(run, tmp_path):
    with pytest.raises(StageError, match=r"subjects \['01'\] are training subjects"):
        run_stage("adapt", {**ADAPT, "subjects": ["01"]},
                  {"model": run["model"], "stores": [run["stores"]]}, {"adapted": tmp_path / "a"})
    assert not (tmp_path / "a").exists()


def _errors(result):
    return result.stderr.strip().splitlines()


def test_cli_adapt_writes_the_model_and_prints_one_line_per_subject(run, tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(app, ["adapt", "--model", str(run["model"] / "model.pt"),
                                 "--subject", str(run["stores"] / "sub-04"), "--strategy", "a",
                                 "--budget", "15trials", "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("sub-04: balanced_accuracy ") and "chance 0.2" in line
    assert "adapter with 15 samples (15trials)" in line and line.endswith("sub-04/model.pt")
    dec = CrossSubjectDecoder.load(out / "sub-04" / "model.pt")
    assert "04" in dec.subjects_ and dec.adaptations_[-1]["n_train"] == 15
    assert read_provenance(out)["stage"] == "adapt"
    again = runner.invoke(app, ["adapt", "--model", str(run["model"]), "--subject",
                                str(run["stores"]), "--strategy", "d", "--budget", "all",
                                "--out", str(out), "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert list(data["subjects"]) == ["04"] and data["subjects"]["04"]["saved"]["strategy"] == (
        "align")
    assert any("training subjects of the model" in n for n in data["notes"])


@pytest.mark.parametrize("change, message", [
    ({"--model": "missing"}, "--model {tmp}/missing: no such file or folder"),
    ({"--strategy": "x"}, "--strategy: unknown adaptation strategy 'x'; valid: a (adapter)"),
    ({"--budget": "5minutes"}, "--budget: budget '5minutes': give minutes ('5min')"),
    ({"--subject": "{stores}/sub-01"}, "every subject of the stores (01) is a training subject"),
    ({"--subject": "{model}"}, "input 'stores' {model} holds no recording store"),
])  # fmt: skip
def test_cli_adapt_user_errors_are_one_line(run, tmp_path, change, message):
    args = {"--model": str(run["model"]), "--subject": str(run["stores"] / "sub-04"),
            "--strategy": "a", "--budget": "5min", "--out": str(tmp_path / "out")}
    fill = {"tmp": tmp_path, "stores": run["stores"], "model": run["model"]}
    args.update({k: v.format(**fill) if k != "--model" or v != "missing" else
                 str(tmp_path / v) for k, v in change.items()})
    result = runner.invoke(app, ["adapt", *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 2, result.output
    assert len(_errors(result)) == 1 and "Traceback" not in result.output
    assert message.format(**fill) in _errors(result)[0]
    assert not (tmp_path / "out").exists()


def test_report_has_the_fewshot_section(run, tmp_path):
    out = write_report(tmp_path / "r.html", cross_subject=[run["model"]],
                       adapt=[run["adapted"]], thumbnails=False)
    assert out["models"] == 1 and out["adapted"] == 1 and out["fewshot_rows"] == 8
    text = (tmp_path / "r.html").read_text()
    assert '<section id="fewshot"><h2>Few-shot adaptation</h2>' in text
    assert 'id="adapt-1-curve"' in text and "a adapter" in text and "d align" in text
    assert "logistic" in text and "scratch" in text and "Saved adapted models" in text
    metrics = json.loads((run["model"] / "metrics.json").read_text())
    for entry in metrics["subjects"].values():  # the shared model's per-subject table
        assert f'{entry["shared"]["score"]:.3f}' in text
    empty = write_report(tmp_path / "e.html", thumbnails=False)
    assert empty["adapted"] == 0
    assert "no few-shot adaptation results in this run" in (tmp_path / "e.html").read_text()


@pytest.mark.slow
def test_cross_subject_and_adapt_in_a_workflow(tmp_path):
    from neurodecode.workflow import load_workflow, run_workflow

    spec = {
        "name": "xsub", "workdir": str(tmp_path / "out"),
        "steps": {
            "simulate": {"params": {**SIMULATION, "n_subjects": 3, "duration": 300.0},
                         "outputs": {"stores": "stores/xsub"}},
            "cross_subject": {"params": {**CROSS, "exclude": ["03"], "n_permutations": 20},
                              "inputs": {"stores": "stores/xsub"},
                              "outputs": {"model": "models/xsub"}},
            "adapt": {"params": {"strategies": ["d"], "fractions": [1.0],
                                 "baselines": ["linear"], "budget": "all", "strategy": "d",
                                 "n_permutations": 20},
                      "inputs": {"model": "models/xsub", "stores": "stores/xsub/sub-03"},
                      "outputs": {"adapted": "adapt/xsub"}},
            "report": {"params": {"thumbnails": False},
                       "inputs": {"cross_subject": "models/*", "adapt": "adapt/*"},
                       "outputs": {"report": "report.html"}},
        },
    }  # fmt: skip
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(spec))
    wf = load_workflow(path)
    assert wf.by_id["adapt"].depends == ["cross_subject", "simulate"]
    results = run_workflow(wf, jobs=1)
    assert {r.status for r in results} == {"done"}, [r.error for r in results if r.error]
    out = tmp_path / "out"
    data = json.loads((out / "adapt" / "xsub" / "fewshot.json").read_text())
    assert [r["strategy"] for r in data["rows"]] == ["align", "logistic"]
    assert read_provenance(out / "adapt" / "xsub")["inputs"]["model"][0]["path"] == str(
        out / "models" / "xsub")
    assert 'id="adapt-1-curve"' in (out / "report.html").read_text()
    again = run_workflow(load_workflow(path))
    assert {r.status for r in again} == {"up-to-date"}


def test_shipped_configs_validate():
    for name, stage in (("cross_subject_sim", "cross_subject"), ("adapt_sim", "adapt"),
                        ("simulate_xsub", "simulate")):
        data = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
        cfg = validate_config(get_stage(stage), data)
        assert cfg.model_dump()
    sim = SimulationConfig.load(REPO / "pipelines" / "simulate_xsub.yaml")
    assert sim.options["fmri"]["n_voxels"] == [500, 3000] and sim.n_subjects == 9
    assert np.isclose(sum(validate_config(get_stage("cross_subject"), yaml.safe_load(
        (REPO / "pipelines" / "cross_subject_sim.yaml").read_text())).split.fractions), 1.0)


def test_balanced_accuracy_matches_scikit_learn():
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from neurodecode.pipelines.cross_subject import balanced_accuracy

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        y, pred = rng.choice(list("abcd"), n), rng.choice(list("abcde"), n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # predicted classes absent from y
            assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))


def test_continuous_targets_regress_with_ridge_baselines(run, tmp_path):
    config = {
        "model": {"config": "cross_subject_fmri", "params": {
            "task": "regress", "head": {"name": "regress", "params": {}},
            "train": {"max_epochs": 3, "batch_size": 16}}},
        "samples": {"kind": "windows", "modality": "fmri", "length": 6.0, "stride": 4.0,
                    "target": "position"},
        "exclude": ["04"], "n_permutations": 20,
    }  # fmt: skip
    run_stage("cross_subject", config, {"stores": [run["stores"]]}, {"model": tmp_path / "m"})
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["metric"] == "r2" and metrics["classes"] is None
    assert {e["baseline"]["name"] for e in metrics["subjects"].values()} == {"ridge"}
    run_stage("adapt", {"strategies": ["a", "d"], "fractions": [1.0], "baselines": ["linear"],
                        "budget": "all", "n_permutations": 20, "options": {"max_epochs": 3}},
              {"model": tmp_path / "m", "stores": [run["stores"] / "sub-04"]},
              {"adapted": tmp_path / "a"})
    data = json.loads((tmp_path / "a" / "fewshot.json").read_text())
    assert [r["strategy"] for r in data["rows"]] == ["adapter", "ridge"]
    assert all(r["metric"] == "r2" and r["score"] is not None for r in data["rows"])
    assert any("continuous targets have no keys" in n for n in data["notes"])
    with pytest.raises(StageError, match=r"give class labels; the model's task is 'regress'"):
        validate_config(get_stage("cross_subject"), {**config, "samples": SAMPLES})
