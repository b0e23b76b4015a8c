"""The fact vocabulary the rules may test, and `Facts`, the bundle a plan is resolved from.

Rules see facts as one flat mapping (`gpu_vram_free_gib: 7.4`, `clip_duration_s: 3.0`,
`goal: auto`). `FACTS` names every fact a rule may test, its type and, where the set
is closed, its values; the rules schema lists the same names (a test keeps them in
step). Derived facts (`gpu_tier`, `clip_class`, ...) are set by the rules' own
`stage: derive` files, so their values are whatever those rules produce.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import InvalidInputError
from ..weights import MODEL_VERSIONS, RANDOM_WEIGHTS
from .benchmark import BenchmarkFacts
from .clip import ClipFacts
from .gpu import GpuFacts
from .host import HostFacts
from .timing import WarmFacts, compile_savings

GOALS = ("preview", "balanced", "quality", "auto")
QUALITY_PRESETS = ("draft", "fast", "balanced", "quality", "ultra")
SPEED_MODES = ("normal", "fast", "turbo", "ultra")
WEIGHT_KINDS = ("random-small", "random", "checkpoint")
SMALL_RANDOM_WEIGHTS = "random-small"


@dataclass(frozen=True)
class FactSpec:
    type: str  # "number" | "integer" | "string" | "boolean"
    description: str
    values: Optional[tuple[str, ...]] = None  # closed set of strings
    always: bool = True  # False: absent when unknown (rules test it with `exists`)
    derived: bool = False  # set by `stage: derive` rules, not probed


BENCH_MODES = ("normal", "fast", "turbo", "ultra")  # speed modes latentsync-bench times
SYNC_DROP_GOALS = ("balanced", "preview")  # goals whose measured sync drop (against quality) is a fact

FACTS: dict[str, FactSpec] = {
    # GPU (or CPU) the run would use
    "device": FactSpec("string", "cuda or cpu", ("cuda", "cpu")),
    "gpu_name": FactSpec("string", "device name as the driver reports it"),
    "gpu_profile": FactSpec("string", "the assumed profile's name (absent when probed)", always=False),
    "gpu_vram_total_gib": FactSpec("number", "total device memory, GiB (0 on the CPU)"),
    "gpu_vram_free_gib": FactSpec("number", "free device memory at planning time, GiB (0 on the CPU)"),
    "gpu_compute_capability": FactSpec("number", "CUDA compute capability, e.g. 8.9 (0 on the CPU)"),
    "gpu_bf16": FactSpec("boolean", "bfloat16 tensor-core math available"),
    "gpu_count": FactSpec("integer", "number of visible CUDA devices"),
    # the host's CPU (per-frame CPU stages: decode, landmarks, warps, paste-back, encode)
    "cpu_cores": FactSpec("integer", "usable CPU cores of the host (affinity mask), or the pinned count",
                          always=False),
    # the clip
    "clip_duration_s": FactSpec("number", "video duration in seconds (or the pinned duration)"),
    "clip_fps": FactSpec("number", "video frame rate"),
    "clip_frames": FactSpec("integer", "video frame count"),
    "clip_width": FactSpec("integer", "display width in pixels", always=False),
    "clip_height": FactSpec("integer", "display height in pixels", always=False),
    "clip_audio": FactSpec("boolean", "the job has audio (its own file or the video's track)"),
    "clip_audio_duration_s": FactSpec("number", "audio duration in seconds", always=False),
    # measured by latentsync-bench on this machine
    "bench_available": FactSpec("boolean", "a fresh benchmark for this GPU and software exists"),
    "bench_max_frames_per_batch": FactSpec("integer", "largest frames_per_batch that fit", always=False),
    "bench_peak_vram_gib": FactSpec("number", "peak VRAM of the benchmark run, GiB", always=False),
    "bench_s_per_video_s_normal": FactSpec("number", "measured GPU s per video-second, speed mode normal",
                                           always=False),
    "bench_s_per_video_s_fast": FactSpec("number", "measured GPU s per video-second, speed mode fast", always=False),
    "bench_s_per_video_s_turbo": FactSpec("number", "measured GPU s per video-second, speed mode turbo",
                                          always=False),
    "bench_s_per_video_s_ultra": FactSpec("number", "measured GPU s per video-second, speed mode ultra",
                                          always=False),
    # measured lip sync per goal (the benchmark entry's `quality` section): the `quality` goal's
    # StableSyncNet confidence minus this goal's on the same clip (docs/quality.md); positive: worse
    "sync_drop_balanced": FactSpec("number", "measured sync drop of goal balanced against goal quality (confidence)",
                                   always=False),
    "sync_drop_preview": FactSpec("number", "measured sync drop of goal preview against goal quality (confidence)",
                                  always=False),
    # time to result (facts/timing.py, rules/vN/time_model.yaml): warm-up + clip x rate
    "resident": FactSpec("boolean", "this process keeps models and compiled graphs between clips (drop folder, "
                         "ComfyUI)"),
    "compile_saves_s_quality": FactSpec("number", "seconds torch.compile would save on this clip in goal quality, "
                                        "warm-up included (negative: it would cost)", always=False),
    "compile_saves_s_balanced": FactSpec("number", "seconds torch.compile would save on this clip in goal balanced, "
                                         "warm-up included", always=False),
    "compile_saves_s_preview": FactSpec("number", "seconds torch.compile would save on this clip in goal preview, "
                                        "warm-up included", always=False),
    # the job
    "goal": FactSpec("string", "the job's goal", GOALS),
    "quality_preset": FactSpec("string", "the job's quality preset", QUALITY_PRESETS, always=False),
    "speed_mode": FactSpec("string", "the job's speed mode", SPEED_MODES, always=False),
    "weights": FactSpec("string", "random-small (small test architecture, random weights), random (full-size "
                        "random weights of either version) or checkpoint (real weights)", WEIGHT_KINDS),
    # the model the weights are (random names carry it; a folder is detected; assume.model pins it)
    "model_version": FactSpec("string", "LatentSync version of the weights: 1.5 (256 px), 1.6 (512 px) or small "
                              "(the 128 px test architecture); absent only where no weights are known (policy tests)",
                              MODEL_VERSIONS, always=False),
    # derived by the rules (stage: derive)
    "gpu_tier": FactSpec("string", "VRAM class with tolerance, e.g. 24gb", always=False, derived=True),
    "gpu_arch": FactSpec("string", "architecture class by compute capability", always=False, derived=True),
    "clip_class": FactSpec("string", "short / medium / long", always=False, derived=True),
    "goal_auto": FactSpec("string", "auto's choice from the clip and the card, before measured sync drops",
                          ("preview", "balanced", "quality"), always=False, derived=True),
    "goal_effective": FactSpec("string", "the goal after resolving auto", ("preview", "balanced", "quality"),
                               always=False, derived=True),
}

DERIVED_FACTS = tuple(name for name, spec in FACTS.items() if spec.derived)


def weights_kind(weights: str) -> str:
    """What kind of weights a spec names: random-1.5 and random-1.6 are random too (their
    version is the `model_version` fact), anything not a random name is a checkpoint folder."""
    weights = str(weights)
    if weights == SMALL_RANDOM_WEIGHTS:
        return "random-small"
    return "random" if weights in RANDOM_WEIGHTS else "checkpoint"


def pinned_model_version(job: Any) -> Optional[str]:
    """The job's `assume.model`, checked; None when the job pins no model version."""
    pinned = (job.assume or {}).get("model")
    if pinned is None:
        return None
    if str(pinned) not in MODEL_VERSIONS:
        raise InvalidInputError(f"assume.model must be one of {', '.join(MODEL_VERSIONS)}, got {pinned!r}",
                                hint='quote it in YAML: assume: {model: "1.5"}')
    return str(pinned)


