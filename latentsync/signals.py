"""Ctrl-C and SIGTERM: the first asks the work to stop at its next checkpoint, the second aborts.

Long-running commands (a plan's jobs, a Ray batch, the drop-folder watcher) stop
between chunks, so a job is finished or re-queued instead of leaving half a file.
Someone who does not want to wait presses Ctrl-C again: that raises
KeyboardInterrupt where the main thread is, as Python does by default.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator, Optional, Sequence

from loguru import logger

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def stop_on_signals(
    on_stop: Optional[Callable[[int], Any]] = None,
    signals: Sequence[int] = STOP_SIGNALS,
    *,
    stop: Optional[threading.Event] = None,
) -> Iterator[threading.Event]:
    """While inside, the first of `signals` calls `on_stop(signum)` and sets the yielded event;
    any signal after that (or after something else set `stop`) raises KeyboardInterrupt.

    `stop`: an event the caller already stops on (default: a new one). Handlers are installed
    only in the main thread (Python allows no other); elsewhere the event is yielded and
    nothing is installed. The previous handlers are restored on the way out.
    """
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not the main thread: {} keep their handlers", ", ".join(signal_name(s) for s in signals))
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now, not at the next checkpoint
        if on_stop is not None:
            on_stop(signum)
        stop.set()

    previous: dict[int, Any] = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        yield stop
    finally:
        for signum, old in previous.items():
            # None: a handler installed outside Python; the default is the closest we can restore.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
