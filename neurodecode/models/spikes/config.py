"""The spike-token model's configuration: ``models/spike_gpt.yaml`` validated by pydantic.

One flat mapping: the tokenizer's settings (``window``, ``past``, ``dt``, ``max_tokens``,
``max_past``), the network's (``width``, ``heads``, ``past_layers``, ``layers``...), the
contrastive alignment's and the training's. A typo or a bad value fails when the config is
loaded, naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic

from ...config import deep_merge, read_yaml_mapping, validation_problems
from ...data.tokens import SpikeTokenizer

__all__ = ["MODELS_DIR", "SpikeModelConfig", "load_spike_config"]

#: Where shipped model configs live (``models/<name>.yaml`` at the repository root).
MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


class SpikeModelConfig(pydantic.BaseModel):
    """A Neuroformer-style generative model of spike tokens.

    Attributes
    ----------
    name, description : str
    window, past, dt : float
        Current window, past window (context) and time-bin width (s) of the tokens.
    max_tokens, max_past : int
        Tokens kept per current window (first in time) and per past window (last in time).
    width, heads : int
        Token width (a multiple of ``heads``) and attention heads.
    past_layers, layers : int
        Non-causal blocks over the past window; causal + cross-attention blocks over the
        current window.
    dropout : float
        On the token embeddings and every residual branch (not on attention weights nor
        inside the MLP).
    mlp_ratio : float
        MLP hidden width over ``width``.
    max_covariate_steps : int
        Longest behaviour-covariate sequence per window (learnt time positions).
    covariate_dropout : float
        Share of training batches seen without their covariates, so that a model pretrained
        with behaviour also works from spikes alone (decoding that behaviour, identifying a
        new session's units without it).
    contrastive : float
        Weight of the InfoNCE alignment of neural and behaviour embeddings (0 = off).
    temperature : float
        InfoNCE temperature.
    checkpointing : bool
        Gradient checkpointing of every block (memory for compute).
    compile : bool
        ``torch.compile`` the network (GPU only; ignored on CPU).
    precision : str, optional
        Lightning precision; default ``"bf16-mixed"`` on a GPU, ``"32-true"`` on a CPU.
    lr, weight_decay : float
        AdamW (embeddings, biases and norms are not decayed).
    batch_size, max_epochs, patience, seed : int
    family : "spike_tokens"
        Marks the file as a spike-token model (the ``pretrain`` stage picks its job by it).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    family: Literal["spike_tokens"] = "spike_tokens"
    name: str = "spike_gpt"
    description: str = ""
    window: float = pydantic.Field(0.05, gt=0)
    past: float = pydantic.Field(0.15, ge=0)
    dt: float = pydantic.Field(0.005, gt=0)
    max_tokens: int = pydantic.Field(100, ge=1)
    max_past: int = pydantic.Field(300, ge=0)
    width: int = pydantic.Field(128, ge=1)
    heads: int = pydantic.Field(4, ge=1)
    past_layers: int = pydantic.Field(2, ge=0)
    layers: int = pydantic.Field(4, ge=1)
    dropout: float = pydantic.Field(0.1, ge=0, lt=1)
    mlp_ratio: float = pydantic.Field(4.0, gt=0)
    max_covariate_steps: int = pydantic.Field(32, ge=1)
    covariate_dropout: float = pydantic.Field(0.5, ge=0, le=1)
    contrastive: float = pydantic.Field(0.0, ge=0)
    temperature: float = pydantic.Field(0.1, gt=0)
    checkpointing: bool = False
    compile: bool = False
    precision: str | None = None
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.01, ge=0)
    batch_size: int = pydantic.Field(64, ge=1)
    max_epochs: int = pydantic.Field(20, ge=1)
    patience: int = pydantic.Field(3, ge=1)
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _check(self) -> SpikeModelConfig:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if self.dt > self.window:
            raise ValueError(f"dt ({self.dt}) is longer than the window ({self.window})")
        return self

    def tokenizer(self) -> SpikeTokenizer:
        """The :class:`~neurodecode.data.tokens.SpikeTokenizer` of these settings."""
        return SpikeTokenizer(self.window, self.past, self.dt, self.max_tokens, self.max_past)

    def resolved_precision(self, accelerator: str) -> str:
        """Lightning precision on ``accelerator`` (the config's, else bf16 on GPU, 32 on CPU)."""
        if self.precision is not None:
            return self.precision
        return "32-true" if accelerator == "cpu" else "bf16-mixed"


def load_spike_config(source: str | os.PathLike | dict[str, Any] | SpikeModelConfig
                      = "spike_gpt", **overrides: Any) -> SpikeModelConfig:
    """Load and validate a spike-model config.

    Parameters
    ----------
    source : str, path-like, dict or SpikeModelConfig
        The name of a shipped config (``models/<name>.yaml``, e.g. ``"spike_gpt"``), a YAML
        file, or the config itself.
    **overrides
        Fields to replace (``window=0.1, layers=2``).

    Returns
    -------
    SpikeModelConfig

    Raises
    ------
    FileNotFoundError
        Neither a file nor a shipped config of that name.
    ValueError
        Naming the file and every bad field (unknown keys, bad values).
    """
    where = "spike model config"
    if isinstance(source, SpikeModelConfig):
        data = source.model_dump()
    elif isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.suffix and not path.exists() and (MODELS_DIR / f"{path}.yaml").is_file():
            path = MODELS_DIR / f"{path}.yaml"
        where = str(path)
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("spike*.yaml")))
            raise FileNotFoundError(f"{path}: no such spike model config (shipped: {shipped})")
        data = read_yaml_mapping(path, "a spike model config")
    data = deep_merge(data, overrides)
    try:
        return SpikeModelConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ValueError(f"{where}: {validation_problems(err)}") from None
