"""What to measure: the run plans the rules resolve on this machine.

Every measured setting comes from the rules (resolved with `assume` for the clip
length and the free VRAM seen before the models were loaded), so a timing is the
timing of what `auto`, a goal, a preset or a speed mode would really run here.
Plans that resolve to the same GPU-relevant settings are measured once and the
result is shared by every label that asked for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from ..facts.model import GOALS, QUALITY_PRESETS, SPEED_MODES
from ..jobs import JobSpec

# Settings that change the GPU work of a batch (device, face backend and seed do not).
MEASURED_SETTINGS = (
    "precision", "resolution", "scheduler", "steps", "guidance_scale", "cfg_mode", "cfg_fraction", "uncond_audio_attention", "cfg_shared_prefix", "deepcache",
    "deepcache_interval", "deepcache_branch", "compile", "cuda_graphs", "compile_scope", "frames_per_batch", "chunk_frames",
    "vae_slicing", "vae_tiling", "vae_batch", "vae_decode_region", "reference_frames", "attention_backend", "temporal_attention_pack", "temporal_attention_kernel", "geglu_kernel", "channels_last",
)
# A clip with no upper bound on its class stands for it at this many times the lower bound.
OPEN_CLASS_FACTOR = 3.0
# The speed modes are measured on top of the quality goal (upstream settings), so the
# speed mode is the only thing that differs between them.
MODE_BASE_GOAL = "quality"
PLACEHOLDER_VIDEO = Path("latentsync-bench-clip.mp4")  # never opened: the duration is assumed


@dataclass
class PlannedRun:
    """One label (what a user could ask for) and the settings the rules resolve for it."""

    label: str
    job: JobSpec
    settings: dict[str, Any]
    rules: list[str]
    mode: Optional[str] = None  # the speed mode this label stands for in the cache
    fallbacks: list[dict[str, Any]] = field(default_factory=list)  # the plan's out-of-memory ladder
    plan: Any = None  # the resolved RunPlan


@dataclass
class BenchCase:
    """One distinct set of GPU settings to time; `labels` are the plans that resolve to it."""

    name: str
    settings: dict[str, Any]
    labels: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    plan: Any = None  # the RunPlan of its first label (rules version, notes)

    @property
    def compiles(self) -> bool:
        return self.settings["compile"] != "off"


def signature(settings: dict[str, Any]) -> tuple:
    return tuple((key, settings[key]) for key in MEASURED_SETTINGS)


def describe(settings: dict[str, Any]) -> str:
    """Short human name of a setting set: scheduler/steps, CFG, DeepCache, compile, batch."""
    parts = [f"{settings['scheduler']}{settings['steps']}"]
    if settings["guidance_scale"] <= 1.0 or settings["cfg_mode"] == "off":
        parts.append("nocfg")
    elif settings["cfg_mode"] == "first_fraction":
        parts.append(f"cfg{settings['cfg_fraction']:g}")
    else:
        parts.append("cfg")
    if settings["deepcache"] and settings["deepcache_interval"] > 1:
        parts.append(f"dc{settings['deepcache_interval']}/{settings['deepcache_branch']}")
    if settings["compile"] != "off":
        parts.append("compile-" + settings["compile"] + ("+graphs" if settings["cuda_graphs"] else "")
                     + ("+blocks" if settings.get("compile_scope") == "blocks" else ""))
    parts.append(f"b{settings['frames_per_batch']}")
    return "-".join(parts)


def clip_seconds_by_class(ruleset: Any) -> dict[str, float]:
    """A clip length standing for each clip class the rules derive, read from the rules themselves.

    Each `stage: derive` rule that sets `clip_class` tests `clip_duration_s`; its class is
    stood for by the middle of its range (a range open above by OPEN_CLASS_FACTOR times its
    lower bound, open below by half its upper bound). Edit the classes in the rules and the
    benchmark follows.
    """
    found: dict[str, float] = {}
    for rule in ruleset.rules:
        clip_class = rule.set.get("clip_class") if rule.stage == "derive" else None
        test = rule.when.get("clip_duration_s") if clip_class else None
        if not isinstance(test, dict):
            continue
        low = next((float(test[op]) for op in ("gte", "gt") if op in test), None)
        high = next((float(test[op]) for op in ("lte", "lt") if op in test), None)
        if low is None and high is None:
            continue
        if high is None:
            seconds = low * OPEN_CLASS_FACTOR
        elif low is None:
            seconds = high / 2
        else:
            seconds = (low + high) / 2
        found.setdefault(str(clip_class), round(seconds, 3))
    return dict(sorted(found.items(), key=lambda item: item[1]))


def planning_job(weights: str, *, goal: str = "auto", duration: float = 10.0,
                 free_vram_gib: Optional[float] = None, quality_preset: Optional[str] = None,
                 speed_mode: Optional[str] = None, overrides: Optional[dict[str, Any]] = None) -> JobSpec:
    assume: dict[str, Any] = {"duration": duration}
    if free_vram_gib is not None:
        assume["free_vram_gib"] = round(float(free_vram_gib), 3)
    return JobSpec(video=PLACEHOLDER_VIDEO, output=Path("latentsync-bench-out.mp4"), weights=weights, goal=goal,
                   quality_preset=quality_preset, speed_mode=speed_mode, overrides=dict(overrides or {}),
                   assume=assume)


def plan_labels(mode: str, clip_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The plans a benchmark mode measures, as planning_job keyword sets plus a label."""
    wanted: list[dict[str, Any]] = []
    for clip_class, seconds in clip_seconds.items():
        wanted.append({"label": f"auto {clip_class} ({seconds:g} s)", "goal": "auto", "duration": seconds})
    for goal in GOALS:
        if goal != "auto":
            wanted.append({"label": f"goal {goal}", "goal": goal})
    for speed in SPEED_MODES:
        wanted.append({"label": f"speed {speed}", "goal": MODE_BASE_GOAL, "speed_mode": speed, "mode": speed})
    if mode == "full":
        for preset in QUALITY_PRESETS:
            for speed in SPEED_MODES:
                for deepcache in (True, False):
                    wanted.append({"label": f"preset {preset} + speed {speed} + deepcache {'on' if deepcache else 'off'}",
                                   "goal": "auto", "quality_preset": preset, "speed_mode": speed,
                                   "overrides": {"deepcache": deepcache}})
    return wanted


