"""Arguments shared by several verbs: ``--config`` with ``--section.field=value`` overrides, and short
flags that set config fields.

A short flag (``--rows``, ``--metric``) is an alias of one config field (``data.synthetic.rows``,
``discover.metric``): its type, choices and help come from the field, and its value becomes a
``--section.field=value`` override, applied before the overrides typed on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Literal, Mapping, Optional

_DEST_PREFIX = "field__"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` plus ``--section.field=value`` overrides (every field listed in the epilog)."""
    from c2al_rec.config import config_help

    parser.add_argument("--config", default=None, help="TOML run config (launch/configs/*.toml)")
    parser.epilog = (parser.epilog or "") + "\nconfig overrides (after --config):\n" + config_help()
    parser.set_defaults(_accepts_overrides=True)


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format``: which serving artifact of an exported directory ``predict`` / ``serve`` load."""
    parser.add_argument(
        "--format",
        default="torchscript",
        choices=["torchscript", "pt2"],
        help="model file: model.pt (TorchScript) or model.pt2 (AOTInductor: native code, hash-checked; trusted "
        "sources only)",
    )


def _dest(key: str) -> str:
    return _DEST_PREFIX + key.replace(".", "__")


def _help(text: str) -> str:
    """Help text as argparse wants it: a literal ``%`` doubled (argparse formats help with ``%``)."""
    return text.replace("%", "%%")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_field_flags(
    parser: argparse.ArgumentParser,
    aliases: Mapping[str, str],
    switches: Mapping[str, tuple[str, Any]] = {},  # noqa: B006 (read only)
    sections: tuple[str, ...] = (),
) -> None:
    """Short flags that set config fields, plus ``--config`` and the ``--section.field=value`` overrides.

    Args:
        parser: the verb's parser.
        aliases: flag -> dotted field (``{"--rows": "data.synthetic.rows"}``); a list field takes
            several values (``--axes a b``).
        switches: flag -> (dotted field, value) for flags without a value (``--no-cohort-effects``).
        sections: the config sections the verb reads; their fields are listed in the epilog.
    """
    from c2al_rec.config import config_help, iter_fields

    fields = {name: (tp, default, doc) for name, tp, default, doc in iter_fields()}
    for flag, key in aliases.items():
        tp, default, doc = fields[key]
        metavar = key.rsplit(".", 1)[-1].upper()
        kwargs: dict[str, Any] = {"dest": _dest(key), "default": argparse.SUPPRESS, "metavar": metavar}
        origin = typing.get_origin(tp)
        if origin is list:
            kwargs["nargs"] = "+"
            (tp,) = typing.get_args(tp)
            origin = typing.get_origin(tp)
        if origin is Literal:
            kwargs["choices"] = typing.get_args(tp)
            kwargs.pop("metavar")
        elif tp is bool:
            kwargs["type"] = _parse_bool
        elif tp in (int, float):
            kwargs["type"] = tp
        parser.add_argument(flag, help=_help(f"{doc} (--{key}; default {default!r})"), **kwargs)
    for flag, (key, value) in switches.items():
        doc = fields[key][2]
        parser.add_argument(
            flag, dest=_dest(key), action="store_const", const=value, default=argparse.SUPPRESS,
            help=_help(f"{key} = {json.dumps(value)}: {doc}"),
        )  # fmt: skip
    parser.add_argument("--config", default=None, help="TOML run config (launch/configs/*.toml) to start from")
    listed = config_help(*sections) if sections else config_help()
    parser.epilog = (parser.epilog or "") + "\nconfig overrides (after --config and the flags above):\n" + listed
    keys = sorted({*aliases.values(), *(key for key, _ in switches.values())})
    parser.set_defaults(_accepts_overrides=True, _field_keys=keys)


def field_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--section.field=value`` overrides of the short flags given, then those typed as such."""
    out = []
    for key in getattr(args, "_field_keys", []):
        if hasattr(args, _dest(key)):
            out.append(f"--{key}={json.dumps(getattr(args, _dest(key)))}")
    return out + list(getattr(args, "overrides", []))


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, only: Optional[list[str]] = None) -> None:
    """One ``--kebab-name`` flag per field of the settings dataclass ``cls`` (or of the fields in ``only``), its
    docstring as help; a flag not given leaves the field's default. bool fields take ``--x/--no-x``; tuple and
    list fields take several values, typed after their default's first element; ``Optional[T]`` takes a T."""
    from c2al_rec.config import field_docs

    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, (tuple, list)):
            kwargs["nargs"] = "+"
            kwargs["type"] = type(default[0]) if default else str
        elif tp in (int, float, str):
            kwargs["type"] = tp
        else:
            continue  # dict and nested fields are not flags
        parser.add_argument(flag, help=_help(f"{docs.get(f.name, '')} (default: {default!r})"), **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with the fields given on the command line replaced; tuple fields stay tuples."""
    base = cls() if base is None else base
    given = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if isinstance(getattr(base, f.name), tuple) else value
    return dataclasses.replace(base, **given)
