"""Simulated visual cortex: procedural scenes and NSD-like fMRI with a known encoding model.

:func:`procedural_scenes` draws RGB scenes (a faintly striped background behind one or two
coloured shapes) whose generative parameters are known. :class:`VisualCortex` is one subject's
image-computable encoding model with voxels in three regions:

- ``V1``: small Gaussian population receptive fields (pRFs); each voxel prefers an orientation
  and a spatial frequency and responds to the pRF-weighted complex-cell energy of Gabor
  quadrature pairs on the luminance, compressed (power 0.5);
- ``V4``: larger pRFs, colour-tuned: a rectified, pRF-weighted colour-opponent signal along the
  voxel's preferred colour direction, scattered around the region's :data:`PREFERRED_COLOR`
  (a warm red);
- ``LO``: large, near-foveal pRFs; orientation-pooled energy at the coarsest scale (object
  structure) plus a fixed random projection of the 8 × 8 low-resolution luminance image.

It works on any images (scenes or photographs, resized to :attr:`VisualCortex.image_size`).
:func:`simulate_visual_fmri` shows a stimulus set to several subjects in an NSD-like design (the
training images once each in a subject-specific order, then a block of shared test images, each
repeated) and returns one BOLD recording per subject. Everything is deterministic given the
seeds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import signal as sps

from neurodecode.data.images import ImageSet, as_array, resize
from neurodecode.data.splits import MINIMUM_GAPS, MODALITY_MARGINS
from neurodecode.schema import make_recording
from neurodecode.simulate import _child_seed, _count, _reader_version, _rng, double_gamma_hrf

__all__ = [
    "PREFERRED_COLOR",
    "REGIONS",
    "RESPONSE_WINDOW",
    "SCENE_PARAM_NAMES",
    "SCENE_SHAPES",
    "VisualCortex",
    "VisualDataset",
    "procedural_scenes",
    "simulate_visual_fmri",
]

#: Shape families of the scenes' foreground shapes; a scene's class is its main shape's family.
SCENE_SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")

_SHAPE_COLUMNS = ("shape", "x", "y", "scale", "angle", "hue", "r", "g", "b", "texture",
                  "orientation", "frequency")

#: Columns of ``procedural_scenes(...).params``, one row per scene (all numeric).
#:
#: - ``shape`` (family index into :data:`SCENE_SHAPES`), ``x``, ``y`` (centre, image units in
#:   [0, 1], ``y`` downwards), ``scale`` (in [0, 1]: radius 0.12 to 0.26 of the image),
#:   ``angle`` (rotation, radians), ``hue`` (in [0, 1)), ``r``, ``g``, ``b`` (its colour),
#:   ``texture`` (0 plain, 1 striped), ``orientation`` (angle of the stripes' wave vector,
#:   radians in [0, pi)), ``frequency`` (stripes' cycles per image) of the main shape;
#: - the same for the second shape, prefixed ``s2_`` (all 0 when ``n_shapes`` is 1), which is
#:   drawn behind the main shape;
#: - ``n_shapes`` (1 or 2); the background colour ``bg_r``, ``bg_g``, ``bg_b`` and its stripes
#:   ``bg_orientation``, ``bg_frequency`` (cycles per image) and ``bg_contrast``.
SCENE_PARAM_NAMES = (
    *_SHAPE_COLUMNS,
    *(f"s2_{c}" for c in _SHAPE_COLUMNS),
    "n_shapes", "bg_r", "bg_g", "bg_b", "bg_orientation", "bg_frequency", "bg_contrast",
)

#: Regions of :class:`VisualCortex`, in voxel order.
REGIONS = ("V1", "V4", "LO")

#: The colour direction the V4 region prefers as a whole (unit vector in RGB space, in the
#: plane orthogonal to grey): a warm red (RGB ``(1, 0.3, 0.1)`` minus its grey level).
PREFERRED_COLOR = (lambda v: v / np.linalg.norm(v))(np.array([1.0, 0.3, 0.1]) - 1.4 / 3)

#: A trial's response window after its onset (s): it lies inside the trial's split interval.
RESPONSE_WINDOW = 10.0

_TASK = "vision"
_SESSION = "01"
_REGION_FRACTIONS = (0.45, 0.30, 0.25)  # share of V1, V4 and LO voxels
_GABOR_FREQS = np.array([1 / 16, 1 / 8, 1 / 4])  # cycles per pixel at the cortex's image size
_N_ORIENTATIONS = 8
_REFERENCE_SEED = 987_654  # seeds the reference scenes that z-score every voxel
_N_REFERENCE = 128
_LOWRES = 8


# --------------------------------------------------------------------------------------------
# Procedural scenes
# --------------------------------------------------------------------------------------------


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB, every input in [0, 1]; output shape ``h.shape + (3,)``."""
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[..., None]) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _draw_shapes(rng: np.random.Generator, families: np.ndarray, small: bool) -> np.ndarray:
    """Parameters (:data:`_SHAPE_COLUMNS`) of one shape per scene, shape (n, 12)."""
    n = len(families)
    lo, hi = (0.2, 0.8) if small else (0.3, 0.7)
    hue = rng.uniform(0.0, 1.0, n)
    rgb = _hsv_to_rgb(hue, rng.uniform(0.5, 1.0, n), rng.uniform(0.55, 1.0, n))
    return np.column_stack([
        families, rng.uniform(lo, hi, n), rng.uniform(lo, hi, n),
        rng.uniform(0.0, 0.5 if small else 1.0, n), rng.uniform(0.0, np.pi, n), hue, rgb,
        rng.random(n) < 0.5, rng.uniform(0.0, np.pi, n), rng.uniform(8.0, 14.0, n),
    ])  # fmt: skip


