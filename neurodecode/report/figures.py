"""The report's figures: small matplotlib plots of the run's data, rendered to PNG bytes.

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot and saved through the
Agg renderer, so no display is needed and figures can be made from any process. The report
embeds the bytes as ``data:image/png;base64,...`` URIs (see :func:`data_uri`).

* :func:`recording_thumbnail` — a small look at one recording store: stacked traces with events
  for EEG/MEG/iEEG, a carpet plot (channels × time, each channel z-scored) for calcium ROIs,
  units and parcels, and the mean-image slice beside the carpet for voxel (fMRI) stores;
* :func:`decoding_chart` — cross-validated scores (± std over folds) against their permutation
  chance level, one panel per metric;
* :func:`embedding_scatter` — embeddings (first two dimensions, or their first two principal
  components) coloured by a behaviour variable;
* :func:`consistency_heatmap` — a consistency matrix with its values written in the cells;
* :func:`fewshot_curve` — few-shot adaptation: score against the number of a new subject's
  training samples (log scale), one line per strategy and baseline, chance dashed;
* :func:`codebook_curves` — codebook pretraining per epoch: reconstruction loss, the
  codebook's perplexity, its dead and used shares, and the masked-code accuracy;
* :func:`nll_curve` — spike-token pretraining per epoch: the next-token negative
  log-likelihood on the training and validation windows, with reference levels dotted;
* :func:`rate_scatter` — per-unit firing rates of generated spike trains against the real ones;
* :func:`image_grid` — rows of images (seen images, their reconstructions, baselines), one
  column per trial.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

__all__ = [
    "FIGURE_DPI",
    "THUMBNAIL_DPI",
    "codebook_curves",
    "consistency_heatmap",
    "data_uri",
    "decoding_chart",
    "embedding_scatter",
    "fewshot_curve",
    "image_grid",
    "is_png",
    "nll_curve",
    "png_bytes",
    "rate_scatter",
    "recording_thumbnail",
]

#: Resolution of recording thumbnails (small: a report of 40 recordings renders in seconds).
THUMBNAIL_DPI = 60
#: Resolution of the other figures.
FIGURE_DPI = 80
#: Most channels drawn as traces in a thumbnail.
_MAX_TRACES = 8
#: Most channels (rows) and time columns of a carpet plot.
_MAX_ROWS = 300
_MAX_COLUMNS = 600
#: Longest window of a carpet plot, in seconds and in samples.
_CARPET_SECONDS = 60.0
_CARPET_SAMPLES = 6000
#: Most points drawn per embedding panel.
_MAX_POINTS = 5000
#: Largest consistency matrix whose values are written in its cells.
_MAX_ANNOTATED = 16
_THUMB_SIZE = (6.0, 2.6)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT = "#1b2a4a"


def png_bytes(fig: Figure, dpi: int = FIGURE_DPI, *, palette: bool = True) -> bytes:
    """Render a figure to PNG bytes with the Agg renderer.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int
        Resolution.
    palette : bool
        Store the image with a 256-colour palette (about 4 times smaller than RGBA for plots;
        the difference is not visible at report sizes).

    Returns
    -------
    bytes
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    if not palette:
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as img:
        small = img.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def is_png(data: bytes) -> bool:
    """Whether ``data`` starts with the PNG signature."""
    return data[: len(_PNG_SIGNATURE)] == _PNG_SIGNATURE


