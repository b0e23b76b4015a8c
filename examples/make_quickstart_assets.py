"""Make the quickstart clip and its speech-like audio, deterministically.

    python examples/make_quickstart_assets.py            # writes examples/assets/
    python examples/make_quickstart_assets.py --out DIR  # somewhere else

`quickstart.mp4`: 3 s at 25 fps (75 frames), 256x256 H.264, no audio track.
The face is scikit-image's bundled astronaut photo (no download), gently
animated with a slow zoom, drift and tilt so face tracking and translation
smoothing see real motion.

`quickstart_speech.wav`: 3.0 s of 16 kHz mono int16 speech-like sound: a
glottal pulse train with an intonation contour, through vowel formant filters
that change per syllable (about 4 syllables a second), with a pause, noise
bursts for fricatives, and a quiet breath floor. It is exactly as long as the
video, so a quickstart run writes as many frames as the clip has (the trim and
ping-pong paths are covered by the tests). It is not speech: with real weights
the lips move, but to no words.

Same numbers in, same bytes out: seeded noise, x264 on one thread.
"""
from __future__ import annotations

import argparse
import sys
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

try:
    from latentsync.video import VideoWriter
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from latentsync.video import VideoWriter

SIZE = 256
FPS = Fraction(25)
SECONDS = 3.0
SAMPLE_RATE = 16000
# Where the face sits in skimage.data.astronaut() (512x512): centre and crop side.
FACE_CENTRE = (225.0, 150.0)
CROP_SIDE = 288.0

# (F1, F2, F3) in Hz and bandwidths for a handful of vowels.
VOWELS = {
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
}
BANDWIDTHS = (80, 100, 120)
# Syllables: (vowel, starts with a fricative, length in s); None is a pause.
SYLLABLES = [
    ("a", False, 0.22), ("i", True, 0.24), ("o", False, 0.26), ("e", True, 0.22),
    ("u", False, 0.28), (None, False, 0.30),
    ("e", True, 0.22), ("a", False, 0.26), ("i", False, 0.22), ("o", True, 0.27),
    ("a", False, 0.30), (None, False, 0.21),
]


def animated_frames(n_frames: int) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8: the astronaut's face with a slow zoom, drift and tilt."""
    import cv2
    from skimage import data

    image = np.ascontiguousarray(data.astronaut())
    frames = np.empty((n_frames, SIZE, SIZE, 3), np.uint8)
    for i in range(n_frames):
        t = i / float(FPS)
        zoom = 1.0 + 0.06 * np.sin(2 * np.pi * t / 3.0)  # +-6 %
        angle = 3.0 * np.sin(2 * np.pi * t / 2.2)  # +-3 degrees
        shift_x = 6.0 * np.sin(2 * np.pi * t / 2.7)  # +-6 px (output pixels)
        shift_y = 4.0 * np.sin(2 * np.pi * t / 1.9 + 1.0)
        # Output pixel -> source pixel: centre the face, scale the crop to SIZE, then animate.
        scale = SIZE / CROP_SIDE * zoom
        matrix = cv2.getRotationMatrix2D(FACE_CENTRE, angle, scale)
        matrix[0, 2] += SIZE / 2 - FACE_CENTRE[0] + shift_x
        matrix[1, 2] += SIZE / 2 - FACE_CENTRE[1] + shift_y
        frames[i] = cv2.warpAffine(
            image, matrix, (SIZE, SIZE), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
    return frames


def _resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Two-pole formant resonator, unit gain at DC."""
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * freq / SAMPLE_RATE
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([sum(a)], a, signal)


def speech_like(seconds: float, seed: int = 1234) -> np.ndarray:
    """float32 mono at SAMPLE_RATE, peak 0.5."""
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(seed)
    total = int(round(seconds * SAMPLE_RATE))
    out = np.zeros(total)
    position = 0
    # Stretch the syllable plan to the requested length.
    stretch = seconds / sum(length for _, _, length in SYLLABLES)
    b_hi, a_hi = butter(4, 3000 / (SAMPLE_RATE / 2), btype="high")
    for index, (vowel, fricative, length) in enumerate(SYLLABLES):
        n = min(int(round(length * stretch * SAMPLE_RATE)), total - position)
        if n <= 0:
            break
        if vowel is not None:
            t = np.arange(n) / SAMPLE_RATE
            # Pitch: phrase declination from 150 to 115 Hz plus a rise-fall per syllable.
            phrase = 150 - 35 * (position / total)
            f0 = phrase * (1 + 0.08 * np.sin(np.pi * t / t[-1]) + 0.01 * rng.standard_normal())
            phase = np.cumsum(f0 / SAMPLE_RATE)
            # Glottal source: a sawtooth-ish pulse per period, rounded by a one-pole low-pass.
            pulses = np.diff(np.floor(phase), prepend=0.0)
            source = lfilter([1.0], [1.0, -0.97], pulses - pulses.mean())
            voiced = sum(_resonator(source, f, bw) * g for f, bw, g in zip(VOWELS[vowel], BANDWIDTHS, (1.0, 0.5, 0.25)))
            # Syllable envelope: quick attack, gentle decay (about 4 Hz syllable rate).
            envelope = np.sin(np.pi * np.clip(t / t[-1], 0, 1)) ** 0.6
            segment = voiced / (np.abs(voiced).max() + 1e-9) * envelope
            if fricative:
                burst = min(n, int(0.07 * SAMPLE_RATE))
                noise = lfilter(b_hi, a_hi, rng.standard_normal(burst))
                noise *= np.hanning(burst) * 0.35 / (np.abs(noise).max() + 1e-9)
                segment[:burst] = segment[:burst] * np.linspace(0, 1, burst) + noise
            out[position : position + n] = segment * (0.8 + 0.2 * ((index * 7) % 3) / 2)
        position += n
    out += 0.003 * lfilter([1.0], [1.0, -0.9], rng.standard_normal(total))  # breath/room floor
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())


def make_assets(out_dir: Path, *, seconds: float = SECONDS, audio_seconds: float = SECONDS) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path = out_dir / "quickstart.mp4"
    audio_path = out_dir / "quickstart_speech.wav"
    n_frames = int(round(seconds * float(FPS)))
    with VideoWriter(
        video_path, width=SIZE, height=SIZE, fps=FPS, crf=23, preset="slow",
        encoder_options={"threads": "1"},
    ) as writer:
        writer.write_frames(animated_frames(n_frames))
    write_wav(audio_path, speech_like(audio_seconds))
    return video_path, audio_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "assets")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="video length (default 3.0)")
    parser.add_argument("--audio-seconds", type=float, default=SECONDS,
                        help="audio length (default 3.0; longer ping-pongs the video, shorter trims it)")
    args = parser.parse_args(argv)
    for path in make_assets(args.out, seconds=args.seconds, audio_seconds=args.audio_seconds):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
