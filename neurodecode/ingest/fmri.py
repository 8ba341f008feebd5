"""fMRI readers: 4-D NIfTI runs read lazily through nibabel, and BIDS ``func/`` folders.

:func:`read_nifti` turns one run (a 4-D NIfTI image) into a recording whose ``signal`` holds one
channel per in-mask voxel (``ch_type="voxel"``) or, with an atlas, one channel per parcel
(``ch_type="parcel"``). Samples are volumes: ``sfreq = 1 / TR`` and ``time = volume * TR``.

How the data are read
---------------------
* Nothing is loaded as a whole. At read time the file is scanned once, a block of volumes at a
  time (bounded memory), which proves that it can be read to the end (a truncated ``.nii.gz``
  fails here, naming the file, not in the middle of a store write) and gives the per-voxel facts
  that the default and computed masks need.
* ``signal`` is a Dask array built with :func:`~neurodecode.ingest.base.blockwise_array`. Its
  blocks reopen the file (one cached nibabel image per process) and read volumes ``start:stop``
  through the image's array proxy, so the graph runs on any ``dask.distributed`` worker.
* Cleaning (``detrend``, ``confounds``, ``high_pass``, ``standardize``) is fitted per run, so it
  needs each voxel's whole time series. It is done blockwise over *voxel groups* instead of time:
  a block reads every volume of one slab of the image (whole ``z`` planes, or rows of one plane)
  and applies :func:`nilearn.signal.clean` to the slab's in-mask voxels, so a task holds about
  ``block_bytes`` of raw data. The cleaned signal is also cut into row blocks of about
  ``4 * block_bytes`` (all channels, float32), each of which re-reads and re-cleans its slabs:
  the store writes time shards, and without row blocks it would have to hold the whole cleaned
  run at once. Runs whose cleaned signal is below that size (64 MiB by default) are read once;
  bigger runs trade repeated reads for bounded memory.
  With an atlas, the (small) parcel time series are computed block by block over time, then
  cleaned.

Channels are ordered as the voxels are stored in the file (``i`` fastest, then ``j``, then
``k``) and named ``v{i}_{j}_{k}``; positions are the world coordinates of the voxel centres (the
image's affine), in the frame given by the header's sform (or else qform) code (``"scanner"``,
``"aligned"``, ``"talairach"``, ``"mni"``, ``"template"``, ``"unknown"``). The recording's
``attrs`` also keep the image's ``affine`` and ``spatial_shape``, so that voxel maps can be put
back on the image grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize

from ..schema import make_recording, validate
from .base import (
    IngestError,
    bids_entities,
    blockwise_array,
    check_if_gzip,
    companion_info,
    events_source,
    file_stamp,
    frame_digest,
    read_events_table,
    read_tsv,
    recording_identity,
    source_info,
)

__all__ = [
    "events_to_volumes",
    "list_bids_func",
    "read_bids_func",
    "read_nifti",
]

logger = logging.getLogger(__name__)

_READER = "neurodecode.ingest.fmri.read_nifti"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Seconds per unit of the NIfTI time axis (``xyzt_units``); "unknown" is read as seconds.
_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}
#: BIDS entities that name a run's events and confounds files (not ``space``, ``desc``...).
_RUN_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run")
_BOLD_NAME = re.compile(r"_bold\.nii(\.gz)?$")
_CONFOUND_SUFFIXES = ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv")
#: Bytes decompressed per step when a gzip stream is checked.
#: A cleaned signal is cut into row blocks of about this many times ``block_bytes`` (float32, all
#: channels); each row block re-reads and re-cleans its slabs.
_CLEAN_ROWS_FACTOR = 4


# --------------------------------------------------------------------------------------------
# Block functions (module level, so that distributed workers can unpickle them)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _image(path: str, stamp: tuple[int, int]) -> nib.Nifti1Image:
    """Open a NIfTI image once per process; ``stamp`` (size, mtime) invalidates the cache."""
    return nib.load(path, mmap=False, keep_file_open=True)


def _volumes(path: str, stamp: tuple[int, int], start: int, stop: int) -> np.ndarray:
    """Volumes ``start:stop`` as ``(n_voxels_in_grid, stop - start)``, in file (Fortran) order."""
    block = np.asarray(_image(path, stamp).dataobj[..., start:stop])
    return block.reshape(-1, stop - start, order="F")


def _extract(
    path: str, stamp: tuple[int, int], sel: np.ndarray, bounds: np.ndarray | None,
    start: int, stop: int,
) -> np.ndarray:
    """Rows ``start:stop`` of the voxels ``sel`` or, with ``bounds``, of their parcel means."""
    values = _volumes(path, stamp, start, stop)[sel]
    if bounds is None:
        return values.T
    sums = np.add.reduceat(values.astype(np.float64), bounds, axis=0)
    counts = np.diff(np.append(bounds, len(sel)))
    return (sums / counts[:, None]).T


def _read_rows(
    path: str, stamp: tuple[int, int], sel: np.ndarray, bounds: np.ndarray | None,
    start: int, stop: int,
) -> np.ndarray:
    """Block function of an uncleaned signal: volumes ``start:stop``, float32."""
    return _extract(path, stamp, sel, bounds, start, stop).astype(np.float32)


@dataclass(frozen=True, eq=False)
class _Cleaning:
    """Per-run cleaning by :func:`nilearn.signal.clean`; it acts on each column separately."""

    tr: float
    detrend: bool
    standardize: bool
    high_pass: float | None
    high_pass_filter: str
    confounds: np.ndarray | None

    def apply(self, series: np.ndarray) -> np.ndarray:
        from nilearn.signal import clean

        return clean(
            np.asarray(series, dtype=np.float64),
            detrend=self.detrend,
            standardize="zscore_sample" if self.standardize else None,
            confounds=self.confounds,
            filter=self.high_pass_filter if self.high_pass is not None else False,
            high_pass=self.high_pass,
            t_r=self.tr,
        )


def _read_clean_slab(
    path: str, stamp: tuple[int, int], slab: tuple[int, int, int, int], local_sel: np.ndarray,
    cleaning: _Cleaning, start: int, stop: int,
) -> np.ndarray:
    """Block function of a cleaned voxel signal: every volume of one slab, cleaned, rows
    ``start:stop``."""
    j0, j1, k0, k1 = slab
    block = np.asarray(_image(path, stamp).dataobj[:, j0:j1, k0:k1, :])
    series = block.reshape(-1, block.shape[-1], order="F")[local_sel].T
    return cleaning.apply(series)[start:stop].astype(np.float32)


def _read_clean_parcels(
    path: str, stamp: tuple[int, int], sel: np.ndarray, bounds: np.ndarray, read_rows: int,
    n_volumes: int, cleaning: _Cleaning, start: int, stop: int,
) -> np.ndarray:
    """Block function of a cleaned parcel signal: the whole run's parcel means (read
    ``read_rows`` volumes at a time), cleaned, rows ``start:stop``."""
    series = np.concatenate([
        _extract(path, stamp, sel, bounds, a, min(a + read_rows, n_volumes))
        for a in range(0, n_volumes, read_rows)
    ])  # fmt: skip
    return cleaning.apply(series)[start:stop].astype(np.float32)


def _slabs(shape3: tuple[int, int, int], n_volumes: int,
           block_bytes: int) -> list[tuple[int, int, int, int]]:
    """Split the grid into ``(j0, j1, k0, k1)`` slabs of about ``block_bytes`` over the run.

    A slab is whole ``z`` planes, or rows of one plane when a plane is too big; either way its
    voxels are one contiguous range of the file's (Fortran) voxel order.
    """
    nx, ny, nz = shape3
    lines = max(1, block_bytes // max(nx * n_volumes * 8, 1))
    if lines >= ny:
        planes = lines // ny
        return [(0, ny, k, min(k + planes, nz)) for k in range(0, nz, planes)]
    return [(j, min(j + lines, ny), k, k + 1) for k in range(nz) for j in range(0, ny, lines)]


# --------------------------------------------------------------------------------------------
# Compressed files
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def read_nifti(
    path: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | None = None,
    event_map: Mapping[str, str] | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
    atlas: str | os.PathLike | np.ndarray | None = None,
    atlas_labels: str | os.PathLike | Sequence[str] | Mapping[int, str] | None = None,
    events: str | os.PathLike | pd.DataFrame | None = None,
    confounds: str | os.PathLike | pd.DataFrame | None = None,
    confound_columns: Sequence[str] | None = None,
    detrend: bool = False,
    standardize: bool = False,
    high_pass: float | None = None,
    high_pass_filter: Literal["cosine", "butterworth"] = "cosine",
    tr: float | None = None,
    block_bytes: int = 16 << 20,
) -> xr.Dataset:
    """Read one fMRI run (a 4-D NIfTI image) as a lazy recording.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file of shape ``(x, y, z, time)``.
    subject, session, task, run : str, optional
        Identity of the recording. By default the BIDS entities of the file name when present;
        otherwise ``subject`` is the file stem reduced to letters and digits, ``session`` and
        ``run`` are ``"01"`` and ``task`` is ``"unknown"``.
    event_map : mapping of str to str, optional
        Renames event labels (raw label to new label); labels not in it are kept.
    mask : path-like, ndarray or ``"compute"``, optional
        Voxels to keep. A NIfTI file (0/1 values) on the image's grid (same spatial shape and
        affine) or a boolean array of the image's spatial shape. ``"compute"``: a brain mask from
        :func:`nilearn.masking.compute_epi_mask` applied to the mean image (computed block by
        block, without morphological opening so that thin slabs keep their voxels). ``None``:
        every voxel whose value changes over the run (constant voxels, such as the zeros
        outside the brain of masked data, carry nothing). Voxels holding NaN/Inf are kept by
        ``None`` and ``"compute"``, so that the store's check reports the file rather than the
        voxels silently disappearing. With an atlas, ``None`` keeps every labelled voxel.
    atlas : path-like or ndarray, optional
        Integer label image on the image's grid (0 = background). ``signal`` then holds the
        mean of each label's in-mask voxels (``ch_type="parcel"``), positioned at their centroid.
    atlas_labels : path-like, sequence of str or mapping of int to str, optional
        Parcel names: a BIDS ``dseg.tsv`` (columns ``index`` and ``name``), a list indexed by
        label value (entry 0 names the background) or a mapping. They name the channels and fill
        ``region``; by default channels are named ``parcel<value>``.
    events : path-like or DataFrame, optional
        A BIDS events table (``onset``, ``duration`` in seconds, ``trial_type``, optional
        ``value``). By default the ``*_events.tsv`` beside the file: the run's BIDS events file,
        or ``<prefix>_events.tsv`` where the stem is ``<prefix>_<suffix>`` (the Haxby layout:
        ``bold_events.tsv`` beside ``bold_1slice.nii.gz``), or ``<stem>_events.tsv``.
    confounds : path-like or DataFrame, optional
        Nuisance regressors, one row per volume (a TSV such as fMRIPrep's
        ``desc-confounds_timeseries.tsv``); ``n/a`` values are replaced by the column mean.
    confound_columns : sequence of str, optional
        Columns of ``confounds`` to use (default: all).
    detrend : bool
        Remove each voxel's linear trend over the run.
    standardize : bool
        Z-score each voxel's time series over the run (sample standard deviation), after the
        other cleaning steps.
    high_pass : float, optional
        High-pass cutoff in Hz.
    high_pass_filter : {"cosine", "butterworth"}
        How ``high_pass`` is applied: regression of discrete cosine drifts or a Butterworth
        filter (see :func:`nilearn.signal.clean`).
    tr : float, optional
        Repetition time in seconds. By default the ``RepetitionTime`` of the BIDS JSON sidecar
        beside the file (``<stem>.json``, authoritative in BIDS; recorded as a companion, and
        a header that disagrees is logged), else the header's (``pixdim[4]`` in its
        ``xyzt_units``).
    block_bytes : int
        Memory budget of one block read (raw volumes, or one voxel slab over the run when
        cleaning). It does not change the output.

    Returns
    -------
    xarray.Dataset
        A valid recording with modality ``"fmri"`` and units ``"a.u."``, whose ``signal`` is a
        Dask array.

    Raises
    ------
    IngestError
        If the file (or a mask, atlas, events or confounds file) is missing, not NIfTI,
        truncated, not 4-D, has no TR, or does not fit the image; the message names the file.
    """
    path = Path(path)
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be positive, got {block_bytes}")
    if high_pass_filter not in ("cosine", "butterworth"):
        raise ValueError(f"high_pass_filter must be 'cosine' or 'butterworth', "
                         f"got {high_pass_filter!r}")
    img = _open_nifti(path)
    key, stamp = str(path.resolve()), file_stamp(path)
    shape3 = tuple(int(s) for s in img.shape[:3])
    n_spatial, n_volumes = int(np.prod(shape3)), int(img.shape[3])
    affine = np.asarray(img.affine, dtype=np.float64)
    companions: dict[str, dict[str, str]] = {}
    tr_used, tr_from = _repetition_time(img, path, tr, companions)
    read_rows = max(1, block_bytes // (n_spatial * 8))
    varying, nonfinite, mean = _scan(path, key, stamp, n_spatial, n_volumes, read_rows)

    keep, mask_desc = _resolve_mask(mask, path, img, varying, nonfinite, mean, atlas is not None,
                                    companions)
    grid_ijk = np.stack(np.unravel_index(np.arange(n_spatial), shape3, order="F"), axis=1)
    if atlas is None:
        sel = np.flatnonzero(keep)
        bounds = None
        ijk = grid_ijk[sel]
        ch_names = _voxel_names(ijk)
        positions = nib.affines.apply_affine(affine, ijk)
        regions = None
        atlas_desc = labels_desc = None
    else:
        sel, bounds, values, atlas_desc = _resolve_atlas(atlas, path, img, keep, companions)
        xyz = nib.affines.apply_affine(affine, grid_ijk[sel])
        counts = np.diff(np.append(bounds, len(sel)))
        positions = np.add.reduceat(xyz, bounds, axis=0) / counts[:, None]
        names, labels_desc = _parcel_names(atlas_labels, values, path, companions)
        ch_names = names or [f"parcel{v}" for v in values]
        regions = names

    ev, events_desc = _load_events(events, path, n_volumes, tr_used, event_map, companions)
    conf, conf_desc = _load_confounds(confounds, confound_columns, path, n_volumes, companions)
    if high_pass is not None and not 0 < high_pass < 0.5 / tr_used:
        raise IngestError(path, f"high_pass {high_pass} Hz must lie between 0 and the Nyquist "
                                f"frequency {0.5 / tr_used:g} Hz of its TR ({tr_used:g} s)")
    cleaning = None
    if detrend or standardize or high_pass is not None or conf is not None:
        cleaning = _Cleaning(tr_used, bool(detrend), bool(standardize),
                             None if high_pass is None else float(high_pass), high_pass_filter,
                             conf)

    src = source_info(path, _READER, nib.__version__,
                      **({"companions": companions} if companions else {}))
    name = "read_nifti-" + tokenize(src["sha256"], sel, bounds, cleaning, block_bytes)
    signal = _signal(key, stamp, sel, bounds, shape3, n_volumes, read_rows, block_bytes,
                     cleaning, name)
    params: dict[str, Any] = {
        "mask": mask_desc, "atlas": atlas_desc, "atlas_labels": labels_desc,
        "events": events_desc, "event_map": dict(event_map) if event_map else None,
        "confounds": conf_desc,
        "confound_columns": list(confound_columns) if confound_columns is not None else None,
        "detrend": bool(detrend), "standardize": bool(standardize),
        "high_pass": None if high_pass is None else float(high_pass),
        "high_pass_filter": high_pass_filter if high_pass is not None else None,
        "tr": tr_used, "tr_from": tr_from,
    }
    if cleaning is not None:
        import nilearn

        params["cleaning"] = f"nilearn.signal.clean per run (nilearn {nilearn.__version__})"
    ident = recording_identity(path, subject=subject, session=session, task=task, run=run,
                               stem=_stem(path.name))
    ds = make_recording(
        signal,
        sfreq=1.0 / tr_used,
        ch_names=ch_names,
        ch_types="voxel" if atlas is None else "parcel",
        units="a.u.",
        modality="fmri",
        positions=positions,
        coord_frame=_coord_frame(img),
        regions=regions,
        events=ev,
        source=src,
        history=[{"step": _READER, "params": params,
                  **({"scope": "recording"} if cleaning is not None else {})}],
        extra_attrs={"affine": affine.tolist(), "spatial_shape": list(shape3)},
        **ident,
    )
    return validate(ds, where=str(path))


def _signal(
    key: str, stamp: tuple[int, int], sel: np.ndarray, bounds: np.ndarray | None,
    shape3: tuple[int, int, int], n_volumes: int, read_rows: int, block_bytes: int,
    cleaning: _Cleaning | None, name: str,
) -> da.Array:
    """The lazy ``(time, channel)`` signal: raw row blocks, or cleaned voxel slabs/parcels."""
    n_ch = len(sel) if bounds is None else len(bounds)
    shape = (n_volumes, n_ch)
    if cleaning is None:
        return blockwise_array(partial(_read_rows, key, stamp, sel, bounds), shape, np.float32,
                               chunk_rows=read_rows, name=name)
    out_rows = max(1, _CLEAN_ROWS_FACTOR * block_bytes // (4 * n_ch))
    if bounds is not None:
        fn = partial(_read_clean_parcels, key, stamp, sel, bounds, read_rows, n_volumes, cleaning)
        return blockwise_array(fn, shape, np.float32, chunk_rows=out_rows, name=name)
    nx, ny, _ = shape3
    parts = []
    for g, slab in enumerate(_slabs(shape3, n_volumes, block_bytes)):
        j0, j1, k0, k1 = slab
        base, end = nx * (j0 + ny * k0), nx * (j1 + ny * (k1 - 1))
        lo, hi = np.searchsorted(sel, [base, end])
        if hi > lo:
            fn = partial(_read_clean_slab, key, stamp, slab, sel[lo:hi] - base, cleaning)
            parts.append(blockwise_array(fn, (n_volumes, int(hi - lo)), np.float32,
                                         chunk_rows=out_rows, name=f"{name}-slab{g}"))
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=1)


def _voxel_names(ijk: np.ndarray) -> np.ndarray:
    """``v{i}_{j}_{k}`` for each row of voxel indices (vectorised: fMRI has ~10^5 voxels)."""
    i, j, k = ijk.astype("U11").T
    add = np.strings.add
    return add(add(add(add("v", i), "_"), add(j, "_")), k)


def _open_nifti(path: Path) -> nib.Nifti1Image:
    """Open the image (cached), checking that it is a readable 4-D real-valued NIfTI."""
    if not path.exists():
        raise IngestError(path, "does not exist")
    if not path.is_file():
        raise IngestError(path, "is not a file (a .nii or .nii.gz image is needed)")
    if not path.name.lower().endswith(_NIFTI_SUFFIXES):
        raise IngestError(path, "is not a NIfTI file: the name must end in .nii or .nii.gz")
    check_if_gzip(path)
    try:
        img = _image(str(path.resolve()), file_stamp(path))
    except Exception as err:  # nibabel, gzip and zlib raise many types for bad bytes
        raise IngestError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    if not isinstance(img, nib.Nifti1Image):
        raise IngestError(path, f"is read by nibabel as {type(img).__name__}, not NIfTI")
    if len(img.shape) != 4:
        raise IngestError(path, f"is a {len(img.shape)}-D image of shape {img.shape}; a 4-D "
                                "time series (x, y, z, time) is needed")
    dtype = img.get_data_dtype()
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) \
            or np.issubdtype(dtype, np.complexfloating):
        raise IngestError(path, f"holds {dtype} samples; real numbers are needed")
    if img.shape[3] < 1 or 0 in img.shape[:3]:
        raise IngestError(path, f"holds no data (shape {img.shape})")
    return img


def _repetition_time(
    img: nib.Nifti1Image, path: Path, tr: float | None, companions: dict[str, dict[str, str]],
) -> tuple[float, str]:
    """The TR in seconds and where it came from (``"argument"``, ``"sidecar"``, ``"header"``)."""
    if tr is not None:
        if not (isinstance(tr, int | float) and math.isfinite(tr) and tr > 0):
            raise IngestError(path, f"tr must be a positive number of seconds, got {tr!r}")
        return float(tr), "argument"
    raw = float(img.header.get_zooms()[3])
    unit = img.header.get_xyzt_units()[1]
    header = raw * _TIME_UNITS[unit] if unit in _TIME_UNITS and math.isfinite(raw) else math.nan
    sidecar = path.with_name(_stem(path.name) + ".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            raise IngestError(sidecar, f"is not valid JSON ({err})") from err
        value = meta.get("RepetitionTime") if isinstance(meta, dict) else None
        if value is not None:
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise IngestError(sidecar, f"RepetitionTime must be a positive number of "
                                           f"seconds, got {value!r}")
            if header > 0 and abs(header - value) > 1e-3 * value:
                logger.warning("%s: the header's TR (%g s) differs from RepetitionTime %g s of "
                               "%s; using the sidecar's", path, header, value, sidecar)
            companions["sidecar"] = companion_info(sidecar)
            return float(value), "sidecar"
    if unit not in _TIME_UNITS:
        raise IngestError(path, f"its time axis is in {unit!r}, not a time unit; pass tr= "
                                "(seconds)")
    if not header > 0:
        raise IngestError(path, f"has no repetition time (pixdim[4] = {raw:g}); pass tr= "
                                "(seconds)")
    return header, "header"


def _scan(
    path: Path, key: str, stamp: tuple[int, int], n_spatial: int, n_volumes: int, rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the run once, block by block: which voxels vary or hold NaN/Inf, and the mean image.

    Reading to the end is also what proves that the file is complete.
    """
    varying = np.zeros(n_spatial, dtype=bool)
    nonfinite = np.zeros(n_spatial, dtype=bool)
    total = np.zeros(n_spatial, dtype=np.float64)
    first = None
    try:
        for start in range(0, n_volumes, rows):
            block = _volumes(key, stamp, start, min(start + rows, n_volumes))
            if first is None:
                first = block[:, :1].copy()
            varying |= (block != first).any(axis=1)
            nonfinite |= ~np.isfinite(block).all(axis=1)
            total += block.sum(axis=1, dtype=np.float64)
    except Exception as err:  # truncated gzip streams and short files surface as many types
        raise IngestError(path, f"cannot be read to the end, the file is truncated or corrupt "
                                f"({type(err).__name__}: {err})") from err
    return varying, nonfinite, total / n_volumes


