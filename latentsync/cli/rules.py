"""`latentsync-rules`: check, explain and test the policy.

    latentsync-rules validate [DIR]          every rule file, profile and policy test file
    latentsync-rules explain PLAN [options]  the resolved plan: setting, value, rule, file:line
    latentsync-rules test [DIR]              the policy test cases in DIR/tests/*.yaml
    latentsync-rules profiles [DIR]          the named GPU profiles
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from loguru import logger

from ..errors import InvalidInputError, LatentSyncError
from ..weights import MODEL_VERSIONS

EXIT_CODES = "exit codes: 0 ok, 1 a policy test failed, 2 invalid input (rules, plan, media)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentsync-rules", description="Check, explain and test the rules.",
                                     epilog=EXIT_CODES)
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check every file of a rules folder", epilog=EXIT_CODES)
    validate.add_argument("dir", nargs="?", help="rules folder (default: the bundled rules/v1)")

    explain = commands.add_parser("explain", help="resolve a plan and say which rule set each value",
                                  epilog=EXIT_CODES)
    explain.add_argument("plan", metavar="PLAN", help="plan.yaml (one job or jobs: [...])")
    explain.add_argument("--rules", metavar="DIR", help="rules folder (default: the bundled rules/v1)")
    explain.add_argument("--assume-gpu", metavar="NAME", help="plan for a named GPU profile instead of probing")
    explain.add_argument("--assume-cpu-cores", metavar="N", type=int,
                         help="plan for a host with N usable CPU cores instead of this one's")
    explain.add_argument("--assume-model", metavar="VERSION", choices=list(MODEL_VERSIONS),
                         help="plan for a LatentSync model version (1.5, 1.6, small) instead of detecting "
                              "it from the weights")
    explain.add_argument("--duration", metavar="S", type=float, help="plan for a clip of S seconds")
    explain.add_argument("--goal", choices=["preview", "balanced", "quality", "auto"], help="override the plan's goal")
    explain.add_argument("--benchmark-cache", metavar="PATH", help="benchmark cache file")
    explain.add_argument("--json", action="store_true", help="print the run plans as JSON")

    test = commands.add_parser("test", help="run the policy test cases stored with the rules", epilog=EXIT_CODES)
    test.add_argument("dir", nargs="?", help="rules folder (default: the bundled rules/v1)")

    profiles = commands.add_parser("profiles", help="list the named GPU profiles", epilog=EXIT_CODES)
    profiles.add_argument("dir", nargs="?", help="rules folder (default: the bundled rules/v1)")
    return parser


def _folder(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None


def _validate(args: argparse.Namespace) -> int:
    from ..engine import load_ruleset
    from ..engine.evaluate import engine_name
    from ..engine.policy_tests import read_cases

    ruleset = load_ruleset(_folder(args.dir))
    cases = read_cases(ruleset.tests_dir, ruleset)
    for warning in ruleset.warnings:  # rules that can never fire, checks that could not cover everything
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {ruleset.path} version {ruleset.version}, {len(ruleset.rules)} rules, "
          f"{len(ruleset.gpu_profiles)} GPU profiles, {len(cases)} policy test cases, hash {ruleset.hash[:12]}")
    with ruleset.using() as policy:
        print(f"rules evaluated by: {engine_name(policy)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from ..engine import PlanError, gather_facts, load_plan_file, load_ruleset, resolve_plan

    ruleset = load_ruleset(_folder(args.rules))
    plan_path = Path(args.plan)
    jobs = load_plan_file(plan_path)
    results = []
    for index, job in enumerate(jobs):
        assume = dict(job.assume)
        if args.assume_gpu is not None:
            assume["gpu"] = args.assume_gpu
        if args.assume_cpu_cores is not None:
            assume["cpu_cores"] = args.assume_cpu_cores
        if args.assume_model is not None:
            assume["model"] = args.assume_model
        if args.duration is not None:
            if args.duration <= 0:
                raise InvalidInputError("--duration must be a positive number of seconds")
            assume["duration"] = args.duration
        job = dataclasses.replace(job, assume=assume, goal=args.goal or job.goal)
        facts = gather_facts(job, ruleset, benchmark_cache=_folder(args.benchmark_cache))
        try:
            results.append((job, resolve_plan(job, facts, ruleset)))
        except PlanError as error:  # an override checked against the rules: name the plan file and the job
            raise error.with_file(str(plan_path), ["jobs", index] if len(jobs) > 1 else []) from None
    if args.json:
        print(json.dumps([{"job": job.to_dict(), "run_plan": plan.to_dict()} for job, plan in results], indent=2))
        return 0
    for index, (job, plan) in enumerate(results):
        if len(results) > 1:
            print(f"{'' if index == 0 else chr(10)}job {index}: {job.name or Path(job.video).name}")
        print(plan.explain_table())
    engines = sorted({str(plan.facts.get("rules_engine", "?")) for _, plan in results})
    print(f"\nrules evaluated by: {', '.join(engines)}")
    return 0


def _test(args: argparse.Namespace) -> int:
    from ..engine import load_ruleset
    from ..engine.policy_tests import run_policy_tests

    ruleset = load_ruleset(_folder(args.dir))
    results = run_policy_tests(ruleset)
    if not results:
        print(f"no policy test cases in {ruleset.tests_dir}", file=sys.stderr)
        return 2
    failed = [result for result in results if not result.passed]
    for result in results:
        where = f"{result.file}:{result.line}" if result.line else result.file
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name}  ({where})")
        for failure in result.failures:
            print(f"      {failure}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _profiles(args: argparse.Namespace) -> int:
    from ..engine import load_ruleset

    ruleset = load_ruleset(_folder(args.dir))
    for name, profile in sorted(ruleset.gpu_profiles.items(), key=lambda item: item[1]["vram_total_gib"]):
        print(f"{name:16s} {profile['gpu_name']:36s} {profile['vram_total_gib']:7.2f} GiB  "
              f"sm {profile['compute_capability']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "WARNING")
    handlers = {"validate": _validate, "explain": _explain, "test": _test, "profiles": _profiles}
    try:
        return handlers[args.command](args)
    except LatentSyncError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
