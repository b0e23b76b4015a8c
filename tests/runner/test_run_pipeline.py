"""The streaming pipeline end to end on a CPU with the small random-weight model."""
from pathlib import Path

import av
import numpy as np
import pytest

from latentsync.errors import InvalidInputError, MediaError, OutputError
from latentsync.jobs import JobSpec
from latentsync.testing.pipeline_helpers import default_settings, run_file_clip, unchecked_settings

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"

# The quickstart: 75 frames at 25 fps and 3 s of speech (48000 samples at 16 kHz). The output
# has upstream's length, one frame per Whisper audio window: 48000 // 320 = 150 feature steps,
# 150 // 2 + 2 = 77 frames, 2 more than the audio covers (the video ping-pongs past its end).
OUTPUT_FRAMES = 77
AUDIO_COVERED_FRAMES = 75

SETTINGS = dict(
    device="cpu", precision="fp32", resolution=128, scheduler="ddim", steps=2, guidance_scale=1.5,
    cfg_mode="all", cfg_fraction=1.0, deepcache=False, deepcache_interval=3, deepcache_branch=0,
    compile="off", cuda_graphs=False, frames_per_batch=16, chunk_frames=16, vae_slicing=False,
    vae_tiling=False, vae_batch=16, attention_backend="auto", channels_last=False, face_backend="mediapipe",
    seed=1,
)


def settings(**changes):
    """SETTINGS with `changes` on top of the rules' defaults, validated (a RunSettings)."""
    return default_settings(**{**SETTINGS, **changes})


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
    result = run_file_clip(spec, settings())
    return spec, result, before


def source_schedule(n_source: int, n_output: int) -> list[int]:
    """The source frame each output frame shows (upstream's ping-pong past the video's end)."""
    from latentsync.video import plan_output_frames

    return plan_output_frames(n_source, 25.0, n_output_frames=n_output)


def test_output_has_upstreams_frame_count_the_rate_and_the_audio(quickstart_run):
    spec, result, _ = quickstart_run
    frames, rate, has_audio = read_frames(spec.output)
    src, src_rate, _ = read_frames(spec.video)
    assert len(src) == AUDIO_COVERED_FRAMES == result.stats["audio_covered_frames"]
    assert len(frames) == result.frames_total == OUTPUT_FRAMES
    assert result.stats["output_frames_rule"].startswith("upstream")
    assert result.video_seconds == pytest.approx(OUTPUT_FRAMES / 25)
    assert rate == src_rate and has_audio
    assert frames.shape[1:] == src.shape[1:]
    # past the source's end the video plays backwards: output 75, 76 show source frames 74, 73
    assert source_schedule(len(src), len(frames))[-3:] == [74, 74, 73]


def test_only_the_lower_face_changes(quickstart_run):
    spec, result, _ = quickstart_run
    frames, _, _ = read_frames(spec.output)
    src, _, _ = read_frames(spec.video)
    src = src[source_schedule(len(src), len(frames))]  # the source frame behind each output frame
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
    result = run_file_clip(spec, settings(steps=3, cfg_mode="off"))
    batches = -(-OUTPUT_FRAMES // 16)  # one chunk per batch: 4 whole chunks and the short last one
    assert result.frames_total == OUTPUT_FRAMES
    assert result.stats["unet_calls"] == 3 * batches


def test_frames_per_batch_groups_chunks(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    result = run_file_clip(spec, settings(steps=1, frames_per_batch=48))
    # 77 frames = 4 whole chunks + one of 13 = batches of 3 + 2 chunks; the short chunk runs in a
    # UNet call of its own (at its own length, as upstream), so the second batch makes two calls
    assert result.frames_total == OUTPUT_FRAMES
    assert result.stats["short_chunks"] == 1
    assert result.stats["unet_calls"] == 3


def test_frames_without_a_face_pass_through(tmp_path):
    from latentsync.video import VideoWriter

    video = tmp_path / "noface.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(video, width=128, height=128, fps=25) as writer:
        for _ in range(20):
            writer.write(np.full((128, 128, 3), 60, np.uint8) + rng.integers(0, 3, (128, 128, 3), dtype=np.uint8))
    spec = JobSpec(video=video, audio=ASSETS / "quickstart_speech.wav", output=tmp_path / "o.mp4",
                   weights="random-small")
    result = run_file_clip(spec, settings(steps=1))
    assert result.frames_total == OUTPUT_FRAMES
    assert result.frames_without_face == list(range(OUTPUT_FRAMES))
    assert any("no usable face" in w for w in result.warnings)
    assert result.stats["unet_calls"] == 0


def test_video_without_audio_and_no_audio_named_is_a_clear_error(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", output=tmp_path / "o.mp4", weights="random-small")
    with pytest.raises(MediaError, match="no audio track"):
        run_file_clip(spec, settings())
    assert not list(tmp_path.iterdir())


def test_corrupt_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    spec = JobSpec(video=bad, audio=ASSETS / "quickstart_speech.wav", output=tmp_path / "o.mp4",
                   weights="random-small")
    with pytest.raises(MediaError):
        run_file_clip(spec, settings())
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
        run_file_clip(spec, settings())
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "change, expected_shape",
    [({}, [2, 13, 16, 16, 16]), ({"chunk_frames": 8, "frames_per_batch": 8}, [2, 13, 8, 16, 16]),
     ({"resolution": 64}, [2, 13, 16, 8, 8]), ({"cfg_mode": "off"}, [1, 13, 16, 16, 16])],
)
def test_chunk_resolution_and_cfg_settings_shape_the_unet_input(tmp_path, change, expected_shape):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    result = run_file_clip(spec, settings(steps=1, **change))
    assert result.stats["unet_sample_shape"] == expected_shape


def test_seed_makes_runs_reproducible_and_different(tmp_path):
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                       output=tmp_path / f"{name}.mp4", weights="random-small", seed=seed)
        run_file_clip(spec, settings(steps=1, seed=seed))
        outs.append(read_frames(spec.output)[0])
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_a_jobs_seed_becomes_the_plans_seed():
    """The pipeline takes the seed from its settings; a job's `seed:` reaches them through the plan."""
    from latentsync.engine import gather_facts, load_ruleset, resolve_plan

    ruleset = load_ruleset()
    for seed in (2, 12345):
        spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                       output=Path("/nonexistent/o.mp4"), weights="random-small", seed=seed)
        plan = resolve_plan(spec, gather_facts(spec, ruleset), ruleset)
        assert plan.settings.seed == seed