def data_uri(png: bytes) -> str:
    """Return ``data:image/png;base64,...`` for PNG bytes.

    Raises
    ------
    ValueError
        If ``png`` is not a PNG image.
    """
    if not is_png(png):
        raise ValueError("not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _kind(ds: xr.Dataset) -> str:
    from ..schema import as_str_array

    types = set(as_str_array(ds["ch_type"].values).tolist())
    if types == {"voxel"}:
        return "voxel"
    if types and types <= {"roi", "unit", "parcel"}:
        return "carpet"
    return "traces"


def recording_thumbnail(
    store_or_ds: str | os.PathLike | xr.Dataset,
    *,
    seconds: float = 10.0,
    dpi: int = THUMBNAIL_DPI,
) -> bytes:
    """Draw a small look at a recording and return it as PNG bytes.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A recording store or an opened recording.
    seconds : float
        Length of the trace window (from the start) of time-series recordings. Carpet plots
        show the first 60 s (at most 6,000 samples), voxel stores the mean image of that window.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: stacked traces with event onsets (EEG/MEG/iEEG and other time series), a
        carpet plot (each channel z-scored, channels × time, event onsets on top) for ROIs,
        units and parcels, the mean-image slice and the carpet for voxel stores.

    Raises
    ------
    FileNotFoundError, SchemaError
        If the store is missing or invalid.
    """
    from ..plotting import plot_recording
    from ..schema import as_str_array, recording_label
    from ..store import open_recording

    ds = store_or_ds if isinstance(store_or_ds, xr.Dataset) else open_recording(store_or_ds)
    kind = _kind(ds)
    sfreq = float(ds.attrs["sfreq"])
    start = float(ds["time"].values[0])
    title = f"{recording_label(ds)} · {ds.attrs.get('modality', '?')}"
    # fixed margins (no layout engine): thumbnails are drawn once, which halves their cost
    fig = Figure(figsize=_THUMB_SIZE)
    if kind == "traces":
        from ..data.samples import DATA_CH_TYPES

        types = as_str_array(ds["ch_type"].values)
        names = as_str_array(ds["channel"].values)
        data = np.flatnonzero(np.isin(types, DATA_CH_TYPES))
        picks = data if data.size else np.arange(len(names))
        step = max(1, math.ceil(len(picks) / _MAX_TRACES))
        chosen = [str(n) for n in names[picks[::step][:_MAX_TRACES]]]
        ax = fig.add_axes((0.14, 0.2, 0.83, 0.62))
        plot_recording(ds, start=start, duration=seconds, channels=chosen, ax=ax)
        ax.set_title("", loc="left")
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        for text in list(ax.texts):
            if text.get_transform() is ax.transAxes:  # the row scale
                text.set_fontsize(7)
            else:  # event labels overlap at this size: their onsets stay marked
                text.remove()
        fig.suptitle(f"{title} · {len(chosen)} of {len(names)} channels", fontsize=9, x=0.01,
                     y=0.99, ha="left", va="top")  # fmt: skip
        return png_bytes(_few_ticks(fig), dpi)
    n_times = int(ds.sizes["time"])
    stop = min(n_times, _CARPET_SAMPLES, max(1, int(round(_CARPET_SECONDS * sfreq))))
    if kind == "voxel":
        img_ax = fig.add_axes((0.06, 0.17, 0.25, 0.62))
        plot_recording(ds, start=start, duration=stop / sfreq, ax=img_ax)
        img_ax.set_title("mean image", fontsize=8, loc="left")
        img_ax.tick_params(labelsize=7)
        img_ax.xaxis.label.set_fontsize(7)
        img_ax.yaxis.label.set_fontsize(7)
        for cbar_ax in fig.axes[1:]:
            cbar_ax.tick_params(labelsize=6)
            cbar_ax.yaxis.label.set_fontsize(7)
        carpet_ax = fig.add_axes((0.47, 0.17, 0.43, 0.62))
        cbar_ax = fig.add_axes((0.92, 0.17, 0.015, 0.62))
    else:
        carpet_ax = fig.add_axes((0.08, 0.17, 0.82, 0.62))
        cbar_ax = fig.add_axes((0.92, 0.17, 0.015, 0.62))
    _carpet(carpet_ax, cbar_ax, ds, stop)
    fig.suptitle(title, fontsize=9, x=0.01, y=0.99, ha="left", va="top")
    return png_bytes(_few_ticks(fig), dpi)


def _few_ticks(fig: Figure) -> Figure:
    """At most 5 ticks on each numeric axis: ticks are most of a small figure's drawing time."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            locator = axis.get_major_locator()
            if isinstance(locator, MaxNLocator):
                locator.set_params(nbins=4)
            elif not isinstance(locator, FixedLocator):  # channel names stay
                axis.set_major_locator(MaxNLocator(4))
    return fig


def _carpet(ax: Any, cbar_ax: Any, ds: xr.Dataset, stop: int) -> None:
    """Channels × time image of the first ``stop`` samples, each channel z-scored."""
    from ..schema import events_frame

    n_channels = int(ds.sizes["channel"])
    rows = np.unique(np.linspace(0, n_channels - 1, min(n_channels, _MAX_ROWS)).astype(int))
    block = np.asarray(ds["signal"].data[:stop], dtype=np.float64)[:, rows]
    width = max(1, math.ceil(stop / _MAX_COLUMNS))
    usable = (stop // width) * width
    if width > 1 and usable >= width:
        block = block[:usable].reshape(-1, width, len(rows)).mean(axis=1)
    mean = np.nanmean(block, axis=0)
    sd = np.nanstd(block, axis=0)
    z = (block - mean) / np.where(sd > 0, sd, 1.0)
    times = np.asarray(ds["time"].values)
    t0 = float(times[0])
    t1 = float(times[min(stop, len(times)) - 1]) + 1.0 / float(ds.attrs["sfreq"])
    im = ax.imshow(z.T, aspect="auto", cmap="magma", vmin=-2.5, vmax=2.5, origin="lower",
                   extent=(t0, t1, 0, n_channels), interpolation="nearest")  # fmt: skip
    ev = events_frame(ds)
    ev = ev[(ev["onset"] >= t0) & (ev["onset"] <= t1)]
    if len(ev):
        ax.vlines(ev["onset"].to_numpy(), n_channels, n_channels * 1.05, color="#1f77b4",
                  lw=1.2, clip_on=False)  # fmt: skip
    ax.set_ylim(0, n_channels)
    ax.set_xlabel("time (s)", fontsize=7)
    ax.set_ylabel(f"{n_channels} channels", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.set_title("carpet, each channel z-scored", fontsize=8, loc="left", pad=7)
    cbar = ax.figure.colorbar(im, cax=cbar_ax)
    cbar.ax.tick_params(labelsize=6)
    cbar.set_label("z", fontsize=7)


def decoding_chart(rows: Sequence[Mapping[str, Any]], *, dpi: int = FIGURE_DPI) -> bytes:
    """Bar chart of cross-validated scores against their chance levels, one panel per metric.

    Parameters
    ----------
    rows : sequence of mapping
        Each with ``label`` (the bar's name), ``metric``, ``score``, ``std``, ``chance`` and
        ``p_value`` (floats; ``std``, ``chance`` and ``p_value`` may be None or NaN).
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: a bar per row (± std over folds), the chance level as a black line across
        the bar, and the p-value above it; bars with ``p < 0.05`` are drawn dark.

    Raises
    ------
    ValueError
        If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no decoding score to plot")
    metrics = list(dict.fromkeys(str(r["metric"]) for r in rows))
    widest = max(sum(str(r["metric"]) == m for r in rows) for m in metrics)
    width = float(np.clip(1.6 + 0.55 * widest, 3.2, 7.0))
    ncols = min(len(metrics), max(1, int(13 // width)))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(width * ncols, 3.1 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        sel = [r for r in rows if str(r["metric"]) == metric]
        x = np.arange(len(sel))
        score = np.array([_num(r["score"]) for r in sel])
        std = np.array([_num(r.get("std")) for r in sel])
        chance = np.array([_num(r.get("chance")) for r in sel])
        p = np.array([_num(r.get("p_value")) for r in sel])
        colors = [_TEXT if pv < 0.05 else "#9aa5b8" for pv in p]
        ax.bar(x, score, width=0.7, color=colors, yerr=np.nan_to_num(std), capsize=3,
               error_kw={"lw": 0.8, "ecolor": "0.3"})  # fmt: skip
        ok = np.isfinite(chance)
        ax.hlines(chance[ok], x[ok] - 0.42, x[ok] + 0.42, color="#d62728", lw=2.0)
        top = np.nanmax(np.concatenate([score + np.nan_to_num(std), chance, [0.0]]))
        bottom = np.nanmin(np.concatenate([score - np.nan_to_num(std), chance, [0.0]]))
        span = (top - bottom) or 1.0
        for xi, s, sd, pv in zip(x, score, std, p, strict=True):
            if np.isfinite(pv):
                ax.text(xi, s + np.nan_to_num(sd) + 0.02 * span, f"p={pv:.2g}", ha="center",
                        va="bottom", fontsize=7, color="0.2")  # fmt: skip
        ax.set_ylim(bottom - 0.05 * span, top + 0.15 * span)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xticks(x, [_shorten(str(r["label"]), 28) for r in sel], rotation=30, ha="right",
                      fontsize=7)  # fmt: skip
        ax.set_title(f"{metric} (red: chance)", fontsize=9, loc="left")
        ax.tick_params(axis="y", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return png_bytes(fig, dpi)


def embedding_scatter(panels: Sequence[Mapping[str, Any]], *, dpi: int = FIGURE_DPI) -> bytes:
    """Scatter plots of embeddings coloured by behaviour, one panel per recording.

    Parameters
    ----------
    panels : sequence of mapping
        Each with ``title``, ``embedding`` (``(n, d)``), ``color`` (``(n,)`` values, or None to
        colour by sample index) and ``color_name``.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image. Two-dimensional embeddings are drawn as they are, wider ones by their first
        two principal components (the axis labels say which), one-dimensional ones against the
        sample index.

    Raises
    ------
    ValueError
        If ``panels`` is empty.
    """
    from sklearn.decomposition import PCA

    if not panels:
        raise ValueError("no embedding to plot")
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        emb = np.asarray(panel["embedding"], dtype=np.float64)
        emb = emb.reshape(len(emb), -1)
        color = panel.get("color")
        color = np.arange(len(emb), dtype=float) if color is None else np.asarray(color, float)
        name = str(panel.get("color_name") or "sample")
        keep = np.all(np.isfinite(emb), axis=1)
        emb, color = emb[keep], color[keep]
        step = max(1, math.ceil(len(emb) / _MAX_POINTS))
        emb, color = emb[::step], color[::step]
        d = emb.shape[1]
        if d >= 3 and len(emb) >= 3:
            xy = PCA(n_components=2).fit_transform(emb)
            xlabel, ylabel = f"PC 1 of {d} dims", f"PC 2 of {d} dims"
        elif d >= 2:
            xy, xlabel, ylabel = emb[:, :2], "dim 1", "dim 2"
        else:
            idx = np.arange(len(emb), dtype=float) * step
            xy = np.column_stack([idx, emb[:, 0] if d else np.zeros(len(emb))])
            xlabel, ylabel = "sample", "dim 1"
        points = ax.scatter(xy[:, 0], xy[:, 1], c=color, s=3, cmap="viridis", lw=0,
                            rasterized=True)  # fmt: skip
        cbar = fig.colorbar(points, ax=ax, shrink=0.85, pad=0.01)
        cbar.set_label(name, fontsize=7)
        cbar.ax.tick_params(labelsize=6)
        ax.set_title(_shorten(str(panel.get("title", "")), 40), fontsize=8, loc="left")
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return png_bytes(fig, dpi)


def consistency_heatmap(labels: Sequence[str], matrix: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """Heatmap of a consistency matrix (rows: reference, columns: aligned), values in the cells.

    Parameters
    ----------
    labels : sequence of str
        Name of each row and column.
    matrix : array-like, shape (n, n)
        Consistency scores (NaN where undefined, e.g. the diagonal).
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image (values are written in the cells up to 16 × 16).

    Raises
    ------
    ValueError
        If ``matrix`` is not square with one label per row.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(
            f"a consistency matrix must be square with one label per row; got shape {m.shape} "
            f"and {len(labels)} labels"
        )
    n = len(labels)
    side = float(np.clip(1.8 + 0.45 * n, 3.0, 10.0))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    finite = m[np.isfinite(m)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=lo, vmax=hi,
                   interpolation="nearest")  # fmt: skip
    if n <= _MAX_ANNOTATED:
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                text = f"{v:.2f}" if np.isfinite(v) else "–"
                shade = (v - lo) / (hi - lo) if np.isfinite(v) and hi > lo else 0.0
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if shade > 0.6 else "white")  # fmt: skip
    short = [_shorten(str(label), 40) for label in labels]
    ax.set_xticks(range(n), short, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_xlabel("aligned", fontsize=7)
    ax.set_ylabel("reference", fontsize=7)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("consistency", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    return png_bytes(fig, dpi)


#: Line colours of the few-shot strategies (by label order) and of the baselines.
_STRATEGY_COLORS = ("#2456a6", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
_BASELINE_COLORS = ("#555555", "#8c564b", "#bcbd22")


def fewshot_curve(panels: Sequence[Mapping[str, Any]], *, metric: str = "score",
                  x: str = "n_train", xlabel: str = "training samples of the new subject",
                  percent: bool = False, dpi: int = FIGURE_DPI) -> bytes:
    """Few-shot curves: score against the amount of training data, one panel per subject.

    Parameters
    ----------
    panels : sequence of mapping
        Each with ``title`` and ``rows``: mappings with ``label`` (the line: a strategy or a
        baseline), ``kind`` (``"adapt"`` or ``"baseline"``), the ``x`` value, ``score`` and
        ``chance`` (None or NaN where undefined).
    metric : str
        The y-axis label.
    x : str
        The rows' key of the x-axis: ``n_train`` (samples) or e.g. ``fraction`` (of the
        labelled data).
    xlabel : str
        The x-axis label.
    percent : bool
        Write the x ticks as percentages (``0.1`` → ``10%``).
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: per panel a line with markers per label against ``x`` on a log axis
        (strategies solid, baselines dashed-dotted and grey-brown), and the mean chance level
        at each ``x`` as a dashed black line.

    Raises
    ------
    ValueError
        If there is no panel or no finite score.
    """
    if not panels or not any(np.isfinite(_num(r.get("score"))) for p in panels
                             for r in p["rows"]):
        raise ValueError("no few-shot score to plot")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labels = list(dict.fromkeys(str(r["label"]) for p in panels for r in p["rows"]))
    baselines = [lab for lab in labels if any(
        str(r["label"]) == lab and r.get("kind") == "baseline" for p in panels for r in p["rows"])]
    strategies = [lab for lab in labels if lab not in baselines]
    style = {lab: {"color": _STRATEGY_COLORS[i % len(_STRATEGY_COLORS)], "ls": "-",
                   "marker": "o"} for i, lab in enumerate(strategies)}
    style.update({lab: {"color": _BASELINE_COLORS[i % len(_BASELINE_COLORS)], "ls": "-.",
                        "marker": "s"} for i, lab in enumerate(baselines)})
    for ax, panel in zip(axes, panels, strict=False):
        rows = panel["rows"]
        for lab in strategies + baselines:
            pts = sorted((_num(r[x]), _num(r.get("score"))) for r in rows
                         if str(r["label"]) == lab)
            pts = [(n, s) for n, s in pts if np.isfinite(n) and n > 0 and np.isfinite(s)]
            if pts:
                n, s = np.array(pts).T
                ax.plot(n, s, lw=1.4, ms=4, label=lab, **style[lab])
        chance: dict[float, list[float]] = {}
        for r in rows:
            n, c = _num(r[x]), _num(r.get("chance"))
            if np.isfinite(n) and n > 0 and np.isfinite(c):
                chance.setdefault(n, []).append(c)
        if chance:
            n = np.array(sorted(chance))
            ax.plot(n, [float(np.mean(chance[v])) for v in n], color="black", ls="--", lw=1.0,
                    label="chance")
        ax.set_xscale("log")
        ticks = sorted({_num(r[x]) for r in rows if _num(r[x]) > 0})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(
            (lambda v, _: f"{100 * v:g}%") if percent else (lambda v, _: f"{v:g}")))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(metric, fontsize=7)
        ax.set_title(_shorten(str(panel.get("title", "")), 40), fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
        ax.grid(True, which="both", lw=0.3, color="0.85")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=6, frameon=False, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return png_bytes(fig, dpi)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and finite values of ``key`` in per-epoch records (epoch: its index if absent)."""
    pts = [(_num(r.get("epoch", i)), _num(r.get(key))) for i, r in enumerate(rows)]
    pts = [(e, v) for e, v in pts if np.isfinite(e) and np.isfinite(v)]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts \
        else (np.zeros(0), np.zeros(0))


def codebook_curves(history: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    codebook_size: int | None = None, dpi: int = FIGURE_DPI) -> bytes:
    """Codebook health during pretraining, per epoch, in four panels.

    Parameters
    ----------
    history : mapping
        ``tokenizer``: per-epoch records with ``recon_loss``, ``val_loss``, ``perplexity``,
        ``dead_fraction`` and ``codes_used``; ``masked``: records with ``mask_accuracy`` and
        ``val_mask_accuracy`` (any key may be missing or None).
    codebook_size : int, optional
        Codes in the codebook: the perplexity's ceiling (dotted) and the denominator of the
        used share.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: the tokenizer's reconstruction loss (training and validation), the
        perplexity of the epoch's code assignments, the dead-code share and the share of codes
        used, and the masked-code model's accuracy (training and validation).

    Raises
    ------
    ValueError
        If no record has a finite value to draw.
    """
    tok = list(history.get("tokenizer") or [])
    masked = list(history.get("masked") or [])
    share = [("dead_fraction", "dead")] + ([("codes_used", "used")] if codebook_size else [])
    panels = [
        ("reconstruction loss", tok, [("recon_loss", "training"), ("val_loss", "validation")]),
        ("perplexity of the codes", tok, [("perplexity", "training epoch")]),
        ("share of the codebook", tok, share),
        ("masked-code accuracy", masked, [("mask_accuracy", "training"),
                                          ("val_mask_accuracy", "validation")]),
    ]
    if not any(len(_series(rows, key)[0]) for _, rows, keys in panels for key, _ in keys):
        raise ValueError("no codebook history to plot")
    fig = Figure(figsize=(13.0, 2.9), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (title, rows, keys) in zip(axes, panels, strict=True):
        for i, (key, label) in enumerate(keys):
            x, y = _series(rows, key)
            if key == "codes_used" and codebook_size:
                y = y / float(codebook_size)
            if len(x):
                ax.plot(x, y, marker="o", ms=3, lw=1.4, label=label,
                        color=_STRATEGY_COLORS[i % len(_STRATEGY_COLORS)])
        if title.startswith("perplexity") and codebook_size:
            ax.axhline(float(codebook_size), color="0.4", ls=":", lw=1.0,
                       label=f"{codebook_size} codes")
        if title.startswith("share"):
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=6)
        ax.grid(True, lw=0.3, color="0.85")
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, frameon=False, loc="best")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", fontsize=8,
                    color="0.5", transform=ax.transAxes)
    return png_bytes(fig, dpi)


#: Labels of the per-epoch NLL keys (others are drawn under their own name).
_NLL_LABELS = {"train_nll": "training", "val_nll": "validation"}


def nll_curve(history: Sequence[Mapping[str, Any]], *,
              references: Mapping[str, Any] | None = None, dpi: int = FIGURE_DPI) -> bytes:
    """Next-token negative log-likelihood per epoch of a spike-token pretraining.

    Parameters
    ----------
    history : sequence of mapping
        Per-epoch records with ``epoch`` and NLL values (nats per spike): every key ending in
        ``nll`` is a line (``train_nll``: training, ``val_nll``: validation); a missing or
        None value leaves a gap.
    references : mapping of str to float, optional
        Levels to draw as dotted horizontal lines, by label (e.g. the held-out NLL of a
        rate-only baseline); None or non-finite values are skipped.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: one line with markers per NLL key against the epoch, the reference
        levels dotted.

    Raises
    ------
    ValueError
        If no record has a finite NLL value.
    """
    rows = list(history)
    keys = list(dict.fromkeys(k for r in rows if isinstance(r, Mapping) for k in r
                              if str(k).endswith("nll")))
    keys.sort(key=lambda k: (list(_NLL_LABELS).index(k) if k in _NLL_LABELS else 99, k))
    series = [(k, *_series(rows, k)) for k in keys]
    series = [(k, x, y) for k, x, y in series if len(x)]
    if not series:
        raise ValueError("no next-token NLL in the history to plot")
    fig = Figure(figsize=(5.6, 3.1), layout="constrained")
    ax = fig.subplots()
    for i, (key, x, y) in enumerate(series):
        ax.plot(x, y, marker="o", ms=3, lw=1.4, label=_NLL_LABELS.get(key, key),
                color=_STRATEGY_COLORS[i % len(_STRATEGY_COLORS)])
    for j, (label, value) in enumerate((references or {}).items()):
        v = _num(value)
        if np.isfinite(v):
            ax.axhline(v, color=_BASELINE_COLORS[j % len(_BASELINE_COLORS)], ls=":", lw=1.2,
                       label=str(label))
    ax.set_xlabel("epoch", fontsize=7)
    ax.set_ylabel("NLL (nats per spike)", fontsize=7)
    ax.set_title("next-token NLL (lower is better)", fontsize=9, loc="left")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=6)
    ax.grid(True, lw=0.3, color="0.85")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=6, frameon=False, loc="best")
    return png_bytes(fig, dpi)


def rate_scatter(real: Any, generated: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """Per-unit firing rates of generated spike trains against the real ones.

    Parameters
    ----------
    real, generated : array-like, shape (n_units,)
        Rates (Hz) of each unit in the real and in the generated trains.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image: one point per unit (generated against real) and the identity line,
        log-log when every rate is positive, linear otherwise.

    Raises
    ------
    ValueError
        If the two have different lengths or no unit has finite rates.
    """
    r = np.asarray(real, dtype=np.float64).reshape(-1)
    g = np.asarray(generated, dtype=np.float64).reshape(-1)
    if r.shape != g.shape:
        raise ValueError(f"{len(r)} real rates for {len(g)} generated rates (one per unit each)")
    ok = np.isfinite(r) & np.isfinite(g)
    if not ok.any():
        raise ValueError("no unit with finite real and generated rates")
    r, g = r[ok], g[ok]
    fig = Figure(figsize=(3.4, 3.1), layout="constrained")
    ax = fig.subplots()
    lo, hi = float(min(r.min(), g.min())), float(max(r.max(), g.max()))
    log = lo > 0
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    pad = (hi / lo) ** 0.05 if log and hi > lo else 1.0
    span = (lo / pad, hi * pad) if log else (lo - 0.05 * (hi - lo or 1.0),
                                            hi + 0.05 * (hi - lo or 1.0))
    ax.plot(span, span, color="0.5", ls="--", lw=1.0, label="identity")
    ax.scatter(r, g, s=12, color=_STRATEGY_COLORS[0], lw=0, label=f"{len(r)} units")
    ax.set_xlim(*span)
    ax.set_ylim(*span)
    ax.set_xlabel("real rate (Hz)", fontsize=7)
    ax.set_ylabel("generated rate (Hz)", fontsize=7)
    ax.set_title("per-unit firing rates", fontsize=9, loc="left")
    ax.tick_params(labelsize=6)
    ax.grid(True, which="both", lw=0.3, color="0.85")
    ax.legend(fontsize=6, frameon=False, loc="upper left")
    return png_bytes(fig, dpi)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def image_grid(rows: Mapping[str, Any], *, column_titles: Sequence[str] | None = None,
               dpi: int = FIGURE_DPI) -> bytes:
    """Rows of images, one column per trial: seen images, reconstructions, baselines.

    Parameters
    ----------
    rows : mapping of str to array
        Row label → images ``(n, H, W, 3)`` (or ``(n, H, W)``) in [0, 1]; every row holds the
        same number of images.
    column_titles : sequence of str, optional
        A title above each column (e.g. the image id).
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    arrays = {k: np.clip(np.asarray(v, dtype=float), 0.0, 1.0) for k, v in rows.items()}
    if not arrays:
        raise ValueError("image_grid needs at least one row")
    counts = {len(v) for v in arrays.values()}
    if len(counts) != 1 or not counts.pop():
        raise ValueError("every row of an image grid needs the same, non-zero number of images")
    n_rows, n_cols = len(arrays), len(next(iter(arrays.values())))
    fig = Figure(figsize=(0.9 * n_cols + 1.3, 0.95 * n_rows + 0.3))
    for r, (label, images) in enumerate(arrays.items()):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            image = images[c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(_shorten(label, 18), fontsize=7)
            if r == 0 and column_titles is not None:
                ax.set_title(_shorten(str(column_titles[c]), 10), fontsize=6)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.93 if column_titles else 0.99,
                        bottom=0.01, wspace=0.05, hspace=0.08)
    return png_bytes(fig, dpi, palette=False)
