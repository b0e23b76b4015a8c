"""load_audio: any container/codec/rate/layout -> 16 kHz mono float32; clear errors otherwise."""
from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from latentsync.audio.decode import load_audio
from latentsync.errors import MediaError

TONE_HZ = 1000.0


def write_tone(path, *, container: str, codec: str, rate: int = 44100, layout: str = "stereo",
               seconds: float = 1.5, with_video: bool = False) -> None:
    """Encode a sine (TONE_HZ on the left/mono channel, 0.5 amplitude) with PyAV."""
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w", format=container) as output:
        video = None
        if with_video:
            video = output.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = output.add_stream(codec, rate=rate)
        audio.layout = layout
        n = int(seconds * rate)
        tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)
        planes = np.tile(tone, (channels, 1)).astype(np.float32)
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start : start + 1024]),
                                               format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                output.mux(packet)
        for packet in audio.encode():
            output.mux(packet)
        if video is not None:
            for index in range(int(seconds * 25)):
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index, np.uint8), format="rgb24")
                picture.pts = index
                for packet in video.encode(picture):
                    output.mux(packet)
            for packet in video.encode():
                output.mux(packet)


def dominant_frequency(samples: np.ndarray, rate: int = 16000) -> float:
    middle = samples[len(samples) // 4 : len(samples) // 4 + rate // 2]  # 0.5 s away from codec edges
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    return float(np.argmax(spectrum) * rate / len(middle))


@pytest.mark.parametrize(
    "name, container, codec, rate, layout",
    [
        ("tone.wav", "wav", "pcm_s16le", 44100, "stereo"),
        ("tone.mp3", "mp3", "libmp3lame", 44100, "stereo"),
        ("tone.m4a", "ipod", "aac", 44100, "stereo"),
        ("tone.flac", "flac", "flac", 48000, "mono"),
        ("tone_8k.wav", "wav", "pcm_s16le", 8000, "mono"),
    ],
)
def test_decodes_any_format_to_16k_mono(tmp_path, name, container, codec, rate, layout):
    path = tmp_path / name
    write_tone(path, container=container, codec=codec, rate=rate, layout=layout)
    before = path.read_bytes()
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    # Lossy codecs add up to one frame of padding (AAC 1024, MP3 1152 samples at 44.1 kHz).
    assert abs(samples.size / 16000 - 1.5) < 0.03
    assert dominant_frequency(samples) == pytest.approx(TONE_HZ, abs=2.0)
    # Stereo is averaged, not summed: a 0.5 tone in both channels stays about 0.5.
    assert 0.4 < np.abs(samples[4000:-4000]).max() < 0.6
    assert path.read_bytes() == before  # the user's file is untouched


def test_takes_the_audio_track_of_a_video(tmp_path):
    path = tmp_path / "clip.mp4"
    write_tone(path, container="mp4", codec="aac", rate=48000, layout="stereo", seconds=2.0, with_video=True)
    samples = load_audio(path)
    assert abs(samples.size / 16000 - 2.0) < 0.03
    assert dominant_frequency(samples) == pytest.approx(TONE_HZ, abs=2.0)


def test_other_target_rate(tmp_path):
    path = tmp_path / "tone.wav"
    write_tone(path, container="wav", codec="pcm_s16le", rate=44100, layout="mono")
    samples = load_audio(path, sample_rate=22050)
    assert abs(samples.size - 1.5 * 22050) <= 2
    assert dominant_frequency(samples, rate=22050) == pytest.approx(TONE_HZ, abs=2.5)


def test_16k_mono_int16_wav_is_bit_exact(audio_reference, reference_waveform):
    np.testing.assert_array_equal(load_audio(audio_reference / "speechlike_37s_16k.wav"), reference_waveform)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found") as caught:
        load_audio(tmp_path / "nope.wav")
    assert caught.value.path == str(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(MediaError, match="not a file"):
        load_audio(tmp_path)


def test_not_an_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    with pytest.raises(MediaError) as caught:
        load_audio(path)
    assert str(path) in str(caught.value)


def test_video_without_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for index in range(5):
            picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            picture.pts = index
            for packet in video.encode(picture):
                output.mux(packet)
        for packet in video.encode():
            output.mux(packet)
    with pytest.raises(MediaError, match="no audio stream") as caught:
        load_audio(path)
    assert caught.value.path == str(path)


def test_audio_stream_without_samples(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as output:  # a valid header and zero frames
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(16000)
    with pytest.raises(MediaError, match="no samples") as caught:
        load_audio(path)
    assert caught.value.path == str(path)