def _signed_distance(family: str, du: np.ndarray, dv: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (image units, negative inside) to a shape of radius ``r`` at the origin."""
    adu, adv = np.abs(du), np.abs(dv)
    rho = np.hypot(du, dv)
    if family == "disc":
        return rho - r
    if family == "square":
        return np.maximum(adu, adv) - 0.8 * r
    if family == "triangle":
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        return np.max([du * np.cos(a) + dv * np.sin(a) for a in angles], axis=0) - r / 2
    if family == "cross":
        return np.minimum(np.maximum(adu - r, adv - r / 3), np.maximum(adv - r, adu - r / 3))
    if family == "ring":
        return np.abs(rho - 0.75 * r) - 0.22 * r
    return np.maximum(adu - r, adv - r / 4)  # bar


def _paint(canvas: np.ndarray, p: np.ndarray, u: np.ndarray, v: np.ndarray, size: int) -> None:
    """Composite one shape per scene (rows of ``p``, :data:`_SHAPE_COLUMNS`) onto ``canvas``."""
    x, y, scale, angle = (p[:, i, None, None] for i in range(1, 5))
    du, dv = u - x, v - y
    cos, sin = np.cos(angle), np.sin(angle)
    ru, rv = cos * du + sin * dv, -sin * du + cos * dv
    r = 0.12 + 0.14 * scale
    dist = np.empty(canvas.shape[:3])
    for f, family in enumerate(SCENE_SHAPES):
        rows = p[:, 0] == f
        if rows.any():
            dist[rows] = _signed_distance(family, ru[rows], rv[rows], r[rows])
    alpha = np.clip(0.5 - dist * size, 0.0, 1.0)[..., None]  # anti-aliased over one pixel
    ori, freq = p[:, 10, None, None], p[:, 11, None, None]
    stripes = np.cos(2 * np.pi * freq * (np.cos(ori) * du + np.sin(ori) * dv))
    shade = 1.0 + 0.35 * p[:, 9, None, None] * stripes
    colour = np.clip(p[:, None, None, 6:9] * shade[..., None], 0.0, 1.0)
    canvas *= 1.0 - alpha
    canvas += alpha * colour


def procedural_scenes(n: int, *, size: int = 32, seed: int = 0) -> ImageSet:
    """Draw RGB scenes with known generative parameters.

    Each scene has a background (a uniform colour with low-contrast stripes of random
    orientation and frequency) and one or two foreground shapes (a family of
    :data:`SCENE_SHAPES`, colour, position, scale, rotation, plain or striped). Classes are
    balanced: scene ``i``'s main shape family cycles through the families in a seeded random
    order. Rendering is vectorised with anti-aliased edges.

    Parameters
    ----------
    n : int
        Number of scenes, at least 1.
    size : int
        Side of the square images in pixels, at least 8.
    seed : int
        Seed of the draw.

    Returns
    -------
    ImageSet
        ``images`` (n, size, size, 3) in [0, 1]; ``classes`` the main shape's family;
        ``class_names`` :data:`SCENE_SHAPES`; ``names`` ``scene0000``...; ``params`` a DataFrame
        with columns :data:`SCENE_PARAM_NAMES`.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 scene, got {n}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    rng = _rng(seed, "scenes")
    classes = rng.permutation(np.arange(n) % len(SCENE_SHAPES))
    main = _draw_shapes(rng, classes, small=False)
    second = _draw_shapes(rng, rng.integers(len(SCENE_SHAPES), size=n), small=True)
    n_shapes = 1 + (rng.random(n) < 0.5)
    second[n_shapes == 1] = 0.0
    bg = _hsv_to_rgb(rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 0.4, n), rng.uniform(0.3, 0.7, n))
    bg_ori, bg_freq = rng.uniform(0.0, np.pi, n), rng.uniform(2.0, 6.0, n)
    bg_contrast = rng.uniform(0.03, 0.1, n)

    grid = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(grid, grid)  # u: column (x), v: row (y)
    phase = np.cos(bg_ori)[:, None, None] * u + np.sin(bg_ori)[:, None, None] * v
    texture = 1.0 + bg_contrast[:, None, None] * np.cos(2 * np.pi * bg_freq[:, None, None] * phase)
    canvas = bg[:, None, None, :] * texture[..., None]
    two = n_shapes == 2
    if two.any():
        sub = canvas[two]
        _paint(sub, second[two], u, v, size)
        canvas[two] = sub
    _paint(canvas, main, u, v, size)
    params = pd.DataFrame(
        np.column_stack([main, second, n_shapes, bg, bg_ori, bg_freq, bg_contrast]),
        columns=list(SCENE_PARAM_NAMES),
    )
    return ImageSet(np.clip(canvas, 0.0, 1.0).astype(np.float32), classes, list(SCENE_SHAPES),
                    [f"scene{i:04d}" for i in range(n)], params)