def _load_grid_image(
    source: str | os.PathLike | np.ndarray, role: str, path: Path, img: nib.Nifti1Image,
    companions: dict[str, dict[str, str]],
) -> tuple[np.ndarray, Path | None, str]:
    """A 3-D mask or atlas on the image's grid, its file (if any) and a description."""
    shape3 = tuple(img.shape[:3])
    if isinstance(source, np.ndarray):
        data = source
        if data.shape != shape3:
            raise IngestError(path, f"the {role} array has shape {data.shape} but the image "
                                    f"{path} has spatial shape {shape3}")
        digest = hashlib.sha256(np.ascontiguousarray(data).view(np.uint8).data).hexdigest()
        return data, None, f"array sha256:{digest}"
    other = Path(source)
    if not other.is_file():
        raise IngestError(other, f"the {role} file does not exist")
    check_if_gzip(other)
    try:
        other_img = nib.load(other)
        data = np.asanyarray(other_img.dataobj)
    except Exception as err:  # nibabel raises many types for bad bytes
        raise IngestError(other, f"the {role} cannot be read as an image "
                                 f"({type(err).__name__}: {err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != shape3:
        raise IngestError(other, f"the {role} {other} has shape {data.shape} but the image "
                                 f"{path} has spatial shape {shape3}")
    if not np.allclose(other_img.affine, img.affine, rtol=0, atol=1e-3):
        raise IngestError(other, f"the {role} {other} (shape {data.shape}) is not on the grid "
                                 f"of the image {path} (shape {shape3}): their affines differ "
                                 f"({np.round(other_img.affine, 4).tolist()} vs "
                                 f"{np.round(img.affine, 4).tolist()})")
    companions[role] = companion_info(other)
    return data, other, str(other.resolve())


def _resolve_mask(
    mask: str | os.PathLike | np.ndarray | None, path: Path, img: nib.Nifti1Image,
    varying: np.ndarray, nonfinite: np.ndarray, mean: np.ndarray, has_atlas: bool,
    companions: dict[str, dict[str, str]],
) -> tuple[np.ndarray, str]:
    """The voxels to keep, as a flat boolean array in file order, and a description."""
    shape3 = tuple(img.shape[:3])
    if mask is None:
        if has_atlas:
            return np.ones_like(varying), "all"
        keep, desc = varying | nonfinite, "varying"
        if not keep.any():
            raise IngestError(path, "no voxel changes over the run, so the default mask "
                                    "(voxels that vary) is empty; pass mask=")
        return keep, desc
    if isinstance(mask, str) and mask == "compute":
        from nilearn.masking import compute_epi_mask

        mean_img = nib.Nifti1Image(np.nan_to_num(mean.reshape(shape3, order="F")), img.affine)
        try:
            epi = np.asarray(compute_epi_mask(mean_img, opening=False).dataobj, dtype=bool)
        except Exception as err:  # nilearn raises ValueError and others on degenerate images
            raise IngestError(path, f"no brain mask can be computed from its mean image "
                                    f"({type(err).__name__}: {err}); pass mask=") from err
        keep = epi.ravel(order="F") | nonfinite
        if not keep.any():
            raise IngestError(path, "the brain mask computed from its mean image is empty")
        return keep, "compute_epi_mask(mean image, opening=False)"
    data, other, desc = _load_grid_image(mask, "mask", path, img, companions)
    where = other or path
    if data.dtype != bool:
        values = np.unique(data)
        if not np.isin(values, [0, 1]).all():
            raise IngestError(where, f"the mask holds values other than 0 and 1 "
                                     f"({values[~np.isin(values, [0, 1])][:5].tolist()}...)")
    keep = np.asarray(data, dtype=bool).ravel(order="F")
    if not keep.any():
        raise IngestError(where, f"the mask selects no voxel of the image {path}")
    return keep, desc


def _resolve_atlas(
    atlas: str | os.PathLike | np.ndarray, path: Path, img: nib.Nifti1Image, keep: np.ndarray,
    companions: dict[str, dict[str, str]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """In-mask labelled voxels sorted by label, where each label starts, the labels, a
    description."""
    data, other, desc = _load_grid_image(atlas, "atlas", path, img, companions)
    where = other or path
    flat = np.asarray(data).ravel(order="F")
    if not np.issubdtype(flat.dtype, np.number) or not np.isfinite(flat).all() \
            or (flat < 0).any() or (np.mod(flat, 1) != 0).any():
        raise IngestError(where, "the atlas must hold non-negative integer labels "
                                 "(0 = background)")
    labels = flat.astype(np.int64)
    cand = np.flatnonzero((labels > 0) & keep)
    if cand.size == 0:
        raise IngestError(where, f"the atlas has no labelled voxel inside the mask of {path}")
    sel = cand[np.argsort(labels[cand], kind="stable")]
    values, bounds = np.unique(labels[sel], return_index=True)
    return sel, bounds, values, desc


def _parcel_names(
    atlas_labels: str | os.PathLike | Sequence[str] | Mapping[int, str] | None,
    values: np.ndarray, path: Path, companions: dict[str, dict[str, str]],
) -> tuple[list[str] | None, str | None]:
    """Names of the parcels ``values`` from ``atlas_labels`` and a description of it."""
    if atlas_labels is None:
        return None, None
    where: Path = path
    if isinstance(atlas_labels, str | os.PathLike):
        where = Path(atlas_labels)
        if not where.is_file():
            raise IngestError(where, "the atlas_labels file does not exist")
        check_if_gzip(where)
        try:
            table = pd.read_csv(where, sep="\t", keep_default_na=False)
        except Exception as err:  # pandas parser errors
            raise IngestError(where, f"cannot be read as a TSV table ({err})") from err
        if not {"index", "name"} <= set(table.columns):
            raise IngestError(where, "atlas_labels needs the columns 'index' and 'name' (BIDS "
                                     f"dseg.tsv); it has {list(table.columns)}")
        lookup = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
        companions["atlas_labels"] = companion_info(where)
        desc = str(where.resolve())
    elif isinstance(atlas_labels, Mapping):
        lookup = {int(k): str(v) for k, v in atlas_labels.items()}
        desc = "mapping"
    else:
        lookup = {i: str(n) for i, n in enumerate(atlas_labels)}
        desc = "list"
    missing = [int(v) for v in values if int(v) not in lookup]
    if missing:
        raise IngestError(where, f"atlas_labels names no parcel for label value(s) {missing[:10]}")
    return [lookup[int(v)] for v in values], desc


def _load_events(
    events: str | os.PathLike | pd.DataFrame | None, path: Path, n_volumes: int, tr: float,
    event_map: Mapping[str, str] | None, companions: dict[str, dict[str, str]],
) -> tuple[pd.DataFrame | None, str | None]:
    """The run's events (onset, duration, label, value) and a description of their source."""
    if events is None:
        found = _events_beside(path)
        if found is None:
            return None, None
        events = found
    frame = read_events_table(events, event_map=event_map, where=path)
    where = path if isinstance(events, pd.DataFrame) else Path(events)
    if not isinstance(events, pd.DataFrame):
        companions["events"] = companion_info(where)
    onset, duration, label = frame["onset"], frame["duration"], frame["label"]
    run_end = n_volumes * tr
    outside = ((onset < 0) | (onset + duration > run_end + 1e-6 * max(1.0, run_end))).to_numpy()
    if outside.any():
        i = int(np.argmax(outside))
        raise IngestError(where, f"{int(outside.sum())} event(s) lie outside the run of {path} "
                                 f"(0 to {run_end:g} s: {n_volumes} volumes of {tr:g} s), e.g. "
                                 f"{label.iloc[i]!r} at {onset.iloc[i]:g} s lasting "
                                 f"{duration.iloc[i]:g} s")
    return frame, events_source(events)


def _load_confounds(
    confounds: str | os.PathLike | pd.DataFrame | None, columns: Sequence[str] | None,
    path: Path, n_volumes: int, companions: dict[str, dict[str, str]],
) -> tuple[np.ndarray | None, str | None]:
    """Confound regressors as a ``(n_volumes, n_confounds)`` float array, and their source."""
    if confounds is None:
        if columns is not None:
            raise IngestError(path, "confound_columns were given without a confounds table")
        return None, None
    if isinstance(confounds, pd.DataFrame):
        where, table = path, confounds
        desc = f"DataFrame sha256:{frame_digest(confounds)}"
    else:
        where = Path(confounds)
        table = read_tsv(where, "confounds")
        companions["confounds"] = companion_info(where)
        desc = str(where.resolve())
    if columns is not None:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise IngestError(where, f"the confounds table lacks column(s) {missing}")
        table = table[list(columns)]
    if table.shape[1] == 0:
        raise IngestError(where, "the confounds table has no column")
    if len(table) != n_volumes:
        raise IngestError(where, f"the confounds table has {len(table)} rows but the image "
                                 f"{path} has {n_volumes} volumes; one row per volume is needed")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = [c for c in table.columns if numeric[c].isna().sum() > table[c].isna().sum()]
    if bad:
        raise IngestError(where, f"confound column(s) {bad[:10]} hold non-numeric values")
    empty = [c for c in numeric.columns if numeric[c].isna().all()]
    if empty:
        raise IngestError(where, f"confound column(s) {empty[:10]} hold only n/a")
    values = numeric.fillna(numeric.mean()).to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise IngestError(where, "the confounds hold infinite values")
    return values, desc


def _coord_frame(img: nib.Nifti1Image) -> str:
    """Name of the world frame of ``img.affine`` from the sform (else qform) code."""
    code = int(img.header["sform_code"]) or int(img.header["qform_code"])
    return str(nib.nifti1.xform_codes.label.get(code, "unknown"))


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _run_prefix(stem: str) -> str:
    """The run-level BIDS entities of a stem (``sub-01_task-x_run-1``), without ``space``..."""
    return "_".join(p for p in stem.split("_") if p.split("-", 1)[0] in _RUN_ENTITIES)


def _events_beside(path: Path) -> Path | None:
    """The events file of a run: BIDS name, ``<prefix>_events.tsv`` or ``<stem>_events.tsv``."""
    stem = _stem(path.name)
    candidates = []
    if bids_entities(path).get("subject"):
        candidates.append(_run_prefix(stem) + "_events.tsv")
    if "_" in stem:
        candidates.append(stem.rsplit("_", 1)[0] + "_events.tsv")
    candidates.append(stem + "_events.tsv")
    for name in candidates:
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _confounds_beside(path: Path) -> Path | None:
    prefix = _run_prefix(_stem(path.name))
    for suffix in _CONFOUND_SUFFIXES:
        if (path.parent / (prefix + suffix)).is_file():
            return path.parent / (prefix + suffix)
    return None


# --------------------------------------------------------------------------------------------
# Labels per volume
# --------------------------------------------------------------------------------------------


def events_to_volumes(events: pd.DataFrame, tr: float, n_volumes: int,
                      delay: float = 0.0) -> np.ndarray:
    """Label every volume with the event it was acquired in, for volume-wise decoding.

    Volume ``v`` is taken at ``v * tr`` seconds. An event of positive duration labels the
    volumes taken in ``[onset + delay, onset + delay + duration)``; an instantaneous event
    labels the one volume whose interval ``[v * tr, (v + 1) * tr)`` holds ``onset + delay``.
    Where events overlap, the later onset wins.

    Parameters
    ----------
    events : DataFrame
        Columns ``onset``, ``duration`` and ``label`` (as :func:`neurodecode.schema.events_frame`
        returns) or ``trial_type`` (a BIDS events table).
    tr : float
        Repetition time in seconds.
    n_volumes : int
        Number of volumes of the run.
    delay : float
        Haemodynamic delay in seconds added to every onset (e.g. 4 to 6 s for BOLD).

    Returns
    -------
    ndarray of str, shape (n_volumes,)
        The label of each volume; ``""`` where no event applies.
    """
    if not tr > 0 or n_volumes < 0:
        raise ValueError(f"tr must be positive and n_volumes non-negative, got {tr}, {n_volumes}")
    column = "label" if "label" in events else "trial_type"
    missing = sorted({"onset", "duration", column} - set(events.columns))
    if missing:
        raise ValueError(f"the events table lacks column(s) {missing}")
    ordered = events.sort_values("onset", kind="stable")
    out = np.full(n_volumes, "", dtype=object)
    times = np.arange(n_volumes) * float(tr)
    eps = 1e-6 * float(tr)
    for onset, duration, label in zip(ordered["onset"], ordered["duration"], ordered[column],
                                      strict=True):
        start = float(onset) + delay
        if duration > 0:
            out[(times >= start - eps) & (times < start + float(duration) - eps)] = str(label)
        else:
            v = math.floor((start + eps) / tr)
            if 0 <= v < n_volumes:
                out[v] = str(label)
    return out.astype(str)


# --------------------------------------------------------------------------------------------
# BIDS
# --------------------------------------------------------------------------------------------


def list_bids_func(bids_root: str | os.PathLike) -> list[dict[str, Any]]:
    """List the BOLD runs of a BIDS dataset (its ``func/`` folders, derivatives included).

    Parameters
    ----------
    bids_root : path-like
        Root of the BIDS dataset.

    Returns
    -------
    list of dict
        One per ``*_bold.nii[.gz]`` file, sorted by path, holding the keyword arguments of
        :func:`read_bids_func` that single it out, so that ``read_bids_func(**entry)`` reads
        it: ``bids_root``, ``subject``, ``session``, ``task``, ``run``, ``acquisition``,
        ``space``, ``description`` (``None`` when absent) and ``events`` (the run's
        ``events.tsv`` beside it, or ``None``). The data file itself is
        ``neurodecode.ingest.folders.expand_source(bids_root)``'s ``Source.path``.

    Raises
    ------
    IngestError
        If ``bids_root`` is not a folder.
    """
    root = Path(bids_root)
    return [{"bids_root": str(root), **{k: v for k, v in r.items() if k in _ENTRY_KEYS}}
            for r in _bold_runs(root)]


#: The keys of a :func:`list_bids_func` entry besides ``bids_root``.
_ENTRY_KEYS = ("subject", "session", "task", "run", "acquisition", "space", "description",
               "events")


def _bold_runs(root: Path) -> list[dict[str, Any]]:
    """Every BOLD run under ``root``: its ``path``, entities, ``events`` and ``confounds``."""
    if not root.is_dir():
        raise IngestError(root, "is not a folder (a BIDS dataset root is needed)")
    runs = []
    for p in sorted(root.rglob("*_bold.nii*")):
        if not (_BOLD_NAME.search(p.name) and p.parent.name == "func" and p.is_file()):
            continue
        ents = bids_entities(p)
        if not ents.get("subject") or not ents.get("task"):
            continue
        events, confounds = _events_beside(p), _confounds_beside(p)
        runs.append({
            "path": str(p),
            **{k: ents.get(k) for k in ("subject", "session", "task", "run", "acquisition",
                                        "space", "description")},
            "events": str(events) if events else None,
            "confounds": str(confounds) if confounds else None,
        })  # fmt: skip
    return runs


def _same_label(a: str | None, b: str) -> bool:
    if a is None:
        return False
    a, b = str(a), str(b)
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def read_bids_func(
    bids_root: str | os.PathLike,
    *,
    subject: str,
    task: str,
    run: str | None = None,
    session: str | None = None,
    space: str | None = None,
    acquisition: str | None = None,
    description: str | None = None,
    confound_columns: Sequence[str] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Read one BOLD run of a BIDS dataset with its events (and optionally confounds).

    Parameters
    ----------
    bids_root : path-like
        Root of the BIDS dataset.
    subject, task : str
        Entities of the run (without ``sub-``/``task-``).
    run, session : str, optional
        Needed when they are required to single out one file; ``"1"`` matches ``"01"``.
    space : str, optional
        ``space`` entity of preprocessed derivatives (e.g. ``"MNI152NLin2009cAsym"``). ``None``
        selects files without a ``space`` entity (raw data).
    acquisition, description : str, optional
        ``acq`` and ``desc`` entities, when they are needed to single out one file.
    confound_columns : sequence of str, optional
        Columns of the run's ``*_desc-confounds_timeseries.tsv`` (fMRIPrep) to regress out.
    **kwargs
        Passed to :func:`read_nifti` (``mask``, ``atlas``, ``detrend``, ``event_map``...); an
        explicit ``events`` or ``confounds`` replaces the one found beside the file.

    Returns
    -------
    xarray.Dataset
        The recording, its identity taken from the file's entities.

    Raises
    ------
    IngestError
        If no file or more than one file matches, or a requested confounds file is missing.
    """
    root = Path(bids_root)
    runs = _bold_runs(root)
    matches = [
        r for r in runs
        if r["subject"] == str(subject) and r["task"] == str(task)
        and (run is None or _same_label(r["run"], run))
        and (session is None or _same_label(r["session"], session))
        and r["space"] == (None if space is None else str(space))
        and (acquisition is None or r["acquisition"] == str(acquisition))
        and (description is None or r["description"] == str(description))
    ]  # fmt: skip
    wanted = " ".join(f"{key}-{value}" for key, value in (
        ("sub", subject), ("task", task), ("run", run), ("ses", session), ("space", space),
        ("acq", acquisition), ("desc", description)) if value is not None)
    if not matches:
        have = sorted({Path(r["path"]).name for r in runs})
        raise IngestError(root, f"no BOLD run matches {wanted}; the dataset has "
                                f"{have[:20] or 'no *_bold.nii[.gz] file in a func/ folder'}")
    if len(matches) > 1:
        names = [Path(r["path"]).name for r in matches]
        raise IngestError(root, f"{len(matches)} BOLD runs match {wanted}: {names[:20]}; pass "
                                "run=, session=, space=, acquisition= or description= to "
                                "single one out")
    entry = matches[0]
    bold = Path(entry["path"])
    if confound_columns is not None and "confounds" not in kwargs:
        if entry["confounds"] is None:
            raise IngestError(bold, "confound_columns were given but there is no "
                                    "*_desc-confounds_timeseries.tsv beside it")
        kwargs["confounds"] = entry["confounds"]
    if "events" not in kwargs and entry["events"] is not None:
        kwargs["events"] = entry["events"]
    identity = {"subject": entry["subject"], "task": entry["task"],
                "session": entry["session"] or "01", "run": entry["run"] or "01"}
    return read_nifti(bold, confound_columns=confound_columns, **identity, **kwargs)
