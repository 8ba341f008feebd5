"""CEBRA-style contrastive embeddings (Schneider, Lee & Mathis, Nature 2023).

:class:`ContrastiveEmbedding` is the scikit-learn estimator; :class:`ContrastiveObjective` the
training step it runs, in a plain loop or wrapped in the Lightning :class:`ContrastiveModule`;
:mod:`.sampling` draws positive pairs with a label index whose cost grows with ``log(n_samples)``;
:mod:`.consistency` compares embeddings across subjects (held-out R² of linear maps between them).
"""

from .batches import PairBatches
from .consistency import consistency_score
from .estimator import ContrastiveEmbedding
from .losses import InfoNCE, goodness_of_fit_bits
from .objective import ContrastiveObjective
from .sampling import LabelIndex, PairSampler

__all__ = [
    "ContrastiveEmbedding",
    "ContrastiveModule",
    "ContrastiveObjective",
    "InfoNCE",
    "LabelIndex",
    "PairBatches",
    "PairSampler",
    "consistency_score",
    "goodness_of_fit_bits",
]


def __getattr__(name: str):
    # Lightning (~90 MB, ~1 s to import) is loaded only when its module is asked for.
    if name == "ContrastiveModule":
        from .module import ContrastiveModule

        return ContrastiveModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cebra_factory(**params):
    """``module:factory`` entry for ``../shared/bench/bench_cebra.py --impl``."""
    return ContrastiveEmbedding.from_cebra_params(**params)
