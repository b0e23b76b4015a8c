"""The streaming pipeline end to end on a CPU with the small random-weight model."""
from pathlib import Path

import av
import numpy as np
import pytest

from latentsync.errors import InvalidInputError, MediaError, OutputError
from latentsync.jobs import JobSpec
from latentsync.runner import run_pipeline

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"

SETTINGS = dict(
    device="cpu", precision="fp32", resolution=128, scheduler="ddim", steps=2, guidance_scale=1.5,
    cfg_mode="all", cfg_fraction=1.0, deepcache=False, deepcache_interval=3, deepcache_branch=0,
    compile="off", cuda_graphs=False, frames_per_batch=16, chunk_frames=16, vae_slicing=False,
    vae_tiling=False, vae_batch=16, attention_backend="auto", channels_last=False, face_backend="mediapipe",
    seed=1,
)


def read_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = stream.average_rate
        has_audio = bool(container.streams.audio)
    return np.stack(frames), rate, has_audio


def digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "synced.mp4"
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav", output=out,
                   weights="random-small")
    before = digest(spec.video), digest(spec.audio)
    result = run_pipeline(spec, dict(SETTINGS))
    return spec, result, before


def test_output_keeps_frame_count_rate_and_gets_audio(quickstart_run):
    spec, result, _ = quickstart_run
    frames, rate, has_audio = read_frames(spec.output)
    src, src_rate, _ = read_frames(spec.video)
    assert len(frames) == len(src) == result.frames_total == 75
    assert rate == src_rate and has_audio
    assert frames.shape[1:] == src.shape[1:]


def test_only_the_lower_face_changes(quickstart_run):
    spec, result, _ = quickstart_run
    frames, _, _ = read_frames(spec.output)
    src, _, _ = read_frames(spec.video)
    diff = np.abs(frames.astype(int) - src.astype(int)).mean(axis=(0, 3))
    h, w = diff.shape
    # the mouth region is repainted (random weights: visibly different) ...
    assert diff[int(h * 0.55) : int(h * 0.75), int(w * 0.35) : int(w * 0.65)].mean() > 10
    # ... while the top rows and the corners are only re-encoded
    assert diff[: int(h * 0.15)].mean() < 4 and diff[:, : int(w * 0.1)].mean() < 4
    assert result.frames_without_face == []


def test_inputs_are_untouched_and_no_partial_files(quickstart_run):
    spec, _, before = quickstart_run
    assert (digest(spec.video), digest(spec.audio)) == before
    assert [p.name for p in spec.output.parent.iterdir()] == [spec.output.name]


