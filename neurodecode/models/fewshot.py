"""Few-shot adaptation of a trained cross-subject decoder to a new subject.

Strategies (:data:`STRATEGIES`), each returning a new decoder that also serves the new subject
(the original is left untouched):

``a`` — **adapter** (reset-tuning, MindBridge): a freshly initialised adapter for the new
subject is trained; every shared weight is frozen.
``b`` — **lora**: the new adapter plus low-rank updates (:mod:`.adapters.lora`) of the
backbone's linear and conv layers; the updates are merged into the backbone afterwards.
``c`` — **full**: the new adapter and every shared weight are fine-tuned (smaller learning rate).
``d`` — **align** (MindAligner-style functional alignment): no gradient step. A closed-form
linear map (:class:`~.adapters.alignment.FunctionalAlignment`) sends the new subject's samples
onto each trained subject's responses to the same stimuli (``SubjectTrials.keys``) or labels;
composed with that subject's adapter it becomes the new subject's adapter (the average over
reference subjects, or the best one on the new subject's validation samples).
``e`` — **zero_shot**: nothing is trained; the subject's channel positions enter the spatial
attention and its samples go through the shared subject layer. Needs a position-aware adapter.

Early stopping and every choice (epochs kept, reference subject) use the new subject's
*validation* samples only: those passed as ``val``, or, by default, the last part (in time) of
the adaptation budget itself. The new subject's test samples are never an argument.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..data.subjects import SubjectTrials
from .adapters.alignment import FunctionalAlignment, paired_targets
from .adapters.lora import add_lora, lora_parameters, merge_lora
from .decoder import CrossSubjectDecoder, spec_of
from .tasks.decode import DecodeTask

__all__ = ["STRATEGIES", "adapt", "holdout_split", "parse_strategy"]

#: Strategy letters and names.
STRATEGIES = {"a": "adapter", "b": "lora", "c": "full", "d": "align", "e": "zero_shot"}


def parse_strategy(strategy: str) -> str:
    """The strategy's name, from its letter or name (an error lists the valid ones)."""
    key = str(strategy).strip().lower()
    if key in STRATEGIES:
        return STRATEGIES[key]
    if key in STRATEGIES.values():
        return key
    valid = ", ".join(f"{k} ({v})" for k, v in STRATEGIES.items())
    raise ValueError(f"unknown adaptation strategy {strategy!r}; valid: {valid}")