# --------------------------------------------------------------------------------------------
# Image features shared by every subject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Features:
    """Subject-independent image features at the cortex's working size."""

    energy: np.ndarray  # (n, n_freqs, n_orientations, size * size) Gabor quadrature energy
    chroma: np.ndarray  # (n, size * size, 3) colour minus grey level
    lowres: np.ndarray  # (n, _LOWRES ** 2) centred low-resolution luminance


@functools.lru_cache(maxsize=4)
def _gabor_bank(size: int, pad: int) -> np.ndarray:
    """One-sided (analytic) log-Gabor-like filters in the Fourier domain, (n_f, n_o, m, m)."""
    m = size + 2 * pad
    fy, fx = np.meshgrid(np.fft.fftfreq(m), np.fft.fftfreq(m), indexing="ij")
    theta = np.arange(_N_ORIENTATIONS) * np.pi / _N_ORIENTATIONS
    bank = np.empty((len(_GABOR_FREQS), _N_ORIENTATIONS, m, m))
    for i, f in enumerate(_GABOR_FREQS):
        for j, t in enumerate(theta):
            du, dv = fx - f * np.cos(t), fy - f * np.sin(t)
            bank[i, j] = np.exp(-0.5 * (du**2 + dv**2) / (0.35 * f) ** 2)
    return bank


