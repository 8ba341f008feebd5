"""Models: parts (backbones, subject adapters, heads), their registry and configs, Lightning
task modules, the cross-subject decoder with few-shot adaptation, and CEBRA-style embeddings.

The cross-subject package follows one pattern that later model families reuse:

- :mod:`.registry` — ``@register(kind, name)`` for every part; configs name parts.
- :mod:`.config` — ``models/*.yaml`` validated by pydantic (:class:`ModelConfig`).
- :mod:`.backbones`, :mod:`.adapters`, :mod:`.heads` — one part per module, plain ``nn.Module``.
- :mod:`.cross_subject` — the assembled :class:`CrossSubjectModel`.
- :mod:`.tasks` — thin Lightning modules (:class:`~.tasks.DecodeTask`).
- :mod:`.checkpoint` — shared weights and each subject's adapter under explicit keys.
- :mod:`.decoder` and :mod:`.fewshot` — the estimator and the adaptation strategies.
"""

from .contrastive import ContrastiveEmbedding, InfoNCE
from .encoders import OffsetEncoder, TemporalLinear

__all__ = [
    "ContrastiveEmbedding",
    "CrossSubjectDecoder",
    "CrossSubjectModel",
    "InfoNCE",
    "ModelConfig",
    "OffsetEncoder",
    "TemporalLinear",
    "load_model_config",
]


def __getattr__(name: str):
    # Lightning (~1 s to import) is loaded only when the decoder is asked for.
    if name == "CrossSubjectDecoder":
        from .decoder import CrossSubjectDecoder

        return CrossSubjectDecoder
    if name == "CrossSubjectModel":
        from .cross_subject import CrossSubjectModel

        return CrossSubjectModel
    if name in ("ModelConfig", "load_model_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
