"""Codebook pretraining on the real EEG: does unlabelled pretraining help decoding? (issue 16)

The real-data part of ``benchmarks/codebook.py``. A Du-IN-style codebook model
(``models/codebook_eeg.yaml``: spatial attention over electrode positions into 16 virtual
channels, one fused token per 100 ms segment, a VQ-VAE codebook, then masked-code prediction)
is pretrained **without labels** on the EEG of ``../shared/data`` — EEGBCI S001–S004, every run
(left/right and hands/feet imagery, the rest periods included), the ten ``eegmat`` subjects on
their own 19-channel montage and the nine Muse recordings (4 channels) — then fine-tuned on
labels, beside the same network trained from scratch (``scratch_region``) and three peers on
the same folds: CSP(4)+LDA, pyriemann tangent space + logistic regression and braindecode's
ShallowFBCSPNet (:mod:`adapters_real`).

Preprocessing (the data layer can neither resample nor filter sliding windows): every whole
recording is band-passed 4–40 Hz (MNE FIR) at its own rate, resampled to 100 Hz
(``mne.filter.resample``; the Muse clock, ~256.03 Hz, is not an integer ratio) and rebuilt as
an in-memory recording with the positions of its electrodes' standard 10-05 sites (MNE's
``colin27_1005``, head frame; the EDF and CSV files carry none), so that the spatial attention
can map every montage. Trials and pretraining windows are 1 s (100 samples, 10 segments):
EEGBCI trials 1–2 s after the cue (as in :mod:`adapters_real`), ``eegmat`` and pretraining
windows non-overlapping 1 s windows. Every method sees the same trials.

Datasets of the ``few_shot`` rows (``fraction`` is the share of the new subject's labelled
calibration trials used):

``eegbci_left_right_within``, ``eegbci_hands_feet_within``
    Within subject, leave one run out (S001–S004 runs 04/08/12; S001–S003 runs 06/10/14):
    train on two runs (30 trials), test on the third; ``fraction`` 1.0. Smaller fractions are
    not run: 10 % of 30 trials is 3 trials, too few for CSP or a network from scratch.
``eegbci_left_right_cross``, ``eegbci_hands_feet_cross``
    Across subjects, leave one subject out: trained on the other subjects' labelled trials,
    adapted with the first 10 %, 30 % or 100 % of the new subject's first run (2, 4 or 15
    trials; the codebook variants train its subject layer only, strategy ``a``; peers:
    CSP+LDA pooled, tangent space re-centred on the calibration trials and pooled,
    ShallowFBCSPNet fine-tuned), tested on its two later runs.
``eegmat_rest_arithmetic_loso``
    Rest vs mental arithmetic, leave one subject out (10 folds), ``fraction`` 0.0: no label of
    the held-out subject. 16 windows per class and subject (the arithmetic file is 62 s).
    The held-out subject's *unlabelled* windows set its channel standardisation (codebook
    variants, zero-shot through the shared subject layer) and its Riemannian re-centring
    (tangent space); CSP+LDA and ShallowFBCSPNet use no statistic of it.

Pretraining is **not transductive**: it runs once per seed on each of two halves, each leaving
out the recordings of half of the evaluated subjects (EEGBCI S001–S002 and eegmat 00–04, or
EEGBCI S003–S004 and eegmat 05–09; the Muse recordings, never evaluated, are in both), and
every fold uses the pretraining that never saw its test subject (neither its test trials nor
any other of its recordings). A pretraining sees at most :data:`PRETRAIN_WINDOWS` windows per
subject, evenly spread over its recordings (every subject weighs the same in a batch), after
leaving out artefact windows (RMS above :data:`ARTEFACT_RMS` times the subject's median); the
last 15 % of every recording is held out for early stopping and for the codebook health
(perplexity, dead codes, reconstruction R², masked-code accuracy beside the majority-code
rate) of the ``pretraining`` section.

Fine-tuning (``pretrained_region``: adapter and backbone from the pretraining of the fold;
``scratch_region``: the same config from a random start; everything trained, then the head
predicts): within subject for the config's 40 epochs on the 30 training trials (no early
stopping: 6 validation trials pick an epoch by noise); across subjects with early stopping on
the last 20 % of every run of the training subjects, then strategy ``a`` (only the new
subject's 16×16 subject layer; at fraction 1.0 early stopping on the last 3 of its 15
calibration trials, :func:`neurodecode.models.fewshot.holdout_split`; below 10 trials a fixed
30 epochs).

Scores are balanced accuracies; ``score`` is the mean over seeds of the mean over folds,
``seed_spread`` the standard deviation over seeds of that fold mean (0 for the deterministic
CSP+LDA and tangent space), ``chance`` the mean of the permutation null of the method's own
fixed predictions (test labels permuted, :func:`neurodecode.evaluate.permutation.
fixed_prediction_null`), ``chance_p95`` its 95th percentile, ``p_value`` that of the score;
``folds`` lists every fold's seed-mean score, ``seconds`` the variant's evaluation time
apportioned over its fractions by folds. ``pretrained_single_channel`` is
not run on the real data: single-channel tokens multiply the token sequences by the channel
count (64 for EEGBCI), beyond 2 CPU cores.

Usage::

    python benchmarks/codebook_real.py --quick --json outputs/bench_codebook_real_quick.json
    python benchmarks/codebook_real.py --json outputs/bench_codebook_real.json   # ~22 min

``--quick`` (≤ 1 min on 2 cores, marked ``"quick": true``): one seed, the left/right task of
S001–S002 within subject, one pretraining of 3 + 2 epochs on the left/right runs of
S003–S004 only (a smoke test of the path: its codebook may collapse), peers with
:data:`adapters_real.QUICK_TRAIN`. The full mode takes about 22 minutes on 2 shared cores
(six pretrainings of ~45 s, about 500 network fits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adapters_real as ar  # noqa: E402

from neurodecode.data.samples import (  # noqa: E402
    Recording,
    Samples,
    epochs,
    open_recordings,
    pick_channels,
    windows,
)
from neurodecode.data.subjects import SubjectTrials, by_subject, per_subject  # noqa: E402

os.environ.setdefault("MNE_LOGGING_LEVEL", "warning")

__all__ = [
    "ARTEFACT_RMS",
    "BAND",
    "CONFIG",
    "EEGMAT_ENTRY",
    "EEGMAT_PER_CLASS",
    "FRACTIONS",
    "PRETRAIN_HALVES",
    "PRETRAIN_WINDOWS",
    "SFREQ",
    "TRIAL_START",
    "VARIANTS",
    "WINDOW",
    "CodebookMethod",
    "RealData",
    "cross_folds",
    "eegmat_entry",
    "load",
    "loso_folds",
    "main",
    "prepare",
    "pretrain",
    "real_part",
    "standard_positions",
    "within_folds",
]

#: Common sampling rate (Hz) of every recording after resampling.
SFREQ = 100.0
#: Band-pass (Hz) of every whole recording before resampling.
BAND = (4.0, 40.0)
#: Window and trial length in seconds (100 samples at :data:`SFREQ`: 10 segments of 100 ms).
WINDOW = 1.0
#: EEGBCI trials start this long after the cue.
TRIAL_START = 1.0
#: The model config.
CONFIG = Path(__file__).resolve().parents[1] / "models" / "codebook_eeg.yaml"
#: Rows' variants: the codebook model pretrained and from scratch, and the peers.
VARIANTS = ("pretrained_region", "scratch_region", "csp_lda", "tangent_space_lr",
            "shallow_fbcspnet")
#: Few-shot fractions of the new subject's calibration run (cross-subject datasets).
FRACTIONS = (0.1, 0.3, 1.0)
#: Pretraining windows per subject at most (full mode, quick mode).
PRETRAIN_WINDOWS = {False: 100, True: 40}
#: A pretraining window whose RMS exceeds this many times its subject's median window RMS is
#: an artefact (electrode pops, a headband put on or taken off) and is left out.
ARTEFACT_RMS = 5.0
#: eegmat windows per class and subject in the rest vs arithmetic task.
EEGMAT_PER_CLASS = 16
#: Evaluated subjects each pretraining leaves out (every fold uses the one without its
#: subject); the Muse subjects are in both.
PRETRAIN_HALVES: dict[str, tuple[str, ...]] = {
    "A": ("eegbci001", "eegbci002", *(f"eegmat{i:02d}" for i in range(5))),
    "B": ("eegbci003", "eegbci004", *(f"eegmat{i:02d}" for i in range(5, 10))),
}
#: Catalog entry of PhysioNet eegmat (no YAML of the catalog covers it): the label is the file
#: (run 1 rest, run 2 serial subtraction); A2-A1 and ECG are not EEG. Checksums are taken from
#: the data folder's ``SHA256SUMS``.
EEGMAT_ENTRY: dict[str, Any] = {
    "name": "eegmat",
    "modality": "eeg",
    "description": "PhysioNet EEG During Mental Arithmetic Tasks, subjects 00-09, rest (run 1) "
                   "and serial subtraction (run 2)",
    "licence": "ODC-By 1.0",
    "citation": "Zyma et al. (2019) Data 4(1):14; Goldberger et al. (2000) PhysioNet.",
    "root": "eeg/eegmat",
    "reader": "mne",
    "reader_options": {"ch_types": {"EEG A2-A1": "misc", "ECG ECG": "ecg"}},
    "entities": {"task": "arithmetic", "session": "01"},
    "expect": {"sfreq": 500.0, "n_channels": 21},
    "files": [{"glob": "Subject*_*.edf",
               "pattern": r"Subject(?P<subject>\d+)_(?P<run>[12])\.edf"}],
}
#: Subject-name prefix of each store (EEGBCI's two tasks are the same people).
_PREFIX = {"eegbci_left_right": "eegbci", "eegbci_hands_feet": "eegbci", "eegmat": "eegmat",
           "muse_n170": "musen170s", "muse_p300": "musep300s"}
_MOTOR_TASKS = ("eegbci_left_right", "eegbci_hands_feet")
_EEGMAT_TASK = "eegmat_rest_arithmetic"


# --------------------------------------------------------------------------------------------
# Data


def eegmat_entry(data_root: Path):
    """:data:`EEGMAT_ENTRY` as a checked catalog entry, pinned by ``SHA256SUMS``.

    Parameters
    ----------
    data_root : Path
        The sample-data folder.

    Returns
    -------
    neurodecode.catalog.CatalogEntry
    """
    from neurodecode.catalog import CatalogEntry

    entry = dict(EEGMAT_ENTRY)
    entry["checksums"] = {k: v for k, v in ar._checksums(Path(data_root), entry["root"]).items()
                          if k.endswith(".edf")}
    return CatalogEntry(**entry)


def _ingest_eegmat(stores: Path, data_root: Path) -> None:
    from neurodecode.ingest.runner import ClusterConfig, plan_entry, run_ingest

    failed = [r.error for r in run_ingest(plan_entry(eegmat_entry(data_root), stores, data_root),
                                          cluster=ClusterConfig(kind="threads"))
              if r.status == "failed"]
    if failed:
        raise RuntimeError("\n".join(str(e) for e in failed))


def _site(name: str) -> str:
    """A channel name as a 10-05 site: ``"Fc5."`` (EEGBCI), ``"EEG Fp1"`` (eegmat) → lower."""
    name = name.strip()
    if name.upper().startswith("EEG "):
        name = name[4:]
    return name.strip(".").strip().lower()


def standard_positions(ch_names: Sequence[str], where: str = "recording") -> np.ndarray:
    """Head-frame positions (metres) of EEG channels from their standard 10-05 site names.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names (EEGBCI's ``"Fc5."``, eegmat's ``"EEG Fp1"``, Muse's ``"TP9"``; case,
        trailing dots and an ``"EEG "`` prefix are ignored).
    where : str
        The recording, for the error message.

    Returns
    -------
    ndarray
        ``(n_channels, 3)``.

    Raises
    ------
    ValueError
        Naming ``where`` and the channels that are no site of MNE's ``colin27_1005`` montage.
    """
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")
    sites = {n.lower(): n for n in montage.ch_names}
    missing = [c for c in ch_names if _site(c) not in sites]
    if missing:
        raise ValueError(f"{where}: channel(s) {missing} are no 10-05 site; retype them (not "
                         "EEG) or give their positions")
    names = [sites[_site(c)] for c in ch_names]
    info = mne.create_info(names, 100.0, "eeg")
    info.set_montage(montage, verbose=False)
    return np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)


def prepare(rec: Recording, prefix: str, sfreq: float = SFREQ,
            band: tuple[float, float] = BAND):
    """A recording's EEG channels band-passed, resampled and placed, as an in-memory recording.

    Parameters
    ----------
    rec : Recording
        An opened store.
    prefix : str
        Put before the subject (``"eegbci"`` + ``"001"``): subjects of different datasets stay
        apart.
    sfreq : float
        Target sampling rate.
    band : (float, float)
        Band-pass applied to the whole recording at its own rate, before resampling.

    Returns
    -------
    xarray.Dataset
        The same identity (subject prefixed) and events; brain channels only, with the
        positions of :func:`standard_positions`; the step in ``history``.
    """
    import mne

    from neurodecode.schema import events_frame, make_recording

    picks = pick_channels(rec, None)
    names = [str(c) for c in rec.ds["channel"].values[picks]]
    x = np.asarray(rec.ds["signal"].data[:, picks], dtype=np.float64).T
    x = mne.filter.filter_data(x, rec.sfreq, band[0], band[1], verbose="error")
    x = mne.filter.resample(x, up=sfreq / rec.sfreq, down=1.0, axis=-1, verbose="error")
    ident = rec.identity
    events = events_frame(rec.ds)
    step = {"step": "benchmarks.codebook_real.prepare", "scope": "recording",
            "params": {"l_freq": band[0], "h_freq": band[1], "sfreq": sfreq,
                       "source_sfreq": rec.sfreq, "store": rec.path}}
    return make_recording(
        x.T.astype(np.float32), sfreq=sfreq, ch_names=names, ch_types="eeg", units="V",
        modality="eeg", subject=f"{prefix}{ident['subject']}", task=ident["task"],
        session=ident["session"], run=ident["run"], t0=float(rec.ds["time"].values[0]),
        positions=standard_positions(names, rec.id), coord_frame="head",
        events=events if len(events) else None,
        history=[*rec.ds.attrs.get("history", []), step])


@dataclass
class RealData:
    """The prepared recordings, labelled tasks and unlabelled pretraining windows.

    Attributes
    ----------
    recordings : list of Recording
        Every prepared (in-memory) recording.
    tasks : dict
        ``{task: {subject: Samples}}`` (trials in time order, ``X`` ``(n, channel, time)``):
        ``eegbci_left_right``, ``eegbci_hands_feet``, ``eegmat_rest_arithmetic`` (those
        loaded).
    windows : dict of str to SubjectTrials
        Every subject's unlabelled 1 s windows (all its recordings).
    dataset_of : dict of str to str
        Each subject's store (``"eegbci"`` for both EEGBCI tasks).
    seconds : float
        Ingest and preparation time.
    """

    recordings: list[Recording]
    tasks: dict[str, dict[str, Samples]]
    windows: dict[str, SubjectTrials]
    dataset_of: dict[str, str]
    seconds: float


def _eegmat_task(recs: Sequence[Recording], per_class: int) -> dict[str, Samples]:
    """Rest (run 1) vs arithmetic (run 2): ``per_class`` evenly spread 1 s windows of each."""
    s = windows(list(recs), length=WINDOW, stride=WINDOW)
    table = s.table.copy()
    table["onset"] = table["start"]  # a window's onset is its start (trial keys, ordering)
    table["label"] = np.where(table["run"].astype(str).str.lstrip("0") == "1", "rest",
                              "arithmetic")
    keep = []
    for _, rows in table.groupby("recording", sort=False):
        idx = rows.index.to_numpy()
        keep.append(idx[np.unique(np.linspace(0, len(idx) - 1, min(per_class, len(idx)))
                                  .astype(int))])
    keep = np.sort(np.concatenate(keep))
    s = Samples(s.X, table["label"].to_numpy().astype(str), table, s.ch_names, s.sfreq, s.times,
                s.ch_types).select(keep)
    return ar._time_ordered(s)


def _motor_task(recs: Sequence[Recording], task: str) -> dict[str, Samples]:
    _, labels = ar._MOTOR[task]
    s = epochs(list(recs), tmin=TRIAL_START, tmax=TRIAL_START + WINDOW - 1.0 / SFREQ, labels=labels)
    return ar._time_ordered(s)


def load(stores: Path, data_root: Path, *, quick: bool = False) -> RealData:
    """Ingest (or reuse) the stores, prepare every recording, cut trials and windows.

    Parameters
    ----------
    stores : Path
        Store root (written when missing or out of date).
    data_root : Path
        The sample-data folder.
    quick : bool
        The EEGBCI left/right runs only (pretraining and the task).

    Returns
    -------
    RealData
    """
    t0 = time.perf_counter()
    names = ("eegbci_left_right",) if quick else (*_MOTOR_TASKS, "muse_n170", "muse_p300")
    ar.ingest(stores, data_root, names)
    if not quick:
        _ingest_eegmat(stores, data_root)
        names = (*names, "eegmat")
    prepared = {n: [prepare(r, _PREFIX[n]) for r in open_recordings(stores / n)] for n in names}
    recs = {n: open_recordings(v) for n, v in prepared.items()}
    everything = [r for v in recs.values() for r in v]
    tasks = {t: _motor_task(recs[t], t) for t in _MOTOR_TASKS if t in recs}
    if "eegmat" in recs:
        tasks[_EEGMAT_TASK] = _eegmat_task(recs["eegmat"], EEGMAT_PER_CLASS)
    dataset_of = {r.identity["subject"]: _PREFIX[n] for n, v in recs.items() for r in v}
    wins = per_subject(everything, windows, length=WINDOW, stride=WINDOW)
    return RealData(everything, tasks, wins, dataset_of, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Pretraining


def _split_recordings(t: SubjectTrials, fraction: float) -> tuple[SubjectTrials, SubjectTrials]:
    """The first and the last ``fraction`` (in time) of every recording of a subject."""
    rec = t.table["recording"].to_numpy()
    last = np.zeros(len(t), bool)
    for r in dict.fromkeys(rec):
        idx = np.flatnonzero(rec == r)
        n = int(round(fraction * len(idx)))
        if n and len(idx) > n:
            last[idx[-n:]] = True
    return t.select(~last), t.select(last)


def _spread(t: SubjectTrials, n: int) -> SubjectTrials:
    """At most ``n`` samples evenly spread over the subject's (time-ordered) samples."""
    return t.select(np.unique(np.linspace(0, len(t) - 1, min(n, len(t))).astype(int)))


