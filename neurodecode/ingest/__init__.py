"""Readers that turn source files of every modality into lazy recordings, and the runner that
writes many of them into stores in parallel."""

from .base import IngestError, blockwise_array, file_sha256, source_info

__all__ = ["IngestError", "blockwise_array", "file_sha256", "source_info"]
