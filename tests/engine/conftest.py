from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latentsync.engine import load_ruleset
from latentsync.paths import default_rules_dir


@pytest.fixture(scope="session")
def ruleset():
    """The bundled rules, loaded once (tests must not reload or close it)."""
    return load_ruleset()


@pytest.fixture
def rules_copy(tmp_path) -> Path:
    """A private copy of the bundled rules folder, free to edit."""
    target = tmp_path / "rules_copy"
    shutil.copytree(default_rules_dir(), target)
    return target
