"""Placeholder: filled in by this session."""

from __future__ import annotations

from . import app  # noqa: F401
