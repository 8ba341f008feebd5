"""Quiet by default: MNE's log level inside neurodecode calls, and progress bars for long loops.

Two helpers shared by the library's modules:

- :func:`mne_verbose` — a context manager (or decorator) that runs MNE at the level a
  ``verbose=`` argument asks for, in MNE's own convention (``None``, ``True``/``False``,
  ``"debug"`` … ``"critical"`` or a :mod:`logging` level). ``verbose=None`` means *quiet
  unless the user asked otherwise*: MNE runs at ``"warning"`` inside neurodecode calls, except
  when ``MNE_LOGGING_LEVEL`` is set (environment or MNE config file), when the user set MNE's
  level to something other than its ``"info"`` default (:func:`mne.set_log_level`), or when an
  enclosing neurodecode call already chose a level (so ``cross_validate(..., verbose="info")``
  reaches the estimators it fits). MNE's warnings are always shown.
- :func:`progress` — wraps an iterable in a :mod:`rich` progress bar on stderr when stderr is
  an interactive terminal (or ``enabled=True``), and is a plain pass-through otherwise (logs,
  CI, pipes and notebooks stay clean).

Examples
--------
>>> from neurodecode.verbosity import mne_verbose, progress
>>> with mne_verbose(None):           # MNE at "warning" unless the user asked for more
...     pass
>>> [x for x in progress(range(3), description="demo", enabled=False)]
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, overload

__all__ = ["Verbose", "mne_log_level", "mne_verbose", "progress"]

#: An MNE-style ``verbose`` value.
Verbose = bool | str | int | None

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
# True while a neurodecode call holds MNE at a chosen level (nested ``verbose=None`` keeps it).
_CHOSEN: contextvars.ContextVar[bool] = contextvars.ContextVar("neurodecode_mne_level",
                                                               default=False)


def _parse(verbose: bool | str | int) -> int:
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, str):
        level = _LEVELS.get(verbose.upper())
        if level is None:
            raise ValueError(f"verbose={verbose!r} is not an MNE log level; use None, True, "
                             f"False, an int or one of {[k.lower() for k in _LEVELS]}")
        return level
    if isinstance(verbose, int):
        return verbose
    raise TypeError(f"verbose must be None, bool, str or int, got {type(verbose).__name__}")


def _user_configured(level: int) -> bool:
    """Whether the user chose MNE's level (config, environment or mne.set_log_level)."""
    import mne

    if os.environ.get("MNE_LOGGING_LEVEL") or mne.get_config("MNE_LOGGING_LEVEL"):
        return True
    return level not in (logging.NOTSET, logging.INFO)


def mne_log_level(verbose: Verbose = None) -> int:
    """The MNE log level a neurodecode call runs at, for an MNE-style ``verbose``.

    Resolve it once in the calling process and pass the number to worker processes (whose MNE
    state is fresh), where ``mne_verbose(level)`` applies it.

    Parameters
    ----------
    verbose : bool, str, int or None
        ``None``: MNE's current level when the user chose it (``MNE_LOGGING_LEVEL``,
        :func:`mne.set_log_level` to anything but ``"info"``) or an enclosing
        :func:`mne_verbose` did, else ``logging.WARNING``. ``True`` is ``"info"``, ``False``
        is ``"warning"``; strings are MNE's level names (any case).

    Returns
    -------
    int
        A :mod:`logging` level.

    Raises
    ------
    ValueError
        For a string that is not a level name.
    """
    if verbose is not None:
        return _parse(verbose)
    from mne.utils import logger

    if _CHOSEN.get() or _user_configured(logger.level):
        return logger.level
    return logging.WARNING


