"""Small helpers for tests and benchmarks that drive the real pipeline directly.

    settings = default_settings(device="cpu", precision="fp32", steps=2)   # RunSettings
    result = run_file_clip(spec, settings)                                  # PipelineResult
    models = bare_models(unet, vae)                                         # for prepare_unet / prepare_vae

`default_settings` starts from the shipped rules' unconditional defaults
(`rules/v1/00_defaults.yaml`, rule `defaults.upstream`): tests never carry a second
copy of the defaults. Imports torch lazily.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

DEFAULTS_RULE = "defaults.upstream"


@lru_cache(maxsize=1)
def _rule_defaults() -> tuple[tuple[str, Any], ...]:
    from ..engine import load_ruleset

    rule = load_ruleset().snapshot().by_id[DEFAULTS_RULE]
    return tuple(rule.set.items())


def default_settings(**changes: Any):
    """The rules' defaults with `changes` applied, as a validated RunSettings."""
    from ..settings import RunSettings

    return RunSettings.from_mapping({**dict(_rule_defaults()), **changes}, where="test settings")


# The small random-weight model on a CPU, as most pipeline tests run it.
CPU_SMALL = dict(device="cpu", precision="fp32", resolution=128, face_backend="mediapipe", seed=1)


def run_file_clip(spec, settings, *, progress=None, cancel=None, contact_sheet: Optional[Path] = None):
    """Build the pipeline for `spec.weights` and run it on the job's files (no plan, no report)."""
    from ..pipeline.clips import FileClipSource, VideoFileSink
    from ..runner import build_pipeline
    from ..settings import RunSettings

    if not isinstance(settings, RunSettings):
        settings = default_settings(**settings)
    source = FileClipSource(Path(spec.video), Path(spec.audio) if spec.audio else None)
    sink = VideoFileSink(Path(spec.output), inputs=source.protected_paths(), crf=settings.encoder_crf,
                         preset=settings.encoder_preset)
    pipeline = build_pipeline(spec.weights, settings)
    return pipeline(source, sink, progress=progress, cancel=cancel, contact_sheet=contact_sheet)


def bare_models(unet=None, vae=None):
    """A LipSyncModels around modules a test built itself (for prepare_unet / prepare_vae)."""
    import torch

    from ..weights import LipSyncModels

    return LipSyncModels(unet=unet, vae=vae, audio_encoder=None, resolution=128, version="small", random=True,
                         device="cpu", dtype=torch.float32, source="test")
