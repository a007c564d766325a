"""Strict loading: TOML files and ``--section.field=value`` overrides into typed sections, and back to TOML."""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from .errors import ConfigError, echo
from .help import type_name
from .legacy import upgrade_path, upgrade_table
from .tree import Config


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {type_name(tp)}, got {echo(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: got {echo(value)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list ({type_name(tp)}), got {type(value).__name__} {echo(value)}")
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {echo(value)}")
        return {
            _check_value(k, key_tp, where): _check_value(v, val_tp, f"{where}[{echo(k)}]") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {echo(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {echo(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {echo(value)}")
        if not math.isfinite(value):  # TOML reads nan and inf as floats; no field of ours means them
            raise ConfigError(f"{where}: expected a finite number, got {echo(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {echo(value)}")
        return value
    raise AssertionError(f"unsupported config type {tp!r} at {where}")


def _build(cls: type, table: dict[str, Any], prefix: str, source: str) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, strictly."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key {echo(dotted)} (valid keys here: {close})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a table [{dotted}], got {echo(value)}")
            kwargs[key] = _build(tp, value, f"{dotted}.", source)
        else:
            kwargs[key] = _check_value(value, tp, f"{source}: {dotted}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _flag(key: str) -> str:
    """``--key`` for a message (quoted and cut when long); the value stays out: the message quotes it once."""
    flag = f"--{key}"
    return flag if len(flag) <= 100 else echo(flag)


def parse_override(arg: str) -> tuple[list[str], Any]:
    """Parse ``--section.field=value`` into ``(["section", "field"], value)``.

    The value is read as a TOML value (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"x"``); anything
    that is not valid TOML is taken as a bare string (``--data.path=/tmp/ds``).
    """
    if not arg.startswith("--") or "=" not in arg:
        raise ConfigError(f"override {echo(arg)}: expected --section.field=value")
    key, raw = arg[2:].split("=", 1)
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {echo(arg)}: expected --section.field=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except ValueError as e:  # valid TOML that Python refuses to convert: an integer past 4300 digits
        raise ConfigError(f"override {_flag(key)}: {e}") from None
    return parts, value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config (what ``save_config`` writes)."""
    return dataclasses.asdict(cfg)


def _check_leaf(parts: list[str], value: Any, source: str) -> Any:
    """Check that a dotted key names a leaf field of Config and that ``value`` has its type."""
    cls: Any = Config
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            raise ConfigError(f"{source}: unknown key {echo(dotted)} (valid keys here: {', '.join(sorted(names))})")
        tp = typing.get_type_hints(cls)[part]
        if dataclasses.is_dataclass(tp):
            if i == len(parts) - 1:
                raise ConfigError(f"{source}: '{dotted}' is a section; name one of its fields")
            cls = tp
        elif i != len(parts) - 1:
            raise ConfigError(f"{source}: '{dotted}' is a field, not a section")
        else:
            return _check_value(value, tp, f"{source}: {dotted}")
    raise AssertionError("unreachable")


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = ()) -> Config:
    """Load a TOML config file (optional), apply ``--section.field=value`` overrides, validate.

    Args:
        path: TOML file; sections are tables named like Config's fields (``[data]``, ``[model]``...).
        overrides: command-line overrides, applied after the file, left to right.

    Raises:
        ConfigError: unknown key, wrong type or invalid value; the message names the key and the
            file (or the flag).
    """
    table: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            table = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except ValueError as e:  # valid TOML that Python refuses to convert: an integer past 4300 digits
            raise ConfigError(f"{p}: {e}") from None
        table = upgrade_table(table, str(p))
        _build(Config, table, "", str(p))  # report file errors against the file, before overrides
    for arg in overrides:
        parts, value = parse_override(arg)
        parts = upgrade_path(parts, f"override {_flag('.'.join(parts))}")
        value = _check_leaf(parts, value, f"override {_flag('.'.join(parts))}")
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        table = _merge(table, nested)
    if table.get("pipeline", {}).get("lambdas"):  # Config moves them; say so once per load
        moved = sorted({0.0, *(float(x) for x in table["pipeline"]["lambdas"])})
        print(
            f"config: pipeline.lambdas is deprecated; read as select.candidates = {moved} (0 = the baseline)",
            file=sys.stderr,
        )
    return _build(Config, table, "", str(path) if path is not None else "config")


def load_config_dict(table: dict[str, Any], source: str = "config dict") -> Config:
    """Rebuild a Config from ``config_to_dict`` output (e.g. sent to spawned ranks), strictly."""
    return _build(Config, upgrade_table(table, source), "", source)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def dump_toml(cfg: Any) -> str:
    """Serialise a config to TOML text that ``load_config`` reads back to an equal config."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name:
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in subs.items():
            emit(v, f"{name}.{k}" if name else k)

    emit(config_to_dict(cfg), "")
    return "\n".join(lines).lstrip("\n")
