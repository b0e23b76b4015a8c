"""Shared helpers for the drop-folder tests: a watcher in a thread, invariants."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from latentsync.atomic import is_partial_name
from latentsync.testing.fake_pipeline import FakePipeline, expected_fake_output, fake_load_ruleset, sha256_file
from latentsync.watch import WatchConfig, Watcher

# "Billion laughs" in about 600 bytes (nine levels of nine aliases): a plan naming bomb.mp4 and bomb_fr.wav.
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    + ["video: bomb.mp4", "audio: bomb_fr.wav", "output: bomb_out.mp4", "name: *a8"]) + "\n"

FAST = dict(pair_wait=0.15, settle=0.1, tick=0.02, retry_delay=0.0, rules_debounce=0.1,
            rules_check_interval=0.2, rescan_interval=0.5, input_wait=2.0)


def write_rules(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(f"schema_version: 1\nversion: {version}\nrules: []\n")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class RunningWatcher:
    """A watcher running in a background thread (no signal handlers there)."""

    def __init__(self, config: WatchConfig, executor=None, rules_loader=fake_load_ruleset):
        self.executor = executor or FakePipeline()
        self.watcher = Watcher(config, executor=self.executor, rules_loader=rules_loader)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as error:  # surfaced by stop()
            self.error = error

    def __enter__(self) -> "RunningWatcher":
        self.thread.start()
        wait_until(self.watcher.ready.is_set, timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.watcher.request_stop("test over")
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "watcher did not stop"
        if self.error is not None:
            raise self.error


def make_config(inbox: Path, outbox: Path, rules: Path, **overrides) -> WatchConfig:
    values = dict(FAST)
    values.update(overrides)
    return WatchConfig(inbox=inbox, outbox=outbox, rules=rules, **values)


def outputs(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if p.is_file() and not p.name.endswith(".report.json"))


def settled(inbox: Path, outbox: Path, expected_jobs: int) -> Callable[[], bool]:
    """True once `expected_jobs` jobs ended in OUTBOX or failed/."""
    def check() -> bool:
        failed = list((inbox / "failed").glob("*.error.json")) if (inbox / "failed").is_dir() else []
        done = outputs(outbox) if outbox.is_dir() else []
        return len(failed) + len(done) >= expected_jobs
    return check


def assert_invariants(inbox: Path, outbox: Path, originals: dict[str, str]) -> None:
    """Nothing half-written, nothing left in flight, every input's bytes intact, outputs match inputs."""
    staging = outbox / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), f"staging not empty: {list(staging.rglob('*'))}"
    partials = [p for p in list(outbox.rglob("*")) + list(inbox.rglob("*")) if is_partial_name(p.name)]
    assert not partials, f"partial files left behind: {partials}"
    processing = inbox / "processing"
    assert not processing.exists() or not any(processing.iterdir()), f"processing not empty: {list(processing.rglob('*'))}"
    # Every input is in done/ or failed/ exactly once with its bytes unchanged.
    settled_digests = sorted(
        sha256_file(p) for folder in ("done", "failed") if (inbox / folder).is_dir()
        for p in (inbox / folder).iterdir() if p.is_file() and not p.is_symlink() and not p.name.endswith(".error.json")
    )
    assert sorted(originals.values()) == settled_digests
    # Every output's bytes are the fake pipeline's digest of inputs now in done/, and it has a report.
    for name in outputs(outbox):
        report = json.loads((outbox / (name + ".report.json")).read_text())
        assert report["status"] == "ok"
        assert report["output"] == str((outbox / name).resolve())
        video = Path(report["job"]["video"])
        audio = Path(report["job"]["audio"]) if report["job"]["audio"] else None
        assert video.parent == (inbox / "done").resolve()
        assert (outbox / name).read_bytes() == expected_fake_output(video, audio)
        assert report["rules_hash"], "the report records the rules it ran with"


def digests(*paths: Path) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths}


def error_files(inbox: Path) -> dict[str, dict]:
    """failed/*.error.json by name, parsed."""
    folder = inbox / "failed"
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*.error.json")} if folder.is_dir() else {}
