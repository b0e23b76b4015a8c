"""Measured facts from `latentsync-bench`: seconds per video second per speed mode, peak VRAM,
the largest frames_per_batch that fit, and (optional `quality` section) each goal's measured
lip-sync drop against the `quality` goal. Read from a JSON cache (schemas/benchmark_cache.schema.json).

An entry applies only to the machine that measured it: same GPU (uuid, or name and
VRAM), driver, torch and package version. Anything else (no file, corrupt file,
other machine, other versions) gives empty facts and a warning, never an error: a
missing benchmark only means the rules fall back to their estimates.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..atomic import atomic_write_json
from .gpu import GpuFacts

CACHE_SCHEMA_VERSION = 1
QUALITY_SECTIONS = ("quality", "quality_run")  # written by latentsync-bench --quality (latentsync/bench/quality.py)
# Two probes of one card differ by a few MiB; different cards of one name differ by GiBs.
SAME_CARD_VRAM_GIB = 0.5


@dataclass(frozen=True)
class BenchmarkFacts:
    available: bool
    max_frames_per_batch: Optional[int] = None
    peak_vram_gib: Optional[float] = None
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> {seconds_per_video_second, peak_vram_gib}
    # goal -> {seconds_per_video_second, sync_confidence, sync_drop, psnr_vs_quality}: measured lip sync per goal
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured_at: Optional[str] = None
    cache_path: Optional[str] = None
    reason: Optional[str] = None  # why the facts are empty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchmarkFacts":
        return cls(**data)


def default_benchmark_cache() -> Path:
    """`LATENTSYNC_BENCH_CACHE`, else `$XDG_CACHE_HOME/latentsync-runner/benchmark.json` (~/.cache/...)."""
    env = os.environ.get("LATENTSYNC_BENCH_CACHE")
    if env:
        return Path(env)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "latentsync-runner" / "benchmark.json"


def software_versions() -> dict[str, Optional[str]]:
    from .. import __version__

    try:
        torch_version: Optional[str] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"torch": torch_version, "package": __version__}


def benchmark_key(gpu: GpuFacts) -> dict[str, Any]:
    """What a cache entry is keyed by: the card and the software that measured on it."""
    return {"gpu_uuid": gpu.uuid, "gpu_name": gpu.name, "vram_total_gib": round(gpu.vram_total_gib, 2),
            "driver": gpu.driver, **software_versions()}


def _same_card(key: dict[str, Any], gpu: GpuFacts) -> bool:
    if key.get("gpu_uuid") and gpu.uuid:
        return key["gpu_uuid"] == gpu.uuid
    return (key.get("gpu_name") == gpu.name
            and abs(float(key.get("vram_total_gib", -1e9)) - gpu.vram_total_gib) <= SAME_CARD_VRAM_GIB)


def _stale_fields(key: dict[str, Any], gpu: GpuFacts) -> list[str]:
    current = software_versions()
    stale = [name for name in ("torch", "package") if key.get(name) != current[name]]
    # An assumed profile has no driver to compare; a probed card does.
    if gpu.driver is not None and key.get("driver") != gpu.driver:
        stale.append("driver")
    return stale


def read_benchmark_cache(path: Optional[Path], gpu: GpuFacts) -> BenchmarkFacts:
    """The newest fresh entry for this GPU, or empty facts saying why (logged as a warning)."""
    path = Path(path) if path is not None else default_benchmark_cache()

    def empty(reason: str, warn: bool = True) -> BenchmarkFacts:
        (logger.warning if warn else logger.info)("benchmark facts unavailable: {}", reason)
        return BenchmarkFacts(available=False, cache_path=str(path), reason=reason)

    if gpu.device != "cuda":
        return empty("the benchmark measures CUDA devices only", warn=False)
    if not path.is_file():
        return empty(f"no benchmark cache at {path}", warn=False)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return empty(f"benchmark cache {path} is unreadable ({error})")
    from ..contracts import schema_errors  # lazily: jsonschema loads only when there is a cache to check

    problems = schema_errors(data, "benchmark_cache")
    if problems:
        return empty(f"benchmark cache {path} is invalid ({problems[0]})")
    candidates = [entry for entry in data["entries"] if _same_card(entry["key"], gpu)]
    if not candidates:
        return empty(f"no entry for {gpu.name} in {path}", warn=False)
    entry = max(candidates, key=lambda item: item.get("measured_at", ""))
    stale = _stale_fields(entry["key"], gpu)
    if stale:
        return empty(f"benchmark for {gpu.name} is stale ({', '.join(stale)} changed)")
    return BenchmarkFacts(available=True, max_frames_per_batch=entry.get("max_frames_per_batch"),
                          peak_vram_gib=entry.get("peak_vram_gib"), modes=dict(entry.get("modes", {})),
                          quality=dict(entry.get("quality", {})),
                          measured_at=entry.get("measured_at"), cache_path=str(path))


def update_benchmark_cache(path: Optional[Path], entry: dict[str, Any], *, keep: tuple[str, ...] = ()) -> Path:
    """Add (or replace, same key) one entry; validated, written atomically. For latentsync-bench.
    `keep`: sections of the replaced entry that `entry` lacks are carried over (a speed run keeps
    the `QUALITY_SECTIONS` that `latentsync-bench --quality` measured with the same key)."""
    from ..contracts import schema_errors
    from ..errors import InvalidInputError

    path = Path(path) if path is not None else default_benchmark_cache()
    data: dict[str, Any] = {"schema_version": CACHE_SCHEMA_VERSION, "entries": []}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if not schema_errors(loaded, "benchmark_cache"):
                data = loaded
            else:
                logger.warning("replacing invalid benchmark cache {}", path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            logger.warning("replacing unreadable benchmark cache {}", path)
    replaced = [old for old in data["entries"] if old["key"] == entry["key"]]
    if replaced and keep:
        entry = {**{name: replaced[-1][name] for name in keep if name in replaced[-1]}, **entry}
    data["entries"] = [old for old in data["entries"] if old["key"] != entry["key"]] + [entry]
    problems = schema_errors(data, "benchmark_cache")
    if problems:
        raise InvalidInputError(f"benchmark entry is invalid: {problems[0]}", path=path)
    atomic_write_json(path, data)
    return path
