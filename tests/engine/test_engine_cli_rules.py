"""`latentsync-rules` validate / explain / test / profiles: output and exit codes."""
from __future__ import annotations

import json

from engine_helpers import write

from latentsync.cli.rules import main
from latentsync.paths import examples_dir


def test_validate_bundled_rules(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "version v1" in out and "policy test cases" in out


def test_policy_tests_pass_and_a_wrong_expectation_fails(rules_copy, capsys):
    assert main(["test", str(rules_copy)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "PASS  an 8 GB card slices and tiles the VAE" in out
    write(rules_copy / "tests" / "zz_wrong.yaml", """
        schema_version: 1
        cases:
          - name: wrong on purpose
            gpu: rtx4090-24gb
            duration: 3
            expect:
              settings: {steps: 99}
              sources: {deepcache: goals.balanced}
    """)
    assert main(["test", str(rules_copy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  wrong on purpose  (rules_copy/tests/zz_wrong.yaml:3)" in out
    assert "settings.steps: expected 99, got 20 (from goals.quality)" in out
    assert "sources.deepcache: expected rule goals.balanced, got goals.quality" in out


def test_invalid_policy_test_file_is_invalid_input(rules_copy, capsys):
    write(rules_copy / "tests" / "zz_bad.yaml", """
        schema_version: 1
        cases:
          - name: unknown card
            gpu: rtx9999
            duration: 3
            facts: {gpu_tier: 24gb, gpu_vramm: 3}
            expect: {goal: quality}
    """)
    assert main(["test", str(rules_copy)]) == 2
    err = capsys.readouterr().err
    assert "zz_bad.yaml:4: cases[0].gpu: unknown GPU profile 'rtx9999'" in err
    assert "cases[0].facts.gpu_tier: gpu_tier is derived" in err and "unknown fact 'gpu_vramm'" in err
    assert main(["validate", str(rules_copy)]) == 2


def test_explain_json_and_errors(capsys, tmp_path):
    plan = str(examples_dir() / "plan.yaml")
    assert main(["explain", plan, "--assume-gpu", "h100-80gb", "--duration", "12", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job"]["assume"] == {"gpu": "h100-80gb", "duration": 12.0}
    assert entry["run_plan"]["settings"]["frames_per_batch"] == 64
    assert main(["explain", plan, "--assume-gpu", "rtx9999", "--duration", "3"]) == 2
    assert "unknown GPU profile 'rtx9999'" in capsys.readouterr().err
    bad = tmp_path / "plan.yaml"
    bad.write_text("video: a.mp4\noutput: b.mp4\ngoal: fastest\n")
    assert main(["explain", str(bad)]) == 2
    assert f"{bad}:3: goal:" in capsys.readouterr().err
    missing = tmp_path / "nothing.yaml"
    missing.write_text("video: no-such-clip.mp4\noutput: out.mp4\n")
    assert main(["explain", str(missing)]) == 2  # no video and no pinned duration: nothing to plan
    assert "no-such-clip.mp4" in capsys.readouterr().err


def test_profiles_lists_cards(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "rtx4060-8gb" in out and "h100-80gb" in out
