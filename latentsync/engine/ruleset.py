"""Load a rules folder: validate every file (collecting all problems), compile, hold, reload.

A rules folder (`rules/v1/`) holds rule files (`*.yaml`), `gpu_profiles.yaml` (named
cards for "what would run on that card?") and `tests/*.yaml` (policy test cases,
checked by `latentsync-rules test`, not needed to run).
"""
from __future__ import annotations

import hashlib
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from loguru import logger

from ..contracts import format_field, iter_schema_problems, load_schema
from ..facts.model import DERIVED_FACTS
from ..paths import default_rules_dir
from .backends import ConditionTooComplex, DurableMatcher, OracleMatcher, TooLargeForDurable
from .errors import Problem, RulesError
from .checks import derive_cycles, find_clashes, find_unsatisfiable
from .language import ALWAYS, Condition, parse_condition
from .limits import RULE_CHECK_BUDGET, RULES_LIMITS
from .yamlio import YamlDocument, load_yaml

SUPPORTED_SCHEMA_VERSION = 1
PROFILES_FILE = "gpu_profiles.yaml"
TIME_MODEL_FILE = "time_model.yaml"  # reference rates and warm-ups (facts/timing.py)
TESTS_FOLDER = "tests"
STAGES = ("derive", "settings")


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    priority: int
    stage: str  # "derive" | "settings"
    when: dict
    condition: Condition
    set: dict
    file: str  # label, e.g. "v1/40_goals.yaml"
    line: Optional[int]
    order: tuple[int, int]  # (file index, rule index): the tie-break after priority
    fallback: Optional[int] = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class _Policy:
    """Everything read from one folder; swapped in whole by a reload."""

    path: Path
    version: str
    hash: str
    files: list[Path]
    rules: list[Rule]
    gpu_profiles: dict[str, dict]
    profiles_file: Optional[Path]
    derived_values: dict[str, set[str]]
    matcher: Any  # DurableMatcher, or OracleMatcher when durable-rules cannot take these rules
    oracle: OracleMatcher
    by_id: dict[str, Rule] = field(default_factory=dict)
    engine: str = "durable-rules"  # which evaluator `backend="durable"` uses, as run plans say it
    warnings: list[Problem] = field(default_factory=list)  # rules that can never fire, checks not completed
    time_model: dict[str, dict] = field(default_factory=dict)  # goal -> reference rates and warm-ups


def resolve_rules_folder(path: Optional[Path]) -> Path:
    """`path` itself, or, for a folder of versions (`rules/`), its newest `vN` subfolder."""
    folder = Path(path) if path is not None else default_rules_dir()
    if folder.is_dir() and not any(folder.glob("*.yaml")):
        versions = [(int(m.group(1)), child) for child in folder.iterdir()
                    if child.is_dir() and (m := re.fullmatch(r"v(\d+)", child.name))]
        if versions:
            return max(versions)[1]
    return folder


def _label(folder: Path, file: Path) -> str:
    return f"{folder.name}/{file.relative_to(folder).as_posix()}"


def _schema_problems(document: YamlDocument, schema: str, rule_of: Any = None) -> list[Problem]:
    problems = []
    for found in iter_schema_problems(document.data, schema):
        rule = rule_of(found.parts) if rule_of else None
        problems.append(Problem(document.label, found.message, line=document.line_of(found.parts),
                                rule=rule, field=found.field or None))
    return problems


