"""A quick look at a recording: plot_recording and ``neurodecode plot`` on real stores."""

from __future__ import annotations

import matplotlib.image
import mne
import nibabel as nib
import numpy as np
import pytest
import tifffile
from matplotlib.colors import to_rgba
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.ingest.calcium import read_tiff_movie
from neurodecode.ingest.eeg import read_mne
from neurodecode.ingest.fmri import read_nifti
from neurodecode.plotting import plot_recording
from neurodecode.store import open_recording, write_recording

runner = CliRunner()
EEG_NAMES = ["Fp1", "Fz", "Cz", "Pz", "O1", "EOG1"]


def _assert_png(path, size):
    """The file is a PNG of ``size`` (width, height) pixels with a drawing on it."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.shape[1::-1] == size
    ink = (img[..., :3] < 0.9).any(axis=2).mean()
    assert 0.01 < ink < 0.9, f"{path} looks blank or flooded ({ink:.1%} drawn)"


@pytest.fixture(scope="module")
def eeg_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("eegplot")
    rng = np.random.default_rng(0)
    sfreq = 250.0
    t = np.arange(int(30 * sfreq)) / sfreq
    data = 1e-5 * rng.standard_normal((len(EEG_NAMES), t.size))
    data[:5] += 2e-5 * np.sin(2 * np.pi * 10 * t)  # alpha on the EEG channels
    data[5] *= 20  # an EOG channel ten times larger
    info = mne.create_info(EEG_NAMES, sfreq, ["eeg"] * 5 + ["eog"])
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations([2.0, 4.5, 12.0, 25.0], [1.0, 0.0, 0.0, 2.0],
                                        ["go", "stop", "go", "rest"]))
    fif = root / "sub-01_task-gonogo_raw.fif"
    raw.save(fif, verbose="error")
    store = root / "eeg.zarr"
    write_recording(read_mne(fif), store)
    return store


def test_eeg_traces_with_events(eeg_store, tmp_path):
    fig = plot_recording(eeg_store, start=1.0, duration=10.0)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == EEG_NAMES
    traces = ax.lines[: len(EEG_NAMES)]
    x = traces[0].get_xdata()
    assert x[0] == pytest.approx(1.0) and x[-1] == pytest.approx(11.0 - 1 / 250)
    # per-type scaling: the large EOG channel fills its row like the EEG channels do
    spans = [np.ptp(line.get_ydata()) for line in traces]
    assert max(spans) / min(spans) < 3
    labels = [t.get_text().strip() for t in ax.texts]
    assert {"go", "stop"} <= set(labels) and "rest" not in labels  # rest is at 25 s
    assert any("eeg: 1 row =" in t and "µV" in t for t in labels)
    assert any("eog: 1 row =" in t for t in labels)
    png = tmp_path / "eeg.png"
    fig.savefig(png, dpi=50)
    w, h = fig.get_size_inches() * 50
    _assert_png(png, (round(w), round(h)))


def test_channels_and_window_are_checked(eeg_store):
    fig = plot_recording(eeg_store, channels=["Cz", "eog"], duration=None)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Cz", "EOG1"]
    assert ax.lines[0].get_xdata()[-1] == pytest.approx(30.0 - 1 / 250)
    with pytest.raises(ValueError, match=r"eeg\.zarr: picks \['C9'\]"):
        plot_recording(eeg_store, channels=["C9"])
    with pytest.raises(ValueError, match=r"eeg\.zarr: the window from 40 s .* holds no sample"):
        plot_recording(eeg_store, start=40.0)


def test_calcium_mean_frame_with_roi_outlines(tmp_path):
    rng = np.random.default_rng(1)
    n, h, w = 120, 24, 32
    movie = (100 + 5 * rng.standard_normal((n, h, w))).astype(np.float32)
    rois = np.zeros((3, h, w), dtype=bool)
    for i, (y, x) in enumerate([(5, 6), (12, 20), (18, 9)]):
        rois[i, y - 2 : y + 3, x - 2 : x + 3] = True
        movie[:, rois[i]] += 40 * (np.sin(np.arange(n) / (3 + i)) > 0.5)[:, None]
    tif = tmp_path / "movie.tif"
    tifffile.imwrite(tif, movie, imagej=True, metadata={"axes": "TYX", "finterval": 0.1})
    store = tmp_path / "ca.zarr"
    write_recording(read_tiff_movie(tif, rois=rois), store)
    fig = plot_recording(store, start=2.0, duration=5.0)
    img_ax, trace_ax = fig.axes
    (image,) = img_ax.images
    np.testing.assert_allclose(image.get_array(), movie[20:70].mean(axis=0), rtol=1e-5)
    outlines = [c for c in img_ax.collections if isinstance(c, ContourSet)]
    assert len(outlines) == 3
    assert sorted(t.get_text() for t in img_ax.texts) == ["0", "1", "2"]
    assert [t.get_text() for t in trace_ax.get_yticklabels()] == ["roi000", "roi001", "roi002"]
    # outlines and traces share their colours
    assert [tuple(c.get_edgecolor()[0]) for c in outlines] == [
        to_rgba(line.get_color()) for line in trace_ax.lines[:3]
    ]
    png = tmp_path / "ca.png"
    fig.savefig(png, dpi=40)
    w_px, h_px = fig.get_size_inches() * 40
    _assert_png(png, (round(w_px), round(h_px)))


def test_voxel_store_mean_slice(tmp_path):
    rng = np.random.default_rng(2)
    shape = (10, 8, 3)
    data = (500 + 20 * rng.standard_normal((*shape, 20))).astype(np.float32)
    data[:2] = 0.0  # outside the brain: constant, left out by the default mask
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((3.0, 3.0, 4.0, 2.0))
    nii = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(img, nii)
    store = tmp_path / "bold.zarr"
    write_recording(read_nifti(nii), store)
    fig = plot_recording(store, duration=20.0)  # volumes 0..9
    img_ax, trace_ax = fig.axes[:2]
    expected = data[..., :10].mean(axis=3)[:, :, 0].T.astype(np.float64)
    expected[:, :2] = np.nan
    shown = np.ma.filled(img_ax.images[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(shown, expected, rtol=1e-5)
    assert len(trace_ax.lines[0].get_xdata()) == 10
    png = tmp_path / "bold.png"
    fig.savefig(png, dpi=40)
    _assert_png(png, tuple(round(v) for v in fig.get_size_inches() * 40))


def test_cli_plot_writes_png_atomically(eeg_store, tmp_path):
    out = tmp_path / "figs" / "look.png"
    result = runner.invoke(app, ["plot", str(eeg_store), "--out", str(out), "--start", "2",
                                 "--duration", "5", "--channels", "Fz,Cz", "--dpi", "40"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["look.png"]  # no temporary file left
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 100 and (img[..., :3] < 0.9).any(axis=2).mean() > 0.01


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--out", "{tmp}/a.png"], "no recording store there"),
        (["{store}", "--out", "{tmp}/a.xyz"], "unknown image format '.xyz'"),
        (["{store}", "--out", "{tmp}/file.txt/a.png"], "is not a folder"),
        (["{store}", "--out", "{tmp}"], "is a folder, not a file"),
        (["{store}", "--out", "{tmp}/a.png", "--channels", "nope"], "picks ['nope']"),
        (["{store}", "--out", "{tmp}/a.png", "--start", "99"], "holds no sample"),
    ],
)
def test_cli_plot_user_errors(eeg_store, tmp_path, args, message):
    (tmp_path / "file.txt").write_text("not a folder")
    args = [a.format(missing=tmp_path / "none.zarr", store=eeg_store, tmp=tmp_path) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["plot", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_plot_into_given_axes(eeg_store):
    fig = Figure()
    ax = fig.subplots()
    assert plot_recording(open_recording(eeg_store), duration=1.0, ax=ax) is fig
    assert fig.axes == [ax]
    assert len(ax.lines[0].get_xdata()) == 250
    assert "6 channels" in ax.get_title(loc="left")
