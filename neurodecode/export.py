"""Back to the ecosystem: recordings as MNE objects and voxel stores as NIfTI images.

* :func:`to_mne_raw` turns a recording (a store path or an opened dataset) into a preloaded
  :class:`mne.io.RawArray`: channel types and units, positions as a montage, events as
  annotations, the identity in ``info``.
* :func:`to_mne_epochs` turns the trials of :func:`neurodecode.data.samples.epochs` into an
  :class:`mne.EpochsArray`, with the sample table as its metadata.
* :func:`to_nifti` puts the voxels of an fMRI store back on their 4-D grid (zeros outside the
  mask) for nilearn, and :func:`mask_image` gives the mask itself.

Everything the MNE objects cannot hold natively (the schema's own channel types such as
``voxel`` or ``roi``, units MNE has no code for, the recording's provenance) is kept as JSON in
``info["description"]`` (see :func:`recording_description`), so that nothing is lost on the way
out.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .schema import as_str_array, events_frame, recording_label
from .store import open_recording
from .verbosity import Verbose, mne_verbose

if TYPE_CHECKING:  # imported lazily at run time: MNE and nibabel are slow to import
    import mne
    import nibabel as nib

    from .data.samples import Samples

__all__ = [
    "mask_image",
    "recording_description",
    "to_mne_epochs",
    "to_mne_raw",
    "to_nifti",
    "voxel_grid",
]

#: Schema channel types that MNE knows under the same name.
_MNE_TYPES = frozenset(
    {"eeg", "mag", "grad", "seeg", "ecog", "dbs", "eog", "ecg", "emg", "stim", "misc"}
)
#: MNE channel types whose positions a montage sets.
_MONTAGE_TYPES = frozenset({"eeg", "seeg", "ecog", "dbs"})
#: Coordinate frames of the schema (MNE's, BIDS' and NIfTI's names) as MNE montage frames.
_NIFTI_FRAMES = {"scanner": "ras", "aligned": "ras", "mni": "mni_tal", "talairach": "mni_tal"}
_VOXEL_NAME = re.compile(r"^v(\d+)_(\d+)_(\d+)$")
#: NIfTI ``xform`` codes of the frames that :mod:`neurodecode.ingest.fmri` writes.
_XFORM_CODES = ("scanner", "aligned", "talairach", "mni", "template")


def _recording(store_or_ds: str | os.PathLike | xr.Dataset) -> tuple[xr.Dataset, str]:
    """The recording and a name for messages (the store path, or the recording label)."""
    if isinstance(store_or_ds, xr.Dataset):
        return store_or_ds, recording_label(store_or_ds)
    return open_recording(store_or_ds), str(store_or_ds)


def _picks(ds: xr.Dataset, picks: str | Sequence[str] | None, where: str) -> np.ndarray:
    """Indices of the channels named by ``picks`` (channel names or channel types), in order."""
    names = as_str_array(ds["channel"].values)
    if picks is None:
        return np.arange(len(names))
    types = as_str_array(ds["ch_type"].values)
    wanted = [picks] if isinstance(picks, str) else list(picks)
    index = {n: i for i, n in enumerate(names)}
    out: list[int] = []
    unknown = []
    for item in wanted:
        if item in index:
            out.append(index[item])
        elif item in set(types):
            out.extend(np.flatnonzero(types == item).tolist())
        else:
            unknown.append(item)
    if not wanted:
        raise ValueError(f"{where}: picks is empty; name channels or channel types, or pass None")
    if unknown:
        raise ValueError(
            f"{where}: picks {unknown} are neither channel names nor channel types of the "
            f"recording (types: {sorted(set(types))}; channels: {names[:5].tolist()}...)"
        )
    return np.asarray(list(dict.fromkeys(out)), dtype=int)


def _mne_type(ch_type: str, unit: str) -> str:
    if ch_type in _MNE_TYPES:
        return ch_type
    if ch_type == "meg":  # a generic MEG channel: a magnetometer unless its unit says gradient
        return "grad" if unit == "T/m" else "mag"
    return "misc"  # voxel, parcel, roi, unit: no MNE equivalent


def recording_description(ds: xr.Dataset) -> dict[str, Any]:
    """What :func:`to_mne_raw` keeps in ``info["description"]`` (as JSON), as a dict.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording.

    Returns
    -------
    dict
        ``recording`` (its label), ``subject``, ``session``, ``task``, ``run``, ``modality``,
        ``source`` (provenance), ``ch_type`` and ``units`` (the schema's, per channel).
    """
    a = ds.attrs
    return {
        "neurodecode": True,
        "recording": recording_label(ds),
        **{k: str(a.get(k, "")) for k in ("subject", "session", "task", "run", "modality")},
        "coord_frame": str(a.get("coord_frame", "unknown")),
        "source": dict(a.get("source", {})),
        "ch_type": as_str_array(ds["ch_type"].values).tolist(),
        "units": as_str_array(ds["units"].values).tolist(),
    }


def _mne_frame(frame: str) -> str:
    from mne.transforms import _str_to_frame
    from mne_bids.config import BIDS_TO_MNE_FRAMES

    if frame in _str_to_frame:
        return frame
    return BIDS_TO_MNE_FRAMES.get(frame, _NIFTI_FRAMES.get(frame, "unknown"))


def _as_float64(sig: Any) -> np.ndarray:
    """``signal`` (time, channel), lazy or not, as a C-contiguous float64 (channel, time) array,
    filled block by block so that no float32 copy of the whole recording is held."""
    import dask.array as da

    if not isinstance(sig, da.Array):
        return np.ascontiguousarray(np.asarray(sig).T, dtype=np.float64)
    out = np.empty(sig.shape[::-1], dtype=np.float64)
    da.store(sig.T.astype(np.float64), out, lock=False)
    return out


@mne_verbose
def to_mne_raw(
    store_or_ds: str | os.PathLike | xr.Dataset,
    *,
    picks: str | Sequence[str] | None = None,
    verbose: Verbose = None,
) -> mne.io.RawArray:
    """Convert a recording to a preloaded :class:`mne.io.RawArray`.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A recording store (see :func:`neurodecode.store.open_recording`) or an opened recording.
    picks : str or sequence of str, optional
        Channels to keep, by name or by schema channel type (e.g. ``"eeg"``); default all.
    verbose : bool, str or int, optional
        MNE's logging level for the conversion, in MNE's convention (see
        :func:`neurodecode.verbosity.mne_verbose`): by default ``"warning"`` unless the user
        set MNE's level.

    Returns
    -------
    mne.io.RawArray
        The samples as float64 in the store's units (volts, tesla, ...). Channel types are MNE's
        (eeg, mag, grad, seeg, ecog, dbs, eog, ecg, emg, stim, misc; a generic ``meg`` channel
        becomes ``mag``, or ``grad`` when its unit is ``T/m``; voxel, parcel, roi and unit
        channels become ``misc``) and each channel's ``unit`` is MNE's code for the store's unit
        (V, T, T/m, ...; ``FIFF_UNIT_NONE`` for the others). Known positions (EEG/iEEG types;
        NaN ones skipped) are set as a montage made in the recording's ``coord_frame`` (mapped
        to MNE's frame names; a frame without fiducials is taken as the head frame, as MNE
        does). Events are annotations (onset, duration, label), the first sample is the
        recording's first time, ``info["subject_info"]["his_id"]`` is the subject and
        ``info["description"]`` holds :func:`recording_description` as JSON (the schema's
        channel types and units, identity and provenance).

    Raises
    ------
    FileNotFoundError, SchemaError
        If the store is missing or invalid (see :func:`neurodecode.store.open_recording`).
    ValueError
        If ``picks`` names a channel or type that the recording lacks.
    """
    import mne
    from mne.io.constants import FIFF

    from .ingest.eeg import MNE_UNITS

    ds, where = _recording(store_or_ds)
    idx = _picks(ds, picks, where)
    ds = ds.isel(channel=idx)
    names = as_str_array(ds["channel"].values).tolist()
    schema_types = as_str_array(ds["ch_type"].values).tolist()
    units = as_str_array(ds["units"].values).tolist()
    sfreq = float(ds.attrs["sfreq"])
    info = mne.create_info(
        names,
        sfreq,
        [_mne_type(t, u) for t, u in zip(schema_types, units, strict=True)],
    )
    codes = {unit: code for code, unit in MNE_UNITS.items()}
    for ch, unit in zip(info["chs"], units, strict=True):
        ch["unit"] = codes.get(unit, FIFF.FIFF_UNIT_NONE)
        ch["unit_mul"] = FIFF.FIFF_UNITM_NONE
    info["subject_info"] = {"his_id": str(ds.attrs.get("subject", ""))}
    info["description"] = json.dumps(recording_description(ds))
    t0 = float(ds["time"].values[0]) if ds.sizes["time"] else 0.0
    raw = mne.io.RawArray(_as_float64(ds["signal"].data), info, first_samp=int(round(t0 * sfreq)))
    _set_montage(raw, ds)
    ev = events_frame(ds)
    raw.set_annotations(
        mne.Annotations(
            ev["onset"].to_numpy() - t0,
            ev["duration"].to_numpy(),
            ev["label"].astype(str).tolist(),
        )
    )
    return raw


def _set_montage(raw: Any, ds: xr.Dataset) -> None:
    import mne

    pos = np.column_stack([np.asarray(ds[a].values, dtype=np.float64) for a in "xyz"])
    ok = np.isfinite(pos).all(axis=1) & np.isin(raw.get_channel_types(), list(_MONTAGE_TYPES))
    if not ok.any():
        return
    frame = _mne_frame(str(ds.attrs.get("coord_frame", "unknown")))
    montage = mne.channels.make_dig_montage(
        {raw.ch_names[i]: pos[i] for i in np.flatnonzero(ok)}, coord_frame=frame
    )
    with warnings.catch_warnings():
        # without fiducials MNE takes the frame as the head frame; that is what is documented
        warnings.filterwarnings("ignore", message="Fiducial point", category=RuntimeWarning)
        raw.set_montage(montage, on_missing="ignore")


@mne_verbose
def to_mne_epochs(
    samples: Samples,
    *,
    event_id: Mapping[str, int] | None = None,
    verbose: Verbose = None,
) -> mne.EpochsArray:
    """Convert event-locked trials to an :class:`mne.EpochsArray`.

    Parameters
    ----------
    samples : Samples
        What :func:`neurodecode.data.samples.epochs` returns (``X`` of shape
        ``(n_trials, n_channels, n_times)``).
    event_id : mapping of str to int, optional
        Code of each class in ``samples.y``; default ``1, 2, ...`` for the sorted classes.
        Trials without class labels (``y`` None or numeric) all get the event ``"sample"``
        (code 1), and numeric targets go to the metadata column ``y``.
    verbose : bool, str or int, optional
        MNE's logging level (see :func:`neurodecode.verbosity.mne_verbose`).

    Returns
    -------
    mne.EpochsArray
        Data as float64; ``tmin`` is ``samples.times[0]``; channel types from
        ``samples.ch_types`` (mapped as in :func:`to_mne_raw`; ``misc`` when unknown). Each
        event's sample is its onset's sample in its recording plus an offset per recording (so
        that trials of different recordings never share a sample; a trial that would share one
        with another is moved by one sample); ``metadata`` is the sample table (``recording``,
        ``subject``, ..., ``onset``, ``label``).

    Raises
    ------
    ValueError
        If ``samples`` are not trials (``X`` not 3-D) or ``event_id`` misses a class.
    """
    import mne

    X = np.asarray(samples.X)
    if X.ndim != 3:
        raise ValueError(
            f"to_mne_epochs needs trials of shape (n, n_channels, n_times); these samples have "
            f"shape {X.shape} (time steps): use neurodecode.data.samples.epochs or windows"
        )
    times = samples.times if samples.times is not None else np.arange(X.shape[2]) / samples.sfreq
    table = samples.table.reset_index(drop=True).copy()
    y = samples.y
    labelled = y is not None and np.asarray(y).dtype.kind in "OUS"
    if labelled:
        classes = as_str_array(y)
        if event_id is None:
            event_id = {c: i + 1 for i, c in enumerate(sorted(set(classes.tolist())))}
        missing = sorted(set(classes.tolist()) - set(event_id))
        if missing:
            raise ValueError(f"event_id has no code for the class(es) {missing}")
        codes = np.array([event_id[c] for c in classes], dtype=int)
        event_id = {c: int(event_id[c]) for c in sorted(set(classes.tolist()))}
    else:
        codes = np.ones(len(X), dtype=int)
        event_id = {"sample": 1}
        if y is not None:
            table["y"] = np.asarray(y)
    ch_types = samples.ch_types or ["misc"] * X.shape[1]
    info = mne.create_info(
        list(samples.ch_names),
        float(samples.sfreq),
        [_mne_type(t, "") for t in ch_types],
    )
    events = np.column_stack(
        [_event_samples(table, float(times[0]), samples.sfreq, X.shape[2]), np.zeros_like(codes),
         codes]
    )  # fmt: skip
    return mne.EpochsArray(
        X.astype(np.float64),
        info,
        events=events,
        tmin=float(times[0]),
        event_id=event_id,
        baseline=None,
        metadata=table,
    )


def _event_samples(table: Any, tmin: float, sfreq: float, n_times: int) -> np.ndarray:
    """Unique event samples: onset sample within the recording plus a per-recording offset."""
    onset = table["onset"] if "onset" in table else table["start"] - tmin
    local = np.rint(onset.to_numpy(dtype=float) * sfreq).astype(np.int64)
    recordings = table["recording"].to_numpy() if "recording" in table else np.zeros(len(table))
    out = local.copy()
    offset = 0
    for rec in dict.fromkeys(recordings.tolist()):
        rows = recordings == rec
        out[rows] += offset - min(int(local[rows].min()), 0)
        offset = int(out[rows].max()) + n_times + 1
    order = np.argsort(out, kind="stable")
    ordered = out[order]
    for i in range(1, len(ordered)):  # two trials at one onset: the later one moves
        ordered[i] = max(ordered[i], ordered[i - 1] + 1)
    out[order] = ordered
    return out


def voxel_grid(store_or_ds: str | os.PathLike | xr.Dataset) -> tuple[np.ndarray, np.ndarray,
                                                                    tuple[int, int, int]]:
    """Grid indices of the voxel channels of an fMRI recording, with the grid's affine and shape.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A voxel recording: written by :func:`neurodecode.ingest.fmri.read_nifti` (channels
        ``v{i}_{j}_{k}``, ``attrs["affine"]`` and ``attrs["spatial_shape"]``), or with integer
        positions in the ``"voxel"`` frame (simulations; identity affine, grid just large enough).

    Returns
    -------
    ijk : ndarray of int, shape (n_channels, 3)
    affine : ndarray, shape (4, 4)
    shape : tuple of int

    Raises
    ------
    ValueError
        If the recording holds parcels or other non-voxel channels, or its voxels cannot be
        placed on a grid.
    """
    return _voxel_grid(*_recording(store_or_ds))


def _voxel_grid(ds: xr.Dataset, where: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    types = set(as_str_array(ds["ch_type"].values).tolist())
    if "parcel" in types:
        raise ValueError(
            f"{where}: a parcel store cannot be put back on voxels: each channel is the mean of "
            "many voxels (put parcel values back on the grid with the atlas image, e.g. "
            "nilearn.maskers.NiftiLabelsMasker.inverse_transform)"
        )
    if types != {"voxel"}:
        raise ValueError(
            f"{where}: only voxel recordings can become NIfTI images; it holds {sorted(types)} "
            "channels"
        )
    names = as_str_array(ds["channel"].values)
    if "affine" in ds.attrs and "spatial_shape" in ds.attrs:
        matches = [_VOXEL_NAME.match(n) for n in names]
        if not all(matches):
            bad = next(n for n, m in zip(names, matches, strict=True) if not m)
            raise ValueError(f"{where}: voxel channel {bad!r} is not named v<i>_<j>_<k> after "
                             "its grid indices")
        ijk = np.array([[int(g) for g in m.groups()] for m in matches], dtype=np.int64)
        affine = np.asarray(ds.attrs["affine"], dtype=np.float64)
        shape = tuple(int(s) for s in ds.attrs["spatial_shape"])
    elif ds.attrs.get("coord_frame") == "voxel":
        pos = np.column_stack([np.asarray(ds[a].values, dtype=np.float64) for a in "xyz"])
        if not (np.isfinite(pos).all() and (pos == np.round(pos)).all() and (pos >= 0).all()):
            raise ValueError(f"{where}: voxel positions in the 'voxel' frame must be "
                             "non-negative integer grid indices")
        ijk = pos.astype(np.int64)
        affine = np.eye(4)
        shape = tuple(int(s) for s in ijk.max(axis=0) + 1)
    else:
        raise ValueError(f"{where}: the recording has no voxel grid (no attrs 'affine' and "
                         "'spatial_shape', and positions not in the 'voxel' frame)")
    if len(shape) != 3 or (ijk >= np.asarray(shape)).any() or (ijk < 0).any():
        raise ValueError(f"{where}: voxel indices do not fit the grid of shape {shape}")
    return ijk, affine, shape  # type: ignore[return-value]


def _header(ds: xr.Dataset, affine: np.ndarray, data: np.ndarray) -> nib.Nifti1Image:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    frame = str(ds.attrs.get("coord_frame", "unknown"))
    code = frame if frame in _XFORM_CODES else "unknown"
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    img.header.set_xyzt_units("mm", "sec")
    return img


def to_nifti(
    store_or_ds: str | os.PathLike | xr.Dataset,
    *,
    volumes: slice | Sequence[int] | np.ndarray | None = None,
) -> nib.Nifti1Image:
    """Put the voxels of an fMRI recording back on their 4-D grid.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A voxel recording (see :func:`voxel_grid`).
    volumes : slice or sequence of int, optional
        Volumes to keep (default all); only those are read.

    Returns
    -------
    nibabel.Nifti1Image
        float32 image of shape ``(x, y, z, n_volumes)`` holding the stored voxels and zeros
        outside the mask, with the recording's affine (as sform and qform, coded by the
        recording's ``coord_frame``), voxel sizes and the TR (``1 / sfreq``, seconds) as zooms,
        and the first volume's time as ``toffset``.

    Raises
    ------
    ValueError
        If the recording is not a voxel recording (parcels cannot go back to voxels).
    """
    ds, where = _recording(store_or_ds)
    ijk, affine, shape = _voxel_grid(ds, where)
    sig = ds["signal"]
    if volumes is not None:
        sig = sig.isel(time=volumes)
    values = np.asarray(sig.values, dtype=np.float32)
    flat = ijk[:, 0] + shape[0] * (ijk[:, 1] + shape[1] * ijk[:, 2])
    grid = np.zeros((int(np.prod(shape)), values.shape[0]), dtype=np.float32)
    grid[flat] = values.T
    img = _header(ds, affine, grid.reshape((*shape, values.shape[0]), order="F"))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    img.header.set_zooms((*zooms, 1.0 / float(ds.attrs["sfreq"])))
    if sig.sizes["time"]:
        img.header["toffset"] = float(sig["time"].values[0])
    return img


def mask_image(store_or_ds: str | os.PathLike | xr.Dataset) -> nib.Nifti1Image:
    """The voxels a voxel recording holds, as a 3-D 0/1 image on its grid.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A voxel recording (see :func:`voxel_grid`).

    Returns
    -------
    nibabel.Nifti1Image
        uint8 image of the grid's shape (1 on stored voxels) with the recording's affine; usable
        as nilearn's ``mask_img``.

    Raises
    ------
    ValueError
        If the recording is not a voxel recording.
    """
    ds, where = _recording(store_or_ds)
    ijk, affine, shape = _voxel_grid(ds, where)
    data = np.zeros(shape, dtype=np.uint8)
    data[tuple(ijk.T)] = 1
    return _header(ds, affine, data)
