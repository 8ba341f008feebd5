"""Du-IN-style codebook pretraining: segment tokens, a cosine VQ-VAE codebook, masked codes.

:mod:`.quantizer` (the codebook, its restarts and health), :mod:`.model` (the VQ-VAE and the
masked-code model, plain modules), :mod:`.pretrainer` (the estimator running both stages, its
checkpoint, and :func:`~.pretrainer.transfer` into a decoder for fine-tuning).
"""

from .model import MaskedCodeModel, SegmentVQVAE, random_segment_mask
from .pretrainer import CodebookPretrainer, transfer
from .quantizer import CodebookHealth, VectorQuantizer, perplexity

__all__ = [
    "CodebookHealth",
    "CodebookPretrainer",
    "MaskedCodeModel",
    "SegmentVQVAE",
    "VectorQuantizer",
    "perplexity",
    "random_segment_mask",
    "transfer",
]
