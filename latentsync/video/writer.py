"""Streaming video encode with audio mux, written atomically.

Frames go straight to the encoder (H.264 via libx264, yuv420p; MPEG-4 Part 2
when the bundled FFmpeg lacks libx264) into a hidden temp file beside the
output; audio is encoded to AAC and interleaved as the video advances, stopping
at the video's end (so audio longer than the video is trimmed). On success the
temp file is renamed over the output with `os.replace` (atomic on one file
system); on any exception, Ctrl-C included, it is deleted and nothing appears
at the output path.
"""
from __future__ import annotations

import os
import secrets
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
from loguru import logger

from ..errors import InvalidInputError, MediaError, OutputError
from .probe import open_input

# Encoder quality defaults follow upstream's final ffmpeg call (libx264 -crf 18).
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
# AAC bit rate per channel; 16 kHz speech needs little, 48 kHz music more.
_AAC_BITS_PER_CHANNEL = {16000: 48_000, 22050: 64_000, 24000: 64_000, 32000: 96_000}
_AAC_BITS_DEFAULT = 128_000
_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# RGB -> yuv420p goes through swscale's default BT.601 limited-range matrix; tag
# the stream so players decode with the same matrix (untagged HD is often read as BT.709).
_COLORSPACE_SMPTE170M = 6
_COLOR_RANGE_LIMITED = 1


