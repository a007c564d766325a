"""Unsharded model modules (sparse/dense arch, DHEN interactions, heads); buildable on meta."""

from .model import C2ALModel, tables_from_features

__all__ = ["C2ALModel", "tables_from_features"]
