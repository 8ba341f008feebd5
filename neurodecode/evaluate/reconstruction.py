"""Scores of image reconstructions, as the fMRI reconstruction papers report them.

The conventions of MindEye / MindEye2 (and of Ozcelik & VanRullen 2023, Takagi & Nishimoto
2023), so that numbers are comparable:

- **PixCorr** (:func:`pixcorr`) — Pearson r between the flattened pixels (all channels) of a
  reconstruction and its seen image, averaged over images;
- **SSIM** (:func:`ssim`) — structural similarity on grayscale (ITU-R 601 luma) images with
  Gaussian weights (σ = 1.5), population covariances and a data range of 1, computed by
  :func:`skimage.metrics.structural_similarity`;
- **two-way identification** (:func:`two_way`) in a network's feature space: the fraction of
  (reconstruction, other image) pairs where the reconstruction's features correlate more with
  its own image's features than with the other's; chance 0.5;
- **top-1 retrieval** (:func:`retrieval`) among ``n_candidates`` (300 in the papers), both
  ways: brain → image (a predicted embedding picks its image among image embeddings) and
  image → brain (an image embedding picks its prediction); chance ``1 / n_candidates``.
  Similarity is the Pearson correlation of embeddings (the cosine of mean-centred vectors).

:func:`score_reconstructions` computes them all; :func:`chance_levels` and
:func:`shuffled_scores` give what they are compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from skimage.metrics import structural_similarity

from neurodecode.data.images import as_batch, resize
from neurodecode.evaluate.metrics import top_k_retrieval, two_way_identification

__all__ = [
    "LUMA",
    "SSIM_OPTIONS",
    "chance_levels",
    "pixcorr",
    "pixcorr_per_image",
    "retrieval",
    "row_correlations",
    "score_reconstructions",
    "shuffled_scores",
    "ssim",
    "ssim_per_image",
    "two_way",
]

#: ITU-R BT.601 luma weights of the red, green and blue channels (grayscale for SSIM).
LUMA = (0.299, 0.587, 0.114)

#: The papers' SSIM setting, passed to :func:`skimage.metrics.structural_similarity`.
SSIM_OPTIONS: dict[str, Any] = {"gaussian_weights": True, "sigma": 1.5,
                                "use_sample_covariance": False, "data_range": 1.0}

#: Side of the 11-tap Gaussian window of :data:`SSIM_OPTIONS` (images must be at least this).
_SSIM_WINDOW = 11

Direction = Literal["brain_to_image", "image_to_brain"]
ImageLike = np.ndarray | torch.Tensor


def _pair(pred: ImageLike, target: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    """Both image sets as float64 ``(n, 3, H, W)`` arrays in [0, 1], at the target's size."""
    p, t = as_batch(pred).detach().cpu(), as_batch(target).detach().cpu()
    if len(p) != len(t):
        raise ValueError(f"{len(p)} reconstructions for {len(t)} target images: they must match")
    if len(t) == 0:
        raise ValueError("no images to score")
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"target images must be square, got {t.shape[-2]} x {t.shape[-1]}")
    if p.shape[-2:] != t.shape[-2:]:
        if p.shape[-1] != p.shape[-2]:
            raise ValueError("reconstructions must be square to be resized to the targets, got "
                             f"{p.shape[-2]} x {p.shape[-1]}")
        p = resize(p, t.shape[-1])
    return (p.clamp(0, 1).numpy().astype(np.float64),
            t.clamp(0, 1).numpy().astype(np.float64))


def row_correlations(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pearson r of each flattened row pair (0 where either row is constant)."""
    p = p.reshape(len(p), -1)
    t = t.reshape(len(t), -1)
    p = p - p.mean(axis=1, keepdims=True)
    t = t - t.mean(axis=1, keepdims=True)
    denom = np.sqrt((p**2).sum(axis=1) * (t**2).sum(axis=1))
    return np.divide((p * t).sum(axis=1), denom, out=np.zeros(len(p)), where=denom > 0)


def _gray(x: np.ndarray) -> np.ndarray:
    """``(n, 3, H, W)`` → ``(n, H, W)`` luma."""
    return np.tensordot(np.asarray(LUMA), x, axes=([0], [1]))


def _ssim_rows(p_gray: np.ndarray, t_gray: np.ndarray) -> np.ndarray:
    """SSIM of each grayscale ``(H, W)`` pair (images at least the window's side)."""
    if t_gray.shape[-1] < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW} x {_SSIM_WINDOW} pixels "
                         f"(its Gaussian window), got {t_gray.shape[-1]} x {t_gray.shape[-1]}")
    return np.array([structural_similarity(a, b, **SSIM_OPTIONS)
                     for a, b in zip(p_gray, t_gray, strict=True)])


