#!/usr/bin/env bash
# A CPU-only Python environment that runs a real ComfyUI with this node pack, for
# scripts/comfyui_smoke.py. Nothing here touches the ComfyUI checkout or this repository.
#
#   scripts/comfyui_cpu_env.sh /path/to/ComfyUI /path/to/venv
#   COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/comfy/test_real_comfyui.py
#
# Why the CUDA stand-in: PyPI's torchvision/torchaudio wheels (the only ones a machine that
# reaches PyPI alone can get) link against libc10_cuda.so and libtorch_cuda.so, which the
# CPU torch wheel does not have. ComfyUI imports both at start-up. We build a small library
# exporting just the CUDA symbols those wheels reference (each aborts if ever called; none is
# on a CPU torch) and preload it from a .pth file in the venv. The CPU kernels of
# torchvision/torchaudio are the real ones.
set -euo pipefail

COMFYUI_DIR=${1:?usage: $0 COMFYUI_DIR VENV}
VENV=${2:?usage: $0 COMFYUI_DIR VENV}
REPO=$(cd "$(dirname "$0")/.." && pwd)
TORCH_VERSION=2.13.0          # the CPU build; never let pip pick a CUDA one
TORCHVISION_VERSION=0.28.0    # pairs with torch 2.13
TORCHAUDIO_VERSION=2.11.0     # the newest on PyPI; its ops we use are pure Python

python3.11 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIN=$(mktemp)
echo "torch==$TORCH_VERSION" > "$PIN"
pip install -q "torch==$TORCH_VERSION"
pip install -q --no-deps "torchvision==$TORCHVISION_VERSION" "torchaudio==$TORCHAUDIO_VERSION"
grep -v -E '^(torch|torchvision|torchaudio)$' "$COMFYUI_DIR/requirements.txt" > "$PIN.req"
pip install -q -r "$PIN.req" -c "$PIN"
pip install -q -e "$REPO" -c "$PIN"

SITE=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STUBS="$VENV/cuda-stubs"
mkdir -p "$STUBS"
TORCH_LIB="$SITE/torch/lib"
nm -D --defined-only "$TORCH_LIB"/libc10.so "$TORCH_LIB"/libtorch_cpu.so "$TORCH_LIB"/libtorch.so \
    "$TORCH_LIB"/libtorch_python.so | awk '{print $3}' | sort -u > "$STUBS/torch-symbols.txt"
{ nm -D --undefined-only "$SITE/torchvision/_C.so"; nm -D --undefined-only "$SITE"/torchaudio/lib/*.so; } \
    | awk '{print $2}' | grep -v @ | sort -u | comm -23 - "$STUBS/torch-symbols.txt" \
    | grep -v -E '^(_ITM_|__gmon_start__|_ZTH|dl(open|close|sym)$|_ZNSt7__cxx11)' > "$STUBS/needed.txt"
python - "$STUBS" <<'EOF'
import sys
from pathlib import Path

stubs = Path(sys.argv[1])
lines = ["/* CPU-only stand-ins for the CUDA symbols PyPI torchvision/torchaudio link against. */",
         "#include <stdio.h>", "#include <stdlib.h>",
         'static void called(const char *name) { fprintf(stderr, "CUDA stand-in called: %s\\n", name); abort(); }']
for i, name in enumerate((stubs / "needed.txt").read_text().split()):
    if name == "_ZN3c104cuda20CUDACachingAllocator9allocatorE":  # a variable (the allocator pointer)
        lines.append(f'void *stub_{i} __asm__("{name}") = 0;')
    elif name == "_ZN3c104cuda12device_countEv":  # no CUDA device
        lines.append(f'signed char stub_{i}(void) __asm__("{name}"); signed char stub_{i}(void) {{ return 0; }}')
    elif name == "aoti_torch_get_current_cuda_stream":  # an error code, not a crash
        lines.append(f'int stub_{i}(void) __asm__("{name}"); int stub_{i}(void) {{ return 1; }}')
    else:
        lines.append(f'void stub_{i}(void) __asm__("{name}"); void stub_{i}(void) {{ called("{name}"); }}')
(stubs / "cuda_stubs.c").write_text("\n".join(lines) + "\n")
EOF
gcc -shared -fPIC -O1 -Wl,-soname,libc10_cuda.so -o "$STUBS/libc10_cuda.so" "$STUBS/cuda_stubs.c"
gcc -shared -fPIC -O1 -Wl,-soname,libtorch_cuda.so -o "$STUBS/libtorch_cuda.so" -x c /dev/null
cat > "$SITE/zz_cpu_cuda_stubs.pth" <<EOF
import ctypes; ctypes.CDLL("$STUBS/libc10_cuda.so", mode=ctypes.RTLD_GLOBAL); ctypes.CDLL("$STUBS/libtorch_cuda.so", mode=ctypes.RTLD_GLOBAL)
EOF
rm -f "$PIN" "$PIN.req"

python -c "import torch, torchvision, torchaudio; assert not torch.version.cuda; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'torchaudio', torchaudio.__version__)"
echo "ready: COMFYUI_PYTHON=$VENV/bin/python python scripts/comfyui_smoke.py $COMFYUI_DIR --quick"
