#!/usr/bin/env bash
# The install paths users take, each checked in a fresh virtualenv on a machine with no C
# compiler (CC=false: nothing may need to build), none of them editable:
#   1. every dependency resolves to wheels on Linux, Windows and macOS, CPython 3.10-3.12;
#   2. `python -m build` makes the wheel and the sdist; the wheel carries the rules, the
#      schemas and the quickstart example, and no model file;
#   3. the built wheel, installed into a fresh venv (`pip install latentsync-runner`), runs
#      the quickstart from the installed package, away from this checkout;
#   4. the manual ComfyUI install (`pip install -r requirements.txt` into a Python that has
#      torch) and ComfyUI-Manager's (`pip install LINE` for each line of requirements.txt), each
#      in its own venv: the pack then loads as ComfyUI loads it, plans and finds faces.
# Every pip run's output is kept under the scratch folder and must hold no ERROR line.
#
#   .ci/install_check.sh            (10-15 minutes on 2 cores; needs PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0   # the CPU build; installed first so nothing can pull a CUDA one
WORK=$(mktemp -d "${TMPDIR:-/tmp}/latentsync-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export CC=false CXX=false PIP_DISABLE_PIP_VERSION_CHECK=1

step() { echo; echo "== $*"; SECONDS=0; }
took() { echo "   ($SECONDS s)"; }
# run a pip command, keep its output, fail on an ERROR line (pip's resolver complaints included)
clean_pip() {
    local log=$WORK/pip-$((++PIP_RUNS)).log
    if ! "$@" >"$log" 2>&1; then cat "$log"; echo "FAIL: $*"; return 1; fi
    if grep -n "ERROR" "$log"; then echo "FAIL: ERROR line(s) from: $*"; return 1; fi
}
PIP_RUNS=0

step "1. wheels for every dependency on every target"
"$PYTHON" .ci/check_wheels.py
took

step "2. build the wheel and the sdist"
"$PYTHON" -m venv "$WORK/build"
clean_pip "$WORK/build/bin/pip" install build
"$WORK/build/bin/python" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
"$WORK/build/bin/python" - "$WORK/dist" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path
dist = Path(sys.argv[1])
[wheel] = dist.glob("*.whl"); [sdist] = dist.glob("*.tar.gz")
names = zipfile.ZipFile(wheel).namelist()
need = ["latentsync/rules/v1/00_defaults.yaml", "latentsync/rules/v1/gpu_profiles.yaml",
        "latentsync/schemas/run_plan.schema.json", "latentsync/schemas/plan.schema.json",
        "latentsync/examples/quickstart.yaml", "latentsync/examples/plan.yaml",
        "latentsync/examples/assets/quickstart.mp4", "latentsync/examples/assets/quickstart_speech.wav"]
missing = [name for name in need if name not in names]
models = [name for name in names if name.endswith((".task", ".tflite", ".onnx", ".pt", ".safetensors"))]
top = sorted({name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")})
size = wheel.stat().st_size
print(f"wheel {wheel.name}: {len(names)} files, {size / 1e6:.2f} MB, top level {top}; "
      f"rules {sum(n.startswith('latentsync/rules/') for n in names)}, "
      f"schemas {sum(n.startswith('latentsync/schemas/') for n in names)}, "
      f"examples {sum(n.startswith('latentsync/examples/') for n in names)} files")
sdist_names = tarfile.open(sdist).getnames()
sdist_need = ["rules/v1/00_defaults.yaml", "schemas/run_plan.schema.json", "examples/assets/quickstart.mp4",
              "requirements.txt", "__init__.py", "pyproject.toml"]
sdist_missing = [n for n in sdist_need if not any(name.endswith("/" + n) for name in sdist_names)]
print(f"sdist {sdist.name}: {len(sdist_names)} entries, {sdist.stat().st_size / 1e6:.2f} MB")
problems = ([f"wheel lacks {missing}"] if missing else []) + ([f"wheel carries model files {models}"] if models else []) \
    + ([f"wheel installs top-level {top}, want ['latentsync']"] if top != ["latentsync"] else []) \
    + ([f"wheel is {size / 1e6:.1f} MB (> 3 MB)"] if size > 3e6 else []) \
    + ([f"sdist lacks {sdist_missing}"] if sdist_missing else [])
if problems:
    sys.exit("FAIL: " + "; ".join(problems))
EOF
took

step "3. the wheel in a fresh venv: the quickstart from the installed package"
"$PYTHON" -m venv "$WORK/wheel"
clean_pip "$WORK/wheel/bin/pip" install "$TORCH"
clean_pip "$WORK/wheel/bin/pip" install "$WORK"/dist/*.whl
clean_pip "$WORK/wheel/bin/pip" check
mkdir -p "$WORK/elsewhere"
(
    cd "$WORK/elsewhere"   # no checkout on the path: everything comes from site-packages
    BIN=$WORK/wheel/bin
    "$BIN/python" -c "import latentsync, latentsync.paths as p; print('package', latentsync.__file__); \
print('rules', p.rules_dir()); print('examples', p.examples_dir()); assert 'site-packages' in str(p.examples_dir())"
    "$BIN/latentsync-rules" validate
    "$BIN/latentsync-rules" test | tail -1
    "$BIN/latentsync-rules" explain "$("$BIN/python" -c 'import latentsync.paths as p; print(p.examples_dir())')/plan.yaml" \
        --assume-gpu rtx4060-8gb --duration 30 | tail -3
    "$BIN/latentsync-run" example quickstart --out quickstart
    "$BIN/python" - <<'EOF'
import json
from pathlib import Path
video = Path("quickstart/out/quickstart_synced.mp4")
report = json.loads(Path(str(video) + ".report.json").read_text())
facts = report.get("run_plan", report.get("plan", {})).get("facts", {})
print(f"{video}: {video.stat().st_size} bytes; report rules_engine={facts.get('rules_engine')!r}")
import cv2, importlib.metadata as md
print(f"cv2 {cv2.__version__}; " + ", ".join(f"{d.metadata['Name']} {d.version}" for d in md.distributions()
                                            if d.metadata["Name"].startswith("opencv")))
assert video.stat().st_size > 10_000
EOF
)
took

mkdir -p "$WORK/custom_nodes"
ln -s "$REPO" "$WORK/custom_nodes/latentsync-runner"   # what `git clone ... custom_nodes/latentsync-runner` gives

step "4a. the manual ComfyUI install: pip install -r requirements.txt in a fresh venv with torch"
"$PYTHON" -m venv "$WORK/manual"
clean_pip "$WORK/manual/bin/pip" install "$TORCH"   # ComfyUI's own torch
clean_pip "$WORK/manual/bin/pip" install -r requirements.txt
clean_pip "$WORK/manual/bin/pip" check
(cd "$WORK" && "$WORK/manual/bin/python" "$REPO/.ci/comfy_load.py" "$WORK/custom_nodes/latentsync-runner")
took

step "4b. ComfyUI-Manager's install: pip install LINE for each line of requirements.txt, in a fresh venv"
"$PYTHON" -m venv "$WORK/manager"
clean_pip "$WORK/manager/bin/pip" install "$TORCH"
while IFS= read -r line; do
    line=${line%%#*}; line=$(echo "$line" | xargs)
    [ -n "$line" ] && clean_pip "$WORK/manager/bin/pip" install "$line"
done <requirements.txt
clean_pip "$WORK/manager/bin/pip" check
(cd "$WORK" && "$WORK/manager/bin/python" "$REPO/.ci/comfy_load.py" "$WORK/custom_nodes/latentsync-runner")
took

echo
echo "install checks: every path installed without a compiler and without an ERROR line"
