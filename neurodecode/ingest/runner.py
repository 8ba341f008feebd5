"""Ingest many files into recording stores, in parallel on a Dask cluster, never silently.

Each file is one task: read it lazily, check it against the dataset's expectations, write it
atomically. Tasks run on ``dask.distributed`` workers (a ``LocalCluster`` by default, any
scheduler address, or a dask-jobqueue ``SLURMCluster``); inside a task the file is streamed
chunk by chunk, so a worker's memory is bounded by a few shards. A failing file is reported with
its error and never stops or corrupts the others.

An ingest runs in two passes. The *plan* resolves the store path of every task (from its skip
record, or by opening the file lazily: headers only) before anything is written; two sources
that would land in one store are refused (:class:`StoreCollisionError`). The *write* pass then
skips a task only when its skip record, the store's ``ingest_key`` and the store's fingerprint
all agree (:func:`neurodecode.store.check_store`; the full block check of
:func:`neurodecode.store.verify_recording` with ``verify=True``), and re-ingests otherwise,
saying why. A store that holds a recording of another source file is replaced only with
``force``.

Skip records live in ``<root>/<dataset>/.ingest/<digest>.json``; they hold the whole task and
the store path relative to the root, so a copied or moved store root reruns (and
:func:`repair` re-ingests) in the copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import zarr
from pydantic import BaseModel, ConfigDict, Field

from ..schema import SchemaError
from ..store import (
    check_store,
    clean_label,
    dataset_folder,
    find_recordings,
    recording_path,
    verify_recording,
    write_recording,
)
from .base import IngestError, file_sha256
from .readers import READERS, get_reader, guess_reader, validate_options

__all__ = [
    "READERS",
    "ClusterConfig",
    "IngestPlan",
    "IngestResult",
    "IngestTask",
    "RepairResult",
    "SchedulerError",
    "StoreCollisionError",
    "get_reader",
    "guess_reader",
    "ingest_one",
    "make_cluster",
    "plan_entry",
    "plan_files",
    "plan_sources",
    "plan_task",
    "repair",
    "results_table",
    "run_ingest",
]

logger = logging.getLogger(__name__)

_IDENTITY = ("subject", "session", "task", "run")
_RECORD_VERSION = 2


class StoreCollisionError(ValueError):
    """Two sources of one ingest would be written to the same store; nothing was written."""


class SchedulerError(RuntimeError):
    """The Dask scheduler or cluster an ingest asked for cannot be reached or started."""


@dataclass(frozen=True)
class IngestTask:
    """One source file to become one recording store.

    The ``plan_*`` functions make ``path`` and ``out_root`` absolute, so that workers running
    in another folder (SLURM jobs) find them.
    """

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

    def record_path(self) -> Path:
        """Where the last ingest of this task is recorded (the name does not depend on the root).

        Returns
        -------
        Path
            ``<out_root>/<dataset>/.ingest/<digest>.json``, the digest of the source path, the
            reader, the entities and the reader options.
        """
        ident = [str(self.path.resolve()), self.reader, self.entities, self.reader_options]
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode())
        return (
            self.out_root
            / dataset_folder(self.dataset)
            / ".ingest"
            / (digest.hexdigest()[:16] + ".json")
        )

    def spec(self) -> dict[str, Any]:
        """The task as JSON-ready data, without its store root (see :meth:`from_spec`)."""
        return json.loads(
            json.dumps(
                {
                    "dataset": self.dataset,
                    "path": str(self.path.resolve()),
                    "reader": self.reader,
                    "entities": self.entities,
                    "event_map": self.event_map,
                    "reader_options": self.reader_options,
                    "expect": self.expect,
                    "checksums": self.checksums,
                },
                default=str,
            )
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], out_root: str | os.PathLike) -> IngestTask:
        """Rebuild a task from :meth:`spec` (e.g. a skip record), writing under ``out_root``."""
        return cls(**{**spec, "path": Path(spec["path"]), "out_root": Path(out_root)})


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one task.

    ``note`` says why a store that existed was written again (``re-ingested: signal/ is
    missing``), or is None.
    """

    path: str
    store: str | None
    status: Literal["created", "replaced", "unchanged", "up-to-date", "failed"]
    seconds: float
    nbytes: int = 0
    error: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class IngestPlan:
    """Where a task's store goes, found by :func:`plan_task` before anything is written.

    Attributes
    ----------
    store : Path or None
        The store path (None when planning failed).
    key : str or None
        The task's ingest key (source hash and parameters).
    record : dict or None
        The task's skip record, when there is one.
    error : str or None
        Why the task cannot be ingested (the file is missing, fails its checksum, or its
        reader refuses it), naming the file.
    seconds : float
        Time spent planning.
    """

    store: Path | None
    key: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