def holdout_split(trials: SubjectTrials, fraction: float = 0.2, *, min_val: int = 2,
                  min_samples: int = 10) -> tuple[SubjectTrials, SubjectTrials | None]:
    """Split adaptation samples into training and validation, the validation last in time.

    One sample between the two is left out (a gap, so that neighbouring, correlated samples
    are not on both sides). Below ``min_samples`` samples there is no validation set (and
    adaptation runs a fixed number of epochs on all of them).
    """
    n = len(trials)
    n_val = max(min_val, int(round(fraction * n)))
    if n < max(min_samples, n_val + 2):
        return trials, None
    return trials.first(n - n_val - 1), trials.select(np.arange(n - n_val, n))


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def adapt(decoder: CrossSubjectDecoder, train: SubjectTrials | None,
          val: SubjectTrials | None = None, *, strategy: str = "a",
          reference: Mapping[str, SubjectTrials] | None = None,
          align_method: Literal["ridge", "procrustes"] = "ridge",
          align_reference: Literal["mean", "best"] = "mean",
          lora_rank: int = 4, lora_alpha: float = 8.0, lr_scale: float | None = None,
          max_epochs: int | None = None, patience: int | None = None,
          val_fraction: float = 0.2, fixed_epochs: int = 30, seed: int | None = None,
          init: Literal["auto", "random", "align", "pretrained"] = "auto"
          ) -> CrossSubjectDecoder:
    """Adapt a trained decoder to a new subject.

    Parameters
    ----------
    decoder : CrossSubjectDecoder
        A fitted decoder (left unchanged).
    train : SubjectTrials or None
        The new subject's adaptation samples (labelled; for ``zero_shot`` only their signal
        statistics are used, to scale the channels, and no label). Its channel scaling is
        fitted on these.
    val : SubjectTrials, optional
        The new subject's validation samples. Default: the last ``val_fraction`` of ``train``
        (see :func:`holdout_split`).
    strategy : str
        ``a``/``adapter``, ``b``/``lora``, ``c``/``full``, ``d``/``align``, ``e``/``zero_shot``.
    reference : mapping of str to SubjectTrials, optional
        ``align``: trained subjects' samples (their training samples) to align onto; their
        ``keys`` (stimulus ids) pair samples when both sides have them, else the labels do.
    align_method : {"ridge", "procrustes"}
    align_reference : {"mean", "best"}
        Average the adapters aligned onto every reference subject, or keep the one with the
        lowest validation loss.
    lora_rank, lora_alpha : int, float
        Low-rank updates of ``lora``.
    lr_scale : float, optional
        Factor on the config's learning rates (default 1 for ``adapter`` and ``lora``, 0.3 for
        ``full``; ten times smaller from an aligned starting point).
    max_epochs, patience : int, optional
        Default the config's.
    val_fraction : float
    fixed_epochs : int
        Epochs when there is no validation set to stop on.
    seed : int, optional
        Seed of the new adapter's initialisation and the batch order (default the config's).
    init : {"auto", "random", "align", "pretrained"}
        Starting point of the new adapter for ``adapter``, ``lora`` and ``full``: random
        (reset-tuning), the functional alignment of ``align`` (fitted on the training part
        of the budget), or the subject's adapter from an unlabelled codebook pretraining
        (``decoder.pretrained_adapters_``), then fine-tuned. ``"auto"``: ``"pretrained"``
        when the pretraining had the subject, else ``"align"`` when ``reference`` is given
        and the adapter is ``subject_linear``, else ``"random"``.

    Returns
    -------
    CrossSubjectDecoder
        A new decoder serving the trained subjects and the new one; its ``adaptations_`` list
        records the adaptation (strategy, samples, seconds, epochs).
    """
    decoder._check_fitted()
    name = parse_strategy(strategy)
    if train is None and name != "zero_shot":
        raise ValueError(f"strategy {name!r} needs the new subject's adaptation samples")
    subject = train.subject if train is not None else (val.subject if val is not None else None)
    if subject is None:
        raise ValueError("give the new subject's samples (train, or val for zero-shot scaling)")
    if subject in decoder.model_.subject_names and decoder.model_.adapter.has_weights(subject):
        raise ValueError(f"subject {subject!r} is already served by this decoder; adapt a "
                         "subject it was not trained on")
    start = time.perf_counter()
    new = copy.deepcopy(decoder)
    cfg = new.config_.train
    seed = cfg.seed if seed is None else int(seed)
    torch.manual_seed(seed)
    calibration = train if train is not None else val
    new.scaler_.fit(calibration)
    model = new.model_
    record: dict[str, Any] = {"subject": subject, "strategy": name,
                              "n_train": 0 if train is None else len(train)}

    if name == "zero_shot":
        if not model.adapter.zero_shot:
            raise ValueError(f"zero-shot needs a position-aware adapter; this model's is "
                             f"{model.adapter.part_name!r}")
        model.add_subject(subject, spec_of(calibration), weights=False)
        record.update(epochs=0)
    elif name == "align":
        _align(new, train, val, reference, align_method, align_reference, val_fraction, record)
    else:
        fit_train, fit_val = (train, val) if val is not None else holdout_split(
            train, val_fraction)
        pretrained = getattr(new, "pretrained_adapters_", {}).get(subject)
        if init == "auto":
            init = "pretrained" if pretrained is not None else "align" if reference \
                and model.adapter.part_name == "subject_linear" else "random"
        if init == "pretrained":
            if pretrained is None:
                raise ValueError(f"subject {subject!r} was not in this decoder's pretraining")
            model.add_subject(subject, spec_of(train))
            model.adapter.subjects[subject].load_state_dict(pretrained)
        elif init == "align":
            _align(new, fit_train, fit_val, reference, align_method, "mean", val_fraction,
                   record)
        else:
            model.add_subject(subject, spec_of(train))
        record["init"] = init
        if name == "adapter" and not model.adapter.has_weights(subject):
            raise ValueError(f"the {model.adapter.part_name} adapter has no per-subject weights "
                             "to train: use strategy c (full) or b (lora)")
        _freeze(model)
        for p in model.adapter.subject_parameters(subject):
            p.requires_grad_(True)
        lora = None
        if name == "lora":
            add_lora(model.backbone, lora_rank, lora_alpha)
            for p in lora_parameters(model.backbone):
                p.requires_grad_(True)
            lora = {"rank": lora_rank, "alpha": lora_alpha}
        elif name == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        if lr_scale is not None:
            scale = lr_scale
        else:  # a good starting point is refined gently
            scale = (0.3 if name == "full" else 1.0) * (0.1 if init == "align" else 1.0)
        task = DecodeTask.for_model(model, classes=None if new.classes_ is None
                                    else list(new.classes_), lora=lora, lr_scale=scale)
        epochs = max_epochs or cfg.max_epochs
        if fit_val is None:
            epochs = min(epochs, fixed_epochs)
        start_state = None
        if fit_val is not None and init == "align":  # the aligned start is a candidate too
            start_state = copy.deepcopy(model.state_dict()), _val_loss(new, fit_val)
        new._train(task, {subject: fit_train},
                   {} if fit_val is None else {subject: fit_val}, epochs,
                   patience or cfg.patience)
        if start_state is not None and _val_loss(new, fit_val) > start_state[1]:
            model.load_state_dict(start_state[0])  # fine-tuning did not help on validation
            record["kept"] = "aligned start"
        if name == "lora":
            merge_lora(model.backbone)
        for p in model.parameters():
            p.requires_grad_(True)
        record.update(epochs=new.epochs_, best_epoch=new.best_epoch_,
                      n_fit=len(fit_train), n_val=0 if fit_val is None else len(fit_val))
    model.eval()
    record["seconds"] = time.perf_counter() - start
    new.adaptations_ = [*getattr(decoder, "adaptations_", []), record]
    return new


