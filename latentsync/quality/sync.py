"""Lip-sync scores from StableSyncNet: per-window sync probability, best offset, confidence.

What is measured (docs/quality.md has the full definitions):

- The video's faces are found with the project's face backends and aligned with
  `FaceAligner` at 256 px (as the pipeline aligns them), resized to the SyncNet's crop size
  when it differs (the small test config reads 32 px), and the **lower half** of 16
  consecutive crops is stacked into one visual window (`stack_frames`).
- The audio's SyncNet mel (`latentsync.quality.mel`) gives the audio window of video frame k:
  52 columns from `int(80 * k / fps)`.
- For each visual window starting at frame k and each offset o in -max_offset..+max_offset,
  the audio window starting at frame k + o is compared; the **distance** is 1 - cosine
  similarity of the L2-normalised embeddings (half the squared Euclidean distance). Offset o
  > 0 means the audio that best matches the lips comes o frames *later* in the track (the
  sound lags the picture).
- `sync_probability`: the mean cosine similarity at offset 0 (upstream uses the similarity
  itself as the probability of being in sync; > 0.5 counts as in sync).
- `distance_by_offset[o]`: the mean distance at offset o over the windows that have audio at
  every offset (all offsets averaged over the same windows), or, when no window has (a clip
  shorter than 16 + 2 x 15 frames), over the windows whose shifted audio lies in the track. `best_offset` minimises it, `min_distance` is that minimum, and
  `confidence` = median(distance_by_offset) - min_distance, in the spirit of SyncNet's LSE-C.
  These are StableSyncNet scores, not LSE-C / LSE-D (those use the original SyncNet).
- Windows holding a frame without a face are skipped (counted in `skipped_windows`).

With random weights the numbers are meaningless; the code path is the real one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import CheckpointError, InvalidInputError, MediaError
from ..weights import SYNCNET_FILE
from ..models.stable_syncnet import (
    StableSyncNet,
    load_syncnet_checkpoint,
    seeded_initialisation,
    stack_frames,
)
from .mel import (
    COLUMNS_PER_SECOND,
    MEL_WINDOW_COLUMNS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    mel_window_start,
    syncnet_melspectrogram,
)

DEFAULT_CONFIG = "syncnet_16_pixel_attn"  # random full weights; checkpoints default to "auto"
ALIGN_RESOLUTION = 256
MAX_OFFSET = 15
VIDEO_CHUNK_FRAMES = 32
RANDOM_SYNCNETS = {"random": DEFAULT_CONFIG, "random-small": "small"}


@dataclass(frozen=True)
class SyncScore:
    """StableSyncNet scores of one video against one audio track (see the module docstring)."""

    sync_probability: float  # mean cosine similarity at offset 0, in [0, 1]
    best_offset: int  # frames; > 0: the matching audio comes later (sound lags picture)
    min_distance: float  # mean (1 - cosine) at the best offset
    confidence: float  # median over offsets of the mean distance minus min_distance
    offsets: tuple[int, ...]
    distance_by_offset: tuple[float, ...]  # NaN where no window has audio at that offset
    window_similarity: tuple[float, ...]  # cosine similarity at offset 0, per scored window
    window_starts: tuple[int, ...]  # first video frame of each scored window
    frames: int
    fps: float
    windows: int
    skipped_windows: int  # windows with a frame without a face, or past the audio's end
    frames_without_face: int
    model: str  # "stable_syncnet.pt", "random-small", ...
    random_weights: bool
    seconds: float = 0.0
    stages: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("offsets", "distance_by_offset", "window_similarity", "window_starts"):
            # NaN (an offset or window without audio) becomes null: JSON has no NaN
            data[key] = [None if isinstance(v, float) and not np.isfinite(v) else v for v in data[key]]
        data["stages"] = dict(self.stages)
        return data


def offset_distances(
    visual: np.ndarray, audio: np.ndarray, window_starts: Sequence[int], audio_starts: Sequence[int], max_offset: int
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Mean distance (1 - cosine) per offset, and the per-window cosine at offset 0.

    visual: (W, C) normalised embeddings of the windows starting at `window_starts`;
    audio: (A, C) normalised embeddings of the audio windows starting at frames `audio_starts`.
    The offsets are compared on the windows that have audio at every offset when there are any
    (so each offset is averaged over the same windows), else on every window with audio at that
    offset; an offset with no valid pair gets NaN. Returns (offsets, distances, similarity_at_zero)
    where similarity_at_zero is NaN for windows without audio at offset 0.
    """
    index_of = {int(start): row for row, start in enumerate(audio_starts)}
    similarity = visual @ audio.T  # (W, A): cosines of unit vectors
    offsets = list(range(-max_offset, max_offset + 1))
    distances = np.full(len(offsets), np.nan)
    # Compare every offset on the same windows when some window has audio at every offset;
    # otherwise (a clip shorter than 16 + 2 * max_offset frames) on those that have it.
    common = [w for w, k in enumerate(window_starts) if all((k + o) in index_of for o in offsets)]
    used = common if common else list(range(len(window_starts)))
    for column, offset in enumerate(offsets):
        rows = [(w, index_of[window_starts[w] + offset]) for w in used if (window_starts[w] + offset) in index_of]
        if rows:
            w_index, a_index = zip(*rows)
            distances[column] = float(np.mean(1.0 - similarity[list(w_index), list(a_index)]))
    at_zero = np.array(
        [similarity[w, index_of[k]] if k in index_of else np.nan for w, k in enumerate(window_starts)], dtype=np.float64
    )
    return offsets, distances, at_zero


