"""Codebook pretraining as an estimator: unlabelled windows of many subjects → a pretrained encoder.

:class:`CodebookPretrainer` runs both stages of Du-IN-style pretraining on unlabelled windows
(:class:`~neurodecode.data.subjects.SubjectTrials` with no target, any montage per subject):
the VQ-VAE tokenizer (:class:`~.model.SegmentVQVAE`), then the masked-code model
(:class:`~.model.MaskedCodeModel`), each with early stopping on validation windows (the last
part in time of every subject's windows unless given). Its adapter and backbone initialise a
:class:`~neurodecode.models.decoder.CrossSubjectDecoder` built from the same model config
(``CrossSubjectDecoder(config, pretrained=...)``), which is fine-tuned on labels.

Checkpoints are one ``torch.save`` file of plain types and tensors
(``torch.load(weights_only=True)``)::

    {"format": "neurodecode.codebook", "version": 1, "config": {...}, "n_times": int,
     "subjects": {name: SubjectSpec}, "tokenizer": {key: tensor}, "encoder": {key: tensor},
     "extra": {"scaler": ..., "history": ..., "health": ..., "fit_seconds": ...}}
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ...data.subjects import SubjectScaler, SubjectTrials, TrialDataset, subject_loader
from .._fit import fit_lightning
from ..adapters.base import SubjectSpec
from ..checkpoint import atomic_save, read_payload
from ..config import ModelConfig
from ..cross_subject import CrossSubjectModel
from ..decoder import TrialsLike, as_subject_dict, resolve_config, spec_of
from .model import MaskedCodeModel, SegmentVQVAE, random_segment_mask, valid_groups
from .quantizer import CodebookHealth, perplexity

__all__ = ["FORMAT", "CodebookPretrainer", "transfer"]

FORMAT = "neurodecode.codebook"
VERSION = 1
#: layers :meth:`CodebookPretrainer.features` reads
FEATURE_LAYERS = ("embed", "tokens")


class CodebookPretrainer(BaseEstimator):
    """Self-supervised codebook pretraining across subjects and montages.

    Parameters
    ----------
    config : path-like, str, dict or ModelConfig
        A model config with a ``segment_transformer`` backbone and a ``pretrain`` section (or
        the name of a shipped one, e.g. ``"codebook_seeg"``).
    tokenizer_epochs, masked_epochs, batch_size, seed : int, optional
        Override the config's ``pretrain`` values.
    val_fraction : float
        Share of each subject's windows (the last in time) kept for early stopping when no
        validation windows are given.
    accelerator : str
    verbose : bool

    Attributes
    ----------
    config_ : ModelConfig
    n_times_ : int
    scaler_ : SubjectScaler
        Per-subject channel statistics of the pretraining windows.
    tokenizer_ : SegmentVQVAE
    encoder_ : MaskedCodeModel
    history_ : dict
        ``tokenizer`` and ``masked``: per-epoch records (losses, codebook health).
    health_ : dict
        Codebook health on the validation windows (perplexity, used, dead_fraction...).
    fit_seconds_ : float
    segments_per_s_ : dict
        Training throughput of each stage (segments of all channel groups per second).
    """

    def __init__(self, config: str | os.PathLike | ModelConfig | Mapping[str, Any]
                 = "codebook_seeg", *, tokenizer_epochs: int | None = None,
                 masked_epochs: int | None = None, batch_size: int | None = None,
                 seed: int | None = None, val_fraction: float = 0.15,
                 accelerator: str = "cpu", verbose: bool = False) -> None:
        self.config = config
        self.tokenizer_epochs = tokenizer_epochs
        self.masked_epochs = masked_epochs
        self.batch_size = batch_size
        self.seed = seed
        self.val_fraction = val_fraction
        self.accelerator = accelerator
        self.verbose = verbose

    def _config(self) -> ModelConfig:
        cfg = resolve_config(self.config)
        if cfg.pretrain is None:
            raise ValueError(f"model config {cfg.name!r} has no pretrain section")
        over = {k: v for k, v in {"tokenizer_epochs": self.tokenizer_epochs,
                                  "masked_epochs": self.masked_epochs,
                                  "batch_size": self.batch_size, "seed": self.seed}.items()
                if v is not None}
        if over:
            cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=over)})
        return cfg

    # ---- data -----------------------------------------------------------------------------

    def _dataset(self, trials: Mapping[str, SubjectTrials], names: list[str]) -> TrialDataset:
        arrays = []
        for name, t in trials.items():
            if name not in names:
                raise KeyError(f"subject {name!r} was not in the pretraining; it has {names}")
            arrays.append((names.index(name), self.scaler_.transform(t), None))
        return TrialDataset(arrays)

    def _loader(self, trials: Mapping[str, SubjectTrials], model: SegmentVQVAE
                | MaskedCodeModel, *, train: bool) -> Any:
        width = max(s.n_channels for s in model.specs.values())
        pre = self.config_.pretrain
        return subject_loader(self._dataset(trials, model.subject_names), width, train=train,
                              batch_size=pre.batch_size, seed=pre.seed)

    # ---- training -------------------------------------------------------------------------

    def fit(self, windows: TrialsLike, val: TrialsLike | None = None) -> CodebookPretrainer:
        """Pretrain on unlabelled windows (targets, if any, are ignored).

        Parameters
        ----------
        windows : SubjectTrials, sequence or mapping of them
            Each subject's pretraining windows (its channel scaling is fitted on these).
        val : same, optional
            Validation windows of the same subjects. Default: the last ``val_fraction`` of
            each subject's windows.

        Returns
        -------
        CodebookPretrainer
            ``self``.
        """
        from ..tasks.pretrain import MaskedCodeTask, TokenizerTask  # tasks import this package

        train_d, val_d = as_subject_dict(windows), as_subject_dict(val)
        if not train_d:
            raise ValueError("no pretraining window")
        if val is None:
            split = {n: t.chronological((1 - self.val_fraction, self.val_fraction),
                                        names=("train", "val")) for n, t in train_d.items()}
            train_d = {n: s["train"] for n, s in split.items()}
            val_d = {n: s["val"] for n, s in split.items() if len(s["val"])}
        unknown = sorted(set(val_d) - set(train_d))
        if unknown:
            raise ValueError(f"validation subjects {unknown} have no pretraining windows")
        self.config_ = cfg = self._config()
        pre = cfg.pretrain
        n_times = {t.n_times for t in train_d.values()}
        if len(n_times) > 1:
            raise ValueError(f"windows of different lengths across subjects: {sorted(n_times)}")
        self.n_times_ = n_times.pop()
        self.scaler_ = SubjectScaler()
        for t in train_d.values():
            self.scaler_.fit(t)
        specs = {n: spec_of(t).to_dict() for n, t in train_d.items()}
        start = time.perf_counter()
        torch.manual_seed(pre.seed)
        stage1 = TokenizerTask(cfg.model_dump(mode="json"), specs, self.n_times_)
        rec1 = self._run(stage1, train_d, val_d, pre.tokenizer_epochs)
        self.tokenizer_ = stage1.model.eval()
        encoder = MaskedCodeModel(cfg, self.tokenizer_.specs, self.n_times_)
        encoder.adapter.load_state_dict(self.tokenizer_.adapter.state_dict())
        encoder.backbone.load_state_dict(self.tokenizer_.backbone.state_dict())
        stage2 = MaskedCodeTask.for_models(encoder, self.tokenizer_)
        rec2 = self._run(stage2, train_d, val_d, pre.masked_epochs)
        self.encoder_ = encoder.eval()
        self.tokenizer_.requires_grad_(True)
        self.fit_seconds_ = time.perf_counter() - start
        segs = sum(len(t) for t in train_d.values()) * self._segments_per_window()
        self.segments_per_s_ = {
            "tokenizer": segs * max(rec1.epochs, 1) / max(rec1.seconds, 1e-9),
            "masked": segs * max(rec2.epochs, 1) / max(rec2.seconds, 1e-9)}
        self.history_ = {"tokenizer": rec1.history, "masked": rec2.history}
        check = val_d or train_d
        self.health_ = self.health(check).to_dict()
        return self

    def _segments_per_window(self) -> int:
        bb = self.tokenizer_.backbone
        width = (max(s.n_channels for s in self.tokenizer_.specs.values()) if bb.single
                 else bb.groups)
        return bb.n_segments * width

    def _run(self, task: Any, train: Mapping[str, SubjectTrials],
             val: Mapping[str, SubjectTrials], epochs: int) -> Any:
        pre = self.config_.pretrain
        val_loader = self._loader(val, task.model, train=False) if val else None
        task.model.train()
        record = fit_lightning(task, self._loader(train, task.model, train=True), val_loader,
                               max_epochs=epochs, patience=pre.patience,
                               accelerator=self.accelerator, verbose=self.verbose)
        task.model.to("cpu").eval()
        return record

    # ---- inspection -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise RuntimeError("this CodebookPretrainer is not fitted: call fit() or load()")

    @property
    def subjects_(self) -> list[str]:
        """Subjects seen in pretraining."""
        self._check_fitted()
        return list(self.tokenizer_.subject_names)

    def _batches(self, trials: TrialsLike) -> Any:
        self._check_fitted()
        return self._loader(as_subject_dict(trials), self.tokenizer_, train=False)

    @torch.no_grad()
    def codes(self, trials: SubjectTrials) -> np.ndarray:
        """Code index of every segment of one subject's windows: ``(n, groups, n_segments)``."""
        model = self.tokenizer_.eval()
        out = [model.codes(b["x"], b["subject"]) for b in self._batches(trials)]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def features(self, trials: SubjectTrials, *, layer: str = "embed",
                 regions: Sequence[str] | None = None) -> np.ndarray:
        """Frozen features of one subject's windows, for a linear probe.

        Every segment's token side by side (``n_segments * d_model`` values per window; with
        single-channel tokens, their mean over the subject's channels; with grouped tokens,
        those of every group side by side), from the pretrained (masked-stage) adapter and
        backbone.

        Parameters
        ----------
        trials : SubjectTrials
            Windows of a subject of the pretraining (scaled with its pretraining statistics).
        layer : {"embed", "tokens"}
            The segment tokens before the transformer, or its contextual tokens after it.
        regions : sequence of str, optional
            Single-channel tokens only: their mean over the channels of each of these regions
            (the trials' anatomical labels), side by side (zero for a region the subject has
            no channel in), instead of their mean over all channels.

        Returns
        -------
        ndarray
            ``(n_windows, n_features)``, float32.
        """
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"layer must be one of {FEATURE_LAYERS}, got {layer!r}")
        model = self.encoder_.eval()
        bb = model.backbone
        weight = None if regions is None else _region_weights(trials, regions, bb)
        out = []
        for b in self._batches(trials):
            z = model.encode(b["x"], b["subject"])
            tokens = bb.embed(z) if layer == "embed" else bb.tokens(z)
            if weight is None:
                out.append(bb.pool(tokens, z, flatten=True))
            else:  # (batch, channels, f) -> (batch, regions, f)
                pooled = torch.einsum("cr,bcf->brf", weight, tokens.flatten(2))
                out.append(pooled.flatten(1))
        return torch.cat(out).numpy()

    @torch.no_grad()
    def health(self, trials: TrialsLike) -> CodebookHealth:
        """Codebook usage over windows (their codes' perplexity, codes used, dead share)."""
        model = self.tokenizer_.eval()
        counts = torch.zeros(model.quantizer.codebook_size)
        for b in self._batches(trials):
            index = model.codes(b["x"], b["subject"])
            valid = valid_groups(model, b["subject"], index.shape)
            counts += torch.bincount(index[valid], minlength=len(counts)).float()
        return model.quantizer.health(counts)

    @torch.no_grad()
    def reconstruction_r2(self, trials: TrialsLike) -> float:
        """Variance of the (scaled) channels explained by their reconstruction.

        ``1 - SSE / SS`` pooled over windows and channels, ``SS`` about the pretraining mean
        (zero once scaled): 0 for a reconstruction that predicts the mean, 1 when perfect.
        """
        model = self.tokenizer_.eval()
        sse = sst = 0.0
        for b in self._batches(trials):
            for i, pred in enumerate(model.reconstruction(b["x"], b["subject"])):
                true = b["x"][i, :, : pred.shape[1]]
                sse += float(((pred - true) ** 2).sum())
                sst += float((true**2).sum())
        return 1.0 - sse / sst if sst > 0 else float("nan")

    @torch.no_grad()
    def mask_accuracy(self, trials: TrialsLike, *, seed: int = 0) -> dict[str, float]:
        """Masked-code prediction on windows: top-1 accuracy, and the majority-code rate."""
        self._check_fitted()
        enc, tok = self.encoder_.eval(), self.tokenizer_.eval()
        gen = torch.Generator().manual_seed(seed)
        hits = total = 0
        counts = torch.zeros(tok.quantizer.codebook_size)
        for b in self._batches(trials):
            target = tok.codes(b["x"], b["subject"])
            mask = random_segment_mask(tuple(target.shape), self.config_.pretrain.mask_ratio,
                                       generator=gen)
            use = mask & valid_groups(tok, b["subject"], target.shape)
            pred = enc.logits(b["x"], b["subject"], mask).argmax(dim=-1)
            hits += int((pred[use] == target[use]).sum())
            total += int(use.sum())
            counts += torch.bincount(target[use], minlength=len(counts)).float()
        return {"accuracy": hits / max(total, 1),
                "majority": float(counts.max() / counts.sum()) if total else float("nan"),
                "perplexity": perplexity(counts)}

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pretrained networks, scaling and records to one checkpoint (atomically)."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT, "version": VERSION,
            "config": self.config_.model_dump(mode="json"), "n_times": int(self.n_times_),
            "subjects": {n: s.to_dict() for n, s in self.tokenizer_.specs.items()},
            "tokenizer": {k: v.detach().cpu() for k, v in self.tokenizer_.state_dict().items()},
            "encoder": {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()},
            "extra": {"scaler": self.scaler_.state_dict(), "history": self.history_,
                      "health": self.health_, "fit_seconds": float(self.fit_seconds_),
                      "segments_per_s": self.segments_per_s_}}
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **params: Any) -> CodebookPretrainer:
        """Load a pretrainer written by :meth:`save` (``torch.load(weights_only=True)``)."""
        data = read_payload(path, FORMAT, VERSION, "codebook pretraining checkpoint")
        cfg = ModelConfig.model_validate(data["config"])
        specs = {n: SubjectSpec.from_dict(d) for n, d in data["subjects"].items()}
        n_times = int(data["n_times"])
        tokenizer = SegmentVQVAE(cfg, specs, n_times)
        tokenizer.load_state_dict(data["tokenizer"])
        encoder = MaskedCodeModel(cfg, specs, n_times)
        encoder.load_state_dict(data["encoder"])
        extra = data.get("extra", {})
        pre = cls(cfg, **params)
        pre.config_, pre.n_times_ = cfg, n_times
        pre.tokenizer_, pre.encoder_ = tokenizer.eval(), encoder.eval()
        pre.scaler_ = SubjectScaler()
        pre.scaler_.load_state_dict(extra.get("scaler", {}))
        pre.history_ = extra.get("history", {})
        pre.health_ = extra.get("health", {})
        pre.fit_seconds_ = float(extra.get("fit_seconds", 0.0))
        pre.segments_per_s_ = extra.get("segments_per_s", {})
        return pre


