"""Quiet by default: MNE at "warning" inside neurodecode calls, progress bars, training reports."""

from __future__ import annotations

import io
import logging
import re

import mne
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.base import clone

from neurodecode.data.splits import LeaveOneGroupOut
from neurodecode.evaluate import baselines as bl
from neurodecode.evaluate import cross_validate, permutation_test
from neurodecode.models.contrastive import ContrastiveEmbedding
from neurodecode.verbosity import mne_log_level, mne_verbose, progress

# MNE's INFO lines of a CSP fit (covariance and rank estimates).
MNE_INFO = re.compile(r"Computing rank from data|Estimating covariance|Reducing data rank")


@pytest.fixture(autouse=True)
def mne_default_level():
    """Each test starts from MNE's default level (info), whatever earlier tests left."""
    logger = logging.getLogger("mne")
    before = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(before)


@pytest.fixture(scope="module")
def eeg_epochs(tmp_path_factory):
    """Motor-imagery-like epochs of 4 runs: a raw FIF written by MNE, epoched by MNE."""
    path = tmp_path_factory.mktemp("eeg") / "sub-01_task-mi_raw.fif"
    rng = np.random.default_rng(0)
    sfreq, n_runs, n_trials, n_ch = 100.0, 4, 10, 4
    data = rng.standard_normal((n_ch, int(n_runs * n_trials * 2 * sfreq))) * 1e-6
    onsets = np.arange(n_runs * n_trials) * int(2 * sfreq) + 10
    y = np.concatenate([rng.permutation(np.repeat([0, 1], n_trials // 2)) for _ in range(n_runs)])
    for onset, label in zip(onsets, y, strict=True):
        data[label * 2, onset:onset + 100] *= 4  # class 1 has power on channel 2, class 0 on 0
    info = mne.create_info([f"C{i}" for i in range(n_ch)], sfreq, "eeg")
    mne.io.RawArray(data, info, verbose=False).save(path, verbose=False)
    raw = mne.io.read_raw_fif(path, preload=True, verbose=False)
    events = np.column_stack([onsets, np.zeros_like(onsets), y + 1])
    epochs = mne.Epochs(raw, events, {"a": 1, "b": 2}, tmin=0.0, tmax=0.99, baseline=None,
                        preload=True, verbose=False)
    samples = pd.DataFrame({
        "recording": np.repeat([f"sub-01_run-{r}" for r in range(n_runs)], n_trials),
        "subject": "01", "session": "01", "run": np.repeat(np.arange(n_runs), n_trials),
        "start": onsets / sfreq, "stop": onsets / sfreq + 1.0,
    })
    return epochs.get_data(copy=True), epochs.events[:, 2] - 1, samples


@pytest.fixture
def mne_records(caplog):
    """Records of MNE's logger (which does not propagate to the root logger caplog watches)."""
    logger = logging.getLogger("mne")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)


def info_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mne" and r.levelno == logging.INFO]


# --------------------------------------------------------------------------- MNE's level


def test_cross_validate_csp_lda_is_quiet_unless_asked(eeg_epochs, capfd, mne_records,
                                                      monkeypatch):
    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)
    X, y, samples = eeg_epochs
    before = logging.getLogger("mne").level
    quiet = cross_validate(bl.csp_lda(2), X, y, samples, LeaveOneGroupOut(), n_permutations=2)
    out, err = capfd.readouterr()
    assert not MNE_INFO.search(out + err), (out + err)[:500]
    assert info_records(mne_records) == []
    assert logging.getLogger("mne").level == before  # MNE's level is restored

    loud = cross_validate(bl.csp_lda(2), X, y, samples, LeaveOneGroupOut(), n_permutations=2,
                          verbose="info")
    out, _ = capfd.readouterr()
    # 4 folds x 3 runs, each CSP fit estimating two class covariances
    assert len(re.findall(r"Estimating class=\d covariance", out)) == 24
    assert len(info_records(mne_records)) > 24
    pd.testing.assert_frame_equal(quiet.folds, loud.folds)
    assert quiet.folds.loc[quiet.folds["metric"] == "balanced_accuracy", "score"].min() > 0.8


def test_parallel_workers_follow_the_level_of_the_call(eeg_epochs, capfd, monkeypatch):
    from joblib.externals.loky import get_reusable_executor

    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)
    # Workers left by an earlier test write to that test's captured stdout: start fresh ones.
    get_reusable_executor().shutdown(wait=True)
    X, y, samples = eeg_epochs
    for verbose, expected in ((None, 0), (True, 24)):
        cross_validate(bl.csp_lda(2), X, y, samples, LeaveOneGroupOut(), n_permutations=2,
                       n_jobs=2, verbose=verbose)
        out, _ = capfd.readouterr()
        assert len(re.findall(r"Estimating class=\d covariance", out)) == expected


def test_baseline_verbose_applies_wherever_the_pipeline_is_fitted(eeg_epochs, capfd,
                                                                  monkeypatch):
    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)
    X, y, _ = eeg_epochs
    quiet = bl.csp_lda(2).fit(X, y)
    out, _ = capfd.readouterr()
    assert not MNE_INFO.search(out)
    loud = clone(bl.csp_lda(2, verbose="info")).fit(X, y)
    out, _ = capfd.readouterr()
    assert "Estimating class=0 covariance" in out
    # the wrapper exposes the fitted MNE transformer's attributes
    np.testing.assert_array_equal(quiet["csp"].filters_, quiet["csp"].estimator_.filters_)
    np.testing.assert_allclose(quiet["csp"].patterns_, loud["csp"].patterns_)
    assert quiet["csp"].filters_.shape == (4, 4)
    bl.xdawn_lda(1, decim=5).fit(X, y)
    out, _ = capfd.readouterr()
    assert not MNE_INFO.search(out)


