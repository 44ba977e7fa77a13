"""Merging the frames of several connections to one system into one stream: in order, once, gaps noted.

Every connection of a system sees the same frames, numbered by the system (``id`` + 1 per event). The
resequencer delivers each id once, in id order. A frame that arrives ahead of its turn is held for at
most ``hold_s`` seconds while the missing ids may still come on another connection; after that the
missing ids are declared lost (``on_missed``) and delivery goes on. An id far below the expected one
means the system restarted its numbering: the sequence starts again from there.

Frames without an id (the guide does not promise one) cannot be de-duplicated: they are delivered only
from the primary connection (index 0), and lost while it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RESTART_WINDOW = 10_000  # an id this far below the expected one means the numbering restarted
MAX_HELD = 10_000  # frames held while waiting for a gap to fill, at most


class Resequencer(Generic[T]):
    def __init__(
        self,
        deliver: Callable[[T], None],
        on_missed: Callable[[int, int], None],
        *,
        hold_s: float,
        name: str = "",
    ):
        self._deliver = deliver
        self._on_missed = on_missed
        self._hold_s = hold_s
        self._name = name
        self._next_id: int | None = None
        self._held: dict[int, T] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def next_id(self) -> int | None:
        return self._next_id

    def push(self, connection: int, frame_id: int | None, item: T) -> bool:
        """Offer ``item`` (frame ``frame_id``) received on ``connection``; False if it was a duplicate."""
        if frame_id is None:
            if connection != 0:
                return False
            self._deliver(item)
            return True
        if self._next_id is None:
            self._next_id = frame_id
        elif frame_id < self._next_id:
            if self._next_id - frame_id <= RESTART_WINDOW:
                return False
            log.warning(
                "upstream event ids restarted",
                extra={"upstream": self._name, "expected_id": self._next_id, "received_id": frame_id},
            )
            self._release_all()
            self._next_id = frame_id
        if frame_id in self._held:
            return False
        if frame_id == self._next_id:
            self._deliver(item)
            self._next_id += 1
            self._release_consecutive()
        else:
            self._held[frame_id] = item
            if len(self._held) > MAX_HELD:
                self._give_up_on_gap()
        self._arm_timer()
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release_consecutive(self) -> None:
        assert self._next_id is not None
        while self._next_id in self._held:
            self._deliver(self._held.pop(self._next_id))
            self._next_id += 1

    def _give_up_on_gap(self) -> None:
        """The held frames will not be joined by the missing ones: declare those lost, move on."""
        assert self._next_id is not None
        first_held = min(self._held)
        self._on_missed(self._next_id, first_held - 1)
        self._next_id = first_held
        self._release_consecutive()

    def _release_all(self) -> None:
        while self._held:
            self._give_up_on_gap()

    def _arm_timer(self) -> None:
        if not self._held:
            self.close()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._hold_s, self._hold_expired)

    def _hold_expired(self) -> None:
        self._timer = None
        if self._held:
            self._give_up_on_gap()
        self._arm_timer()