def pixcorr_per_image(pred: ImageLike, target: ImageLike) -> np.ndarray:
    """Pearson r between each reconstruction's pixels and its target's (all channels).

    Parameters
    ----------
    pred, target : array or Tensor
        ``n`` images each, in any layout :func:`~neurodecode.data.images.as_batch` accepts,
        values in [0, 1] (clipped). Reconstructions are resized to the targets' size when they
        differ.

    Returns
    -------
    ndarray of shape (n,)
        0 for a constant image.

    Raises
    ------
    ValueError
        If the numbers of images differ or there is none.
    """
    return row_correlations(*_pair(pred, target))


def pixcorr(pred: ImageLike, target: ImageLike) -> float:
    """PixCorr: the mean of :func:`pixcorr_per_image` (1 for perfect reconstructions)."""
    return float(pixcorr_per_image(pred, target).mean())


def ssim_per_image(pred: ImageLike, target: ImageLike) -> np.ndarray:
    """SSIM of each reconstruction with its target, on grayscale images.

    Images are converted to ITU-R 601 luma (:data:`LUMA`) and compared by
    :func:`skimage.metrics.structural_similarity` with :data:`SSIM_OPTIONS` (Gaussian weights,
    σ = 1.5, population covariances, data range 1), the setting of the reconstruction papers.

    Parameters
    ----------
    pred, target : array or Tensor
        As for :func:`pixcorr_per_image`; at least 11 × 11 pixels (the Gaussian window).

    Returns
    -------
    ndarray of shape (n,)
        In [-1, 1]; 1 for identical images.

    Raises
    ------
    ValueError
        If the numbers of images differ, there is none, or they are smaller than the window.
    """
    p, t = _pair(pred, target)
    return _ssim_rows(_gray(p), _gray(t))


def ssim(pred: ImageLike, target: ImageLike) -> float:
    """SSIM: the mean of :func:`ssim_per_image`."""
    return float(ssim_per_image(pred, target).mean())


