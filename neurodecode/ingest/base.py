"""What every reader shares: errors that name the file, provenance, lazy block-wise arrays.

A reader is a function ``read_<format>(path, *, subject=None, session=None, task=None, run=None,
**options) -> xarray.Dataset`` that returns a recording (see :mod:`neurodecode.schema`) whose
time-aligned variables are Dask arrays: nothing is loaded until the store writes it, chunk by
chunk. Each block is read by a picklable function of ``(start, stop)`` that reopens the file, so
the graph runs on any ``dask.distributed`` worker.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["IngestError", "blockwise_array", "file_sha256", "source_info"]


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
