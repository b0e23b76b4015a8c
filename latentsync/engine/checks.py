"""Static checks a rules folder must pass before it is used (validate, start-up, hot reload).

- `derive_cycles`: derive rules whose facts depend on each other in a circle (an
  error: such rules may never settle on one value, and every plan would fail);
- `find_clashes`: rules of equal priority that set one key to different values and
  can fire together (an error);
- `find_unsatisfiable`: rules no fact set can fire (a warning: usually a typo in a
  bound, e.g. `{gte: 24, lt: 16}`).

The last two search representative fact values (`language.representatives`): every
combination when there are few, random ones otherwise, all within one shared budget
(`limits.RULE_CHECK_BUDGET`) so that a folder of thousands of rules validates in
seconds. Large groups of equal-priority rules are first paired by a sweep over the
ranges their conditions allow, so rules whose ranges cannot overlap are never paired.
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any, Iterator, Optional

from ..facts.model import DERIVED_FACTS, FACTS
from .errors import Problem
from .language import Atom, Condition, Group, constants_of, facts_of, holds, representatives

# Combinations one pair or one rule may try; beyond it, this many random ones.
PER_CHECK_LIMIT = 20000
# Groups of equal-priority rules up to this size are checked pair by pair.
SMALL_GROUP = 64
# Candidate pairs examined in all (after the sweep), so even a pathological folder ends.
MAX_PAIRS = 2_000_000


# ------------------------------------------------------------------------------- derive cycles

def derive_cycles(rules: list[Any]) -> list[Problem]:
    """Derive rules that read a derived fact which (through derive rules) depends on what they set."""
    edges: dict[str, dict[str, Any]] = {name: {} for name in DERIVED_FACTS}
    for rule in rules:
        if rule.stage != "derive":
            continue
        for read in sorted(facts_of(rule.condition) & set(DERIVED_FACTS)):
            for written in rule.set:
                edges.setdefault(read, {}).setdefault(written, rule)
    problems: list[Problem] = []
    reported: set[frozenset] = set()
    for start in sorted(edges):
        cycle = _cycle_from(start, edges)
        if cycle is None or frozenset(cycle) in reported:
            continue
        reported.add(frozenset(cycle))
        steps = list(zip(cycle, cycle[1:] + cycle[:1]))
        culprits = [edges[a][b] for a, b in steps]
        chain = " -> ".join(cycle + cycle[:1])
        who = ", ".join(f"{rule.id} ({rule.where}) sets {b} from {a}" for (a, b), rule in zip(steps, culprits))
        first = culprits[0]
        problems.append(Problem(
            first.file, f"derive rules form a cycle: {chain} ({who}); a derived fact may only be computed from "
            "probed facts and facts derived without it, or the rules may never settle on one value",
            line=first.line, rule=first.id, field="when"))
    return problems


def _cycle_from(start: str, edges: dict[str, dict[str, Any]]) -> Optional[list[str]]:
    """The shortest cycle through `start`, as a list of facts, or None."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for fact in frontier:
            for target in sorted(edges.get(fact, {})):
                if target == start:
                    return paths[fact]
                if target not in paths:
                    paths[target] = paths[fact] + [target]
                    following.append(target)
        frontier = following
    return None


# ------------------------------------------------------------------------------- searching facts

def _combinations(conditions: list[Condition], derived_values: dict[str, set[str]], budget: list[int],
                  seed: int) -> tuple[Iterator[dict[str, Any]], bool]:
    """Fact sets to try for `conditions` and whether they are all there are (a proof)."""
    constants: dict[str, set] = {}
    for condition in conditions:
        constants_of(condition, constants)
    names = sorted(set().union(*(facts_of(condition) for condition in conditions)))
    domains = [representatives(name, constants.get(name, ()), derived_values) for name in names]
    total = math.prod(len(domain) for domain in domains)
    allowed = max(0, min(PER_CHECK_LIMIT, budget[0]))
    if total <= allowed:
        budget[0] -= total
        return (dict(zip(names, combo)) for combo in itertools.product(*domains)), True
    budget[0] -= allowed
    chooser = random.Random(seed)
    return (dict(zip(names, (chooser.choice(domain) for domain in domains))) for _ in range(allowed)), False


