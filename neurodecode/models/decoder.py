"""The cross-subject decoder: a scikit-learn-style estimator over the model and its training.

:class:`CrossSubjectDecoder` trains one :class:`~neurodecode.models.cross_subject.CrossSubjectModel`
across subjects (:meth:`~CrossSubjectDecoder.fit`), predicts and scores any subject it serves,
adapts a new subject with one of the few-shot strategies of :mod:`neurodecode.models.fewshot`
(:meth:`~CrossSubjectDecoder.adapt`) and saves/loads itself as one checkpoint
(:mod:`neurodecode.models.checkpoint`). Samples are
:class:`~neurodecode.data.subjects.SubjectTrials`; each subject's channels are standardised with
statistics fitted on its own training samples only.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ..data.subjects import SubjectScaler, SubjectTrials, TrialDataset, subject_loader
from ._fit import fit_lightning
from .adapters.base import SubjectSpec
from .checkpoint import atomic_save, model_from_payload, model_payload, read_checkpoint
from .config import ModelConfig, load_model_config
from .cross_subject import CrossSubjectModel
from .tasks.decode import DecodeTask

__all__ = ["CrossSubjectDecoder", "as_subject_dict", "spec_of"]

#: Folder of the shipped model configs.
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

TrialsLike = SubjectTrials | Sequence[SubjectTrials] | Mapping[str, SubjectTrials]


def as_subject_dict(trials: TrialsLike | None) -> dict[str, SubjectTrials]:
    """Subject name → samples, from one, a sequence or a mapping of :class:`SubjectTrials`."""
    if trials is None:
        return {}
    if isinstance(trials, SubjectTrials):
        return {trials.subject: trials}
    items = list(trials.values()) if isinstance(trials, Mapping) else list(trials)
    out: dict[str, SubjectTrials] = {}
    for t in items:
        if t.subject in out:
            raise ValueError(f"subject {t.subject!r} given twice")
        out[t.subject] = t
    return out


def spec_of(trials: SubjectTrials) -> SubjectSpec:
    """The adapter spec (channel count, positions, names, regions) of a subject's samples."""
    return SubjectSpec.from_arrays(trials.n_channels, trials.positions, trials.ch_names,
                                   trials.regions)


