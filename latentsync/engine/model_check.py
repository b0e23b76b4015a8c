"""The plan's face resolution against the model version: a model runs at the size it was trained at.

The rules choose `resolution` from the `model_version` fact (rules/v1/82_model.yaml);
this check catches a plan where something else won: a rule that sets another size
is a fault in the rules (RulesError, exit code 2, naming the setting, the weights and
the rule), a user's override is the user's call (the plan carries a note, which the
job report lists among its warnings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..weights import NATIVE_RESOLUTION, UNET_FILE, is_random
from .errors import Problem, RulesError

SETTING = "resolution"


def check_model_version(plan: Any, job: Any) -> None:
    """Raise RulesError, or add a note to `plan.notes`, when the plan's resolution is not the
    native one of its model version. Nothing to check when the version is unknown (policy tests
    that pin no model)."""
    version = plan.facts.get("model_version")
    if version not in NATIVE_RESOLUTION or SETTING not in plan.settings:
        return
    native, resolution = NATIVE_RESOLUTION[version], plan.settings[SETTING]
    if resolution == native:
        return
    source = plan.sources[SETTING]
    kind = "the small test architecture" if version == "small" else f"a LatentSync {version} model"
    model = f"{describe_weights(job)}: {kind}, trained at {native} px"
    if source.override:
        plan.notes.append(f"{SETTING} {resolution} is the job's override, but {model}: it runs, "
                          "at a size the model did not learn")
        return
    raise RulesError([Problem(source.file, f"{SETTING} {resolution} cannot run on {model}",
                              line=source.line, rule=source.rule, field=f"set.{SETTING}")],
                     hint=f"the rule that sets {SETTING} must follow the model_version fact "
                          f"(rules/v1/82_model.yaml), or set `overrides: {{{SETTING}: {resolution}}}` "
                          "to run it at that size on purpose")


def describe_weights(job: Any) -> str:
    """The weights as a person would look for them: a random name, or the checkpoint file
    (and whether its version was pinned rather than read from the folder)."""
    weights = str(job.weights)
    named = f"weights {weights}" if is_random(weights) else f"checkpoint {Path(weights) / UNET_FILE}"
    pinned = (job.assume or {}).get("model") is not None
    return named + (" (model version pinned by assume.model)" if pinned else "")
