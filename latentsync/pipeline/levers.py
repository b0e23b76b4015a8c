"""Applying a run's settings to torch and to the models: device and dtype, the UNet's
kernels and memory format, torch.compile, the VAE options, and the process-wide torch
flags a run sets (and restores: ComfyUI runs every node pack in one process).

Compiled modules belong to the loaded models (`LipSyncModels.compiled`), so a resident
process (drop folder, ComfyUI) compiles once per model set and format, and nothing
here is module-global.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

import torch
from loguru import logger

from ..settings import RunSettings
from .vae import VaeOptions, apply_vae_options

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(settings: RunSettings) -> tuple[torch.device, torch.dtype, list[str]]:
    """(device, dtype, warnings) a run will use: the plan's, or the CPU in fp32 where the
    plan's cannot run here (said in the warnings, never silently)."""
    warnings: list[str] = []
    if settings.device == "cuda" and not torch.cuda.is_available():
        warnings.append("the plan asked for CUDA but none is available: running on the CPU in fp32")
        return torch.device("cpu"), torch.float32, warnings
    dtype = _DTYPES[settings.precision]
    if settings.device == "cpu" and dtype == torch.float16:
        warnings.append("fp16 is not supported on the CPU: using fp32")
        dtype = torch.float32
    return torch.device(settings.device), dtype, warnings


def torch_compile_mode(settings: RunSettings, *, allow_graphs: bool = True) -> Optional[str]:
    """torch.compile mode for the plan's `compile` + `cuda_graphs`; None when compile is off."""
    if not settings.compiles:
        return None
    graphs = settings.cuda_graphs and allow_graphs
    return {
        ("default", False): "default",
        ("default", True): "reduce-overhead",
        ("max-autotune", False): "max-autotune-no-cudagraphs",
        ("max-autotune", True): "max-autotune",
    }[(settings.compile, graphs)]


def memory_format_name(settings: RunSettings) -> str:
    return "channels_last" if settings.channels_last else "contiguous"


