"""One library entry point that every front end calls: `run_job`.

Front ends (CLI, drop folder, ComfyUI, Ray) build a `JobSpec`, optionally hold a
loaded `RuleSet` (hot reload swaps it between jobs), and call `run_job`.

Contract:
- returns a `JobReport` with status "ok" and writes it as JSON beside the output
  (`<output>.report.json` unless the spec names another path), atomically;
- raises `latentsync.errors.InvalidInputError` (bad plan, rules, media,
  checkpoint: permanent, exit code 2), `OutputError`, `OutOfMemoryError`
  (the fallback ladder was exhausted), or another exception (treat as transient);
- never modifies its inputs; never leaves a partial output behind;
- calls `progress(stage, done, total)` as it goes and stops between chunks when
  `cancel()` returns True (raising `JobCancelled`).

The streaming flow per clip: a reader thread decodes the scheduled frames and
aligns faces chunk by chunk; the caller's thread runs VAE + UNet on batches of
chunks; a writer thread pastes faces back and encodes. Queues between them are
bounded, so memory is flat in clip length.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from loguru import logger

from .errors import InvalidInputError, LatentSyncError, MediaError, OutOfMemoryError
from .jobs import CancelCallback, JobReport, JobSpec, ProgressCallback

if TYPE_CHECKING:  # pragma: no cover
    from .engine import RuleSet

AUDIO_RATE = 16000
_PREFETCH_BYTES = 1 << 30  # decoded frames held ahead of the GPU, at most


def sink_depth(chunks_per_batch: int) -> int:
    """Chunks that may wait for paste-back + encode: one whole batch.

    The GPU thread hands a finished batch over chunk by chunk; with room for fewer
    chunks than a batch holds it blocked until the paste stage had finished the first
    ones (about 0.1 s per 16 frames at 720p), idling the GPU on every batch although the
    paste stage keeps up. A batch's frames are in memory anyway; the bound still stops
    a lagging paste stage from piling up more.
    """
    return max(2, int(chunks_per_batch))


def prefetch_depth(chunks_per_batch: int, chunk_frames: int, width: int, height: int) -> int:
    """Chunks to decode and align ahead of the GPU: two batches' worth, so the next batch
    is ready when the GPU finishes one, capped at about 1 GiB of decoded frames (4K clips)."""
    chunk_bytes = max(1, chunk_frames * width * height * 3)
    return max(2, min(2 * chunks_per_batch, _PREFETCH_BYTES // chunk_bytes))


class JobCancelled(LatentSyncError):
    """The job was asked to stop (SIGINT, ComfyUI interrupt) between chunks."""


def report_path_for(spec: JobSpec) -> Path:
    return Path(spec.report) if spec.report else Path(str(spec.output) + ".report.json")


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; reports are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_inputs(spec: JobSpec) -> None:
    from .video import check_video_output

    video = Path(spec.video)
    if not video.is_file():
        raise MediaError("input video not found", path=video, hint="check the plan's `video:` path")
    if spec.audio is not None and not Path(spec.audio).is_file():
        raise MediaError("input audio not found", path=spec.audio, hint="check the plan's `audio:` path")
    inputs = [video] + ([Path(spec.audio)] if spec.audio else [])
    check_video_output(Path(spec.output), inputs=inputs)


def run_job(
    spec: JobSpec,
    *,
    ruleset: "Optional[RuleSet]" = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCallback] = None,
    benchmark_cache: Optional[Path] = None,
) -> JobReport:
    """Resolve the run plan for `spec` from the rules and facts, then execute it."""
    from .engine import gather_facts, load_ruleset, resolve_plan

    _check_inputs(spec)
    ruleset = ruleset if ruleset is not None else load_ruleset()
    facts = gather_facts(spec, ruleset, benchmark_cache=benchmark_cache)
    plan = resolve_plan(spec, facts, ruleset)
    logger.info("run plan for {} (rules {} {}):\n{}", spec.video, plan.rules_version, plan.rules_hash[:12],
                plan.explain_table())
    return execute_plan(spec, plan, progress=progress, cancel=cancel)


def run_with_fallbacks(spec: JobSpec, settings: dict, fallbacks, *, progress=None, cancel=None, clip=None):
    """Run the pipeline; on device out-of-memory apply the plan's fallback steps in order.

    Each step's `set` is applied on top of the previous ones and the whole clip
    is run again (a failed attempt leaves no output). Returns
    (result, settings_applied, steps_applied, warnings).
    """
    import torch

    settings = dict(settings)
    ladder = list(fallbacks or [])
    applied: list[dict] = []
    warnings: list[str] = []
    while True:
        if clip is not None:
            clip.output_frames.clear()
        try:
            result = run_pipeline(spec, settings, progress=progress, cancel=cancel, clip=clip)
            return result, settings, applied, warnings
        except torch.OutOfMemoryError as exc:
            _free_device_memory()
            if not ladder:
                raise OutOfMemoryError(
                    f"out of device memory and no fallback left ({len(applied)} tried)",
                    hint="free VRAM (close other programs), or lower frames_per_batch / resolution in the plan",
                ) from exc
            step = ladder.pop(0)
            changes = step.get("set", step)
            settings.update(changes)
            applied.append(step)
            message = f"out of memory: stepping down to {changes} (rule {step.get('rule', '?')})"
            logger.warning(message)
            warnings.append(message)


def execute_plan(spec: JobSpec, plan, *, progress=None, cancel=None) -> JobReport:
    """Run a resolved plan, stepping down the out-of-memory ladder if the device runs out."""
    started = time.perf_counter()
    result, settings, applied, ladder_warnings = run_with_fallbacks(
        spec, plan.settings, plan.fallbacks, progress=progress, cancel=cancel
    )
    warnings: list[str] = list(getattr(plan, "notes", []) or []) + ladder_warnings
    warnings.extend(result.warnings)
    run_plan = plan.to_dict()
    report = JobReport(
        job=spec.to_dict(),
        status="ok",
        output=str(spec.output),
        run_plan=run_plan,
        rules_version=plan.rules_version,
        rules_hash=plan.rules_hash,
        timings=result.timings,
        seconds_total=time.perf_counter() - started,
        video_seconds=result.video_seconds,
        peak_vram_gib=result.peak_vram_gib,
        peak_rss_gib=_peak_rss_gib(),
        frames_total=result.frames_total,
        frames_without_face=result.frames_without_face,
        warnings=warnings,
        device=result.device,
        host=platform.node(),
        settings_applied=settings,
        fallbacks_applied=applied,
        stats=result.stats,
    )
    write_json_atomic(report_path_for(spec), report.to_dict())
    return report


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _peak_rss_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


@dataclass
class PipelineResult:
    frames_total: int
    video_seconds: float
    timings: dict[str, float]
    frames_without_face: list[int]
    peak_vram_gib: Optional[float]
    device: str
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_device(settings: dict, warnings: list[str]):
    import torch

    device = settings.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        warnings.append("the plan asked for CUDA but none is available: running on the CPU in fp32")
        return torch.device("cpu"), torch.float32
    dtype = getattr(torch, _DTYPES[settings.get("precision", "fp32")])
    if device == "cpu" and dtype == torch.float16:
        warnings.append("fp16 is not supported on the CPU: using fp32")
        dtype = torch.float32
    return torch.device(device), dtype


_compiled: dict[tuple, Any] = {}
# id(module) -> memory format its compiled graphs were traced with. Compiled graphs take
# the weights' strides as given (no guard), so a later plan that flips channels_last on
# a compiled model must drop every compiled graph first.
_compiled_formats: dict[int, str] = {}
_compiled_vae_parts: list = []  # weak references to compiled VAE encoders/decoders


def _drop_compiled_graphs_if_format_changes(module, fmt: str) -> None:
    import torch

    previous = _compiled_formats.get(id(module))
    if previous is None or previous == fmt:
        return
    logger.info("memory format changed from {} to {}: dropping compiled graphs", previous, fmt)
    torch._dynamo.reset()
    _compiled.clear()
    _compiled_formats.clear()
    for ref in _compiled_vae_parts:
        part = ref()
        if part is not None:
            part._compiled_call_impl = None
            part._latentsync_compiled = None
    _compiled_vae_parts.clear()


def torch_compile_mode(settings: dict, *, allow_graphs: bool = True) -> str | None:
    """torch.compile mode for the plan's `compile` + `cuda_graphs`; None when compile is off."""
    mode = settings.get("compile", "off")
    if mode == "off":
        return None
    graphs = bool(settings.get("cuda_graphs")) and allow_graphs
    return {
        ("default", False): "default",
        ("default", True): "reduce-overhead",
        ("max-autotune", False): "max-autotune-no-cudagraphs",
        ("max-autotune", True): "max-autotune",
    }[(mode, graphs)]


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its artifacts between runs.

    `TORCHINDUCTOR_CACHE_DIR` when the user set it, else
    `$XDG_CACHE_HOME/latentsync-runner/inductor` (~/.cache/...). Inductor's default is a
    folder under /tmp, which many systems empty at reboot: a warm cache turns a 100 s
    cold compile of the UNet into seconds, so it belongs with the user's caches.
    """
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "latentsync-runner" / "inductor"


def use_persistent_compile_cache() -> Path:
    """Point inductor's on-disk caches (FX graphs, autotuning) at `compile_cache_dir()`.

    Called only when a plan turns compile on, never at import. Inductor reads the
    variable when it first needs the folder, so this must run before the first compile.
    """
    folder = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder


def apply_unet_kernels(unet, settings: dict, warnings: Optional[list[str]] = None) -> None:
    """`temporal_attention_kernel` and `geglu_kernel`. Where the plan asks for a Triton
    kernel that cannot run here (no `triton` package, or a CPU), the run keeps PyTorch's
    kernel (same math) and says so in `warnings` rather than failing the job."""
    for key, default, setter in (("temporal_attention_kernel", "sdpa", unet.set_temporal_attention_kernel),
                                 ("geglu_kernel", "torch", unet.set_geglu_kernel)):
        kernel = settings.get(key, default)
        try:
            setter(kernel)
        except RuntimeError as error:
            message = f"{key}: {kernel} asked for, running {default}: {error}"
            logger.warning(message)
            if warnings is not None:
                warnings.append(message)
            setter(default)


def prepare_unet(unet, settings: dict, warnings: Optional[list[str]] = None):
    """Apply the UNet levers: attention backend, temporal attention packing and kernels,
    channels-last, torch.compile (cached)."""
    import torch

    unet.set_attention_backend(settings.get("attention_backend", "auto"))
    unet.set_temporal_attention_packing(int(settings.get("temporal_attention_pack", 1)))
    apply_unet_kernels(unet, settings, warnings)
    fmt = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
    _drop_compiled_graphs_if_format_changes(unet, str(fmt))
    unet.to(memory_format=fmt)
    torch_mode = torch_compile_mode(settings)
    if torch_mode is None:
        return unet
    key = (id(unet), torch_mode, str(fmt))
    if key not in _compiled:
        use_persistent_compile_cache()
        logger.info("compiling the UNet with torch.compile(mode={!r}); the first chunk is slow", torch_mode)
        _compiled.clear()
        _compiled[key] = torch.compile(unet, mode=torch_mode, dynamic=False)
        _compiled_formats[id(unet)] = str(fmt)
    return _compiled[key]


def prepare_vae(vae, settings: dict):
    """Apply the VAE levers: slicing/tiling/batch (VaeOptions), channels-last, torch.compile.

    The encoder and decoder are compiled in place (`Module.compile`), so the VAE keeps
    its own methods (slicing, tiling) and state-dict keys. CUDA graphs are never used
    for the VAE: its outputs are collected over several calls, and a replayed graph
    would overwrite the previous call's output.
    """
    import weakref

    import torch

    from .pipeline.vae import VaeOptions, apply_vae_options

    options = VaeOptions.from_settings(settings)
    apply_vae_options(vae, options)
    fmt = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
    for part in (vae.encoder, vae.decoder):
        _drop_compiled_graphs_if_format_changes(part, str(fmt))
    vae.to(memory_format=fmt)
    torch_mode = torch_compile_mode(settings, allow_graphs=False)
    for part in (vae.encoder, vae.decoder):
        wanted = None if torch_mode is None else (torch_mode, str(fmt))
        if getattr(part, "_latentsync_compiled", None) == wanted:
            continue
        if wanted is None:
            part._compiled_call_impl = None  # back to eager
        else:
            use_persistent_compile_cache()
            logger.info("compiling the VAE {} with torch.compile(mode={!r})", type(part).__name__, torch_mode)
            part.compile(mode=torch_mode, dynamic=False)
            _compiled_formats[id(part)] = str(fmt)
            _compiled_vae_parts.append(weakref.ref(part))
        part._latentsync_compiled = wanted
    return options


def _fill_missing_faces(faces, has_face):
    """Frames without a face borrow the nearest face of the chunk as model input.

    Their output is never pasted (the frame passes through unchanged); borrowing
    keeps the chunk's GroupNorm statistics and temporal attention face-like.
    """
    import numpy as np

    if has_face.all() or not has_face.any():
        return faces
    valid = np.flatnonzero(has_face)
    filled = faces.copy()
    for index in np.flatnonzero(~has_face):
        filled[index] = faces[valid[np.argmin(np.abs(valid - index))]]
    return filled


@dataclass
class ArrayClip:
    """A clip held in memory (ComfyUI): frames (N, H, W, 3) uint8 RGB, audio 16 kHz mono float32."""

    frames: Any
    fps: float
    audio_16k: Any
    output_frames: list = field(default_factory=list)  # filled by the pipeline, chunk by chunk


class _ArrayChunks:
    """Serve a schedule of frame indices from an in-memory clip, chunk by chunk."""

    def __init__(self, frames, schedule, chunk_frames):
        self.frames, self.schedule, self.chunk_frames = frames, list(schedule), chunk_frames

    def __iter__(self):
        from .video.reader import FrameChunk

        for start in range(0, len(self.schedule), self.chunk_frames):
            indices = self.schedule[start : start + self.chunk_frames]
            yield FrameChunk(frames=self.frames[indices].copy(), source_indices=indices, start=start)


class _ArraySink:
    def __init__(self, clip: ArrayClip):
        self.clip = clip

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write_frames(self, frames):
        self.clip.output_frames.append(frames)


def paste_faces_on_device(frames, faces, matrices, resolution: int, device):
    """Paste-back with torch on `device` (the GPU when the model runs there): the same
    feathered blend as the cv2 path, moved off the CPU, which bounds fast presets."""
    import numpy as np
    import torch

    from .faces.torch_ops import paste_faces_torch

    if not np.isfinite(matrices).all(axis=(1, 2)).any():
        return frames  # no face in this chunk: nothing to paste
    with torch.no_grad():
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
        faces_t = torch.from_numpy(np.ascontiguousarray(faces)).to(device).permute(0, 3, 1, 2).float()
        pasted = paste_faces_torch(frames_t, faces_t, matrices, resolution)
        return pasted.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ContactSheet:
    """Input vs output lower-face crops of a few evenly spaced frames, for a quick look.

    Keeps at most `count` crop pairs (a few hundred KB), whatever the clip length.
    """

    def __init__(self, n_frames: int, count: int = 8):
        step = max(1, n_frames // count)
        self.wanted = set(range(step // 2, n_frames, step))
        self.pairs: list = []

    def offer(self, start: int, aligned, outputs) -> None:
        for i in range(len(aligned.faces)):
            if start + i in self.wanted and aligned.has_face[i]:
                half = aligned.faces.shape[1] // 2
                self.pairs.append((start + i, aligned.faces[i, half:].copy(), outputs[i, half:].copy()))

    def write(self, path: Path):
        """One column per frame: input lower face above, output below. Atomic; None if empty."""
        import numpy as np
        from PIL import Image

        if not self.pairs:
            return None
        columns = [np.concatenate([before, after], axis=0) for _, before, after in sorted(self.pairs, key=lambda p: p[0])]
        sheet = np.concatenate(columns, axis=1)
        tmp = path.with_name(f".{path.name}.partial.png")
        Image.fromarray(sheet).save(tmp)
        os.replace(tmp, path)
        return path


def run_pipeline(
    spec: JobSpec, settings: dict, *, progress=None, cancel=None, clip: Optional[ArrayClip] = None
) -> PipelineResult:
    """Stream one clip through the pipeline with concrete settings.

    With `clip`, frames and audio come from memory and the output frames are
    appended to `clip.output_frames` (spec.video/audio/output are then unused).
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from .audio.decode import load_audio
    from .audio.features import audio_features, frame_audio_windows_at_times
    from .faces import FaceAligner, face_mask, paste_faces
    from .faces.parallel import ParallelLandmarks, align_chunk, backend_factory, check_workers
    from .pipeline.denoise import DenoiseSettings
    from .pipeline.face_synthesis import FaceChunk, FaceSynthesizer
    from .pipeline.stages import BackgroundSink, StageTimer, prefetch
    from .pipeline.vae import vae_scale_factor
    from .video import ScheduledFrameSource, VideoWriter, frames_covering_audio, plan_output_frames, probe_video
    from .weights import load_models

    warnings: list[str] = []
    timer = StageTimer()
    device, dtype = resolve_device(settings, warnings)
    seed = int(spec.seed if spec.seed is not None else settings.get("seed", 1247))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # shapes are static per run: let cuDNN time its conv algorithms

    with timer.timed("probe"):
        if clip is not None:
            fps, n_source, (width, height) = float(clip.fps), len(clip.frames), clip.frames.shape[2:0:-1]
            waveform = np.asarray(clip.audio_16k, dtype=np.float32)
            audio_source = None
        else:
            info = probe_video(spec.video)
            if info.frame_count == 0:
                raise MediaError("the video holds no frames", path=spec.video)
            audio_source = Path(spec.audio) if spec.audio else Path(spec.video)
            if spec.audio is None and not info.has_audio:
                raise MediaError(
                    "the video has no audio track and the plan names no audio",
                    path=spec.video,
                    hint="add `audio: speech.wav` to the job",
                )
            waveform = load_audio(audio_source, sample_rate=AUDIO_RATE)
            fps, n_source, (width, height) = info.fps, info.frame_count, info.display_size
        if n_source == 0 or len(waveform) == 0:
            raise MediaError("no frames or no audio samples to work on", path=audio_source or spec.video)
        audio_seconds = len(waveform) / AUDIO_RATE
        n_out = frames_covering_audio(audio_seconds, fps)
        schedule = plan_output_frames(n_source, fps, audio_seconds)
    fps_exact, fps = fps, float(fps)
    if abs(fps - 25.0) > 1e-3:
        warnings.append(
            f"source runs at {fps:.3f} fps; the model ran on every source frame with audio windows "
            "centred at each frame's time (LatentSync was trained at 25 fps)"
        )

    with timer.timed("load_models"):
        models = load_models(spec.weights, device=str(device), dtype=dtype, seed=seed)
    if models.random:
        warnings.append(f"weights: {spec.weights} are RANDOM: the output is not lip-synced")
    res = int(settings.get("resolution", models.resolution))
    if res % 64:
        raise InvalidInputError(f"resolution must be a multiple of 64, got {res}", hint="the run plan's `resolution`")
    if res != models.resolution:
        warnings.append(
            f"face crops at {res} px while weights {spec.weights} were trained at {models.resolution} px"
        )

    with timer.timed("audio_features"):
        features = audio_features(waveform, models.audio_encoder, storage_device="cpu")

    unet = prepare_unet(models.unet, settings, warnings)
    vae_options = prepare_vae(models.vae, settings)
    chunk_frames = int(settings.get("chunk_frames", 16))
    chunks_per_batch = max(1, int(settings.get("frames_per_batch", chunk_frames)) // chunk_frames)
    latent = res // vae_scale_factor(models.vae)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(4, latent, latent, generator=generator)  # one noise for every frame, as upstream
    synth = FaceSynthesizer(
        unet,
        models.vae,
        face_mask(res),
        chunk_frames=chunk_frames,
        denoise_settings=DenoiseSettings.from_settings(settings),
        vae_options=vae_options,
        device=device,
        dtype=dtype,
        noise=noise,
        pad_partial_chunks=settings.get("compile", "off") != "off",
        batch_chunks=chunks_per_batch,
        reference_frames=settings.get("reference_frames", "per_frame"),
    )

    # cpu_workers threads detect landmarks (one face backend each, whole chunks); as many
    # again share the per-frame OpenCV work (face warps, paste-back). Outputs do not
    # depend on the count. Chunks in flight are bounded like the prefetch (memory).
    cpu_workers = check_workers(settings.get("cpu_workers", 1))
    chunk_bytes = max(1, chunk_frames * int(width) * int(height) * 3)
    landmark_pool = ParallelLandmarks(
        backend_factory(settings.get("face_backend", "auto")), workers=cpu_workers,
        max_in_flight=max(cpu_workers, min(2 * cpu_workers, _PREFETCH_BYTES // chunk_bytes)),
    )
    frame_pool = ThreadPoolExecutor(cpu_workers, thread_name_prefix="frame-work") if cpu_workers > 1 else None
    aligner = FaceAligner(resolution=res)
    if clip is not None:
        source = _ArrayChunks(clip.frames, schedule, chunk_frames)
    else:
        source = ScheduledFrameSource(spec.video, schedule, chunk_frames, info=info)
    frame_times = np.arange(n_out, dtype=np.float64) / fps
    without_face: list[int] = []

    def prepared_chunks():
        # decode_and_faces: this stage's wall time (decode, waiting for landmarks, matrices,
        # warps), not the time it waits for the GPU to take a chunk
        detected = landmark_pool.map(source, frames_of=lambda chunk: chunk.frames)
        while True:
            start = time.perf_counter()
            item = next(detected, None)
            if item is None:
                return
            chunk, landmarks = item
            aligned = align_chunk(aligner, chunk.frames, landmarks, frame_pool)
            timer.add("decode_and_faces", time.perf_counter() - start)
            yield chunk, aligned

    sheet = ContactSheet(n_out) if (spec.contact_sheet and clip is None) else None
    total_batches = -(-n_out // (chunk_frames * chunks_per_batch))
    done_frames = 0
    try:
        writer_context = (
            _ArraySink(clip)
            if clip is not None
            else VideoWriter(
                spec.output, width=width, height=height, fps=fps_exact, audio=audio_source,
                inputs=[p for p in (spec.video, spec.audio) if p],
            )
        )
        with writer_context as writer:

            paste_on_device = settings.get("paste_backend", "cpu") == "torch"

            def paste_and_encode(item):
                frames, faces, matrices = item
                with timer.timed("paste_and_encode"):
                    if paste_on_device:
                        frames = paste_faces_on_device(frames, faces, matrices, res, device)
                    else:
                        frames = paste_faces(frames, faces, matrices, res, out=frames, executor=frame_pool)
                    writer.write_frames(frames)

            sink = BackgroundSink(paste_and_encode, depth=sink_depth(chunks_per_batch), name="paste-encode")
            pending: list = []

            def flush():
                nonlocal done_frames
                work = [(c, a) for c, a in pending if a.has_face.any()]
                outputs = iter([])
                if work:
                    face_chunks = [
                        FaceChunk(
                            crops=_fill_missing_faces(a.faces, a.has_face),
                            audio=frame_audio_windows_at_times(
                                features, frame_times[c.start : c.start + len(c.frames)]
                            ),
                        )
                        for c, a in work
                    ]
                    start = time.perf_counter()
                    outputs = iter(synth.run(face_chunks))
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    timer.add("gpu", time.perf_counter() - start)
                for chunk, aligned in pending:
                    faces = next(outputs) if aligned.has_face.any() else aligned.faces
                    if sheet is not None:
                        sheet.offer(chunk.start, aligned, faces)
                    without_face.extend(chunk.start + i for i in aligned.missing)
                    sink.put((chunk.frames, faces, aligned.matrices))
                    done_frames += len(chunk.frames)
                pending.clear()
                if progress is not None:
                    progress("frames", done_frames, n_out)

            try:
                for chunk, aligned in prefetch(
                    prepared_chunks(),
                    depth=prefetch_depth(chunks_per_batch, chunk_frames, int(width), int(height)),
                    name="decode-faces",
                ):
                    if cancel is not None and cancel():
                        raise JobCancelled("cancelled between chunks; no output written")
                    pending.append((chunk, aligned))
                    if len(pending) == chunks_per_batch:
                        flush()
                if pending:
                    flush()
            finally:
                sink.close()
    finally:
        try:
            landmark_pool.close()
            timer.add("landmarks_busy", landmark_pool.busy_seconds)  # summed over its threads
        finally:
            if frame_pool is not None:
                frame_pool.shutdown(wait=True, cancel_futures=True)

    if sheet is not None:
        written = sheet.write(Path(str(spec.output) + ".contact.png"))
        if written is None:
            warnings.append("no contact sheet: no frame had a face")
    peak_vram = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if without_face:
        warnings.append(f"{len(without_face)} of {n_out} frames had no usable face and pass through unchanged")
    stats = synth.stats
    logger.info(
        "{} frames in {} batches; UNet calls {} ({} cached), padded frames {}",
        n_out, total_batches, stats.denoise.unet_calls, stats.denoise.cached_calls, stats.padded_frames,
    )
    return PipelineResult(
        frames_total=n_out,
        video_seconds=n_out / fps,
        timings=dict(timer.seconds),
        frames_without_face=without_face,
        peak_vram_gib=peak_vram,
        device=f"{device.type}:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu",
        warnings=warnings,
        stats={
            "unet_calls": stats.denoise.unet_calls,
            "cached_calls": stats.denoise.cached_calls,
            "padded_frames": stats.padded_frames,
            "unet_sample_shape": list(stats.denoise.first_sample_shape),
            "vae_decoded_latent_rows": stats.vae_decoded_latent_rows,
        },
    )
