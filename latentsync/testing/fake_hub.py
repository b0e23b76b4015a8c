"""A stand-in for huggingface_hub.snapshot_download over local folders (fetch-weights tests)."""
from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path


def fake_snapshot_download(hub: dict):
    """`snapshot_download(repo_id, local_dir, allow_patterns)` copying from `hub[repo_id]` (a folder)
    the files matching the patterns, as the hub would download them."""

    def download(repo_id, local_dir, allow_patterns):
        source = Path(hub[repo_id])
        for path in source.rglob("*"):
            rel = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(rel, pattern) for pattern in allow_patterns):
                target = Path(local_dir) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return local_dir

    return download
