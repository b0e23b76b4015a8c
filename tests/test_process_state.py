"""A job run inside a process (as ComfyUI runs every node pack in one) leaves the process as it
found it: torch's global flags, the environment, torch's compile caches."""
import os
from pathlib import Path

import pytest
import torch

from latentsync.jobs import JobSpec

ASSETS = Path(__file__).resolve().parents[1] / "examples" / "assets"


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


@pytest.mark.parametrize("tf32, cudnn_benchmark", [(False, False)])  # the defaults are true: the plan differs
def test_a_job_sets_torch_flags_for_its_run_and_restores_them(tmp_path, monkeypatch, tf32, cudnn_benchmark):
    # OpenCV sets its own Qt variables when first imported (its import, not a run's doing;
    # a ComfyUI process has imported it long before)
    import cv2  # noqa: F401

    saved = _flags()
    # the flags a host process chose (ComfyUI or another node pack), unlike what the plan asks
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    torch.backends.cudnn.allow_tf32 = not tf32
    torch.backends.cudnn.benchmark = not cudnn_benchmark
    try:
        _run_and_check(tmp_path, monkeypatch, tf32, cudnn_benchmark)
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def _run_and_check(tmp_path, monkeypatch, tf32, cudnn_benchmark):
    from latentsync.pipeline import face_synthesis
    from latentsync.runner import run_job

    before_flags, before_env = _flags(), dict(os.environ)

    seen = []
    real_run = face_synthesis.FaceSynthesizer.run

    def recording_run(self, *args, **kwargs):
        seen.append(_flags())
        return real_run(self, *args, **kwargs)

    def no_global_reset():
        raise AssertionError("a job must not throw away every library's compiled graphs")

    monkeypatch.setattr(face_synthesis.FaceSynthesizer, "run", recording_run)
    monkeypatch.setattr(torch._dynamo, "reset", no_global_reset)
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "out.mp4", weights="random-small", goal="preview",
                   overrides={"steps": 1, "tf32": tf32, "cudnn_benchmark": cudnn_benchmark})
    report = run_job(spec)

    assert report.status == "ok" and (tmp_path / "out.mp4").is_file()
    assert seen and all(flags == (tf32, tf32, cudnn_benchmark) for flags in seen)  # the plan's, during the run
    assert _flags() == before_flags  # the host's, after it
    assert dict(os.environ) == before_env
    assert report.settings_applied["tf32"] is tf32
