#!/usr/bin/env python3
"""Every runtime dependency installs from wheels where the users are.

For each target (Linux x86_64, Windows amd64, macOS arm64) and CPython 3.10, 3.11 and
3.12, pip's own resolver resolves requirements.txt (the runtime dependencies minus torch;
tests/test_requirements.py holds it equal to pyproject.toml's) with --only-binary=:all:
as a dry run: no download of the wheels themselves (pip reads their metadata), nothing
installed. A dependency, direct or transitive, that exists only as a source archive for
some target fails that target, and with it this script (exit 1).

It also records that durable-rules still ships no wheel (the reason it is the optional
`durable` extra and not a base dependency); should it ever ship wheels for every target,
the script says so, and the extra could become a base dependency again.

torch is not checked here: it is installed first, per machine (the CPU build, a CUDA
build, or ComfyUI's own), and PyTorch publishes wheels for every target above.
Needs network access to PyPI (CI has it). About a minute and a half, three at a time.

    python3 .ci/check_wheels.py [--requirements FILE] [--jobs N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12")
# glibc 2.28 (Debian 10, Ubuntu 20.04, RHEL 8) and newer; pip expands manylinux2014 to 2010 and 1,
# and a macOS version to the older ones, but not manylinux_2_28 to the glibc versions below it.
MANYLINUX = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)) + ("manylinux2014_x86_64",)
TARGETS = {
    "linux-x86_64": MANYLINUX,
    "windows-amd64": ("win_amd64",),
    "macos-arm64": ("macosx_14_0_arm64",),
}


def resolve(requirements: list[str], platforms: tuple[str, ...], python: str) -> tuple[bool, str]:
    """(ok, what pip said: the wheels it picked, or its error)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
                   "--target", str(Path(scratch) / "target"), "--report", str(report)]
        for platform in platforms:
            command += ["--platform", platform]
        done = subprocess.run(command + requirements, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            return False, " | ".join(errors[-2:]) or done.stderr.strip()[-400:]
        picked = json.loads(report.read_text())["install"]
        sources = [item["metadata"]["name"] for item in picked
                   if not item["download_info"]["url"].endswith(".whl")]
        if sources:
            return False, "source archives picked: " + ", ".join(sources)
        return True, f"{len(picked)} wheels"


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    requirements = requirement_lines(args.requirements)
    jobs = [(name, platforms, python) for name, platforms in TARGETS.items() for python in PYTHONS]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: resolve(requirements, job[1], job[2]), jobs))
        durable = pool.submit(resolve, ["durable-rules==2.0.28"], TARGETS["windows-amd64"], "3.12").result()
    failed = 0
    for (name, _platforms, python), (ok, said) in zip(jobs, results):
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {name:14s} cp{python.replace('.', '')}  {said}")
    print(f"wheels only: {len(jobs) - failed} of {len(jobs)} targets resolve {args.requirements.name} without "
          f"building anything")
    if durable[0]:
        print("note: durable-rules now resolves to a wheel on windows-amd64 cp312: it may no longer need the "
              "`durable` extra")
    else:
        print("durable-rules 2.0.28: no wheel (source only, needs a C compiler): stays the optional `durable` extra")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
