"""Cross-subject model checkpoints: shared weights and each subject's adapter, apart.

A checkpoint is one ``torch.save`` file of plain types and tensors, loadable with
``torch.load(weights_only=True)``::

    {"format": "neurodecode.cross_subject", "version": 1,
     "config": {...},                    # the ModelConfig
     "n_times": int, "n_outputs": int,
     "subjects": {name: SubjectSpec},    # every subject the model serves (index order)
     "with_weights": [name, ...],        # those with adapter weights of their own
     "shared": {key: tensor},            # backbone, head, shared adapter parts
     "adapters": {name: {key: tensor}},  # one entry per subject with weights of its own
     "lora": {...} | None,               # low-rank layers present in the backbone
     "extra": {...}}                     # classes, scaling statistics, training record...

Loading checks the adapters against the subjects declared: a missing or unexpected adapter is
an :class:`AdapterMismatchError` naming the subjects, never a silent partial load.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .adapters.base import SubjectSpec
from .adapters.lora import add_lora
from .config import ModelConfig
from .cross_subject import ADAPTER_PREFIX, CrossSubjectModel

__all__ = ["FORMAT", "AdapterMismatchError", "atomic_save", "check_adapters", "load_model",
           "load_state", "model_from_payload", "model_payload", "read_checkpoint",
           "read_payload", "save_model", "split_state"]

FORMAT = "neurodecode.cross_subject"
VERSION = 1


class AdapterMismatchError(KeyError):
    """A checkpoint's subject adapters differ from those expected."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


def split_state(model: CrossSubjectModel) -> tuple[dict[str, torch.Tensor],
                                                   dict[str, dict[str, torch.Tensor]]]:
    """The model's state dict as shared weights and per-subject adapter weights."""
    shared: dict[str, torch.Tensor] = {}
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in model.state_dict().items():
        if key.startswith(ADAPTER_PREFIX):
            name, rest = key[len(ADAPTER_PREFIX):].split(".", 1)
            adapters.setdefault(name, {})[rest] = value.detach().cpu()
        else:
            shared[key] = value.detach().cpu()
    return shared, adapters


def check_adapters(found: Iterable[str], expected: Iterable[str], where: str) -> None:
    """Raise :class:`AdapterMismatchError` unless ``found`` and ``expected`` are the same set
    of subjects (the message names the missing and the unexpected ones)."""
    found, expected = set(found), set(expected)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"no adapter for subject(s) {', '.join(map(repr, missing))}")
        if unexpected:
            parts.append(f"unexpected adapter(s) for subject(s) "
                         f"{', '.join(map(repr, unexpected))}")
        raise AdapterMismatchError(f"{where}: {'; '.join(parts)} (expected adapters for "
                                   f"{sorted(expected)})")


