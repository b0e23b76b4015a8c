"""requirements.txt (ComfyUI-Manager) lists the same runtime dependencies as pyproject, minus torch.
More about what gets installed: tests/install/."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def names(lines):
    return {re.split(r"[<>=!~;\[ ]", line.split("#", 1)[0].strip(), maxsplit=1)[0].lower() for line in lines
            if line.split("#", 1)[0].strip()}


def test_requirements_match_pyproject_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert names((ROOT / "requirements.txt").read_text().splitlines()) == names(project["dependencies"]) - {"torch"}
