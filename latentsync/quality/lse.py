"""LSE-C and LSE-D: lip-sync confidence and distance of the original SyncNet (`syncnet_v2.model`).

The scores published for lip-sync models (LatentSync's paper among them) come from upstream's
`eval/syncnet/syncnet_eval.py` (`SyncNetEval.evaluate`, from joonson/syncnet_python). This
module computes them the same way, on the project's own aligned face crops:

- per face track (a run of frames with a face, at least `MIN_TRACK_FRAMES`): the audio under the
  track (16 kHz, int16-scaled) gives MFCCs (`latentsync.quality.mfcc`, 100 rows a second);
- `min_length = min(frames, floor(samples * fps / 16000))`, windows i = 0 .. min_length - 6
  (upstream's `range(0, min_length - 5)`): lips = crops i..i+4 (224 px, BGR, 0..255), audio =
  MFCC rows `int(100 i / fps)` .. + 20 (4i .. 4i + 20 at 25 fps);
- embeddings (raw, 1024-d) from `SyncNetV2`; the audio embeddings are padded with `vshift` zero
  rows at each end and window i's lips are compared with audio windows i - vshift .. i + vshift
  (a padding row where none exists, as upstream does): distance `||lip - audio + 1e-6||_2`
  (torch's `pairwise_distance`);
- `distance_by_offset` = mean over windows per offset; **LSE-D** = its minimum, **LSE-C** =
  its median minus that minimum; `av_offset` = vshift - argmin (upstream's AV offset: > 0 when
  the best-matching audio comes *earlier* than the lips, i.e. the sound leads the picture);
  `best_offset` = -av_offset is the project's sign (as `SyncScore.best_offset`).
- Several tracks: LSE-C, LSE-D and the offset are the plain means over tracks (upstream's
  `eval_sync_conf.py` averages confidence and offset over the crop videos of a clip).

What differs from upstream (docs/quality.md says what this changes): the crops are the
project's aligned faces (landmark similarity transform, `FaceAligner` at 256 px, resized to 224)
instead of S3FD boxes widened by crop scale 0.4, median-smoothed and cut to 224 px; no JPEG /
mp4v re-encoding; no scene detection or 100 px face-size filter; other frame rates are mapped by
time instead of being resampled to 25 fps. Random weights (`random`) give meaningless numbers.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from loguru import logger

from ..errors import CheckpointError, InvalidInputError, MediaError
from ..models.syncnet_v2 import (
    CROP_SIZE,
    FRAMES_PER_WINDOW,
    MFCC_COLUMNS_PER_WINDOW,
    SYNCNET_V2_FILE,
    SyncNetV2,
    load_syncnet_v2,
    seeded_syncnet_v2,
)
from ..weights import SYNCNET_V2_HUB_PATH  # where the hub repositories (and fetch-weights) keep it
from .mfcc import ROWS_PER_SECOND, SAMPLE_RATE, int16_scale, mfcc

VSHIFT = 15  # upstream's evaluate(vshift=15): offsets -15..+15 frames
MIN_TRACK_FRAMES = 51  # upstream's eval_sync_conf: face tracks of more than min_track=50 frames
BATCH_SIZE = 20  # upstream's evaluate(batch_size=20)
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's eps, added to the difference
RANDOM_LSE_WEIGHTS = ("random", "random-small", "random-1.5", "random-1.6")  # all mean one seeded SyncNetV2


def find_syncnet_v2(folder: str | Path) -> Optional[Path]:
    """`syncnet_v2.model` in a weights folder: at its top, or under `auxiliary/` (where
    `fetch-weights` and upstream's download put it); None when absent."""
    folder = Path(folder)
    for candidate in (folder / SYNCNET_V2_FILE, folder / SYNCNET_V2_HUB_PATH):
        if candidate.is_file():
            return candidate
    return None


def lse_distances(lip: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """(W, 2 vshift + 1) distances: row i, column j compares lip window i with audio window
    i + j - vshift, a zero vector where that is outside 0..W-1 (upstream's padding)."""
    lip = np.asarray(lip, dtype=np.float64)
    audio = np.asarray(audio, dtype=np.float64)
    if lip.shape != audio.shape or lip.ndim != 2:
        raise InvalidInputError(f"lip and audio embeddings must be the same (W, C) shape, got {lip.shape}, {audio.shape}")
    padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio, np.zeros((vshift, audio.shape[1]))])
    span = 2 * vshift + 1
    windows = np.stack([padded[i : i + span] for i in range(len(lip))])  # (W, span, C)
    return np.sqrt(np.square(lip[:, None, :] - windows + PAIRWISE_EPS).sum(axis=2))


