"""ComfyUI entry point: clone this repository into ComfyUI/custom_nodes/.

ComfyUI imports this folder as a package under its own name (the clone's folder
name or path), so the nodes are reached by a RELATIVE import: another pack's
top-level `latentsync` module can never be picked up instead of ours. Importing
is cheap (no torch) and has no side effects beyond registering `models/latentsync`
in ComfyUI's model-folder registry.
"""
if __package__:
    from .latentsync.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module, not as a package: pytest does this with the clone's root
    # __init__.py when the folder's name is no Python identifier (`latentsync-runner`).
    # There is no ComfyUI then, and nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
