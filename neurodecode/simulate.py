"""Simulated recordings with a known ground truth.

Every simulated subject performs the same experiment. An agent runs back and forth on a 1-D
linear track (``position`` in [0, 1], ``speed`` in track lengths per second) while it is shown
blocks of stimuli: each block shows images of one class, one trial after another (event
``stim/<class name>``, ``value`` = image index), and rest periods separate the blocks (which are
also events, ``block/<class name>``, ``value`` = class index). This continuous and discrete state
is the :class:`Latent` of one run; all modalities of that run are recorded simultaneously from it.

The latent drives every modality through one generative structure that all subjects share
(place-field-like functions of position, speed, the one-hot class of the current stimulus and the
generative parameters of the current image), followed by a subject-specific random mapping to a
subject-specific number of channels, voxels, ROIs or units. A decoder therefore has to be learnt
per subject, while the latent it recovers is the same for all of them.

:func:`simulate_dataset` builds a whole dataset; :func:`simulate_latent` and the per-modality
functions (:func:`simulate_eeg`, :func:`simulate_fmri`, :func:`simulate_calcium`,
:func:`simulate_spikes`) build its parts. Everything is deterministic given the seeds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import fft as sfft
from scipy import ndimage
from scipy import signal as sps

from neurodecode.data.splits import MODALITY_MARGINS
from neurodecode.schema import make_recording

__all__ = [
    "DEFAULT_SPLIT",
    "IMAGE_PARAM_NAMES",
    "LATENT_SFREQ",
    "SHAPE_FAMILIES",
    "Latent",
    "SimulatedDataset",
    "double_gamma_hrf",
    "simulate_calcium",
    "simulate_dataset",
    "simulate_eeg",
    "simulate_fmri",
    "simulate_latent",
    "simulate_spikes",
    "stimulus_images",
]

#: Shape family of each stimulus class, in class order (at most this many classes).
SHAPE_FAMILIES = ("grating", "disc", "square", "cross", "ring", "triangle", "bar", "plaid")

#: Generative parameters of a stimulus image, each in [0, 1].
IMAGE_PARAM_NAMES = ("x", "y", "scale", "contrast")

#: Sampling rate of the ground-truth latent returned by :func:`simulate_dataset`.
LATENT_SFREQ = 100.0

#: Default train / valid / test fractions of every recording (contiguous blocks, in that order).
DEFAULT_SPLIT = (0.7, 0.15, 0.15)

_TASK = "sim"
_SESSION = "01"
_SPEED_SCALE = 0.5  # typical running speed (track lengths per second), used to normalise speed
_STRUCTURE_SEED = 20240917  # seeds the latent-to-source structure shared by all subjects

# Canonical EEG source directions (head frame: x right, y anterior, z up).
_EEG_ALPHA_DIRS = np.array([[-0.4, -0.8, 0.45], [0.4, -0.8, 0.45]])
_EEG_ERP_DIRS = np.array([[0.0, 0.7, 0.7], [0.0, 0.0, 1.0], [-0.6, -0.4, 0.7], [0.6, -0.4, 0.7]])
_EEG_BEHAVIOR_DIRS = np.array([[0.7, 0.2, 0.7], [-0.7, 0.2, 0.7]])
_EEG_N_BACKGROUND = 12
_HEAD_RADIUS = 0.095  # metres
# ERP components: latency (s), width (s), polarity.
_ERP_COMPONENTS = np.array([[0.10, 0.02, 1.0], [0.17, 0.03, -1.0], [0.32, 0.07, 1.0]])


def _key(k: int | str) -> int:
    return zlib.crc32(k.encode()) if isinstance(k, str) else int(k)


def _rng(*keys: int | str) -> np.random.Generator:
    return np.random.default_rng([_key(k) for k in keys])


def _child_seed(*keys: int | str) -> int:
    return int(_rng(*keys).integers(2**31))


def _reader_version() -> str:
    try:
        return metadata.version("neurodecode")
    except metadata.PackageNotFoundError:
        return "0.1.0"


# --------------------------------------------------------------------------------------------
# Stimulus images
# --------------------------------------------------------------------------------------------


def stimulus_images(
    n_images: int, size: int = 32, n_classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw procedural stimulus images whose class sets the shape family.

    Image ``i`` belongs to class ``i % n_classes``; the class selects the shape family
    (:data:`SHAPE_FAMILIES`) and the image's own parameters (:data:`IMAGE_PARAM_NAMES`: centre
    ``x`` and ``y``, ``scale`` and ``contrast``, each uniform in [0, 1]) set where the shape is,
    how big and how contrasted, on a mid-grey background.

    Parameters
    ----------
    n_images : int
        Number of images, at least ``n_classes``.
    size : int
        Side of the square images in pixels.
    n_classes : int
        Number of classes, 2 to ``len(SHAPE_FAMILIES)``.
    seed : int
        Seed of the parameter draw.

    Returns
    -------
    images : ndarray of float32, shape (n_images, size, size)
        Pixel values in [0, 1].
    params : ndarray of float64, shape (n_images, len(IMAGE_PARAM_NAMES))
        Ground-truth generative parameters (the "image embedding").
    classes : ndarray of int64, shape (n_images,)
        Class of each image.
    """
    _check_n_classes(n_classes)
    if n_images < n_classes:
        raise ValueError(f"n_images ({n_images}) must be at least n_classes ({n_classes})")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    rng = _rng(seed, "images")
    params = rng.uniform(0.0, 1.0, (n_images, len(IMAGE_PARAM_NAMES)))
    classes = np.arange(n_images, dtype=np.int64) % n_classes
    images = np.stack(
        [_render(SHAPE_FAMILIES[c], p, size) for c, p in zip(classes, params, strict=True)]
    )
    return images.astype(np.float32), params, classes


