"""Two matchers with one interface: which rules' conditions hold for a fact set.

`DurableMatcher` compiles the rules into durable-rules rulesets (one per stage),
built from data, never from decorators. `OracleMatcher` evaluates the same parsed
conditions in plain Python; the property tests show both always agree.

durable-rules 2.0.28 facts that shape this module:
- a ruleset keeps at most 1024 states (one per `sid`); each evaluation uses a fresh
  sid and deletes its state afterwards, or the 1025th plan fails with MemoryError;
- asserting a fact no rule matches raises; a catch-all rule makes every fact handled;
- the session state itself is matched against the rules (a `$nex` test would match
  it), so every compiled condition also requires the fact's own tag;
- one fact can fire a rule more than once (once per true `$or` branch): fired
  rules are collected as a set;
- the C engine is not thread-safe: one process-wide lock guards every call;
- rulesets live in the C engine until deleted: `close()` deletes them, and ruleset
  names carry a process-wide generation number so an old and a new one never meet;
- `create_ruleset` hangs (never returns, holding the GIL) once one node of the rule
  network has more than 512 children (513 rules testing one fact), and refuses (error
  108) more than 256 rules ending at one node; asserting a fact that passes more than
  64 tests of one ruleset corrupts the C heap (`free(): invalid size`, the process
  aborts). A stage is therefore compiled into several rulesets of at most
  `DURABLE_CHUNK_NODES` tests each (`latentsync.engine.limits`), and `match` asserts
  the fact into each of them.
"""
from __future__ import annotations

import itertools
import sys
import threading
import weakref
from typing import Any, Iterable, Sequence

from .language import NUMBER_DECIMALS, NUMBER_LIMIT, Condition, holds, to_durable
from .limits import DURABLE_CHUNK_NODES, DURABLE_MAX_CHUNKS

FACT_TAG = "latentsync_fact"
_CATCH_ALL = "__handled"

_lock = threading.RLock()
_generations = itertools.count(1)
_sids = itertools.count(1)
_live_handles: set[int] = set()


# durable-rules' JSON parser reads no exponents ("1e-05"); Python writes them for
# |x| < 1e-4 and |x| >= 1e16. Facts are rounded to 4 decimals and clamped below 1e15
# before either matcher sees them, so both judge the same numbers.
def normalize_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    value = max(-NUMBER_LIMIT, min(NUMBER_LIMIT, value))
    return int(value) if isinstance(value, int) else round(float(value), NUMBER_DECIMALS) + 0.0


def normalize_facts(facts: dict[str, Any]) -> dict[str, Any]:
    return {key: normalize_number(value) for key, value in facts.items()}


def live_ruleset_count() -> int:
    """durable-rules rulesets this process holds (for leak tests)."""
    with _lock:
        return len(_live_handles)


def _delete_handles(handles: Iterable[int]) -> None:
    import durable_rules_engine

    with _lock:
        for handle in handles:
            if handle in _live_handles:
                _live_handles.discard(handle)
                try:
                    durable_rules_engine.delete_ruleset(handle)
                except Exception:  # already gone (interpreter shutdown)
                    pass


class ConditionTooComplex(Exception):
    """durable-rules refused to compile some conditions (it limits an expression's size and nesting)."""

    def __init__(self, rule_names: list[str], reason: str):
        self.rule_names = rule_names
        self.reason = reason
        super().__init__(f"durable-rules cannot compile the conditions of {', '.join(rule_names) or 'the rules'} ({reason})")


