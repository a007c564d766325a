"""The epoch's global batch sequence of ``ParquetReader``: lanes of shuffle windows, decided without
reading any data (only the row counts of the row groups).

Shuffled (``shuffle=True``). The row groups ("units") of a split are put in a seeded order and
concatenated into the *unit stream* of N rows. With ``L = LANES`` lanes and ``m = N // (L * B)``,
the unit stream is cut (at row granularity) into

- the *remainder* ``[0, R)``, ``R = N - L * m * B < L * B`` rows (lane ``L``), and
- ``L`` regular lanes of exactly ``m * B`` rows each: lane ``l`` is ``[R + l*m*B, R + (l+1)*m*B)``.

Each lane's pieces of row groups (even lanes walk their range backwards, so two lanes that share
a row group at their common border need it at the same time) are grouped into windows of at least
``shuffle_buffer`` rows (0: one row-group piece per window); the rows of a window are permuted by
``default_rng([seed, epoch, lane, window, 1])``. A lane's stream is its permuted windows
concatenated; lane batch ``k`` is lane-stream rows ``[k * B, (k + 1) * B)``.

Global batch ``g < L * m`` is batch ``g // L`` of lane ``g % L`` (one round = one batch of every
lane); the remainder's batches follow (its last one short when not dropped). The sequence depends
only on (row-group sizes, seed, epoch, shuffle, shuffle_buffer, batch_size), never on the world
size. Rank ``r`` of ``W`` takes global batches ``r, r + W, ...``; when ``W`` divides ``L`` those all
lie in lanes ``l = r mod W``, so each rank reads and decodes only its own lanes (1/W of every
round) plus the remainder windows its batches touch. Another world size ``W`` reads the lanes
``l = r mod gcd(W, L)``.

File order (``shuffle=False``): one lane, the units in file order, no permutation: global batch
``g`` is rows ``[g * B, (g + 1) * B)`` of the split.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

LANES = 8  # regular lanes of a shuffled epoch; world sizes dividing it read disjoint lanes


@dataclass(frozen=True)
class Piece:
    """Rows ``[lo, hi)`` of unit (row group) ``unit``."""

    unit: int
    lo: int
    hi: int


@dataclass(frozen=True)
class Window:
    """A group of pieces permuted together; ``start`` is its offset in its lane's stream."""

    lane: int
    index: int
    start: int
    rows: int
    pieces: tuple[Piece, ...]
    shuffled: bool

    @property
    def key(self) -> tuple[int, int]:
        return (self.lane, self.index)

    def permutation(self, seed: int, epoch: int) -> Optional[np.ndarray]:
        """Window-local row order (None: identity)."""
        if not self.shuffled:
            return None
        return np.random.default_rng([seed, epoch, self.lane, self.index, 1]).permutation(self.rows)


@dataclass
class Lane:
    rows: int
    windows: list[Window] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)


class EpochOrder:
    """Global batch -> (window, lo, hi) segments of lane streams, for one epoch.

    Args:
        unit_rows: rows of each unit, in file order.
        batch_size: rows per global batch B.
        seed, epoch, shuffle, shuffle_buffer: as ``ParquetReader``.
        lanes: regular lanes of a shuffled epoch.
    """

    def __init__(
        self,
        unit_rows: Sequence[int],
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool,
        shuffle_buffer: int,
        lanes: int = LANES,
    ) -> None:
        self.batch_size = B = batch_size
        n = sum(unit_rows)
        if shuffle:
            order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(len(unit_rows))]
        else:
            order = list(range(len(unit_rows)))
        self._order = order
        self._offsets = np.concatenate([[0], np.cumsum([unit_rows[i] for i in order])]).astype(np.int64).tolist()
        self._shuffle_buffer = shuffle_buffer
        if shuffle:
            self.num_lanes = lanes
            self.per_lane = n // (lanes * B)
            rest = n - lanes * self.per_lane * B
            regions = [
                (rest + k * self.per_lane * B, rest + (k + 1) * self.per_lane * B, k % 2 == 0) for k in range(lanes)
            ]
            regions.append((0, rest, False))  # the remainder: lane `lanes`
        else:
            self.num_lanes, self.per_lane = 0, 0
            regions = [(0, n, False)]
        self.lanes = [self._lane(i, lo, hi, backwards, shuffle) for i, (lo, hi, backwards) in enumerate(regions)]

    def _pieces(self, lo: int, hi: int) -> list[Piece]:
        out = []
        i = bisect.bisect_right(self._offsets, lo) - 1
        while lo < hi:
            start, end = self._offsets[i], self._offsets[i + 1]
            if end > lo:
                out.append(Piece(self._order[i], lo - start, min(end, hi) - start))
                lo = min(end, hi)
            i += 1
        return out

    def _lane(self, index: int, lo: int, hi: int, backwards: bool, shuffle: bool) -> Lane:
        pieces = self._pieces(lo, hi)
        if backwards:
            pieces.reverse()
        lane = Lane(rows=hi - lo)
        cur: list[Piece] = []
        rows = start = 0
        for p in pieces:
            cur.append(p)
            rows += p.hi - p.lo
            if rows >= self._shuffle_buffer:
                lane.windows.append(Window(index, len(lane.windows), start, rows, tuple(cur), shuffle))
                lane.starts.append(start)
                start += rows
                cur, rows = [], 0
        if cur:
            lane.windows.append(Window(index, len(lane.windows), start, rows, tuple(cur), shuffle))
            lane.starts.append(start)
        return lane

    def locate(self, g: int) -> tuple[int, int]:
        """Global batch ``g`` -> (lane, batch index inside the lane)."""
        regular = self.num_lanes * self.per_lane
        if g < regular:
            return g % self.num_lanes, g // self.num_lanes
        return len(self.lanes) - 1, g - regular

    def segments(self, g: int) -> list[tuple[Window, int, int]]:
        """Global batch ``g`` as (window, lo, hi): window-local stream rows, in batch row order."""
        lane_i, k = self.locate(g)
        lane = self.lanes[lane_i]
        lo, hi = k * self.batch_size, min((k + 1) * self.batch_size, lane.rows)
        out = []
        w = bisect.bisect_right(lane.starts, lo) - 1
        while lo < hi:
            win = lane.windows[w]
            end = win.start + win.rows
            if end > lo:
                out.append((win, lo - win.start, min(end, hi) - win.start))
                lo = min(end, hi)
            w += 1
        return out
