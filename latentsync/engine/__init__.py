"""The rules engine: rule files + facts -> an explained run plan.

    ruleset = load_ruleset()                  # validate and compile rules/v1 (RulesError, exit 2)
    jobs = load_plan_file(Path("plan.yaml"))  # JobSpecs (PlanError, exit 2)
    facts = gather_facts(jobs[0], ruleset)    # GPU, clip, benchmark facts
    plan = resolve_plan(jobs[0], facts, ruleset)
    text = plan.explain_table()

Importing this package does not import durable-rules; loading a rule set does.
"""
from ..contracts import schema_errors
from ..facts import Facts, gather_facts
from .errors import PlanError, Problem, RulesError
from .evaluate import Evaluation, evaluate_policy
from .plan import USER_OVERRIDE, RunPlan, SettingSource, resolve_flat, resolve_plan
from .planfile import load_plan_file
from .ruleset import SUPPORTED_SCHEMA_VERSION, Rule, RuleSet, load_ruleset, resolve_rules_folder

__all__ = [
    "Evaluation", "Facts", "PlanError", "Problem", "Rule", "RuleSet", "RulesError", "RunPlan", "SUPPORTED_SCHEMA_VERSION",
    "SettingSource", "USER_OVERRIDE", "evaluate_policy", "gather_facts", "load_plan_file", "load_ruleset",
    "resolve_flat", "resolve_plan", "resolve_rules_folder", "schema_errors",
]
