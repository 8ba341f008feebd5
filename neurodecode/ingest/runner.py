"""Ingest many files into recording stores, in parallel on a Dask cluster.

Each file is one task: read it lazily, check it against the dataset's expectations, write it
atomically. Tasks run on ``dask.distributed`` workers (a ``LocalCluster`` by default, any
scheduler address, or a dask-jobqueue ``SLURMCluster``); inside a task the file is streamed
chunk by chunk, so a worker's memory is bounded by a few shards. A failing file is reported with
its error and never stops or corrupts the others. A rerun skips every store whose source hash and
reader parameters are unchanged, without reading the source again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import zarr
from pydantic import BaseModel, ConfigDict, Field

from ..schema import SchemaError
from ..store import recording_path, write_recording
from .base import IngestError, file_sha256

__all__ = [
    "READERS",
    "ClusterConfig",
    "IngestResult",
    "IngestTask",
    "get_reader",
    "guess_reader",
    "make_cluster",
    "plan_entry",
    "plan_files",
    "run_ingest",
]

logger = logging.getLogger(__name__)

#: Reader names used by the catalog and the command line → ``module:function``.
READERS: dict[str, str] = {
    "mne": "neurodecode.ingest.eeg:read_mne",
    "muse_csv": "neurodecode.ingest.eeg:read_muse_csv",
    "nifti": "neurodecode.ingest.fmri:read_nifti",
    "tiff_movie": "neurodecode.ingest.calcium:read_tiff_movie",
    "suite2p": "neurodecode.ingest.calcium:read_suite2p",
    "nwb_ophys": "neurodecode.ingest.calcium:read_nwb_ophys",
    "trace_array": "neurodecode.ingest.calcium:read_trace_array",
    "spike_times": "neurodecode.ingest.spikes:read_spike_times",
    "nwb_units": "neurodecode.ingest.spikes:read_nwb_units",
    "nelpy_linear_track": "neurodecode.ingest.spikes:read_nelpy_linear_track",
    "golub_bci": "neurodecode.ingest.spikes:read_golub_bci",
    "matclust": "neurodecode.ingest.spikes:read_matclust",
    "binned_trials": "neurodecode.ingest.spikes:read_binned_trials",
}

_EXTENSIONS = {
    (
        ".edf",
        ".bdf",
        ".gdf",
        ".vhdr",
        ".fif",
        ".set",
        ".lay",
        ".cnt",
        ".mff",
        ".snirf",
        ".nxe",
        ".egi",
        ".eeg",
        ".data",
        ".con",
        ".sqd",
        ".ds",
    ): "mne",
    (".csv",): "muse_csv",
    (".nii", ".nii.gz"): "nifti",
    (".tif", ".tiff"): "tiff_movie",
    (".npz", ".npy", ".mat"): "spike_times",
}


def get_reader(name: str) -> Callable[..., Any]:
    """Return the reader function registered under ``name`` (or a ``module:function`` path)."""
    target = READERS.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown reader {name!r}; known readers: {sorted(READERS)}")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def guess_reader(path: str | Path) -> str:
    """Pick a reader from a file's extension (``.nwb`` files: units unless they hold ophys).

    Raises
    ------
    IngestError
        If no reader handles the extension.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() and (path / "F.npy").exists():
        return "suite2p"
    if name.endswith(".nwb"):
        return "nwb_units" if _nwb_has_units(path) else "nwb_ophys"
    for exts, reader in _EXTENSIONS.items():
        if name.endswith(exts):
            return reader
    raise IngestError(
        path, f"no reader for files like {path.name!r}; pass --reader (one of {sorted(READERS)})"
    )


