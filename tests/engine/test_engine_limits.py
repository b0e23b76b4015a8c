"""Bounded parsing: plans and rule files are read within the limits of latentsync/engine/limits.py,
and anything over a limit is a clear exit-2 error naming the file, in bounded time."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
from engine_helpers import write

from latentsync.cli.run import main as run_cli
from latentsync.contracts import definition_problems
from latentsync.engine import PlanError, RulesError, load_plan_file, load_ruleset
from latentsync.engine.limits import MAX_REPORTED_PROBLEMS, PLAN_LIMITS, RULES_LIMITS
from latentsync.paths import REPO_ROOT

# "Billion laughs" in about 600 bytes: nine levels of nine aliases, 9**9 strings.
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    + ["video: clip.mp4", "output: out.mp4", "name: *a8"]) + "\n"


def plan_error(path: Path, seconds: float = 5.0) -> PlanError:
    started = time.monotonic()
    with pytest.raises(PlanError) as caught:
        load_plan_file(path)
    assert time.monotonic() - started < seconds, "a limit must be hit fast"
    assert caught.value.exit_code == 2 and str(path) in str(caught.value)
    return caught.value


def test_alias_bomb_is_refused_by_counting_not_expanding(tmp_path):
    plan = write(tmp_path / "bomb.plan.yaml", ALIAS_BOMB)
    assert plan.stat().st_size < 700
    error = plan_error(plan)
    assert f"more than {PLAN_LIMITS.max_nodes:,} YAML nodes" in str(error)


def test_recursive_alias_is_refused(tmp_path):
    error = plan_error(write(tmp_path / "loop.yaml", "video: &x [a, *x]\noutput: o.mp4\n"))
    assert "refers to the collection it is part of" in str(error)


@pytest.mark.parametrize("depth", [PLAN_LIMITS.max_depth + 1, 50_000])
def test_deep_nesting_is_refused_without_recursion(tmp_path, depth):
    plan = write(tmp_path / "deep.yaml", "video: " + "[" * depth + "]" * depth + "\noutput: o.mp4\n")
    error = plan_error(plan)
    assert "nest" in str(error).lower() and error.problems[0].line == 1


def test_aliases_count_toward_depth(tmp_path):
    # Each level is shallow, but following the aliases nests 40 deep.
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, 40)] + ["video: a.mp4", "output: o.mp4"]
    assert "nests deeper" in str(plan_error(write(tmp_path / "chain.yaml", "\n".join(lines) + "\n")))


def test_oversized_plan_is_refused_before_reading(tmp_path):
    plan = tmp_path / "big.plan.yaml"
    with open(plan, "w") as handle:
        handle.write("video: a.mp4\noutput: b.mp4\nname: '")
        handle.write("x" * (10 << 20))
        handle.write("'\n")
    error = plan_error(plan, seconds=2.0)
    assert f"the limit is {PLAN_LIMITS.max_bytes:,} bytes" in str(error)


def test_many_errors_are_listed_up_to_the_limit_with_a_count(tmp_path):
    jobs = "".join(f"  - {{video: v{i}.mp4, output: o{i}.mp4, goal: fastest}}\n" for i in range(500))
    error = plan_error(write(tmp_path / "many.yaml", "jobs:\n" + jobs))
    assert error.total == 500 and len(error.problems) == MAX_REPORTED_PROBLEMS
    assert f"and {500 - MAX_REPORTED_PROBLEMS} more" in str(error)
    assert len(str(error)) < 20_000


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "1.0e+999"])
def test_non_finite_numbers_are_refused_with_their_line(tmp_path, value):
    error = plan_error(write(tmp_path / "nan.yaml", f"video: a.mp4\noutput: b.mp4\noverrides:\n  guidance_scale: {value}\n"))
    problem = error.problems[0]
    assert problem.line == 4 and problem.field == "overrides.guidance_scale" and "not a finite number" in problem.message


def test_schema_numbers_are_finite():
    for value in (math.nan, math.inf, -math.inf):
        problems = definition_problems({"guidance_scale": value}, "run_plan", "setting_values")
        assert problems and "not a finite number" in problems[0]
    assert definition_problems({"guidance_scale": 1.5}, "run_plan", "setting_values") == []


def test_huge_integer_and_impossible_date_are_plain_errors(tmp_path):
    assert "invalid value" in str(plan_error(write(tmp_path / "int.yaml", "video: a.mp4\noutput: b.mp4\nseed: "
                                                   + "9" * 6000 + "\n")))
    assert "invalid value" in str(plan_error(write(tmp_path / "date.yaml", "video: a.mp4\noutput: b.mp4\n"
                                                   "name: 2020-13-45\n")))


def test_rule_file_alias_bomb_is_a_rules_error(rules_copy):
    write(rules_copy / "95_bomb.yaml", "schema_version: 1\n" + ALIAS_BOMB.replace("video: clip.mp4\noutput: out.mp4\n", "")
          .replace("name: *a8", "rules: *a8"))
    started = time.monotonic()
    with pytest.raises(RulesError) as caught:
        load_ruleset(rules_copy)
    assert time.monotonic() - started < 10
    assert "95_bomb.yaml" in str(caught.value) and f"more than {RULES_LIMITS.max_nodes:,}" in str(caught.value)


def test_cli_refuses_a_hostile_plan_with_exit_2_naming_it(tmp_path, capsys):
    plan = write(tmp_path / "bomb.plan.yaml", ALIAS_BOMB)
    started = time.monotonic()
    assert run_cli([str(plan), "--dry-run"]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert str(plan) in err and "YAML nodes" in err and "Traceback" not in err


def test_docs_list_the_limits_in_force():
    """docs/limits.md states the numbers limits.py enforces."""
    text = (REPO_ROOT / "docs" / "limits.md").read_text()
    for limits in (PLAN_LIMITS, RULES_LIMITS):
        row = next(line for line in text.splitlines() if line.startswith(f"| {limits.kind} "))
        numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", row)]
        assert [limits.max_bytes, limits.max_depth, limits.max_nodes] == numbers[:3], row
    assert f"{MAX_REPORTED_PROBLEMS} problems" in text


def test_errors_found_while_resolving_name_the_plan_file_and_job(tmp_path, capsys):
    from latentsync.cli.rules import main as rules_cli

    plan = write(tmp_path / "two.plan.yaml", """
        jobs:
          - {video: a.mp4, output: a_out.mp4, assume: {gpu: rtx4090-24gb, duration: 3}}
          - {video: b.mp4, output: b_out.mp4, assume: {gpu: rtx4090-24gb, duration: 3},
             overrides: {cuda_graphs: true, compile: "off"}}
    """)
    assert rules_cli(["explain", str(plan)]) == 2
    assert run_cli([str(plan), "--dry-run"]) == 2
    for err in capsys.readouterr().err.split("error: ")[1:]:
        assert f"{plan}: jobs[1].overrides.cuda_graphs: cuda_graphs: true needs compile" in err
        assert "<input>" not in err


def test_an_oversized_rule_file_is_refused_without_reading_it(rules_copy):
    big = rules_copy / "95_big.yaml"
    with open(big, "w") as handle:
        handle.write("schema_version: 1\nrules: []\n# " + "x" * (RULES_LIMITS.max_bytes + 10) + "\n")
    started = time.monotonic()
    with pytest.raises(RulesError, match="the limit is") as caught:
        load_ruleset(rules_copy)
    assert time.monotonic() - started < 10 and "95_big.yaml" in str(caught.value)


def test_a_plan_of_thousands_of_jobs_is_checked_in_linear_time(tmp_path):
    plan = write(tmp_path / "many.yaml", "jobs:\n" + "".join(f"  - {{video: v{i}.mp4, output: o{i}.mp4}}\n"
                                                             for i in range(3000)))
    started = time.monotonic()
    assert len(load_plan_file(plan)) == 3000
    assert time.monotonic() - started < 30
