"""Outputs never overwrite inputs: one check for every front end (CLI, runner, drop folder, Ray).

A job writes up to three files: the video (`output`), the job report (`report`,
default `<output>.report.json`) and, on request, a contact sheet
(`<output>.contact.png`). None of them may be, or lead to (a symbolic link, a
hard link, `..`), any of the job's inputs (the plan, the video, the audio, the
weights), another of its outputs, or an existing file that this job did not make.

"This job made it" means: the file sits where this job writes and the report there
says it is this job's output (`output` in the report names the same file), so
running a plan again replaces its own earlier results and nothing else. Any other
existing file is refused unless the job says `overwrite: true` (plan) or the run
has `--overwrite` (CLI); even then inputs are never overwritten.

Errors are `InvalidInputError` (exit code 2), naming both paths.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .errors import InvalidInputError, OutputError

REPORT_SUFFIX = ".report.json"
CONTACT_SHEET_SUFFIX = ".contact.png"
# A job report is a few hundred KiB at most; a larger "report" is not one of ours.
_MAX_REPORT_BYTES = 16 << 20


class OutputConflict(InvalidInputError):
    """An output path is an input, another output, or an existing file this job did not make."""

    def __init__(self, message: str, *, output: Path, other: Path, hint: Optional[str] = None):
        super().__init__(message, hint=hint)  # the message names both paths
        self.output = str(output)
        self.other = str(other)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data.update(output=self.output, other=self.other)
        return data


def report_path(spec: Any) -> Path:
    """Where a job's report goes: `report:`, else `<output>.report.json`."""
    return Path(spec.report) if getattr(spec, "report", None) else Path(str(spec.output) + REPORT_SUFFIX)


def contact_sheet_path(spec: Any) -> Path:
    return Path(str(spec.output) + CONTACT_SHEET_SUFFIX)


def planned_outputs(spec: Any) -> list[tuple[str, Path]]:
    """(what, path) of every file the job writes."""
    outputs = [("output", Path(spec.output)), ("report", report_path(spec))]
    if getattr(spec, "contact_sheet", False):
        outputs.append(("contact sheet", contact_sheet_path(spec)))
    return outputs


def protected_inputs(spec: Any, plan_file: Optional[Path] = None) -> list[tuple[str, Path]]:
    """(what, path) of every file or folder the job reads."""
    from .weights import RANDOM_WEIGHTS  # lazily: weights.py is light, but keep this module's import cheap

    inputs: list[tuple[str, Path]] = []
    if plan_file is not None:
        inputs.append(("plan", Path(plan_file)))
    if getattr(spec, "video", None) is not None:
        inputs.append(("video", Path(spec.video)))
    if getattr(spec, "audio", None) is not None:
        inputs.append(("audio", Path(spec.audio)))
    weights = getattr(spec, "weights", None)
    if weights is not None and str(weights) not in RANDOM_WEIGHTS:
        inputs.append(("weights", Path(str(weights))))
    return inputs


_cache: Optional[dict[str, str]] = None  # set inside `one_moment()`


@contextlib.contextmanager
def one_moment() -> Iterator[None]:
    """Resolve each path once while checking many jobs at one moment (a plan of thousands of jobs)."""
    global _cache
    saved, _cache = _cache, {}
    try:
        yield
    finally:
        _cache = saved


def _real(path: Path) -> str:
    """The path with every link and `..` resolved, as far as it exists."""
    text = str(path)
    if _cache is not None and text in _cache:
        return _cache[text]
    real = os.path.normcase(os.path.realpath(os.path.abspath(os.path.expanduser(text))))
    if _cache is not None:
        _cache[text] = real
    return real


def resolved_key(path: Path) -> str:
    """A path with every link and `..` resolved: equal keys name the same file (hard links aside)."""
    return _real(path)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or one inode (hard links)."""
    if _real(first) == _real(second):
        return True
    if not (os.path.lexists(first) and os.path.lexists(second)):
        return False  # a file that does not exist (yet) is no other file's hard link
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return real != base and real.startswith(base.rstrip(os.sep) + os.sep)


def check_output_paths(spec: Any, *, plan_file: Optional[Path] = None,
                       others: Iterable[tuple[str, Path]] = ()) -> None:
    """What can be told from the paths alone: no output is an input, another output of this
    job (or of `others`, e.g. the other jobs of a plan), or inside the weights folder."""
    outputs = planned_outputs(spec)
    inputs = protected_inputs(spec, plan_file)
    for what, path in outputs:
        for kind, source in inputs:
            if kind == "weights" and (same_file(path, source) or _inside(path, source)):
                raise OutputConflict(f"the {what} {path} would be written into the weights {source}", output=path,
                                     other=source,
                                     hint="write outputs outside the weights folder")
            if kind != "weights" and same_file(path, source):
                raise OutputConflict(f"the {what} {path} would overwrite an input, the {kind} {source}", output=path,
                                     other=source,
                                     hint=f"choose another `{'output' if what != 'report' else 'report'}:` path; "
                                          "inputs are never modified")
    for index, (what, path) in enumerate(outputs):
        for other_what, other in outputs[index + 1:]:
            if same_file(path, other):
                raise OutputConflict(f"the {what} {path} and the {other_what} {other} are the same file", output=path,
                                     other=other,
                                     hint="give the report its own path (or leave `report:` out)")
        for other_what, other in others:
            if same_file(path, other):
                raise OutputConflict(f"the {what} {path} is also {other_what} {other}", output=path, other=other,
                                     hint="give every job its own output and report paths")


def made_by_this_job(spec: Any) -> bool:
    """Whether the files at this job's output paths are an earlier result of this same job: its
    report is where this job writes it and names this job's output."""
    report = report_path(spec)
    try:
        if not report.is_file() or report.stat().st_size > _MAX_REPORT_BYTES:
            return False
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    named = data.get("output")
    job = data.get("job")
    if not isinstance(named, str) and isinstance(job, dict):
        named = job.get("output")
    return isinstance(named, str) and _real(Path(named)) == _real(Path(spec.output))


def check_outputs(spec: Any, *, plan_file: Optional[Path] = None, overwrite: Optional[bool] = None,
                  others: Iterable[tuple[str, Path]] = ()) -> None:
    """Refuse a job whose outputs would overwrite an input or a file it did not make.

    `overwrite`: replace existing files that are not inputs (default: the spec's own
    `overwrite`, else False). Raises OutputConflict (InvalidInputError, exit 2) naming
    the output and the file it would replace; OutputError when an output path is a folder."""
    check_output_paths(spec, plan_file=plan_file, others=others)
    if overwrite is None:
        overwrite = bool(getattr(spec, "overwrite", False))
    previous: Optional[bool] = None
    for what, path in planned_outputs(spec):
        if os.path.isdir(path):
            raise OutputError(f"the {what} path is a folder", path=str(path), hint="name a file, e.g. out.mp4")
        if not os.path.lexists(path) or overwrite:
            continue
        if previous is None:
            previous = made_by_this_job(spec)
        if not previous:
            raise OutputConflict(f"the {what} {path} would replace an existing file that this job did not write "
                                 f"(no report at {report_path(spec)} names it as this job's output)", output=path,
                                 other=path, hint="choose a new output path, delete the file, or allow it with "
                                                  "`overwrite: true` in the plan (latentsync-run --overwrite)")
