"""Unpickling with an allow-list: a pickle may name only the globals its reader expects.

``pickle.load`` imports and calls whatever a file names (``os.system``, ``builtins.eval``...), so
a file from elsewhere can run code. ``restricted_load`` resolves a global only when its
``(module, name)`` pair is on the caller's allow-list, checked BEFORE the module is imported
(importing a module can itself run code). Plain containers and scalars (dict, list, tuple, str,
int, float, bool, bytes, None) are pickle opcodes and need no global; ``BASIC_GLOBALS`` adds the
builtin container types older pickle protocols name explicitly. No builtin function is ever on it.

Allowed callables can still be asked to build something huge from a few bytes (``bytes(2**31)``
is a 44-byte pickle). Every allowed type whose instances are sized by their arguments (the
builtin scalars and containers, ``torch.Size``, paths) is called through a guard that charges an
upper bound of the bytes the call builds against one budget per load (``max_constructed``, by
default 64 MiB plus 32 times the pickle's size) and refuses the pickle before the call that
would pass it.

Example::

    allowed = BASIC_GLOBALS | {("torch", "Size")}
    with open(path, "rb") as f:
        obj = restricted_load(f, allowed, source=str(path))
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import PurePath
from typing import IO, AbstractSet, Any, Callable, Optional

# Builtin container / scalar types that protocols < 4 (or REDUCE of a subclass) may reference by name.
# Deliberately no function (open, eval, exec, getattr, __import__, ...) and no copyreg helpers.
BASIC_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes")}
    | {("collections", "OrderedDict")}
)


# Types whose construction allocates in proportion to its arguments (a tuple subclass covers torch.Size).
_SIZED_TYPES = (bytes, str, int, float, list, tuple, set, frozenset, dict, PurePath)
_BASE_BUDGET = 64 << 20
_BUDGET_PER_PICKLE_BYTE = 32
# Per element of an iterable argument: a pointer plus a new small object (a str's chars, a list's ints).
_BYTES_PER_ITEM = 100


class UnpicklingRefused(ValueError):
    """A pickle named a global (or persistent id) that its reader does not allow, or would build more
    than its reader's budget."""


def _construction_bytes(cls: type, args: tuple, kwargs: dict) -> int:
    """An upper bound of the bytes ``cls(*args, **kwargs)`` allocates."""
    total = 64
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool):
            total += max(0, arg) if issubclass(cls, bytes) else 32  # bytes(n): n zero bytes
        elif hasattr(arg, "__len__"):
            total += _BYTES_PER_ITEM * len(arg)
        else:
            total += 64
    return total


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: AbstractSet[tuple[str, str]], source: str, budget: int) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._source = source
        self._budget = budget
        self._spent = 0

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise UnpicklingRefused(f"{self._source}: refused to unpickle global {module}.{name} (not allowed here)")
        obj = super().find_class(module, name)
        if isinstance(obj, type) and issubclass(obj, _SIZED_TYPES):
            return self._guarded(obj, f"{module}.{name}")
        return obj

    def _guarded(self, cls: type, name: str) -> Callable[..., Any]:
        """``cls`` called only within the budget. (A function, not a type: pickle's NEWOBJ, which would
        call ``cls.__new__`` directly, then refuses it; real pickles build these types with REDUCE.)"""

        def construct(*args: Any, **kwargs: Any) -> Any:
            self._spent += _construction_bytes(cls, args, kwargs)
            if self._spent > self._budget:
                raise UnpicklingRefused(
                    f"{self._source}: refused to unpickle: its calls of {name} and the other allowed constructors "
                    f"would build more than {self._budget} bytes"
                )
            return cls(*args, **kwargs)

        return construct

    def persistent_load(self, pid: Any) -> Any:
        raise UnpicklingRefused(f"{self._source}: refused to unpickle a persistent id ({str(pid)[:60]!r})")


def restricted_load(
    file: IO[bytes] | bytes,
    allowed: AbstractSet[tuple[str, str]],
    source: str,
    max_constructed: Optional[int] = None,
) -> Any:
    """Unpickle ``file`` resolving only the globals in ``allowed``, within a construction budget.

    Args:
        file: a binary stream (or the pickle's bytes).
        allowed: ``(module, qualified name)`` pairs the pickle may reference; typically
            ``BASIC_GLOBALS | {...the reader's own classes...}``.
        source: what to name in errors (the file path).
        max_constructed: bytes the allowed constructors may build in all (an upper bound per call
            is charged before the call); default 64 MiB plus 32 times the pickle's size.

    Returns:
        The unpickled object.

    Raises:
        UnpicklingRefused: (a ValueError) a global outside ``allowed``, a persistent id, or
            constructor calls past ``max_constructed``.
        ValueError: a malformed or truncated pickle. Both messages name ``source``.
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    if max_constructed is None:
        max_constructed = _BASE_BUDGET + _BUDGET_PER_PICKLE_BYTE * _stream_size(file)
    try:
        return _AllowListUnpickler(file, allowed, source, max_constructed).load()
    except UnpicklingRefused:
        raise
    except Exception as e:
        # A damaged or truncated pickle, or an allowed class called with arguments it does not take.
        raise ValueError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def _stream_size(file: IO[bytes]) -> int:
    if isinstance(file, io.BytesIO):
        return len(file.getbuffer())
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0