def _compatible(pretrained: ModelConfig, config: ModelConfig) -> None:
    """Raise unless the adapter, backbone and latent of both configs are the same."""
    diffs = []
    if pretrained.latent_dim != config.latent_dim:
        diffs.append(f"latent_dim {pretrained.latent_dim} vs {config.latent_dim}")
    for kind in ("adapter", "backbone"):
        a, b = getattr(pretrained, kind), getattr(config, kind)
        if a.name != b.name:
            diffs.append(f"{kind} {a.name!r} vs {b.name!r}")
            continue
        pa = a.model_dump()["params"]
        pb = b.model_dump()["params"]
        for key in sorted(set(pa) | set(pb)):
            if pa.get(key) != pb.get(key):
                diffs.append(f"{kind}.params.{key} {pa.get(key)!r} vs {pb.get(key)!r}")
    if diffs:
        raise ValueError(f"the pretrained model {pretrained.name!r} does not fit model "
                         f"{config.name!r}: " + "; ".join(diffs))


def _region_weights(trials: SubjectTrials, regions: Sequence[str], backbone: Any
                    ) -> torch.Tensor:
    """``(channel slots, regions)``: weights of each region's mean over a subject's channels."""
    if not backbone.single:
        raise ValueError("regions= pools single-channel tokens by region; this model's tokens "
                         "are not single-channel")
    if trials.regions is None:
        raise ValueError(f"subject {trials.subject}: the trials have no region labels (the "
                         "stores' 'region')")
    labels = np.array(trials.regions)
    weight = torch.zeros(backbone.groups, len(regions))
    for k, r in enumerate(regions):
        hit = np.flatnonzero(labels == r)
        weight[hit, k] = 1.0 / max(len(hit), 1)
    return weight


