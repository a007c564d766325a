"""User errors: the configuration's error type, short echoes of user values, one-line error reports.

Every package may import this module (``config`` is on the lowest floor), so the command line's error
boundary (``cli.main``), the training ranks (``train.launch``) and every message that quotes a user's
value share one rule each:

- ``echo(value)``: what an error message shows of a value the user gave, at most about
  ``ECHO_LIMIT`` characters (a 50 MB string in an integer field must not make a 50 MB error line).
- ``error_line(exc)``: the one line that reports a user error (bad config or data, an OS error such
  as a read-only directory or a full disk, out of memory, a refused pickle), or None for a bug, which
  keeps its traceback.

Example::

    raise ConfigError(f"{where}: expected an integer, got {echo(value)}")
    ...
    except BaseException as e:
        line = error_line(e)
        if line is None:
            raise
        print(f"c2al-rec train: error: {line}", file=sys.stderr)
"""

from __future__ import annotations

import errno as errno_codes
import os
import pickle
import re
import reprlib
from typing import Any, Optional

ECHO_LIMIT = 200  # characters of a user's value that an error message quotes
LINE_LIMIT = 1000  # characters of a whole error line (messages that quote several values, third-party text)


class ConfigError(ValueError):
    """A configuration file, key or value is invalid; the message names where it came from."""


class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3 * self.maxlong:  # repr() itself refuses ints past 4300 digits
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_REPR = _Repr()  # strings inside containers: a few dozen characters each
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10
_REPR.maxlevel = 3


def echo(value: Any) -> str:
    """``repr(value)`` as an error message quotes it: at most about ``ECHO_LIMIT`` characters.

    Strings, numbers and containers are cut in the middle (``reprlib``); a cut string says how long it
    was, so that "a 50 MB value" is still visible from the message.
    """
    if isinstance(value, str):
        if len(value) <= ECHO_LIMIT:
            return repr(value)
        half = ECHO_LIMIT // 2
        return f"{value[:half]!r}...{value[-half:]!r} ({len(value)} characters)"
    return _shorten(_REPR.repr(value), ECHO_LIMIT + 20)


def _shorten(text: str, limit: int) -> str:
    """``text`` cut in the middle to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - 40)
    head, tail = keep * 2 // 3, keep // 3
    return f"{text[:head]} [... {len(text) - head - tail} characters cut ...] {text[len(text) - tail:]}"


def _one_line(text: str) -> str:
    return _shorten(re.sub(r"\s*[\r\n]\s*", " | ", text.strip()), LINE_LIMIT)


# The exceptions that report the user's input or the user's machine, not a bug. The project's own
# error types (ConfigError, RunDirLocked, IncompleteCheckpoint, NonFiniteLossError, ...) are ValueErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MemoryError, pickle.UnpicklingError)
# A device out of memory (torch.OutOfMemoryError, a RuntimeError) is the machine's limit, not a bug;
# matched by name so that this module never imports torch.
_USER_ERROR_NAMES = ("OutOfMemoryError",)


def os_error_text(e: OSError) -> str:
    """``<path>: <meaning> (<ERRNO>)`` for an OSError: the path(s) it names, the errno's meaning and name.

    Example: ``/runs/a/.lock: Permission denied (EACCES)``; an OSError without an errno (e.g. a
    library's message) keeps its own text.
    """
    if not e.errno:
        return str(e)
    meaning = os.strerror(e.errno)
    name = errno_codes.errorcode.get(e.errno)
    text = f"{meaning} ({name})" if name else meaning
    paths = [os.fsdecode(p) for p in (e.filename, e.filename2) if p is not None and not isinstance(p, int)]
    return f"{' -> '.join(paths)}: {text}" if paths else text


def unwrap_checkpoint_failure(e: BaseException) -> Optional[BaseException]:
    """The first rank's exception inside a ``torch.distributed.checkpoint`` CheckpointException.

    DCP gathers every rank's failure into one CheckpointException (a BaseException whose text holds
    each rank's traceback); the OSError of a full disk is inside it. Prefers an OSError over the
    RuntimeError that torch's zip writer makes of the same failed write. None if ``e`` is not one.
    """
    failures = getattr(e, "failures", None)
    if type(e).__name__ != "CheckpointException" or not isinstance(failures, dict):
        return None
    inner = [f[0] if isinstance(f, tuple) else f for _, f in sorted(failures.items())]
    inner = [x for x in inner if isinstance(x, BaseException)]
    os_errors = [x for x in inner if isinstance(x, OSError)]
    return (os_errors or inner or [None])[0]


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` reports the user's input or machine (one line) rather than a bug (a traceback)."""
    inner = unwrap_checkpoint_failure(e)
    if inner is not None:
        e = inner
    return isinstance(e, USER_ERRORS) or type(e).__name__ in _USER_ERROR_NAMES


def error_line(e: BaseException) -> Optional[str]:
    """The one line (at most ``LINE_LIMIT`` characters) that reports user error ``e``; None for a bug.

    OSErrors read ``<path>: <meaning> (<ERRNO>)``, followed by any notes the code that met the error
    added (``e.add_note("writing checkpoint step_8")``); other errors their message on one line.
    """
    inner = unwrap_checkpoint_failure(e)
    if inner is not None:
        e = inner
    if not is_user_error(e):
        return None
    if isinstance(e, OSError):
        text = os_error_text(e)
    elif isinstance(e, MemoryError) or type(e).__name__ in _USER_ERROR_NAMES:
        text = f"out of memory: {e}" if str(e) else "out of memory"
    elif isinstance(e, pickle.UnpicklingError):
        text = f"cannot unpickle: {e}"
    else:
        text = str(e) or type(e).__name__
    notes = [str(n) for n in getattr(e, "__notes__", [])]
    return _one_line("; ".join([text, *notes]))