def _keys(trials: SubjectTrials) -> np.ndarray:
    return trials.keys if trials.keys is not None else np.asarray(trials.y).astype(str)


def _align(new: CrossSubjectDecoder, train: SubjectTrials, val: SubjectTrials | None,
           reference: Mapping[str, SubjectTrials] | None, method: str, choose: str,
           val_fraction: float, record: dict[str, Any]) -> None:
    """Strategy ``align``: fold a closed-form map onto each reference into a new adapter."""
    model = new.model_
    if model.adapter.part_name != "subject_linear":
        raise ValueError("functional alignment composes a linear map with a reference "
                         "subject's adapter: it needs the subject_linear adapter, not "
                         f"{model.adapter.part_name!r}")
    if not reference:
        raise ValueError("functional alignment needs reference subjects' samples (reference=)")
    unknown = sorted(set(reference) - set(model.subject_names))
    if unknown:
        raise ValueError(f"reference subjects {unknown} are not served by the decoder")
    if choose == "best" and val is None:
        train, val = holdout_split(train, val_fraction)
        if val is None:  # too few samples to choose on: average over the references
            choose = "mean"
    subject = train.subject
    use_keys = train.keys is not None and all(r.keys is not None for r in reference.values())
    keys = train.keys if use_keys else np.asarray(train.y).astype(str)
    x_new = new.scaler_.transform(train)  # (n, T, C_new)
    candidates = []
    for ref_name, ref in reference.items():
        ref_keys = ref.keys if use_keys else np.asarray(ref.y).astype(str)
        targets, kept = paired_targets(keys, new.scaler_.transform(ref), ref_keys)
        src = x_new[kept].reshape(-1, x_new.shape[2])
        tgt = targets.reshape(-1, targets.shape[2])
        fa = FunctionalAlignment(method=method).fit(src, tgt)
        candidates.append((ref_name, _compose(model, ref_name, fa, train.n_channels)))
    spec = spec_of(train)
    if choose == "best":
        losses = []
        for _, weights in candidates:
            model.add_subject(subject, spec)
            _load_subject(model, subject, weights)
            losses.append(_val_loss(new, val))
        best = int(np.argmin(losses))
        weights, record["reference"] = candidates[best][1], candidates[best][0]
        record["val_losses"] = {c[0]: float(v) for c, v in zip(candidates, losses, strict=True)}
    else:
        weights = {k: torch.stack([c[1][k] for c in candidates]).mean(0)
                   for k in candidates[0][1]}
        record["reference"] = "mean:" + ",".join(c[0] for c in candidates)
    model.add_subject(subject, spec)
    _load_subject(model, subject, weights)
    record.update(epochs=0, method=method, paired_by="stimulus" if use_keys else "label")


def _compose(model: nn.Module, ref: str, fa: FunctionalAlignment, n_channels: int
             ) -> dict[str, torch.Tensor]:
    """Weights of a full-rank subject_linear adapter equal to ``ref``'s adapter after ``fa``."""
    enc = model.adapter.subjects[ref].encode
    layers = list(enc) if isinstance(enc, nn.Sequential) else [enc]
    w = torch.eye(layers[0].in_features, dtype=torch.float64)
    b = torch.zeros(layers[0].in_features, dtype=torch.float64)
    for layer in layers:  # the reference's affine map, as one matrix
        lw = layer.weight.detach().double()
        w = lw @ w
        b = lw @ b + (layer.bias.detach().double() if layer.bias is not None else 0.0)
    coef = torch.as_tensor(fa.coef_, dtype=torch.float64)  # (C_new, C_ref)
    intercept = torch.as_tensor(fa.intercept_, dtype=torch.float64)
    weight = w @ coef.T  # (latent, C_new)
    bias = w @ intercept + b
    return {"weight": weight.float(), "bias": bias.float()}


def _load_subject(model: nn.Module, subject: str, weights: Mapping[str, torch.Tensor]) -> None:
    """Set a new subject's adapter to the affine map ``weights`` (``weight``, ``bias``).

    A low-rank adapter holds the map's best rank-``r`` approximation (truncated SVD; exact for
    a map composed with one low-rank reference).
    """
    enc = model.adapter.subjects[subject].encode
    weight, bias = weights["weight"], weights["bias"]
    with torch.no_grad():
        if isinstance(enc, nn.Linear):
            enc.weight.copy_(weight)
            if enc.bias is not None:
                enc.bias.copy_(bias)
            return
        down, up = enc[0], enc[1]
        u, sv, vt = torch.linalg.svd(weight.double(), full_matrices=False)
        r = down.out_features
        down.weight.copy_((sv[:r, None] * vt[:r]).float())
        up.weight.copy_(u[:, :r].float())
        if up.bias is not None:
            up.bias.copy_(bias)


@torch.no_grad()
def _val_loss(decoder: CrossSubjectDecoder, val: SubjectTrials) -> float:
    out = torch.as_tensor(decoder.decision_function(val))
    y = torch.as_tensor(decoder._encode_y(val))
    return float(decoder.model_.head.loss(out, y))
