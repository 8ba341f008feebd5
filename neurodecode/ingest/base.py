"""What every reader shares: errors that name the file, provenance, lazy block-wise arrays.

A reader is a function ``read_<format>(path, *, subject=None, session=None, task=None, run=None,
**options) -> xarray.Dataset`` that returns a recording (see :mod:`neurodecode.schema`) whose
time-aligned variables are Dask arrays: nothing is loaded until the store writes it, chunk by
chunk. Each block is read by a picklable function of ``(start, stop)`` that reopens the file, so
the graph runs on any ``dask.distributed`` worker.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

__all__ = [
    "IngestError",
    "bids_entities",
    "bids_label",
    "blockwise_array",
    "check_gzip",
    "check_if_gzip",
    "companion_info",
    "events_source",
    "file_sha256",
    "file_stamp",
    "frame_digest",
    "read_events_table",
    "read_table_columns",
    "read_tsv",
    "recording_identity",
    "refuse_event_map",
    "snake_case",
    "source_info",
]

#: The identity fields of a recording, in order.
_IDENTITY_KEYS = ("subject", "session", "task", "run")


class IngestError(ValueError):
    """A source file cannot be ingested; the message names the file and the problem.

    Parameters
    ----------
    path : path-like
        The offending file.
    problem : str
        What is wrong, as a sentence.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Rebuilt from (path, problem), so that distributed workers can send it back.
        return (type(self), (self.path, self.problem))


def file_sha256(path: str | os.PathLike, *, block: int = 1 << 22) -> str:
    """Return the SHA-256 of a file (or of every file under a folder, in sorted order).

    Parameters
    ----------
    path : path-like
        A file or a folder (e.g. a suite2p plane folder).
    block : int
        Read size in bytes.

    Returns
    -------
    str
        Hex digest.
    """
    path = Path(path)
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, block)


@lru_cache(maxsize=1024)
def _sha256_cached(path: str, size: int, mtime_ns: int, block: int) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(block):
                h.update(chunk)
    return h.hexdigest()


def source_info(
    path: str | os.PathLike, reader: str, reader_version: str, **extra: Any
) -> dict[str, Any]:
    """Return the ``source`` attribute of a recording read from ``path``.

    Parameters
    ----------
    path : path-like
        Source file or folder.
    reader : str
        Dotted name of the reader function.
    reader_version : str
        Version of the library that parsed the file (e.g. ``mne.__version__``).
    **extra
        Further JSON-serialisable fields (e.g. companion files and their hashes).

    Returns
    -------
    dict
        ``path``, ``sha256``, ``reader``, ``reader_version`` and the extras.
    """
    return {
        "path": str(Path(path).resolve()),
        "sha256": file_sha256(path),
        "reader": reader,
        "reader_version": str(reader_version),
        **extra,
    }


def companion_info(path: str | os.PathLike) -> dict[str, str]:
    """Return the provenance of a companion file (a mask, events table, sidecar...).

    Parameters
    ----------
    path : path-like
        The companion file or folder.

    Returns
    -------
    dict
        ``path`` (resolved) and ``sha256`` (see :func:`file_sha256`).
    """
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def file_stamp(path: str | os.PathLike) -> tuple[int, int]:
    """Return the size and modification time of a file, to key per-process caches.

    A block function that keeps a file open (``functools.lru_cache`` of the opened file) takes
    the stamp as part of its cache key, so that a file changed on disk is opened again.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    tuple of int
        ``(size in bytes, modification time in nanoseconds)``.
    """
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def bids_label(text: Any) -> str:
    """Return ``text`` reduced to a BIDS label: its ASCII letters and digits.

    Parameters
    ----------
    text : object
        Any value; it is converted with :class:`str` first.

    Returns
    -------
    str
        The alphanumeric characters of ``text``, or ``"unknown"`` when it has none.
    """
    return re.sub(r"[^A-Za-z0-9]", "", str(text)) or "unknown"


