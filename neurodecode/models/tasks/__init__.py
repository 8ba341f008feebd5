"""Thin Lightning task modules over the plain models (training steps, optimisers, logging)."""

from .decode import DecodeTask

__all__ = ["DecodeTask"]
