"""Shared helpers for the engine tests (imported by name: tests/engine is on sys.path)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from latentsync.facts import Facts, assumed_clip, gpu_facts_from_profile
from latentsync.facts.benchmark import BenchmarkFacts
from latentsync.jobs import JobSpec


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def job(**fields) -> JobSpec:
    fields.setdefault("video", Path("missing-clip.mp4"))
    fields.setdefault("output", Path("out.mp4"))
    fields.setdefault("weights", "checkpoint")
    return JobSpec(**fields)


def facts_for(ruleset, gpu: str, duration: float) -> Facts:
    return Facts(gpu=gpu_facts_from_profile(gpu, ruleset.gpu_profiles[gpu]), clip=assumed_clip(duration),
                 benchmark=BenchmarkFacts(available=False))