def _without_artefacts(t: SubjectTrials, factor: float = ARTEFACT_RMS) -> SubjectTrials:
    """The windows whose RMS is at most ``factor`` times the subject's median window RMS."""
    rms = np.sqrt(np.mean(np.square(t.X, dtype=np.float64), axis=(1, 2)))
    return t.select(rms <= factor * np.median(rms))


def pretrain(data: RealData, exclude: Sequence[str], seed: int, *, quick: bool = False,
             config: Path = CONFIG) -> tuple[Any, dict[str, Any]]:
    """Pretrain the codebook model on the unlabelled windows of every subject not excluded.

    Windows with artefacts (:data:`ARTEFACT_RMS`) are left out first, then at most
    :data:`PRETRAIN_WINDOWS` are kept per subject, evenly spread over its recordings.

    Parameters
    ----------
    data : RealData
    exclude : sequence of str
        Subjects left out (the evaluated subjects this pretraining must not see).
    seed : int
    quick : bool
        Fewer windows (:data:`PRETRAIN_WINDOWS`) and 3 + 2 epochs.
    config : Path
        The model config.

    Returns
    -------
    pretrainer : CodebookPretrainer
    summary : dict
        ``subjects``, ``excluded``, ``windows`` (trained on, per dataset), ``val_windows``,
        ``artefact_windows`` (left out, per dataset), codebook health on the held-out
        windows (the last 15 % of every pretraining recording, never trained on:
        ``perplexity``, ``used``, ``dead_fraction``, ``codebook_size``, ``collapsed``),
        ``reconstruction_r2`` and ``mask_accuracy`` (top-1 on masked segments, with the
        majority-code rate) on the same windows, ``segments_per_s`` per stage, ``epochs`` per
        stage and ``seconds``.
    """
    from neurodecode.models.codebook.pretrainer import CodebookPretrainer

    cap = PRETRAIN_WINDOWS[quick]
    train, val, rejected = {}, {}, {}
    for name, t in data.windows.items():
        if name in exclude:
            continue
        clean = _without_artefacts(t)
        dataset = data.dataset_of[name]
        rejected[dataset] = rejected.get(dataset, 0) + len(t) - len(clean)
        fit, held = _split_recordings(_spread(clean, cap), 0.15)
        train[name], val[name] = fit, held
    epochs_ = {"tokenizer_epochs": 3, "masked_epochs": 2} if quick else {}
    pre = CodebookPretrainer(str(config), seed=seed, **epochs_).fit(train, val)
    counts: dict[str, int] = {}
    for name, t in train.items():
        counts[data.dataset_of[name]] = counts.get(data.dataset_of[name], 0) + len(t)
    summary = {
        "seed": seed, "excluded": sorted(exclude), "subjects": sorted(train),
        "windows": counts, "val_windows": sum(len(v) for v in val.values()),
        "artefact_windows": rejected,
        **pre.health(val).to_dict(),
        "reconstruction_r2": pre.reconstruction_r2(val),
        "mask_accuracy": pre.mask_accuracy(val, seed=seed),
        "segments_per_s": pre.segments_per_s_,
        "epochs": {k: len(v) for k, v in pre.history_.items()},
        "seconds": pre.fit_seconds_,
    }
    return pre, summary


