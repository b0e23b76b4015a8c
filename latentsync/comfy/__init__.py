"""ComfyUI nodes: thin adapters over `latentsync.api` and the same rules as the CLI.

The repository root's `__init__.py` imports `nodes` relatively, so ComfyUI can load
the clone under any folder name. Nothing here imports torch or ComfyUI at import
time; `host` talks to ComfyUI's modules only when they exist.
"""
