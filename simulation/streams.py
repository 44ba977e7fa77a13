"""Random streams keyed by (purpose, kind, generation, path block).

Paths are grouped in fixed blocks of ``BLOCK_PATHS``; every block draws from its own
``SeedSequence`` child, so a path's numbers never depend on the chunk size or worker count.
Draws for loans are loan-major (``(loans, paths)``): appending a loan leaves every earlier
loan's numbers unchanged, which keeps common random numbers for impact analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

import numpy as np

BLOCK_PATHS = 100


class Purpose(IntEnum):
    BOOK = 1
    MARKET = 2
    EXIT = 3
    DEFAULT = 4
    PROPERTY = 5
    REINVEST = 6
    BOOTSTRAP = 7


def generator(seed: int, purpose: Purpose, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(purpose), *keys))))


def block_ranges(first_path: int, n_paths: int) -> list[tuple[int, int]]:
    """``(block index, paths in block)`` covering ``[first_path, first_path + n_paths)``.

    ``first_path`` must sit on a block boundary; chunks are always whole blocks except the last.
    """
    if first_path % BLOCK_PATHS:
        raise ValueError("chunks must start on a path-block boundary")
    out, path = [], first_path
    while path < first_path + n_paths:
        size = min(BLOCK_PATHS, first_path + n_paths - path)
        out.append((path // BLOCK_PATHS, size))
        path += size
    return out


def draw_paths(seed: int, purpose: Purpose, keys: tuple[int, ...], first_path: int, n_paths: int,
               draw: Callable[[np.random.Generator, int], np.ndarray]) -> np.ndarray:
    """Concatenate per-block draws along axis 0; ``draw(rng, block_paths)`` returns ``(block_paths, ...)``."""
    parts = [draw(generator(seed, purpose, *keys, block), size) for block, size in block_ranges(first_path, n_paths)]
    return np.concatenate(parts, axis=0)


def draw_loans(seed: int, purpose: Purpose, keys: tuple[int, ...], first_path: int, n_paths: int, n_loans: int,
               draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> np.ndarray:
    """Loan-major draws ``(n_loans, n_paths)``; ``draw(rng, shape)`` fills a ``(n_loans, block_paths)`` array."""
    parts = [draw(generator(seed, purpose, *keys, block), (n_loans, size))
             for block, size in block_ranges(first_path, n_paths)]
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class LoanDraws:
    """Where each loan ``(slot, path)`` of a chunk takes its numbers (``path`` relative to the chunk).

    Each path block's stream hands its numbers to the block's loans in (slot, path) order. For a full grid
    of slots × paths (the initial book) that is exactly ``draw_loans``; a sparse generation (recycled loans)
    draws only as many numbers as it has loans. A loan appended in a new, last slot comes last in every
    block, so it leaves every other loan's numbers unchanged (common random numbers).
    """

    first_path: int
    n_paths: int
    n_slots: int
    slot: np.ndarray
    path: np.ndarray

    @cached_property
    def _sparse_order(self) -> tuple[np.ndarray, np.ndarray]:
        """The loans in (block, slot, path) order, and how many each block of the chunk holds."""
        absolute = self.first_path + self.path
        block_of = absolute // BLOCK_PATHS - self.first_path // BLOCK_PATHS
        order = np.argsort((block_of * self.n_slots + self.slot) * BLOCK_PATHS + absolute % BLOCK_PATHS)
        return order, np.bincount(block_of, minlength=len(block_ranges(self.first_path, self.n_paths)))

    def draw(self, seed: int, purpose: Purpose, keys: tuple[int, ...],
             sampler: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> np.ndarray:
        """One draw per loan from the stream of ``purpose``, in the loans' order."""
        if self.slot.size == self.n_slots * self.n_paths:  # every slot on every path, path-major
            return draw_loans(seed, purpose, keys, self.first_path, self.n_paths, self.n_slots, sampler).T.ravel()
        order, counts = self._sparse_order
        values = np.empty(self.slot.size)
        start = 0
        for (block, _), count in zip(block_ranges(self.first_path, self.n_paths), counts):
            if count:
                values[order[start:start + count]] = sampler(generator(seed, purpose, *keys, block), (int(count),))
            start += count
        return values
