"""Session-wide test set-up.

The Triton kernels (latentsync/kernels) run on a CPU only under Triton's interpreter.
Triton decides interpreter or compiler when a kernel is defined, so without a GPU the
switch is turned on here, before any test imports a kernel module; the kernel tests
then run the real kernel code, slowly, on numpy.
"""
from __future__ import annotations

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
