"""One self-contained HTML report of a run: recordings, decoding, embeddings, provenance, jobs.

:func:`write_report` reads what the stages wrote — folders of recording stores (``simulate``,
``ingest``), ``metrics.json`` files (``decode``), embed folders (``embed``), model folders
(``cross_subject``), adaptation folders (``adapt``), pretraining folders (``pretrain``),
fine-tuning folders (``finetune``) and reconstruction folders (``reconstruct``) — and writes
a single HTML file: CSS inline, every figure embedded as a base64 PNG ``data:`` URI, no script
and no external URL, so it can be mailed, archived or opened offline. It is written to a
temporary sibling and renamed into place, so a reader never sees half a report.

Sections (each ``<section id="...">`` with an ``<h2>``, linked from the navigation bar):

``recordings``
    One row per store (:func:`neurodecode.store.store_summary`) and a thumbnail each
    (:func:`neurodecode.report.figures.recording_thumbnail`).
``decoding``
    One row per metrics file and metric: score ± std, its permutation chance level and p-value
    side by side, and a bar chart of scores against chance.
``embeddings``
    Per embed folder: its recordings with their decoding scores, chance levels and p-values,
    the figures the stage wrote, a scatter of every embedding coloured by behaviour and the
    consistency matrix (heatmap and values).
``fewshot``
    Per ``cross_subject`` model folder, its per-subject table: the shared model's test score
    against the subject-specific baseline and their permutation chance levels. Per ``adapt``
    folder, the few-shot curve (score against the number of the new subject's training
    samples, log scale, one line per strategy and baseline, chance dashed), its rows and the
    saved adapted models.
``codebook``
    Per codebook ``pretrain`` folder, the codebook's health during pretraining (per epoch: the
    reconstruction loss, the perplexity of the codes, the dead and used shares of the codebook,
    the masked-code accuracy), its final health on the validation windows (perplexity, codes
    used, dead share, collapse, reconstruction R², masked-code accuracy against the majority
    code) and the subjects' window counts. Per ``cross_subject`` folder fine-tuned from a
    pretraining, the fine-tuned against the from-scratch scores per subject, with chance levels,
    and the number of test samples that lie in spans the pretraining saw.
``spikes``
    Per spike-token ``pretrain`` folder (``"family": "spike_tokens"``), its settings (model,
    tokens, windows, epochs, throughput), the per-epoch training and validation next-token NLL,
    the held-out next-token NLL (nats per spike) of the model beside the inhomogeneous-Poisson
    and constant-rate baselines, the connectivity AUROC with its permutation chance, the
    statistics of generated spike trains beside those of a Poisson surrogate (flattened from
    whatever the generation record holds) and the recordings it was trained on.
``finetune``
    Per ``finetune`` folder, the few-shot curve (score against the labelled fraction, log
    scale, one line per variant and baseline, mean over seeds, chance dashed) and every row
    (variant, fraction, labelled samples, score, chance, p-value, baseline).
``reconstruction``
    Per ``reconstruct`` folder, its settings (model, encoder, renderer, image size, subjects,
    images fit and tested, the sampling plan with its UNet evaluations per image, timings and
    training throughput); one table per kind of row (trained subjects, new subjects with their
    labelled fraction): every method (reconstruction, low-level, ridge to pixels, nearest
    training image) × metric (PixCorr, SSIM, two-way identification in the encoder's and a
    random CNN's space, top-1 retrieval both ways), the best method per metric and subject in
    bold, each subject's chance levels below it; the image grids (seen images, then each
    method) and BrainDiVE (its figure, the region's predicted activation of guided, unguided
    and stimulus images with the permutation p-value, the encoding model's train and
    validation r, and the ground-truth feature when the simulation has one).
``provenance``
    The record :func:`neurodecode.pipelines.read_provenance` finds for every input (stage, job,
    config, input fingerprints, git revision, package versions, host, times), or "no provenance
    (not written by a stage)". Every number of the decoding and embedding tables links to the
    entry of the file it came from.
``workflow``
    The job table of the workflow run (job, stage, status, reason, seconds).

Sections with nothing to show say so ("no decoding results in this run"). Every string that
comes from the data is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import figures

__all__ = [
    "SECTIONS",
    "ReportError",
    "load_cross_subject",
    "load_embedding",
    "load_fewshot",
    "load_finetune",
    "load_jobs",
    "load_metrics",
    "load_pretrain",
    "load_reconstruction",
    "write_report",
]

#: The report's sections: (id, heading), in page order.
SECTIONS = (
    ("recordings", "Recordings"),
    ("decoding", "Decoding"),
    ("embeddings", "Embeddings"),
    ("fewshot", "Few-shot adaptation"),
    ("codebook", "Codebook pretraining"),
    ("spikes", "Spike-token pretraining"),
    ("finetune", "Few-shot behaviour decoding"),
    ("reconstruction", "Image reconstruction"),
    ("provenance", "Provenance"),
    ("workflow", "Workflow"),
)
#: Most embedding panels drawn per embed folder (the others are listed).
MAX_EMBEDDING_PANELS = 16
#: Recordings named in a decoding row before the rest are folded away.
_MAX_NAMED = 4
_JOB_KEYS = ("job", "stage", "status", "reason", "seconds")
_SAFE_CLASS = re.compile(r"[^a-z0-9-]+")


class ReportError(ValueError):
    """A report input is not what it should be; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# reading the inputs


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file ({what})") from None
    except OSError as err:
        raise ReportError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        msg = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        raise ReportError(f"{path}: not valid JSON ({msg}{where}; {what})") from None


