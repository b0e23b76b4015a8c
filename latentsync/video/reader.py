"""Streaming video decode: RGB uint8 frames in chunks, never the whole clip.

`VideoReader` decodes a file front to back. `ScheduledFrameSource` serves any
schedule of source indices (see `schedule.plan_output_frames`): forward runs
decode sequentially, backward runs (the ping-pong passes) decode bounded
windows after a keyframe seek and emit them reversed. Memory is one chunk plus
at most `max_buffer_frames` decoded frames, whatever the clip length.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from loguru import logger

from ..errors import InvalidInputError, MediaError
from .probe import VideoInfo, open_input, probe_video
from .schedule import split_monotonic_runs

# How many decoded frames a backward run may hold when the caller does not say:
# up to 64 (one x264 GOP of short clips; fewer windows = fewer seeks), but never
# more than 256 MiB of RGB (64 frames of 1080p would be 400 MB; of 4K, 1.6 GB).
# An I/O buffer size, not a run setting.
DEFAULT_MAX_BUFFER_FRAMES = 64
DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024


def default_max_buffer_frames(width: int, height: int) -> int:
    return max(4, min(DEFAULT_MAX_BUFFER_FRAMES, DEFAULT_MAX_BUFFER_BYTES // max(1, width * height * 3)))


@dataclass
class FrameChunk:
    """Consecutive output frames: `frames[i]` is source frame `source_indices[i]`
    and output frame `start + i`."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    source_indices: list[int]
    start: int

    def __len__(self) -> int:
        return len(self.source_indices)


@dataclass(frozen=True)
class _PacketTable:
    """Presentation timestamps of every video packet, sorted, and which are keyframes.
    Position in `pts` is the frame index."""

    pts: list[int]
    keyframe_indices: list[int]

    def keyframe_at_or_before(self, index: int) -> int:
        pos = bisect.bisect_right(self.keyframe_indices, index) - 1
        return self.keyframe_indices[pos] if pos >= 0 else 0

    def first_keyframe_at_or_after(self, index: int) -> int | None:
        pos = bisect.bisect_left(self.keyframe_indices, index)
        return self.keyframe_indices[pos] if pos < len(self.keyframe_indices) else None

    def index_of(self, pts: int) -> int | None:
        pos = bisect.bisect_left(self.pts, pts)
        if pos < len(self.pts) and self.pts[pos] == pts:
            return pos
        return None


def _build_packet_table(path: Path) -> _PacketTable | None:
    """Demux (not decode) the whole video stream once. None when timestamps are missing."""
    container = open_input(path)
    try:
        stream = container.streams.video[0]
        entries: list[tuple[int, bool]] = []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            entries.append((int(packet.pts), bool(packet.is_keyframe)))
    finally:
        container.close()
    entries.sort()
    pts = [p for p, _ in entries]
    if len(set(pts)) != len(pts):
        return None
    keyframes = [i for i, (_, key) in enumerate(entries) if key] or [0]
    return _PacketTable(pts=pts, keyframe_indices=keyframes)