def _nwb_has_units(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "units" in f
    except OSError as err:
        raise IngestError(path, f"not a readable NWB (HDF5) file: {err}") from err


@dataclass(frozen=True)
class IngestTask:
    """One source file to become one recording store."""

    dataset: str
    path: Path
    reader: str
    out_root: Path
    entities: dict[str, str] = field(default_factory=dict)
    event_map: dict[str, str] | None = None
    reader_options: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    def key(self, sha256: str) -> str:
        """Fingerprint of everything that determines the output: source hash + parameters."""
        from .. import __version__

        spec = {
            "sha256": sha256,
            "reader": self.reader,
            "entities": self.entities,
            "event_map": self.event_map,
            "options": self.reader_options,
            "expect": self.expect,
            "neurodecode": __version__,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one task."""

    path: str
    store: str | None
    status: Literal["created", "replaced", "unchanged", "up-to-date", "failed"]
    seconds: float
    nbytes: int = 0
    error: str | None = None


def plan_entry(
    entry, out_root: str | Path, data_root: str | Path | None = None
) -> list[IngestTask]:
    """Turn a catalog entry into tasks, one per file.

    Parameters
    ----------
    entry : CatalogEntry
        The dataset.
    out_root : path-like
        Store root.
    data_root : path-like, optional
        Data root (default: the ``sample_data`` setting).

    Returns
    -------
    list of IngestTask
    """
    files = entry.resolve_files(data_root)
    if not files:
        raise FileNotFoundError(
            f"catalog entry {entry.name!r}: no file under {entry.root_path(data_root)} matches "
            f"{[r.glob for r in entry.files]}"
        )
    return [
        IngestTask(
            dataset=entry.name,
            path=f["path"],
            reader=entry.reader,
            out_root=Path(out_root),
            entities=f["entities"],
            event_map=f["event_map"],
            reader_options=f["reader_options"],
            expect=entry.expect,
            checksums=f["checksums"],
        )
        for f in files
    ]


def plan_files(
    paths: Iterable[str | Path],
    out_root: str | Path,
    *,
    dataset: str = "adhoc",
    reader: str | None = None,
    **reader_options: Any,
) -> list[IngestTask]:
    """Tasks for ad-hoc files (reader guessed from the extension unless given)."""
    return [
        IngestTask(
            dataset=dataset,
            path=Path(p),
            reader=reader or guess_reader(p),
            out_root=Path(out_root),
            reader_options=reader_options,
        )
        for p in paths
    ]


def _existing_key(store: Path) -> str | None:
    try:
        return zarr.open_group(store, mode="r", zarr_format=3).attrs.get("ingest_key")
    except Exception:
        return None


def _index_path(task: IngestTask) -> Path:
    """Where the last ingest of this file with these parameters is recorded."""
    ident = [str(task.path.resolve()), task.reader, task.entities, task.reader_options]
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    digest = digest[:16]
    return task.out_root / task.dataset / ".ingest" / f"{digest}.json"


def ingest_one(task: IngestTask, *, force: bool = False) -> IngestResult:
    """Read one file and write its store; every failure becomes a ``failed`` result.

    Parameters
    ----------
    task : IngestTask
        What to ingest.
    force : bool
        Rewrite even when the store is up to date.

    Returns
    -------
    IngestResult
    """
    start = time.perf_counter()
    store = None
    try:
        if not task.path.exists():
            raise IngestError(task.path, "file not found")
        _verify_checksums(task)
        sha = file_sha256(task.path)
        key = task.key(sha)
        index = _index_path(task)
        if not force and index.is_file():
            known = json.loads(index.read_text())
            store = Path(known["store"])
            if known["key"] == key and _existing_key(store) == key:
                return IngestResult(
                    str(task.path), str(store), "up-to-date", time.perf_counter() - start
                )
        reader = get_reader(task.reader)
        kwargs = {**task.reader_options, **task.entities}
        if task.event_map is not None:
            kwargs["event_map"] = task.event_map
        ds = reader(task.path, **kwargs)
        _check_expectations(task, ds)
        ds.attrs["ingest_key"] = key
        store = recording_path(task.out_root, task.dataset, ds)
        result = write_recording(ds, store)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({"key": key, "store": str(store), "source": str(task.path)}))
        return IngestResult(
            str(task.path), str(store), result.status, time.perf_counter() - start, result.nbytes
        )
    except (IngestError, SchemaError, FileNotFoundError, ValueError, OSError) as err:
        message = str(err) if str(task.path) in str(err) else f"{task.path}: {err}"
        return IngestResult(
            str(task.path),
            None if store is None else str(store),
            "failed",
            time.perf_counter() - start,
            error=message,
        )
    except Exception as err:  # a reader bug: keep the traceback for the report
        tb = "".join(traceback.format_exception(err)[-3:])
        return IngestResult(
            str(task.path),
            None,
            "failed",
            time.perf_counter() - start,
            error=f"{task.path}: unexpected {type(err).__name__}: {err}\n{tb}",
        )


def _verify_checksums(task: IngestTask) -> None:
    for name, expected in task.checksums.items():
        actual = file_sha256(name)
        if actual != expected:
            raise IngestError(
                name,
                f"SHA-256 {actual[:12]}... differs from the catalog's "
                f"{expected[:12]}...: the file is corrupt, truncated or "
                "was replaced",
            )


def _check_expectations(task: IngestTask, ds) -> None:
    exp = task.expect
    if "sfreq" in exp and abs(float(ds.attrs["sfreq"]) - float(exp["sfreq"])) > 1e-6 * exp["sfreq"]:
        raise IngestError(
            task.path,
            f"sampling rate {ds.attrs['sfreq']:g} Hz differs from the "
            f"dataset's {float(exp['sfreq']):g} Hz",
        )
    if "n_channels" in exp and ds.sizes["channel"] != int(exp["n_channels"]):
        raise IngestError(
            task.path, f"{ds.sizes['channel']} channels, the dataset expects {exp['n_channels']}"
        )


class ClusterConfig(BaseModel):
    """Where ingestion runs.

    ``kind``: ``local`` (a ``LocalCluster`` of ``n_workers`` processes), ``threads`` (this
    process, no cluster), ``address`` (connect to ``address``), ``slurm`` (a dask-jobqueue
    ``SLURMCluster`` scaled to ``n_workers`` jobs; ``slurm`` holds its keyword arguments, e.g.
    queue, account, cores, memory, walltime).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "threads", "address", "slurm"] = "local"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"
    address: str | None = None
    slurm: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_scheduler(cls, scheduler: str | None, n_workers: int = 2) -> ClusterConfig:
        """Parse a ``--scheduler`` value: ``local``, ``threads``, ``slurm`` or an address."""
        if scheduler in (None, "local", "threads", "slurm"):
            return cls(kind=scheduler or "local", n_workers=n_workers)
        return cls(kind="address", address=scheduler, n_workers=n_workers)


def make_cluster(config: ClusterConfig, *, scale: bool = True):
    """Create the cluster ``config`` describes (``None`` for ``threads`` and ``address``).

    Parameters
    ----------
    config : ClusterConfig
    scale : bool
        Submit the SLURM jobs (``n_workers`` of them) right away.

    Returns
    -------
    distributed.LocalCluster or dask_jobqueue.SLURMCluster or None
    """
    if config.kind in ("threads", "address"):
        return None
    if config.kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as err:
            raise ImportError("SLURM needs dask-jobqueue: pip install 'neurodecode[hpc]'") from err
        cluster = SLURMCluster(**{"cores": 1, "memory": "4GB", **config.slurm})
        if scale:
            cluster.scale(jobs=config.n_workers)
        return cluster
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        processes=True,
        dashboard_address=":0",
    )