class TooLargeForDurable(Exception):
    """The rules would need rulesets durable-rules cannot build safely; the built-in evaluator takes over."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def network_size(expression: Any) -> tuple[int, int]:
    """(test nodes, paths) an expression adds to durable-rules' network, an upper bound: every
    `$or` branch (`any:`, `in:`) is a path of its own, and an `$and` repeats what follows a
    branch once per path before it."""
    if isinstance(expression, dict) and len(expression) == 1:
        (key, value), = expression.items()
        if key == "$or" and isinstance(value, list) and value:
            sizes = [network_size(item) for item in value]
            return sum(n for n, _ in sizes), sum(p for _, p in sizes)
        if key == "$and" and isinstance(value, list) and value:
            nodes, paths = 0, 1
            for item in value:
                item_nodes, item_paths = network_size(item)
                nodes += paths * item_nodes
                paths *= item_paths
                if nodes > 10**9:
                    break
            return nodes, paths
    return 1, 1


def plan_chunks(rules: Sequence[tuple[str, Condition]], *, budget: int = DURABLE_CHUNK_NODES,
                max_chunks: int = DURABLE_MAX_CHUNKS) -> list[list[int]]:
    """Rule indexes grouped, in order, into rulesets of at most `budget` test nodes each.
    Raises TooLargeForDurable when a single rule exceeds the budget or too many are needed."""
    chunks: list[list[int]] = []
    used = budget + 1
    for index, (name, condition) in enumerate(rules):
        nodes, _paths = network_size(to_durable(condition))
        if nodes > budget:
            raise TooLargeForDurable(f"rule {name} compiles to {nodes} tests (any:/in: branches multiply); "
                                     f"one durable-rules ruleset safely holds {budget}")
        if used + nodes > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(index)
        used += nodes
    if len(chunks) > max_chunks:
        raise TooLargeForDurable(f"{len(rules)} rules of one stage need {len(chunks)} durable-rules rulesets "
                                 f"(at most {max_chunks})")
    return chunks


def _culprits(rules: Sequence[tuple[str, Condition]]) -> list[str]:
    """Compile each rule alone to find the ones durable-rules refuses."""
    from durable import engine as durable_engine

    names = []
    for index, (name, condition) in enumerate(rules):
        expression = to_durable(condition)
        tagged = {FACT_TAG: 1} if expression is None else {"$and": [{FACT_TAG: 1}, expression]}
        try:
            probe = durable_engine.Ruleset(f"latentsync_probe_{next(_generations)}", None,
                                           {"r": {"all": [{"m": tagged}], "run": lambda closure: None}})
        except Exception:
            names.append(name)
        else:
            _live_handles.add(probe._handle)
            _delete_handles([probe._handle])
    return names


class OracleMatcher:
    """Plain-Python evaluation of the parsed conditions."""

    def __init__(self, stages: dict[str, Sequence[tuple[str, Condition]]]):
        self._stages = {stage: list(rules) for stage, rules in stages.items()}

    def match(self, stage: str, facts: dict[str, Any]) -> set[str]:
        facts = normalize_facts(facts)
        return {name for name, condition in self._stages.get(stage, ()) if holds(condition, facts)}

    def close(self) -> None:
        pass


class DurableMatcher:
    """The rules compiled to durable-rules; `match` asserts one fact and collects fired rules.

    Each stage is compiled into as many rulesets as `plan_chunks` says (one for the bundled
    rules); raises TooLargeForDurable (before compiling anything) when that is not safe."""

    def __init__(self, stages: dict[str, Sequence[tuple[str, Condition]]]):
        from durable import engine as durable_engine

        plans = {stage: plan_chunks(rules) for stage, rules in stages.items()}
        self.generation = next(_generations)
        self._rulesets: dict[str, list[Any]] = {}
        self._fired: list[str] = []
        created: list[Any] = []
        with _lock:
            try:
                for stage, rules in stages.items():
                    self._rulesets[stage] = []
                    for part, indexes in enumerate(plans[stage] or [[]]):
                        definition: dict[str, Any] = {}
                        for index in indexes:
                            name, condition = rules[index]
                            expression = to_durable(condition)
                            tagged = {FACT_TAG: 1} if expression is None else {"$and": [{FACT_TAG: 1}, expression]}
                            definition[f"r{index}"] = {"all": [{"m": tagged}], "run": self._action(name)}
                        definition[_CATCH_ALL] = {"all": [{"m": {FACT_TAG: 1}}], "run": lambda closure: None}
                        try:
                            ruleset = durable_engine.Ruleset(f"latentsync_{stage}_g{self.generation}_p{part}", None,
                                                             definition)
                        except Exception as error:  # durable_rules_engine.error: which rule is at fault?
                            raise ConditionTooComplex(_culprits([rules[i] for i in indexes]), str(error)) from error
                        _live_handles.add(ruleset._handle)
                        created.append(ruleset)
                        self._rulesets[stage].append(ruleset)
            except BaseException:
                _delete_handles(r._handle for r in created)
                raise
        handles = [ruleset._handle for ruleset in created]
        self.ruleset_count = len(handles)
        self._finalizer = weakref.finalize(self, _delete_handles, handles)

    def _action(self, name: str):
        fired = self._fired

        def record(closure: Any) -> None:
            fired.append(name)

        return record

    def match(self, stage: str, facts: dict[str, Any]) -> set[str]:
        with _lock:
            rulesets = self._rulesets.get(stage)
            if not rulesets:
                return set()
            normalized = normalize_facts(facts)
            self._fired.clear()
            for ruleset in rulesets:
                sid = f"s{next(_sids)}"
                message = dict(normalized)
                message.update({"sid": sid, FACT_TAG: 1})
                errors: list[Any] = []
                try:
                    ruleset.do_actions(ruleset.assert_fact(message), lambda error, state: errors.append(error))
                finally:
                    try:
                        ruleset.delete_state(sid)
                    except Exception:  # no state was created (the assert itself failed): nothing to free
                        if not errors and sys.exc_info()[0] is None:
                            raise
                if any(errors):
                    raise RuntimeError(f"durable-rules failed on stage {stage}: {next(e for e in errors if e)}")
            return set(self._fired)

    def close(self) -> None:
        self._finalizer()
