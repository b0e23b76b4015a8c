"""Model version is a fact: told from the weights without loading the UNet (or pinned), and the
face resolution follows it by rule; a plan that runs a model at another size fails or warns."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from latentsync import weights as weights_mod
from latentsync.cli import rules as rules_cli
from latentsync.cli import run as run_cli
from latentsync.engine import gather_facts, load_plan_file, load_ruleset, resolve_plan
from latentsync.errors import CheckpointError
from latentsync.facts.model import weights_kind
from latentsync.jobs import JobSpec
from latentsync.paths import default_rules_dir

RULE_1_5 = "model.1.5-resolution"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def official_folder(folder: Path, *, checkpoint_extras: dict | None = None) -> Path:
    """The official layout with stand-in files: a tiny UNet checkpoint ({'state_dict': ...}, as
    upstream saves it), whisper/tiny.pt and vae/config.json. Nothing in it says 1.5 or 1.6."""
    (folder / "whisper").mkdir(parents=True)
    (folder / "vae").mkdir()
    state = {"conv_in.weight": torch.zeros(4, 13, 3, 3), "conv_in.bias": torch.zeros(4)}
    torch.save({"state_dict": state, "global_step": 1, **(checkpoint_extras or {})}, folder / "latentsync_unet.pt")
    torch.save({"dims": {}, "model_state_dict": {}}, folder / "whisper" / "tiny.pt")
    (folder / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}\n')
    weights_mod.check_weights_folder(folder)  # a real layout, as the runner checks it
    return folder


UPSTREAM_CONFIG_256 = """\
data:
  num_frames: 16
  resolution: 256
  mask_image_path: latentsync/utils/mask.png
model:
  cross_attention_dim: 384
  in_channels: 13
