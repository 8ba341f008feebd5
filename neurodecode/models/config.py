"""Model configurations: ``models/*.yaml`` validated by pydantic.

A model config names its parts (a backbone, a subject adapter, a head; see
:mod:`neurodecode.models.registry`) with their hyper-parameters, the size of the shared latent
the adapters map every subject into, and how it is trained. Each part's parameters are checked
against that part's own ``Params`` when the config is loaded, so a typo fails before any data is
read, naming the file, the part and the parameter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic

from ..config import deep_merge, read_yaml_mapping, validation_problems
from . import registry

__all__ = ["ModelConfig", "PartConfig", "PretrainConfig", "TrainConfig", "load_model_config"]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class PartConfig(_Strict):
    """One part: its registered name and its hyper-parameters."""

    name: str
    params: dict[str, Any] = {}


class TrainConfig(_Strict):
    """How a model is trained (pretraining across subjects and few-shot adaptation).

    Attributes
    ----------
    lr, weight_decay : float
        AdamW learning rate and weight decay.
    adapter_lr : float, optional
        Learning rate of the subject adapters (default ``lr``).
    batch_size : int
        Samples per batch; every batch draws from every training subject.
    max_epochs : int
        Upper bound on epochs.
    patience : int
        Epochs without improvement of the validation loss before stopping.
    cycle_weight : float
        Weight of the cycle reconstruction loss between subjects (MindBridge); 0 disables it.
        Needs an adapter that can map back into subject space (``subject_linear``).
    cycle_augment : bool
        Also train the head on cycle-translated samples (subject A's sample rendered in
        subject B's space, with A's target).
    subject_dropout : float
        Probability that a training sample goes through the shared ("unknown subject") layer of
        an adapter that has one, so that it serves subjects never seen (zero-shot).
    channel_dropout : float
        Fraction of input channels zeroed per training sample (montage augmentation).
    seed : int
        Seed of initialisation and batch order.
    precision : str
        Lightning precision (``"32-true"``; ``"bf16-mixed"`` on a GPU).
    """

    lr: float = pydantic.Field(1e-3, gt=0)
    adapter_lr: float | None = pydantic.Field(None, gt=0)
    weight_decay: float = pydantic.Field(1e-2, ge=0)
    batch_size: int = pydantic.Field(64, ge=1)
    max_epochs: int = pydantic.Field(100, ge=1)
    patience: int = pydantic.Field(10, ge=1)
    cycle_weight: float = pydantic.Field(0.0, ge=0)
    cycle_augment: bool = False
    subject_dropout: float = pydantic.Field(0.0, ge=0, lt=1)
    channel_dropout: float = pydantic.Field(0.0, ge=0, lt=1)
    seed: int = 0
    precision: str = "32-true"


class PretrainConfig(_Strict):
    """Self-supervised pretraining of the adapter and backbone (Du-IN-style codebook).

    Stage 1 trains a VQ-VAE: the adapter and a ``segment_transformer`` encode each time
    segment, a cosine codebook quantises it and a small transformer decoder reconstructs the
    subject's channels. Stage 2 trains a fresh adapter + backbone (initialised from stage 1's)
    to predict the stage-1 code of masked segments from the unmasked ones. The stage-2 adapter
    and backbone initialise the fine-tuned decoder.

    Attributes
    ----------
    codebook_size, code_dim : int
        Codes, and the width of a code.
    update : {"ema", "straight_through"}
        How codes move.
    decay, commitment : float
        EMA decay; weight of the commitment loss.
    dead_share : float
        A code is dead below ``dead_share / codebook_size`` of the assignments; dead codes
        are restarted every ``restart_every`` training steps.
    restart_every : int
    decoder_layers : int
        Transformer blocks of the VQ-VAE decoder.
    mask_ratio : float
        Share of the segments masked per sample in stage 2.
    complementary : bool
        Also predict the unmasked segments from the masked ones (the complementary mask).
    tokenizer_epochs, masked_epochs : int
        Upper bounds on the epochs of each stage (early stopping on validation windows).
    lr, weight_decay : float
    batch_size, patience, seed : int
    """

    codebook_size: int = pydantic.Field(256, ge=2)
    code_dim: int = pydantic.Field(32, ge=1)
    update: Literal["ema", "straight_through"] = "ema"
    decay: float = pydantic.Field(0.99, gt=0, lt=1)
    commitment: float = pydantic.Field(0.25, ge=0)
    dead_share: float = pydantic.Field(0.03, ge=0, lt=1)
    restart_every: int = pydantic.Field(50, ge=1)
    decoder_layers: int = pydantic.Field(1, ge=0)
    mask_ratio: float = pydantic.Field(0.5, gt=0, lt=1)
    complementary: bool = True
    tokenizer_epochs: int = pydantic.Field(30, ge=1)
    masked_epochs: int = pydantic.Field(30, ge=1)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(1e-2, ge=0)
    batch_size: int = pydantic.Field(64, ge=1)
    patience: int = pydantic.Field(5, ge=1)
    seed: int = 0


class ModelConfig(_Strict):
    """A cross-subject model: subject adapters into a shared latent, a backbone, a head.

    Attributes
    ----------
    name : str
        Name of the model (its card is ``models/<name>.md``).
    description : str
    task : {"classify", "regress", "embed"}
        What the head predicts: class labels, continuous targets, or stimulus embeddings.
    latent_dim : int
        Width of the shared latent (channels per time step after the adapter).
    adapter, backbone, head : PartConfig
    train : TrainConfig
    pretrain : PretrainConfig, optional
        Self-supervised pretraining (needs the ``segment_transformer`` backbone).
    """

    name: str
    description: str = ""
    task: Literal["classify", "regress", "embed"] = "classify"
    latent_dim: int = pydantic.Field(64, ge=1)
    adapter: PartConfig
    backbone: PartConfig
    head: PartConfig
    train: TrainConfig = TrainConfig()
    pretrain: PretrainConfig | None = None

    @pydantic.model_validator(mode="after")
    def _parts_valid(self) -> ModelConfig:
        for kind in ("adapter", "backbone", "head"):
            part: PartConfig = getattr(self, kind)
            registry.validate(kind, part.name, part.params)  # type: ignore[arg-type]
        if self.pretrain is not None and self.backbone.name != "segment_transformer":
            raise ValueError(f"pretrain needs the segment_transformer backbone, not "
                             f"{self.backbone.name!r}")
        return self


def load_model_config(source: str | os.PathLike | dict[str, Any], **overrides: Any
                      ) -> ModelConfig:
    """Load and validate a model config.

    Parameters
    ----------
    source : path-like or dict
        A ``models/*.yaml`` file, or the config as a dict.
    **overrides
        Fields to replace, nested mappings merged key by key (``train={"max_epochs": 5}``
        changes only ``train.max_epochs``).

    Returns
    -------
    ModelConfig

    Raises
    ------
    ValueError
        Naming the file and every problem (unknown keys, bad values, unknown parts).
    """
    where = "model config"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model config")
        data = read_yaml_mapping(path, "a model config")
    data = deep_merge(data, overrides)
    try:
        return ModelConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ValueError(f"{where}: {validation_problems(err)}") from None
    except (KeyError, ValueError) as err:
        raise ValueError(f"{where}: {str(err).strip(chr(39))}") from None
