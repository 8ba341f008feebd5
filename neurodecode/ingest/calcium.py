"""Readers for calcium imaging: TIFF movies, suite2p outputs, NWB ophys files and trace arrays.

Every reader returns a recording (see :mod:`neurodecode.schema`) of modality ``"calcium"`` with
one channel per region of interest (``ch_type`` ``"roi"``), one sample per imaging frame, and
``signal`` as a lazy Dask array whose blocks reopen the source file (so the graph runs on any
``dask.distributed`` worker). A TIFF movie is kept, lazily too, as ``movie``.

ΔF/F
----
Fluorescence traces ``F`` become ``(F - F0) / F0`` where the baseline ``F0`` is a running low
percentile of ``F`` (by default the 8th percentile over a centred 60 s window, clamped to the
recording length; the trace is extended by its edge values beyond both ends). The baseline follows
slow drifts (bleaching, focus) while ignoring transients, which sit above it. Where ``F0`` is not
positive ΔF/F is undefined and set to NaN, which :func:`neurodecode.store.write_recording`
rejects, naming the source. See :func:`delta_f_over_f`; it is computed block by block with an
overlap of half a window, so it never needs the whole trace matrix in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import tifffile
import xarray as xr
from dask.base import tokenize

from ..schema import make_recording, validate
from .base import (
    IngestError,
    blockwise_array,
    check_gzip,
    companion_info,
    file_sha256,
    file_stamp,
    read_table_columns,
    recording_identity,
    refuse_event_map,
    snake_case,
    source_info,
)

__all__ = [
    "delta_f_over_f",
    "read_nwb_ophys",
    "read_suite2p",
    "read_tiff_movie",
    "read_trace_array",
]

_MODULE = "neurodecode.ingest.calcium"
_DEFAULT_TASK = "imaging"

# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def delta_f_over_f(
    traces: Any, fs: float, *, window_s: float = 60.0, percentile: float = 8.0
) -> da.Array:
    """Return ΔF/F of fluorescence traces against a running-percentile baseline, lazily.

    ``F0[t]`` is the ``percentile``-th percentile of ``F`` over the ``round(window_s * fs)``
    frames centred on ``t`` (at most the whole recording; edge values repeat beyond both ends, as
    :func:`scipy.ndimage.percentile_filter` with ``mode="nearest"``), and the result is
    ``(F - F0) / F0``, NaN where ``F0 <= 0``.

    Parameters
    ----------
    traces : array-like, shape (n_times, n_rois)
        Fluorescence, NumPy or Dask.
    fs : float
        Frame rate in Hz.
    window_s : float
        Length of the baseline window in seconds.
    percentile : float
        Percentile (0-100) of the window taken as baseline.

    Returns
    -------
    dask.array.Array
        float32 ΔF/F with the shape of ``traces``, computed block by block with an overlap of half
        a window.
    """
    if not (window_s > 0 and 0 <= percentile <= 100):
        raise ValueError(f"need window_s > 0 and 0 <= percentile <= 100, got {window_s}, "
                         f"{percentile}")
    arr = traces if isinstance(traces, da.Array) else da.from_array(np.asarray(traces))
    n_times = int(arr.shape[0])
    window = int(min(max(1, round(window_s * fs)), max(n_times, 1)))
    depth = window // 2
    arr = arr.rechunk({1: -1})
    return arr.map_overlap(
        _dff_block,
        depth={0: depth, 1: 0},
        boundary="nearest",
        window=window,
        percentile=float(percentile),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )


def _dff_block(block: np.ndarray, window: int, percentile: float) -> np.ndarray:
    f = np.asarray(block, dtype=np.float64)
    f0 = np.empty_like(f)
    for j in range(f.shape[1]):  # 1-D filters use SciPy's fast running-rank algorithm
        f0[:, j] = ndi.percentile_filter(np.ascontiguousarray(f[:, j]), percentile, size=window,
                                         mode="nearest")
    out = np.full(f.shape, np.nan)
    np.divide(f - f0, f0, out=out, where=f0 > 0)
    return out.astype(np.float32)


def _apply_dff(traces: da.Array, dff: str | None, fs: float, window_s: float,
               percentile: float) -> tuple[da.Array, str]:
    """ΔF/F (units ``dF/F``) or the raw traces (``a.u.``), as ``dff`` says."""
    if dff is None:
        return traces, "a.u."
    if dff != "percentile":
        raise ValueError(f"dff must be 'percentile' or None, got {dff!r}")
    return delta_f_over_f(traces, fs, window_s=window_s, percentile=percentile), "dF/F"


def _check_fs(path: Path, fs: float | None, hint: str) -> float:
    if fs is None:
        raise IngestError(path, f"the frame rate is unknown: {hint}; pass fs=<frames per second>")
    if not (isinstance(fs, int | float) and math.isfinite(fs) and fs > 0):
        raise IngestError(path, f"the frame rate must be a positive number of Hz, got {fs!r}")
    return float(fs)


def _roi_names(n: int, ids: Sequence[Any] | None = None) -> list[str]:
    ids = list(range(n)) if ids is None else list(ids)
    width = max(3, len(str(max((int(i) for i in ids), default=0))))
    return [f"roi{int(i):0{width}d}" for i in ids]


# --------------------------------------------------------------------------------------------
# TIFF movies
# --------------------------------------------------------------------------------------------

_TIFF_LOCK = threading.Lock()
#: Frame axes accepted as time: T (time), I (a plain page sequence), Q (an unnamed shaped axis).
_TIME_AXES = "TIQ"
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
               "min": 60.0, "minute": 60.0, "minutes": 60.0}
_DAMAGE_WORDS = ("invalid", "failed", "truncat", "corrupt")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs while it parses a file (it logs damage, it does not raise)."""
    logger = logging.getLogger("tifffile")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@lru_cache(maxsize=8)
def _tiff_source(path: str, stamp: tuple[int, int], shape: tuple[int, int, int]) -> Any:
    """Open a TIFF once per process: a read-only memory map when its frames are stored
    contiguously and uncompressed, else the open :class:`tifffile.TiffFile` (read by pages)."""
    tif = tifffile.TiffFile(path)
    if tif.series[0].dataoffset is not None:
        tif.close()
        return tifffile.memmap(path, series=0, mode="r").reshape(shape)
    return tif


def _tiff_frames(path: str, stamp: tuple[int, int], shape: tuple[int, int, int], start: int,
                 stop: int) -> np.ndarray:
    """Frames ``start:stop`` of a TIFF movie (only those pages are read)."""
    src = _tiff_source(path, stamp, shape)
    if isinstance(src, np.ndarray):
        return np.array(src[start:stop])
    with _TIFF_LOCK:
        frames = src.asarray(key=range(start, stop), series=0, maxworkers=1)
    return np.asarray(frames).reshape(stop - start, *shape[1:])


