"""`evaluate: [sync]` for jobs: which scorer a job needs (checked before any work), one scorer
per process, and scoring a finished job's input and output into its report.

`latentsync.runner` calls `check_evaluations` before a job runs and `evaluate_job` after its
output is written; everything about scoring itself lives in `latentsync.quality.sync`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..jobs import JobReport, JobSpec
from ..settings import RunSettings

EVALUATIONS = ("sync",)
RANDOM_SCORER_STRIDE = 8  # random weights: the numbers mean nothing, so score every 8th window only
_SCORERS: dict[tuple[str, str], Any] = {}  # one SyncScorer per (weights, device) per process, like the models
_LSE_SCORERS: dict[tuple[str, str], Any] = {}  # one LseScorer per (weights folder, device), when it holds syncnet_v2.model


def check_evaluations(spec: JobSpec) -> Optional[str]:
    """What the sync scorer loads for this job (`random`, `random-small` or the weights folder), or
    None when the job asks for no evaluation. Raises InvalidInputError (exit 2) for an unknown
    evaluation and CheckpointError (exit 2) naming `stable_syncnet.pt` when the folder lacks it."""
    from ..errors import CheckpointError, InvalidInputError
    from ..weights import RANDOM_WEIGHTS, SYNCNET_FILE

    asked = list(spec.evaluate or [])
    unknown = [name for name in asked if name not in EVALUATIONS]
    if unknown:
        raise InvalidInputError(f"unknown evaluation {unknown[0]!r}", path="evaluate",
                                hint=f"choose from: {', '.join(EVALUATIONS)}")
    if "sync" not in asked:
        return None
    weights = str(spec.weights)
    if weights in RANDOM_WEIGHTS:
        return "random-small" if weights == "random-small" else "random"
    checkpoint = Path(weights) / SYNCNET_FILE
    if not checkpoint.is_file():
        raise CheckpointError(
            f"`evaluate: [sync]` needs {SYNCNET_FILE} in the weights folder",
            path=str(checkpoint),
            hint="run `latentsync-run fetch-weights DIR` (it fetches the SyncNet too), or drop `evaluate` from the job",
        )
    return weights


def sync_scorer(weights: str, device: str):
    """The process's SyncScorer for `weights` on `device` (loaded once; a resident process keeps it)."""
    key = (weights, device)
    if key not in _SCORERS:
        from . import SyncScorer

        _SCORERS[key] = SyncScorer.from_weights(weights, device=device)
    return _SCORERS[key]


def lse_scorer(weights: str, device: str):
    """The process's LseScorer for a weights folder holding `syncnet_v2.model` (top level or
    `auxiliary/`), or None (random weights, or no such file: LSE is optional)."""
    from .lse import lse_scorer_for

    key = (weights, device)
    if key not in _LSE_SCORERS:
        _LSE_SCORERS[key] = lse_scorer_for(weights, device=device)
    return _LSE_SCORERS[key]


def evaluate_job(spec: JobSpec, report: JobReport, scorer_weights: str, settings: RunSettings) -> None:
    """Score the input and the written output against the audio; the result goes into
    `report.evaluation["sync"]` and `report.timings["evaluate_sync"]` (outside `seconds_total`,
    which times the run). When the weights folder holds `syncnet_v2.model`, each side also carries
    LSE-C / LSE-D (`lse_c`, `lse_d`, `lse_av_offset`). A clip the scorer cannot score (no face in any 16-frame window) keeps its
    output: the evaluation is null and a warning says why."""
    from ..errors import LatentSyncError
    from ..pipeline.levers import resolve_device
    from .report import evaluate_sync

    started = time.perf_counter()
    device = str(resolve_device(settings)[0])
    stride = RANDOM_SCORER_STRIDE if scorer_weights in ("random", "random-small") else 1
    try:
        evaluation = evaluate_sync(sync_scorer(scorer_weights, device), output_video=spec.output,
                                   audio=spec.audio, input_video=spec.video, stride=stride,
                                   lse_scorer=lse_scorer(scorer_weights, device))
        entry: Optional[dict[str, Any]] = evaluation.to_report()
        report.warnings.extend(evaluation.lse_warnings)
    except LatentSyncError as error:
        entry = None
        report.warnings.append(f"sync evaluation failed: {error}")
        logger.warning("sync evaluation of {} failed: {}", spec.output, error)
    report.evaluation = {**(report.evaluation or {}), "sync": entry}
    report.timings["evaluate_sync"] = time.perf_counter() - started
