"""What a file dropped into INBOX is, which files form one job, and whether they are safe.

A job is one of:
- `name.mp4` (or .mov/.mkv/.webm/.avi/.m4v) with `name.wav`/`.mp3`/`.m4a`/`.flac`/
  `.aac`/`.ogg` beside it, or alone (the video's own audio track);
- `name.plan.yaml` (the plan.yaml schema, one job) naming its inputs (bare file
  names beside it in INBOX), its output (a bare name, written into OUTBOX) and
  overrides.

Security: a drop folder is often shared, so a dropped plan may name only files
that lie directly in INBOX and may write only into OUTBOX. Absolute paths, `..`,
sub-folders, hidden files and symbolic links are rejected; YAML is read with
`yaml.safe_load` (no object construction).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".aac", ".ogg")
PLAN_SUFFIXES = (".plan.yaml", ".plan.yml")
# Names copy tools and editors use while a file is still being written; the
# finished file arrives under its real name by rename (a moved-in event).
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~")
# Sub-folders of INBOX the watcher owns.
RESERVED_DIRS = ("processing", "done", "failed", "logs", ".latentsync")
# Fields of a dropped plan's job that name files, and the one it may not set.
INPUT_FIELDS = ("video", "audio")
# Keyword values `weights:` may take in a dropped plan (a folder is the watcher's choice).
WEIGHT_KEYWORDS = ("random", "random-small")

MAX_PLAN_BYTES = 1 << 20


class DropFolderError(InvalidInputError):
    """A dropped file or plan breaks a drop-folder rule (permanent: goes to failed/)."""


def classify(name: str) -> str:
    """'ignore' | 'plan' | 'video' | 'audio' | 'unknown' for a top-level file name."""
    lower = name.lower()
    if name.startswith(".") or name.startswith("~$") or lower.endswith(TEMPORARY_SUFFIXES) or ".partial." in lower:
        return "ignore"
    if lower.endswith(PLAN_SUFFIXES):
        return "plan"
    if lower.endswith(VIDEO_EXTENSIONS):
        return "video"
    if lower.endswith(AUDIO_EXTENSIONS):
        return "audio"
    return "unknown"


def stem_of(name: str) -> str:
    """`clip.plan.yaml` -> `clip`, `clip.mp4` -> `clip`."""
    lower = name.lower()
    for suffix in PLAN_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    base, _ext = os.path.splitext(name)
    return base


def check_bare_name(value: Any, *, field_name: str, plan_name: str) -> str:
    """A plan's file reference must be a plain name of a file directly in INBOX."""
    where = f"field '{field_name}'"
    if not isinstance(value, str) or not value.strip():
        raise DropFolderError(f"{where} must be a file name, got {value!r}", path=plan_name,
                              hint="name a file that sits beside the plan in INBOX, e.g. video: clip.mp4")
    if os.path.isabs(value) or (len(value) > 1 and value[1] == ":"):
        raise DropFolderError(f"{where} is an absolute path ({value!r}); a dropped plan may only name files inside INBOX",
                              path=plan_name, hint="drop the file into INBOX and name it without a folder")
    parts = value.replace("\\", "/").split("/")
    if ".." in parts:
        raise DropFolderError(f"{where} leaves INBOX with '..' ({value!r})", path=plan_name,
                              hint="drop the file into INBOX and name it without a folder")
    if len(parts) > 1:
        raise DropFolderError(f"{where} names a sub-folder ({value!r}); only files directly in INBOX are accepted",
                              path=plan_name, hint="put the file beside the plan in INBOX")
    if value.startswith(".") or value in (".",):
        raise DropFolderError(f"{where} names a hidden file ({value!r})", path=plan_name,
                              hint="hidden files are ignored by the watcher; rename the file")
    return value


def check_output_name(value: Any, *, plan_name: str) -> str:
    """`output:` in a dropped plan is a plain file name, written into OUTBOX."""
    if not isinstance(value, str) or not value.strip():
        raise DropFolderError(f"field 'output' must be a file name, got {value!r}", path=plan_name,
                              hint="e.g. output: clip_synced.mp4 (written into OUTBOX)")
    if os.path.isabs(value) or (len(value) > 1 and value[1] == ":"):
        raise DropFolderError(f"field 'output' is an absolute path ({value!r}); a dropped plan writes only into OUTBOX",
                              path=plan_name, hint="give a plain file name, e.g. output: clip_synced.mp4")
    parts = value.replace("\\", "/").split("/")
    if ".." in parts:
        raise DropFolderError(f"field 'output' leaves OUTBOX with '..' ({value!r})", path=plan_name,
                              hint="give a plain file name, e.g. output: clip_synced.mp4")
    if len(parts) > 1 or value.startswith("."):
        raise DropFolderError(f"field 'output' must be a plain file name in OUTBOX, got {value!r}", path=plan_name,
                              hint="give a plain file name without folders, e.g. output: clip_synced.mp4")
    if not value.lower().endswith(VIDEO_EXTENSIONS):
        raise DropFolderError(f"field 'output' must end in a video extension ({', '.join(VIDEO_EXTENSIONS)}), got {value!r}",
                              path=plan_name, hint="e.g. output: clip_synced.mp4")
    return value


@dataclass
class DropPlan:
    """A dropped plan after the drop-folder checks: which files it reads, what it writes."""

    name: str  # the plan's file name in INBOX
    data: Any  # the YAML document as loaded (plain data)
    job: dict[str, Any]  # the one job inside it, `defaults:` merged in
    inputs: list[str] = field(default_factory=list)  # bare names in INBOX
    output: str = ""  # bare name in OUTBOX


