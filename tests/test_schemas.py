"""Every schema is a valid Draft 2020-12 schema; every shipped file validates; the schemas match the code."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from latentsync.contracts import SCHEMA_NAMES, load_schema, schema_errors, schema_path
from latentsync.facts.model import FACTS
from latentsync.jobs import JobReport, JobSpec
from latentsync.paths import REPO_ROOT, examples_dir, rules_dir, schemas_dir


def _strict_objects(node, where="#"):
    """Every object schema with properties says additionalProperties: false (or names its keys)."""
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object":
            assert node.get("additionalProperties") is False or "propertyNames" in node, \
                f"{where}: additionalProperties must be false"
        for key, value in node.items():
            _strict_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _strict_objects(value, f"{where}/{index}")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_and_strict(name):
    schema = json.loads(schema_path(name).read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    _strict_objects(schema)


def test_every_schema_file_is_known():
    assert sorted(p.name for p in schemas_dir().glob("*.schema.json")) == sorted(f"{n}.schema.json" for n in SCHEMA_NAMES)


def _yaml_files(folder: Path):
    return sorted(p for p in folder.rglob("*.yaml") if not any(part.startswith(".") for part in p.parts))


def test_every_rules_file_validates():
    files = _yaml_files(rules_dir())
    assert files
    for path in files:
        data = yaml.safe_load(path.read_text())
        data_files = {"gpu_profiles.yaml": "gpu_profiles", "time_model.yaml": "time_model"}
        name = data_files.get(path.name) or ("rule_tests" if path.parent.name == "tests" else "rules")
        assert schema_errors(data, name) == [], path


def test_example_plans_validate():
    plans = [p for p in _yaml_files(examples_dir()) if p.name.endswith("plan.yaml")]
    assert plans
    for path in plans:
        assert schema_errors(yaml.safe_load(path.read_text()), "plan") == [], path


def test_rule_schema_names_every_fact_the_code_knows():
    names = load_schema("rules")["$defs"]["condition"]["propertyNames"]["enum"]
    assert sorted(set(names) - {"any", "all"}) == sorted(FACTS)
    derived = load_schema("rules")["$defs"]["derived_values"]["properties"]
    assert sorted(derived) == sorted(name for name, spec in FACTS.items() if spec.derived)


def test_settings_schema_matches_the_settings_contract():
    documented = re.findall(r"^\| `(\w+)` \|", (REPO_ROOT / "docs" / "settings.md").read_text(), flags=re.M)
    run_plan = load_schema("run_plan")
    assert list(run_plan["$defs"]["setting_values"]["properties"]) == documented
    assert run_plan["$defs"]["settings"]["required"] == documented
    assert run_plan["$defs"]["setting_name"]["enum"] == documented


def test_job_report_schema_matches_job_report():
    schema = load_schema("job_report")
    fields = [field.name for field in dataclasses.fields(JobReport)]
    optional = {"evaluation"}  # only jobs that asked for an evaluation carry one (JobReport.to_dict omits None)
    assert sorted(schema["properties"]) == sorted(fields)
    assert sorted(schema["required"]) == sorted(set(fields) - optional)
    assert sorted(schema["properties"]["job"]["properties"]) == sorted(f.name for f in dataclasses.fields(JobSpec))
    spec = JobSpec(video=Path("a.mp4"), output=Path("b.mp4"))
    failed = JobReport(job=spec.to_dict(), status="failed", output=None, run_plan={},
                       error={"type": "MediaError", "message": "bad", "path": "a.mp4", "hint": None})
    assert schema_errors(failed.to_dict(), "job_report") == []
    from latentsync.engine import Problem, RulesError
    rules_failure = dict(failed.to_dict(), error=RulesError([Problem("v1/x.yaml", "bad", line=3, rule="r")]).to_dict())
    assert schema_errors(rules_failure, "job_report") == []
    assert schema_errors(dict(failed.to_dict(), status="maybe"), "job_report")
    assert schema_errors(dict(failed.to_dict(), extra=1), "job_report")


def test_benchmark_cache_schema_rejects_unknown_modes():
    entry = {"key": {"gpu_uuid": None, "gpu_name": "X", "vram_total_gib": 8.0, "driver": None, "torch": "2",
                     "package": "0.1.0"}, "measured_at": "2026-11-26T10:00:00", "max_frames_per_batch": 16,
             "peak_vram_gib": 7.0, "modes": {"normal": {"seconds_per_video_second": 9.0}}}
    assert schema_errors({"schema_version": 1, "entries": [entry]}, "benchmark_cache") == []
    bad = dict(entry, modes={"warp": {"seconds_per_video_second": 1.0}})
    assert any("unknown name 'warp'" in e for e in schema_errors({"schema_version": 1, "entries": [bad]},
                                                                  "benchmark_cache"))