class _MNELevel(contextlib.ContextDecorator):
    """Context manager (and fixed-level decorator) behind :func:`mne_verbose`."""

    def __init__(self, verbose: Verbose) -> None:
        if verbose is not None:
            _parse(verbose)  # bad values fail where they are given
        self.verbose = verbose
        self._saved: list[tuple[int, contextvars.Token[bool]]] = []

    def _recreate_cm(self) -> _MNELevel:  # a fresh manager per decorated call (thread-safe)
        return type(self)(self.verbose)

    def __enter__(self) -> int:
        from mne.utils import set_log_level

        level = mne_log_level(self.verbose)
        old = set_log_level(level, return_old_level=True)
        self._saved.append((old, _CHOSEN.set(True)))
        return level

    def __exit__(self, *exc: object) -> bool:
        from mne.utils import set_log_level

        old, token = self._saved.pop()
        _CHOSEN.reset(token)
        set_log_level(old)
        return False


@overload
def mne_verbose(verbose: _F) -> _F: ...
@overload
def mne_verbose(verbose: Verbose = None) -> _MNELevel: ...
def mne_verbose(verbose: Any = None) -> Any:
    """Run MNE at the level of an MNE-style ``verbose`` (quiet by default).

    Use it as a context manager, ``with mne_verbose(verbose): ...``, or as a bare decorator on
    a function that has a ``verbose`` parameter, ``@mne_verbose``, which then applies the
    value each call passes (its default when omitted) — MNE's own convention. MNE's previous
    level is restored on exit.

    Parameters
    ----------
    verbose : bool, str, int, None or callable
        See :func:`mne_log_level` (``None``: ``"warning"`` unless the user asked otherwise).
        A callable is decorated.

    Returns
    -------
    context manager or callable
        Entering the context manager returns the :mod:`logging` level in force.

    Raises
    ------
    ValueError
        For a string that is not a level name.
    TypeError
        When decorating a function without a ``verbose`` parameter.

    Examples
    --------
    >>> @mne_verbose
    ... def fit_filters(X, verbose=None):
    ...     ...                      # MNE calls here log at "warning" unless asked
    >>> with mne_verbose("info"):    # show MNE's info messages
    ...     pass
    """
    if not callable(verbose):
        return _MNELevel(verbose)
    func = verbose
    signature = inspect.signature(func)
    if "verbose" not in signature.parameters:
        raise TypeError(f"@mne_verbose needs a 'verbose' parameter; {func.__qualname__} has none")
    default = signature.parameters["verbose"].default
    default = None if default is inspect.Parameter.empty else default

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = signature.bind_partial(*args, **kwargs).arguments.get("verbose", default)
        with _MNELevel(value):
            return func(*args, **kwargs)

    return wrapper


def _bar(iterable: Iterable[_T], total: int | None, description: str,
         console: Any) -> Iterator[_T]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


def progress(iterable: Iterable[_T], total: int | None = None, description: str = "",
             enabled: bool | None = None, *, console: Any = None) -> Iterator[_T]:
    """Iterate with a progress bar on stderr when it is interactive; a pass-through otherwise.

    Parameters
    ----------
    iterable : iterable
        Items to pass on, unchanged and in order.
    total : int, optional
        Number of items (default ``len(iterable)`` when it has one; else the bar has no end).
    description : str
        Text before the bar.
    enabled : bool, optional
        ``None``: show the bar only when the console (stderr) is an interactive terminal;
        ``True``: always render it (a non-terminal console gets the final state);
        ``False``: never.
    console : rich.console.Console, optional
        Where to render (default a console on stderr).

    Returns
    -------
    iterator
        The items of ``iterable``.

    Examples
    --------
    >>> sum(progress(range(4), description="permutations", enabled=False))
    6
    """
    if enabled is False:
        return iter(iterable)
    if console is None:
        import sys

        from rich.console import Console

        if enabled is None and not sys.stderr.isatty():
            return iter(iterable)  # FORCE_COLOR (Jupyter kernels, their Dask workers): no tty
        console = Console(stderr=True)
    if enabled is None and not console.is_interactive:
        return iter(iterable)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _bar(iterable, total, description, console)
