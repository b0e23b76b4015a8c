"""`latentsync-run example`: the quickstart runs from what an installed wheel carries."""
from __future__ import annotations

import shutil

from latentsync import paths
from latentsync.cli.run import main

ROOT = paths.REPO_ROOT


def test_examples_dir_prefers_the_copy_inside_the_package(tmp_path, monkeypatch):
    assert paths.examples_dir() == ROOT / "examples"  # a checkout: the repository's folder
    installed = tmp_path / "site-packages" / "latentsync"
    (installed / "examples").mkdir(parents=True)
    monkeypatch.setattr(paths, "PACKAGE_DIR", installed)
    assert paths.examples_dir() == installed / "examples"  # an installed wheel: its own copy


def test_example_copies_the_bundled_plan_and_assets_and_plans_it(tmp_path, monkeypatch, capsys):
    # lay the examples out as the wheel's force-include does, away from the checkout
    installed = tmp_path / "site-packages" / "latentsync"
    for plan in ("quickstart.yaml", "plan.yaml"):
        (installed / "examples").mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "examples" / plan, installed / "examples" / plan)
    shutil.copytree(ROOT / "examples" / "assets", installed / "examples" / "assets")
    monkeypatch.setattr(paths, "PACKAGE_DIR", installed)
    out = tmp_path / "demo"
    assert main(["example", "quickstart", "--out", str(out), "--dry-run"]) == 0
    assert sorted(p.name for p in (out / "assets").iterdir()) == ["quickstart.mp4", "quickstart_speech.wav"]
    assert (out / "quickstart.yaml").read_text() == (ROOT / "examples" / "quickstart.yaml").read_text()
    printed = capsys.readouterr().out
    assert f"-> {out / 'out' / 'quickstart_synced.mp4'}" in printed and "steps" in printed


def test_example_without_bundled_files_is_invalid_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "nothing")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "nothing")
    assert main(["example", "--out", str(tmp_path / "demo"), "--dry-run"]) == 2
    assert "bundled example 'quickstart' is not installed" in capsys.readouterr().err