def summarise(offsets: Sequence[int], distances: np.ndarray) -> tuple[int, float, float]:
    """(best_offset, min_distance, confidence) from the per-offset mean distances (NaNs ignored).

    Ties go to the offset nearest 0. confidence = median - minimum over the offsets scored.
    """
    valid = np.isfinite(distances)
    if not valid.any():
        raise InvalidInputError("no audio-video window pair could be scored")
    values = distances[valid]
    candidates = [o for o, d, ok in zip(offsets, distances, valid) if ok and d == values.min()]
    best = min(candidates, key=abs)
    minimum = float(values.min())
    return int(best), minimum, float(np.median(values) - minimum)


def crop_resolution_of(config: Mapping[str, Any]) -> int:
    """The face crop size the visual tower expects: its input (res/2, res) shrinks to 1x1, so
    res = 2 x the product of the row factors (256 for upstream's configs, 32 for `small`)."""
    rows = 1
    for factor in config["visual_encoder"]["downsample_factors"]:
        rows *= factor if isinstance(factor, int) else int(factor[0])
    return 2 * rows


def stack_lower_halves(lower: torch.Tensor) -> torch.Tensor:
    """(16, res/2, res, 3) uint8 lower halves -> (48, res/2, res) float32: the same numbers as
    `stack_frames` of the full crops (x / 255, (x - 0.5) / 0.5, channel 3f + c)."""
    x = (lower.float() / 255.0 - 0.5) / 0.5
    frames, height, width, _ = x.shape
    return x.permute(0, 3, 1, 2).reshape(frames * 3, height, width)


