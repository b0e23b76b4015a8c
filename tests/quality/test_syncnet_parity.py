"""StableSyncNet, its mel function, sync probability and loss against upstream's own outputs.

Fixtures: ../shared/reference/syncnet_parity (made with upstream LatentSync's code on a CPU,
float32); bounds from its README. Skipped when the reference folder is absent.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentsync.models.stable_syncnet import (
    SYNCNET_16_PIXEL,
    SYNCNET_16_PIXEL_ATTN,
    SYNCNET_SMALL,
    StableSyncNet,
    stack_frames,
    sync_loss,
    sync_probability,
)
from latentsync.quality.mel import mel_windows, syncnet_melspectrogram

CASES = ["batch2", "single", "batch3", "raw_speech"]


def _relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found.double() - expected.double()).abs().max() / expected.double().abs().max())


@pytest.mark.parametrize("case", CASES)
def test_frames_from_crops_exact(syncnet_cases, case):
    frames = stack_frames(syncnet_cases[f"{case}.crops"])
    assert frames.dtype == torch.float32
    assert torch.equal(frames, syncnet_cases[f"{case}.frames"])


@pytest.mark.parametrize("case", CASES)
def test_embeddings_similarity_and_loss(small_reference_model, syncnet_cases, case):
    frames, mel = syncnet_cases[f"{case}.frames"], syncnet_cases[f"{case}.mel"]
    with torch.no_grad():
        visual_raw, audio_raw = small_reference_model.raw_embeddings(frames, mel)
        visual, audio = small_reference_model(frames, mel)
    assert _relative(visual_raw, syncnet_cases[f"{case}.visual_raw"]) < 1e-4
    assert _relative(audio_raw, syncnet_cases[f"{case}.audio_raw"]) < 1e-4
    assert _relative(visual, syncnet_cases[f"{case}.visual_embeds"]) < 1e-4
    assert _relative(audio, syncnet_cases[f"{case}.audio_embeds"]) < 1e-4
    sims = sync_probability(visual, audio)
    assert sims.shape == syncnet_cases[f"{case}.sims"].shape
    assert (sims - syncnet_cases[f"{case}.sims"]).abs().max() < 1e-5
    assert (sync_loss(visual, audio, 1.0) - syncnet_cases[f"{case}.loss_y1"]).abs().max() < 1e-5
    assert (sync_loss(visual, audio, 0.0) - syncnet_cases[f"{case}.loss_y0"]).abs().max() < 1e-5


def test_embeddings_float64_tighter(small_reference_model, syncnet_cases):
    """The same weights in float64 stay within the README's measured float32-vs-float64 spread."""
    model = StableSyncNet.from_config(small_reference_model.config)
    model.load_state_dict(small_reference_model.state_dict())
    model = model.double().eval()
    frames, mel = syncnet_cases["batch3.frames"].double(), syncnet_cases["batch3.mel"].double()
    with torch.no_grad():
        visual, audio = model(frames, mel)
    assert _relative(visual, syncnet_cases["batch3.visual_embeds"]) < 1e-4
    assert (sync_probability(visual, audio) - syncnet_cases["batch3.sims"].double()).abs().max() < 1e-5


def test_small_config_matches_fixture(syncnet_reference):
    data = json.loads((syncnet_reference / "small_config.json").read_text())
    assert data["model"] == SYNCNET_SMALL
    model = StableSyncNet.from_config(data["model"], meta=True)
    assert sum(p.numel() for p in model.parameters()) == data["num_params"]
    assert len(model.state_dict()) == data["num_state_dict_keys"]


def test_mel_full_float64(syncnet_cases):
    waveform = syncnet_cases["raw_speech.waveform"].numpy()
    expected = syncnet_cases["raw_speech.mel_full"].numpy()
    mel = syncnet_melspectrogram(waveform)
    assert mel.dtype == np.float64 and mel.shape == expected.shape == (80, 97)
    assert np.abs(mel - expected).max() < 1e-9


