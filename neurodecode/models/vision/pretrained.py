"""Render images from a pretrained unCLIP pipeline loaded from a local folder.

A saved ``diffusers`` :class:`~diffusers.StableUnCLIPImg2ImgPipeline` (for example a local copy
of Stable unCLIP) is conditioned on a CLIP *image embedding*: the brain-predicted embedding is
passed as ``image_embeds`` and the pipeline renders an image of it. Everything loads from the
folder with ``local_files_only=True``: nothing is ever fetched from a hub.

:func:`save_tiny_unclip_pipeline` writes a tiny, randomly initialised pipeline of the same class
to disk. It is a test fixture generator: it lets the tests, the benchmark and users check the
pretrained path offline, in seconds, without any real weights (its images are noise).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .sampling import SampleResult

__all__ = ["PretrainedRenderer", "save_tiny_unclip_pipeline"]

#: The pipeline class a renderer folder must hold (it takes ``image_embeds``).
UNCLIP_CLASS = "StableUnCLIPImg2ImgPipeline"

#: The special tokens of the CLIP tokenizer.
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


class PretrainedRenderer:
    """A pretrained unCLIP pipeline that renders images from image embeddings.

    Build it with :meth:`from_folder`. The pipeline's UNet is conditioned on the image
    embedding (through its class-embedding projection) and on a text prompt (empty by default).

    Notes
    -----
    unCLIP "img2img" conditions on an image *embedding*; it does not start the denoising from
    an init image. There is therefore no ``init``/``strength`` here: the low-level (coarse
    image) initialisation is used by our own trained UNet path only
    (:func:`neurodecode.models.vision.sampling.sample`).

    Parameters
    ----------
    pipeline : diffusers.StableUnCLIPImg2ImgPipeline
        A loaded pipeline (:meth:`from_folder` loads and checks one).
    path : Path
        The folder it was loaded from.

    Attributes
    ----------
    path : Path
        The pipeline folder.
    pipeline : diffusers.StableUnCLIPImg2ImgPipeline
        The loaded pipeline.
    embed_dim : int
        Width of the image embeddings it expects (its image normaliser's embedding dim, equal
        to its image encoder's ``projection_dim``).
    image_size : int
        Side in pixels of the images it renders.
    """

    def __init__(self, pipeline, path: Path) -> None:
        self.pipeline = pipeline
        self.path = Path(path)
        self.embed_dim = int(pipeline.image_normalizer.config.embedding_dim)
        self.image_size = int(pipeline.unet.config.sample_size) * int(pipeline.vae_scale_factor)
        self._rows = 0
        self._budget_rows: int | None = None
        pipeline.unet.register_forward_pre_hook(self._count, with_kwargs=True)

    @property
    def image_encoder_path(self) -> Path:
        """The pipeline's ``image_encoder/`` folder: the CLIP vision model of the embeddings."""
        return self.path / "image_encoder"

    @classmethod
    def from_folder(cls, path: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> PretrainedRenderer:
        """Load a saved unCLIP pipeline from a local folder (never from a hub).

        Parameters
        ----------
        path : str or Path
            A folder written by ``StableUnCLIPImg2ImgPipeline.save_pretrained`` (it holds
            ``model_index.json`` and one sub-folder per component).
        device : str or torch.device
        dtype : torch.dtype

        Returns
        -------
        PretrainedRenderer

        Raises
        ------
        ValueError
            The folder or its ``model_index.json`` is missing or unreadable, it holds another
            pipeline class, a component does not load, or the components disagree on the
            embedding width.
        """
        from diffusers import DiffusionPipeline

        folder = Path(path).expanduser().absolute()
        if not folder.is_dir():
            raise ValueError(f"pretrained renderer: folder {str(folder)!r} does not exist")
        index = folder / "model_index.json"
        if not index.is_file():
            raise ValueError(f"pretrained renderer: {str(folder)!r} has no model_index.json "
                             "(not a saved diffusers pipeline)")
        try:
            found = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"pretrained renderer: cannot read {str(index)!r}: {err}") from None
        if found != UNCLIP_CLASS:
            raise ValueError(f"pretrained renderer: {str(folder)!r} holds a {found!r} pipeline; "
                             f"a {UNCLIP_CLASS} (conditioned on image_embeds) is needed")
        try:
            pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True,
                                                     dtype=dtype)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"pretrained renderer: cannot load the pipeline in "
                             f"{str(folder)!r}: {err}") from None
        dim = int(pipe.image_normalizer.config.embedding_dim)
        unet_in = int(pipe.unet.config.projection_class_embeddings_input_dim or 0)
        bad = {k: v for k, v, want in [
            ("image_encoder.projection_dim", int(pipe.image_encoder.config.projection_dim), dim),
            ("unet.projection_class_embeddings_input_dim", unet_in, 2 * dim)] if v != want}
        if bad:
            raise ValueError(f"pretrained renderer: in {str(folder)!r} the image normaliser's "
                             f"embedding_dim {dim} disagrees with {bad} (the UNet takes "
                             "2 x embedding_dim: the embedding and its noise level)")
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, folder)

    def _count(self, module, args, kwargs) -> None:
        """UNet forward pre-hook: count the rows evaluated; stop past the budget."""
        sample = args[0] if args else kwargs["sample"]
        self._rows += int(sample.shape[0])
        if self._budget_rows is not None and self._rows > self._budget_rows:
            raise ValueError(f"pretrained renderer: the {type(self.pipeline.scheduler).__name__}"
                             " scheduler needs more UNet evaluations than max_unet_evals")

    def render(self, image_embeds: torch.Tensor | np.ndarray, *, steps: int = 20,
               guidance_scale: float = 1.0, noise_level: int = 0,
               generator: torch.Generator | None = None, prompt: str = "",
               max_unet_evals: int = 20) -> SampleResult:
        """Render one image per image embedding.

        Parameters
        ----------
        image_embeds : Tensor or ndarray, shape (n, embed_dim)
            Image embeddings in the space of the pipeline's image encoder.
        steps : int
            Denoising steps of the pipeline's scheduler.
        guidance_scale : float
            Classifier-free guidance (``> 1`` doubles the UNet batch: two evaluations per step).
        noise_level : int
            Noise added to the embeddings before conditioning (unCLIP's variation knob).
        generator : torch.Generator, optional
            Seeds the initial latents and the embedding noise.
        prompt : str
            Text prompt (empty by default: the image embedding alone conditions).
        max_unet_evals : int
            UNet evaluations allowed per image; more is refused before rendering (and the
            rendering stops if the scheduler needs more than one evaluation per step).

        Returns
        -------
        SampleResult
            ``images`` (n, 3, image_size, image_size) float32 in [0, 1] on the CPU, the UNet
            evaluations per image (counted at the UNet), ``steps`` and ``seconds``.

        Raises
        ------
        ValueError
            Bad embeddings (shape, width, non-finite), bad settings, or more UNet evaluations
            than ``max_unet_evals``.
        """
        embeds = torch.as_tensor(image_embeds)
        if embeds.ndim != 2 or embeds.shape[1] != self.embed_dim or len(embeds) == 0:
            raise ValueError(f"image_embeds must be (n, {self.embed_dim}) with n >= 1, got "
                             f"{tuple(embeds.shape)}")
        if not torch.isfinite(embeds).all():
            raise ValueError("image_embeds holds NaN or infinite values")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1, got {guidance_scale}")
        n_levels = int(self.pipeline.image_noising_scheduler.config.num_train_timesteps)
        if not 0 <= noise_level < n_levels:
            raise ValueError(f"noise_level must be in [0, {n_levels - 1}], got {noise_level}")
        per_image = int(steps) * (2 if guidance_scale > 1.0 else 1)
        if per_image > max_unet_evals:
            raise ValueError(f"rendering needs {per_image} UNet evaluations per image ({steps} "
                             f"steps{' x 2 for guidance' if guidance_scale > 1.0 else ''}), "
                             f"more than max_unet_evals = {max_unet_evals}")
        n = len(embeds)
        pipe = self.pipeline
        param = next(pipe.unet.parameters())
        self._rows, self._budget_rows = 0, max_unet_evals * n
        start = time.perf_counter()
        try:
            out = pipe(prompt=[prompt] * n,
                       image_embeds=embeds.to(device=param.device, dtype=param.dtype),
                       num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                       noise_level=int(noise_level), generator=generator, output_type="pt")
        finally:
            rows, self._budget_rows = self._rows, None
        images = out.images.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0)
        return SampleResult(images=images, unet_evals_per_image=rows // n, steps=int(steps),
                            seconds=time.perf_counter() - start)


