"""A quick look at a recording with matplotlib: traces with events, or the image behind them.

:func:`plot_recording` reads only the requested time window of a store and draws

* time series (EEG/MEG/iEEG, parcels, ROIs, units): stacked traces, scaled per channel type (the
  size of one row is written beside the traces), with event onsets marked and labelled;
* calcium stores that keep ``movie`` and ``roi_mask``: the mean frame of the window with the ROI
  outlines, beside the ROI traces (in matching colours);
* voxel stores (fMRI): a slice of the window's mean image on the voxel grid, beside the mean
  signal of the voxels with the events.

Figures are built as :class:`matplotlib.figure.Figure` objects without pyplot, so no display is
needed: saving goes through the Agg renderer, and notebooks still show the returned figure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .export import _picks, _recording, _voxel_grid
from .schema import as_str_array, events_frame, recording_label

__all__ = ["plot_recording"]

#: Most samples drawn per trace (longer windows are thinned by taking every n-th sample).
_MAX_POINTS = 4000
#: Most channels drawn when ``channels`` is not given.
_MAX_CHANNELS = 64
#: Most event labels written above the traces (beyond it the onsets are only marked).
_MAX_EVENT_LABELS = 30
_SI_PREFIXES = ((1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""))
_SI_UNITS = ("V", "T", "T/m")
_TRACE_COLOR = "#1b2a4a"
#: Rows a typical channel's 0.5–99.5 percentile range fills.
_ROW_FILL = 0.85


def plot_recording(
    store_or_ds: str | os.PathLike | xr.Dataset,
    *,
    start: float = 0.0,
    duration: float | None = 10.0,
    channels: str | Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot a time window of a recording.

    Parameters
    ----------
    store_or_ds : path-like or xarray.Dataset
        A recording store or an opened recording.
    start : float
        Start of the window, in seconds on the recording's time axis.
    duration : float or None
        Length of the window in seconds; None for the rest of the recording.
    channels : str or sequence of str, optional
        Channels to draw, by name or by channel type; by default every channel (the first 64
        when there are more; the title says how many are shown).
    ax : matplotlib.axes.Axes, optional
        Draw into this axes only: the traces, or for voxel stores the mean-image slice (the
        frame and ROI outlines of calcium stores are then left out).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (``ax.figure`` when ``ax`` is given). Save it with ``fig.savefig(path)``.

    Raises
    ------
    FileNotFoundError, SchemaError
        If the store is missing or invalid.
    ValueError
        If the window holds no sample or ``channels`` names none of the recording's.
    """
    ds, where = _recording(store_or_ds)
    t = np.asarray(ds["time"].values)
    sfreq = float(ds.attrs["sfreq"])
    stop = np.inf if duration is None else start + float(duration)
    i0, i1 = int(np.searchsorted(t, start)), int(np.searchsorted(t, stop))
    if duration is not None and duration <= 0 or i1 <= i0:
        end = t[-1] + 1 / sfreq if len(t) else 0.0
        raise ValueError(f"{where}: the window from {start:g} s for {duration} s holds no sample "
                         f"(the recording spans {t[0] if len(t) else 0:g}–{end:g} s)")
    picks = _picks(ds, channels, where)
    types = as_str_array(ds["ch_type"].values)
    title = (f"{recording_label(ds)} · {ds.attrs.get('modality', '?')} · "
             f"{t[i0]:.2f}–{t[i1 - 1] + 1 / sfreq:.2f} s")
    kind = ("voxel" if set(types.tolist()) == {"voxel"} else
            "calcium" if {"movie", "roi_mask"} <= set(ds.data_vars) else "traces")
    if kind == "voxel":
        return _plot_voxels(ds, where, i0, i1, picks, ax, title)
    n_total = len(picks)
    if channels is None:
        picks = picks[:_MAX_CHANNELS]
    shown = f"{len(picks)} of {n_total} channels" if len(picks) < n_total else \
        f"{len(picks)} channels"
    title = f"{title} · {shown}"
    if ax is not None:
        _traces(ax, ds, i0, i1, picks)
        ax.set_title(title, fontsize=10, loc="left", pad=16)
        return ax.figure
    height = float(np.clip(0.22 * len(picks) + 1.8, 3.5, 18.0))
    if kind == "calcium":
        fig = Figure(figsize=(15, max(height, 5.5)), layout="constrained")
        img_ax, trace_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.3]})
        colors = _channel_colors(len(picks))
        _mean_frame(img_ax, ds, i0, i1, picks, colors)
        _traces(trace_ax, ds, i0, i1, picks, colors=colors)
        trace_ax.set_title("ΔF/F traces" if "dF/F" in set(ds["units"].values[picks].tolist())
                           else "ROI traces", fontsize=10, loc="left", pad=16)
    else:
        fig = Figure(figsize=(13, height), layout="constrained")
        _traces(fig.subplots(), ds, i0, i1, picks)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return fig