class _FrameCursor:
    """One open decoder that knows the index of the next frame it will produce.

    It moves forward by decoding and backward (or far forward) by seeking to a
    keyframe; indices after a seek come from the packet table, so they are exact
    for variable frame rate files too. Without usable timestamps a seek falls
    back to reopening the file and decoding from the start (correct, slower).
    """

    def __init__(self, path: Path, *, autorotate: bool, rotation: int, threads: bool = True):
        self.path = path
        self.autorotate = autorotate
        self.rotation = rotation
        self.threads = threads
        self._table: _PacketTable | None = None
        self._table_built = False
        self.seeks = 0  # counters for tests and logs
        self.decoded = 0
        self._container: av.container.InputContainer | None = None
        self._open_at_start()

    # -- opening and seeking -------------------------------------------------
    def _open_at_start(self) -> None:
        self.close()
        self._container = open_input(self.path)
        stream = self._container.streams.video[0]
        if self.threads:
            stream.thread_type = "AUTO"
        self._stream = stream
        self._frames = self._container.decode(stream)
        self._next_index: int | None = 0
        self._pending: av.VideoFrame | None = None
        self._exhausted = False
        if self._table is not None:
            # Keep indices consistent with seeks: if the demuxer drops leading
            # packets (edit lists), the first frame is not table entry 0.
            first = self._pull()
            if first is not None and first.pts is not None:
                self._next_index = self._table.index_of(first.pts) or 0
            self._pending = first

    def _table_or_none(self) -> _PacketTable | None:
        if not self._table_built:
            self._table = _build_packet_table(self.path)
            self._table_built = True
            if self._table is None:
                logger.debug("{}: packets lack timestamps; seeking by re-decoding from the start", self.path)
        return self._table

    def _seek(self, index: int) -> None:
        table = self._table_or_none()
        self.seeks += 1
        if table is None or index <= 0:
            self._open_at_start()
            return
        target = table.keyframe_at_or_before(index)
        if target == 0:
            self._open_at_start()
            return
        self._container.seek(table.pts[target], stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._pending = None
        self._exhausted = False
        self._next_index = None  # learnt from the first frame's timestamp
        first = self._pull()
        if first is None:
            self._open_at_start()
            return
        first_index = table.index_of(first.pts) if first.pts is not None else None
        if first_index is None or first_index > index:
            # The demuxer landed past the target (odd timestamps): take the slow, sure path.
            logger.debug("{}: seek for frame {} landed at {}; re-decoding from the start", self.path, index, first_index)
            self._open_at_start()
            return
        self._pending = first
        self._next_index = first_index

    def _pull(self) -> av.VideoFrame | None:
        if self._exhausted:
            return None
        try:
            frame = next(self._frames)
        except StopIteration:
            self._exhausted = True
            return None
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"video data cannot be decoded ({exc})", path=self.path) from exc
        self.decoded += 1
        return frame

    # -- reading ---------------------------------------------------------------
    def go_to(self, index: int) -> None:
        """Position so that the next `read()` returns frame `index`."""
        if self._next_index is not None and index == self._next_index:
            return
        if self._next_index is None or index < self._next_index:
            self._seek(index)
        elif index > self._next_index:
            # Seek only if a keyframe lies between here and the target; else decoding through is cheaper.
            table = self._table_or_none()
            if table is not None and table.keyframe_at_or_before(index) > self._next_index:
                self._seek(index)
        while self._next_index < index:
            if self._skip() is None:
                raise self._ended(index)

    def _skip(self) -> int | None:
        frame = self._pending or self._pull()
        self._pending = None
        if frame is None:
            return None
        index = self._next_index
        self._next_index += 1
        return index

    def read(self) -> tuple[int, np.ndarray] | None:
        """The next frame as (index, RGB uint8 array), or None at the end."""
        frame = self._pending or self._pull()
        self._pending = None
        if frame is None:
            return None
        index = self._next_index
        self._next_index += 1
        return index, self.to_rgb(frame)

    def read_at(self, index: int) -> np.ndarray:
        self.go_to(index)
        item = self.read()
        if item is None:
            raise self._ended(index)
        return item[1]

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        array = frame.to_ndarray(format="rgb24")
        if self.autorotate and self.rotation:
            # frame.rotation is counter-clockwise degrees; np.rot90 turns counter-clockwise.
            array = np.ascontiguousarray(np.rot90(array, k=self.rotation // 90))
        return array

    def _ended(self, index: int) -> MediaError:
        return MediaError(
            f"video ended before frame {index} (it has {self._next_index} decodable frames)",
            path=self.path,
            hint="the container's frame count is wrong or the file is truncated",
        )

    @property
    def table(self) -> _PacketTable | None:
        return self._table_or_none()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack(frames, axis=0)


class VideoReader:
    """Decode a video front to back as RGB uint8 (H, W, 3) frames.

    Iterate for single frames or call `chunks(n)` for (n, H, W, 3) arrays; only
    one chunk is alive at a time. With `autorotate` (default) frames come out
    as displayed (rotation metadata applied), so `info.display_size` is their size.
    """

    def __init__(self, path: str | os.PathLike, *, autorotate: bool = True, info: VideoInfo | None = None):
        self.path = Path(path)
        self.info = info if info is not None else probe_video(self.path)
        self.autorotate = autorotate
        self._cursor: _FrameCursor | None = None

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the arrays this reader yields."""
        return self.info.display_size if self.autorotate else (self.info.width, self.info.height)

    def _new_cursor(self) -> _FrameCursor:
        self.close()
        self._cursor = _FrameCursor(self.path, autorotate=self.autorotate, rotation=self.info.rotation)
        return self._cursor

    def __iter__(self) -> Iterator[np.ndarray]:
        cursor = self._new_cursor()
        while (item := cursor.read()) is not None:
            yield item[1]

    def chunks(self, chunk_size: int) -> Iterator[FrameChunk]:
        if chunk_size <= 0:
            raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
        cursor = self._new_cursor()
        frames: list[np.ndarray] = []
        indices: list[int] = []
        start = 0
        while (item := cursor.read()) is not None:
            indices.append(item[0])
            frames.append(item[1])
            if len(frames) == chunk_size:
                yield FrameChunk(_stack(frames), indices, start)
                start += len(frames)
                frames, indices = [], []
        if frames:
            yield FrameChunk(_stack(frames), indices, start)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScheduledFrameSource:
    """Serve `schedule` (a source frame index per output frame) in chunks, streaming.

    Forward runs decode sequentially (gaps are decoded through unless a keyframe
    seek is cheaper). Backward runs are served in windows of at most
    `max_buffer_frames` source frames (default: 64, fewer for frames so large
    that 64 would pass 256 MiB): seek to the keyframe before the window,
    decode it, emit the wanted frames reversed, move the window down. When the
    file's keyframes are at most `max_buffer_frames` apart the windows start on
    keyframes and no frame is decoded twice within a pass.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schedule: Sequence[int],
        chunk_size: int,
        *,
        max_buffer_frames: int | None = None,
        autorotate: bool = True,
        info: VideoInfo | None = None,
    ):
        if chunk_size <= 0:
            raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
        if max_buffer_frames is not None and max_buffer_frames <= 0:
            raise InvalidInputError(f"max_buffer_frames must be positive, got {max_buffer_frames}")
        self.path = Path(path)
        self.info = info if info is not None else probe_video(self.path)
        if max_buffer_frames is None:
            max_buffer_frames = default_max_buffer_frames(self.info.width, self.info.height)
        self.schedule = schedule
        self.chunk_size = chunk_size
        self.max_buffer_frames = max_buffer_frames
        self.autorotate = autorotate
        if len(schedule) and min(schedule) < 0:
            raise InvalidInputError(f"schedule holds a negative frame index ({min(schedule)})", path=self.path)
        if len(schedule) and self.info.frame_count_exact and max(schedule) >= self.info.frame_count:
            raise InvalidInputError(
                f"schedule asks for frame {max(schedule)} but the video has {self.info.frame_count} frames",
                path=self.path,
            )
        self.peak_buffered_frames = 0  # largest backward window held; for tests and reports
        self.decoded_frames = 0
        self.seeks = 0

    def __len__(self) -> int:
        return len(self.schedule)

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(source index, RGB frame) for each output frame, in schedule order."""
        cursor = _FrameCursor(self.path, autorotate=self.autorotate, rotation=self.info.rotation)
        try:
            for start, stop, forward in split_monotonic_runs(self.schedule):
                run = self.schedule[start:stop]
                if forward:
                    yield from self._forward(cursor, run)
                else:
                    yield from self._backward(cursor, run)
        finally:
            self.decoded_frames += cursor.decoded
            self.seeks += cursor.seeks
            cursor.close()

    def _forward(self, cursor: _FrameCursor, run: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        last_index, last_frame = None, None
        for index in run:
            if index != last_index:
                last_frame = cursor.read_at(index)
                last_index = index
            yield index, last_frame

    def _backward(self, cursor: _FrameCursor, run: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        position = 0
        lowest = run[-1]
        table = cursor.table
        while position < len(run):
            end = run[position]
            low = max(lowest, end - self.max_buffer_frames + 1)
            if table is not None:
                # Start the window on a keyframe when one fits: no decode is wasted.
                keyframe = table.first_keyframe_at_or_after(low)
                if keyframe is not None and keyframe <= end and keyframe > low:
                    low = keyframe
            window_stop = position
            while window_stop < len(run) and run[window_stop] >= low:
                window_stop += 1
            wanted = set(run[position:window_stop])
            buffered: dict[int, np.ndarray] = {}
            cursor.go_to(low)
            for index in range(low, end + 1):
                if index in wanted:
                    item = cursor.read()
                    if item is None:
                        raise cursor._ended(index)
                    buffered[index] = item[1]
                elif cursor._skip() is None:
                    raise cursor._ended(index)
            self.peak_buffered_frames = max(self.peak_buffered_frames, len(buffered))
            for index in run[position:window_stop]:
                yield index, buffered[index]
            buffered.clear()
            position = window_stop

    def __iter__(self) -> Iterator[FrameChunk]:
        frames: list[np.ndarray] = []
        indices: list[int] = []
        start = 0
        for index, frame in self.frames():
            indices.append(index)
            frames.append(frame)
            if len(frames) == self.chunk_size:
                yield FrameChunk(_stack(frames), indices, start)
                start += len(frames)
                frames, indices = [], []
        if frames:
            yield FrameChunk(_stack(frames), indices, start)


__all__ = ["VideoReader", "ScheduledFrameSource", "FrameChunk", "default_max_buffer_frames"]
