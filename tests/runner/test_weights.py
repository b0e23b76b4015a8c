"""Weights folders in the official layout, and fetch-weights against a local fake hub."""
import shutil
from pathlib import Path

import pytest
import torch

from latentsync import weights as weights_mod
from latentsync.errors import CheckpointError
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.models.whisper_encoder import random_whisper_encoder
from latentsync.pipeline.vae import build_random_vae
from latentsync.testing.fake_hub import fake_snapshot_download


def make_fake_hub(root: Path) -> dict[str, Path]:
    """Local folders standing in for the two hub repositories (small random weights)."""
    lipsync, vae_repo = root / "lipsync-repo", root / "vae-repo"
    (lipsync / "whisper").mkdir(parents=True)
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet)
    torch.save({"state_dict": unet.state_dict(), "global_step": 1}, lipsync / "latentsync_unet.pt")
    encoder = random_whisper_encoder()
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4}
    torch.save({"dims": dims, "model_state_dict": encoder.openai_state_dict()}, lipsync / "whisper" / "tiny.pt")
    (lipsync / "README.md").write_text("not wanted\n")
    build_random_vae("small").save_pretrained(vae_repo, safe_serialization=True)
    return {weights_mod.HUB_REPOS["1.6"]: lipsync, weights_mod.HUB_VAE_REPO: vae_repo}


@pytest.fixture
def fetched(tmp_path):
    hub = make_fake_hub(tmp_path / "hub")
    dest = tmp_path / "weights-1.6"
    weights_mod.fetch_weights(dest, snapshot_download=fake_snapshot_download(hub))
    # the small architecture needs its config beside the checkpoint
    shutil.copy(Path(weights_mod.__file__).parent / "models" / "configs" / "unet_small.json", dest / "unet_config.json")
    return dest


def test_fetch_weights_writes_the_official_layout(fetched):
    assert (fetched / "latentsync_unet.pt").is_file()
    assert (fetched / "whisper" / "tiny.pt").is_file()
    assert (fetched / "vae" / "config.json").is_file()
    assert not (fetched / "README.md").exists()  # only the files the runner needs
    assert weights_mod.weights_version(str(fetched)) == ("1.6", 512)


def test_a_fetched_folder_loads_strictly(fetched):
    weights_mod.clear_model_cache()
    models = weights_mod.load_models(str(fetched), device="cpu")
    assert not models.random and models.version == "1.6"
    reference = torch.load(fetched / "latentsync_unet.pt", weights_only=True)["state_dict"]
    key = "conv_in.weight"
    assert torch.equal(models.unet.state_dict()[key], reference[key])
    weights_mod.clear_model_cache()


def test_a_truncated_checkpoint_is_a_clear_error(fetched):
    data = (fetched / "latentsync_unet.pt").read_bytes()
    (fetched / "latentsync_unet.pt").write_bytes(data[: len(data) // 3])
    weights_mod.clear_model_cache()
    with pytest.raises(CheckpointError, match="latentsync_unet.pt"):
        weights_mod.load_models(str(fetched), device="cpu")


def test_an_incomplete_folder_names_what_is_missing(fetched):
    (fetched / "whisper" / "tiny.pt").unlink()
    with pytest.raises(CheckpointError, match="whisper/tiny.pt"):
        weights_mod.check_weights_folder(fetched)


def test_random_weights_are_explicit_and_loud(caplog):
    from loguru import logger

    messages = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        weights_mod.clear_model_cache()
        models = weights_mod.load_models("random-small", device="cpu")
    finally:
        logger.remove(sink)
        weights_mod.clear_model_cache()
    assert models.random
    assert any("NOT lip-synced" in str(m) for m in messages)


@pytest.mark.parametrize("cast_on", ["device", "host"])
def test_place_module_casts_floats_only_and_keeps_values(cast_on):
    """Both load paths (copy-then-cast on the target, torch's cast-then-copy) give the same
    module: floating-point tensors in the new dtype with the same values, integer buffers
    untouched."""
    import torch

    from latentsync.weights import place_module

    torch.manual_seed(0)
    module = torch.nn.Linear(8, 4)
    module.register_buffer("positions", torch.arange(5))
    expected = module.weight.detach().to(torch.bfloat16).clone()
    placed = place_module(module, "cpu", torch.bfloat16, cast_on=cast_on)
    assert placed.weight.dtype == torch.bfloat16 and placed.bias.dtype == torch.bfloat16
    assert torch.equal(placed.weight.detach(), expected)
    assert placed.positions.dtype == torch.int64 and torch.equal(placed.positions, torch.arange(5))


def test_place_module_on_device_casts_after_the_copy(monkeypatch):
    """cast_on=device copies each tensor as it is and casts it on the target: the copy sees
    the source dtype (on a GPU the cast is then free); cast_on=host hands torch both at once."""
    import torch

    from latentsync.weights import place_module

    seen = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        seen.append((self.dtype, args, tuple(sorted(kwargs))))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    place_module(torch.nn.Linear(2, 2), "meta", torch.float16, cast_on="device")
    device_calls = list(seen)
    assert device_calls and all(len(args) == 1 for _, args, _ in device_calls)
    assert {dtype for dtype, args, _ in device_calls if args[0] == torch.float16} == {torch.float32}