# --------------------------------------------------------------------------------------------
# The codebook model as a method of adapters_real.evaluate


def _split(t: SubjectTrials, fraction: float = 0.2) -> dict[str, SubjectTrials]:
    fit, val = _split_recordings(t, fraction)
    return {"fit": fit, "val": val}


class CodebookMethod:
    """The codebook model (pretrained or from scratch) as ``(fold, seed) -> test labels``.

    Parameters
    ----------
    mode : {"within", "cross", "zero_shot"}
        ``within``: trained on the fold's ``adapt`` trials only (the subject's two training
        runs) for the config's ``max_epochs``, the last weights kept (a validation set of a
        few trials picks an epoch by noise: early stopping on the last 6 of 30 trials stopped
        within 3 epochs, at a constant prediction). ``cross``: trained on the fold's
        ``pretrain`` subjects (early stopping on the last 20 % of each of their runs; once per
        new subject and seed), then the new subject's subject layer trained on ``adapt``
        (strategy ``a``). ``zero_shot``: trained as ``cross``; the new subject is served by the
        shared subject layer (strategy ``e``), ``adapt`` (its unlabelled windows) setting only
        its channel standardisation.
    data : RealData
        For the channel positions of the recordings.
    pretrainers : mapping of (str, int) to CodebookPretrainer, optional
        By (pretraining half, seed); None for the network from scratch.
    config : Path
        The model config.
    quick : bool
        At most 10 epochs (patience 3).
    """

    deterministic = False

    def __init__(self, mode: Literal["within", "cross", "zero_shot"], data: RealData,
                 pretrainers: Mapping[tuple[str, int], Any] | None = None, *,
                 config: Path = CONFIG, quick: bool = False) -> None:
        if mode not in ("within", "cross", "zero_shot"):
            raise ValueError(f"mode must be 'within', 'cross' or 'zero_shot', got {mode!r}")
        self.mode = mode
        self.data = data
        self.pretrainers = pretrainers
        self.config = config
        self.quick = quick
        self.uses = "adapt" if mode == "within" else "pretrain" if mode == "zero_shot" else "both"
        self._cache: dict[tuple[str, str, int], Any] = {}

    def _trials(self, s: Samples) -> SubjectTrials:
        out = by_subject(s, self.data.recordings)
        if len(out) != 1:
            raise ValueError(f"one subject's samples expected, got subjects {sorted(out)}")
        return next(iter(out.values()))

    def _pretrained(self, subject: str, seed: int) -> Any:
        if self.pretrainers is None:
            return None
        half = next((h for h, subjects in PRETRAIN_HALVES.items() if subject in subjects), None)
        if half is None:
            raise ValueError(f"subject {subject!r} is in no pretraining half; the halves leave "
                             f"out {PRETRAIN_HALVES}")
        return self.pretrainers[(half, seed)]

    def _decoder(self, subject: str, seed: int):
        from neurodecode.models.decoder import CrossSubjectDecoder

        short = {"max_epochs": 10, "patience": 3} if self.quick else {}
        return CrossSubjectDecoder(str(self.config), seed=seed,
                                   pretrained=self._pretrained(subject, seed), **short)

    def _shared(self, fold: ar.Fold, seed: int):
        """The decoder trained on the fold's other subjects (cached per new subject, seed)."""
        key = (fold.task, fold.new_subject, seed)
        if key not in self._cache:
            parts = {n: _split(self._trials(s)) for n, s in fold.pretrain.items()}
            self._cache[key] = self._decoder(fold.new_subject, seed).fit(
                {n: p["fit"] for n, p in parts.items()}, {n: p["val"] for n, p in parts.items()},
                classes=fold.classes)
        return self._cache[key]

    def __call__(self, fold: ar.Fold, seed: int) -> np.ndarray:
        test = self._trials(fold.test)
        if self.mode == "within":
            dec = self._decoder(fold.new_subject, seed).fit(self._trials(fold.adapt),
                                                            classes=fold.classes)
            return dec.predict(test)
        strategy = "a" if self.mode == "cross" else "e"
        return self._shared(fold, seed).adapt(self._trials(fold.adapt), strategy=strategy,
                                              seed=seed).predict(test)


