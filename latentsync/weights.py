"""Model weights: the official folder layout, explicit random weights, and fetching.

A plan's `weights:` is one of
- a folder in the official layout: `latentsync_unet.pt`, `whisper/tiny.pt`, `vae/`
  (diffusers AutoencoderKL: `config.json` + weights);
- `random` (the full 1.6 architecture at 512 px), `random-1.5` (256 px) or
  `random-small` (a tiny config for CPUs and tests). Random weights are explicit
  and logged loudly: the output is NOT lip-synced.

The model version (1.5, 1.6 or small) is a planning fact: `detect_model_version`
tells it from the weights without loading the UNet, and the rules set what depends
on it (the face resolution).

Loaded models are cached per (weights, device, dtype) so a watcher or a batch
of jobs loads them once.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from loguru import logger

from .errors import CheckpointError, InvalidInputError

# The face size each model version was trained at: a fact of the model, not a policy.
# The rules (rules/v1/82_model.yaml) choose the plan's `resolution`; the engine checks
# it against this. Upstream's 1.5 and 1.6 configs differ only here (data.resolution).
NATIVE_RESOLUTION = {"1.5": 256, "1.6": 512, "small": 128}
MODEL_VERSIONS = tuple(NATIVE_RESOLUTION)

RANDOM_WEIGHTS = {
    # name: (UNet config, VAE config, face resolution, model version)
    "random": ("1.6", "sd", NATIVE_RESOLUTION["1.6"], "1.6"),
    "random-1.6": ("1.6", "sd", NATIVE_RESOLUTION["1.6"], "1.6"),
    "random-1.5": ("1.5", "sd", NATIVE_RESOLUTION["1.5"], "1.5"),
    "random-small": ("small", "small", NATIVE_RESOLUTION["small"], "small"),
}

UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = Path("whisper") / "tiny.pt"
SYNCNET_FILE = "stable_syncnet.pt"  # StableSyncNet, for sync scores (latentsync.quality); not needed to run
# The original SyncNet, for LSE-C / LSE-D (latentsync.quality.lse); not needed to run. The hub
# repositories keep it under auxiliary/ (upstream's check_model_and_download fetches
# auxiliary/syncnet_v2.model from ByteDance/LatentSync-1.5 whatever the version).
SYNCNET_V2_HUB_PATH = "auxiliary/syncnet_v2.model"
VAE_DIR = "vae"
VERSION_FILE = "version.txt"  # written by fetch_weights; users write one to say what a folder holds

# Official hub repositories, used only by `fetch_weights` (never by tests).
HUB_REPOS = {
    "1.6": "ByteDance/LatentSync-1.6",
    "1.5": "ByteDance/LatentSync-1.5",
}
HUB_VAE_REPO = "stabilityai/sd-vae-ft-mse"
SYNCNET_V2_HUB_REPO = HUB_REPOS["1.5"]  # upstream's default source of auxiliary/syncnet_v2.model


@dataclass
class LipSyncModels:
    unet: object
    vae: object
    audio_encoder: object
    resolution: int
    version: str
    random: bool
    device: str
    dtype: object
    source: str
    # Compiled forms of these modules, owned by them (a resident process reuses them):
    # ("unet", torch.compile mode, memory format) -> compiled module. `memory_format`
    # is the format the weights are in; compiled graphs assume it.
    compiled: dict = field(default_factory=dict)
    memory_format: Optional[str] = None
    # graph keys (compile_cache.graph_key) these models have run compiled: their graphs exist
    compiled_calls: dict = field(default_factory=dict)


def is_random(weights: str) -> bool:
    return str(weights) in RANDOM_WEIGHTS


def weights_version(weights: str) -> tuple[str, int]:
    """(model version, face resolution) a weights spec implies, without loading anything.
    Raises CheckpointError naming the checkpoint when its version cannot be told."""
    version = detect_model_version(weights)
    return version, NATIVE_RESOLUTION[version]


def detect_model_version(weights: str) -> str:
    """"1.5", "1.6" or "small" for a weights spec (a random name or an official-layout folder)."""
    return model_version_and_evidence(weights)[0]


def model_version_and_evidence(weights: str) -> tuple[str, str]:
    """(model version, what told it) for a weights spec; the UNet is never loaded.

    Random names carry their version. For a folder, in order of trust: `version.txt`
    (fetch_weights writes it), an upstream config beside the checkpoint (`data:
    resolution:`), entries of the checkpoint dict besides `state_dict` (read through
    mmap: the tensors stay on disk), and last the hub repository's name in the path.
    The 1.5 and 1.6 checkpoints share every key and shape, so nothing else can tell;
    guessing would run a model at the wrong face size, so an undecided folder is an error.
    """
    if is_random(weights):
        return RANDOM_WEIGHTS[str(weights)][3], f"weights {weights}"
    folder = Path(weights)
    pin_hint = 'or pin its version in the plan (assume: {model: "1.5"})'
    if not folder.is_dir():
        raise CheckpointError("weights folder not found", path=folder,
                              hint="use `weights: random` (not lip-synced) or run `latentsync-run fetch-weights DIR`; "
                                   'to plan for weights that are not here, pin their version: assume: {model: "1.5"}')
    for detect in (_version_from_marker, _version_from_config, _version_from_checkpoint, _version_from_path):
        found = detect(folder)
        if found is not None:
            logger.info("model version {} ({})", found[0], found[1])
            return found
    checkpoint = folder / UNET_FILE
    if not checkpoint.is_file():
        raise CheckpointError("checkpoint file not found", path=checkpoint,
                              hint=f"the official layout is {UNET_FILE}, {WHISPER_FILE}, {VAE_DIR}/ "
                                   f"(run `latentsync-run fetch-weights DIR`), {pin_hint} to plan without it")
    raise CheckpointError(
        "cannot tell the model version (1.5 or 1.6): their checkpoints share every key and shape, and no "
        f"{VERSION_FILE}, config ({', '.join(UNET_CONFIG_FILES)}) or hub folder name beside it says which this is",
        path=checkpoint,
        hint=f"write {VERSION_FILE} holding 1.5 or 1.6 into {folder}, {pin_hint}",
    )


def _version_from_marker(folder: Path) -> Optional[tuple[str, str]]:
    marker = folder / VERSION_FILE
    if not marker.is_file():
        return None
    version = marker.read_text(encoding="utf-8").strip()
    if version not in MODEL_VERSIONS:
        raise CheckpointError(f"unknown model version {version!r}", path=marker,
                              hint=f"the file holds one of {', '.join(MODEL_VERSIONS)}")
    return version, str(marker)


def _version_from_config(folder: Path) -> Optional[tuple[str, str]]:
    for name in UNET_CONFIG_FILES:
        path = folder / name
        if path.is_file():
            version = _version_in(_read_config(path), path)
            if version is not None:
                return version, str(path)
    return None


def _read_config(path: Path) -> Any:
    import json

    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot parse config: {error}", path=path) from error


def _version_in(data: Any, source: Path) -> Optional[str]:
    """The version a config (or a checkpoint's extra entries) states: `version`, or the
    training `resolution` (top level or upstream's `data:` section), or the same inside `config`."""
    if not isinstance(data, Mapping):
        return None
    for key in ("model_version", "version"):
        if str(data.get(key)) in MODEL_VERSIONS:
            return str(data[key])
    section = data.get("data")
    resolution = data.get("resolution", section.get("resolution") if isinstance(section, Mapping) else None)
    if resolution is not None:
        by_resolution = {size: version for version, size in NATIVE_RESOLUTION.items()}
        if resolution not in by_resolution:
            raise CheckpointError(
                f"trained at resolution {resolution!r}, which no known LatentSync version uses "
                f"({', '.join(f'{v}: {r}' for v, r in NATIVE_RESOLUTION.items())})",
                path=source, hint=f"write {VERSION_FILE} (1.5 or 1.6) beside the checkpoint if this is one of them")
        return by_resolution[resolution]
    return _version_in(data.get("config"), source)


def _version_from_checkpoint(folder: Path) -> Optional[tuple[str, str]]:
    """Entries of the checkpoint dict other than `state_dict` (upstream saves `global_step`;
    a re-saved checkpoint may carry its `config`). mmap keeps the 5 GB of tensors on disk."""
    checkpoint = folder / UNET_FILE
    if not checkpoint.is_file() or checkpoint.stat().st_size == 0:
        return None
    import torch

    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" in str(error):  # torch's legacy format: reading it would load every tensor
            logger.debug("{}: legacy torch format, not inspected for a version", checkpoint)
            return None
        raise _unreadable(checkpoint, error) from error
    except Exception as error:  # a damaged or foreign file can fail anywhere in the unpickler
        raise _unreadable(checkpoint, error) from error
    if not isinstance(data, Mapping):
        return None
    extras = {key: value for key, value in data.items() if key != "state_dict"}
    version = _version_in(extras, checkpoint)
    return None if version is None else (version, f"{checkpoint} entries")


def _unreadable(checkpoint: Path, error: Exception) -> CheckpointError:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return CheckpointError(f"cannot read checkpoint: {message}", path=checkpoint,
                           hint="expected a torch file of tensors ({'state_dict': {...}}); "
                                "it may be truncated or corrupt: download it again")


# The hub repositories' names, as a path component: the Hugging Face cache
# (`models--ByteDance--LatentSync-1.5/snapshots/<rev>/`) and `--local-dir LatentSync-1.6`
# or `git clone` name the folder after the repository the files came from, so such a name
# is trustworthy. A looser match (any "1.5" in a folder name, as `weights-v1.5-ft512` or
# `run_2021.5`) is not: it says nothing about the training resolution.
_HUB_FOLDER = re.compile(r"^(?:models--bytedance--)?latentsync-(1\.5|1\.6)$", re.IGNORECASE)


def _version_from_path(folder: Path) -> Optional[tuple[str, str]]:
    for part in reversed(folder.absolute().parts):  # the innermost name is the most specific
        match = _HUB_FOLDER.match(part)
        if match:
            return match.group(1), f"hub folder name {part!r} in {folder}"
    return None


def check_weights_folder(folder: Path) -> None:
    """Fail fast, before any heavy work, when the official layout is incomplete."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            "weights folder not found",
            path=folder,
            hint="use `weights: random` (not lip-synced) or run `latentsync-run fetch-weights DIR`",
        )
    missing = [str(p) for p in (UNET_FILE, WHISPER_FILE, Path(VAE_DIR) / "config.json") if not (folder / p).exists()]
    if missing:
        raise CheckpointError(
            f"weights folder lacks {', '.join(missing)}",
            path=folder,
            hint="the official layout is latentsync_unet.pt, whisper/tiny.pt, vae/ (run `latentsync-run fetch-weights DIR`)",
        )


_cache: dict[tuple, LipSyncModels] = {}
_cache_lock = threading.Lock()


def load_models(weights: str, *, device: str = "cpu", dtype=None, seed: int = 0) -> LipSyncModels:
    """Load (or build) UNet, VAE and Whisper encoder on `device` in `dtype`; cached."""
    import torch

    dtype = dtype or torch.float32
    key = (str(weights), str(device), str(dtype))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        models = _load(str(weights), device=device, dtype=dtype, seed=seed)
        _cache.clear()  # one model set at a time: VRAM is precious
        _cache[key] = models
        return models


def models_resident(weights: str, *, device: str = "cpu", dtype=None) -> bool:
    """Whether `load_models` would return models this process already holds (no load)."""
    import torch

    key = (str(weights), str(device), str(dtype or torch.float32))
    with _cache_lock:
        return key in _cache


def resident_compiled_graphs() -> set[str]:
    """Graph keys whose compiled graphs the models this process holds have run."""
    with _cache_lock:
        return {key for models in _cache.values() for key in models.compiled_calls}


def clear_model_cache() -> None:
    with _cache_lock:
        _cache.clear()


# Where a model's weights change dtype when they also change device: "device" copies each
# tensor as it is and casts it on the target (a GPU casts 1.3 G weights in milliseconds),
# "host" is torch's blocking `.to(device, dtype)`, which casts on the CPU first. The
# official UNet checkpoint is float32 and runs in fp16 on GPUs (benchmarks/model_load.py
# times both: docs/performance.md, "Time to result").
LOAD_CAST_ON = "device"


def place_module(module, device, dtype, *, cast_on: Optional[str] = None):
    """`module` on `device` in `dtype` (floating-point tensors only), tensor by tensor: the
    extra memory at any moment is one tensor, whichever side casts."""
    import torch

    target = torch.device(device)
    if (cast_on or LOAD_CAST_ON) == "host":
        # nn.Module.to, not ModelMixin.to: diffusers' logs a spurious "keep in float32: []" warning
        return torch.nn.Module.to(module, device=target, dtype=dtype)

    def convert(tensor):
        moved = tensor if tensor.device == target else tensor.to(target)
        return moved.to(dtype) if moved.is_floating_point() and moved.dtype != dtype else moved

    return module._apply(convert)


def _load(weights: str, *, device, dtype, seed) -> LipSyncModels:
    import torch

    from .models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
    from .models.whisper_encoder import load_whisper_encoder, random_whisper_encoder
    from .pipeline.vae import build_random_vae, load_vae

    if is_random(weights):
        unet_name, vae_name, res, version = RANDOM_WEIGHTS[weights]
        logger.warning(
            "weights: {} -> RANDOM weights ({} architecture). The output is NOT lip-synced; "
            "use a folder of official weights for real results.",
            weights,
            unet_name,
        )
        torch.manual_seed(seed)
        unet = UNet3DConditionModel.from_config(builtin_unet_config(unet_name))
        randomize_zero_initialized(unet, seed=seed)
        vae = build_random_vae(vae_name, seed=seed)
        audio_encoder = random_whisper_encoder(seed=seed)
        random = True
    else:
        from .models.unet_loading import load_unet_checkpoint

        folder = Path(weights)
        check_weights_folder(folder)
        version, res = weights_version(weights)
        config = _folder_unet_config(folder) or builtin_unet_config(version)
        unet = load_unet_checkpoint(folder / UNET_FILE, config, device="cpu", dtype=torch.float32)
        vae = load_vae(folder / VAE_DIR)
        audio_encoder = load_whisper_encoder(folder / WHISPER_FILE)
        random = False
    unet = place_module(unet, device, dtype).eval().requires_grad_(False)
    vae = place_module(vae, device, dtype).eval().requires_grad_(False)
    # Whisper runs once per clip; fp32 keeps its features faithful at negligible cost.
    audio_encoder = place_module(audio_encoder, device, torch.float32).eval().requires_grad_(False)
    return LipSyncModels(
        unet=unet,
        vae=vae,
        audio_encoder=audio_encoder,
        resolution=res,
        version=version,
        random=random,
        device=str(device),
        dtype=dtype,
        source=weights,
    )


UNET_CONFIG_FILES = ("unet_config.json", "config.yaml", "unet_config.yaml")


def _folder_unet_config(folder: Path):
    """A UNet config kept beside the checkpoint (upstream yaml or JSON), if any."""
    from .models.unet3d import load_unet_config

    for name in UNET_CONFIG_FILES:
        if (folder / name).is_file():
            logger.info("UNet config from {}", folder / name)
            return load_unet_config(folder / name)
    return None


def _fetch_syncnet_v2(dest: Path, fetched_repo: str, snapshot_download) -> None:
    """auxiliary/syncnet_v2.model (LSE-C / LSE-D only): from the version's repository when it has
    it, else from upstream's default source. Optional: a failure is a warning, not an error."""
    if not (dest / SYNCNET_V2_HUB_PATH).is_file() and fetched_repo != SYNCNET_V2_HUB_REPO:
        try:
            snapshot_download(repo_id=SYNCNET_V2_HUB_REPO, local_dir=str(dest), allow_patterns=[SYNCNET_V2_HUB_PATH])
        except Exception as error:  # noqa: BLE001 - an optional file must not fail the runner's weights
            logger.warning("could not fetch {} from {}: {}", SYNCNET_V2_HUB_PATH, SYNCNET_V2_HUB_REPO, error)
    if not (dest / SYNCNET_V2_HUB_PATH).is_file():
        logger.warning("no {} fetched: LSE-C / LSE-D (latentsync-eval) will need it", SYNCNET_V2_HUB_PATH)


def fetch_weights(dest: Path, *, version: str = "1.6", snapshot_download=None) -> Path:
    """Download the official layout into `dest` (needs internet and huggingface_hub).

    `snapshot_download` is injectable so tests can point it at a local fake
    repository; nothing in the test suite reaches the network.
    """
    if version not in HUB_REPOS:
        raise InvalidInputError(f"unknown LatentSync version {version!r}", hint=f"choose one of {sorted(HUB_REPOS)}")
    if snapshot_download is None:
        try:
            from huggingface_hub import snapshot_download
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise InvalidInputError(
                "fetch-weights needs huggingface_hub", hint='pip install "latentsync-runner[fetch]"'
            ) from exc
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("fetching LatentSync {} into {}", version, dest)
    snapshot_download(
        repo_id=HUB_REPOS[version], local_dir=str(dest),
        allow_patterns=[UNET_FILE, str(WHISPER_FILE), SYNCNET_FILE, SYNCNET_V2_HUB_PATH],
    )
    if not (dest / SYNCNET_FILE).is_file():
        logger.warning("{} holds no {}: lip-sync scores (latentsync-eval) will need it", HUB_REPOS[version], SYNCNET_FILE)
    _fetch_syncnet_v2(dest, HUB_REPOS[version], snapshot_download)
    snapshot_download(
        repo_id=HUB_VAE_REPO,
        local_dir=str(dest / VAE_DIR),
        allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"],
    )
    (dest / "version.txt").write_text(version + "\n", encoding="utf-8")
    check_weights_folder(dest)
    logger.info("weights ready in {}", dest)
    return dest
