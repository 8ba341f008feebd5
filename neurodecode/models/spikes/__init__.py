"""Neuroformer-style generative pretraining on spike tokens.

:mod:`.config` (:class:`SpikeModelConfig`, ``models/spike_gpt.yaml``), :mod:`.embedding` (the
unit embedding that grows with the vocabulary and trains only chosen rows), :mod:`.model` (the
causal transformer over a window's (unit, dt) tokens with cross-attention to its past window,
behaviour and stimulus), :mod:`.pretrainer` (the estimator: fit, held-out NLL per spike, new
units, checkpoint), :mod:`.finetune` (:class:`SpikeDecoder`: behaviour from few labels,
new sessions by unit identification), :mod:`.generate` (sampling spike trains) and
:mod:`.connectivity` (directed influence read from the model). Tokens come from
:mod:`neurodecode.data.tokens`.
"""

from .config import SpikeModelConfig, load_spike_config
from .connectivity import model_connectivity
from .embedding import UnitEmbedding
from .finetune import SpikeDecoder
from .generate import generate, generate_trains
from .model import SpikeTransformer
from .pretrainer import SpikePretrainer, TokenBatches

__all__ = [
    "SpikeDecoder",
    "SpikeModelConfig",
    "SpikePretrainer",
    "SpikeTransformer",
    "TokenBatches",
    "UnitEmbedding",
    "generate",
    "generate_trains",
    "load_spike_config",
    "model_connectivity",
]
