"""The README's "Bad input" table is true: each row's case gives the message, the exit status
and the written outcome it states.

Every row of the table names a case below (its first column, word for word); the test runs the
case on real files written by the field's writers (MNE, nibabel) and checks that every piece of
the row's quoted message (split at ``…``) appears in what the user sees, that the exit status is
the row's, and that nothing was written where the row says so. A row without a case, or a case
without a row, fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mne
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.ingest.base import file_sha256
from neurodecode.store import find_recordings

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


@dataclass
class Outcome:
    """What a user saw, the exit status, and the folder that must hold nothing new."""

    output: str
    exit_code: int | str
    watched: Path
    before: dict[str, bytes] | None = None


def _raw(n_channels: int = 4, n_times: int = 1000, seed: int = 0) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    info = mne.create_info([f"EEG{i:02d}" for i in range(n_channels)], 100.0, "eeg")
    return mne.io.RawArray(rng.standard_normal((n_channels, n_times)) * 1e-5, info, verbose="error")


def _edf(path: Path, raw: mne.io.BaseRaw | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(path, raw if raw is not None else _raw(), fmt="edf", verbose="error")
    return path


def _cli(*args: object) -> tuple[str, int]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.output, result.exit_code


def _ingest(tmp: Path, *args: object) -> Outcome:
    out = tmp / "out"
    output, code = _cli("ingest", *args, "--out", out, "--scheduler", "threads")
    return Outcome(output, code, out)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- the cases, one per README row -------------------------------------------------------------


def truncated_edf(tmp: Path) -> Outcome:
    path = _edf(tmp / "in" / "rec.edf")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return _ingest(tmp, path)


def file_no_reader_knows(tmp: Path) -> Outcome:
    path = tmp / "in" / "notes.txt"
    path.parent.mkdir(parents=True)
    path.write_text("not a recording\n")
    return _ingest(tmp, path)


def nan_samples(tmp: Path) -> Outcome:
    raw = _raw()
    data = raw.get_data()
    data[2, 250:260] = np.nan
    raw = mne.io.RawArray(data, raw.info, verbose="error")
    path = tmp / "in" / "rec_raw.fif"
    path.parent.mkdir(parents=True)
    raw.save(path, verbose="error")
    return _ingest(tmp, path)


def corrupt_nii_gz(tmp: Path) -> Outcome:
    path = tmp / "in" / "bold.nii.gz"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    volumes = rng.standard_normal((6, 5, 4, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(volumes, np.eye(4)), path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    return _ingest(tmp, path)


def events_outside_the_recording(tmp: Path) -> Outcome:
    path = _edf(tmp / "in" / "sub-01_task-x_eeg.edf")  # 10 s
    path.with_name("sub-01_task-x_events.tsv").write_text(
        "onset\tduration\ttrial_type\n2.0\t1.0\tleft\n9.5\t2.0\tright\n"
    )
    return _ingest(tmp, path)


def two_files_one_store(tmp: Path) -> Outcome:
    fif = tmp / "in" / "sub-01_task-lr_run-01_raw.fif"
    fif.parent.mkdir(parents=True)
    _raw(seed=1).save(fif, verbose="error")
    edf = _edf(tmp / "in" / "sub-01_task-lr_run-01.edf")
    return _ingest(tmp, fif, edf)


def store_from_another_file(tmp: Path) -> Outcome:
    first = _edf(tmp / "a" / "sub-01_task-lr_run-01.edf")
    assert _ingest(tmp, first).exit_code == 0
    before = _snapshot(tmp / "out")
    other = _edf(tmp / "b" / "sub-01_task-lr_run-01.edf", _raw(seed=3))
    outcome = _ingest(tmp, other)
    outcome.before = before
    return outcome


def unknown_reader_option(tmp: Path) -> Outcome:
    return _ingest(tmp, _edf(tmp / "in" / "rec.edf"), "-o", "drop_flatt=true")


def wrong_option_value(tmp: Path) -> Outcome:
    return _ingest(tmp, _edf(tmp / "in" / "rec.edf"), "-o", "drop_flat=maybe")


def mistyped_catalog_entry(tmp: Path) -> Outcome:
    return _ingest(tmp, "eegbci_s01")


def catalog_file_changed(tmp: Path) -> Outcome:
    data = tmp / "data"
    path = _edf(data / "lab" / "sub-01.edf")
    catalog = tmp / "catalog"
    catalog.mkdir()
    wrong = "0" * 64
    assert file_sha256(path) != wrong
    (catalog / "lab_eeg.yaml").write_text(
        "name: lab_eeg\nmodality: eeg\ndescription: a lab recording\nlicence: CC0\n"
        "root: lab\nreader: mne\nfiles:\n  - glob: 'sub-*.edf'\n"
        f"checksums:\n  sub-01.edf: '{wrong}'\n"
    )
    return _ingest(tmp, "lab_eeg", "--catalog", catalog, "--data-root", data)


def unwritable_out(tmp: Path) -> Outcome:
    blocker = tmp / "blocker"
    blocker.write_text("a file where a folder is needed\n")
    path = _edf(tmp / "in" / "rec.edf")
    output, code = _cli(
        "ingest", path, "--out", blocker / "out", "--scheduler", "threads"
    )
    return Outcome(output, code, tmp / "nothing-else")


def unknown_scheduler(tmp: Path) -> Outcome:
    path = _edf(tmp / "in" / "rec.edf")
    out = tmp / "out"
    output, code = _cli("ingest", path, "--out", out, "--scheduler", "locl")
    return Outcome(output, code, out)


def bids_subject_not_in_dataset(tmp: Path) -> Outcome:
    import mne_bids

    root = tmp / "bids"
    for subject in ("01", "02"):
        raw = _raw()
        raw.set_annotations(mne.Annotations([1.0], [0.5], ["left"]))
        src = _edf(tmp / "src" / f"s{subject}.edf", raw)
        mne_bids.write_raw_bids(
            mne.io.read_raw_edf(src, verbose="error"),
            mne_bids.BIDSPath(subject=subject, task="x", root=root, datatype="eeg"),
            overwrite=True,
            allow_preload=True,
            format="EDF",
            verbose="error",
        )
    return _ingest(tmp, root, "--subject", "09")


def folder_not_understood(tmp: Path) -> Outcome:
    folder = tmp / "in" / "session"
    folder.mkdir(parents=True)
    (folder / "readme.txt").write_text("not a recording\n")
    return _ingest(tmp, folder)


def damaged_store(tmp: Path) -> Outcome:
    """A shard replaced by one of another recording with the same layout (it still decodes)."""
    a, b = _edf(tmp / "a" / "rec.edf"), _edf(tmp / "b" / "rec.edf", _raw(seed=5))
    assert _cli("ingest", a, "--out", tmp / "A", "--scheduler", "threads")[1] == 0
    assert _cli("ingest", b, "--out", tmp / "B", "--scheduler", "threads")[1] == 0
    (store_a,), (store_b,) = find_recordings(tmp / "A"), find_recordings(tmp / "B")
    (shard_a,) = [p for p in (store_a / "signal" / "c").rglob("*") if p.is_file()]
    shard_b = store_b / shard_a.relative_to(store_a)
    shard_a.write_bytes(shard_b.read_bytes())
    before = _snapshot(tmp / "A")
    output, code = _cli("validate", tmp / "A")
    return Outcome(output, code, tmp / "A", before)


def unknown_simulated_modality(tmp: Path) -> Outcome:
    out = tmp / "out"
    output, code = _cli("simulate", "--out", out, "--modality", "meg")
    return Outcome(output, code, out)


def plot_without_a_store(tmp: Path) -> Outcome:
    out = tmp / "out"
    output, code = _cli("plot", tmp / "missing.zarr", "--out", out / "look.png")
    return Outcome(output, code, out)


def epochs_over_different_channel_sets(tmp: Path) -> Outcome:
    from neurodecode.data.samples import epochs, open_recordings
    from neurodecode.ingest.eeg import read_mne
    from neurodecode.store import recording_path, write_recording

    for subject, n in (("01", 4), ("02", 3)):
        raw = _raw(n_channels=n)
        raw.set_annotations(mne.Annotations([2.0, 5.0], [0.5, 0.5], ["left", "right"]))
        ds = read_mne(_edf(tmp / "in" / f"sub-{subject}_task-x.edf", raw))
        write_recording(ds, recording_path(tmp / "stores", "lab", ds))
    before = _snapshot(tmp / "stores")
    try:
        epochs(open_recordings(tmp / "stores" / "lab"), tmin=0.0, tmax=0.5)
    except ValueError as err:
        return Outcome(f"ValueError: {err}", "—", tmp / "stores", before)
    return Outcome("no error", "—", tmp / "stores", before)


CASES: dict[str, Callable[[Path], Outcome]] = {
    "truncated EDF": truncated_edf,
    "file no reader knows": file_no_reader_knows,
    "NaN samples": nan_samples,
    "corrupt `.nii.gz`": corrupt_nii_gz,
    "events outside the recording": events_outside_the_recording,
    "two files, one store": two_files_one_store,
    "store from another file": store_from_another_file,
    "unknown reader option": unknown_reader_option,
    "wrong option value": wrong_option_value,
    "mistyped catalog entry": mistyped_catalog_entry,
    "catalog file changed": catalog_file_changed,
    "unwritable `--out`": unwritable_out,
    "unknown `--scheduler`": unknown_scheduler,
    "BIDS subject not in dataset": bids_subject_not_in_dataset,
    "folder not understood": folder_not_understood,
    "damaged store": damaged_store,
    "unknown simulated modality": unknown_simulated_modality,
    "plot without a store": plot_without_a_store,
    "epochs over different channel sets": epochs_over_different_channel_sets,
}


def readme_rows() -> dict[str, tuple[str, str, str]]:
    """The rows of the README's "Bad input" table: case → (message, exit, written)."""
    text = README.read_text()
    section = text.split("### Bad input", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("bad input", "") or set(cells[0]) <= {"-", ":"}:
            continue
        rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def test_every_row_has_a_case_and_every_case_a_row():
    assert set(readme_rows()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_readme_row_holds(case, tmp_path):
    message, exit_status, written = readme_rows()[case]
    outcome = CASES[case](tmp_path)
    seen = " ".join(outcome.output.split())  # rich wraps long lines
    quoted = re.findall(r"`([^`]+)`", message)
    assert quoted, f"README row {case!r} quotes no message"
    for fragment in quoted:
        for piece in fragment.split("…"):
            piece = " ".join(piece.split())
            assert piece in seen, f"{case}: {piece!r} not in what the user sees:\n{outcome.output}"
    assert str(outcome.exit_code) == exit_status, outcome.output
    assert "Traceback" not in outcome.output
    if written == "nothing":
        assert not outcome.watched.exists() or not any(outcome.watched.rglob("*")), (
            f"{case}: something was written: {sorted(outcome.watched.rglob('*'))}"
        )
    else:
        assert outcome.before is not None, f"{case}: README says {written!r}: keep a snapshot"
        assert _snapshot(outcome.watched) == outcome.before, f"{case}: files changed"