def _render(family: str, params: np.ndarray, size: int) -> np.ndarray:
    x, y, scale, contrast = params
    grid = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(grid, grid)
    du, dv = u - (0.3 + 0.4 * x), v - (0.3 + 0.4 * y)
    adu, adv = np.abs(du), np.abs(dv)
    r = 0.12 + 0.14 * scale
    rho = np.hypot(du, dv)

    def inside(distance: np.ndarray) -> np.ndarray:  # anti-aliased mask from a signed distance
        return np.clip(0.5 - distance * size, 0.0, 1.0)

    if family == "grating":
        pattern = inside(rho - r) * np.cos(2 * np.pi * du / (0.7 * r))
    elif family == "disc":
        pattern = inside(rho - r)
    elif family == "square":
        pattern = inside(np.maximum(adu, adv) - 0.85 * r)
    elif family == "cross":
        arms = np.minimum(np.maximum(adu - r, adv - r / 3), np.maximum(adv - r, adu - r / 3))
        pattern = inside(arms)
    elif family == "ring":
        pattern = inside(np.abs(rho - 0.75 * r) - 0.22 * r)
    elif family == "triangle":
        angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        half_planes = [du * np.cos(a) + dv * np.sin(a) for a in angles]
        pattern = inside(np.max(half_planes, axis=0) - r / 2)
    elif family == "bar":
        pattern = inside(np.maximum(adu - r, adv - r / 4))
    else:  # plaid
        period = 0.85 * r
        plaid = np.cos(2 * np.pi * du / period) * np.cos(2 * np.pi * dv / period)
        pattern = inside(np.maximum(adu, adv) - 0.85 * r) * plaid
    return np.clip(0.5 + (0.2 + 0.3 * contrast) * pattern, 0.0, 1.0)


def _check_n_classes(n_classes: int) -> None:
    if not 2 <= n_classes <= len(SHAPE_FAMILIES):
        raise ValueError(f"n_classes must be between 2 and {len(SHAPE_FAMILIES)}, got {n_classes}")


