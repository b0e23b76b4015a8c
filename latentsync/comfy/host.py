"""What the nodes need from ComfyUI, each piece optional so the nodes also run outside it.

- `folder_paths`: where `models/latentsync/` lives (weights folders) and the output folder;
- `comfy.utils.ProgressBar`: the node's progress bar;
- `comfy.model_management`: the Cancel button (checked between chunks).

Outside ComfyUI (tests, notebooks) every helper degrades to a no-op or a plain default.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

MODEL_FOLDER = "latentsync"  # models/latentsync/ in ComfyUI's model tree
RANDOM_WEIGHT_CHOICES = ("random-small", "random")
UNET_FILE = "latentsync_unet.pt"  # marks a folder in the official weights layout


def _optional_module(name: str) -> Optional[Any]:
    """The module if ComfyUI provides it, else None (never raises)."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            return None
        return importlib.import_module(name)
    except Exception:  # a half-present ComfyUI must not break the nodes
        return None


def folder_paths_module() -> Optional[Any]:
    return _optional_module("folder_paths")


def register_model_folder() -> None:
    """Add `models/latentsync` to ComfyUI's own model-folder registry (only inside ComfyUI)."""
    folder_paths = folder_paths_module()
    if folder_paths is None or not hasattr(folder_paths, "add_model_folder_path"):
        return
    models_dir = getattr(folder_paths, "models_dir", None)
    if models_dir is None:
        return
    target = os.path.join(models_dir, MODEL_FOLDER)
    known = getattr(folder_paths, "folder_names_and_paths", {}).get(MODEL_FOLDER)
    if known and target in known[0]:
        return
    folder_paths.add_model_folder_path(MODEL_FOLDER, target)


def _model_roots() -> list[Path]:
    folder_paths = folder_paths_module()
    if folder_paths is None:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    except Exception:  # folder name not registered (e.g. an old ComfyUI)
        return []


def installed_weights() -> dict[str, Path]:
    """Weights folders under models/latentsync/: display name -> folder.

    A root that itself holds `latentsync_unet.pt` is offered under its own name;
    each subfolder that holds one is offered by its relative name.
    """
    found: dict[str, Path] = {}
    for root in _model_roots():
        if not root.is_dir():
            continue
        if (root / UNET_FILE).is_file():
            found.setdefault(root.name, root)
        for unet in sorted(root.glob(f"*/{UNET_FILE}")) + sorted(root.glob(f"*/*/{UNET_FILE}")):
            found.setdefault(unet.parent.relative_to(root).as_posix(), unet.parent)
    return found


def weights_choices() -> list[str]:
    return list(RANDOM_WEIGHT_CHOICES) + [name for name in installed_weights() if name not in RANDOM_WEIGHT_CHOICES]


def resolve_weights(choice: str, path: str = "") -> str:
    """The `weights` value the library takes: a typed path wins, then a models/latentsync entry, then random."""
    from ..errors import CheckpointError

    typed = (path or "").strip()
    if typed:
        folder = Path(os.path.expanduser(typed))
        if not folder.is_dir():
            raise CheckpointError(
                "weights_path: folder not found", path=folder,
                hint=f"give a folder in the official layout ({UNET_FILE}, whisper/tiny.pt, vae/), "
                     "or leave weights_path empty and pick `weights`",
            )
        return str(folder)
    if choice in RANDOM_WEIGHT_CHOICES:
        return choice
    folders = installed_weights()
    if choice in folders:
        return str(folders[choice])
    roots = ", ".join(str(root) for root in _model_roots()) or "ComfyUI/models/latentsync"
    raise CheckpointError(
        f"weights: {choice!r} is not a weights folder under {roots}",
        hint="put the official weights (latentsync-run fetch-weights DIR) in a folder there and refresh the page, "
             "or type the folder into weights_path",
    )


def output_directory() -> Path:
    """ComfyUI's output folder, or the working directory outside ComfyUI."""
    folder_paths = folder_paths_module()
    if folder_paths is not None and hasattr(folder_paths, "get_output_directory"):
        return Path(folder_paths.get_output_directory())
    return Path.cwd()


class ComfyProgress:
    """`progress(stage, done, total)` for the library -> ComfyUI's progress bar (created on first use)."""

    def __init__(self) -> None:
        self._bar = None
        self._total: Optional[int] = None
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.calls.append((stage, int(done), int(total)))
        utils = _optional_module("comfy.utils")
        if utils is None or not hasattr(utils, "ProgressBar") or total <= 0:
            return
        if self._bar is None or self._total != total:
            self._bar, self._total = utils.ProgressBar(int(total)), int(total)
        self._bar.update_absolute(int(done), int(total))


def interrupt_requested() -> bool:
    """Whether the user pressed Cancel in ComfyUI (the runner asks between chunks)."""
    management = _optional_module("comfy.model_management")
    check: Optional[Callable[[], bool]] = getattr(management, "processing_interrupted", None)
    return bool(check()) if check is not None else False


def raise_interrupt() -> None:
    """Raise ComfyUI's own interruption exception when the user cancelled, so ComfyUI
    reports "interrupted" rather than an error. Does nothing outside ComfyUI."""
    management = _optional_module("comfy.model_management")
    throw = getattr(management, "throw_exception_if_processing_interrupted", None)
    if throw is not None:
        throw()

