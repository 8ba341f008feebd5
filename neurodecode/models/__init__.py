"""Models: encoders and the estimators and Lightning modules built on them."""

from .contrastive import ContrastiveEmbedding, InfoNCE
from .encoders import OffsetEncoder, TemporalLinear

__all__ = [
    "ContrastiveEmbedding",
    "InfoNCE",
    "OffsetEncoder",
    "TemporalLinear",
]
