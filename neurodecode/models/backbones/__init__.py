"""Backbones: shared networks from the latent sequence ``(batch, time, latent)`` to features.

Importing this package registers the built-in backbones with
:mod:`neurodecode.models.registry`:

========================  =================================================================
``residual_mlp``          :class:`ResidualMLP`, a MindEye-style residual MLP (fMRI patterns)
``temporal_conv``         :class:`TemporalConv`, ShallowFBCSPNet/EEGNet-like temporal
                          convolutions (EEG, MEG, sEEG time series)
``transformer``           :class:`TimeTransformer`, a pre-norm transformer over time patches
``segment_transformer``   :class:`SegmentTransformer`, segment tokens (fused or one channel at
                          a time) and a transformer: the encoder of codebook pretraining
========================  =================================================================
"""

from __future__ import annotations

from .base import Backbone
from .mlp import ResidualMLP
from .segment_transformer import SegmentTokenizer, SegmentTransformer
from .temporal_conv import TemporalConv
from .transformer import TimeTransformer

__all__ = ["Backbone", "ResidualMLP", "SegmentTokenizer", "SegmentTransformer", "TemporalConv",
           "TimeTransformer"]
