"""The command line: help, simulate, info, validate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
    for command in ("simulate", "info", "validate", "ingest", "run-stage", "workflow"):
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
    assert result.output.count("up-to-date") == 4


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
    result = runner.invoke(app, ["validate", str(bad), "--fast"])
    assert result.exit_code == 1
    assert f"FAIL {bad}: sfreq" in result.output and "does not match the time axis" in result.output
    group.attrs["sfreq"] = 250.0
    result = runner.invoke(app, ["validate", str(bad), "--fast"])  # metadata: the shard's size
    assert result.exit_code == 1 and f"FAIL {bad}: signal/c/0/0 is " in result.output
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    channel = group["channel"][0]
    assert f"signal holds 1 NaN/Inf value(s) in channel(s) {channel} (1 channel)" in result.output
    assert f"FAIL {bad}: signal: block 0 (t = 0-" in result.output


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
        assert result.exit_code == 2
        assert result.stderr == f"error: no recording store at or below {tmp_path / 'nothing'}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subjects", "0"], "invalid simulation settings: n_subjects: Input should be greater"),
        (["--duration", "-1"], "invalid simulation settings: duration: Input should be greater"),
        (["--config", "{missing}"], "--config {missing}: no such file"),
        (["--config", "{list}"], "--config {list} must hold a mapping of settings"),
        (["--config", "{typo}"], "invalid simulation settings: n_subject: Extra inputs"),
        (["--config", "{bad}"], "--config {bad} is not valid YAML"),
        (
            ["--modality", "eeg", "--modality", "meg"],
            "invalid simulation settings: modalities: the simulator has no "
            "modality 'meg'",
        ),
    ],
)
def test_simulate_misuse_is_one_line(tmp_path, args, message):
    files = {"missing": tmp_path / "nope.yaml", "list": tmp_path / "l.yaml"}
    files["typo"], files["bad"] = tmp_path / "t.yaml", tmp_path / "b.yaml"
    files["bad"].write_text("a: [1\n")
    files["list"].write_text("- 1\n- 2\n")
    files["typo"].write_text("n_subject: 2\n")
    args = [a.format(**files) for a in args]
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: " + message.format(**files))
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_version_and_misuse_are_one_line():
    from neurodecode import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"neurodecode {__version__}"
    for args in (["frobnicate"], ["ingest"], ["ingest", "x.edf", "--bogus"], ["validate"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert result.stderr.startswith("error: neurodecode"), (args, result.stderr)
        assert "Traceback" not in result.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a /proc file system")
def test_out_that_permissions_allow_but_cannot_be_written():
    """Root passes every permission check; the probe file still finds /proc unwritable."""
    from neurodecode.cli._common import UserError, check_writable

    with pytest.raises(UserError, match="--out /proc/neurodecode-out cannot be written"):
        check_writable(Path("/proc/neurodecode-out"), "--out")
    result = runner.invoke(app, ["simulate", "--out", "/proc/neurodecode-out", "--subjects", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
