"""``workflows/demo.yaml`` (what ``make demo`` runs): its jobs, with and without the sample data,
and the same chain of real stages end to end on a small simulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neurodecode.pipelines import read_provenance
from neurodecode.workflow import load_workflow, plan, run_workflow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "workflows" / "demo.yaml"


def test_demo_without_sample_data_leaves_the_real_steps_out(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_SAMPLE_DATA", str(tmp_path / "absent"))
    wf = load_workflow(DEMO, workdir=tmp_path)
    steps = {j.step for j in wf.jobs}
    assert steps == {"simulate", "simulate_xsub", "decode_sim", "embed_sim",
                     "cross_subject_sim", "adapt_sim", "simulate_seeg", "pretrain_seeg",
                     "finetune_seeg", "simulate_circuit", "pretrain_spikes_sim",
                     "finetune_spikes_sim", "simulate_vision", "reconstruct_sim", "report"}
    assert any("ingest_eegbci" in n for n in wf.notes) and any("ingest_rat" in n for n in wf.notes)
    assert any("pretrain_eegbci" in n for n in wf.notes)
    assert any("finetune_eegbci" in n for n in wf.notes)
    assert any("pretrain_spikes_rat" in n for n in wf.notes)
    assert wf.by_id["finetune_spikes_sim"].depends == ["pretrain_spikes_sim",
                                                        "simulate_circuit"]
    assert wf.by_id["finetune_seeg"].depends == ["pretrain_seeg", "simulate_seeg"]
    assert wf.by_id["reconstruct_sim"].depends == ["simulate_vision"]
    report = wf.by_id["report"]
    assert report.inputs["stores"] == [str(tmp_path / "stores" / s)
                                       for s in ("circuit", "seeg", "sim", "vision", "xsub")]
    assert report.inputs["reconstruct"] == [str(tmp_path / "reconstruct" / "sim")]
    assert report.inputs["cross_subject"] == [str(tmp_path / "models" / "seeg"),
                                              str(tmp_path / "models" / "xsub")]
    assert report.inputs["adapt"] == [str(tmp_path / "adapt" / "xsub")]
    assert report.inputs["pretrain"] == [str(tmp_path / "pretrain" / s)
                                         for s in ("seeg", "spikes_sim")]
    assert report.inputs["finetune"] == [str(tmp_path / "finetune" / "spikes_sim")]
    assert len(report.inputs["decode"]) == 3 and report.inputs["embed"] == [
        str(tmp_path / "embed" / "sim")
    ]
    assert all(d.run and any(r.startswith("new: ") for r in d.reasons) for d in plan(wf))


@pytest.mark.realdata
def test_demo_with_sample_data_has_a_job_per_real_subject(sample_data, tmp_path):
    wf = load_workflow(DEMO, workdir=tmp_path)
    ids = set(wf.by_id)
    for s in ("001", "002", "003"):
        assert {f"ingest_eegbci[subject={s}]", f"decode_eegbci[subject={s}]"} <= ids
        assert wf.by_id[f"decode_eegbci[subject={s}]"].depends == [f"ingest_eegbci[subject={s}]"]
    ingests = [f"ingest_eegbci[subject={s}]" for s in ("001", "002", "003")]
    assert wf.by_id["pretrain_eegbci"].depends == ingests
    assert wf.by_id["finetune_eegbci"].depends == [*ingests, "pretrain_eegbci"]
    assert {"ingest_rat", "decode_rat", "embed_rat", "pretrain_spikes_rat",
            "finetune_spikes_rat"} <= ids
    assert len(wf.by_id["report"].depends) == len(ids) - 1


@pytest.mark.slow
def test_the_demo_stages_end_to_end_on_a_small_simulation(tmp_path):
    """simulate → decode (per subject) + embed → report, then a rerun skips everything."""
    spec = yaml.safe_load(DEMO.read_text())
    steps = spec["steps"]
    small = {
        "simulate": {**steps["simulate"], "config": str(REPO / "pipelines" / "simulate.yaml"),
                     "params": {"n_subjects": 2, "duration": 60, "modalities": ["spikes"],
                                "n_images": None}},
        "decode_sim": {**steps["decode_sim"], "foreach": {"subject": ["01", "02"]},
                       "config": str(REPO / "pipelines" / "decode_sim.yaml"),
                       "params": {"n_permutations": 9, "n_jobs": 1}},
        "embed_sim": {**steps["embed_sim"], "config": str(REPO / "pipelines" / "embed_sim.yaml"),
                      "params": {"model": {"n_iter": 50},
                                 "decoding": {"n_permutations": 5}}},
        "report": steps["report"],
    }  # fmt: skip
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({"name": "small", "workdir": str(tmp_path / "out"),
                                    "steps": small}))  # fmt: skip
    results = run_workflow(load_workflow(path), jobs=2)
    assert {r.status for r in results} == {"done"}, [r.error for r in results if r.error]
    out = tmp_path / "out"
    html = (out / "report.html").read_text()
    for section in ("recordings", "decoding", "embeddings", "provenance"):
        assert f'id="{section}"' in html
    record = read_provenance(out / "decode" / "sim" / "sub-01.json")
    assert record["inputs"]["stores"][0]["path"] == str(out / "stores" / "sim" / "sub-01")
    again = run_workflow(load_workflow(path))
    assert {r.status for r in again} == {"up-to-date"}