# --------------------------------------------------------------------------------------------
# Folds


def _fraction_label(fraction: float) -> str:
    return f"{fraction:g}"


def within_folds(task: str, subjects: Mapping[str, Samples], dataset: str) -> list[ar.Fold]:
    """Leave one run out per subject: ``adapt`` = the other runs, ``test`` = the run.

    ``pretrain`` holds the other subjects (not trained on by within-subject methods; it gives
    the classes and the input shape).
    """
    out = []
    for subject, s in subjects.items():
        others = {k: v for k, v in subjects.items() if k != subject}
        run = s.table["run"].to_numpy()
        for test_run in dict.fromkeys(run):
            out.append(ar.Fold(dataset, subject, others, s.select(run != test_run),
                               s.select(run == test_run), _fraction_label(1.0),
                               int((run != test_run).sum())))
    return out


def cross_folds(subjects: Mapping[str, Samples], dataset: str,
                fractions: Sequence[float] = FRACTIONS) -> list[ar.Fold]:
    """Leave one subject out; ``adapt`` = the first ``fraction`` of its first run (at least 2
    trials), ``test`` = its later runs (the same trials at every fraction)."""
    out = []
    for subject, s in subjects.items():
        others = {k: v for k, v in subjects.items() if k != subject}
        run = s.table["run"].to_numpy()
        first = np.flatnonzero(run == run[0])
        test = s.select(run != run[0])
        for f in fractions:
            n = max(2, int(round(f * len(first))))
            out.append(ar.Fold(dataset, subject, others, s.select(first[:n]), test,
                               _fraction_label(f), n))
    return out