def _plain(facts: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in facts.items() if isinstance(value, (str, int, float, bool))}


# ------------------------------------------------------------------------------- unsatisfiable rules

def find_unsatisfiable(rules: list[Any], derived_values: dict[str, set[str]], *, budget: list[int]) -> list[Problem]:
    """Warnings for rules whose condition no fact set satisfies."""
    warnings: list[Problem] = []
    skipped = 0
    for index, rule in enumerate(rules):
        if not facts_of(rule.condition):
            continue  # `when: {}` always holds
        if budget[0] <= 0:
            skipped += 1
            continue
        if _disjoint_box(_box(rule.condition)):
            warnings.append(_never(rule, proven=True))
            continue
        combos, complete = _combinations([rule.condition], derived_values, budget, seed=index)
        if not any(holds(rule.condition, facts) for facts in combos):
            warnings.append(_never(rule, proven=complete))
    if skipped:
        warnings.append(Problem(None, f"{skipped} rule(s) were not checked for conditions that can never hold "
                                      "(the check's budget was spent); see docs/limits.md"))
    return warnings


def _never(rule: Any, *, proven: bool) -> Problem:
    how = "no facts satisfy its condition" if proven else "no facts tried satisfy its condition (a sample, not a proof)"
    return Problem(rule.file, f"rule can never fire: {how}; check the bounds and values in `when`", line=rule.line,
                   rule=rule.id, field="when")


# ------------------------------------------------------------------------------- clashes

def find_clashes(rules: list[Any], derived_values: dict[str, set[str]], *, budget: list[int],
                 warnings: list[Problem]) -> list[Problem]:
    """Rules of equal priority (and stage) that set one key to different values and can fire together."""
    problems: list[Problem] = []
    groups: dict[tuple, list[Any]] = {}
    for rule in rules:
        if rule.fallback is None:
            groups.setdefault((rule.stage, rule.priority), []).append(rule)
    unchecked = 0
    examined = 0
    for group in groups.values():
        if len(group) < 2 or not _may_conflict(group):
            continue
        boxes = [_box(rule.condition) for rule in group]
        for i, j in _candidate_pairs(group, boxes):
            examined += 1
            if examined > MAX_PAIRS:
                unchecked += 1
                continue
            first, second = group[i], group[j]
            keys = sorted(key for key in set(first.set) & set(second.set) if first.set[key] != second.set[key])
            if not keys or _boxes_disjoint(boxes[i], boxes[j]):
                continue
            if budget[0] <= 0:
                unchecked += 1
                continue
            combos, _complete = _combinations([first.condition, second.condition], derived_values, budget,
                                              seed=examined)
            witness = next((facts for facts in combos
                            if holds(first.condition, facts) and holds(second.condition, facts)), None)
            if witness is None:
                continue
            for key in keys:
                problems.append(Problem(
                    second.file, f"rules {first.id} ({first.where}) and {second.id} ({second.where}) have equal "
                    f"priority {first.priority} and set {key} to {first.set[key]!r} and {second.set[key]!r}; both "
                    f"fire for facts such as {_plain(witness)}. Give one a higher priority or make their conditions "
                    "exclusive", line=second.line, rule=second.id, field=f"set.{key}"))
    if unchecked:
        warnings.append(Problem(None, f"{unchecked} pair(s) of equal-priority rules were not checked for clashes "
                                      "(the check's budget was spent); a clash among them is still refused when a "
                                      "plan is resolved. Distinct priorities make the check cheap; see docs/limits.md"))
    return problems


def _may_conflict(group: list[Any]) -> bool:
    """Whether two rules of the group set some key to different values at all."""
    values: dict[str, set[str]] = {}
    for rule in group:
        for key, value in rule.set.items():
            values.setdefault(key, set()).add(repr(value))
    return any(len(found) > 1 for found in values.values())


