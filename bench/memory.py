"""Peak resident memory of a process and all its descendants, sampled in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

import psutil


class PeakTreeRss:
    """``with PeakTreeRss() as peak: ...`` then ``peak.bytes``: the largest summed RSS seen.

    ``pid`` picks the root of the tree (default: this process). With ``cap``, ``on_cap(total)`` is called
    (once) from the sampling thread as soon as the tree holds more than ``cap`` bytes, e.g. to kill it
    before it takes the machine down.
    """

    def __init__(
        self, interval: float = 0.02, *, pid: int | None = None, cap: int | None = None,
        on_cap: Callable[[int], None] | None = None,
    ):  # fmt: skip
        self.interval = interval
        self.bytes = 0
        self.capped = False
        self._root = psutil.Process(pid)
        self._cap = cap
        self._on_cap = on_cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def tree(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []  # the root has exited

    def _tree_rss(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue  # the process exited between listing and reading
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = self._tree_rss()
            self.bytes = max(self.bytes, total)
            if self._cap is not None and total > self._cap and not self.capped:
                self.capped = True
                if self._on_cap is not None:
                    self._on_cap(total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakTreeRss:
        self.bytes = self._tree_rss()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, self._tree_rss())