def lse_summary(distances: np.ndarray, vshift: int = VSHIFT) -> tuple[int, float, float, np.ndarray]:
    """(av_offset, LSE-D, LSE-C, mean distance per offset) from `lse_distances`' output.
    The first minimum wins a tie; the median of the 2 vshift + 1 means is their middle value."""
    means = np.asarray(distances, dtype=np.float64).mean(axis=0)
    index = int(np.argmin(means))
    minimum = float(means[index])
    return vshift - index, minimum, float(np.median(means) - minimum), means


@dataclass(frozen=True)
class TrackLse:
    """LSE of one face track (a run of consecutive frames with a face)."""

    start: int  # first frame of the track in the clip
    frames: int
    windows: int
    av_offset: int
    lse_d: float
    lse_c: float
    distance_by_offset: tuple[float, ...]  # mean distance at offsets -vshift..+vshift (the project's sign)


@dataclass(frozen=True)
class LseScore:
    """LSE-C / LSE-D of one video against one audio track (see the module docstring)."""

    lse_c: float  # higher is better synced
    lse_d: float  # lower is better synced
    av_offset: int  # upstream's sign: > 0 the best-matching audio comes earlier (sound leads)
    best_offset: int  # the project's sign (-av_offset): > 0 the matching audio comes later
    tracks: tuple[TrackLse, ...]
    frames: int
    fps: float
    windows: int
    frames_without_face: int
    vshift: int
    model: str  # "syncnet_v2.model" or "random"
    random_weights: bool
    seconds: float = 0.0
    stages: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tracks"] = [asdict(track) for track in self.tracks]
        data["stages"] = dict(self.stages)
        return data

    def summary(self) -> dict[str, Any]:
        """What a job report keeps: `lse_c`, `lse_d`, `lse_av_offset`."""
        return {"lse_c": self.lse_c, "lse_d": self.lse_d, "lse_av_offset": self.av_offset}


