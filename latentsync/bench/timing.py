"""Timing and memory helpers for GPU work: synchronise, warm up, repeat, take the median.

CUDA kernels run asynchronously, so every timed call ends with a device
synchronisation; the first calls pay for cuDNN autotuning, allocator growth and
torch.compile, so they are timed apart (warm-up) and never enter the median.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

GIB = float(1 << 30)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class Timing:
    median_s: float
    samples_s: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)


def repeat_timed(fn: Callable[[], object], device: torch.device, *, warmup: int = 1, reps: int = 3,
                 warmup_fn: Optional[Callable[[], object]] = None,
                 tick: Optional[Callable[[], None]] = None) -> Timing:
    """`warmup` untimed calls (of `warmup_fn` when given), then the median of `reps` timed calls."""
    warm = []
    for _ in range(warmup):
        warm.append(timed_call(warmup_fn or fn, device))
        if tick is not None:
            tick()
    samples = []
    for _ in range(max(1, reps)):
        samples.append(timed_call(fn, device))
        if tick is not None:
            tick()
    return Timing(median_s=statistics.median(samples), samples_s=samples, warmup_s=warm)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> Optional[float]:
    """Peak bytes held by tensors since the last reset (weights included), GiB; None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


def free_device_memory(device: torch.device) -> None:
    """After an out-of-memory error: drop garbage and hand cached blocks back to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_memory_gib(device: torch.device) -> tuple[Optional[float], Optional[float]]:
    """(free, total) device memory as the driver sees it, GiB; (None, None) on the CPU."""
    if device.type != "cuda":
        return None, None
    free, total = torch.cuda.mem_get_info(device)
    return free / GIB, total / GIB
