"""Zarr v3 recording store: atomic, idempotent, chunked and sharded along time.

A recording is written under a hidden temporary name beside its final path and renamed into place
only once every chunk, the metadata and the content fingerprint are on disk, so a reader never
sees a half-written store, whatever kills the writer. Writing the same content again leaves the
existing store untouched (same bytes, same modification time), which is what lets workflows skip
up-to-date outputs.

Layout of a store root::

    <root>/<dataset>/sub-<subject>/ses-<session>/<modality>/task-<task>_run-<run>.zarr
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time as _time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
import xxhash
import zarr
from zarr.codecs import BloscCodec

from .schema import STRING_VARIABLES, SchemaError, as_str_array, recording_label, validate

__all__ = [
    "WriteResult",
    "clean_label",
    "time_chunks",
    "find_recordings",
    "open_recording",
    "recording_path",
    "store_summary",
    "write_recording",
    "write_stimuli",
]

#: Target size of one uncompressed chunk, in bytes. Chunks are the unit of compression and of
#: partial reads; shards (``SHARD_CHUNKS`` chunks along time) are the unit of files on disk.
CHUNK_BYTES = 1 << 20
SHARD_CHUNKS = 16
_MAX_CHANNELS_PER_CHUNK = 1 << 16
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[0-9a-f]{8}$")
_MARKER = "neurodecode_recording"


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_recording` did.

    Attributes
    ----------
    path : Path
        Final store path.
    status : {"created", "replaced", "unchanged", "skipped"}
        ``unchanged``: an identical store was already there and was kept as it was.
    content_sha256 : str
        Fingerprint of everything in the recording (data, coordinates, attributes).
    nbytes : int
        Uncompressed size of the data.
    nbytes_stored : int
        Size on disk.
    seconds : float
        Wall time of the write.
    """

    path: Path
    status: str
    content_sha256: str
    nbytes: int
    nbytes_stored: int
    seconds: float


def recording_path(root: str | os.PathLike, dataset: str, ds: xr.Dataset) -> Path:
    """Return the canonical store path of a recording under ``root``.

    Parameters
    ----------
    root : path-like
        Store root folder.
    dataset : str
        Dataset name (e.g. a catalog entry).
    ds : xarray.Dataset
        The recording; its ``subject``, ``session``, ``modality``, ``task`` and ``run``
        attributes name it.

    Returns
    -------
    Path
        ``<root>/<dataset>/sub-<s>/ses-<x>/<modality>/task-<t>_run-<r>.zarr`` (BIDS-like: one
        folder per modality, as BIDS has per datatype).
    """
    a = ds.attrs
    parts = {k: clean_label(a[k]) for k in ("subject", "session", "task", "run")}
    return (
        Path(root)
        / (re.sub(r"[^A-Za-z0-9._+-]", "", dataset) or "dataset")
        / f"sub-{parts['subject']}"
        / f"ses-{parts['session']}"
        / clean_label(a["modality"])
        / f"task-{parts['task']}_run-{parts['run']}.zarr"
    )


def clean_label(text: object) -> str:
    """Return ``text`` as it appears in store paths and in a written recording's attributes.

    The rule is fixed and deterministic: ``_`` becomes ``-`` (``_`` separates entities in store
    names), then every character other than ASCII letters, digits, ``.``, ``+`` and ``-`` is
    removed; an empty result is ``"none"``. Two different labels can clean to the same one
    (``"1_a"`` and ``"1-a"``); ingestion refuses to write both to one store.

    Parameters
    ----------
    text : object
        A subject, session, task, run or modality label; converted with :class:`str` first.

    Returns
    -------
    str
    """
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(text).replace("_", "-")) or "none"


