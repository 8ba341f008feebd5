"""Content fingerprints of files and folders, with a stat cache so unchanged inputs are not re-read.

A fingerprint is the xxh3-128 digest of a file's bytes, or, for a folder, of the sorted list of
its files' relative paths, sizes and digests. Names starting with ``.`` are left out of a
folder's fingerprint: they hold provenance records, temporary outputs and ingest records, which
change on every run without changing the data.

Fingerprints depend on content only: ``touch`` alone changes nothing. To stay cheap, each file's
digest is cached by ``(size, mtime_ns, inode)``; a file is read again only when one of these
changed. :class:`FingerprintCache` can be saved to and loaded from a JSON file, so a rerun of a
workflow re-reads nothing that has not changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import xxhash

__all__ = ["FingerprintCache", "fingerprint"]

_BLOCK = 8 << 20


def _file_digest(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every regular file below ``root`` with its stat, hidden names left out, sorted by path."""
    out: list[tuple[str, os.stat_result]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    rel = os.path.relpath(entry.path, root)
                    out.append((rel.replace(os.sep, "/"), entry.stat(follow_symlinks=True)))
    out.sort(key=lambda item: item[0])
    return out


class FingerprintCache:
    """Digests of files keyed by path and stat signature.

    Parameters
    ----------
    path : path-like, optional
        JSON file the cache is loaded from (when it exists) and saved to by :meth:`save`.

    Attributes
    ----------
    hits : int
        Digests served from the cache.
    misses : int
        Files read.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._entries: dict[str, list] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged cache is only a slower run
                self._entries = {}

    def file(self, path: str | os.PathLike, stat: os.stat_result | None = None) -> str:
        """Return the digest of one file (read only when its stat signature changed)."""
        path = Path(path)
        st = stat if stat is not None else path.stat()
        key = str(path.absolute())
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        cached = self._entries.get(key)
        if cached is not None and cached[:3] == sig:
            self.hits += 1
            return cached[3]
        self.misses += 1
        digest = _file_digest(path)
        self._entries[key] = [*sig, digest]
        return digest

    def __call__(self, path: str | os.PathLike) -> str:
        """Return the fingerprint of a file or a folder.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        """
        path = Path(path)
        if not path.is_dir():
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file or folder")
            return "f:" + self.file(path)
        h = xxhash.xxh3_128()
        for rel, st in _walk(path):
            h.update(f"{rel}\0{st.st_size}\0{self.file(path / rel, st)}\n".encode())
        return "d:" + h.hexdigest()

    def save(self) -> None:
        """Write the cache to its file atomically (nothing happens without a file)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._entries))
        os.replace(tmp, self.path)


def fingerprint(path: str | os.PathLike) -> str:
    """Return the content fingerprint of a file or folder (no cache).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    str
        ``"f:<xxh3>"`` for a file, ``"d:<xxh3>"`` for a folder.
    """
    return FingerprintCache()(path)