def transfer(pretrainer: CodebookPretrainer, model: CrossSubjectModel
             ) -> dict[str, dict[str, torch.Tensor]]:
    """Initialise ``model``'s adapter and backbone with the pretrained encoder's weights.

    The backbone and the adapter's shared parts are copied; each subject of ``model`` that was
    in the pretraining gets its pretrained adapter weights, the others keep their fresh ones.

    Returns
    -------
    dict
        Pretrained adapter weights of the pretraining subjects ``model`` does not serve (to
        start a later few-shot adaptation of one of them from its pretrained adapter).
    """
    pretrainer._check_fitted()
    enc = pretrainer.encoder_
    _compatible(pretrainer.config_, model.config)
    if enc.backbone.n_times != model.backbone.n_times:
        raise ValueError(f"the pretrained model takes windows of {enc.backbone.n_times} time "
                         f"steps; these samples have {model.backbone.n_times}")
    model.backbone.load_state_dict(enc.backbone.state_dict())
    state = enc.adapter.state_dict()
    prefix = "subjects."
    shared = {k: v for k, v in state.items() if not k.startswith(prefix)}
    per_subject: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            name, rest = key[len(prefix):].split(".", 1)
            per_subject.setdefault(name, {})[rest] = value
    model.adapter.load_state_dict(shared, strict=False)
    for name, weights in per_subject.items():
        if model.adapter.has_weights(name):
            if model.adapter.specs[name].n_channels != enc.adapter.specs[name].n_channels:
                raise ValueError(f"subject {name!r} has {model.adapter.specs[name].n_channels} "
                                 f"channels here and had {enc.adapter.specs[name].n_channels} "
                                 "in the pretraining")
            model.adapter.subjects[name].load_state_dict(weights)
    return {n: {k: v.clone() for k, v in w.items()} for n, w in per_subject.items()
            if not model.adapter.has_weights(n)}
