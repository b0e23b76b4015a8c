"""latentsync-runner: LatentSync 1.5/1.6 lip-sync, with optimization policy as data.

Importing this package is cheap: heavy modules (torch, diffusers, PyAV) are
imported by the submodules that need them. Intra-package imports are relative so
that a ComfyUI clone can load the package under its own module name.
"""
__version__ = "0.1.0"
