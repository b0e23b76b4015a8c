"""`RunSettings`: the resolved settings of one run, frozen and typed.

The engine resolves rules and overrides into a plain mapping, checks it against
`schemas/run_plan.schema.json` and the cross-setting constraints below, and hands
the pipeline a `RunSettings`. Everything below the engine reads attributes of this
object; nothing there carries a default of its own: the one default of every
setting is in `rules/v1/00_defaults.yaml` (a test keeps the fields, the schema and
the defaults in step).

Out-of-memory fallbacks make new objects with `replace`, which validates again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .errors import InvalidInputError


@dataclass(frozen=True)
class RunSettings:
    """One value per run-plan setting, in the schema's order; `docs/settings.md` says what each does."""

    device: str
    precision: str
    tf32: bool
    cudnn_benchmark: bool
    resolution: int
    scheduler: str
    steps: int
    guidance_scale: float
    cfg_mode: str
    cfg_fraction: float
    uncond_audio_attention: str
    cfg_shared_prefix: bool
    deepcache: bool
    deepcache_interval: int
    deepcache_branch: int
    compile: str
    cuda_graphs: bool
    compile_scope: str
    frames_per_batch: int
    chunk_frames: int
    vae_slicing: bool
    vae_tiling: bool
    vae_batch: int
    vae_decode_region: str
    reference_frames: str
    paste_backend: str
    cpu_workers: int
    prefetch_memory_mib: int
    encoder_crf: int
    encoder_preset: str
    attention_backend: str
    temporal_attention_pack: int
    temporal_attention_kernel: str
    geglu_kernel: str
    channels_last: bool
    face_backend: str
    landmark_precision: str
    seed: int

    # ------------------------------------------------------------ building

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "run plan") -> "RunSettings":
        """Build from a complete, valid mapping; a missing, unknown or invalid setting is an
        InvalidInputError naming it (`where` says whose settings they are)."""
        names = cls.names()
        missing = [name for name in names if name not in values]
        unknown = sorted(str(key) for key in values if key not in names)
        problems = [f"settings.{name}: missing" for name in missing]
        problems += [f"settings.{name}: unknown setting" for name in unknown]
        if not problems:
            problems = settings_problems(values)
        if problems:
            raise InvalidInputError(f"{where}: invalid settings: " + "; ".join(problems[:10]))
        return cls(**{name: _coerce(name, values[name]) for name in names})

    def replace(self, **changes: Any) -> "RunSettings":
        """A copy with `changes` applied, validated like a fresh plan."""
        return RunSettings.from_mapping({**self.to_dict(), **changes}, where="settings after a change")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    # Read-only mapping access, so plans print, compare and serialise like dicts. There
    # is deliberately no `.get`: every setting always has a value.
    def __getitem__(self, name: str) -> Any:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def keys(self):
        return self.names()

    def items(self):
        return self.to_dict().items()

    def values(self):
        return self.to_dict().values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    # ------------------------------------------------------------ derived views

    @property
    def compiles(self) -> bool:
        return self.compile != "off"

    @property
    def chunks_per_batch(self) -> int:
        return max(1, self.frames_per_batch // self.chunk_frames)


_FLOATS = ("guidance_scale", "cfg_fraction")


def _coerce(name: str, value: Any) -> Any:
    # YAML and JSON give 2 for 2.0; the schema has already checked the type.
    return float(value) if name in _FLOATS else value


# Settings that contradict each other: (setting, value that needs something, the test
# the rest must pass, what to tell the user). Checked at plan validation, never silently
# dropped at run time.
def contradictions(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """[(setting at fault, message)] for settings that cannot run together."""
    found: list[tuple[str, str]] = []
    if values.get("cuda_graphs") is True and values.get("compile") == "off":
        found.append(("cuda_graphs", "cuda_graphs: true needs compile (CUDA graphs replay compiled code); "
                                     "set compile: default or cuda_graphs: false"))
    if values.get("cuda_graphs") is True and values.get("compile_scope") == "blocks":
        found.append(("compile_scope", "compile_scope: blocks cannot replay CUDA graphs (the denoising loop replays "
                                       "one graph per compiled UNet call; blocks compiles each block on its own); "
                                       "set compile_scope: whole or cuda_graphs: false"))
    chunk, batch = values.get("chunk_frames"), values.get("frames_per_batch")
    if isinstance(chunk, int) and isinstance(batch, int) and chunk > 0 and batch % chunk != 0:
        found.append(("frames_per_batch", f"frames_per_batch {batch} is not a multiple of chunk_frames {chunk}"))
    return found


def settings_problems(values: Mapping[str, Any]) -> list[str]:
    """Schema problems of a settings mapping plus contradictions, worded for people."""
    from .contracts import definition_problems

    problems = [f"settings.{p}" for p in definition_problems(dict(values), "run_plan", "settings")]
    problems += [f"settings.{name}: {message}" for name, message in contradictions(values)]
    return problems

