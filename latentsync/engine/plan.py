"""The run plan: every setting resolved to a value, each with the rule (or user override) behind it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import InvalidInputError
from ..facts.model import SYNC_DROP_GOALS, Facts, job_facts
from ..settings import RunSettings, contradictions
from .errors import PlanError, Problem, RulesError
from .evaluate import evaluate_policy
from .model_check import check_model_version
from ..contracts import iter_schema_problems, load_schema, schema_errors

USER_OVERRIDE = "user override"


@dataclass(frozen=True)
class SettingSource:
    """Why a setting has its value: a rule (id, file, line, description) or the user's override."""

    rule: str
    file: Optional[str]
    line: Optional[int]
    description: str
    override: bool = False

    @property
    def where(self) -> str:
        if self.file is None:
            return "-"
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "file": self.file, "line": self.line, "description": self.description,
                "override": self.override}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SettingSource":
        return cls(**data)

    @classmethod
    def from_rule(cls, rule: Any) -> "SettingSource":
        return cls(rule=rule.id, file=rule.file, line=rule.line, description=rule.description)


@dataclass
class RunPlan:
    settings: RunSettings  # frozen and typed; every setting has its value
    sources: dict[str, SettingSource]
    fallbacks: list[dict[str, Any]]  # [{"rule", "file", "line", "set": {setting: value}}], applied cumulatively
    rules_version: str
    rules_hash: str
    facts: dict[str, Any]
    goal: str
    notes: list[str] = field(default_factory=list)
    fired_rules: list[str] = field(default_factory=list)
    # how the time facts of this plan's goal were computed (facts/timing.py); shown by explain
    timing: list[str] = field(default_factory=list, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "sources": {key: source.to_dict() for key, source in self.sources.items()},
            "fallbacks": [dict(step, set=dict(step["set"])) for step in self.fallbacks],
            "rules_version": self.rules_version,
            "rules_hash": self.rules_hash,
            "facts": dict(self.facts),
            "goal": self.goal,
            "notes": list(self.notes),
            "fired_rules": list(self.fired_rules),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunPlan":
        problems = schema_errors(data, "run_plan")
        if problems:
            raise InvalidInputError("not a valid run plan: " + "; ".join(problems[:5]))
        return cls(settings=RunSettings.from_mapping(data["settings"]),
                   sources={key: SettingSource.from_dict(value) for key, value in data["sources"].items()},
                   fallbacks=[dict(step) for step in data["fallbacks"]], rules_version=data["rules_version"],
                   rules_hash=data["rules_hash"], facts=dict(data["facts"]), goal=data["goal"],
                   notes=list(data["notes"]), fired_rules=list(data["fired_rules"]))

    def explain_table(self) -> str:
        """Setting, value, rule id, file:line — one row per setting, then the fallback ladder and notes."""
        rows = [("setting", "value", "rule", "where")]
        for key in self.settings:
            source = self.sources[key]
            rows.append((key, _show(self.settings[key]), source.rule, source.where))
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        lines = [f"rules {self.rules_version} (hash {self.rules_hash[:12]}), goal {self.goal}"]
        for index, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
            if index == 0:
                lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 5)
        if self.fallbacks:
            lines.append("")
            lines.append("on out-of-memory, step down (cumulative):")
            for number, step in enumerate(self.fallbacks, 1):
                changes = ", ".join(f"{key}={_show(value)}" for key, value in step["set"].items())
                where = f"{step['file']}:{step['line']}" if step.get("file") else "-"
                lines.append(f"  {number}. {changes}  ({step['rule']}, {where})")
        measured = [(name, self.facts[name]) for name in (f"sync_drop_{goal}" for goal in SYNC_DROP_GOALS)
                    if name in self.facts]
        if measured:  # the benchmark cache's quality section (latentsync-bench --quality)
            lines.append("")
            choice = self.facts.get("goal_auto") if self.facts.get("goal") == "auto" else None
            lines.append("measured: " + ", ".join(f"{name} {value:g}" for name, value in measured)
                         + " (sync confidence lost against goal quality, latentsync-bench --quality)"
                         + (f"; auto's choice {choice} -> goal {self.goal}" if choice else ""))
        if self.timing:
            lines.append("")
            lines.extend(f"time: {line}" for line in self.timing)
        if self.notes:
            lines.append("")
            lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _lowers(current: Any, value: Any) -> bool:
    """Whether a fallback step changes a setting. Numbers in a fallback step are caps: an
    out-of-memory step may shrink a batch, never grow one the rules already made smaller."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(current, (int, float)):
        return value < current
    return current != value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_plan(settings: dict[str, Any], sources: dict[str, SettingSource], policy: Any, *,
                fallbacks: list[dict[str, Any]]) -> None:
    """What the schema cannot say: settings that contradict each other, in the plan and in every
    state of its out-of-memory ladder. Blame the user's override, else the rule (exit code 2)."""
    states = [(settings, None)]
    state = dict(settings)
    for step in fallbacks:
        state = {**state, **step["set"]}
        states.append((dict(state), step))
    for values, step in states:
        for name, message in contradictions(values):
            culprits = [key for key in _related(name) if sources[key].override]
            if step is None and culprits:
                raise PlanError([Problem(None, message, field="overrides." + culprits[0])])
            if step is not None:
                raise RulesError([Problem(step["file"], f"after out-of-memory step {step['rule']}: {message}",
                                          line=step["line"], rule=step["rule"], field=f"set.{name}")])
            source = sources[name]
            raise RulesError([Problem(source.file, message, line=source.line, rule=source.rule,
                                      field=f"set.{name}")])


