"""Whisper encoder: OpenAI layout, strict loading, errors that name the file."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from latentsync.errors import CheckpointError
from latentsync.models.whisper_encoder import (
    WHISPER_TINY,
    WhisperEncoder,
    WhisperEncoderConfig,
    load_whisper_encoder,
    random_whisper_encoder,
)

SMALL = WhisperEncoderConfig(n_mels=80, n_ctx=50, n_state=64, n_head=2, n_layer=2)
SMALL_DIMS = {  # OpenAI ModelDimensions, decoder fields included as in a real tiny.pt
    "n_mels": 80, "n_audio_ctx": 50, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 2,
    "n_vocab": 100, "n_text_ctx": 16, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 2,
}

# Names from the OpenAI Whisper model.py for block 0 of the encoder.
OPENAI_BLOCK_KEYS = {
    "attn.query.weight", "attn.query.bias", "attn.key.weight", "attn.value.weight", "attn.value.bias",
    "attn.out.weight", "attn.out.bias", "attn_ln.weight", "attn_ln.bias",
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp_ln.weight", "mlp_ln.bias",
}


def _openai_checkpoint(encoder: WhisperEncoder, *, half: bool = True) -> dict:
    state = {k: (v.half() if half else v.clone()) for k, v in encoder.openai_state_dict().items()}
    state["decoder.token_embedding.weight"] = torch.zeros(100, 64, dtype=torch.float16)  # must be ignored
    state["decoder.ln.weight"] = torch.ones(64, dtype=torch.float16)
    return {"dims": dict(SMALL_DIMS), "model_state_dict": state}


def test_tiny_layout_uses_openai_key_names_and_shapes():
    with torch.device("meta"):
        encoder = WhisperEncoder(WHISPER_TINY)
    state = encoder.openai_state_dict()
    expected = {"encoder.conv1.weight", "encoder.conv1.bias", "encoder.conv2.weight", "encoder.conv2.bias",
                "encoder.positional_embedding", "encoder.ln_post.weight", "encoder.ln_post.bias"}
    expected |= {f"encoder.blocks.{i}.{key}" for i in range(4) for key in OPENAI_BLOCK_KEYS}
    assert set(state) == expected
    assert state["encoder.conv1.weight"].shape == (384, 80, 3)
    assert state["encoder.conv2.weight"].shape == (384, 384, 3)
    assert state["encoder.positional_embedding"].shape == (1500, 384)
    assert state["encoder.blocks.3.mlp.0.weight"].shape == (1536, 384)
    assert sum(v.numel() for k, v in state.items() if k != "encoder.positional_embedding") == 7_632_384


def test_reference_weights_load_strictly_as_float32(audio_reference):
    encoder = load_whisper_encoder(audio_reference / "whisper_tiny_encoder_random.safetensors")
    assert encoder.config == WHISPER_TINY
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    # fp16 values were widened exactly: every parameter is representable in float16.
    weight = encoder.blocks[0].attn.query.weight
    assert torch.equal(weight, weight.half().float())


def test_hidden_states_are_embedding_then_each_block_before_ln_post():
    encoder = random_whisper_encoder(SMALL, seed=3)
    mel = torch.randn(2, 80, 100)
    output = encoder(mel, include_last_hidden_state=True)
    assert output.hidden_states.shape == (2, 50, 3, 64)
    with torch.no_grad():
        x = torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(encoder.conv1(mel))))
        x = x.transpose(1, 2) + encoder.positional_embedding
        torch.testing.assert_close(output.hidden_states[:, :, 0], x)
        for i, block in enumerate(encoder.blocks):
            x = block(x)
            torch.testing.assert_close(output.hidden_states[:, :, i + 1], x)
        torch.testing.assert_close(output.last_hidden_state, encoder.ln_post(x))
    assert not torch.allclose(output.last_hidden_state, output.hidden_states[:, :, -1])


def test_attention_equals_whisper_formula():
    """SDPA must equal Whisper's (q * d^-1/4)(k * d^-1/4)^T softmax form."""
    encoder = random_whisper_encoder(SMALL, seed=4)
    attention = encoder.blocks[0].attn
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        scale = (64 // 2) ** -0.25
        q = attention.query(x).view(2, 7, 2, 32).permute(0, 2, 1, 3) * scale
        k = attention.key(x).view(2, 7, 2, 32).permute(0, 2, 3, 1) * scale
        v = attention.value(x).view(2, 7, 2, 32).permute(0, 2, 1, 3)
        expected = attention.out((torch.softmax(q @ k, dim=-1) @ v).permute(0, 2, 1, 3).flatten(2))
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


def test_positional_embedding_is_whisper_sinusoids():
    positions = WhisperEncoder(SMALL).positional_embedding
    increment = math.log(10000) / (32 - 1)
    assert positions[3, 5].item() == pytest.approx(math.sin(3 * math.exp(-increment * 5)), abs=1e-6)
    assert positions[3, 32 + 5].item() == pytest.approx(math.cos(3 * math.exp(-increment * 5)), abs=1e-6)


def test_random_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = random_whisper_encoder(SMALL, seed=7)
    after = torch.rand(1)
    b = random_whisper_encoder(SMALL, seed=7)
    c = random_whisper_encoder(SMALL, seed=8)
    assert torch.equal(before, after)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_openai_pt_checkpoint_round_trip(tmp_path):
    source = random_whisper_encoder(SMALL, seed=1)
    path = tmp_path / "tiny.pt"
    torch.save(_openai_checkpoint(source), path)
    loaded = load_whisper_encoder(path, device="cpu", dtype=torch.float32)
    assert loaded.config == SMALL
    mel = torch.randn(1, 80, 100)
    with torch.no_grad():
        expected = WhisperEncoder(SMALL)
        expected.load_state_dict({k: v.half().float() for k, v in source.state_dict().items()})
        torch.testing.assert_close(loaded(mel).hidden_states, expected(mel).hidden_states, rtol=0, atol=0)


def test_fp16_dtype_runs_and_stays_close(tmp_path):
    source = random_whisper_encoder(SMALL, seed=1)
    torch.save(_openai_checkpoint(source), tmp_path / "tiny.pt")
    half = load_whisper_encoder(tmp_path / "tiny.pt", dtype=torch.float16)
    assert half.conv1.weight.dtype == torch.float16
    full = load_whisper_encoder(tmp_path / "tiny.pt")
    mel = torch.randn(1, 80, 100)
    with torch.no_grad():
        h = half(mel.half()).hidden_states.float()
        f = full(mel).hidden_states
    assert ((h - f).norm() / f.norm()).item() < 1e-2


def test_safetensors_without_dims_metadata_infers_them(tmp_path):
    # Inference assumes Whisper's 64-dimensional heads, so use a config that follows it.
    config = WhisperEncoderConfig(n_mels=80, n_ctx=50, n_state=128, n_head=2, n_layer=3)
    source = random_whisper_encoder(config, seed=2)
    save_file({k: v.contiguous() for k, v in source.openai_state_dict().items()}, tmp_path / "enc.safetensors")
    loaded = load_whisper_encoder(tmp_path / "enc.safetensors")
    assert loaded.config == config
    assert torch.equal(loaded.conv2.weight, source.conv2.weight)


def test_missing_positional_embedding_is_filled_with_sinusoids(tmp_path):
    source = random_whisper_encoder(SMALL, seed=2)
    checkpoint = _openai_checkpoint(source)
    del checkpoint["model_state_dict"]["encoder.positional_embedding"]
    torch.save(checkpoint, tmp_path / "tiny.pt")
    loaded = load_whisper_encoder(tmp_path / "tiny.pt")
    torch.testing.assert_close(loaded.positional_embedding, WhisperEncoder(SMALL).positional_embedding)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda c: c["model_state_dict"].pop("encoder.blocks.1.mlp.2.bias"), "missing .*encoder.blocks.1.mlp.2.bias"),
        (lambda c: c["model_state_dict"].__setitem__("encoder.blocks.2.attn.key.bias", torch.zeros(64)),
         "unexpected .*encoder.blocks.2.attn.key.bias"),
        (lambda c: c["model_state_dict"].__setitem__("encoder.conv1.weight", torch.zeros(64, 80, 5)),
         "encoder.conv1.weight has shape"),
        (lambda c: c.pop("dims"), "expected keys 'dims' and 'model_state_dict'"),
        (lambda c: c["dims"].pop("n_audio_head"), "bad Whisper dims"),
        (lambda c: c.__setitem__("model_state_dict", {"decoder.ln.weight": torch.ones(3)}), "no Whisper encoder"),
    ],
    ids=["missing-key", "unexpected-key", "wrong-shape", "no-dims", "incomplete-dims", "no-encoder"],
)
def test_wrong_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path, corrupt, message):
    checkpoint = _openai_checkpoint(random_whisper_encoder(SMALL, seed=0))
    corrupt(checkpoint)
    path = tmp_path / "tiny.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_whisper_encoder(path)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


