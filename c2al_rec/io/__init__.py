"""File I/O every floor may use: atomic writes (temp file + rename) of text, JSON and whole directories,
and an allow-list unpickler for pickles that come from elsewhere."""

from .atomic import atomic_directory, atomic_write_json, atomic_write_text
from .digest import file_digest, file_sha256
from .paths import relative_paths
from .safe_pickle import BASIC_GLOBALS, UnpicklingRefused, restricted_load

__all__ = [
    "BASIC_GLOBALS",
    "UnpicklingRefused",
    "atomic_directory",
    "atomic_write_json",
    "atomic_write_text",
    "file_digest",
    "file_sha256",
    "relative_paths",
    "restricted_load",
]
