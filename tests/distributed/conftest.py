"""A local Ray instance on the CPU, shared by the Ray tests of one session (start-up costs ~5 s)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from latentsync.distributed import connect

    started_here = not ray.is_initialized()
    if started_here:
        # Two CPU slots = two workers at a time; a small object store: the tasks move paths, not data.
        connect(None, num_cpus=2, num_gpus=0, object_store_memory=256 << 20)
    yield ray
    if started_here:
        ray.shutdown()
