"""Read a TorchScript archive's code and pickles without loading it, and refuse what no export emits.

``torch.jit.load`` compiles the archive's serialized code (``code/**.py``) and unpickles its
``data.pkl``, ``constants.pkl`` and debug pickles; an object whose class defines ``__setstate__`` runs
that method inside the load. So the check runs before the load, on the archive's bytes, read with
torch's own zip reader (the one ``torch.jit.load`` uses, so both see the same entries):

- every code file is parsed (Python's ``ast``; TorchScript's serialized code is Python syntax) and
  what it refers to is collected: ops (``torch.<f>`` is ``aten::<f>``, ``ops.<ns>.<f>`` is
  ``<ns>::<f>``), global names (``annotate``, ``range``, ``Tensor``...), methods called on objects,
  TorchBind classes (``__torch__.torch.classes.<ns>.<C>``), syntax node kinds;
- every pickle is read by an unpickler whose ``find_class`` records each global it names and returns
  an inert stand-in, so nothing of the pickle's choosing is imported or called;
- a ``__torch__.<...>`` name must be a class or function the archive itself defines (its code is
  scanned too), or an allowed TorchBind class.

``check_archive`` compares the collection with the allow-list ``serving_ops.json`` beside this file,
which ``python -m c2al_rec.export.serving_ops --write`` regenerates from what ``export`` emits (fp32,
int8 and fp16, baseline and C2AL, single- and multi-hot, with and without dense features, every
interaction module); a test regenerates it and compares. Anything else (file I/O such as
``aten::from_file``, an unknown op or class, a pickle global no export writes) is refused with one
line naming it and where it is.

Example::

    check_archive("runs/export/model.pt")   # raises ArchiveRefused naming the first op not allowed
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

import torch

ALLOW_LIST_FILE = Path(__file__).with_name("serving_ops.json")
REGENERATE = "python -m c2al_rec.export.serving_ops --write"
ZIP_MAGIC = b"PK\x03\x04"
FLATBUFFER_MAGIC = b"PTMF"  # at offset 4: torch.jit.load would read the file as a flatbuffer module
MAX_RECORD_BYTES = 16 << 20  # one code file or pickle; an export's largest is ~120 kB
MAX_SCANNED_BYTES = 64 << 20  # all of them together
KINDS = ("ops", "names", "methods", "classes", "pickle_globals", "syntax")
_KIND_WORDS = {
    "ops": "op",
    "names": "global name",
    "methods": "method",
    "classes": "TorchBind class",
    "pickle_globals": "pickle global",
    "syntax": "syntax",
}
_TORCHBIND = "__torch__.torch.classes."
# ``torch.<f>`` / ``ops.<ns>.<f>`` anywhere in a code file's text, strings and comments included: a
# second reading that does not depend on Python's tokenizer agreeing with TorchScript's
_RAW_OP = re.compile(r"(?<![\w.])(torch|ops)((?:\s*\.\s*[A-Za-z_]\w*)+)")


class ArchiveRefused(ValueError):
    """The archive refers to something no exported model uses, or cannot be read; nothing was loaded."""


@dataclass
class Reference:
    """One thing an archive refers to: its kind (one of ``KINDS``), name, and where (record and line)."""

    kind: str
    name: str
    where: str


@dataclass
class Inventory:
    """Everything an archive refers to, by kind (the form of the allow-list)."""

    items: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})

    def add(self, ref: Reference) -> None:
        self.items[ref.kind].add(ref.name)

    def update(self, other: "Inventory") -> None:
        for k in KINDS:
            self.items[k] |= other.items[k]

    def to_json(self) -> dict[str, list[str]]:
        return {k: sorted(self.items[k]) for k in KINDS}


# ------------------------------------------------------------------------------------ the archive
def read_records(path: str | Path) -> dict[str, bytes]:
    """The archive's code files and pickles, by record name (``code/...py``, ``data.pkl``, ...).

    Raises:
        ArchiveRefused: not a TorchScript zip (or a flatbuffer module), unreadable, or records over
            the size caps.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
    if head[4:8] == FLATBUFFER_MAGIC:
        raise ArchiveRefused(f"{p}: a flatbuffer (mobile) module; serving loads TorchScript zip archives only")
    if head[:4] != ZIP_MAGIC:
        raise ArchiveRefused(f"{p}: not a loadable TorchScript model (empty, truncated or corrupt?): not a zip archive")
    try:
        reader = torch._C.PyTorchFileReader(str(p))
        names = reader.get_all_records()
    except Exception as e:  # miniz reports a damaged archive as RuntimeError
        raise ArchiveRefused(
            f"{p}: not a loadable TorchScript model (empty, truncated or corrupt?): {_first_line(e)}"
        ) from None
    records: dict[str, bytes] = {}
    total = 0
    for name in names:
        # data.pkl, constants.pkl, code/**.py.debug_pkl (unpickled too), code/**.py
        if not (name.endswith("pkl") or (name.startswith("code/") and name.endswith(".py"))):
            continue  # tensor storages, version, byteorder, extra files: data, not run
        size = reader.get_record_size(name)
        total += size
        if size > MAX_RECORD_BYTES or total > MAX_SCANNED_BYTES:
            raise ArchiveRefused(
                f"{p}: record {name} takes the archive's code and pickles over the scan limit "
                f"({MAX_RECORD_BYTES >> 20} MiB a record, {MAX_SCANNED_BYTES >> 20} MiB in all); not an export"
            )
        try:
            records[name] = bytes(reader.get_record(name))
        except Exception as e:
            why = _first_line(e)
            raise ArchiveRefused(f"{p}: record {name} cannot be read (truncated or corrupt?): {why}") from None
    if "data.pkl" not in records:
        raise ArchiveRefused(f"{p}: not a loadable TorchScript model (empty, truncated or corrupt?): no data.pkl")
    return records


