"""What the host's CPU offers the per-frame CPU stages (decode, landmarks, warps, paste-back, encode).

The count is of *usable* cores: the process's affinity mask (`taskset`, cgroup
cpusets as Docker and Slurm apply them) where the OS has one, else every core
the OS reports. A job may pin it (`assume: {cpu_cores: N}`) to plan for another host.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HostFacts:
    cpu_cores: int
    source: str  # "probe" | "assumed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HostFacts":
        return cls(**data)


def usable_cpu_cores() -> int:
    """Cores this process may run on: the affinity mask where available, else os.cpu_count()."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def probe_host() -> HostFacts:
    return HostFacts(cpu_cores=usable_cpu_cores(), source="probe")


def assumed_host(cpu_cores: int) -> HostFacts:
    return HostFacts(cpu_cores=int(cpu_cores), source="assumed")
