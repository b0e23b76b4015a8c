"""A rules folder as data, so every Ray task carries its own copy (no shared rules folder needed)."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_bytes
from ..errors import InvalidInputError

# A rules folder is a few dozen small YAML files; anything this large is a wrong path.
MAX_BUNDLE_BYTES = 16 << 20


@dataclass(frozen=True)
class RulesBundle:
    """Every regular, non-hidden file under a rules folder: relative POSIX path -> bytes."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    digest: str = ""


def pack_rules(folder: Path) -> RulesBundle:
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError("rules folder not found", path=str(folder), hint="pass --rules DIR (a folder of *.yaml)")
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_BUNDLE_BYTES:
            raise InvalidInputError(f"rules folder holds more than {MAX_BUNDLE_BYTES >> 20} MiB", path=str(folder),
                                    hint="point --rules at the rule set folder itself (e.g. rules/v1)")
        files[relative.as_posix()] = data
    if not files:
        raise InvalidInputError("rules folder is empty", path=str(folder), hint="pass --rules DIR (a folder of *.yaml)")
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return RulesBundle(name=folder.name, files=files, digest=digest.hexdigest())


def unpack_rules(bundle: RulesBundle, dest: Optional[Path] = None) -> Path:
    """Write the bundle into `dest/<name>` (default: a new temp folder); returns that folder."""
    root = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="latentsync-rules-"))
    folder = root / bundle.name
    for name, data in bundle.files.items():
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:  # a bundle is data from the driver: never write outside
            raise InvalidInputError("rules bundle names a file outside its folder", path=name)
        atomic_write_bytes(target, data)
    return folder