def _inspect_tiff(path: Path) -> tuple[tuple[int, int, int], np.dtype, float | None, str]:
    """Shape, dtype and frame rate (with where it came from) of a TIFF movie, checked."""
    try:
        with _tifffile_warnings() as messages, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise IngestError(path, "holds no image series")
            series = tif.series[0]
            shape, axes, dtype = tuple(int(s) for s in series.shape), series.axes, series.dtype
            damage = [m for m in messages if any(w in m.lower() for w in _DAMAGE_WORDS)]
            if damage:
                raise IngestError(path, f"is damaged or truncated (tifffile: {damage[0]})")
            if series.size == 0:
                raise IngestError(path, f"is an empty movie: it holds no frames (shape {shape})")
            if len(shape) == 2:
                raise IngestError(path, f"holds a single {shape[0]}x{shape[1]} image, not a movie "
                                        "(expected frames x height x width, axes TYX)")
            if len(shape) != 3 or axes[0] not in _TIME_AXES or axes[1:] != "YX":
                raise IngestError(path, f"has axes {axes!r} (shape {shape}); a calcium movie "
                                        "needs one time axis and two image axes (TYX)")
            if dtype.kind not in "iuf":
                raise IngestError(path, f"holds {dtype} pixels; expected integers or floats")
            _check_tiff_extent(path, series, shape)
            fs, origin = _tiff_frame_rate(path, tif)
    except IngestError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as err:
        raise IngestError(path, f"is not a readable TIFF movie ({err})") from err
    return shape, dtype, fs, origin  # type: ignore[return-value]


def _check_tiff_extent(path: Path, series: Any, shape: tuple[int, ...]) -> None:
    """Fail when the frames the header promises lie (partly) beyond the end of the file."""
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = int(series.dataoffset) + int(series.nbytes)
        if end > size:
            raise IngestError(path, f"is truncated: its {shape[0]} frames need {end} bytes but "
                                    f"the file has {size}")
        return
    pages = list(series.pages)
    if len(pages) != shape[0] or any(p is None for p in pages):
        raise IngestError(path, f"has {len(pages)} readable pages for {shape[0]} frames; "
                                "one page per frame is needed to read frames lazily")
    for i, page in enumerate(pages):
        ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts,
                                                  strict=True)]
        if max(ends, default=0) > size:
            raise IngestError(path, f"is truncated: frame {i} ends at byte {max(ends)} but the "
                                    f"file has {size}")


def _tiff_frame_rate(path: Path, tif: Any) -> tuple[float | None, str]:
    """Frame rate from ImageJ (``finterval``/``fps``) or ScanImage metadata, if any."""
    ij = tif.imagej_metadata or {}
    if ij.get("finterval"):
        unit = str(ij.get("tunit", "sec")).strip().lower()
        if unit not in _TIME_UNITS:
            raise IngestError(path, f"ImageJ frame interval has an unknown time unit {unit!r}")
        return 1.0 / (float(ij["finterval"]) * _TIME_UNITS[unit]), "imagej finterval"
    if ij.get("fps"):
        return float(ij["fps"]), "imagej fps"
    if tif.is_scanimage:
        return _scanimage_rate(path, tif), "scanimage"
    return None, ""


def _scanimage_rate(path: Path, tif: Any) -> float | None:
    """ScanImage frame rate (versions 3 to 2016+); interleaved channels or planes are refused."""
    meta = dict((tif.scanimage_metadata or {}).get("FrameData", {}))
    page = tif.pages.first
    for text in (page.software, page.description):
        if text and ("SI." in text or "state." in text):
            try:
                parsed = tifffile.matlabstr2py(text)
            except (ValueError, SyntaxError, IndexError):
                continue
            if isinstance(parsed, dict):
                meta.update(parsed)
    rate = channels = slices = None
    for key, value in meta.items():
        if key.endswith("scanFrameRate") or key == "state.acq.frameRate":
            rate = float(value)
        elif key.endswith(("channelSave", "channelsSave")):
            channels = int(np.size(value))
        elif key == "state.acq.numberOfChannelsSave":
            channels = int(value)
        elif key.endswith(("numSlices", "stackNumSlices")) or key == "state.acq.numberOfZSlices":
            slices = int(value) if slices is None else slices
    actual = next((v for k, v in meta.items() if k.endswith("actualNumSlices")), None)
    slices = int(actual) if actual is not None else slices  # what was acquired, when recorded
    if (channels or 1) > 1 or (slices or 1) > 1:
        raise IngestError(path, f"is a ScanImage file with {channels or 1} saved channel(s) and "
                                f"{slices or 1} plane(s) interleaved in its pages; split it into "
                                "one movie per channel and plane first")
    return rate