def known_model_version(job: Any) -> Optional[str]:
    """The model version a job states without touching a file: its pin, else its random
    weights' version; None for a checkpoint folder (gather_facts detects that one)."""
    pinned = pinned_model_version(job)
    if pinned is not None:
        return pinned
    random = RANDOM_WEIGHTS.get(str(job.weights))
    return None if random is None else random[3]


def job_facts(job: Any) -> dict[str, Any]:
    """The facts a JobSpec contributes: goal, preset, speed mode, weights kind, and the model
    version where the job itself says it (pinned, or random weights)."""
    facts: dict[str, Any] = {"goal": job.goal, "weights": weights_kind(str(job.weights))}
    model_version = known_model_version(job)
    if model_version is not None:
        facts["model_version"] = model_version
    if job.quality_preset is not None:
        facts["quality_preset"] = job.quality_preset
    if job.speed_mode is not None:
        facts["speed_mode"] = job.speed_mode
    return facts


@dataclass(frozen=True)
class Facts:
    """Everything known about the machine and the clip when a plan is resolved."""

    gpu: GpuFacts
    clip: ClipFacts
    benchmark: BenchmarkFacts
    notes: tuple[str, ...] = field(default_factory=tuple)
    host: Optional[HostFacts] = None  # None: unknown (policy tests), so `cpu_cores` is absent
    model_version: Optional[str] = None  # None: unknown (policy tests), so `model_version` is absent
    warm: WarmFacts = field(default_factory=WarmFacts)  # caches and resident graphs (facts/timing.py)
    time_model: dict = field(default_factory=dict)  # the rules folder's time_model.yaml goals

    def speed_scale(self) -> float:
        """This card's measured speed against the time model's reference card (1 without a benchmark)."""
        measured = (self.benchmark.modes or {}).get("normal") if self.benchmark.available else None
        seconds = measured.get("seconds_per_video_second") if isinstance(measured, dict) else None
        reference = (self.time_model.get("quality") or {}).get("eager_s_per_video_s")
        if isinstance(seconds, (int, float)) and seconds > 0 and reference:
            return float(seconds) / float(reference)
        return 1.0

    def compile_savings(self):
        return compile_savings(self.time_model, self.clip.duration_s, self.warm, self.speed_scale())

    def flat(self) -> dict[str, Any]:
        """The mapping the rules test; unknown optional facts are absent, never None."""
        gpu, clip, bench = self.gpu, self.clip, self.benchmark
        flat: dict[str, Any] = {
            "device": gpu.device,
            "gpu_name": gpu.name,
            "gpu_profile": gpu.profile,
            "gpu_vram_total_gib": round(gpu.vram_total_gib, 3),
            "gpu_vram_free_gib": round(gpu.vram_free_gib, 3),
            "gpu_compute_capability": gpu.compute_capability,
            "gpu_bf16": gpu.bf16,
            "gpu_count": gpu.device_count,
            "cpu_cores": None if self.host is None else self.host.cpu_cores,
            "clip_duration_s": round(clip.duration_s, 4),
            "clip_fps": round(clip.fps, 4),
            "clip_frames": clip.frame_count,
            "clip_width": clip.width,
            "clip_height": clip.height,
            "clip_audio": clip.audio_present,
            "clip_audio_duration_s": None if clip.audio_duration_s is None else round(clip.audio_duration_s, 4),
            "bench_available": bench.available,
            "bench_max_frames_per_batch": bench.max_frames_per_batch,
            "bench_peak_vram_gib": bench.peak_vram_gib,
            "model_version": self.model_version,
            "resident": self.warm.resident,
        }
        for goal, saving in self.compile_savings().items():
            flat[f"compile_saves_s_{goal}"] = round(saving.seconds, 4)
        if bench.available:
            for mode, measured in (bench.modes or {}).items():
                seconds = measured.get("seconds_per_video_second") if isinstance(measured, dict) else None
                if mode in BENCH_MODES and isinstance(seconds, (int, float)):
                    flat[f"bench_s_per_video_s_{mode}"] = round(float(seconds), 4)
            for goal in SYNC_DROP_GOALS:
                measured = (bench.quality or {}).get(goal)
                drop = measured.get("sync_drop") if isinstance(measured, dict) else None
                if isinstance(drop, (int, float)) and not isinstance(drop, bool):
                    flat[f"sync_drop_{goal}"] = round(float(drop), 4)
        return {key: value for key, value in flat.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu.to_dict(), "clip": self.clip.to_dict(), "benchmark": self.benchmark.to_dict(),
                "notes": list(self.notes), "host": None if self.host is None else self.host.to_dict(),
                "model_version": self.model_version, "warm": self.warm.to_dict(), "time_model": dict(self.time_model)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Facts":
        return cls(gpu=GpuFacts.from_dict(data["gpu"]), clip=ClipFacts.from_dict(data["clip"]),
                   benchmark=BenchmarkFacts.from_dict(data["benchmark"]), notes=tuple(data.get("notes", ())),
                   host=HostFacts.from_dict(data["host"]) if data.get("host") else None,
                   model_version=data.get("model_version"), warm=WarmFacts.from_dict(data.get("warm")),
                   time_model=dict(data.get("time_model") or {}))
