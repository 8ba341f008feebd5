"""The ``pretrain`` stage, fine-tuning through ``cross_subject`` with a ``pretrained`` input, the
``neurodecode pretrain`` command and the report's codebook section, on tiny simulated sEEG
subjects (3 subjects, 8-12 contacts, 120 s; a small codebook model, 2 + 1 epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.data.samples import open_recordings, window_table
from neurodecode.models.codebook import CodebookPretrainer
from neurodecode.models.decoder import CrossSubjectDecoder
from neurodecode.pipelines import StageError, get_stage, read_provenance, run_stage
from neurodecode.pipelines.base import validate_config
from neurodecode.report import write_report
from neurodecode.schema import intervals_frame, set_intervals
from neurodecode.store import write_recording

from .conftest import small_recording

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

SIMULATION = {
    "dataset": "seeg", "n_subjects": 3, "modalities": ["seeg"], "duration": 120.0,
    "n_classes": 2, "n_images": None, "seed": 5,
    "options": {"seeg": {"responsive": ["FFA"], "response_gain": 2.0, "n_electrodes": [8, 12]},
                "latent": {"block_duration": [1.0, 1.0], "rest_duration": [1.0, 2.0]}},
}  # fmt: skip
#: A codebook_seeg made small enough for a test (same parts, fewer units and codes).
SMALL = {"backbone": {"params": {"d_model": 32, "n_layers": 1, "conv_channels": 16}},
         "pretrain": {"codebook_size": 32, "code_dim": 16, "restart_every": 5}}
PRETRAIN = {
    "analysis": "tiny_codebook", "model": {"config": "codebook_seeg", "params": SMALL},
    "modality": "seeg", "length": 0.5, "stride": 0.5, "tokenizer_epochs": 2,
    "masked_epochs": 1,
}  # fmt: skip
FINETUNE = {
    "analysis": "tiny_finetuned",
    "model": {"config": "codebook_seeg", "params": {**SMALL, "train": {"max_epochs": 3}}},
    "samples": {"kind": "epochs", "modality": "seeg", "tmin": 0.0, "tmax": 0.496,
                "labels": ["stim/*"]},
    "n_permutations": 50,
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Stores of 3 subjects, their pretraining and a fine-tuning from it (fits spied on)."""
    root = tmp_path_factory.mktemp("pretrain")
    stores = root / "stores"
    run_stage("simulate", SIMULATION, {}, {"stores": stores})
    run_stage("pretrain", PRETRAIN, {"stores": [stores]}, {"pretrained": root / "pre"})
    fits: list[dict] = []
    original = CrossSubjectDecoder.fit

    def fit(self, train, val=None, **kw):
        fits.append({"pretrained": self.pretrained, "train": train, "val": val})
        return original(self, train, val, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CrossSubjectDecoder, "fit", fit)
        run_stage("cross_subject", FINETUNE, {"stores": [stores], "pretrained": [root / "pre"]},
                  {"model": root / "ft"})
    return {"root": root, "stores": stores, "pre": root / "pre", "ft": root / "ft",
            "fits": fits}


def _train_windows(stores: Path, length: float) -> dict[str, int]:
    """Windows of ``length`` s lying inside each subject's stored train intervals."""
    counts: dict[str, int] = {}
    for rec in open_recordings(stores):
        table = window_table([rec], length=length, stride=length)
        iv = intervals_frame(rec.ds)
        iv = iv[iv["split"] == "train"]
        inside = np.zeros(len(table), bool)
        for row in iv.itertuples():
            inside |= (table["start"] >= row.start - 1e-9) & (table["stop"] <= row.stop + 1e-9)
        subject = rec.identity["subject"]
        counts[subject] = counts.get(subject, 0) + int(inside.sum())
    return counts


