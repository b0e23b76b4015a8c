"""Hand-written GPU kernels (Triton) for the spots where PyTorch's own kernels waste the card.

Triton is optional: CUDA builds of torch on Linux ship it, other installs may not.
`triton_available()` says whether the kernels can run; the modules here import
Triton at their own import, so import them only after checking.
"""
from __future__ import annotations

import importlib.util
import os


def triton_available(device_type: str = "cuda") -> bool:
    """True when the Triton kernels can run on tensors of `device_type`.

    On CUDA: the `triton` package is importable. On the CPU only under Triton's
    interpreter (`TRITON_INTERPRET=1`, used by the CPU tests).
    """
    if importlib.util.find_spec("triton") is None:
        return False
    if device_type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