def test_permutation_test_runs_its_score_function_quietly(eeg_epochs, capfd, monkeypatch):
    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)
    X, y, samples = eeg_epochs

    def score(t):
        return float(mne.compute_rank(mne.EpochsArray(X[t == 1], mne.create_info(4, 100.0,
                                                       "eeg"), verbose=None))["eeg"])

    res = permutation_test(score, y, groups=samples["recording"], n_permutations=3)
    out, _ = capfd.readouterr()
    assert res.score == 4 and res.null.tolist() == [4.0, 4.0, 4.0]
    assert "Computing rank" not in out and "Not setting metadata" not in out
    permutation_test(score, y, groups=samples["recording"], n_permutations=3, verbose=True)
    out, _ = capfd.readouterr()
    assert out.count("Computing rank from data") == 4


def test_user_choices_win_over_the_quiet_default(monkeypatch):
    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)
    assert mne_log_level(None) == logging.WARNING
    assert mne_log_level(True) == logging.INFO
    assert mne_log_level(False) == logging.WARNING
    assert mne_log_level("debug") == logging.DEBUG
    assert mne_log_level(logging.ERROR) == logging.ERROR
    with mne_verbose("info") as level:  # an enclosing call's level reaches nested calls
        assert level == logging.INFO
        assert mne_log_level(None) == logging.INFO
        with mne_verbose(None):
            assert logging.getLogger("mne").level == logging.INFO
    assert logging.getLogger("mne").level == logging.INFO  # MNE's default, restored
    monkeypatch.setenv("MNE_LOGGING_LEVEL", "info")
    assert mne_log_level(None) == logging.INFO
    monkeypatch.delenv("MNE_LOGGING_LEVEL")
    mne.set_log_level("error")
    try:
        assert mne_log_level(None) == logging.ERROR
    finally:
        mne.set_log_level("info")
    with pytest.raises(ValueError, match="'loud' is not an MNE log level"):
        mne_verbose("loud")


def test_mne_verbose_decorator_reads_the_verbose_argument(capfd, monkeypatch):
    monkeypatch.delenv("MNE_LOGGING_LEVEL", raising=False)

    @mne_verbose
    def work(x, verbose=None):
        mne.utils.logger.info("working on %s", x)
        return x * 2

    assert work(3) == 6
    assert work(4, verbose=True) == 8
    assert work(5, "info") == 10
    out, _ = capfd.readouterr()
    assert out.splitlines() == ["working on 4", "working on 5"]
    with pytest.raises(TypeError, match="needs a 'verbose' parameter"):
        mne_verbose(lambda x: x)


