"""The reconstruction model's config: ``models/reconstruction.yaml`` validated by pydantic.

One file says which image targets the brain is decoded into (an encoder trained on the stimulus
set, or a pretrained CLIP vision model from a local folder), the two cross-subject decoders
(brain → embedding tokens, brain → coarse image), the diffusion model that renders them (a
conditional UNet trained on the stimulus set, or a pretrained unCLIP pipeline from a local
folder), how samples are drawn and chosen, and the BrainDiVE synthesis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic

from ...config import deep_merge, read_yaml_mapping, validation_problems
from ..config import ModelConfig
from .diffusion import DiffusionConfig

__all__ = [
    "BrainConfig",
    "BrainDiveConfig",
    "EncoderChoice",
    "InversionConfig",
    "ReconstructionConfig",
    "RendererChoice",
    "SamplingConfig",
    "load_reconstruction_config",
]

#: Folder of the shipped model configs.
MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class EncoderChoice(_Strict):
    """The image targets: ``trained`` (in the pipeline, on the training images) or ``pretrained``.

    Attributes
    ----------
    kind : {"trained", "pretrained"}
    path : str, optional
        ``pretrained``: a local folder with a CLIP vision model (or a saved unCLIP pipeline
        holding one in ``image_encoder/``). Never a hub name.
    params : dict
        Keyword arguments of :class:`~neurodecode.models.vision.encoders.TrainedImageEncoder`.
    """

    kind: Literal["trained", "pretrained"] = "trained"
    path: str | None = None
    params: dict[str, Any] = {}

    @pydantic.model_validator(mode="after")
    def _path_for_pretrained(self) -> EncoderChoice:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("encoder: kind 'pretrained' needs a local path")
        return self


class RendererChoice(_Strict):
    """What renders images: our conditional ``unet`` or a ``pretrained`` unCLIP pipeline.

    Attributes
    ----------
    kind : {"unet", "pretrained"}
    path : str, optional
        ``pretrained``: a local folder holding a saved ``StableUnCLIPImg2ImgPipeline``; its
        ``image_encoder/`` is then the embedding target (the encoder choice is ignored).
    """

    kind: Literal["unet", "pretrained"] = "unet"
    path: str | None = None

    @pydantic.model_validator(mode="after")
    def _path_for_pretrained(self) -> RendererChoice:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("renderer: kind 'pretrained' needs a local path")
        return self


class InversionConfig(_Strict):
    """The per-subject encoding-model inversions beside the decoders' networks.

    Each subject gets, per decoder (embedding tokens, coarse image), an
    :class:`~neurodecode.models.inversion.EncodingInversion`: a linear encoding model of its
    time-averaged responses from the targets' leading principal components (of the training
    images), inverted by Bayes' rule under the Gaussian prior of those components. Its
    prediction is blended with the network's, ``weight`` beside ``1 - weight``.

    Attributes
    ----------
    n_components : int
        Principal components of the prior (at most half the subject's trials are used).
    alpha : float
        Ridge penalty of the encoding model (on whitened components).
    weight : float or "auto"
        The inversion's weight for the trained subjects (0: the network alone, 1: the
        inversion alone). ``"auto"``: per decoder, the weight in 0, 0.1, ..., 1 whose blend has
        the highest mean Pearson r with its targets over the trained subjects' validation
        trials (the scale-free agreement PixCorr, two-way identification and retrieval score;
        0 without validation trials).
    time_weights : {"matched", "equal"}
        How a trial's time points are averaged before the inversion: ``matched``, per subject
        and decoder from its training trials (about the hemodynamic signal over the noise at
        each lag; :func:`~neurodecode.models.vision.reconstructor.matched_time_weights`), or
        ``equal``.
    weight_new : float
        The weight for a subject added by :meth:`Reconstructor.adapt`, fixed: its few trials
        leave none for choosing. Default 0.75, the best on simulated development datasets
        (seeds 7 and 11, not the demo's).
    """

    n_components: int = pydantic.Field(32, ge=1)
    alpha: float = pydantic.Field(20.0, gt=0)
    weight: float | Literal["auto"] = "auto"
    time_weights: Literal["matched", "equal"] = "matched"
    weight_new: float = pydantic.Field(0.75, ge=0.0, le=1.0)

    @pydantic.field_validator("weight")
    @classmethod
    def _weight(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 <= value <= 1.0:
            raise ValueError(f"weight must be in [0, 1] or 'auto', got {value}")
        return value


class BrainConfig(_Strict):
    """The two cross-subject decoders (subject adapters → shared backbone → head).

    Attributes
    ----------
    embedding : dict
        A cross-subject model config (:class:`~neurodecode.models.config.ModelConfig`, task
        ``embed``: contrastive + regression head) predicting the image embedding tokens.
    lowlevel : dict
        A cross-subject model config (task ``regress``) predicting the coarse image.
    lowlevel_size : int
        Side in pixels of the coarse image the low-level branch predicts.
    inversion : InversionConfig
        The per-subject encoding-model inversions blended into both decoders' predictions.
    """

    embedding: dict[str, Any]
    lowlevel: dict[str, Any]
    lowlevel_size: int = pydantic.Field(8, ge=2, le=64)
    inversion: InversionConfig = InversionConfig()

    @pydantic.field_validator("embedding", "lowlevel")
    @classmethod
    def _valid_model(cls, value: dict[str, Any], info: pydantic.ValidationInfo
                     ) -> dict[str, Any]:
        task = "embed" if info.field_name == "embedding" else "regress"
        cfg = ModelConfig.model_validate(value)
        if cfg.task != task:
            raise ValueError(f"brain.{info.field_name}: task must be {task!r}, got {cfg.task!r}")
        return value

    def model(self, part: Literal["embedding", "lowlevel"]) -> ModelConfig:
        """The validated model config of one decoder."""
        return ModelConfig.model_validate(getattr(self, part))


class SamplingConfig(_Strict):
    """How reconstructions are drawn and what is kept of them.

    Attributes
    ----------
    n_samples : int
        Samples drawn per trial.
    combine : {"mean", "select"}
        What a trial's reconstruction is: ``mean``, the average of its samples (a Monte Carlo
        estimate of the posterior mean given the brain's prediction: the least-squares image,
        the one pixel metrics favour; detail the samples disagree on averages out); or
        ``select``, the one sample whose own embedding tokens are closest (cosine) to the
        brain-predicted tokens (a sharp image). Either way the brain-chosen sample is also
        returned, and the target image is never consulted.
    steps, guidance_scale, strength : optional
        DPM-Solver++ steps, classifier-free guidance and img2img strength (default the
        diffusion config's).
    img2img : bool
        Start from the low-level branch's coarse image (img2img) instead of pure noise.
    lowpass_size : int, optional
        Low-frequency conditioning (ILVR) on the coarse image: every step keeps its content
        below this side (an area average to ``lowpass_size`` squared, upsampled back), so
        the renderer draws only the finer detail (None: off). Trained renderer only.
    lowpass_weight : float
        How much of the coarse image's low frequencies every step takes (1: all).
    max_unet_evals : int
        UNet evaluations allowed per reconstructed image, every sample drawn for it included
        (a config that needs more is refused before sampling).
    """

    n_samples: int = pydantic.Field(2, ge=1, le=64)
    combine: Literal["mean", "select"] = "mean"
    steps: int | None = pydantic.Field(None, ge=1)
    guidance_scale: float | None = pydantic.Field(None, ge=1.0)
    strength: float | None = pydantic.Field(None, gt=0.0, le=1.0)
    img2img: bool = True
    lowpass_size: int | None = pydantic.Field(None, ge=1)
    lowpass_weight: float = pydantic.Field(1.0, ge=0.0, le=1.0)
    max_unet_evals: int = pydantic.Field(20, ge=1)


class BrainDiveConfig(_Strict):
    """BrainDiVE synthesis: images a region's encoding model predicts to activate it most.

    Attributes
    ----------
    region : str
        The region (the stores' channel ``region`` label, e.g. ``V4``).
    n_images : int
    scale : float
        Gradient-guidance scale (0 disables the synthesis).
    steps : int
    ridge_alpha : float
        Ridge penalty of the region's encoding model (encoder embedding → mean response).
    """

    region: str = "V4"
    n_images: int = pydantic.Field(8, ge=1)
    scale: float = pydantic.Field(30.0, ge=0.0)
    steps: int = pydantic.Field(10, ge=1)
    ridge_alpha: float = pydantic.Field(10.0, gt=0)


class ReconstructionConfig(_Strict):
    """The whole reconstruction model.

    Attributes
    ----------
    name, description : str
    family : {"reconstruction"}
        Tells the config apart from the other model families in ``models/``.
    image_size : int
        Side of the images the models work at (stimuli are resized to it).
    encoder : EncoderChoice
    renderer : RendererChoice
    brain : BrainConfig
    diffusion : DiffusionConfig
    sampling : SamplingConfig
    braindive : BrainDiveConfig
    seed : int
    """

    name: str = "reconstruction"
    family: Literal["reconstruction"] = "reconstruction"
    description: str = ""
    image_size: int = pydantic.Field(32, ge=8)
    encoder: EncoderChoice = EncoderChoice()
    renderer: RendererChoice = RendererChoice()
    brain: BrainConfig
    diffusion: DiffusionConfig = DiffusionConfig()
    sampling: SamplingConfig = SamplingConfig()
    braindive: BrainDiveConfig = BrainDiveConfig()
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _sizes_agree(self) -> ReconstructionConfig:
        if self.diffusion.image_size != self.image_size:
            raise ValueError(f"diffusion.image_size ({self.diffusion.image_size}) differs from "
                             f"image_size ({self.image_size})")
        lowpass = self.sampling.lowpass_size
        if lowpass is not None and lowpass > self.image_size:
            raise ValueError(f"sampling.lowpass_size ({lowpass}) is larger than image_size "
                             f"({self.image_size})")
        return self


def load_reconstruction_config(source: str | os.PathLike | dict[str, Any] | ReconstructionConfig
                               = "reconstruction", **overrides: Any) -> ReconstructionConfig:
    """Load and validate a reconstruction config.

    Parameters
    ----------
    source : str, path-like, dict or ReconstructionConfig
        The name of a shipped config (``models/<name>.yaml``), a YAML file, or the config.
    **overrides
        Fields to replace, nested mappings merged key by key
        (``diffusion={"max_epochs": 5}``).

    Returns
    -------
    ReconstructionConfig

    Raises
    ------
    FileNotFoundError
        Neither a file nor a shipped config of that name.
    ValueError
        Naming the file and every bad field.
    """
    where = "reconstruction config"
    if isinstance(source, ReconstructionConfig):
        data = source.model_dump(mode="json")
    elif isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.suffix and not path.exists() and (MODELS_DIR / f"{path}.yaml").is_file():
            path = MODELS_DIR / f"{path}.yaml"
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such reconstruction config (shipped: "
                                    "reconstruction)")
        data = read_yaml_mapping(path, "a reconstruction config")
    data = deep_merge(data, overrides)
    try:
        return ReconstructionConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ValueError(f"{where}: {validation_problems(err)}") from None
