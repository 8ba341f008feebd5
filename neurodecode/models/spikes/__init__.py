"""Neuroformer-style generative pretraining on spike tokens.

:mod:`.config` (:class:`SpikeModelConfig`, ``models/spike_gpt.yaml``), :mod:`.embedding` (the
unit embedding that grows with the vocabulary and trains only chosen rows), :mod:`.model` (the
causal transformer over a window's (unit, dt) tokens with cross-attention to its past window,
behaviour and stimulus), :mod:`.pretrainer` (the estimator: fit, held-out NLL per spike, new
units, checkpoint). Tokens come from :mod:`neurodecode.data.tokens`.
"""

from .config import SpikeModelConfig, load_spike_config
from .embedding import UnitEmbedding
from .model import SpikeTransformer
from .pretrainer import SpikePretrainer, TokenBatches

__all__ = [
    "SpikeModelConfig",
    "SpikePretrainer",
    "SpikeTransformer",
    "TokenBatches",
    "UnitEmbedding",
    "load_spike_config",
]
