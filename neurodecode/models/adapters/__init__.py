"""Subject adapters: per-subject weights that map each subject into the shared latent.

One module per adapter: :mod:`.subject_linear` (linear / low-rank maps, optionally invertible
for cycle reconstruction), :mod:`.channels` (each subject's own channels, for single-channel
backbones), :mod:`.spatial_attention` (any montage with positions → virtual
channels, zero-shot capable), :mod:`.region_linear` (a linear fusion per anatomical region,
into fixed region slots); plus :mod:`.lora` (low-rank updates of a trained backbone) and
:mod:`.alignment` (closed-form functional alignment of a new subject onto a trained one).
"""

from .alignment import FunctionalAlignment, paired_targets
from .base import UNKNOWN_SUBJECT, SubjectAdapter, SubjectSpec
from .channels import Channels
from .lora import LoRA, add_lora, lora_parameters, merge_lora
from .region_linear import RegionLinear
from .spatial_attention import SpatialAttention, fourier_features
from .subject_linear import SubjectLinear

__all__ = [
    "UNKNOWN_SUBJECT",
    "Channels",
    "FunctionalAlignment",
    "LoRA",
    "RegionLinear",
    "SpatialAttention",
    "SubjectAdapter",
    "SubjectLinear",
    "SubjectSpec",
    "add_lora",
    "fourier_features",
    "lora_parameters",
    "merge_lora",
    "paired_targets",
]
