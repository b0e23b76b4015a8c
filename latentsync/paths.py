"""Where the package finds its data: rules, schemas, examples.

An installed wheel carries `rules/`, `schemas/` and the quickstart example
(`examples/`: its plans and assets) inside the package; a source checkout (or a
ComfyUI clone) has them at the repository root. Both work.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def rules_dir() -> Path:
    """Folder holding the versioned rule sets (`v1/`, ...). `LATENTSYNC_RULES` overrides."""
    env = os.environ.get("LATENTSYNC_RULES")
    if env:
        return Path(env)
    return _first_existing(PACKAGE_DIR / "rules", REPO_ROOT / "rules")


def default_rules_dir() -> Path:
    """The newest rule set shipped with the package (currently `v1`)."""
    return rules_dir() / "v1"


def schemas_dir() -> Path:
    return _first_existing(PACKAGE_DIR / "schemas", REPO_ROOT / "schemas")


def examples_dir() -> Path:
    """The bundled examples: the checkout's `examples/`, or, in an installed wheel, the
    quickstart plans and assets it carries (`latentsync-run example` copies them out)."""
    return _first_existing(PACKAGE_DIR / "examples", REPO_ROOT / "examples")


def reference_dir() -> Path | None:
    """`../shared/reference` beside the checkout, when present (tests only)."""
    env = os.environ.get("LATENTSYNC_SHARED")
    candidate = Path(env) / "reference" if env else REPO_ROOT.parent / "shared" / "reference"
    return candidate if candidate.is_dir() else None
