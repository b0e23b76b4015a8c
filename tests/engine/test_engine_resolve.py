"""Facts -> explained plan: the issue's "Done when" checks, overrides, CPU plans, the plan contract."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from engine_helpers import facts_for, job

from latentsync.cli.rules import main as rules_cli
from latentsync.engine import (USER_OVERRIDE, PlanError, RulesError, RunPlan, load_plan_file, load_ruleset,
                               resolve_flat, resolve_plan, schema_errors)
from latentsync.engine.evaluate import merge
from latentsync.engine.ruleset import Rule
from latentsync.engine.language import ALWAYS
from latentsync.paths import examples_dir

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def explain_json(capsys, *args) -> dict:
    assert rules_cli(["explain", str(examples_dir() / "plan.yaml"), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)[0]["run_plan"]


def test_done_when_plans_differ_and_each_difference_is_traced_to_a_rule(capsys):
    big_long = explain_json(capsys, "--assume-gpu", "rtx4090-24gb", "--duration", "30")
    small_short = explain_json(capsys, "--assume-gpu", "rtx4060-8gb", "--duration", "3")
    quality = explain_json(capsys, "--assume-gpu", "rtx4090-24gb", "--duration", "30", "--goal", "quality")
    for other in (small_short, quality):
        differing = [key for key in big_long["settings"] if big_long["settings"][key] != other["settings"][key]]
        assert differing, "the plans must differ"
        for key in differing:
            for plan in (big_long, other):
                source = plan["sources"][key]
                assert not source["override"] and source["rule"] in plan["fired_rules"]
                assert re.fullmatch(r"v1/\d\d_\w+\.yaml", source["file"]) and source["line"] > 0
            assert big_long["sources"][key]["rule"] != other["sources"][key]["rule"]
    assert big_long["goal"] == "balanced" and quality["goal"] == "quality"
    assert big_long["settings"]["deepcache"] is True and quality["settings"]["deepcache"] is False
    assert small_short["settings"]["vae_tiling"] is True and big_long["settings"]["vae_tiling"] is False
    assert small_short["facts"]["gpu_tier"] == "8gb" and big_long["facts"]["gpu_tier"] == "24gb"


def test_explain_table_names_rule_and_file_line(capsys):
    assert rules_cli(["explain", str(examples_dir() / "plan.yaml"), "--assume-gpu", "rtx4060-8gb",
                      "--duration", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("vae_tiling"))
    assert row.split() == ["vae_tiling", "true", "mem.free-lt-10", "v1/70_memory.yaml:15"]
    assert "note: GPU facts assumed from profile 'rtx4060-8gb'" in out
    # An 8 GB card already runs the whole ladder's settings: no step is left to take.
    assert "on out-of-memory" not in out
    assert rules_cli(["explain", str(examples_dir() / "plan.yaml"), "--assume-gpu", "a100-40gb", "--duration", "3"]) == 0
    out = capsys.readouterr().out
    assert "1. frames_per_batch=16  (oom.1-one-chunk, v1/90_fallbacks.yaml:" in out


def test_editing_one_number_changes_the_plan_without_code(rules_copy):
    before = load_ruleset(rules_copy)
    spec = job(goal="quality")
    facts = facts_for(before, "rtx4090-24gb", 10)
    assert resolve_plan(spec, facts, before).settings["steps"] == 20
    goals = rules_copy / "40_goals.yaml"
    goals.write_text(goals.read_text().replace("set: {scheduler: ddim, steps: 20, cfg_mode: all, cfg_fraction: 1.0, "
                                               "deepcache: false}", "set: {scheduler: ddim, steps: 28, cfg_mode: all, "
                                               "cfg_fraction: 1.0, deepcache: false}", 1))
    after = load_ruleset(rules_copy)
    plan = resolve_plan(spec, facts, after)
    assert plan.settings["steps"] == 28 and plan.sources["steps"].rule == "goals.quality"
    assert after.hash != before.hash
    # A threshold, too: move the 8 GB tile rule's limit below the 4060's free VRAM.
    small = facts_for(after, "rtx4060-8gb", 10)
    assert resolve_plan(spec, small, after).settings["vae_tiling"] is True
    memory = rules_copy / "70_memory.yaml"
    memory.write_text(memory.read_text().replace("gpu_vram_free_gib: {lt: 10}", "gpu_vram_free_gib: {lt: 7}"))
    assert resolve_plan(spec, small, load_ruleset(rules_copy)).settings["vae_tiling"] is False


def test_every_setting_of_the_contract_is_resolved(ruleset):
    documented = re.findall(r"^\| `(\w+)` \|", SETTINGS_DOC.read_text(), flags=re.M)
    for gpu in sorted(ruleset.gpu_profiles):
        plan = resolve_plan(job(), facts_for(ruleset, gpu, 12), ruleset)
        assert list(plan.settings) == documented
        assert not schema_errors(plan.to_dict(), "run_plan")
        assert plan.settings["frames_per_batch"] % plan.settings["chunk_frames"] == 0


def test_cpu_plan_runs_on_the_cpu(ruleset):
    for goal in ("preview", "balanced", "quality", "auto"):
        plan = resolve_plan(job(goal=goal, speed_mode="ultra", weights="random-small"),
                            facts_for(ruleset, "cpu", 3), ruleset)
        settings = plan.settings
        assert (settings["device"], settings["precision"], settings["compile"], settings["cuda_graphs"]) == \
            ("cpu", "fp32", "off", False)
        assert settings["attention_backend"] not in ("flash", "efficient") and settings["resolution"] == 128
        assert plan.fallbacks == []


def test_user_override_wins_and_is_explained(ruleset):
    spec = job(overrides={"steps": 7, "vae_batch": 2}, seed=99)
    plan = resolve_plan(spec, facts_for(ruleset, "rtx4060-8gb", 3), ruleset)
    assert (plan.settings["steps"], plan.settings["vae_batch"], plan.settings["seed"]) == (7, 2, 99)
    source = plan.sources["vae_batch"]
    assert source.rule == USER_OVERRIDE and source.override and "mem.free-lt-10" in source.description
    assert all("vae_batch" not in step["set"] for step in plan.fallbacks)  # the ladder leaves the user's value alone
    assert "user override" in plan.explain_table()


@pytest.mark.parametrize("overrides, field", [({"stepz": 3}, "overrides.stepz"),
                                               ({"steps": 0}, "overrides.steps"),
                                               ({"frames_per_batch": 20}, "overrides.frames_per_batch"),
                                               ({"compile": "default", "cuda_graphs": True, "compile_scope": "blocks"},
                                                "overrides.compile_scope")])
def test_bad_override_is_a_plan_error(ruleset, overrides, field):
    with pytest.raises(PlanError) as caught:
        resolve_plan(job(overrides=overrides), facts_for(ruleset, "rtx4090-24gb", 3), ruleset)
    assert caught.value.exit_code == 2 and caught.value.problems[0].field == field


def test_fallback_ladder_only_ever_lowers_memory(ruleset):
    for gpu in sorted(ruleset.gpu_profiles):
        plan = resolve_plan(job(speed_mode="ultra"), facts_for(ruleset, gpu, 12), ruleset)
        state = dict(plan.settings)
        for step in plan.fallbacks:
            assert step["rule"].startswith("oom.") and step["set"]
            for key, value in step["set"].items():
                if isinstance(value, int) and not isinstance(value, bool):
                    assert value < state[key], (gpu, step)
                assert state[key] != value
            state.update(step["set"])


def test_run_plan_round_trips_and_is_schema_valid(ruleset):
    plan = resolve_plan(job(quality_preset="fast"), facts_for(ruleset, "a100-40gb", 25), ruleset)
    data = json.loads(json.dumps(plan.to_dict()))
    assert not schema_errors(data, "run_plan")
    again = RunPlan.from_dict(data)
    assert again == plan and again.explain_table() == plan.explain_table()
    broken = dict(data, settings=dict(data["settings"], steps="many"))
    with pytest.raises(Exception, match="settings.steps"):
        RunPlan.from_dict(broken)


def test_plan_names_rules_version_and_hash(ruleset):
    plan = resolve_plan(job(), facts_for(ruleset, "rtx3090-24gb", 3), ruleset)
    assert plan.rules_version == "v1" and plan.rules_hash == ruleset.hash and len(plan.rules_hash) == 64
    assert plan.notes == [] and plan.facts["gpu_name"] == "NVIDIA GeForce RTX 3090"


def test_runtime_clash_of_equal_priority_rules_is_an_error():
    def rule(rule_id, value):
        return Rule(id=rule_id, description="d", priority=5, stage="settings", when={}, condition=ALWAYS,
                    set={"steps": value}, file="x.yaml", line=1, order=(0, 0))
    assert merge([rule("a", 10), rule("b", 10)], {})[0] == {"steps": 10}
    with pytest.raises(RulesError, match="equal priority 5 and both fired"):
        merge([rule("a", 10), rule("b", 12)], {})


def test_oracle_and_durable_resolve_the_same_plans(ruleset):
    for gpu in sorted(ruleset.gpu_profiles):
        for duration in (2, 10, 40):
            for spec in (job(), job(goal="preview", speed_mode="turbo"), job(quality_preset="ultra")):
                flat = facts_for(ruleset, gpu, duration).flat()
                durable = resolve_flat(spec, flat, ruleset, backend="durable")
                oracle = resolve_flat(spec, flat, ruleset, backend="oracle")
                # the plans say which evaluator ran; everything else is the same
                assert oracle.facts.pop("rules_engine") == "built-in evaluator"
                assert durable.facts.pop("rules_engine")
                assert durable == oracle


def test_example_plan_resolves_on_this_machine(ruleset):
    spec = load_plan_file(examples_dir() / "plan.yaml")[0]
    if not Path(spec.video).is_file():
        pytest.skip("examples/assets not generated")
    from latentsync.engine import gather_facts
    facts = gather_facts(dataclasses.replace(spec, assume={}), ruleset)
    plan = resolve_plan(spec, facts, ruleset)
    assert plan.facts["clip_frames"] == 75 and plan.facts["clip_audio"] is True
    assert plan.settings["resolution"] == 128


def test_rules_resolve_without_durable_rules_installed(monkeypatch):
    """durable-rules fails to build on some Pythons: the built-in evaluator takes over."""
    import builtins
    from pathlib import Path

    from latentsync.engine import load_ruleset, resolve_plan
    from latentsync.engine.backends import OracleMatcher
    from latentsync.facts import gather_facts
    from latentsync.jobs import JobSpec

    real_import = builtins.__import__

    def no_durable(name, *args, **kwargs):
        if name.startswith("durable"):
            raise ImportError("No module named 'durable_rules_engine' (simulated)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_durable)
    ruleset = load_ruleset()
    assert isinstance(ruleset.snapshot().matcher, OracleMatcher)
    job = JobSpec(video=Path("missing.mp4"), output=Path("o.mp4"), assume={"gpu": "rtx4060-8gb", "duration": 3})
    plan = resolve_plan(job, gather_facts(job, ruleset), ruleset)
    assert plan.settings["vae_tiling"] is True and plan.sources["vae_tiling"].rule == "mem.free-lt-10"


def test_explain_can_assume_another_hosts_cpu_cores(capsys):
    small = explain_json(capsys, "--assume-gpu", "h100-80gb", "--duration", "30", "--assume-cpu-cores", "2")
    large = explain_json(capsys, "--assume-gpu", "h100-80gb", "--duration", "30", "--assume-cpu-cores", "16")
    assert small["settings"]["cpu_workers"] == 1 and small["facts"]["cpu_cores"] == 2
    assert large["settings"]["cpu_workers"] > 1 and large["sources"]["cpu_workers"]["file"] == "v1/72_cpu.yaml"