def snake_case(name: Any, default: str = "") -> str:
    """Return a name in snake case, as covariates are stored (``behavior_<name>``).

    ``runningSpeed`` becomes ``running_speed``; every run of characters other than ASCII
    letters and digits becomes one ``_``, and ``_`` at either end is dropped.

    Parameters
    ----------
    name : object
        The name; it is converted with :class:`str` first.
    default : str
        What to return when nothing is left (the name has no letter or digit).

    Returns
    -------
    str
        The lower-case name, or ``default``.
    """
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name))
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or default


def bids_entities(path_or_name: str | os.PathLike) -> dict[str, str | None]:
    """Return the BIDS entities of a file name (``sub-01_task-rest_eeg.edf``).

    Parameters
    ----------
    path_or_name : path-like or str
        A file (only its name is parsed) or a file name.

    Returns
    -------
    dict
        Entity names (``subject``, ``session``, ``task``, ``run``...) to values, as
        :func:`mne_bids.get_entities_from_fname` returns them (None when absent); empty when
        the name cannot be parsed.
    """
    from mne_bids import get_entities_from_fname

    try:
        return get_entities_from_fname(Path(path_or_name).name, on_error="ignore",
                                       verbose="error")
    except (ValueError, KeyError):
        return {}


def recording_identity(
    path_or_name: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    task: str | None = None,
    run: str | int | None = None,
    inferred: Mapping[str, Any] | None = None,
    default_task: str = "unknown",
    stem: str | None = None,
) -> dict[str, str]:
    """Return the subject, session, task and run of a recording read from a file.

    Each field is the first of these that is neither None nor empty: the explicit argument,
    the BIDS entity of the file name (see :func:`bids_entities`), the value in ``inferred``
    (reduced with :func:`bids_label`), and the default: the file stem reduced with
    :func:`bids_label` as subject, ``"01"`` as session and run, ``default_task`` as task.

    Parameters
    ----------
    path_or_name : path-like or str
        The source file or folder (only its name is used), or its name.
    subject, session, task, run : str, optional
        Explicit identity; converted with :class:`str`.
    inferred : mapping, optional
        What the file itself declares (e.g. the subject id of an NWB file), by field name.
    default_task : str
        Task when neither the arguments, the name nor ``inferred`` give one.
    stem : str, optional
        Stem of the default subject; by default the name up to its first dot.

    Returns
    -------
    dict of str to str
        ``subject``, ``session``, ``task`` and ``run``.
    """
    name = Path(path_or_name).name
    entities = bids_entities(name)
    declared = {k: bids_label(v) for k, v in (inferred or {}).items() if _present(v)}
    defaults = {"subject": bids_label(name.split(".")[0] if stem is None else stem),
                "session": "01", "task": default_task, "run": "01"}
    given = {"subject": subject, "session": session, "task": task, "run": run}
    return {
        key: str(next((v for v in (given[key], entities.get(key), declared.get(key))
                       if _present(v)), defaults[key]))
        for key in _IDENTITY_KEYS
    }


def _present(value: Any) -> bool:
    return value is not None and str(value) != ""


def refuse_event_map(path: str | os.PathLike, event_map: Mapping[str, str] | None) -> None:
    """Refuse a non-empty ``event_map`` for a file that holds no events.

    Parameters
    ----------
    path : path-like
        The file being read.
    event_map : mapping, optional
        The ``event_map`` the reader was given.

    Raises
    ------
    IngestError
        If ``event_map`` is not empty.
    """
    if event_map:
        raise IngestError(path, f"event_map {dict(event_map)!r} was given but the file holds no "
                                "events to map")