def aligned_face_crops(frames_rgb: Iterable[np.ndarray] | np.ndarray, *, face_backend: str = "auto",
                       size: int = ALIGN_RESOLUTION, first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces found by the project's face backend and aligned by `FaceAligner` at 256 px (as the
    pipeline aligns them), resized to `size` (INTER_AREA) when it differs; rows `first_row:` of each
    crop are kept. Returns (N, size - first_row, size, 3) uint8 RGB crops and (N,) has-face flags.
    `frames_rgb`: an (N, H, W, 3) array, or an iterable of such chunks (a video streams through)."""
    import cv2

    from ..faces import FaceAligner, get_face_backend

    if isinstance(frames_rgb, np.ndarray):
        frames_rgb = [frames_rgb[i : i + 16] for i in range(0, len(frames_rgb), 16)]
    aligner = FaceAligner(resolution=ALIGN_RESOLUTION)
    kept: list[np.ndarray] = []
    has_face: list[np.ndarray] = []
    with get_face_backend(face_backend) as backend:
        for chunk in frames_rgb:
            chunk = np.ascontiguousarray(chunk)
            aligned = aligner.align(chunk, backend.detect_batch(chunk))
            faces = aligned.faces
            if size != ALIGN_RESOLUTION:
                faces = np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA) for face in faces])
            kept.append(np.ascontiguousarray(faces[:, first_row:]))
            has_face.append(aligned.has_face)
    if not kept:
        return np.zeros((0, size - first_row, size, 3), dtype=np.uint8), np.zeros(0, dtype=bool)
    return np.concatenate(kept), np.concatenate(has_face)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class SyncScorer:
    """Scores videos with one loaded StableSyncNet. Keep one per process (the model is large)."""

    def __init__(self, model: StableSyncNet, *, name: str, random_weights: bool, batch_size: int = 8,
                 face_backend: str = "auto", max_offset: int = MAX_OFFSET):
        self.model = model.eval()
        self.name = name
        self.random_weights = random_weights
        self.batch_size = int(batch_size)
        self.face_backend = face_backend
        self.max_offset = int(max_offset)
        # The visual tower reads the lower half of res x res crops: (3*16, res/2, res).
        conv_in = model.visual_encoder.conv_in
        self.frames_per_window = conv_in.in_channels // 3
        if self.frames_per_window != WINDOW_FRAMES:
            raise InvalidInputError(f"SyncNet reads {self.frames_per_window} frames per window; expected {WINDOW_FRAMES}")
        self.crop_resolution = crop_resolution_of(model.config)

    @classmethod
    def from_weights(cls, weights: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     config: Mapping[str, Any] | str = "auto", seed: int = 0, **kwargs) -> "SyncScorer":
        """`random` / `random-small` (seeded, meaningless scores), a weights folder holding
        `stable_syncnet.pt` (what `fetch-weights` fills), or a checkpoint file."""
        spec = str(weights)
        if spec in RANDOM_SYNCNETS:
            model = seeded_initialisation(StableSyncNet.from_config(RANDOM_SYNCNETS[spec]), seed)
            return cls(model.to(device=device, dtype=dtype), name=spec, random_weights=True, **kwargs)
        path = Path(spec)
        if path.is_dir():
            path = path / SYNCNET_FILE
            if not path.is_file():
                raise CheckpointError(
                    f"{SYNCNET_FILE} not found in the weights folder",
                    path=str(path),
                    hint="run `latentsync-run fetch-weights DIR` (it fetches the SyncNet too), or pass "
                    "--weights random-small to exercise the code path (scores meaningless)",
                )
        model = load_syncnet_checkpoint(path, config, device=device, dtype=dtype)
        return cls(model, name=path.name, random_weights=False, **kwargs)

    # -- the parts -------------------------------------------------------------------------------

    def aligned_lower_faces(self, frames_rgb: Iterable[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower halves (N, res/2, res, 3) uint8 of the aligned crops at the SyncNet's size, and (N,)
        has-face flags. `frames_rgb`: an (N, H, W, 3) array, or an iterable of such chunks (a video
        streams through; only the lower halves are kept)."""
        res = self.crop_resolution
        return aligned_face_crops(frames_rgb, face_backend=self.face_backend, size=res, first_row=res // 2)

    @torch.no_grad()
    def _embed(self, tower, count: int, batch_of) -> np.ndarray:
        """Normalised embeddings of `count` inputs; `batch_of(i, j)` builds inputs i..j-1 (so only
        one batch of float inputs exists at a time)."""
        device = _device_of(self.model)
        dtype = next(self.model.parameters()).dtype
        out = []
        for start in range(0, count, self.batch_size):
            batch = batch_of(start, min(count, start + self.batch_size)).to(device=device, dtype=dtype)
            out.append(torch.nn.functional.normalize(tower(batch).float(), dim=1).cpu())
        return torch.cat(out).double().numpy()

    def score_crops(self, crops: np.ndarray, samples: np.ndarray, *, fps: float = 25.0,
                    has_face: np.ndarray | None = None, stride: int = 1) -> SyncScore:
        """Score aligned face crops (N, res, res, 3) uint8 RGB against 16 kHz mono samples."""
        crops = np.asarray(crops)
        res = self.crop_resolution
        if crops.ndim != 4 or crops.shape[1:] != (res, res, 3):
            raise InvalidInputError(f"crops must be (N, {res}, {res}, 3), got {crops.shape}")
        return self.score_lower_halves(crops[:, res // 2 :], samples, fps=fps, has_face=has_face, stride=stride)

    def score_lower_halves(self, lower: np.ndarray, samples: np.ndarray, *, fps: float = 25.0,
                           has_face: np.ndarray | None = None, stride: int = 1) -> SyncScore:
        """Score the lower halves (N, res/2, res, 3) uint8 RGB of aligned crops against 16 kHz mono samples."""
        started = time.perf_counter()
        lower = np.asarray(lower)
        res = self.crop_resolution
        if lower.ndim != 4 or lower.shape[1:] != (res - res // 2, res, 3):
            raise InvalidInputError(f"lower halves must be (N, {res - res // 2}, {res}, 3), got {lower.shape}")
        n = len(lower)
        if n < WINDOW_FRAMES:
            raise MediaError(f"{n} frames: need at least {WINDOW_FRAMES} to score lip sync")
        has_face = np.ones(n, dtype=bool) if has_face is None else np.asarray(has_face, dtype=bool)
        mel = syncnet_melspectrogram(samples)
        columns = mel.shape[1]

        def audio_ok(k: int) -> bool:
            start = mel_window_start(k, fps)
            return 0 <= k and start + MEL_WINDOW_COLUMNS <= columns

        candidates = list(range(0, n - WINDOW_FRAMES + 1, max(1, int(stride))))
        starts = [k for k in candidates if has_face[k : k + WINDOW_FRAMES].all() and audio_ok(k)]
        if not starts:
            raise MediaError(
                "no 16-frame window with a face in every frame and audio under it",
                hint=f"{int((~has_face).sum())} of {n} frames have no face; audio holds {columns / COLUMNS_PER_SECOND:.2f} s",
            )
        audio_starts = sorted(
            {k + o for k in starts for o in range(-self.max_offset, self.max_offset + 1) if audio_ok(k + o)}
        )
        lower_t = torch.from_numpy(lower)
        mel_t = torch.from_numpy(mel.astype(np.float32))

        def visual_batch(i: int, j: int) -> torch.Tensor:
            return torch.stack([stack_lower_halves(lower_t[k : k + WINDOW_FRAMES]) for k in starts[i:j]])

        def audio_batch(i: int, j: int) -> torch.Tensor:
            picked = [mel_window_start(k, fps) for k in audio_starts[i:j]]
            return torch.stack([mel_t[:, c : c + MEL_WINDOW_COLUMNS][None] for c in picked])

        prepared = time.perf_counter()
        visual = self._embed(self.model.visual_encoder, len(starts), visual_batch)
        visual_done = time.perf_counter()
        audio = self._embed(self.model.audio_encoder, len(audio_starts), audio_batch)
        audio_done = time.perf_counter()
        offsets, distances, at_zero = offset_distances(visual, audio, starts, audio_starts, self.max_offset)
        best, minimum, confidence = summarise(offsets, distances)
        return SyncScore(
            sync_probability=float(np.nanmean(at_zero)),
            best_offset=best,
            min_distance=minimum,
            confidence=confidence,
            offsets=tuple(offsets),
            distance_by_offset=tuple(float(d) for d in distances),
            window_similarity=tuple(float(s) for s in at_zero),
            window_starts=tuple(starts),
            frames=n,
            fps=float(fps),
            windows=len(starts),
            skipped_windows=len(candidates) - len(starts),
            frames_without_face=int((~has_face).sum()),
            model=self.name,
            random_weights=self.random_weights,
            seconds=time.perf_counter() - started,
            stages={
                "prepare": prepared - started,
                "visual_encoder": visual_done - prepared,
                "audio_encoder": audio_done - visual_done,
            },
        )

    def score_arrays(self, frames_rgb, samples: np.ndarray, *, fps: float = 25.0, stride: int = 1) -> SyncScore:
        """Score decoded RGB frames (N, H, W, 3) uint8, or an iterable of such chunks, against
        16 kHz mono samples."""
        started = time.perf_counter()
        lower, has_face = self.aligned_lower_faces(frames_rgb)
        faces_done = time.perf_counter()
        score = self.score_lower_halves(lower, samples, fps=fps, has_face=has_face, stride=stride)
        stages = {"faces": faces_done - started, **score.stages}
        return _replace_timing(score, time.perf_counter() - started, stages)

    def score_video(self, video: str | Path, audio: str | Path | None = None, *, stride: int = 1) -> SyncScore:
        """Score a video file against its own audio track, or against `audio` when given."""
        from ..audio.decode import load_audio
        from ..video.reader import VideoReader

        started = time.perf_counter()
        samples = load_audio(audio if audio is not None else video, sample_rate=SAMPLE_RATE)
        audio_done = time.perf_counter()
        decode_seconds = 0.0
        with VideoReader(video) as reader:
            fps = reader.info.fps_float

            def chunks():  # streams the video: only the aligned lower halves are kept
                nonlocal decode_seconds
                iterator = iter(reader.chunks(VIDEO_CHUNK_FRAMES))
                while True:
                    tick = time.perf_counter()
                    chunk = next(iterator, None)
                    decode_seconds += time.perf_counter() - tick
                    if chunk is None:
                        return
                    yield chunk.frames

            faces_started = time.perf_counter()
            lower, has_face = self.aligned_lower_faces(chunks())
            faces_done = time.perf_counter()
        if len(lower) == 0:
            raise MediaError("video holds no frames", path=str(video))
        score = self.score_lower_halves(lower, samples, fps=fps, has_face=has_face, stride=stride)
        stages = {"audio": audio_done - started, "decode": decode_seconds,
                  "faces": faces_done - faces_started - decode_seconds, **score.stages}
        return _replace_timing(score, time.perf_counter() - started, stages)


def _replace_timing(score: SyncScore, seconds: float, stages: Mapping[str, float]) -> SyncScore:
    from dataclasses import replace

    return replace(score, seconds=seconds, stages=dict(stages))


def score_video(video: str | Path, audio: str | Path | None = None, *, weights: str | Path = "random-small",
                device: str = "cpu", face_backend: str = "auto", stride: int = 1) -> SyncScore:
    """One-call scoring: load the SyncNet from `weights` and score `video` (against `audio`)."""
    scorer = SyncScorer.from_weights(weights, device=device, face_backend=face_backend)
    return scorer.score_video(video, audio, stride=stride)
