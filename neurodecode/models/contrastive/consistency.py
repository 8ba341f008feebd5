"""Consistency of embeddings across subjects, sessions or runs.

Following CEBRA (Schneider, Lee & Mathis, Nature 2023): two embeddings are consistent when one is
a linear function of the other. Across subjects the samples are not paired in time, so they are
paired by behaviour: each embedding is averaged within label bins (100 bins of a 1-D label by
default) and a linear map is fitted from the binned embedding of ``i`` to that of ``j``; the
score is its R² on held-out bins. Across runs of equal length the samples are paired in time.

The score is held out: the paired rows are split into two halves — alternate label bins (a
checkerboard over the bin grid for labels of several dimensions), or the first and second half
of the time points — the map is fitted on one half and scored on the other, both ways, and the
two R² are averaged. Scored on the bins it was fitted on, a map with ``d + 1`` coefficients per
target reaches R² = 1 with ``d + 1`` bins whatever the embeddings, and is biased up whenever
the bins are few; held out, unrelated embeddings score about 0 (slightly below: the map's
noise adds to the error) and only a map that generalises to other behaviour values (or times)
scores high.

Differences from ``cebra.sklearn.metrics.consistency_score``: the held-out score (CEBRA fits
and scores on the same bins); the bins span the label range common to all embeddings and a bin
empty in any embedding is left out (CEBRA spans the union of the ranges and borrows
neighbouring bins), and the bin means are only scaled to unit norm, as CEBRA does, with
``normalize=True``. R² is averaged uniformly over the target's dimensions in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

__all__ = ["binned_embedding", "consistency_score"]


def binned_embedding(
    embedding: np.ndarray, labels: np.ndarray, edges: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding per label bin.

    Parameters
    ----------
    embedding : ndarray, shape (n, d)
    labels : ndarray, shape (n,) or (n, k)
    edges : sequence of ndarray
        Bin edges per label dimension.

    Returns
    -------
    means : ndarray, shape (n_bins_total, d)
        NaN rows for empty bins.
    counts : ndarray, shape (n_bins_total,)

    Notes
    -----
    Bins are half-open ``[e[i], e[i + 1])`` except the last, which includes ``e[-1]``. Samples
    outside the edges are left out (not piled into the edge bins).
    """
    embedding = np.asarray(embedding, dtype=float)
    labels = np.asarray(labels, dtype=float).reshape(len(labels), -1)
    if labels.shape[1] != len(edges):
        raise ValueError(f"labels have {labels.shape[1]} dimensions, edges {len(edges)}")
    if len(labels) != len(embedding):
        raise ValueError(f"{len(labels)} labels for {len(embedding)} embedding rows")
    sizes = [len(e) - 1 for e in edges]
    cell = np.zeros(len(labels), dtype=np.int64)
    inside = np.ones(len(labels), dtype=bool)
    for k, e in enumerate(edges):
        e = np.asarray(e, dtype=float)
        inside &= (labels[:, k] >= e[0]) & (labels[:, k] <= e[-1])
        b = np.clip(np.searchsorted(e, labels[:, k], side="right") - 1, 0, len(e) - 2)
        cell = cell * sizes[k] + b
    n_cells = int(np.prod(sizes))
    cell = cell[inside]
    counts = np.bincount(cell, minlength=n_cells)
    sums = np.zeros((n_cells, embedding.shape[1]))
    np.add.at(sums, cell, embedding[inside])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means, counts


