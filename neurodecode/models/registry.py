"""One registry for the parts of every model: backbones, subject adapters and heads.

A part is a :class:`torch.nn.Module` class registered under a kind and a name with
:func:`register`. It declares its hyper-parameters as a pydantic model in its ``Params``
attribute; :func:`build` validates a :class:`~neurodecode.models.config.PartConfig` against it
(an unknown or ill-typed parameter names the part and lists the valid ones) and calls
``cls(params, **context)``, where the context is what the assembled model knows (input sizes,
latent size, number of outputs).

The built-in parts live one per module in :mod:`neurodecode.models.backbones`,
:mod:`neurodecode.models.adapters` and :mod:`neurodecode.models.heads`; they are imported the
first time the registry is asked for a part. A lab adds its own by decorating a class with
``@register("backbone", "my_net")`` in a module it imports before building the model.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import pydantic
from torch import nn

__all__ = ["KINDS", "PartParams", "available", "build", "get", "register"]

Kind = Literal["backbone", "adapter", "head"]

#: Kinds of model parts, and the package holding the built-in ones of each.
KINDS: dict[str, str] = {
    "backbone": "neurodecode.models.backbones",
    "adapter": "neurodecode.models.adapters",
    "head": "neurodecode.models.heads",
}

_PARTS: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}
_T = TypeVar("_T", bound=type[nn.Module])


class PartParams(pydantic.BaseModel):
    """Base of every part's hyper-parameters: unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid")


def register(kind: Kind, name: str) -> Callable[[_T], _T]:
    """Class decorator registering a model part.

    Parameters
    ----------
    kind : {"backbone", "adapter", "head"}
    name : str
        Name used in model configs (``backbone: {name: ...}``).

    Returns
    -------
    callable
        The decorator; it sets ``cls.part_name`` and returns the class unchanged.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown part kind {kind!r}; kinds: {sorted(KINDS)}")

    def decorate(cls: _T) -> _T:
        if not (isinstance(getattr(cls, "Params", None), type)
                and issubclass(cls.Params, pydantic.BaseModel)):
            raise TypeError(f"{cls.__name__} needs a pydantic `Params` class to be registered")
        known = _PARTS[kind].get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{kind} {name!r} is already registered by {known.__module__}")
        cls.part_name = name
        _PARTS[kind][name] = cls
        return cls

    return decorate


def _load_builtins(kind: str) -> None:
    importlib.import_module(KINDS[kind])


def available(kind: Kind) -> list[str]:
    """Names of the registered parts of a kind."""
    _load_builtins(kind)
    return sorted(_PARTS[kind])


def get(kind: Kind, name: str) -> type[nn.Module]:
    """The class registered as ``name``.

    Raises
    ------
    KeyError
        Naming the unknown part, with close matches and the available names.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown part kind {kind!r}; kinds: {sorted(KINDS)}")
    _load_builtins(kind)
    try:
        return _PARTS[kind][name]
    except KeyError:
        close = difflib.get_close_matches(name, _PARTS[kind], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown {kind} {name!r}{hint}; available: {sorted(_PARTS[kind])}"
                       ) from None


def validate(kind: Kind, name: str, params: dict[str, Any]) -> PartParams:
    """Validate a part's parameters against its ``Params``.

    Raises
    ------
    ValueError
        One line per problem, naming the part, the parameter and the valid ones.
    """
    cls = get(kind, name)
    try:
        return cls.Params.model_validate(params)
    except pydantic.ValidationError as err:
        valid = sorted(cls.Params.model_fields)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: "
            + ("unknown parameter" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors())
        raise ValueError(f"{kind} {name!r}: {problems} (valid parameters: {valid})") from None


def build(kind: Kind, name: str, params: dict[str, Any], **context: Any) -> nn.Module:
    """Build a part from its validated parameters and the model's context.

    Parameters
    ----------
    kind : {"backbone", "adapter", "head"}
    name : str
    params : dict
        The part's hyper-parameters (validated by its ``Params``).
    **context
        Sizes the assembled model passes (e.g. ``in_features``, ``n_times``, ``n_outputs``).

    Returns
    -------
    torch.nn.Module
    """
    return get(kind, name)(validate(kind, name, params), **context)