def read_table_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV table (tab-separated when the name ends in ``.tsv``) as arrays by column.

    Parameters
    ----------
    path : path-like
        The table, with a header line.

    Returns
    -------
    dict of str to ndarray
        One array per column, keyed by the column name.

    Raises
    ------
    OSError, ValueError
        As :func:`pandas.read_csv` raises them; callers say which file and what it should hold.
    """
    import pandas as pd

    sep = "\t" if Path(path).suffix.lower() == ".tsv" else ","
    frame = pd.read_csv(path, sep=sep)
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def blockwise_array(
    read_block: Callable[[int, int], np.ndarray],
    shape: tuple[int, ...],
    dtype: Any,
    *,
    chunk_rows: int | None = None,
    name: str | None = None,
) -> da.Array:
    """Build a lazy Dask array whose row blocks are read on demand.

    Parameters
    ----------
    read_block : callable
        ``read_block(start, stop)`` returns rows ``start:stop`` as an array of shape
        ``(stop - start, *shape[1:])``. Must be picklable (a module-level function or a
        :func:`functools.partial` of one) so that distributed workers can run it.
    shape : tuple of int
        Full shape; the first axis is time.
    dtype : dtype
        Data type of the blocks.
    chunk_rows : int, optional
        Rows per block; by default one store shard (see :func:`neurodecode.store.time_chunks`),
        so that the store writes each block as it comes, without rechunking.
    name : str, optional
        Dask key prefix; pass a deterministic one (e.g. from the file hash and options) so that
        the same source gives the same graph.

    Returns
    -------
    dask.array.Array
    """
    from ..store import time_chunks

    n = int(shape[0])
    row_bytes = np.dtype(dtype).itemsize * int(np.prod(shape[1:], dtype=np.int64))
    if chunk_rows is None:
        chunk_rows = time_chunks(row_bytes)[1]
    chunk_rows = int(min(max(chunk_rows, 1), max(n, 1)))
    starts = np.arange(0, n, chunk_rows)
    chunks = (tuple(int(min(chunk_rows, n - s)) for s in starts), *((int(s),) for s in shape[1:]))
    return da.map_blocks(
        _call_block,
        read_block,
        dtype=dtype,
        chunks=chunks,
        meta=np.empty((0,) * len(shape), dtype=dtype),
        name=name,
    )


def _call_block(read_block: Callable[[int, int], np.ndarray], block_info: Mapping | None = None):
    (start, stop), *_ = block_info[None]["array-location"]
    out = np.asarray(read_block(start, stop))
    expected = (stop - start, *block_info[None]["chunk-shape"][1:])
    if out.shape != expected:
        raise ValueError(f"reader returned a block of shape {out.shape}, expected {expected}")
    return out.astype(block_info[None]["dtype"], copy=False)


# Compressed files and BIDS tables (shared by the EEG, fMRI and calcium readers)
# --------------------------------------------------------------------------------------------

#: Bytes decompressed at a time by :func:`check_gzip`.
_GZIP_BLOCK = 1 << 22


def check_gzip(path: str | os.PathLike) -> None:
    """Refuse a gzip file whose stream is corrupt or truncated, before anything reads it.

    Readers that slice a ``.gz`` file (nibabel's array proxies, pandas) never reach the end of
    its stream, where gzip stores the CRC-32 of the data, so flipped bytes in the middle come
    out as wrong samples. This decompresses the whole stream once, a block at a time (bounded
    memory), and checks it; the outcome is cached per file and stamp (size, modification time),
    so a second read of an unchanged file costs nothing.

    Parameters
    ----------
    path : path-like
        A gzip-compressed file (``.nii.gz``, ``.tsv.gz``, ``.fif.gz``...).

    Raises
    ------
    IngestError
        If the stream fails its CRC or length check, holds invalid deflate data, ends before
        its end marker, or is not gzip at all; the message names the file and says it is
        corrupt.
    """
    path = Path(path)
    problem = _gzip_problem(str(path.resolve()), file_stamp(path))
    if problem is not None:
        raise IngestError(path, problem)


@lru_cache(maxsize=256)
def _gzip_problem(path: str, stamp: tuple[int, int]) -> str | None:
    """What is wrong with the gzip stream of ``path`` (None when it checks out)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic != b"\x1f\x8b":
            return ("is not gzip-compressed although its name ends in .gz (it does not start "
                    "with the gzip magic bytes), so it cannot be read")
        with gzip.open(path, "rb") as fh:
            while fh.read(_GZIP_BLOCK):
                pass
    except EOFError as err:
        return (f"is a corrupt (truncated) gzip file: its stream ends before the end marker, "
                f"so it cannot be read to the end ({err})")
    except (gzip.BadGzipFile, zlib.error) as err:
        return (f"is a corrupt gzip file: its compressed data fail the gzip check, so it cannot "
                f"be read correctly ({type(err).__name__}: {err})")
    except OSError as err:
        return f"cannot be read ({type(err).__name__}: {err})"
    return None


def check_if_gzip(path: str | os.PathLike) -> None:
    """:func:`check_gzip` for a file whose name ends in ``.gz``; nothing for other files."""
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        check_gzip(path)


def read_tsv(source: str | os.PathLike, what: str) -> pd.DataFrame:
    """Read a BIDS-style TSV table (``n/a`` is missing; ``.tsv.gz`` checked for corruption).

    Parameters
    ----------
    source : path-like
        The table.
    what : str
        What it holds (``"events"``, ``"confounds"``), for error messages.

    Returns
    -------
    DataFrame

    Raises
    ------
    IngestError
        If the file is missing, corrupt or not a TSV table.
    """
    source = Path(source)
    if not source.is_file():
        raise IngestError(source, f"the {what} file does not exist")
    check_if_gzip(source)
    try:
        return pd.read_csv(source, sep="\t", na_values=["n/a", ""], keep_default_na=False)
    except Exception as err:  # pandas parser errors, bad encodings
        raise IngestError(source, f"cannot be read as a {what} TSV table ({err})") from err


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's values, index and column names (names a table given in memory)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
                          + "|".join(map(str, frame.columns)).encode()).hexdigest()