def resolve_config(config: str | os.PathLike | ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """A model config from a path, a shipped name (``models/<name>.yaml``) or a dict."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        return load_model_config(dict(config))
    path = Path(config)
    if not path.suffix and not path.exists() and (MODELS_DIR / f"{path}.yaml").is_file():
        path = MODELS_DIR / f"{path}.yaml"
    return load_model_config(path)


class CrossSubjectDecoder(BaseEstimator):
    """One decoder across subjects, adaptable to new subjects from few samples.

    Parameters
    ----------
    config : path-like, str, dict or ModelConfig
        A model config (``models/*.yaml``, or the name of a shipped one such as
        ``"cross_subject_fmri"``).
    max_epochs, batch_size, patience, seed : int, optional
        Override the config's ``train`` values.
    pretrained : path-like or CodebookPretrainer, optional
        A codebook pretraining (:class:`~neurodecode.models.codebook.CodebookPretrainer` or
        its checkpoint) of the same adapter and backbone: :meth:`fit` starts from its weights
        (fine-tuning) instead of a random initialisation.
    accelerator : str
        Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``).
    verbose : bool
        Show Lightning's messages and progress bar.

    Attributes
    ----------
    model_ : CrossSubjectModel
    config_ : ModelConfig
    classes_ : ndarray of str or None
        Class names (classification).
    scaler_ : SubjectScaler
        Per-subject channel statistics, each fitted on that subject's training samples.
    history_ : list of dict
        Per-epoch training record of the last fit or adaptation.
    fit_seconds_ : float
    """

    def __init__(self, config: str | os.PathLike | ModelConfig | Mapping[str, Any]
                 = "cross_subject_fmri", *, max_epochs: int | None = None,
                 batch_size: int | None = None, patience: int | None = None,
                 seed: int | None = None, pretrained: Any = None, accelerator: str = "cpu",
                 verbose: bool = False) -> None:
        self.config = config
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.pretrained = pretrained
        self.accelerator = accelerator
        self.verbose = verbose

    # ---- configuration --------------------------------------------------------------------

    def _config(self) -> ModelConfig:
        cfg = resolve_config(self.config)
        train = {k: v for k, v in {"max_epochs": self.max_epochs, "batch_size": self.batch_size,
                                   "patience": self.patience, "seed": self.seed}.items()
                 if v is not None}
        if train:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
        return cfg

    # ---- targets --------------------------------------------------------------------------

    def _encode_y(self, trials: SubjectTrials) -> np.ndarray:
        if trials.y is None:
            raise ValueError(f"subject {trials.subject}: samples have no target")
        if self.config_.task == "classify":
            index = {c: i for i, c in enumerate(self.classes_)}
            unknown = sorted({str(v) for v in trials.y} - set(index))
            if unknown:
                raise ValueError(f"subject {trials.subject}: labels {unknown} are not among the "
                                 f"classes {list(self.classes_)}")
            return np.array([index[str(v)] for v in trials.y], dtype=np.int64)
        y = np.asarray(trials.y, dtype=np.float32)
        return y.reshape(len(y), -1)

    def _dataset(self, trials: Mapping[str, SubjectTrials], model: CrossSubjectModel,
                 labelled: bool = True) -> TrialDataset:
        arrays = []
        for name, t in trials.items():
            index = int(model.subject_index([name])[0])
            arrays.append((index, self.scaler_.transform(t),
                           self._encode_y(t) if labelled else None))
        return TrialDataset(arrays)

    # ---- training -------------------------------------------------------------------------

    def fit(self, train: TrialsLike, val: TrialsLike | None = None, *,
            classes: Sequence[str] | None = None) -> CrossSubjectDecoder:
        """Train the shared model on every subject's training samples.

        Parameters
        ----------
        train : SubjectTrials, sequence or mapping of them
            Each subject's training samples (its channel scaling is fitted on these).
        val : SubjectTrials, sequence or mapping, optional
            Validation samples of the same subjects (later in time, or other runs): early
            stopping and the kept weights (lowest validation loss) use these only.

        Returns
        -------
        CrossSubjectDecoder
            ``self``.
        """
        train_d, val_d = as_subject_dict(train), as_subject_dict(val)
        if not train_d:
            raise ValueError("no training subject")
        unknown = sorted(set(val_d) - set(train_d))
        if unknown:
            raise ValueError(f"validation subjects {unknown} have no training samples")
        self.config_ = cfg = self._config()
        n_times = {t.n_times for t in train_d.values()}
        if len(n_times) > 1:
            raise ValueError(f"samples of different lengths across subjects: {sorted(n_times)}")
        self.n_times_ = n_times.pop()
        if cfg.task == "classify":
            found = {str(v) for t in train_d.values() for v in t.y}
            if classes is not None and found - {str(c) for c in classes}:
                raise ValueError(f"labels {sorted(found - set(map(str, classes)))} are not "
                                 f"among the classes {list(classes)}")
            self.classes_ = np.array(sorted(found if classes is None else map(str, classes)))
            if len(self.classes_) < 2:
                raise ValueError(f"the training samples hold one class only "
                                 f"({self.classes_[0]!r}); pass classes= with every class")
            n_outputs = len(self.classes_)
        else:
            self.classes_ = None
            first = next(iter(train_d.values()))
            n_outputs = int(np.asarray(first.y, np.float32).reshape(len(first), -1).shape[1])
        self.scaler_ = SubjectScaler()
        for t in train_d.values():
            self.scaler_.fit(t)
        pre = self.pretrained
        if pre is not None:
            from .codebook.pretrainer import CodebookPretrainer

            if not isinstance(pre, CodebookPretrainer):
                pre = CodebookPretrainer.load(pre)  # before seeding: it draws initial weights
        torch.manual_seed(cfg.train.seed)
        task = DecodeTask(cfg.model_dump(mode="json"),
                          {n: spec_of(t).to_dict() for n, t in train_d.items()}, self.n_times_,
                          n_outputs, None if self.classes_ is None else list(self.classes_))
        self.model_ = task.model
        self.pretrained_adapters_: dict[str, dict[str, torch.Tensor]] = {}
        if pre is not None:
            from .codebook.pretrainer import transfer

            self.pretrained_adapters_ = transfer(pre, task.model)
        self._train(task, train_d, val_d, cfg.train.max_epochs, cfg.train.patience)
        return self

    def _train(self, task: DecodeTask, train: Mapping[str, SubjectTrials],
               val: Mapping[str, SubjectTrials], max_epochs: int, patience: int) -> None:
        cfg = self.config_.train
        width = max(s.n_channels for s in task.model.specs.values())
        train_loader = subject_loader(self._dataset(train, task.model), width, train=True,
                                      batch_size=cfg.batch_size, seed=cfg.seed)
        val_loader = None
        if val and sum(len(v) for v in val.values()):
            val_loader = subject_loader(self._dataset(val, task.model), width, train=False,
                                        batch_size=cfg.batch_size)
        task.model.train()
        record = fit_lightning(task, train_loader, val_loader, max_epochs=max_epochs,
                               patience=patience, precision=cfg.precision,
                               accelerator=self.accelerator, verbose=self.verbose)
        task.model.to("cpu").eval()
        self.history_ = record.history
        self.best_epoch_ = record.best_epoch
        self.epochs_ = record.epochs
        self.fit_seconds_ = record.seconds
        self.seen_indices_ = (np.concatenate(task.seen_indices) if task.seen_indices
                              else np.zeros(0, int))

    # ---- prediction -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this CrossSubjectDecoder is not fitted: call fit() or load()")

    @torch.no_grad()
    def decision_function(self, trials: SubjectTrials) -> np.ndarray:
        """Head outputs (logits, values or embeddings) for one subject's samples."""
        self._check_fitted()
        model = self.model_.eval()
        ds = self._dataset({trials.subject: trials}, model, labelled=False)
        width = max(s.n_channels for s in model.specs.values())
        outs = [model(b["x"], b["subject"]).float() for b in
                subject_loader(ds, width, train=False, batch_size=256)]
        return torch.cat(outs).numpy() if outs else np.zeros((0, model.n_outputs), np.float32)

    def predict(self, trials: SubjectTrials) -> np.ndarray:
        """Predicted class names, target values or embeddings for one subject's samples."""
        out = self.decision_function(trials)
        if self.config_.task == "classify":
            return self.classes_[out.argmax(axis=1)]
        return out[:, 0] if out.shape[1] == 1 and np.ndim(trials.y) == 1 else out

    def score(self, trials: SubjectTrials) -> float:
        """The head's metric (balanced accuracy, R² or top-1 retrieval) on one subject."""
        out = torch.as_tensor(self.decision_function(trials))
        y = torch.as_tensor(self._encode_y(trials))
        return float(self.model_.head.score(out, y))

    @property
    def metric(self) -> str:
        """Name of :meth:`score`'s figure."""
        self._check_fitted()
        return self.model_.head.metric

    @property
    def subjects_(self) -> list[str]:
        """Subjects the decoder serves."""
        self._check_fitted()
        return list(self.model_.subject_names)

    # ---- new subjects ---------------------------------------------------------------------

    def adapt(self, train: SubjectTrials | None, val: SubjectTrials | None = None, *,
              strategy: str = "a", **options: Any) -> CrossSubjectDecoder:
        """A copy of this decoder that also serves a new subject.

        See :func:`neurodecode.models.fewshot.adapt` for the strategies and options.
        """
        from .fewshot import adapt

        return adapt(self, train, val, strategy=strategy, **options)

    def copy(self) -> CrossSubjectDecoder:
        """A deep copy (the model included)."""
        return copy.deepcopy(self)

    # ---- persistence ----------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The checkpoint payload :meth:`save` writes (plain types and tensors), in memory."""
        self._check_fitted()
        extra = {"classes": None if self.classes_ is None else [str(c) for c in self.classes_],
                 "scaler": self.scaler_.state_dict(), "n_times": int(self.n_times_),
                 "history": getattr(self, "history_", []),
                 "adaptations": getattr(self, "adaptations_", []),
                 "pretrained_adapters": getattr(self, "pretrained_adapters_", {})}
        return model_payload(self.model_, extra=extra)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the decoder (model, classes, scaling statistics) to one checkpoint file."""
        return atomic_save(self.to_payload(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, **params: Any) -> CrossSubjectDecoder:
        """Load a decoder written by :meth:`save` (``torch.load(weights_only=True)``)."""
        return cls.from_payload(read_checkpoint(path), where=str(path), **params)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, where: str = "checkpoint",
                     **params: Any) -> CrossSubjectDecoder:
        """A decoder from a payload of :meth:`to_payload` (``where`` names it in errors)."""
        model, extra = model_from_payload(payload, where=where)
        dec = cls(model.config, **params)
        dec.config_ = model.config
        dec.model_ = model.eval()
        dec.classes_ = None if extra.get("classes") is None else np.array(extra["classes"])
        dec.scaler_ = SubjectScaler()
        dec.scaler_.load_state_dict(extra.get("scaler", {}))
        dec.n_times_ = int(extra.get("n_times", model.n_times))
        dec.history_ = list(extra.get("history", []))
        dec.adaptations_ = list(extra.get("adaptations", []))
        dec.pretrained_adapters_ = dict(extra.get("pretrained_adapters", {}))
        return dec