def loso_folds(subjects: Mapping[str, Samples], dataset: str, *, calibrate: bool
               ) -> list[ar.Fold]:
    """Leave one subject out with no label of it; with ``calibrate``, ``adapt`` holds its
    (test) windows for label-free calibration (standardisation, re-centring)."""
    out = []
    for subject, s in subjects.items():
        others = {k: v for k, v in subjects.items() if k != subject}
        adapt = s if calibrate else s.select(np.arange(0))
        out.append(ar.Fold(dataset, subject, others, adapt, s, _fraction_label(0.0),
                           len(adapt)))
    return out


# --------------------------------------------------------------------------------------------
# Rows


def _fold_name(fold: ar.Fold) -> str:
    runs = ",".join(dict.fromkeys(fold.test.table["run"].astype(str)))
    return f"{fold.new_subject} test run {runs}"


def _rows(dataset: str, variant: str, out: list[dict[str, Any]], folds: Sequence[ar.Fold],
          n_seeds: int, seconds: float) -> list[dict[str, Any]]:
    """``few_shot`` rows (one per fraction) from :func:`adapters_real.evaluate`'s rows."""
    subject_rows = [r for r in out if r["level"] == "subject"]
    if len(subject_rows) != len(folds):
        raise RuntimeError(f"{dataset}/{variant}: {len(subject_rows)} scored folds of "
                           f"{len(folds)}")
    rows = []
    for mean in (r for r in out if r["level"] == "mean"):
        pairs = [(f, r) for f, r in zip(folds, subject_rows, strict=True)
                 if r["budget"] == mean["budget"]]
        per_seed = np.array([r["scores"] for _, r in pairs], dtype=float)  # (folds, seeds)
        fold_means = per_seed.mean(axis=0)
        rows.append({
            "dataset": dataset, "variant": variant, "fraction": float(mean["budget"]),
            "metric": "balanced_accuracy", "score": float(fold_means.mean()),
            "chance": mean["chance"], "chance_p95": mean["chance_p95"],
            "p_value": mean["p_value"], "seed_spread": float(fold_means.std()),
            "n_seeds": n_seeds, "scores": fold_means.round(4).tolist(),
            "n_folds": len(pairs), "fold_std": mean["score_std"],
            "n_train": mean["n_train"], "n_adapt": mean["n_adapt"], "n_test": mean["n_test"],
            "folds": [{"fold": _fold_name(f), "n_train": r["n_train"], "n_test": r["n_test"],
                       "score": r["score"], "scores": r["scores"], "chance": r["chance"]}
                      for f, r in pairs],
            "seconds": round(seconds * len(pairs) / len(folds), 1),
        })  # fmt: skip
    return rows


