"""latentsync.signals.stop_on_signals: the first signal asks to stop, the second aborts,
the previous handlers come back."""
from __future__ import annotations

import signal
import threading

import pytest

from latentsync.signals import signal_name, stop_on_signals


@pytest.fixture
def own_handlers():
    """Known handlers for SIGINT and SIGTERM during the test (pytest's own come back after)."""
    def outer_int(_signum, _frame):
        raise AssertionError("the outer SIGINT handler must not run inside the context")

    def outer_term(_signum, _frame):
        raise AssertionError("the outer SIGTERM handler must not run inside the context")

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, outer_int)
    signal.signal(signal.SIGTERM, outer_term)
    try:
        yield {signal.SIGINT: outer_int, signal.SIGTERM: outer_term}
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def current(signals=(signal.SIGINT, signal.SIGTERM)) -> dict:
    return {s: signal.getsignal(s) for s in signals}


def test_first_signal_calls_on_stop_and_sets_the_event(own_handlers):
    calls: list[int] = []
    with stop_on_signals(calls.append) as stop:
        assert current() != own_handlers and not stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert calls == [signal.SIGTERM] and stop.is_set()
    assert current() == own_handlers


def test_second_signal_raises_keyboard_interrupt_and_handlers_come_back(own_handlers):
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals(calls.append):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the second signal did not abort")
    assert calls == [signal.SIGINT]  # on_stop runs once; the second signal only aborts
    assert current() == own_handlers


def test_a_stop_already_requested_makes_the_first_signal_abort(own_handlers):
    stop = threading.Event()
    calls: list[int] = []
    with stop_on_signals(calls.append, stop=stop) as yielded:
        assert yielded is stop
        stop.set()  # e.g. the watcher's request_stop() from another thread
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert calls == [] and current() == own_handlers


def test_handlers_are_restored_when_the_body_raises(own_handlers):
    with pytest.raises(RuntimeError):
        with stop_on_signals():
            raise RuntimeError("boom")
    assert current() == own_handlers


def test_only_the_named_signals_are_taken(own_handlers):
    with stop_on_signals(signals=(signal.SIGTERM,)) as stop:
        assert signal.getsignal(signal.SIGINT) is own_handlers[signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) is not own_handlers[signal.SIGTERM]
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
    assert current() == own_handlers


def test_outside_the_main_thread_nothing_is_installed(own_handlers):
    seen: dict = {}

    def worker() -> None:
        with stop_on_signals() as stop:
            seen["handlers"] = current()
            seen["event"] = stop

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["handlers"] == own_handlers and isinstance(seen["event"], threading.Event)
    assert current() == own_handlers


def test_signal_name():
    assert signal_name(signal.SIGINT) == "SIGINT" and signal_name(signal.SIGTERM) == "SIGTERM"