def plan_entry(
    entry,
    out_root: str | Path,
    data_root: str | Path | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    rules=None,
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
    options : mapping, optional
        Reader options applied on top of each file's options from the entry (e.g. ``-o`` on
        the command line).
    rules : OptionRules, optional
        Per-file reader options by glob (``--options FILE.yaml``), between the entry's options
        and ``options``.

    Returns
    -------
    list of IngestTask

    Raises
    ------
    FileNotFoundError
        If no file matches the entry's rules.
    ValueError
        If an option is unknown to the entry's reader or has a bad value (before any work).
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
            path=Path(f["path"]).absolute(),
            reader=entry.reader,
            out_root=Path(out_root).absolute(),
            entities=f["entities"],
            event_map=f["event_map"],
            reader_options=validate_options(
                entry.reader,
                {
                    **f["reader_options"],
                    **(rules.options_for(f["path"], entry.reader) if rules is not None else {}),
                    **(options or {}),
                },
                where=f"catalog entry {entry.name!r}",
                complete=True,
            ),
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
    rules=None,
    **reader_options: Any,
) -> list[IngestTask]:
    """Tasks for ad-hoc files (reader guessed from the extension unless given).

    Parameters
    ----------
    paths : iterable of path-like
        Source files (or suite2p plane folders).
    out_root : path-like
        Store root.
    dataset : str
        Dataset name (the first folder below the root).
    reader : str, optional
        Reader for every file (unless ``rules`` name one for it); by default guessed from each
        file's extension.
    rules : OptionRules, optional
        Per-file readers and reader options by glob (``--options FILE.yaml``);
        ``reader_options`` apply on top of them.
    **reader_options
        Reader options for every file.

    Returns
    -------
    list of IngestTask

    Raises
    ------
    ValueError
        If no reader handles a file, or an option is unknown or has a bad value (before any
        work).
    """
    tasks = []
    for p in paths:
        name = (rules.reader_for(p) if rules is not None else None) or reader or guess_reader(p)
        options = {**(rules.options_for(p, name) if rules is not None else {}), **reader_options}
        tasks.append(
            IngestTask(
                dataset=dataset,
                path=Path(p).absolute(),
                reader=name,
                out_root=Path(out_root).absolute(),
                reader_options=validate_options(name, options, where=str(p), complete=True),
            )
        )
    return tasks


def plan_sources(
    sources: Iterable[Any],
    out_root: str | Path,
    *,
    dataset: str = "adhoc",
    reader: str | None = None,
    rules=None,
    **reader_options: Any,
) -> list[IngestTask]:
    """Tasks for the recordings of folder sources (BIDS roots, suite2p output folders).

    The sources are what :func:`neurodecode.ingest.folders.expand_source` lists.

    Parameters
    ----------
    sources : iterable of Source
        Each with ``path``, ``reader``, ``entities`` and ``reader_options``.
    out_root : path-like
        Store root.
    dataset : str
        Dataset name.
    reader : str, optional
        Overrides each source's reader.
    rules : OptionRules, optional
        Per-file reader options by glob, on top of the source's own options.
    **reader_options
        Reader options for every file, on top of the others.

    Returns
    -------
    list of IngestTask
    """
    tasks = []
    for src in sources:
        name = (rules.reader_for(src.path) if rules is not None else None) or reader or src.reader
        options = {
            **dict(src.reader_options or {}),
            **(rules.options_for(src.path, name) if rules is not None else {}),
            **reader_options,
        }
        tasks.append(
            IngestTask(
                dataset=dataset,
                path=Path(src.path).absolute(),
                reader=name,
                out_root=Path(out_root).absolute(),
                entities={k: str(v) for k, v in dict(src.entities or {}).items()},
                reader_options=validate_options(name, options, where=str(src.path), complete=True),
            )
        )
    return tasks


# --------------------------------------------------------------------------------------------
# Skip records and stores


def _read_record(task: IngestTask) -> dict[str, Any] | None:
    path = task.record_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
        return None  # a record of an older neurodecode: planned again from the source
    return record


