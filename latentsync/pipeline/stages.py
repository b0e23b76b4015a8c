"""Run CPU stages beside the GPU with bounded queues.

`prefetch(iterable, depth)` moves an iterator (decode + face alignment) onto a
background thread and keeps at most `depth` items ready; `BackgroundSink` runs a
consumer (paste-back + encode) on another thread with at most `depth` items
waiting. The GPU stage runs on the caller's thread between them. Errors in a
background thread are re-raised in the caller; memory stays bounded by the
queue depths whatever the clip length.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class StageTimer:
    """Accumulates busy seconds per stage name (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.add(name, time.perf_counter() - self.start)
                return False

        return _Ctx()


def prefetch(iterable: Iterable[T], depth: int = 2, name: str = "prefetch") -> Iterator[T]:
    """Iterate `iterable` on a background thread, `depth` items ahead of the consumer."""
    if depth <= 0:
        yield from iterable
        return
    items: "queue.Queue[object]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # re-raised in the consumer
            items.put(_Failure(exc))

    thread = threading.Thread(target=worker, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        # Drain so a blocked producer can see `stop` and exit.
        while thread.is_alive():
            try:
                items.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


class BackgroundSink(Generic[T]):
    """Consume items on a background thread; `put` blocks when `depth` items wait."""

    def __init__(self, consume: Callable[[T], None], depth: int = 2, name: str = "sink"):
        self._consume = consume
        self._items: "queue.Queue[object]" = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._items.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # keep draining so producers never block forever
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc

    def put(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._items.put(item)

    def close(self) -> None:
        """Wait for every queued item; re-raise the first consumer error."""
        self._items.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