# --------------------------------------------------------------------------------------------
# Ground-truth latent
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latent:
    """Ground-truth behaviour and stimulus sequence of one simulated run.

    Build it with :func:`simulate_latent`; evaluate it at any times with :meth:`position`,
    :meth:`speed` and :meth:`stimulus`.

    Parameters
    ----------
    duration : float
        Length of the run in seconds.
    class_names : tuple of str
        Name of each stimulus class (its shape family).
    segments : ndarray, shape (n_segments, 5)
        Piecewise movement on the track: start and stop time, position at start and at stop,
        and a speed-profile asymmetry in (-1, 1). Pauses have equal start and stop positions.
    trials : DataFrame
        One row per stimulus presentation: ``onset``, ``duration``, ``class``, ``image``.
    blocks : DataFrame
        One row per stimulus block: ``onset``, ``duration``, ``class``.
    image_params : ndarray or None, shape (n_images, len(IMAGE_PARAM_NAMES))
        Generative parameters of the stimulus images, or None when each class is a single
        stimulus without parameters (image index = class index).
    seed : int
        Seed the run was drawn with.
    params : dict
        Every parameter of :func:`simulate_latent`, JSON-serialisable.
    """

    duration: float
    class_names: tuple[str, ...]
    segments: np.ndarray
    trials: pd.DataFrame
    blocks: pd.DataFrame
    image_params: np.ndarray | None
    seed: int
    params: dict[str, Any]

    @property
    def n_classes(self) -> int:
        """Number of stimulus classes."""
        return len(self.class_names)

    def _movement(self, t: np.ndarray) -> tuple[np.ndarray, ...]:
        t = np.asarray(t, dtype=np.float64)
        starts = self.segments[:, 0]
        i = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        t0, t1, p0, p1, asym = self.segments[i].T
        u = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
        warped = u + asym * np.sin(2 * np.pi * u) / (2 * np.pi)
        return u, warped, t1 - t0, p0, p1, asym

    def position(self, t: np.ndarray) -> np.ndarray:
        """Position on the track (0 to 1) at times ``t`` (seconds)."""
        _, w, _, p0, p1, _ = self._movement(t)
        return p0 + (p1 - p0) * (1 - np.cos(np.pi * w)) / 2

    def speed(self, t: np.ndarray) -> np.ndarray:
        """Absolute speed (track lengths per second) at times ``t`` (seconds)."""
        u, w, length, p0, p1, asym = self._movement(t)
        dw_du = 1 + asym * np.cos(2 * np.pi * u)
        return np.abs(p1 - p0) * np.pi / 2 * np.sin(np.pi * w) * dw_du / length

    def stimulus(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and image shown at times ``t`` (seconds).

        Returns
        -------
        class_id, image_id : ndarray of int64
            -1 where no stimulus is shown.
        """
        return _lookup(self.trials, t, "class"), _lookup(self.trials, t, "image")

    def block_class(self, t: np.ndarray) -> np.ndarray:
        """Class of the block running at times ``t``, -1 during rest."""
        return _lookup(self.blocks, t, "class")

    def events(self, t_stop: float) -> pd.DataFrame:
        """Events that end before ``t_stop``, as a BIDS-like table.

        Parameters
        ----------
        t_stop : float
            End of the recording in seconds.

        Returns
        -------
        DataFrame
            Columns ``onset``, ``duration``, ``label``, ``value``: blocks
            (``block/<class>``, value = class index) and trials (``stim/<class>``, value =
            image index), sorted by onset with a block before its first trial.
        """
        names = np.array(self.class_names)
        blocks = pd.DataFrame({
            "onset": self.blocks["onset"], "duration": self.blocks["duration"],
            "label": ["block/" + n for n in names[self.blocks["class"].to_numpy()]],
            "value": self.blocks["class"].astype(float),
        })  # fmt: skip
        trials = pd.DataFrame({
            "onset": self.trials["onset"], "duration": self.trials["duration"],
            "label": ["stim/" + n for n in names[self.trials["class"].to_numpy()]],
            "value": self.trials["image"].astype(float),
        })  # fmt: skip
        ev = pd.concat([blocks, trials], ignore_index=True)
        ev = ev[ev["onset"] + ev["duration"] <= t_stop + 1e-9]
        return ev.sort_values("onset", kind="stable").reset_index(drop=True)

    def to_dataset(self, sfreq: float = LATENT_SFREQ) -> xr.Dataset:
        """Sample the latent on a regular clock.

        Parameters
        ----------
        sfreq : float
            Sampling rate in Hz.

        Returns
        -------
        xarray.Dataset
            Variables ``position``, ``speed``, ``class_id``, ``image_id`` and ``block_class``
            on dimension ``time`` (-1 codes "none"); attributes ``class_names``, ``sfreq``,
            ``seed`` and ``params``.
        """
        t = np.arange(_n_samples(self.duration, sfreq)) / sfreq
        cls, img = self.stimulus(t)
        return xr.Dataset(
            {
                "position": ("time", self.position(t)),
                "speed": ("time", self.speed(t)),
                "class_id": ("time", cls),
                "image_id": ("time", img),
                "block_class": ("time", self.block_class(t)),
            },
            coords={"time": t},
            attrs={
                "class_names": list(self.class_names),
                "sfreq": float(sfreq),
                "seed": self.seed,
                "params": self.params,
            },
        )


def _lookup(table: pd.DataFrame, t: np.ndarray, column: str) -> np.ndarray:
    """``column`` of the row of an onset-sorted interval table covering each time, else -1."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(t.shape, -1, dtype=np.int64)
    onset = table["onset"].to_numpy()
    i = np.searchsorted(onset, t, side="right") - 1
    hit = i >= 0
    hit[hit] = t[hit] < onset[i[hit]] + table["duration"].to_numpy()[i[hit]]
    out[hit] = table[column].to_numpy()[i[hit]]
    return out


def simulate_latent(
    duration: float = 120.0,
    *,
    n_classes: int = 4,
    image_classes: np.ndarray | None = None,
    image_params: np.ndarray | None = None,
    seed: int = 0,
    trial_duration: float = 1.0,
    iti: tuple[float, float] = (0.3, 0.7),
    block_duration: tuple[float, float] = (10.0, 16.0),
    rest_duration: tuple[float, float] = (4.0, 8.0),
    run_duration: tuple[float, float] = (2.0, 6.0),
    pause_duration: tuple[float, float] = (0.5, 2.0),
) -> Latent:
    """Draw the behaviour and stimulus sequence of one run.

    Behaviour: the agent pauses at one end of the track, then runs to the other end with a
    smooth, asymmetric speed profile, and so on. Stimuli: blocks of one class follow each other
    in balanced random order (every class once per cycle), separated by rest; inside a block,
    trials of ``trial_duration`` seconds each show a random image of the block's class.

    Parameters
    ----------
    duration : float
        Length of the run in seconds.
    n_classes : int
        Number of stimulus classes, 2 to ``len(SHAPE_FAMILIES)``.
    image_classes : ndarray of int, optional
        Class of each stimulus image (from :func:`stimulus_images`). Without it, class ``c`` has
        a single stimulus whose image index is ``c``.
    image_params : ndarray, optional
        Generative parameters of each image, shape (n_images, len(IMAGE_PARAM_NAMES)); they
        modulate the neural responses. Requires ``image_classes``.
    seed : int
        Seed of this run.
    trial_duration : float
        Duration of one stimulus presentation (s).
    iti : (float, float)
        Range of the inter-trial interval inside a block (s).
    block_duration, rest_duration : (float, float)
        Ranges of the block and rest durations (s).
    run_duration, pause_duration : (float, float)
        Ranges of the duration of one run along the track and of a pause at its end (s).

    Returns
    -------
    Latent
    """
    _check_n_classes(n_classes)
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if block_duration[0] < trial_duration:
        raise ValueError("block_duration must allow at least one trial")
    if image_params is not None and image_classes is None:
        raise ValueError("image_params needs image_classes")
    if image_classes is None:
        pools = [np.array([c]) for c in range(n_classes)]
    else:
        image_classes = np.asarray(image_classes)
        pools = [np.flatnonzero(image_classes == c) for c in range(n_classes)]
        if any(p.size == 0 for p in pools):
            raise ValueError("every class needs at least one image")
        if image_params is not None and len(image_params) != len(image_classes):
            raise ValueError("image_params and image_classes differ in length")
    rng = _rng(seed, "latent")

    segments = []
    t, here = 0.0, rng.uniform(0.0, 0.05)
    there = rng.uniform(0.95, 1.0)
    while t < duration:
        pause = rng.uniform(*pause_duration)
        segments.append((t, t + pause, here, here, 0.0))
        t += pause
        length = rng.uniform(*run_duration)
        segments.append((t, t + length, here, there, rng.uniform(-0.6, 0.6)))
        t += length
        here, there = there, (rng.uniform(0.0, 0.05) if there > 0.5 else rng.uniform(0.95, 1.0))

    trials, blocks = [], []
    order: list[int] = []
    t = rng.uniform(*rest_duration) / 2
    while True:
        length = rng.uniform(*block_duration)
        if t + length > duration:
            break
        if not order:
            order = list(rng.permutation(n_classes))
        cls = int(order.pop())
        onset, end = t, t
        while onset + trial_duration <= t + length:
            trials.append((onset, trial_duration, cls, int(rng.choice(pools[cls]))))
            end = onset + trial_duration
            onset = end + rng.uniform(*iti)
        blocks.append((t, end - t, cls))
        t = end + rng.uniform(*rest_duration)

    params = {
        "duration": float(duration), "n_classes": int(n_classes), "seed": int(seed),
        "n_images": None if image_classes is None else len(image_classes),
        "trial_duration": float(trial_duration), "iti": list(iti),
        "block_duration": list(block_duration), "rest_duration": list(rest_duration),
        "run_duration": list(run_duration), "pause_duration": list(pause_duration),
    }  # fmt: skip
    return Latent(
        duration=float(duration),
        class_names=SHAPE_FAMILIES[:n_classes],
        segments=np.array(segments, dtype=np.float64),
        trials=pd.DataFrame(trials, columns=["onset", "duration", "class", "image"]).astype(
            {"onset": float, "duration": float, "class": np.int64, "image": np.int64}
        ),
        blocks=pd.DataFrame(blocks, columns=["onset", "duration", "class"]).astype(
            {"onset": float, "duration": float, "class": np.int64}
        ),
        image_params=None if image_params is None else np.asarray(image_params, np.float64),
        seed=int(seed),
        params=params,
    )


def _stimulus_features(latent: Latent, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-hot class of the current stimulus and its centred image parameters (0 outside)."""
    cls, img = latent.stimulus(t)
    onehot = (cls[:, None] == np.arange(latent.n_classes)).astype(np.float64)
    image = np.zeros((len(cls), len(IMAGE_PARAM_NAMES)))
    if latent.image_params is not None:
        on = cls >= 0
        image[on] = latent.image_params[img[on]] - 0.5
    return onehot, image


def _place_basis(position: np.ndarray, n: int, width: float) -> np.ndarray:
    centres = np.linspace(0.0, 1.0, n)
    return np.exp(-0.5 * ((position[:, None] - centres) / width) ** 2)


# --------------------------------------------------------------------------------------------
# Shared helpers of the modalities
# --------------------------------------------------------------------------------------------


def _n_samples(duration: float, sfreq: float) -> int:
    n = int(math.floor(duration * sfreq + 1e-9))
    if n < 2:
        raise ValueError(f"a {duration} s run is too short for two samples at {sfreq} Hz")
    return n


def _count(rng: np.random.Generator, spec: int | tuple[int, int], what: str) -> int:
    if isinstance(spec, int | np.integer):
        n = int(spec)
    else:
        lo, hi = spec
        n = int(rng.integers(lo, hi + 1))
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {spec}")
    return n


def _split_intervals(t_stop: float, split: Sequence[float], gap: float) -> pd.DataFrame:
    """Train/valid/test blocks in that order, ``gap`` seconds apart (half cut from each side).

    A block that the gap leaves empty is left out (the blocks that remain are then further
    apart than ``gap``).
    """
    fractions = np.asarray(split, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split must be three non-negative train/valid/test fractions: {split}")
    if not gap >= 0:
        raise ValueError(f"split_gap must be >= 0 seconds, got {gap}")
    edges = t_stop * np.concatenate([[0.0], np.cumsum(fractions) / fractions.sum()])
    edges[-1] = t_stop
    kept = [(edges[i], edges[i + 1], name) for i, name in enumerate(("train", "valid", "test"))
            if edges[i + 1] > edges[i]]
    rows = []
    for i, (lo, hi, name) in enumerate(kept):
        lo, hi = lo + (gap / 2 if i > 0 else 0.0), hi - (gap / 2 if i < len(kept) - 1 else 0.0)
        if hi > lo:
            rows.append((lo, hi, name))
    return pd.DataFrame(rows, columns=["start", "stop", "split"])


def _recording(
    signal: np.ndarray,
    latent: Latent,
    *,
    modality: str,
    sfreq: float,
    subject: str,
    run: str,
    split: Sequence[float],
    split_gap: float | None,
    params: Mapping[str, Any],
    **fields: Any,
) -> xr.Dataset:
    """Wrap a simulated signal with behaviour, events, splits, provenance and history."""
    n = signal.shape[0]
    t = np.arange(n) / sfreq
    t_stop = n / sfreq
    gap = MODALITY_MARGINS[modality] if split_gap is None else float(split_gap)
    history_params = {
        "modality": modality, "subject": subject, "run": run, "sfreq": float(sfreq),
        "split": [float(s) for s in split], "split_gap": gap, **params, "latent": latent.params,
    }  # fmt: skip
    return make_recording(
        signal,
        sfreq=sfreq,
        modality=modality,
        subject=subject,
        session=_SESSION,
        task=_TASK,
        run=run,
        time=t,
        events=latent.events(t_stop),
        behavior={"position": latent.position(t), "speed": latent.speed(t)},
        intervals=_split_intervals(t_stop, split, gap),
        source={
            "path": f"simulated://sub-{subject}/ses-{_SESSION}/task-{_TASK}/run-{run}/{modality}",
            "sha256": "",
            "reader": "neurodecode.simulate",
            "reader_version": _reader_version(),
        },
        history=[{"step": "simulate", "params": history_params}],
        **fields,
    )


def _colored_noise(
    rng: np.random.Generator, n: int, m: int, sfreq: float, exponent: float = 1.0
) -> np.ndarray:
    """Unit-variance noise with a 1/f**exponent power spectrum, shape (n, m)."""
    spec = sfft.rfft(rng.standard_normal((n, m)), axis=0)
    f = sfft.rfftfreq(n, 1 / sfreq)
    f[0] = f[1] if n > 1 else 1.0
    x = sfft.irfft(spec / f[:, None] ** (exponent / 2), n=n, axis=0)
    return (x - x.mean(0)) / x.std(0)


def _narrowband(
    rng: np.random.Generator, n: int, m: int, sfreq: float, f0: float, bandwidth: float
) -> np.ndarray:
    """Unit-variance noise band-limited around ``f0`` Hz, shape (n, m)."""
    spec = sfft.rfft(rng.standard_normal((n, m)), axis=0)
    f = sfft.rfftfreq(n, 1 / sfreq)
    x = sfft.irfft(spec * np.exp(-0.5 * ((f - f0) / bandwidth) ** 2)[:, None], n=n, axis=0)
    return x / x.std(0)


def _shared_structure(n_classes: int) -> dict[str, np.ndarray]:
    """Latent-to-source weights common to all subjects (sliced so that they nest by class)."""
    rng = _rng(_STRUCTURE_SEED, "structure")
    n_comp, n_src = len(_ERP_COMPONENTS), len(_EEG_ERP_DIRS)
    erp_class = rng.standard_normal((len(SHAPE_FAMILIES), n_comp, n_src))
    erp_image = 0.8 * rng.standard_normal((n_comp, len(IMAGE_PARAM_NAMES), n_src))
    c = np.arange(n_classes)
    alpha_gain = np.exp(0.7 * np.cos(2 * np.pi * c / n_classes + np.pi / 2 * np.arange(2)[:, None]))
    return {"erp_class": erp_class[:n_classes], "erp_image": erp_image, "alpha_gain": alpha_gain}


# --------------------------------------------------------------------------------------------
# EEG
# --------------------------------------------------------------------------------------------


def _hemisphere(n: int) -> np.ndarray:
    """``n`` well-spread unit vectors on the upper part of a sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 1.2 * i / n
    r = np.sqrt(1 - z**2)
    phi = i * np.pi * (3 - np.sqrt(5))
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _topographies(rng: np.random.Generator, dirs: np.ndarray, sensors: np.ndarray) -> np.ndarray:
    """Smooth random gain of each source on each sensor, shape (n_sources, n_sensors)."""
    angle = np.arccos(np.clip(dirs @ sensors.T, -1.0, 1.0))
    width = rng.uniform(0.35, 0.6, (len(dirs), 1))
    sign = rng.choice([-1.0, 1.0], (len(dirs), 1))
    gain = sign * np.exp(-0.5 * (angle / width) ** 2) + 0.1 * rng.standard_normal(angle.shape)
    return gain / np.abs(gain).max(axis=1, keepdims=True)


def _evoked(latent: Latent, t: np.ndarray, sfreq: float, structure: dict) -> np.ndarray:
    """ERP source activity (unit peak per weight), shape (n_times, n_erp_sources)."""
    out = np.zeros((len(t), structure["erp_class"].shape[2]))
    n_after = int(math.ceil(0.8 * sfreq))
    lat, width, polarity = _ERP_COMPONENTS.T
    for onset, cls, img in latent.trials[["onset", "class", "image"]].itertuples(index=False):
        i0 = int(math.ceil(onset * sfreq - 1e-9))
        if i0 >= len(t):
            break
        tau = t[i0 : i0 + n_after] - onset
        waves = polarity * np.exp(-0.5 * ((tau[:, None] - lat) / width) ** 2)
        coef = structure["erp_class"][int(cls)].copy()
        if latent.image_params is not None:
            centred = latent.image_params[int(img)] - 0.5
            coef += np.einsum("kps,p->ks", structure["erp_image"], centred)
        out[i0 : i0 + len(tau)] += waves @ coef
    return out


def simulate_eeg(
    latent: Latent,
    *,
    subject: str = "01",
    run: str = "01",
    seed: int = 0,
    sfreq: float = 250.0,
    n_channels: int | tuple[int, int] = (16, 64),
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> xr.Dataset:
    """Simulate scalp EEG driven by a latent.

    Sources, mixed to the sensors by smooth subject-specific topographies: two posterior alpha
    generators (about 10 Hz) whose amplitude depends on the current stimulus class, four evoked
    sources whose class-specific ERP (P1, N1, P3-like components) follows each trial onset and is
    modulated by the image parameters, two slow sources tracking position and speed, and twelve
    1/f background sources; plus white sensor noise. Values are in volts, about 1e-5.

    Parameters
    ----------
    latent : Latent
        Ground truth of the run (from :func:`simulate_latent`).
    subject, run : str
        Identity of the recording.
    seed : int
        Subject seed: it draws the channel count and the source-to-sensor mapping (same for all
        runs of a subject); the noise depends on it and on the latent's seed.
    sfreq : float
        Sampling rate in Hz.
    n_channels : int or (int, int)
        Number of channels, or an inclusive range to draw it from.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``"eeg"``, sensors on a sphere in the ``"head"`` frame.
    """
    mapping = _rng(seed, "eeg", "mapping")
    noise = _rng(seed, "eeg", "noise", latent.seed)
    n_ch = _count(mapping, n_channels, "n_channels")
    structure = _shared_structure(latent.n_classes)
    sensors = _hemisphere(n_ch)
    canonical = np.vstack([_EEG_ALPHA_DIRS, _EEG_ERP_DIRS, _EEG_BEHAVIOR_DIRS])
    dirs = _unit(_unit(canonical) + 0.15 * mapping.standard_normal(canonical.shape))
    background = _unit(mapping.standard_normal((_EEG_N_BACKGROUND, 3)) * [1, 1, 0.5] + [0, 0, 0.5])
    gains = _topographies(mapping, np.vstack([dirs, background]), sensors)
    alpha_freq = mapping.uniform(9.0, 11.0)

    n = _n_samples(latent.duration, sfreq)
    t = np.arange(n) / sfreq
    onehot, _ = _stimulus_features(latent, t)
    envelope = 1.0 + onehot @ (structure["alpha_gain"] - 1.0).T
    envelope = ndimage.uniform_filter1d(envelope, max(1, int(0.25 * sfreq)), axis=0)
    alpha = _narrowband(noise, n, 2, sfreq, alpha_freq, 1.0) * envelope
    behaviour = np.column_stack([
        2 * (latent.position(t) - 0.5), latent.speed(t) / _SPEED_SCALE - 1
    ])  # fmt: skip
    sources = np.hstack([
        6.0 * alpha,
        3.0 * _evoked(latent, t, sfreq, structure),
        2.0 * behaviour,
        4.0 * _colored_noise(noise, n, _EEG_N_BACKGROUND, sfreq),
    ])  # fmt: skip
    microvolts = sources @ gains + 1.5 * noise.standard_normal((n, n_ch))
    return _recording(
        (microvolts * 1e-6).astype(np.float32),
        latent,
        modality="eeg",
        sfreq=sfreq,
        subject=subject,
        run=run,
        split=split,
        split_gap=split_gap,
        params={"seed": int(seed), "n_channels": n_ch, "alpha_freq": float(alpha_freq)},
        ch_names=[f"EEG{i + 1:03d}" for i in range(n_ch)],
        ch_types="eeg",
        units="V",
        positions=_HEAD_RADIUS * sensors,
        coord_frame="head",
    )


# --------------------------------------------------------------------------------------------
# fMRI
# --------------------------------------------------------------------------------------------


def double_gamma_hrf(
    t: np.ndarray, peak: float = 6.0, undershoot: float = 16.0, ratio: float = 1 / 6
) -> np.ndarray:
    """SPM-like canonical haemodynamic response function.

    ``h(t) = g(t; peak) - ratio * g(t; undershoot)`` where ``g(t; a)`` is the gamma density of
    shape ``a`` and unit scale, so that the response peaks near ``peak - 1`` seconds (5 s) and
    undershoots near ``undershoot - 1`` seconds (15 s). It integrates to ``1 - ratio``.

    Parameters
    ----------
    t : ndarray
        Times after the neural event (s); zero for negative times.
    peak, undershoot : float
        Shapes of the positive and negative gamma densities.
    ratio : float
        Relative size of the undershoot.

    Returns
    -------
    ndarray
        The response at ``t``.
    """
    t = np.asarray(t, dtype=np.float64)
    tp = np.clip(t, 0.0, None)

    def gamma_pdf(a: float) -> np.ndarray:
        return tp ** (a - 1) * np.exp(-tp) / math.gamma(a)

    return np.where(t > 0, gamma_pdf(peak) - ratio * gamma_pdf(undershoot), 0.0)


def _voxel_grid(n: int) -> np.ndarray:
    """Integer indices of the ``n`` voxels closest to the centre of a cube, shape (n, 3)."""
    side = int(math.ceil((2 * n) ** (1 / 3))) + 1
    ijk = np.indices((side,) * 3).reshape(3, -1).T
    dist = np.linalg.norm((ijk - (side - 1) / 2) * [1.0, 1.2, 0.9], axis=1)
    return ijk[np.argsort(dist, kind="stable")[:n]]


def simulate_fmri(
    latent: Latent,
    *,
    subject: str = "01",
    run: str = "01",
    seed: int = 0,
    tr: float = 2.0,
    n_voxels: int | tuple[int, int] = (200, 600),
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> xr.Dataset:
    """Simulate BOLD fMRI driven by a latent.

    The neural drive (one-hot class of the current stimulus, centred image parameters, four
    place-like functions of position and normalised speed) is convolved with
    :func:`double_gamma_hrf` and projected to voxels by smooth, subject-specific random spatial
    maps (in percent signal change, about 1 % per class), plus AR(1) noise, a global fluctuation
    and slow cosine drifts, on top of a voxel-specific baseline.

    Parameters
    ----------
    latent : Latent
        Ground truth of the run (from :func:`simulate_latent`).
    subject, run : str
        Identity of the recording.
    seed : int
        Subject seed: it draws the voxel count and the spatial maps (same for all runs of a
        subject); the noise depends on it and on the latent's seed.
    tr : float
        Repetition time in seconds (``sfreq = 1 / tr``).
    n_voxels : int or (int, int)
        Number of voxels, or an inclusive range to draw it from.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``"fmri"``, voxel indices as positions (``"voxel"`` frame).
    """
    mapping = _rng(seed, "fmri", "mapping")
    noise = _rng(seed, "fmri", "noise", latent.seed)
    n_vox = _count(mapping, n_voxels, "n_voxels")
    n_vol = _n_samples(latent.duration, 1 / tr)
    ijk = _voxel_grid(n_vox)
    side = int(ijk.max()) + 1

    dt = 0.1
    tf = np.arange(int(round(n_vol * tr / dt))) * dt
    onehot, image = _stimulus_features(latent, tf)
    drive = np.hstack([
        onehot, image, _place_basis(latent.position(tf), 4, 0.2),
        latent.speed(tf)[:, None] / _SPEED_SCALE,
    ])  # fmt: skip
    weight = np.concatenate([
        np.full(latent.n_classes, 1.0), np.full(len(IMAGE_PARAM_NAMES), 0.8),
        np.full(4, 0.4), [0.3],
    ])  # fmt: skip
    kernel = double_gamma_hrf(np.arange(0.0, 32.0, dt))
    bold = sps.fftconvolve(drive, kernel[:, None] / kernel.sum(), axes=0)[: len(tf)]
    bold = bold[np.round(np.arange(n_vol) * tr / dt).astype(int)]

    fields = ndimage.gaussian_filter(
        mapping.standard_normal((drive.shape[1], side, side, side)), sigma=(0, 1.0, 1.0, 1.0)
    )[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    maps = (fields - fields.mean(1, keepdims=True)) / fields.std(1, keepdims=True)
    baseline = mapping.uniform(500.0, 1500.0, n_vox)

    rho = 0.4
    ar = sps.lfilter([np.sqrt(1 - rho**2)], [1, -rho], noise.standard_normal((n_vol, n_vox)), 0)
    k = np.arange(1, max(2, int(2 * n_vol * tr / 128.0)) + 1)
    dct = np.cos(np.pi * np.outer(np.arange(n_vol) + 0.5, k) / n_vol)
    drift = dct @ noise.normal(0.0, 0.5 / np.sqrt(len(k)), (len(k), n_vox))
    global_signal = 0.3 * noise.standard_normal((n_vol, 1))
    percent = bold @ (weight[:, None] * maps) + 0.8 * ar + drift + global_signal
    return _recording(
        (baseline * (1 + 0.01 * percent)).astype(np.float32),
        latent,
        modality="fmri",
        sfreq=1 / tr,
        subject=subject,
        run=run,
        split=split,
        split_gap=split_gap,
        params={"seed": int(seed), "tr": float(tr), "n_voxels": n_vox},
        ch_names=[f"vox{i + 1:04d}" for i in range(n_vox)],
        ch_types="voxel",
        units="a.u.",
        positions=ijk.astype(np.float64),
        coord_frame="voxel",
    )


# --------------------------------------------------------------------------------------------
# Calcium imaging and spikes
# --------------------------------------------------------------------------------------------


def _population(
    rng: np.random.Generator, n: int, n_classes: int, peak_rate: tuple[float, float]
) -> dict[str, np.ndarray]:
    """Tuning of ``n`` neurons: place field, class preference, image and speed gains."""
    has_field = rng.random(n) < 0.8
    selective = rng.random(n) < 0.5
    class_gain = np.zeros((n, n_classes))
    class_gain[np.arange(n), rng.integers(n_classes, size=n)] = (
        selective * rng.uniform(0.2, 0.6, n) * peak_rate[1]
    )
    image_tuned = (rng.random(n) < 0.5)[:, None]
    n_params = len(IMAGE_PARAM_NAMES)
    return {
        "centre": rng.uniform(0.0, 1.0, n),
        "width": rng.uniform(0.04, 0.12, n),
        "peak": has_field * rng.uniform(*peak_rate, n),
        "baseline": rng.uniform(0.1, 1.0, n),
        "class_gain": class_gain,
        "image_gain": image_tuned * rng.normal(0.0, 0.3 * peak_rate[1], (n, n_params)),
        "speed_gain": rng.normal(0.0, 1.0, n),
    }


def _rates(pop: dict[str, np.ndarray], latent: Latent, t: np.ndarray) -> np.ndarray:
    """Firing rates (Hz) of a population at times ``t``, shape (n_times, n_neurons)."""
    position, speed = latent.position(t), latent.speed(t)
    onehot, image = _stimulus_features(latent, t)
    place = pop["peak"] * np.exp(-0.5 * ((position[:, None] - pop["centre"]) / pop["width"]) ** 2)
    rate = (
        pop["baseline"] + place + onehot @ pop["class_gain"].T + image @ pop["image_gain"].T
        + np.outer(speed / _SPEED_SCALE, pop["speed_gain"])
    )  # fmt: skip
    return np.clip(rate, 0.0, None)


def simulate_calcium(
    latent: Latent,
    *,
    subject: str = "01",
    run: str = "01",
    seed: int = 0,
    sfreq: float = 30.0,
    n_rois: int | tuple[int, int] = (30, 80),
    tau: tuple[float, float] = (0.5, 1.0),
    movie: bool = False,
    movie_size: int = 32,
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> xr.Dataset:
    """Simulate two-photon calcium imaging (ΔF/F of ROIs) driven by a latent.

    Each ROI is a neuron with a place field on the track (80 % of them), a preferred stimulus
    class (half of them), image-parameter and speed gains. Its Poisson spikes (per frame) are
    convolved with an exponential calcium kernel (time constant drawn from ``tau``), scaled
    and corrupted with white noise.

    Parameters
    ----------
    latent : Latent
        Ground truth of the run (from :func:`simulate_latent`).
    subject, run : str
        Identity of the recording.
    seed : int
        Subject seed: it draws the ROI count, tuning, kinetics and footprints (same for all runs
        of a subject); spikes and noise depend on it and on the latent's seed.
    sfreq : float
        Frame rate in Hz.
    n_rois : int or (int, int)
        Number of ROIs, or an inclusive range to draw it from.
    tau : (float, float)
        Range of the calcium decay time constants (s).
    movie : bool
        Also render the raw frames (``movie``, float32, shape (n_times, movie_size, movie_size)):
        background plus Gaussian ROI footprints whose brightness follows ΔF/F, plus noise.
    movie_size : int
        Side of the movie frames in pixels. ROI positions (``x`` = column, ``y`` = row, ``z`` =
        0) are pixel coordinates in that field of view, pixel ``i`` spanning ``[i, i + 1)``.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``"calcium"``, ROI centroids in the ``"pixel"`` frame.
    """
    mapping = _rng(seed, "calcium", "mapping")
    noise = _rng(seed, "calcium", "noise", latent.seed)
    n_roi = _count(mapping, n_rois, "n_rois")
    pop = _population(mapping, n_roi, latent.n_classes, peak_rate=(3.0, 12.0))
    decay = np.exp(-1.0 / (sfreq * mapping.uniform(*tau, n_roi)))
    amplitude = mapping.uniform(0.1, 0.3, n_roi)
    noise_sd = mapping.uniform(0.05, 0.15, n_roi)
    centres = mapping.uniform(2.0, movie_size - 2.0, (n_roi, 2))
    radius = mapping.uniform(0.8, 1.6, n_roi)
    brightness = mapping.uniform(0.3, 0.6, n_roi)

    n = _n_samples(latent.duration, sfreq)
    t = np.arange(n) / sfreq
    spikes = noise.poisson(_rates(pop, latent, t + 0.5 / sfreq) / sfreq)
    calcium = np.column_stack(
        [sps.lfilter([1.0], [1.0, -d], s) for d, s in zip(decay, spikes.T, strict=True)]
    )
    dff = amplitude * calcium + noise_sd * noise.standard_normal((n, n_roi))

    frames = None
    if movie:
        pix = np.arange(movie_size) + 0.5
        gy = np.exp(-0.5 * ((pix[None, :] - centres[:, 1:2]) / radius[:, None]) ** 2)
        gx = np.exp(-0.5 * ((pix[None, :] - centres[:, 0:1]) / radius[:, None]) ** 2)
        blobs = brightness[:, None, None] * gy[:, :, None] * gx[:, None, :]
        footprints = blobs.reshape(n_roi, -1)
        frames = 0.1 + (1.0 + dff) @ footprints + 0.02 * noise.standard_normal((n, movie_size**2))
        frames = frames.reshape(n, movie_size, movie_size).astype(np.float32)
    return _recording(
        dff.astype(np.float32),
        latent,
        modality="calcium",
        sfreq=sfreq,
        subject=subject,
        run=run,
        split=split,
        split_gap=split_gap,
        params={
            "seed": int(seed),
            "n_rois": n_roi,
            "tau": list(tau),
            "movie": bool(movie),
            "movie_size": int(movie_size),
        },
        ch_names=[f"roi{i + 1:03d}" for i in range(n_roi)],
        ch_types="roi",
        units="dF/F",
        positions=np.column_stack([centres, np.zeros(n_roi)]),
        coord_frame="pixel",
        movie=frames,
    )


def simulate_spikes(
    latent: Latent,
    *,
    subject: str = "01",
    run: str = "01",
    seed: int = 0,
    sfreq: float = 100.0,
    n_units: int | tuple[int, int] = (20, 60),
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> xr.Dataset:
    """Simulate sorted single units driven by a latent.

    Each unit is an inhomogeneous Poisson process whose rate, constant within a bin, comes from
    a place field on the track (80 % of units), a preferred stimulus class (half of them), and
    image-parameter and speed gains. The exact spike times are kept (``spike_time``,
    ``spike_unit``, uniform within their bin) and ``signal`` holds the counts per bin, so binning
    the spike times reproduces it exactly.

    Parameters
    ----------
    latent : Latent
        Ground truth of the run (from :func:`simulate_latent`).
    subject, run : str
        Identity of the recording.
    seed : int
        Subject seed: it draws the unit count and tuning (same for all runs of a subject); the
        spikes depend on it and on the latent's seed.
    sfreq : float
        Bins per second (100 = 10 ms bins).
    n_units : int or (int, int)
        Number of units, or an inclusive range to draw it from.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``"spikes"``; bin ``i`` covers ``[time[i], time[i] + 1/sfreq)``.
    """
    mapping = _rng(seed, "spikes", "mapping")
    noise = _rng(seed, "spikes", "noise", latent.seed)
    n_unit = _count(mapping, n_units, "n_units")
    pop = _population(mapping, n_unit, latent.n_classes, peak_rate=(5.0, 25.0))

    n = _n_samples(latent.duration, sfreq)
    t = np.arange(n) / sfreq
    counts = noise.poisson(_rates(pop, latent, t + 0.5 / sfreq) / sfreq)
    bins, units = np.nonzero(counts)
    per = counts[bins, units]
    bins, units = np.repeat(bins, per), np.repeat(units, per)
    # Keep clear of the bin edges so that binning the times is exact in floating point.
    times = t[bins] + noise.uniform(1e-3, 1 - 1e-3, len(bins)) / sfreq
    return _recording(
        counts.astype(np.float32),
        latent,
        modality="spikes",
        sfreq=sfreq,
        subject=subject,
        run=run,
        split=split,
        split_gap=split_gap,
        params={"seed": int(seed), "n_units": n_unit},
        ch_names=[f"unit{i + 1:03d}" for i in range(n_unit)],
        ch_types="unit",
        units="count",
        spike_times=times,
        spike_units=units,
    )


# --------------------------------------------------------------------------------------------
# Whole dataset
# --------------------------------------------------------------------------------------------

_SIMULATORS: dict[str, Callable[..., xr.Dataset]] = {
    "eeg": simulate_eeg,
    "fmri": simulate_fmri,
    "calcium": simulate_calcium,
    "spikes": simulate_spikes,
}


@dataclass
class SimulatedDataset:
    """A simulated dataset and its ground truth.

    Attributes
    ----------
    recordings : list of xarray.Dataset
        One recording per subject, run and modality, in that nesting order.
    images : ndarray of float32 or None, shape (n_images, size, size)
        Stimulus images (None when the dataset was simulated without images).
    image_params : ndarray or None, shape (n_images, len(IMAGE_PARAM_NAMES))
        Ground-truth generative parameters of the images.
    image_classes : ndarray of int or None, shape (n_images,)
        Class of each image.
    latent : dict of str to xarray.Dataset
        Per subject, the ground-truth latent of every run sampled at :data:`LATENT_SFREQ`
        (dimensions ``run`` and ``time``; see :meth:`Latent.to_dataset`).
    class_names : tuple of str
        Name of each stimulus class.
    """

    recordings: list[xr.Dataset]
    images: np.ndarray | None
    image_params: np.ndarray | None
    image_classes: np.ndarray | None
    latent: dict[str, xr.Dataset]
    class_names: tuple[str, ...]


def simulate_dataset(
    n_subjects: int = 3,
    modalities: Sequence[str] = ("eeg", "fmri", "calcium", "spikes"),
    duration: float = 120.0,
    n_runs: int = 1,
    n_classes: int = 4,
    n_images: int | None = None,
    seed: int = 0,
    *,
    image_size: int = 32,
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
    **kwargs: Mapping[str, Any],
) -> SimulatedDataset:
    """Simulate several subjects recorded with several modalities during the same task.

    Subjects are named ``"01"``, ``"02"``, ...; runs ``"01"``, ...; the session is ``"01"`` and
    the task ``"sim"``. Every run of every subject has its own :class:`Latent`, recorded by all
    ``modalities`` at once; each subject has its own channel counts and latent-to-signal mapping.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    modalities : sequence of str
        Among ``"eeg"``, ``"fmri"``, ``"calcium"``, ``"spikes"``.
    duration : float
        Length of every run in seconds.
    n_runs : int
        Runs per subject.
    n_classes : int
        Number of stimulus classes, 2 to ``len(SHAPE_FAMILIES)``.
    n_images : int, optional
        Number of stimulus images (see :func:`stimulus_images`); their parameters then modulate
        the responses. Without images each class is a single stimulus (image index = class).
    seed : int
        Seed of the whole dataset.
    image_size : int
        Side of the stimulus images in pixels.
    split : sequence of 3 float
        Train / valid / test fractions of every recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out: a 40 s run with fMRI keeps ``train`` only). Default: the
        largest margin (:data:`neurodecode.data.splits.MODALITY_MARGINS`) of ``modalities``,
        so that all modalities of a run share their intervals (12 s with fMRI).
    **kwargs : mapping
        Extra keyword arguments per modality simulator, keyed by modality, e.g.
        ``calcium={"movie": True}`` or ``eeg={"n_channels": 32}``; ``latent={...}`` goes to
        :func:`simulate_latent`.

    Returns
    -------
    SimulatedDataset
    """
    unknown = sorted(set(modalities) - set(_SIMULATORS))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; available: {sorted(_SIMULATORS)}")
    unknown = sorted(set(kwargs) - set(_SIMULATORS) - {"latent"})
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}")
    if split_gap is None:
        split_gap = max(MODALITY_MARGINS[m] for m in modalities) if modalities else 0.0
    images = params = classes = None
    if n_images is not None:
        images, params, classes = stimulus_images(n_images, image_size, n_classes, seed)

    recordings: list[xr.Dataset] = []
    latents: dict[str, xr.Dataset] = {}
    for s in range(n_subjects):
        subject = f"{s + 1:02d}"
        subject_seed = _child_seed(seed, "subject", s)
        runs = []
        for r in range(n_runs):
            run = f"{r + 1:02d}"
            latent = simulate_latent(
                duration, n_classes=n_classes, image_classes=classes, image_params=params,
                seed=_child_seed(seed, "run", s, r), **kwargs.get("latent", {}),
            )  # fmt: skip
            for modality in modalities:
                recordings.append(
                    _SIMULATORS[modality](
                        latent,
                        subject=subject,
                        run=run,
                        seed=subject_seed,
                        split=split,
                        split_gap=split_gap,
                        **kwargs.get(modality, {}),
                    )  # fmt: skip
                )
            runs.append(latent.to_dataset())
        latents[subject] = xr.concat(runs, dim="run", combine_attrs="drop").assign_coords(
            run=[f"{r + 1:02d}" for r in range(n_runs)]
        )
        latents[subject].attrs = {
            "class_names": list(SHAPE_FAMILIES[:n_classes]), "sfreq": LATENT_SFREQ,
            "seeds": [ds.attrs["seed"] for ds in runs], "params": runs[0].attrs["params"],
        }  # fmt: skip
    return SimulatedDataset(
        recordings=recordings,
        images=images,
        image_params=params,
        image_classes=classes,
        latent=latents,
        class_names=SHAPE_FAMILIES[:n_classes],
    )