@contextmanager
def cluster_client(config: ClusterConfig):
    """Yield a ``dask.distributed.Client`` for ``config`` (``None`` for ``threads``)."""
    from dask.distributed import Client

    if config.kind == "threads":
        yield None
        return
    if config.kind == "address":
        with Client(config.address) as client:
            yield client
        return
    with make_cluster(config) as cluster, Client(cluster) as client:
        yield client


def _ingest_on_worker(task: IngestTask, force: bool) -> IngestResult:
    import dask

    # One file per worker thread; its chunks are streamed in order inside the task.
    with dask.config.set(scheduler="synchronous"):
        return ingest_one(task, force=force)


def run_ingest(
    tasks: Sequence[IngestTask],
    *,
    cluster: ClusterConfig | None = None,
    client=None,
    force: bool = False,
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Ingest tasks in parallel; return one result per task, in task order.

    Parameters
    ----------
    tasks : sequence of IngestTask
        Files to ingest.
    cluster : ClusterConfig, optional
        Where to run (default: a 2-worker ``LocalCluster``); ignored when ``client`` is given.
    client : dask.distributed.Client, optional
        An existing client to submit to.
    force : bool
        Rewrite stores even when up to date.
    on_result : callable, optional
        Called with each result as it completes (progress reporting).

    Returns
    -------
    list of IngestResult
    """
    if not tasks:
        return []
    cluster = cluster or ClusterConfig()
    if client is None and cluster.kind == "threads":
        results = []
        for task in tasks:
            results.append(ingest_one(task, force=force))
            if on_result:
                on_result(results[-1])
        return results
    if client is None:
        with cluster_client(cluster) as new_client:
            return run_ingest(tasks, client=new_client, force=force, on_result=on_result)
    from dask.distributed import as_completed

    futures = client.map(_ingest_on_worker, list(tasks), force=force, pure=False)
    order = {f.key: i for i, f in enumerate(futures)}
    results: list[IngestResult | None] = [None] * len(futures)
    for future in as_completed(futures):
        res = future.result()
        results[order[future.key]] = res
        if on_result:
            on_result(res)
    return [r for r in results if r is not None]


def results_table(results: Sequence[IngestResult]) -> list[dict[str, Any]]:
    """Results as plain dicts (for JSON reports)."""
    return [asdict(r) for r in results]
