"""latentsync.atomic: a file appears whole or not at all, temp files never outlive a failure,
permissions follow the umask."""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from latentsync import atomic
from latentsync.atomic import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    fsync_folder,
    is_partial_name,
)

POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_partial_name(p.name))


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


def test_writes_bytes_text_and_json_creating_parent_folders(tmp_path: Path):
    assert atomic_write_bytes(tmp_path / "a" / "b" / "blob.bin", b"\x00\x01") == tmp_path / "a" / "b" / "blob.bin"
    assert (tmp_path / "a" / "b" / "blob.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "note.txt", "grüße\n")
    assert (tmp_path / "note.txt").read_bytes() == "grüße\n".encode("utf-8")
    atomic_write_json(tmp_path / "data.json", {"path": Path("/x/y"), "b": 1, "a": [1, 2]})
    text = (tmp_path / "data.json").read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "path"')  # indent 2, insertion order, newline
    assert json.loads(text) == {"path": "/x/y", "b": 1, "a": [1, 2]}  # default=str for what JSON lacks
    atomic_write_json(tmp_path / "sorted.json", {"b": 1, "a": 2}, sort_keys=True, indent=None)
    assert (tmp_path / "sorted.json").read_text() == '{"a": 2, "b": 1}\n'
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "a" / "b") == []


def test_unencodable_json_leaves_the_old_file_and_no_temp(tmp_path: Path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"ok": True})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(target, {("tuple", "key"): 1})  # keys must be strings; default=str does not apply
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        atomic_write_json(target, circular)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize("failing", ["fsync", "replace", "interrupt"])
def test_a_failure_midway_removes_the_temp_and_keeps_the_old_file(tmp_path: Path, monkeypatch, failing: str):
    target = tmp_path / "out.json"
    target.write_text("old\n")
    if failing == "fsync":
        def broken(_fd):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(atomic.os, "fsync", broken)
        expected: type[BaseException] = OSError
    elif failing == "replace":
        def broken(_src, _dst):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(atomic.os, "replace", broken)
        expected = PermissionError
    else:
        def broken(_src, _dst):
            raise KeyboardInterrupt  # Ctrl-C at the worst moment: a BaseException, not an Exception
        monkeypatch.setattr(atomic.os, "replace", broken)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        atomic_write_json(target, {"new": "x" * 10000})
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_readers_see_the_old_bytes_or_the_new_never_a_mix(tmp_path: Path):
    target = tmp_path / "big.bin"
    payloads = [bytes([n]) * (512 << 10) for n in (1, 2)]
    atomic_write_bytes(target, payloads[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read_forever() -> None:
        while not stop.is_set():
            seen.append(target.read_bytes())

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for index in range(60):
            atomic_write_bytes(target, payloads[index % 2])
    finally:
        stop.set()
        reader.join()
    assert seen and all(data in payloads for data in seen), "a reader saw a half-written file"


@POSIX
def test_permissions_follow_the_umask_not_mkstemp(tmp_path: Path, umask_027):
    assert current_umask() == 0o027
    target = tmp_path / "shared.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    atomic_write_json(target, {"a": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    atomic_write_text(tmp_path / "private.txt", "x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    with atomic_output(tmp_path / "sheet.png", ".png") as temp:
        temp.write_bytes(b"png")
    assert stat.S_IMODE((tmp_path / "sheet.png").stat().st_mode) == 0o640


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    atomic_write_text(tmp_path / "a.txt", "a")
    expected_folder = ["folder"] if os.name == "posix" else []
    assert synced == ["file"] + expected_folder
    synced.clear()
    with atomic_output(tmp_path / "b.bin") as temp:
        temp.write_bytes(b"b")
    assert synced == ["file"] + expected_folder


def test_fsync_folder_is_best_effort(tmp_path: Path):
    fsync_folder(tmp_path / "does-not-exist")  # cannot be opened (as on Windows): no error
    fsync_folder(tmp_path)


def test_atomic_output_gives_a_hidden_temp_beside_the_target(tmp_path: Path):
    target = tmp_path / "sheet.png"
    target.write_bytes(b"old")
    with atomic_output(target, ".png") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".sheet.png.") and temp.name.endswith(".partial.png")
        assert is_partial_name(temp.name)
        temp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new" and not temp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_atomic_output_discards_the_temp_when_the_writer_fails(tmp_path: Path):
    target = tmp_path / "sub" / "sheet.png"
    with pytest.raises(RuntimeError, match="encoder"):
        with atomic_output(target, ".png") as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("encoder crashed")
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []


@pytest.mark.parametrize("name, partial", [
    (".clip.mp4.k2j3.partial", True), (".clip.mp4.k2j3.partial.mp4", True), ("clip.mp4.partial.123", True),
    ("clip.mp4", False), ("clip.mp4.report.json", False), ("my.partiality.mp4", False),
])
def test_is_partial_name(name: str, partial: bool):
    assert is_partial_name(name) is partial
