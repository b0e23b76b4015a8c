"""The rule language: conditions over flat facts, parsed once, evaluated two ways.

A `when` mapping holds entries that must all be true. An entry maps a fact to a
value (equality) or to operators (`lt`, `gte`, `in`, `exists`, ...; several on one
fact must all hold); `any: [...]` and `all: [...]` nest conditions.

Semantics (those of durable-rules, which the oracle copies exactly): a comparison
on a fact that is absent is false, whatever the operator (so `ne` and `not_in` are
false too); only `exists: false` is true for an absent fact.

The same parsed tree compiles to a durable-rules expression (`to_durable`) and is
evaluated by plain Python (`holds`), the oracle the property tests compare against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from ..facts.model import FACTS

# Facts reach the matchers rounded to this many decimals (durable-rules reads no exponents).
NUMBER_DECIMALS = 4
NUMBER_LIMIT = 1e15

MISSING = object()  # stands for "fact absent" in representative fact sets

ORDERING = ("lt", "lte", "gt", "gte")


@dataclass(frozen=True)
class Atom:
    fact: str
    op: str  # eq ne lt lte gt gte in not_in exists
    value: Any
    parts: tuple  # where it sits in the file (for messages)


@dataclass(frozen=True)
class Group:
    kind: str  # "all" | "any"
    items: tuple["Condition", ...]


Condition = Union[Atom, Group]
ALWAYS = Group("all", ())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(fact: str, op: str, value: Any, derived_values: dict[str, set[str]]) -> Optional[str]:
    """Why `value` cannot be compared with `fact` under `op`, or None when fine."""
    spec = FACTS[fact]
    if op == "exists":
        return None if isinstance(value, bool) else f"wrong type: exists takes true or false, got {value!r}"
    values = value if op in ("in", "not_in") else [value]
    for item in values:
        if spec.type in ("number", "integer"):
            if not _is_number(item):
                return f"wrong type: fact {fact} is a number, got {type(item).__name__} {item!r}"
            if abs(item) >= NUMBER_LIMIT or round(item, NUMBER_DECIMALS) != item:
                return f"{item!r}: numbers in rules have at most {NUMBER_DECIMALS} decimals and stay below {NUMBER_LIMIT:g}"
        elif spec.type == "boolean":
            if op in ORDERING:
                return f"wrong type: fact {fact} is a boolean; {op} needs a number"
            if not isinstance(item, bool):
                return f"wrong type: fact {fact} is a boolean, got {type(item).__name__} {item!r}"
        else:
            if op in ORDERING:
                return f"wrong type: fact {fact} is a string; {op} needs a number"
            if not isinstance(item, str):
                return f"wrong type: fact {fact} is a string, got {type(item).__name__} {item!r}"
            allowed = set(spec.values) if spec.values else derived_values.get(fact) if spec.derived else None
            if allowed is not None and item not in allowed:
                return f"unknown value {item!r} for fact {fact} (possible: {', '.join(sorted(allowed))})"
    return None


def parse_condition(when: dict, parts: tuple, derived_values: dict[str, set[str]]) -> tuple[Condition, list[tuple]]:
    """Parse a schema-valid `when`. Returns (condition, [(parts, message), ...])."""
    problems: list[tuple] = []
    items: list[Condition] = []
    for key, test in when.items():
        if key in ("any", "all"):
            children = []
            for index, child in enumerate(test):
                parsed, child_problems = parse_condition(child, parts + (key, index), derived_values)
                children.append(parsed)
                problems += child_problems
            items.append(Group(key, tuple(children)))
            continue
        ops = test if isinstance(test, dict) else {"eq": test}
        for op, value in ops.items():
            where = parts + (key,) + ((op,) if isinstance(test, dict) else ())
            message = check_value(key, op, value, derived_values)
            if message:
                problems.append((where, message))
            items.append(Atom(key, op, tuple(value) if isinstance(value, list) else value, where))
    if len(items) == 1 and isinstance(items[0], Group) and items[0].kind == "all":
        return items[0], problems
    return Group("all", tuple(items)), problems


def facts_of(condition: Condition) -> set[str]:
    if isinstance(condition, Atom):
        return {condition.fact}
    return set().union(*(facts_of(item) for item in condition.items)) if condition.items else set()


def constants_of(condition: Condition, into: Optional[dict[str, set]] = None) -> dict[str, set]:
    into = {} if into is None else into
    if isinstance(condition, Atom):
        if condition.op != "exists":
            values = condition.value if condition.op in ("in", "not_in") else (condition.value,)
            into.setdefault(condition.fact, set()).update(values)
        else:
            into.setdefault(condition.fact, set())
    else:
        for item in condition.items:
            constants_of(item, into)
    return into


# --- the oracle ---------------------------------------------------------------------------------

def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def atom_holds(atom: Atom, facts: dict[str, Any]) -> bool:
    present = atom.fact in facts and facts[atom.fact] is not MISSING
    if atom.op == "exists":
        return present == atom.value
    if not present:
        return False
    value = facts[atom.fact]
    op, ref = atom.op, atom.value
    if op == "eq":
        return _equal(value, ref)
    if op == "ne":
        return not _equal(value, ref)
    if op == "in":
        return any(_equal(value, item) for item in ref)
    if op == "not_in":
        return not any(_equal(value, item) for item in ref)
    if not _is_number(value):
        return False
    return {"lt": value < ref, "lte": value <= ref, "gt": value > ref, "gte": value >= ref}[op]


def holds(condition: Condition, facts: dict[str, Any]) -> bool:
    """Pure-Python evaluation: the test oracle for the durable-rules backend."""
    if isinstance(condition, Atom):
        return atom_holds(condition, facts)
    if condition.kind == "all":
        return all(holds(item, facts) for item in condition.items)
    return any(holds(item, facts) for item in condition.items)


# --- durable-rules expression -------------------------------------------------------------------

_DURABLE_OPS = {"ne": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}


def to_durable(condition: Condition) -> Optional[dict]:
    """The condition as a durable-rules expression; None for "always". Kept flat (nested groups
    of one kind merged, one-element groups unwrapped): durable-rules refuses deep expressions."""
    if isinstance(condition, Atom):
        fact, op, value = condition.fact, condition.op, condition.value
        if op in ("in", "not_in") and len(value) == 1:
            op, value = ("eq" if op == "in" else "ne"), value[0]
        if op == "eq":
            return {fact: value}
        if op in _DURABLE_OPS:
            return {_DURABLE_OPS[op]: {fact: value}}
        if op == "in":
            return {"$or": [{fact: item} for item in value]}
        if op == "not_in":
            return {"$and": [{"$neq": {fact: item}} for item in value]}
        return {"$ex" if value else "$nex": {fact: 1}}
    key = "$and" if condition.kind == "all" else "$or"
    compiled = []
    for item in condition.items:
        expression = to_durable(item)
        if expression is None:
            if condition.kind == "any":
                return None  # one branch is "always"
            continue
        if len(expression) == 1 and key in expression:
            compiled.extend(expression[key])
        else:
            compiled.append(expression)
    if not compiled:
        return None
    return compiled[0] if len(compiled) == 1 else {key: compiled}


# --- representative fact values (for the static clash check) ------------------------------------

def representatives(fact: str, constants: Iterable[Any], derived_values: dict[str, set[str]]) -> list[Any]:
    """Values of `fact` that between them meet every region the constants cut the domain into:
    a condition built from these constants is true for some value iff it is true for one of these."""
    spec = FACTS[fact]
    constants = set(constants)
    reps: list[Any] = []
    if spec.type == "boolean":
        reps = [True, False]
    elif spec.type in ("number", "integer"):
        numbers = sorted({float(c) for c in constants if _is_number(c)})
        if spec.type == "integer":
            ints = {0}
            for c in numbers:
                ints.update({math.floor(c) - 1, math.floor(c), math.ceil(c), math.ceil(c) + 1})
            reps = sorted(ints)
        else:
            points = set(numbers) or {0.0}
            for low, high in zip(numbers, numbers[1:]):
                points.add((low + high) / 2)
            if numbers:
                points.update({numbers[0] - 1.0, numbers[-1] + 1.0})
            reps = sorted(points)
    else:
        closed = set(spec.values) if spec.values else derived_values.get(fact) if spec.derived else None
        if closed is not None:
            reps = sorted(closed)
        else:
            reps = sorted(str(c) for c in constants if isinstance(c, str)) + ["\u0000other"]
    if not spec.always:
        reps.append(MISSING)
    return reps
