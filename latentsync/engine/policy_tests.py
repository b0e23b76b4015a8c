"""Policy unit tests stored with the rules (`rules/vN/tests/*.yaml`): facts in, expected plan out.

The way policy engines test their policies: each case names a GPU profile and a clip
duration (plus single facts to pin and the job's goal/preset/mode/overrides), and
states what the plan must say: settings, the rule behind a setting, the effective
goal, derived facts, rules that must (not) fire, the out-of-memory ladder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..contracts import iter_schema_problems
from ..facts.benchmark import BenchmarkFacts
from ..facts.clip import assumed_clip
from ..facts.gpu import gpu_facts_from_profile
from ..facts.model import FACTS, Facts
from ..jobs import JobSpec
from ..errors import LatentSyncError
from .errors import Problem, RulesError
from .language import check_value
from .plan import resolve_flat
from .yamlio import load_yaml


@dataclass
class CaseResult:
    file: str
    name: str
    line: Optional[int]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class _Case:
    file: str
    line: Optional[int]
    data: dict


def read_cases(tests_dir: Path, ruleset: Any) -> list[_Case]:
    """Every case of every test file; RulesError listing all problems of invalid files."""
    problems: list[Problem] = []
    cases: list[_Case] = []
    paths = sorted(p for p in Path(tests_dir).glob("*.yaml") if not p.name.startswith(".")) if Path(tests_dir).is_dir() else []
    profiles = ruleset.gpu_profiles
    derived_values = ruleset.snapshot().derived_values
    for path in paths:
        label = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
        document, found = load_yaml(path, label)
        problems += found
        if document is None:
            continue
        schema_found = iter_schema_problems(document.data, "rule_tests")
        problems += [Problem(label, p.message, line=document.line_of(p.parts), field=p.field or None)
                     for p in schema_found]
        if schema_found:
            continue
        for index, case in enumerate(document.data["cases"]):
            line = document.line_of(["cases", index])
            if case["gpu"] not in profiles:
                problems.append(Problem(label, f"unknown GPU profile {case['gpu']!r} (known: {', '.join(sorted(profiles))})",
                                        line=document.line_of(["cases", index, "gpu"]), field=f"cases[{index}].gpu"))
            for name, value in case.get("facts", {}).items():
                if name not in FACTS:
                    message: Optional[str] = f"unknown fact {name!r}"
                elif FACTS[name].derived:
                    message = f"{name} is derived by the rules; pin the facts it is derived from"
                else:
                    message = check_value(name, "eq", value, derived_values)
                if message:
                    problems.append(Problem(label, message, line=document.line_of(["cases", index, "facts", name]),
                                            field=f"cases[{index}].facts.{name}"))
            cases.append(_Case(label, line, case))
    if problems:
        raise RulesError(problems)
    return cases


def run_case(case: _Case, ruleset: Any) -> CaseResult:
    data = case.data
    result = CaseResult(case.file, data["name"], case.line)
    gpu = gpu_facts_from_profile(data["gpu"], ruleset.gpu_profiles[data["gpu"]])
    facts = Facts(gpu=gpu, clip=assumed_clip(float(data["duration"])), benchmark=BenchmarkFacts(available=False),
                  time_model=ruleset.time_model)
    flat = {**facts.flat(), **data.get("facts", {})}
    job_fields = data.get("job", {})
    job = JobSpec(video=Path("policy-test.mp4"), output=Path("policy-test.out.mp4"),
                  goal=job_fields.get("goal", "auto"), quality_preset=job_fields.get("quality_preset"),
                  speed_mode=job_fields.get("speed_mode"), weights=job_fields.get("weights", "checkpoint"),
                  overrides=dict(job_fields.get("overrides", {})))
    try:
        plan = resolve_flat(job, flat, ruleset)
    except LatentSyncError as error:
        result.failures.append(f"plan failed: {error}")
        return result
    expect = data["expect"]
    for key, value in expect.get("settings", {}).items():
        got = plan.settings[key] if key in plan.settings else None
        if got != value or isinstance(got, bool) != isinstance(value, bool):
            result.failures.append(f"settings.{key}: expected {value!r}, got {got!r} (from {plan.sources[key].rule})")
    for key, rule in expect.get("sources", {}).items():
        source = plan.sources.get(key)
        if source is None or source.rule != rule:
            result.failures.append(f"sources.{key}: expected rule {rule}, got {source.rule if source else None}")
    if "goal" in expect and plan.goal != expect["goal"]:
        result.failures.append(f"goal: expected {expect['goal']}, got {plan.goal}")
    for key, value in expect.get("facts", {}).items():
        if plan.facts.get(key) != value:
            result.failures.append(f"facts.{key}: expected {value!r}, got {plan.facts.get(key)!r}")
    for rule in expect.get("fired", []):
        if rule not in plan.fired_rules:
            result.failures.append(f"fired: rule {rule} did not fire")
    for rule in expect.get("not_fired", []):
        if rule in plan.fired_rules:
            result.failures.append(f"not_fired: rule {rule} fired")
    if "fallback_rules" in expect:
        got = [step["rule"] for step in plan.fallbacks]
        if got != expect["fallback_rules"]:
            result.failures.append(f"fallback_rules: expected {expect['fallback_rules']}, got {got}")
    return result


def run_policy_tests(ruleset: Any, tests_dir: Optional[Path] = None) -> list[CaseResult]:
    """Run every case in `tests_dir` (default: the rules folder's tests/). RulesError if a file is invalid."""
    folder = Path(tests_dir) if tests_dir is not None else ruleset.tests_dir
    return [run_case(case, ruleset) for case in read_cases(folder, ruleset)]


# Clip lengths every GPU profile is resolved for when a rule set is proven (seconds).
PROOF_DURATIONS = (3.0, 600.0)


def prove_rules(ruleset: Any) -> None:
    """Before a rule set is used (start-up, hot reload): every GPU profile resolves a plan for short,
    medium and long clips and for each goal, and every policy test in the folder's tests/ passes.
    Raises RulesError listing what failed (a rule set that validates but cannot resolve is refused)."""
    problems: list[Problem] = []
    label = str(ruleset.path)
    for name, profile in sorted(ruleset.gpu_profiles.items()):
        gpu = gpu_facts_from_profile(name, profile)
        for duration in PROOF_DURATIONS:
            for goal in ("auto", "preview", "quality"):
                facts = Facts(gpu=gpu, clip=assumed_clip(duration), benchmark=BenchmarkFacts(available=False),
                              time_model=ruleset.time_model)
                job = JobSpec(video=Path("proof.mp4"), output=Path("proof.out.mp4"), goal=goal, weights="checkpoint")
                try:
                    resolve_flat(job, facts.flat(), ruleset)
                except LatentSyncError as error:
                    problems.append(Problem(label, f"cannot resolve a plan for GPU profile {name}, a {duration:g} s "
                                            f"clip, goal {goal}: {error.message.splitlines()[0]}"))
                    break
    if ruleset.tests_dir.is_dir():
        for result in run_policy_tests(ruleset):
            for failure in result.failures:
                problems.append(Problem(result.file, f"policy test {result.name!r} fails: {failure}", line=result.line))
    if problems:
        raise RulesError(problems, hint="the rules validate but do not do what their tests (or every GPU profile) "
                                        "need; fix them (latentsync-rules test)")
