"""The run report: one self-contained HTML file with every stage's results and their provenance.

:func:`write_report` reads folders of recording stores, the decode stage's ``metrics.json``
files, the embed stage's folders, the cross_subject and adapt stages' folders, the pretrain
stage's folders (codebook or spike-token) and the finetune stage's folders, and writes one HTML
file (CSS inline, figures embedded as PNG ``data:`` URIs, no script, no external URL) with a
section per stage — recordings, decoding, embeddings, few-shot adaptation, codebook
pretraining, spike-token pretraining, few-shot behaviour decoding, provenance, workflow —
written atomically. The ``report``
stage (:mod:`neurodecode.pipelines.report`) runs it in workflows.
:mod:`neurodecode.report.figures` holds the figures.
"""

from .html import (
    SECTIONS,
    ReportError,
    load_cross_subject,
    load_embedding,
    load_fewshot,
    load_finetune,
    load_jobs,
    load_metrics,
    load_pretrain,
    load_reconstruction,
    write_report,
)

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
