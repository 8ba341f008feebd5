"""Zarr v3 recording store: atomic, idempotent, chunked and sharded along time.

A recording is written under a hidden temporary name beside its final path and renamed into place
only once every chunk, the metadata and the content fingerprint are on disk, so a reader never
sees a half-written store, whatever kills the writer. Writing the same content again leaves the
existing store untouched (same bytes, same modification time), which is what lets workflows skip
up-to-date outputs.

Every store carries a content fingerprint (``content_sha256``: SHA-256 over the attributes, the
small variables and the 128-bit xxHash digest of every block of the time-aligned variables) and,
in its root attribute ``neurodecode_integrity``, what it takes to check it piecewise: the block
digests with the rows per block, a digest of each small variable and of the attributes, and the
size of every file. :func:`check_store` checks the metadata without reading a sample;
:func:`verify_recording` reads every block and names the variable and the time range of any
that changed.

Layout of a store root::

    <root>/<dataset>/sub-<subject>/ses-<session>/<modality>/task-<task>_run-<run>.zarr
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time as _time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import google_crc32c
import numpy as np
import xarray as xr
import xxhash
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from .schema import STRING_VARIABLES, SchemaError, as_str_array, recording_label, validate

__all__ = [
    "IntegrityError",
    "IntegrityReport",
    "StoredArray",
    "WriteResult",
    "check_store",
    "clean_label",
    "dataset_folder",
    "time_chunks",
    "find_recordings",
    "open_recording",
    "read_signal",
    "read_stimuli",
    "recording_path",
    "store_summary",
    "verify_recording",
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
#: Root attribute holding what verification needs (see :func:`verify_recording`).
_INTEGRITY = "neurodecode_integrity"
_RECORD_VERSION = 1
_MAX_LISTED = 5  # channels named in a NaN/Inf message
_MAX_PROBLEMS = 10  # block or file problems listed per variable


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
        / dataset_folder(dataset)
        / f"sub-{parts['subject']}"
        / f"ses-{parts['session']}"
        / clean_label(a["modality"])
        / f"task-{parts['task']}_run-{parts['run']}.zarr"
    )


def dataset_folder(name: str) -> str:
    """Return the folder a dataset's stores (and ingest records) live in under a store root.

    Every character other than ASCII letters, digits, ``.``, ``_``, ``+`` and ``-`` is removed;
    an empty result is ``"dataset"``.

    Parameters
    ----------
    name : str
        Dataset name (e.g. a catalog entry).

    Returns
    -------
    str
    """
    return re.sub(r"[^A-Za-z0-9._+-]", "", name) or "dataset"


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


class IntegrityError(SchemaError):
    """A store's content no longer matches what was recorded when it was written.

    A :class:`~neurodecode.schema.SchemaError`, so that handlers of invalid stores catch it too;
    ``problems`` lists every mismatch, each naming the variable and the block.
    """

    def __init__(self, problems: Sequence[str], where: str = "store") -> None:
        super().__init__(problems, where)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (f"{where} is damaged (its content no longer matches its record):\n{lines}",)


@dataclass(frozen=True)
class IntegrityReport:
    """What :func:`verify_recording` found.

    Attributes
    ----------
    path : Path
        The store.
    ok : bool
        True when every block, every variable, the attributes and the fingerprint match.
    problems : list of str
        One sentence per problem, naming the variable and the block (with its time range).
    nbytes_read : int
        Uncompressed bytes of samples read and digested.
    nbytes_stored : int
        Size of the store on disk.
    seconds : float
        Wall time of the verification.
    """

    path: Path
    ok: bool
    problems: list[str]
    nbytes_read: int
    nbytes_stored: int
    seconds: float

    def raise_if_failed(self) -> None:
        """Raise :class:`IntegrityError` listing the problems, if there are any.

        Raises
        ------
        IntegrityError
        """
        if not self.ok:
            raise IntegrityError(self.problems, str(self.path))


def check_store(path: str | os.PathLike, fingerprint: str | None = None) -> str | None:
    """Check a store's metadata: cheap enough for an up-to-date test, and no sample is read.

    The store must exist and carry the completion marker and the integrity record, every file
    listed when it was written must be there with its recorded size, every array's metadata
    must be readable, and its content fingerprint must equal ``fingerprint`` when given.

    Parameters
    ----------
    path : path-like
        A recording store.
    fingerprint : str, optional
        The expected ``content_sha256`` (e.g. from an ingest's skip record).

    Returns
    -------
    str or None
        None when all is well, else the first problem in one line, e.g. ``signal/ is missing``
        or ``signal/c/3/0 is 1234 bytes, 2048 recorded``.
    """
    problems, _, _ = _metadata_problems(Path(path), fingerprint)
    return problems[0] if problems else None


def verify_recording(path: str | os.PathLike, *, progress: bool = False) -> IntegrityReport:
    """Read every block of a store and compare it with the digests recorded when written.

    Time-aligned variables are streamed block by block on a thread pool (memory stays bounded
    by a few shards); each block's 128-bit xxHash is compared with its recorded digest and
    scanned for NaN/Inf. The other variables and the attributes are hashed again, and the whole
    content fingerprint is recomputed from them and the recorded block digests. The metadata
    checks of :func:`check_store` come first.

    Parameters
    ----------
    path : path-like
        A recording store.
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    IntegrityReport
        Its ``problems`` name the variable and the block, e.g. ``signal: block 3
        (t = 12.8-17.1 s) differs from its recorded digest``. Call
        :meth:`IntegrityReport.raise_if_failed` to get an :class:`IntegrityError` instead.
    """
    start = _time.perf_counter()
    path = Path(path)
    problems, attrs, record = _metadata_problems(path)

    def report(nbytes_read: int = 0) -> IntegrityReport:
        stored = _disk_usage(path) if path.is_dir() else 0
        secs = _time.perf_counter() - start
        return IntegrityReport(path, not problems, problems, nbytes_read, stored, secs)

    if attrs is None or record is None:
        return report()
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)
    except Exception as err:  # damaged array metadata: zarr and xarray raise many kinds
        problems.append(f"the store cannot be opened: {type(err).__name__}: {err}")
        return report()
    recorded: dict[str, dict[str, Any]] = record["variables"]
    present = {str(n): v for n, v in ds.variables.items()}
    for name in sorted(set(recorded) - set(present)):
        if not any(p.startswith(f"{name}/") for p in problems):
            problems.append(f"{name}: the array is missing")
    for name in sorted(set(present) - set(recorded)):
        problems.append(f"{name}: the array is not in the integrity record")
    known = {n: v for n, v in present.items() if n in recorded}
    blocks = _recorded_blocks(known, recorded, problems)
    times = np.asarray(known["time"].values) if "time" in known else None
    sfreq = attrs.get("sfreq")
    step = 1.0 / sfreq if isinstance(sfreq, int | float) and sfreq > 0 else 0.0

    def span(name: str, i: int) -> str:
        rows, n = recorded[name]["rows"], known[name].shape[0]
        lo, hi = i * rows, min((i + 1) * rows, n)
        if times is None or hi > len(times):
            return f"samples {lo}-{hi - 1}"
        return f"t = {_seconds(times[lo])}-{_seconds(times[hi - 1] + step)} s"

    readers: dict[str, Any] = {}
    for name in blocks:  # the fast reader where the layout allows, else xarray's
        try:
            readers[name] = StoredArray(path, name)
        except Exception:  # damaged metadata, or a layout StoredArray does not read
            readers[name] = None

    def scan(task: tuple[str, int]) -> tuple[Any, int]:
        name, i = task
        rows = recorded[name]["rows"]
        try:
            reader = readers[name]
            if reader is not None:
                block = reader.read(i * rows, (i + 1) * rows, threads=1)
            else:
                block = known[name][i * rows : (i + 1) * rows].values
        except Exception as err:  # codec or I/O errors of a damaged shard
            return err, 0
        return _scan_block(block), block.nbytes

    tasks = [(n, i) for n in blocks for i in range(len(recorded[n]["xxh3_128"]))]
    nbytes_read = 0
    results: dict[str, list[tuple[int, Any]]] = {n: [] for n in blocks}
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
        _progress(progress, len(tasks), f"verifying {path.name}") as advance,
    ):
        for (name, i), (result, nbytes) in zip(tasks, pool.map(scan, tasks), strict=True):
            results[name].append((i, result))
            nbytes_read += nbytes
            advance()
    for name, found in results.items():
        listed: list[str] = []
        for i, result in found:
            if isinstance(result, Exception):
                msg = f"cannot be read ({type(result).__name__}: {result})"
            elif result[0] != recorded[name]["xxh3_128"][i]:
                msg = "differs from its recorded digest"
            else:
                continue
            listed.append(f"{name}: block {i} ({span(name, i)}) {msg}")
        problems.extend(_capped(listed, f"{name}: and {{}} more damaged block(s)"))
        scans = [(i, r) for i, r in found if not isinstance(r, Exception)]
        nonfinite = _nonfinite_problem(ds, name, scans, recorded[name]["rows"], times)
        if nonfinite:
            problems.append(nonfinite)
    _check_parts(attrs, known, recorded, record, problems)
    return report(nbytes_read)


def _recorded_blocks(
    variables: dict[str, xr.Variable], recorded: dict[str, dict[str, Any]], problems: list[str]
) -> list[str]:
    """Names of the time-aligned variables whose block record fits their array."""
    names = []
    for name, var in variables.items():
        if not _is_time_aligned(name, var):
            continue
        entry = recorded[name]
        rows, digests = entry.get("rows"), entry.get("xxh3_128")
        if not isinstance(rows, int) or rows < 1 or not isinstance(digests, list):
            problems.append(f"{name}: the integrity record holds no block digests")
        elif len(digests) != -(-var.shape[0] // rows):
            problems.append(
                f"{name}: the integrity record lists {len(digests)} block(s) of {rows} rows "
                f"for {var.shape[0]} rows"
            )
        else:
            names.append(name)
    return names


def _check_parts(
    attrs: dict[str, Any],
    variables: dict[str, xr.Variable],
    recorded: dict[str, dict[str, Any]],
    record: dict[str, Any],
    problems: list[str],
) -> None:
    """Hash the attributes and small variables again and recompute the whole fingerprint."""
    content = {k: v for k, v in attrs.items() if k not in ("content_sha256", _MARKER, _INTEGRITY)}
    block_digests = {
        n: recorded[n].get("xxh3_128") or [] for n, v in variables.items() if _is_time_aligned(n, v)
    }
    try:
        fingerprint, again = _integrity_record(content, variables, block_digests, {})
    except Exception as err:  # an unreadable small variable
        problems.append(f"the small variables cannot be read: {type(err).__name__}: {err}")
        return
    explained = set(variables) != set(recorded)  # already reported, variable by variable
    if again["attrs_digest"] != record.get("attrs_digest"):
        problems.append("the attributes differ from their recorded digest")
        explained = True
    for name, entry in again["variables"].items():
        if "digest" in entry and entry["digest"] != recorded[name].get("digest"):
            problems.append(f"{name}: differs from its recorded digest")
            explained = True
    if fingerprint != attrs.get("content_sha256") and not explained:
        problems.append(
            f"the content fingerprint {str(attrs.get('content_sha256'))[:12]}... does not match "
            f"the one recomputed from the integrity record ({fingerprint[:12]}...)"
        )


def _metadata_problems(
    path: Path, fingerprint: str | None = None
) -> tuple[list[str], dict[str, Any] | None, dict[str, Any] | None]:
    """The metadata checks of :func:`check_store`, with the root attributes and the record."""
    if not path.is_dir():
        return ["the store does not exist"], None, None
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except FileNotFoundError:
        return ["zarr.json is missing"], None, None
    except (OSError, ValueError) as err:
        return [f"zarr.json cannot be read ({err})"], None, None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or not attrs.get(_MARKER):
        return ["the store has no completion marker (not written by neurodecode)"], None, None
    record = attrs.get(_INTEGRITY)
    if not (
        isinstance(record, dict)
        and record.get("version") == _RECORD_VERSION
        and isinstance(record.get("files"), dict)
        and isinstance(record.get("variables"), dict)
    ):
        msg = "the store has no integrity record (written by an older neurodecode: write it again)"
        return [msg], attrs, None
    problems: list[str] = []
    stored = str(attrs.get("content_sha256", ""))
    if fingerprint is not None and stored != fingerprint:
        problems.append(
            f"its content fingerprint {stored[:12]}... is not the expected {fingerprint[:12]}..."
        )
    missing_folders: set[str] = set()
    damaged: dict[str, dict[str, str]] = {}  # folder -> file -> problem
    for rel, size in record["files"].items():
        top = rel.split("/", 1)[0]
        if top in missing_folders:
            continue
        try:
            actual = (path / rel).stat().st_size
        except OSError:
            if "/" in rel and not (path / top).is_dir():
                missing_folders.add(top)
                problems.append(f"{top}/ is missing")
            else:
                damaged.setdefault(top, {})[rel] = f"{rel} is missing"
            continue
        if actual != size:
            damaged.setdefault(top, {})[rel] = f"{rel} is {actual} bytes, {size} recorded"
    for top, files in damaged.items():
        problems.extend(_capped(list(files.values()), f"{top}/: and {{}} more damaged file(s)"))
    for name in record["variables"]:
        if name in missing_folders or f"{name}/zarr.json" in damaged.get(name, {}):
            continue
        try:
            node = json.loads((path / name / "zarr.json").read_text())
        except (OSError, ValueError):
            problems.append(f"{name}/zarr.json cannot be read")
            continue
        if not isinstance(node, dict) or node.get("node_type") != "array":
            problems.append(f"{name}/zarr.json is not the metadata of an array")
    return problems, attrs, record


def _capped(lines: list[str], more: str) -> list[str]:
    """The first lines of a list, then ``more`` formatted with how many were left out."""
    if len(lines) <= _MAX_PROBLEMS:
        return lines
    return [*lines[:_MAX_PROBLEMS], more.format(len(lines) - _MAX_PROBLEMS)]


@contextmanager
def _progress(show: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """A rich progress bar over ``total`` steps (a no-op when ``show`` is false)."""
    if not show:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def write_recording(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    if_exists: Literal["update", "replace", "error", "skip"] = "update",
    chunk_bytes: int = CHUNK_BYTES,
    shard_chunks: int = SHARD_CHUNKS,
    clevel: int = 5,
    progress: bool = False,
) -> WriteResult:
    """Validate a recording and write it atomically to a Zarr v3 store.

    The data are streamed chunk by chunk through Dask (a ``dask.distributed`` client, if one is
    active, does the work), so memory stays bounded by a few shards whatever the recording size.
    The same pass digests every block and finds NaN/Inf samples, which abort the write. The
    store keeps what :func:`verify_recording` and :func:`check_store` need: the per-block
    digests of the time-aligned variables, a digest of every other variable and of the
    attributes, and the size of every file.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (see :mod:`neurodecode.schema`); NumPy- or Dask-backed.
    path : path-like
        Final store path (conventionally ending in ``.zarr``).
    if_exists : {"update", "replace", "error", "skip"}
        ``update`` writes and then keeps the existing store if it is complete (see
        :func:`check_store`) and its content is identical, or swaps in the new one;
        ``replace`` always swaps in the new store; ``error`` raises :class:`FileExistsError`;
        ``skip`` returns at once.
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
        If the recording does not follow the schema or holds NaN/Inf (the message names the
        variable, the channels and the first bad time); nothing is written.
    FileExistsError
        If ``if_exists="error"`` and the store exists.
    ValueError
        If ``if_exists`` is not one of the modes above.
    """
    import dask

    start = _time.perf_counter()
    path = Path(path)
    if if_exists not in ("update", "replace", "error", "skip"):
        raise ValueError(
            f"if_exists must be 'update', 'replace', 'error' or 'skip', got {if_exists!r}"
        )
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
    created = _make_parents(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _remove_stale_partials(path)
        prepared, encoding = _prepare(ds, chunk_bytes, shard_chunks, clevel)
        delayed_write = prepared.to_zarr(
            tmp, mode="w-", zarr_format=3, consolidated=False, encoding=encoding, compute=False
        )
        aligned = [n for n, v in prepared.variables.items() if _is_time_aligned(n, v)]
        scans = {
            n: [dask.delayed(_scan_block)(b) for b in prepared[n].data.to_delayed().ravel()]
            for n in aligned
        }
        _, scans = _compute(delayed_write, scans, progress=progress)
        rows = {n: int(prepared[n].data.chunks[0][0]) for n in aligned}
        times = prepared["time"].values
        bad = [
            _nonfinite_problem(prepared, n, list(enumerate(scans[n])), rows[n], times)
            for n in aligned
        ]
        if any(bad):
            raise SchemaError([b for b in bad if b], label)
        digests = {n: [scan[0] for scan in scans[n]] for n in aligned}
        fingerprint, record = _integrity_record(prepared.attrs, prepared.variables, digests, rows)
        record["files"] = _file_sizes(tmp)
        group = zarr.open_group(tmp, mode="r+", zarr_format=3)
        group.attrs.update({"content_sha256": fingerprint, _MARKER: True, _INTEGRITY: record})
        status = "created"
        if path.exists():
            if if_exists == "update" and check_store(path, fingerprint) is None:
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
        _remove_empty(created)
        raise
    return WriteResult(
        path, status, fingerprint, _nbytes(ds), _disk_usage(path), _time.perf_counter() - start
    )


def _make_parents(path: Path) -> list[Path]:
    """Create the folders above ``path``; return those that did not exist, deepest first."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        _remove_empty(missing)
        raise
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's store), or already gone
            return


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
            # Zarr's variable-length UTF-8 strings: portable, no "unstable dtype" warning, and
            # (unlike object arrays, stored as float64 when empty) still strings when empty.
            text = as_str_array(var.values).astype(np.dtypes.StringDType())
            out[name] = var.copy(data=text)
            continue
        if not _is_time_aligned(name, var):
            if var.chunks is not None:  # small tables are hashed (and opened) whole
                out[name] = out[name].load()
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


def _is_time_aligned(name: Hashable, var: xr.Variable) -> bool:
    """Whether ``var`` is stored in shards along time (``signal``, ``behavior_*``, ``movie``)."""
    return var.dims[:1] == ("time",) and name != "time"


def _scan_block(block: np.ndarray) -> tuple[str, int, int, np.ndarray | None]:
    """Digest a block and locate its NaN/Inf values.

    Returns
    -------
    digest : str
        128-bit xxHash of the bytes (fast, non-cryptographic: it detects changes, not attacks).
    n_bad : int
        Number of NaN/Inf values.
    first_row : int
        Row of the first NaN/Inf value in the block (-1 if none).
    per_column : ndarray or None
        NaN/Inf count of each column (all dimensions after time, flattened); None if none.
    """
    block = np.ascontiguousarray(block)
    digest = xxhash.xxh3_128_hexdigest(block.view(np.uint8).data)
    if block.dtype.kind != "f" or np.isfinite(block).all():
        return digest, 0, -1, None
    bad = ~np.isfinite(block.reshape(len(block), -1))
    per_column = bad.sum(axis=0)
    return digest, int(per_column.sum()), int(np.argmax(bad.any(axis=1))), per_column


def _nonfinite_problem(
    ds: xr.Dataset,
    name: str,
    scans: list[tuple[int, tuple[str, int, int, np.ndarray | None]]],
    rows: int,
    times: np.ndarray | None,
) -> str | None:
    """One sentence naming the NaN/Inf values of ``name`` from its block scans, or None."""
    bad = [(i, scan) for i, scan in scans if scan[1]]
    if not bad:
        return None
    total = sum(scan[1] for _, scan in bad)
    first = min(i * rows + scan[2] for i, scan in bad)
    where = ""
    var = ds.variables[name]
    if var.dims[1:] == ("channel",) and "channel" in ds.variables:
        columns = np.flatnonzero(sum(scan[3] for _, scan in bad))
        names = [str(c) for c in ds["channel"].values[columns[:_MAX_LISTED]]]
        more = ", ..." if len(columns) > _MAX_LISTED else ""
        plural = "s" if len(columns) != 1 else ""
        where = f" in channel(s) {', '.join(names)}{more} ({len(columns)} channel{plural})"
    at = f"sample {first}"
    if times is not None and first < len(times):
        at = f"t = {_seconds(times[first])} s ({at})"
    return f"{name} holds {total} NaN/Inf value(s){where}, first at {at}"


def _seconds(t: float) -> str:
    """``t`` with millisecond precision and no trailing zeros (``12.8``, ``3.215``)."""
    return f"{float(t):.3f}".rstrip("0").rstrip(".")


def _fingerprint_parts(
    attrs: Mapping[str, Any],
    variables: Mapping[Hashable, xr.Variable],
    block_digests: Mapping[str, list[str]],
) -> Iterator[tuple[str | None, list[Any]]]:
    """The byte strings that the content fingerprint hashes, in order, one group per part.

    The first part (name None) is the attributes; then, by variable name, each variable's
    name, dims, shape and dtype followed by its block digests (time-aligned variables, whose
    name is in ``block_digests``) or by its values (every other variable).
    """
    yield None, [json.dumps(dict(attrs), sort_keys=True).encode()]
    for name in sorted(map(str, variables)):
        var = variables[name]
        text = var.dtype.kind in "OUT"
        header = f"{name}|{var.dims}|{var.shape}|{'object' if text else var.dtype}|".encode()
        if name in block_digests:
            payload: Any = "".join(block_digests[name]).encode()
        elif text:
            payload = json.dumps(np.asarray(var.values).tolist()).encode()
        else:
            payload = np.ascontiguousarray(var.values).view(np.uint8).data
        yield name, [header, payload]


def _integrity_record(
    attrs: Mapping[str, Any],
    variables: Mapping[Hashable, xr.Variable],
    block_digests: Mapping[str, list[str]],
    rows: Mapping[str, int],
) -> tuple[str, dict[str, Any]]:
    """The content fingerprint and the per-part digests that let it be verified piecewise."""
    whole = hashlib.sha256()
    record: dict[str, Any] = {"version": _RECORD_VERSION, "variables": {}}
    for name, chunks in _fingerprint_parts(attrs, variables, block_digests):
        part = xxhash.xxh3_128()
        for chunk in chunks:
            whole.update(chunk)
            part.update(chunk)
        if name is None:
            record["attrs_digest"] = part.hexdigest()
        elif name in block_digests:
            entry = {"rows": rows.get(name), "xxh3_128": list(block_digests[name])}
            record["variables"][name] = entry
        else:
            record["variables"][name] = {"digest": part.hexdigest()}
    return whole.hexdigest(), record


def _fingerprint(ds: xr.Dataset, block_digests: Mapping[str, list[str]]) -> str:
    return _integrity_record(ds.attrs, ds.variables, block_digests, {})[0]


def _file_sizes(root: Path) -> dict[str, int]:
    """Size of every file of a store but its root ``zarr.json`` (which holds this manifest)."""
    files = (f for f in root.rglob("*") if f.is_file())
    sizes = {f.relative_to(root).as_posix(): f.stat().st_size for f in files}
    sizes.pop("zarr.json", None)
    return dict(sorted(sizes.items()))


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
    ds = _decode(ds, group, path)
    if check:
        validate(ds, where=str(path))
    return ds


def _decode(ds: xr.Dataset, group: zarr.Group, path: Path) -> xr.Dataset:
    """Chunk time-aligned variables by shard, load the small tables, restore unicode strings."""
    out = {}
    for name, var in ds.variables.items():
        if var.dims[:1] == ("time",) and name != "time":
            out[name] = _sharded_variable(path, str(name), var, group)
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
    for key in ("content_sha256", _MARKER, _INTEGRITY):
        decoded.attrs.pop(key, None)
    return decoded


def _sharded_variable(path: Path, name: str, var: xr.Variable, group: zarr.Group) -> xr.Variable:
    """A time-aligned variable as a Dask array of one block per shard.

    The blocks are read by :class:`StoredArray` when the stored values are the values (no CF
    decoding by xarray changes them), else by xarray's own lazy Zarr array.
    """
    import dask.array as da
    from dask.base import tokenize

    arr = group[name]
    shards = arr.shards or arr.chunks
    fill = var.encoding.get("_FillValue")
    decoded = any(k in var.encoding for k in ("scale_factor", "add_offset")) or (
        fill is not None and not (var.dtype.kind == "f" and np.isnan(fill))
    )
    if decoded or np.dtype(var.dtype) != np.dtype(arr.dtype):
        return var.chunk(dict(zip(var.dims, shards, strict=True)))
    reader = StoredArray(path, name)
    token = tokenize(os.fspath(path.resolve()), name, group.attrs.get("content_sha256"), shards)
    data = da.from_array(
        reader,
        chunks=tuple(min(s, n) for s, n in zip(shards, var.shape, strict=True)),
        name=f"{name}-{token}",
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * var.ndim, var.dtype),
    )
    return var.copy(deep=False, data=data)