def _memory_format(name: str) -> torch.memory_format:
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its artifacts between runs on this machine's CUDA device (or
    the CPU): the keyed folder of `compile_cache.CompileCache`, or `TORCHINDUCTOR_CACHE_DIR`
    when the user set it. Inductor's default is a folder under /tmp, which many systems
    empty at reboot: a warm cache turns a 100 s cold compile of the UNet into seconds, so
    it belongs with the user's caches."""
    from .compile_cache import CompileCache

    if os.getenv("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return CompileCache.for_device(device).inductor_dir


@contextlib.contextmanager
def run_scope(settings: RunSettings, device: torch.device, cache=None) -> Iterator[None]:
    """The process-wide state one run needs, restored when it ends.

    TF32 and cuDNN autotuning are torch-global flags; inductor and Triton find their cache
    folders through environment variables, read whenever they compile (during a run's first
    calls): they point at `cache` (a `CompileCache`, keyed by card and versions) so kernels
    built by one process are found by the next. Each is set for the run and put back
    afterwards, so code sharing the process (ComfyUI and its other node packs) sees its own
    values again.
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    try:
        # set on every device (they only matter on CUDA), so a run is the same code everywhere
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        with cache.in_use() if cache is not None else contextlib.nullcontext():
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def apply_unet_kernels(unet, settings: RunSettings, warnings: list[str]) -> None:
    """`temporal_attention_kernel` and `geglu_kernel`. Where the plan asks for a Triton
    kernel that cannot run here (no `triton` package, or a CPU), the run keeps PyTorch's
    kernel (same math) and says so in `warnings` rather than failing the job."""
    for key, wanted, fallback, setter in (
        ("temporal_attention_kernel", settings.temporal_attention_kernel, "sdpa", unet.set_temporal_attention_kernel),
        ("geglu_kernel", settings.geglu_kernel, "torch", unet.set_geglu_kernel),
    ):
        try:
            setter(wanted)
        except RuntimeError as error:
            message = f"{key}: {wanted} asked for, running {fallback}: {error}"
            logger.warning(message)
            warnings.append(message)
            setter(fallback)


def needs_fresh_models(models, settings: RunSettings) -> bool:
    """Whether these models carry compiled graphs traced for another memory format.

    Compiled graphs assume the weights' strides; switching the format of weights that
    have graphs would need torch's global compile caches thrown away (which would also
    throw away every other library's graphs in this process). Fresh models are cheaper.
    """
    return bool(models.compiled) and models.memory_format not in (None, memory_format_name(settings))


def prepare_unet(models, settings: RunSettings, warnings: list[str]):
    """The UNet as this run calls it: attention backend, temporal packing and kernels,
    memory format, torch.compile (cached on the models): of the whole module (a compiled
    wrapper is returned) or, with `compile_scope: blocks`, of each repeated block in place
    (the UNet module itself is returned)."""
    unet = models.unet
    unet.set_attention_backend(settings.attention_backend)
    unet.set_temporal_attention_packing(settings.temporal_attention_pack)
    apply_unet_kernels(unet, settings, warnings)
    fmt = memory_format_name(settings)
    if needs_fresh_models(models, settings):
        raise RuntimeError(f"models compiled for {models.memory_format} cannot switch to {fmt}: load them again")
    unet.to(memory_format=_memory_format(fmt))
    models.memory_format = fmt
    mode = torch_compile_mode(settings)
    blocks = mode is not None and settings.compile_scope == "blocks"
    _compile_unet_blocks(models, unet, mode if blocks else None, fmt)
    if mode is None or blocks:
        return unet
    key = ("unet", mode, fmt)
    if key not in models.compiled:
        logger.info("compiling the UNet with torch.compile(mode={!r}); the first chunk is slow", mode)
        models.compiled[key] = torch.compile(unet, mode=mode, dynamic=False)
    return models.compiled[key]


def unet_blocks(unet) -> list[torch.nn.Module]:
    """The repeated blocks `compile_scope: blocks` compiles in place: every ResNet block,
    spatial transformer and motion module of the down, mid and up blocks (what those
    blocks call, in order). The glue between them (input and output convolutions, time
    embedding, down- and upsamplers, skip concatenations) stays eager."""
    parts: list[torch.nn.Module] = []
    for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks):
        for name in ("resnets", "attentions", "motion_modules"):
            parts.extend(getattr(block, name, None) or ())
    return parts


# torch.compile's limit on graphs per code object, per compiled block: blocks of one class
# share their `forward`, and each of its input shapes (channels, resolution, CFG's batch)
# is one graph. Past the limit dynamo runs the block eagerly, with one warning.
GRAPHS_PER_BLOCK = 8


def _compile_unet_blocks(models, unet, mode: Optional[str], fmt: str) -> None:
    """`compile_scope: blocks`: each of `unet_blocks` compiled in place (`Module.compile`),
    or back to eager (`mode` None). Blocks of a class share one `forward`, so torch
    compiles each distinct input shape once, not once per block. The compiled calls
    belong to the models (key ("unet-blocks", mode, fmt)) and are put back, not compiled
    again, when a later plan asks for them."""
    wanted = None if mode is None else (mode, fmt)
    parts = unet_blocks(unet)
    stale = [index for index, part in enumerate(parts) if getattr(part, "_latentsync_compiled", None) != wanted]
    if wanted is None:
        for index in stale:
            parts[index]._compiled_call_impl = None  # back to eager; the compiled calls stay in models.compiled
            parts[index]._latentsync_compiled = None
        return
    key = ("unet-blocks", mode, fmt)
    kept = models.compiled.get(key)
    if kept is None and stale:
        counts: dict[str, int] = {}
        for part in parts:
            counts[type(part).__name__] = counts.get(type(part).__name__, 0) + 1
        from torch._dynamo import config as dynamo

        # raised for the process, never lowered: compiled blocks may meet new shapes in any later run
        dynamo.recompile_limit = max(dynamo.recompile_limit,
                                     min(GRAPHS_PER_BLOCK * max(counts.values()), dynamo.accumulated_recompile_limit))
        logger.info("compiling the UNet's {} blocks ({}) in place with torch.compile(mode={!r}); the first chunk "
                    "is slow", len(parts), ", ".join(f"{n} {name}" for name, n in counts.items()), mode)
    for index in stale:
        part = parts[index]
        if kept is not None:
            part._compiled_call_impl = kept[index]
        else:
            part.compile(mode=mode, dynamic=False)
        part._latentsync_compiled = wanted
    models.compiled[key] = tuple(part._compiled_call_impl for part in parts)


def prepare_vae(models, settings: RunSettings) -> VaeOptions:
    """Apply the VAE levers: slicing/tiling/batch (VaeOptions), memory format, torch.compile.

    The encoder and decoder are compiled in place (`Module.compile`), so the VAE keeps
    its own methods (slicing, tiling) and state-dict keys. CUDA graphs are never used
    for the VAE: its outputs are collected over several calls, and a replayed graph
    would overwrite the previous call's output.
    """
    vae = models.vae
    options = VaeOptions.from_settings(settings)
    apply_vae_options(vae, options)
    fmt = memory_format_name(settings)
    if needs_fresh_models(models, settings):
        raise RuntimeError(f"models compiled for {models.memory_format} cannot switch to {fmt}: load them again")
    vae.to(memory_format=_memory_format(fmt))
    models.memory_format = fmt
    mode = torch_compile_mode(settings, allow_graphs=False)
    for part in (vae.encoder, vae.decoder):
        wanted = None if mode is None else (mode, fmt)
        if getattr(part, "_latentsync_compiled", None) == wanted:
            continue
        if wanted is None:
            part._compiled_call_impl = None  # back to eager; the compiled form stays in models.compiled
        else:
            logger.info("compiling the VAE {} with torch.compile(mode={!r})", type(part).__name__, mode)
            part.compile(mode=mode, dynamic=False)
            models.compiled[("vae", type(part).__name__, mode, fmt)] = part._compiled_call_impl
        part._latentsync_compiled = wanted
    return options
