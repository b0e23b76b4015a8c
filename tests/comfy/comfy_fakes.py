"""Stand-ins for ComfyUI's `folder_paths` and `comfy` modules (a uniquely named helper: tests import it)."""
from __future__ import annotations

import sys
import types
from pathlib import Path


ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"
N_FRAMES = 16  # one chunk: the smallest clip the pipeline runs in full
FPS = 25.0
# The speech cut so the pipeline outputs exactly N_FRAMES frames. The output has upstream's
# length, one frame per Whisper audio window: steps = samples_16k // 320, frames = steps // 2 + 2
# at 25 fps (up to 2 more than the audio covers), so 29 steps (0.58 s at 16 kHz) make 16 frames.
AUDIO_SAMPLES_16K = (2 * (N_FRAMES - 2) + 1) * 320


class InterruptProcessingException(Exception):
    """ComfyUI's own exception for the Cancel button (comfy.model_management)."""


class FakeProgressBar:
    instances: list["FakeProgressBar"] = []

    def __init__(self, total):
        self.total, self.updates = total, []
        FakeProgressBar.instances.append(self)

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total))


def install_fake_comfy(monkeypatch, tmp_path):
    models_dir = tmp_path / "models"
    output_dir = tmp_path / "output"
    registry: dict[str, tuple[list[str], set]] = {}

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models_dir)
    folder_paths.folder_names_and_paths = registry

    def add_model_folder_path(name, path, is_default=False):
        registry.setdefault(name, ([], set()))[0].append(path)

    def get_folder_paths(name):
        return list(registry[name][0])

    folder_paths.add_model_folder_path = add_model_folder_path
    folder_paths.get_folder_paths = get_folder_paths
    folder_paths.get_output_directory = lambda: str(output_dir)

    state = types.SimpleNamespace(interrupted=False, models_dir=models_dir, output_dir=output_dir,
                                  registry=registry, bars=FakeProgressBar.instances)
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = FakeProgressBar
    management = types.ModuleType("comfy.model_management")
    management.InterruptProcessingException = InterruptProcessingException
    management.processing_interrupted = lambda: state.interrupted

    def throw_exception_if_processing_interrupted():
        if state.interrupted:
            state.interrupted = False
            raise InterruptProcessingException()

    management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    package = types.ModuleType("comfy")
    package.utils, package.model_management = utils, management
    for name, module in (("folder_paths", folder_paths), ("comfy", package), ("comfy.utils", utils),
                         ("comfy.model_management", management)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeProgressBar.instances.clear()
    from latentsync.comfy import host

    host.register_model_folder()
    return state
