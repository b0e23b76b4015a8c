"""Reload swaps rules in place without leaking durable-rules state; plans are thread-safe."""
from __future__ import annotations

import gc
import threading

import pytest
from engine_helpers import facts_for, job

from latentsync.engine import RulesError, load_ruleset, resolve_plan
from latentsync.engine.backends import live_ruleset_count


def test_more_plans_than_durable_rules_keeps_states(rules_copy):
    # durable-rules holds at most 1024 states per ruleset; each plan must delete its own.
    ruleset = load_ruleset(rules_copy)
    facts = facts_for(ruleset, "rtx4060-8gb", 3)
    spec = job()
    for _ in range(1100):
        plan = resolve_plan(spec, facts, ruleset)
    assert plan.settings["vae_tiling"] is True
    ruleset.close()


def test_reload_replaces_rules_in_place_without_leaking(rules_copy):
    ruleset = load_ruleset(rules_copy)
    live = live_ruleset_count()
    facts = facts_for(ruleset, "rtx4090-24gb", 10)
    goals = rules_copy / "40_goals.yaml"
    original = goals.read_text()
    for steps in (21, 22, 23) * 10:
        goals.write_text(original.replace("steps: 20, cfg_mode: all, cfg_fraction: 1.0, deepcache: false",
                                          f"steps: {steps}, cfg_mode: all, cfg_fraction: 1.0, deepcache: false"))
        assert ruleset.reload() is ruleset
        assert resolve_plan(job(goal="quality"), facts, ruleset).settings["steps"] == steps
        assert live_ruleset_count() == live  # the old compiled rulesets are gone
    compiled = ruleset.snapshot().matcher.ruleset_count  # derive + settings, in parts of DURABLE_CHUNK_NODES tests
    assert compiled >= 2
    ruleset.close()
    assert live_ruleset_count() == live - compiled


def test_dropped_rulesets_are_freed(rules_copy):
    gc.collect()
    live = live_ruleset_count()
    for _ in range(5):
        load_ruleset(rules_copy)
    gc.collect()
    assert live_ruleset_count() == live


def test_failed_reload_keeps_the_last_good_rules(rules_copy):
    ruleset = load_ruleset(rules_copy)
    good_hash = ruleset.hash
    (rules_copy / "40_goals.yaml").write_text("schema_version: 1\nrules: [\n")
    with pytest.raises(RulesError):
        ruleset.reload()
    assert ruleset.hash == good_hash
    assert resolve_plan(job(goal="quality"), facts_for(ruleset, "cpu", 3), ruleset).settings["steps"] == 20
    ruleset.close()


def test_plans_and_reloads_from_many_threads(rules_copy):
    ruleset = load_ruleset(rules_copy)
    errors: list[BaseException] = []
    cases = [("rtx4060-8gb", 3, True), ("rtx4090-24gb", 30, False), ("cpu", 10, False)]

    def plan_many(gpu, duration, tiled):
        try:
            facts = facts_for(ruleset, gpu, duration)
            for _ in range(150):
                assert resolve_plan(job(), facts, ruleset).settings["vae_tiling"] is tiled
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def reload_many():
        try:
            for _ in range(10):
                ruleset.reload()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=plan_many, args=case) for case in cases] + [threading.Thread(target=reload_many)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    ruleset.close()