def video_encoder_name() -> str:
    """The H.264 encoder when the bundled FFmpeg has one, else MPEG-4 Part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def partial_path(output: Path) -> Path:
    """Hidden temp path beside `output`: `.name.<token>.partial.mp4`.

    The random token keeps two runs writing the same output from clobbering
    each other's temp file; the suffix keeps the container format guessable.
    """
    return output.with_name(f".{output.stem}.{secrets.token_hex(4)}.partial{output.suffix or '.mp4'}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_writable(
    path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), create_parent: bool = True
) -> Path:
    """Fail fast (before any heavy work) if `path` cannot be written.

    Raises OutputError if the folder cannot be created or written or the path is
    a folder, and InvalidInputError if it is the same file as one of `inputs`
    (users' files are never overwritten). Returns the resolved output path.
    """
    output = Path(path).expanduser()
    if output.name in ("", ".", ".."):
        raise OutputError("output path names no file", path=output)
    for candidate in inputs:
        if candidate is not None and _same_file(output, Path(candidate).expanduser()):
            raise InvalidInputError(
                "output would overwrite an input file",
                path=output,
                hint="choose a different output path; inputs are never modified",
            )
    if output.is_dir():
        raise OutputError("output path is a folder", path=output, hint="name a file, e.g. out.mp4")
    parent = output.parent
    if not parent.exists():
        if not create_parent:
            raise OutputError(f"output folder {parent} does not exist", path=output)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {parent} ({exc.strerror or exc})", path=output) from exc
    if not parent.is_dir():
        raise OutputError(f"{parent} is not a folder", path=output)
    # os.access lies under ACLs, root and some network mounts: write a real probe file.
    probe = parent / f".{output.stem}.{secrets.token_hex(4)}.write-test"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"0")
    except OSError as exc:
        raise OutputError(f"output folder {parent} is not writable ({exc.strerror or exc})", path=output) from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return output


def container_format(path: str | os.PathLike) -> str:
    """FFmpeg muxer for a video output path; OutputError for a suffix it cannot hold."""
    suffix = Path(path).suffix.lower()
    if suffix not in _CONTAINER_FORMATS:
        raise OutputError(
            f"unsupported output type {suffix or '(no suffix)'!r}", path=path,
            hint="name the output " + ", ".join(sorted(_CONTAINER_FORMATS)),
        )
    return _CONTAINER_FORMATS[suffix]


def check_video_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """check_output_writable plus a container the writer can produce (.mp4, .m4v, .mov, .mkv)."""
    output = check_output_writable(path, inputs=inputs)
    container_format(output)
    return output


def _as_fraction(fps: Fraction | float | int | str) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, str):
        rate = Fraction(fps)
    elif isinstance(fps, float):
        # A float like 29.97 or 23.976 means an NTSC rate (30000/1001, 24000/1001),
        # which a float cannot hold exactly; anything else is taken at face value.
        ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
        rate = ntsc if ntsc.denominator == 1001 and abs(float(ntsc) - fps) < 0.005 else Fraction(fps).limit_denominator(1000)
    else:
        rate = Fraction(int(fps))
    if rate <= 0:
        raise InvalidInputError(f"frame rate must be positive, got {fps!r}")
    return rate


class _AudioFeed:
    """Planar float32 audio blocks (channels, n) at `rate`, pulled as the video advances."""

    def __init__(self, blocks: Iterator[np.ndarray], rate: int, channels: int):
        self.blocks = blocks
        self.rate = rate
        self.channels = channels
        self._buffer = np.zeros((channels, 0), np.float32)
        self._done = False

    def take(self, n: int) -> np.ndarray:
        """Up to `n` samples per channel; fewer only when the source has ended."""
        while self._buffer.shape[1] < n and not self._done:
            try:
                block = next(self.blocks)
            except StopIteration:
                self._done = True
                break
            self._buffer = np.concatenate([self._buffer, block], axis=1)
        taken, self._buffer = self._buffer[:, :n], self._buffer[:, n:]
        return taken

    @property
    def exhausted(self) -> bool:
        return self._done and self._buffer.shape[1] == 0

    def close(self) -> None:
        # Closing the generator runs its `finally`, which closes a decoded file.
        close = getattr(self.blocks, "close", None)
        if close is not None:
            close()


def _array_feed(samples: np.ndarray, rate: int) -> _AudioFeed:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    elif samples.ndim == 2 and samples.shape[0] > samples.shape[1]:
        samples = samples.T  # (n, channels) -> (channels, n)
    if samples.ndim != 2 or samples.shape[0] not in (1, 2):
        raise InvalidInputError(f"audio array must be (n,) mono or (2, n) stereo, got shape {samples.shape}")
    if samples.shape[1] == 0:
        raise MediaError("audio holds no samples")
    block = 1 << 15

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, samples.shape[1], block):
            yield np.ascontiguousarray(samples[:, start : start + block])

    return _AudioFeed(blocks(), rate, samples.shape[0])


def _file_feed(path: Path) -> _AudioFeed:
    """Decode an audio file (or a video's audio track) lazily, keeping its rate; >2 channels mix to stereo."""
    container = open_input(path)
    if not container.streams.audio:
        container.close()
        raise MediaError("has no audio stream", path=path)
    stream = container.streams.audio[0]
    rate = int(stream.codec_context.sample_rate or 0)
    if rate <= 0:
        container.close()
        raise MediaError("audio stream has no sample rate", path=path)
    channels = 1 if (stream.codec_context.channels or 1) == 1 else 2
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)

    def blocks() -> Iterator[np.ndarray]:
        produced = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    array = out.to_ndarray().astype(np.float32, copy=False)
                    produced += array.shape[1]
                    yield array
            for out in resampler.resample(None):
                array = out.to_ndarray().astype(np.float32, copy=False)
                produced += array.shape[1]
                yield array
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"audio data cannot be decoded ({exc})", path=path) from exc
        finally:
            container.close()
        if produced == 0:
            raise MediaError("audio stream holds no samples", path=path)

    return _AudioFeed(blocks(), rate, channels)