def write_recording(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    if_exists: Literal["update", "error", "skip"] = "update",
    chunk_bytes: int = CHUNK_BYTES,
    shard_chunks: int = SHARD_CHUNKS,
    clevel: int = 5,
    progress: bool = False,
) -> WriteResult:
    """Validate a recording and write it atomically to a Zarr v3 store.

    The data are streamed chunk by chunk through Dask (a ``dask.distributed`` client, if one is
    active, does the work), so memory stays bounded by a few shards whatever the recording size.
    NaN/Inf samples are detected during the same pass; they abort the write.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (see :mod:`neurodecode.schema`); NumPy- or Dask-backed.
    path : path-like
        Final store path (conventionally ending in ``.zarr``).
    if_exists : {"update", "error", "skip"}
        ``update`` writes and then keeps the existing store if its content is identical, or
        swaps in the new one; ``error`` raises :class:`FileExistsError`; ``skip`` returns at once.
    chunk_bytes : int
        Target uncompressed size of one chunk.
    shard_chunks : int
        Chunks per shard along time.
    clevel : int
        Compression level (Blosc LZ4 with byte shuffle: fast enough to keep up with disks; float
        signals gain little from slower codecs).
    progress : bool
        Show a progress bar for the chunk writes.

    Returns
    -------
    WriteResult

    Raises
    ------
    SchemaError
        If the recording does not follow the schema or holds NaN/Inf; nothing is written.
    FileExistsError
        If ``if_exists="error"`` and the store exists.
    """
    import dask

    start = _time.perf_counter()
    path = Path(path)
    label = str(ds.attrs.get("source", {}).get("path") or recording_label(ds))
    validate(ds, where=label)
    if path.exists():
        if if_exists == "error":
            raise FileExistsError(f"{path} already exists")
        if if_exists == "skip":
            return WriteResult(
                path,
                "skipped",
                _stored_fingerprint(path),
                0,
                _disk_usage(path),
                _time.perf_counter() - start,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        prepared, encoding = _prepare(ds, chunk_bytes, shard_chunks, clevel)
        delayed_write = prepared.to_zarr(
            tmp, mode="w-", zarr_format=3, consolidated=False, encoding=encoding, compute=False
        )
        lazy_names = [n for n, v in prepared.variables.items() if v.chunks is not None]
        digests = {
            n: [dask.delayed(_block_digest)(b) for b in prepared[n].data.to_delayed().ravel()]
            for n in lazy_names
        }
        _, digests = _compute(delayed_write, digests, progress=progress)
        bad = {n: sum(d[1] for d in blocks) for n, blocks in digests.items()}
        bad = {n: c for n, c in bad.items() if c}
        if bad:
            raise SchemaError([f"{n} holds {c} NaN/Inf value(s)" for n, c in bad.items()], label)
        fingerprint = _fingerprint(prepared, {n: [d[0] for d in b] for n, b in digests.items()})
        group = zarr.open_group(tmp, mode="r+", zarr_format=3)
        group.attrs.update({"content_sha256": fingerprint, _MARKER: True})
        status = "created"
        if path.exists():
            if _stored_fingerprint(path) == fingerprint:
                shutil.rmtree(tmp)
                return WriteResult(
                    path,
                    "unchanged",
                    fingerprint,
                    _nbytes(ds),
                    _disk_usage(path),
                    _time.perf_counter() - start,
                )
            status = "replaced"
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WriteResult(
        path, status, fingerprint, _nbytes(ds), _disk_usage(path), _time.perf_counter() - start
    )


def _compute(*collections: Any, progress: bool = False) -> tuple[Any, ...]:
    """``dask.compute`` that, on failure, returns only once no task is still writing.

    With the local threaded scheduler, a failing task makes ``dask.compute`` raise while other
    tasks may still be writing shards; the thread pool is owned here and joined before the
    exception propagates, so the caller can remove the partial store for good.
    """
    import dask
    from dask.base import get_scheduler

    dask_collections = [c for c in collections if dask.is_dask_collection(c)]
    if get_scheduler(collections=dask_collections) is not dask.threaded.get:  # distributed, sync
        return dask.compute(*collections)
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from dask.diagnostics import ProgressBar

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        with ProgressBar(minimum=1.0) if progress else nullcontext():
            return dask.compute(*collections, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _remove_settled(path: Path, quiet: float = 0.2, timeout: float = 10.0) -> None:
    """Remove ``path`` and keep removing it until no straggling writer recreates it."""
    deadline = _time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        _time.sleep(quiet)
        if not path.exists() or _time.monotonic() > deadline:
            return


def time_chunks(
    row_bytes: int,
    n_times: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    shard_chunks: int = SHARD_CHUNKS,
) -> tuple[int, int]:
    """Rows per chunk and per shard for a time-aligned variable.

    Readers that produce blocks of ``shard`` rows (see
    :func:`neurodecode.ingest.base.blockwise_array`) are written without any rechunking.

    Parameters
    ----------
    row_bytes : int
        Bytes of one time step (all other dimensions).
    n_times : int, optional
        Length of the variable, to cap both sizes.
    chunk_bytes, shard_chunks : int
        Target chunk size and chunks per shard.

    Returns
    -------
    chunk_rows, shard_rows : int
    """
    chunk_t = max(1, chunk_bytes // max(row_bytes, 1))
    shard_t = chunk_t * shard_chunks
    if n_times is not None:
        chunk_t = max(1, min(chunk_t, n_times))
        shard_t = max(1, min(shard_t, n_times))
    return int(chunk_t), int(shard_t)


def _prepare(
    ds: xr.Dataset, chunk_bytes: int, shard_chunks: int, clevel: int
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Rechunk time-aligned variables to whole shards and encode strings portably."""
    out = ds.copy()
    out.attrs = json.loads(json.dumps(ds.attrs, default=_json_default))
    encoding: dict[str, dict[str, Any]] = {}
    compressor = BloscCodec(cname="lz4", clevel=clevel, shuffle="shuffle")
    for name, var in ds.variables.items():
        if var.dtype.kind in "OUT":
            # Zarr's variable-length UTF-8 strings: portable, and no "unstable dtype" warning.
            out[name] = var.copy(data=as_str_array(var.values).astype(object))
            continue
        if var.dims[:1] != ("time",) or name == "time":
            continue
        row_bytes = var.dtype.itemsize * int(np.prod(var.shape[1:], dtype=np.int64))
        chunk_t, shard_t = time_chunks(row_bytes, var.shape[0], chunk_bytes, shard_chunks)
        inner = tuple(min(s, _MAX_CHANNELS_PER_CHUNK) for s in var.shape[1:])
        shard_inner = tuple(-(-s // c) * c for s, c in zip(var.shape[1:], inner, strict=True))
        out[name] = out[name].chunk(dict(zip(var.dims, (shard_t, *var.shape[1:]), strict=True)))
        encoding[name] = {
            "chunks": (chunk_t, *inner),
            "shards": (-(-shard_t // chunk_t) * chunk_t, *shard_inner),
            "compressors": (compressor,),
        }
    return out, encoding


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"attribute value {obj!r} of type {type(obj).__name__} is not JSON-serialisable"
    )


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename a complete temporary store to ``path``, replacing any store already there."""
    if path.exists():
        old = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)
    _fsync_dir(path.parent)


def _block_digest(block: np.ndarray) -> tuple[str, int]:
    """128-bit xxHash of a block (fast, non-cryptographic: it detects changes, not attacks)."""
    block = np.ascontiguousarray(block)
    bad = int((~np.isfinite(block)).sum()) if block.dtype.kind == "f" else 0
    return xxhash.xxh3_128_hexdigest(block.view(np.uint8).data), bad


def _fingerprint(ds: xr.Dataset, lazy_digests: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(ds.attrs, sort_keys=True).encode())
    for name in sorted(map(str, ds.variables)):
        var = ds.variables[name]
        h.update(f"{name}|{var.dims}|{var.shape}|{var.dtype}|".encode())
        if name in lazy_digests:
            h.update("".join(lazy_digests[name]).encode())
        elif var.dtype == object:
            h.update(json.dumps(np.asarray(var.values).tolist()).encode())
        else:
            h.update(np.ascontiguousarray(var.values).view(np.uint8).data)
    return h.hexdigest()


def _stored_fingerprint(path: Path) -> str:
    try:
        return str(zarr.open_group(path, mode="r", zarr_format=3).attrs.get("content_sha256", ""))
    except Exception:  # an unreadable store is never "identical"
        return ""


def _remove_stale_partials(path: Path) -> None:
    """Delete temporary stores of ``path`` left behind by writers that no longer run."""
    for entry in path.parent.iterdir():
        m = _PARTIAL.match(entry.name)
        if m and m["name"] == path.name and not _pid_alive(int(m["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _nbytes(ds: xr.Dataset) -> int:
    return int(sum(v.dtype.itemsize * v.size for v in ds.variables.values()))


def _disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def open_recording(path: str | os.PathLike, *, check: bool = True) -> xr.Dataset:
    """Open a recording store lazily.

    Parameters
    ----------
    path : path-like
        A store written by :func:`write_recording`.
    check : bool
        Validate the schema (metadata only; no sample is read).

    Returns
    -------
    xarray.Dataset
        Time-aligned variables (``signal``, ``behavior_*``, ``movie``) are Dask arrays chunked by
        shard; the small tables (events, intervals, channel coordinates) are loaded.

    Raises
    ------
    FileNotFoundError
        If there is no store at ``path``.
    SchemaError
        If the store is not a neurodecode recording or fails validation.
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"no recording store at {path}")
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)
        group = zarr.open_group(path, mode="r", zarr_format=3)
    except Exception as err:
        raise SchemaError([f"the store cannot be read: {err}"], str(path)) from err
    if not ds.attrs.get(_MARKER):
        raise SchemaError(
            ["the store was not written by neurodecode (no completion marker)"], str(path)
        )
    ds = _decode(ds, group)
    if check:
        validate(ds, where=str(path))
    return ds


def _decode(ds: xr.Dataset, group: zarr.Group) -> xr.Dataset:
    """Chunk time-aligned variables by shard, load the small tables, restore unicode strings."""
    out = {}
    for name, var in ds.variables.items():
        if var.dims[:1] == ("time",) and name != "time":
            arr = group[name]
            out[name] = var.chunk(dict(zip(var.dims, arr.shards or arr.chunks, strict=True)))
        elif var.dtype.kind in "OUT" or name in STRING_VARIABLES:
            out[name] = var.copy(
                data=as_str_array(var.values) if var.size else np.array([], dtype="<U1")
            )
        else:
            out[name] = var.load()
    decoded = xr.Dataset(
        {n: out[n] for n in sorted(ds.data_vars, key=lambda n: (n != "signal", n))},
        coords={n: out[n] for n in sorted(ds.coords)},
        attrs=ds.attrs,
    )
    for key in ("content_sha256", _MARKER):
        decoded.attrs.pop(key, None)
    return decoded


def find_recordings(root: str | os.PathLike) -> list[Path]:
    """List the recording stores below ``root`` (or ``root`` itself if it is one).

    Parameters
    ----------
    root : path-like
        A store or a folder of stores.

    Returns
    -------
    list of Path
        Sorted store paths; hidden temporary stores are never listed.
    """
    root = Path(root)
    if (root / "zarr.json").is_file():
        return [root]
    return sorted(p for p in _walk_stores(root))


def _walk_stores(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if (entry / "zarr.json").is_file():
            if _is_recording(entry):
                yield entry
        else:
            yield from _walk_stores(entry)


def _is_recording(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return True  # a damaged store is listed so that validation reports it
    return bool(meta.get("attributes", {}).get(_MARKER))


def write_stimuli(
    path: str | os.PathLike,
    images: np.ndarray,
    classes: np.ndarray,
    params: np.ndarray | None = None,
) -> WriteResult:
    """Write stimulus images (referenced by events' ``value``) atomically to a Zarr store.

    Parameters
    ----------
    path : path-like
        Store path, conventionally ``<root>/<dataset>/stimuli.zarr``.
    images : ndarray, shape (n_images, height, width) or (n_images, height, width, 3)
        Pixel values in [0, 1].
    classes : ndarray, shape (n_images,)
        Class index of each image.
    params : ndarray, shape (n_images, n_params), optional
        Ground-truth generative parameters of each image (simulations).

    Returns
    -------
    WriteResult
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    dims = ("image", "y_px", "x_px", "rgb")[: images.ndim]
    ds = xr.Dataset(
        {
            "images": (dims, np.asarray(images, np.float32)),
            "image_class": ("image", np.asarray(classes, np.int32)),
        }
    )
    if params is not None:
        ds["image_params"] = (("image", "param"), np.asarray(params, np.float64))
    start = _time.perf_counter()
    try:
        ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False)
        fingerprint = _fingerprint(ds, {})
        zarr.open_group(tmp, mode="r+", zarr_format=3).attrs["content_sha256"] = fingerprint
        if path.exists() and _stored_fingerprint(path) == fingerprint:
            shutil.rmtree(tmp)
            status = "unchanged"
        else:
            status = "replaced" if path.exists() else "created"
            _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WriteResult(
        path, status, fingerprint, _nbytes(ds), _disk_usage(path), _time.perf_counter() - start
    )


def store_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Summarise one recording store without reading its samples.

    Parameters
    ----------
    path : path-like
        A recording store.

    Returns
    -------
    dict
        Identity, shape, sampling rate, duration, channel types, events per label, splits,
        size on disk and in memory, chunking and provenance.
    """
    from .schema import events_frame, intervals_frame

    ds = open_recording(path)
    sig = ds["signal"]
    arr = zarr.open_array(Path(path) / "signal", mode="r", zarr_format=3)
    types, counts = np.unique(ds["ch_type"].values, return_counts=True)
    ev = events_frame(ds)
    iv = intervals_frame(ds)
    iv["duration"] = iv["stop"] - iv["start"]
    sfreq = float(ds.attrs["sfreq"])
    return {
        "path": str(path),
        "recording": recording_label(ds),
        "modality": ds.attrs["modality"],
        "n_times": int(sig.shape[0]),
        "n_channels": int(sig.shape[1]),
        "sfreq": sfreq,
        "duration_s": float(sig.shape[0] / sfreq),
        "ch_types": {str(t): int(c) for t, c in zip(types, counts, strict=True)},
        "events": {str(k): int(v) for k, v in ev["label"].value_counts().sort_index().items()},
        "splits": {str(k): float(v) for k, v in iv.groupby("split")["duration"].sum().items()},
        "variables": sorted(str(n) for n in ds.data_vars),
        "chunks": list(arr.chunks),
        "shards": list(arr.shards) if arr.shards else None,
        "nbytes": _nbytes(ds),
        "nbytes_stored": _disk_usage(Path(path)),
        "source": ds.attrs["source"],
        "history": ds.attrs["history"],
    }