def load_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a ``metrics.json`` written by the decode stage.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict
        The file's content (see the decode stage for the format).

    Raises
    ------
    ReportError
        If the file is missing, not JSON, or lacks ``analysis`` or a metric's ``score``.
    """
    path = Path(path)
    if path.is_dir():
        raise ReportError(
            f"{path}: is a folder; the decode input takes the metrics.json files that the "
            "decode stage writes"
        )
    data = _read_json(path, "a decode metrics file")
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a decode metrics file (a JSON object is expected)")
    missing = [key for key in ("analysis", "metrics") if key not in data]
    if missing:
        raise ReportError(
            f"{path}: not a decode metrics file (no {' or '.join(map(repr, missing))} key)"
        )
    metrics = data["metrics"]
    if not isinstance(metrics, dict):
        raise ReportError(f"{path}: 'metrics' must map each metric to its score, chance, p_value")
    for name, entry in metrics.items():
        if not isinstance(entry, dict) or "score" not in entry:
            raise ReportError(f"{path}: metrics.{name} has no 'score'")
    return data


def load_embedding(folder: str | os.PathLike) -> dict[str, Any]:
    """Read an embed folder: ``summary.json``, ``embeddings/*.npz`` and its figures.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        ``summary`` (the parsed ``summary.json``), ``embeddings`` (one dict per ``.npz`` file:
        ``name``, ``embedding``, ``behavior``, ``behavior_names``), ``figures`` (one dict per
        listed figure: ``path``, ``png`` bytes or None, ``note`` saying why a figure is missing).

    Raises
    ------
    ReportError
        If the folder has no ``summary.json``, the summary lacks ``recordings``, its consistency
        matrix is not square, or an embedding file cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(
            f"{folder}: not an embed folder (the embed input takes the folders that the embed "
            "stage writes)"
        )
    if not (folder / "summary.json").is_file():
        raise ReportError(f"{folder}: no summary.json (not an embed folder of the embed stage)")
    summary = _read_json(folder / "summary.json", "the summary of an embed folder")
    where = folder / "summary.json"
    if not isinstance(summary, dict) or not isinstance(summary.get("recordings"), list):
        raise ReportError(f"{where}: no 'recordings' list (not an embed summary)")
    for i, rec in enumerate(summary["recordings"]):
        if not isinstance(rec, dict) or "id" not in rec:
            raise ReportError(f"{where}: recordings[{i}] has no 'id'")
    consistency = summary.get("consistency")
    if consistency is not None:
        try:
            labels = [str(x) for x in consistency["labels"]]
            matrix = np.asarray(consistency["matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ReportError(
                f"{where}: 'consistency' must hold 'labels' and a numeric 'matrix'"
            ) from None
        if matrix.shape != (len(labels), len(labels)):
            raise ReportError(
                f"{where}: the consistency matrix has shape {matrix.shape} for {len(labels)} "
                "labels (it must be square, one row per label)"
            )
    embeddings = []
    for npz in sorted((folder / "embeddings").glob("*.npz")):
        try:
            with np.load(npz, allow_pickle=False) as z:
                emb = np.asarray(z["embedding"])
                behavior = _optional(z, "behavior")
                names = _optional(z, "behavior_names")
        except (OSError, ValueError, KeyError) as err:
            raise ReportError(f"{npz}: cannot be read as an embedding file ({err})") from None
        names = [] if names is None else [str(n) for n in np.atleast_1d(names)]
        embeddings.append(
            {"name": npz.stem, "embedding": emb, "behavior": behavior, "behavior_names": names}
        )
    figs = []
    root = folder.resolve()
    for rel in summary.get("figures") or []:
        target = (folder / str(rel)).resolve()
        if not target.is_relative_to(root):
            figs.append({"path": str(rel), "png": None, "note": "outside the embed folder"})
        elif not target.is_file():
            figs.append({"path": str(rel), "png": None, "note": "missing"})
        else:
            data = target.read_bytes()
            ok = figures.is_png(data)
            figs.append(
                {"path": str(rel), "png": data if ok else None, "note": None if ok else
                 "not a PNG image"}
            )  # fmt: skip
    return {"summary": summary, "embeddings": embeddings, "figures": figs}


def _optional(npz: Any, key: str) -> np.ndarray | None:
    """An array of an ``.npz`` file, or None when it is absent or unreadable without pickle."""
    if key not in npz.files:
        return None
    try:
        return np.asarray(npz[key])
    except ValueError:  # an object array: not loaded (pickles are never read)
        return None


def load_jobs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a workflow job table: a JSON list of jobs, or an object with a ``jobs`` list.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    list of dict
        Each with (some of) ``job``, ``stage``, ``status``, ``reason``, ``seconds``.

    Raises
    ------
    ReportError
        If the file is not such a table.
    """
    path = Path(path)
    data = _read_json(path, "a workflow job table")
    return _check_jobs(data.get("jobs") if isinstance(data, dict) else data, str(path))


def _check_jobs(jobs: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(jobs, Sequence) or isinstance(jobs, str | bytes):
        raise ReportError(f"{where}: the workflow job table must be a list of jobs")
    out = []
    for i, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise ReportError(f"{where}: job {i} is not a mapping of {', '.join(_JOB_KEYS)}")
        out.append(dict(job))
    return out


def load_cross_subject(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``metrics.json`` of a model folder written by the cross_subject stage.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The file's content (see :func:`neurodecode.pipelines.cross_subject.cross_subject`).

    Raises
    ------
    ReportError
        If the folder has no ``metrics.json`` or it lacks ``subjects`` with their ``shared``
        scores.
    """
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "metrics.json").is_file():
        raise ReportError(
            f"{folder}: not a model folder of the cross_subject stage (no metrics.json; the "
            "cross_subject input takes the folders that stage writes)"
        )
    where = folder / "metrics.json"
    data = _read_json(where, "the metrics of a cross_subject model folder")
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), dict):
        raise ReportError(f"{where}: no 'subjects' mapping (not a cross_subject model folder)")
    for name, entry in data["subjects"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shared"), dict):
            raise ReportError(f"{where}: subjects.{name} has no 'shared' scores")
    return data


#: Keys every row of a ``fewshot.json`` has.
FEWSHOT_KEYS = ("dataset", "subject", "strategy", "fraction", "n_train", "metric", "score",
                "chance")


def load_fewshot(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``fewshot.json`` of a folder written by the adapt stage.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The file's content (see :func:`neurodecode.pipelines.adapt.adapt_subjects`).

    Raises
    ------
    ReportError
        If the folder has no ``fewshot.json``, or a row lacks one of :data:`FEWSHOT_KEYS`.
    """
    data, _ = _rows_file(folder, "fewshot.json", "rows", FEWSHOT_KEYS, "adapt",
                         "the few-shot curve of an adapt folder")
    return data


def _rows_file(folder: str | os.PathLike, name: str, key: str, keys: Sequence[str],
               stage: str, what: str) -> tuple[dict[str, Any], Path]:
    """A stage folder's JSON whose ``key`` is a list of rows, each with ``keys``."""
    folder = Path(folder)
    where = folder / name
    article = "an" if stage[0] in "aeiou" else "a"
    if not folder.is_dir() or not where.is_file():
        raise ReportError(
            f"{folder}: not {article} {stage} folder (no {name}; the {stage} input takes the "
            f"folders that the {stage} stage writes)"
        )
    data = _read_json(where, what)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ReportError(f"{where}: no '{key}' list (not {article} {stage} folder)")
    for i, row in enumerate(data[key]):
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise ReportError(f"{where}: {key}[{i}] has no {', '.join(map(repr, missing))}")
    return data, where


def load_pretrain(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``metrics.json`` of a folder written by the pretrain stage.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The file's content (see :func:`neurodecode.pipelines.pretrain.pretrain`): a codebook
        pretraining (no ``family`` key, or ``"family": "codebook"``) or a spike-token one
        (``"family": "spike_tokens"``).

    Raises
    ------
    ReportError
        If the folder has no ``metrics.json``; a codebook pretraining lacks the ``health`` or
        ``history`` mappings; a spike-token one lacks its ``history`` list of per-epoch records
        or its ``next_token_nll`` mapping, or its ``generation`` or ``connectivity`` is neither
        a mapping nor null; or the family is unknown.
    """
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "metrics.json").is_file():
        raise ReportError(
            f"{folder}: not a pretrain folder (no metrics.json; the pretrain input takes the "
            "folders that the pretrain stage writes)"
        )
    where = folder / "metrics.json"
    data = _read_json(where, "the metrics of a pretrain folder")
    family = data.get("family", "codebook") if isinstance(data, dict) else "codebook"
    if family == SPIKE_FAMILY:
        return _check_spike_pretrain(data, where)
    if family != "codebook":
        raise ReportError(f"{where}: unknown pretrain family {family!r} (the report knows "
                          f"'codebook' and {SPIKE_FAMILY!r})")
    for key in ("health", "history"):
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ReportError(f"{where}: no {key!r} mapping (not a pretrain folder)")
    return data


#: The ``family`` of spike-token pretraining and fine-tuning folders.
SPIKE_FAMILY = "spike_tokens"


def _check_spike_pretrain(data: dict[str, Any], where: Path) -> dict[str, Any]:
    history = data.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ReportError(f"{where}: no 'history' list of per-epoch records (not a spike-token "
                          "pretrain folder)")
    nll = data.get("next_token_nll")
    if not isinstance(nll, dict) or "model" not in nll:
        raise ReportError(f"{where}: no 'next_token_nll' mapping with the model's 'model' NLL "
                          "(not a spike-token pretrain folder)")
    for key in ("generation", "connectivity"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ReportError(f"{where}: {key!r} must be a mapping or null, got "
                              f"{type(data[key]).__name__}")
    conn = data.get("connectivity")
    if conn is not None and "auroc" not in conn:
        raise ReportError(f"{where}: 'connectivity' has no 'auroc'")
    return data


#: Keys every row of a finetune folder's ``few_shot`` list has.
FINETUNE_KEYS = ("dataset", "variant", "fraction", "metric", "score", "chance")


def load_finetune(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``metrics.json`` of a folder written by the finetune stage.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The file's content: ``analysis``, ``target``, ``metric``, ``pretrained`` (``path`` and
        ``analysis`` of the pretraining, or null), ``split`` and ``few_shot`` (one row per
        dataset, variant, labelled fraction and seed, with :data:`FINETUNE_KEYS`).

    Raises
    ------
    ReportError
        If the folder has no ``metrics.json``, it has no ``few_shot`` list, a row lacks one of
        :data:`FINETUNE_KEYS`, a row's ``fraction`` is not a number in ``(0, 1]``, or
        ``pretrained`` is neither a mapping nor null.
    """
    data, where = _rows_file(folder, "metrics.json", "few_shot", FINETUNE_KEYS, "finetune",
                             "the metrics of a finetune folder")
    for i, row in enumerate(data["few_shot"]):
        fraction = _float(row["fraction"])
        if fraction is None or not 0 < fraction <= 1:
            raise ReportError(f"{where}: few_shot[{i}].fraction must be a number in (0, 1], "
                              f"got {row['fraction']!r}")
    if data.get("pretrained") is not None and not isinstance(data["pretrained"], dict):
        raise ReportError(f"{where}: 'pretrained' must be a mapping (path, analysis) or null")
    return data


#: Keys every row of a reconstruct folder's ``rows`` list has.
RECONSTRUCT_KEYS = ("subject", "kind", "methods")


def load_reconstruction(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``metrics.json`` of a folder written by the reconstruct stage.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    dict
        The file's content (see :func:`neurodecode.pipelines.reconstruct.reconstruct`): the
        settings (``model``, ``encoder``, ``renderer``, ``image_size``, ``subjects``,
        ``new_subjects``, image counts, ``sampling``, ``timings``), ``rows`` (one per subject
        and, for new subjects, labelled fraction: ``methods`` maps each method to its metrics,
        ``chance`` the chance levels), ``braindive`` (a mapping or null) and ``grids`` (grid
        name → PNG file name in the folder).

    Raises
    ------
    ReportError
        If the folder has no ``metrics.json``, it is not JSON, it has no ``rows`` list, a row
        lacks one of :data:`RECONSTRUCT_KEYS`, a row's ``methods`` does not map each method to
        a mapping of metrics, a row's ``chance`` is not a mapping, or ``braindive``, ``grids``,
        ``sampling`` or ``timings`` is neither a mapping nor null.
    """
    data, where = _rows_file(folder, "metrics.json", "rows", RECONSTRUCT_KEYS, "reconstruct",
                             "the metrics of a reconstruct folder")
    for i, row in enumerate(data["rows"]):
        methods = row["methods"]
        if not isinstance(methods, dict) or not all(isinstance(m, dict)
                                                    for m in methods.values()):
            raise ReportError(f"{where}: rows[{i}].methods must map each method to a mapping "
                              "of its metrics")
        if row.get("chance") is not None and not isinstance(row["chance"], dict):
            raise ReportError(f"{where}: rows[{i}].chance must be a mapping of chance levels")
    for key in ("braindive", "grids", "sampling", "timings"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ReportError(f"{where}: {key!r} must be a mapping or null, got "
                              f"{type(data[key]).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# what the report is made of


@dataclass
class _Source:
    """One input file or folder and its provenance record."""

    anchor: str
    role: str
    path: Path
    record: dict[str, Any] | None


@dataclass
class _Recording:
    anchor: str
    path: Path
    name: str
    source: _Source
    summary: dict[str, Any] | None = None
    error: str | None = None
    thumbnail: bytes | None = None
    thumbnail_note: str | None = None


class _Sources:
    """The report's inputs, each with a provenance anchor, looked up by absolute path."""

    def __init__(self) -> None:
        self.items: list[_Source] = []
        self._by_path: dict[str, _Source] = {}

    def add(self, role: str, path: Path) -> _Source | None:
        from ..pipelines import read_provenance

        key = os.path.abspath(path)
        if key in self._by_path:
            return None
        src = _Source(f"prov-{len(self.items) + 1}", role, path, read_provenance(path))
        self.items.append(src)
        self._by_path[key] = src
        return src

    def find(self, path: str) -> _Source | None:
        return self._by_path.get(os.path.abspath(path))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any, digits: int = 3) -> str:
    x = _float(value)
    if x is None:
        return "—" if value is None else _e(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "−inf"
    if x != 0 and abs(x) < 10.0**-digits:
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}f}"


def _fmt_fixed(value: Any, digits: int = 2) -> str:
    x = _float(value)
    return _fmt(value) if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(value: Any) -> str:
    x = _float(value)
    if x is None or not math.isfinite(x):
        return _fmt(value)
    return f"{x:.3g}"


def _fmt_int(value: Any) -> str:
    x = _float(value)
    return "—" if x is None else (f"{int(x):,}" if math.isfinite(x) else _fmt(x))


def _fmt_bytes(n: Any) -> str:
    x = _float(n)
    if x is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"  # pragma: no cover - the loop returns


def _fmt_seconds(value: Any) -> str:
    x = _float(value)
    if x is None or not math.isfinite(x):
        return _fmt(value)
    if x < 60:
        return f"{x:.3g} s" if x < 10 else f"{x:.1f} s"
    if x < 3600:
        return f"{int(x // 60)} min {x % 60:.0f} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60)} min"


def _a(anchor: str, text: str, title: str | None = None) -> str:
    """A link to ``#anchor``; ``text`` is already HTML."""
    tip = f' title="{_e(title)}"' if title else ""
    return f'<a href="#{anchor}"{tip}>{text}</a>'


def _empty(thing: str) -> str:
    return f'<p class="empty">no {_e(thing)} in this run</p>'


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{figures.data_uri(png)}" alt="{_e(alt)}">'


def _short_path(text: str, parts: int = 4) -> str:
    pieces = [p for p in str(text).replace("\\", "/").split("/") if p]
    return "/".join(pieces[-parts:]) if len(pieces) > parts else str(text)


def _json_block(value: Any) -> str:
    """JSON of ``value``; a mapping is written one top-level key per line (values compact)."""
    if isinstance(value, Mapping) and value:
        lines = [
            f"  {json.dumps(str(k))}: {json.dumps(v, sort_keys=True, default=str)}"
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        ]
        text = "{\n" + ",\n".join(lines) + "\n}"
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return f"<pre>{_e(text)}</pre>"


# ---------------------------------------------------------------------------------------------
# sections


def _read_recordings(
    stores: Sequence[Path], sources: _Sources, thumbnails: bool, seconds: float
) -> list[_Recording]:
    from ..store import find_recordings, open_recording, store_summary
    from ..verbosity import progress

    todo: list[tuple[Path, Path, _Source]] = []
    seen: set[str] = set()
    for folder in stores:
        src = sources.add("stores", folder)
        if src is None:
            continue
        if not folder.exists():
            raise ReportError(f"{folder}: no such folder (stores input)")
        found = find_recordings(folder)
        if not found:
            raise ReportError(f"{folder}: no recording store below this folder (stores input)")
        for store in found:
            key = os.path.abspath(store)
            if key not in seen:
                seen.add(key)
                todo.append((folder, store, src))
    out = []
    for i, (folder, store, src) in enumerate(
        progress(todo, description="report: recordings"), start=1
    ):
        rel = folder.name if store == folder else f"{folder.name}/{store.relative_to(folder)}"
        rec = _Recording(f"rec-{i}", store, rel.replace(os.sep, "/"), src)
        try:
            rec.summary = store_summary(store)
        except Exception as err:  # a damaged store is reported, not fatal to the report
            rec.error = f"{type(err).__name__}: {err}".splitlines()[0]
        if thumbnails and rec.error is None:
            try:  # store_summary has just validated the store
                ds = open_recording(store, check=False)
                rec.thumbnail = figures.recording_thumbnail(ds, seconds=seconds)
            except Exception as err:
                rec.thumbnail_note = f"no thumbnail: {err}".splitlines()[0]
        out.append(rec)
    return out


def _recording_label(rec: _Recording) -> str:
    if rec.summary is None:
        return rec.name
    return f"{rec.summary['recording']} · {rec.summary['modality']}"


def _recordings_section(recs: list[_Recording], thumbnails: bool) -> str:
    if not recs:
        return _empty("recordings")
    head = (
        "<tr><th>#</th><th>recording</th><th>modality</th><th>channels</th>"
        "<th>sampling rate</th><th>duration</th><th>events</th><th>size on disk</th>"
        "<th>provenance</th></tr>"
    )
    rows = []
    for i, rec in enumerate(recs, start=1):
        prov = _a(rec.source.anchor, "record" if rec.source.record else "none")
        ident = (f'<a href="#thumb-{i}">{_e(rec.name)}</a>' if rec.thumbnail is not None
                 else _e(rec.name))  # fmt: skip
        if rec.summary is None:
            rows.append(
                f'<tr id="{rec.anchor}"><td class="num">{i}</td><td>{ident}</td>'
                f'<td colspan="6" class="error">cannot be read: {_e(rec.error)}</td>'
                f"<td>{prov}</td></tr>"
            )
            continue
        s = rec.summary
        types = ", ".join(f"{_e(k)} {v}" for k, v in s["ch_types"].items())
        events = s["events"]
        n_events = sum(events.values())
        detail = ", ".join(f"{_e(k)} {v}" for k, v in events.items())
        ev_cell = (f'{n_events:,}<div class="muted">{detail}</div>' if 0 < len(events) <= 4
                   else f'<span title="{detail}">{n_events:,}</span>')  # fmt: skip
        rows.append(
            f'<tr id="{rec.anchor}"><td class="num">{i}</td>'
            f'<td>{ident}<div class="muted">{_e(s["recording"])}</div></td>'
            f"<td>{_e(s['modality'])}</td>"
            f'<td class="num">{s["n_channels"]:,}<div class="muted">{types}</div></td>'
            f'<td class="num">{s["sfreq"]:g} Hz</td>'
            f'<td class="num">{_fmt_seconds(s["duration_s"])}</td>'
            f'<td class="num">{ev_cell}</td>'
            f'<td class="num">{_fmt_bytes(s["nbytes_stored"])}</td>'
            f"<td>{prov}</td></tr>"
        )
    parts = [f"<table>{head}{''.join(rows)}</table>"]
    if thumbnails:
        cards = []
        for i, rec in enumerate(recs, start=1):
            if rec.thumbnail is not None:
                cards.append(
                    f'<figure id="thumb-{i}">{_img(rec.thumbnail, _recording_label(rec))}'
                    f"<figcaption>{_a(rec.anchor, f'#{i}')} {_e(rec.name)}</figcaption>"
                    "</figure>"
                )
            elif rec.thumbnail_note:
                cards.append(
                    f'<figure id="thumb-{i}"><figcaption>{_a(rec.anchor, f"#{i}")} '
                    f"{_e(rec.name)}: {_e(rec.thumbnail_note)}</figcaption></figure>"
                )
        parts.append(f'<h3>Thumbnails</h3><div class="grid thumbs">{"".join(cards)}</div>')
    return "".join(parts)


def _recording_links(ids: Iterable[Any], by_path: Mapping[str, _Recording]) -> str:
    """The recordings a result names, linked to their rows when they are in the report."""
    items = []
    for rid in ids:
        rec = by_path.get(os.path.abspath(str(rid))) if "://" not in str(rid) else None
        if rec is not None:
            items.append(_a(rec.anchor, _e(_recording_label(rec)), str(rid)))
        else:
            items.append(f'<span title="{_e(rid)}">{_e(_short_path(str(rid)))}</span>')
    if len(items) <= _MAX_NAMED:
        return "<br>".join(items) or "—"
    return (
        "<br>".join(items[:_MAX_NAMED])
        + f"<details><summary>{len(items) - _MAX_NAMED} more</summary>"
        + "<br>".join(items[_MAX_NAMED:])
        + "</details>"
    )


def _decoding_section(
    results: list[tuple[_Source, dict[str, Any]]], by_path: Mapping[str, _Recording]
) -> str:
    if not results:
        return _empty("decoding results")
    head = (
        "<tr><th>analysis</th><th>recordings</th><th>estimator</th><th>cv</th>"
        "<th>samples</th><th>metric</th><th>score ± std</th><th>chance</th><th>p-value</th>"
        "<th>permutations</th></tr>"
    )
    rows = []
    chart_rows = []
    for k, (src, data) in enumerate(results, start=1):
        anchor = src.anchor
        metrics = data["metrics"]
        n = max(len(metrics), 1)
        estimator = data.get("estimator_name") or data.get("estimator") or "—"
        est_cell = f'<span title="{_e(data.get("estimator", ""))}">{_e(estimator)}</span>'
        cv = data.get("cv")
        cv_cell = (
            f'<span title="{_e(cv)}">{_e(_first_word(cv))}</span>' if cv else "—"
        ) + (f'<div class="muted">{_a(anchor, _fmt_int(data["n_splits"]))} splits</div>'
             if data.get("n_splits") is not None else "")  # fmt: skip
        samples = data.get("samples") or {}
        kind = samples.get("kind") if isinstance(samples, dict) else None
        samples_cell = _a(anchor, _fmt_int(data.get("n_samples"))) + (
            f'<div class="muted">{_e(kind)}</div>' if kind else ""
        )
        desc = data.get("description")
        analysis = f'<span id="dec-{k}">{_e(data["analysis"])}</span>' + (
            f'<div class="muted">{_e(desc)}</div>' if desc else ""
        )
        shared = (
            f'<td rowspan="{n}">{analysis}</td>'
            f'<td rowspan="{n}">{_recording_links(data.get("recordings") or [], by_path)}</td>'
            f'<td rowspan="{n}">{est_cell}</td><td rowspan="{n}">{cv_cell}</td>'
            f'<td rowspan="{n}" class="num">{samples_cell}</td>'
        )
        perm = data.get("n_permutations")
        perm_cell = (
            f'<td rowspan="{n}" class="num">{_a(anchor, _fmt_int(perm))}'
            + (f'<div class="muted">{_e(data["permutation"])}</div>'
               if data.get("permutation") else "")
            + "</td>"
        )  # fmt: skip
        if not metrics:
            rows.append(f'<tr>{shared}<td colspan="4" class="empty">no metric</td>{perm_cell}</tr>')
            continue
        for j, (metric, entry) in enumerate(metrics.items()):
            p = _float(entry.get("p_value"))
            cls = ' class="num sig"' if p is not None and p < 0.05 else ' class="num"'
            cells = (
                f"<td>{_e(metric)}</td>"
                f"<td{cls}>{_a(anchor, _fmt(entry.get('score')))} ± "
                f"{_a(anchor, _fmt(entry.get('std')))}</td>"
                f'<td class="num">{_a(anchor, _fmt(entry.get("chance")))}</td>'
                f"<td{cls}>{_a(anchor, _fmt_p(entry.get('p_value')))}</td>"
            )
            rows.append(f"<tr>{shared if j == 0 else ''}{cells}{perm_cell if j == 0 else ''}</tr>")
            chart_rows.append(
                {"label": data["analysis"], "metric": metric, "score": entry.get("score"),
                 "std": entry.get("std"), "chance": entry.get("chance"),
                 "p_value": entry.get("p_value")}
            )  # fmt: skip
    parts = [f"<table>{head}{''.join(rows)}</table>"]
    plottable = [r for r in chart_rows if math.isfinite(_float(r["score"]) or math.nan)]
    if plottable:
        chart = figures.decoding_chart(plottable)
        parts.append(
            '<figure id="decoding-chart">'
            f"{_img(chart, 'cross-validated scores against their permutation chance levels')}"
            "<figcaption>Cross-validated score ± std over folds (bars), the permutation chance "
            "level (red line) and the p-value above each bar; dark bars: p &lt; 0.05."
            "</figcaption></figure>"
        )
    for src, data in results:
        conf = data.get("confusion")
        if isinstance(conf, dict) and conf.get("labels") and conf.get("matrix"):
            parts.append(
                f"<details><summary>confusion matrix of {_e(data['analysis'])}</summary>"
                f"{_matrix_table(conf['labels'], conf['matrix'], src.anchor, integer=True)}"
                "</details>"
            )
    return "".join(parts)


def _first_word(text: Any) -> str:
    """``StratifiedKFold(n_splits=5, ...)`` → ``StratifiedKFold``."""
    text = str(text)
    return text.split("(", 1)[0] if "(" in text else text


def _matrix_table(labels: Sequence[Any], matrix: Any, anchor: str, *, integer: bool = False) -> str:
    rows = ["<tr><th></th>" + "".join(f"<th>{_e(_short_path(str(x), 2))}</th>" for x in labels)
            + "</tr>"]  # fmt: skip
    for label, row in zip(labels, matrix, strict=False):
        cells = "".join(
            f'<td class="num">{_a(anchor, _fmt_int(v) if integer else _fmt_fixed(v))}</td>'
            for v in row
        )
        rows.append(f"<tr><th>{_e(_short_path(str(label), 2))}</th>{cells}</tr>")
    return f'<table class="matrix">{"".join(rows)}</table>'


def _embedding_panels(loaded: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for item in loaded["embeddings"][:MAX_EMBEDDING_PANELS]:
        emb = item["embedding"]
        behavior = item["behavior"]
        color, name = None, "sample"
        if behavior is not None and behavior.size and len(behavior) == len(emb):
            b = behavior.reshape(len(behavior), -1)
            if np.issubdtype(b.dtype, np.number):
                color = b[:, 0].astype(np.float64)
                name = item["behavior_names"][0] if item["behavior_names"] else "behaviour 0"
        panels.append({"title": item["name"], "embedding": emb, "color": color,
                       "color_name": name})  # fmt: skip
    return panels


def _embeddings_section(
    folders: list[tuple[_Source, dict[str, Any]]], by_path: Mapping[str, _Recording]
) -> str:
    if not folders:
        return _empty("embeddings")
    parts = []
    for k, (src, loaded) in enumerate(folders, start=1):
        anchor = src.anchor
        summary = loaded["summary"]
        parts.append(
            f'<h3 id="emb-{k}">{_e(src.path.name)}</h3>'
            f'<p class="muted">{_e(src.path)} · provenance: '
            f"{_a(anchor, 'record' if src.record else 'none')}</p>"
        )
        model = summary.get("model")
        if isinstance(model, dict) and model:
            items = ", ".join(f"{_e(key)}={_e(value)}" for key, value in model.items()
                              if not isinstance(value, dict | list))  # fmt: skip
            parts.append(f'<p class="muted">model: {items}</p>')
        parts.append(_embedding_table(summary["recordings"], anchor, by_path))
        panels = _embedding_panels(loaded)
        if panels:
            more = len(loaded["embeddings"]) - len(panels)
            note = f" ({more} more embeddings not drawn)" if more > 0 else ""
            parts.append(
                f'<figure id="emb-{k}-scatter">'
                f"{_img(figures.embedding_scatter(panels), 'embeddings coloured by behaviour')}"
                "<figcaption>Each embedding (first two dimensions, or its first two principal "
                f"components), coloured by the first behaviour variable{_e(note)}.</figcaption>"
                "</figure>"
            )
        else:
            parts.append('<p class="empty">no embedding files (embeddings/*.npz)</p>')
        consistency = summary.get("consistency")
        if consistency:
            labels = [str(x) for x in consistency["labels"]]
            shown = [_display_id(x, by_path) for x in labels]
            heat = figures.consistency_heatmap(shown, consistency["matrix"])
            parts.append(
                f'<figure id="emb-{k}-consistency">{_img(heat, "consistency matrix")}'
                "<figcaption>Consistency across recordings (row: reference, column: aligned)."
                "</figcaption></figure>"
                f"{_matrix_table(shown, consistency['matrix'], anchor)}"
            )
        else:
            parts.append('<p class="empty">no consistency matrix in this embed folder</p>')
        figs = loaded["figures"]
        if figs:
            cards = []
            for fig in figs:
                if fig["png"] is not None:
                    cards.append(
                        f"<figure>{_img(fig['png'], fig['path'])}"
                        f"<figcaption>{_e(fig['path'])}</figcaption></figure>"
                    )
                else:
                    cards.append(f"<figure><figcaption>{_e(fig['path'])}: {_e(fig['note'])}"
                                 "</figcaption></figure>")  # fmt: skip
            parts.append(f'<h4>Figures of the embed stage</h4><div class="grid">{"".join(cards)}'
                         "</div>")  # fmt: skip
    return "".join(parts)


def _display_id(rid: str, by_path: Mapping[str, _Recording]) -> str:
    rec = by_path.get(os.path.abspath(rid)) if "://" not in rid else None
    return _recording_label(rec) if rec is not None else _short_path(rid, 3)


def _embedding_table(
    recordings: list[dict[str, Any]], anchor: str, by_path: Mapping[str, _Recording]
) -> str:
    head = (
        "<tr><th>recording</th><th>subject</th><th>modality</th><th>samples</th>"
        "<th>behaviour</th><th>metric</th><th>score</th><th>chance</th><th>p-value</th></tr>"
    )
    rows = []
    for rec in recordings:
        decoding = rec.get("decoding") or {}
        n = max(len(decoding), 1)
        behavior = rec.get("behavior") or []
        ident = _recording_links([rec["id"]], by_path)
        shared = (
            f'<td rowspan="{n}">{ident}</td><td rowspan="{n}">{_e(rec.get("subject", "—"))}</td>'
            f'<td rowspan="{n}">{_e(rec.get("modality", "—"))}</td>'
            f'<td rowspan="{n}" class="num">{_a(anchor, _fmt_int(rec.get("n_samples")))}</td>'
            f'<td rowspan="{n}">{_e(", ".join(map(str, behavior)) or "—")}</td>'
        )
        if not decoding:
            rows.append(f'<tr>{shared}<td colspan="4" class="empty">not decoded</td></tr>')
            continue
        for j, (metric, entry) in enumerate(decoding.items()):
            entry = entry if isinstance(entry, dict) else {"score": entry}
            p = _float(entry.get("p_value"))
            cls = ' class="num sig"' if p is not None and p < 0.05 else ' class="num"'
            rows.append(
                f"<tr>{shared if j == 0 else ''}<td>{_e(metric)}</td>"
                f"<td{cls}>{_a(anchor, _fmt(entry.get('score')))}</td>"
                f'<td class="num">{_a(anchor, _fmt(entry.get("chance")))}</td>'
                f"<td{cls}>{_a(anchor, _fmt_p(entry.get('p_value')))}</td></tr>"
            )
    if not rows:
        return '<p class="empty">no recordings in this embed folder</p>'
    return f"<table>{head}{''.join(rows)}</table>"


def _strategy_label(row: Mapping[str, Any]) -> str:
    letter = row.get("letter")
    return f"{letter} {row['strategy']}" if letter else str(row["strategy"])


def _score_cells(entry: Mapping[str, Any] | None, anchor: str) -> str:
    """Score, chance and p-value cells of one result (bold when p < 0.05)."""
    entry = entry or {}
    p = _float(entry.get("p_value"))
    cls = ' class="num sig"' if p is not None and p < 0.05 else ' class="num"'
    return (f"<td{cls}>{_a(anchor, _fmt(entry.get('score')))}</td>"
            f'<td class="num">{_a(anchor, _fmt(entry.get("chance")))}</td>'
            f"<td{cls}>{_a(anchor, _fmt_p(entry.get('p_value')))}</td>")


def _cross_subject_part(k: int, src: _Source, data: dict[str, Any]) -> str:
    anchor = src.anchor
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    samples = data.get("samples") if isinstance(data.get("samples"), dict) else {}
    split = data.get("split") if isinstance(data.get("split"), dict) else {}
    details = [
        f"model {_e(model.get('name', '—'))} ({_e(model.get('adapter', '—'))} adapters)",
        f"metric {_e(data.get('metric', '—'))}",
        f"{_fmt_int(data.get('epochs'))} epochs in {_fmt_seconds(data.get('fit_seconds'))}",
        f"samples {_e(samples.get('kind', '—'))}",
        f"split {_e(split.get('fractions', '—'))}, gap "
        + (_e(split.get("gap")) if split.get("gap") is not None else "default"),
        f"{_fmt_int(data.get('n_permutations'))} permutations",
    ]
    excluded = data.get("excluded") or []
    if excluded:
        details.append(f"held out: {_e(', '.join(map(str, excluded)))}")
    pretrained = data.get("pretrained") if isinstance(data.get("pretrained"), dict) else None
    if pretrained:
        details.append(f"fine-tuned from <code>{_e(_short_path(pretrained.get('path', '—'), 3))}"
                       "</code> (codebook section)")
    head = (
        "<tr><th>subject</th><th>train / val / test</th><th>channels</th>"
        "<th>shared score</th><th>chance</th><th>p-value</th><th>baseline</th>"
        "<th>baseline score</th><th>chance</th><th>p-value</th></tr>"
    )
    rows = []
    for subject, entry in data["subjects"].items():
        base = entry.get("baseline") if isinstance(entry.get("baseline"), dict) else {}
        note = f'<div class="muted">{_e(base["note"])}</div>' if base.get("note") else ""
        counts = " / ".join(_fmt_int(entry.get(n)) for n in ("n_train", "n_val", "n_test"))
        rows.append(
            f"<tr><td>{_e(subject)}</td><td class=\"num\">{_a(anchor, counts)}</td>"
            f'<td class="num">{_fmt_int(entry.get("n_channels"))}</td>'
            f"{_score_cells(entry['shared'], anchor)}"
            f"<td>{_e(base.get('name', '—'))}{note}</td>{_score_cells(base, anchor)}</tr>"
        )
    mean = data.get("mean") if isinstance(data.get("mean"), dict) else {}
    rows.append(
        f'<tr><th>mean</th><td></td><td></td><td class="num">{_a(anchor, _fmt(mean.get("shared")))}'
        f'</td><td class="num">{_a(anchor, _fmt(mean.get("chance")))}</td><td></td><td></td>'
        f'<td class="num">{_a(anchor, _fmt(mean.get("baseline")))}</td><td></td><td></td></tr>'
    )
    return (
        f'<h3 id="xsub-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')}</p>"
        f"<p class=\"muted\">{' · '.join(details)}</p>"
        "<p>Each training subject's test part, scored by the shared model and by a "
        "subject-specific baseline fitted on that subject's training part alone; chance: the "
        "same predictions against permuted test targets.</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def _fewshot_panels(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    panels: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        panels.setdefault(str(row["subject"]), []).append(
            {"label": _strategy_label(row), "kind": row.get("kind", "adapt"),
             "n_train": row["n_train"], "score": row["score"], "chance": row["chance"]})
    return [{"title": f"sub-{s}", "rows": r} for s, r in panels.items()]


def _fewshot_part(k: int, src: _Source, data: dict[str, Any], models: Mapping[str, _Source]
                  ) -> str:
    anchor = src.anchor
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    path = str(model.get("path", ""))
    trained = models.get(os.path.abspath(path)) if path else None
    model_cell = (_a(trained.anchor, _e(_short_path(path, 3))) if trained is not None
                  else f"<code>{_e(_short_path(path, 3))}</code>") if path else "—"
    metric = str(data.get("metric", "score"))
    parts = [
        f'<h3 id="adapt-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')} · model {model_cell} · metric "
        f"{_e(metric)} · {_fmt_int(data.get('n_permutations'))} permutations</p>"
    ]
    for note in data.get("notes") or []:
        parts.append(f'<p class="muted">note: {_e(note)}</p>')
    rows = data["rows"]
    plottable = [r for r in rows if _float(r.get("score")) is not None]
    if plottable:
        png = figures.fewshot_curve(_fewshot_panels(plottable), metric=metric)
        parts.append(
            f'<figure id="adapt-{k}-curve">'
            f"{_img(png, 'few-shot curves: score against the number of training samples')}"
            f"<figcaption>{_e(metric)} on each new subject's test part against the number of "
            "its training samples the model was adapted with (log scale): one line per "
            "strategy (a–e) and per subject-specific baseline trained on the same samples; "
            "dashed: the permutation chance level.</figcaption></figure>"
        )
    else:
        parts.append('<p class="empty">no few-shot row with a score in this adapt folder</p>')
    if rows:
        head = (
            "<tr><th>subject</th><th>strategy</th><th>fraction</th><th>samples</th>"
            f"<th>{_e(metric)}</th><th>chance</th><th>p-value</th><th>epochs</th>"
            "<th>seconds</th></tr>"
        )
        body = []
        for row in rows:
            note = f'<div class="muted">{_e(row["note"])}</div>' if row.get("note") else ""
            body.append(
                f"<tr><td>{_e(row['subject'])}</td><td>{_e(_strategy_label(row))}{note}</td>"
                f'<td class="num">{_fmt_fixed(row.get("fraction"))}</td>'
                f'<td class="num">{_a(anchor, _fmt_int(row.get("n_train")))}</td>'
                f"{_score_cells(row, anchor)}"
                f'<td class="num">{_fmt_int(row.get("epochs"))}</td>'
                f'<td class="num">{_fmt_seconds(row.get("seconds"))}</td></tr>'
            )
        parts.append(f"<table>{head}{''.join(body)}</table>")
    saved = [(s, e.get("saved")) for s, e in (data.get("subjects") or {}).items()
             if isinstance(e, dict) and isinstance(e.get("saved"), dict)]
    if saved:
        head = (
            "<tr><th>subject</th><th>strategy</th><th>budget</th><th>samples</th>"
            f"<th>{_e(metric)}</th><th>chance</th><th>p-value</th><th>model</th></tr>"
        )
        body = [
            f"<tr><td>{_e(s)}</td><td>{_e(e.get('strategy', '—'))}</td>"
            f"<td>{_e(e.get('budget', '—'))}</td>"
            f'<td class="num">{_a(anchor, _fmt_int(e.get("n_train")))}</td>'
            f"{_score_cells(e, anchor)}<td><code>{_e(e.get('path', '—'))}</code></td></tr>"
            for s, e in saved
        ]
        parts.append(f"<h4>Saved adapted models</h4><table>{head}{''.join(body)}</table>")
    return "".join(parts)


def _fewshot_section(
    models: list[tuple[_Source, dict[str, Any]]], adapted: list[tuple[_Source, dict[str, Any]]]
) -> str:
    if not models and not adapted:
        return _empty("few-shot adaptation results")
    by_path = {os.path.abspath(src.path): src for src, _ in models}
    parts = [_cross_subject_part(k, src, data) for k, (src, data) in enumerate(models, 1)]
    parts += [_fewshot_part(k, src, data, by_path) for k, (src, data) in enumerate(adapted, 1)]
    return "".join(parts)


def _pretrain_part(k: int, src: _Source, data: dict[str, Any]) -> str:
    anchor = src.anchor
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    win = data.get("windows") if isinstance(data.get("windows"), dict) else {}
    epochs = data.get("epochs") if isinstance(data.get("epochs"), dict) else {}
    speed = data.get("segments_per_s") if isinstance(data.get("segments_per_s"), dict) else {}
    band = (f"{_fmt_fixed(win.get('l_freq'), 1)}–{_fmt_fixed(win.get('h_freq'), 1)} Hz"
            if win.get("l_freq") is not None or win.get("h_freq") is not None else "no band-pass")
    intervals = win.get("intervals")
    details = [
        f"model {_e(model.get('name', '—'))} ({_e(model.get('adapter', '—'))} adapters, "
        f"{_e(model.get('tokens', '—'))} tokens, {_fmt_int(model.get('codebook_size'))} codes)",
        f"windows {_fmt_fixed(win.get('length'))} s every {_fmt_fixed(win.get('stride'))} s "
        f"({_fmt_int(win.get('n_times'))} samples), {band}",
        "intervals " + (_e("/".join(map(str, intervals))) if intervals else "whole recordings"),
        f"epochs: tokenizer {_fmt_int(epochs.get('tokenizer'))}, masked "
        f"{_fmt_int(epochs.get('masked'))} in {_fmt_seconds(data.get('fit_seconds'))}",
        f"segments/s: tokenizer {_fmt_int(speed.get('tokenizer'))}, masked "
        f"{_fmt_int(speed.get('masked'))}",
    ]
    parts = [
        f'<h3 id="codebook-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')}</p>"
        f"<p class=\"muted\">{' · '.join(details)}</p>"
    ]
    size = _float(model.get("codebook_size"))
    try:
        png = figures.codebook_curves(data["history"],
                                      codebook_size=int(size) if size else None)
    except ValueError:
        parts.append('<p class="empty">no per-epoch history in this pretrain folder</p>')
    else:
        parts.append(
            f'<figure id="codebook-{k}-curves">'
            f"{_img(png, 'codebook health per epoch')}"
            "<figcaption>Per epoch of the tokenizer: its reconstruction loss (training and "
            "validation windows), the perplexity of the epoch's code assignments (dotted: the "
            "codebook size), the shares of dead and of used codes; per epoch of the masked-code "
            "model: its accuracy on the masked segments.</figcaption></figure>"
        )
    health = data["health"]
    mask = data.get("mask_accuracy") if isinstance(data.get("mask_accuracy"), dict) else {}
    collapsed = health.get("collapsed")
    state = ('<td class="error">collapsed</td>' if collapsed
             else "<td>—</td>" if collapsed is None else "<td>no</td>")
    parts.append(
        f"<h4>Final codebook health (on the {_e(data.get('scored_on', '—'))} windows)</h4>"
        "<table><tr><th>perplexity</th><th>codes used</th><th>dead share</th>"
        "<th>collapsed</th><th>reconstruction R²</th><th>masked-code accuracy</th>"
        "<th>majority code</th></tr>"
        f'<tr><td class="num">{_a(anchor, _fmt_fixed(health.get("perplexity"), 1))}</td>'
        f'<td class="num">{_a(anchor, _fmt_int(health.get("used")))} / '
        f"{_fmt_int(health.get('codebook_size'))}</td>"
        f'<td class="num">{_a(anchor, _fmt(health.get("dead_fraction")))}</td>{state}'
        f'<td class="num">{_a(anchor, _fmt(data.get("reconstruction_r2")))}</td>'
        f'<td class="num">{_a(anchor, _fmt(mask.get("accuracy")))}</td>'
        f'<td class="num">{_a(anchor, _fmt(mask.get("majority")))}</td></tr></table>'
    )
    subjects = data.get("subjects") if isinstance(data.get("subjects"), dict) else {}
    if subjects:
        body = "".join(
            f"<tr><td>{_e(s)}</td>"
            f'<td class="num">{_fmt_int(v.get("n_train"))} / {_fmt_int(v.get("n_val"))}</td>'
            f'<td class="num">{_fmt_int(v.get("n_channels"))}</td></tr>'
            for s, v in subjects.items() if isinstance(v, dict))
        parts.append("<table><tr><th>subject</th><th>windows train / val</th>"
                     f"<th>channels</th></tr>{body}</table>")
    return "".join(parts)


def _finetuned_part(k: int, src: _Source, data: dict[str, Any],
                    pretrains: Mapping[str, _Source]) -> str:
    anchor = src.anchor
    pre = data["pretrained"]
    path = str(pre.get("path", ""))
    known = pretrains.get(os.path.abspath(path)) if path else None
    link = (_a(known.anchor, _e(_short_path(path, 3))) if known is not None
            else f"<code>{_e(_short_path(path, 3))}</code>")
    metric = str(data.get("metric", "score"))
    seen = pre.get("test_samples_in_pretraining")
    leak = (f'<p class="error">{_fmt_int(seen)} test samples lie in spans the pretraining '
            "windows covered: the fine-tuned score is optimistic</p>"
            if _float(seen) else "")
    head = (
        f"<tr><th>subject</th><th>test samples</th><th>fine-tuned {_e(metric)}</th>"
        "<th>chance</th><th>p-value</th><th>scratch</th><th>chance</th><th>p-value</th>"
        "<th>linear probe</th><th>chance</th><th>p-value</th><th>baseline</th></tr>"
    )
    rows, bars = [], []
    for subject, entry in data["subjects"].items():
        base = entry.get("baseline") if isinstance(entry.get("baseline"), dict) else {}
        scratch = entry.get("scratch") if isinstance(entry.get("scratch"), dict) else None
        probe = entry.get("probe") if isinstance(entry.get("probe"), dict) else None
        rows.append(
            f"<tr><td>{_e(subject)}</td>"
            f'<td class="num">{_a(anchor, _fmt_int(entry.get("n_test")))}</td>'
            f"{_score_cells(entry['shared'], anchor)}"
            + (_score_cells(scratch, anchor) if scratch is not None
               else '<td class="muted" colspan="3">not trained</td>')
            + (_score_cells(probe, anchor) if probe is not None
               else '<td class="muted" colspan="3">not fitted</td>')
            + f'<td class="num">{_a(anchor, _fmt(base.get("score")))}</td></tr>'
        )
        for label, result in (("fine-tuned", entry["shared"]), ("scratch", scratch),
                              ("probe", probe)):
            if result is not None and _float(result.get("score")) is not None:
                bars.append({"label": f"sub-{subject} {label}", "metric": metric,
                             "score": result.get("score"), "chance": result.get("chance"),
                             "p_value": result.get("p_value")})
    mean = data.get("mean") if isinstance(data.get("mean"), dict) else {}
    rows.append(
        f'<tr><th>mean</th><td></td><td class="num">{_a(anchor, _fmt(mean.get("shared")))}</td>'
        f'<td class="num">{_a(anchor, _fmt(mean.get("chance")))}</td><td></td>'
        f'<td class="num">{_a(anchor, _fmt(mean.get("scratch")))}</td><td></td><td></td>'
        f'<td class="num">{_a(anchor, _fmt(mean.get("probe")))}</td><td></td><td></td>'
        f'<td class="num">{_a(anchor, _fmt(mean.get("baseline")))}</td></tr>'
    )
    probe_info = data.get("probe") if isinstance(data.get("probe"), dict) else {}
    probe_text = (f" Linear probe: skipped ({_e(probe_info['skipped'])})."
                  if probe_info.get("skipped") else
                  " Linear probe: a logistic regression on the frozen pretrained features "
                  f"({_e(probe_info.get('layer'))} tokens, C {_fmt(probe_info.get('C'))} "
                  "chosen by cross-validation over contiguous blocks of the training part)."
                  if probe_info else "")
    parts = [
        f'<h3 id="finetuned-{k}">{_e(data.get("analysis") or src.path.name)}: fine-tuned '
        "vs scratch</h3>"
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')} · pretrained {link} · metric "
        f"{_e(metric)} · {_fmt_int(data.get('n_permutations'))} permutations · "
        f"{_fmt_int(seen)} test samples in the pretraining's spans</p>{leak}"
        "<p>Each subject's test part, scored by the model fine-tuned from the codebook "
        "pretraining and by the same config trained from scratch on the same split; chance: "
        "the same predictions against permuted test targets; baseline: a logistic regression "
        f"on the subject's training part.{probe_text}</p>"
        f"<table>{head}{''.join(rows)}</table>"
    ]
    if bars:
        parts.append(
            f'<figure id="finetuned-{k}-bars">'
            f"{_img(figures.decoding_chart(bars), 'fine-tuned and scratch scores')}"
            f"<figcaption>{_e(metric)} per subject, fine-tuned, from scratch and by the linear "
            "probe; red: the "
            "permutation chance level.</figcaption></figure>"
        )
    return "".join(parts)


def _codebook_section(
    pretrains: list[tuple[_Source, dict[str, Any]]], models: list[tuple[_Source, dict[str, Any]]]
) -> str:
    tuned = [(src, d) for src, d in models if isinstance(d.get("pretrained"), dict)]
    if not pretrains and not tuned:
        return _empty("codebook pretraining results")
    by_path = {os.path.abspath(src.path): src for src, _ in pretrains}
    parts = [_pretrain_part(k, src, data) for k, (src, data) in enumerate(pretrains, 1)]
    parts += [_finetuned_part(k, src, data, by_path) for k, (src, data) in enumerate(tuned, 1)]
    return "".join(parts)


def _mapping(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _fmt_ms(value: Any) -> str:
    x = _float(value)
    return "—" if x is None else f"{1000 * x:g} ms"


def _fmt_stat(value: Any) -> str:
    """An integer as one (``1,475``), any other number as :func:`_fmt` writes it."""
    return _fmt_int(value) if isinstance(value, int) and not isinstance(value, bool) \
        else _fmt(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """The numeric (or null) leaves of nested mappings, by dotted key; lists and strings out."""
    out: dict[str, Any] = {}
    if not isinstance(value, Mapping):
        return out
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(item, f"{name}."))
        elif item is None or (_float(item) is not None and not isinstance(item, bool)):
            out[name] = item
    return out


#: Labels of the predictors of ``next_token_nll`` (others keep their key).
_NLL_PREDICTORS = {
    "model": "model",
    "poisson": "inhomogeneous Poisson (rate-only baseline)",
    "constant": "constant rate per unit",
}


def _nll_table(nll: Mapping[str, Any], anchor: str) -> str:
    predictors = [k for k in nll if not str(k).startswith("n_") and k != "split"
                  and (nll[k] is None or _float(nll[k]) is not None)]
    order = sorted(predictors, key=lambda k: (list(_NLL_PREDICTORS).index(k)
                                              if k in _NLL_PREDICTORS else 99))
    values = {k: _float(nll[k]) for k in order}
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    best = min(finite) if finite else None
    model = values.get("model")
    rows = []
    for key in order:
        v = values[key]
        cls = ' class="num sig"' if v is not None and v == best else ' class="num"'
        diff = (f"{v - model:+.3f}" if key != "model" and v is not None and model is not None
                and math.isfinite(v) and math.isfinite(model) else "")
        rows.append(f"<tr><td>{_e(_NLL_PREDICTORS.get(key, key))}</td>"
                    f"<td{cls}>{_a(anchor, _fmt(nll[key]))}</td>"
                    f'<td class="num">{diff}</td></tr>')
    return (
        f"<h4>Held-out next-token NLL (nats per spike; lower is better)</h4>"
        f'<p class="muted">split {_e(nll.get("split", "—"))} · '
        f"{_fmt_int(nll.get('n_windows'))} windows · {_fmt_int(nll.get('n_spikes'))} spikes · "
        "bold: the lowest</p>"
        "<table><tr><th>predictor</th><th>NLL (nats/spike)</th><th>minus the model's</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _connectivity_table(conn: Mapping[str, Any] | None, anchor: str) -> str:
    if conn is None:
        return ('<h4>Connectivity</h4><p class="empty">not measured (no known connectivity '
                "for this data)</p>")
    p = _float(conn.get("p_value"))
    cls = ' class="num sig"' if p is not None and p < 0.05 else ' class="num"'
    pairs = (f" of {_fmt_int(conn['n_pairs'])} pairs" if conn.get("n_pairs") is not None
             else "")
    return (
        "<h4>Connectivity read from the model against the true directed edges</h4>"
        "<table><tr><th>AUROC</th><th>chance (mean)</th><th>chance (95th percentile)</th>"
        "<th>p-value</th><th>true edges</th></tr>"
        f"<tr><td{cls}>{_a(anchor, _fmt(conn.get('auroc')))}</td>"
        f'<td class="num">{_a(anchor, _fmt(conn.get("chance_mean")))}</td>'
        f'<td class="num">{_a(anchor, _fmt(conn.get("chance_p95")))}</td>'
        f"<td{cls}>{_a(anchor, _fmt_p(conn.get('p_value')))}</td>"
        f'<td class="num">{_fmt_int(conn.get("n_edges"))}{pairs}</td></tr></table>'
        '<p class="muted">chance: the AUROC of the same scores against permuted edge labels.'
        "</p>"
    )


def _generation_part(k: int, gen: Mapping[str, Any] | None, anchor: str) -> str:
    """Generated against real statistics, beside the Poisson surrogate, flattened generically.

    Two layouts are read: ``generated`` / ``poisson_surrogate`` / ``real`` mappings side by side
    (:func:`neurodecode.evaluate.spike_stats.generation_stats`), or the generated statistics at
    the top level with a ``poisson_surrogate`` mapping of the same keys.
    """
    if not gen:
        return '<h4>Generated spike trains</h4><p class="empty">no generation in this folder</p>'
    surrogate = _mapping(gen, "poisson_surrogate")
    real = _mapping(gen, "real")
    if isinstance(gen.get("generated"), Mapping):
        generated = _flatten(gen["generated"])
    else:
        generated = _flatten({k: v for k, v in gen.items() if isinstance(v, Mapping)
                              and k not in ("poisson_surrogate", "real")})
    columns = [("real", _flatten(real))] if real else []
    columns += [("generated", generated), ("Poisson surrogate", _flatten(surrogate))]
    keys = list(dict.fromkeys([*generated, *columns[-1][1], *columns[0][1]]))
    settings = [f"{_e(key)} {_e(value)}" for key, value in gen.items()
                if not isinstance(value, Mapping | list)]
    lists = [f"{_e(key)} ({len(value)} values)" for key, value in gen.items()
             if isinstance(value, list)]
    parts = [f"<h4>Generated spike trains against held-out data</h4>"
             f'<p class="muted">{" · ".join(settings) or "no settings recorded"}'
             + (f" · per-unit lists: {', '.join(lists)}" if lists else "") + "</p>"]
    if keys:
        head = "".join(f"<th>{_e(name)}</th>" for name, _ in columns)
        body = "".join(
            f"<tr><td>{_e(key)}</td>"
            + "".join(f'<td class="num">{_a(anchor, _fmt_stat(flat[key])) if key in flat else ""}'
                      "</td>" for _, flat in columns)
            + "</tr>" for key in keys)  # fmt: skip
        parts.append(f"<table><tr><th>statistic</th>{head}</tr>{body}</table>"
                     '<p class="muted">Poisson surrogate: each unit\'s real spike count at '
                     "random times (same rates, no ISI structure, no correlations); a generator "
                     "worth its name is closer to the real trains than the surrogate on ISIs "
                     "and correlations.</p>")
    else:
        parts.append('<p class="empty">no numeric generation statistic</p>')
    rates_real, rates_gen = gen.get("rates_real"), gen.get("rates_generated")
    if isinstance(rates_real, list) and isinstance(rates_gen, list):
        try:
            png = figures.rate_scatter(rates_real, rates_gen)
        except (TypeError, ValueError) as err:
            parts.append(f'<p class="empty">per-unit rates not drawn: {_e(err)}</p>')
        else:
            parts.append(f'<figure id="spikes-{k}-rates">{_img(png, "per-unit firing rates")}'
                         "<figcaption>Each unit's rate in the generated trains against its "
                         "rate in the held-out data; dashed: identity.</figcaption></figure>")
    return "".join(parts)


def _spike_pretrain_part(k: int, src: _Source, data: dict[str, Any],
                         by_path: Mapping[str, _Recording]) -> str:
    anchor = src.anchor
    model = _mapping(data, "model")
    tok = _mapping(data, "tokens")
    speed = _mapping(data, "throughput")
    intervals = tok.get("intervals")
    behavior = tok.get("behavior")
    details = [
        f"model {_e(model.get('name', '—'))} (width {_fmt_int(model.get('width'))}, "
        f"{_fmt_int(model.get('layers'))} layers, {_fmt_int(model.get('past_layers'))} past "
        f"layers, {_fmt_int(model.get('parameters'))} parameters)",
        f"windows {_fmt_ms(tok.get('window'))} every {_fmt_ms(tok.get('stride'))}, past "
        f"{_fmt_ms(tok.get('past'))}, dt {_fmt_ms(tok.get('dt'))}, "
        f"{_fmt_int(tok.get('n_units'))} units",
        "intervals " + (_e("/".join(map(str, intervals))) if intervals else "whole recordings"),
        f"windows train / val / held-out {_fmt_int(tok.get('n_train'))} / "
        f"{_fmt_int(tok.get('n_val'))} / {_fmt_int(tok.get('n_heldout'))}",
        "behaviour " + (_e(", ".join(map(str, behavior))) if behavior else "none"),
        f"{_fmt_int(data.get('epochs'))} epochs in {_fmt_seconds(data.get('fit_seconds'))} "
        f"(seed {_e(data.get('seed', '—'))})",
        f"training {_fmt_int(speed.get('train_tokens_per_s'))} tokens/s, tokenizer "
        f"{_fmt_int(speed.get('tokenize_spikes_per_s'))} spikes/s",
    ]
    desc = data.get("description")
    parts = [
        f'<h3 id="spikes-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')} · dataset "
        f"{_e(data.get('dataset', '—'))}</p>"
        + (f"<p>{_e(desc)}</p>" if desc else "")
        + f"<p class=\"muted\">{' · '.join(details)}</p>"
    ]
    nll = data["next_token_nll"]
    refs = {f"{label} (held-out)": nll.get(key)
            for key, label in (("poisson", "inhomogeneous Poisson"), ("constant", "constant rate"))
            if key in nll}
    try:
        png = figures.nll_curve(data["history"], references=refs)
    except ValueError:
        parts.append('<p class="empty">no per-epoch history in this pretrain folder</p>')
    else:
        parts.append(
            f'<figure id="spikes-{k}-nll">{_img(png, "next-token NLL per epoch")}'
            "<figcaption>Next-token negative log-likelihood (nats per spike) per epoch on the "
            "training and validation windows; dotted: the rate-only baselines on the held-out "
            "windows. Lower is better.</figcaption></figure>"
        )
    parts.append(_nll_table(nll, anchor))
    parts.append(_connectivity_table(data.get("connectivity"), anchor))
    parts.append(_generation_part(k, data.get("generation"), anchor))
    recordings = _mapping(data, "recordings")
    coverage = _mapping(data, "coverage")
    if recordings:
        body = []
        for store, entry in recordings.items():
            entry = entry if isinstance(entry, dict) else {}
            spans = coverage.get(store)
            seconds = (sum(_float(b) - _float(a) for a, b in spans if _float(a) is not None
                           and _float(b) is not None) if isinstance(spans, list)
                       and all(isinstance(x, list | tuple) and len(x) == 2 for x in spans)
                       else None)
            cover = (f"{len(spans)} spans, {_fmt_seconds(seconds)}" if seconds is not None
                     else "—")
            body.append(
                f"<tr><td>{_recording_links([store], by_path)}</td>"
                f"<td>{_e(entry.get('subject', '—'))}</td><td>{_e(entry.get('session', '—'))}</td>"
                f'<td class="num">{_fmt_int(entry.get("n_units"))}</td>'
                f'<td class="num">{_fmt_int(entry.get("n_windows"))}</td>'
                f'<td class="num">{cover}</td></tr>'
            )
        parts.append("<h4>Recordings</h4><table><tr><th>recording</th><th>subject</th>"
                     "<th>session</th><th>units</th><th>windows</th><th>time covered</th></tr>"
                     f"{''.join(body)}</table>")
    return "".join(parts)


def _spikes_section(pretrains: list[tuple[_Source, dict[str, Any]]],
                    by_path: Mapping[str, _Recording]) -> str:
    if not pretrains:
        return _empty("spike-token pretraining results")
    return "".join(_spike_pretrain_part(k, src, data, by_path)
                   for k, (src, data) in enumerate(pretrains, 1))


#: Few-shot variants drawn as baselines (besides any row's ``baseline_name``).
_FINETUNE_BASELINES = ("ridge", "knn")


def _finetune_panels(rows: Sequence[Mapping[str, Any]], baselines: set[str]
                     ) -> list[dict[str, Any]]:
    """One panel per dataset and metric; scores and chance levels averaged over seeds."""
    groups: dict[tuple[str, str], dict[tuple[str, float], list[Mapping[str, Any]]]] = {}
    for row in rows:
        score = _float(row.get("score"))
        if score is None or not math.isfinite(score):
            continue
        panel = groups.setdefault((str(row["dataset"]), str(row["metric"])), {})
        panel.setdefault((str(row["variant"]), float(row["fraction"])), []).append(row)
    panels = []
    for (dataset, metric), points in groups.items():
        out = []
        for (variant, fraction), items in points.items():
            chances = [c for c in (_float(r.get("chance")) for r in items)
                       if c is not None and math.isfinite(c)]
            out.append({"label": variant, "fraction": fraction,
                        "kind": "baseline" if variant in baselines else "adapt",
                        "score": float(np.mean([_float(r["score"]) for r in items])),
                        "chance": float(np.mean(chances)) if chances else None})
        panels.append({"title": f"{dataset} · {metric}", "rows": out})
    return panels


def _target_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """The issue's target per dataset: pretrained with 10% of the labels against ridge on all."""
    lines = []
    for dataset in dict.fromkeys(str(r["dataset"]) for r in rows):
        def mean(variant: str, fraction: float, dataset: str = dataset) -> float | None:
            vals = [_float(r["score"]) for r in rows if str(r["dataset"]) == dataset
                    and r["variant"] == variant and abs(float(r["fraction"]) - fraction) < 1e-9]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            return float(np.mean(vals)) if vals else None

        pre, ridge = mean("pretrained", 0.1), mean("ridge", 1.0)
        if pre is not None and ridge is not None:
            verdict = "meets" if pre >= ridge else "misses"
            cls = "" if pre >= ridge else ' class="error"'
            lines.append(f"<p{cls}>{_e(dataset)}: pretrained with 10% of the labels "
                         f"{_fmt(pre)} against ridge with all of them {_fmt(ridge)} — "
                         f"{verdict} the target (≥)</p>")
    return "".join(lines)


def _finetune_part(k: int, src: _Source, data: dict[str, Any],
                   pretrains: Mapping[str, str]) -> str:
    anchor = src.anchor
    rows = data["few_shot"]
    pre = data.get("pretrained")
    if isinstance(pre, dict):
        path = str(pre.get("path", ""))
        known = pretrains.get(os.path.abspath(path)) if path else None
        shown = _e(pre.get("analysis") or _short_path(path, 3))
        link = (_a(known, shown, path) if known is not None
                else f'<code title="{_e(path)}">{shown}</code>')
        pre_text = f"pretrained {link}"
    else:
        pre_text = "no pretraining"
    split = _mapping(data, "split")
    metrics = list(dict.fromkeys(str(r["metric"]) for r in rows))
    metric = metrics[0] if len(metrics) == 1 else str(data.get("metric") or "score")
    details = [
        f"target {_e(data.get('target', '—'))} ({_e(data.get('task', '—'))})",
        f"metric {_e(', '.join(metrics) or data.get('metric', '—'))}",
        pre_text,
        f"train: {_e(split.get('train', '—'))} ({_fmt_int(split.get('n_train'))} samples), "
        f"test: {_e(split.get('test', '—'))} ({_fmt_int(split.get('n_test'))} samples), gap "
        + (f"{_e(split.get('gap'))} s" if split.get("gap") is not None else "—"),
        f"{_fmt_seconds(data.get('seconds'))}",
    ]
    desc = data.get("description")
    parts = [
        f'<h3 id="ft-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')} · dataset "
        f"{_e(data.get('dataset', '—'))}</p>"
        + (f"<p>{_e(desc)}</p>" if desc else "")
        + f"<p class=\"muted\">{' · '.join(details)}</p>"
    ]
    baselines = set(_FINETUNE_BASELINES) | {str(r["baseline_name"]) for r in rows
                                            if r.get("baseline_name")}
    panels = _finetune_panels(rows, baselines)
    if panels:
        png = figures.fewshot_curve(panels, metric=metric, x="fraction",
                                    xlabel="labelled fraction of the training time",
                                    percent=True)
        parts.append(
            f'<figure id="ft-{k}-curve">'
            f"{_img(png, 'few-shot curves: score against the labelled fraction')}"
            f"<figcaption>{_e(metric)} on the test blocks against the fraction of the training "
            "time whose labels the model was fitted with (log scale), mean over seeds: one line "
            "per variant (solid) and baseline (dashed-dotted); dashed black: the permutation "
            "chance level.</figcaption></figure>"
        )
    else:
        parts.append('<p class="empty">no few-shot row with a score in this finetune folder</p>')
    parts.append(_target_line(rows))
    if rows:
        head = (
            "<tr><th>dataset</th><th>variant</th><th>fraction</th><th>labelled</th>"
            "<th>metric</th><th>score</th><th>chance</th><th>p-value</th><th>baseline</th>"
            "<th>seed</th></tr>"
        )
        body = []
        for row in rows:
            base = row.get("baseline")
            base_cell = (f"{_a(anchor, _fmt(base))}"
                         + (f' <span class="muted">{_e(row["baseline_name"])}</span>'
                            if row.get("baseline_name") else "")) if base is not None else "—"
            body.append(
                f"<tr><td>{_e(row['dataset'])}</td><td>{_e(row['variant'])}</td>"
                f'<td class="num">{100 * float(row["fraction"]):g}%</td>'
                f'<td class="num">{_a(anchor, _fmt_int(row.get("n_labelled")))}</td>'
                f"<td>{_e(row['metric'])}</td>{_score_cells(row, anchor)}"
                f'<td class="num">{base_cell}</td>'
                f'<td class="num">{_e(row.get("seed", "—"))}</td></tr>'
            )
        parts.append(f"<table>{head}{''.join(body)}</table>")
    return "".join(parts)


def _finetune_section(finetunes: list[tuple[_Source, dict[str, Any]]],
                      spikes: list[tuple[_Source, dict[str, Any]]]) -> str:
    if not finetunes:
        return _empty("few-shot behaviour decoding results")
    # a pretraining in the report is linked to its part of the spike-token section
    by_path = {os.path.abspath(src.path): f"spikes-{k}" for k, (src, _) in enumerate(spikes, 1)}
    return "".join(_finetune_part(k, src, data, by_path)
                   for k, (src, data) in enumerate(finetunes, 1))


#: Methods of a reconstruct row, in table order, with their headings (others follow by key).
RECONSTRUCT_METHODS = (
    ("reconstruction", "reconstruction"),
    ("best_sample", "best sample (brain-chosen)"),
    ("lowlevel", "low-level"),
    ("ridge_to_pixels", "ridge to pixels"),
    ("nearest_training_image", "nearest training image"),
    ("ridge_time_mean", "ridge (time-averaged)"),
)
#: Metrics of a reconstruct row, in table order, with their headings (others follow by key).
RECONSTRUCT_METRICS = (
    ("pixcorr", "PixCorr"),
    ("ssim", "SSIM"),
    ("two_way_encoder", "two-way encoder"),
    ("two_way_random_cnn", "two-way random CNN"),
    ("retrieval_top1_brain_to_image", "retrieval brain→image"),
    ("retrieval_top1_image_to_brain", "retrieval image→brain"),
)
#: Keys of a method's entry that are not scores.
_RECON_NOT_SCORES = ("n_candidates",)
#: Row kinds of a reconstruct folder, with their headings (others are named by their kind).
_RECON_KINDS = {"trained": "trained subjects", "new": "new subjects (few-shot adaptation)"}


def _ordered(known: Sequence[tuple[str, str]], found: Iterable[str]) -> list[tuple[str, str]]:
    """``known`` (key, heading) pairs, then the other ``found`` keys under their own name."""
    names = {k for k, _ in known}
    return [*known, *((k, k) for k in dict.fromkeys(found) if k not in names)]


def _recon_chance(chance: Mapping[str, Any], metric: str) -> Any:
    """The chance level of ``metric`` (two-way and retrieval fall back on their shared key)."""
    if metric in chance:
        return chance[metric]
    for prefix in ("two_way", "retrieval_top1"):
        if metric.startswith(prefix):
            return chance.get(prefix)
    return None


def _png_note(folder: Path, name: Any, what: str) -> tuple[bytes | None, str]:
    """The PNG ``name`` of a stage folder, or None and a note saying why it cannot be shown."""
    text = str(name)
    if not text or Path(text).name != text:
        return None, f"{what}: {text!r} is not a file name in {folder}"
    path = folder / text
    try:
        png = path.read_bytes()
    except FileNotFoundError:
        return None, f"{what}: {path} is missing"
    except OSError as err:
        return None, f"{what}: {path} cannot be read ({err.strerror or err})"
    if not figures.is_png(png):
        return None, f"{what}: {path} is not a PNG image"
    return png, ""


def _recon_settings(data: Mapping[str, Any]) -> str:
    """The settings line: model, encoder, renderer, subjects, images, sampling, timings."""
    s, t = _mapping(data, "sampling"), _mapping(data, "timings")
    size = data.get("image_size")
    subjects = ", ".join(map(str, data.get("subjects") or [])) or "—"
    new = ", ".join(map(str, data.get("new_subjects") or [])) or "none"
    plan = (
        f"sampling: {_e(s.get('steps', '—'))} steps, guidance "
        f"{_fmt_fixed(s.get('guidance_scale'), 1)}, strength {_fmt_fixed(s.get('strength'))}, "
        f"{_e(s.get('n_samples', '—'))} samples × "
        f"{_e(s.get('unet_evals_per_sample', '—'))} UNet evaluations = "
        f"{_e(s.get('unet_evals_per_image', '—'))} UNet evaluations per image"
    ) if s else "sampling: —"
    timed = [(label, t.get(key)) for key, label in (
        ("encoder_s", "encoder"), ("embedding_s", "embedding decoder"),
        ("lowlevel_s", "low-level decoder"), ("diffusion_s", "diffusion")) if key in t]
    times = [f"{label} {_fmt_seconds(v)}" for label, v in timed]
    if "diffusion_epochs" in t or "train_images_per_s" in t:
        times.append(f"{_fmt_int(t.get('diffusion_epochs'))} diffusion epochs at "
                     f"{_fmt_fixed(t.get('train_images_per_s'), 1)} train images/s")
    times.append(f"total {_fmt_seconds(t.get('total_s'))}")
    leak = _mapping(data, "leakage")
    leak_text = ""
    if leak:
        leak_text = f" · test images in the fit: {_fmt_int(leak.get('test_images_in_fit'))}"
        if leak.get("split"):
            leak_text += f" ({_e(leak['split'])})"
    lines = [
        f"model {_e(data.get('model', '—'))} · encoder {_e(data.get('encoder', '—'))} · "
        f"renderer {_e(data.get('renderer', '—'))} · image size "
        + (f"{_e(size)}×{_e(size)}" if size is not None else "—"),
        f"subjects {_e(subjects)} · new subjects {_e(new)} · images: "
        f"{_fmt_int(data.get('n_fit_images'))} fit, {_fmt_int(data.get('n_test_images'))} test "
        f"of {_fmt_int(data.get('n_images'))}{leak_text}",
        plan,
        "timings: " + (", ".join(times) if t else "—"),
    ]
    return "".join(f'<p class="muted">{line}</p>' for line in lines)


def _recon_table(rows: Sequence[Mapping[str, Any]], anchor: str, *, new: bool) -> str:
    """One row per subject (and fraction): every method × metric, the best bold, chance below."""
    methods = _ordered(RECONSTRUCT_METHODS, (m for r in rows for m in r["methods"]))
    methods = [(k, h) for k, h in methods if any(k in r["methods"] for r in rows)]
    metrics = _ordered(RECONSTRUCT_METRICS, (
        k for r in rows for entry in r["methods"].values() for k in entry
        if k not in _RECON_NOT_SCORES))
    lead = ["subject", *(("fraction", "adapted on") if new else ()), "train trials",
            "test images"]
    head = (
        "<tr>" + "".join(f'<th rowspan="2">{h}</th>' for h in lead)
        + "".join(f'<th colspan="{len(metrics)}">{_e(h)}</th>' for _, h in methods)
        + '<th rowspan="2">sampling</th></tr><tr>'
        + "".join(f"<th>{_e(h)}</th>" for _ in methods for _, h in metrics) + "</tr>"
    )
    body = []
    for row in rows:
        entries = row["methods"]
        best = {}
        for metric, _ in metrics:
            values = [v for v in (_float(entries.get(m, {}).get(metric)) for m, _ in methods)
                      if v is not None and math.isfinite(v)]
            best[metric] = max(values) if values else None
        cells = [_e(row["subject"])]
        if new:
            frac = _float(row.get("fraction"))
            cells += [f"{100 * frac:g}%" if frac is not None else "—",
                      _fmt_seconds(row.get("adapt_seconds_of_data"))]
        cells += [_fmt_int(row.get("n_train_trials")), _fmt_int(row.get("n_test"))]
        tds = [f"<td>{cells[0]}</td>", *(f'<td class="num">{c}</td>' for c in cells[1:])]
        for method, _ in methods:
            entry = entries.get(method, {})
            for metric, _ in metrics:
                v = _float(entry.get(metric))
                top = v is not None and best[metric] is not None and v == best[metric]
                shown = "—" if entry.get(metric) is None else _a(anchor, _fmt(entry[metric]))
                tds.append(f'<td class="{"num best" if top else "num"}">{shown}</td>')
        speed = _float(row.get("sample_images_per_s"))
        tds.append(f'<td class="num">{_fmt_seconds(row.get("sample_seconds"))}'
                   + (f", {speed:.1f} images/s" if speed is not None else "")
                   + (f", {_e(row['unet_evals_per_image'])} UNet evals/image"
                      if row.get("unet_evals_per_image") is not None else "") + "</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
        chance = row.get("chance") or {}
        n_lead = len(lead)
        body.append(
            f'<tr class="chance"><td>chance ({_e(row["subject"])})</td>'
            + "".join("<td></td>" for _ in range(n_lead - 1))
            + "".join(f'<td class="num">{_fmt(_recon_chance(chance, metric))}</td>'
                      for _ in methods for metric, _ in metrics)
            + "<td></td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _stat_cell(stats: Any) -> str:
    """``mean ± sd (n)`` of a summary mapping."""
    if not isinstance(stats, Mapping):
        return '<td class="num">—</td>'
    n = f" (n={_fmt_int(stats['n'])})" if stats.get("n") is not None else ""
    return f'<td class="num">{_fmt(stats.get("mean"))} ± {_fmt(stats.get("sd"))}{n}</td>'


def _braindive_part(k: int, folder: Path, bd: Mapping[str, Any] | None) -> str:
    head = f'<h4 id="recon-{k}-braindive">BrainDiVE'
    if bd is None:
        return head + '</h4><p class="empty">BrainDiVE was not run (braindive.scale is 0)</p>'
    head += f": region {_e(bd.get('region', '—'))}</h4>"
    if bd.get("error"):
        return head + f'<p class="error">{_e(bd["error"])}</p>'
    parts = [head, (
        f'<p class="muted">guidance scale {_fmt_fixed(bd.get("scale"), 1)}, '
        f"{_e(bd.get('steps', '—'))} steps, {_e(bd.get('unet_evals_per_image', '—'))} UNet "
        f"evaluations per image · encoding model (ridge from the encoder's embedding to the "
        f"region's mean response) fitted on {_fmt_int(bd.get('n_fit_trials'))} trials: train r "
        f"{_fmt(bd.get('encoding_train_r'))}, validation r {_fmt(bd.get('validation_r'))}</p>"
    )]
    png, note = _png_note(folder, bd.get("figure") or "braindive.png", "BrainDiVE figure")
    if png is not None:
        parts.append(
            f'<figure id="recon-{k}-braindive-fig">'
            f"{_img(png, 'BrainDiVE: guided, unguided and random stimuli')}"
            f"<figcaption>{_e(bd.get('figure') or 'braindive.png')}: images synthesised with "
            f"the gradient of the region's predicted activation (guided), without it "
            "(unguided, same tokens and noise), and random training stimuli.</figcaption>"
            "</figure>")
    else:
        parts.append(f'<p class="empty">{_e(note)}</p>')
    sets = ("guided", "unguided", "stimuli")
    act = _mapping(bd, "predicted_activation")
    parts.append(
        "<table><tr><th>images</th><th>predicted activation (mean ± sd)</th></tr>"
        + "".join(f"<tr><td>{s}</td>{_stat_cell(act.get(s))}</tr>" for s in sets)
        + "</table>"
        f"<p>guided − stimuli: {_fmt(bd.get('difference'))}, permutation p-value "
        f"{_fmt_p(bd.get('p_value'))}</p>"
    )
    feature = bd.get("feature")
    if isinstance(feature, Mapping) and feature:
        parts.append(
            "<table><tr><th>images</th><th>ground-truth preferred feature (mean ± sd)</th></tr>"
            + "".join(f"<tr><td>{s}</td>{_stat_cell(feature.get(s))}</tr>" for s in sets)
            + "</table>"
        )
    return "".join(parts)


def _reconstruction_part(k: int, src: _Source, data: dict[str, Any]) -> str:
    anchor = src.anchor
    desc = data.get("description")
    parts = [
        f'<h3 id="recon-{k}">{_e(data.get("analysis") or src.path.name)}</h3>'
        f'<p class="muted">{_e(src.path)} · provenance: '
        f"{_a(anchor, 'record' if src.record else 'none')}"
        + (f" · stimuli <code>{_e(data['stimuli'])}</code>" if data.get("stimuli") else "")
        + "</p>" + (f"<p>{_e(desc)}</p>" if desc else "") + _recon_settings(data)
    ]
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for row in data["rows"]:
        kinds.setdefault(str(row["kind"]), []).append(row)
    if not kinds:
        parts.append('<p class="empty">no subject rows in this reconstruct folder</p>')
    for kind, rows in kinds.items():
        safe = _SAFE_CLASS.sub("-", kind.lower())
        candidates = sorted({_fmt_int(e["n_candidates"]) for r in rows
                             for e in r["methods"].values() if e.get("n_candidates") is not None})
        among = f" among {' or '.join(candidates)} candidates" if candidates else ""
        parts.append(
            f'<h4 id="recon-{k}-{safe}">{_e(_RECON_KINDS.get(kind, kind))}</h4>'
            f'<p class="muted">higher is better for every metric; bold: the best method per '
            f"metric and subject; retrieval: top-1{among}; chance: two-way 0.5, retrieval "
            "1/candidates, PixCorr and SSIM of shuffled pairs</p>"
            + _recon_table(rows, anchor, new=kind == "new")
        )
    grids = _mapping(data, "grids")
    if grids:
        parts.append(f'<h4 id="recon-{k}-grids">image grids</h4><div class="grid">')
        for i, (name, file) in enumerate(grids.items(), 1):
            png, note = _png_note(src.path, file, f"grid {name}")
            if png is None:
                parts.append(f'<p class="empty">{_e(note)}</p>')
                continue
            parts.append(
                f'<figure id="recon-{k}-grid-{i}">{_img(png, f"reconstructions of {name}")}'
                f"<figcaption>{_e(name)} ({_e(file)}): first row the seen test images, then "
                "each method's reconstruction of them.</figcaption></figure>")
        parts.append("</div>")
    parts.append(_braindive_part(k, src.path, data.get("braindive")))
    return "".join(parts)


def _reconstruction_section(folders: list[tuple[_Source, dict[str, Any]]]) -> str:
    if not folders:
        return _empty("image reconstruction results")
    return "".join(_reconstruction_part(k, src, data)
                   for k, (src, data) in enumerate(folders, 1))


def _provenance_section(sources: _Sources) -> str:
    if not sources.items:
        return _empty("inputs")
    parts = []
    for src in sources.items:
        title = f"{_e(src.role)}: <code>{_e(src.path)}</code>"
        rec = src.record
        if rec is None:
            parts.append(
                f'<article id="{src.anchor}"><h3>{title}</h3>'
                '<p class="empty">no provenance (not written by a stage)</p></article>'
            )
            continue
        inputs = []
        for role, items in (rec.get("inputs") or {}).items():
            for item in items or []:
                path = str(item.get("path", ""))
                other = sources.find(path) if path else None
                shown = _e(path) if other is None else _a(other.anchor, _e(path))
                inputs.append(
                    f"<tr><td>{_e(role)}</td><td>{shown}</td>"
                    f"<td><code>{_e(item.get('fingerprint', ''))}</code></td></tr>"
                )
        inputs_html = (
            "<table><tr><th>input</th><th>path</th><th>fingerprint</th></tr>"
            + "".join(inputs) + "</table>" if inputs else '<p class="empty">no inputs</p>'
        )  # fmt: skip
        outputs = "".join(
            f"<tr><td>{_e(role)}</td><td>{_e(item.get('path', ''))}</td>"
            f"<td><code>{_e(item.get('fingerprint', ''))}</code></td></tr>"
            for role, item in (rec.get("outputs") or {}).items() if isinstance(item, dict)
        )  # fmt: skip
        versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (rec.get("versions") or {}).items())
        fields = [
            ("stage", _e(rec.get("stage", "—"))),
            ("job", _e(rec.get("job") or "—")),
            ("job hash", f"<code>{_e(str(rec.get('hash', '—'))[:16])}</code>"),
            ("code version", f"<code>{_e(rec.get('code_version', '—'))}</code>"),
            ("git", f"<code>{_e(rec.get('git') or 'unknown')}</code>"),
            ("host", _e(rec.get("host", "—"))),
            ("started", _e(rec.get("started", "—"))),
            ("finished", _e(rec.get("finished", "—"))),
            ("seconds", _fmt_seconds(rec.get("seconds"))),
            ("versions", versions or "—"),
        ]
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in fields)
        summary = rec.get("summary")
        parts.append(
            f'<article id="{src.anchor}"><h3>{title}</h3><dl>{dl}</dl>'
            f"<h4>config</h4>{_json_block(rec.get('config', {}))}"
            f"<h4>inputs</h4>{inputs_html}"
            + (f"<h4>outputs</h4><table><tr><th>output</th><th>path</th><th>fingerprint</th>"
               f"</tr>{outputs}</table>" if outputs else "")
            + (f"<details><summary>summary of the job</summary>{_json_block(summary)}</details>"
               if summary is not None else "")
            + "</article>"
        )  # fmt: skip
    return "".join(parts)


def _workflow_section(jobs: list[dict[str, Any]] | None) -> str:
    if not jobs:
        return _empty("workflow jobs")
    counts: dict[str, int] = {}
    rows = []
    for job in jobs:
        status = str(job.get("status", "—"))
        counts[status] = counts.get(status, 0) + 1
        cls = _SAFE_CLASS.sub("-", status.lower())
        rows.append(
            f"<tr><td>{_e(job.get('job', '—'))}</td><td>{_e(job.get('stage', '—'))}</td>"
            f'<td class="status-{cls}">{_e(status)}</td><td>{_e(job.get("reason") or "")}</td>'
            f'<td class="num">{_fmt_seconds(job.get("seconds"))}</td></tr>'
        )
    tally = ", ".join(f"{n} {_e(s)}" for s, n in counts.items())
    return (
        f"<p>{len(jobs)} jobs: {tally}.</p><table><tr><th>job</th><th>stage</th><th>status</th>"
        f"<th>reason</th><th>seconds</th></tr>{''.join(rows)}</table>"
    )


_CSS = """
:root{--ink:#1b2a4a;--muted:#5b6478;--line:#d8dde6;--bg:#f4f6f9;--accent:#2456a6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
header{background:var(--ink);color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d2e3;font-size:13px}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
padding:8px 28px;display:flex;gap:20px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-weight:600}
main{padding:4px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:14px 20px;
margin:18px 0;overflow-x:auto}
section h2{margin:0 0 10px;font-size:19px}
h3{font-size:15px;margin:18px 0 6px}
h4{font-size:13px;margin:12px 0 4px;color:var(--muted)}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.sig,td.best{font-weight:700}
tr.chance td{color:var(--muted);font-style:italic}
td.error,p.error{color:#b00020}
a{color:var(--accent)}
tr:target,article:target,figure:target,span:target{outline:2px solid #f0a500}
.empty{color:var(--muted);font-style:italic}
.muted{color:var(--muted);font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:8px 0;border:1px solid var(--line);border-radius:4px;padding:6px;background:#fff;
max-width:100%}
.thumbs figure{margin:0}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
img{max-width:100%;height:auto;display:block}
pre{background:#f3f5f9;border:1px solid var(--line);padding:8px;overflow:auto;font-size:12px;
max-height:360px;margin:4px 0}
code{font-size:12px}
article{border-top:1px solid var(--line);padding:6px 0 10px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0;font-size:13px}
dt{color:var(--muted)}
dd{margin:0;word-break:break-word}
.status-failed,.status-error{color:#b00020;font-weight:600}
.status-done,.status-ran,.status-finished{color:#1a7f37}
.status-skipped,.status-up-to-date{color:var(--muted)}
"""


def write_report(
    path: str | os.PathLike,
    *,
    stores: str | os.PathLike | Iterable[str | os.PathLike] = (),
    decode: str | os.PathLike | Iterable[str | os.PathLike] = (),
    embed: str | os.PathLike | Iterable[str | os.PathLike] = (),
    cross_subject: str | os.PathLike | Iterable[str | os.PathLike] = (),
    adapt: str | os.PathLike | Iterable[str | os.PathLike] = (),
    pretrain: str | os.PathLike | Iterable[str | os.PathLike] = (),
    finetune: str | os.PathLike | Iterable[str | os.PathLike] = (),
    reconstruct: str | os.PathLike | Iterable[str | os.PathLike] = (),
    title: str = "neurodecode report",
    workflow: Sequence[Mapping[str, Any]] | None = None,
    thumbnails: bool = True,
    thumbnail_seconds: float = 10.0,
) -> dict[str, Any]:
    """Write one self-contained HTML report of a run, atomically.

    Parameters
    ----------
    path : path-like
        The ``.html`` file to write (its folder is created).
    stores : path-like or iterable of path-like
        Folders of recording stores (or stores), e.g. the outputs of ``simulate`` / ``ingest``.
    decode : path-like or iterable of path-like
        ``metrics.json`` files of the decode stage.
    embed : path-like or iterable of path-like
        Folders written by the embed stage.
    cross_subject : path-like or iterable of path-like
        Model folders written by the cross_subject stage.
    adapt : path-like or iterable of path-like
        Folders written by the adapt stage.
    pretrain : path-like or iterable of path-like
        Folders written by the pretrain stage (codebook or spike-token pretraining).
    finetune : path-like or iterable of path-like
        Folders written by the finetune stage (few-shot behaviour decoding).
    reconstruct : path-like or iterable of path-like
        Folders written by the reconstruct stage (image reconstruction, BrainDiVE).
    title : str
        The report's title.
    workflow : sequence of mapping, optional
        The workflow's job table: ``job``, ``stage``, ``status``, ``reason``, ``seconds``.
    thumbnails : bool
        Draw a thumbnail of every recording.
    thumbnail_seconds : float
        Length of the trace window of time-series thumbnails.

    Returns
    -------
    dict
        ``path``, ``bytes`` (size of the file), ``recordings``, ``unreadable`` (stores that
        could not be read), ``analyses`` (metrics files), ``scores`` (metric rows),
        ``embeddings`` (embed folders), ``models`` (cross_subject folders), ``adapted``
        (adapt folders), ``fewshot_rows``, ``pretrained`` (pretrain folders, both families),
        ``spike_pretrained`` (the spike-token ones), ``finetuned`` (cross_subject folders
        fine-tuned from one), ``finetunes`` (finetune folders), ``finetune_rows``,
        ``reconstructions`` (reconstruct folders), ``reconstruction_rows``, ``jobs`` and
        ``seconds``.

    Raises
    ------
    ReportError
        If an input is missing or is not what its role expects (naming the file and the
        problem), or the report cannot be written. A damaged store does not stop the report:
        its row says why it cannot be read.
    """
    t0 = time.perf_counter()
    stores, decode, embed = _paths(stores), _paths(decode), _paths(embed)
    cross_subject, adapt, pretrain = _paths(cross_subject), _paths(adapt), _paths(pretrain)
    finetune, reconstruct = _paths(finetune), _paths(reconstruct)
    if thumbnail_seconds <= 0:
        raise ReportError(f"thumbnail_seconds must be positive, got {thumbnail_seconds}")
    jobs = None if workflow is None else _check_jobs(workflow, "workflow")
    sources = _Sources()
    recs = _read_recordings(stores, sources, thumbnails, thumbnail_seconds)
    by_path = {os.path.abspath(r.path): r for r in recs}

    def read(kind: str, paths: Sequence[str | os.PathLike], load: Any) -> list[tuple[Any, Any]]:
        """Each input loaded (checked) and registered as a source; duplicates once."""
        out = []
        for p in paths:
            data = load(p)
            src = sources.add(kind, p)
            if src is not None:
                out.append((src, data))
        return out

    results = read("decode", decode, load_metrics)
    folders = read("embed", embed, load_embedding)
    models = read("cross_subject", cross_subject, load_cross_subject)
    adapted = read("adapt", adapt, load_fewshot)
    pretrains = read("pretrain", pretrain, load_pretrain)
    finetunes = read("finetune", finetune, load_finetune)
    recons = read("reconstruct", reconstruct, load_reconstruction)
    spikes = [(src, d) for src, d in pretrains if d.get("family") == SPIKE_FAMILY]
    codebooks = [(src, d) for src, d in pretrains if d.get("family") != SPIKE_FAMILY]
    tuned = sum(isinstance(d.get("pretrained"), dict) for _, d in models)

    from .. import __version__

    bodies = {
        "recordings": _recordings_section(recs, thumbnails),
        "decoding": _decoding_section(results, by_path),
        "embeddings": _embeddings_section(folders, by_path),
        "fewshot": _fewshot_section(models, adapted),
        "codebook": _codebook_section(codebooks, models),
        "spikes": _spikes_section(spikes, by_path),
        "finetune": _finetune_section(finetunes, spikes),
        "reconstruction": _reconstruction_section(recons),
        "provenance": _provenance_section(sources),
        "workflow": _workflow_section(jobs),
    }
    counts = {
        "recordings": len(recs),
        "decoding": sum(max(len(d["metrics"]), 1) for _, d in results),
        "embeddings": len(folders),
        "fewshot": len(models) + len(adapted),
        "codebook": len(codebooks) + tuned,
        "spikes": len(spikes),
        "finetune": len(finetunes),
        "reconstruction": len(recons),
        "provenance": len(sources.items),
        "workflow": len(jobs or []),
    }
    nav = "".join(f'<a href="#{sid}">{_e(name)} ({counts[sid]})</a>' for sid, name in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{_e(name)}</h2>{bodies[sid]}</section>' for sid, name in SECTIONS
    )
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="neurodecode {_e(__version__)}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>written {_e(now)} by neurodecode {_e(__version__)} · "
        f"{len(recs)} recordings · {len(results)} decoding results · {len(folders)} embed "
        f"folders</p></header><nav>{nav}</nav><main>{sections}</main></body></html>\n"
    )
    out = Path(path)
    _write_atomic(out, doc)
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "recordings": len(recs),
        "unreadable": sum(r.error is not None for r in recs),
        "analyses": len(results),
        "scores": counts["decoding"],
        "embeddings": len(folders),
        "models": len(models),
        "adapted": len(adapted),
        "fewshot_rows": sum(len(d["rows"]) for _, d in adapted),
        "pretrained": len(pretrains),
        "spike_pretrained": len(spikes),
        "finetuned": tuned,
        "finetunes": len(finetunes),
        "finetune_rows": sum(len(d["few_shot"]) for _, d in finetunes),
        "reconstructions": len(recons),
        "reconstruction_rows": sum(len(d["rows"]) for _, d in recons),
        "jobs": len(jobs or []),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _paths(value: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """One path or several, as a list."""
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a hidden temporary sibling of ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ReportError(
                f"{path}: the report cannot be written ({err.strerror or err})"
            ) from None
        raise
