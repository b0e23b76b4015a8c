"""What the accelerator is: name, memory, capability. nvidia-ml-py first, then torch.cuda, then CPU.

nvidia-ml-py (NVIDIA's binding, module `pynvml`) answers without creating a CUDA
context, so probing costs no GPU memory. torch.cuda is the fallback where NVML
is missing (WSL without the library, some containers). With neither, the facts
describe the CPU and the rules plan a CPU run.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from loguru import logger

GIB = float(1 << 30)
# bf16 tensor-core math arrived with compute capability 8.0 (Ampere): an architecture fact.
BF16_MIN_CAPABILITY = 8.0


@dataclass(frozen=True)
class GpuFacts:
    """One device as the rules see it. For the CPU: device "cpu", zero VRAM, capability 0."""

    device: str  # "cuda" | "cpu"
    name: str
    uuid: Optional[str]
    vram_total_gib: float
    vram_free_gib: float
    compute_capability: float  # e.g. 8.9; 0.0 on the CPU
    bf16: bool
    driver: Optional[str]
    device_count: int
    source: str  # "nvml" | "torch" | "cpu" | "profile:<name>"
    profile: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GpuFacts":
        return cls(**data)


def cpu_facts() -> GpuFacts:
    return GpuFacts(device="cpu", name=platform.processor() or platform.machine() or "cpu", uuid=None,
                    vram_total_gib=0.0, vram_free_gib=0.0, compute_capability=0.0, bf16=False,
                    driver=None, device_count=0, source="cpu")


def gpu_facts_from_profile(name: str, profile: dict[str, Any]) -> GpuFacts:
    """A named profile from the rules folder (`gpu_profiles.yaml`), for "what would run on that card?"."""
    device = profile.get("device", "cuda")
    capability = float(profile.get("compute_capability", 0.0))
    return GpuFacts(
        device=device,
        name=profile.get("gpu_name", name),
        uuid=None,
        vram_total_gib=float(profile.get("vram_total_gib", 0.0)),
        vram_free_gib=float(profile.get("vram_free_gib", profile.get("vram_total_gib", 0.0))),
        compute_capability=capability,
        bf16=bool(profile.get("bf16", device == "cuda" and capability >= BF16_MIN_CAPABILITY)),
        driver=profile.get("driver"),
        device_count=int(profile.get("device_count", 1 if device == "cuda" else 0)),
        source=f"profile:{name}",
        profile=name,
    )


def _visible_index() -> Optional[int]:
    """The physical index of the first device CUDA will use; None when CUDA_VISIBLE_DEVICES hides all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return 0
    first = visible.split(",")[0].strip()
    if first == "" or first == "-1":
        return None
    return int(first) if first.isdigit() else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_nvml() -> Optional[GpuFacts]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        logger.debug("NVML unavailable: {}", error)
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        index = _visible_index()
        if count == 0 or index is None or index >= count:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        capability = float(f"{major}.{minor}")
        return GpuFacts(
            device="cuda",
            name=_text(pynvml.nvmlDeviceGetName(handle)),
            uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            vram_total_gib=memory.total / GIB,
            vram_free_gib=memory.free / GIB,
            compute_capability=capability,
            bf16=capability >= BF16_MIN_CAPABILITY,
            driver=_text(pynvml.nvmlSystemGetDriverVersion()),
            device_count=int(count),
            source="nvml",
        )
    except Exception as error:
        logger.warning("NVML probe failed ({}); trying torch.cuda", error)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def probe_torch() -> Optional[GpuFacts]:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    capability = float(f"{props.major}.{props.minor}")
    uuid = getattr(props, "uuid", None)
    return GpuFacts(
        device="cuda", name=props.name, uuid=str(uuid) if uuid is not None else None,
        vram_total_gib=total / GIB, vram_free_gib=free / GIB, compute_capability=capability,
        bf16=bool(torch.cuda.is_bf16_supported()), driver=None,
        device_count=int(torch.cuda.device_count()), source="torch",
    )


def _torch_can_use_cuda() -> bool:
    """NVML sees a GPU, but a CPU-only torch build cannot use it: plan for the CPU then."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def own_cached_gib() -> float:
    """GiB this process's torch allocator holds on the first device but does not use.

    The driver counts that cache as used, yet the next job in this process gets it back
    at once. A long-lived process (the watcher, ComfyUI, a benchmark running several
    jobs) would otherwise plan every job after the first for a card with 10+ GiB less
    memory (smaller UNet batches). torch is not imported for this: no torch, no cache.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return 0.0
    try:
        if not torch.cuda.is_initialized():
            return 0.0
        cached = torch.cuda.memory_reserved(0) - torch.cuda.memory_allocated(0)
    except Exception as error:  # a broken CUDA state must not stop planning
        logger.debug("could not read torch's CUDA cache: {}", error)
        return 0.0
    return max(0.0, cached / GIB)


def probe_gpu() -> GpuFacts:
    """The device a run would use: NVML, else torch.cuda, else the CPU. Free memory
    includes what this process's torch allocator has cached (see own_cached_gib)."""
    facts = probe_nvml()
    if facts is not None and not _torch_can_use_cuda():
        logger.warning("{} is present but this torch build cannot use CUDA; planning for the CPU", facts.name)
        return cpu_facts()
    if facts is None:
        facts = probe_torch()
    if facts is None:
        return cpu_facts()
    cached = own_cached_gib()
    if cached > 0:
        free = min(facts.vram_total_gib, facts.vram_free_gib + cached)
        logger.debug("free VRAM {:.1f} GiB + {:.1f} GiB cached by this process", facts.vram_free_gib, cached)
        facts = replace(facts, vram_free_gib=free)
    return facts
