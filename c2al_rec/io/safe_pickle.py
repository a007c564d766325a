"""Unpickling with an allow-list: a pickle may name only the globals its reader expects.

``pickle.load`` imports and calls whatever a file names (``os.system``, ``builtins.eval``...), so
a file from elsewhere can run code. ``restricted_load`` resolves a global only when its
``(module, name)`` pair is on the caller's allow-list, checked BEFORE the module is imported
(importing a module can itself run code). Plain containers and scalars (dict, list, tuple, str,
int, float, bool, bytes, None) are pickle opcodes and need no global; ``BASIC_GLOBALS`` adds the
builtin container types older pickle protocols name explicitly. No builtin function is ever on it.

Example::

    allowed = BASIC_GLOBALS | {("torch", "Size")}
    with open(path, "rb") as f:
        obj = restricted_load(f, allowed, source=str(path))
"""

from __future__ import annotations

import io
import pickle
from typing import IO, AbstractSet, Any

# Builtin container / scalar types that protocols < 4 (or REDUCE of a subclass) may reference by name.
# Deliberately no function (open, eval, exec, getattr, __import__, ...) and no copyreg helpers.
BASIC_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes")}
    | {("collections", "OrderedDict")}
)


class UnpicklingRefused(ValueError):
    """A pickle named a global (or persistent id) that its reader does not allow."""


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: AbstractSet[tuple[str, str]], source: str) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise UnpicklingRefused(f"{self._source}: refused to unpickle global {module}.{name} (not allowed here)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnpicklingRefused(f"{self._source}: refused to unpickle a persistent id ({str(pid)[:60]!r})")


def restricted_load(file: IO[bytes] | bytes, allowed: AbstractSet[tuple[str, str]], source: str) -> Any:
    """Unpickle ``file`` resolving only the globals in ``allowed``.

    Args:
        file: a binary stream (or the pickle's bytes).
        allowed: ``(module, qualified name)`` pairs the pickle may reference; typically
            ``BASIC_GLOBALS | {...the reader's own classes...}``.
        source: what to name in errors (the file path).

    Returns:
        The unpickled object.

    Raises:
        UnpicklingRefused: (a ValueError) a global outside ``allowed``, or a persistent id.
        ValueError: a malformed or truncated pickle. Both messages name ``source``.
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    try:
        return _AllowListUnpickler(file, allowed, source).load()
    except UnpicklingRefused:
        raise
    except Exception as e:
        # A damaged or truncated pickle, or an allowed class called with arguments it does not take.
        raise ValueError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
