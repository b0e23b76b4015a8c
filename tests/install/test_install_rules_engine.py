"""durable-rules is optional: the plan and `latentsync-rules` say which evaluator ran."""
from __future__ import annotations

import builtins
import json
from pathlib import Path

from latentsync.cli.rules import main as rules_cli
from latentsync.paths import examples_dir

PLAN = str(examples_dir() / "plan.yaml")
ARGS = ["--assume-gpu", "rtx4060-8gb", "--duration", "30"]


def durable_installed() -> bool:
    try:
        import durable.engine  # noqa: F401
    except ImportError:
        return False
    return True


def explain(capsys, *extra):
    assert rules_cli(["explain", PLAN, *ARGS, *extra]) == 0
    return capsys.readouterr().out


def test_plan_and_explain_name_the_evaluator(capsys):
    [entry] = json.loads(explain(capsys, "--json"))
    engine = entry["run_plan"]["facts"]["rules_engine"]
    assert engine.startswith("durable-rules" if durable_installed() else "built-in evaluator")
    assert explain(capsys).rstrip().splitlines()[-1] == f"rules evaluated by: {engine}"
    assert rules_cli(["validate"]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == f"rules evaluated by: {engine}"


def test_without_durable_rules_the_built_in_evaluator_runs_and_says_so(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_durable(name, *args, **kwargs):
        if name.startswith("durable"):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed: simulated)")
        return real_import(name, *args, **kwargs)

    with_durable = json.loads(explain(capsys, "--json"))[0]["run_plan"]
    monkeypatch.setattr(builtins, "__import__", no_durable)
    [entry] = json.loads(explain(capsys, "--json"))
    plan = entry["run_plan"]
    assert plan["facts"].pop("rules_engine").startswith("built-in evaluator")
    with_durable["facts"].pop("rules_engine")
    assert plan == with_durable  # the same plan, whichever evaluator
    assert explain(capsys).rstrip().splitlines()[-1].startswith("rules evaluated by: built-in evaluator")
