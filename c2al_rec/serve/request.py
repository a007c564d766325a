"""Request parsing of the scoring service: JSON rows -> checked values -> ``predict`` input tensors.

One parser (``RowParser``) for ``POST /v1/score`` and for ``rows_to_inputs`` (one request's rows to
tensors, as ``predict`` and the tests use it). Requests are checked with the training-time rules
(the ``find_bad_id`` the reader uses) before they are queued, so one bad request is a 400 naming
its row and feature and never fails a batch. The checks are plain Python (no NumPy or torch call
per request); the rows of a whole micro-batch become the ``predict`` tensors in one step in the
scoring thread (``RowParser.collate``: one array for the dense values, one for all single-hot ids).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from c2al_rec.config.errors import echo
from c2al_rec.data.transforms import find_bad_id

from .artifact import ExportedModel
from .limits import FLOAT32_MAX, INT64_END, LongInt, show_number
from .predictor import sparse_feature

Inputs = dict[str, torch.Tensor]


class RequestError(ValueError):
    """A request the model cannot score (HTTP 400); the message names the row and feature.

    ``limit``: the ``ServeLimits`` limit it passed (its name in ``/metrics``), if any.
    """

    def __init__(self, message: str, limit: Optional[str] = None) -> None:
        super().__init__(message)
        self.limit = limit


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_error(i: int, name: str, v: Any) -> Optional[RequestError]:
    """A dense value that is a finite number but does not fit float32 (1e39, a 400-digit integer)."""
    if type(v) is float:
        too_big = math.isfinite(v) and not -FLOAT32_MAX <= v <= FLOAT32_MAX
    else:  # compared as integers: no float conversion that could overflow
        too_big = isinstance(v, LongInt) or (_is_id(v) and not -FLOAT32_MAX <= v <= FLOAT32_MAX)
    if too_big:
        return RequestError(
            f"row {i}: dense feature '{name}' = {show_number(v)} does not fit float32 (|x| <= {FLOAT32_MAX:.8g})",
            limit="number_range",
        )
    return None


def _id_error(i: int, name: str, v: Any) -> Optional[RequestError]:
    """An integer id that does not fit int64 (2**63 and above, an integer too long to parse)."""
    if isinstance(v, LongInt) or (_is_id(v) and not -INT64_END <= v < INT64_END):
        return RequestError(
            f"row {i}: feature '{name}' id {show_number(v)} does not fit int64 (ids must be < 2**63)",
            limit="number_range",
        )
    return None


class _Bad(Exception):
    """A row failed a fast check; ``RowParser._explain`` then finds the message."""


class ParsedRows:
    """One request's rows, checked, as Python lists (``RowParser.parse``; ``RowParser.collate`` merges them).

    ``dense``: one list of D numbers per row; ``single``: one list of the single-hot ids per row (in
    the model's feature order); ``multi``: per multi-hot feature, one list of ids per row.
    """

    __slots__ = ("n", "dense", "single", "multi")

    def __init__(self, n: int, dense: list, single: list, multi: list) -> None:
        self.n, self.dense, self.single, self.multi = n, dense, single, multi


class RowParser:
    """JSON rows -> checked ``ParsedRows`` per request, and a micro-batch of them -> ``predict`` inputs.

    The one parser of the request format: the service's routes and ``rows_to_inputs`` go through it.
    It is the per-request hot path, so ``parse`` checks plain Python values of the decoded JSON in one
    pass and the tensors are built once per micro-batch (``collate``) instead of once per request; a
    request the pass refuses is checked again by ``_explain``, which names its first bad row and
    feature (the 400 message).

    Args:
        model: the loaded export (its dense and sparse features, their tables and out-of-range rules).
        max_rows: rows one request may hold.
        max_multi_hot_ids: most ids in one multi-hot feature of one row (None: no limit).
    """

    def __init__(self, model: ExportedModel, max_rows: int = 4096, max_multi_hot_ids: Optional[int] = None) -> None:
        self.model, self.max_rows, self.max_multi_hot_ids = model, max_rows, max_multi_hot_ids
        self.dense_names: list[str] = list(model.dense_features)
        self.features = features = [sparse_feature(f) for f in model.sparse_features]

        def limit(f: Any) -> int:  # ids must lie in [0, limit)
            return f.num_embeddings if f.out_of_range == "error" else INT64_END

        self.single = [(f.name, limit(f)) for f in features if not f.multi_hot]
        self.multi = [(f.name, limit(f)) for f in features if f.multi_hot]
        # the predict dict's keys in the model's feature order: (feature, is multi-hot, index in its group)
        si = mi = 0
        self._order: list[tuple[str, bool, int]] = []
        for f in features:
            if f.multi_hot:
                self._order.append((f.name, True, mi))
                mi += 1
            else:
                self._order.append((f.name, False, si))
                si += 1

    def parse(self, rows: Any) -> ParsedRows:
        """Check ``rows`` (the request's ``"rows"``); raises ``RequestError`` naming the first bad row and feature."""
        try:
            return self._parse(rows)
        except _Bad:
            pass
        try:  # the full check finds the first bad row and feature and says what is wrong
            self._explain(rows)
        except RequestError:
            raise
        except (OverflowError, ValueError, TypeError) as e:  # e.g. an integer too large for int64
            raise RequestError(f"a value does not fit the model's types: {e}") from None
        raise RequestError("rows rejected")  # not reached: the fast checks are _explain's rules

    def _parse(self, rows: Any) -> ParsedRows:
        if type(rows) is not list or not rows or len(rows) > self.max_rows:
            raise _Bad
        dense_names, single, multi = self.dense_names, self.single, self.multi
        max_ids = self.max_multi_hot_ids if self.max_multi_hot_ids is not None else INT64_END
        dense_rows, single_rows = [], []
        multi_rows: list[list] = [[] for _ in multi]
        for row in rows:
            if type(row) is not dict:
                raise _Bad
            get = row.get
            d = [get(name) for name in dense_names]
            for v in d:
                t = type(v)
                # NaN and +-inf fail the range check too; bool, None, str, ... are rejected
                if (t is not float and t is not int) or not -FLOAT32_MAX <= v <= FLOAT32_MAX:
                    raise _Bad
            s = [get(name) for name, _ in single]
            for v, (_, hi) in zip(s, single):
                if type(v) is not int or not 0 <= v < hi:
                    raise _Bad
            for k, (name, hi) in enumerate(multi):
                ids = get(name)
                if type(ids) is not list or len(ids) > max_ids:
                    raise _Bad
                for v in ids:
                    if type(v) is not int or not 0 <= v < hi:
                        raise _Bad
                multi_rows[k].append(ids)
            dense_rows.append(d)
            single_rows.append(s)
        return ParsedRows(len(rows), dense_rows, single_rows, multi_rows)

    def _explain(self, rows: Any) -> None:
        """Raise the ``RequestError`` that names the first bad row and feature of rows ``_parse`` refused.

        The checks in order: the list itself, then row by row each dense feature and each sparse
        feature (model order) for presence, type, float32 / int64 range and the multi-hot limit, then
        feature by feature the ids (negative, or outside the table under ``error``) via ``find_bad_id``,
        the reader's rule.
        """
        if not isinstance(rows, list) or not rows:
            raise RequestError("'rows' must be a non-empty list of objects")
        if len(rows) > self.max_rows:
            raise RequestError(f"{len(rows)} rows in one request; at most {self.max_rows}")
        dense_names, features, max_multi_hot_ids = self.dense_names, self.features, self.max_multi_hot_ids
        values: dict[str, list[int]] = {f.name: [] for f in features}
        lengths = {f.name: np.empty(len(rows), np.int64) for f in features}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"row {i}: expected an object of feature values, got {type(row).__name__}")
            for name in dense_names:
                v = row.get(name)
                if v is None:
                    raise RequestError(f"row {i}: missing dense feature '{name}'")
                bad = _number_error(i, name, v)
                if bad is not None:
                    raise bad
                if not _is_number(v) or not math.isfinite(v):
                    raise RequestError(f"row {i}: dense feature '{name}' must be a finite number, got {echo(v)}")
            for f in features:
                v = row.get(f.name)
                if v is None:
                    raise RequestError(f"row {i}: missing sparse feature '{f.name}'")
                if f.multi_hot:
                    if isinstance(v, list) and max_multi_hot_ids is not None and len(v) > max_multi_hot_ids:
                        raise RequestError(
                            f"row {i}: multi-hot feature '{f.name}' has {len(v)} ids; at most {max_multi_hot_ids} "
                            f"per row (--max-multi-hot-ids)",
                            limit="multi_hot_ids",
                        )
                    for x in v if isinstance(v, list) else ():
                        bad = _id_error(i, f.name, x)
                        if bad is not None:
                            raise bad
                    if not isinstance(v, list) or not all(_is_id(x) for x in v):
                        raise RequestError(
                            f"row {i}: multi-hot feature '{f.name}' must be a list of integer ids, got {echo(v)}"
                        )
                    values[f.name].extend(v)
                    lengths[f.name][i] = len(v)
                else:
                    bad = _id_error(i, f.name, v)
                    if bad is not None:
                        raise bad
                    if not _is_id(v):
                        raise RequestError(f"row {i}: sparse feature '{f.name}' must be an integer id, got {echo(v)}")
                    values[f.name].append(v)
                    lengths[f.name][i] = 1
        for f in features:  # ranges last, feature by feature: the first bad id of the first feature that has one
            bad = find_bad_id(f, np.asarray(values[f.name], dtype=np.int64), lengths[f.name])
            if bad is not None:
                row, value, what = bad
                raise RequestError(f"row {row}: feature '{f.name}' {what}: id {value}")

    def collate(self, parts: Sequence[ParsedRows]) -> Inputs:
        """The ``predict`` input dict of several requests' rows, in order (one tensor set for the micro-batch)."""
        n = sum(p.n for p in parts)
        if len(parts) == 1:
            dense_rows, single_rows = parts[0].dense, parts[0].single
        else:
            dense_rows = [r for p in parts for r in p.dense]
            single_rows = [r for p in parts for r in p.single]
        inputs: Inputs = {"dense": torch.from_numpy(np.array(dense_rows, np.float32).reshape(n, len(self.dense_names)))}
        single = np.array(single_rows, np.int64).reshape(n, len(self.single)).T.copy()  # [S, n]: one row per feature
        ones = torch.ones(n, dtype=torch.int64) if self.single else None
        for name, is_multi, k in self._order:
            if is_multi:
                lists = parts[0].multi[k] if len(parts) == 1 else [x for p in parts for x in p.multi[k]]
                lengths = np.fromiter(map(len, lists), np.int64, n)
                values = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lengths.sum()))
                inputs[f"{name}.values"] = torch.from_numpy(values)
                inputs[f"{name}.lengths"] = torch.from_numpy(lengths)
            else:
                inputs[f"{name}.values"] = torch.from_numpy(single[k])
                inputs[f"{name}.lengths"] = ones  # type: ignore[assignment]
        return inputs


def rows_to_inputs(
    rows: Any, model: ExportedModel, max_rows: int = 4096, max_multi_hot_ids: Optional[int] = None
) -> Inputs:
    """JSON rows -> the ``predict`` input dict, checked with the training-time rules (``RowParser``).

    Args:
        rows: ``[{"<dense>": number, "<single-hot>": int, "<multi-hot>": [int, ...]}, ...]``; features
            the model does not take are ignored.
        max_multi_hot_ids: most ids in one multi-hot feature of one row (None: no limit).

    Returns:
        ``{"dense": float32 [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}``.

    Raises:
        RequestError: not a non-empty list of objects, a missing feature, a wrong type, a
            non-finite dense value or one beyond float32, an id beyond int64, a negative id or an id
            outside its table under ``error``, a multi-hot list over ``max_multi_hot_ids``.
    """
    parser = RowParser(model, max_rows, max_multi_hot_ids)
    return parser.collate([parser.parse(rows)])