def scan_records(records: dict[str, bytes]) -> Iterator[Reference]:
    """Every reference of the archive's code and pickles, in record order (see the module docstring)."""
    defined = _defined_names(records)
    for name, raw in records.items():
        if name.endswith(".py"):
            yield from _CodeScanner(name, raw, defined).scan()
        else:
            yield from _pickle_references(name, raw, defined)


def inventory(path: str | Path) -> Inventory:
    """What the archive at ``path`` refers to, by kind (the allow-list's generator uses this)."""
    inv = Inventory()
    for ref in scan_records(read_records(path)):
        inv.add(ref)
    return inv


@lru_cache(maxsize=1)
def allow_list() -> dict[str, frozenset[str]]:
    """The committed allow-list (``serving_ops.json``), by kind."""
    data = json.loads(ALLOW_LIST_FILE.read_text())
    return {k: frozenset(data[k]) for k in KINDS}


def check_archive(path: str | Path, allowed: Optional[dict[str, frozenset[str]]] = None) -> None:
    """Refuse an archive that refers to anything outside the allow-list, before anything is loaded.

    Args:
        path: a TorchScript archive (``model.pt``).
        allowed: the allow-list by kind (default: ``serving_ops.json``).

    Raises:
        ArchiveRefused: one line naming the first reference not allowed, with its record and line.
    """
    allowed = allow_list() if allowed is None else allowed
    for ref in scan_records(read_records(path)):
        if ref.name not in allowed[ref.kind]:
            raise ArchiveRefused(
                f"{path}: refused before loading: {_KIND_WORDS[ref.kind]} {ref.name} ({ref.where}) is not one "
                f"that an exported model uses (allow-list {ALLOW_LIST_FILE.name}, regenerated by `{REGENERATE}`)"
            )


# ------------------------------------------------------------------------------------ code
def _qualified_module(record: str) -> str:
    """``code/__torch__/a/b.py`` -> ``__torch__.a.b`` (the qualified name TorchScript imports it as)."""
    return record[len("code/") : -len(".py")].replace("/", ".")