# --------------------------------------------------------------------------- progress bars


def test_progress_renders_a_bar_only_when_enabled_or_interactive():
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    assert list(progress(iter(range(5)), 5, "permutations", enabled=True,
                         console=terminal)) == list(range(5))
    text = terminal.file.getvalue()
    assert "permutations" in text and "5/5" in text and "━" in text

    interactive = Console(file=io.StringIO(), force_terminal=True, force_interactive=True,
                          width=100)
    assert list(progress(range(3), description="auto", console=interactive)) == [0, 1, 2]
    assert "3/3" in interactive.file.getvalue()

    for enabled in (False, None):  # None: the console is not a terminal
        pipe = Console(file=io.StringIO(), force_terminal=False)
        assert list(progress(range(3), description="x", enabled=enabled, console=pipe)) == [
            0, 1, 2]
        assert pipe.file.getvalue() == ""


def test_cross_validate_and_permutation_test_show_progress_on_request(capfd):
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = np.tile([0, 1], 20)
    samples = pd.DataFrame({"recording": np.repeat(["a", "b", "c", "d"], 10), "subject": "01",
                            "session": "01", "run": np.repeat([1, 2, 3, 4], 10),
                            "start": np.tile(np.arange(10.0) * 2, 4),
                            "stop": np.tile(np.arange(10.0) * 2 + 1, 4)})
    cross_validate(bl.logistic(), X, y, samples, LeaveOneGroupOut(), n_permutations=2)
    permutation_test(lambda t: float(t[:5].sum()), y, n_permutations=4)
    assert capfd.readouterr() == ("", "")  # not a terminal: no bar
    cross_validate(bl.logistic(), X, y, samples, LeaveOneGroupOut(), n_permutations=2,
                   progress=True)
    permutation_test(lambda t: float(t[:5].sum()), y, n_permutations=4, progress=True)
    _, err = capfd.readouterr()
    assert "cross-validation (4 folds × 3 runs)" in err and "12/12" in err
    assert "4 permutations" in err and "4/4" in err


# --------------------------------------------------------------------------- training reports


def test_contrastive_loop_reports_progress_only_when_verbose(capfd):
    X = np.random.default_rng(0).standard_normal((400, 5)).astype(np.float32)
    kw = dict(conditional="time", max_iter=30, batch_size=32, hidden_dim=8, trainer="loop")
    ContrastiveEmbedding(**kw).fit(X)
    assert capfd.readouterr() == ("", "")
    model = ContrastiveEmbedding(verbose=True, **kw).fit(X)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    steps = [re.fullmatch(r"fit: step +(\d+)/30  loss (\S+)  alignment (\S+)  uniformity (\S+)"
                          r"  ([\d.]+) it/s", line) for line in lines[:-1]]
    assert all(steps), lines
    assert [int(m[1]) for m in steps] == list(range(3, 31, 3))
    assert [float(m[2]) for m in steps] == pytest.approx(model.log_["loss"][2::3], abs=1e-4)
    assert [float(m[3]) for m in steps] == pytest.approx(model.log_["alignment"][2::3],
                                                         abs=1e-4)
    assert re.fullmatch(r"fit: 30 steps in [\d.]+ s \([\d.]+ it/s\), loss \S+", lines[-1])


def test_contrastive_lightning_is_silent_unless_verbose(capfd):
    X = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    kw = dict(conditional="time", max_iter=4, batch_size=16, hidden_dim=8, trainer="lightning")
    ContrastiveEmbedding(**kw).fit(X)
    assert capfd.readouterr() == ("", "")
    ContrastiveEmbedding(verbose=True, **kw).fit(X)
    out, err = capfd.readouterr()
    assert "loss" in out + err and "4/4" in out + err  # Lightning's bar, with the loss
    assert re.search(r"fit: 4 steps in [\d.]+ s \([\d.]+ it/s\), loss \S+", err)