def load_state(model: CrossSubjectModel, shared: Mapping[str, torch.Tensor],
               adapters: Mapping[str, Mapping[str, torch.Tensor]], *, where: str = "checkpoint"
               ) -> None:
    """Load shared and per-subject weights into ``model``, strictly.

    Raises
    ------
    AdapterMismatchError
        When the adapters given are not exactly the model's subjects with weights.
    KeyError
        When shared keys are missing or unexpected (named).
    """
    check_adapters(adapters, model.adapter.subjects.keys(), where)
    state = dict(shared)
    for name, sub in adapters.items():
        state.update({f"{ADAPTER_PREFIX}{name}.{k}": v for k, v in sub.items()})
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(f"{where}: shared weights do not match the model: missing "
                       f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def model_payload(model: CrossSubjectModel, *, extra: Mapping[str, Any] | None = None,
                  lora: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint payload of a model (what :func:`save_model` writes), in memory.

    Parameters
    ----------
    model : CrossSubjectModel
    extra : mapping, optional
        Plain data saved beside the weights (classes, scaling statistics...).
    lora : mapping, optional
        ``{"rank", "alpha"}`` of the low-rank layers in the backbone, if any.

    Returns
    -------
    dict
        Plain types and tensors (``torch.load(weights_only=True)``-safe).
    """
    shared, adapters = split_state(model)
    return {
        "format": FORMAT, "version": VERSION,
        "config": model.config.model_dump(mode="json"),
        "n_times": model.n_times, "n_outputs": model.n_outputs,
        "subjects": {n: s.to_dict() for n, s in model.specs.items()},
        "with_weights": [n for n in model.subject_names if model.adapter.has_weights(n)],
        "shared": shared, "adapters": adapters,
        "lora": None if lora is None else dict(lora),
        "extra": dict(extra or {}),
    }


def save_model(model: CrossSubjectModel, path: str | os.PathLike, *,
               extra: Mapping[str, Any] | None = None, lora: Mapping[str, Any] | None = None
               ) -> Path:
    """Write a checkpoint atomically (a temporary sibling renamed into place).

    Parameters
    ----------
    model : CrossSubjectModel
    path : path-like
    extra, lora : mapping, optional
        As in :func:`model_payload`.

    Returns
    -------
    Path
    """
    return atomic_save(model_payload(model, extra=extra, lora=lora), Path(path))


def atomic_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary sibling, then rename: never a half-written file.

    Parameters
    ----------
    payload : object
        What to save (plain types and tensors, for ``torch.load(weights_only=True)``).
    path : path-like
        The file (its folder is created).

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_payload(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict[str, Any]:
    """A checkpoint written by :func:`atomic_save` (``weights_only=True``), format checked.

    Parameters
    ----------
    path : path-like
    fmt : str
        The ``format`` the payload must have.
    version : int
        The newest ``version`` this code reads.
    what : str
        What the file is, for the errors (``"spike model checkpoint"``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Naming the file: unreadable, another format, or a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{path}: not a readable {what} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ValueError(f"{path}: not a {what} (format {found!r}, expected {fmt!r})")
    if int(payload.get("version", 0)) > version:
        raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this "
                         f"neurodecode reads ({version})")
    return payload


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``), with its format checked."""
    return read_payload(path, FORMAT, VERSION, "model checkpoint")


def load_model(path: str | os.PathLike) -> tuple[CrossSubjectModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint.

    Returns
    -------
    model : CrossSubjectModel
    extra : dict

    Raises
    ------
    AdapterMismatchError
        When the stored adapters differ from the subjects declared with weights.
    """
    return model_from_payload(read_checkpoint(path), where=str(path))


def model_from_payload(payload: Mapping[str, Any], *, where: str = "checkpoint"
                       ) -> tuple[CrossSubjectModel, dict[str, Any]]:
    """Rebuild a model from a payload of :func:`model_payload` (``where`` names it in errors).

    Returns
    -------
    model : CrossSubjectModel
    extra : dict
    """
    config = ModelConfig.model_validate(payload["config"])
    specs = {n: SubjectSpec.from_dict(s) for n, s in payload["subjects"].items()}
    with_weights = set(payload["with_weights"])
    unknown = sorted(with_weights - set(specs))
    if unknown:
        raise AdapterMismatchError(f"{where}: adapter weights declared for subject(s) {unknown} "
                                   "that the checkpoint does not describe")
    # subjects declared without weights are zero-shot entries (the adapter must allow them);
    # the adapter's position frame comes from the stored buffers
    first = {n: s for n, s in specs.items() if n in with_weights} or specs
    model = CrossSubjectModel(config, first, n_times=payload["n_times"],
                              n_outputs=payload["n_outputs"])
    model.subject_names = []
    for n, s in specs.items():
        model.add_subject(n, s, weights=n in with_weights)
    if payload.get("lora"):
        add_lora(model.backbone, **payload["lora"])
    load_state(model, payload["shared"], payload["adapters"], where=where)
    return model, dict(payload.get("extra") or {})