def _features(images: Any, size: int) -> _Features:
    """Gabor energy, chroma and low-resolution luminance of images resized to ``size``."""
    rgb = as_array(resize(images, size)).astype(np.float64)  # (n, size, size, 3)
    n = len(rgb)
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    lum = lum - lum.mean(axis=(1, 2), keepdims=True)
    pad = size // 4
    padded = np.pad(lum, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    spectrum = np.fft.fft2(padded)[:, None, None]
    response = np.fft.ifft2(spectrum * _gabor_bank(size, pad))[..., pad:-pad, pad:-pad]
    energy = (response.real**2 + response.imag**2).reshape(n, len(_GABOR_FREQS),
                                                          _N_ORIENTATIONS, size * size)
    chroma = (rgb - rgb.mean(axis=-1, keepdims=True)).reshape(n, size * size, 3)
    k = size // _LOWRES
    low = lum[:, : k * _LOWRES, : k * _LOWRES].reshape(n, _LOWRES, k, _LOWRES, k).mean((2, 4))
    return _Features(energy, chroma, low.reshape(n, -1))


@functools.lru_cache(maxsize=2)
def _reference_features(size: int) -> _Features:
    """Features of the fixed reference scenes every voxel is z-scored on."""
    return _features(procedural_scenes(_N_REFERENCE, size=size, seed=_REFERENCE_SEED).images, size)


# --------------------------------------------------------------------------------------------
# Encoding model
# --------------------------------------------------------------------------------------------


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class VisualCortex:
    """One subject's image-computable encoding model: voxels in ``V1``, ``V4`` and ``LO``.

    Voxel responses are computed from images resized to :attr:`image_size` (any image works,
    scenes or photographs). Per region:

    - ``V1``: pRF centre uniform over the image, s.d. 0.04–0.10 image widths; preferred
      orientation (von Mises tuning, concentration 2) and spatial frequency (Gaussian in octaves,
      s.d. 0.6); response ``(sum_xy pRF * tuned Gabor energy) ** 0.5``.
    - ``V4``: pRF s.d. 0.12–0.25; preferred colour direction :data:`PREFERRED_COLOR` plus
      Gaussian scatter (s.d. 0.5) in the chroma plane; response
      ``softplus(4 * sum_xy pRF * (chroma . direction))``.
    - ``LO``: pRF centre near the fovea (s.d. 0.1), s.d. 0.25–0.45; response
      ``a * (sum_xy pRF * coarse energy summed over orientations) ** 0.5 + b * w . lowres``
      with a fixed random ``w`` over the centred 8 × 8 luminance image.

    :meth:`responses` z-scores each voxel with its mean and s.d. over a fixed reference set of
    128 procedural scenes (the same for every subject), so responses are a pure function of the
    image, about unit variance over scenes.

    Parameters
    ----------
    seed : int
        Subject seed: it draws the voxel counts, pRFs and tunings.
    n_voxels : int or (int, int)
        Number of voxels, or an inclusive range to draw it from; split 45 / 30 / 25 % into
        V1 / V4 / LO.
    image_size : int
        Side (pixels) at which images are analysed.

    Attributes
    ----------
    n_voxels : int
    prf : ndarray, shape (n_voxels, 3)
        pRF centre ``x``, ``y`` and s.d., in image units.
    preferred_color : ndarray, shape (3,)
        The V4 region's preferred colour direction (:data:`PREFERRED_COLOR`).
    v1_preference : ndarray, shape (n_V1, 2)
        Each V1 voxel's preferred orientation (radians, of the grating's wave vector) and
        spatial frequency (cycles per pixel at :attr:`image_size`).
    v4_color : ndarray, shape (n_V4, 3)
        Each V4 voxel's preferred colour direction (unit vectors orthogonal to grey).
    """

    def __init__(self, seed: int = 0, *, n_voxels: int | tuple[int, int] = (300, 800),
                 image_size: int = 32) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        rng = _rng(seed, "visual cortex")
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.n_voxels = _count(rng, n_voxels, "n_voxels")
        if self.n_voxels < len(REGIONS):
            raise ValueError(f"n_voxels must be at least {len(REGIONS)} (one per region), got "
                             f"{n_voxels}")
        counts = np.maximum(1, np.round(np.array(_REGION_FRACTIONS) * self.n_voxels).astype(int))
        counts[0] = self.n_voxels - counts[1:].sum()
        self._counts = counts
        self.preferred_color = PREFERRED_COLOR.copy()
        n1, n4, nlo = counts
        prf_v1 = np.column_stack([rng.uniform(0.05, 0.95, (n1, 2)), rng.uniform(0.04, 0.1, n1)])
        prf_v4 = np.column_stack([rng.uniform(0.1, 0.9, (n4, 2)), rng.uniform(0.12, 0.25, n4)])
        prf_lo = np.column_stack([np.clip(rng.normal(0.5, 0.1, (nlo, 2)), 0.2, 0.8),
                                  rng.uniform(0.25, 0.45, nlo)])
        self.prf = np.vstack([prf_v1, prf_v4, prf_lo])

        theta = np.arange(_N_ORIENTATIONS) * np.pi / _N_ORIENTATIONS
        pref_ori = rng.uniform(0.0, np.pi, n1)
        pref_oct = rng.uniform(0.0, len(_GABOR_FREQS) - 1, n1)
        ori_w = np.exp(2.0 * np.cos(2 * (theta[None] - pref_ori[:, None])))
        sf_w = np.exp(-0.5 * ((np.arange(len(_GABOR_FREQS))[None] - pref_oct[:, None]) / 0.6) ** 2)
        tuning = sf_w[:, :, None] * ori_w[:, None, :]
        self._v1_tuning = tuning / tuning.sum(axis=(1, 2), keepdims=True)  # (n1, n_f, n_o)
        self.v1_preference = np.column_stack([pref_ori, _GABOR_FREQS[0] * 2.0**pref_oct])

        grey_free = np.eye(3) - 1.0 / 3.0
        dirs = PREFERRED_COLOR + 0.5 * rng.standard_normal((n4, 3)) @ grey_free
        self.v4_color = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)

        self._lo_weights = np.column_stack([rng.uniform(0.5, 1.0, nlo), rng.uniform(0.5, 1.0, nlo)])
        self._lo_projection = rng.standard_normal((nlo, _LOWRES**2)) / _LOWRES

        grid = (np.arange(image_size) + 0.5) / image_size
        u, v = np.meshgrid(grid, grid)
        g = np.exp(-0.5 * ((u.ravel()[None] - self.prf[:, :1]) ** 2
                           + (v.ravel()[None] - self.prf[:, 1:2]) ** 2) / self.prf[:, 2:] ** 2)
        self._prf_maps = g / g.sum(axis=1, keepdims=True)  # (n_voxels, size * size)
        raw = self._raw(_reference_features(self.image_size))
        self._mean, self._std = raw.mean(0), raw.std(0) + 1e-9

    @property
    def regions(self) -> list[str]:
        """Region of each voxel (``V1`` voxels first, then ``V4``, then ``LO``)."""
        return [r for r, c in zip(REGIONS, self._counts, strict=True) for _ in range(c)]

    def _slices(self) -> dict[str, slice]:
        edges = np.concatenate([[0], np.cumsum(self._counts)])
        return {r: slice(edges[i], edges[i + 1]) for i, r in enumerate(REGIONS)}

    def _raw(self, feats: _Features) -> np.ndarray:
        """Responses before z-scoring, (n_images, n_voxels)."""
        sl = self._slices()
        maps = self._prf_maps
        n, n_f, n_o, _ = feats.energy.shape
        pooled = (feats.energy.reshape(-1, feats.energy.shape[-1]) @ maps[sl["V1"]].T)
        pooled = pooled.reshape(n, n_f, n_o, -1)
        v1 = np.sqrt(np.einsum("nfov,vfo->nv", pooled, self._v1_tuning))
        chroma = np.einsum("npc,vp->nvc", feats.chroma, maps[sl["V4"]])
        v4 = _softplus(4.0 * np.einsum("nvc,vc->nv", chroma, self.v4_color))
        coarse = feats.energy[:, 0].sum(axis=1) @ maps[sl["LO"]].T
        a, b = self._lo_weights.T
        lo = a * np.sqrt(coarse) + b * (feats.lowres @ self._lo_projection.T)
        return np.hstack([v1, v4, lo])

    def responses(self, images: Any) -> np.ndarray:
        """Noise-free voxel responses, z-scored on the reference scenes.

        Parameters
        ----------
        images : array or Tensor
            ``(n, H, W)``, ``(n, H, W, 3)`` or ``(n, 3, H, W)`` in [0, 1], any size.

        Returns
        -------
        ndarray of float64, shape (n, n_voxels)
        """
        return self._zscored(_features(images, self.image_size))

    def _zscored(self, feats: _Features) -> np.ndarray:
        return (self._raw(feats) - self._mean) / self._std

    def region_feature(self, images: Any, region: str) -> np.ndarray:
        """The ground-truth feature a region prefers, per image (what BrainDiVE should raise).

        - ``V4``: the mean image colour projected on :attr:`preferred_color`;
        - ``V1``: the square root of the mean Gabor energy (all scales and orientations)
          weighted by the union of the V1 pRFs (mean of their maps): local contrast energy;
        - ``LO``: the square root of the orientation-pooled coarsest-scale energy weighted by
          the union of the LO pRFs: object structure near the fovea.

        Parameters
        ----------
        images : array or Tensor
            As for :meth:`responses`.
        region : {"V1", "V4", "LO"}

        Returns
        -------
        ndarray of float64, shape (n,)
        """
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; regions: {', '.join(REGIONS)}")
        feats = _features(images, self.image_size)
        union = self._prf_maps[self._slices()[region]].mean(axis=0)
        if region == "V4":
            return feats.chroma.mean(axis=1) @ self.preferred_color
        if region == "V1":
            return np.sqrt(feats.energy.sum(axis=(1, 2)) @ union)
        return np.sqrt(feats.energy[:, 0].sum(axis=1) @ union)

    def __repr__(self) -> str:
        counts = ", ".join(f"{r}={c}" for r, c in zip(REGIONS, self._counts, strict=True))
        return f"VisualCortex(seed={self.seed}, {counts})"


