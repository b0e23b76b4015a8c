"""Rules are proven before they are used: derive cycles are refused, rules that can never fire are
reported, and large rule sets load in seconds (durable-rules in parts, or the built-in evaluator,
saying which)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import facts_for, job, write

from latentsync.cli.rules import main as rules_cli
from latentsync.engine import RulesError, load_ruleset, resolve_plan
from latentsync.engine.plan import resolve_flat
from latentsync.paths import REPO_ROOT

RULE = """
  - id: {id}
    description: generated
    priority: {priority}
    when: {when}
    set: {set}
"""


def rule_file(path: Path, rules: list[dict], stage: str = "settings") -> Path:
    head = "schema_version: 1\n" + ("stage: derive\n" if stage == "derive" else "") + "rules:"
    return write(path, head + "".join(RULE.format(**rule) for rule in rules))


LOAD = """
import sys
from latentsync.engine import load_ruleset
ruleset = load_ruleset(sys.argv[1])
print(len(ruleset.rules), "rules, evaluated by", ruleset.engine)
"""


def load_in_a_process(folder: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """A hang inside durable-rules' C code cannot be interrupted in-process: load in a child."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", LOAD, str(folder)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - started


def test_derive_cycle_is_refused_naming_both_rules(rules_copy):
    rule_file(rules_copy / "15_cycle.yaml", [
        dict(id="cycle.tier-from-class", priority=50, when="{clip_class: short}", set="{gpu_tier: 8gb}"),
        dict(id="cycle.class-from-tier", priority=50, when="{gpu_tier: 8gb}", set="{clip_class: long}"),
    ], stage="derive")
    with pytest.raises(RulesError) as caught:
        load_ruleset(rules_copy)
    text = str(caught.value)
    assert "derive rules form a cycle" in text
    assert "cycle.tier-from-class" in text and "cycle.class-from-tier" in text
    assert rules_cli(["validate", str(rules_copy)]) == 2


def test_rule_that_can_never_fire_is_a_warning(rules_copy, capsys):
    rule_file(rules_copy / "95_never.yaml", [
        dict(id="never.bounds", priority=95, when="{gpu_vram_total_gib: {gte: 24, lt: 16}}", set="{steps: 30}"),
        dict(id="never.values", priority=96,
             when="{any: [{device: cuda, gpu_vram_free_gib: {gt: 10, lte: 5}}, {clip_duration_s: {lt: 1, gte: 2}}]}",
             set="{steps: 31}"),
        dict(id="fine.rule", priority=97, when="{device: cuda, gpu_vram_total_gib: {gte: 90}}", set="{steps: 29}"),
    ])
    ruleset = load_ruleset(rules_copy)
    flagged = {warning.rule for warning in ruleset.warnings}
    assert flagged == {"never.bounds", "never.values"}
    assert all("can never fire" in w.message and w.line for w in ruleset.warnings)
    assert rules_cli(["validate", str(rules_copy)]) == 0
    err = capsys.readouterr().err
    assert "warning: rules_copy/95_never.yaml:3: rule never.bounds: when: rule can never fire" in err


def test_the_bundled_rules_have_no_warnings(ruleset):
    assert ruleset.warnings == []


def test_a_rule_too_large_for_durable_rules_is_evaluated_by_the_built_in_evaluator(rules_copy, capsys):
    frames = list(range(100, 160))  # 60 alternatives: more tests than one durable-rules ruleset holds
    rule_file(rules_copy / "95_wide.yaml", [dict(id="wide.frames", priority=95, when=f"{{clip_frames: {{in: {frames}}}}}",
                                                 set="{steps: 33}")])
    ruleset = load_ruleset(rules_copy)
    assert ruleset.engine.startswith("built-in evaluator (rule wide.frames compiles to 60 tests")
    plan = resolve_plan(job(), facts_for(ruleset, "rtx4090-24gb", 10), ruleset)
    assert plan.settings["steps"] != 33  # the clip has no frame count in 100..159
    assert rules_cli(["validate", str(rules_copy)]) == 0


def test_rules_that_hung_durable_rules_now_load_in_a_second(tmp_path, ruleset):
    """513 rules testing one fact hung durable-rules' ruleset creation for ever."""
    folder = tmp_path / "v1"
    shutil.copytree(REPO_ROOT / "rules" / "v1", folder)
    rule_file(folder / "95_many.yaml", [dict(id=f"many.r{i}", priority=100 + i, when=f"{{gpu_vram_free_gib: {{gte: {i / 10:.1f}}}}}",
                                             set="{steps: 20}") for i in range(600)])
    done, seconds = load_in_a_process(folder, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    shipped = len(ruleset.snapshot().rules)
    assert f"{shipped + 600} rules, evaluated by durable-rules (" in done.stdout and seconds < 60
    ruleset = load_ruleset(folder)
    for gpu, duration in (("rtx4090-24gb", 10), ("rtx4060-8gb", 3), ("h100-80gb", 60)):
        flat = facts_for(ruleset, gpu, duration).flat()
        durable = resolve_flat(job(), flat, ruleset, backend="durable")
        oracle = resolve_flat(job(), flat, ruleset, backend="oracle")
        assert durable.fired_rules == oracle.fired_rules and durable.settings == oracle.settings
    ruleset.close()


def test_five_thousand_rules_validate_in_seconds(tmp_path, ruleset):
    """5,000 equal-priority rules with exclusive ranges (the clash check sweeps instead of pairing
    all 12.5 million pairs) and too many tests for durable-rules' limit of rulesets."""
    folder = tmp_path / "v1"
    shutil.copytree(REPO_ROOT / "rules" / "v1", folder)
    shutil.rmtree(folder / "tests")
    rule_file(folder / "95_table.yaml", [dict(id=f"table.r{i}", priority=500, when=f"{{clip_duration_s: {{gte: {i}, lt: {i + 1}}}}}",
                                              set=f"{{steps: {1 + i % 50}}}") for i in range(5000)])
    done, seconds = load_in_a_process(folder, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    shipped = ruleset.snapshot().rules
    settings_rules = sum(1 for rule in shipped if rule.stage == "settings")
    assert (f"{len(shipped) + 5000} rules, evaluated by built-in evaluator ({settings_rules + 5000} rules of one "
            "stage need") in done.stdout
    print(f"5,000 rules validated in {seconds:.1f} s")
    assert seconds < 90  # about 6 s on a busy 2-core machine; before: never