def _window(ds: xr.Dataset, i0: int, i1: int, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times and samples (time, channel) of the window, thinned to at most ``_MAX_POINTS``."""
    step = max(1, (i1 - i0) // _MAX_POINTS)
    times = np.asarray(ds["time"].values[i0:i1:step])
    order = np.argsort(picks)  # read with sorted indices, then restore the asked order
    data = np.asarray(ds["signal"].data[i0:i1:step, picks[order]], dtype=np.float64)
    out = np.empty_like(data)
    out[:, order] = data
    return times, out


def _si(value: float, unit: str) -> str:
    """``1.2e-4, "V"`` → ``"120 µV"``; other units are written as they are."""
    if unit in _SI_UNITS and value > 0:
        factor, prefix = next(((f, p) for f, p in reversed(_SI_PREFIXES) if value >= f),
                              _SI_PREFIXES[0])
        return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def _channel_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _traces(ax: Axes, ds: xr.Dataset, i0: int, i1: int, picks: np.ndarray,
            colors: list[Any] | None = None) -> None:
    """Stacked traces, one row per channel, scaled per channel type, with the events."""
    times, data = _window(ds, i0, i1, picks)
    names = as_str_array(ds["channel"].values[picks])
    types = as_str_array(ds["ch_type"].values[picks])
    units = as_str_array(ds["units"].values[picks])
    data = data - np.nanmedian(data, axis=0)
    spread = np.nanpercentile(data, 99.5, axis=0) - np.nanpercentile(data, 0.5, axis=0)
    scale_lines = []
    palette = _channel_colors(20)
    type_colors = {}
    for k, kind in enumerate(dict.fromkeys(types.tolist())):
        cols = types == kind
        valid = spread[cols][spread[cols] > 0]
        scale = float(np.median(valid)) if valid.size else 1.0
        data[:, cols] *= _ROW_FILL / scale
        type_colors[kind] = _TRACE_COLOR if k == 0 else palette[(2 * k) % 20]
        scale_lines.append(f"{kind}: 1 row = {_si(scale / _ROW_FILL, str(units[cols][0]))}")
    rows = np.arange(len(picks))
    for i in rows:
        ax.plot(times, data[:, i] - i, lw=0.6,
                color=colors[i] if colors is not None else type_colors[types[i]])
    ax.set_yticks(-rows, names, fontsize=max(6.0, min(9.0, 380 / max(len(picks), 1))))
    top = float(np.nanmax(data[:, 0])) if len(picks) else 0.0
    ax.set_ylim(-len(picks) + 0.2, float(np.clip(top + 0.15, 1.0, 2.0)))
    ax.set_xlim(times[0], times[-1] if len(times) > 1 else times[0] + 1)
    ax.set_xlabel("time (s)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.text(1.0, -0.04 if len(picks) > 8 else -0.1, "   ".join(scale_lines),
            transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.3")
    _events(ax, ds, times[0], times[-1])


def _events(ax: Axes, ds: xr.Dataset, t0: float, t1: float) -> None:
    """Mark event onsets (and shade durations) in ``[t0, t1]``, labelled above the axes."""
    from matplotlib import colormaps

    ev = events_frame(ds)
    ev = ev[(ev["onset"] <= t1) & (ev["onset"] + ev["duration"] >= t0)]
    if ev.empty:
        return
    cmap = colormaps["tab10"]
    labels = sorted(set(events_frame(ds)["label"]))
    color = {lab: cmap((labels.index(lab) + 1) % 10) for lab in labels}
    write = len(ev) <= _MAX_EVENT_LABELS
    for onset, dur, label in zip(ev["onset"], ev["duration"], ev["label"], strict=True):
        if dur > 0:
            ax.axvspan(max(onset, t0), min(onset + dur, t1), color=color[label], alpha=0.08,
                       lw=0)
        if t0 <= onset <= t1:
            ax.axvline(onset, color=color[label], lw=1.0, alpha=0.9)
            if write:
                ax.text(onset, 1.0, f" {label}", transform=ax.get_xaxis_transform(),
                        color=color[label], fontsize=8, ha="left", va="bottom", clip_on=False)


def _mean_frame(ax: Axes, ds: xr.Dataset, i0: int, i1: int, picks: np.ndarray,
                colors: list[Any]) -> None:
    """The mean movie frame of the window with the outlines of the ROIs drawn as traces."""
    frame = np.asarray(ds["movie"].data[i0:i1], dtype=np.float64).mean(axis=0)
    lo, hi = np.nanpercentile(frame, [1, 99.5])
    ax.imshow(frame, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest")
    masks = np.asarray(ds["roi_mask"].values[picks], dtype=np.float64)
    names = as_str_array(ds["channel"].values[picks])
    for i, mask in enumerate(masks):
        if not (mask > 0).any():
            continue
        ax.contour(mask > 0, levels=[0.5], colors=[colors[i]], linewidths=1.0)
        ys, xs = np.nonzero(mask > 0)
        ax.text(xs.mean(), ys.min() - 0.6, re.sub(r"^roi0*(?=\d)", "", names[i]),
                color=colors[i], fontsize=7, ha="center", va="bottom")
    ax.set_title(f"mean frame, {len(picks)} ROI outlines", fontsize=10, loc="left")
    ax.set_xticks([])
    ax.set_yticks([])


def _plot_voxels(ds: xr.Dataset, where: str, i0: int, i1: int, picks: np.ndarray,
                 ax: Axes | None, title: str) -> Figure:
    """Mean-image slice (the slice with the most voxels) beside the mean voxel signal."""
    ijk, affine, shape = _voxel_grid(ds, where)
    values = np.asarray(ds["signal"].data[i0:i1], dtype=np.float64)
    grid = np.full(shape, np.nan)
    grid[tuple(ijk.T)] = values.mean(axis=0)
    k = int(np.bincount(ijk[:, 2], minlength=shape[2]).argmax())
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if ax is None:
        fig = Figure(figsize=(14, 4.8), layout="constrained")
        img_ax, trace_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.8]})
        fig.suptitle(f"{title} · {len(ijk)} voxels", fontsize=11, x=0.01, ha="left")
    else:
        fig, img_ax, trace_ax = ax.figure, ax, None
    sl = grid[:, :, k].T
    finite = sl[np.isfinite(sl)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    im = img_ax.imshow(sl, origin="lower", cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                       aspect=float(zooms[1] / zooms[0]), interpolation="nearest")
    img_ax.set_facecolor("#20304f")
    img_ax.set_title(f"mean of volumes {i0}–{i1 - 1}, slice k={k}", fontsize=10, loc="left")
    img_ax.set_xlabel("i (voxel)")
    img_ax.set_ylabel("j (voxel)")
    fig.colorbar(im, ax=img_ax, shrink=0.8, label=str(ds["units"].values[0]))
    img_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    img_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if trace_ax is not None:
        times = np.asarray(ds["time"].values[i0:i1])
        sel = values[:, np.isin(np.arange(values.shape[1]), picks)]
        base = sel.mean(axis=0)
        if (base > 0).all():  # raw BOLD: percent signal change of each voxel
            change, what = 100.0 * (sel / base - 1.0), "signal change (%)"
        else:  # cleaned or standardised data: each voxel's mean removed
            change, what = sel - base, f"signal − voxel mean ({ds['units'].values[0]})"
        mean, sd = change.mean(axis=1), change.std(axis=1)
        trace_ax.fill_between(times, mean - sd, mean + sd, color=_TRACE_COLOR, alpha=0.12, lw=0,
                              label="± sd over voxels")
        trace_ax.plot(times, mean, color=_TRACE_COLOR, lw=1.2, label="mean over voxels",
                      marker="." if len(times) < 60 else None)
        trace_ax.set_xlabel("time (s)")
        trace_ax.set_ylabel(what)
        trace_ax.set_title(f"{sel.shape[1]} voxels, each relative to its mean over the window",
                           fontsize=10, loc="left", pad=16)
        trace_ax.legend(loc="lower right", fontsize=8, frameon=False)
        trace_ax.spines[["top", "right"]].set_visible(False)
        if len(times) > 1:
            trace_ax.set_xlim(times[0], times[-1])
        _events(trace_ax, ds, times[0], times[-1])
    return fig
