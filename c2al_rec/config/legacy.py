"""Config keys that moved: old spellings are still read, each with one deprecation line per process.

A section dataclass lists its moved keys in a ``LEGACY_KEYS`` class attribute, ``{old: (table,
field)}`` (``model.fm_rank`` -> ``model.fm.rank``). Files, config dicts (a run's stored config,
e.g. in an old checkpoint's train_state.json) and ``--section.field=value`` overrides are
rewritten to the new form before the strict loading sees them.

Example::

    upgrade_table({"model": {"fm_rank": 4}}, "old.toml")   # {"model": {"fm": {"rank": 4}}}, one line on stderr
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from .errors import ConfigError
from .tree import Config

_announced: set[str] = set()  # dotted old keys already reported in this process


def _announce(old: str, new: str, source: str) -> None:
    if old not in _announced:
        _announced.add(old)
        print(f"c2al-rec: {source}: '{old}' is deprecated, write '{new}' instead", file=sys.stderr)


def upgrade_table(table: dict[str, Any], source: str, cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """A copy of a nested config table with every legacy key moved to its new place.

    Raises:
        ConfigError: a table gives both a legacy key and its new spelling.
    """
    legacy: dict[str, tuple[str, str]] = getattr(cls, "LEGACY_KEYS", {})
    hints = typing.get_type_hints(cls)
    sections = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}
    out = dict(table)
    for key, value in table.items():
        if key in sections and isinstance(value, dict):
            out[key] = upgrade_table(value, source, hints[key], f"{prefix}{key}.")
    for old, (sub, name) in legacy.items():
        if old not in out:
            continue
        value = out.pop(old)
        target = dict(out.get(sub) or {})
        if name in target:
            raise ConfigError(
                f"{source}: both '{prefix}{old}' (deprecated) and '{prefix}{sub}.{name}' are set; keep only the second"
            )
        _announce(f"{prefix}{old}", f"{prefix}{sub}.{name}", source)
        target[name] = value
        out[sub] = target
    return out


def upgrade_path(parts: list[str], source: str) -> list[str]:
    """The dotted key of a ``--section.field=value`` override with a legacy field name replaced."""
    cls: Any = Config
    for i, part in enumerate(parts):
        legacy: dict[str, tuple[str, str]] = getattr(cls, "LEGACY_KEYS", {})
        if part in legacy and i == len(parts) - 1:
            new = parts[:i] + list(legacy[part])
            _announce(".".join(parts), ".".join(new), source)
            return new
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return parts
        cls = typing.get_type_hints(cls)[part]
    return parts
