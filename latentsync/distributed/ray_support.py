"""Ray, imported lazily: the install hint when it is missing, connecting, per-task resources."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..errors import InvalidInputError

INSTALL_HINT = "install the Ray extra: pip install 'latentsync-runner[ray]'  (or: pip install 'ray>=2.9')"


class RayNotInstalledError(InvalidInputError):
    """`--ray` was asked for but the `ray` package cannot be imported (exit code 2)."""


def require_ray() -> Any:
    """The `ray` module, or RayNotInstalledError with the install hint."""
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise RayNotInstalledError(f"Ray is not installed ({error})", path="--ray", hint=INSTALL_HINT) from None


def connect(
    address: Optional[str] = None,
    *,
    num_cpus: Optional[int] = None,
    num_gpus: Optional[int] = None,
    temp_dir: Optional[Path] = None,
    object_store_memory: Optional[int] = None,
    log_to_driver: bool = False,
) -> Any:
    """Join the Ray cluster at `address` ("auto", "HOST:PORT", "ray://HOST:10001"), or start a local one (None).

    Reuses a Ray session this process already holds. Returns the `ray` module.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver}
    if address:
        options["address"] = address
    else:
        # A local instance: its size may be pinned (benchmarks: `num_gpus=1` on a 2-GPU host).
        if num_cpus is not None:
            options["num_cpus"] = num_cpus
        if num_gpus is not None:
            options["num_gpus"] = num_gpus
        if object_store_memory is not None:
            options["object_store_memory"] = object_store_memory
        if temp_dir is not None:
            options["_temp_dir"] = str(temp_dir)
    try:
        ray.init(**options)
    except ConnectionError as error:
        raise InvalidInputError(f"cannot reach the Ray cluster: {error}", path="--ray",
                                hint="start it with `ray start --head` or check the address (HOST:6379, ray://HOST:10001, auto)") from None
    resources = ray.cluster_resources()
    logger.info("Ray {}: cluster with {:g} CPU, {:g} GPU on {} node(s)", ray.__version__, resources.get("CPU", 0),
                resources.get("GPU", 0), sum(1 for n in ray.nodes() if n.get("Alive")))
    return ray


@dataclass(frozen=True)
class TaskResources:
    """What one clip's task asks Ray for; `slots` is how many run at once on the whole cluster."""

    num_gpus: float
    num_cpus: float
    slots: int

    def options(self) -> dict[str, Any]:
        return {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}


def task_resources(ray: Any, *, cpus_per_task: float = 1.0) -> TaskResources:
    """One GPU per clip when the cluster has GPUs, else `cpus_per_task` CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        # The CPU threads of a GPU task (decode, face alignment, encode) are not a scheduling limit.
        return TaskResources(num_gpus=1, num_cpus=0, slots=gpus)
    cpus = resources.get("CPU", 1)
    return TaskResources(num_gpus=0, num_cpus=cpus_per_task, slots=max(1, int(cpus // max(cpus_per_task, 1e-9))))
