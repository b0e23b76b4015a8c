"""Diffusion schedulers: DDIM as upstream, DPM-Solver++ as an option.

Schedulers keep state (DPM-Solver++'s model-output history, step index), so the
pipeline builds a fresh one per chunk with `new_scheduler`; building from a
config dict costs microseconds.
"""
from __future__ import annotations

import json
from pathlib import Path

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ..errors import InvalidInputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def ddim_config() -> dict:
    """Upstream's inference DDIM config (identical to ../shared/reference/scheduler_config.json)."""
    with open(CONFIG_DIR / "scheduler_ddim.json", encoding="utf-8") as fh:
        return json.load(fh)


def new_scheduler(name: str, steps: int, device=None):
    """A scheduler with `steps` timesteps set, state fresh."""
    config = ddim_config()
    if name == "ddim":
        scheduler = DDIMScheduler.from_config(config)
    elif name == "dpmpp":
        # Same noise schedule as training; DPM-Solver++(2M), the usual fast choice.
        scheduler = DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
        )
    else:
        raise InvalidInputError(f"unknown scheduler {name!r}", hint="use 'ddim' or 'dpmpp'")
    scheduler.set_timesteps(int(steps), device=device)
    return scheduler
