import threading
import time

import pytest

from latentsync.pipeline.stages import BackgroundSink, prefetch


def test_prefetch_keeps_order_and_runs_on_another_thread():
    threads = set()

    def produce():
        for i in range(20):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetch(produce(), depth=3, name="reader")) == list(range(20))
    assert threads == {"reader"}


def test_prefetch_is_bounded():
    produced = []

    def produce():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(produce(), depth=2)
    next(it)
    time.sleep(0.2)
    # one consumed, at most `depth` queued, one held by the blocked producer
    assert len(produced) <= 4
    it.close()


def test_prefetch_reraises_producer_errors():
    def produce():
        yield 1
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(prefetch(produce(), depth=2))


def test_sink_consumes_all_in_order_and_reraises():
    seen = []
    sink = BackgroundSink(seen.append, depth=2)
    for i in range(10):
        sink.put(i)
    sink.close()
    assert seen == list(range(10))

    def fail(item):
        raise RuntimeError("disk full")

    sink = BackgroundSink(fail, depth=1)
    sink.put(1)
    with pytest.raises(RuntimeError, match="disk full"):
        for i in range(5):
            sink.put(i)
        sink.close()


def test_prefetch_depth_covers_two_batches_but_bounds_memory():
    from latentsync.pipeline.lipsync import prefetch_depth

    budget = 1024 << 20  # the rules' default prefetch_memory_mib
    assert prefetch_depth(1, 16, 1280, 720, budget) == 2
    assert prefetch_depth(4, 16, 1280, 720, budget) == 8  # 8 x 16 HD frames = 0.35 GB
    assert prefetch_depth(4, 16, 3840, 2160, budget) == 2  # 4K: capped near 1 GiB, never below 2
    # the budget caps it: 256 MiB holds 6 chunks of 16 HD frames (44 MB each); never below 2
    assert prefetch_depth(4, 16, 1280, 720, 256 << 20) == 6
    assert prefetch_depth(4, 16, 1280, 720, 1 << 20) == 2


@pytest.mark.parametrize("chunks_per_batch", [1, 4, 8])
def test_handing_a_batch_to_the_paste_stage_never_waits_while_it_keeps_up(chunks_per_batch):
    """The GPU thread puts a finished batch's chunks into the paste-back sink. While the
    paste stage is busy with (only) the previous chunk, that must not block: the old
    depth of 2 chunks stalled the GPU on every batch of 4 chunks."""
    import threading

    from latentsync.pipeline.lipsync import sink_depth

    release = threading.Event()
    started = threading.Event()

    def slow_paste(item):
        started.set()
        release.wait(10)  # the paste stage is busy until released

    sink = BackgroundSink(slow_paste, depth=sink_depth(chunks_per_batch))
    sink.put("previous batch, last chunk")
    assert started.wait(5)  # the consumer now holds it: the queue is empty again
    handed_over = threading.Event()

    def gpu_thread():
        for chunk in range(chunks_per_batch):
            sink.put(chunk)
        handed_over.set()

    thread = threading.Thread(target=gpu_thread, daemon=True)
    thread.start()
    try:
        assert handed_over.wait(5), "the GPU thread blocked handing over one batch"
        # and the bound still holds: with the queue full, one chunk more does wait
        for filler in range(sink_depth(chunks_per_batch) - chunks_per_batch):
            sink.put(filler)
        extra = threading.Thread(target=lambda: sink.put("one too many"), daemon=True)
        extra.start()
        extra.join(0.2)
        assert extra.is_alive()
    finally:
        release.set()
        sink.close()
