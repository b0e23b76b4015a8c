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


def unchecked_settings(**changes: Any):
    """Rule defaults + `changes` as a RunSettings built WITHOUT validation: for tests that prove
    the pipeline's own checks (a value the plan schema would already have refused)."""
    from ..settings import RunSettings

    return RunSettings(**{**dict(_rule_defaults()), **changes})


def quickstart_assets() -> tuple[Path, Path]:
    """(video, speech) of the bundled quickstart clip."""
    from ..paths import examples_dir

    assets = examples_dir() / "assets"
    return assets / "quickstart.mp4", assets / "quickstart_speech.wav"


def short_speech(path: Path, seconds: float) -> Path:
    """The first `seconds` of the quickstart speech as a 16-bit WAV at `path` (a shorter clip:
    the pipeline outputs as many frames as the audio covers)."""
    import wave

    _, speech = quickstart_assets()
    with wave.open(str(speech)) as source:
        params = source.getparams()
        raw = source.readframes(int(round(seconds * source.getframerate())))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as target:
        target.setparams(params)
        target.writeframes(raw)
    return path


def cli_job_report(folder: Path, *, seconds: Optional[float] = 0.64, overrides: Optional[dict] = None,
                   weights: str = "random-small") -> dict:
    """Run `latentsync-run PLAN.yaml` (the CLI's `main`) on the quickstart clip and return the job
    report it wrote beside the output, as parsed JSON. `seconds` cuts the speech (None: all of it);
    `overrides` go to the plan's `overrides:` (default: one denoising step)."""
    import json

    import yaml

    from ..cli.run import main

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video, speech = quickstart_assets()
    audio = short_speech(folder / "speech.wav", seconds) if seconds is not None else speech
    output = folder / "cli_out.mp4"
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({"video": str(video), "audio": str(audio), "output": str(output),
                                    "weights": weights, "goal": "auto",
                                    "overrides": dict(overrides if overrides is not None else {"steps": 1})}),
                    encoding="utf-8")
    code = main([str(plan)])
    if code != 0:
        raise AssertionError(f"latentsync-run {plan} exited {code}")
    return json.loads(Path(str(output) + ".report.json").read_text(encoding="utf-8"))