def _candidate_pairs(group: list[Any], boxes: list[dict]) -> Iterator[tuple[int, int]]:
    """Pairs (i < j) whose conditions may overlap: all pairs of a small group; for a large one,
    a sweep over the fact most rules bound to a range (others pair with everything)."""
    count = len(group)
    if count <= SMALL_GROUP:
        yield from itertools.combinations(range(count), 2)
        return
    bounded: dict[str, int] = {}
    for box in boxes:
        for fact, constraint in box.items():
            if constraint[0] == "range":
                bounded[fact] = bounded.get(fact, 0) + 1
    if not bounded:
        yield from itertools.combinations(range(count), 2)
        return
    fact = max(sorted(bounded), key=lambda name: bounded[name])
    ranged = sorted((box[fact][1], box[fact][2], index) for index, box in enumerate(boxes)
                    if fact in box and box[fact][0] == "range")
    wild = [index for index, box in enumerate(boxes) if not (fact in box and box[fact][0] == "range")]
    for position, (low, high, index) in enumerate(ranged):
        for other_low, _other_high, other in ranged[position + 1:]:
            if other_low > high:
                break
            yield (min(index, other), max(index, other))
    for index in wild:
        for other in range(count):
            if other != index and (other not in wild or other > index):
                yield (min(index, other), max(index, other))


# A box: what a condition's top-level conjunction says about each fact.
#   ("range", low, high)   a number in [low, high] (open ends widened: a safe over-approximation)
#   ("values", frozenset)  one of these values
#   ("absent",)            the fact must be absent

def _box(condition: Condition) -> dict[str, tuple]:
    box: dict[str, tuple] = {}
    items = condition.items if isinstance(condition, Group) and condition.kind == "all" else (condition,)
    for item in items:
        if not isinstance(item, Atom):
            continue
        fact, op, value = item.fact, item.op, item.value
        if op == "exists":
            if value is False:
                box[fact] = ("absent",) if fact not in box else ("empty",)
            continue
        current = box.get(fact)
        if current is not None and current[0] in ("absent", "empty"):
            box[fact] = ("empty",)
            continue
        numeric = FACTS[fact].type in ("number", "integer") if fact in FACTS else False
        if op in ("lt", "lte", "gt", "gte") or (numeric and op == "eq"):
            low, high = (current[1], current[2]) if current and current[0] == "range" else (-math.inf, math.inf)
            if op in ("lt", "lte"):
                high = min(high, value)
            elif op in ("gt", "gte"):
                low = max(low, value)
            else:
                low, high = max(low, value), min(high, value)
            strict_empty = (op == "lt" and value <= low) or (op == "gt" and value >= high)
            box[fact] = ("empty",) if low > high or strict_empty else ("range", low, high)
        elif op in ("eq", "in") and not numeric:
            allowed = frozenset([value] if op == "eq" else value)
            if current is not None and current[0] == "values":
                allowed = allowed & current[1]
            box[fact] = ("values", allowed) if allowed else ("empty",)
    return box


def _disjoint_box(box: dict[str, tuple]) -> bool:
    """The conjunction alone is contradictory (e.g. `{gte: 24, lt: 16}`)."""
    return any(constraint[0] == "empty" for constraint in box.values())


def _boxes_disjoint(first: dict[str, tuple], second: dict[str, tuple]) -> bool:
    """No fact set satisfies both conjunctions (a cheap, sound test; False when unsure)."""
    if _disjoint_box(first) or _disjoint_box(second):
        return True
    for fact in set(first) & set(second):
        a, b = first[fact], second[fact]
        if (a[0] == "absent") != (b[0] == "absent"):
            return True
        if a[0] == "range" and b[0] == "range" and (a[2] < b[1] or b[2] < a[1]):
            return True
        if a[0] == "values" and b[0] == "values" and not (a[1] & b[1]):
            return True
    return False