def _matrix(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    m = np.asarray(x, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"{what} must be (n, features), got shape {m.shape}")
    return m.reshape(len(m), -1)


def _two_matrices(pred: Any, target: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    p, t = _matrix(pred, f"predicted {what}"), _matrix(target, f"target {what}")
    if p.shape != t.shape:
        raise ValueError(f"predicted and target {what} must have one shape (n, features), got "
                         f"{p.shape} and {t.shape}")
    if len(p) < 2:
        raise ValueError(f"scoring {what} needs at least 2 images, got {len(p)}")
    return p, t


def two_way(pred_features: Any, target_features: Any) -> float:
    """Two-way identification of reconstructions in a feature space (chance 0.5).

    Parameters
    ----------
    pred_features, target_features : array or Tensor of shape (n, ...)
        Features of the reconstructions and of their targets (flattened per image).

    Returns
    -------
    float
        :func:`~neurodecode.evaluate.metrics.two_way_identification`: the fraction of pairs
        ``(i, j != i)`` with ``corr(pred_i, target_i) > corr(pred_i, target_j)`` (ties half).

    Raises
    ------
    ValueError
        If the shapes differ or there are fewer than 2 images.
    """
    p, t = _two_matrices(pred_features, target_features, "features")
    return two_way_identification(t, p)


def retrieval(pred_emb: Any, target_emb: Any, *, n_candidates: int = 300,
              direction: Direction = "brain_to_image", n_repeats: int = 10,
              random_state: int = 0) -> float:
    """Top-1 retrieval among ``min(n_candidates, n)`` embeddings, one way.

    Parameters
    ----------
    pred_emb : array or Tensor of shape (n, ...)
        Embeddings predicted from brain activity (flattened per trial).
    target_emb : array or Tensor of shape (n, ...)
        Embeddings of the seen images, row ``i`` the image of prediction ``i``.
    n_candidates : int
        Candidates per query, the right one included (300 in the papers); capped at ``n``.
    direction : {"brain_to_image", "image_to_brain"}
        ``"brain_to_image"``: each prediction picks among target embeddings;
        ``"image_to_brain"``: each target embedding picks among predictions.
    n_repeats, random_state : int
        Random draws of the distractors averaged over, and their seed.

    Returns
    -------
    float
        Fraction of queries whose most correlated candidate (Pearson) is the right one;
        chance ``1 / min(n_candidates, n)``.

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than 2 rows, or ``direction`` is unknown.
    """
    p, t = _two_matrices(pred_emb, target_emb, "embeddings")
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be at least 2, got {n_candidates}")
    if direction == "brain_to_image":
        queries, candidates = p, t
    elif direction == "image_to_brain":
        queries, candidates = t, p
    else:
        raise ValueError(f"direction must be 'brain_to_image' or 'image_to_brain', got "
                         f"{direction!r}")
    return top_k_retrieval(candidates, queries, k=1, n_candidates=n_candidates,
                           n_repeats=n_repeats, random_state=random_state)


def _features(extract: Callable[[torch.Tensor], Any], images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return _matrix(extract(images), "features")


def score_reconstructions(recon: ImageLike, target: ImageLike, *,
                          features: Mapping[str, Callable[[torch.Tensor], Any]],
                          pred_embedding: Any = None, target_embedding: Any = None,
                          n_candidates: int = 300) -> dict[str, float | int]:
    """All the papers' scores of reconstructions against their seen images.

    Parameters
    ----------
    recon, target : array or Tensor
        ``n`` reconstructions and their seen images (any layout
        :func:`~neurodecode.data.images.as_batch` accepts, values in [0, 1]).
    features : mapping of str to callable
        Feature spaces for two-way identification: ``name -> f(images) -> (n, f)``, called on
        ``(n, 3, H, W)`` float32 tensors (reconstructions at the targets' size), e.g.
        ``{"random_cnn": RandomCNNFeatures()}``.
    pred_embedding, target_embedding : array or Tensor of shape (n, ...), optional
        Embeddings predicted from the brain and those of the seen images; when both are
        given, top-1 retrieval is scored both ways.
    n_candidates : int
        Retrieval candidates per query (capped at ``n``).

    Returns
    -------
    dict
        ``pixcorr``, ``ssim``, ``two_way_<name>`` per feature space and, with embeddings,
        ``retrieval_top1_brain_to_image``, ``retrieval_top1_image_to_brain`` and
        ``n_candidates`` (the number actually used).

    Raises
    ------
    ValueError
        If the numbers of images or embeddings differ, or only one embedding is given.
    """
    p, t = _pair(recon, target)
    if len(t) < 2:
        raise ValueError(f"scoring reconstructions needs at least 2 images, got {len(t)}")
    if (pred_embedding is None) != (target_embedding is None):
        raise ValueError("retrieval needs both pred_embedding and target_embedding, or neither")
    if pred_embedding is not None and len(pred_embedding) != len(t):
        raise ValueError(f"{len(pred_embedding)} predicted embeddings for {len(t)} images: they "
                         "must match")
    scores: dict[str, float | int] = {"pixcorr": float(row_correlations(p, t).mean()),
                                      "ssim": float(_ssim_rows(_gray(p), _gray(t)).mean())}
    p_batch = torch.from_numpy(p.astype(np.float32))
    t_batch = torch.from_numpy(t.astype(np.float32))
    for name, extract in features.items():
        scores[f"two_way_{name}"] = two_way(_features(extract, p_batch),
                                            _features(extract, t_batch))
    if pred_embedding is not None:
        for direction in ("brain_to_image", "image_to_brain"):
            scores[f"retrieval_top1_{direction}"] = retrieval(
                pred_embedding, target_embedding, n_candidates=n_candidates,
                direction=direction)
        scores["n_candidates"] = min(n_candidates, len(t))
    return scores


def chance_levels(n_candidates: int) -> dict[str, float | int]:
    """Chance levels of the identification scores.

    Parameters
    ----------
    n_candidates : int
        Retrieval candidates per query actually used (``min(n_candidates, n)``).

    Returns
    -------
    dict
        ``two_way`` (0.5), ``retrieval_top1_brain_to_image`` and
        ``retrieval_top1_image_to_brain`` (``1 / n_candidates``) and ``n_candidates``.
        PixCorr and SSIM have no analytic chance: see :func:`shuffled_scores`.
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be at least 2, got {n_candidates}")
    return {"two_way": 0.5, "retrieval_top1_brain_to_image": 1.0 / n_candidates,
            "retrieval_top1_image_to_brain": 1.0 / n_candidates, "n_candidates": n_candidates}


def shuffled_scores(recon: ImageLike, target: ImageLike, *, n_permutations: int = 20,
                    seed: int = 0) -> dict[str, float]:
    """PixCorr and SSIM of reconstructions paired with the wrong targets: their chance level.

    Targets are shuffled among themselves so that no reconstruction keeps its own (each draw
    is a random derangement: a random order, each image paired with the next one's target);
    ``shuffled_scores(target, target)`` is the similarity of two unrelated seen images, the
    floor a reconstruction must beat.

    Parameters
    ----------
    recon, target : array or Tensor
        As for :func:`pixcorr_per_image`; at least 2 images.
    n_permutations : int
        Shuffles averaged over.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    dict
        ``pixcorr`` and ``ssim``: means over shuffles of the mean score;
        ``pixcorr_sd`` and ``ssim_sd``: their standard deviations across shuffles.
    """
    p, t = _pair(recon, target)
    if len(t) < 2:
        raise ValueError(f"shuffled scores need at least 2 images, got {len(t)}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    p_gray, t_gray = _gray(p), _gray(t)
    pix, ss = [], []
    for _ in range(n_permutations):
        order = rng.permutation(len(t))
        partner = np.roll(order, -1)  # order[i] is paired with order[i + 1]: never itself
        pix.append(row_correlations(p[order], t[partner]).mean())
        ss.append(_ssim_rows(p_gray[order], t_gray[partner]).mean())
    return {"pixcorr": float(np.mean(pix)), "ssim": float(np.mean(ss)),
            "pixcorr_sd": float(np.std(pix)), "ssim_sd": float(np.std(ss))}
