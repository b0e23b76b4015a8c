#!/usr/bin/env python3
"""Load a node-pack folder the way ComfyUI's custom-node loader does, then use it.

    python .ci/comfy_load.py PACK_DIR

Run with the Python that had `pip install -r PACK_DIR/requirements.txt` (and torch): what
ComfyUI-Manager and the manual install in docs/comfyui.md give. It imports PACK_DIR/__init__.py
as a package named after the folder (as ComfyUI does, with a stand-in `folder_paths`), checks
the three nodes are registered, lets the Auto-Optimize node make a run plan (the rules engine
runs; the plan says which evaluator), and runs the default face backend on the quickstart clip
(the face-landmark model file must have come with the requirements). Exit 0 when all hold.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

NODES = {"LatentSyncRunner", "LatentSyncRunnerAutoOptimize", "LatentSyncRunnerGPUBenchmark"}


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def main() -> int:
    root = Path(sys.argv[1]).absolute()  # as given: a link keeps its own name
    folder_paths = types.ModuleType("folder_paths")  # ComfyUI's model-folder registry, as the pack uses it
    folder_paths.models_dir = str(root / ".no-models")
    folder_paths.folder_names_and_paths = {}
    folder_paths.add_model_folder_path = lambda name, path, is_default=False: \
        folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)
    sys.modules["folder_paths"] = folder_paths

    name = root.name  # e.g. "latentsync-runner": not an identifier, as in ComfyUI
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    nodes = set(pack.NODE_CLASS_MAPPINGS)
    print(f"pack {name}: nodes {', '.join(sorted(nodes))}")
    if nodes != NODES:
        print(f"FAIL: expected the nodes {sorted(NODES)}")
        return 1

    payload, info = pack.NODE_CLASS_MAPPINGS["LatentSyncRunnerAutoOptimize"]().optimize(goal="preview",
                                                                                       clip_seconds=3.0)
    plan = payload["plan"]
    print(f"Auto-Optimize: {plan['settings']['steps']} steps, rules evaluated by: {plan['facts'].get('rules_engine')}")

    import cv2

    present = {dist: importlib.metadata.version(dist) for dist in ("opencv-python", "opencv-contrib-python")
               if _installed(dist)}
    print(f"cv2 {cv2.__version__} from {present}")  # both share the cv2 folder: docs/faces.md, Install
    faces = importlib.import_module(f"{name}.latentsync.faces.mediapipe_backend")
    print(f"face model: {faces.find_landmarker_model()}")
    import av
    import numpy as np

    with av.open(str(root / "examples" / "assets" / "quickstart.mp4")) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for _, frame in zip(range(3), container.decode(video=0))])
    found = faces.MediaPipeFaceBackend().detect_batch(frames)
    print(f"faces found: {sum(face is not None for face in found)} of {len(found)} frames")
    if not all(face is not None for face in found):
        print("FAIL: the default face backend found no face in the quickstart clip")
        return 1
    print("the pack loads, plans and finds faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
