"""Models: encoders and the estimators and Lightning modules built on them."""

from .contrastive import ContrastiveEmbedding, ContrastiveModule, InfoNCE
from .encoders import OffsetEncoder, TemporalLinear

__all__ = [
    "ContrastiveEmbedding",
    "ContrastiveModule",
    "InfoNCE",
    "OffsetEncoder",
    "TemporalLinear",
]