def _tiny_tokenizer():
    """A CLIP tokenizer from a minimal byte-level BPE vocabulary written to a temporary folder.

    The vocabulary is the 256 byte tokens, alone and word-final (``</w>``), and the two special
    tokens; there are no merges, so a word is encoded byte by byte.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), _BOS, _EOS]
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
                         encoding="utf-8")
        merges.write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, local_files_only=True, model_max_length=16)


def save_tiny_unclip_pipeline(path: str | Path, *, image_size: int = 32, embed_dim: int = 32,
                              seed: int = 0) -> Path:
    """Write a tiny, randomly initialised ``StableUnCLIPImg2ImgPipeline`` to a folder.

    A test fixture generator: the pipeline has every component of a real Stable unCLIP
    (CLIP image processor and vision model, image normaliser, embedding-noising DDPM scheduler,
    CLIP tokenizer and text model, UNet with an image-embedding class projection,
    DPM-Solver++ scheduler, KL autoencoder), each a few thousand weights, so the pretrained
    path can be checked offline in seconds. Its renders are meaningless. The vision model's
    hidden width (48) differs from ``embed_dim`` as in real CLIP models, so its tokens
    (``last_hidden_state``) cannot pass for the image embedding ``image_embeds``.

    Parameters
    ----------
    path : str or Path
        Folder to write (created; files already there are overwritten).
    image_size : int
        Side of the rendered images and of the image encoder's input (a multiple of 8).
    embed_dim : int
        Width of the image embeddings (the vision model's ``projection_dim``).
    seed : int
        Seed of the random weights (the global torch generator is left untouched).

    Returns
    -------
    Path
        The folder.
    """
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessorPil,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    if int(image_size) != image_size or image_size < 8 or image_size % 8:
        raise ValueError(f"image_size must be a positive multiple of 8, got {image_size!r}")
    if int(embed_dim) != embed_dim or embed_dim < 2:
        raise ValueError(f"embed_dim must be an integer >= 2, got {embed_dim!r}")
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    hidden = 32
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            image_size=image_size, patch_size=image_size // 4, hidden_size=48,
            intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            projection_dim=embed_dim))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
            projection_dim=hidden, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        unet = UNet2DConditionModel(
            sample_size=image_size // 2, in_channels=4, out_channels=4,
            block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=hidden, attention_head_dim=4,
            class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=8, sample_size=image_size)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size}),
        image_encoder=image_encoder.eval(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        unet=unet.eval(),
        scheduler=DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
                                              prediction_type="v_prediction"),
        vae=vae.eval())
    pipe.save_pretrained(folder)
    return folder