def read_events_table(
    events: str | os.PathLike | pd.DataFrame,
    *,
    event_map: Mapping[str, str] | None = None,
    where: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Read a BIDS events table as recording events (``onset``, ``duration``, ``label``, ``value``).

    Parameters
    ----------
    events : path-like or DataFrame
        A BIDS ``*_events.tsv`` (``n/a`` marks missing values; ``.tsv.gz`` is checked for
        corruption first) or a table with its columns: ``onset`` and ``duration`` in seconds
        from the first sample (a missing duration is 0), and optionally ``trial_type`` and
        ``value``.
    event_map : mapping of str to str, optional
        Renames labels (raw label to new label); labels not in it are kept.
    where : path-like, optional
        What error messages name when ``events`` is a DataFrame (by default the table file).

    Returns
    -------
    DataFrame
        One row per event in file order. ``label`` is ``trial_type`` (``"n/a"`` where it is
        missing), else ``value`` as text, else ``"event"``; ``value`` is ``value`` as a number
        (NaN where it is not numeric or absent).

    Raises
    ------
    IngestError
        If the file is missing, corrupt or not a table, lacks ``onset`` or ``duration``, or has
        onsets that are not numbers or durations that are negative or infinite.
    """
    if isinstance(events, pd.DataFrame):
        origin, table = Path(where) if where is not None else Path("<events table>"), events
    else:
        origin = Path(events)
        table = read_tsv(origin, "events")
    missing = sorted({"onset", "duration"} - set(table.columns))
    if missing:
        raise IngestError(origin, f"the events table lacks column(s) {missing}; it has "
                                  f"{list(table.columns)}")
    onset = pd.to_numeric(table["onset"], errors="coerce").to_numpy(np.float64)
    duration = pd.to_numeric(table["duration"], errors="coerce").fillna(0.0).to_numpy(np.float64)
    if not np.isfinite(onset).all():
        raise IngestError(origin, f"{int((~np.isfinite(onset)).sum())} event onset(s) are not "
                                  "numbers")
    if (duration < 0).any() or not np.isfinite(duration).all():
        raise IngestError(origin, "some event durations are negative or infinite")
    if "trial_type" in table:
        label = table["trial_type"].astype(object).where(table["trial_type"].notna(), "n/a")
    elif "value" in table:
        label = table["value"].astype(str)
    else:
        label = pd.Series("event", index=table.index)
    label = label.astype(str)
    if event_map:
        label = label.map(lambda lab: event_map.get(lab, lab))
    value = (pd.to_numeric(table["value"], errors="coerce") if "value" in table
             else pd.Series(np.nan, index=table.index))
    return pd.DataFrame({"onset": onset, "duration": duration, "label": label.to_numpy(),
                         "value": value.to_numpy(np.float64)})


def events_source(events: str | os.PathLike | pd.DataFrame) -> str:
    """How a recording's history names its events table: the resolved file, or a digest."""
    if isinstance(events, pd.DataFrame):
        return f"DataFrame sha256:{frame_digest(events)}"
    return str(Path(events).resolve())
