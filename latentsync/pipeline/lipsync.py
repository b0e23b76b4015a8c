"""`LipSyncPipeline`: one clip through LatentSync, stage by stage, with one run's settings.

    pipeline = LipSyncPipeline(models, settings)            # levers applied, compiled once
    result = pipeline(FileClipSource(video, audio), VideoFileSink(output, ...))

The stages, in the order `__call__` runs them:

    open the source (probe, decode the audio) -> schedule the output frames
    -> audio features (Whisper) -> decode frames -> landmarks -> align faces
    -> audio windows -> VAE encode -> denoise (UNet) -> VAE decode
    -> paste faces back -> encode the video

Three threads share the work and bounded queues sit between them, so memory is flat
in clip length: a reader thread decodes and aligns chunks ahead of the GPU, the
caller's thread runs the model on batches of chunks, and a writer thread pastes faces
back and encodes.

Every front end reaches this class through `latentsync.runner` (plan -> settings ->
pipeline -> report), which also owns the out-of-memory ladder.
"""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from loguru import logger

from ..errors import LatentSyncError
from ..settings import RunSettings
from .clips import ClipMedia
from .compile_cache import CompileCache, graph_key
from .levers import prepare_unet, prepare_vae, resolve_device, run_scope
from .stages import BackgroundSink, StageTimer, prefetch

ProgressCallback = Callable[[str, int, int], None]
CancelCallback = Callable[[], bool]


class JobCancelled(LatentSyncError):
    """The job was asked to stop (SIGINT, ComfyUI interrupt) between chunks."""


@dataclass
class PipelineResult:
    """What one call of the pipeline did."""

    frames_total: int
    video_seconds: float
    timings: dict[str, float]
    frames_without_face: list[int]
    peak_vram_gib: Optional[float]
    device: str
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def sink_depth(chunks_per_batch: int) -> int:
    """Chunks that may wait for paste-back + encode: one whole batch.

    The GPU thread hands a finished batch over chunk by chunk; with room for fewer
    chunks than a batch holds it blocked until the paste stage had finished the first
    ones (about 0.1 s per 16 frames at 720p), idling the GPU on every batch although the
    paste stage keeps up. A batch's frames are in memory anyway; the bound still stops
    a lagging paste stage from piling up more.
    """
    return max(2, int(chunks_per_batch))