def _methods(kind: str, data: RealData, pretrainers: Mapping[tuple[str, int], Any],
             quick: bool) -> dict[str, Any]:
    """The five variants of a dataset kind (``within``, ``cross`` or ``loso``)."""
    train = ar.QUICK_TRAIN if quick else ar.TrainConfig()
    mode = {"within": "within", "cross": "cross", "loso": "zero_shot"}[kind]
    peer = {"within": ("within", "within", "within"),
            "cross": ("pooled", "recentered_pooled", "finetune"),
            "loso": ("loso", "recentered", "finetune")}[kind]
    return {
        "pretrained_region": CodebookMethod(mode, data, pretrainers, quick=quick),
        "scratch_region": CodebookMethod(mode, data, None, quick=quick),
        "csp_lda": ar.CSPLDA(peer[0]),
        "tangent_space_lr": ar.TangentSpaceLR(peer[1]),
        "shallow_fbcspnet": ar.DeepNet("shallow_fbcspnet", train, peer[2]),
    }


#: Variants whose eegmat folds carry the held-out subject's unlabelled windows in ``adapt``.
_CALIBRATED = ("pretrained_region", "scratch_region", "tangent_space_lr")


@contextmanager
def _one_thread():
    """One torch and one BLAS thread (tiny models run several times faster on 2 shared
    cores); restored afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def _summary(pretraining: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over the pretrainings of the health figures."""
    def stat(values: Sequence[float]) -> dict[str, float]:
        v = np.asarray(values, dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std())}

    return {
        "perplexity": stat([p["perplexity"] for p in pretraining]),
        "dead_fraction": stat([p["dead_fraction"] for p in pretraining]),
        "reconstruction_r2": stat([p["reconstruction_r2"] for p in pretraining]),
        "mask_accuracy": stat([p["mask_accuracy"]["accuracy"] for p in pretraining]),
        "mask_majority": stat([p["mask_accuracy"]["majority"] for p in pretraining]),
        "segments_per_s": {k: stat([p["segments_per_s"][k] for p in pretraining])
                           for k in ("tokenizer", "masked")},
        "seconds": stat([p["seconds"] for p in pretraining]),
    }


