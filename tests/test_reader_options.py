"""The reader registry: options from signatures and docstrings, checked options, per-file rules,
``neurodecode readers``."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.ingest.readers import (
    READERS,
    OptionRules,
    UnknownOptionError,
    UnknownReaderError,
    get_reader,
    guess_reader,
    reader_options,
    suggest,
    validate_options,
)

runner = CliRunner()


def _brainvision(path: Path, n_channels: int, *, flat: int | None = None) -> Path:
    """A small BrainVision recording written by MNE's exporter (pybv); one channel constant
    when ``flat`` is set."""
    names = [f"CH{i}" for i in range(n_channels)]
    data = np.random.default_rng(0).standard_normal((n_channels, 500)) * 1e-5
    if flat is not None:
        data[flat] = 0.0
    raw = mne.io.RawArray(data, mne.create_info(names, 100.0, "eeg"), verbose="error")
    mne.export.export_raw(path, raw, fmt="brainvision", overwrite=True, verbose="error")
    return path


@pytest.mark.parametrize("name", ["mne", "nifti", "trace_array"])
def test_options_are_the_real_signature(name):
    func = get_reader(name)
    params = list(inspect.signature(func).parameters.values())[1:]  # the source is no option
    options = reader_options(name)
    assert [o.name for o in options] == [p.name for p in params]
    for opt, p in zip(options, params, strict=True):
        assert opt.annotation == p.annotation  # as written (postponed annotations are strings)
        assert opt.required == (p.default is inspect.Parameter.empty)
        if not opt.required:
            assert opt.default == p.default
    names = [o.name for o in options]
    assert "path" not in names
    assert {"subject", "session", "task", "run", "event_map"} <= set(names)
    # every option is documented, and the doc is the first sentence of its numpydoc entry
    doc = " ".join(inspect.getdoc(func).split())
    for opt in options:
        assert opt.doc and opt.doc.endswith((".", "?", "!")) and opt.doc in doc, opt


def test_option_types_and_defaults_spelled_out():
    nifti = {o.name: o for o in reader_options("nifti")}
    assert (nifti["tr"].annotation, nifti["tr"].default) == ("float | None", None)
    assert nifti["high_pass_filter"].annotation == "Literal['cosine', 'butterworth']"
    assert nifti["high_pass_filter"].default == "cosine"
    assert nifti["block_bytes"].default == 16 << 20
    assert nifti["tr"].doc.startswith("Repetition time in seconds")
    traces = {o.name: o for o in reader_options("trace_array")}
    assert traces["orientation"].default == "channels_first"
    assert traces["units"].annotation == "str" and traces["units"].default == "a.u."
    assert traces["run"].annotation == "str | int | None"
    mne_opts = {o.name: o for o in reader_options("mne")}
    assert (mne_opts["drop_flat"].annotation, mne_opts["drop_flat"].default) == ("bool", False)
    binned = {o.name: o for o in reader_options("binned_trials")}
    assert binned["group"].required and binned["bin_size"].required
    assert not binned["counts"].required


def test_forwarded_options_follow_the_wrapped_reader():
    """nelpy_linear_track passes **options to read_matclust: its options are matclust's, less
    the one it sets itself (position), with the default it gives (region)."""
    options = {o.name: o for o in reader_options("nelpy_linear_track")}
    assert "position" not in options
    assert options["bin_size"].annotation == "float" and options["bin_size"].default == 0.025
    assert options["region"].default == "hippocampus"
    assert validate_options("nelpy_linear_track", {"bin_size": "0.05"}) == {"bin_size": 0.05}
    with pytest.raises(UnknownOptionError, match="no option 'position'"):
        validate_options("nelpy_linear_track", {"position": "x.videoPositionTracking"})


def test_unknown_option_names_key_reader_place_and_valid_keys():
    with pytest.raises(UnknownOptionError) as info:
        validate_options("mne", {"drop_flat": True, "ch_type": "ecog"}, where="rec.edf")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("rec.edf: reader 'mne' has no option 'ch_type';")
    assert "did you mean 'ch_types'?" in message
    valid = message.split("valid options: ")[1].split(", ")
    assert valid == [o.name for o in reader_options("mne")]
    with pytest.raises(UnknownOptionError, match="no option 'zzz'; valid options: fs, key"):
        validate_options("trace_array", {"zzz": 1})
    assert isinstance(info.value, ValueError)


def test_values_are_coerced_or_refused_naming_key_value_and_type():
    out = validate_options(
        "nifti",
        {"tr": "2", "mask": "mask.nii.gz", "confound_columns": ["a", "b"], "detrend": "yes"},
    )
    assert out == {
        "tr": 2.0,
        "mask": "mask.nii.gz",
        "confound_columns": ["a", "b"],
        "detrend": True,
    }
    assert isinstance(out["tr"], float)
    # integer keys from YAML or JSON strings both become the int the reader expects
    assert validate_options("muse_csv", {"marker_map": {1: "house", "2": "face"}}) == {
        "marker_map": {1: "house", 2: "face"}
    }
    with pytest.raises(ValueError) as info:
        validate_options("nifti", {"tr": "fast"}, where="catalog entry 'x'")
    message = str(info.value)
    assert "\n" not in message and not isinstance(info.value, UnknownOptionError)
    assert message.startswith("catalog entry 'x': reader 'nifti' option tr='fast'")
    assert "float | None" in message
    with pytest.raises(ValueError, match=r"high_pass_filter='fir' is not a valid Literal"):
        validate_options("nifti", {"high_pass_filter": "fir"})
    with pytest.raises(ValueError, match=r"orientation='rows'.*'channels_first' or 'time_first'"):
        validate_options("trace_array", {"orientation": "rows"})


def test_complete_options_need_the_required_ones():
    partial = {"group": "beforeLearning.clouds"}
    assert validate_options("binned_trials", partial) == partial  # more may come from elsewhere
    with pytest.raises(
        ValueError,
        match=r"^x.mat: reader 'binned_trials' needs option\(s\) "
        r"'bin_size' \(bin_size: Time step in seconds",
    ):
        validate_options("binned_trials", partial, where="x.mat", complete=True)
    full = validate_options("binned_trials", {**partial, "bin_size": 0.05}, complete=True)
    assert full == {"group": "beforeLearning.clouds", "bin_size": 0.05}


def test_unknown_reader_suggests_a_close_name():
    with pytest.raises(UnknownReaderError, match=r"unknown reader 'nifty'; did you mean 'nifti'\?"):
        get_reader("nifty")
    with pytest.raises(UnknownReaderError, match="known readers: " + ", ".join(sorted(READERS))):
        validate_options("qwerty", {})
    assert suggest("eegbci_s01", ["eegbci_s001", "muse_p300"]) == " did you mean 'eegbci_s001'?"
    assert suggest("zzz", ["eegbci_s001"]) == ""
    # module:function paths stay usable
    assert get_reader("neurodecode.ingest.fmri:read_nifti") is get_reader("nifti")


def test_registry_loads_without_reader_libraries():
    code = (
        "import sys, neurodecode.ingest.readers as r; "
        "print(sorted(m for m in ('mne', 'nibabel', 'pynwb', 'tifffile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert guess_reader("a.vhdr") == "mne" and set(READERS) >= {"mne", "nifti", "suite2p"}


def test_option_rules_merge_matching_globs_in_file_order(tmp_path):
    rules_file = tmp_path / "options.yaml"
    rules_file.write_text(
        "'*.vhdr': {drop_flat: true, ch_types: ecog}\n"
        "'sub-02_*': {ch_types: {CH0: eog}}\n"
        "'traces/*.npz': {reader: trace_array, fs: '10', key: C}\n"
    )
    rules = OptionRules.load(rules_file)
    assert rules.options_for("data/sub-01_eeg.vhdr") == {"drop_flat": True, "ch_types": "ecog"}
    assert rules.options_for(tmp_path / "sub-02_eeg.vhdr") == {
        "drop_flat": True,
        "ch_types": {"CH0": "eog"},
    }
    assert rules.matching("sub-02_eeg.vhdr") == ["*.vhdr", "sub-02_*"]
    assert rules.options_for("other.edf") == {}
    assert rules.options_for("/lab/traces/cells.npz") == {"fs": 10.0, "key": "C"}
    assert rules.reader_for("/lab/traces/cells.npz") == "trace_array"
    assert rules.reader_for("sub-02_eeg.vhdr") is None
    # validated again against the reader that will read the file
    with pytest.raises(UnknownOptionError, match=r"options.yaml: '\*.vhdr' for x.vhdr: .*'nifti'"):
        rules.options_for("x.vhdr", reader="nifti")

    # the per-file options reach the reader: the flat channel is dropped in both; sub-02's
    # ch_types replaces the earlier glob's value as a whole (later globs win, key by key)
    from neurodecode.ingest.eeg import read_mne

    for sub in ("01", "02"):
        path = _brainvision(tmp_path / f"sub-{sub}_eeg.vhdr", 3, flat=2)
        ds = read_mne(path, **rules.options_for(path, reader="mne"))
        assert list(ds["channel"].values) == ["CH0", "CH1"]
        expected = ["eog", "eeg"] if sub == "02" else ["ecog", "ecog"]
        assert list(ds["ch_type"].values) == expected, sub


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("'*.fif': {drop_flatt: 1}\n", r"glob '\*.fif': reader 'mne' has no option 'drop_flatt'"),
        ("'*.nii.gz': {tr: soon}\n", r"glob '\*.nii.gz': reader 'nifti' option tr='soon'"),
        ("'sub-01*': {tr_s: 2}\n", r"glob 'sub-01\*': no reader has an option 'tr_s'; did you"),
        ("'sub-01*': {tr: x, fs: 1}\n", r"glob 'sub-01\*': no single reader takes \{'tr': 'x'"),
        ("'*.dat': {reader: nifty}\n", r"glob '\*.dat': unknown reader 'nifty'; did you mean"),
        ("'*.fif': [drop_flat]\n", r"glob '\*.fif': expected a mapping of reader options"),
        ("- '*.fif'\n", "maps globs to options, not a list"),
        ("'*.fif': {drop_flat: [}\n", "cannot read the options file"),
    ],
)
def test_option_rules_refuse_bad_entries_naming_file_and_glob(tmp_path, text, problem):
    path = tmp_path / "opts.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        OptionRules.load(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_option_rules_default_reader_and_nwb(tmp_path):
    path = tmp_path / "opts.yaml"
    path.write_text("'sub-01*': {tr: 2}\n'*.nwb': {bin_size: 0.01, series: F}\n")
    with pytest.raises(ValueError, match="'nwb_units' has no option 'series'"):
        OptionRules.load(path)  # series is nwb_ophys's, bin_size nwb_units': neither takes both
    path.write_text("'sub-01*': {tr: 2}\n'*.nwb': {bin_size: 0.01}\n")
    rules = OptionRules.load(path, reader="nifti")
    assert rules.options_for("sub-01_bold.nii") == {"tr": 2.0}
    assert rules.options_for("x.nwb") == {"bin_size": 0.01}


def test_cli_readers_lists_every_reader():
    result = runner.invoke(app, ["readers"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in READERS:
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    row = next(line for line in lines if line.startswith("│ nifti "))
    assert ".nii .nii.gz" in row and "Read one fMRI run (a 4-D NIfTI image)" in row
    assert "folders holding F.npy" in result.output


def test_cli_readers_name_lists_options_with_type_and_default():
    result = runner.invoke(app, ["readers", "nifti"])
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells
        for line in result.output.splitlines()
        if line.startswith("│ ") and (cells := [c.strip() for c in line.strip("│").split("│")])[0]
    }
    assert [name for name in rows if name != "option"] == [o.name for o in reader_options("nifti")]
    assert rows["tr"][1:3] == ["float | None", "None"]
    assert rows["tr"][3].startswith("Repetition time in seconds")
    assert rows["high_pass_filter"][1:3] == ["Literal['cosine', 'butterworth']", "'cosine'"]
    assert rows["event_map"][1] == "Mapping[str, str] | None"  # not eaten as console markup
    assert rows["detrend"][1:3] == ["bool", "False"]
    mne_out = runner.invoke(app, ["readers", "mne"]).output
    assert "Literal['error', 'drop']" in mne_out  # the OutsideEvents alias, spelled out
    binned = runner.invoke(app, ["readers", "binned_trials"]).output
    assert any(line.startswith("│ group ") and "required" in line for line in binned.splitlines())


def test_cli_readers_unknown_name_is_one_line_exit_2():
    result = runner.invoke(app, ["readers", "nifty"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith("error: unknown reader 'nifty'; did you mean 'nifti'?")
