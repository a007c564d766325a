"""File I/O every floor may use: atomic writes (temp file + rename) of text, JSON and whole directories."""

from .atomic import atomic_directory, atomic_write_json, atomic_write_text

__all__ = ["atomic_directory", "atomic_write_json", "atomic_write_text"]