class VideoWriter:
    """Write RGB uint8 frames to an mp4 with an optional AAC audio track, atomically.

    Use as a context manager::

        with VideoWriter(out, width=w, height=h, fps=info.fps, audio=samples, inputs=[src]) as writer:
            for chunk in chunks:
                writer.write_frames(chunk.frames)

    `audio` is a float array in [-1, 1] (mono (n,) or stereo (2, n)) at
    `audio_sample_rate`, or a path to any audio/video file (decoded lazily at its
    own rate). Audio stops at the video's end; audio shorter than the video just
    ends early. Output exists only after a successful `close()`.
    `encoder_options` go to libx264 as extra private options (e.g. `{"threads": "1"}`
    for bit-identical output across machines).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        fps: Fraction | float | int | str,
        audio: np.ndarray | str | os.PathLike | None = None,
        audio_sample_rate: int = 16000,
        inputs: Sequence[str | os.PathLike | None] = (),
        codec: str | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        encoder_options: dict[str, str] | None = None,
    ):
        if width <= 0 or height <= 0:
            raise InvalidInputError(f"frame size must be positive, got {width}x{height}")
        audio_path = None if audio is None or isinstance(audio, np.ndarray) else Path(audio)
        protected = list(inputs) + ([audio_path] if audio_path is not None else [])
        self.path = check_video_output(path, inputs=protected)
        self._format = container_format(self.path)
        self.width, self.height = int(width), int(height)
        self.fps = _as_fraction(fps)
        self.codec_name = codec or video_encoder_name()
        self.crf = crf
        self.preset = preset
        self.encoder_options = dict(encoder_options or {})
        self.frames_written = 0
        self._audio_samples_written = 0
        self._closed = False
        self._temp = partial_path(self.path)
        # Audio is opened before the output so a bad audio file fails without touching the folder.
        if audio is None:
            self._feed = None
        elif isinstance(audio, np.ndarray):
            self._feed = _array_feed(audio, int(audio_sample_rate))
        else:
            self._feed = _file_feed(audio_path)
        # yuv420p needs even sizes: pad odd ones by repeating the last row/column.
        self._coded_width = self.width + (self.width % 2)
        self._coded_height = self.height + (self.height % 2)
        if (self._coded_width, self._coded_height) != (self.width, self.height):
            logger.warning(
                "{}: {}x{} is odd; yuv420p needs even sizes, encoding {}x{} (last row/column repeated)",
                self.path, self.width, self.height, self._coded_width, self._coded_height,
            )
        try:
            self._open()
        except BaseException:
            self._cleanup()
            raise

    def _open(self) -> None:
        try:
            # faststart: the index goes to the front so players can start before the download ends.
            options = {"movflags": "+faststart"} if self._format in ("mp4", "mov") else {}
            self._container = av.open(str(self._temp), mode="w", format=self._format, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot create temp file {self._temp.name} ({exc})", path=self.path) from exc
        stream = self._container.add_stream(self.codec_name, rate=self.fps)
        stream.width = self._coded_width
        stream.height = self._coded_height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.colorspace = _COLORSPACE_SMPTE170M
        stream.codec_context.color_range = _COLOR_RANGE_LIMITED
        self._frame_time_base = Fraction(1, 1) / self.fps
        stream.time_base = self._frame_time_base
        stream.codec_context.time_base = self._frame_time_base
        if self.codec_name == "libx264":
            # PyAV opens codecs with thread_type SLICE; FFmpeg's libx264 wrapper has no
            # slice-thread capability, so x264 then runs on ONE thread whatever `threads`
            # says (its SEI reads `threads=1`): 24-30 ms per 720p frame, the serial tail
            # of the paste-and-encode stage. AUTO lets x264 run its frame threads (count 0 =
            # x264's choice, 1.5 x cores; `threads` in encoder_options still sets it): the
            # same H.264 yuv420p stream, several cores busy.
            stream.codec_context.thread_type = "AUTO"
            stream.options = {"crf": str(self.crf), "preset": self.preset, **self.encoder_options}
        else:
            stream.codec_context.qscale = 2  # mpeg4: near-transparent fixed quality
            stream.codec_context.flags |= int(av.codec.context.Flags.qscale)
            stream.options = dict(self.encoder_options)
        self._video = stream
        self._audio = None
        if self._feed is not None:
            layout = "mono" if self._feed.channels == 1 else "stereo"
            audio = self._container.add_stream("aac", rate=self._feed.rate, layout=layout)
            audio.bit_rate = _AAC_BITS_PER_CHANNEL.get(self._feed.rate, _AAC_BITS_DEFAULT) * self._feed.channels
            audio.time_base = Fraction(1, self._feed.rate)
            self._audio = audio
            self._audio_frame_size = None
        self._audio_done = False

    # -- writing -------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (height, width, 3) frame."""
        if self._closed:
            raise OutputError("writer is closed", path=self.path)
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3):
            raise InvalidInputError(
                f"frame {self.frames_written} has shape {frame.shape}, expected {(self.height, self.width, 3)}",
                path=self.path,
            )
        if frame.dtype != np.uint8:
            raise InvalidInputError(f"frame {self.frames_written} has dtype {frame.dtype}, expected uint8", path=self.path)
        if (self._coded_width, self._coded_height) != (self.width, self.height):
            frame = np.pad(frame, ((0, self._coded_height - self.height), (0, self._coded_width - self.width), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        # Not the stream's time base: the muxer rewrites that when it writes the header.
        video_frame.time_base = self._frame_time_base
        self._mux(self._video.encode(video_frame))
        self.frames_written += 1
        self._write_audio_until(Fraction(self.frames_written) / self.fps)

    def write_frames(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Append a (n, height, width, 3) array or any iterable of frames."""
        for frame in frames:
            self.write(frame)

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"writing failed ({exc})", path=self.path) from exc

    def _write_audio_until(self, seconds: Fraction, *, final: bool = False) -> None:
        """Encode audio up to `seconds` of output time (keeps the file interleaved).

        AAC takes fixed-size frames and allows a short one only last, so while
        streaming only whole frames go out; `final` writes the short tail.
        """
        if self._audio is None or self._audio_done:
            return
        target = int(seconds * self._feed.rate)
        if self._audio_frame_size is None:
            self._audio_frame_size = self._audio.codec_context.frame_size or 1024
        size = self._audio_frame_size
        layout = "mono" if self._feed.channels == 1 else "stereo"
        while True:
            count = min(size, target - self._audio_samples_written)
            if count <= 0 or (count < size and not final):
                return
            samples = self._feed.take(count)
            if samples.shape[1] == 0:
                self._audio_done = True
                return
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
            frame.sample_rate = self._feed.rate
            frame.pts = self._audio_samples_written
            frame.time_base = Fraction(1, self._feed.rate)
            self._audio_samples_written += samples.shape[1]
            self._mux(self._audio.encode(frame))
            if samples.shape[1] < size:
                # Audio ended, or the video did: this short frame must be the last.
                self._audio_done = True
                return

    # -- finishing -----------------------------------------------------------
    def close(self) -> Path:
        """Flush encoders, finish the file and move it into place. Returns the output path."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise OutputError("no frames were written; refusing to create an empty video", path=self.path)
            self._mux(self._video.encode(None))
            if self._audio is not None:
                self._write_audio_until(Fraction(self.frames_written) / self.fps, final=True)
                self._mux(self._audio.encode(None))
            self._container.close()
            self._container = None
            if self._feed is not None:
                self._feed.close()
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        logger.info(
            "wrote {} ({} frames at {} fps, {}{})",
            self.path, self.frames_written, self.fps, self.codec_name,
            f", {self._audio_samples_written / self._feed.rate:.3f} s AAC audio" if self._audio is not None else "",
        )
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the output path is left as it was."""
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.close()
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is being thrown away; a close error changes nothing
                pass
            self._container = None
        try:
            self._temp.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove temp file {}: {}", self._temp, exc)

    @property
    def audio_seconds_written(self) -> float:
        return self._audio_samples_written / self._feed.rate if self._audio is not None else 0.0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # A writer dropped without close() (e.g. a crashed generator) must not leave its temp file.
        if not getattr(self, "_closed", True):
            try:
                self._cleanup()
            except Exception:
                pass


__all__ = ["VideoWriter", "check_output_writable", "check_video_output", "container_format", "partial_path", "video_encoder_name", "DEFAULT_CRF"]
