"""Facts in, fired rules out, merged: derive facts to a fixed point, then settings.

Order is the contract: fired rules apply by priority (higher wins), then file order
(later wins). Two fired rules of equal priority that set one key to different values
are an error, not a coin toss.

The evaluation also says which evaluator matched the rules: the fact `rules_engine`
(added after matching, so no rule can depend on it) reaches the run plan's facts,
the job report and `latentsync-rules explain`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..facts.model import DERIVED_FACTS
from .errors import Problem, RulesError


@dataclass
class Evaluation:
    facts: dict[str, Any]  # base facts plus derived facts
    settings: dict[str, Any]
    sources: dict[str, Any]  # setting -> Rule
    derived_sources: dict[str, Any]  # derived fact -> Rule
    fallback_rules: list[Any]  # Rules, ladder order
    fired: list[Any] = field(default_factory=list)  # every fired Rule, in application order


def _sort_key(rule: Any) -> tuple:
    return (rule.priority, rule.order)


def merge(rules: list[Any], facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    values: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for rule in sorted(rules, key=_sort_key):
        for key, value in rule.set.items():
            previous = sources.get(key)
            if previous is not None and previous.priority == rule.priority and values[key] != value:
                raise RulesError([Problem(
                    rule.file, f"rules {previous.id} ({previous.where}) and {rule.id} ({rule.where}) have equal priority "
                    f"{rule.priority} and both fired, setting {key} to {values[key]!r} and {value!r}; facts: {facts}",
                    line=rule.line, rule=rule.id, field=f"set.{key}")])
            values[key] = value
            sources[key] = rule
    return values, sources


RULES_ENGINE_FACT = "rules_engine"
BUILT_IN = "built-in evaluator"


def engine_name(policy: Any, backend: str = "durable") -> str:
    """Which evaluator `backend` runs for `policy`: durable-rules, or the built-in evaluator
    (durable-rules is an optional extra: it needs a C compiler to install)."""
    if backend != "durable":
        return BUILT_IN
    named = getattr(policy, "engine", None)  # the rules loader's own account, with the reason for a fallback
    if isinstance(named, str) and named:
        return named
    return "durable-rules" if type(policy.matcher).__name__ == "DurableMatcher" else BUILT_IN


def evaluate_policy(policy: Any, base_facts: dict[str, Any], *, backend: str = "durable") -> Evaluation:
    """Run both stages of `policy` (a RuleSet snapshot) on flat facts. backend: "durable" | "oracle"."""
    matcher = policy.matcher if backend == "durable" else policy.oracle
    by_id = policy.by_id
    base = {key: value for key, value in base_facts.items() if key not in DERIVED_FACTS and value is not None}

    derived: dict[str, Any] = {}
    derived_sources: dict[str, Any] = {}
    derive_count = sum(1 for rule in policy.rules if rule.stage == "derive")
    settled = False
    for _ in range(derive_count + 2):
        facts = {**base, **derived}
        fired = [by_id[name] for name in matcher.match("derive", facts)]
        values, sources = merge(fired, facts)
        if values == derived:
            settled = True
            break
        derived, derived_sources = values, sources
    if not settled:
        raise RulesError([Problem(str(policy.path), f"derive rules do not settle on one value for facts {base}")])

    facts = {**base, **derived}
    fired = sorted((by_id[name] for name in matcher.match("settings", facts)), key=_sort_key)
    ladder = sorted((rule for rule in fired if rule.fallback is not None),
                    key=lambda rule: (rule.fallback, rule.priority, rule.order))
    settings, sources = merge([rule for rule in fired if rule.fallback is None], facts)
    applied = sorted(derived_sources.values(), key=_sort_key)
    facts = {**facts, RULES_ENGINE_FACT: engine_name(policy, backend)}
    return Evaluation(facts=facts, settings=settings, sources=sources, derived_sources=derived_sources,
                      fallback_rules=ladder, fired=_unique(applied + fired))


def _unique(rules: list[Any]) -> list[Any]:
    seen: set[str] = set()
    return [rule for rule in rules if not (rule.id in seen or seen.add(rule.id))]


def matched_ids(policy: Any, stage: str, facts: dict[str, Any], backend: str = "durable") -> set[str]:
    """Which rules of one stage hold for `facts`, as one backend sees it (property tests)."""
    matcher: Optional[Any] = policy.matcher if backend == "durable" else policy.oracle
    return matcher.match(stage, facts)