def resolve_runs(mode: str, ruleset: Any, weights: str, *, free_vram_gib: Optional[float],
                 benchmark_cache: Optional[Path], overrides: Optional[dict[str, Any]] = None) -> list[PlannedRun]:
    """Resolve every label's plan on this machine's facts (with the clip length and free VRAM assumed)."""
    from ..engine import gather_facts, resolve_plan

    runs = []
    for spec in plan_labels(mode, clip_seconds_by_class(ruleset)):
        spec = dict(spec)
        label, speed = spec.pop("label"), spec.pop("mode", None)
        job = planning_job(weights, free_vram_gib=free_vram_gib, **spec)
        if overrides:
            job = replace(job, overrides={**job.overrides, **overrides})
        plan = resolve_plan(job, gather_facts(job, ruleset, benchmark_cache=benchmark_cache), ruleset)
        runs.append(PlannedRun(label=label, job=job, settings=dict(plan.settings), rules=list(plan.fired_rules),
                               mode=speed, fallbacks=list(plan.fallbacks), plan=plan))
    return runs


def group_cases(runs: list[PlannedRun], *, include_compiled: bool) -> tuple[list[BenchCase], list[PlannedRun]]:
    """Distinct setting sets to time, in first-seen order; and the runs left out (they compile)."""
    cases: dict[tuple, BenchCase] = {}
    skipped = []
    for run in runs:
        key = signature(run.settings)
        if key not in cases:
            case = BenchCase(name=describe(run.settings), settings=dict(run.settings),
                             fallbacks=list(run.fallbacks), plan=run.plan)
            if case.compiles and not include_compiled:
                skipped.append(run)
                continue
            cases[key] = case
        cases[key].labels.append(run.label)
        if run.mode is not None:
            cases[key].modes.append(run.mode)
    return list(cases.values()), skipped
