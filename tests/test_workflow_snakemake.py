"""The exported Snakefile: ``snakemake -n`` (in its own virtual environment) lists the native jobs.

snakemake pins ``packaging`` against nilearn's needs, so it lives in ``.venv-snakemake`` beside
the project's environment; the test builds it on first use and skips, saying why, only when it
cannot be built (no network and no package index).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurodecode.workflow import load_workflow, plan, run_workflow
from neurodecode.workflow.snakemake import export_snakemake, rule_name

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-snakemake"
STAGES = Path(__file__).parent / "workflows" / "stages.py"


@pytest.fixture(scope="module")
def snakemake() -> Path:
    exe = VENV / "bin" / "snakemake"
    if not exe.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                           capture_output=True, timeout=300)  # fmt: skip
            subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "snakemake>=8"],
                           check=True, capture_output=True, text=True, timeout=900)  # fmt: skip
        except (subprocess.SubprocessError, OSError) as err:
            out = getattr(err, "stderr", "") or ""
            pytest.skip(f"cannot build snakemake's own venv at {VENV}: {err} {out[-300:]}")
    return exe


def _workflow(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in ("01", "02"):
        (raw / f"sub-{s}.txt").write_text(s)
    spec = {
        "name": "snake",
        "workdir": str(tmp_path / "out"),
        "modules": [str(STAGES)],
        "steps": {
            "a": {"stage": "concat", "foreach": {"subject": ["01", "02"]},
                  "inputs": {"sources": str(raw / "sub-{subject}.txt")},
                  "params": {"text": "a"}, "outputs": {"out": "a/{subject}.txt"},
                  "resources": {"cpus": 1, "memory": "1GB", "time": "10m"}},
            "split": {"foreach": {"subject": ["01", "02"]},
                      "inputs": {"source": "a/{subject}.txt"},
                      "outputs": {"folder": "split/{subject}"}},
            "summary": {"stage": "concat", "inputs": {"sources": "split/*"},
                        "outputs": {"out": "summary.txt"}},
        },
    }  # fmt: skip
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _dry_run_rules(snakemake: Path, snakefile: Path, cwd: Path) -> list[str]:
    out = subprocess.run(
        [str(snakemake), "-n", "-s", str(snakefile), "--cores", "1"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return re.findall(r"^\s*(?:local)?rule (\w+):", out.stdout, flags=re.MULTILINE)


def test_snakefile_lists_the_native_jobs(tmp_path, snakemake):
    wf = load_workflow(_workflow(tmp_path))
    snakefile = export_snakemake(wf, tmp_path / "Snakefile")
    text = snakefile.read_text()
    assert 'directory("' in text and "run-stage split" in text and "mem_mb=1000" in text
    native = {rule_name(d.job.id) for d in plan(wf) if d.run}
    rules = _dry_run_rules(snakemake, snakefile, tmp_path)
    assert set(rules) - {"all"} == native
    assert len([r for r in rules if r != "all"]) == len(native) == 5


@pytest.mark.slow
def test_snakemake_runs_the_rules_through_run_stage(tmp_path, snakemake):
    wf = load_workflow(_workflow(tmp_path))
    snakefile = export_snakemake(wf, tmp_path / "Snakefile")
    out = subprocess.run(
        [str(snakemake), "-s", str(snakefile), "--cores", "2", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = tmp_path / "out" / "summary.txt"
    assert summary.read_text().count('"a\\n') == 4  # two parts of each subject
    # the same stage code wrote the same records: the native engine finds everything done
    assert {r.status for r in run_workflow(load_workflow(_workflow_again(tmp_path)))} == {
        "up-to-date"
    }


def _workflow_again(tmp_path: Path) -> Path:
    return tmp_path / "wf.yaml"