"""


def write_plan(folder: Path, text: str) -> Path:
    path = folder / "plan.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --- detection -----------------------------------------------------------------------------------

def test_an_upstream_config_beside_the_checkpoint_tells_1_5(tmp_path):
    folder = official_folder(tmp_path / "weights")
    (folder / "config.yaml").write_text(UPSTREAM_CONFIG_256)
    assert weights_mod.detect_model_version(str(folder)) == "1.5"
    assert weights_mod.weights_version(str(folder)) == ("1.5", 256)
    version, evidence = weights_mod.model_version_and_evidence(str(folder))
    assert evidence == str(folder / "config.yaml")


def test_version_txt_tells_and_comes_first(tmp_path):
    folder = official_folder(tmp_path / "weights")
    (folder / "config.yaml").write_text(UPSTREAM_CONFIG_256)
    (folder / "version.txt").write_text("1.6\n")
    assert weights_mod.detect_model_version(str(folder)) == "1.6"


def test_an_unknown_version_txt_is_an_error_naming_it(tmp_path):
    folder = official_folder(tmp_path / "weights")
    (folder / "version.txt").write_text("2.0\n")
    with pytest.raises(CheckpointError, match="unknown model version '2.0'") as caught:
        weights_mod.detect_model_version(str(folder))
    assert caught.value.path == str(folder / "version.txt")


def test_a_config_inside_the_checkpoint_tells(tmp_path):
    folder = official_folder(tmp_path / "weights", checkpoint_extras={"config": {"data": {"resolution": 512}}})
    assert weights_mod.model_version_and_evidence(str(folder)) == ("1.6", f"{folder / 'latentsync_unet.pt'} entries")


def test_a_folder_that_says_nothing_is_an_error_naming_the_checkpoint(tmp_path):
    folder = official_folder(tmp_path / "weights-v1.5-finetune")  # a loose "1.5" in a name is not trusted
    with pytest.raises(CheckpointError, match="cannot tell the model version") as caught:
        weights_mod.detect_model_version(str(folder))
    assert caught.value.path == str(folder / "latentsync_unet.pt")
    assert "version.txt" in caught.value.hint and 'assume: {model: "1.5"}' in caught.value.hint
    with pytest.raises(CheckpointError, match="latentsync_unet.pt"):
        weights_mod.weights_version(str(folder))  # no silent "assume 1.6" any more


def test_the_hub_repository_name_in_the_path_tells(tmp_path):
    cache = tmp_path / "hub" / "models--ByteDance--LatentSync-1.5" / "snapshots" / "0123abcd"
    assert weights_mod.detect_model_version(str(official_folder(cache))) == "1.5"
    assert weights_mod.detect_model_version(str(official_folder(tmp_path / "LatentSync-1.6"))) == "1.6"


def test_a_missing_folder_or_checkpoint_is_an_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="weights folder not found") as caught:
        weights_mod.detect_model_version(str(tmp_path / "nowhere"))
    assert caught.value.path == str(tmp_path / "nowhere") and "assume" in caught.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint file not found") as caught:
        weights_mod.detect_model_version(str(tmp_path / "empty"))
    assert caught.value.path == str(tmp_path / "empty" / "latentsync_unet.pt")


def test_random_names_carry_their_version_and_are_random():
    assert [weights_mod.detect_model_version(name) for name in ("random", "random-1.6", "random-1.5", "random-small")] \
        == ["1.6", "1.6", "1.5", "small"]
    assert [weights_kind(name) for name in ("random-1.5", "random", "random-small", "/w")] \
        == ["random", "random", "random-small", "checkpoint"]


# --- facts and plans -----------------------------------------------------------------------------

def test_gather_facts_detects_a_folder_as_1_5_and_the_plan_runs_256(tmp_path, ruleset):
    folder = official_folder(tmp_path / "weights")
    (folder / "config.yaml").write_text(UPSTREAM_CONFIG_256)
    job = JobSpec(video=tmp_path / "later.mp4", output=tmp_path / "o.mp4", weights=str(folder),
                  assume={"gpu": "rtx4090-24gb", "duration": 3})
    facts = gather_facts(job, ruleset)
    assert facts.model_version == "1.5" and facts.flat()["model_version"] == "1.5"
    plan = resolve_plan(job, facts, ruleset)
    assert plan.settings["resolution"] == 256 and plan.sources["resolution"].rule == RULE_1_5
    assert plan.facts["weights"] == "checkpoint" and plan.facts["model_version"] == "1.5"


def test_an_undetectable_folder_fails_planning_unless_pinned(tmp_path, ruleset):
    folder = official_folder(tmp_path / "weights")
    job = JobSpec(video=tmp_path / "later.mp4", output=tmp_path / "o.mp4", weights=str(folder),
                  assume={"gpu": "rtx4090-24gb", "duration": 3})
    with pytest.raises(CheckpointError, match="latentsync_unet.pt"):
        gather_facts(job, ruleset)
    job.assume["model"] = "1.5"
    facts = gather_facts(job, ruleset)
    assert facts.model_version == "1.5" and any("model version pinned to 1.5" in note for note in facts.notes)


def test_a_plan_file_keeps_random_names_as_names(tmp_path):
    plan = write_plan(tmp_path, """
        video: clip.mp4
        output: out.mp4
        weights: random-1.5
    """)
    [job] = load_plan_file(plan)
    assert job.weights == "random-1.5"


def test_dry_run_with_random_1_5_plans_256_citing_the_rule(tmp_path, capsys):
    plan = write_plan(tmp_path, """
        video: clip.mp4
        output: out.mp4
        weights: random-1.5
        assume: {gpu: rtx4090-24gb, duration: 3}
    """)
    assert run_cli.main([str(plan), "--dry-run", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    run_plan = entry["run_plan"]
    assert run_plan["settings"]["resolution"] == 256
    assert run_plan["sources"]["resolution"]["rule"] == RULE_1_5
    assert run_plan["sources"]["resolution"]["file"] == "v1/82_model.yaml"
    assert run_plan["facts"]["model_version"] == "1.5" and run_plan["facts"]["weights"] == "random"
    assert run_cli.main([str(plan), "--dry-run"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("resolution "))
    assert row.split()[:3] == ["resolution", "256", RULE_1_5] and "v1/82_model.yaml:" in row


def test_explain_assume_model_pins_the_fact(tmp_path, capsys):
    plan = write_plan(tmp_path, """
        video: clip.mp4
        output: out.mp4
        weights: checkpoints-elsewhere
    """)
    args = ["explain", str(plan), "--assume-gpu", "rtx4090-24gb", "--duration", "3"]
    assert rules_cli.main(args) == 2  # the folder is not here: its version cannot be told
    assert "weights folder not found" in capsys.readouterr().err
    assert rules_cli.main(args + ["--assume-model", "1.5", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job"]["assume"]["model"] == "1.5"
    assert entry["run_plan"]["facts"]["model_version"] == "1.5"
    assert entry["run_plan"]["settings"]["resolution"] == 256
    assert entry["run_plan"]["sources"]["resolution"]["rule"] == RULE_1_5
    assert rules_cli.main(args + ["--assume-model", "1.5"]) == 0
    out = capsys.readouterr().out
    assert RULE_1_5 in out and "note: model version pinned to 1.5" in out


def test_an_unquoted_model_pin_is_invalid_input(tmp_path, capsys):
    plan = write_plan(tmp_path, """
        video: clip.mp4
        output: out.mp4
        assume: {model: 1.5}
    """)
    assert rules_cli.main(["explain", str(plan)]) == 2
    assert "assume.model" in capsys.readouterr().err


# --- the resolution check ------------------------------------------------------------------------

def test_a_rule_forcing_512_on_a_1_5_model_is_exit_2_naming_setting_weights_and_rule(tmp_path, capsys):
    rules = tmp_path / "rules" / "v1"
    shutil.copytree(default_rules_dir(), rules)
    (rules / "95_force.yaml").write_text(textwrap.dedent("""
        schema_version: 1
        rules:
          - id: force.512
            description: forces 512 px whatever the model
            priority: 95
            when: {}
            set: {resolution: 512}
    """).lstrip("\n"))
    plan = write_plan(tmp_path, """
        video: clip.mp4
        output: out.mp4
        weights: random-1.5
        assume: {gpu: rtx4090-24gb, duration: 3}
    """)
    assert run_cli.main([str(plan), "--dry-run", "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert "v1/95_force.yaml:3: rule force.512: set.resolution: resolution 512 cannot run on weights random-1.5" in err
    assert "trained at 256 px" in err


def test_an_override_runs_at_another_size_with_a_note(tmp_path, ruleset):
    folder = official_folder(tmp_path / "weights")
    (folder / "config.yaml").write_text(UPSTREAM_CONFIG_256)
    job = JobSpec(video=tmp_path / "later.mp4", output=tmp_path / "o.mp4", weights=str(folder),
                  overrides={"resolution": 512}, assume={"gpu": "rtx4090-24gb", "duration": 3})
    plan = resolve_plan(job, gather_facts(job, ruleset), ruleset)
    assert plan.settings["resolution"] == 512 and plan.sources["resolution"].override
    [note] = [note for note in plan.notes if "resolution 512" in note]
    assert str(folder / "latentsync_unet.pt") in note and "trained at 256 px" in note