def _defined_names(records: dict[str, bytes]) -> set[str]:
    """Qualified names of the classes and functions the archive's code files define (top level)."""
    defined: set[str] = set()
    for name, raw in records.items():
        if not name.endswith(".py"):
            continue
        try:
            tree = ast.parse(raw.decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # reported by the scan of that file
        module = _qualified_module(name)
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defined.add(f"{module}.{node.name}")
    return defined


def _chain(node: ast.AST) -> Optional[list[str]]:
    """``a.b.c`` -> ["a", "b", "c"] when the expression is a name followed by attributes only."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _op_name(parts: list[str]) -> str:
    """The op a ``torch.*`` / ``ops.*`` chain names: ``torch.f`` -> ``aten::f``, ``ops.ns.f`` -> ``ns::f``
    (deeper chains keep their tail, e.g. ``aten::f.default``, and are on no list)."""
    if parts[0] == "torch" and len(parts) >= 2 and parts[1] == "ops":
        parts = ["ops", *parts[2:]]
    if parts[0] == "ops":
        if len(parts) < 3:
            return ".".join(parts)
        return f"{parts[1]}::{'.'.join(parts[2:])}"
    if len(parts) < 2:
        return parts[0]
    return f"aten::{'.'.join(parts[1:])}"


class _CodeScanner:
    """References of one serialized code file. A name is local in a function from the statement that
    binds it on (TorchScript reads a name from the function's environment, else from its globals)."""

    def __init__(self, record: str, raw: bytes, defined: set[str]) -> None:
        self.record, self.raw, self.defined = record, raw, defined
        self.refs: dict[tuple[str, str], Reference] = {}  # the first place each name is referred to

    def scan(self) -> Iterator[Reference]:
        try:
            tree = ast.parse(self.raw.decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError) as e:
            yield Reference("syntax", f"unparsable code ({type(e).__name__})", self.record)
            return
        for node in ast.walk(tree):
            self._ref("syntax", type(node).__name__, node)
        text = self.raw.decode("utf-8")
        for m in _RAW_OP.finditer(text):
            parts = [m.group(1), *(p.strip() for p in m.group(2).split(".") if p.strip())]
            line = text.count("\n", 0, m.start()) + 1
            op = _op_name(parts)
            self.refs.setdefault(("ops", op), Reference("ops", op, f"{self.record} line {line}"))
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                for base in stmt.bases:
                    self._expr(base, set())
                for item in stmt.body:
                    if isinstance(item, ast.FunctionDef):
                        self._function(item)
                    else:
                        self._statement(item, set())
            elif isinstance(stmt, ast.FunctionDef):
                self._function(stmt)
            else:
                self._statement(stmt, set())
        yield from self.refs.values()

    def _ref(self, kind: str, name: str, node: ast.AST) -> None:
        if (kind, name) not in self.refs:
            self.refs[kind, name] = Reference(kind, name, f"{self.record} line {getattr(node, 'lineno', '?')}")

    def _function(self, fn: ast.FunctionDef) -> None:
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        for a in [*args, fn.args.vararg, fn.args.kwarg]:
            if a is not None and a.annotation is not None:
                self._expr(a.annotation, set())
        for d in [*fn.args.defaults, *(d for d in fn.args.kw_defaults if d is not None)]:
            self._expr(d, set())
        if fn.returns is not None:
            self._expr(fn.returns, set())
        local = {a.arg for a in args} | {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None}
        self._block(fn.body, local)

    def _block(self, body: list[ast.stmt], local: set[str]) -> None:
        for stmt in body:
            self._statement(stmt, local)

    def _statement(self, stmt: ast.stmt, local: set[str]) -> None:
        """Scan one statement's reads with ``local`` as bound before it, then add what it binds."""
        if isinstance(stmt, (ast.If, ast.While)):
            self._expr(stmt.test, local)
            self._block(stmt.body, local)
            self._block(stmt.orelse, local)
        elif isinstance(stmt, ast.For):
            self._expr(stmt.iter, local)
            self._bind(stmt.target, local)
            self._block(stmt.body, local)
            self._block(stmt.orelse, local)
        elif isinstance(stmt, ast.With):
            for item in stmt.items:
                self._expr(item.context_expr, local)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, local)
            self._block(stmt.body, local)
        elif isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            self._ref("syntax", f"nested {type(stmt).__name__}", stmt)
        elif isinstance(stmt, ast.Assign):
            self._expr(stmt.value, local)
            for target in stmt.targets:
                self._target(target, local)
            for target in stmt.targets:
                self._bind(target, local)
        elif isinstance(stmt, ast.AnnAssign):
            self._expr(stmt.annotation, set())
            if stmt.value is not None:
                self._expr(stmt.value, local)
            self._target(stmt.target, local)
            self._bind(stmt.target, local)
        elif isinstance(stmt, ast.AugAssign):
            self._expr(stmt.value, local)
            self._expr(_as_load(stmt.target), local)
            self._target(stmt.target, local)
        else:  # Expr, Return, Raise, Assert, Delete, Pass, Break, Continue, ...
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self._expr(child, local)
                elif isinstance(child, ast.stmt):
                    self._statement(child, local)

    def _bind(self, target: ast.AST, local: set[str]) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                local.add(node.id)

    def _target(self, target: ast.AST, local: set[str]) -> None:
        """Reads inside an assignment target: ``self.x = ...`` reads ``self``, ``a[i] = ...`` reads ``a`` and ``i``."""
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._target(elt, local)
        elif isinstance(target, ast.Starred):
            self._target(target.value, local)
        elif isinstance(target, ast.Attribute):
            self._expr(target.value, local)
        elif isinstance(target, ast.Subscript):
            self._expr(target.value, local)
            self._expr(target.slice, local)

    def _expr(self, node: ast.AST, local: set[str]) -> None:
        if isinstance(node, ast.Call):
            parts = _chain(node.func)
            if isinstance(node.func, ast.Attribute) and (parts is None or parts[0] in local):
                self._ref("methods", node.func.attr, node)  # x.m(...), (expr).m(...)
                self._expr(node.func.value, local)
            else:
                self._expr(node.func, local)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self._expr(arg, local)
            return
        if isinstance(node, (ast.Attribute, ast.Name)):
            parts = _chain(node)
            if parts is not None:
                self._global_chain(parts, local, node)
                return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda, ast.NamedExpr)):
            return  # no export emits these: their syntax kind is refused, their names need no scope rules
        for child in ast.iter_child_nodes(node):
            self._expr(child, local)

    def _global_chain(self, parts: list[str], local: set[str], node: ast.AST) -> None:
        root = parts[0]
        if root in local:
            return  # attribute reads of a local value (self.x, t.shape)
        if root == "__torch__":
            self._torch_name(parts, node)
        elif root in ("torch", "ops"):
            self._ref("names", root, node)
            self._ref("ops", _op_name(parts), node)
        elif root == "CONSTANTS":
            self._ref("names", root, node)  # CONSTANTS.c<N>: the archive's constant tensors
        else:
            self._ref("names", root, node)
            if len(parts) > 1:
                self._ref("ops", ".".join(parts), node)

    def _torch_name(self, parts: list[str], node: ast.AST) -> None:
        """``__torch__.<...>``: a class or function of the archive (plus a method), or a TorchBind class."""
        for end in range(len(parts), 1, -1):
            if ".".join(parts[:end]) in self.defined:
                for method in parts[end:]:
                    self._ref("methods", method, node)
                return
        qualified = ".".join(parts)
        if qualified.startswith(_TORCHBIND) and len(parts) >= 5:
            self._ref("classes", ".".join(parts[:5]), node)
            for method in parts[5:]:
                self._ref("methods", method, node)
            return
        self._ref("classes", f"{qualified} (not defined in the archive)", node)


