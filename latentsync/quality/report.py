"""Sync scores as a job report and a batch table carry them (`evaluate: sync`).

    evaluation = evaluate_sync(scorer, output_video="out.mp4", audio="speech.wav", input_video="in.mp4")
    report_entry = evaluation.to_report()          # compact: no per-window lists
    print(sync_table([("clip1", evaluation), ("clip2", None)]))

`input` scores the source video against the driving audio (what the lips did before), `output`
the result against the same audio; `drop` is input minus output for the sync probability and
the confidence (negative: the output is better synced). `sync_drop(reference, candidate)` is the
quantity a goal's speed-up is judged by: the reference (the `quality` goal's output) minus the
candidate (a faster goal's output), in confidence by default.

With an `LseScorer` (the weights folder holds `syncnet_v2.model`), each side's summary also
carries `lse_c`, `lse_d` and `lse_av_offset` (the original SyncNet's LSE-C / LSE-D,
`latentsync.quality.lse`); a side LSE cannot score (no face track of 51 frames) lacks them and
`lse_warnings` says why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from loguru import logger

from ..errors import LatentSyncError
from .lse import LseScore, LseScorer
from .sync import SyncScore, SyncScorer

SUMMARY_FIELDS = (
    "sync_probability", "best_offset", "min_distance", "confidence", "windows", "skipped_windows",
    "frames_without_face", "fps", "seconds",
)
METRICS = ("confidence", "sync_probability")


def summary(score: SyncScore) -> dict[str, Any]:
    """The numbers a report keeps of one score (no per-window or per-offset lists)."""
    return {name: getattr(score, name) for name in SUMMARY_FIELDS}


def sync_drop(reference: SyncScore, candidate: SyncScore, metric: str = "confidence") -> float:
    """How much sync `candidate` lost against `reference`: reference - candidate in `metric`
    (confidence or sync_probability); positive means worse."""
    if metric not in METRICS:
        raise ValueError(f"unknown sync metric {metric!r}; choose one of {', '.join(METRICS)}")
    return float(getattr(reference, metric) - getattr(candidate, metric))


@dataclass(frozen=True)
class SyncEvaluation:
    output: SyncScore
    input: Optional[SyncScore]
    seconds: float
    lse_output: Optional[LseScore] = None
    lse_input: Optional[LseScore] = None
    lse_warnings: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        return self.output.model

    @property
    def random_weights(self) -> bool:
        return self.output.random_weights

    def drop(self) -> Optional[dict[str, float]]:
        if self.input is None:
            return None
        return {metric: sync_drop(self.input, self.output, metric) for metric in METRICS}

    def to_report(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "random_weights": self.random_weights,
            "input": _with_lse(summary(self.input), self.lse_input) if self.input is not None else None,
            "output": _with_lse(summary(self.output), self.lse_output),
            "drop": self.drop(),
            "seconds": self.seconds,
        }


def _with_lse(entry: dict[str, Any], lse: Optional[LseScore]) -> dict[str, Any]:
    return {**entry, **lse.summary()} if lse is not None else entry


def evaluate_sync(scorer: SyncScorer, *, output_video: str | Path, audio: str | Path | None = None,
                  input_video: str | Path | None = None, stride: int = 1,
                  lse_scorer: Optional[LseScorer] = None) -> SyncEvaluation:
    """Score the output (and the input, when given) against `audio` (default: each video's own track);
    with `lse_scorer`, LSE-C / LSE-D too (a video LSE cannot score gets a warning, not an error)."""
    started = time.perf_counter()
    before = scorer.score_video(input_video, audio, stride=stride) if input_video is not None else None
    after = scorer.score_video(output_video, audio, stride=stride)
    lse: dict[str, Optional[LseScore]] = {"input": None, "output": None}
    warnings: list[str] = []
    if lse_scorer is not None:
        for side, video in (("input", input_video), ("output", output_video)):
            if video is None:
                continue
            try:
                lse[side] = lse_scorer.score_video(video, audio)
            except LatentSyncError as error:
                warnings.append(f"LSE of the {side} failed: {error}")
                logger.warning("LSE of {} failed: {}", video, error)
    return SyncEvaluation(output=after, input=before, seconds=time.perf_counter() - started,
                          lse_output=lse["output"], lse_input=lse["input"], lse_warnings=tuple(warnings))


def report_sync_rows(rows: Sequence[tuple[str, Optional[Mapping[str, Any]]]]) -> list[tuple[str, Optional[Mapping[str, Any]]]]:
    """(name, job report dict or None) -> (name, the report's `evaluation["sync"]` or None), for `sync_table`."""
    return [(name, ((report or {}).get("evaluation") or {}).get("sync")) for name, report in rows]


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def sync_table(rows: Sequence[tuple[str, "SyncEvaluation | Mapping[str, Any] | None"]]) -> str:
    """A plain-text table: one line per job. A row's evaluation is a `SyncEvaluation`, or its
    `to_report()` form as a job report keeps it (`evaluation["sync"]`); `None`: not evaluated or failed."""
    header = ("job", "in p", "out p", "in conf", "out conf", "out offset", "eval s")
    lines = [header]
    for name, evaluation in rows:
        if evaluation is None:
            lines.append((name, "-", "-", "-", "-", "-", "-"))
            continue
        entry = evaluation.to_report() if isinstance(evaluation, SyncEvaluation) else evaluation
        before, after = entry.get("input") or {}, entry["output"]
        lines.append((
            name + (" (random weights)" if entry.get("random_weights") else ""),
            _cell(before.get("sync_probability"), ".3f"),
            _cell(after["sync_probability"], ".3f"),
            _cell(before.get("confidence"), ".3f"),
            _cell(after["confidence"], ".3f"),
            _cell(after["best_offset"], "+d"),
            _cell(entry.get("seconds"), ".1f"),
        ))
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) if column == 0 else str(cell).rjust(width)
                  for column, (cell, width) in enumerate(zip(line, widths)))
        for line in lines
    )
