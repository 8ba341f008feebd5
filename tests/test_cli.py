"""The command line: help, simulate, info, validate, demo."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.store import find_recordings

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "info", "validate", "demo"):
        assert command in result.output


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    result = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(out),
            "--subjects",
            "2",
            "--modality",
            "eeg",
            "--modality",
            "spikes",
            "--duration",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_simulate_writes_stores(sim_root):
    stores = find_recordings(sim_root)
    assert len(stores) == 4
    assert {p.parent.name for p in stores} == {"eeg", "spikes"}
    assert (sim_root / "sim" / "stimuli.zarr").is_dir()


def test_simulate_twice_is_unchanged(sim_root):
    result = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(sim_root),
            "--subjects",
            "2",
            "--modality",
            "eeg",
            "--modality",
            "spikes",
            "--duration",
            "30",
        ],
    )
    assert result.exit_code == 0
    assert result.output.count("unchanged") == 4


def test_info_one_and_many(sim_root):
    one = find_recordings(sim_root)[0]
    result = runner.invoke(app, ["info", str(one)])
    assert result.exit_code == 0
    for text in ("sampling rate", "250 Hz", "splits", "on disk", "neurodecode.simulate"):
        assert text in result.output
    result = runner.invoke(app, ["info", str(sim_root), "--json"])
    summaries = json.loads(result.output)
    assert len(summaries) == 4 and {s["modality"] for s in summaries} == {"eeg", "spikes"}


def test_validate_reports_failures(sim_root, tmp_path):
    result = runner.invoke(app, ["validate", str(sim_root)])
    assert result.exit_code == 0 and "4 valid, 0 invalid" in result.output
    bad = tmp_path / "bad.zarr"
    shutil.copytree(find_recordings(sim_root)[0], bad)
    group = zarr.open_group(bad, mode="r+")
    group["signal"][5, 0] = np.nan  # corrupt the samples after the fact
    group.attrs["sfreq"] = 99.0
    result = runner.invoke(app, ["validate", str(bad), "--no-data"])
    assert result.exit_code == 1
    assert str(bad) in result.output and "does not match the time axis" in result.output
    group.attrs["sfreq"] = 250.0
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1 and "signal holds 1 NaN/Inf" in result.output


def test_validate_unreadable_chunk(sim_root, tmp_path):
    bad = tmp_path / "trunc.zarr"
    shutil.copytree(find_recordings(sim_root)[0], bad)
    shard = next(p for p in sorted((bad / "signal" / "c").rglob("*")) if p.is_file())
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and str(bad) in result.output


def test_missing_store(tmp_path):
    for command in ("info", "validate"):
        result = runner.invoke(app, [command, str(tmp_path / "nothing")])
        assert result.exit_code == 1 and "no recording store" in result.output


def test_demo_runs_end_to_end(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("n_subjects: 2\nduration: 20\nmodalities: [eeg, fmri, calcium, spikes]\n")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "8 valid, 0 invalid" in result.output
    assert "8 recordings" in result.output
