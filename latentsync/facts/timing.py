"""Time facts: what compiling would save on this clip, given what is warm.

The rules choose torch.compile by the time a user waits, warm-up included:

    saves = clip_s x (eager_rate - compiled_rate) - (compiled_warmup - eager_warmup)

per goal, in seconds (`compile_saves_s_<goal>`). Rates and warm-ups come from the rules
folder's `time_model.yaml` (reference card); what is warm comes from this machine:

- the compiled warm-up is 0 when this process already holds the goal's compiled graphs
  (a resident drop folder or ComfyUI session, `resident`), the warm-cache one when the
  keyed compile cache (`pipeline/compile_cache.py`) has a compiled entry for the goal
  (its measured warm-up when it recorded one), else the cold one;
- the eager warm-up is the warm one when an eager entry for the goal exists, else cold;
- a benchmark of this card (speed mode normal, measured GPU seconds per video-second)
  scales the reference rates by this card's speed against the reference.

The arithmetic lives here; every number that decides lives in rules/ (the time model, and
the threshold the rules compare the saving with).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from loguru import logger

TIME_GOALS = ("quality", "balanced", "preview")

_resident = False


def mark_resident(value: bool = True) -> None:
    """Front ends that keep models between clips (drop folder, ComfyUI) say so once."""
    global _resident
    _resident = value


def process_is_resident() -> bool:
    return _resident


@dataclass(frozen=True)
class WarmFacts:
    """What is warm for each goal on this machine and in this process."""

    resident: bool = False
    compiled_in_process: frozenset = frozenset()  # goals whose compiled graphs this process holds
    compiled_cache: dict = field(default_factory=dict)  # goal -> measured warm warm-up (None: not measured)
    eager_cache: frozenset = frozenset()  # goals with warm eager kernels
    source: str = "none"  # "probed" | "none" (assumed GPU, CPU, policy tests)

    def to_dict(self) -> dict[str, Any]:
        return {"resident": self.resident, "compiled_in_process": sorted(self.compiled_in_process),
                "compiled_cache": dict(self.compiled_cache), "eager_cache": sorted(self.eager_cache),
                "source": self.source}

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "WarmFacts":
        if not data:
            return cls()
        return cls(resident=bool(data.get("resident")), compiled_in_process=frozenset(data.get("compiled_in_process", ())),
                   compiled_cache=dict(data.get("compiled_cache", {})), eager_cache=frozenset(data.get("eager_cache", ())),
                   source=str(data.get("source", "none")))


def probe_warm(model_version: Optional[str], cache=None) -> WarmFacts:
    """This machine's keyed compile cache (`cache`, default: the CUDA device's) and this
    process's models; nothing is warm without CUDA."""
    try:
        import torch

        from ..pipeline.compile_cache import CompileCache
        from ..weights import resident_compiled_graphs

        if cache is None:
            if not torch.cuda.is_available():
                return WarmFacts(resident=_resident)
            cache = CompileCache.for_device("cuda")
        manifest = cache.manifest()
        compiled = cache.warm_goals(compiled=True, model_version=model_version)
        eager = cache.warm_goals(compiled=False, model_version=model_version)
        in_process = {manifest[g]["goal"] for g in resident_compiled_graphs() if g in manifest and manifest[g].get("goal")}
        return WarmFacts(resident=_resident, compiled_in_process=frozenset(in_process),
                         compiled_cache={goal: entry.get("warmup_seconds_warm") for goal, entry in compiled.items()},
                         eager_cache=frozenset(eager), source="probed")
    except Exception as error:  # noqa: BLE001 — facts about caches never stop a plan
        logger.warning("could not read the compile cache's state: {}", error)
        return WarmFacts(resident=_resident)


@dataclass(frozen=True)
class CompileSaving:
    goal: str
    seconds: float
    clip_s: float
    eager_rate: float
    compiled_rate: float
    compiled_warmup: float
    compiled_state: str  # "in-process" | "warm" | "warm, measured" | "cold"
    eager_warmup: float

    def explain(self) -> str:
        return (f"compile_saves_s_{self.goal} = {self.clip_s:g} s x ({self.eager_rate:.2f} - {self.compiled_rate:.2f}) "
                f"- ({self.compiled_warmup:.1f} compile warm-up [{self.compiled_state}] - {self.eager_warmup:.1f} eager) "
                f"= {self.seconds:.1f} s")


def compile_savings(time_model: dict[str, dict], clip_s: float, warm: WarmFacts,
                    speed_scale: float = 1.0) -> dict[str, CompileSaving]:
    savings = {}
    for goal in TIME_GOALS:
        model = time_model.get(goal)
        if not model:
            continue
        eager_rate = model["eager_s_per_video_s"] * speed_scale
        compiled_rate = model["compiled_s_per_video_s"] * speed_scale
        if goal in warm.compiled_in_process:
            compiled_warmup, state = 0.0, "in-process"
        elif goal in warm.compiled_cache:
            measured = warm.compiled_cache[goal]
            if isinstance(measured, (int, float)):
                compiled_warmup, state = float(measured), "warm, measured"
            else:
                compiled_warmup, state = float(model["compiled_warmup_warm_s"]), "warm"
        else:
            compiled_warmup, state = float(model["compiled_warmup_cold_s"]), "cold"
        eager_warmup = float(model["eager_warmup_warm_s" if goal in warm.eager_cache else "eager_warmup_cold_s"])
        seconds = clip_s * (eager_rate - compiled_rate) - (compiled_warmup - eager_warmup)
        savings[goal] = CompileSaving(goal, round(seconds, 2), clip_s, eager_rate, compiled_rate, compiled_warmup,
                                      state, eager_warmup)
    return savings