def consistency_score(
    embeddings: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None = None,
    *,
    n_bins: int = 100,
    names: Sequence[str] | None = None,
    normalize: bool = False,
) -> pd.DataFrame:
    """Held-out R² of linear maps between every ordered pair of embeddings.

    Parameters
    ----------
    embeddings : sequence of ndarray, each (n_i, d)
        Embeddings of the subjects (or runs) to compare.
    labels : sequence of ndarray, optional
        Per embedding, its behaviour label (n_i,) or (n_i, k). Samples are paired by label bin
        (``n_bins`` per dimension, over the range common to all); bins empty in any embedding
        are left out. Without labels, the embeddings must have equal length and are paired in
        time (runs of one trial structure).
    n_bins : int
        Bins per label dimension.
    names : sequence of str, optional
        Row/column names (default ``"0", "1", ...``).
    normalize : bool
        Scale every paired row (bin mean, or sample without labels) to unit norm before the
        regression, as CEBRA's ``align_embeddings`` does by default; natural for embeddings on
        the unit sphere (cosine similarity), whose bin means are shorter where they spread.

    Returns
    -------
    DataFrame
        ``scores.loc[i, j]`` is the held-out R² of predicting embedding ``j`` from embedding
        ``i`` (the mean of the two halves' scores, see the module notes); the diagonal is NaN.
        ``scores.attrs["mean"]`` is the mean off-diagonal score,
        ``scores.attrs["n_bins_used"]`` the number of bins shared by all embeddings (the
        number of paired samples without labels) and ``scores.attrs["halves"]`` the rows in
        each half.

    Raises
    ------
    ValueError
        Fewer than two embeddings, an embedding that is not 2-D or not finite, lengths that do
        not match their labels (or, without labels, each other), label ranges that do not
        overlap, or fewer than 2 paired rows in either half (4 shared bins at least).

    Notes
    -----
    Bins are alternated in the order of the label grid (even and odd bins of a 1-D label), so
    both halves span the whole label range; time points are split at the middle, so that
    autocorrelated neighbours are not fitted on and scored on.
    """
    if len(embeddings) < 2:
        raise ValueError(f"consistency needs at least two embeddings, got {len(embeddings)}")
    embs = []
    for k, e in enumerate(embeddings):
        e = np.asarray(e, dtype=float)
        e = e[:, None] if e.ndim == 1 else e
        if e.ndim != 2 or e.shape[1] == 0:
            raise ValueError(f"embedding {k} must be (n_samples, n_dims), got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            raise ValueError(f"embedding {k} contains NaN or Inf")
        embs.append(e)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    names = [str(k) for k in range(len(embs))] if names is None else [str(n) for n in names]
    if len(names) != len(embs):
        raise ValueError(f"{len(names)} names for {len(embs)} embeddings")
    if labels is None:
        lengths = {len(e) for e in embs}
        if len(lengths) != 1:
            raise ValueError(
                f"without labels the embeddings must be paired in time (equal length), got "
                f"lengths {sorted(lengths)}; pass labels to pair them by behaviour"
            )
        paired = embs
        used = len(embs[0])
        half = np.arange(used) >= used // 2
    else:
        if len(labels) != len(embs):
            raise ValueError(f"{len(labels)} label arrays for {len(embs)} embeddings")
        labs = [np.asarray(lab, dtype=float).reshape(len(lab), -1) for lab in labels]
        for k, (e, lab) in enumerate(zip(embs, labs, strict=True)):
            if len(e) != len(lab):
                raise ValueError(f"embedding {k} has {len(e)} rows but {len(lab)} labels")
            if not np.all(np.isfinite(lab)):
                raise ValueError(f"labels {k} contain NaN or Inf")
        if len({lab.shape[1] for lab in labs}) != 1:
            raise ValueError("the label arrays differ in their number of dimensions")
        lo = np.max([lab.min(0) for lab in labs], axis=0)
        hi = np.min([lab.max(0) for lab in labs], axis=0)
        if np.any(hi <= lo):
            raise ValueError("the label ranges of the embeddings do not overlap")
        edges = [np.linspace(lo[k], hi[k], n_bins + 1) for k in range(len(lo))]
        binned = [binned_embedding(e, lab, edges) for e, lab in zip(embs, labs, strict=True)]
        keep = np.all([c > 0 for _, c in binned], axis=0)
        used = int(keep.sum())
        grid = np.unravel_index(np.flatnonzero(keep), [n_bins] * len(edges))
        half = np.sum(grid, axis=0) % 2 == 1
        paired = [m[keep] for m, _ in binned]
    sizes = (int(np.sum(~half)), int(np.sum(half)))
    if min(sizes) < 2:
        what = "label bins are shared by all embeddings" if labels is not None else "samples"
        raise ValueError(f"only {used} {what}: the held-out score needs at least 2 paired rows "
                         f"in each half, got {sizes[0]} and {sizes[1]}")
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            paired = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in paired]
        if not all(np.all(np.isfinite(p)) for p in paired):
            raise ValueError("normalize=True needs non-zero rows (bin means)")
    scores = np.full((len(embs), len(embs)), np.nan)
    for i, a in enumerate(paired):
        for j, b in enumerate(paired):
            if i != j:
                scores[i, j] = np.mean([
                    r2_score(b[~fit], LinearRegression().fit(a[fit], b[fit]).predict(a[~fit]))
                    for fit in (half, ~half)
                ])
    out = pd.DataFrame(scores, index=names, columns=names)
    out.attrs["mean"] = float(np.nanmean(scores))
    out.attrs["n_bins_used"] = used
    out.attrs["halves"] = sizes
    return out
