"""The reader registry: names, file types, and every reader's options with their types.

Readers are plain functions (``neurodecode/ingest/{eeg,fmri,calcium,spikes}.py``) with typed
keyword-only parameters documented in a numpydoc ``Parameters`` section. This module is the
one place that knows them by name. Their options are read from those signatures and
docstrings, never listed by hand, so :func:`reader_options`, :func:`validate_options` and the
``neurodecode readers`` command always agree with the code. The readers' modules are imported
only when a reader's options or function are asked for (loading this module imports neither
MNE nor nibabel nor pynwb).

Per-file options come from a YAML file of globs (:class:`OptionRules`)::

    "*.edf": {ch_types: {EOG1: eog}}
    "sub-02_*": {drop_flat: true}
    "run-*/bold.nii.gz": {reader: nifti, tr: 2.0}
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib
import inspect
import re
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "READERS",
    "OptionRules",
    "ReaderOption",
    "UnknownOptionError",
    "UnknownReaderError",
    "get_reader",
    "guess_reader",
    "reader_extensions",
    "reader_option_types",
    "reader_options",
    "reader_summary",
    "suggest",
    "validate_options",
]

#: Reader names used by the catalog and the command line → ``module:function``.
READERS: dict[str, str] = {
    "mne": "neurodecode.ingest.eeg:read_mne",
    "muse_csv": "neurodecode.ingest.eeg:read_muse_csv",
    "bids": "neurodecode.ingest.eeg:read_bids_file",
    "nifti": "neurodecode.ingest.fmri:read_nifti",
    "tiff_movie": "neurodecode.ingest.calcium:read_tiff_movie",
    "suite2p": "neurodecode.ingest.calcium:read_suite2p",
    "nwb_ophys": "neurodecode.ingest.calcium:read_nwb_ophys",
    "trace_array": "neurodecode.ingest.calcium:read_trace_array",
    "spike_times": "neurodecode.ingest.spikes:read_spike_times",
    "nwb_units": "neurodecode.ingest.spikes:read_nwb_units",
    "nelpy_linear_track": "neurodecode.ingest.spikes:read_nelpy_linear_track",
    "golub_bci": "neurodecode.ingest.spikes:read_golub_bci",
    "matclust": "neurodecode.ingest.spikes:read_matclust",
    "binned_trials": "neurodecode.ingest.spikes:read_binned_trials",
}

#: File name endings → the reader :func:`guess_reader` picks for them.
_EXTENSIONS = {
    (
        ".edf",
        ".bdf",
        ".gdf",
        ".vhdr",
        ".fif",
        ".set",
        ".lay",
        ".cnt",
        ".mff",
        ".snirf",
        ".nxe",
        ".egi",
        ".eeg",
        ".data",
        ".con",
        ".sqd",
        ".ds",
    ): "mne",
    (".csv",): "muse_csv",
    (".nii", ".nii.gz"): "nifti",
    (".tif", ".tiff"): "tiff_movie",
    (".npz", ".npy", ".mat"): "spike_times",
}

#: What :func:`guess_reader` recognises beyond file name endings.
_GUESSED_OTHERWISE = {
    "suite2p": "folders holding F.npy",
    "nwb_units": ".nwb with a units table",
    "nwb_ophys": ".nwb without a units table",
}

_ENTITY_KEYS = ("subject", "session", "task", "run")


class UnknownReaderError(ValueError):
    """A reader name that is neither registered nor a ``module:function`` path."""


class UnknownOptionError(ValueError):
    """A reader option that the reader does not take."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """A close match of ``name`` among ``choices``, phrased for an error message.

    Parameters
    ----------
    name : str
        What the user typed.
    choices : iterable of str
        The valid names.

    Returns
    -------
    str
        ``" did you mean 'x'?"``, or ``""`` when nothing is close.
    """
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" did you mean {match[0]!r}?" if match else ""


def _resolve(name: str) -> Callable[..., Any]:
    target = READERS.get(name, name)
    if ":" not in target:
        raise UnknownReaderError(
            f"unknown reader {name!r};{suggest(name, READERS)} "
            f"known readers: {', '.join(sorted(READERS))}"
        )
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise UnknownReaderError(f"reader {name!r} cannot be loaded: {err}") from err


def get_reader(name: str) -> Callable[..., Any]:
    """Return the reader function registered under ``name`` (or a ``module:function`` path).

    Parameters
    ----------
    name : str
        A key of :data:`READERS`, or ``"package.module:function"``.

    Returns
    -------
    callable
        The reader; its module is imported now.

    Raises
    ------
    UnknownReaderError
        If ``name`` is unknown (with a close match when there is one) or cannot be imported.
    """
    return _resolve(name)


def guess_reader(path: str | Path) -> str:
    """Pick a reader from a file's extension (``.nwb`` files: units unless they hold ophys).

    Parameters
    ----------
    path : path-like
        The source file or folder (a folder holding ``F.npy`` is a suite2p plane).

    Returns
    -------
    str
        A key of :data:`READERS`.

    Raises
    ------
    IngestError
        If no reader handles the extension.
    """
    from .base import IngestError

    path = Path(path)
    name = path.name.lower()
    if path.is_dir() and (path / "F.npy").exists():
        return "suite2p"
    if name.endswith(".nwb"):
        return "nwb_units" if _nwb_has_units(path) else "nwb_ophys"
    for exts, reader in _EXTENSIONS.items():
        if name.endswith(exts):
            return reader
    raise IngestError(
        path, f"no reader for files like {path.name!r}; pass --reader (one of {sorted(READERS)})"
    )


def _nwb_has_units(path: Path) -> bool:
    import h5py

    from .base import IngestError

    try:
        with h5py.File(path, "r") as f:
            return "units" in f
    except OSError as err:
        raise IngestError(path, f"not a readable NWB (HDF5) file: {err}") from err


def _readers_by_name(filename: str) -> list[str]:
    """Readers a file name points to, without opening anything (both NWB readers for .nwb)."""
    name = filename.lower()
    if name.endswith(".nwb"):
        return ["nwb_units", "nwb_ophys"]
    return [reader for exts, reader in _EXTENSIONS.items() if name.endswith(exts)]


def reader_extensions(name: str) -> list[str]:
    """What :func:`guess_reader` picks ``name`` for: file endings, or a description.

    Parameters
    ----------
    name : str
        A key of :data:`READERS`.

    Returns
    -------
    list of str
        Empty when the reader must be named (``--reader`` or a catalog entry).
    """
    found = [ext for exts, reader in _EXTENSIONS.items() if reader == name for ext in exts]
    if name in _GUESSED_OTHERWISE:
        found.append(_GUESSED_OTHERWISE[name])
    return found


def reader_summary(name: str) -> str:
    """The first line of a reader's docstring.

    Parameters
    ----------
    name : str
        A reader name or ``module:function`` path.

    Returns
    -------
    str
    """
    lines = (inspect.getdoc(_resolve(name)) or "").strip().splitlines()
    return lines[0] if lines else ""


# --------------------------------------------------------------------------------------------
# Options from signatures and docstrings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderOption:
    """One keyword option of a reader, as its signature and docstring give it.

    Attributes
    ----------
    name : str
        The keyword.
    annotation : str
        The type annotation as written in the source (``"float | None"``).
    default : Any
        The default value (``None`` for a required option: see ``required``).
    required : bool
        Whether the reader has no default for it.
    doc : str
        The first sentence of the option's numpydoc entry (``""`` when undocumented).
    """

    name: str
    annotation: str
    default: Any
    required: bool
    doc: str


@dataclass(frozen=True)
class _Spec:
    options: tuple[ReaderOption, ...]
    types: dict[str, Any]
    open_ended: bool  # takes **kwargs that could not be traced to a documented reader


_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    for m in re.finditer(r"[.!?](?=\s+[A-Z(\"'`]|$)", text):
        head = text[: m.end()]
        if not head.endswith(_ABBREVIATIONS):
            return head
    return text


def _parameter_docs(func: Callable[..., Any]) -> dict[str, str]:
    """Parameter name → its numpydoc description (one paragraph), for every name of an entry."""
    lines = (inspect.getdoc(func) or "").splitlines()
    docs: dict[str, str] = {}
    try:
        start = next(
            i
            for i, line in enumerate(lines[:-1])
            if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}
        )
    except StopIteration:
        return docs
    names: list[str] = []
    body: list[str] = []

    def flush() -> None:
        for n in names:
            docs[n] = " ".join(body)

    i = start + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            flush()
            head = line.split(" : ")[0] if " : " in line else line.rstrip(":")
            names = [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
            body = []
        elif line.strip():
            body.append(line.strip())
        i += 1
    flush()
    return docs


def _forwarded(func: Callable[..., Any], varkw: str, doc: str) -> tuple[Any, set[str], dict]:
    """Where a reader's ``**options`` go (``Passed to :func:`target```), the keywords it fixes
    in that call, and the defaults it sets with ``options.setdefault(key, value)``."""
    m = re.search(r":func:`~?\.?([\w.]+)`", doc)
    if not m:
        return None, set(), {}
    module = inspect.getmodule(func)
    target = getattr(module, m.group(1).rsplit(".", 1)[-1], None)
    if not callable(target):
        return None, set(), {}
    fixed: set[str] = set()
    defaults: dict[str, Any] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):  # no source at hand: nothing known to be fixed
        return target, fixed, defaults
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        if isinstance(callee, ast.Name) and callee.id == target.__name__:
            fixed |= {kw.arg for kw in node.keywords if kw.arg is not None}
        elif (
            isinstance(callee, ast.Attribute)
            and callee.attr == "setdefault"
            and isinstance(callee.value, ast.Name)
            and callee.value.id == varkw
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            try:
                defaults[node.args[0].value] = ast.literal_eval(node.args[1])
            except ValueError:
                continue
    return target, fixed, defaults


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Evaluated annotations; one that cannot be evaluated (a name imported only for type
    checking) accepts any value rather than hiding the reader."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        hints = {}
        for name, annotation in getattr(func, "__annotations__", {}).items():
            try:
                hints[name] = (
                    eval(annotation, func.__globals__)
                    if isinstance(annotation, str)
                    else annotation
                )
            except Exception:
                hints[name] = Any
        return hints


def _spec_of(func: Callable[..., Any], skip: set[str] = frozenset()) -> _Spec:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    hints = _type_hints(func)
    docs = _parameter_docs(func)
    options: list[ReaderOption] = []
    types: dict[str, Any] = {}
    open_ended = False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    source = positional[0].name if positional else None  # the file: never an option
    for p in params:
        if p.name == source or p.name in skip or p.kind == p.VAR_POSITIONAL:
            continue
        if p.kind == p.VAR_KEYWORD:
            target, fixed, defaults = _forwarded(func, p.name, docs.get(p.name, ""))
            if target is None:
                open_ended = True
                continue
            taken = {o.name for o in options} | fixed | set(skip)
            inner = _spec_of(target, taken)
            for o in inner.options:
                if o.name in defaults:
                    o = ReaderOption(o.name, o.annotation, defaults[o.name], False, o.doc)
                options.append(o)
            types.update(inner.types)
            open_ended = open_ended or inner.open_ended
            continue
        annotation = p.annotation
        if annotation is inspect.Parameter.empty:
            written = "Any"
        else:
            written = (
                annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
            )
        required = p.default is inspect.Parameter.empty
        options.append(
            ReaderOption(
                name=p.name,
                annotation=written,
                default=None if required else p.default,
                required=required,
                doc=_first_sentence(docs.get(p.name, "")),
            )
        )
        types[p.name] = hints.get(p.name, Any)
    return _Spec(tuple(options), types, open_ended)


@cache
def _spec(name: str) -> _Spec:
    return _spec_of(_resolve(name))


def reader_options(name: str) -> list[ReaderOption]:
    """Every keyword option of a reader, from its signature and docstring.

    The source path (the reader's first parameter) is not an option. Options a reader forwards
    through ``**options`` to another reader (``Passed to :func:`read_x``` in its docstring) are
    listed with the other reader's types and docs, less the keywords the wrapper sets itself.

    Parameters
    ----------
    name : str
        A key of :data:`READERS` or a ``module:function`` path.

    Returns
    -------
    list of ReaderOption
        In signature order.

    Raises
    ------
    UnknownReaderError
        If the reader is unknown.
    """
    return list(_spec(name).options)


def reader_option_types(name: str) -> dict[str, Any]:
    """The evaluated type of each option of a reader (``Literal["error", "drop"]`` where the
    source says ``OutsideEvents``): what :func:`validate_options` checks values against.

    Parameters
    ----------
    name : str
        A key of :data:`READERS` or a ``module:function`` path.

    Returns
    -------
    dict of str to type
    """
    return dict(_spec(name).types)


@cache
def _adapter(tp: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True))


def validate_options(
    reader: str, options: Mapping[str, Any], *, where: str = "", complete: bool = False
) -> dict:
    """Check reader options against the reader's signature; return them coerced to its types.

    Parameters
    ----------
    reader : str
        A key of :data:`READERS` or a ``module:function`` path.
    options : mapping
        Option values (strings from the command line arrive already parsed as YAML; path-like
        options accept strings).
    where : str, optional
        Where the options come from (a file, a catalog entry): starts every message.
    complete : bool
        The options are all the reader will get (besides the source and the entities): an
        option it requires that is missing is an error too.

    Returns
    -------
    dict
        The options, coerced (``"10"`` → ``10.0`` for a float, a list for a sequence, ...).

    Raises
    ------
    UnknownOptionError
        For a key the reader does not take: one line naming the key, the reader, ``where``, the
        valid keys and a close match when there is one.
    ValueError
        For a value of the wrong type: one line naming the key, the value and the expected type;
        with ``complete``, for a missing required option.
    UnknownReaderError
        If the reader is unknown.
    """
    spec = _spec(reader)
    by_name = {o.name: o for o in spec.options}
    prefix = f"{where}: " if where else ""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in by_name:
            if spec.open_ended:
                out[key] = value
                continue
            raise UnknownOptionError(
                f"{prefix}reader {reader!r} has no option {key!r};{suggest(str(key), by_name)}"
                f" valid options: {', '.join(by_name)}"
            )
        from pydantic import ValidationError

        try:
            out[key] = _adapter(spec.types[key]).validate_python(value)
        except ValidationError as err:  # reworded as one line
            detail = err.errors()[0]["msg"] if err.errors() else ""
            raise ValueError(
                f"{prefix}reader {reader!r} option {key}={value!r} is not a valid "
                f"{by_name[key].annotation} ({detail})"
            ) from err
    missing = [o.name for o in spec.options if o.required and o.name not in out]
    if complete and missing:
        raise ValueError(
            f"{prefix}reader {reader!r} needs option(s) {', '.join(map(repr, missing))} "
            f"({'; '.join(f'{o.name}: {o.doc}' for o in spec.options if o.name in missing)})"
        )
    return out


# --------------------------------------------------------------------------------------------
# Per-file options from a YAML file of globs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    glob: str
    reader: str | None
    options: dict[str, Any]


def _matches(path: Path, glob: str) -> bool:
    """Whether ``glob`` matches the file name, the path as given, or the absolute path."""
    posix = path.as_posix()
    if fnmatch.fnmatchcase(path.name, glob) or fnmatch.fnmatchcase(posix, glob):
        return True
    if "/" in glob and not glob.startswith("/") and PurePath(posix).match(glob):
        return True
    return fnmatch.fnmatchcase(path.absolute().as_posix(), glob)


class OptionRules:
    """Reader options per file: globs mapped to option dicts, read from YAML.

    Each top-level key of the YAML file is a glob matched against a file's name and against its
    path (as given, or absolute); its value is a mapping of reader options, with an optional
    ``reader:`` naming the reader for the files it matches. Every entry is validated when the
    file is loaded, against its ``reader:``, else the reader its glob's extension implies, else
    the ``reader`` given to :meth:`load`; the options of a glob that implies no reader (such as
    ``sub-02_*``) must suit some reader, and :meth:`options_for` checks them against the reader
    of each file.

    Parameters
    ----------
    rules : sequence of (glob, reader, options)
        In file order.
    source : path-like, optional
        The YAML file the rules come from (named in error messages).
    """

    def __init__(
        self, rules: Iterable[tuple[str, str | None, Mapping[str, Any]]], source: Path | None = None
    ) -> None:
        self.rules = [_Rule(g, r, dict(o)) for g, r, o in rules]
        self.source = source

    def __repr__(self) -> str:
        return f"OptionRules({[r.glob for r in self.rules]}, source={self.source})"

    @classmethod
    def load(cls, path: str | Path, *, reader: str | None = None) -> OptionRules:
        """Read and validate an options file.

        Parameters
        ----------
        path : path-like
            YAML mapping ``glob: {option: value, ..., reader: name}``.
        reader : str, optional
            The reader of globs whose extension implies none and that name none
            (e.g. the command line's ``--reader``).

        Returns
        -------
        OptionRules

        Raises
        ------
        ValueError
            Naming the YAML file and the glob: unreadable YAML, a value that is not a mapping,
            an unknown reader or option, or a wrong value (:class:`UnknownOptionError` for an
            unknown option).
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            problem = " ".join(str(err).split())
            raise ValueError(f"{path}: cannot read the options file: {problem}") from err
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: an options file maps globs to options, not a {type(data).__name__}"
            )
        rules = []
        for glob, entry in data.items():
            where = f"{path}: glob {glob!r}"
            entry = {} if entry is None else entry
            if not isinstance(glob, str) or not isinstance(entry, dict):
                raise ValueError(f"{where}: expected a mapping of reader options, got {entry!r}")
            entry = dict(entry)
            named = entry.pop("reader", None)
            if named is not None and not isinstance(named, str):
                raise ValueError(f"{where}: reader must be a name, got {named!r}")
            candidates = [named] if named else _readers_by_name(glob)
            if not candidates and reader:
                candidates = [reader]
            try:
                if candidates:
                    _resolve(candidates[0])
                    options = _validate_any(candidates, entry, where)
                else:  # a glob of any file type: the options must suit some reader
                    options = _validate_some_reader(entry, where)
            except UnknownReaderError as err:
                raise ValueError(f"{where}: {err}") from err
            rules.append((glob, named, options))
        return cls(rules, source=path)

    def matching(self, path: str | Path) -> list[str]:
        """The globs that match ``path``, in file order."""
        path = Path(path)
        return [r.glob for r in self.rules if _matches(path, r.glob)]

    def reader_for(self, path: str | Path) -> str | None:
        """The reader named by the last matching glob with a ``reader:``, else ``None``."""
        path = Path(path)
        named = [r.reader for r in self.rules if r.reader and _matches(path, r.glob)]
        return named[-1] if named else None

    def options_for(self, path: str | Path, reader: str | None = None) -> dict:
        """The options of every glob matching ``path``, merged in file order (later wins).

        Parameters
        ----------
        path : path-like
            A source file.
        reader : str, optional
            The reader that will read it: when given, the merged options are validated against
            it (a glob validated against another reader may not fit this one).

        Returns
        -------
        dict

        Raises
        ------
        UnknownOptionError, ValueError
            With ``reader``: an option it does not take or a wrong value (naming the YAML file
            and the globs).
        """
        path = Path(path)
        merged: dict[str, Any] = {}
        globs = []
        for rule in self.rules:
            if _matches(path, rule.glob):
                merged.update(rule.options)
                globs.append(rule.glob)
        if reader is not None and merged:
            where = f"{self.source or 'options'}: {', '.join(map(repr, globs))} for {path.name}"
            merged = validate_options(reader, merged, where=where)
        return merged


def _validate_some_reader(options: Mapping[str, Any], where: str) -> dict:
    """Options of a glob that implies no reader: each key must be some reader's option, and
    some reader must take them all (the reader of each file checks them again)."""
    known = {o.name for name in READERS for o in _spec(name).options}
    for key in options:
        if key not in known:
            raise UnknownOptionError(
                f"{where}: no reader has an option {key!r};{suggest(str(key), known)} see "
                "`neurodecode readers NAME`, or add 'reader: NAME' under the glob"
            )
    for name in READERS:
        try:
            return validate_options(name, options, where=where)
        except ValueError:
            continue
    raise ValueError(
        f"{where}: no single reader takes {dict(options)!r}; add 'reader: NAME' under the glob"
    )


def _validate_any(readers: list[str], options: Mapping[str, Any], where: str) -> dict:
    """Validate against the first of ``readers`` that accepts the options (both NWB readers
    for ``*.nwb``); the first reader's error otherwise."""
    first: Exception | None = None
    for name in readers:
        try:
            return validate_options(name, options, where=where)
        except ValueError as err:
            first = first or err
    assert first is not None
    raise first
