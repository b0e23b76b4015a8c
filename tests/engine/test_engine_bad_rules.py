"""Every kind of bad rule file is refused with a clear error (file, line, rule id, field), exit 2."""
from __future__ import annotations

import pytest
from engine_helpers import write

from latentsync.cli.rules import main as rules_cli
from latentsync.engine import RulesError, load_ruleset
from latentsync.errors import InvalidInputError

RULE = """
schema_version: 1
rules:
  - id: {id}
    description: a test rule
    priority: {priority}
    when: {when}
    set: {set}
"""


def add_rule(folder, name="95_extra.yaml", *, id="extra.rule", priority=95, when="{device: cuda}", set="{steps: 30}"):
    return write(folder / name, RULE.format(id=id, priority=priority, when=when, set=set))


def load_error(folder) -> RulesError:
    with pytest.raises(RulesError) as caught:
        load_ruleset(folder)
    assert isinstance(caught.value, InvalidInputError) and caught.value.exit_code == 2
    return caught.value


def only(error: RulesError):
    assert len(error.problems) == 1, error.problems
    return error.problems[0]


def test_invalid_yaml_names_file_and_line(rules_copy):
    write(rules_copy / "95_extra.yaml", "schema_version: 1\nrules:\n  - id: x\n    when: {device: cuda\n")
    problem = only(load_error(rules_copy))
    assert problem.file.endswith("95_extra.yaml") and problem.line in (4, 5)
    assert "invalid YAML" in problem.message


def test_unknown_field_names_rule_and_field(rules_copy):
    path = write(rules_copy / "95_extra.yaml", RULE.format(id="extra.rule", priority=95, when="{}", set="{steps: 30}")
                 + "    priorty: 3\n")
    problem = only(load_error(rules_copy))
    assert (problem.file, problem.rule, problem.field) == ("rules_copy/95_extra.yaml", "extra.rule", "rules[0]")
    assert "unknown field 'priorty'" in problem.message
    assert problem.line == 3
    assert path.read_text().endswith("priorty: 3\n")  # the user's file is untouched


def test_unknown_setting_in_set(rules_copy):
    add_rule(rules_copy, set="{stepz: 30}")
    problem = only(load_error(rules_copy))
    assert problem.field == "rules[0].set" and "unknown field 'stepz'" in problem.message


@pytest.mark.parametrize("when, set, field, words", [
    ("{device: cuda}", "{steps: many}", "rules[0].set.steps", "wrong type"),
    ("{gpu_vram_free_gib: {lt: lots}}", "{steps: 30}", "rules[0].when.gpu_vram_free_gib.lt", "wrong type"),
    ("{gpu_bf16: {gt: 1}}", "{steps: 30}", "rules[0].when.gpu_bf16.gt", "boolean"),
    ("{goal: 3}", "{steps: 30}", "rules[0].when.goal", "wrong type"),
    ("{device: tpu}", "{steps: 30}", "rules[0].when.device", "unknown value 'tpu'"),
    ("{gpu_tier: 24GB}", "{steps: 30}", "rules[0].when.gpu_tier", "unknown value '24GB'"),
])
def test_wrong_type(rules_copy, when, set, field, words):
    add_rule(rules_copy, when=when, set=set)
    problem = only(load_error(rules_copy))
    assert problem.rule == "extra.rule" and problem.field == field and words in problem.message
    assert problem.line is not None and problem.line >= 4


def test_priority_of_wrong_type(rules_copy):
    add_rule(rules_copy, priority='"high"')
    problem = only(load_error(rules_copy))
    assert problem.field == "rules[0].priority" and "expected integer" in problem.message


def test_unknown_operator(rules_copy):
    add_rule(rules_copy, when="{gpu_vram_free_gib: {between: [4, 8]}}")
    problem = only(load_error(rules_copy))
    assert problem.field == "rules[0].when.gpu_vram_free_gib"
    assert "unknown operator 'between'" in problem.message and problem.line == 6


def test_unknown_fact(rules_copy):
    add_rule(rules_copy, when="{gpu_vram: {lt: 8}}")
    problem = only(load_error(rules_copy))
    assert problem.field == "rules[0].when.gpu_vram" and "unknown fact 'gpu_vram'" in problem.message


def test_duplicate_rule_id_across_files(rules_copy):
    add_rule(rules_copy, id="goals.quality")
    problem = only(load_error(rules_copy))
    assert problem.rule == "goals.quality" and problem.field == "id"
    assert "duplicate rule id" in problem.message and "40_goals.yaml" in problem.message


def test_duplicate_yaml_key(rules_copy):
    write(rules_copy / "95_extra.yaml", RULE.format(id="extra.rule", priority=95, when="{}", set="{steps: 30}")
          .replace("priority: 95", "priority: 95\n    priority: 96"))
    problem = only(load_error(rules_copy))
    assert "duplicate key 'priority'" in problem.message and problem.line == 6


