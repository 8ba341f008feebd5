"""The ``reconstruct`` stage: seen images reconstructed from brain activity, honestly scored.

One job reads the recording stores of several subjects and the stimulus store their events
index (``stimuli.zarr`` beside the stores by default), cuts every subject's recordings into
event-locked trials (``tmin``..``tmax`` around each ``event``; the event's ``value`` is the
image id) and splits them by the stores' own ``train``/``valid``/``test`` intervals (a trial
belongs to the interval that holds its whole span; the split is checked for leakage). It then:

1. trains a :class:`~neurodecode.models.vision.Reconstructor` (``models/reconstruction.yaml``)
   on the training trials of the trained ``subjects`` and the images they saw: the image
   encoder and the diffusion UNet see training images only, the brain decoders stop early on
   the validation trials;
2. adapts every ``new_subjects`` entry from the first ``fraction`` of its training trials (in
   time) for each of ``fractions``, every other weight frozen (few-shot);
3. reconstructs every subject's test images (repeats of an image averaged, as NSD does) and
   scores them with the field's metrics (:mod:`neurodecode.evaluate.reconstruction`): PixCorr,
   SSIM, two-way identification in the encoder's space and in a fixed random CNN's, top-1
   retrieval both ways among ``n_candidates`` (the reconstruction, and with ``combine: mean``
   also the ``best_sample`` chosen by the brain-predicted tokens); beside the same metrics for
   the baselines
   (``ridge_to_pixels`` fitted per subject, on the flattened trial or its time average
   ``ridge_time_mean``, the embedding-only ``nearest_training_image``, and
   the ``lowlevel`` branch alone) and the chance levels (shuffled pairs);
4. BrainDiVE: an encoding model of one ``braindive.region`` (ridge from the encoder's embedding
   to the region's mean response, fitted on training trials, scored on validation trials)
   guides the UNet to synthesise images that drive it, compared with unguided samples and the
   stimuli.

The output folder::

    model.pt         the trained Reconstructor (new subjects: the largest fraction's adapter)
    metrics.json     per subject and method the metrics, chance, timings, sampling cost
    grid_<s>.png     seen images and every method's reconstruction for subject s
    braindive.png    guided, unguided and random stimuli (with ``braindive.scale > 0``)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..config import StageConfig
from .base import Slot, Stage, StageError, register

__all__ = ["ReconstructStage", "ReconstructStageConfig", "apply_model", "average_repeats",
           "reconstruct"]


class ReconstructStageConfig(StageConfig):
    """What a ``reconstruct`` job trains and scores.

    Attributes
    ----------
    analysis : str
    model : str
        A reconstruction config (a shipped name or a YAML path).
    params : dict
        Overrides merged into the model config (``{diffusion: {max_epochs: 5}}``).
    modality, task : str, optional
        Which stores to read.
    event : str
        Event label of the stimulus onsets (its ``value`` is the image id).
    tmin, tmax : float
        Trial span around each onset (seconds; the hemodynamic peak for fMRI).
    l_freq : float, optional
        High-pass (Hz) of each whole recording before cutting trials (drifts).
    stimuli : str, optional
        Path of the stimulus store (default ``stimuli.zarr`` in the stores' folder).
    subjects : list of str, optional
        Trained subjects (default: every subject not in ``new_subjects``).
    new_subjects : list of str
        Subjects adapted from a few of their trials.
    fractions : list of float
        Shares of a new subject's training trials (the earliest) to adapt from.
    strategy : str
        Few-shot strategy (:func:`neurodecode.models.fewshot.adapt`).
    average_repeats : bool
        Average the test trials of one image (one reconstruction per test image).
    n_candidates : int
        Retrieval among this many (at most the test images).
    n_show : int
        Test images shown in each grid.
    n_permutations : int
        Shuffles of the chance levels of PixCorr and SSIM.
    max_test : int, optional
        Score only the first ``max_test`` test images of each subject (speed).
    threads : int, optional
        torch and BLAS threads (None: the libraries' defaults).
    seed : int
    """

    analysis: str = Field(min_length=1)
    description: str = ""
    model: str = "reconstruction"
    params: dict[str, Any] = Field(default_factory=dict)
    modality: str | None = "fmri"
    task: str | None = None
    event: str = "image"
    tmin: float = 3.0
    tmax: float = 7.0
    l_freq: float | None = Field(0.01, gt=0)
    stimuli: str | None = None
    subjects: list[str] | None = None
    new_subjects: list[str] = Field(default_factory=list)
    fractions: list[float] = Field(default_factory=lambda: [0.1])
    strategy: str = "a"
    average_repeats: bool = True
    n_candidates: int = Field(300, ge=2)
    n_show: int = Field(10, ge=1)
    n_permutations: int = Field(20, ge=1)
    max_test: int | None = Field(None, ge=2)
    threads: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _checks(self) -> ReconstructStageConfig:
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin})")
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        both = sorted(set(self.subjects or []) & set(self.new_subjects))
        if both:
            raise ValueError(f"subjects {both} are both trained and new")
        from ..models.vision.config import load_reconstruction_config

        load_reconstruction_config(self.model, **self.params)
        return self


# ---- trials ---------------------------------------------------------------------------------

def average_repeats(trials: Any) -> Any:
    """One trial per image: the mean of the trials that showed it (in first-shown order)."""
    from ..data.subjects import SubjectTrials

    keys = np.asarray(trials.keys)
    _, first = np.unique(keys, return_index=True)
    order = np.sort(first)
    X = np.stack([trials.X[keys == keys[i]].mean(axis=0) for i in order]).astype(np.float32)
    table = trials.table.iloc[order].reset_index(drop=True).copy()
    table["stop"] = [trials.table["stop"].to_numpy()[keys == keys[i]].max() for i in order]
    table["n_repeats"] = [int((keys == keys[i]).sum()) for i in order]
    return SubjectTrials(trials.subject, X, None if trials.y is None else trials.y[order], table,
                         trials.ch_names, trials.positions, trials.sfreq, trials.coord_frame,
                         keys[order], trials.regions)


def _split_by_intervals(trials: Any, recordings: Sequence[Any]) -> dict[str, Any]:
    """The subject's trials inside each stored interval kind (train / valid / test)."""
    from ..data.splits import check_split
    from ..schema import intervals_frame

    side = np.full(len(trials), "", dtype=object)
    table = trials.table
    for rec in recordings:
        if rec.identity["subject"] != trials.subject:
            continue
        iv = intervals_frame(rec.ds)
        mine = (table["recording"] == rec.id).to_numpy()
        for row in iv.itertuples():
            inside = mine & (table["start"].to_numpy() >= row.start) & (
                table["stop"].to_numpy() <= row.stop)
            side[inside] = row.split
    parts = {name: trials.select(np.flatnonzero(side == name)) for name in
             ("train", "valid", "test")}
    empty = [k for k in ("train", "test") if not len(parts[k])]
    if empty:
        raise StageError(f"stage reconstruct: subject {trials.subject}: no trial lies inside "
                         f"its stored {' or '.join(empty)} interval(s)")
    fit = np.flatnonzero(np.isin(side, ["train", "valid"]))
    check_split(table, fit, np.flatnonzero(side == "test"), within_recording=True)
    return parts


def _region_response(trials: Any, regions: np.ndarray, region: str, mean: np.ndarray,
                     std: np.ndarray) -> np.ndarray:
    sel = regions == region
    z = (trials.X - mean) / std
    return z[:, :, sel].mean(axis=(1, 2))


# ---- scoring --------------------------------------------------------------------------------

def _score(method_images: Mapping[str, np.ndarray], target: np.ndarray, *, features: Mapping,
           embeddings: Mapping[str, tuple[Any, Any]], n_candidates: int) -> dict[str, Any]:
    from ..evaluate.reconstruction import score_reconstructions

    out = {}
    for name, images in method_images.items():
        pred_emb, target_emb = embeddings.get(name, (None, None))
        out[name] = score_reconstructions(images, target, features=features,
                                          pred_embedding=pred_emb, target_embedding=target_emb,
                                          n_candidates=n_candidates)
    return out


def _chance(target: np.ndarray, n_candidates: int, n_permutations: int, seed: int
            ) -> dict[str, float]:
    from ..evaluate.reconstruction import chance_levels, shuffled_scores

    shuffled = shuffled_scores(target, target, n_permutations=n_permutations, seed=seed)
    return {**chance_levels(min(n_candidates, len(target))),
            **{k: float(v) for k, v in shuffled.items()}}


def _subject_result(rec_model: Any, test: Any, train: Any, stimuli: np.ndarray,
                    features: Mapping, config: ReconstructStageConfig, *, kind: str,
                    fraction: float | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch

    from ..data.images import as_array, resize
    from ..evaluate.image_baselines import RidgeToPixels, nearest_training_image
    from ..models.vision.reconstructor import time_mean, trial_image_ids

    size = rec_model.config_.image_size
    ids = trial_image_ids(test)
    target = as_array(resize(stimuli[ids], size))
    start = time.perf_counter()
    recon = rec_model.reconstruct(test, seed=config.seed)
    seconds = time.perf_counter() - start

    train_ids = trial_image_ids(train)
    ridge = RidgeToPixels().fit(train.X.reshape(len(train), -1), stimuli[train_ids])
    ridge_images = as_array(ridge.predict(test.X.reshape(len(test), -1)))
    # the same on each trial's time-averaged response (fewer features: often stronger)
    ridge_mean = RidgeToPixels().fit(time_mean(train), stimuli[train_ids])
    ridge_mean_images = as_array(ridge_mean.predict(time_mean(test)))
    bank = np.unique(rec_model.train_image_ids_)
    bank_tokens = rec_model.image_tokens(stimuli[bank]).reshape(len(bank), -1)
    pred_tokens = torch.as_tensor(recon.tokens).reshape(len(recon), -1)
    near_images, _ = nearest_training_image(pred_tokens.numpy(), bank_tokens.numpy(),
                                            resize(stimuli[bank], size))
    near_images = as_array(near_images)
    target_tokens = rec_model.image_tokens(target).reshape(len(target), -1).numpy()

    def own(images: np.ndarray) -> np.ndarray:
        return rec_model.image_tokens(images).reshape(len(images), -1).numpy()

    # with ``combine: mean`` the brain-selected sample is scored beside the samples' mean
    also = rec_model.sampling_plan()["combine"] == "mean" and recon.candidates.shape[1] > 1
    best = {"best_sample": recon.selected} if also else {}
    methods = {"reconstruction": recon.images, **best, "lowlevel": recon.lowlevel,
               "ridge_to_pixels": ridge_images, "nearest_training_image": near_images,
               "ridge_time_mean": ridge_mean_images}
    embeddings = {"reconstruction": (pred_tokens.numpy(), target_tokens),
                  **{k: (own(v), target_tokens) for k, v in best.items()},
                  "lowlevel": (own(recon.lowlevel), target_tokens),
                  "ridge_to_pixels": (own(ridge_images), target_tokens),
                  "nearest_training_image": (own(near_images), target_tokens),
                  "ridge_time_mean": (own(ridge_mean_images), target_tokens)}
    scores = _score(methods, target, features=features, embeddings=embeddings,
                    n_candidates=config.n_candidates)
    row = {"subject": test.subject, "kind": kind, "fraction": fraction,
           "n_train_trials": int(len(train)), "n_test": int(len(test)),
           "methods": scores,
           "chance": _chance(target, config.n_candidates, config.n_permutations, config.seed),
           "sample_seconds": seconds, "sample_images_per_s": len(recon) / max(seconds, 1e-9),
           "unet_evals_per_image": recon.unet_evals_per_image,
           "n_samples": int(recon.candidates.shape[1])}
    k = min(config.n_show, len(target))
    grid = {"seen": target[:k], "reconstruction": recon.images[:k],
            **({"best sample": recon.selected[:k]} if best else {}),
            "low-level": recon.lowlevel[:k], "ridge to pixels": ridge_images[:k],
            "nearest train": near_images[:k]}
    return row, grid


# ---- the job --------------------------------------------------------------------------------

def reconstruct(config: ReconstructStageConfig, stores: Sequence[str | Path],
                out: str | Path) -> dict[str, Any]:
    """Run one ``reconstruct`` job; write the output folder ``out``.

    Parameters
    ----------
    config : ReconstructStageConfig
    stores : sequence of path-like
        Store paths or folders of stores.
    out : path-like
        The output folder (created).

    Returns
    -------
    dict
        A summary for the provenance record.
    """
    from ..data.images import as_array
    from ..evaluate.cv import _jsonable
    from ..models.vision import Reconstructor
    from ..models.vision.features import RandomCNNFeatures
    from ..models.vision.reconstructor import trial_image_ids
    from ..report.figures import image_grid
    from ..store import read_stimuli
    from .cross_subject import compute_threads, subject_samples
    from .decode import EpochsSamples, open_stores

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    selection = EpochsSamples(kind="epochs", modality=config.modality, task=config.task,
                              tmin=config.tmin, tmax=config.tmax, labels=[config.event],
                              l_freq=config.l_freq)
    recs = open_stores(stores, selection, stage="reconstruct")
    stim_path = Path(config.stimuli) if config.stimuli else _stimuli_beside(stores)
    try:
        stimuli_store = read_stimuli(stim_path)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"stage reconstruct: {err}") from None
    stimuli = as_array(stimuli_store["images"])

    with compute_threads(config.threads):
        trials = subject_samples(recs, selection, "value", stage="reconstruct")
        missing = sorted(set(config.new_subjects) - set(trials))
        if missing:
            raise StageError(f"stage reconstruct: new subject(s) {missing} have no store "
                             f"(subjects found: {sorted(trials)})")
        trained = config.subjects or [s for s in sorted(trials) if s not in config.new_subjects]
        unknown = sorted(set(trained) - set(trials))
        if unknown or not trained:
            raise StageError(f"stage reconstruct: trained subject(s) {unknown or trained} "
                             f"have no store (subjects found: {sorted(trials)})")
        parts = {s: _split_by_intervals(trials[s], recs) for s in [*trained,
                                                                     *config.new_subjects]}
        for s, p in parts.items():
            bad = trial_image_ids(p["test"])
            if bad.max(initial=-1) >= len(stimuli):
                raise StageError(f"stage reconstruct: subject {s}: image id {int(bad.max())} "
                                 f"is beyond the {len(stimuli)} images of {stim_path}")
        test_ids = np.unique(np.concatenate([trial_image_ids(p["test"]) for p in
                                             parts.values()]))
        fit_ids = np.unique(np.concatenate([trial_image_ids(p[k]) for p in parts.values()
                                            for k in ("train", "valid") if len(p[k])]))
        overlap = np.intersect1d(test_ids, fit_ids)
        if overlap.size:
            raise StageError(f"stage reconstruct: {overlap.size} test image(s) (e.g. id "
                             f"{int(overlap[0])}) are also shown in training or validation "
                             "trials: the test images must be held out")

        model = Reconstructor(config.model if not config.params else
                              _merged(config.model, config.params), seed=config.seed)
        model.fit({s: parts[s]["train"] for s in trained},
                  {s: parts[s]["valid"] for s in trained if len(parts[s]["valid"])}, stimuli)
        features = {"encoder": model.encoder_.embed, "random_cnn": RandomCNNFeatures()}

        def test_of(s: str) -> Any:
            test = parts[s]["test"]
            test = average_repeats(test) if config.average_repeats else test
            return test.first(config.max_test) if config.max_test else test

        rows, grids = [], {}
        for s in trained:
            row, grid = _subject_result(model, test_of(s), parts[s]["train"], stimuli,
                                        features, config, kind="trained", fraction=None)
            rows.append(row)
            grids[s] = grid
        reference = {s: parts[s]["train"] for s in trained}
        adapted = model
        for s in config.new_subjects:
            pool = parts[s]["train"]
            for fraction in sorted(config.fractions):
                few = pool.fraction(fraction, min_samples=8)
                adapted = model.adapt(few, None, stimuli, strategy=config.strategy,
                                      reference=reference)
                row, grid = _subject_result(adapted, test_of(s), few, stimuli, features,
                                            config, kind="new", fraction=fraction)
                row["adapt_seconds_of_data"] = float(few.duration())
                row["adapt_last_stop"] = float(few.table["stop"].max())
                row["test_first_start"] = float(parts[s]["test"].table["start"].min())
                rows.append(row)
                grids[f"{s} ({fraction:g})"] = grid

        braindive = _braindive(model, parts, trained, recs, stimuli, out)

    for name, grid in grids.items():
        safe = name.replace(" ", "_").replace("(", "").replace(")", "")
        (out / f"grid_{safe}.png").write_bytes(image_grid(grid))
    adapted.samples_ = {"modality": config.modality, "task": config.task,
                        "event": config.event, "tmin": config.tmin, "tmax": config.tmax,
                        "l_freq": config.l_freq, "average_repeats": config.average_repeats}
    adapted.save(out / "model.pt")
    size = model.config_.image_size
    metrics = {
        "analysis": config.analysis,
        "description": config.description,
        "model": model.config_.name,
        "image_size": size,
        "encoder": model.config_.encoder.kind if not model.pretrained_renderer else "pretrained",
        "renderer": model.config_.renderer.kind,
        "subjects": trained,
        "new_subjects": list(config.new_subjects),
        "n_images": int(len(stimuli)),
        "n_test_images": int(len(test_ids)),
        "n_fit_images": int(len(model.train_image_ids_)),
        "sampling": model.sampling_plan(),
        "timings": {**model.timings_, "total_s": time.perf_counter() - started},
        "rows": rows,
        "braindive": braindive,
        "grids": {name: f"grid_{name.replace(' ', '_').replace('(', '').replace(')', '')}.png"
                  for name in grids},
        "leakage": {"test_images_in_fit": 0, "split": "stored intervals; test images held out"},
        "stimuli": str(stim_path),
    }
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    return {"subjects": len(rows), "n_test_images": int(len(test_ids))}


def apply_model(model_path: str | Path, stores: Sequence[str | Path], out: str | Path, *,
                split: str | None = "test", stimuli: str | Path | None = None,
                subjects: Sequence[str] | None = None, seed: int = 0, n_show: int = 10
                ) -> dict[str, Any]:
    """Reconstruct the trials of stores with a trained model (``neurodecode reconstruct``).

    Trials are cut as the model's were (its saved ``samples_``); each subject must be one the
    model serves. The output folder (written whole, then moved into place) gets one PNG per
    trial under ``images/<subject>/``, ``grid_<subject>.png`` and ``reconstructions.json``
    (per trial: recording, onset, image id, the selected sample and the selection scores; with a
    stimulus store, the scores of the reconstructions against the seen images).

    Parameters
    ----------
    model_path : path-like
        A ``model.pt`` of the ``reconstruct`` stage.
    stores : sequence of path-like
    out : path-like
    split : {"train", "valid", "test"} or None
        Only the trials inside this stored interval (None: every trial).
    stimuli : path-like, optional
        A stimulus store (default ``stimuli.zarr`` beside the stores, if there is one): the seen
        images go beside the reconstructions in the grids, and the scores are computed.
    subjects : sequence of str, optional
    seed : int
    n_show : int

    Returns
    -------
    dict
        The content of ``reconstructions.json`` without the per-trial rows.
    """
    import shutil
    import tempfile

    from PIL import Image

    from ..data.images import as_array, resize
    from ..evaluate.cv import _jsonable
    from ..models.vision import Reconstructor
    from ..models.vision.features import RandomCNNFeatures
    from ..report.figures import image_grid
    from ..store import read_stimuli
    from .cross_subject import subject_samples
    from .decode import EpochsSamples, open_stores

    model = Reconstructor.load(model_path)
    spec = model.samples_
    if not spec:
        raise StageError(f"{model_path}: the checkpoint does not say how its trials were cut")
    selection = EpochsSamples(kind="epochs", modality=spec.get("modality"),
                              task=spec.get("task"), subjects=list(subjects) if subjects
                              else None, tmin=spec["tmin"], tmax=spec["tmax"],
                              labels=[spec["event"]], l_freq=spec.get("l_freq"))
    recs = open_stores(stores, selection, stage="reconstruct")
    trials = subject_samples(recs, selection, "value", stage="reconstruct")
    unknown = sorted(set(trials) - set(model.subjects_))
    if unknown:
        raise StageError(f"{model_path}: the model does not serve subject(s) {unknown} (it "
                         f"serves {model.subjects_}): adapt it to them first")
    stim = None
    if stimuli is not None or _has_stimuli(stores):
        path = Path(stimuli) if stimuli is not None else _stimuli_beside(stores)
        try:
            stim = as_array(read_stimuli(path)["images"])
        except (FileNotFoundError, ValueError) as err:
            raise StageError(str(err)) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        summary: dict[str, Any] = {"model": str(model_path), "split": split, "subjects": {}}
        rows = []
        for s, t in trials.items():
            if split is not None:
                t = _split_by_intervals(t, recs)[split] if split != "all" else t
            if spec.get("average_repeats") and split == "test":
                t = average_repeats(t)
            if not len(t):
                continue
            recon = model.reconstruct(t, seed=seed)
            folder = tmp / "images" / s
            folder.mkdir(parents=True, exist_ok=True)
            for i, (img, row) in enumerate(zip(recon.images, t.table.itertuples(),
                                               strict=True)):
                name = f"trial-{i:04d}_image-{int(row.value):05d}.png"
                Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / name)
                rows.append({"subject": s, "recording": str(row.recording),
                             "onset": float(row.onset), "image_id": int(row.value),
                             "file": f"images/{s}/{name}", "chosen": int(recon.chosen[i]),
                             "selection_scores": recon.selection_scores[i].tolist()})
            k = min(n_show, len(recon))
            grid = {"reconstruction": recon.images[:k]}
            if recon.candidates.shape[1] > 1 and model.sampling_plan()["combine"] == "mean":
                grid["best sample"] = recon.selected[:k]
            grid["low-level"] = recon.lowlevel[:k]
            entry: dict[str, Any] = {"n_trials": len(recon),
                                     "unet_evals_per_image": recon.unet_evals_per_image,
                                     "seconds": recon.seconds}
            if stim is not None:
                from ..evaluate.reconstruction import score_reconstructions

                ids = np.asarray(t.keys, dtype=np.int64)
                target = as_array(resize(stim[ids], model.config_.image_size))
                grid = {"seen": target[:k], **grid}
                if len(recon) >= 2:
                    entry["scores"] = score_reconstructions(
                        recon.images, target,
                        features={"encoder": model.encoder_.embed,
                                  "random_cnn": RandomCNNFeatures()},
                        pred_embedding=recon.tokens.reshape(len(recon), -1),
                        target_embedding=model.image_tokens(target).reshape(len(target), -1)
                        .numpy())
            (tmp / f"grid_{s}.png").write_bytes(image_grid(grid))
            summary["subjects"][s] = entry
        if not rows:
            raise StageError(f"no trial of the stores lies in their {split!r} intervals")
        (tmp / "reconstructions.json").write_text(
            json.dumps(_jsonable({**summary, "trials": rows}), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _jsonable(summary)


def _has_stimuli(stores: Sequence[str | Path]) -> bool:
    try:
        _stimuli_beside(stores)
    except StageError:
        return False
    return True


def _braindive(model: Any, parts: Mapping[str, Any], trained: Sequence[str], recs: Sequence[Any],
               stimuli: np.ndarray, out: Path) -> dict[str, Any] | None:
    """Fit the region's encoding model, synthesise, summarise; None when switched off."""
    from ..data.images import as_array, resize
    from ..models.vision.braindive import RegionEncodingModel, braindive_summary, synthesize
    from ..models.vision.reconstructor import trial_image_ids
    from ..report.figures import image_grid

    cfg = model.config_.braindive
    if cfg.scale <= 0 or model.diffusion_ is None:
        return None
    fit_images, fit_y, val_images, val_y = [], [], [], []
    for s in trained:
        regions = _regions(recs, s, parts[s]["train"].ch_names)
        if not np.any(regions == cfg.region):
            continue
        train, val = parts[s]["train"], parts[s]["valid"]
        mean = train.X.mean(axis=(0, 1))
        std = train.X.std(axis=(0, 1)) + 1e-6
        fit_images.append(stimuli[trial_image_ids(train)])
        fit_y.append(_region_response(train, regions, cfg.region, mean, std))
        if len(val):
            val_images.append(stimuli[trial_image_ids(val)])
            val_y.append(_region_response(val, regions, cfg.region, mean, std))
    if not fit_images:
        return {"region": cfg.region, "error": f"no trained subject has a region "
                                               f"{cfg.region!r}"}
    size = model.config_.image_size
    region = RegionEncodingModel(cfg.ridge_alpha).fit(
        model.encoder_, resize(np.concatenate(fit_images), size), np.concatenate(fit_y))
    val_r = (region.score(resize(np.concatenate(val_images), size), np.concatenate(val_y))
             if val_images else None)
    rng = np.random.default_rng(model.config_.seed)
    bank = model.train_image_ids_
    cond = bank[rng.choice(len(bank), size=cfg.n_images, replace=len(bank) < cfg.n_images)]
    tokens = model.image_tokens(stimuli[cond])
    guided, unguided = synthesize(model.diffusion_, region, tokens, scale=cfg.scale,
                                  steps=cfg.steps, seed=model.config_.seed)
    random_ids = bank[rng.choice(len(bank), size=min(64, len(bank)), replace=False)]
    random_stim = as_array(resize(stimuli[random_ids], size))
    feature = _region_feature(recs, trained, cfg.region)
    summary = braindive_summary(region, guided.images, unguided.images, random_stim,
                                feature=feature, seed=model.config_.seed)
    summary.update(region=cfg.region, scale=cfg.scale, steps=cfg.steps,
                   validation_r=val_r, n_fit_trials=int(sum(len(y) for y in fit_y)),
                   unet_evals_per_image=int(guided.unet_evals_per_image))
    k = min(cfg.n_images, 10)
    (out / "braindive.png").write_bytes(image_grid({
        f"guided ({cfg.region})": as_array(guided.images)[:k],
        "unguided": as_array(unguided.images)[:k],
        "random stimuli": random_stim[:k]}))
    summary["figure"] = "braindive.png"
    return summary


def _regions(recs: Sequence[Any], subject: str, ch_names: Sequence[str]) -> np.ndarray:
    for rec in recs:
        if rec.identity["subject"] == subject and "region" in rec.ds:
            names = [str(c) for c in rec.ds["channel"].values]
            labels = dict(zip(names, (str(r) for r in rec.ds["region"].values), strict=True))
            return np.array([labels.get(c, "") for c in ch_names])
    return np.full(len(ch_names), "")


def _region_feature(recs: Sequence[Any], subjects: Sequence[str], region: str) -> Any:
    """A simulated subject's ground-truth preferred feature of ``region`` (None if unknown).

    The simulator's encoding model is rebuilt from the recording's ``history`` (its subject
    seed and voxel count); real recordings have none.
    """
    import functools

    from ..simulate_visual import REGIONS, VisualCortex

    if region not in REGIONS:
        return None
    for rec in recs:
        if rec.identity["subject"] not in subjects or "vision" not in rec.ds.attrs:
            continue
        for step in rec.ds.attrs.get("history", []):
            p = step.get("params", {}) if isinstance(step, dict) else {}
            if step.get("step") == "simulate" and "subject_seed" in p:
                cortex = VisualCortex(int(p["subject_seed"]), n_voxels=int(p["n_voxels"]),
                                      image_size=int(p["image_size"]))
                return functools.partial(cortex.region_feature, region=region)
    return None


def _stimuli_beside(stores: Sequence[str | Path]) -> Path:
    for p in map(Path, stores):
        for folder in (p, *p.parents):
            if (folder / "stimuli.zarr").exists():
                return folder / "stimuli.zarr"
    raise StageError("stage reconstruct: no stimuli.zarr beside the stores; set `stimuli:`")


def _merged(model: str, params: Mapping[str, Any]) -> Any:
    from ..models.vision.config import load_reconstruction_config

    return load_reconstruction_config(model, **params)


@register
class ReconstructStage(Stage):
    """Reconstruct seen images from brain activity (trained and few-shot new subjects)."""

    name = "reconstruct"
    Config = ReconstructStageConfig
    inputs = {"stores": Slot("recording stores (and their stimuli.zarr)", folder=True,
                             many=True)}
    outputs = {"reconstruction": Slot("folder: model.pt, metrics.json, image grids",
                                      folder=True)}

    def run(self, config: ReconstructStageConfig, inputs: Mapping[str, list[Path]],
            outputs: Mapping[str, Path]) -> dict[str, Any]:
        return reconstruct(config, inputs["stores"], outputs["reconstruction"])
