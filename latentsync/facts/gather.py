"""Collect the facts a plan is resolved from: GPU, clip, benchmark, model version (each may be pinned by the job)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..errors import InvalidInputError
from ..weights import detect_model_version, is_random
from .benchmark import read_benchmark_cache
from .clip import assumed_clip, pin_duration, probe_clip
from .gpu import gpu_facts_from_profile, probe_gpu
from .host import assumed_host, probe_host
from .model import Facts, pinned_model_version


def gather_facts(job: Any, ruleset: Any, *, benchmark_cache: Optional[Path] = None) -> Facts:
    """Facts for one job. `job.assume` pins facts instead of probing them:
    `gpu` (a profile name from the rules folder), `duration` (s), `fps`, `free_vram_gib`,
    `cpu_cores` (the host's usable cores; a GPU profile names a card, not the host it sits in),
    `model` (the LatentSync version, "1.5", "1.6" or "small", instead of detecting it from the weights).

    A missing video is fine when its duration is pinned (planning a clip that is not
    there yet); otherwise the probe raises MediaError naming the file.
    """
    assume = dict(job.assume or {})
    notes: list[str] = []

    profile_name = assume.get("gpu")
    if profile_name is not None:
        profiles = ruleset.gpu_profiles
        if profile_name not in profiles:
            raise InvalidInputError(
                f"assume.gpu: unknown GPU profile {profile_name!r}",
                path=str(getattr(ruleset, "profiles_file", None) or getattr(ruleset, "path", "")) or None,
                hint="known profiles: " + ", ".join(sorted(profiles)),
            )
        gpu = gpu_facts_from_profile(profile_name, profiles[profile_name])
        notes.append(f"GPU facts assumed from profile {profile_name!r}, not probed")
    else:
        gpu = probe_gpu()
    if assume.get("free_vram_gib") is not None:
        gpu = replace(gpu, vram_free_gib=float(assume["free_vram_gib"]))
        notes.append(f"free VRAM pinned to {float(assume['free_vram_gib']):g} GiB")

    if assume.get("cpu_cores") is not None:
        cores = assume["cpu_cores"]
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise InvalidInputError(f"assume.cpu_cores must be a whole number >= 1, got {cores!r}",
                                    hint="the job's `assume:` section")
        host = assumed_host(cores)
        notes.append(f"CPU cores pinned to {cores}, not probed")
    else:
        host = probe_host()

    duration = assume.get("duration")
    video = Path(job.video)
    audio = Path(job.audio) if job.audio is not None else None
    if video.is_file():
        clip = probe_clip(video, audio)
        if duration is not None:
            clip = pin_duration(clip, float(duration))
            notes.append(f"clip duration pinned to {float(duration):g} s (the video is {clip.frame_count} frames)")
    elif duration is not None:
        clip = assumed_clip(float(duration), assume.get("fps"))
        notes.append(f"clip facts assumed ({float(duration):g} s at {clip.fps:g} fps): {video} was not probed")
    else:
        clip = probe_clip(video, audio)  # raises MediaError: file not found

    model_version = _model_version(job, notes)

    bench = read_benchmark_cache(benchmark_cache, gpu)
    if not bench.available and gpu.device == "cuda":
        notes.append(f"no benchmark: run latentsync-bench ({bench.reason})")
    logger.debug("facts: gpu={} ({}), cpu cores={} ({}), clip={:.2f}s, benchmark={}, model {}", gpu.name,
                 gpu.source, host.cpu_cores, host.source, clip.duration_s, bench.available, model_version)
    from .timing import WarmFacts, probe_warm, process_is_resident

    # an assumed card is not this machine's: its caches say nothing about that card
    warm = WarmFacts(resident=process_is_resident()) if profile_name is not None else probe_warm(model_version)
    return Facts(gpu=gpu, clip=clip, benchmark=bench, notes=tuple(notes), host=host, model_version=model_version,
                 warm=warm, time_model=getattr(ruleset, "time_model", {}) or {})


def _model_version(job: Any, notes: list[str]) -> str:
    """The job's pin (assume.model), else what the weights are: a random name's version, or
    a folder's, detected without loading the UNet (CheckpointError naming it when undecided)."""
    weights = str(job.weights)
    pinned = pinned_model_version(job)
    if pinned is None:
        return detect_model_version(weights)
    # A pin means "plan as if", like assume.gpu: a folder is not read (it may be on another machine).
    named = detect_model_version(weights) if is_random(weights) else None
    if named is not None and named != pinned:
        notes.append(f"model version pinned to {pinned}, but weights {weights} are the {named} model: "
                     f"the plan is for {pinned}")
    else:
        notes.append(f"model version pinned to {pinned}, not detected from the weights")
    return pinned
