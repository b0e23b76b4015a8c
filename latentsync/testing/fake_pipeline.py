"""A fast stand-in for `run_job` with the same interface, for tests and benchmarks (no model, no GPU).

`FakePipeline` keeps the runner's contract (see latentsync/runner.py): it reads
its inputs and never modifies them, rejects files that are not media
(`MediaError`, permanent), reports progress per chunk, stops between chunks when
`cancel()` says so (`JobCancelled`), streams its output into a hidden temp file
renamed into place at the end (`latentsync.atomic`), and writes
`<output>.report.json` beside it. The output's bytes are a digest of the inputs,
so a test can prove which inputs produced it.

It can also fail on purpose: `transient_failures={"clip": 2}` raises a
RuntimeError on the first two attempts of any job whose video stem is `clip`.

`fake_load_ruleset` stands in for `latentsync.engine.load_ruleset`: every
`*.yaml` under the folder must parse and carry `schema_version`.
"""
from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..atomic import atomic_output, atomic_write_json
from ..errors import InvalidInputError, MediaError
from ..jobs import CancelCallback, JobReport, JobSpec, ProgressCallback

FAKE_OUTPUT_MAGIC = b"LATENTSYNC-FAKE-OUTPUT\n"

# (offset, bytes) a real container starts with; enough to tell media from garbage.
_SIGNATURES = {
    "mp4": [(4, b"ftyp")],
    "mov": [(4, b"ftyp"), (4, b"moov"), (4, b"wide"), (4, b"mdat")],
    "m4v": [(4, b"ftyp")],
    "m4a": [(4, b"ftyp")],
    "mkv": [(0, b"\x1a\x45\xdf\xa3")],
    "webm": [(0, b"\x1a\x45\xdf\xa3")],
    "avi": [(0, b"RIFF")],
    "wav": [(0, b"RIFF")],
    "mp3": [(0, b"ID3"), (0, b"\xff\xfb"), (0, b"\xff\xf3"), (0, b"\xff\xf2")],
    "flac": [(0, b"fLaC")],
    "ogg": [(0, b"OggS")],
    "aac": [(0, b"\xff\xf1"), (0, b"\xff\xf9")],
}


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(block)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def make_fake_video(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Write bytes that pass the fake pipeline's media check as an mp4."""
    body = hashlib.sha256(f"video-{seed}".encode()).digest() * (max(size - 12, 32) // 32 + 1)
    Path(path).write_bytes(b"\x00\x00\x00\x18ftypmp42" + body[: max(size - 12, 0)])
    return Path(path)


def make_fake_audio(path: Path, size: int = 2048, seed: int = 0) -> Path:
    """Write bytes that pass the fake pipeline's media check as a wav."""
    body = hashlib.sha256(f"audio-{seed}".encode()).digest() * (max(size - 12, 32) // 32 + 1)
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", max(size - 8, 0)) + b"WAVE" + body[: max(size - 12, 0)])
    return Path(path)


def expected_fake_output(video: Path, audio: Optional[Path]) -> bytes:
    """The exact bytes FakePipeline writes for these inputs."""
    video_digest = sha256_file(video)
    audio_digest = sha256_file(audio) if audio is not None else "own-audio"
    return FAKE_OUTPUT_MAGIC + f"video {video_digest}\naudio {audio_digest}\n".encode()


def _check_media(path: Path, field_name: str) -> None:
    if not path.is_file():
        raise MediaError(f"{field_name} file not found", path=str(path), hint="check the file name")
    if path.stat().st_size == 0:
        raise MediaError(f"{field_name} file is empty (0 bytes)", path=str(path), hint="drop the complete file")
    extension = path.suffix.lower().lstrip(".")
    signatures = _SIGNATURES.get(extension)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if signatures is None or not any(head[offset : offset + len(magic)] == magic for offset, magic in signatures):
        raise MediaError(
            f"{field_name} file is not a readable {extension or 'media'} file (no container header)",
            path=str(path),
            hint="re-export the clip as mp4 (H.264) and the audio as wav",
        )


@dataclass
class FakePipeline:
    """Callable with `run_job`'s signature; `chunks` chunks of `chunk_seconds` each."""

    chunks: int = 4
    chunk_seconds: float = 0.0
    transient_failures: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __call__(
        self,
        spec: JobSpec,
        *,
        ruleset: Any = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCallback] = None,
        benchmark_cache: Optional[Path] = None,
    ) -> JobReport:
        from ..runner import JobCancelled

        started = time.perf_counter()
        video = Path(spec.video)
        audio = Path(spec.audio) if spec.audio is not None else None
        self.calls.append(video.name)
        _check_media(video, "video")
        if audio is not None:
            _check_media(audio, "audio")
        stem = video.stem
        if self.transient_failures.get(stem, 0) > 0:
            self.transient_failures[stem] -= 1
            raise RuntimeError(f"simulated transient failure for {stem}")
        payload = expected_fake_output(video, audio)
        output = Path(spec.output)
        # The temp name keeps the extension, as the real video writer's does.
        with atomic_output(output, suffix=output.suffix) as temp, open(temp, "wb") as handle:
            for index in range(self.chunks):
                if cancel is not None and cancel():
                    raise JobCancelled("cancelled between chunks", path=str(spec.video))
                if self.chunk_seconds:
                    time.sleep(self.chunk_seconds)
                # A chunk's worth of output, written and flushed: a kill leaves a visible partial file.
                part = payload[index * len(payload) // self.chunks : (index + 1) * len(payload) // self.chunks]
                handle.write(part)
                handle.flush()
                if progress is not None:
                    progress("denoise", index + 1, self.chunks)
        seconds = time.perf_counter() - started
        report = JobReport(
            job=spec.to_dict(),
            status="ok",
            output=str(output),
            run_plan={"fake": True},
            rules_version=getattr(ruleset, "version", None),
            rules_hash=getattr(ruleset, "hash", None),
            timings={"denoise": seconds},
            seconds_total=seconds,
            device="fake",
        )
        report_path = Path(spec.report) if spec.report is not None else output.with_name(output.name + ".report.json")
        atomic_write_json(report_path, report.to_dict())
        return report


@dataclass
class FakeRuleSet:
    version: str
    hash: str
    path: Optional[str] = None


def fake_load_ruleset(path: Optional[Path] = None) -> FakeRuleSet:
    """Every *.yaml under `path` must parse and carry `schema_version`; all errors at once."""
    if path is None:
        return FakeRuleSet(version="fake", hash="0" * 64)
    folder = Path(path)
    files = sorted(p for p in folder.rglob("*.yaml") if not p.name.startswith("."))
    errors: list[str] = []
    digest = hashlib.sha256()
    version = None
    for file in files:
        text = file.read_bytes()
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + text)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            errors.append(f"{file}: invalid YAML: {str(error).splitlines()[0]}")
            continue
        if not isinstance(data, dict) or "schema_version" not in data:
            errors.append(f"{file}: field 'schema_version' is missing")
            continue
        version = str(data.get("version", data["schema_version"]))
    if not files:
        errors.append(f"{folder}: no rule files (*.yaml)")
    if errors:
        raise InvalidInputError("invalid rules:\n  " + "\n  ".join(errors), path=str(folder))
    return FakeRuleSet(version=version or "?", hash=digest.hexdigest(), path=str(folder))


@dataclass
class HangingPipeline:
    """FakePipeline, except that clips whose video stem starts with `prefix` hang: with
    `ignore_cancel` they never return (as a decoder stuck on a hostile file would), else they
    wait until `cancel()` says stop and raise JobCancelled."""

    prefix: str = "hang"
    ignore_cancel: bool = True
    pipeline: FakePipeline = field(default_factory=FakePipeline)
    calls: list[str] = field(default_factory=list)

    def __call__(self, spec: JobSpec, **kwargs: Any) -> JobReport:
        from ..runner import JobCancelled

        video = Path(spec.video)
        self.calls.append(video.name)
        if not video.stem.startswith(self.prefix):
            return self.pipeline(spec, **kwargs)
        cancel = kwargs.get("cancel")
        while True:
            time.sleep(0.02)
            if not self.ignore_cancel and cancel is not None and cancel():
                raise JobCancelled("cancelled while hanging", path=str(video))


def hanging_fake_pipeline() -> HangingPipeline:
    """For subprocess tests: clips named hang* never return, whatever they are asked."""
    return HangingPipeline()


def slow_fake_pipeline() -> FakePipeline:
    """For subprocess tests: chunk length from LATENTSYNC_FAKE_CHUNK_SECONDS (default 0)."""
    return FakePipeline(chunks=int(os.environ.get("LATENTSYNC_FAKE_CHUNKS", "4")),
                        chunk_seconds=float(os.environ.get("LATENTSYNC_FAKE_CHUNK_SECONDS", "0")))
