"""The host's CPU cores as a fact, and the rules that turn them into `cpu_workers`."""
from __future__ import annotations

from pathlib import Path

import pytest

from latentsync.engine import load_ruleset, resolve_plan
from latentsync.errors import InvalidInputError
from latentsync.facts import Facts, FACTS, gather_facts, usable_cpu_cores
from latentsync.facts import host as host_module
from latentsync.jobs import JobSpec


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def job(tmp_path: Path, **assume) -> JobSpec:
    return JobSpec(video=tmp_path / "later.mp4", output=tmp_path / "o.mp4", weights="checkpoint", goal="preview",
                   assume={"duration": 10, "model": "1.6", **assume})  # a checkpoint not here: its version pinned


def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(host_module.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(host_module.os, "cpu_count", lambda: 64)
    assert usable_cpu_cores() == 3


def test_usable_cores_without_affinity_use_cpu_count(monkeypatch):
    monkeypatch.delattr(host_module.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(host_module.os, "cpu_count", lambda: 12)
    assert usable_cpu_cores() == 12
    monkeypatch.setattr(host_module.os, "cpu_count", lambda: None)
    assert usable_cpu_cores() == 1


def test_cpu_cores_is_a_fact_the_rules_see(tmp_path, ruleset, monkeypatch):
    assert FACTS["cpu_cores"].type == "integer"
    monkeypatch.setattr(host_module, "usable_cpu_cores", lambda: 8)
    facts = gather_facts(job(tmp_path, gpu="rtx4090-24gb"), ruleset)
    assert facts.host.cpu_cores == 8 and facts.host.source == "probe"
    assert facts.flat()["cpu_cores"] == 8
    assert Facts.from_dict(facts.to_dict()) == facts
    plan = resolve_plan(job(tmp_path, gpu="rtx4090-24gb"), facts, ruleset)
    assert plan.settings["cpu_workers"] == 4 and plan.sources["cpu_workers"].rule == "cpu.workers-4"
    assert plan.sources["cpu_workers"].file.endswith("72_cpu.yaml")
    assert "cpu_workers" in plan.explain_table()


@pytest.mark.parametrize("cores, workers, rule", [(1, 1, "defaults.upstream"), (2, 1, "defaults.upstream"),
                                                   (4, 2, "cpu.workers-2"), (12, 4, "cpu.workers-4"),
                                                   (16, 4, "cpu.workers-4"), (128, 4, "cpu.workers-4")])
def test_pinned_cores_pick_cpu_workers(tmp_path, ruleset, cores, workers, rule):
    spec = job(tmp_path, gpu="h100-80gb", cpu_cores=cores)
    facts = gather_facts(spec, ruleset)
    assert facts.host.source == "assumed" and any("CPU cores pinned" in note for note in facts.notes)
    plan = resolve_plan(spec, facts, ruleset)
    assert (plan.settings["cpu_workers"], plan.sources["cpu_workers"].rule) == (workers, rule)


def test_cpu_device_keeps_one_worker(tmp_path, ruleset):
    spec = job(tmp_path, gpu="cpu", cpu_cores=32)
    assert resolve_plan(spec, gather_facts(spec, ruleset), ruleset).settings["cpu_workers"] == 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_pinned_cores_are_a_clear_error(tmp_path, ruleset, bad):
    with pytest.raises(InvalidInputError, match="assume.cpu_cores"):
        gather_facts(job(tmp_path, gpu="h100-80gb", cpu_cores=bad), ruleset)


def test_plan_schema_accepts_pinned_cores_and_rejects_zero():
    from latentsync.contracts import schema_errors

    base = {"video": "a.mp4", "output": "b.mp4"}
    assert schema_errors({**base, "assume": {"cpu_cores": 16}}, "plan") == []
    assert schema_errors({**base, "assume": {"cpu_cores": 0}}, "plan") != []