def _job_mapping(data: Any, plan_name: str) -> dict[str, Any]:
    """A plan is one job (a mapping) or a list of jobs (a list or `jobs:`); a drop plan holds exactly one."""
    jobs: Any
    if isinstance(data, dict) and "jobs" in data:
        jobs = data["jobs"]
    elif isinstance(data, list):
        jobs = data
    else:
        jobs = [data]
    if not isinstance(jobs, list) or len(jobs) != 1:
        count = len(jobs) if isinstance(jobs, list) else "no"
        raise DropFolderError(f"a dropped plan must describe exactly one job, this one has {count}", path=plan_name,
                              hint="drop one plan file per clip")
    job = jobs[0]
    if not isinstance(job, dict):
        raise DropFolderError(f"the job must be a mapping of fields, got {type(job).__name__}", path=plan_name,
                              hint="e.g.\n    video: clip.mp4\n    audio: voice.wav")
    defaults = data.get("defaults") if isinstance(data, dict) else None
    if defaults is not None:
        if not isinstance(defaults, dict):
            raise DropFolderError("field 'defaults' must be a mapping of job fields", path=plan_name,
                                  hint="or leave it out: a dropped plan holds one job")
        job = {**defaults, **job}  # the engine merges them the same way; check what it will see
    return job


def parse_drop_plan(path: Path) -> DropPlan:
    """Read a plan dropped into INBOX and apply the drop-folder rules (no object construction)."""
    name = path.name
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise describe_link(path, path.parent)
    if info.st_nlink > 1:
        raise DropFolderError("the plan is a hard link to a file that also lives elsewhere; links are not accepted",
                              path=name, hint="copy the plan into INBOX instead of linking it")
    if info.st_size == 0:
        raise DropFolderError("the plan is empty (0 bytes)", path=name, hint="write the job into the plan, e.g. video: clip.mp4")
    if info.st_size > MAX_PLAN_BYTES:
        raise DropFolderError(f"the plan is {info.st_size} bytes; a plan is a small YAML file", path=name,
                              hint="check that you dropped the right file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_PLAN_BYTES + 1)
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DropFolderError(f"the plan is not UTF-8 text ({error.reason} at byte {error.start})", path=name,
                              hint="save the plan as UTF-8 YAML") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise DropFolderError(f"invalid YAML{where}: {problem}", path=name,
                              hint="check the indentation and quoting; `python -c 'import yaml,sys; yaml.safe_load(open(sys.argv[1]))' FILE` shows the error") from None
    job = _job_mapping(data, name)
    if "video" not in job:
        raise DropFolderError("field 'video' is missing", path=name, hint="name the clip beside the plan, e.g. video: clip.mp4")
    inputs = [check_bare_name(job["video"], field_name="video", plan_name=name)]
    if job.get("audio") is not None:
        inputs.append(check_bare_name(job["audio"], field_name="audio", plan_name=name))
    if classify(inputs[0]) != "video":
        raise DropFolderError(f"field 'video' must name a video file ({', '.join(VIDEO_EXTENSIONS)}), got {inputs[0]!r}",
                              path=name, hint="e.g. video: clip.mp4")
    if len(inputs) > 1 and classify(inputs[1]) not in ("audio", "video"):
        raise DropFolderError(f"field 'audio' must name an audio or video file, got {inputs[1]!r}", path=name,
                              hint="e.g. audio: voice.wav")
    if name in inputs:
        raise DropFolderError("the plan names itself as an input", path=name, hint="name the clip, e.g. video: clip.mp4")
    if "report" in job:
        raise DropFolderError("field 'report' cannot be set in a dropped plan; the report is written beside the output in OUTBOX",
                              path=name, hint="remove the 'report' field")
    weights = job.get("weights")
    if weights is not None and weights not in WEIGHT_KEYWORDS:
        raise DropFolderError(f"field 'weights' may only be {' or '.join(WEIGHT_KEYWORDS)} in a dropped plan, got {weights!r}",
                              path=name, hint="the watcher's operator chooses the weights folder: latentsync-run watch ... --weights DIR")
    if job.get("output") is None:
        raise DropFolderError("field 'output' is missing", path=name,
                              hint="name the result, e.g. output: clip_synced.mp4 (it is written into OUTBOX)")
    output = check_output_name(job["output"], plan_name=name)
    return DropPlan(name=name, data=data, job=job, inputs=list(dict.fromkeys(inputs)), output=output)


def describe_link(path: Path, inbox: Path) -> DropFolderError:
    """The error for a symbolic link found in INBOX (saying where it leads)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    resolved = (path.parent / target).resolve(strict=False) if target != "?" else None
    inbox_resolved = inbox.resolve()
    outside = resolved is None or not (resolved == inbox_resolved or inbox_resolved in resolved.parents)
    where = "outside INBOX" if outside else "inside INBOX"
    return DropFolderError(f"is a symbolic link leading {where} ({target}); links are not accepted in a drop folder",
                           path=path.name, hint="copy the file itself into INBOX instead of linking to it")


def check_claimed_file(path: Path, inbox: Path) -> None:
    """After the claim: the file must be a plain, non-empty, singly-linked regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise DropFolderError("disappeared from the drop folder before it could be processed", path=path.name,
                              hint="drop the file again") from None
    if stat.S_ISLNK(info.st_mode):
        raise describe_link(path, inbox)
    if not stat.S_ISREG(info.st_mode):
        raise DropFolderError("is not a regular file", path=path.name, hint="drop a video, an audio file or a .plan.yaml")
    if info.st_nlink > 1:
        raise DropFolderError("is a hard link to a file that also lives elsewhere; links are not accepted in a drop folder",
                              path=path.name, hint="copy the file into INBOX instead of linking it")
    if info.st_size == 0:
        raise DropFolderError("is empty (0 bytes)", path=path.name,
                              hint="the copy may have failed; drop the complete file again")