def _write_record(task: IngestTask, key: str, sha256: str, store: Path, fingerprint: str) -> None:
    from .. import __version__

    path = task.record_path()
    record = {
        "version": _RECORD_VERSION,
        "key": key,
        "sha256": sha256,
        "store": store.relative_to(task.out_root).as_posix(),
        "fingerprint": fingerprint,
        "task": task.spec(),
        "neurodecode": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _store_attrs(store: Path) -> dict[str, Any] | None:
    try:
        return dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)
    except Exception:
        return None


def _other_source(store: Path, task: IngestTask, sha256: str) -> str | None:
    """The source of the recording in ``store`` when it is not ``task``'s file, else None."""
    attrs = _store_attrs(store)
    if attrs is None:
        return "an unreadable store"
    source = attrs.get("source") or {}
    path = source.get("path")
    if not path or Path(path) == task.path.resolve() or source.get("sha256") == sha256:
        return None
    return str(path)


def _clean_identity(ds) -> None:
    """Set the identity attrs to what the store path holds; keep the originals under source."""
    original = {k: str(ds.attrs[k]) for k in _IDENTITY if k in ds.attrs}
    cleaned = {k: clean_label(v) for k, v in original.items()}
    differ = {k: v for k, v in original.items() if cleaned[k] != v}
    ds.attrs.update(cleaned)
    if differ:
        ds.attrs["source"] = {**ds.attrs.get("source", {}), "identity": differ}


def _open_source(task: IngestTask):
    reader = get_reader(task.reader)
    kwargs = {**task.reader_options, **task.entities}
    if task.event_map is not None:
        kwargs["event_map"] = task.event_map
    ds = reader(task.path, **kwargs)
    _clean_identity(ds)
    return ds


def _failure(task: IngestTask, err: BaseException, start: float, store=None) -> IngestResult:
    if isinstance(err, IngestError | SchemaError | FileNotFoundError | ValueError | OSError):
        message = str(err) if str(task.path) in str(err) else f"{task.path}: {err}"
    else:  # a reader bug: keep the traceback for the report
        tb = "".join(traceback.format_exception(err)[-3:])
        message = f"{task.path}: unexpected {type(err).__name__}: {err}\n{tb}"
    return IngestResult(
        str(task.path),
        None if store is None else str(store),
        "failed",
        time.perf_counter() - start,
        error=message,
    )


def plan_task(task: IngestTask) -> IngestPlan:
    """Find where ``task``'s store goes without writing anything.

    The store path comes from the task's skip record when the record's key matches (the source
    is not opened), else from opening the source lazily with its reader (headers only).

    Parameters
    ----------
    task : IngestTask

    Returns
    -------
    IngestPlan
        Every failure (missing file, checksum, reader error) is in its ``error``.
    """
    start = time.perf_counter()
    try:
        if not task.path.exists():
            raise IngestError(task.path, "file not found")
        _verify_checksums(task)
        key = task.key(file_sha256(task.path))
        record = _read_record(task)
        if record is not None and record["key"] == key:
            return IngestPlan(
                task.out_root / record["store"], key, record, None, time.perf_counter() - start
            )
        store = recording_path(task.out_root, task.dataset, _open_source(task))
        return IngestPlan(store, key, record, None, time.perf_counter() - start)
    except Exception as err:
        failed = _failure(task, err, start)
        return IngestPlan(None, None, None, failed.error, failed.seconds)


def _check_collisions(tasks: Sequence[IngestTask], plans: Sequence[IngestPlan]) -> None:
    by_store: dict[Path, list[IngestTask]] = {}
    for task, plan in zip(tasks, plans, strict=True):
        if plan.store is not None:
            by_store.setdefault(plan.store.absolute(), []).append(task)
    clashes = []
    for store, group in by_store.items():
        if len(group) > 1:
            names = " and ".join(
                f"{t.path}" + (f" {t.reader_options}" if t.reader_options else "") for t in group
            )
            both = "both" if len(group) == 2 else "all"
            clashes.append(f"{names} would {both} be written to {store}")
    if clashes:
        raise StoreCollisionError(
            "; ".join(clashes) + " (nothing was written; give the files distinct subject, "
            "session, task or run entities, or ingest them into different datasets)"
        )


def _changed_companion(attrs: Mapping[str, Any]) -> str | None:
    """Why a companion file the store was read with (sidecar, events table, mask) no longer
    matches, or None. Readers record them under ``source.companions`` as ``{path: sha256}`` or
    ``{role: {"path", "sha256"}}``; hashes are cached by file stamp, so this is cheap."""
    companions = (attrs.get("source") or {}).get("companions") or {}
    for key, info in companions.items():
        path, sha = (
            (info.get("path"), info.get("sha256")) if isinstance(info, Mapping) else (key, info)
        )
        if not path or not sha:
            continue
        if not Path(path).exists():
            return f"its companion file {path} is gone"
        if file_sha256(path) != sha:
            return f"its companion file {path} changed"
    return None


