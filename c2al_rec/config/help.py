"""Field documentation: the docstring under each config field, listed for ``--help`` and ``config --fields``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import lru_cache
from typing import Any, Iterable, Literal

from .tree import Config


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Return ``{field: one-line docstring}`` read from the string literal below each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def iter_fields(cls: type = Config, prefix: str = "") -> Iterable[tuple[str, Any, Any, str]]:
    """Yield ``(dotted_name, type, default, doc)`` for every leaf field of a config class."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, getattr(default, f.name), docs.get(f.name, "")


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def config_help(*sections: str) -> str:
    """Text listing every field with type, default and docstring (used by ``--help``).

    Args:
        sections: dotted prefixes (``"discover"``, ``"data.synthetic"``) to list only their fields;
            none lists the whole tree.
    """
    out = []
    for name, tp, default, doc in iter_fields():
        if sections and not any(name == s or name.startswith(s + ".") for s in sections):
            continue
        out.append(f"  --{name}=<{type_name(tp)}>  (default {default!r})\n      {doc}")
    return "\n".join(out)
