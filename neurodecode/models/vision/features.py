"""A second, independent feature space for the reconstruction metrics: a fixed random CNN.

The papers score two-way identification in the feature spaces of pretrained networks (AlexNet,
Inception, CLIP). None can be downloaded here, and the pipeline's own image encoder cannot be
the only judge: the decoders were trained towards it, so its features reward whatever it
happens to encode. A convolutional network with fixed *random* weights is a feature space that
nothing in the pipeline has seen, and it is still a perceptual one: random-weight CNN
activations keep local structure (edges, textures, layout) well enough to serve as an image
representation (He, Wang & Hopcroft, "A powerful generative model using random weights for
the deep image representation", NeurIPS 2016; Ulyanov et al., "Deep image prior", CVPR 2018).
It is weaker than a pretrained network at semantics, so read its two-way score as mid-level
similarity. Its weights depend on the seed only, so scores are reproducible across runs and
machines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from neurodecode.data.images import resize

__all__ = ["RandomCNNFeatures"]


class RandomCNNFeatures(nn.Module):
    """Pooled activations of a fixed, randomly initialised conv net as image features.

    Each stage is a 3 × 3 convolution, a ReLU and a 2 × 2 max-pool; its activations are
    averaged over a ``grid`` × ``grid`` spatial layout, scaled to unit norm per image (so that
    every stage weighs the same), and the stages are concatenated. Weights are drawn once from
    the seed (He-normal, zero bias) and never trained.

    Parameters
    ----------
    widths : sequence of int
        Channels of each stage.
    image_size : int
        Side images are resized to before the network.
    grid : int
        Side of the spatial grid each stage's activations are averaged over (1: global
        average pooling).
    seed : int
        Seed of the weights.
    batch_size : int
        Images per forward pass.

    Attributes
    ----------
    name : str
        ``"random_cnn"``.
    n_features : int
        Length of each image's feature vector, ``sum(widths) * grid ** 2``.

    Examples
    --------
    >>> features = RandomCNNFeatures()
    >>> features(np.random.default_rng(0).random((2, 32, 32, 3))).shape
    torch.Size([2, 1408])
    """

    name = "random_cnn"

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128), *, image_size: int = 64,
                 grid: int = 2, seed: int = 0, batch_size: int = 256) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        if image_size < grid * 2 ** len(widths):
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} stages "
                             f"pooled to a {grid} x {grid} grid (need >= "
                             f"{grid * 2 ** len(widths)})")
        if grid < 1 or batch_size < 1:
            raise ValueError(f"grid and batch_size must be >= 1, got {grid} and {batch_size}")
        self.image_size, self.grid, self.seed, self.batch_size = image_size, grid, seed, batch_size
        generator = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        channels = 3
        for width in widths:
            conv = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=generator)
            nn.init.zeros_(conv.bias)
            self.stages.append(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)))
            channels = width
        self.requires_grad_(False)
        self.eval()
        self.n_features = sum(widths) * grid**2

    @torch.no_grad()
    def forward(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Features of images.

        Parameters
        ----------
        images : array or Tensor
            Any layout :func:`~neurodecode.data.images.as_batch` accepts, values in [0, 1].

        Returns
        -------
        Tensor
            float32 ``(n, n_features)``, without gradient.
        """
        x = resize(images, self.image_size).detach().cpu()
        out = [self._features(x[i:i + self.batch_size] - 0.5)
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.n_features)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        blocks = []
        for stage in self.stages:
            x = stage(x)
            pooled = nn.functional.adaptive_avg_pool2d(x, self.grid).flatten(1)
            blocks.append(nn.functional.normalize(pooled, dim=1))
        return torch.cat(blocks, dim=1)
