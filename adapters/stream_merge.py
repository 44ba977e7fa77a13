"""Merging the event streams of several sockets to one system into one stream, each event once.

The guide's frames carry no id, so events are told apart by their content (``Frame.key``). A system
sends every subscribed socket the same events in the same order; each socket sees a stretch of that
stream (from when its subscription took effect until it closed), possibly with holes where a frame came
corrupted. The merger keeps the events it delivered recently, in order, and a position per socket: the
last delivered event that socket was matched with. A frame from a socket is the first event after the
socket's position with the same key, if there is one (a duplicate: the position moves there), and a new
event otherwise (delivered, and the position moves to it).

So two sockets carrying the same stream yield each event once, and an event that really happens twice
(the same change reported twice, identical content) is delivered twice, because each socket's position
moves past the first copy before the second arrives. A socket opened later starts at the end of what was
delivered when it opened: it can only see events published after it subscribed. Events are remembered
for ``window_s`` seconds (and at most ``max_events``); a socket lagging further behind than that would
have its frames taken for new events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Delivered:
    sequence: int
    key: str
    at: float


@dataclass(eq=False)
class MergeCursor:
    """One socket's place in the merged stream."""

    position: int  # sequence of the last delivered event this socket was matched with (or started after)
    first: int | None = None  # sequence of the first event it carried, once it carried one

    def caught_up_with(self, other: MergeCursor) -> bool:
        """Whether this socket has carried the stream up to where ``other`` began: from there on ``other``
        carries everything this one would."""
        return other.first is not None and self.position >= other.first


class StreamMerger(Generic[T]):
    def __init__(
        self,
        deliver: Callable[[T], None],
        *,
        window_s: float = 10.0,
        max_events: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._deliver = deliver
        self._window_s = window_s
        self._max_events = max_events
        self._clock = clock
        self._recent: deque[_Delivered] = deque()
        self._by_key: dict[str, deque[int]] = {}
        self._next = 1

    def cursor(self) -> MergeCursor:
        """A cursor for a socket that has just opened: it starts after everything delivered so far."""
        return MergeCursor(position=self._next - 1)

    @property
    def last_sequence(self) -> int:
        return self._next - 1

    def push(self, cursor: MergeCursor, key: str, item: T) -> bool:
        """Offer ``item`` (content ``key``) received on ``cursor``'s socket; True if it was new."""
        self._forget_old()
        match = self._first_after(key, cursor.position)
        if match is not None:
            cursor.position = match
            cursor.first = cursor.first if cursor.first is not None else match
            return False
        sequence = self._next
        self._next += 1
        self._recent.append(_Delivered(sequence, key, self._clock()))
        self._by_key.setdefault(key, deque()).append(sequence)
        cursor.position = sequence
        cursor.first = cursor.first if cursor.first is not None else sequence
        self._deliver(item)
        return True

    def _first_after(self, key: str, position: int) -> int | None:
        for sequence in self._by_key.get(key, ()):
            if sequence > position:
                return sequence
        return None

    def _forget_old(self) -> None:
        horizon = self._clock() - self._window_s
        while self._recent and (self._recent[0].at < horizon or len(self._recent) > self._max_events):
            old = self._recent.popleft()
            sequences = self._by_key[old.key]
            sequences.popleft()
            if not sequences:
                del self._by_key[old.key]
