"""Shared fixtures: small recordings, a real Dask cluster, the sample-data folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurodecode.config import get_settings
from neurodecode.schema import make_recording


def small_recording(
    n_times: int = 2000, n_channels: int = 8, sfreq: float = 100.0, seed: int = 0, **kwargs
):
    """A valid EEG-like recording with events, behaviour and splits."""
    rng = np.random.default_rng(seed)
    duration = n_times / sfreq
    defaults = dict(
        sfreq=sfreq,
        ch_names=[f"EEG{i:03d}" for i in range(n_channels)],
        ch_types="eeg",
        units="V",
        modality="eeg",
        subject="01",
        task="test",
        positions=rng.standard_normal((n_channels, 3)),
        coord_frame="head",
        events=pd.DataFrame(
            {
                "onset": [1.0, 2.5, duration - 1.0],
                "duration": [0.5, 0.5, 0.0],
                "label": ["left", "right", "left"],
                "value": [1, 2, 1],
            }
        ),
        behavior={
            "speed": rng.standard_normal(n_times),
            "position": rng.standard_normal((n_times, 2)),
        },
        intervals=pd.DataFrame(
            {
                "start": [0.0, 0.7 * duration],
                "stop": [0.7 * duration, duration],
                "split": ["train", "test"],
            }
        ),
        source={"path": "memory://small", "sha256": "", "reader": "tests", "reader_version": "0"},
        history=[{"step": "tests.small_recording", "params": {"seed": seed}}],
    )
    defaults.update(kwargs)
    return make_recording(rng.standard_normal((n_times, n_channels)) * 1e-5, **defaults)


@pytest.fixture
def recording():
    return small_recording()


@pytest.fixture(scope="session")
def dask_cluster():
    """A real ``dask.distributed`` LocalCluster with 2 worker processes, shared by the session."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture
def dask_client(dask_cluster):
    """A client of the shared cluster, the default scheduler for this test only."""
    from dask.distributed import Client

    with Client(dask_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def sample_data():
    """The real recordings folder, or a skip that says how to provide it."""
    root = get_settings().sample_data
    if not root.is_dir():
        pytest.skip(f"sample recordings not found at {root}; set NEURODECODE_SAMPLE_DATA")
    return root