def prefetch_depth(chunks_per_batch: int, chunk_frames: int, width: int, height: int, budget_bytes: int) -> int:
    """Chunks to decode and align ahead of the GPU: two batches' worth, so the next batch
    is ready when the GPU finishes one, capped at `budget_bytes` of decoded frames
    (the plan's `prefetch_memory_mib`), never fewer than two chunks."""
    chunk_bytes = max(1, chunk_frames * width * height * 3)
    return max(2, min(2 * chunks_per_batch, budget_bytes // chunk_bytes))


def fill_missing_faces(faces: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Frames without a face borrow the nearest face of the chunk as model input.

    Their output is never pasted (the frame passes through unchanged); borrowing
    keeps the chunk's GroupNorm statistics and temporal attention face-like.
    """
    if has_face.all() or not has_face.any():
        return faces
    valid = np.flatnonzero(has_face)
    filled = faces.copy()
    for index in np.flatnonzero(~has_face):
        filled[index] = faces[valid[np.argmin(np.abs(valid - index))]]
    return filled


def paste_faces_on_device(frames, faces, matrices, resolution: int, device):
    """Paste-back with torch on `device` (the GPU when the model runs there): the same
    arithmetic as the CPU path (upstream's), moved off the CPU, which bounds fast presets.
    `faces` are the float faces in [-1, 1] the synthesizer returns."""
    from ..faces.paste import face_tensor
    from ..faces.torch_ops import paste_faces_torch

    if not np.isfinite(matrices).all(axis=(1, 2)).any():
        return frames  # no face in this chunk: nothing to paste
    with torch.no_grad():
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
        faces_t = torch.stack([face_tensor(face) for face in faces]).to(device)
        pasted = paste_faces_torch(frames_t, faces_t, matrices, resolution)
        # upstream's `.to(torch.uint8)`: truncation (paste_faces_torch already truncated)
        return pasted.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ContactSheet:
    """Input vs output lower-face crops of a few evenly spaced frames, for a quick look.

    Keeps at most `count` crop pairs (a few hundred KB), whatever the clip length.
    """

    def __init__(self, n_frames: int, count: int = 8):
        # the middle frame of each of `count` equal stretches of the clip
        self.wanted = {int((i + 0.5) * n_frames / count) for i in range(min(count, n_frames))}
        self.pairs: list = []

    def offer(self, start: int, aligned, outputs) -> None:
        import cv2

        from .face_synthesis import float_faces_to_uint8

        outputs = float_faces_to_uint8(np.asarray(outputs))
        if outputs.shape[1:3] != aligned.faces.shape[1:3]:  # float faces come at the paste's crop size
            size = aligned.faces.shape[2], aligned.faces.shape[1]
            outputs = np.stack([cv2.resize(face, size, interpolation=cv2.INTER_AREA) for face in outputs])
        for i in range(len(aligned.faces)):
            if start + i in self.wanted and aligned.has_face[i]:
                half = aligned.faces.shape[1] // 2
                self.pairs.append((start + i, aligned.faces[i, half:].copy(), outputs[i, half:].copy()))

    def write(self, path: Path) -> Optional[Path]:
        """One column per frame: input lower face above, output below. Atomic; None if empty."""
        from PIL import Image

        from ..atomic import atomic_output

        if not self.pairs:
            return None
        columns = [np.concatenate([before, after], axis=0) for _, before, after in sorted(self.pairs, key=lambda p: p[0])]
        with atomic_output(path, suffix=".png") as temp:
            Image.fromarray(np.concatenate(columns, axis=1)).save(temp, format="PNG")
        return path


@dataclass
class _Run:
    """State of one call: timings, warnings, frames without a face, progress."""

    timer: StageTimer = field(default_factory=StageTimer)
    warnings: list[str] = field(default_factory=list)
    without_face: list[int] = field(default_factory=list)
    done_frames: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class LipSyncPipeline:
    """LatentSync on one model set with one run's settings; call it on a source and a sink.

    Built once per (models, settings): the constructor applies the levers (attention
    kernels, memory format, torch.compile, VAE options) and builds the face synthesizer.
    A resident process keeps the pipeline and calls it clip after clip.
    """

    def __init__(self, models, settings: RunSettings):
        from ..faces import crop_size, face_mask
        from .denoise import DenoiseSettings
        from .face_synthesis import FaceSynthesizer

        self.models = models
        self.settings = settings
        self.device, self.dtype, self.build_warnings = resolve_device(settings)
        if models.random:
            self.build_warnings.append(f"weights: {models.source} are RANDOM: the output is not lip-synced")
        self.resolution = settings.resolution
        self.chunk_frames = settings.chunk_frames
        self.chunks_per_batch = settings.chunks_per_batch
        self.compile_cache = CompileCache.for_device(self.device)
        self.graph_key = graph_key(settings.to_dict(), models.version)
        self.unet = prepare_unet(models, settings, self.build_warnings)
        self.vae_options = prepare_vae(models, settings)
        self.synthesizer = FaceSynthesizer(
            self.unet, models.vae, face_mask(self.resolution, np.float64), chunk_frames=self.chunk_frames,
            denoise_settings=DenoiseSettings.from_settings(settings), vae_options=self.vae_options,
            device=self.device, dtype=self.dtype, noise=self._initial_noise(),
            pad_partial_chunks=settings.compiles, batch_chunks=self.chunks_per_batch,
            reference_frames=settings.reference_frames, float_faces=True, float_size=crop_size(self.resolution),
        )

    def _initial_noise(self) -> torch.Tensor:
        """One noise tensor for every frame of a clip, as upstream, from the plan's seed."""
        from .vae import vae_scale_factor

        latent = self.resolution // vae_scale_factor(self.models.vae)
        generator = torch.Generator(device="cpu").manual_seed(self.settings.seed)
        return torch.randn(4, latent, latent, generator=generator)

    # ------------------------------------------------------------------ the stages

    def __call__(self, source, sink, *, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelCallback] = None, contact_sheet: Optional[Path] = None) -> PipelineResult:
        run = _Run(warnings=list(self.build_warnings))
        self.synthesizer.reset_stats()
        with run_scope(self.settings, self.device, self.compile_cache):
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            with run.timer.timed("probe"):
                media = source.open()
                schedule, n_out = self._schedule(media, run)
            with run.timer.timed("audio_features"):
                features = self._audio_features(media)
            sheet = ContactSheet(n_out) if contact_sheet is not None else None
            with ParallelCpuStages(self.settings, media, detect=source.landmarks is None) as cpu:
                # closing(): the reader thread stops before the CPU stages close, also on errors
                batches = contextlib.closing(self._batches(
                    self._aligned_chunks(source, schedule, cpu, media, run), cancel))
                with batches as batches, sink.open(media) as writer:
                    paste = BackgroundSink(self._paste_and_encode(writer, cpu, run),
                                           depth=sink_depth(self.chunks_per_batch), name="paste-encode")
                    try:
                        for batch in batches:
                            faces = self._synthesize(batch, features, media, run)
                            for (chunk, aligned), out in zip(batch, faces):
                                if sheet is not None:
                                    sheet.offer(chunk.start, aligned, out)
                                run.without_face.extend(chunk.start + i for i in aligned.missing)
                                paste.put((chunk.frames, out, aligned.matrices))
                                run.done_frames += len(chunk.frames)
                            if progress is not None:
                                progress("frames", run.done_frames, n_out)
                    finally:
                        paste.close()
            run.timer.add("landmarks_busy", cpu.landmarks_busy)  # summed over its threads
        if sheet is not None and sheet.write(Path(contact_sheet)) is None:
            run.warnings.append("no contact sheet: no frame had a face")
        return self._result(run, n_out, media)

    def _schedule(self, media: ClipMedia, run: _Run) -> tuple[list[int], int]:
        """Which source frame each output frame shows; as many output frames as upstream makes
        for the audio (one per Whisper window: up to 2 more than the audio covers)."""
        from ..video.schedule import OUTPUT_FRAMES_RULE, frames_covering_audio, output_frame_count, plan_output_frames

        n_out = output_frame_count(len(media.waveform), media.fps)
        schedule = plan_output_frames(media.frame_count, float(media.fps), n_output_frames=n_out)
        run.stats["audio_covered_frames"] = frames_covering_audio(media.audio_seconds, float(media.fps))
        run.stats["output_frames_rule"] = OUTPUT_FRAMES_RULE
        if abs(float(media.fps) - 25.0) > 1e-3:
            run.warnings.append(
                f"source runs at {float(media.fps):.3f} fps; the model ran on every source frame with audio windows "
                "centred at each frame's time (LatentSync was trained at 25 fps)")
        return schedule, n_out

    def _audio_features(self, media: ClipMedia) -> torch.Tensor:
        from ..audio.features import audio_features

        return audio_features(media.waveform, self.models.audio_encoder, storage_device="cpu")

    def _aligned_chunks(self, source, schedule: list[int], cpu: "ParallelCpuStages", media: ClipMedia,
                        run: _Run) -> Iterator[tuple]:
        """Decode -> landmarks -> align, on a reader thread, a bounded number of chunks ahead."""
        from ..faces.parallel import align_chunk

        chunks = source.chunks(schedule, self.chunk_frames)
        known = source.landmarks  # faces at known places (the benchmark's clip), else detected

        def prepared():
            # decode_and_faces: this stage's wall time (decode, waiting for landmarks, matrices,
            # warps), not the time it waits for the GPU to take a chunk
            if known is not None:
                detected = ((chunk, [known[i] for i in chunk.source_indices]) for chunk in chunks)
            else:
                detected = cpu.landmarks.map(chunks, frames_of=lambda chunk: chunk.frames)
            while True:
                start = time.perf_counter()
                item = next(detected, None)
                if item is None:
                    return
                chunk, landmarks = item
                aligned = align_chunk(cpu.aligner, chunk.frames, landmarks, cpu.frame_pool)
                run.timer.add("decode_and_faces", time.perf_counter() - start)
                yield chunk, aligned

        depth = prefetch_depth(self.chunks_per_batch, self.chunk_frames, media.width, media.height,
                               self.settings.prefetch_memory_mib << 20)
        return prefetch(prepared(), depth=depth, name="decode-faces")

    def _batches(self, chunks, cancel: Optional[CancelCallback]) -> Iterator[list]:
        """Group aligned chunks into UNet batches of `frames_per_batch` frames."""
        pending: list = []
        for item in chunks:
            if cancel is not None and cancel():
                raise JobCancelled("cancelled between chunks; no output written")
            pending.append(item)
            if len(pending) == self.chunks_per_batch:
                yield pending
                pending = []
        if pending:
            yield pending

    def _synthesize(self, batch: list, features: torch.Tensor, media: ClipMedia, run: _Run) -> list[np.ndarray]:
        """Audio windows -> VAE encode -> denoise -> VAE decode for the chunks that have a face."""
        from ..audio.features import frame_audio_windows_at_times
        from .face_synthesis import FaceChunk

        work = [(c, a) for c, a in batch if a.has_face.any()]
        outputs: Iterator[np.ndarray] = iter([])
        if work:
            fps = float(media.fps)
            face_chunks = [
                FaceChunk(crops=fill_missing_faces(a.faces, a.has_face),
                          audio=frame_audio_windows_at_times(
                              features, np.arange(c.start, c.start + len(c.frames), dtype=np.float64) / fps))
                for c, a in work
            ]
            start = time.perf_counter()
            outputs = iter(self.synthesizer.run(face_chunks))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            run.timer.add("gpu", seconds)
            # first batch against the rest: what warm-up (kernel JIT, autotuning, compile) costs
            run.stats.setdefault("gpu_batch_seconds", []).append(round(seconds, 4))
        return [next(outputs) if aligned.has_face.any() else aligned.faces for _, aligned in batch]

    def _paste_and_encode(self, writer, cpu: "ParallelCpuStages", run: _Run):
        """Paste faces back (OpenCV on the CPU, or torch on the model's device) -> encode."""
        from ..faces import paste_faces

        on_device = self.settings.paste_backend == "torch"

        def consume(item):
            frames, faces, matrices = item
            with run.timer.timed("paste_and_encode"):
                if on_device:
                    frames = paste_faces_on_device(frames, faces, matrices, self.resolution, self.device)
                else:
                    frames = paste_faces(frames, faces, matrices, self.resolution, out=frames,
                                         executor=cpu.frame_pool)
                writer.write_frames(frames)

        return consume

    def _result(self, run: _Run, n_out: int, media: ClipMedia) -> PipelineResult:
        stats = self.synthesizer.stats
        if run.without_face:
            run.warnings.append(f"{len(run.without_face)} of {n_out} frames had no usable face and pass through unchanged")
        logger.info("{} frames; UNet calls {} ({} cached), padded frames {}", n_out, stats.denoise.unet_calls,
                    stats.denoise.cached_calls, stats.padded_frames)
        cuda = self.device.type == "cuda"
        return PipelineResult(
            frames_total=n_out,
            video_seconds=n_out / float(media.fps),
            timings=dict(run.timer.seconds),
            frames_without_face=run.without_face,
            peak_vram_gib=torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None,
            device=f"cuda:{torch.cuda.get_device_name(self.device)}" if cuda else "cpu",
            warnings=run.warnings,
            stats={
                "unet_calls": stats.denoise.unet_calls,
                "cached_calls": stats.denoise.cached_calls,
                "padded_frames": stats.padded_frames,
                "short_chunks": stats.short_chunks,
                "unet_sample_shape": list(stats.denoise.first_sample_shape),
                "vae_decoded_latent_rows": stats.vae_decoded_latent_rows,
                **run.stats,
            },
        )


class ParallelCpuStages:
    """The per-frame CPU work of one call: landmark detection on `cpu_workers` threads (one
    face backend each, whole chunks) and as many threads again for the OpenCV warps and
    paste-back. Outputs do not depend on the count; chunks in flight are bounded like the
    prefetch (memory)."""

    def __init__(self, settings: RunSettings, media: ClipMedia, *, detect: bool = True):
        from ..faces import FaceAligner
        from ..faces.parallel import ParallelLandmarks, backend_factory, check_workers

        workers = check_workers(settings.cpu_workers)
        chunk_bytes = max(1, settings.chunk_frames * media.width * media.height * 3)
        in_flight = max(workers, min(2 * workers, (settings.prefetch_memory_mib << 20) // chunk_bytes))
        # detect=False: the source knows where the faces are; no face backend is loaded
        self.landmarks = ParallelLandmarks(backend_factory(settings.face_backend), workers=workers,
                                           max_in_flight=in_flight) if detect else None
        self.frame_pool = ThreadPoolExecutor(workers, thread_name_prefix="frame-work") if workers > 1 else None
        self.aligner = FaceAligner(resolution=settings.resolution,
                                   round_landmarks=settings.landmark_precision == "pixel")
        self.landmarks_busy = 0.0

    def __enter__(self) -> "ParallelCpuStages":
        return self

    def __exit__(self, *exc) -> bool:
        try:
            if self.landmarks is not None:
                self.landmarks.close()
                self.landmarks_busy = self.landmarks.busy_seconds
        finally:
            if self.frame_pool is not None:
                self.frame_pool.shutdown(wait=True, cancel_futures=True)
        return False
