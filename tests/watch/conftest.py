"""Fixtures for the drop-folder tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from watch_helpers import write_rules


@pytest.fixture
def drop(tmp_path: Path):
    inbox, outbox, rules = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "rules"
    inbox.mkdir()
    write_rules(rules, "v1")
    return inbox, outbox, rules