def test_steps_setting_reaches_the_unet(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    result = run_pipeline(spec, dict(SETTINGS, steps=3, cfg_mode="off"))
    batches = -(-75 // 16)
    assert result.stats["unet_calls"] == 3 * batches


def test_frames_per_batch_groups_chunks(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    result = run_pipeline(spec, dict(SETTINGS, steps=1, frames_per_batch=48))
    assert result.stats["unet_calls"] == 2  # 75 frames = 5 chunks = batches of 3 + 2


def test_frames_without_a_face_pass_through(tmp_path):
    from latentsync.video import VideoWriter

    video = tmp_path / "noface.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(video, width=128, height=128, fps=25) as writer:
        for _ in range(20):
            writer.write(np.full((128, 128, 3), 60, np.uint8) + rng.integers(0, 3, (128, 128, 3), dtype=np.uint8))
    spec = JobSpec(video=video, audio=ASSETS / "quickstart_speech.wav", output=tmp_path / "o.mp4",
                   weights="random-small")
    result = run_pipeline(spec, dict(SETTINGS, steps=1))
    assert result.frames_without_face == list(range(75))
    assert any("no usable face" in w for w in result.warnings)
    assert result.stats["unet_calls"] == 0


def test_video_without_audio_and_no_audio_named_is_a_clear_error(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", output=tmp_path / "o.mp4", weights="random-small")
    with pytest.raises(MediaError, match="no audio track"):
        run_pipeline(spec, dict(SETTINGS))
    assert not list(tmp_path.iterdir())


def test_corrupt_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    spec = JobSpec(video=bad, audio=ASSETS / "quickstart_speech.wav", output=tmp_path / "o.mp4",
                   weights="random-small")
    with pytest.raises(MediaError):
        run_pipeline(spec, dict(SETTINGS))
    assert not (tmp_path / "o.mp4").exists()


def test_audio_without_samples_is_a_clear_error(tmp_path):
    import wave

    silent = tmp_path / "empty.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=silent, output=tmp_path / "o.mp4", weights="random-small")
    with pytest.raises(MediaError):
        run_pipeline(spec, dict(SETTINGS))
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "change, expected_shape",
    [({}, [2, 13, 16, 16, 16]), ({"chunk_frames": 8, "frames_per_batch": 8}, [2, 13, 8, 16, 16]),
     ({"resolution": 64}, [2, 13, 16, 8, 8]), ({"cfg_mode": "off"}, [1, 13, 16, 16, 16])],
)
def test_chunk_resolution_and_cfg_settings_shape_the_unet_input(tmp_path, change, expected_shape):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    result = run_pipeline(spec, dict(SETTINGS, steps=1, **change))
    assert result.stats["unet_sample_shape"] == expected_shape


def test_seed_makes_runs_reproducible_and_different(tmp_path):
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                       output=tmp_path / f"{name}.mp4", weights="random-small", seed=seed)
        run_pipeline(spec, dict(SETTINGS, steps=1))
        outs.append(read_frames(spec.output)[0])
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_cuda_setting_without_cuda_falls_back_to_cpu_and_says_so():
    from latentsync.runner import resolve_device

    warnings = []
    device, dtype = resolve_device({"device": "cuda", "precision": "fp16"}, warnings)
    if not __import__("torch").cuda.is_available():
        assert device.type == "cpu" and str(dtype) == "torch.float32" and warnings


def test_unknown_face_backend_is_a_clear_error(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    with pytest.raises(InvalidInputError, match="face backend"):
        run_pipeline(spec, dict(SETTINGS, face_backend="dlib"))
    assert not (tmp_path / "o.mp4").exists()


def test_contact_sheet_shows_input_and_output_lower_faces(tmp_path):
    from PIL import Image

    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small", contact_sheet=True)
    run_pipeline(spec, dict(SETTINGS, steps=1))
    sheet = np.asarray(Image.open(tmp_path / "o.mp4.contact.png"))
    res = SETTINGS["resolution"]
    assert sheet.shape == (res, 8 * res, 3)  # 8 frames; input half above, output half below
    top, bottom = sheet[: res // 2].astype(int), sheet[res // 2 :].astype(int)
    assert np.abs(top - bottom).mean() > 5  # the repainted mouth differs from the input
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "o.mp4.contact.png"]


def test_paste_backend_torch_pastes_with_torch_and_matches_the_cv2_path(tmp_path, monkeypatch):
    import wave

    from latentsync import runner as runner_mod
    from latentsync.faces import torch_ops

    short = tmp_path / "short.wav"
    samples = (np.sin(np.arange(8000) / 5.0) * 8000).astype(np.int16)  # 0.5 s -> 13 frames
    with wave.open(str(short), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    calls = []
    real = torch_ops.paste_faces_torch
    monkeypatch.setattr(torch_ops, "paste_faces_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = {}
    for backend in ("cpu", "torch"):
        spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=short, output=tmp_path / f"{backend}.mp4",
                       weights="random-small")
        run_pipeline(spec, dict(SETTINGS, steps=1, paste_backend=backend))
        outs[backend] = read_frames(spec.output)[0].astype(int)
    assert calls  # the torch path ran
    assert np.abs(outs["cpu"] - outs["torch"]).mean() < 3  # the same blend, another resampler
