"""Write a file so that readers see the old bytes or the new ones, never half of either.

Every output, report, error file and cache goes through here: a hidden temp file
beside the target (same folder, so the rename never crosses file systems) is
written, flushed and fsynced, renamed over the target with `os.replace`, and then
the folder is fsynced so the rename itself survives a power cut. Any failure (a
serializer that raises, a full disk, Ctrl-C) removes the temp file and leaves the
target as it was.

Permissions are `mode & ~umask` (0o666 by default), as `open()` would give:
`mkstemp` makes 0600, but outputs and reports are meant to be shared.

Temp files are named `.NAME.<random>.partial[SUFFIX]` (NAME cut to 120 bytes, so a target
with a name near the file system's limit still gets one); `is_partial_name` tells them
(and the older `NAME.partial.<pid>` ones) apart from finished files.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]
PARTIAL_SUFFIX = ".partial"
DEFAULT_MODE = 0o666


def is_partial_name(name: str) -> bool:
    """True for a temp file that is still being written (or was left by a killed writer)."""
    return name.endswith(PARTIAL_SUFFIX) or PARTIAL_SUFFIX + "." in name


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    # os.umask can only be read by setting it, and for that instant every other thread
    # would create files with umask 0; Linux shows it in /proc instead.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_folder(folder: PathLike) -> None:
    """Make a rename in `folder` durable. Best effort: Windows cannot open a folder, and some
    file systems (network shares) refuse to fsync one; the rename itself is still atomic."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def replace_durably(temp: PathLike, path: PathLike) -> None:
    """fsync `temp`, rename it over `path`, fsync the folder. For writers that fill their own temp file."""
    with open(temp, "rb+") as handle:  # write access: Windows refuses to flush a read-only handle
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_folder(Path(path).parent)


# The target's name in a temp name is cut to this many bytes: a target whose name is near the
# file system's limit (255 bytes) must still get a temp file beside it.
_TEMP_NAME_BYTES = 120


def _temp_beside(path: Path, suffix: str) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    label = os.fsencode(path.name)[:_TEMP_NAME_BYTES]
    handle, name = tempfile.mkstemp(prefix=f".{os.fsdecode(label)}.", suffix=PARTIAL_SUFFIX + suffix[-32:],
                                    dir=path.parent)
    return handle, Path(name)


def _discard(temp: Path) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        pass  # the original error matters more than a temp file we could not remove


def atomic_write_bytes(path: PathLike, data: bytes, *, mode: int = DEFAULT_MODE) -> Path:
    """Write `data` to `path` whole or not at all; parent folders are created. Returns the path."""
    path = Path(path)
    handle, temp = _temp_beside(path, "")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # Before the rename: the target never appears, even briefly, as 0600.
        os.chmod(temp, mode & ~current_umask())
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise
    fsync_folder(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", mode: int = DEFAULT_MODE) -> Path:
    """`atomic_write_bytes` of `text` encoded (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(path: PathLike, data: Any, *, indent: int = 2, sort_keys: bool = False,
                      mode: int = DEFAULT_MODE) -> Path:
    """`data` as JSON (anything JSON cannot encode is written as its str()), with a trailing newline."""
    # Serialized before the temp file exists: a value that cannot be encoded leaves no trace.
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n"
    return atomic_write_text(path, text, mode=mode)


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = "", *, mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """A temp path to write `path` through, for writers that need a file name (PIL's `Image.save`,
    a streaming writer). On a clean exit the temp file is fsynced and renamed over `path`; on
    any exception it is removed. `suffix` ends the temp name (e.g. ".png", for writers that
    pick the format from the extension)."""
    path = Path(path)
    handle, temp = _temp_beside(path, suffix)
    os.close(handle)
    try:
        yield temp
        os.chmod(temp, mode & ~current_umask())
        replace_durably(temp, path)
    except BaseException:
        _discard(temp)
        raise
