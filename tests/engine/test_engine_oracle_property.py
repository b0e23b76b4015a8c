"""durable-rules and the pure-Python oracle agree on which rules fire, on thousands of random fact sets.

Two properties: the shipped rules on random facts (values drawn around every constant
the rules compare against, plus anything of the right type, plus absent facts), and
random rules (every operator, nested any/all) on random facts.
"""
from __future__ import annotations

import math

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from latentsync.engine.backends import ConditionTooComplex, DurableMatcher, OracleMatcher, TooLargeForDurable
from latentsync.engine.language import constants_of, parse_condition
from latentsync.facts.model import FACTS

SHIPPED_EXAMPLES = 3000
RANDOM_RULESETS = 300
FACT_SETS_PER_RULESET = 10
REFUSED: list = []
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _numbers_near(constants, integer: bool):
    near = set()
    for value in constants:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            near.update({value, value - 1, value + 1, value - 0.001, value + 0.001})
    near = sorted(int(math.floor(v)) for v in near) if integer else sorted(near)
    anything = st.integers(-5, 300) if integer else st.floats(-5, 300, allow_nan=False)
    return st.one_of(st.sampled_from(near), anything) if near else anything


def fact_value(name, constants, derived_values):
    spec = FACTS[name]
    if spec.type == "boolean":
        return st.booleans()
    if spec.type in ("number", "integer"):
        return _numbers_near(constants.get(name, ()), spec.type == "integer")
    known = set(spec.values or ()) | derived_values.get(name, set()) | {c for c in constants.get(name, ()) if isinstance(c, str)}
    return st.one_of(st.sampled_from(sorted(known) or ["x"]), st.text("abcdefgh-0123456789", max_size=6))


def fact_sets(constants, derived_values, names=None):
    names = sorted(names or FACTS)
    # Each fact: present with a value of its type, or absent.
    return st.fixed_dictionaries({}, optional={name: fact_value(name, constants, derived_values) for name in names})


def _all_constants(policy):
    constants: dict = {}
    for rule in policy.rules:
        constants_of(rule.condition, constants)
    return constants


def test_shipped_rules_agree_on_random_facts(ruleset):
    policy = ruleset.snapshot()
    constants = _all_constants(policy)
    checked = []

    @settings(FAST, max_examples=SHIPPED_EXAMPLES)
    @given(fact_sets(constants, policy.derived_values))
    def agree(facts):
        for stage in ("derive", "settings"):
            assert policy.matcher.match(stage, facts) == policy.oracle.match(stage, facts), (stage, facts)
        checked.append(facts)

    agree()
    assert len(checked) >= SHIPPED_EXAMPLES * 0.9
    # The draw reaches both sides of the rules: most rules fire for some fact sets, not for others.
    fired = set()
    for facts in checked:
        fired |= policy.oracle.match("settings", facts) | policy.oracle.match("derive", facts)
    assert len(fired) >= 0.8 * len(policy.rules)


# --- random rules ------------------------------------------------------------------------------

VOCABULARY = {"clip_duration_s": "number", "gpu_count": "integer", "gpu_bf16": "boolean", "goal": "string",
              "gpu_name": "string", "bench_peak_vram_gib": "number"}
STRINGS = ["preview", "balanced", "quality", "auto"]
NAMES = ["A100", "RTX 4090", "cpu", "NVIDIA H100 80GB HBM3", "ünï \"q\""]
NUMBERS = [-1, 0, 0.5, 3, 5, 20, 20.25, 100]


def operand(fact):
    kind = VOCABULARY[fact]
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.sampled_from([n for n in NUMBERS if float(n).is_integer()])
    if kind == "number":
        return st.sampled_from(NUMBERS)
    return st.sampled_from(STRINGS if fact == "goal" else NAMES)


@st.composite
def fact_test(draw, fact):
    kind = VOCABULARY[fact]
    ops = ["eq", "ne", "in", "not_in", "exists"] + (["lt", "lte", "gt", "gte"] if kind in ("number", "integer") else [])
    chosen = draw(st.lists(st.sampled_from(ops), min_size=1, max_size=2, unique=True))
    test = {}
    for op in chosen:
        if op == "exists":
            test[op] = draw(st.booleans())
        elif op in ("in", "not_in"):
            test[op] = draw(st.lists(operand(fact), min_size=1, max_size=3))
        else:
            test[op] = draw(operand(fact))
    if len(test) == 1 and "eq" in test and draw(st.booleans()):
        return test["eq"]  # the scalar shorthand
    return test


@st.composite
def condition(draw, depth=0):
    when = {}
    for fact in draw(st.lists(st.sampled_from(sorted(VOCABULARY)), max_size=3, unique=True)):
        when[fact] = draw(fact_test(fact))
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        when[draw(st.sampled_from(["any", "all"]))] = draw(st.lists(condition(depth + 1), min_size=1, max_size=3))
    return when


@st.composite
def random_facts(draw):
    facts = {}
    for fact, kind in VOCABULARY.items():
        if draw(st.integers(0, 4)) == 0:
            continue  # absent
        if kind == "boolean":
            facts[fact] = draw(st.booleans())
        elif kind == "integer":
            facts[fact] = draw(st.one_of(st.sampled_from([-1, 0, 3, 5, 20, 100]), st.integers(-3, 120)))
        elif kind == "number":
            facts[fact] = draw(st.one_of(st.sampled_from(NUMBERS), st.floats(-3, 120, allow_nan=False)))
        else:
            facts[fact] = draw(st.sampled_from(STRINGS + NAMES))
    return facts


@settings(FAST, max_examples=RANDOM_RULESETS)
@given(st.lists(condition(), min_size=1, max_size=8), st.lists(random_facts(), min_size=FACT_SETS_PER_RULESET,
                                                               max_size=FACT_SETS_PER_RULESET))
def test_random_rules_agree_on_random_facts(whens, fact_list):
    rules = []
    for index, when in enumerate(whens):
        parsed, problems = parse_condition(when, ("rules", index, "when"), {})
        assert not problems
        rules.append((f"rule{index}", parsed))
    try:
        durable = DurableMatcher({"settings": rules})
    except (ConditionTooComplex, TooLargeForDurable):
        REFUSED.append(whens)
        assume(False)  # load_ruleset reports (or evaluates with the oracle) such rules; nothing to compare
    oracle = OracleMatcher({"settings": rules})
    try:
        for facts in fact_list:
            assert durable.match("settings", facts) == oracle.match("settings", facts), (whens, facts)
    finally:
        durable.close()
