"""Scale out on Ray: one Ray task per clip, rules shipped with each task.

    from latentsync.distributed import connect, run_batch
    connect("auto")                       # or None: a local Ray instance
    result = run_batch(specs, rules=Path("rules/v1"))

Importing this package is cheap: Ray is imported only when a cluster is used,
and a missing Ray raises `RayNotInstalledError` (exit code 2) with the install hint.
"""
from .bundle import RulesBundle, pack_rules, unpack_rules
from .ray_support import INSTALL_HINT, RayNotInstalledError, TaskResources, connect, require_ray, task_resources

__all__ = [
    "INSTALL_HINT",
    "RayNotInstalledError",
    "RulesBundle",
    "TaskResources",
    "connect",
    "pack_rules",
    "require_ray",
    "run_batch",
    "BatchResult",
    "ClipResult",
    "RayWatcher",
    "unpack_rules",
]


def __getattr__(name: str):
    # The batch driver and the watcher subclass pull in more modules; load them on first use.
    if name in ("run_batch", "BatchResult", "ClipResult"):
        from . import batch

        return getattr(batch, name)
    if name == "RayWatcher":
        from .watch import RayWatcher

        return RayWatcher
    raise AttributeError(name)