def test_cuda_setting_without_cuda_falls_back_to_cpu_and_says_so():
    import torch

    from latentsync.pipeline.levers import resolve_device

    device, dtype, warnings = resolve_device(settings(device="cuda", precision="fp16"))
    if not torch.cuda.is_available():
        assert device.type == "cpu" and dtype == torch.float32 and warnings
        assert "CUDA" in warnings[0]
    else:
        assert device.type == "cuda" and dtype == torch.float16 and warnings == []
    # fp16 on the CPU runs in fp32, and says so
    device, dtype, warnings = resolve_device(settings(device="cpu", precision="fp16"))
    assert device.type == "cpu" and dtype == torch.float32 and any("fp16" in w for w in warnings)


def test_unknown_face_backend_is_a_clear_error(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    # the plan's settings are checked before any work ...
    with pytest.raises(InvalidInputError, match="face_backend"):
        run_file_clip(spec, dict(SETTINGS, face_backend="dlib"))
    # ... and the pipeline refuses it too when handed unchecked settings
    with pytest.raises(InvalidInputError, match="face backend"):
        run_file_clip(spec, unchecked_settings(**dict(SETTINGS, face_backend="dlib")))
    assert not (tmp_path / "o.mp4").exists()
    assert not list(tmp_path.iterdir())


def test_contact_sheet_shows_input_and_output_lower_faces(tmp_path):
    from PIL import Image

    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small", contact_sheet=True)
    run_file_clip(spec, settings(steps=1), contact_sheet=tmp_path / "o.mp4.contact.png")
    sheet = np.asarray(Image.open(tmp_path / "o.mp4.contact.png"))
    res = SETTINGS["resolution"]
    # at most 8 evenly spaced frames (ContactSheet's count), and this clip has a face in all 77:
    # 8 columns; input half above, output half below
    assert sheet.shape == (res, 8 * res, 3)
    top, bottom = sheet[: res // 2].astype(int), sheet[res // 2 :].astype(int)
    assert np.abs(top - bottom).mean() > 5  # the repainted mouth differs from the input
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "o.mp4.contact.png"]


def test_paste_backend_torch_pastes_with_torch_and_matches_the_cv2_path(tmp_path, monkeypatch):
    import wave

    from latentsync.faces import torch_ops

    short = tmp_path / "short.wav"
    samples = (np.sin(np.arange(8000) / 5.0) * 8000).astype(np.int16)  # 0.5 s -> 14 frames (upstream's count)
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
        run_file_clip(spec, settings(steps=1, paste_backend=backend))
        outs[backend] = read_frames(spec.output)[0].astype(int)
    assert calls  # the torch path ran
    assert np.abs(outs["cpu"] - outs["torch"]).mean() < 3  # the same blend, another resampler
