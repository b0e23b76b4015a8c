"""What a file dropped into INBOX is, which files form one job, and whether they are safe.

A job is one of:
- `name.mp4` (or .mov/.mkv/.webm/.avi/.m4v) with `name.wav`/`.mp3`/`.m4a`/`.flac`/
  `.aac`/`.ogg` beside it, or alone (the video's own audio track);
- `name.plan.yaml` (the plan.yaml schema, one job) naming its inputs (bare file
  names beside it in INBOX), its output (a bare name, written into OUTBOX) and
  overrides.

Security: a drop folder is often shared, so a dropped plan may name only files
that lie directly in INBOX and may write only into OUTBOX. Absolute paths, `..`,
sub-folders, hidden files and symbolic links are rejected; YAML is read with the
engine's bounded loader (`latentsync.engine.yamlio`: safe constructor, limits on
size, nesting and alias expansion from `latentsync.engine.limits`).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..engine.limits import MAX_OUTPUT_NAME_BYTES, PLAN_LIMITS
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

MAX_PLAN_BYTES = PLAN_LIMITS.max_bytes


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
    if len(value.encode("utf-8", "surrogateescape")) > MAX_OUTPUT_NAME_BYTES:
        raise DropFolderError(f"field 'output' is longer than {MAX_OUTPUT_NAME_BYTES} bytes", path=plan_name,
                              hint="give a shorter file name (the report adds .report.json to it)")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise DropFolderError("field 'output' holds control characters", path=plan_name,
                              hint="give a plain file name, e.g. output: clip_synced.mp4")
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


def read_plan_bytes(path: Path) -> bytes:
    """The bytes of a dropped plan: a plain, singly linked, non-empty file within the plan size limit."""
    name = path.name
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise describe_link(path, path.parent)
    if not stat.S_ISREG(info.st_mode):
        raise DropFolderError("the plan is not a regular file", path=name, hint="drop the plan file itself")
    if info.st_nlink > 1:
        raise DropFolderError("the plan is a hard link to a file that also lives elsewhere; links are not accepted",
                              path=name, hint="copy the plan into INBOX instead of linking it")
    if info.st_size == 0:
        raise DropFolderError("the plan is empty (0 bytes)", path=name, hint="write the job into the plan, e.g. video: clip.mp4")
    if info.st_size > MAX_PLAN_BYTES:
        raise DropFolderError(f"the plan is {info.st_size:,} bytes; the limit is {MAX_PLAN_BYTES:,} (a plan is a small "
                              "YAML file)", path=name, hint="check that you dropped the right file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_PLAN_BYTES + 1)
    if len(raw) > MAX_PLAN_BYTES:
        raise DropFolderError(f"the plan grew beyond {MAX_PLAN_BYTES:,} bytes while it was read", path=name,
                              hint="check that you dropped the right file")
    return raw


def parse_drop_plan(path: Path) -> DropPlan:
    """Read a plan dropped into INBOX and apply the drop-folder rules (bounded, no object construction)."""
    from ..engine.yamlio import parse_yaml_text  # the engine's bounded loader: one set of limits everywhere

    name = path.name
    raw = read_plan_bytes(path)
    document, problems = parse_yaml_text(raw, name, PLAN_LIMITS, path)
    if document is None or problems:
        first = problems[0] if problems else None
        where = f" at line {first.line}" if first is not None and first.line else ""
        message = first.message if first is not None else "cannot be read"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        hint = ("see docs/limits.md for the limits on plans" if "limit" in message or "nest" in message
                or "YAML nodes" in message else "check the indentation and quoting, and save the plan as UTF-8 YAML")
        raise DropFolderError(f"the plan{where}: {message}{more}", path=name, hint=hint)
    data = document.data
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
    except (OSError, ValueError):
        target = "?"
    try:
        resolved = Path(os.path.realpath(path.parent / target)) if target != "?" else None
        inbox_resolved = Path(os.path.realpath(inbox))
        outside = resolved is None or not (resolved == inbox_resolved or inbox_resolved in resolved.parents)
        where = "outside INBOX" if outside else "inside INBOX"
        if resolved is not None and os.path.islink(resolved):
            where = "in a loop"  # realpath stops where the links turn in circles
    except (OSError, ValueError, RuntimeError):
        where = "nowhere it can follow"
    shown = target.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return DropFolderError(f"is a symbolic link leading {where} ({shown}); links are not accepted in a drop folder",
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


_NAMED = re.compile(r"^\s*-?\s*(?:video|audio)\s*:\s*(.+?)\s*$", re.MULTILINE)


def names_in_broken_plan(raw: bytes) -> list[str]:
    """Best effort, for a plan that cannot be parsed: the bare names its `video:` and `audio:`
    lines seem to give, so its media go to failed/ with it instead of running without it."""
    text = raw[:MAX_PLAN_BYTES].decode("utf-8", "replace")
    names = []
    for match in _NAMED.finditer(text):
        value = match.group(1).split(" #")[0].strip().strip("'\"").strip()
        if value and "/" not in value and "\\" not in value and not value.startswith(".") and value not in names:
            names.append(value)
    return names[:16]


def file_problem(path: Path, inbox: Path) -> Optional[DropFolderError]:
    """Why a top-level entry of INBOX cannot be a job's file (link, FIFO, device, socket, folder,
    hard link), or None for a plain file. Never raises."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return DropFolderError(f"cannot be examined ({getattr(error, 'strerror', None) or error})", path=path.name,
                               hint="check the file's name and permissions")
    if stat.S_ISLNK(info.st_mode):
        try:
            return describe_link(path, inbox)
        except Exception:  # noqa: BLE001 — never raises: a link is refused, whatever it leads to
            return DropFolderError("is a symbolic link; links are not accepted in a drop folder", path=path.name,
                                   hint="copy the file itself into INBOX instead of linking to it")
    if stat.S_ISDIR(info.st_mode):
        return DropFolderError("is a folder; a drop folder takes files", path=path.name,
                               hint="drop the clip (and its audio or plan) itself, not a folder")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "a device file"
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket"
                if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        return DropFolderError(f"is {kind}, not a regular file", path=path.name,
                               hint="drop a video, an audio file or a .plan.yaml")
    if info.st_nlink > 1:
        return DropFolderError("is a hard link to a file that also lives elsewhere; links are not accepted in a drop folder",
                               path=path.name, hint="copy the file into INBOX instead of linking it")
    return None
