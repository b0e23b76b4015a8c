"""`latentsync-eval` on the quickstart clip with random small weights (numbers meaningless, path real)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from latentsync.cli.eval import main
from latentsync.paths import examples_dir

ASSETS = examples_dir() / "assets"
VIDEO = ASSETS / "quickstart.mp4"
AUDIO = ASSETS / "quickstart_speech.wav"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "score.json"
    code = main([str(VIDEO), "--audio", str(AUDIO), "--weights", "random-small", "--json", str(out)])
    return code, out


def test_scores_the_quickstart_clip(scored):
    code, out = scored
    assert code == 0
    data = json.loads(out.read_text())
    assert data["random_weights"] is True and data["model"] == "random-small"
    assert data["frames"] == 75 and data["fps"] == 25.0
    assert data["frames_without_face"] == 0  # the face backend finds the face in every frame
    assert data["windows"] == 75 - 16 + 1
    assert 0.0 <= data["sync_probability"] <= 1.0
    assert -15 <= data["best_offset"] <= 15 and data["offsets"] == list(range(-15, 16))
    assert data["confidence"] >= 0.0
    assert data["seconds"] > 0 and {"decode", "faces", "visual_encoder", "audio_encoder"} <= set(data["stages"])
    assert data["lse"] is None  # --lse auto: random weights give no LSE unless asked


def test_lse_with_an_explicit_syncnet_v2_file(tmp_path, capsys):
    import torch

    from latentsync.models.syncnet_v2 import seeded_state_dict

    checkpoint = tmp_path / "syncnet_v2.model"
    torch.save(seeded_state_dict(4), checkpoint)
    out = tmp_path / "score.json"
    code = main([str(VIDEO), "--audio", str(AUDIO), "--weights", "random-small", "--stride", "15",
                 "--syncnet-v2", str(checkpoint), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "LSE-C" in printed and "LSE-D" in printed
    lse = json.loads(out.read_text())["lse"]
    assert lse["model"] == "syncnet_v2.model" and lse["random_weights"] is False
    assert lse["frames"] == 75 and lse["frames_without_face"] == 0 and len(lse["tracks"]) == 1
    assert lse["windows"] == lse["tracks"][0]["windows"] > 0
    assert lse["lse_d"] > 0 and lse["lse_c"] >= 0 and lse["best_offset"] == -lse["av_offset"]


def test_missing_syncnet_v2_file_exits_2_naming_it(capsys, tmp_path):
    code = main([str(VIDEO), "--audio", str(AUDIO), "--weights", "random-small",
                 "--syncnet-v2", str(tmp_path / "syncnet_v2.model")])
    assert code == 2
    assert "syncnet_v2.model" in capsys.readouterr().err


def test_prints_a_summary_with_the_random_warning(capsys, tmp_path):
    code = main([str(VIDEO), "--audio", str(AUDIO), "--weights", "random-small", "--stride", "8"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "random weights" in printed and "meaningless" in printed
    assert "best offset" in printed and "confidence" in printed


def test_missing_syncnet_in_weights_folder_exits_2_naming_the_file(capsys, tmp_path):
    code = main([str(VIDEO), "--weights", str(tmp_path)])
    assert code == 2
    assert "stable_syncnet.pt" in capsys.readouterr().err


def test_weights_are_required(capsys):
    assert main([str(VIDEO)]) == 2
    assert "--weights is required" in capsys.readouterr().err


def test_json_over_an_input_is_refused(capsys, tmp_path):
    assert main([str(VIDEO), "--weights", "random-small", "--json", str(VIDEO)]) == 2
    assert "overwrite an input" in capsys.readouterr().err


def test_video_without_audio_track_needs_audio(capsys):
    assert main([str(VIDEO), "--weights", "random-small"]) == 2  # the quickstart clip is silent
    assert "no audio stream" in capsys.readouterr().err


def test_missing_video(capsys, tmp_path):
    assert main([str(tmp_path / "nope.mp4"), "--weights", "random-small"]) == 2


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "latentsync.cli.eval", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "latentsync-eval" in result.stdout
