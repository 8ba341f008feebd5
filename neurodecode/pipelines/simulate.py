"""The ``simulate`` stage: a multi-subject, multi-modality dataset with known ground truth.

``neurodecode simulate`` and workflows run this same code. The output is a folder of recording
stores laid out as ``sub-<s>/ses-<x>/<modality>/task-<t>_run-<r>.zarr``, plus ``stimuli.zarr``
(the procedural images that the events' ``value`` index) when the config asks for images.
With ``circuit``, the sessions of a simulated spiking circuit with known connectivity
(:func:`neurodecode.simulate.simulate_coupled_spikes`) are written beside them; with ``vision``,
the recordings of an NSD-like visual fMRI experiment
(:func:`neurodecode.simulate_visual.simulate_visual_fmri`), and its stimulus set as
``stimuli.zarr`` plus ``stimuli.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import SimulationConfig
from ..store import WriteResult, dataset_folder, recording_path, write_recording, write_stimuli
from ..verbosity import progress
from .base import Slot, Stage, register

if TYPE_CHECKING:
    from ..simulate_visual import VisualDataset

__all__ = ["SimulateStage", "simulate_to"]


def simulate_to(folder: str | Path, config: SimulationConfig) -> list[WriteResult]:
    """Simulate ``config`` and write its recordings (and stimuli) into ``folder``.

    With ``config.vision``, the visual experiment's recordings join the others and its stimulus
    set is written to ``stimuli.zarr`` (images, classes and, for procedural scenes, their
    parameters), with ``stimuli.json`` beside it: ``class_names``, ``names`` (one per image),
    ``param_names`` (the columns of the store's ``image_params``) and ``test_ids``.

    Parameters
    ----------
    folder : path-like
        The dataset folder (created).
    config : SimulationConfig

    Returns
    -------
    list of WriteResult
        One per recording.
    """
    from ..simulate import simulate_coupled_spikes, simulate_dataset
    from ..simulate_visual import VisualDataset

    folder = Path(folder)
    recordings = []
    stimuli = None
    if config.circuit is not None:
        # its own subject by default, so that its stores never meet the dataset's
        recordings = simulate_coupled_spikes(**{"subject": "circuit", **config.circuit}
                                             ).recordings
    if config.vision is not None:
        vision = _simulate_vision(config)
        recordings = [*recordings, *vision.recordings]
        stimuli = vision
    if config.modalities:
        sim = simulate_dataset(
            n_subjects=config.n_subjects,
            modalities=tuple(config.modalities),
            duration=config.duration,
            n_runs=config.n_runs,
            n_classes=config.n_classes,
            n_images=config.n_images,
            seed=config.seed,
            **config.options,
        )
        recordings = [*sim.recordings, *recordings]
        if sim.images is not None:
            stimuli = sim
    base = Path(dataset_folder(config.dataset))
    results = []
    for ds in progress(recordings, description="writing recordings"):
        relative = recording_path("", config.dataset, ds).relative_to(base)
        results.append(write_recording(ds, folder / relative))
    if isinstance(stimuli, VisualDataset):
        _write_visual_stimuli(folder, stimuli)
    elif stimuli is not None:
        write_stimuli(folder / "stimuli.zarr", stimuli.images, stimuli.image_classes,
                      stimuli.image_params)
    return results


def _simulate_vision(config: SimulationConfig) -> VisualDataset:
    """The visual experiment of ``config.vision`` (its own ``seed``, or the config's)."""
    from ..data.images import load_image_folder
    from ..simulate_visual import simulate_visual_fmri

    kwargs = {"seed": config.seed, **config.vision}
    source = str(kwargs.pop("images", "procedural"))
    images = None
    if source != "procedural":
        images = load_image_folder(source, size=int(kwargs.get("image_size", 32)))
    return simulate_visual_fmri(images, **kwargs)


def _write_visual_stimuli(folder: Path, vision: VisualDataset) -> None:
    """``stimuli.zarr`` and ``stimuli.json`` (names of classes, images and parameters)."""
    stim = vision.stimuli
    params = None if stim.params is None else stim.params.to_numpy(np.float64)
    write_stimuli(folder / "stimuli.zarr", stim.images, stim.classes, params)
    meta = {
        "class_names": list(stim.class_names),
        "names": list(stim.names),
        "param_names": [] if stim.params is None else [str(c) for c in stim.params.columns],
        "test_ids": vision.test_ids.tolist(),
    }
    path = folder / "stimuli.json"
    text = json.dumps(meta, indent=1) + "\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


@register
class SimulateStage(Stage):
    """Simulate subjects recorded with several modalities during one task (ground truth known)."""

    name = "simulate"
    Config = SimulationConfig
    outputs = {
        "stores": Slot("folder of the simulated recording stores (and stimuli.zarr)", folder=True)
    }

    def run(
        self,
        config: SimulationConfig,
        inputs: Mapping[str, list[Path]],
        outputs: Mapping[str, Path],
    ) -> dict[str, Any]:
        results = simulate_to(outputs["stores"], config)
        return {
            "recordings": [
                {
                    "store": str(r.path.relative_to(outputs["stores"])),
                    "status": r.status,
                    "nbytes": r.nbytes,
                    "nbytes_stored": r.nbytes_stored,
                    "seconds": round(r.seconds, 3),
                }
                for r in results
            ]
        }