def test_mel_window_from_frame_start(syncnet_cases):
    mel = syncnet_melspectrogram(syncnet_cases["raw_speech.waveform"].numpy())
    starts = syncnet_cases["raw_speech.frame_start"].tolist()
    windows = mel_windows(mel, starts)
    assert windows.dtype == np.float32 and windows.shape == (1, 1, 80, 52)
    assert np.array_equal(windows, syncnet_cases["raw_speech.mel"].numpy())


def test_mel_window_past_the_end_is_refused(syncnet_cases):
    mel = syncnet_melspectrogram(syncnet_cases["raw_speech.waveform"].numpy())
    with pytest.raises(ValueError, match="runs past"):
        mel_windows(mel, [20])  # column 64 + 52 > 97


@pytest.mark.parametrize(
    "name, config", [("syncnet_16_pixel_attn", SYNCNET_16_PIXEL_ATTN), ("syncnet_16_pixel", SYNCNET_16_PIXEL)]
)
def test_full_config_state_dict_manifest(full_manifest, name, config):
    """The full models, built on the meta device from the yaml's model section: every key and shape."""
    entry = full_manifest["configs"][name]
    assert entry["model"] == config
    model = StableSyncNet.from_config(entry["model"], meta=True)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert list(shapes) == list(entry["state_dict"])  # same keys, same order
    assert shapes == entry["state_dict"]
    assert len(shapes) == entry["num_state_dict_keys"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    assert sum(p.numel() for p in model.audio_encoder.parameters()) == entry["num_params_audio_encoder"]
    assert sum(p.numel() for p in model.visual_encoder.parameters()) == entry["num_params_visual_encoder"]


@pytest.mark.parametrize("name", ["syncnet_16_pixel_attn", "syncnet_16_pixel"])
def test_full_config_block_output_shapes(full_manifest, name):
    """Every block's output shape at batch 1, traced on the meta device (no memory, no compute)."""
    entry = full_manifest["configs"][name]
    expected = entry["block_output_shapes_batch1"]
    model = StableSyncNet.from_config(entry["model"], meta=True)
    found: dict[str, list[int]] = {}
    for prefix, encoder in (("visual_encoder", model.visual_encoder), ("audio_encoder", model.audio_encoder)):
        modules = {"conv_in": encoder.conv_in, "norm_out": encoder.norm_out}
        modules.update({f"down_blocks.{i}": block for i, block in enumerate(encoder.down_blocks)})
        for key, module in modules.items():
            module.register_forward_hook(
                lambda _m, _i, out, key=f"{prefix}.{key}": found.__setitem__(key, list(out.shape))
            )
    visual_shape = [1] + entry["input_shapes"]["image_sequences"][1:]
    audio_shape = [1] + entry["input_shapes"]["audio_sequences"][1:]
    with torch.no_grad():
        visual, audio = model(torch.empty(visual_shape, device="meta"), torch.empty(audio_shape, device="meta"))
    for key, value in expected.items():
        if isinstance(value, dict):
            assert found[key] == value["output"], key
    assert list(visual.shape) == expected["vision_embeds"]
    assert list(audio.shape) == expected["audio_embeds"]


def test_unknown_downsample_factor_rejected():
    config = json.loads(json.dumps(SYNCNET_SMALL))
    config["visual_encoder"]["downsample_factors"][0] = [3, 1]
    with pytest.raises(ValueError, match="downsample factor"):
        StableSyncNet.from_config(config, meta=True)


def test_seeded_initialisation_reproduces_fixture_weights(syncnet_reference, small_reference_model):
    """The fixture's weight rule (seed 611616, state-dict order) gives its weights bit for bit."""
    from latentsync.models.stable_syncnet import seeded_initialisation

    data = json.loads((syncnet_reference / "small_config.json").read_text())
    model = seeded_initialisation(StableSyncNet.from_config(data["model"]), data["weights"]["seed"])
    expected = small_reference_model.state_dict()
    found = model.state_dict()
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert torch.equal(found[key], value), key
