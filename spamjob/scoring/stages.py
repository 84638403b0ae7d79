"""Scoring's stages in threads of their own, so that they overlap instead of adding up.

`prefetch` runs an iterator ahead in a thread (reading in one, decoding and tokenizing in
another); `SerialWorker` runs calls (the part writes, the commits) in a thread, in order,
and hands their errors back.
The model stage stays in the calling thread and launches window k+1 before it collects
window k (spamjob.scoring.runtimes.launch.Launched), so a GPU never waits for the host between windows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator


def prefetch(items: Iterator, depth: int = 2, name: str = "spamjob-prefetch") -> Iterator:
    """Run an iterator in a background thread, `depth` items ahead (Arrow and tiktoken release the
    GIL); its exceptions are re-raised in the consumer, and it stops when the consumer does."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # re-raised in the consumer
            put(e)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class SerialWorker:
    """Runs submitted calls one after another in a background thread (at most `depth` waiting):
    the scoring loop's part writes and commits, in order. `join()` waits until every call so far
    is done; the first error is raised by the next `submit` or `join`, and later calls are dropped."""

    def __init__(self, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="spamjob-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            call = self._q.get()
            try:
                if call is None:
                    return
                if self._error is None:
                    call()
            except BaseException as e:
                self._error = e
            finally:
                self._q.task_done()

    def submit(self, fn: Callable, *args) -> None:
        self._raise()
        self._q.put(lambda: fn(*args))

    def join(self) -> None:
        self._q.join()
        self._raise()

    def close(self) -> None:
        """Finish what was submitted and stop the thread (errors: see `join`)."""
        self._q.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> SerialWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if exc[0] is None:
            self._raise()
