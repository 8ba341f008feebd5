"""CEBRA-style contrastive embeddings (Schneider, Lee & Mathis, Nature 2023).

:class:`ContrastiveEmbedding` is the scikit-learn estimator; :class:`ContrastiveModule` the
Lightning module it trains; :mod:`.sampling` draws positive pairs with a label index whose cost
grows with ``log(n_samples)``; :mod:`.consistency` compares embeddings across subjects.
"""

from .consistency import consistency_score
from .estimator import ContrastiveEmbedding
from .losses import InfoNCE, goodness_of_fit_bits
from .module import ContrastiveModule, PairBatches
from .sampling import LabelIndex, PairSampler

__all__ = [
    "ContrastiveEmbedding",
    "ContrastiveModule",
    "InfoNCE",
    "LabelIndex",
    "PairBatches",
    "PairSampler",
    "consistency_score",
    "goodness_of_fit_bits",
]


def cebra_factory(**params):
    """``module:factory`` entry for ``../shared/bench/bench_cebra.py --impl``."""
    return ContrastiveEmbedding.from_cebra_params(**params)