def _stale_reason(store: Path, key: str, record: Mapping[str, Any] | None, verify: bool) -> str:
    """``"up-to-date"``, else why ``store`` must be written again (``""``: nothing to explain,
    the store is new or the source or parameters changed)."""
    if record is None:
        return "no ingest record" if store.exists() else ""
    if record["key"] != key:
        return ""  # the source or the parameters changed: an ordinary update
    if not store.exists():
        return "the store is missing"
    attrs = _store_attrs(store)
    if attrs is None or attrs.get("ingest_key") != key:
        return "the store was written by another ingest"
    problem = _changed_companion(attrs) or check_store(store, record.get("fingerprint"))
    if problem is None and verify:
        report = verify_recording(store)
        more = len(report.problems) - 1
        problem = (
            None if report.ok else report.problems[0] + (f" (and {more} more)" if more else "")
        )
    return problem or "up-to-date"


def ingest_one(
    task: IngestTask, *, force: bool = False, verify: bool = False, plan: IngestPlan | None = None
) -> IngestResult:
    """Read one file and write its store; every failure becomes a ``failed`` result.

    Parameters
    ----------
    task : IngestTask
        What to ingest.
    force : bool
        Rewrite even when the store is up to date, and replace a store that holds another
        source file's recording.
    verify : bool
        Check every block of an existing store against its fingerprint
        (:func:`~neurodecode.store.verify_recording`) before calling it up to date, instead of
        the cheap metadata check.
    plan : IngestPlan, optional
        The task's plan from :func:`plan_task` (made here when not given).

    Returns
    -------
    IngestResult
    """
    plan = plan or plan_task(task)
    start = time.perf_counter() - plan.seconds
    if plan.error is not None:
        return IngestResult(str(task.path), None, "failed", plan.seconds, error=plan.error)
    store = plan.store
    note = None
    try:
        reason = _stale_reason(store, plan.key, plan.record, verify)
        if reason == "up-to-date" and not force:
            return IngestResult(
                str(task.path), str(store), "up-to-date", time.perf_counter() - start
            )
        if reason not in ("", "up-to-date"):
            note = f"re-ingested: {reason}"
        ds = _open_source(task)
        _check_expectations(task, ds)
        if recording_path(task.out_root, task.dataset, ds) != store:
            raise IngestError(
                task.path,
                f"now maps to {recording_path(task.out_root, task.dataset, ds)}"
                f" instead of the planned {store}; rerun the ingest",
            )
        sha = ds.attrs["source"].get("sha256") or file_sha256(task.path)
        if store.exists() and not force:
            other = _other_source(store, task, sha)
            ours = plan.record is not None
            if other is not None and not (other == "an unreadable store" and ours):
                raise IngestError(
                    task.path,
                    f"{store} already holds a recording of {other}, not of this file; "
                    "--force replaces it",
                )
        ds.attrs["ingest_key"] = plan.key
        # a store found stale is rewritten even if the new content has its fingerprint (bytes
        # altered in place); "update" itself replaces a store that fails check_store
        damaged = store.exists() and note is not None
        result = write_recording(ds, store, if_exists="replace" if force or damaged else "update")
        _write_record(task, plan.key, sha, store, result.content_sha256)
        return IngestResult(
            str(task.path),
            str(store),
            result.status,
            time.perf_counter() - start,
            result.nbytes,
            note=note,
        )
    except Exception as err:
        return _failure(task, err, start, store)


def _ingest_planned(
    task: IngestTask, plan: IngestPlan, *, force: bool, verify: bool
) -> IngestResult:
    return ingest_one(task, force=force, verify=verify, plan=plan)


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


