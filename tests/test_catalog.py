"""Lab catalogs: extra folders, the NEURODECODE_CATALOG setting, duplicate names, entries checked
at load time, and the catalog commands' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from neurodecode.catalog import catalog_dir, get_entry, load_catalog, load_entry
from neurodecode.cli import app
from neurodecode.config import get_settings
from neurodecode.ingest.readers import get_reader

runner = CliRunner()


def _lab(tmp_path: Path, name: str = "lab_traces", folder: str = "lab", **fields) -> Path:
    """A lab catalog folder with one entry over a real ``.npy`` trace matrix (time first)."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    traces = np.random.default_rng(1).standard_normal((300, 4)).astype("float32")
    np.save(data / "sub-07_task-rest_traces.npy", traces)
    entry = {
        "name": name,
        "modality": "calcium",
        "description": "four ROI traces of a lab recording",
        "licence": "CC0",
        "root": str(data),
        "reader": "trace_array",
        "reader_options": {"fs": "20", "orientation": "time_first"},
        "files": [
            {
                "glob": "sub-*_traces.npy",
                "pattern": r"sub-(?P<subject>\d+)_task-(?P<task>\w+)_traces\.npy",
                "reader_options": {"units": "dF/F"},
            }
        ],
        **fields,
    }
    lab = tmp_path / folder
    lab.mkdir(exist_ok=True)
    (lab / f"{name}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return lab


def test_every_shipped_entry_loads_and_is_checked():
    catalog = load_catalog()
    assert len(catalog) >= 11 and "eegbci_s001" in catalog
    for name, entry in catalog.items():
        assert entry.source_file == catalog_dir() / f"{name}.yaml"
    # the options were coerced to the readers' types when loaded
    assert catalog["caiman_demo_traces"].reader_options["fs"] == 10.0
    assert catalog["muse_p300"].reader_options["marker_map"] == {1: "nontarget", 2: "target"}


def test_catalog_from_an_extra_folder_ingests_a_real_file(tmp_path):
    lab = _lab(tmp_path)
    catalog = load_catalog([lab])
    assert set(load_catalog()) < set(catalog)
    entry = catalog["lab_traces"]
    assert entry.source_file == lab / "lab_traces.yaml"
    assert entry.reader_options == {"fs": 20.0, "orientation": "time_first"}
    (found,) = entry.resolve_files()
    assert found["path"] == tmp_path / "data" / "sub-07_task-rest_traces.npy"
    assert found["entities"] == {"subject": "07", "task": "rest"}
    assert found["reader_options"] == {"fs": 20.0, "orientation": "time_first", "units": "dF/F"}
    ds = get_reader(entry.reader)(found["path"], **found["reader_options"], **found["entities"])
    assert ds.attrs["sfreq"] == 20.0 and ds.sizes["time"] == 300 and ds.sizes["channel"] == 4
    np.testing.assert_array_equal(
        ds["signal"].values, np.load(found["path"]).astype(ds["signal"].dtype)
    )
    assert load_catalog(str(lab)).keys() == catalog.keys()  # one folder, not its characters
    assert load_catalog([lab, lab / ".." / "lab"]).keys() == catalog.keys()  # read once


def test_catalog_setting_adds_folders(tmp_path, monkeypatch):
    first = _lab(tmp_path, "lab_a", "lab_a")
    second = _lab(tmp_path, "lab_b", "lab_b")
    monkeypatch.setenv("NEURODECODE_CATALOG", f"{first}{':'}{second}")
    assert get_settings().catalog_dirs == [first, second]
    assert {"lab_a", "lab_b", "eegbci_s001"} <= set(load_catalog())
    monkeypatch.setenv("NEURODECODE_CATALOG", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="catalog folder .*missing does not exist"):
        load_catalog()


def test_duplicate_entry_names_are_refused_naming_both_files(tmp_path):
    one = _lab(tmp_path, "lab_traces", "one")
    two = _lab(tmp_path, "lab_traces", "two")
    with pytest.raises(ValueError) as info:
        load_catalog([one, two])
    message = str(info.value)
    assert "catalog entry 'lab_traces' is defined twice" in message
    assert str(one / "lab_traces.yaml") in message and str(two / "lab_traces.yaml") in message
    clash = _lab(tmp_path, "eegbci_s001", "clash")
    with pytest.raises(ValueError, match=str(catalog_dir() / "eegbci_s001.yaml")):
        load_catalog([clash])


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"reader_options": {"fss": 20}},
            "reader_options: reader 'trace_array' has no option 'fss'; did you mean 'fs'?",
        ),
        (
            {"reader_options": {"fs": "fast"}},
            "reader_options: reader 'trace_array' option fs='fast' is not a valid float | None",
        ),
        (
            {"files": [{"glob": "*.npy", "reader_options": {"orientation": "rows"}}]},
            "files[0] (glob '*.npy') reader_options: reader 'trace_array' option "
            "orientation='rows'",
        ),
        (
            {"reader": "trace_arrays"},
            "reader: unknown reader 'trace_arrays'; did you mean 'trace_array'?",
        ),
        (
            {
                "reader": "binned_trials",
                "reader_options": {"group": "clouds"},
                "files": [{"glob": "*.npy"}],
            },
            "reader_options: reader 'binned_trials' needs option(s) 'bin_size' (bin_size: Time",
        ),
        (
            {"entities": {"subjet": "07"}},
            "entities: 'subjet' is not an entity; did you mean 'subject'?",
        ),
    ],
)
def test_bad_entry_is_refused_at_load_naming_its_file(tmp_path, fields, problem):
    lab = _lab(tmp_path, **fields)
    path = lab / "lab_traces.yaml"
    with pytest.raises(ValueError) as info:
        load_entry(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid catalog entry: ")
    assert problem in message and "\n" not in message
    with pytest.raises(ValueError, match="lab_traces.yaml: invalid catalog entry"):
        load_catalog([lab])


def test_get_entry_suggests_a_close_name():
    catalog = load_catalog()
    assert get_entry("golub_bci", catalog) is catalog["golub_bci"]
    with pytest.raises(ValueError, match=r"entry 'golub_bcii'; did you mean 'golub_bci'\?"):
        get_entry("golub_bcii", catalog)


@pytest.mark.parametrize("command", ["show", "fetch"])
def test_cli_unknown_entry_suggests_and_exits_2(command):
    result = runner.invoke(app, ["catalog", command, "eegbci_s01"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith(
        "error: no catalog entry 'eegbci_s01'; did you mean 'eegbci_s001'?"
    )


def test_cli_catalog_option_adds_a_lab_folder(tmp_path):
    lab = _lab(tmp_path)
    listed = runner.invoke(app, ["catalog", "list", "--catalog", str(lab)])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if "lab_traces" in line)
    assert "calcium" in row and "trace_array" in row and "│ 1 " in row
    assert row.rstrip(" │").endswith("│ lab")
    shipped = next(line for line in listed.output.splitlines() if "eegbci_s001" in line)
    assert shipped.rstrip(" │").endswith("│ data_catalog")
    assert f"catalog folders: {catalog_dir()}, {lab}" in listed.output
    shown = runner.invoke(app, ["catalog", "show", "lab_traces", "--catalog", str(lab)])
    assert shown.exit_code == 0, shown.output
    assert str(lab / "lab_traces.yaml") in shown.output
    assert "sub-07_task-rest_traces.npy" in shown.output and "│ 07 " in shown.output
    fetched = runner.invoke(app, ["catalog", "fetch", "lab_traces", "--catalog", str(lab)])
    assert fetched.exit_code == 0 and "no remote files listed" in fetched.output
    assert "lab_traces" not in runner.invoke(app, ["catalog", "list"]).output


def test_cli_broken_lab_catalog_is_one_line_exit_2(tmp_path):
    lab = _lab(tmp_path, reader_options={"fss": 20})
    result = runner.invoke(app, ["catalog", "list", "--catalog", str(lab)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"{lab / 'lab_traces.yaml'}: invalid catalog entry" in result.output
    missing = runner.invoke(app, ["catalog", "list", "--catalog", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere does not exist" in missing.output
