"""neurodecode: brain recordings in, decoded stimuli, behaviour and images out.

The main entry points are :mod:`neurodecode.schema` (one recording schema for every modality),
:mod:`neurodecode.store` (atomic Zarr v3 stores), :mod:`neurodecode.ingest` (lazy readers) and
:mod:`neurodecode.simulate` (ground-truth simulations).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurodecode")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"

__all__ = ["__version__"]