# --------------------------------------------------------------------------------------------
# Where the work runs


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
        """Parse a ``--scheduler`` value: ``local``, ``threads``, ``slurm`` or an address.

        Raises
        ------
        ValueError
            If ``scheduler`` is none of these (an address has the form ``tcp://host:port`` or
            ``host:port``).
        """
        if scheduler in (None, "local", "threads", "slurm"):
            return cls(kind=scheduler or "local", n_workers=n_workers)
        if "://" in scheduler or (":" in scheduler and scheduler.rsplit(":", 1)[1].isdigit()):
            return cls(kind="address", address=scheduler, n_workers=n_workers)
        from .readers import suggest

        hint = suggest(scheduler, ["local", "threads", "slurm"])
        raise ValueError(
            f"--scheduler {scheduler!r} is not local, threads, slurm or a scheduler address "
            f"(tcp://host:port){';' + hint if hint else ''}"
        )


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
            raise SchedulerError(
                "SLURM needs dask-jobqueue: pip install 'neurodecode[hpc]'"
            ) from err
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
    """Yield a ``dask.distributed.Client`` for ``config`` (``None`` for ``threads``).

    Raises
    ------
    SchedulerError
        If the scheduler at ``config.address`` cannot be reached.
    """
    from dask.distributed import Client

    if config.kind == "threads":
        yield None
        return
    if config.kind == "address":
        try:
            client = Client(config.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as err:
            raise SchedulerError(
                f"cannot connect to the Dask scheduler at {config.address}: {err}"
            ) from err
        with client:
            yield client
        return
    with make_cluster(config) as cluster, Client(cluster) as client:
        yield client


def _synchronous(func: Callable[..., Any], item: Any, kwargs: dict[str, Any]) -> Any:
    import dask

    # One item per worker thread; a file's chunks are streamed in order inside the task.
    with dask.config.set(scheduler="synchronous"):
        return func(*item, **kwargs) if isinstance(item, tuple) else func(item, **kwargs)


def _map(
    func: Callable[..., Any],
    items: Sequence[Any],
    client,
    on_result: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``func`` over ``items`` (a tuple is unpacked), here or on ``client``'s workers, in order."""
    if client is None:
        results = []
        for item in items:
            results.append(
                func(*item, **kwargs) if isinstance(item, tuple) else func(item, **kwargs)
            )
            if on_result:
                on_result(results[-1])
        return results
    from dask.distributed import as_completed

    futures = client.map(
        _synchronous, [func] * len(items), list(items), [kwargs] * len(items), pure=False
    )
    order = {f.key: i for i, f in enumerate(futures)}
    out: list[Any] = [None] * len(futures)
    for future in as_completed(futures):
        out[order[future.key]] = future.result()
        if on_result:
            on_result(out[order[future.key]])
    return out


@contextmanager
def _where(cluster: ClusterConfig | None, client):
    if client is not None:
        yield client
        return
    with cluster_client(cluster or ClusterConfig()) as new:
        yield new


def run_ingest(
    tasks: Sequence[IngestTask],
    *,
    cluster: ClusterConfig | None = None,
    client=None,
    force: bool = False,
    verify: bool = False,
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Ingest tasks in parallel; return one result per task, in task order.

    Every task's store path is resolved first (on the workers); two tasks that would write one
    store raise :class:`StoreCollisionError` before anything is written. A failed task leaves
    no folder behind.

    Parameters
    ----------
    tasks : sequence of IngestTask
        Files to ingest.
    cluster : ClusterConfig, optional
        Where to run (default: a 2-worker ``LocalCluster``); ignored when ``client`` is given.
    client : dask.distributed.Client, optional
        An existing client to submit to.
    force : bool
        Rewrite every store, and replace stores that hold another source file's recording.
    verify : bool
        Verify every block of existing stores before skipping them (default: metadata check).
    on_result : callable, optional
        Called with each result as it completes (progress reporting).

    Returns
    -------
    list of IngestResult

    Raises
    ------
    StoreCollisionError
        If two tasks map to one store (nothing is written).
    SchedulerError
        If the cluster cannot be started or reached.
    """
    if not tasks:
        return []
    tasks = list(tasks)
    absent = {t.out_root.absolute() for t in tasks if not t.out_root.exists()}
    with _where(cluster, client) as where:
        plans = _map(plan_task, tasks, where)
        _check_collisions(tasks, plans)
        results = _map(
            _ingest_planned,
            list(zip(tasks, plans, strict=True)),
            where,
            on_result=on_result,
            force=force,
            verify=verify,
        )
    _remove_empty_folders(tasks, plans, results, absent)
    return results


def _remove_empty_folders(tasks, plans, results, absent_roots: set[Path]) -> None:
    """Remove the folders a failed task created and left empty (and roots this run created)."""
    for task, plan, res in zip(tasks, plans, results, strict=True):
        if res.status != "failed" or plan.store is None:
            continue
        root = task.out_root.absolute()
        folder = plan.store.absolute().parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
    for root in absent_roots:
        try:
            root.rmdir()
        except OSError:
            pass


def results_table(results: Sequence[Any]) -> list[dict[str, Any]]:
    """Results (:class:`IngestResult` or :class:`RepairResult`) as plain dicts (JSON reports)."""
    return [asdict(r) for r in results]


# --------------------------------------------------------------------------------------------
# Repair


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair` found and did for one store.

    ``status``: ``ok`` (every block matches its fingerprint), ``repaired`` (re-ingested from its
    skip record and verified), ``broken`` (still damaged; ``error`` says why it could not be
    repaired). ``problems`` are the verification failures found.
    """

    store: str
    status: Literal["ok", "repaired", "broken"]
    problems: tuple[str, ...] = ()
    source: str | None = None
    error: str | None = None


def _verify(store: Path) -> tuple[str, ...]:
    try:
        report = verify_recording(store)
    except Exception as err:
        return (f"{type(err).__name__}: {err}",)
    return () if report.ok else tuple(report.problems)


def _records_of(store: Path) -> dict[Path, dict[str, Any]]:
    """The skip records of the dataset ``store`` belongs to, by absolute store path."""
    dataset = store.parents[3]
    found = {}
    for path in sorted((dataset / ".ingest").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("version") == _RECORD_VERSION:
            found[(dataset.parent / record["store"]).absolute()] = record
    return found


def repair(
    root: str | os.PathLike,
    *,
    cluster: ClusterConfig | None = None,
    client=None,
    on_result: Callable[[RepairResult], None] | None = None,
) -> list[RepairResult]:
    """Verify every store below ``root`` and re-ingest each that fails, from its skip record.

    Parameters
    ----------
    root : path-like
        A store root (or any folder of stores, or one store).
    cluster : ClusterConfig, optional
        Where verification and re-ingestion run (default: a 2-worker ``LocalCluster``).
    client : dask.distributed.Client, optional
        An existing client to submit to.
    on_result : callable, optional
        Called with each store's result.

    Returns
    -------
    list of RepairResult
        One per store, in path order. A store with no skip record, whose source file is gone or
        changed, or whose re-ingest failed, stays ``broken`` with the reason.

    Raises
    ------
    FileNotFoundError
        If there is no recording store at or below ``root``.
    """
    stores = [p.absolute() for p in find_recordings(root)]
    if not stores:
        raise FileNotFoundError(f"no recording store at or below {root}")
    here = ClusterConfig(kind="threads")
    with _where(cluster, client) as where:
        found = dict(zip(stores, _map(_verify, stores, where), strict=True))
        records: dict[Path, dict[str, Any]] = {}
        results: dict[Path, RepairResult] = {}
        todo: dict[Path, IngestTask] = {}
        for store, problems in found.items():
            if not problems:
                results[store] = RepairResult(str(store), "ok")
                continue
            if len(store.parents) > 4 and store not in records:
                records.update(_records_of(store))
            record = records.get(store)
            source = record["task"]["path"] if record else None
            reason = _unrepairable(record)
            if reason:
                results[store] = RepairResult(str(store), "broken", problems, source, reason)
            else:
                todo[store] = IngestTask.from_spec(record["task"], store.parents[4])
        done = run_ingest(list(todo.values()), client=where, cluster=here, force=True)
        written = [s for s, r in zip(todo, done, strict=True) if r.status != "failed"]
        left = dict(zip(written, _map(_verify, written, where), strict=True))
    for (store, task), res in zip(todo.items(), done, strict=True):
        if res.status == "failed":
            reason = f"re-ingest failed: {res.error}"
        elif left[store]:
            reason = "still damaged after re-ingest: " + "; ".join(left[store])
        else:
            reason = None
        results[store] = RepairResult(
            str(store), "broken" if reason else "repaired", found[store], str(task.path), reason
        )
    out = []
    for store in stores:
        out.append(results[store])
        if on_result:
            on_result(out[-1])
    return out


def _unrepairable(record: Mapping[str, Any] | None) -> str | None:
    """Why a damaged store cannot be re-ingested from its skip record (None when it can)."""
    if record is None:
        return (
            "no ingest record names this store (it was not written by neurodecode ingest, or "
            "its dataset's .ingest/ folder is gone)"
        )
    source = Path(record["task"]["path"])
    if not source.exists():
        return f"its source {source} no longer exists"
    if file_sha256(source) != record["sha256"]:
        return (
            f"its source {source} changed since the store was written; ingest it again "
            "to replace the store"
        )
    return None