def test_equal_priority_clash_for_the_same_facts(rules_copy):
    # goals.quality (priority 20) sets steps 20 when goal_effective is quality; this one can fire with it.
    add_rule(rules_copy, priority=20, when="{clip_duration_s: {lt: 5}}", set="{steps: 12}")
    problems = load_error(rules_copy).problems
    # It clashes with each goal rule (preview 10, balanced 20, quality 20 steps).
    assert {(p.rule, p.field) for p in problems} == {("extra.rule", "set.steps")} and len(problems) == 3
    problem = next(p for p in problems if "goals.quality" in p.message)
    assert "equal priority 20" in problem.message and "'goal_effective': 'quality'" in problem.message


def test_equal_priority_without_overlap_is_fine(rules_copy):
    # Same priority and key as goals.preview (steps 10), but exclusive with it by goal_effective.
    add_rule(rules_copy, priority=20, when="{goal_effective: quality, device: cpu}", set="{steps: 20}")
    assert load_ruleset(rules_copy).rule("extra.rule").priority == 20
    # Same priority and key as mem.free-lt-16 and mem.batch-32, exclusive by free-VRAM ranges.
    add_rule(rules_copy, "96_extra.yaml", id="extra.other", priority=50,
             when="{device: cuda, gpu_vram_free_gib: {gte: 16, lt: 32}}", set="{frames_per_batch: 16}")
    load_ruleset(rules_copy)


def test_newer_schema_version(rules_copy):
    path = rules_copy / "40_goals.yaml"
    path.write_text(path.read_text().replace("schema_version: 1", "schema_version: 7"))
    problem = only(load_error(rules_copy))
    assert problem.field == "schema_version" and problem.line == 1
    assert "newer than this code supports (1)" in problem.message


def test_every_problem_is_reported_at_once(rules_copy):
    add_rule(rules_copy, "95_a.yaml", id="extra.a", when="{gpu_vram: 3}")
    add_rule(rules_copy, "96_b.yaml", id="extra.b", set="{steps: 0}")
    write(rules_copy / "97_c.yaml", "schema_version: 1\nrules: [\n")
    error = load_error(rules_copy)
    files = sorted(problem.file.split("/")[-1] for problem in error.problems)
    assert files == ["95_a.yaml", "96_b.yaml", "97_c.yaml"]
    text = str(error)
    assert "3 problems" in text and "rule extra.b" in text


def test_missing_default_for_a_setting(rules_copy):
    path = rules_copy / "00_defaults.yaml"
    path.write_text(path.read_text().replace("      seed: 1247", ""))
    problem = only(load_error(rules_copy))
    assert "seed" in problem.message and "default" in problem.message


def test_invalid_gpu_profile(rules_copy):
    path = rules_copy / "gpu_profiles.yaml"
    path.write_text(path.read_text().replace("vram_total_gib: 23.99", "vram_total_gib: big", 1))
    problem = only(load_error(rules_copy))
    assert problem.file.endswith("gpu_profiles.yaml") and problem.field.endswith("vram_total_gib")
    assert problem.line is not None


def test_no_rules_folder(tmp_path):
    problem = only(load_error(tmp_path / "nowhere"))
    assert "not found" in problem.message


def test_cli_validate_exit_code_and_message(rules_copy, capsys):
    add_rule(rules_copy, when="{gpu_vram_free_gib: {between: [4, 8]}}")
    assert rules_cli(["validate", str(rules_copy)]) == 2
    err = capsys.readouterr().err
    assert "rules_copy/95_extra.yaml:6: rule extra.rule: rules[0].when.gpu_vram_free_gib: unknown operator" in err


def test_condition_durable_rules_cannot_compile_is_named(rules_copy, monkeypatch):
    from latentsync.engine import ruleset as ruleset_module
    from latentsync.engine.backends import ConditionTooComplex

    def refuse(stages):
        raise ConditionTooComplex(["goals.quality"], "Could not create ruleset, error code: 113")

    monkeypatch.setattr(ruleset_module, "DurableMatcher", refuse)
    problem = only(load_error(rules_copy))
    assert (problem.rule, problem.field, problem.file) == ("goals.quality", "when", "rules_copy/40_goals.yaml")
    assert problem.line == 7 and "too complex for the durable-rules engine" in problem.message


def test_numbers_beyond_what_the_engine_reads_are_refused(rules_copy):
    add_rule(rules_copy, when="{gpu_vram_free_gib: {lt: 0.00001}}")
    problem = only(load_error(rules_copy))
    assert problem.field == "rules[0].when.gpu_vram_free_gib.lt" and "at most 4 decimals" in problem.message