def _related(name: str) -> tuple[str, ...]:
    """The settings a contradiction about `name` involves (the user may have set any of them)."""
    return {"cuda_graphs": ("cuda_graphs", "compile"),
            "compile_scope": ("compile_scope", "cuda_graphs"),
            "frames_per_batch": ("frames_per_batch", "chunk_frames")}.get(name, (name,))


def resolve_flat(job: Any, flat_facts: dict[str, Any], ruleset: Any, *, notes: Optional[list[str]] = None,
                 backend: str = "durable") -> RunPlan:
    """Resolve a plan from flat facts (the rules' view) plus the job's own facts and overrides."""
    facts = {**flat_facts, **job_facts(job)}
    overrides = dict(job.overrides or {})
    if job.seed is not None:
        overrides["seed"] = job.seed
    order = list(load_schema("run_plan")["$defs"]["setting_values"]["properties"])
    unknown = sorted(key for key in overrides if key not in order)
    if unknown:
        raise PlanError([Problem(None, f"unknown setting {key!r} (settings: {', '.join(order)})",
                                 field=f"overrides.{key}") for key in unknown])
    with ruleset.using() as policy:
        evaluation = evaluate_policy(policy, facts, backend=backend)
        settings = dict(evaluation.settings)
        sources = {key: SettingSource.from_rule(rule) for key, rule in evaluation.sources.items()}
        for key, value in overrides.items():
            settings[key] = value
            replaced = evaluation.sources.get(key)
            was = f" (rules said {evaluation.settings[key]!r} via {replaced.id})" if replaced is not None else ""
            sources[key] = SettingSource(rule=USER_OVERRIDE, file=None, line=None,
                                         description=f"set by the job's overrides{was}", override=True)
        settings = {key: settings[key] for key in order if key in settings}

        fallbacks = []
        state = dict(settings)
        for rule in evaluation.fallback_rules:
            changes = {key: value for key, value in rule.set.items()
                       if key not in overrides and _lowers(state.get(key), value)}
            if changes:
                fallbacks.append({"rule": rule.id, "file": rule.file, "line": rule.line, "set": changes})
                state.update(changes)

        plan = RunPlan(settings=settings, sources={key: sources[key] for key in settings}, fallbacks=fallbacks,
                       rules_version=policy.version, rules_hash=policy.hash,
                       facts={key: value for key, value in evaluation.facts.items()
                              if isinstance(value, (str, int, float, bool))
                              and not (isinstance(value, float) and not math.isfinite(value))},
                       goal=evaluation.facts.get("goal_effective", job.goal if job.goal != "auto" else "balanced"),
                       notes=list(notes or []), fired_rules=[rule.id for rule in evaluation.fired])
    problems = iter_schema_problems(plan.to_dict(), "run_plan")
    if problems:
        blamed = [p for p in problems if p.parts[:1] == ("settings",) and len(p.parts) > 1 and p.parts[1] in overrides]
        if blamed:
            raise PlanError([Problem(None, p.message, field="overrides." + str(p.parts[1])) for p in blamed])
        raise RulesError([Problem(str(policy.path), f"resolved plan is invalid: {p}") for p in problems])
    _check_plan(plan.settings, plan.sources, policy, fallbacks=plan.fallbacks)
    check_model_version(plan, job)
    plan.settings = RunSettings.from_mapping(plan.settings, where=f"rules {policy.path}")
    return plan


def resolve_plan(job: Any, facts: Facts, ruleset: Any) -> RunPlan:
    """The run plan for one job: rules on the facts, then the job's overrides (the user wins).

    Raises RulesError when fired rules clash, PlanError when an override is invalid
    (both exit code 2).
    """
    plan = resolve_flat(job, facts.flat(), ruleset, notes=list(facts.notes))
    saving = facts.compile_savings().get(plan.goal)
    if saving is not None:
        plan.timing = [saving.explain() + f" (rules/{plan.rules_version}/time_model.yaml; resident process: "
                       f"{'yes' if facts.warm.resident else 'no'})"]
    return plan
