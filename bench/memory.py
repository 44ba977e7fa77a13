"""Peak resident memory of this process and all its descendants, sampled in a background thread."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


class PeakTreeRss:
    """``with PeakTreeRss() as peak: ...`` then ``peak.bytes``: the largest summed RSS seen."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _tree_rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue  # the child exited between listing and reading
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, self._tree_rss())
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