def test_pretrain_folder_has_checkpoint_health_history_and_provenance(run):
    folder = run["pre"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "metrics.json",
                                                        "pretrain.pt"]
    assert not list(folder.parent.glob(".pre.tmp-*"))  # nothing left of the temporary
    data = json.loads((folder / "metrics.json").read_text())
    expected = _train_windows(run["stores"], 0.5)
    assert {s: v["n_windows"] for s, v in data["subjects"].items()} == expected
    for v in data["subjects"].values():
        assert v["n_train"] + v["n_val"] <= v["n_windows"] and v["n_val"] > 0
        assert 8 <= v["n_channels"] <= 12
    # only the stores' train intervals were covered
    for rec in open_recordings(run["stores"]):
        train = intervals_frame(rec.ds).query("split == 'train'")
        for lo, hi in data["coverage"][rec.id]:
            assert any(r.start - 1e-6 <= lo and hi <= r.stop + 1e-6 for r in train.itertuples())
    assert data["scored_on"] == "validation" and data["windows"]["n_times"] == 125
    assert set(data["health"]) >= {"perplexity", "used", "dead_fraction", "codebook_size",
                                   "collapsed"} and data["health"]["codebook_size"] == 32
    assert 1.0 <= data["health"]["perplexity"] <= 32
    assert data["reconstruction_r2"] <= 1.0
    assert 0 <= data["mask_accuracy"]["accuracy"] <= 1
    assert data["epochs"] == {"tokenizer": 2, "masked": 1}
    assert [len(data["history"][k]) for k in ("tokenizer", "masked")] == [2, 1]
    assert data["segments_per_s"]["tokenizer"] > 0 and data["fit_seconds"] > 0
    pre = CodebookPretrainer.load(folder / "pretrain.pt")
    assert pre.subjects_ == ["01", "02", "03"] and pre.n_times_ == 125
    assert pre.health_ == data["health"]
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["pretrain"]["tokenizer_epochs"] == 2 and cfg["backbone"]["params"]["d_model"] == 32
    record = read_provenance(folder)
    assert record["stage"] == "pretrain" and record["summary"]["epochs"] == data["epochs"]
    assert record["inputs"]["stores"][0]["path"] == str(run["stores"])