def _load_rois(rois: Any, path: Path, frame_shape: tuple[int, int]) -> tuple[np.ndarray, Any]:
    """ROI weights (n_rois, H, W) float32 from an array or a .npy file, and their provenance."""
    where = path
    provenance: Any
    if isinstance(rois, str | os.PathLike):
        where = Path(rois)
        try:
            arr = np.load(where, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise IngestError(where, f"cannot be read as an array of ROI masks ({err})") from err
        provenance = companion_info(where)
    else:
        arr = np.asarray(rois)
        provenance = {"sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
                      "shape": list(arr.shape)}
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype.kind not in "biuf":
        raise IngestError(where, f"ROI masks must be a numeric array (n_rois, height, width), "
                                 f"got {arr.dtype} with shape {arr.shape}")
    if tuple(arr.shape[1:]) != tuple(frame_shape):
        raise IngestError(where, f"ROI masks have frame shape {tuple(arr.shape[1:])} but the "
                                 f"frames of {path} are {tuple(frame_shape)}")
    weights = arr.astype(np.float32)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise IngestError(where, "ROI mask weights must be finite and non-negative")
    if arr.shape[0] == 0:
        raise IngestError(where, f"holds no ROI mask (shape {arr.shape})")
    empty = np.flatnonzero(weights.reshape(len(weights), -1).sum(axis=1) <= 0)
    if empty.size:
        raise IngestError(where, f"ROI masks must be non-empty; empty: {empty.tolist()[:10]}")
    return weights, provenance


def _grid_rois(frame_shape: tuple[int, int], tile_px: int) -> np.ndarray:
    """Square tiles of ``tile_px`` pixels covering the frame (edge tiles may be smaller)."""
    h, w = frame_shape
    masks = []
    for y0 in range(0, h, tile_px):
        for x0 in range(0, w, tile_px):
            m = np.zeros((h, w), np.float32)
            m[y0:y0 + tile_px, x0:x0 + tile_px] = 1.0
            masks.append(m)
    return np.stack(masks)


def _peak_rois(std: np.ndarray, radius_px: float, threshold: float,
               max_rois: int | None) -> np.ndarray:
    """Compact active spots of the temporal-standard-deviation image (see ``read_tiff_movie``)."""
    valid = std > 0
    if not valid.any():
        return np.zeros((0, *std.shape), np.float32)
    score = std - ndi.gaussian_filter(std, 1.5 * radius_px, mode="nearest")
    values = score[valid]
    med = float(np.median(values))
    cut = med + threshold * 1.4826 * float(np.median(np.abs(values - med)))
    size = 2 * int(math.ceil(radius_px)) + 1
    peaks = (score == ndi.maximum_filter(score, size=size)) & valid & (score > cut)
    seeds = np.argwhere(peaks)
    seeds = seeds[np.argsort(-score[peaks], kind="stable")][:max_rois]
    yy, xx = np.indices(std.shape)
    taken = np.zeros(std.shape, bool)
    masks = []
    for y, x in seeds:
        near = (yy - y) ** 2 + (xx - x) ** 2 <= radius_px**2
        candidates = near & (score >= 0.5 * score[y, x]) & ~taken & valid
        labels, _ = ndi.label(candidates, structure=np.ones((3, 3)))
        if labels[y, x]:
            mask = labels == labels[y, x]
            taken |= mask
            masks.append(mask.astype(np.float32))
    return np.stack(masks) if masks else np.zeros((0, *std.shape), np.float32)


def _read_covariates(covariates: Any, n_frames: int, path: Path) -> tuple[dict, Any]:
    """Per-frame behaviour from a JSON/CSV/TSV file or a mapping, named in snake case."""
    where = path
    if isinstance(covariates, str | os.PathLike):
        where = Path(covariates)
        if not where.is_file():
            raise IngestError(where, "covariates file not found")
        if where.name.lower().endswith(".gz"):  # pandas reads .csv.gz without checking it
            check_gzip(where)
        try:
            if where.suffix.lower() == ".json":
                raw = json.loads(where.read_text())
                if isinstance(raw, list):  # thunder style: [{"name": ..., "value": [...]}, ...]
                    raw = {str(e["name"]): e["value"] for e in raw}
                if not isinstance(raw, dict):
                    raise ValueError("expected an object of name -> values or a list of "
                                     "{'name', 'value'} entries")
            else:
                raw = read_table_columns(where)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise IngestError(where, f"cannot be read as per-frame covariates ({err})") from err
        provenance: Any = companion_info(where)
    elif isinstance(covariates, Mapping):
        raw = dict(covariates)
        provenance = {"names": sorted(str(k) for k in raw)}
    else:
        raise TypeError(f"covariates must be a path or a mapping, got {type(covariates).__name__}")
    behavior: dict[str, np.ndarray] = {}
    for name, values in raw.items():
        key = snake_case(name)
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise IngestError(where, f"covariate {name!r} is not numeric ({err})") from err
        if arr.ndim == 0 or arr.shape[0] != n_frames:
            n = arr.shape[0] if arr.ndim else 1
            raise IngestError(where, f"covariate {name!r} has {n} values but the movie {path} "
                                     f"has {n_frames} frames (one value per frame is needed)")
        if not key or key in behavior:
            raise IngestError(where, f"covariate name {name!r} is empty or duplicates another "
                                     "once written in snake case")
        behavior[key] = arr
    return behavior, provenance


def read_tiff_movie(
    path: str | os.PathLike,
    *,
    fs: float | None = None,
    rois: Any = None,
    roi_method: Literal["peaks", "grid"] = "peaks",
    roi_radius_px: float = 3.0,
    peak_threshold: float = 3.0,
    max_rois: int | None = 200,
    grid_px: int = 16,
    covariates: str | os.PathLike | Mapping[str, Any] | None = None,
    keep_movie: bool = True,
    dff: Literal["percentile"] | None = "percentile",
    dff_window_s: float = 60.0,
    dff_percentile: float = 8.0,
    chunk_frames: int | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | int | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read a TIFF calcium-imaging movie as a recording of ROI traces (and the movie itself).

    The movie (one page per frame or one contiguous block; axes ``TYX``, or an unnamed page
    sequence; integer or float pixels) stays on disk: ``movie`` (time, y_px, x_px) is a Dask array
    whose blocks read only their frames, through a memory map when the frames are stored
    contiguously and uncompressed, else page by page. ROI traces are the weighted mean of each
    ROI's pixels in every frame, computed block by block; ``signal`` is their ΔF/F (see the module
    docstring).

    ROIs, when ``rois`` is not given, come from one pass over the movie:

    * ``"peaks"``: the temporal standard deviation of every pixel is computed block by block; its
      local contrast (the image minus its Gaussian blur of width ``1.5 * roi_radius_px``) is high
      on compact spots whose fluorescence varies more than their surroundings (active somata,
      not neuropil). Seeds are local maxima of that contrast (within ``roi_radius_px``) above its
      median plus ``peak_threshold`` robust standard deviations (1.4826 MAD), strongest first, at
      most ``max_rois``. Each ROI is the connected set of pixels within ``roi_radius_px`` of its
      seed whose contrast is at least half the seed's, not already claimed by a stronger seed.
      Pixels that never change (zero variance) are never part of an ROI.
    * ``"grid"``: square tiles of ``grid_px`` pixels covering the frame.

    The masks are stored as ``roi_mask`` (channel, y_px, x_px) and their weighted centroids as the
    channels' ``x`` (column) and ``y`` (row) positions in the ``"pixel"`` frame.

    Parameters
    ----------
    path : path-like
        The TIFF file.
    fs : float, optional
        Frame rate in Hz. Read from ImageJ (``finterval``, ``fps``) or ScanImage metadata when
        not given; a movie without either needs it (no rate is guessed).
    rois : array-like or path-like, optional
        ROI weights, shape (n_rois, height, width) (boolean masks or non-negative weights; a
        single (height, width) mask is one ROI), or a ``.npy`` file holding them. Replaces
        ``roi_method``.
    roi_method : {"peaks", "grid"}
        Built-in ROI extraction when ``rois`` is not given.
    roi_radius_px : float
        Soma radius in pixels (``"peaks"``).
    peak_threshold : float
        Seed threshold in robust standard deviations above the median contrast (``"peaks"``).
    max_rois : int or None
        Most ROIs kept (``"peaks"``); None for all.
    grid_px : int
        Tile size in pixels (``"grid"``).
    covariates : path-like or mapping, optional
        Behaviour with one value per frame: a JSON file (``{name: [values]}`` or a list of
        ``{"name": ..., "value": [...]}``), a CSV/TSV file with one column per covariate, or a
        mapping of name to values. Stored as ``behavior_<snake_case_name>``.
    keep_movie : bool
        Store the frames as ``movie``.
    dff : {"percentile", None}
        ΔF/F against a running-percentile baseline (units ``dF/F``), or None for the raw ROI
        fluorescence (units ``a.u.``).
    dff_window_s, dff_percentile : float
        Baseline window (seconds) and percentile; see :func:`delta_f_over_f`.
    chunk_frames : int, optional
        Frames per lazy block (default: about 16 MiB of pixels).
    subject, session, task, run : str, optional
        Identity; defaults from BIDS entities in the file name, else the file stem, ``"01"``,
        ``"imaging"``, ``"01"``.
    event_map : mapping, optional
        Not applicable: a TIFF movie holds no events (giving one is an error).

    Returns
    -------
    xarray.Dataset
        A valid recording (modality ``"calcium"``, channels ``roi000``, ... of type ``"roi"``).

    Raises
    ------
    IngestError
        If the file is not a readable movie (damaged, truncated, a single image, other axes, no
        frames), the frame rate is unknown, the ROI masks do not fit the frames, no ROI is found,
        or a covariate does not have one value per frame.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(path, "file not found")
    refuse_event_map(path, event_map)
    shape, dtype, meta_fs, fs_origin = _inspect_tiff(path)
    fs_origin = "argument" if fs is not None else fs_origin
    fs = _check_fs(path, fs if fs is not None else meta_fs,
                   "the TIFF has no ImageJ or ScanImage frame rate")
    n_frames, frame_shape = shape[0], (shape[1], shape[2])
    dtype = dtype.newbyteorder("=")  # blocks are cast to native byte order
    sha = file_sha256(path)
    movie = blockwise_array(
        partial(_tiff_frames, str(path.resolve()), file_stamp(path), shape),
        shape, dtype, chunk_rows=chunk_frames,
        name=f"calcium-tiff-movie-{tokenize(sha, shape, str(dtype), chunk_frames)}",
    )
    params: dict[str, Any] = {"fs": fs, "fs_source": fs_origin}
    extra: dict[str, Any] = {}
    if rois is not None:
        weights, extra["rois"] = _load_rois(rois, path, frame_shape)
        params["rois"] = extra["rois"]
    elif roi_method == "grid":
        weights = _grid_rois(frame_shape, int(grid_px))
        params.update(roi_method="grid", grid_px=int(grid_px))
    elif roi_method == "peaks":
        std = np.asarray(dask.compute(movie.astype(np.float64).std(axis=0))[0])
        if not np.isfinite(std).all():
            raise IngestError(path, "the movie holds NaN/Inf pixels; ROIs cannot be detected")
        weights = _peak_rois(std, float(roi_radius_px), float(peak_threshold), max_rois)
        if len(weights) == 0:
            raise IngestError(path, "no ROI found: no pixel varies over time more than its "
                                    "surroundings (pass rois= or roi_method='grid')")
        params.update(roi_method="peaks", roi_radius_px=float(roi_radius_px),
                      peak_threshold=float(peak_threshold), max_rois=max_rois)
    else:
        raise ValueError(f"roi_method must be 'peaks' or 'grid', got {roi_method!r}")
    n_rois = len(weights)
    totals = weights.reshape(n_rois, -1).sum(axis=1)
    wmat = da.from_array((weights.reshape(n_rois, -1) / totals[:, None]).T.astype(np.float32),
                         chunks=-1)
    raw = movie.reshape(n_frames, -1).astype(np.float32) @ wmat
    signal, units = _apply_dff(raw, dff, fs, dff_window_s, dff_percentile)
    params.update(dff=dff, **({"dff_window_s": float(dff_window_s),
                              "dff_percentile": float(dff_percentile)} if dff else {}))
    yy, xx = np.indices(frame_shape)
    positions = np.column_stack([
        (weights * xx).reshape(n_rois, -1).sum(axis=1) / totals,
        (weights * yy).reshape(n_rois, -1).sum(axis=1) / totals,
        np.full(n_rois, np.nan),
    ])
    behavior: dict[str, np.ndarray] = {}
    if covariates is not None:
        behavior, extra["covariates"] = _read_covariates(covariates, n_frames, path)
        params["covariates"] = extra["covariates"]
    params["keep_movie"] = bool(keep_movie)
    step = f"{_MODULE}.read_tiff_movie"
    ident = recording_identity(path, subject=subject, session=session, task=task, run=run,
                               default_task=_DEFAULT_TASK)
    ds = make_recording(
        signal, sfreq=fs, ch_names=_roi_names(n_rois), ch_types="roi", units=units,
        modality="calcium", **ident,
        positions=positions, coord_frame="pixel", behavior=behavior,
        movie=movie if keep_movie else None,
        source=source_info(path, reader=step, reader_version=tifffile.__version__, **extra),
        history=[{"step": step, "params": params, **({"scope": "recording"} if dff else {})}],
    )
    ds["roi_mask"] = (("channel", "y_px", "x_px"), weights)
    return validate(ds, where=str(path))


# --------------------------------------------------------------------------------------------
# suite2p
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _npy_mmap(path: str, stamp: tuple[int, int]) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _suite2p_block(f_path: str, f_stamp: tuple[int, int], neu_path: str | None,
                   neu_stamp: tuple[int, int] | None, rows: np.ndarray, coef: float, start: int,
                   stop: int) -> np.ndarray:
    """Frames ``start:stop`` of the selected suite2p ROIs, (time, roi), neuropil-corrected."""
    f = np.asarray(_npy_mmap(f_path, f_stamp)[:, start:stop], dtype=np.float32)[rows]
    if neu_path is not None:
        neu = np.asarray(_npy_mmap(neu_path, neu_stamp)[:, start:stop], dtype=np.float32)[rows]
        f = f - np.float32(coef) * neu
    return f.T


def _load_npy(path: Path, *, pickled: bool = False) -> Any:
    try:
        if pickled:
            return np.load(path, allow_pickle=True)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise IngestError(path, f"cannot be read as a NumPy array ({err})") from err


def read_suite2p(
    plane_dir: str | os.PathLike,
    *,
    use: Literal["F", "spks"] = "F",
    neuropil_coef: float = 0.7,
    only_cells: bool = True,
    dff: Literal["auto", "percentile"] | None = "auto",
    dff_window_s: float = 60.0,
    dff_percentile: float = 8.0,
    fs: float | None = None,
    chunk_frames: int | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | int | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read the outputs of one suite2p plane folder (``.../suite2p/plane0``) as a recording.

    suite2p stores traces as (n_rois, n_frames) ``.npy`` matrices; they are memory-mapped and read
    block by block (transposed to time x ROI), never whole.

    Parameters
    ----------
    plane_dir : path-like
        Folder with ``F.npy``, ``Fneu.npy`` (for ``use="F"``), ``spks.npy`` (for ``use="spks"``),
        ``ops.npy`` (a pickled dict; ``ops["fs"]`` is the frame rate), ``stat.npy`` (one dict per
        ROI: ``med``, ``ypix``, ``xpix``) and ``iscell.npy`` (column 0: 1 for cells).
    use : {"F", "spks"}
        Fluorescence ``F - neuropil_coef * Fneu``, or suite2p's deconvolved activity ``spks``.
    neuropil_coef : float
        Neuropil contamination factor subtracted from ``F``.
    only_cells : bool
        Keep only ROIs that ``iscell.npy`` classifies as cells.
    dff : {"auto", "percentile", None}
        ΔF/F of the neuropil-corrected fluorescence; ``"auto"`` means ``"percentile"`` for
        ``use="F"`` and None (no transform, units ``a.u.``) for ``use="spks"``.
    dff_window_s, dff_percentile : float
        Baseline window and percentile; see :func:`delta_f_over_f`.
    fs : float, optional
        Frame rate in Hz; overrides ``ops["fs"]``.
    chunk_frames : int, optional
        Frames per lazy block.
    subject, session, task, run : str, optional
        Identity; defaults from BIDS entities in the experiment folder name (the parent of
        ``suite2p/``, else the plane folder's own name), else that name, ``"01"``, ``"imaging"``,
        ``"01"``.
    event_map : mapping, optional
        Not applicable: suite2p outputs hold no events (giving one is an error).

    Returns
    -------
    xarray.Dataset
        A valid recording; channels ``roi<suite2p index>`` with the ROI median pixel (``med``) as
        ``x`` (column) and ``y`` (row) in the ``"pixel"`` frame.

    Raises
    ------
    IngestError
        If a needed file is missing or unreadable, the matrices disagree in shape, no ROI is a
        cell, or the frame rate is unknown.
    """
    plane = Path(plane_dir)
    if not plane.is_dir():
        raise IngestError(plane, "is not a suite2p plane folder (no such directory)")
    refuse_event_map(plane, event_map)
    if use not in ("F", "spks"):
        raise ValueError(f"use must be 'F' or 'spks', got {use!r}")
    if dff == "auto":
        dff = "percentile" if use == "F" else None
    if use == "spks" and dff is not None:
        raise ValueError("dff applies to fluorescence (use='F'), not to deconvolved spks")
    needed = (["F.npy", "Fneu.npy"] if use == "F" else ["spks.npy"]) + ["ops.npy", "stat.npy"]
    needed += ["iscell.npy"] if only_cells else []
    missing = [n for n in needed if not (plane / n).is_file()]
    if missing:
        raise IngestError(plane, f"lacks {', '.join(missing)} (a suite2p plane folder holds "
                                 "F.npy, Fneu.npy, spks.npy, iscell.npy, ops.npy and stat.npy)")
    main = plane / ("F.npy" if use == "F" else "spks.npy")
    traces = _load_npy(main)
    if traces.ndim != 2 or traces.dtype.kind not in "iuf":
        raise IngestError(main, f"must be a numeric (n_rois, n_frames) matrix, got {traces.dtype} "
                                f"with shape {traces.shape}")
    n_all, n_frames = traces.shape
    if n_all == 0 or n_frames == 0:
        raise IngestError(main, f"holds no traces (shape {traces.shape})")
    neu_path = None
    if use == "F":
        neu_path = plane / "Fneu.npy"
        neu = _load_npy(neu_path)
        if neu.shape != traces.shape:
            raise IngestError(plane, f"F.npy has shape {traces.shape} but Fneu.npy has shape "
                                     f"{neu.shape}; they must match")
    ops = _load_npy(plane / "ops.npy", pickled=True)
    ops = ops.item() if isinstance(ops, np.ndarray) and ops.dtype == object else ops
    if not isinstance(ops, dict):
        raise IngestError(plane / "ops.npy", "must hold a pickled dict of suite2p options")
    fs = _check_fs(plane, fs if fs is not None else ops.get("fs"), "ops.npy has no 'fs'")
    stat = _load_npy(plane / "stat.npy", pickled=True)
    if len(stat) != n_all:
        raise IngestError(plane, f"stat.npy describes {len(stat)} ROIs but {main.name} has "
                                 f"{n_all}")
    positions = np.full((n_all, 3), np.nan)
    for i, roi in enumerate(stat):
        if "med" in roi:
            y, x = roi["med"][:2]
        else:
            y, x = np.median(roi["ypix"]), np.median(roi["xpix"])
        positions[i, :2] = float(x), float(y)
    if only_cells:
        iscell = np.asarray(_load_npy(plane / "iscell.npy"))
        iscell = iscell[:, 0] if iscell.ndim == 2 else iscell
        if iscell.shape[0] != n_all:
            raise IngestError(plane, f"iscell.npy classifies {iscell.shape[0]} ROIs but "
                                     f"{main.name} has {n_all}")
        rows = np.flatnonzero(iscell > 0.5)
        if rows.size == 0:
            raise IngestError(plane, "iscell.npy marks no ROI as a cell (pass only_cells=False "
                                     "to keep every ROI)")
    else:
        rows = np.arange(n_all)
    coef = float(neuropil_coef) if use == "F" else 0.0
    block = partial(_suite2p_block, str(main.resolve()), file_stamp(main),
                    str(neu_path.resolve()) if neu_path else None,
                    file_stamp(neu_path) if neu_path else None, rows, coef)
    companions = {n: companion_info(plane / n) for n in needed if plane / n != main}
    raw = blockwise_array(
        block, (n_frames, rows.size), np.float32, chunk_rows=chunk_frames,
        name=f"calcium-suite2p-{tokenize(companions, file_sha256(main), rows, coef, chunk_frames)}",
    )
    signal, units = _apply_dff(raw, dff, fs, dff_window_s, dff_percentile)
    params: dict[str, Any] = {"use": use, "only_cells": bool(only_cells), "fs": fs, "dff": dff}
    if use == "F":
        params["neuropil_coef"] = coef
    if dff:
        params.update(dff_window_s=float(dff_window_s), dff_percentile=float(dff_percentile))
    experiment = plane.parent.parent if plane.parent.name == "suite2p" else plane
    step = f"{_MODULE}.read_suite2p"
    ident = recording_identity(experiment.resolve(), subject=subject, session=session,
                               task=task, run=run, default_task=_DEFAULT_TASK)
    ds = make_recording(
        signal, sfreq=fs, ch_names=_roi_names(n_all, rows), ch_types="roi", units=units,
        modality="calcium", **ident,
        positions=positions[rows], coord_frame="pixel",
        source=source_info(main, reader=step, reader_version=np.__version__,
                           plane_dir=str(plane.resolve()), companions=companions),
        history=[{"step": step, "params": params, **({"scope": "recording"} if dff else {})}],
    )
    return validate(ds, where=str(plane))


# --------------------------------------------------------------------------------------------
# NWB optical physiology
# --------------------------------------------------------------------------------------------

#: Trial-table columns taken as the event label, in this order, when ``trial_label`` is None.
_TRIAL_LABEL_COLUMNS = ("trial_type", "condition", "stimulus", "label", "type")


@lru_cache(maxsize=8)
def _h5_file(path: str, stamp: tuple[int, int]) -> Any:
    import h5py

    return h5py.File(path, "r")


def _nwb_rows(path: str, stamp: tuple[int, int], dataset: str, conversion: float, offset: float,
              start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of an NWB series' data, in its physical unit."""
    block = np.asarray(_h5_file(path, stamp)[dataset][start:stop], dtype=np.float64)
    block = block.reshape(stop - start, -1)
    return (block * conversion + offset).astype(np.float32)


def _series_times(path: Path, series: Any, max_jitter: float) -> tuple[float, np.ndarray]:
    """Sampling rate and sample times of an NWB TimeSeries (regular timestamps required)."""
    n = int(series.data.shape[0])
    if series.rate is not None:
        return float(series.rate), (series.starting_time or 0.0) + np.arange(n) / series.rate
    ts = np.asarray(series.get_timestamps()[:], dtype=np.float64)
    if ts.shape != (n,):
        raise IngestError(path, f"series {series.name!r} has {ts.size} timestamps for {n} frames")
    if n < 2:
        raise IngestError(path, f"series {series.name!r} has a single timestamp and no rate")
    steps = np.diff(ts)
    if not np.isfinite(ts).all() or (steps <= 0).any():
        raise IngestError(path, f"timestamps of series {series.name!r} are not strictly increasing")
    med = float(np.median(steps))
    jitter = float(np.max(np.abs(steps - med))) / med
    if jitter > max_jitter:
        raise IngestError(path, f"timestamps of series {series.name!r} are irregular: frame "
                                f"intervals range from {steps.min():.6g} to {steps.max():.6g} s "
                                f"around a median of {med:.6g} s ({jitter:.1%} > max_jitter "
                                f"{max_jitter:.1%}); resample the series first")
    return 1.0 / med, ts


def _find_roi_series(path: Path, nwb: Any, series: str | None) -> tuple[str, Any, bool]:
    """The RoiResponseSeries to read, its ``interface/name`` and whether it is already ΔF/F."""
    from pynwb.ophys import DfOverF, Fluorescence

    found: dict[str, tuple[Any, bool]] = {}
    ophys = nwb.processing.get("ophys")
    for iname, iface in (ophys.data_interfaces.items() if ophys is not None else ()):
        if isinstance(iface, DfOverF | Fluorescence):
            for sname, s in iface.roi_response_series.items():
                found[f"{iname}/{sname}"] = (s, isinstance(iface, DfOverF))
    if not found:
        raise IngestError(path, "holds no RoiResponseSeries in processing['ophys'] (Fluorescence "
                                "or DfOverF)")
    if series is not None:
        hits = [k for k in found if series in (k, k.split("/", 1)[1])]
        if len(hits) != 1:
            raise IngestError(path, f"series {series!r} matches {len(hits)} of the ROI response "
                                    f"series {sorted(found)}; name one as 'Interface/name'")
        return hits[0], *found[hits[0]]
    dff_keys = [k for k, (_, is_dff) in found.items() if is_dff]
    keys = dff_keys if len(dff_keys) == 1 else list(found)
    if len(keys) != 1:
        raise IngestError(path, f"holds several ROI response series {sorted(found)}; choose one "
                                "with series=")
    return keys[0], *found[keys[0]]


def _roi_table_info(series: Any) -> tuple[list[str], np.ndarray, str, str]:
    """Channel names, pixel centroids (NaN if no mask), coordinate frame and region."""
    region = series.rois
    rows = np.asarray(region.data[:], dtype=np.int64)
    table = region.table
    ids = np.asarray(table.id[:])[rows]
    positions = np.full((rows.size, 3), np.nan)
    frame = "unknown"
    if "image_mask" in table.colnames:
        masks = table["image_mask"].data
        for i, r in enumerate(rows):
            m = np.asarray(masks[int(r)], dtype=np.float64)
            yy, xx = np.indices(m.shape[:2])
            total = m.sum()
            if total > 0:
                positions[i, :2] = (m * xx).sum() / total, (m * yy).sum() / total
        frame = "pixel"
    elif "pixel_mask" in table.colnames:
        for i, r in enumerate(rows):
            px = np.asarray([tuple(p) for p in table["pixel_mask"][int(r)]], dtype=np.float64)
            if px.size and px[:, 2].sum() > 0:
                w = px[:, 2]
                positions[i, :2] = (px[:, 0] * w).sum() / w.sum(), (px[:, 1] * w).sum() / w.sum()
        frame = "pixel"
    plane = getattr(table, "imaging_plane", None)
    location = str(getattr(plane, "location", "") or "")
    return _roi_names(len(ids), ids), positions, frame, location


def _nwb_behavior(path: Path, nwb: Any, times: np.ndarray) -> tuple[dict, list[str]]:
    """Every TimeSeries of processing['behavior'], interpolated linearly to the frame times."""
    from pynwb import TimeSeries

    module = nwb.processing.get("behavior")
    out: dict[str, np.ndarray] = {}
    sources: list[str] = []
    for iname, iface in (module.data_interfaces.items() if module is not None else ()):
        children = [iface] if isinstance(iface, TimeSeries) else [
            c for c in iface.children if isinstance(c, TimeSeries)]
        for ts in children:
            data = np.asarray(ts.data[:])
            if data.dtype.kind not in "biuf" or data.ndim not in (1, 2):
                raise IngestError(path, f"behaviour series {ts.name!r} is not a numeric 1-D or "
                                        f"2-D array ({data.dtype}, shape {data.shape})")
            data = data.astype(np.float64) * float(ts.conversion) + float(ts.offset or 0.0)
            t = np.asarray(ts.get_timestamps()[:], dtype=np.float64)
            if t.shape[0] != data.shape[0] or t.shape[0] < 2 or (np.diff(t) <= 0).any():
                raise IngestError(path, f"behaviour series {ts.name!r} has {t.shape[0]} "
                                        f"increasing timestamps for {data.shape[0]} samples")
            cols = data.reshape(data.shape[0], -1)
            resampled = np.column_stack([np.interp(times, t, c) for c in cols.T])
            name = snake_case(ts.name)
            if name in out or not name:
                name = f"{snake_case(iname)}_{name}"
            out[name] = resampled[:, 0] if data.ndim == 1 else resampled
            sources.append(f"{iname}/{ts.name}")
    return out, sources


def _nwb_events(nwb: Any, trial_label: str | None, event_map: Mapping[str, str] | None
                ) -> pd.DataFrame:
    """Trials (label from ``trial_label`` or a usual column) and epochs (label from tags)."""
    frames = []
    if nwb.trials is not None and len(nwb.trials):
        df = nwb.trials.to_dataframe()
        column = trial_label or next((c for c in _TRIAL_LABEL_COLUMNS if c in df.columns), None)
        if column is not None and column not in df.columns:
            raise ValueError(f"trial_label {column!r} is not a trials column: {list(df.columns)}")
        values = df[column] if column is not None else pd.Series("trial", index=df.index)
        numeric = pd.api.types.is_numeric_dtype(values)
        frames.append(pd.DataFrame({
            "onset": df["start_time"].to_numpy(float),
            "duration": (df["stop_time"] - df["start_time"]).to_numpy(float),
            "label": values.astype(str).to_numpy(),
            "value": values.to_numpy(float) if numeric else np.nan,
        }))
    if nwb.epochs is not None and len(nwb.epochs):
        df = nwb.epochs.to_dataframe()
        tags = df["tags"] if "tags" in df.columns else pd.Series([[]] * len(df), index=df.index)
        frames.append(pd.DataFrame({
            "onset": df["start_time"].to_numpy(float),
            "duration": (df["stop_time"] - df["start_time"]).to_numpy(float),
            "label": ["/".join(map(str, t)) if len(t) else "epoch" for t in tags],
            "value": np.nan,
        }))
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"onset": [], "duration": [], "label": [], "value": []})
    if event_map:
        events["label"] = [event_map.get(lab, lab) for lab in events["label"]]
    return events


def read_nwb_ophys(
    path: str | os.PathLike,
    *,
    series: str | None = None,
    dff: Literal["auto", "percentile"] | None = "auto",
    dff_window_s: float = 60.0,
    dff_percentile: float = 8.0,
    max_jitter: float = 0.01,
    trial_label: str | None = None,
    chunk_frames: int | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | int | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read ROI traces, behaviour and trials from an NWB optical-physiology file.

    ``signal`` is an ``RoiResponseSeries`` of ``processing['ophys']`` (in ``DfOverF`` or
    ``Fluorescence``), read lazily: each block reopens the HDF5 file and slices its rows.

    Parameters
    ----------
    path : path-like
        The ``.nwb`` file (HDF5).
    series : str, optional
        ``"Interface/name"`` (e.g. ``"DfOverF/RoiResponseSeries"``) or a unique series name. By
        default the only ``DfOverF`` series, else the only series.
    dff : {"auto", "percentile", None}
        ``"auto"``: keep a ``DfOverF`` series as it is (units ``dF/F``) and turn a
        ``Fluorescence`` series into ΔF/F; ``"percentile"``: always compute ΔF/F; None: keep the
        values (units ``dF/F`` for ``DfOverF``, else ``a.u.``).
    dff_window_s, dff_percentile : float
        Baseline window and percentile; see :func:`delta_f_over_f`.
    max_jitter : float
        Largest deviation of a frame interval from the median interval, as a fraction of it, for
        a series stored with timestamps (beyond it the file is refused).
    trial_label : str, optional
        Trials column giving each event's label; default: the first of ``trial_type``,
        ``condition``, ``stimulus``, ``label``, ``type`` present, else ``"trial"``. A numeric
        label column also fills the events' ``value``.
    chunk_frames : int, optional
        Frames per lazy block.
    subject, session, task, run : str, optional
        Identity; defaults from BIDS entities in the file name, else the NWB file's subject id,
        then the file stem, ``"01"``, ``"imaging"``, ``"01"``.
    event_map : mapping, optional
        Renames event labels (trial labels, epoch tags); labels not in it are kept.

    Returns
    -------
    xarray.Dataset
        A valid recording. ``time`` holds the frame times of the file (seconds from its session
        start). Channels are named ``roi<id>`` after the ROI table ids, positioned at their mask
        centroids (``"pixel"`` frame) when the table has masks, with the imaging plane's location
        as region. Behaviour (``processing['behavior']``: ``Position``, ``BehavioralTimeSeries``,
        ...) is linearly interpolated to the frame times (held at its first and last values
        outside its own time span) and stored as ``behavior_<snake_case series name>``. Trials
        and epochs become events; those outside the imaging period are dropped and counted in the
        history (``events_outside``).

    Raises
    ------
    IngestError
        If the file is not readable NWB, holds no (or no single chosen) ROI response series, its
        timestamps are irregular, or its shapes are inconsistent.
    """
    from pynwb import NWBHDF5IO
    from pynwb import __version__ as pynwb_version

    path = Path(path)
    if not path.is_file():
        raise IngestError(path, "file not found")
    try:
        io = NWBHDF5IO(str(path), "r", load_namespaces=True)
    except Exception as err:  # h5py/hdmf raise many types for a non-NWB file
        raise IngestError(path, f"is not a readable NWB file ({err})") from err
    try:
        try:
            nwb = io.read()
        except Exception as err:
            raise IngestError(path, f"is not a readable NWB file ({err})") from err
        key, roi_series, is_dff = _find_roi_series(path, nwb, series)
        shape = tuple(int(s) for s in roi_series.data.shape)
        names, positions, frame, location = _roi_table_info(roi_series)
        n_rois = shape[1] if len(shape) == 2 else 1
        if shape[0] == 0 or len(shape) > 2 or n_rois != len(names):
            raise IngestError(path, f"series {key!r} has data of shape {shape} for {len(names)} "
                                    "ROIs; expected (n_frames, n_rois) with n_frames > 0")
        sfreq, times = _series_times(path, roi_series, max_jitter)
        behavior, behavior_sources = _nwb_behavior(path, nwb, times)
        events = _nwb_events(nwb, trial_label, event_map)
        dataset = roi_series.data.name
        conversion = float(roi_series.conversion)
        offset = float(getattr(roi_series, "offset", 0.0) or 0.0)
        nwb_subject = getattr(nwb.subject, "subject_id", None) or None
    finally:
        io.close()
    end = times[-1] + 1.0 / sfreq
    inside = (events["onset"] >= times[0]) & (events["onset"] + events["duration"] <= end)
    sha = file_sha256(path)
    raw = blockwise_array(
        partial(_nwb_rows, str(path.resolve()), file_stamp(path), dataset, conversion, offset),
        (shape[0], n_rois), np.float32, chunk_rows=chunk_frames,
        name=f"calcium-nwb-{tokenize(sha, dataset, conversion, offset, chunk_frames)}",
    )
    if dff == "auto":
        dff = None if is_dff else "percentile"
    signal, units = _apply_dff(raw, dff, sfreq, dff_window_s, dff_percentile)
    if is_dff and dff is None:
        units = "dF/F"
    params: dict[str, Any] = {"series": key, "dff": dff, "max_jitter": float(max_jitter),
                              "trial_label": trial_label, "event_map": dict(event_map or {}),
                              "behavior": behavior_sources,
                              "events_outside": int((~inside).sum())}
    if dff:
        params.update(dff_window_s=float(dff_window_s), dff_percentile=float(dff_percentile))
    ident = recording_identity(path, subject=subject, session=session, task=task, run=run,
                               inferred={"subject": nwb_subject}, default_task=_DEFAULT_TASK)
    step = f"{_MODULE}.read_nwb_ophys"
    ds = make_recording(
        signal, sfreq=sfreq, ch_names=names, ch_types="roi", units=units, modality="calcium",
        **ident, time=times, positions=positions, coord_frame=frame,
        regions=[location] * n_rois, events=events[inside], behavior=behavior,
        source=source_info(path, reader=step, reader_version=pynwb_version),
        history=[{"step": step, "params": params, **({"scope": "recording"} if dff else {})}],
    )
    return validate(ds, where=str(path))


# --------------------------------------------------------------------------------------------
# Plain trace matrices (.npy / .npz)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _trace_source(path: str, stamp: tuple[int, int], key: str | None) -> np.ndarray:
    """The trace matrix: memory-mapped from a .npy file, or one .npz member (loaded once)."""
    if key is None:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _trace_rows(path: str, stamp: tuple[int, int], key: str | None, channels_first: bool,
                start: int, stop: int) -> np.ndarray:
    arr = _trace_source(path, stamp, key)
    block = arr[:, start:stop].T if channels_first else arr[start:stop]
    return np.asarray(block, dtype=np.float32)


def read_trace_array(
    path: str | os.PathLike,
    *,
    fs: float | None = None,
    key: str | None = None,
    orientation: Literal["channels_first", "time_first"] = "channels_first",
    ch_names: Sequence[str] | None = None,
    units: str = "a.u.",
    chunk_frames: int | None = None,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | int | None = None,
    event_map: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Read a matrix of ROI traces from a NumPy ``.npy`` file or one member of an ``.npz``.

    A ``.npy`` file is memory-mapped; an ``.npz`` member is loaded once per process by the first
    block that needs it (archives cannot be memory-mapped). Arrays of Python objects are refused
    (nothing is unpickled).

    Parameters
    ----------
    path : path-like
        ``.npy`` or ``.npz`` file.
    fs : float
        Sampling rate in Hz. Required: these files carry none.
    key : str, optional
        Member of an ``.npz`` archive; may be omitted when it holds a single array.
    orientation : {"channels_first", "time_first"}
        Layout of the matrix: (n_channels, n_times) (e.g. CaImAn's ``C``) or (n_times,
        n_channels).
    ch_names : sequence of str, optional
        Channel names; default ``roi000``, ``roi001``, ...
    units : str
        Unit of the values (default ``a.u.``).
    chunk_frames : int, optional
        Samples per lazy block.
    subject, session, task, run : str, optional
        Identity; defaults from BIDS entities in the file name, else the file stem, ``"01"``,
        ``"imaging"``, ``"01"``.
    event_map : mapping, optional
        Not applicable: trace matrices hold no events (giving one is an error).

    Returns
    -------
    xarray.Dataset
        A valid recording of ``roi`` channels.

    Raises
    ------
    IngestError
        If the file or member is missing, unreadable or corrupt (an ``.npz`` member that fails
        its CRC-32), not a 2-D numeric matrix, empty, or the sampling rate is not given.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(path, "file not found")
    refuse_event_map(path, event_map)
    if orientation not in ("channels_first", "time_first"):
        raise ValueError(f"orientation must be 'channels_first' or 'time_first', got "
                         f"{orientation!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if key is not None:
                raise IngestError(path, f"is a .npy file (a single array); key={key!r} applies "
                                        "to .npz archives only")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                members = list(archive.files)
                if key is None and len(members) == 1:
                    key = members[0]
                if key not in members:
                    raise IngestError(path, f"has no array {key!r}; it holds {members} (pass "
                                            "key=)")
                arr = archive[key]
        else:
            raise IngestError(path, f"has suffix {path.suffix!r}; expected .npy or .npz")
    except IngestError:
        raise
    except zipfile.BadZipFile as err:  # zipfile checks each member's CRC-32 as it reads it
        raise IngestError(path, f"is a corrupt .npz archive: {err}") from err
    except (OSError, ValueError, EOFError) as err:
        what = f"member {key!r}" if key else "the file"
        raise IngestError(path, f"{what} cannot be read as a numeric array ({err})") from err
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise IngestError(path, f"{f'member {key!r}' if key else 'the array'} must be a 2-D "
                                f"numeric trace matrix, got {arr.dtype} with shape {arr.shape}")
    n_ch, n_times = arr.shape if orientation == "channels_first" else arr.shape[::-1]
    if n_ch == 0 or n_times == 0:
        raise IngestError(path, f"holds an empty trace matrix (shape {arr.shape})")
    fs = _check_fs(path, fs, f"{suffix} trace arrays carry no sampling rate")
    names = _roi_names(n_ch) if ch_names is None else [str(c) for c in ch_names]
    if len(names) != n_ch:
        raise IngestError(path, f"ch_names has {len(names)} names for {n_ch} channels")
    channels_first = orientation == "channels_first"
    sig = blockwise_array(
        partial(_trace_rows, str(path.resolve()), file_stamp(path), key, channels_first),
        (n_times, n_ch), np.float32, chunk_rows=chunk_frames,
        name=f"calcium-traces-{tokenize(file_sha256(path), key, channels_first, chunk_frames)}",
    )
    step = f"{_MODULE}.read_trace_array"
    ident = recording_identity(path, subject=subject, session=session, task=task, run=run,
                               default_task=_DEFAULT_TASK)
    ds = make_recording(
        sig, sfreq=fs, ch_names=names, ch_types="roi", units=units, modality="calcium", **ident,
        source=source_info(path, reader=step, reader_version=np.__version__),
        history=[{"step": step, "params": {"fs": fs, "key": key, "orientation": orientation,
                                           "units": units}}],
    )
    return validate(ds, where=str(path))
