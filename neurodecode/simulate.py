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
functions (:func:`simulate_eeg`, :func:`simulate_ieeg` for sEEG and ECoG, :func:`simulate_fmri`,
:func:`simulate_calcium`, :func:`simulate_spikes`) build its parts. Everything is deterministic
given the seeds.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import fft as sfft
from scipy import ndimage
from scipy import signal as sps

from neurodecode.data.splits import MODALITY_MARGINS, chronological_intervals
from neurodecode.schema import make_recording

__all__ = [
    "DEFAULT_SPLIT",
    "IEEG_REGIONS",
    "IEEG_RESPONSIVE",
    "IEEG_TRACKING",
    "IMAGE_PARAM_NAMES",
    "LATENT_SFREQ",
    "SHAPE_FAMILIES",
    "CoupledSpikes",
    "Latent",
    "SimulatedDataset",
    "double_gamma_hrf",
    "simulate_calcium",
    "simulate_coupled_spikes",
    "simulate_dataset",
    "simulate_eeg",
    "simulate_fmri",
    "simulate_ieeg",
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
    """Train/valid/test blocks of ``[0, t_stop)``, ``gap`` seconds apart."""
    return chronological_intervals(0.0, t_stop, split, gap)


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
    montage: str | None = None,
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
        Number of channels, or an inclusive range to draw it from (with a ``montage``, at most
        the number of distinct positions it has).
    montage : str, optional
        Name of an MNE built-in montage (:func:`mne.channels.make_standard_montage`, e.g.
        ``"standard_1020"``, ``"biosemi64"``, ``"GSN-HydroCel-129"``). The channels are then a
        subject-specific subset of its sites, with its names and its positions in the head
        frame (metres, as :meth:`mne.io.Raw.set_montage` puts them): always a fixed core of
        central, centro-parietal, parietal and occipital sites (Cz, Pz, Oz, C3, C4, P3, P4, O1,
        O2, CPz, POz, or the sites nearest to them in a montage without these names), then a
        random choice of the others, in the montage's order. Sites at the position of an earlier
        one (T3 = T7, ...) are left out. The topographies follow the directions of the sites
        from the centre of the sphere fitted to the whole montage. Default: ``n_channels``
        sensors ``EEG001``, ... spread on the upper part of a 9.5 cm sphere.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``"eeg"``, sensors in the ``"head"`` frame.
    """
    mapping = _rng(seed, "eeg", "mapping")
    noise = _rng(seed, "eeg", "noise", latent.seed)
    n_ch = _count(mapping, n_channels, "n_channels")
    structure = _shared_structure(latent.n_classes)
    if montage is None:
        sensors = _hemisphere(n_ch)
        ch_names = [f"EEG{i + 1:03d}" for i in range(n_ch)]
        positions = _HEAD_RADIUS * sensors
    else:
        ch_names, positions, sensors = _montage_subset(montage, n_ch, _rng(seed, "eeg", montage))
        n_ch = len(ch_names)
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
        params={
            "seed": int(seed), "n_channels": n_ch, "alpha_freq": float(alpha_freq),
            **({} if montage is None else {"montage": montage}),
        },  # fmt: skip
        ch_names=ch_names,
        ch_types="eeg",
        units="V",
        positions=positions,
        coord_frame="head",
    )


# Core EEG sites (directions from the head-sphere centre, head frame) every montage subset keeps.
_EEG_CORE_SITES = ("Cz", "Pz", "Oz", "C3", "C4", "P3", "P4", "O1", "O2", "CPz", "POz")
_EEG_CORE_DIRS = np.array([
    [0.0, 0.13, 0.99], [0.0, -0.55, 0.83], [0.0, -0.97, 0.24], [-0.70, 0.10, 0.71],
    [0.70, 0.10, 0.71], [-0.53, -0.58, 0.62], [0.53, -0.58, 0.62], [-0.29, -0.94, 0.18],
    [0.29, -0.94, 0.18], [0.0, -0.23, 0.97], [0.0, -0.81, 0.58],
])  # fmt: skip
_MIN_SPHERE_FIT = 16  # fewer sites than this: the head-sphere centre is taken as (0, 0, 4 cm)


@functools.lru_cache(maxsize=16)
def _montage_sites(montage: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Distinct sites of an MNE montage: names, head-frame positions (m), sphere centre (m)."""
    import mne

    mont = mne.channels.make_standard_montage(montage)
    info = mne.create_info(mont.ch_names, 100.0, "eeg")
    info.set_montage(mont, verbose=False)
    pos = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    keep = [i for i in range(len(pos))
            if np.isfinite(pos[i]).all()
            and not (np.linalg.norm(pos[:i] - pos[i], axis=1) < 1e-3).any()]  # fmt: skip
    names, pos = tuple(mont.ch_names[i] for i in keep), pos[keep]
    if len(pos) >= _MIN_SPHERE_FIT:  # least squares: |p|^2 = 2 c.p + (r^2 - |c|^2)
        design = np.column_stack([2 * pos, np.ones(len(pos))])
        centre = np.linalg.lstsq(design, (pos**2).sum(1), rcond=None)[0][:3]
    else:
        centre = np.array([0.0, 0.0, 0.04])
    pos.setflags(write=False)
    centre.setflags(write=False)
    return names, pos, centre


def _montage_subset(
    montage: str, n: int, rng: np.random.Generator
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` sites of a montage (core sites first): names, positions (m), unit directions."""
    names, pos, centre = _montage_sites(montage)
    dirs = _unit(pos - centre)
    lower = [name.lower() for name in names]
    core: list[int] = []
    for site, direction in zip(_EEG_CORE_SITES, _unit(_EEG_CORE_DIRS), strict=True):
        free = np.setdiff1d(np.arange(len(names)), core)
        if not free.size:
            break
        if site.lower() in lower and lower.index(site.lower()) not in core:
            core.append(lower.index(site.lower()))
        else:
            core.append(int(free[np.argmax(dirs[free] @ direction)]))
    n = min(n, len(names))
    others = np.setdiff1d(np.arange(len(names)), core)
    extra = rng.choice(others, size=max(0, n - len(core)), replace=False)
    chosen = np.sort(np.concatenate([np.array(core[:n], dtype=np.int64), extra]))
    return [names[i] for i in chosen], pos[chosen].copy(), dirs[chosen]


# --------------------------------------------------------------------------------------------
# Intracranial EEG: sEEG and ECoG
# --------------------------------------------------------------------------------------------

#: Regions of the intracranial simulator and their centres, the same for every subject (metres,
#: in an MNI-like frame of the left hemisphere: x right, y anterior, z up; each subject's own
#: anatomy moves them by about 2 mm).
IEEG_REGIONS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "V1": (-0.008, -0.092, 0.004),
    "LO": (-0.042, -0.074, -0.004),
    "FFA": (-0.040, -0.054, -0.018),
    "PPA": (-0.026, -0.044, -0.010),
    "HPC": (-0.028, -0.022, -0.014),
    "M1": (-0.038, -0.022, 0.056),
    "PFC": (-0.040, 0.036, 0.022),
    "TPJ": (-0.052, -0.050, 0.024),
})  # fmt: skip

#: Regions with class-specific evoked potentials and high-gamma bursts after each stimulus.
IEEG_RESPONSIVE = ("V1", "LO", "FFA")

#: Regions that follow the behaviour: position (PPA, HPC: slow potentials and high-gamma power),
#: speed (HPC theta; M1 beta, high-gamma power and a slow potential). The others (PFC, TPJ) only
#: hold rhythms unrelated to the task.
IEEG_TRACKING = ("PPA", "HPC", "M1")

_BRAIN_CENTRE_MM = np.array([0.0, -16.0, 14.0])  # the cortex model: an ellipsoid (mm)
_BRAIN_AXES_MM = np.array([70.0, 90.0, 64.0])
_FIELD_MM = 9.0  # spatial s.d. of the field of a region's sources
_LABEL_MM = 15.0  # contacts farther than this from every region centre get no region name
_SEEG_PITCH_MM = 3.5
_ECOG_PITCH_MM = 10.0
_MIDLINE_MM = -2.0  # sEEG shafts stay in the left hemisphere
_N_SHARED_BACKGROUND = 10
# Evoked components of the responsive regions: latency (s), width (s).
_IEEG_ERP = np.array([
    [[0.07, 0.012], [0.10, 0.020], [0.18, 0.040]],
    [[0.10, 0.015], [0.15, 0.025], [0.26, 0.050]],
    [[0.13, 0.015], [0.18, 0.030], [0.30, 0.060]],
])  # fmt: skip
_IEEG_HG_PEAK = np.array([0.08, 0.12, 0.16])  # latency of the high-gamma burst (s)
_IEEG_KERNEL_S = 0.9  # length of the stimulus-locked kernels (s)
# Amplitudes (microvolts) of the parts of the signal at a region centre.
_IEEG_UV = {
    "erp": 30.0, "high_gamma": 1.5, "place": 15.0, "speed": 10.0, "theta": 10.0, "beta": 10.0,
    "alpha": 15.0, "local": 35.0, "shared": 15.0, "white": 1.5,
}  # fmt: skip
_HG_GAIN = 1.5  # high-gamma amplitude gain per unit of burst at a region centre
_HG_BEHAVIOUR = 0.6  # relative high-gamma gain of the place fields (PPA, HPC) and speed (M1)
_PLACE_STEP_MM = 6.0  # place fields' high gamma peaks at points this far apart along y
_CLASS_SPREAD = 0.4  # size of the class-specific part of the responses
_TRIAL_SPREAD = 0.3  # s.d. of the log of a trial's response gain (trial-to-trial variability)


def _ieeg_structure(n_classes: int) -> dict[str, np.ndarray]:
    """Stimulus- and behaviour-to-field weights common to all subjects (nested by class)."""
    rng = _rng(_STRUCTURE_SEED, "ieeg")
    n_resp, n_fam, n_comp = len(IEEG_RESPONSIVE), len(SHAPE_FAMILIES), _IEEG_ERP.shape[1]
    # a response common to all classes plus class-specific departures from it
    erp_amp = rng.standard_normal((n_resp, 1, n_comp)) + _CLASS_SPREAD * rng.standard_normal(
        (n_resp, n_fam, n_comp))  # fmt: skip
    erp_grad = 0.6 * rng.standard_normal((n_resp, 1, n_comp, 3)) + _CLASS_SPREAD * 0.6 * (
        rng.standard_normal((n_resp, n_fam, n_comp, 3)))  # fmt: skip
    hg_amp = np.exp(_CLASS_SPREAD * rng.standard_normal((n_resp, n_fam)))
    hg_grad = 0.5 * rng.standard_normal((n_resp, 1, 3)) + _CLASS_SPREAD * 0.5 * (
        rng.standard_normal((n_resp, n_fam, 3)))  # fmt: skip
    image = 0.4 * rng.standard_normal((n_resp, len(IMAGE_PARAM_NAMES)))
    image[:, IMAGE_PARAM_NAMES.index("contrast")] = 0.8  # more contrast, larger responses
    place_amp = rng.standard_normal((2, 4))  # PPA, HPC x 4 place fields
    place_grad = 0.6 * rng.standard_normal((2, 4, 3))
    return {
        "erp_amp": erp_amp[:, :n_classes], "erp_grad": erp_grad[:, :n_classes],
        "hg_amp": hg_amp[:, :n_classes], "hg_grad": hg_grad[:, :n_classes], "image": image,
        "place_amp": place_amp, "place_grad": place_grad,
        "rhythm_grad": 0.5 * rng.standard_normal((5, 3)),  # HPC, M1, PFC x 2, TPJ
        "place_hg_grad": 0.5 * rng.standard_normal((2, 4, 3)),
    }  # fmt: skip


def _ellipsoid_radius(p: np.ndarray) -> np.ndarray:
    """Normalised radius in the cortex model: < 1 inside, 1 on the surface."""
    return np.linalg.norm((p - _BRAIN_CENTRE_MM) / _BRAIN_AXES_MM, axis=-1)


def _to_surface(p: np.ndarray) -> np.ndarray:
    """Radial projection of points (mm) from the brain centre onto the cortex surface."""
    return _BRAIN_CENTRE_MM + (p - _BRAIN_CENTRE_MM) / _ellipsoid_radius(p)[..., None]


def _fields(pos: np.ndarray, centre: np.ndarray, amp: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Gain of sources of one region at contacts, ``g(p) (amp + grad . u)``, shape (n_src, n_ch).

    ``u`` is the offset of a contact from the region centre in units of :data:`_FIELD_MM` and
    ``g`` a Gaussian of it: a smooth function of position, zero far from the region.
    """
    u = (pos - centre) / _FIELD_MM
    g = np.exp(-0.5 * (u**2).sum(1))
    return g * (amp[:, None] + grad @ u.T)


def _gain_fields(
    pos: np.ndarray, centre: np.ndarray, amp: np.ndarray, grad: np.ndarray
) -> np.ndarray:
    """Positive gains of sources of one region at contacts, ``g(p) amp exp(grad . u)``.

    As :func:`_fields`, for sources that scale the high-gamma amplitude (``amp`` > 0).
    """
    u = (pos - centre) / _FIELD_MM
    return np.exp(-0.5 * (u**2).sum(1)) * amp[:, None] * np.exp(grad @ u.T)


def _implant_targets(rng: np.random.Generator, regions: Sequence[str] | None) -> list[str]:
    """Regions a subject's electrodes aim at: responsive ones first."""
    if regions is not None:
        targets = list(dict.fromkeys([regions] if isinstance(regions, str) else regions))
        unknown = sorted(set(targets) - set(IEEG_REGIONS))
        if unknown:
            raise ValueError(f"unknown regions {unknown}; available: {list(IEEG_REGIONS)}")
        if not targets:
            raise ValueError(f"regions must name at least one of {list(IEEG_REGIONS)}")
        return sorted(targets, key=lambda r: r not in IEEG_RESPONSIVE)
    others = [r for r in IEEG_REGIONS if r not in IEEG_RESPONSIVE]
    responsive = rng.choice(IEEG_RESPONSIVE, size=int(rng.integers(2, 4)), replace=False)
    rest = rng.choice(others, size=int(rng.integers(1, 5)), replace=False)
    return [str(r) for r in (*responsive, *rest)]


def _shaft_span(target: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
    """Distances (mm) along a shaft from its target to its ends inside the left hemisphere."""
    a = direction / _BRAIN_AXES_MM
    b = (target - _BRAIN_CENTRE_MM) / _BRAIN_AXES_MM
    qa, qb, qc = a @ a, 2 * a @ b, b @ b - 1.0
    root = math.sqrt(qb**2 - 4 * qa * qc)
    lo, hi = (-qb - root) / (2 * qa) + 1.0, (-qb + root) / (2 * qa) - 1.0
    return lo, min(hi, (_MIDLINE_MM - target[0]) / direction[0])


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # names of the shafts and strips
_MIN_GAP_MM = 5.0  # closest approach of two shafts, and of strips to other electrodes


def _seeg_layout(
    rng: np.random.Generator, n_total: int, targets: Sequence[str], centres: Mapping[str, Any]
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """Depth shafts through the targets: contact positions (mm), names, one dict per shaft."""
    shafts: list[tuple[str, np.ndarray, np.ndarray, float, float]] = []
    tracks: list[np.ndarray] = []  # points every millimetre along each shaft

    def add(region: str, spread: float) -> None:
        for _ in range(100):
            target = centres[region] + rng.normal(0.0, spread, 3)
            target[0] = min(target[0], _MIDLINE_MM - 2.0)
            direction = _unit(np.array([1.0, 0.0, 0.0]) + rng.normal(0.0, 0.35, 3))
            if direction[0] < 0.5 or _ellipsoid_radius(target) > 0.9:
                continue
            lo, hi = _shaft_span(target, direction)
            track = target + np.arange(lo, hi + 1.0)[:, None] * direction
            if all(np.linalg.norm(track[:, None] - other[None], axis=-1).min() >= _MIN_GAP_MM
                   for other in tracks):  # fmt: skip
                break
        shafts.append((region, target, direction, lo, hi))
        tracks.append(track)

    for region in targets:
        add(region, 3.0)
        if rng.random() < 0.3:
            add(region, 5.0)
    capacity = [int((hi - lo) // _SEEG_PITCH_MM) + 1 for *_, lo, hi in shafts]
    while sum(capacity) < n_total and len(shafts) < len(_LETTERS):
        add(str(rng.choice(list(IEEG_REGIONS))), 10.0)
        capacity.append(int((shafts[-1][4] - shafts[-1][3]) // _SEEG_PITCH_MM) + 1)
    if sum(capacity[: len(_LETTERS)]) < n_total:
        raise ValueError(f"{n_total} sEEG contacts do not fit on {len(_LETTERS)} shafts")
    shafts, capacity = shafts[: len(_LETTERS)], capacity[: len(_LETTERS)]
    counts = np.zeros(len(shafts), dtype=np.int64)
    weight = rng.uniform(0.3, 1.0, len(shafts))
    for _ in range(n_total):  # at least 4 contacts per shaft in order, then at random
        short = np.flatnonzero(counts < np.minimum(capacity, 4))
        room = np.flatnonzero(counts < capacity)
        i = short[0] if short.size else rng.choice(room, p=weight[room] / weight[room].sum())
        counts[i] += 1

    positions, names, layout = [], [], []
    for letter, (region, target, direction, lo, hi), n in zip(
        _LETTERS, shafts, counts, strict=False
    ):
        if n == 0:
            continue
        length = (n - 1) * _SEEG_PITCH_MM
        start = rng.uniform(max(lo, -length), min(hi - length, 0.0))
        depth = start + length - _SEEG_PITCH_MM * np.arange(n)  # contact 1 is the deepest
        positions.append(target + depth[:, None] * direction)
        names += [f"L{letter}{k + 1}" for k in range(n)]
        layout.append({"name": f"L{letter}", "target": region, "n_contacts": int(n)})
    return np.vstack(positions), names, layout


def _surface_patch(
    rng: np.random.Generator, near: np.ndarray, rows: int, cols: int, spread: float
) -> np.ndarray:
    """A ``rows`` x ``cols`` electrode patch (mm) on the cortex model, centred near a point."""
    centre = _to_surface(near + rng.normal(0.0, spread, 3))
    angle = rng.uniform(0.0, np.pi)
    a = (np.arange(cols) - (cols - 1) / 2) * _ECOG_PITCH_MM
    b = (np.arange(rows) - (rows - 1) / 2) * _ECOG_PITCH_MM
    grid_a, grid_b = (g.ravel() for g in np.meshgrid(a, b))
    for _ in range(20):  # slide laterally until the patch stays in the left hemisphere
        normal = _unit((centre - _BRAIN_CENTRE_MM) / _BRAIN_AXES_MM**2)
        ref = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = _unit(np.cross(ref, normal))
        v = np.cross(normal, u)
        u, v = math.cos(angle) * u + math.sin(angle) * v, -math.sin(angle) * u + math.cos(angle) * v
        contacts = _to_surface(centre + grid_a[:, None] * u + grid_b[:, None] * v)
        overshoot = contacts[:, 0].max() - _MIDLINE_MM
        if overshoot <= 0:
            break
        centre = _to_surface(centre - [overshoot + 2.0, 0.0, 0.0])
    return contacts


def _ecog_layout(
    rng: np.random.Generator, n_total: int, targets: Sequence[str], centres: Mapping[str, Any]
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """A grid and strips on the cortex over the targets: positions (mm), names, patches.

    The grid (a large patch that leaves at least 4 contacts for strips when there are 12 or
    more) lies over the first target (a responsive one, if any); strips lie over the targets
    that no electrode covers yet (none within :data:`_LABEL_MM` of the point of the surface above
    the region centre), in order, then over random targets.
    """
    shapes = [(r, c) for r in range(2, 9) for c in range(max(r, 4), 9)
              if n_total - r * c >= 4 or (n_total < 12 and r * c == n_total)]  # fmt: skip
    large = [rc for rc in shapes if 2 * rc[0] * rc[1] >= n_total] or shapes
    rows, cols = large[rng.integers(len(large))] if large else (0, 0)
    rest = n_total - rows * cols
    n_strips = math.ceil(rest / 8)
    if n_strips > len(_LETTERS):
        raise ValueError(f"{n_total} ECoG contacts do not fit on a grid and 26 strips")
    strips = [rest // n_strips + (i < rest % n_strips) for i in range(n_strips)]

    positions, names, layout = [], [], []
    if rows:
        positions.append(_surface_patch(rng, centres[targets[0]], rows, cols, 4.0))
        width = max(2, len(str(rows * cols)))
        names += [f"G{k + 1:0{width}d}" for k in range(rows * cols)]
        layout.append({"name": "G", "target": targets[0], "shape": [rows, cols]})
    above = {r: _to_surface(centres[r]) for r in targets}
    for letter, size in zip(_LETTERS, strips, strict=False):
        taken = np.vstack(positions) if positions else np.empty((0, 3))
        pending = [r for r in targets if not taken.size
                   or np.linalg.norm(taken - above[r], axis=1).min() > _LABEL_MM]  # fmt: skip
        region = pending[0] if pending else str(rng.choice(targets))
        best, best_gap = np.empty((0, 3)), -1.0
        for attempt in range(40):  # keep clear of the electrodes already placed
            contacts = _surface_patch(rng, centres[region], 1, size, 4.0 + attempt)
            gap = np.linalg.norm(contacts[:, None] - taken[None], axis=-1).min(initial=np.inf)
            if gap > best_gap:
                best, best_gap = contacts, gap
            if gap >= _MIN_GAP_MM:
                break
        positions.append(best)
        names += [f"S{letter}{k + 1}" for k in range(size)]
        layout.append({"name": f"S{letter}", "target": region, "shape": [1, int(size)]})
    return np.vstack(positions), names, layout


def _region_labels(pos: np.ndarray, centres: Mapping[str, Any], far: str) -> list[str]:
    """Name of the nearest region centre within :data:`_LABEL_MM`, else ``far``."""
    names = list(centres)
    dist = np.linalg.norm(pos[:, None] - np.array([centres[r] for r in names])[None], axis=-1)
    nearest = dist.argmin(1)
    return [names[j] if dist[i, j] <= _LABEL_MM else far for i, j in enumerate(nearest)]


def _white_spectrum(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Complex Gaussian ``rfft`` coefficients of ``m`` white series of ``n`` samples, (m, k)."""
    k = n // 2 + 1
    spec = np.empty((m, k), dtype=np.complex64)
    spec.real = rng.standard_normal((m, k), dtype=np.float32)
    spec.imag = rng.standard_normal((m, k), dtype=np.float32)
    return spec


def _shaped(spectrum: np.ndarray, amplitude: np.ndarray, n: int) -> np.ndarray:
    """Gaussian series (m, n) of zero mean and unit variance with a given amplitude spectrum.

    ``spectrum`` is from :func:`_white_spectrum`; ``amplitude`` (one value per ``rfft``
    frequency, for all series or one row per series) is scaled so that the expected variance
    of every series is 1 (the weights are those of the bins in the inverse transform).
    """
    amplitude = np.atleast_2d(amplitude).astype(np.float32)
    weight = np.full(amplitude.shape[1], 4.0, dtype=np.float32)
    weight[0] = 0.0
    if n % 2 == 0:
        weight[-1] = 1.0
    scale = n / np.sqrt((weight * amplitude**2).sum(1, keepdims=True))
    return sfft.irfft(spectrum * (amplitude * scale), n=n, axis=1)


def _spectral_noise(
    rng: np.random.Generator, amplitude: np.ndarray, n: int, m: int = 1
) -> np.ndarray:
    """``m`` new Gaussian series (n, m) of unit variance with one amplitude spectrum."""
    return _shaped(_white_spectrum(rng, n, m), amplitude, n).T


def _stimulus_locked(
    latent: Latent, t: np.ndarray, sfreq: float, structure: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Evoked components and high-gamma bursts of the responsive regions after each onset.

    Each trial's response in each region is scaled by the region's response to the image and
    by a random log-normal gain (:data:`_TRIAL_SPREAD`).

    Returns
    -------
    erp : ndarray, shape (n_times, regions, components, classes)
        Each component of each trial (unit peak, times the region's response to its image)
        in the column of its class.
    burst : ndarray, shape (n_times, regions, classes)
        The high-gamma bursts, likewise.
    """
    n_resp, n_comp = _IEEG_ERP.shape[:2]
    erp = np.zeros((len(t), n_resp, n_comp, latent.n_classes))
    burst = np.zeros((len(t), n_resp, latent.n_classes))
    n_after = int(math.ceil(_IEEG_KERNEL_S * sfreq))
    lat, width = _IEEG_ERP[..., 0], _IEEG_ERP[..., 1]
    trials = latent.trials[["onset", "class", "image"]]
    variability = np.exp(_TRIAL_SPREAD * rng.standard_normal((len(trials), n_resp)))
    for (onset, cls, img), jitter in zip(trials.itertuples(index=False), variability, strict=True):
        i0 = int(math.ceil(onset * sfreq - 1e-9))
        if i0 >= len(t):
            break
        gain = jitter
        if latent.image_params is not None:
            centred = latent.image_params[int(img)] - 0.5
            gain = jitter * np.clip(1.0 + structure["image"] @ centred, 0.2, None)
        tau = t[i0 : i0 + n_after] - onset
        waves = np.exp(-0.5 * ((tau[:, None, None] - lat) / width) ** 2)
        erp[i0 : i0 + len(tau), :, :, int(cls)] += waves * gain[:, None]
        ratio = tau[:, None] / _IEEG_HG_PEAK
        burst[i0 : i0 + len(tau), :, int(cls)] += ratio**2 * np.exp(2.0 * (1.0 - ratio)) * gain
    return erp, burst


def _ieeg_sources(
    latent: Latent, n: int, sfreq: float, structure: dict, rates: dict[str, float],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Time courses of the region sources, each (n, n_sources)."""
    t = np.arange(n) / sfreq
    erp, burst = _stimulus_locked(latent, t, sfreq, structure, rng)
    onehot, _ = _stimulus_features(latent, t)
    sustained = 0.3 * ndimage.uniform_filter1d(onehot, max(1, int(0.05 * sfreq)), axis=0)
    speed = np.tanh(latent.speed(t) / _SPEED_SCALE)
    f = sfft.rfftfreq(n, 1 / sfreq)
    envelope = np.exp(0.4 * _spectral_noise(rng, np.exp(-0.5 * (f / 0.1) ** 2), n, 3))

    def rhythm(f0: float, bandwidth: float) -> np.ndarray:
        return _spectral_noise(rng, np.exp(-0.5 * ((f - f0) / bandwidth) ** 2), n)[:, 0]

    rhythms = np.column_stack([
        rhythm(rates["theta"], 0.8) * (0.4 + 0.6 * speed),  # HPC theta grows with speed
        rhythm(rates["m1_beta"], 2.0) * (1.0 - 0.6 * speed),  # M1 beta desynchronises
        rhythm(rates["pfc_alpha"], 1.0) * envelope[:, 0],  # PFC alpha and beta, TPJ alpha:
        rhythm(rates["pfc_beta"], 2.0) * envelope[:, 1],  # unrelated to the task
        rhythm(rates["tpj_alpha"], 1.0) * envelope[:, 2],
    ])  # fmt: skip
    place = _place_basis(latent.position(t), 4, 0.2)
    return {
        # region-major: (n, regions * components * classes)
        "erp": erp.reshape(n, -1),
        # high-gamma amplitude: bursts (regions * classes), place fields (PPA, HPC), speed (M1)
        "high_gamma": np.hstack([
            (burst + sustained[:, None]).reshape(n, -1), place, place, speed[:, None],
        ]),  # fmt: skip
        "place": np.tile(place - 0.4, 2),  # slow potentials, PPA and HPC
        "speed": latent.speed(t)[:, None] / _SPEED_SCALE - 1.0,
        "rhythms": rhythms,
    }


def simulate_ieeg(
    latent: Latent,
    *,
    subject: str = "01",
    run: str = "01",
    seed: int = 0,
    sfreq: float = 250.0,
    kind: str = "seeg",
    n_electrodes: int | tuple[int, int] = (40, 120),
    regions: Sequence[str] | None = None,
    responsive: Sequence[str] | None = None,
    response_gain: float = 1.0,
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> xr.Dataset:
    """Simulate intracranial EEG (sEEG depth shafts or an ECoG grid and strips).

    Eight named regions (:data:`IEEG_REGIONS`) have fixed centres in a frame shared by all
    subjects. Every source of a region reaches a contact through a smooth field of its position:
    a Gaussian of the distance to the region centre (s.d. 9 mm) times a linear function of the
    offset, so that the signal is a smooth function of position that a position-aware model
    can carry from one subject to another. The sources:

    * :data:`IEEG_RESPONSIVE` (V1, LO, FFA): after each trial onset, an evoked potential (three
      components with the region's latencies) and a burst of high-gamma power (band-limited
      noise, a Gaussian band whose +-2 s.d. span 60-110 Hz at 250 Hz, whose amplitude rises
      after 80-160 ms and decays over some 0.3 s, plus a smaller
      sustained part while the stimulus is shown), each with its own pattern per class and
      per region; the image parameters (contrast most) scale the responses;
    * :data:`IEEG_TRACKING`: place fields of the position (PPA, HPC) in slow potentials and in
      high-gamma power (four fields per region, whose high gamma peaks at points 6 mm apart
      along y), a theta rhythm growing with speed (HPC), and in M1 a beta rhythm that speed
      suppresses, high-gamma power and a slow potential that follow speed;
    * the distractors PFC (alpha, beta) and TPJ (alpha), whose amplitudes drift at random;
    * everywhere: 1/f-like background activity (aperiodic exponent 1.6-2.4 per contact, 1 Hz
      knee), local to each contact and from ten generators at random places with a wider
      field, and white amplifier noise.

    Each subject (``seed``) has its own electrode count and placement and its own anatomy (region
    centres moved by about 2 mm, gains per region). ``kind="seeg"``: a few depth shafts entering
    laterally (contacts 3.5 mm apart, named ``LA1``, ``LA2``, ... from the deepest) through a
    subject-specific set of regions, always at least two responsive ones; shafts are added at
    random places when the contact count needs them. ``kind="ecog"``: a grid (2-8 rows and
    4-8 columns, 10 mm pitch, ``G01``, ...) laid on an ellipsoidal cortex model over the first
    targeted region (a responsive one) and strips of 4-8 contacts (``SA1``, ...) over the
    targeted regions that no electrode covers yet, then over random ones (with fewer than 12
    contacts, one small grid or one strip only). Values are in volts, about 4e-5 V (s.d.).

    Parameters
    ----------
    latent : Latent
        Ground truth of the run (from :func:`simulate_latent`).
    subject, run : str
        Identity of the recording.
    seed : int
        Subject seed: it draws the electrodes and the subject's anatomy (same for all runs of a
        subject); the noise depends on it and on the latent's seed.
    sfreq : float
        Sampling rate in Hz, at least 200. High gamma is 60-110 Hz at 250 Hz, and up to 70-150
        Hz at higher rates (below 0.44 ``sfreq``).
    kind : {"seeg", "ecog"}
        Depth shafts or surface electrodes; also the recording's modality and channel type.
    n_electrodes : int or (int, int)
        Number of contacts, or an inclusive range to draw it from.
    regions : sequence of str, optional
        Regions to implant (names of :data:`IEEG_REGIONS`), each with a shaft (sEEG) or under
        the grid or a strip (ECoG). Default: two or three responsive regions and one to four
        others, drawn per subject.
    responsive : sequence of str, optional
        The regions of :data:`IEEG_RESPONSIVE` that respond to the stimuli (default all
        three); the others stay silent. Every subject gets an electrode in each of them (e.g.
        ``("FFA",)``: class-specific transients in one region only, everything else a
        distractor).
    response_gain : float
        Factor on the amplitude of the stimulus responses (evoked and high gamma): how hard
        the decoding is.
    split : sequence of 3 float
        Train / valid / test fractions of the recording, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals (half taken from each side; an interval
        it leaves empty is left out). Default: the modality's margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    xarray.Dataset
        A recording with modality ``kind``, channel type ``kind``, units ``"V"``; positions in
        metres in the ``"mni_tal"`` frame of :data:`IEEG_REGIONS`; ``region`` is the nearest
        region within 15 mm, else ``"white_matter"`` (sEEG) or ``"unknown"`` (ECoG).
    """
    if kind not in ("seeg", "ecog"):
        raise ValueError(f"kind must be 'seeg' or 'ecog', got {kind!r}")
    if sfreq < 200.0:
        raise ValueError(f"sfreq must be at least 200 Hz for the high-gamma band, got {sfreq}")
    mapping = _rng(seed, "ieeg", kind, "mapping")
    noise = _rng(seed, "ieeg", kind, "noise", latent.seed)
    n_ch = _count(mapping, n_electrodes, "n_electrodes")
    structure = _ieeg_structure(latent.n_classes)
    centres = {r: 1000.0 * np.asarray(c) + mapping.normal(0.0, 2.0, 3)
               for r, c in IEEG_REGIONS.items()}  # fmt: skip
    targets = _implant_targets(mapping, regions)
    if responsive is not None:
        unknown = sorted(set(responsive) - set(IEEG_RESPONSIVE))
        if unknown:
            raise ValueError(f"responsive regions {unknown} are not among {IEEG_RESPONSIVE}")
        targets = [*responsive, *(r for r in targets if r not in responsive)]
    layout_fn = _seeg_layout if kind == "seeg" else _ecog_layout
    pos, ch_names, layout = layout_fn(mapping, n_ch, targets, centres)
    labels = _region_labels(pos, centres, "white_matter" if kind == "seeg" else "unknown")
    gain = dict(zip(IEEG_REGIONS, mapping.uniform(0.7, 1.3, len(IEEG_REGIONS)), strict=True))
    for r in IEEG_RESPONSIVE:  # the stimulus responses of V1, LO, FFA use these gains only
        gain[r] *= response_gain if responsive is None or r in responsive else 0.0
    exponent = mapping.uniform(1.6, 2.4, n_ch)
    rates = {
        "theta": mapping.uniform(6.0, 8.0), "m1_beta": mapping.uniform(18.0, 24.0),
        "pfc_alpha": mapping.uniform(8.5, 11.0), "pfc_beta": mapping.uniform(15.0, 20.0),
        "tpj_alpha": mapping.uniform(8.5, 11.0),
    }  # fmt: skip
    shared_dir = _unit(mapping.standard_normal((_N_SHARED_BACKGROUND, 3)))
    shared_at = _BRAIN_CENTRE_MM + shared_dir * _BRAIN_AXES_MM * mapping.uniform(
        0.3, 0.9, (_N_SHARED_BACKGROUND, 1))  # fmt: skip
    hg_hi = min(150.0, 0.44 * sfreq)
    hg_lo = 60.0 if hg_hi < 140.0 else 70.0

    # Spatial fields of the sources at the contacts, (n_sources, n_ch).
    resp = [centres[r] for r in IEEG_RESPONSIVE]
    erp_fields = np.concatenate([
        gain[r] * _fields(pos, resp[i], structure["erp_amp"][i, :, k],
                          structure["erp_grad"][i, :, k])
        for i, r in enumerate(IEEG_RESPONSIVE) for k in range(_IEEG_ERP.shape[1])
    ])  # fmt: skip
    place_hg_grad = structure["place_hg_grad"]
    hg_fields = np.concatenate([
        *(gain[r] * _gain_fields(pos, resp[i], structure["hg_amp"][i], structure["hg_grad"][i])
          for i, r in enumerate(IEEG_RESPONSIVE)),
        *(gain[r] * _gain_fields(pos, centres[r] + [0.0, _PLACE_STEP_MM * (k - 1.5), 0.0],
                                 np.full(1, _HG_BEHAVIOUR), grad[None])
          for i, r in enumerate(("PPA", "HPC")) for k, grad in enumerate(place_hg_grad[i])),
        gain["M1"] * _gain_fields(pos, centres["M1"], np.full(1, _HG_BEHAVIOUR), np.zeros((1, 3))),
    ])  # fmt: skip
    place_fields = np.concatenate([
        gain[r] * _fields(pos, centres[r], structure["place_amp"][i], structure["place_grad"][i])
        for i, r in enumerate(("PPA", "HPC"))
    ])  # fmt: skip
    speed_field = gain["M1"] * _fields(pos, centres["M1"], np.ones(1), np.zeros((1, 3)))
    rhythm_regions = ("HPC", "M1", "PFC", "PFC", "TPJ")
    rhythm_fields = np.concatenate([
        gain[r] * _fields(pos, centres[r], np.ones(1), structure["rhythm_grad"][i : i + 1])
        for i, r in enumerate(rhythm_regions)
    ])  # fmt: skip
    rhythm_amp = np.array([_IEEG_UV[k] for k in ("theta", "beta", "alpha", "beta", "alpha")])
    dist = np.linalg.norm(pos[None] - shared_at[:, None], axis=-1)
    shared_fields = np.exp(-0.5 * (dist / (2 * _FIELD_MM)) ** 2)

    n = _n_samples(latent.duration, sfreq)
    src = _ieeg_sources(latent, n, sfreq, structure, rates, noise)
    f = sfft.rfftfreq(n, 1 / sfreq)
    # Contacts x time from here on (the inverse FFTs run along contiguous rows).
    # power ~ 1 / (f**2 + 1)**(exponent / 2): 1/f**exponent above a 1 Hz knee
    log_f = np.log(f**2 + 1.0).astype(np.float32)
    aperiodic = np.exp(np.outer((-exponent / 4).astype(np.float32), log_f))
    aperiodic /= np.sqrt((aperiodic**2).mean(1, keepdims=True))
    white = _IEEG_UV["white"] / _IEEG_UV["local"]
    # One white spectrum for both: the background holds almost nothing in the high-gamma band.
    spectrum = _white_spectrum(noise, n, n_ch)
    background = _shaped(spectrum, np.sqrt(aperiodic**2 + white**2), n)
    background *= math.hypot(_IEEG_UV["local"], _IEEG_UV["white"])
    band = np.exp(-0.5 * ((f - (hg_lo + hg_hi) / 2) / ((hg_hi - hg_lo) / 4)) ** 2)
    high_gamma = _shaped(spectrum, band, n)
    del spectrum
    shared = _spectral_noise(noise, (f**2 + 1.0) ** -0.5, n, _N_SHARED_BACKGROUND)
    f32 = np.float32
    high_gamma *= 1.0 + (_HG_GAIN * hg_fields.T).astype(f32) @ src["high_gamma"].T.astype(f32)
    background += _IEEG_UV["high_gamma"] * high_gamma
    del high_gamma
    sources = np.hstack([
        _IEEG_UV["erp"] * src["erp"], _IEEG_UV["place"] * src["place"],
        _IEEG_UV["speed"] * src["speed"], src["rhythms"] * rhythm_amp,
        _IEEG_UV["shared"] * shared,
    ]).astype(f32)  # fmt: skip
    fields = np.vstack([erp_fields, place_fields, speed_field, rhythm_fields, shared_fields])
    microvolts = sources @ fields.astype(f32)
    microvolts += background.T
    del background
    microvolts *= f32(1e-6)
    return _recording(
        microvolts,
        latent,
        modality=kind,
        sfreq=sfreq,
        subject=subject,
        run=run,
        split=split,
        split_gap=split_gap,
        params={
            "seed": int(seed), "kind": kind, "n_electrodes": n_ch, "regions": list(targets),
            "electrodes": layout, "high_gamma": [hg_lo, hg_hi],
            **({} if responsive is None and response_gain == 1.0 else {
                "responsive": list(IEEG_RESPONSIVE if responsive is None else responsive),
                "response_gain": float(response_gain)}),
            "rhythms": {k: float(v) for k, v in rates.items()},
        },  # fmt: skip
        ch_names=ch_names,
        ch_types=kind,
        units="V",
        positions=pos / 1000.0,
        coord_frame="mni_tal",
        regions=labels,
    )


def _simulate_seeg(latent: Latent, **kwargs: Any) -> xr.Dataset:
    """:func:`simulate_ieeg` with ``kind="seeg"`` (the ``"seeg"`` modality of the dataset)."""
    return simulate_ieeg(latent, kind="seeg", **kwargs)


def _simulate_ecog(latent: Latent, **kwargs: Any) -> xr.Dataset:
    """:func:`simulate_ieeg` with ``kind="ecog"`` (the ``"ecog"`` modality of the dataset)."""
    return simulate_ieeg(latent, kind="ecog", **kwargs)


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
# Coupled spiking network (Poisson GLM with known directed connectivity)
# --------------------------------------------------------------------------------------------


@dataclass
class CoupledSpikes:
    """Recordings of one simulated spiking circuit and its ground truth.

    Built by :func:`simulate_coupled_spikes`. Network unit ``j`` acts on unit ``i`` through
    ``weights[i, j]`` (rows are the post-synaptic targets, columns the pre-synaptic sources), in
    log-rate units, with the delayed exponential kernel ``exp(-(lag - kernel_delay) /
    kernel_tau)`` for ``lag >= kernel_delay``.

    Attributes
    ----------
    recordings : list of xarray.Dataset
        One spikes recording per session, in ``sessions`` order.
    weights : ndarray of float64, shape (n_units, n_units)
        Directed coupling ``weights[post, pre]``; zero diagonal (refractoriness is the separate
        ``self_weight``), non-zero entries are the true edges.
    network_units : list of ndarray of int64
        Per recording, the network unit recorded by each channel (channel order).
    latents : list of Latent
        Per recording, the behaviour and stimulus sequence that drove it.
    params : dict
        Every parameter of the simulation, JSON-serialisable.
    """

    recordings: list[xr.Dataset]
    weights: np.ndarray
    network_units: list[np.ndarray]
    latents: list[Latent]
    params: dict[str, Any]

    @property
    def edges(self) -> np.ndarray:
        """True directed edges of the network, bool ``(n_units, n_units)``, ``[post, pre]``."""
        return self.weights != 0

    def channel_weights(self, index: int = 0) -> np.ndarray:
        """Coupling among the channels of recording ``index``, ``[post, pre]`` in channel order."""
        units = self.network_units[index]
        return self.weights[np.ix_(units, units)]

    def channel_edges(self, index: int = 0) -> np.ndarray:
        """True directed edges among the channels of recording ``index`` (bool, ``[post, pre]``)."""
        return self.channel_weights(index) != 0


def simulate_coupled_spikes(
    *,
    n_units: int = 40,
    duration: float = 600.0,
    sessions: Sequence[str] = ("01",),
    session_units: int | Sequence[Sequence[int]] | None = None,
    dt: float = 0.001,
    sfreq: float = 100.0,
    seed: int = 0,
    edge_density: float = 0.08,
    inhibitory_fraction: float = 0.3,
    excitatory_weight: tuple[float, float] = (0.8, 1.5),
    inhibitory_weight: tuple[float, float] = (1.0, 2.0),
    kernel_delay: float = 0.003,
    kernel_tau: float = 0.005,
    self_weight: float = -3.0,
    baseline_rate: tuple[float, float] = (3.0, 8.0),
    place_gain: tuple[float, float] = (0.5, 1.6),
    class_gain: tuple[float, float] = (0.3, 0.8),
    n_classes: int = 4,
    max_rate: float = 200.0,
    subject: str = "01",
    split: Sequence[float] = DEFAULT_SPLIT,
    split_gap: float | None = None,
) -> CoupledSpikes:
    """Simulate sessions of one spiking circuit with known directed connectivity.

    A discrete-time coupled Poisson GLM: at every ``dt`` step unit ``i`` fires (at most once,
    Bernoulli with probability ``1 - exp(-rate * dt)``) with

    ``log rate_i(t) = log b_i + drive_i(t) + sum_j W_ij h_j(t) + self_weight * h_i(t)``,

    where ``h_j`` is the spike train of unit ``j`` filtered by the delayed exponential kernel
    (zero before ``kernel_delay``, 1 at ``kernel_delay``, decaying with ``kernel_tau``); the
    intervals between a unit's spikes are at least ``kernel_delay`` (an absolute refractory
    period; the self term adds a relative one), and the rate is capped at ``max_rate``. ``W``
    is sparse (each directed pair is an edge with probability ``edge_density``), excitatory or
    inhibitory (``inhibitory_fraction`` of the edges). The behaviour drive comes from
    :func:`simulate_latent` (the linear track and the stimulus blocks): a place field on the
    track in log-rate (80 % of the units), a preferred stimulus class (half of them) and a speed
    gain, so that position, speed and stimulus class are decodable from the population.

    Every session is a new run of the same circuit (new behaviour, new spikes) that records
    some of its units (the others remain hidden inputs) as channels ``unit001``, ...: unit keys
    (:func:`neurodecode.data.tokens.unit_keys`, which hold the session) of two sessions never
    match, so a held-out session needs unit identification; with an int ``session_units`` each
    session records a random subset in a random channel order.

    Parameters
    ----------
    n_units : int
        Units of the network.
    duration : float
        Length of every session in seconds.
    sessions : sequence of str
        Session labels (BIDS ``ses-`` entity), one recording each.
    session_units : int or sequence of sequence of int, optional
        Which network units each session records, in channel order: None for all of them (in
        network order), an int for that many drawn at random per session, or one list of
        network-unit indices per session.
    dt : float
        Simulation step in seconds; ``1 / (sfreq * dt)`` must be an integer.
    sfreq : float
        Bins per second of the stored counts (``signal``).
    seed : int
        Seed of the circuit (weights, tuning); each session's behaviour, unit subset and spikes
        derive from it and the session label.
    edge_density : float
        Probability that a directed pair of distinct units is an edge.
    inhibitory_fraction : float
        Fraction of the edges that are inhibitory.
    excitatory_weight, inhibitory_weight : (float, float)
        Ranges of the absolute edge weights (log-rate units at the kernel peak).
    kernel_delay : float
        Synaptic delay in seconds, a whole number of steps (at least one).
    kernel_tau : float
        Decay time constant of the coupling kernel in seconds.
    self_weight : float
        Weight of a unit's own filtered spike train (relative refractoriness; <= 0).
    baseline_rate : (float, float)
        Range of the baseline rates in Hz.
    place_gain, class_gain : (float, float)
        Ranges of the log-rate gain of the place fields (at their centre) and of the preferred
        stimulus class.
    n_classes : int
        Number of stimulus classes.
    max_rate : float
        Cap of the instantaneous rate in Hz.
    subject : str
        Subject label of all sessions.
    split : sequence of 3 float
        Train / valid / test fractions of every session, as contiguous blocks.
    split_gap : float, optional
        Seconds left out between consecutive intervals; default: the spikes margin
        (:data:`neurodecode.data.splits.MODALITY_MARGINS`).

    Returns
    -------
    CoupledSpikes
        The recordings (modality ``"spikes"``, exact ``spike_time``/``spike_unit``, counts per
        bin in ``signal``, ``behavior_position``/``behavior_speed``, stimulus events, split
        intervals) and the ground truth. Each recording's attributes also carry it:
        ``network_unit`` (per channel), ``coupling`` (weights among its channels, ``[post,
        pre]``) and ``kernel`` (``delay``, ``tau``, ``self_weight``, ``dt``).

    Raises
    ------
    ValueError
        On inconsistent parameters, or when the circuit's linearised branching ratio is 1 or
        more (it would run away).
    RuntimeError
        When the simulated rates nevertheless run away (a unit above half of ``max_rate`` over a
        whole second).
    """
    n_steps, per_bin, delay = _glm_check(
        n_units, duration, sessions, dt, sfreq, edge_density, inhibitory_fraction,
        kernel_delay, kernel_tau, self_weight, max_rate,
    )  # fmt: skip
    circuit = _rng(seed, "glm", "circuit")
    weights = _glm_weights(
        circuit, n_units, edge_density, inhibitory_fraction, excitatory_weight, inhibitory_weight
    )
    tuning = _glm_tuning(circuit, n_units, n_classes, baseline_rate, place_gain, class_gain)
    units_per_session = _glm_session_units(session_units, sessions, n_units, seed)
    decay = math.exp(-dt / kernel_tau)
    branching = _glm_branching(weights, tuning, decay, dt)
    if branching >= 1.0:
        raise ValueError(
            f"the coupling would run away: linearised branching ratio {branching:.2f} >= 1; "
            "lower edge_density or the edge weights"
        )
    params = {
        "n_units": int(n_units), "duration": float(duration),
        "sessions": [str(s) for s in sessions],
        "dt": float(dt), "sfreq": float(sfreq), "seed": int(seed),
        "edge_density": float(edge_density), "inhibitory_fraction": float(inhibitory_fraction),
        "excitatory_weight": [float(w) for w in excitatory_weight],
        "inhibitory_weight": [float(w) for w in inhibitory_weight],
        "kernel_delay": float(kernel_delay), "kernel_tau": float(kernel_tau),
        "self_weight": float(self_weight), "baseline_rate": [float(r) for r in baseline_rate],
        "place_gain": [float(g) for g in place_gain], "class_gain": [float(g) for g in class_gain],
        "n_classes": int(n_classes), "max_rate": float(max_rate),
        "branching_ratio": float(branching),
    }  # fmt: skip
    coupling = weights + self_weight * np.eye(n_units)
    recordings, latents = [], []
    for session, units in zip(sessions, units_per_session, strict=True):
        latent = simulate_latent(
            duration, n_classes=n_classes, seed=_child_seed(seed, "glm", "latent", session)
        )
        noise = _rng(seed, "glm", "noise", session)
        steps, spiking = _glm_run(
            latent, tuning, coupling, units, n_steps, dt, delay, decay, max_rate, noise
        )
        _glm_check_stable(steps, spiking, len(units), n_steps, dt, max_rate)
        n_bins = n_steps // per_bin
        keep = steps < n_bins * per_bin
        steps, spiking = steps[keep], spiking[keep]
        counts = np.bincount(
            (steps // per_bin) * len(units) + spiking, minlength=n_bins * len(units)
        ).reshape(n_bins, len(units))
        # Keep clear of the step edges so that binning the times is exact in floating point.
        times = (steps + noise.uniform(1e-3, 1 - 1e-3, len(steps))) * dt
        ds = _recording(
            counts.astype(np.float32),
            latent,
            modality="spikes",
            sfreq=sfreq,
            subject=subject,
            run="01",
            split=split,
            split_gap=split_gap,
            params={**params, "session": str(session), "generator": "coupled_glm"},
            ch_names=[f"unit{i + 1:03d}" for i in range(len(units))],
            ch_types="unit",
            units="count",
            spike_times=times,
            spike_units=spiking,
            extra_attrs={
                "network_unit": [int(u) for u in units],
                "coupling": weights[np.ix_(units, units)].tolist(),
                "kernel": {
                    "delay": float(kernel_delay), "tau": float(kernel_tau),
                    "self_weight": float(self_weight), "dt": float(dt),
                },  # fmt: skip
            },
        )
        ds.attrs["session"] = str(session)
        ds.attrs["source"]["path"] = (
            f"simulated://sub-{subject}/ses-{session}/task-{_TASK}/run-01/spikes"
        )
        recordings.append(ds)
        latents.append(latent)
    return CoupledSpikes(
        recordings=recordings,
        weights=weights,
        network_units=[np.asarray(u, dtype=np.int64) for u in units_per_session],
        latents=latents,
        params=params,
    )


def _glm_check(
    n_units: int,
    duration: float,
    sessions: Sequence[str],
    dt: float,
    sfreq: float,
    edge_density: float,
    inhibitory_fraction: float,
    kernel_delay: float,
    kernel_tau: float,
    self_weight: float,
    max_rate: float,
) -> tuple[int, int, int]:
    """Validate the GLM parameters; return the step count, steps per bin and delay in steps."""
    if n_units < 2:
        raise ValueError(f"n_units must be at least 2, got {n_units}")
    if not dt > 0 or not sfreq > 0:
        raise ValueError(f"dt and sfreq must be positive, got dt={dt}, sfreq={sfreq}")
    per_bin = round(1.0 / (sfreq * dt))
    if per_bin < 1 or abs(per_bin * sfreq * dt - 1.0) > 1e-9:
        raise ValueError(f"1 / (sfreq * dt) must be a whole number, got {1 / (sfreq * dt)}")
    delay = round(kernel_delay / dt)
    if delay < 1 or abs(delay * dt - kernel_delay) > 1e-9 * max(1.0, kernel_delay):
        raise ValueError(f"kernel_delay must be a whole number (>= 1) of steps, got {kernel_delay}")
    if not kernel_tau > 0:
        raise ValueError(f"kernel_tau must be positive, got {kernel_tau}")
    if not 0.0 <= edge_density <= 1.0 or not 0.0 <= inhibitory_fraction <= 1.0:
        raise ValueError("edge_density and inhibitory_fraction must lie in [0, 1]")
    if self_weight > 0:
        raise ValueError(f"self_weight must be <= 0 (refractoriness), got {self_weight}")
    if not max_rate > 0 or max_rate * dt >= 1.0:
        raise ValueError(f"max_rate must be positive and below 1 / dt, got {max_rate}")
    if len(sessions) == 0 or len(set(map(str, sessions))) != len(sessions):
        raise ValueError(f"sessions must be unique labels, at least one, got {list(sessions)}")
    n_steps = int(math.floor(duration / dt + 1e-9))
    if n_steps < 2 * per_bin:
        raise ValueError(f"a {duration} s session is too short for two bins at {sfreq} Hz")
    return n_steps, per_bin, delay


def _glm_weights(
    rng: np.random.Generator,
    n: int,
    density: float,
    inhibitory: float,
    exc: tuple[float, float],
    inh: tuple[float, float],
) -> np.ndarray:
    """Sparse directed weights ``[post, pre]`` with a zero diagonal."""
    edge = rng.random((n, n)) < density
    np.fill_diagonal(edge, False)
    sign = np.where(rng.random((n, n)) < inhibitory, -1.0, 1.0)
    size = np.where(sign > 0, rng.uniform(*exc, (n, n)), rng.uniform(*inh, (n, n)))
    return np.where(edge, sign * size, 0.0)


def _glm_tuning(
    rng: np.random.Generator,
    n: int,
    n_classes: int,
    baseline: tuple[float, float],
    place: tuple[float, float],
    cls: tuple[float, float],
) -> dict[str, np.ndarray]:
    """Log-rate tuning of the network units to position, speed and stimulus class."""
    gain = np.zeros((n, n_classes))
    selective = rng.random(n) < 0.5
    gain[np.arange(n), rng.integers(n_classes, size=n)] = selective * rng.uniform(*cls, n)
    return {
        "log_base": np.log(rng.uniform(*baseline, n)),
        "centre": rng.uniform(0.0, 1.0, n),
        "width": rng.uniform(0.06, 0.15, n),
        "place": (rng.random(n) < 0.8) * rng.uniform(*place, n),
        "class_gain": gain,
        "speed_gain": rng.normal(0.0, 0.3, n),
    }


def _glm_drive(tuning: dict[str, np.ndarray], latent: Latent, t: np.ndarray) -> np.ndarray:
    """Log-rates without coupling at times ``t``, shape (n_times, n_units)."""
    position, speed = latent.position(t), latent.speed(t)
    onehot, _ = _stimulus_features(latent, t)
    place = tuning["place"] * np.exp(
        -0.5 * ((position[:, None] - tuning["centre"]) / tuning["width"]) ** 2
    )
    return (
        tuning["log_base"] + place + onehot @ tuning["class_gain"].T
        + np.outer(speed / _SPEED_SCALE, tuning["speed_gain"])
    )  # fmt: skip


def _glm_session_units(
    spec: int | Sequence[Sequence[int]] | None, sessions: Sequence[str], n: int, seed: int
) -> list[np.ndarray]:
    """Network units recorded by each session, in channel order."""
    if spec is None:
        return [np.arange(n) for _ in sessions]
    if isinstance(spec, int | np.integer):
        if not 1 <= spec <= n:
            raise ValueError(f"session_units must be between 1 and n_units ({n}), got {spec}")
        return [
            _rng(seed, "glm", "units", s).choice(n, size=int(spec), replace=False) for s in sessions
        ]
    lists = [np.asarray(u, dtype=np.int64) for u in spec]
    if len(lists) != len(sessions):
        raise ValueError(f"session_units has {len(lists)} lists for {len(sessions)} sessions")
    for s, u in zip(sessions, lists, strict=True):
        if u.ndim != 1 or u.size == 0 or (u < 0).any() or (u >= n).any():
            raise ValueError(f"session {s!r}: unit indices must be a non-empty list in [0, {n})")
        if len(np.unique(u)) != len(u):
            raise ValueError(f"session {s!r}: unit indices repeat")
    return lists


def _glm_branching(
    weights: np.ndarray, tuning: dict[str, np.ndarray], decay: float, dt: float
) -> float:
    """Spectral radius of the mean extra spikes that one spike causes in each target.

    Linearisation at the units' peak drive rates (place field and preferred class): one spike of
    ``j`` adds ``rate_i * sum_k (exp(W_ij decay**k) - 1) * dt`` expected spikes to ``i``
    (excitatory edges only: inhibition cannot make it run away).
    """
    peak = np.exp(tuning["log_base"] + tuning["place"] + tuning["class_gain"].max(axis=1))
    kernel = decay ** np.arange(int(np.ceil(20 / max(1e-12, -np.log(decay)))) + 1)
    excit = np.clip(weights, 0.0, None)
    extra = (np.expm1(excit[:, :, None] * kernel).sum(axis=2)) * dt * peak[:, None]
    return float(np.max(np.abs(np.linalg.eigvals(extra))))


_GLM_CHUNK_STEPS = 6000  # steps whose drive and random draws are computed at once


def _glm_run(
    latent: Latent,
    tuning: dict[str, np.ndarray],
    coupling: np.ndarray,
    units: np.ndarray,
    n_steps: int,
    dt: float,
    delay: int,
    decay: float,
    max_rate: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the network; return the step and the channel (index into ``units``) of each spike.

    The coupling acts ``delay`` steps late, so the steps of one block of ``delay`` steps only
    depend on the filtered spike trains of the block before: the loop runs over blocks, and
    within a block everything is vectorised over steps and units.
    """
    n = coupling.shape[0]
    block = delay
    chunk = max(block, (_GLM_CHUNK_STEPS // block) * block)
    within = np.arange(block)
    lower = np.where(within[:, None] >= within, decay ** (within[:, None] - within), 0.0)
    carry = decay ** (within + 1.0)
    coupling_t = coupling.T.copy()
    recorded = np.zeros(n, dtype=bool)
    recorded[units] = True
    channel_of = np.full(n, -1, dtype=np.int64)
    channel_of[units] = np.arange(len(units))
    filtered = np.zeros((block, n))  # filtered spike trains over the previous block
    ready = np.zeros(n, dtype=np.int64)  # first step at which each unit may fire again
    column = within[:, None]
    all_steps, all_units = [], []
    for c0 in range(0, n_steps, chunk):
        c1 = min(n_steps, c0 + chunk)
        n_chunk = -(-(c1 - c0) // block) * block
        t = (c0 + np.arange(n_chunk) + 0.5) * dt
        # A step fires when its exponential draw E = -log(1 - u) / dt is below min(rate,
        # max_rate), i.e. when the coupling input exceeds log(E) - drive.
        draws = -np.log1p(-rng.random((n_chunk, n))) / dt
        with np.errstate(divide="ignore"):
            threshold = np.where(draws < max_rate, np.log(draws), np.inf)
        threshold -= _glm_drive(tuning, latent, t)
        spikes = np.zeros((n_chunk, n), dtype=bool)
        for b0 in range(0, n_chunk, block):
            fired = filtered @ coupling_t > threshold[b0 : b0 + block]
            # Absolute refractory period of ``block`` steps: no spike before ``ready``, and
            # so at most one (the first) within the block.
            fired &= column >= ready - (c0 + b0)
            first, hit = fired.argmax(axis=0), fired.any(axis=0)
            fired = (column == first) & hit
            spikes[b0 : b0 + block] = fired
            ready = np.where(hit, c0 + b0 + block + first, ready)
            filtered = carry[:, None] * filtered[-1] + lower @ fired
        step, unit = np.nonzero(spikes[: c1 - c0])
        keep = recorded[unit]
        all_steps.append(step[keep] + c0)
        all_units.append(channel_of[unit[keep]])
    return np.concatenate(all_steps), np.concatenate(all_units)


def _glm_check_stable(
    steps: np.ndarray, units: np.ndarray, n_channels: int, n_steps: int, dt: float, max_rate: float
) -> None:
    """Raise when a unit fired above half of ``max_rate`` over a whole second."""
    per_s = max(1, round(1.0 / dt))
    n_sec = max(1, n_steps // per_s)
    sec = np.minimum(steps // per_s, n_sec - 1)
    counts = np.bincount(sec * n_channels + units, minlength=n_sec * n_channels)
    worst = counts.max() if counts.size else 0
    if worst > max_rate / 2:
        raise RuntimeError(
            f"runaway excitation: a unit fired {worst} spikes in one second (max_rate "
            f"{max_rate} Hz); lower the excitatory weights or edge_density"
        )


# --------------------------------------------------------------------------------------------
# Whole dataset
# --------------------------------------------------------------------------------------------

_SIMULATORS: dict[str, Callable[..., xr.Dataset]] = {
    "eeg": simulate_eeg,
    "fmri": simulate_fmri,
    "calcium": simulate_calcium,
    "spikes": simulate_spikes,
    "seeg": _simulate_seeg,
    "ecog": _simulate_ecog,
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
        Among ``"eeg"``, ``"seeg"``, ``"ecog"`` (:func:`simulate_ieeg`), ``"fmri"``,
        ``"calcium"``, ``"spikes"``.
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