class _NotAllowed:
    pass


@pytest.mark.parametrize("kind", ["truncated", "text", "pickle-with-code", "missing", "bad-safetensors"])
def test_unreadable_files_raise_checkpoint_error(tmp_path, kind):
    path = tmp_path / ("enc.safetensors" if kind == "bad-safetensors" else "tiny.pt")
    if kind == "truncated":
        torch.save(_openai_checkpoint(random_whisper_encoder(SMALL)), path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "pickle-with-code":
        # A full pickle of an arbitrary class: weights_only loading must refuse it.
        torch.save({"dims": SMALL_DIMS, "model_state_dict": {}, "payload": _NotAllowed()}, path)
    elif kind == "bad-safetensors":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(CheckpointError) as caught:
        load_whisper_encoder(path)
    assert caught.value.path == str(path)


def test_config_accepts_both_naming_schemes():
    assert WhisperEncoderConfig.from_dict(SMALL_DIMS) == SMALL
    assert WhisperEncoderConfig.from_dict(SMALL.to_dict()) == SMALL
    assert WhisperEncoder.from_config(SMALL.to_dict()).config == SMALL
    with pytest.raises(ValueError, match="divisible"):
        WhisperEncoderConfig(n_state=64, n_head=3)


def test_rejects_mel_of_wrong_shape():
    with pytest.raises(ValueError, match=r"\(batch, 80, 100\)"):
        WhisperEncoder(SMALL)(torch.zeros(1, 80, 99))
