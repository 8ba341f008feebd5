"""The ``report`` stage: one self-contained HTML report of a run's stores, scores and embeddings.

It runs :func:`neurodecode.report.write_report` on the outputs of the other stages: folders of
recording stores (``simulate``, ``ingest``), ``metrics.json`` files (``decode``), embed
folders (``embed``), model folders (``cross_subject``), adaptation folders (``adapt``),
pretraining folders (``pretrain``: codebook or spike-token), few-shot fine-tuning folders
(``finetune``) and image reconstruction folders (``reconstruct``), plus, optionally, the
workflow's job table. Every input is optional, so a workflow can report on whatever it ran;
each section says when it has nothing to show.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from ..config import StageConfig
from .base import Slot, Stage, StageError, register

__all__ = ["ReportConfig", "ReportStage"]


def _report_code() -> str:
    """Digest of the sources of :mod:`neurodecode.report`, read without importing them.

    It is part of the stage's version, so a change to the report's rendering re-runs the stage;
    reading instead of importing keeps loading the stage registry light (no matplotlib).
    """
    h = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "report").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


class ReportConfig(StageConfig):
    """Parameters of the ``report`` stage.

    Attributes
    ----------
    title : str
        The report's title (its ``<title>`` and heading).
    thumbnails : bool
        Draw a thumbnail of every recording (traces, or carpet and mean image).
    thumbnail_seconds : float
        Length of the trace window of time-series thumbnails, from the recording's start.
    """

    title: str = "neurodecode report"
    thumbnails: bool = True
    thumbnail_seconds: float = Field(10.0, gt=0)


@register
class ReportStage(Stage):
    """Write one HTML file with the recordings, decoding, embeddings, provenance and jobs."""

    name = "report"
    Config = ReportConfig
    version = f"1+{_report_code()}"
    inputs = {
        "stores": Slot("folders of recording stores", many=True, required=False),
        "decode": Slot("metrics.json files of the decode stage", many=True, required=False),
        "embed": Slot("folders written by the embed stage", many=True, required=False),
        "cross_subject": Slot("model folders written by the cross_subject stage", many=True,
                              required=False),
        "adapt": Slot("folders written by the adapt stage (few-shot curves)", many=True,
                      required=False),
        "pretrain": Slot("folders written by the pretrain stage (codebook health, spike-token "
                         "NLL and generation)", many=True, required=False),
        "finetune": Slot("folders written by the finetune stage (few-shot behaviour decoding)",
                         many=True, required=False),
        "reconstruct": Slot("folders written by the reconstruct stage (image reconstruction "
                            "scores, image grids, BrainDiVE)", many=True, required=False),
        "jobs": Slot(
            "JSON job table of the workflow run (a list of {job, stage, status, reason, "
            "seconds}, or {'jobs': [...]})",
            required=False,
        ),
    }
    outputs = {"report": Slot("the self-contained HTML report")}

    def run(
        self, config: ReportConfig, inputs: Mapping[str, list[Path]], outputs: Mapping[str, Path]
    ) -> dict[str, Any]:
        from ..report import ReportError, load_jobs, write_report

        try:
            jobs = load_jobs(inputs["jobs"][0]) if inputs.get("jobs") else None
            summary = write_report(
                outputs["report"],
                stores=inputs.get("stores", []),
                decode=inputs.get("decode", []),
                embed=inputs.get("embed", []),
                cross_subject=inputs.get("cross_subject", []),
                adapt=inputs.get("adapt", []),
                pretrain=inputs.get("pretrain", []),
                finetune=inputs.get("finetune", []),
                reconstruct=inputs.get("reconstruct", []),
                title=config.title,
                workflow=jobs,
                thumbnails=config.thumbnails,
                thumbnail_seconds=config.thumbnail_seconds,
            )
        except ReportError as err:
            raise StageError(f"stage report: {err}") from None
        summary.pop("path")  # a temporary path: the record names the final one
        return summary
