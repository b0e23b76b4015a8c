"""Facts about the machine, the clip and past measurements, as the rules see them."""
from .benchmark import (BenchmarkFacts, benchmark_key, default_benchmark_cache, read_benchmark_cache,
                        software_versions, update_benchmark_cache)
from .clip import ClipFacts, assumed_clip, pin_duration, probe_clip
from .gather import gather_facts
from .gpu import GpuFacts, cpu_facts, gpu_facts_from_profile, probe_gpu
from .host import HostFacts, assumed_host, probe_host, usable_cpu_cores
from .model import DERIVED_FACTS, FACTS, Facts, FactSpec, job_facts

__all__ = [
    "BenchmarkFacts", "ClipFacts", "DERIVED_FACTS", "FACTS", "FactSpec", "Facts", "GpuFacts", "HostFacts",
    "assumed_clip", "assumed_host", "probe_host", "usable_cpu_cores",
    "benchmark_key", "cpu_facts", "default_benchmark_cache", "gather_facts", "gpu_facts_from_profile",
    "job_facts", "pin_duration", "probe_clip", "probe_gpu", "read_benchmark_cache", "software_versions",
    "update_benchmark_cache",
]
