"""Compile and kernel caches that outlive the process, keyed so a stale one is never used.

A fresh process pays for every kernel it builds: Triton JIT-compiles the project's kernels
(and inductor's) per shape, torch.compile traces and lowers the UNet. Both keep their work on
disk when told where; this module says where, and keys that place by everything the
compiled code depends on:

    $XDG_CACHE_HOME/latentsync-runner/compile/<key>/     (~/.cache/... by default)
        key.json          what the key is made of (GPU name and compute capability, torch,
                          Triton, CUDA and latentsync-runner versions)
        inductor/         TORCHINDUCTOR_CACHE_DIR for runs under this key
        triton/           TRITON_CACHE_DIR
        artifacts/<graph>.bin   torch.compiler.save_cache_artifacts() of a warmed plan
        warm.json         the plans warmed here: graph key -> goal, settings, seconds

A different card, torch or package version is a different folder, so it starts cold and
the old one is never read. A plan's *graph key* hashes the settings that shape its
compiled graphs and kernels (resolution, batch, precision, levers), not the host-side
ones (seed, encoder, CPU workers). A corrupt `warm.json` or artifact is ignored with a
warning, dropped, and rebuilt by the next run; it never fails a job.

`TORCHINDUCTOR_CACHE_DIR` / `TRITON_CACHE_DIR` set by the user win (the cache is then
theirs, and this module does not claim to know whether it is warm).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from loguru import logger

from ..atomic import atomic_write_bytes, atomic_write_json

# Settings that only change host-side work (or the random draw): they never change a compiled
# graph or a kernel's shape, so plans differing only in them share a cache entry.
HOST_SIDE_SETTINGS = frozenset({
    "seed", "encoder_crf", "encoder_preset", "cpu_workers", "prefetch_memory_mib", "face_backend",
    "landmark_precision", "paste_backend", "steps", "guidance_scale", "scheduler",
})
MANIFEST = "warm.json"
MANIFEST_VERSION = 1


def _package_version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class CacheKey:
    """What compiled kernels depend on. Two processes with equal keys can share a cache."""

    device_name: str
    compute_capability: str
    torch: str
    triton: Optional[str]
    cuda: Optional[str]
    package: str

    @classmethod
    def current(cls, device: Any = "cuda") -> "CacheKey":
        import torch

        try:
            import triton

            triton_version: Optional[str] = triton.__version__
        except ImportError:
            triton_version = None
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            name, capability = torch.cuda.get_device_name(index), f"{major}.{minor}"
        else:
            name, capability = "cpu", "cpu"
        return cls(device_name=name, compute_capability=capability, torch=torch.__version__,
                   triton=triton_version, cuda=torch.version.cuda, package=_package_version())

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    root = Path(os.getenv("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "latentsync-runner" / "compile"


def graph_key(settings: Mapping[str, Any], model_version: str) -> str:
    """Hash of the settings that shape compiled graphs and kernels, plus the model version."""
    shaping = {k: v for k, v in dict(settings).items() if k not in HOST_SIDE_SETTINGS}
    shaping["model_version"] = model_version
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CompileCache:
    """One key's folder: where inductor and Triton write, and what has been warmed there."""

    def __init__(self, key: CacheKey, root: Optional[Path] = None):
        self.key = key
        self.folder = Path(root or cache_root()) / key.digest()

    @classmethod
    def for_device(cls, device: Any = "cuda", root: Optional[Path] = None) -> "CompileCache":
        return cls(CacheKey.current(device), root)

    @property
    def inductor_dir(self) -> Path:
        return self.folder / "inductor"

    @property
    def triton_dir(self) -> Path:
        return self.folder / "triton"

    def artifact_path(self, graph: str) -> Path:
        return self.folder / "artifacts" / f"{graph}.bin"

    def ensure(self) -> None:
        for folder in (self.inductor_dir, self.triton_dir, self.folder / "artifacts"):
            folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            atomic_write_json(key_file, asdict(self.key), indent=1, sort_keys=True)

    # ------------------------------------------------------------------ what was warmed

    def manifest(self) -> dict[str, dict[str, Any]]:
        """graph key -> entry. A missing file is empty; an unreadable one is empty and warned."""
        path = self.folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning("compile cache: {} is unreadable ({}); treating the cache as cold, it will be rebuilt",
                           path, error)
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or data.get("version") != MANIFEST_VERSION:
            logger.warning("compile cache: {} has an unknown layout; treating the cache as cold, it will be rebuilt",
                           path)
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    def entry(self, graph: str) -> Optional[dict[str, Any]]:
        return self.manifest().get(graph)

    def is_warm(self, graph: str) -> bool:
        return self.entry(graph) is not None

    def warm_goals(self, *, compiled: bool, model_version: Optional[str] = None) -> dict[str, dict[str, Any]]:
        """goal -> the most recent warmed entry of that goal (compiled or eager plans)."""
        found: dict[str, dict[str, Any]] = {}
        for entry in self.manifest().values():
            if bool(entry.get("compiled")) != compiled or not entry.get("goal"):
                continue
            if model_version is not None and entry.get("model_version") != model_version:
                continue
            if entry.get("goal") not in found or entry.get("time", 0) > found[entry["goal"]].get("time", 0):
                found[entry["goal"]] = entry
        return found

    def record(self, graph: str, *, goal: Optional[str], compiled: bool, model_version: str,
               warmup_seconds: Optional[float], settings: Mapping[str, Any], started_warm: bool = False) -> None:
        """Say that `graph` is warm here, with what its warm-up cost (atomically): a run that
        found the cache warm measured the warm warm-up (`warmup_seconds_warm`), one that
        found it cold the cold one; a run too short to tell keeps what was known."""
        self.ensure()
        entries = self.manifest()
        entry = dict(entries.get(graph) or {})
        entry.update({"goal": goal, "compiled": compiled, "model_version": model_version, "time": time.time(),
                      "settings": dict(settings)})
        if warmup_seconds is not None:
            entry["warmup_seconds_warm" if started_warm else "warmup_seconds_cold"] = round(warmup_seconds, 2)
        entries[graph] = entry
        atomic_write_json(self.folder / MANIFEST, {"version": MANIFEST_VERSION, "entries": entries},
                          indent=1, sort_keys=True)

    def forget(self, graph: str) -> None:
        entries = self.manifest()
        if entries.pop(graph, None) is not None:
            atomic_write_json(self.folder / MANIFEST, {"version": MANIFEST_VERSION, "entries": entries},
                              indent=1, sort_keys=True)

    # ------------------------------------------------------------------ torch's portable artifacts

    def save_artifacts(self, graph: str) -> Optional[Path]:
        """Write torch.compiler.save_cache_artifacts() (everything this process compiled) for
        `graph`: one file that refills the inductor/Triton caches on a machine with this key."""
        import torch

        try:
            saved = torch.compiler.save_cache_artifacts()
        except Exception as error:  # noqa: BLE001 — an optional speed-up; the disk caches stay
            logger.warning("compile cache: torch could not save its cache artifacts: {}", error)
            return None
        if not saved:
            return None
        data = saved[0]
        self.ensure()
        return atomic_write_bytes(self.artifact_path(graph), bytes(data))

    def load_artifacts(self, graph: str) -> bool:
        """Refill the caches from `graph`'s artifact file; False when there is none. A corrupt
        file is removed with a warning (the run compiles as if cold and saves a new one)."""
        import torch

        path = self.artifact_path(graph)
        if not path.exists():
            return False
        try:
            data = path.read_bytes()
            if torch.compiler.load_cache_artifacts(data) is None:
                raise ValueError("torch found no cache artifacts in it")
        except Exception as error:  # noqa: BLE001 — corrupt or from another torch: rebuild, never fail
            logger.warning("compile cache: ignoring corrupt artifact {} ({}); it will be rebuilt", path, error)
            path.unlink(missing_ok=True)
            self.forget(graph)
            return False
        return True

    # ------------------------------------------------------------------ the process environment

    def environment(self) -> dict[str, str]:
        """Environment variables pointing inductor and Triton at this key's folders (the
        user's own settings of them win)."""
        env = {}
        if not user_set("TORCHINDUCTOR_CACHE_DIR"):
            env["TORCHINDUCTOR_CACHE_DIR"] = str(self.inductor_dir)
        if not user_set("TRITON_CACHE_DIR"):
            env["TRITON_CACHE_DIR"] = str(self.triton_dir)
        return env

    def user_managed(self) -> bool:
        return user_set("TORCHINDUCTOR_CACHE_DIR") or user_set("TRITON_CACHE_DIR")

    @contextlib.contextmanager
    def in_use(self) -> Iterator[bool]:
        """Point inductor and Triton at this key's folders (made if missing) for the block and
        put the variables back after it. Yields False, with a warning, when the folders cannot
        be made (a read-only or full cache disk costs speed, never the run)."""
        env = self.environment()
        if not env:
            yield True
            return
        try:
            self.ensure()
        except OSError as error:
            logger.warning("compile cache {} unusable ({}): kernels and graphs are not kept for the next process",
                           self.folder, error)
            yield False
            return
        before = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield True
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _torch_default_inductor_dir() -> Optional[str]:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return default_cache_dir()


def user_set(name: str) -> bool:
    """Whether the user chose this cache folder. Importing torch._dynamo (diffusers does)
    writes inductor's default into TORCHINDUCTOR_CACHE_DIR itself, and inductor derives
    TRITON_CACHE_DIR from it: those values are torch's, not the user's (measured on the
    H200 device: the variable is set once `diffusers.models` is imported)."""
    value = os.getenv(name)
    if not value:
        return False
    default = _torch_default_inductor_dir()
    if default is None:
        return True
    return not (value == default or value.startswith(default.rstrip(os.sep) + os.sep))