def face_tracks(has_face: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive frames with a face, at least `min_frames` long."""
    runs, start = [], None
    for index, flag in enumerate(list(np.asarray(has_face, dtype=bool)) + [False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= min_frames:
                runs.append((start, index))
            start = None
    return runs


class LseScorer:
    """Scores videos with one loaded original SyncNet. Keep one per process."""

    def __init__(self, model: SyncNetV2, *, name: str, random_weights: bool, batch_size: int = BATCH_SIZE,
                 face_backend: str = "auto", vshift: int = VSHIFT, min_track_frames: int = MIN_TRACK_FRAMES):
        self.model = model.eval()
        self.name = name
        self.random_weights = random_weights
        self.batch_size = int(batch_size)
        self.face_backend = face_backend
        self.vshift = int(vshift)
        self.min_track_frames = max(int(min_track_frames), FRAMES_PER_WINDOW + 1)
        if self.batch_size < 1:
            raise InvalidInputError(f"batch size must be at least 1, got {batch_size}")

    @classmethod
    def from_weights(cls, weights: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     seed: int = 0, **kwargs) -> "LseScorer":
        """`random` (and the other random names: a seeded SyncNetV2, numbers meaningless), a
        weights folder holding `syncnet_v2.model` (top level or `auxiliary/`), or the file itself."""
        spec = str(weights)
        if spec in RANDOM_LSE_WEIGHTS:
            logger.warning("LSE with RANDOM SyncNet weights: LSE-C / LSE-D are meaningless")
            model = seeded_syncnet_v2(seed).to(device=device, dtype=dtype)
            return cls(model, name="random", random_weights=True, **kwargs)
        path = Path(spec)
        if path.is_dir():
            found = find_syncnet_v2(path)
            if found is None:
                raise CheckpointError(
                    f"{SYNCNET_V2_FILE} not found in the weights folder (looked for {SYNCNET_V2_FILE} and "
                    f"{SYNCNET_V2_HUB_PATH})",
                    path=str(path / SYNCNET_V2_FILE),
                    hint="run `latentsync-run fetch-weights DIR` (it fetches auxiliary/syncnet_v2.model), "
                    "or leave LSE out (latentsync-eval --lse off)",
                )
            path = found
        return cls(load_syncnet_v2(path, device=device, dtype=dtype), name=path.name, random_weights=False, **kwargs)

    # -- the parts -------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, crops_rgb: np.ndarray, mfcc_rows: np.ndarray, window_count: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """Raw (W, 1024) lip and audio embeddings of windows 0..W-1 of one track."""
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        crops = torch.from_numpy(np.ascontiguousarray(crops_rgb))
        table = torch.from_numpy(np.ascontiguousarray(mfcc_rows.T, dtype=np.float32))
        lips, audio = [], []
        for first in range(0, window_count, self.batch_size):
            indices = range(first, min(window_count, first + self.batch_size))
            lips.append(self.model.embed_lips(lip_batch(crops, indices).to(device=device, dtype=dtype)).float().cpu())
            audio.append(self.model.embed_audio(audio_batch(table, indices, fps).to(device=device, dtype=dtype)).float().cpu())
        return torch.cat(lips).numpy(), torch.cat(audio).numpy()

    def score_track(self, crops_rgb: np.ndarray, samples_int16: np.ndarray, *, fps: float = 25.0,
                    start: int = 0) -> TrackLse:
        """LSE of one track: its (n, 224, 224, 3) uint8 RGB crops and the int16-scaled samples
        under it (starting at its first frame)."""
        n = len(crops_rgb)
        min_length = min(n, int(math.floor(len(samples_int16) * fps / SAMPLE_RATE)))
        windows = min_length - FRAMES_PER_WINDOW
        if windows < 1:
            raise MediaError(f"a track of {n} frames with {len(samples_int16) / SAMPLE_RATE:.2f} s of audio is too "
                             f"short for LSE (needs {FRAMES_PER_WINDOW + 1} frames with audio under them)")
        rows = mfcc(samples_int16)
        needed = audio_row(windows - 1, fps) + MFCC_COLUMNS_PER_WINDOW
        if needed > len(rows):  # only at frame rates far from 25 fps
            raise MediaError(f"audio gives {len(rows)} MFCC rows; the last window needs {needed}")
        lip, audio = self.embed(crops_rgb, rows, windows, fps)
        av_offset, lse_d, lse_c, means = lse_summary(lse_distances(lip, audio, self.vshift), self.vshift)
        return TrackLse(start=start, frames=n, windows=windows, av_offset=av_offset, lse_d=lse_d, lse_c=lse_c,
                        distance_by_offset=tuple(float(m) for m in means))

    def score_crops(self, crops: np.ndarray, samples: np.ndarray, *, fps: float = 25.0,
                    has_face: np.ndarray | None = None) -> LseScore:
        """Score aligned face crops (N, 224, 224, 3) uint8 RGB against 16 kHz mono float samples in [-1, 1)."""
        started = time.perf_counter()
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise InvalidInputError(f"crops must be (N, {CROP_SIZE}, {CROP_SIZE}, 3), got {crops.shape}")
        n = len(crops)
        has_face = np.ones(n, dtype=bool) if has_face is None else np.asarray(has_face, dtype=bool)
        tracks = face_tracks(has_face, self.min_track_frames)
        if not tracks:
            raise MediaError(
                f"no face track of at least {self.min_track_frames} frames for LSE",
                hint=f"{int((~has_face).sum())} of {n} frames have no face; upstream scores tracks of more than 50 frames",
            )
        scaled = int16_scale(samples)
        per_frame = SAMPLE_RATE / fps
        scored = []
        for begin, end in tracks:
            segment = scaled[int(round(begin * per_frame)) : int(round(end * per_frame))]
            scored.append(self.score_track(crops[begin:end], segment, fps=fps, start=begin))
        return LseScore(
            lse_c=float(np.mean([t.lse_c for t in scored])),
            lse_d=float(np.mean([t.lse_d for t in scored])),
            av_offset=int(np.mean([t.av_offset for t in scored])),  # upstream: int(fmean(...))
            best_offset=-int(np.mean([t.av_offset for t in scored])),
            tracks=tuple(scored),
            frames=n,
            fps=float(fps),
            windows=sum(t.windows for t in scored),
            frames_without_face=int((~has_face).sum()),
            vshift=self.vshift,
            model=self.name,
            random_weights=self.random_weights,
            seconds=time.perf_counter() - started,
            stages={"syncnet_v2": time.perf_counter() - started},
        )

    def aligned_faces(self, frames_rgb: Iterable[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 224, 224, 3) uint8 aligned crops and (N,) has-face flags (`sync.aligned_face_crops`)."""
        from .sync import aligned_face_crops

        return aligned_face_crops(frames_rgb, face_backend=self.face_backend, size=CROP_SIZE)

    def score_arrays(self, frames_rgb, samples: np.ndarray, *, fps: float = 25.0) -> LseScore:
        """Score decoded RGB frames (N, H, W, 3) uint8, or an iterable of chunks, against 16 kHz samples."""
        started = time.perf_counter()
        crops, has_face = self.aligned_faces(frames_rgb)
        faces_done = time.perf_counter()
        score = self.score_crops(crops, samples, fps=fps, has_face=has_face)
        return replace(score, seconds=time.perf_counter() - started,
                       stages={"faces": faces_done - started, **score.stages})

    def score_video(self, video: str | Path, audio: str | Path | None = None) -> LseScore:
        """Score a video file against its own audio track, or against `audio` when given."""
        from ..audio.decode import load_audio
        from ..video.reader import VideoReader
        from .sync import VIDEO_CHUNK_FRAMES

        started = time.perf_counter()
        samples = load_audio(audio if audio is not None else video, sample_rate=SAMPLE_RATE)
        with VideoReader(video) as reader:
            fps = reader.info.fps_float
            crops, has_face = self.aligned_faces(chunk.frames for chunk in reader.chunks(VIDEO_CHUNK_FRAMES))
        if len(crops) == 0:
            raise MediaError("video holds no frames", path=str(video))
        faces_done = time.perf_counter()
        score = self.score_crops(crops, samples, fps=fps, has_face=has_face)
        return replace(score, seconds=time.perf_counter() - started,
                       stages={"audio_decode_faces": faces_done - started, **score.stages})


def lip_batch(crops_rgb: torch.Tensor, windows: Iterable[int]) -> torch.Tensor:
    """(B, 3, 5, 224, 224) float32 lip input of windows starting at `windows`, from (N, 224, 224, 3)
    uint8 RGB crops: channels flipped to BGR (upstream reads frames with OpenCV), values 0..255."""
    bgr = crops_rgb.flip(-1)
    return torch.stack([bgr[i : i + FRAMES_PER_WINDOW].permute(3, 0, 1, 2) for i in windows]).float()


def audio_batch(mfcc_table: torch.Tensor, windows: Iterable[int], fps: float) -> torch.Tensor:
    """(B, 1, 13, 20) audio input of windows starting at `windows`, from the (13, rows) MFCC table."""
    starts = [audio_row(i, fps) for i in windows]
    return torch.stack([mfcc_table[:, s : s + MFCC_COLUMNS_PER_WINDOW][None] for s in starts])


def audio_row(window: int, fps: float) -> int:
    """First MFCC row of window `window`: int(100 window / fps) (4 window at 25 fps, as upstream)."""
    return int(ROWS_PER_SECOND * window / fps)


def lse_scorer_for(weights: str | Path, *, required: bool = False, **kwargs) -> Optional[LseScorer]:
    """The LSE scorer a weights spec allows: a folder holding `syncnet_v2.model` (top level or
    `auxiliary/`; for a checkpoint file, the folder it lies in) gives one; without that file, None,
    or CheckpointError naming it when `required`. Random names give a seeded one only when
    `required` (its numbers mean nothing)."""
    spec = str(weights)
    if spec in RANDOM_LSE_WEIGHTS:
        return LseScorer.from_weights(spec, **kwargs) if required else None
    path = Path(spec)
    folder = path.parent if path.is_file() else path
    if find_syncnet_v2(folder) is None and not required:
        return None
    return LseScorer.from_weights(folder, **kwargs)


__all__: Sequence[str] = ("LseScore", "LseScorer", "TrackLse", "audio_batch", "find_syncnet_v2", "lip_batch",
                          "lse_distances", "lse_scorer_for", "lse_summary", "MIN_TRACK_FRAMES", "SYNCNET_V2_HUB_PATH",
                          "VSHIFT")