def real_part(quick: bool, seeds: Sequence[int], data: Path | None, *,
              work: Path | None = None, n_permutations: int = 1000,
              verbose: bool = True) -> dict[str, Any]:
    """Pretrain on the real EEG, fine-tune and score every variant on every dataset.

    Parameters
    ----------
    quick : bool
        The ``--quick`` protocol (see the module docstring).
    seeds : sequence of int
        Seeds of the pretrainings, the networks and their batches.
    data : Path, optional
        The sample-data folder (default the ``NEURODECODE_SAMPLE_DATA`` setting).
    work : Path, optional
        Work folder; the stores are cached in ``work/stores`` (default
        ``outputs/codebook_real``).
    n_permutations : int
        Test-label permutations per fold for the chance levels.
    verbose : bool
        Print a line per pretraining and per (dataset, variant).

    Returns
    -------
    dict
        ``few_shot`` (rows ``{dataset, variant, fraction, metric, score, chance, chance_p95,
        p_value, seed_spread, n_seeds, scores, n_folds, fold_std, folds, ...}``),
        ``pretraining`` (``runs``: one summary per pretraining, see :func:`pretrain`;
        ``summary``: their means and spreads; ``windows_available`` per dataset), ``protocol``,
        ``quick``, ``seeds``, ``timings`` and ``skipped`` (None, or why nothing ran).
    """
    from neurodecode.config import get_settings

    root = Path(data or get_settings().sample_data)
    seeds = [int(s) for s in seeds]
    if not root.is_dir():
        return {"few_shot": [], "pretraining": {}, "quick": quick, "seeds": seeds,
                "skipped": f"no sample data at {root} (set NEURODECODE_SAMPLE_DATA or --data)"}
    work = Path(work or "outputs/codebook_real")
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    with _one_thread():
        real = load(work / "stores", root, quick=quick)
        if quick:
            real.tasks = {"eegbci_left_right": {k: v for k, v in
                                                real.tasks["eegbci_left_right"].items()
                                                if k in ("eegbci001", "eegbci002")}}
        say(f"prepared {len(real.recordings)} recordings, {len(real.windows)} subjects in "
            f"{real.seconds:.1f}s", flush=True)
        pretrainers, runs = {}, []
        halves = {"A": PRETRAIN_HALVES["A"]} if quick else PRETRAIN_HALVES
        for seed in seeds:
            for half, exclude in halves.items():
                pre, summary = pretrain(real, exclude, seed, quick=quick)
                pretrainers[(half, seed)] = pre
                runs.append({"half": half, **summary})
                say(f"pretraining {half} seed {seed}: {summary['windows']} windows, perplexity "
                    f"{summary['perplexity']:.1f}, dead {summary['dead_fraction']:.2f}, R2 "
                    f"{summary['reconstruction_r2']:.3f}, mask acc "
                    f"{summary['mask_accuracy']['accuracy']:.3f} "
                    f"({summary['seconds']:.0f}s)", flush=True)
        datasets: list[tuple[str, str, str]] = []  # (dataset, kind, task)
        for task in _MOTOR_TASKS:
            if task in real.tasks:
                datasets.append((f"{task}_within", "within", task))
                if not quick:
                    datasets.append((f"{task}_cross", "cross", task))
        if _EEGMAT_TASK in real.tasks:
            datasets.append((f"{_EEGMAT_TASK}_loso", "loso", _EEGMAT_TASK))
        rows, timings = [], {}
        for dataset, kind, task in datasets:
            subjects = real.tasks[task]
            for variant, method in _methods(kind, real, pretrainers, quick).items():
                if kind == "within":
                    fs = within_folds(task, subjects, dataset)
                elif kind == "cross":
                    fs = cross_folds(subjects, dataset)
                else:
                    fs = loso_folds(subjects, dataset, calibrate=variant in _CALIBRATED)
                t0 = time.perf_counter()
                out = ar.evaluate(variant, method, fs, seeds, n_permutations)
                seconds = time.perf_counter() - t0
                timings[f"{dataset}/{variant}"] = round(seconds, 1)
                new = _rows(dataset, variant, out, fs, len(seeds), seconds)
                rows += new
                for r in new:
                    say(f"{dataset:34} {variant:18} f={r['fraction']:<4g} "
                        f"{r['score']:.3f} ±{r['seed_spread']:.3f} (chance {r['chance']:.3f}, "
                        f"p95 {r['chance_p95']:.3f}) {r['seconds']:.0f}s", flush=True)
    available: dict[str, int] = {}
    for name, t in real.windows.items():
        available[real.dataset_of[name]] = available.get(real.dataset_of[name], 0) + len(t)
    return {
        "few_shot": rows,
        "pretraining": {"runs": runs, "summary": _summary(runs),
                        "windows_available": available,
                        "windows_per_subject_max": PRETRAIN_WINDOWS[quick],
                        "halves": {h: list(v) for h, v in halves.items()}},
        "protocol": {"sfreq": SFREQ, "band": list(BAND), "window_s": WINDOW,
                     "trial_start_s": TRIAL_START, "fractions": list(FRACTIONS),
                     "eegmat_windows_per_class": EEGMAT_PER_CLASS, "config": CONFIG.name,
                     "n_permutations": n_permutations, "seed_spread": "std over seeds",
                     "transductive": False},
        "quick": quick, "seeds": seeds, "timings": timings,
        "seconds": round(time.perf_counter() - start, 1), "skipped": None,
    }