# --------------------------------------------------------------------------------------------
# fMRI experiment
# --------------------------------------------------------------------------------------------


@dataclass
class VisualDataset:
    """What :func:`simulate_visual_fmri` returns.

    Attributes
    ----------
    recordings : list of xarray.Dataset
        One fMRI run per subject (schema-valid).
    stimuli : ImageSet
        The stimulus set; events' ``value`` indexes it.
    test_ids : ndarray of int64
        Ids of the test images (the last ones of the set), shared by every subject.
    cortex : dict of str to VisualCortex
        Each subject's encoding model (the ground truth).
    trial_tables : dict of str to DataFrame
        Per subject, one row per trial: ``onset``, ``duration``, ``image``, ``split``
        (``train``/``valid``/``test``), ``repeat`` (0-based presentation count of the image).
    params : dict
        The simulation's parameters (JSON-serialisable).
    """

    recordings: list[xr.Dataset]
    stimuli: ImageSet
    test_ids: np.ndarray
    cortex: dict[str, VisualCortex]
    trial_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def _event_kernel(stim_duration: float, dt: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """BOLD response to a ``stim_duration`` boxcar of unit drive, peak scaled to 1."""
    t = np.arange(0.0, 32.0 + stim_duration, dt)
    hrf = double_gamma_hrf(t)
    box = np.ones(max(1, int(round(stim_duration / dt))))
    kernel = np.convolve(hrf, box)[: len(t)]
    return t, kernel / kernel.max()


def _schedule(rng: np.random.Generator, train_ids: np.ndarray, test_ids: np.ndarray, *,
              test_repeats: int, valid_fraction: float, isi: tuple[float, float],
              stim_duration: float, gap: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Trials, split intervals and run length of one subject."""
    order = rng.permutation(train_ids)
    n_valid = int(round(valid_fraction * len(order)))
    test_order = rng.permutation(np.repeat(test_ids, test_repeats))
    blocks = [("train", order[: len(order) - n_valid]), ("valid", order[len(order) - n_valid:]),
              ("test", test_order)]
    rows, intervals = [], []
    start = 0.0
    lead = 2.0
    for name, ids in blocks:
        if len(ids) == 0:
            continue
        soa = stim_duration + rng.uniform(*isi, len(ids))
        onsets = start + lead + np.concatenate([[0.0], np.cumsum(soa[:-1])])
        rows.append(pd.DataFrame({"onset": onsets, "duration": stim_duration, "image": ids,
                                  "split": name}))
        stop = onsets[-1] + RESPONSE_WINDOW + (6.0 if name == "test" else 0.0)
        intervals.append((start, stop, name))
        start, lead = stop + gap, 0.0
    trials = pd.concat(rows, ignore_index=True)
    trials["repeat"] = trials.groupby("image").cumcount()
    return trials, pd.DataFrame(intervals, columns=["start", "stop", "split"]), intervals[-1][1]


def simulate_visual_fmri(
    images: ImageSet | None = None,
    *,
    n_subjects: int = 4,
    subjects: Sequence[str] | None = None,
    n_images: int | None = None,
    image_size: int = 32,
    n_test_images: int = 50,
    test_repeats: int = 2,
    n_voxels: int | tuple[int, int] = (300, 800),
    tr: float = 1.0,
    isi: tuple[float, float] = (3.0, 5.0),
    stim_duration: float = 1.0,
    noise: float = 1.0,
    valid_fraction: float = 0.15,
    seed: int = 0,
    split_gap: float | None = None,
) -> VisualDataset:
    """Simulate an NSD-like fMRI experiment: subjects viewing one shared stimulus set.

    The last ``n_test_images`` images are the test images; the others are training images.
    Every subject sees each training image once, in its own random order, then the test images
    ``test_repeats`` times each (shuffled) in a final block. Trials last ``stim_duration`` s and
    follow each other after a blank drawn uniformly from ``isi`` (onset-to-onset interval
    ``stim_duration + isi``).

    A trial's neural response is the subject's :meth:`VisualCortex.responses` to its image plus
    trial-to-trial noise (s.d. 0.3), times a voxel gain (0.17–0.5 % signal change); BOLD is its
    convolution with :func:`~neurodecode.simulate.double_gamma_hrf` (a ``stim_duration``
    boxcar, peak 1), summed over trials, plus ``noise`` × (AR(1) noise of s.d. 1 %, slow cosine
    drifts, a global signal), on a voxel baseline (500–1500 a.u.).

    Each recording has intervals ``train`` (the first ``1 - valid_fraction`` of the training
    trials), ``valid`` (the rest) and ``test`` (the test block): each spans its trials' onsets
    up to the last one's response window (:data:`RESPONSE_WINDOW` s; 6 s more for ``test``,
    which ends the run) and the blocks are ``split_gap`` s apart, with no trial in the gaps.

    Parameters
    ----------
    images : ImageSet, optional
        The stimulus set (e.g. from :func:`~neurodecode.data.images.load_image_folder`);
        default ``procedural_scenes(n_images, size=image_size, seed=seed)``.
    n_subjects : int
        Number of subjects, named ``01``, ``02``...; ignored when ``subjects`` is given.
    subjects : sequence of str, optional
        Subject names. A subject's cortex and order depend on ``seed`` and its name only.
    n_images : int, optional
        Procedural scenes to draw (default 450); not with ``images``.
    image_size : int
        Side of the procedural scenes, and the size the cortex analyses images at.
    n_test_images : int
        Test images (the last of the set); at least 1, fewer than the set.
    test_repeats : int
        Presentations of each test image.
    n_voxels : int or (int, int)
        Voxels per subject, or an inclusive range to draw each subject's count from.
    tr : float
        Repetition time (s).
    isi : (float, float)
        Range of the blank between two trials (s).
    stim_duration : float
        Duration of a trial (s).
    noise : float
        Scale of the noise (0: noise-free BOLD).
    valid_fraction : float
        Share of the training trials in ``valid`` (the last ones), in [0, 1).
    seed : int
        Seed of the scenes, the subjects and the noise.
    split_gap : float, optional
        Seconds between the blocks; default ``MODALITY_MARGINS["fmri"]`` (12 s), at least
        ``MINIMUM_GAPS["fmri"]``.

    Returns
    -------
    VisualDataset
        Recordings: modality ``fmri``, task ``vision``, channels ``vox0001``... with ``region``
        V1/V4/LO and their pRF (``x``, ``y``, s.d. as ``z``, image units, frame ``"prf"``) as
        positions; events ``image`` (``value`` = image id); attribute ``vision`` with the test
        ids, regions and the V4 preferred colour.
    """
    if images is not None and n_images is not None:
        raise ValueError("give either images or n_images (the number of procedural scenes)")
    stimuli = images if images is not None else procedural_scenes(
        450 if n_images is None else n_images, size=image_size, seed=seed)
    n_total = len(stimuli)
    if not 1 <= n_test_images < n_total:
        raise ValueError(f"n_test_images must be between 1 and {n_total - 1} (the stimulus set "
                         f"has {n_total} images), got {n_test_images}")
    if test_repeats < 1:
        raise ValueError(f"test_repeats must be at least 1, got {test_repeats}")
    if not (tr > 0 and stim_duration > 0 and 0 <= isi[0] <= isi[1] and noise >= 0):
        raise ValueError(f"need tr > 0, stim_duration > 0, 0 <= isi[0] <= isi[1] and noise >= 0; "
                         f"got tr={tr}, stim_duration={stim_duration}, isi={isi}, noise={noise}")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    gap = MODALITY_MARGINS["fmri"] if split_gap is None else float(split_gap)
    if gap < MINIMUM_GAPS["fmri"]:
        raise ValueError(f"split_gap must be at least {MINIMUM_GAPS['fmri']} s for BOLD fMRI "
                         f"(the response lasts about 12 s), got {split_gap}")
    names = [f"{i + 1:02d}" for i in range(n_subjects)] if subjects is None else list(subjects)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"need at least one subject, with distinct names; got {names}")
    test_ids = np.arange(n_total - n_test_images, n_total, dtype=np.int64)
    train_ids = np.arange(n_total - n_test_images, dtype=np.int64)
    feats = _features(stimuli.images, image_size)
    kernel_t, kernel = _event_kernel(float(stim_duration))
    params = {
        "n_images": n_total, "n_test_images": int(n_test_images), "test_repeats": int(test_repeats),
        "image_size": int(image_size), "tr": float(tr), "isi": [float(v) for v in isi],
        "stim_duration": float(stim_duration), "noise": float(noise),
        "valid_fraction": float(valid_fraction), "seed": int(seed), "split_gap": gap,
    }  # fmt: skip

    recordings, cortex, tables = [], {}, {}
    for subject in names:
        sub_seed = _child_seed(seed, "vision", subject)
        brain = VisualCortex(sub_seed, n_voxels=n_voxels, image_size=image_size)
        rng = _rng(sub_seed, "vision", "run")
        trials, intervals, t_stop = _schedule(
            rng, train_ids, test_ids, test_repeats=test_repeats, valid_fraction=valid_fraction,
            isi=isi, stim_duration=stim_duration, gap=gap)
        n_vol = int(math.ceil(t_stop / tr))
        t = np.arange(n_vol) * tr
        gain = rng.uniform(0.17, 0.5, brain.n_voxels)
        neural = brain._zscored(feats)[trials["image"].to_numpy()]
        neural = (neural + 0.3 * rng.standard_normal(neural.shape)) * gain
        design = np.interp(t[:, None] - trials["onset"].to_numpy()[None], kernel_t, kernel,
                           left=0.0, right=0.0)
        rho = 0.4
        ar = sps.lfilter([np.sqrt(1 - rho**2)], [1, -rho],
                         rng.standard_normal((n_vol, brain.n_voxels)), axis=0)
        k = np.arange(1, max(2, int(2 * n_vol * tr / 128.0)) + 1)
        dct = np.cos(np.pi * np.outer(np.arange(n_vol) + 0.5, k) / n_vol)
        drift = dct @ rng.normal(0.0, 0.5 / np.sqrt(len(k)), (len(k), brain.n_voxels))
        glob = 0.3 * rng.standard_normal((n_vol, 1))
        percent = design @ neural + noise * (ar + drift + glob)
        baseline = rng.uniform(500.0, 1500.0, brain.n_voxels)
        events = pd.DataFrame({"onset": trials["onset"], "duration": trials["duration"],
                               "label": "image", "value": trials["image"].astype(float)})
        history = {"step": "simulate", "params": {"modality": "fmri", "subject": subject,
                                                  "subject_seed": sub_seed,
                                                  "n_voxels": brain.n_voxels, **params}}
        recordings.append(make_recording(
            (baseline * (1 + 0.01 * percent)).astype(np.float32),
            sfreq=1 / tr,
            ch_names=[f"vox{i + 1:04d}" for i in range(brain.n_voxels)],
            ch_types="voxel",
            units="a.u.",
            modality="fmri",
            subject=subject,
            session=_SESSION,
            task=_TASK,
            run="01",
            time=t,
            positions=brain.prf,
            coord_frame="prf",
            regions=brain.regions,
            events=events,
            intervals=intervals,
            source={"path": f"simulated://sub-{subject}/ses-{_SESSION}/task-{_TASK}/run-01/fmri",
                    "sha256": "", "reader": "neurodecode.simulate_visual",
                    "reader_version": _reader_version()},
            history=[history],
            extra_attrs={"vision": {"test_ids": test_ids.tolist(), "regions": list(REGIONS),
                                    "preferred_color": PREFERRED_COLOR.tolist()}},
        ))
        cortex[subject], tables[subject] = brain, trials
    return VisualDataset(recordings, stimuli, test_ids, cortex, tables, params)