def test_rerun_is_skipped_and_a_failed_run_keeps_the_old_folder(run, monkeypatch):
    stamp = (run["pre"] / "pretrain.pt").stat().st_mtime_ns
    again = run_stage("pretrain", PRETRAIN, {"stores": [run["stores"]]},
                      {"pretrained": run["pre"]}, skip_up_to_date=True)
    assert again["up_to_date"] is True
    assert (run["pre"] / "pretrain.pt").stat().st_mtime_ns == stamp

    def broken(self, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(CodebookPretrainer, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_stage("pretrain", {**PRETRAIN, "seed": 1}, {"stores": [run["stores"]]},
                  {"pretrained": run["pre"]})
    assert (run["pre"] / "pretrain.pt").stat().st_mtime_ns == stamp
    assert not list(run["pre"].parent.glob(".pre.tmp-*"))
    assert read_provenance(run["pre"])["config"]["seed"] == 0


def test_finetuning_starts_from_the_pretraining_and_is_scored_against_scratch(run):
    fits = run["fits"]
    assert len(fits) == 2
    assert isinstance(fits[0]["pretrained"], CodebookPretrainer) and fits[1]["pretrained"] is None
    for part in ("train", "val"):  # the same split for both
        a, b = fits[0][part], fits[1][part]
        assert a.keys() == b.keys() and all(len(a[s]) == len(b[s]) for s in a)
    data = json.loads((run["ft"] / "metrics.json").read_text())
    pre = data["pretrained"]
    assert pre["path"] == str(run["pre"]) and pre["analysis"] == "tiny_codebook"
    assert pre["subjects"] == ["01", "02", "03"] and pre["only_in_pretraining"] == []
    assert pre["n_times"] == 125 and pre["test_samples_in_pretraining"] == 0
    for entry in data["subjects"].values():
        for key in ("shared", "scratch", "probe"):
            assert set(entry[key]) == {"score", "chance", "p_value"}
            assert 0.3 < entry[key]["chance"] < 0.7  # two classes
        assert entry["test_in_pretraining"] == 0
    assert data["mean"]["scratch"] is not None and data["scratch"]["epochs"] >= 1
    # the linear probe on the frozen pretraining: C chosen among the probe's defaults
    assert data["probe"]["layer"] == "embed" and data["probe"]["C"] in (0.001, 0.01, 0.1, 1.0)
    assert data["probe"]["n_features"] == 32 * 5  # d_model x 5 segments of 0.1 s
    assert data["mean"]["probe"] is not None
    dec = CrossSubjectDecoder.load(run["ft"] / "model.pt")
    assert dec.subjects_ == ["01", "02", "03"] and dec.n_times_ == 125
    assert read_provenance(run["ft"])["inputs"]["pretrained"][0]["path"] == str(run["pre"])


def test_cli_pretrain_on_whole_recordings_and_the_overlap_is_counted(run, tmp_path):
    out = tmp_path / "whole"
    result = runner.invoke(app, [
        "pretrain", "--model", str(_small_model(tmp_path)), "--store", str(run["stores"]),
        "--out", str(out), "--length", "0.5", "--intervals", "all", "--tokenizer-epochs", "1",
        "--masked-epochs", "1", "--subject", "01", "--subject", "02", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["out"] == str(out) and list(printed["subjects"]) == ["01", "02"]
    data = json.loads((out / "metrics.json").read_text())
    assert data["windows"]["intervals"] is None and read_provenance(out)["stage"] == "pretrain"
    # a fine-tuning whose test samples the pretraining saw says how many
    ft = run_stage("cross_subject", {**FINETUNE, "subjects": ["01", "02"], "scratch": False},
                   {"stores": [run["stores"]], "pretrained": [out]}, {"model": tmp_path / "ft"})
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    n_test = sum(v["n_test"] for v in metrics["subjects"].values())
    assert metrics["pretrained"]["test_samples_in_pretraining"] == n_test > 0
    assert "scratch" not in metrics["subjects"]["01"] and "scratch" not in metrics["mean"]
    assert ft["summary"]["pretrained"] == str(out)
    lines = runner.invoke(app, ["pretrain", "--model", str(_small_model(tmp_path)), "--store",
                                str(run["stores"] / "sub-03"), "--out", str(tmp_path / "p3"),
                                "--length", "0.5", "--tokenizer-epochs", "1",
                                "--masked-epochs", "1"])
    assert lines.exit_code == 0, lines.output
    text = lines.stdout.strip().splitlines()
    assert text[0].startswith("sub-03: ") and "training + " in text[0]
    assert "codebook on the validation windows: perplexity" in text[1]
    assert text[-1].endswith(str(tmp_path / "p3" / "pretrain.pt"))


def _small_model(tmp_path: Path) -> Path:
    """The small codebook model as a YAML file (what ``--model`` takes)."""
    from neurodecode.pipelines.cross_subject import ModelChoice

    path = tmp_path / "small_codebook.yaml"
    if not path.exists():
        cfg = ModelChoice(config="codebook_seeg", params=SMALL).resolve()
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _store(tmp_path: Path, name: str, **kwargs) -> Path:
    path = tmp_path / name / "sub-01" / "rec.zarr"
    write_recording(small_recording(n_times=2000, sfreq=250.0, **kwargs), path)
    return path.parents[1]


def test_bad_inputs_are_stage_errors_naming_the_problem(run, tmp_path):
    def fails(match, config=PRETRAIN, stores=None, out="out"):
        with pytest.raises(StageError, match=match):
            run_stage("pretrain", config, {"stores": stores or [run["stores"]]},
                      {"pretrained": tmp_path / out})
        assert not (tmp_path / out).exists()

    fails(r"subject 01: windows of 500 s \(125000 samples\) are longer than recording .*"
          r"sub-01.*\(120 s\)", {**PRETRAIN, "length": 500.0})
    fails(r"model config 'cross_subject_fmri' \(cross_subject_fmri\) has no pretrain section",
          {**PRETRAIN, "model": "cross_subject_fmri"})
    misc = _store(tmp_path, "misc", ch_types="misc")
    fails(r"stage pretrain: subject 01: .*rec.zarr: no channel of type",
          {**PRETRAIN, "modality": "eeg"}, [misc])
    ds = set_intervals(small_recording(n_times=2000, sfreq=250.0),
                       intervals_frame(small_recording()).iloc[:0])
    bare = tmp_path / "bare" / "sub-01" / "rec.zarr"
    write_recording(ds, bare)
    fails(r"subject 01: store .*rec.zarr has no stored split intervals; use intervals: null",
          {**PRETRAIN, "modality": "eeg"}, [bare.parents[1]])
    fails(r"no recording of the 3 store\(s\) matches \{'modality': 'ecog'\}",
          {**PRETRAIN, "modality": "ecog"})
    fails(r"unknown parameter 'epochs'", {**PRETRAIN, "epochs": 3})
    fails(r"intervals.0: Input should be 'train', 'valid' or 'test'",
          {**PRETRAIN, "intervals": ["training"]})


def test_finetuning_errors_name_the_length_the_folder_and_the_model(run, tmp_path):
    def fails(match, config=FINETUNE, pretrained=None):
        with pytest.raises(StageError, match=match):
            run_stage("cross_subject", config,
                      {"stores": [run["stores"]], "pretrained": [pretrained or run["pre"]]},
                      {"model": tmp_path / "m"})
        assert not (tmp_path / "m").exists()

    samples = {**FINETUNE["samples"], "tmax": 0.5}
    fails(r"subject 01: samples of 126 time steps; the pretraining .*pre took windows of 125 "
          r"\(0.5 s at 250 Hz\): .* make tmax - tmin \(or the crop\) 0.496 s",
          {**FINETUNE, "samples": samples})
    fails(r"pretrained .*stores: no pretrain.pt or metrics.json \(not a pretrain stage's "
          r"folder\)", pretrained=run["stores"])
    single = {**FINETUNE, "model": {"config": "codebook_seeg_single",
                                    "params": {"train": {"max_epochs": 1}}}}
    fails(r"model: the pretrained model 'codebook_seeg' does not fit model "
          r"'codebook_seeg_single': latent_dim 16 vs 128", single)


def test_report_has_the_codebook_section(run, tmp_path):
    out = write_report(tmp_path / "r.html", cross_subject=[run["ft"]], pretrain=[run["pre"]],
                       thumbnails=False)
    assert out["pretrained"] == 1 and out["finetuned"] == 1
    text = (tmp_path / "r.html").read_text()
    assert '<section id="codebook"><h2>Codebook pretraining</h2>' in text
    assert 'id="codebook-1-curves"' in text and 'id="finetuned-1-bars"' in text
    assert "tiny_codebook" in text and "tiny_finetuned: fine-tuned vs scratch" in text
    pre = json.loads((run["pre"] / "metrics.json").read_text())
    assert f"{pre['health']['perplexity']:.1f}</a>" in text
    assert f"{pre['reconstruction_r2']:.3f}" in text
    ft = json.loads((run["ft"] / "metrics.json").read_text())
    for entry in ft["subjects"].values():
        for key in ("shared", "scratch", "probe"):
            assert f'{entry[key]["score"]:.3f}' in text and f'{entry[key]["chance"]:.3f}' in text
    assert "<th>linear probe</th>" in text
    assert "0 test samples in the pretraining's spans" in text
    assert "fine-tuned from <code>" in text  # the cross-subject table says so too
    record = run_stage("report", {"thumbnails": False},
                       {"pretrain": [run["pre"]], "cross_subject": [run["ft"]]},
                       {"report": tmp_path / "stage.html"})
    assert record["summary"]["pretrained"] == 1


def test_shipped_configs_validate():
    for name, stage in (("pretrain_seeg", "pretrain"), ("finetune_seeg", "cross_subject"),
                        ("pretrain_eegbci", "pretrain"), ("finetune_eegbci", "cross_subject")):
        data = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
        assert validate_config(get_stage(stage), data).model_dump()
    fine = yaml.safe_load((REPO / "pipelines" / "finetune_eegbci.yaml").read_text())
    pre = yaml.safe_load((REPO / "pipelines" / "pretrain_eegbci.yaml").read_text())
    lo, hi = fine["samples"]["crop"]  # the trials have the windows' 160 samples at 160 Hz
    assert round((hi - lo) * 160) + 1 == round(pre["length"] * 160) == 160
    assert "14" not in pre["runs"] and "14" in fine["samples"]["runs"]


def test_linear_probe_is_skipped_with_a_reason():
    from types import SimpleNamespace

    from neurodecode.pipelines.cross_subject import CrossSubjectConfig, _fit_probe

    config = CrossSubjectConfig.model_validate(FINETUNE)
    pre = SimpleNamespace(pretrainer=SimpleNamespace(subjects_=["01", "02"]))
    parts = {"01": {}, "03": {}}
    assert _fit_probe(config, "classify", None, parts, None) == (None, None)
    off = CrossSubjectConfig.model_validate({**FINETUNE, "probe": False})
    assert _fit_probe(off, "classify", pre, parts, None) == (None, None)
    assert _fit_probe(config, "regress", pre, parts, None) == (
        None, "a linear probe classifies; this model's task is 'regress'")
    assert _fit_probe(config, "classify", pre, parts, None) == (
        None, "subjects ['03'] were not in the pretraining")
