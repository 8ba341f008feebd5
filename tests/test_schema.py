"""The recording schema: construction, helpers and every validation error path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from neurodecode.schema import (
    SchemaError,
    add_history,
    as_str_array,
    events_frame,
    intervals_frame,
    make_recording,
    set_intervals,
    validate,
)

from .conftest import small_recording


def test_valid_recording_passes(recording):
    assert validate(recording, check_data=True) is recording
    assert recording["signal"].dtype == np.float32
    assert recording["signal"].dims == ("time", "channel")
    assert recording["behavior_position"].dims == ("time", "behavior_position_dim1")


def test_events_and_intervals_frames(recording):
    ev = events_frame(recording)
    assert list(ev.columns) == ["onset", "duration", "label", "value"]
    assert ev["label"].tolist() == ["left", "right", "left"]
    iv = intervals_frame(recording)
    assert iv["split"].tolist() == ["train", "test"]
    new = set_intervals(
        recording, pd.DataFrame({"start": [0.0], "stop": [5.0], "split": ["valid"]})
    )
    assert intervals_frame(new)["split"].tolist() == ["valid"]
    validate(new)


def test_add_history_keeps_original(recording):
    out = add_history(recording, "filter", l_freq=1.0)
    assert out.attrs["history"][-1] == {"step": "filter", "params": {"l_freq": 1.0}}
    assert len(recording.attrs["history"]) == 1


def test_as_str_array_handles_numpy_string_dtype():
    values = np.array(["a", "bb"], dtype=np.dtypes.StringDType())
    out = as_str_array(values)
    assert out.dtype.kind == "U" and out.tolist() == ["a", "bb"]
    assert as_str_array(np.array([b"x"])).tolist() == ["x"]


def test_dask_signal_stays_lazy():
    import dask.array as da

    rec = small_recording()
    lazy = make_recording(
        da.from_array(rec["signal"].values.astype(np.float64), chunks=(500, 8)),
        sfreq=100.0,
        ch_names=rec["channel"].values,
        ch_types="eeg",
        units="V",
        modality="eeg",
        subject="01",
        task="t",
    )
    assert isinstance(lazy["signal"].data, da.Array)
    assert lazy["signal"].dtype == np.float32
    validate(lazy, check_data=True)


def _drop_attr(key):
    def mutate(ds):
        ds.attrs.pop(key)
        return ds

    return mutate


def _set_attr(key, value):
    def mutate(ds):
        ds.attrs[key] = value
        return ds

    return mutate


def _with_time(values_fn):
    def mutate(ds):
        t = ds["time"].values.copy()
        return ds.assign_coords(time=values_fn(t))

    return mutate


def _with_channels(names):
    def mutate(ds):
        return ds.assign_coords(channel=np.array(names, dtype=str))

    return mutate


def _with_events(onset, duration):
    def mutate(ds):
        ds = ds.copy()
        ds["event_onset"] = ("event", np.asarray(onset, float))
        ds["event_duration"] = ("event", np.asarray(duration, float))
        return ds

    return mutate


def _with_intervals(rows):
    return lambda ds: set_intervals(ds, pd.DataFrame(rows, columns=["start", "stop", "split"]))


def _with_spikes(times, units):
    def mutate(ds):
        ds = ds.copy()
        ds["spike_time"] = ("spike", np.asarray(times, float))
        ds["spike_unit"] = ("spike", np.asarray(units))
        return ds

    return mutate


def _nan_time(t):
    t[5] = np.nan
    return t


def _unsorted_time(t):
    t[[3, 4]] = t[[4, 3]]
    return t


def _duplicate_time(t):
    t[4] = t[3]
    return t


ERROR_CASES = {
    "missing signal": (lambda ds: ds.drop_vars("signal"), "variable 'signal' is missing"),
    "transposed signal": (lambda ds: ds.assign(signal=ds["signal"].T), "signal dims are"),
    "float64 signal": (
        lambda ds: ds.assign(signal=ds["signal"].astype("f8")),
        "dtype is float64, expected float32",
    ),
    "empty signal": (lambda ds: ds.isel(channel=slice(0, 0)), "signal is empty"),
    "missing time": (lambda ds: ds.drop_vars("time"), "coordinate 'time' is missing"),
    "integer time": (_with_time(lambda t: np.arange(t.size)), "time must be 1-D float"),
    "NaN in time": (_with_time(_nan_time), "time holds 1 NaN/Inf"),
    "unsorted time": (_with_time(_unsorted_time), "time is not strictly increasing"),
    "duplicate time": (_with_time(_duplicate_time), "time is not strictly increasing"),
    "wrong sampling rate": (_set_attr("sfreq", 250.0), "does not match the time axis"),
    "negative sampling rate": (_set_attr("sfreq", -1.0), "sfreq must be a positive"),
    "missing sfreq": (_drop_attr("sfreq"), "attribute 'sfreq' is missing"),
    "unknown modality": (_set_attr("modality", "pet"), "modality 'pet' is not one of"),
    "missing subject": (_drop_attr("subject"), "attribute 'subject' is missing"),
    "empty session": (_set_attr("session", ""), "'session' must be a non-empty string"),
    "old schema": (_set_attr("schema_version", "0.1"), "schema_version is '0.1'"),
    "missing source": (_drop_attr("source"), "attribute 'source' is missing"),
    "incomplete source": (_set_attr("source", {"path": "memory://small"}), "source lacks"),
    "bad history": (_set_attr("history", "filtered"), "'history' must be a list"),
    "duplicate channels": (
        _with_channels(["A", "A", "B", "C", "D", "E", "F", "G"]),
        "duplicate channel names: A",
    ),
    "empty channel name": (
        _with_channels(["", "A", "B", "C", "D", "E", "F", "G"]),
        "channel names are empty",
    ),
    "unknown channel type": (
        lambda ds: ds.assign_coords(ch_type=("channel", ["eeg"] * 7 + ["xyz"])),
        "unknown channel type(s) ['xyz']",
    ),
    "missing units": (lambda ds: ds.drop_vars("units"), "channel coordinate 'units' is missing"),
    "empty unit": (
        lambda ds: ds.assign_coords(units=("channel", ["V"] * 7 + [""])),
        "some channels have no unit",
    ),
    "missing events": (lambda ds: ds.drop_dims("event"), "event table is missing"),
    "event after end": (
        _with_events([1.0, 2.0, 25.0], [0, 0, 0]),
        "1 event(s) lie outside the recording [0, 20) s",
    ),
    "event before start": (_with_events([-1.0, 2.0, 3.0], [0, 0, 0]), "lie outside the recording"),
    "event running past end": (
        _with_events([1.0, 2.0, 19.5], [0, 0, 1.0]),
        "lie outside the recording",
    ),
    "negative duration": (_with_events([1.0, 2.0, 3.0], [0, -1, 0]), "negative or NaN"),
    "NaN onset": (_with_events([1.0, np.nan, 3.0], [0, 0, 0]), "event onset(s) are NaN"),
    "unknown split": (
        _with_intervals([(0, 10, "train"), (10, 20, "holdout")]),
        "unknown split name(s) ['holdout']",
    ),
    "empty interval": (_with_intervals([(5, 5, "train")]), "stop <= start"),
    "interval outside": (_with_intervals([(0, 30, "train")]), "intervals lie outside"),
    "overlapping splits": (
        _with_intervals([(0, 12, "train"), (10, 20, "test")]),
        "split intervals overlap: train [0, 12) and test [10, 20)",
    ),
    "missing intervals": (lambda ds: ds.drop_dims("interval"), "split interval table is missing"),
    "spike outside": (_with_spikes([1.0, 30.0], [0, 1]), "spikes lie outside the recording"),
    "spike bad unit": (_with_spikes([1.0, 2.0], [0, 8]), "integer indices into the 8 channels"),
    "spikes unsorted": (_with_spikes([2.0, 1.0], [0, 1]), "spike_time is not sorted"),
    "spike times alone": (
        lambda ds: ds.assign(spike_time=("spike", [1.0])),
        "must be stored together",
    ),
    "behaviour off the time axis": (
        lambda ds: ds.assign(behavior_speed=("other", np.zeros(3))),
        "behavior_speed must have 'time' as its first dimension",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_validation_error(case):
    mutate, message = ERROR_CASES[case]
    bad = mutate(small_recording())
    with pytest.raises(SchemaError) as info:
        validate(bad)
    assert message in str(info.value), str(info.value)
    assert "memory://small" in str(info.value) or "sub-01" in str(info.value)


@pytest.mark.parametrize("var", ["signal", "behavior_speed"])
def test_nonfinite_samples_found_only_when_data_checked(var):
    ds = small_recording()
    values = ds[var].values.copy()
    values[10] = np.inf if var == "signal" else np.nan
    ds[var] = (ds[var].dims, values)
    validate(ds)  # metadata only: no sample is read
    with pytest.raises(SchemaError, match=f"{var} holds {values[10].size} NaN/Inf"):
        validate(ds, check_data=True)


def test_all_problems_reported_at_once():
    ds = small_recording()
    ds.attrs.pop("subject")
    ds = ds.assign_coords(channel=np.array(["A"] * 8))
    with pytest.raises(SchemaError) as info:
        validate(ds, where="my_file.edf")
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("my_file.edf does not follow the recording schema")


def test_not_a_dataset():
    with pytest.raises(SchemaError, match="expected an xarray.Dataset, got DataArray"):
        validate(xr.DataArray([1.0]))


def test_make_recording_rejects_bad_shapes():
    with pytest.raises(SchemaError, match="signal must be 2-D"):
        make_recording(
            np.zeros(10),
            sfreq=1,
            ch_names=["a"],
            ch_types="eeg",
            units="V",
            modality="eeg",
            subject="1",
            task="t",
        )
    with pytest.raises(SchemaError, match="ch_types has 1 entries for 2 channels"):
        make_recording(
            np.zeros((10, 2)),
            sfreq=1,
            ch_names=["a", "b"],
            ch_types=["eeg"],
            units="V",
            modality="eeg",
            subject="1",
            task="t",
        )
    with pytest.raises(SchemaError, match="events table lacks column"):
        make_recording(
            np.zeros((10, 1)),
            sfreq=1,
            ch_names=["a"],
            ch_types="eeg",
            units="V",
            modality="eeg",
            subject="1",
            task="t",
            events=pd.DataFrame({"onset": [1]}),
        )
