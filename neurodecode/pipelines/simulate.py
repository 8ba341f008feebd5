"""The ``simulate`` stage: a multi-subject, multi-modality dataset with known ground truth.

``neurodecode simulate`` and workflows run this same code. The output is a folder of recording
stores laid out as ``sub-<s>/ses-<x>/<modality>/task-<t>_run-<r>.zarr``, plus ``stimuli.zarr``
(the procedural images that the events' ``value`` index) when the config asks for images.
With ``circuit``, the sessions of a simulated spiking circuit with known connectivity
(:func:`neurodecode.simulate.simulate_coupled_spikes`) are written beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import SimulationConfig
from ..store import WriteResult, dataset_folder, recording_path, write_recording, write_stimuli
from ..verbosity import progress
from .base import Slot, Stage, register

__all__ = ["SimulateStage", "simulate_to"]


def simulate_to(folder: str | Path, config: SimulationConfig) -> list[WriteResult]:
    """Simulate ``config`` and write its recordings (and stimuli) into ``folder``.

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

    folder = Path(folder)
    recordings = []
    if config.circuit is not None:
        # its own subject by default, so that its stores never meet the dataset's
        recordings = simulate_coupled_spikes(**{"subject": "circuit", **config.circuit}
                                             ).recordings
    if not config.modalities:
        base = Path(dataset_folder(config.dataset))
        return [write_recording(ds, folder / recording_path("", config.dataset, ds)
                                .relative_to(base))
                for ds in progress(recordings, description="writing recordings")]
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
    base = Path(dataset_folder(config.dataset))
    results = []
    for ds in progress([*sim.recordings, *recordings], description="writing recordings"):
        relative = recording_path("", config.dataset, ds).relative_to(base)
        results.append(write_recording(ds, folder / relative))
    if sim.images is not None:
        write_stimuli(folder / "stimuli.zarr", sim.images, sim.image_classes, sim.image_params)
    return results


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
