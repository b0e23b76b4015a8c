from pathlib import Path

import pytest

from latentsync.distributed import RulesBundle, pack_rules, unpack_rules
from latentsync.errors import InvalidInputError


def test_rules_round_trip_skips_hidden_files(tmp_path: Path):
    rules = tmp_path / "v9"
    (rules / "sub").mkdir(parents=True)
    (rules / "a.yaml").write_text("schema_version: 1\n")
    (rules / "sub" / "b.yaml").write_text("x: 2\n")
    (rules / ".swp").write_text("editor junk")
    bundle = pack_rules(rules)
    assert set(bundle.files) == {"a.yaml", "sub/b.yaml"}
    folder = unpack_rules(bundle, tmp_path / "worker")
    assert folder.name == "v9"
    assert (folder / "sub" / "b.yaml").read_text() == "x: 2\n"
    assert not (folder / ".swp").exists()
    # The digest follows the content, not the location.
    assert pack_rules(folder).digest == bundle.digest
    (rules / "a.yaml").write_text("schema_version: 2\n")
    assert pack_rules(rules).digest != bundle.digest


def test_bad_rules_folders_are_named(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="not found") as info:
        pack_rules(tmp_path / "missing")
    assert info.value.path == str(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="empty"):
        pack_rules(tmp_path / "empty")


def test_a_bundle_cannot_write_outside_its_folder(tmp_path: Path):
    evil = RulesBundle(name="v1", files={"../../escape.yaml": b"x"}, digest="0")
    with pytest.raises(InvalidInputError, match="outside"):
        unpack_rules(evil, tmp_path / "worker")
    assert not (tmp_path / "escape.yaml").exists()