def _version_problem(document: YamlDocument) -> Optional[Problem]:
    version = document.data.get("schema_version") if isinstance(document.data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SUPPORTED_SCHEMA_VERSION:
        return Problem(document.label,
                       f"schema_version {version} is newer than this code supports ({SUPPORTED_SCHEMA_VERSION}); "
                       "update latentsync-runner or use rules written for this version",
                       line=document.line_of(["schema_version"]), field="schema_version")
    return None


def _read_profiles(folder: Path, problems: list[Problem]) -> tuple[dict[str, dict], Optional[Path], bytes]:
    path = folder / PROFILES_FILE
    if not path.is_file():
        return {}, None, b""
    if path.stat().st_size > RULES_LIMITS.max_bytes:
        problems.append(Problem(_label(folder, path), f"the file is {path.stat().st_size:,} bytes; the limit is "
                                f"{RULES_LIMITS.max_bytes:,} bytes (see docs/limits.md)"))
        return {}, path, b""
    document, found = load_yaml(path, _label(folder, path))
    problems += found
    if document is None:
        return {}, path, path.read_bytes()
    version_problem = _version_problem(document)
    if version_problem:
        problems.append(version_problem)
        return {}, path, path.read_bytes()
    schema_found = _schema_problems(document, "gpu_profiles")
    problems += schema_found
    profiles = document.data.get("profiles", {}) if not schema_found else {}
    return dict(profiles), path, path.read_bytes()


def _read_data_file(folder: Path, name: str, schema: str, key: str,
                    problems: list[Problem]) -> tuple[dict, bytes]:
    """An optional schema-checked data file of the rules folder: (its `key` section, its bytes)."""
    path = folder / name
    if not path.is_file():
        return {}, b""
    if path.stat().st_size > RULES_LIMITS.max_bytes:
        problems.append(Problem(_label(folder, path), f"the file is {path.stat().st_size:,} bytes; the limit is "
                                f"{RULES_LIMITS.max_bytes:,} bytes (see docs/limits.md)"))
        return {}, b""
    document, found = load_yaml(path, _label(folder, path))
    problems += found
    if document is None:
        return {}, path.read_bytes()
    version_problem = _version_problem(document)
    if version_problem:
        problems.append(version_problem)
        return {}, path.read_bytes()
    schema_found = _schema_problems(document, schema)
    problems += schema_found
    return (dict(document.data.get(key, {})) if not schema_found else {}), path.read_bytes()


def _read_rule_file(folder: Path, path: Path, file_index: int, problems: list[Problem]) -> list[tuple[Rule, dict]]:
    """Rules of one file, conditions not yet parsed (derived values are known only after all files)."""
    document, found = load_yaml(path, _label(folder, path))
    problems += found
    if document is None:
        return []
    if not isinstance(document.data, dict):
        problems.append(Problem(document.label, "expected a mapping with schema_version and rules", line=1))
        return []
    version_problem = _version_problem(document)
    if version_problem:
        problems.append(version_problem)
        return []
    raw_rules = document.data.get("rules") if isinstance(document.data.get("rules"), list) else []

    def rule_of(parts: tuple) -> Optional[str]:
        if len(parts) >= 2 and parts[0] == "rules" and isinstance(parts[1], int) and parts[1] < len(raw_rules):
            item = raw_rules[parts[1]]
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                return item["id"]
        return None

    schema_found = _schema_problems(document, "rules", rule_of)
    problems += schema_found
    bad_rules = {found.field.split(".")[0] for found in schema_found if found.field and found.field.startswith("rules[")}
    if any(found.field in (None, "rules", "schema_version", "stage") for found in schema_found):
        return []
    stage = document.data.get("stage", "settings")
    loaded = []
    for index, raw in enumerate(raw_rules):
        if f"rules[{index}]" in bad_rules:
            continue
        rule = Rule(id=raw["id"], description=raw["description"], priority=raw["priority"], stage=stage,
                    when=raw["when"], condition=ALWAYS, set=dict(raw["set"]), file=document.label,
                    line=document.line_of(["rules", index]), order=(file_index, index), fallback=raw.get("fallback"))
        loaded.append((rule, {"document": document, "index": index}))
    return loaded


def _settings_names() -> list[str]:
    return list(load_schema("run_plan")["$defs"]["setting_values"]["properties"])


def read_policy(path: Optional[Path] = None) -> _Policy:
    """Read and check a rules folder; raises RulesError listing every problem found."""
    folder = resolve_rules_folder(path)
    problems: list[Problem] = []
    if not folder.is_dir():
        raise RulesError([Problem(str(folder), "rules folder not found")])
    rule_paths = sorted(p for p in folder.iterdir()
                        if p.suffix in (".yaml", ".yml") and p.is_file() and p.name not in (PROFILES_FILE, TIME_MODEL_FILE)
                        and not p.name.startswith("."))
    if not rule_paths:
        raise RulesError([Problem(str(folder), "no rule files (*.yaml) in the rules folder")])

    digest = hashlib.sha256()
    loaded: list[tuple[Rule, dict]] = []
    for file_index, rule_path in enumerate(rule_paths):
        if rule_path.stat().st_size > RULES_LIMITS.max_bytes:  # never read a huge file whole, not even to hash it
            problems.append(Problem(_label(folder, rule_path), f"the rule file is {rule_path.stat().st_size:,} bytes; "
                                    f"the limit is {RULES_LIMITS.max_bytes:,} bytes (see docs/limits.md)"))
            continue
        digest.update(rule_path.name.encode() + b"\0" + rule_path.read_bytes() + b"\0")
        loaded += _read_rule_file(folder, rule_path, file_index, problems)
    profiles, profiles_file, profile_bytes = _read_profiles(folder, problems)
    if profiles_file is not None:
        digest.update(PROFILES_FILE.encode() + b"\0" + profile_bytes + b"\0")
    time_model, time_model_bytes = _read_data_file(folder, TIME_MODEL_FILE, "time_model", "goals", problems)
    if time_model_bytes:
        digest.update(TIME_MODEL_FILE.encode() + b"\0" + time_model_bytes + b"\0")

    # Ids are unique across the folder: an explanation names a rule by id alone.
    first_seen: dict[str, Rule] = {}
    for rule, _ in loaded:
        if rule.id in first_seen:
            other = first_seen[rule.id]
            problems.append(Problem(rule.file, f"duplicate rule id {rule.id!r} (also at {other.where})",
                                    line=rule.line, rule=rule.id, field="id"))
        else:
            first_seen[rule.id] = rule

    derived_values: dict[str, set[str]] = {name: set() for name in DERIVED_FACTS}
    for rule, _ in loaded:
        if rule.stage == "derive":
            for key, value in rule.set.items():
                derived_values[key].add(value)

    rules: list[Rule] = []
    for rule, context in loaded:
        document: YamlDocument = context["document"]
        base = ("rules", context["index"], "when")
        condition, found = parse_condition(rule.when, base, derived_values)
        for parts, message in found:
            problems.append(Problem(rule.file, message, line=document.line_of(parts), rule=rule.id,
                                    field=format_field(parts)))
        if rule.stage == "derive" and rule.fallback is not None:
            problems.append(Problem(rule.file, "fallback steps belong in settings files", line=rule.line,
                                    rule=rule.id, field="fallback"))
        rules.append(Rule(**{**rule.__dict__, "condition": condition}))

    # Every setting needs an unconditional value, so any fact set resolves a complete plan.
    unconditional = {key for rule in rules if rule.stage == "settings" and rule.fallback is None and not rule.when
                     for key in rule.set}
    missing = [name for name in _settings_names() if name not in unconditional]
    if missing and not problems:
        problems.append(Problem(str(folder), "no unconditional rule (`when: {}`) sets " + ", ".join(missing) +
                                "; every setting needs a default", field="set"))
    if not problems:
        problems += derive_cycles(rules)
    warnings: list[Problem] = []
    if not problems:
        budget = [RULE_CHECK_BUDGET]  # fact combinations both checks may try, shared
        problems += find_clashes(rules, derived_values, budget=budget, warnings=warnings)
        warnings += find_unsatisfiable(rules, derived_values, budget=budget)
    if problems:
        raise RulesError(problems, hint="fix the rule files; the previous rules (if any) stay in force")

    stages = {stage: [(rule.id, rule.condition) for rule in rules if rule.stage == stage] for stage in STAGES}
    engine = "durable-rules"
    try:
        matcher = DurableMatcher(stages)
        engine = f"durable-rules ({matcher.ruleset_count} rulesets)"
    except ImportError as error:
        # durable-rules is the optional `durable` extra (source only: it needs a C compiler).
        # Without it the rules resolve with the built-in evaluator, which the property test
        # holds equal: the normal case of a base install, so not a warning.
        logger.info("durable-rules is not installed ({}); evaluating the rules with the built-in evaluator "
                    "(pip install \"latentsync-runner[durable]\" to use it)", error)
        matcher = OracleMatcher(stages)
        engine = "built-in evaluator (durable-rules is not importable)"
    except TooLargeForDurable as error:
        logger.warning("rules {}: {}; evaluating them with the built-in evaluator", folder, error.reason)
        matcher = OracleMatcher(stages)
        engine = f"built-in evaluator ({error.reason})"
    except ConditionTooComplex as error:
        by_id = {rule.id: rule for rule in rules}
        raise RulesError([Problem(by_id[name].file, "condition too complex for the durable-rules engine "
                                  f"({error.reason}); split the rule or flatten its any/all nesting",
                                  line=by_id[name].line, rule=name, field="when")
                          for name in error.rule_names if name in by_id]
                         or [Problem(str(folder), str(error))]) from error
    policy = _Policy(path=folder, version=folder.name, hash=digest.hexdigest(),
                     files=rule_paths + ([profiles_file] if profiles_file else [])
                     + ([folder / TIME_MODEL_FILE] if time_model_bytes else []), rules=rules,
                     gpu_profiles=profiles, profiles_file=profiles_file, derived_values=derived_values,
                     matcher=matcher, oracle=OracleMatcher(stages), engine=engine, warnings=warnings,
                     time_model=time_model)
    policy.by_id = {rule.id: rule for rule in rules}
    for warning in warnings:
        logger.warning("rules {}: {}", folder, warning)
    return policy


class RuleSet:
    """A loaded, validated, compiled rules folder. Thread-safe; `reload()` swaps in place.

    Attributes: `path`, `version` (folder name, e.g. "v1"), `hash` (sha256 over the
    rule files and profiles), `files`, `rules`, `gpu_profiles`, `profiles_file`.
    """

    def __init__(self, path: Optional[Path] = None):
        self._lock = threading.RLock()
        self._requested = path
        self._policy = read_policy(path)
        logger.debug("rules {} loaded: {} rules, hash {}", self._policy.path, len(self._policy.rules),
                     self._policy.hash[:12])

    def snapshot(self) -> _Policy:
        with self._lock:
            return self._policy

    @contextmanager
    def using(self) -> Iterator[_Policy]:
        """Hold the rules for one evaluation: a reload waits, so a plan never mixes two rule
        sets and never meets a ruleset deleted under it."""
        with self._lock:
            yield self._policy

    @property
    def path(self) -> Path:
        return self.snapshot().path

    @property
    def version(self) -> str:
        return self.snapshot().version

    @property
    def hash(self) -> str:
        return self.snapshot().hash

    @property
    def files(self) -> list[Path]:
        return list(self.snapshot().files)

    @property
    def rules(self) -> list[Rule]:
        return list(self.snapshot().rules)

    @property
    def gpu_profiles(self) -> dict[str, dict]:
        return dict(self.snapshot().gpu_profiles)

    @property
    def time_model(self) -> dict[str, dict]:
        """goal -> reference rates and warm-ups (time_model.yaml; empty without one)."""
        return dict(self.snapshot().time_model)

    @property
    def profiles_file(self) -> Optional[Path]:
        return self.snapshot().profiles_file

    @property
    def tests_dir(self) -> Path:
        return self.snapshot().path / TESTS_FOLDER

    @property
    def engine(self) -> str:
        """Which evaluator runs the rules: durable-rules (with its ruleset count) or the built-in one, and why."""
        return self.snapshot().engine

    @property
    def warnings(self) -> list[Problem]:
        """Rules that can never fire, and checks that could not cover every case."""
        return list(self.snapshot().warnings)

    def rule(self, rule_id: str) -> Rule:
        return self.snapshot().by_id[rule_id]

    def reload(self) -> "RuleSet":
        """Re-read the folder. On success the new rules replace the old (whose durable-rules
        rulesets are deleted); on failure RulesError is raised and the old rules stay."""
        fresh = read_policy(self._requested)
        with self._lock:
            old, self._policy = self._policy, fresh
        old.matcher.close()
        logger.info("rules reloaded: {} hash {}", fresh.version, fresh.hash[:12])
        return self

    def close(self) -> None:
        """Free the compiled rulesets now (they are also freed when the RuleSet is garbage-collected)."""
        self.snapshot().matcher.close()

    def __repr__(self) -> str:
        policy = self.snapshot()
        return f"RuleSet({str(policy.path)!r}, version={policy.version!r}, hash={policy.hash[:12]!r}, rules={len(policy.rules)})"


def load_ruleset(path: Optional[Path] = None) -> RuleSet:
    """Load, validate (all files, all problems) and compile a rules folder.

    `path`: a version folder (`rules/v1`) or a folder of versions (`rules/`, newest
    taken); default `latentsync.paths.default_rules_dir()`. Raises RulesError (exit 2).
    """
    return RuleSet(path)