def _as_load(target: ast.expr) -> ast.expr:
    """An augmented assignment's target as the expression it also reads."""
    if isinstance(target, ast.Name):
        return ast.copy_location(ast.Name(target.id, ast.Load()), target)
    return target


# ------------------------------------------------------------------------------------ pickles
class _StandIn:
    """What every global of a scanned pickle becomes: accepts any construction and state, does nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> "_StandIn":
        return _StandIn()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass


class _GlobalRecorder(pickle.Unpickler):
    """Unpickles with every global replaced by ``_StandIn`` and persistent ids by None, recording the globals."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw))
        self.globals: list[str] = []

    def find_class(self, module: str, name: str) -> type:
        self.globals.append(f"{module}.{name}")
        return _StandIn

    def persistent_load(self, pid: object) -> None:
        return None


def _pickle_references(record: str, raw: bytes, defined: set[str]) -> Iterator[Reference]:
    """The globals a pickle names (GLOBAL, STACK_GLOBAL, INST, ...), none of them imported or called."""
    recorder = _GlobalRecorder(raw)
    try:
        recorder.load()
        failure = None
    except Exception as e:  # a malformed stream: what it named so far, then a refusal
        failure = _first_line(e)
    for qualified in dict.fromkeys(recorder.globals):
        yield from _pickle_global(record, qualified, defined)
    if failure is not None:
        yield Reference("pickle_globals", f"unreadable pickle ({failure})", record)


def _pickle_global(where: str, qualified: str, defined: set[str]) -> Iterator[Reference]:
    """The reference of one pickled global; none for a class of the archive (its code is scanned)."""
    if not qualified.startswith("__torch__."):
        yield Reference("pickle_globals", qualified, where)
    elif qualified.startswith(_TORCHBIND):
        yield Reference("classes", ".".join(qualified.split(".")[:5]), where)
    elif qualified not in defined:
        yield Reference("classes", f"{qualified} (not defined in the archive)", where)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