#: Offset and size of a chunk (or shard) that was never written, in a Zarr v3 shard index.
_NO_CHUNK = 2**64 - 1
#: Threads of the pool that :class:`StoredArray` decompresses on (one per CPU).
_READ_THREADS = os.cpu_count() or 1
_read_local = threading.local()
_read_pools: dict[int, ThreadPoolExecutor] = {}
_read_pools_lock = threading.Lock()


class StoredArray:
    """One time-aligned variable of a recording store, read fast by time range.

    A time range is read shard by shard with plain ``pread`` calls: the shard's index (checked
    against its CRC32C) locates the chunks the range overlaps, and only those chunks are read
    and decompressed with Blosc (:mod:`numcodecs`), each straight into the output array when it
    lies whole inside the range. Reads of several chunks are spread over a thread pool (Blosc
    releases the GIL). Nothing else of the store is read. An array whose layout is not the one
    :func:`write_recording` writes (Zarr v3 shards of Blosc-compressed little-endian numbers,
    CRC32C-checked index at the end) is read with Zarr instead: slower, same values.

    Instances hold no open file and pickle as their path, so they can be used in Dask graphs
    and DataLoader workers. :func:`open_recording`'s Dask arrays read their blocks with it. An
    instance describes the store as it was opened: a store written again at the same path (a
    new folder swapped in) needs a new instance (:func:`read_signal` notices by itself).

    Parameters
    ----------
    path : path-like
        A recording store.
    variable : str
        A time-aligned variable (``signal``, ``behavior_<name>``, ``movie``).

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    chunks, shards : tuple of int
        Chunk shape (the unit of decompression) and shard shape (the unit of files; None if the
        array is not sharded), as :class:`zarr.Array` has them.
    chunk_rows, shard_rows : int
        Time steps per chunk and per shard.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no store or no array ``variable``.
    ValueError
        If ``variable`` is not time-aligned (not sharded along time).
    """

    def __init__(self, path: str | os.PathLike, variable: str = "signal") -> None:
        self.path, self.variable = Path(path), variable
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"no recording store at {self.path}")
        if not (self.path / variable / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} has no variable {variable!r}")
        self._array = zarr.open_array(self.path / variable, mode="r", zarr_format=3)
        meta = self._array.metadata
        if "time" not in (meta.dimension_names or ())[:1]:
            raise ValueError(f"{self.path}: {variable!r} is not a time-aligned variable")
        self.shape = tuple(int(s) for s in self._array.shape)
        self.dtype = np.dtype(self._array.dtype)
        self.chunk_rows = int(self._array.chunks[0])
        self.shard_rows = int((self._array.shards or self._array.chunks)[0])
        self.chunks = tuple(int(c) for c in self._array.chunks)
        self.shards = tuple(int(s) for s in self._array.shards) if self._array.shards else None
        self._fill = meta.fill_value
        self._grid = self._shard_grid()

    def __reduce__(self) -> tuple[Any, ...]:
        return StoredArray, (self.path, self.variable)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def _shard_grid(self) -> tuple[int, ...] | None:
        """Chunks per shard along each axis if the layout is the one written here, else None."""
        arr = self._array
        codecs = arr.metadata.codecs
        if arr.shards is None or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        sharding = codecs[0]
        inner, index = list(sharding.codecs), list(sharding.index_codecs)
        endian = [c.endian for c in (inner[0], index[0]) if isinstance(c, BytesCodec)]
        ok = (
            self.dtype.kind in "biuf"
            and np.little_endian
            and len(inner) == 2
            and isinstance(inner[1], BloscCodec)
            and len(index) == 2
            and isinstance(index[1], Crc32cCodec)
            and len(endian) == 2
            and all(e is None or e.value == "little" for e in endian)
            and sharding.index_location.value == "end"
            and all(s % c == 0 for s, c in zip(arr.shards, arr.chunks, strict=True))
            and all(s >= n for s, n in zip(arr.shards[1:], arr.shape[1:], strict=True))
        )
        return tuple(s // c for s, c in zip(arr.shards, arr.chunks, strict=True)) if ok else None

    def __getitem__(self, key: Any) -> np.ndarray:
        """NumPy indexing (what Dask's ``from_array`` calls); the time index is read with
        :meth:`read` on the calling thread."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            return self.read(threads=1)[key]
        t, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(t, slice) and t.step in (None, 1):
            start, stop, _ = t.indices(self.shape[0])
            return self.read(start, stop, threads=1)[(slice(None), *rest)]
        rows = np.arange(self.shape[0])[t]
        if rows.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return self.read(lo, hi, threads=1)[(rows - lo, *rest)]

    def read(
        self,
        start: int | None = None,
        stop: int | None = None,
        *,
        channels: Sequence[int] | np.ndarray | slice | None = None,
        out: np.ndarray | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """Read time steps ``start:stop`` (NumPy slice rules), optionally a subset of channels.

        Parameters
        ----------
        start, stop : int, optional
            Time indices; negative values count from the end, as in ``array[start:stop]``.
        channels : sequence of int, boolean mask or slice, optional
            Positions along the second axis (channels of ``signal``), in the order wanted.
        out : ndarray, optional
            Array of the result's shape and dtype to read into (e.g. a pinned buffer).
        threads : int, optional
            Most threads decompressing at once (default: one per CPU); 1 reads on the
            calling thread only (e.g. in a DataLoader worker).

        Returns
        -------
        ndarray
            ``out`` if given, else a new array of shape ``(n_times, *rest)``.

        Raises
        ------
        IndexError
            If a channel index is out of range.
        ValueError
            If ``out`` does not have the result's shape and dtype.
        IntegrityError
            If a shard or chunk the range needs is damaged (its index fails its CRC32C, it is
            truncated, or Blosc cannot decompress it).
        """
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        stop = max(start, stop)
        picks = None
        shape = (stop - start, *self.shape[1:])
        if channels is not None:
            if len(self.shape) < 2:
                raise ValueError(f"{self.path}: {self.variable!r} has no channel axis")
            picks = np.arange(self.shape[1])[channels].reshape(-1)
            shape = (stop - start, len(picks), *self.shape[2:])
        if out is None:
            out = np.empty(shape, self.dtype)
        elif out.shape != shape or out.dtype != self.dtype:
            raise ValueError(
                f"{self.path}: out has shape {out.shape} and dtype {out.dtype}; reading "
                f"{self.variable}[{start}:{stop}] needs shape {shape} and dtype {self.dtype}"
            )
        if out.size == 0:
            return out
        if self._grid is None:
            block = self._array[start:stop]
            out[...] = block if picks is None else block[:, picks]
            return out
        jobs = self._jobs(start, stop, threads)
        read = partial(self._read_shard_part, start=start, stop=stop, picks=picks, out=out)
        if len(jobs) == 1:
            for part in jobs[0]:
                read(part)
        else:
            for _ in _read_pool().map(lambda job: [read(part) for part in job], jobs):
                pass
        return out

    def shard_files(self, start: int | None = None, stop: int | None = None) -> list[Path]:
        """The shard files that :meth:`read` opens for time steps ``start:stop``.

        Parameters
        ----------
        start, stop : int, optional
            Time indices (NumPy slice rules).

        Returns
        -------
        list of Path
            One per shard the range overlaps (a shard never written is listed all the same).
        """
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        if stop <= start:
            return []
        first, last = start // self.shard_rows, (stop - 1) // self.shard_rows
        return [self._shard_path(s) for s in range(first, last + 1)]

    def _shard_path(self, shard: int) -> Path:
        key = self._array.metadata.encode_chunk_key((shard,) + (0,) * (len(self.shape) - 1))
        return self.path / self.variable / key

    def _jobs(self, start: int, stop: int, threads: int | None) -> list[list[tuple[int, int, int]]]:
        """Split the chunks of ``start:stop`` into at most ``threads`` runs of whole shards'
        parts ``(shard, first chunk, end chunk)``, of about equal numbers of chunks."""
        assert self._grid is not None
        per_shard = self._grid[0]
        first, end = start // self.chunk_rows, -(-stop // self.chunk_rows)
        n_jobs = max(1, min(threads or _READ_THREADS, _READ_THREADS, end - first))
        bounds = [first + (end - first) * k // n_jobs for k in range(n_jobs + 1)]
        jobs = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            parts, c = [], lo
            while c < hi:
                shard = c // per_shard
                part_end = min(hi, (shard + 1) * per_shard)
                parts.append((shard, c, part_end))
                c = part_end
            jobs.append(parts)
        return jobs

    def _read_shard_part(
        self,
        part: tuple[int, int, int],
        *,
        start: int,
        stop: int,
        picks: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        """Read chunks ``first:end`` (global time-chunk indices) of one shard into ``out``."""
        assert self._grid is not None
        shard, first, end = part
        file = self._shard_path(shard)
        where = f"{self.variable}/{file.relative_to(self.path / self.variable)}"
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:  # every chunk of the shard equals the fill value
            fd = -1
        try:
            index = self._shard_index(fd, where) if fd >= 0 else None
            rest_grid = list(np.ndindex(*self._grid[1:]))
            for c in range(first, end):
                local = c - shard * self._grid[0]
                for g in rest_grid:
                    entry = None if index is None else index[(local, *g)]
                    self._read_chunk(fd, where, entry, c, g, start, stop, picks, out)
        finally:
            if fd >= 0:
                os.close(fd)

    def _shard_index(self, fd: int, where: str) -> np.ndarray:
        """The shard's ``(offset, nbytes)`` per chunk, checked against its CRC32C."""
        assert self._grid is not None
        size = os.fstat(fd).st_size
        n = int(np.prod(self._grid)) * 16 + 4
        raw = os.pread(fd, n, max(size - n, 0))
        if len(raw) != n or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise IntegrityError(
                [f"{where}: the shard index fails its CRC32C check"], str(self.path)
            )
        index = np.frombuffer(raw, "<u8", count=(n - 4) // 8).reshape(*self._grid, 2)
        used = index[..., 0] != _NO_CHUNK
        if np.any(index[..., 0][used] + index[..., 1][used] > size - n):
            raise IntegrityError([f"{where}: the shard is truncated"], str(self.path))
        return index

    def _read_chunk(
        self,
        fd: int,
        where: str,
        entry: np.ndarray | None,
        c: int,
        g: tuple[int, ...],
        start: int,
        stop: int,
        picks: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        """Decompress one chunk (time chunk ``c``, position ``g`` in the shard along the other
        axes) and copy the part of it inside the request into ``out``."""
        r0 = c * self.chunk_rows
        a, b = max(r0, start), min(r0 + self.chunk_rows, stop)
        origin = [i * n for i, n in zip(g, self.chunks[1:], strict=True)]
        extent = [
            min(n, size - o)
            for n, size, o in zip(self.chunks[1:], self.shape[1:], origin, strict=True)
        ]
        if any(e <= 0 for e in extent):
            return  # padding of the shard beyond the array
        dst: list[Any] = [slice(a - start, b - start)]
        dst += [slice(o, o + e) for o, e in zip(origin, extent, strict=True)]
        src: list[Any] = [slice(a - r0, b - r0)] + [slice(0, e) for e in extent]
        cols = None
        if picks is not None:
            inside = (picks >= origin[0]) & (picks < origin[0] + extent[0])
            if not inside.any():
                return
            cols = picks[inside] - origin[0]
            dst[1] = slice(None) if inside.all() else inside
        if entry is None or int(entry[0]) == _NO_CHUNK:
            out[tuple(dst)] = self._fill
            return
        offset, nbytes = int(entry[0]), int(entry[1])
        compressed = _read_buffer("compressed", nbytes)
        if os.preadv(fd, [compressed], offset) != nbytes:
            raise IntegrityError([f"{where}: the shard is truncated"], str(self.path))
        whole = (
            a == r0
            and b == r0 + self.chunk_rows
            and picks is None
            and self.chunks[1:] == self.shape[1:]
            and out.flags.c_contiguous
        )
        try:
            if whole:
                blosc.decompress(compressed, out[a - start : b - start])
                return
            nbytes_chunk = int(np.prod(self.chunks)) * self.dtype.itemsize
            chunk = np.frombuffer(_read_buffer("chunk", nbytes_chunk), self.dtype)
            blosc.decompress(compressed, chunk)
        except (RuntimeError, ValueError) as err:
            raise IntegrityError(
                [f"{where}: time chunk {c} cannot be decompressed ({err})"], str(self.path)
            ) from err
        block = chunk.reshape(self.chunks)[tuple(src)]
        if cols is None:
            out[tuple(dst)] = block
        elif isinstance(dst[1], slice) and len(self.shape) == 2:
            np.take(block, cols, axis=1, out=out[dst[0]], mode="clip")
        else:
            out[tuple(dst)] = block[:, cols]


def _read_buffer(name: str, nbytes: int) -> memoryview:
    """A scratch buffer of ``nbytes`` owned by the calling thread (reused between reads)."""
    buf = getattr(_read_local, name, None)
    if buf is None or len(buf) < nbytes:
        buf = bytearray(nbytes)
        setattr(_read_local, name, buf)
    return memoryview(buf)[:nbytes]


def _read_pool() -> ThreadPoolExecutor:
    """This process's pool of reading threads (a forked child makes its own)."""
    pid = os.getpid()
    with _read_pools_lock:
        pool = _read_pools.get(pid)
        if pool is None:
            _read_pools.clear()
            pool = _read_pools[pid] = ThreadPoolExecutor(_READ_THREADS, "neurodecode-read")
        return pool


@lru_cache(maxsize=64)
def _stored_array(path: str, variable: str, stamp: tuple[int, ...], pid: int) -> StoredArray:
    return StoredArray(path, variable)


def read_signal(
    path: str | os.PathLike,
    start: int | None = None,
    stop: int | None = None,
    *,
    channels: Sequence[int] | np.ndarray | slice | None = None,
    variable: str = "signal",
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Read time steps ``start:stop`` of a store's signal (or another time-aligned variable).

    The fast path of :class:`StoredArray` (only the shards and chunks that the range overlaps
    are read, decompressed in parallel, straight into the result); the opened array's metadata
    is kept per process until the store changes. Equal to
    ``open_recording(path)[variable].values[start:stop][:, channels]``.

    Parameters
    ----------
    path : path-like
        A recording store.
    start, stop : int, optional
        Time indices (NumPy slice rules: ``None`` for the whole recording).
    channels : sequence of int, boolean mask or slice, optional
        Channels (positions along the second axis) to keep, in the order wanted.
    variable : str
        ``signal``, ``behavior_<name>`` or ``movie``.
    out : ndarray, optional
        Array of the result's shape and dtype to read into.
    threads : int, optional
        Most threads decompressing at once (default: one per CPU).

    Returns
    -------
    ndarray
        ``(n_times, n_channels, ...)`` in the stored dtype (float32 for ``signal``).

    Raises
    ------
    FileNotFoundError
        If there is no store at ``path`` or it has no ``variable``.
    IntegrityError
        If a shard the range needs is damaged.

    Examples
    --------
    >>> x = read_signal("rec.zarr", 0, 10_000, channels=[0, 3])  # doctest: +SKIP
    """
    meta = Path(path) / variable / "zarr.json"
    try:
        st = meta.stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        stamp = (0, 0, 0)
    array = _stored_array(os.fspath(path), variable, stamp, os.getpid())
    return array.read(start, stop, channels=channels, out=out, threads=threads)


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
    start = _time.perf_counter()
    created = _make_parents(path)
    try:
        dims = ("image", "y_px", "x_px", "rgb")[: images.ndim]
        ds = xr.Dataset(
            {
                "images": (dims, np.asarray(images, np.float32)),
                "image_class": ("image", np.asarray(classes, np.int32)),
            }
        )
        if params is not None:
            ds["image_params"] = (("image", "param"), np.asarray(params, np.float64))
        _remove_stale_partials(path)
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
        _remove_empty(created)
        raise
    return WriteResult(
        path, status, fingerprint, _nbytes(ds), _disk_usage(path), _time.perf_counter() - start
    )


def read_stimuli(
    path: str | os.PathLike, ids: Any = None
) -> dict[str, np.ndarray]:
    """Read stimulus images written by :func:`write_stimuli`, by id.

    An image's id is its index in the store (what events' ``value`` holds); only the chunks
    holding the images asked for are read.

    Parameters
    ----------
    path : path-like
        A stimulus store.
    ids : int or array-like of int, optional
        Image ids, in the order wanted (repeats allowed). Default: every image.

    Returns
    -------
    dict
        ``ids`` (int64 ``(n,)``), ``images`` (float32 ``(n, height, width[, 3])``),
        ``classes`` (int32 ``(n,)``) and, when the store has them, ``params`` (float64
        ``(n, n_params)``).

    Raises
    ------
    FileNotFoundError
        If there is no stimulus store at ``path``.
    ValueError
        If an id is not an integer between 0 and the number of images.
    """
    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
        images = group["images"]
    except (FileNotFoundError, KeyError) as err:
        raise FileNotFoundError(f"no stimulus store at {path}") from err
    n = int(images.shape[0])
    if ids is None:
        index = np.arange(n, dtype=np.int64)
    else:
        raw = np.atleast_1d(np.asarray(ids))
        if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iuf"):
            raise ValueError(f"{path}: stimulus ids must be integers, got {raw.dtype} {raw.shape}")
        index = raw.astype(np.int64)
        bad = (index != raw) | (index < 0) | (index >= n)
        if bad.any():
            raise ValueError(
                f"{path}: stimulus id {raw[bad][0].item()} does not exist (the store holds "
                f"ids 0 to {n - 1})"
            )
    unique, inverse = np.unique(index, return_inverse=True)
    out = {"ids": index}
    for key, name in (("images", "images"), ("classes", "image_class"), ("params", "image_params")):
        if name in group:
            arr = group[name]
            rows = arr.get_orthogonal_selection((unique,) + (slice(None),) * (arr.ndim - 1))
            out[key] = np.asarray(rows)[inverse]
    return out


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