# --------------------------------------------------------------------------------------------
# Command line


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: variants × (dataset, fraction)."""
    cols = list(dict.fromkeys((r["dataset"], r["fraction"]) for r in rows))
    lines = ["| variant | " + " | ".join(f"{d} f={f:g}" for d, f in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for d, f in cols:
            r = next((r for r in rows if (r["variant"], r["dataset"], r["fraction"])
                      == (variant, d, f)), None)
            cells.append("—" if r is None else
                         f"{r['score']:.3f} ± {r['seed_spread']:.3f} [{r['chance_p95']:.2f}]")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run :func:`real_part` from the command line; print the table, optionally write JSON.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        What :func:`real_part` returns.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, EEGBCI left/right within S001-S002, a short "
                             "pretraining (<= 1 min on 2 cores)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="seeds (default 0 with --quick, else 0 1 2)")
    parser.add_argument("--data", type=Path, default=None,
                        help="sample-data folder (default: NEURODECODE_SAMPLE_DATA or "
                             "../shared/data)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("outputs/codebook_real"),
                        help="work folder (stores cached in WORK/stores)")
    parser.add_argument("--permutations", type=int, default=1000,
                        help="test-label permutations per fold")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out = real_part(args.quick, seeds, args.data, work=args.work,
                    n_permutations=args.permutations)
    if out["skipped"]:
        print(f"skipped: {out['skipped']}")
    else:
        print("\nbalanced accuracy, mean over seeds ± sd over seeds [chance p95]\n")
        print(_table(out["few_shot"]))
        print(f"\ntotal {out['seconds']}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
