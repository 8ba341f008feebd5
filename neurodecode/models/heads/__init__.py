"""Heads: from the backbone's features ``(batch, features)`` to a task's output, loss and score.

Importing this package registers the built-in heads with :mod:`neurodecode.models.registry`:

===============  ============================  ===========  ======================
name             class                         task         metric
===============  ============================  ===========  ======================
``classify``     :class:`ClassifyHead`         classify     balanced_accuracy
``regress``      :class:`RegressHead`          regress      r2
``contrastive``  :class:`ContrastiveHead`      embed        top1_retrieval
===============  ============================  ===========  ======================
"""

from __future__ import annotations

from .base import Head
from .classify import ClassifyHead
from .contrastive import (
    ContrastiveHead,
    info_nce_loss,
    soft_clip_loss,
    top1_retrieval,
)
from .regress import RegressHead

__all__ = [
    "ClassifyHead",
    "ContrastiveHead",
    "Head",
    "RegressHead",
    "info_nce_loss",
    "soft_clip_loss",
    "top1_retrieval",
]
