"""A bounded table of unit vectors with expiry, searched by one matrix product.

Used by the memory state for its namespaces and by the Redis state for its local mirrors of the shared
streams. Rows live in a ring (oldest evicted first) in one preallocated float32 matrix that grows by
doubling up to ``max_rows``, so an add never copies the whole table and a search is one ``m @ v``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def unit(vector: npt.ArrayLike) -> Vector:
    """The vector as 1-D float32 of length 1 (a zero vector stays zero): dot product = cosine."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    return v / np.float32(norm) if norm > 0 else v


class VectorTable:
    __slots__ = ("_exp", "_ids", "_m", "_max", "_next", "_size", "_where", "dim", "newest_expiry")

    def __init__(self, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self._max = max_rows
        self._m: Vector = np.zeros((0, 0), dtype=np.float32)
        self._exp = np.zeros(0, dtype=np.float64)
        self._ids: list[str | None] = []
        self._where: dict[str, int] = {}
        self._size = 0  # rows written so far (until the table is full)
        self._next = 0  # where the next row goes once full: the oldest row
        self.dim: int | None = None
        self.newest_expiry = float("-inf")  # when it has passed, the whole table is dead

    def __len__(self) -> int:
        return len(self._where)

    def add(self, entry: str, vector: Vector, expires_at: float) -> None:
        """Add a unit vector; an entry added again replaces its older row (which then counts as dead)."""
        if self.dim is None:
            self.dim = int(vector.shape[0])
        elif vector.shape[0] != self.dim:
            raise ValueError(f"a vector of {vector.shape[0]} dimensions in a table of {self.dim}")
        old = self._where.pop(entry, None)
        if old is not None:
            self._ids[old] = None
            self._exp[old] = -np.inf
        if self._size < self._max:
            if self._size == self._m.shape[0]:
                self._grow()
            row = self._size
            self._size += 1
        else:
            row = self._next
            self._next = (row + 1) % self._max
            evicted = self._ids[row]
            if evicted is not None:
                del self._where[evicted]
        self._m[row] = vector
        self._exp[row] = expires_at
        self._ids[row] = entry
        self._where[entry] = row
        self.newest_expiry = max(self.newest_expiry, expires_at)

    def search(self, vector: Vector, threshold: float, limit: int, now: float) -> list[tuple[str, float]]:
        if self._size == 0 or limit <= 0:
            return []
        if vector.shape[0] != self.dim:
            raise ValueError(f"a vector of {vector.shape[0]} dimensions searched in a table of {self.dim}")
        scores = self._m[: self._size] @ vector
        hits = np.flatnonzero((self._exp[: self._size] > now) & (scores >= threshold))
        if hits.size > limit:
            hits = hits[np.argpartition(-scores[hits], limit - 1)[:limit]]
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        found = []
        for i in hits:
            entry = self._ids[i]
            assert entry is not None  # a dead row never passes: its expiry is -inf
            found.append((entry, float(scores[i])))
        return found

    def _grow(self) -> None:
        assert self.dim is not None
        rows = min(self._max, max(16, 2 * self._m.shape[0]))
        m = np.zeros((rows, self.dim), dtype=np.float32)
        exp = np.full(rows, -np.inf)
        if self._size:
            m[: self._size] = self._m[: self._size]
            exp[: self._size] = self._exp[: self._size]
        self._m, self._exp = m, exp
        self._ids.extend([None] * (rows - len(self._ids)))
