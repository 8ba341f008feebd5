"""The ``ingest`` stage: catalog entries, files and BIDS roots into recording stores.

``neurodecode ingest`` and workflows share this code: :func:`plan_ingest` turns sources into
:class:`~neurodecode.ingest.runner.IngestTask` objects, and
:func:`~neurodecode.ingest.runner.run_ingest` writes them. The CLI writes into a store root in
place (skipping up-to-date stores file by file); the stage writes one job's stores into its
temporary output, which :func:`~neurodecode.pipelines.run_stage` then renames into place.

The stage's output is a folder of stores: with ``layout: dataset`` the dataset's folder
(``sub-<s>/ses-<x>/<modality>/...zarr`` below it), with ``layout: subject`` one subject's folder
(``ses-<x>/<modality>/...zarr``), so that a workflow can ingest each subject in its own job.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import StageConfig
from ..store import clean_label, dataset_folder
from .base import Slot, Stage, StageError, register

__all__ = ["IngestConfig", "IngestStage", "plan_ingest"]


class IngestConfig(StageConfig):
    """What to ingest and how.

    Attributes
    ----------
    entry : str, optional
        A catalog entry (``neurodecode catalog``). The stage's ``sources`` input, when given,
        restricts it to those of its files.
    dataset : str
        Dataset name of files and folders (an entry's stores use the entry's name).
    reader : str, optional
        Reader of files and folders (default: by extension).
    reader_options : dict
        Reader options, for every file (on top of an entry's own).
    options_file : Path, optional
        YAML mapping file globs to reader options.
    catalog : list of Path
        A lab's catalog folders, read after the shipped catalog.
    data_root : Path, optional
        Root of an entry's files (default: the ``sample_data`` setting).
    subjects : list of str, optional
        Only these subjects (of an entry, a BIDS root or files).
    task, datatype : str, optional
        BIDS roots: only this task / datatype (eeg, meg, ieeg, func).
    layout : {"dataset", "subject"}
        The output folder is the dataset's folder, or the folder of its one subject.
    """

    entry: str | None = None
    dataset: str = "adhoc"
    reader: str | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    options_file: Path | None = None
    catalog: list[Path] = Field(default_factory=list)
    data_root: Path | None = None
    subjects: list[str] | None = None
    task: str | None = None
    datatype: str | None = None
    layout: Literal["dataset", "subject"] = "dataset"


def plan_ingest(
    config: IngestConfig, out_root: str | Path, sources: Sequence[str | Path] = ()
) -> list:
    """The ingest tasks of ``config`` and ``sources``, writing under ``out_root``.

    Parameters
    ----------
    config : IngestConfig
    out_root : path-like
        Store root.
    sources : sequence of str or path
        Catalog entry names, files, BIDS roots or suite2p folders; with ``config.entry``, a
        subset of the entry's files.

    Returns
    -------
    list of IngestTask

    Raises
    ------
    ValueError
        An unknown entry or missing source (with a suggestion), a bad option, a source file
        that is not one of the entry's, a selection that matches nothing.
    """
    from ..catalog import load_catalog
    from ..ingest.folders import expand_source
    from ..ingest.readers import OptionRules, suggest
    from ..ingest.runner import plan_entry, plan_files, plan_sources

    rules = (
        OptionRules.load(config.options_file, reader=config.reader) if config.options_file else None
    )
    entries = load_catalog(extra_dirs=config.catalog or None)
    options = dict(config.reader_options)
    tasks = []
    if config.entry is not None:
        if config.entry not in entries:
            hint = suggest(config.entry, entries)
            raise ValueError(f"unknown catalog entry {config.entry!r}{';' + hint if hint else ''}")
        tasks = plan_entry(
            entries[config.entry], out_root, config.data_root, options=options, rules=rules
        )
        if sources:
            wanted = {Path(s).resolve() for s in sources}
            other = wanted - {t.path.resolve() for t in tasks}
            if other:
                raise ValueError(
                    f"{', '.join(sorted(map(str, other)))} is not a file of catalog entry "
                    f"{config.entry!r}"
                )
            tasks = [t for t in tasks if t.path.resolve() in wanted]
        sources = ()
    if config.subjects is not None and tasks:
        tasks = _of_subjects(tasks, config.subjects, config.entry)
    subjects = config.subjects if config.subjects is not None else [None]
    for source in sources:
        source = str(source)
        if source in entries and not Path(source).exists():
            entry_tasks = plan_entry(
                entries[source], out_root, config.data_root, options=options, rules=rules
            )
            if config.subjects is not None:
                entry_tasks = _of_subjects(entry_tasks, config.subjects, source)
            tasks += entry_tasks
        elif Path(source).is_dir():
            found = [
                s
                for subject in subjects
                for s in expand_source(
                    Path(source), subject=subject, task=config.task, datatype=config.datatype
                )
            ]
            tasks += plan_sources(
                found, out_root, dataset=config.dataset, reader=config.reader, rules=rules,
                **options,
            )  # fmt: skip
        elif Path(source).exists():
            tasks += plan_files(
                [source], out_root, dataset=config.dataset, reader=config.reader, rules=rules,
                **options,
            )  # fmt: skip
        else:
            hint = suggest(source, entries)
            raise ValueError(
                f"unknown catalog entry or missing file {source!r}{';' + hint if hint else ''}"
            )
    return tasks


def _of_subjects(tasks: list, subjects: Sequence[str], entry: str | None) -> list:
    """The tasks of a catalog entry whose subject is one of ``subjects``."""
    keep = {clean_label(s) for s in subjects}
    found = [t for t in tasks if clean_label(t.entities.get("subject", "")) in keep]
    if not found:
        known = sorted({clean_label(t.entities.get("subject", "")) for t in tasks})
        raise ValueError(
            f"catalog entry {entry!r} has no file of subject {', '.join(sorted(keep))} "
            f"(subjects: {', '.join(known)})"
        )
    return found


@register
class IngestStage(Stage):
    """Read catalog entries, files or BIDS roots into atomic, verified recording stores."""

    name = "ingest"
    Config = IngestConfig
    inputs = {
        "sources": Slot(
            "source files or folders (BIDS roots); with `entry`, a subset of its files",
            many=True,
            required=False,
            folder=True,
        )
    }
    outputs = {
        "stores": Slot("folder of the written stores (the dataset's or one subject's)", folder=True)
    }

    def run(
        self, config: IngestConfig, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]
    ) -> dict[str, Any]:
        from ..ingest.runner import ClusterConfig, run_ingest

        out = outputs["stores"]
        sources = inputs.get("sources", [])
        if config.entry is None and not sources:
            raise StageError("stage ingest: give an `entry` or a `sources` input")
        scratch = out.with_name(out.name + "-root")
        try:
            try:
                tasks = plan_ingest(config, scratch, sources)
            except (ValueError, FileNotFoundError) as err:
                raise StageError(f"stage ingest: {err}") from None
            if not tasks:
                raise StageError("stage ingest: the sources hold no recording to ingest")
            results = run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
            failed = [r.error or r.path for r in results if r.status == "failed"]
            if failed:
                raise StageError("stage ingest: " + "; ".join(failed))
            datasets = sorted({dataset_folder(t.dataset) for t in tasks})
            if len(datasets) > 1:
                raise StageError(
                    f"stage ingest: one job writes one dataset, these sources make "
                    f"{', '.join(datasets)}"
                )
            folder = scratch / datasets[0]
            if config.layout == "subject":
                subjects = sorted(p.name for p in folder.glob("sub-*"))
                if len(subjects) != 1:
                    raise StageError(
                        f"stage ingest: layout 'subject' needs the recordings of one subject, "
                        f"these are of {', '.join(subjects)}"
                    )
                folder = folder / subjects[0]
            folder.rename(out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {
            "recordings": [
                {"source": r.path, "status": r.status, "nbytes": r.nbytes} for r in results
            ]
        }
