"""A contrastive embedding decodes real rat position on held-out blocks; shuffled labels do not.

The rat linear-track recording (31 hippocampal units) is binned at 100 ms (sqrt spike counts);
a CEBRA-style embedding (``time_delta`` on the (x, y) position) followed by a cosine KNN is
cross-validated over contiguous time blocks, each fold training on the other blocks only (with
sample positions, so that no window spans a cut-out test block). The same cross-validation with
circularly shifted positions (one permutation draw) is the shuffled-label control.

Thresholds were measured with these settings (see ``benchmarks/real_data.py``,
``embedding_linear_track``, for the full numbers with more training steps and permutations).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline

from neurodecode.catalog import load_catalog
from neurodecode.data.samples import open_recordings, sample_positions, windows
from neurodecode.data.splits import ContiguousBlocks
from neurodecode.evaluate import cross_validate
from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest
from neurodecode.models.contrastive import ContrastiveEmbedding

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

BIN = 0.1  # seconds per bin; the encoder's 10-bin receptive field spans 1 s


@pytest.fixture(scope="module")
def stores(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_embeddings")
    catalog = load_catalog()
    tasks = plan_entry(catalog["nelpy_linear_track"], out, sample_data)
    results = run_ingest(tasks, cluster=ClusterConfig(kind="threads"))
    assert all(r.status == "created" for r in results), [r.error for r in results]
    return out


@pytest.fixture(scope="module")
def track(stores):
    """100 ms bins of the tracked 985 s: sqrt counts, (x, y) pixels, sample positions."""
    recs = open_recordings(stores / "nelpy_linear_track")
    s = windows(recs, length=BIN, stride=BIN, target="position")
    s = s.select(s.table["stop"].to_numpy() <= 985.0)  # afterwards the tracker is stuck
    X = np.sqrt(s.X.sum(axis=2)).astype(np.float32)
    return X, s.y, s.table, sample_positions(s.table, 1.0 / BIN)


def test_track_bins(track):
    X, y, table, positions = track
    assert X.shape[1] == 31 and y.shape == (len(X), 2)
    assert abs(len(X) - 9850) <= 1  # 985 s of 100 ms bins
    assert np.array_equal(positions, np.arange(len(X)))  # one contiguous run of bins
    assert np.isfinite(y).all()


def test_embedding_decodes_position_and_shuffled_labels_do_not(track):
    X, y, table, positions = track
    pipe = make_pipeline(
        ContrastiveEmbedding(
            conditional="time_delta",
            output_dim=8,
            batch_size=256,
            max_iter=300,
            learning_rate=1e-3,
            random_state=0,
        ),
        KNeighborsRegressor(25, metric="cosine"),
    )
    # One permutation = the same pipeline trained and tested on circularly shifted positions;
    # both are fitted in the same parallel batch (10 fits).
    res = cross_validate(
        pipe,
        X,
        y,
        table,
        ContiguousBlocks(n_blocks=5, gap=2.0),
        metrics=("r2", "median_absolute_error"),
        n_permutations=1,
        permutation="circular_shift",
        n_jobs=2,
        fit_params={"contrastiveembedding__positions": positions},
    )
    summary = res.summary.set_index("metric")
    r2, shuffled_r2 = summary.loc["r2", "mean"], res.null["r2"][0]
    mae, shuffled_mae = (
        summary.loc["median_absolute_error", "mean"],
        res.null["median_absolute_error"][0],
    )
    # measured (300 steps, 2 workers): R2 0.45, median |error| 38 px; shuffled -0.12 and 104 px
    assert r2 > 0.25, (r2, shuffled_r2)
    assert shuffled_r2 <= 0.1, shuffled_r2
    assert mae < 0.7 * shuffled_mae, (mae, shuffled_mae)
