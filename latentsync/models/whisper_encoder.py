"""Whisper audio encoder (the half of OpenAI Whisper that LatentSync uses).

LatentSync conditions its UNet on the encoder's hidden states: for each 50 Hz
step, the embedding after the two convolutions plus the positional embedding,
and the output of every residual block, all taken *before* the final
LayerNorm. `WhisperEncoder.forward` returns exactly those, stacked.

State-dict key names are OpenAI's (`encoder.conv1.weight`,
`encoder.blocks.0.attn.query.weight`, `encoder.blocks.0.mlp.0.weight`, ...);
the module itself owns the part after the `encoder.` prefix, as OpenAI's
`AudioEncoder` does, and the loader adds/strips the prefix.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from loguru import logger
from torch import Tensor, nn

from ..errors import CheckpointError

STATE_DICT_PREFIX = "encoder."


@dataclass(frozen=True)
class WhisperEncoderConfig:
    """Architecture of the encoder. Defaults are Whisper tiny (what LatentSync ships)."""

    n_mels: int = 80
    n_ctx: int = 1500  # positions after the stride-2 conv: 3000 mel frames -> 1500 steps
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4

    # OpenAI's `ModelDimensions` names for the same fields.
    _OPENAI_NAMES = {
        "n_mels": "n_mels",
        "n_audio_ctx": "n_ctx",
        "n_audio_state": "n_state",
        "n_audio_head": "n_head",
        "n_audio_layer": "n_layer",
    }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WhisperEncoderConfig":
        """Accepts this class's field names or OpenAI's `dims` (decoder fields ignored)."""
        own = {f.name for f in fields(cls)}
        values: dict[str, int] = {}
        for key, value in data.items():
            name = cls._OPENAI_NAMES.get(key, key)
            if name in own:
                values[name] = int(value)
        missing = own - values.keys()
        if missing:
            raise KeyError(f"encoder dims lack {sorted(missing)}")
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.n_state % self.n_head:
            raise ValueError(f"n_state {self.n_state} is not divisible by n_head {self.n_head}")
        if self.n_state % 2:
            raise ValueError(f"n_state {self.n_state} must be even (sinusoidal positions)")


WHISPER_TINY = WhisperEncoderConfig()


@dataclass
class WhisperEncoderOutput:
    """`hidden_states`: (batch, steps, n_layer + 1, n_state), before the final LayerNorm.

    Index 0 along dim 2 is the embedding (conv + positional), index k the output
    of block k-1. `last_hidden_state` is the final LayerNorm of the last block,
    which Whisper's decoder reads; LatentSync does not use it.
    """

    hidden_states: Tensor
    last_hidden_state: Tensor | None = None


def sinusoidal_positions(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed positional embedding: sin in the first half, cos in the second."""
    half = channels // 2
    log_increment = math.log(max_timescale) / (half - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(half, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation dtype (as Whisper does in fp16)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class WhisperSelfAttention(nn.Module):
    """Multi-head self-attention with OpenAI's parameter names (key has no bias)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: Tensor) -> Tensor:
        batch, steps, n_state = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, steps, self.n_head, n_state // self.n_head).transpose(1, 2)

        # Whisper scales q and k each by d**-0.25; SDPA's default d**-0.5 on q.k is the same product.
        attended = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(attended.transpose(1, 2).reshape(batch, steps, n_state))


class WhisperEncoderBlock(nn.Module):
    """Pre-norm residual block: self-attention then a 4x GELU MLP (`mlp.0`, `mlp.2`)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = WhisperSelfAttention(n_state, n_head)
        self.attn_ln = Float32LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = Float32LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder. Input: log-mel (batch, n_mels, 2 * n_ctx)."""

    def __init__(self, config: WhisperEncoderConfig = WHISPER_TINY):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.n_state, config.n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoidal_positions(config.n_ctx, config.n_state))
        self.blocks = nn.ModuleList(WhisperEncoderBlock(config.n_state, config.n_head) for _ in range(config.n_layer))
        self.ln_post = Float32LayerNorm(config.n_state)

    @classmethod
    def from_config(cls, config: WhisperEncoderConfig | Mapping[str, Any]) -> "WhisperEncoder":
        if not isinstance(config, WhisperEncoderConfig):
            config = WhisperEncoderConfig.from_dict(config)
        return cls(config)

    @property
    def n_mel_frames(self) -> int:
        """Mel frames per window the encoder accepts (3000 = 30 s for Whisper)."""
        return 2 * self.config.n_ctx

    @property
    def num_hidden_states(self) -> int:
        return self.config.n_layer + 1

    def forward(self, mel: Tensor, *, include_last_hidden_state: bool = False) -> WhisperEncoderOutput:
        expected = (self.config.n_mels, self.n_mel_frames)
        if mel.ndim != 3 or tuple(mel.shape[1:]) != expected:
            raise ValueError(f"mel must be (batch, {expected[0]}, {expected[1]}), got {tuple(mel.shape)}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x))
        x = x.transpose(1, 2) + self.positional_embedding.to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return WhisperEncoderOutput(
            hidden_states=torch.stack(states, dim=2),
            last_hidden_state=self.ln_post(x) if include_last_hidden_state else None,
        )

    def openai_state_dict(self) -> dict[str, Tensor]:
        """The state dict under OpenAI's full-model key names (`encoder.*`)."""
        return {STATE_DICT_PREFIX + key: value for key, value in self.state_dict().items()}

    def load_openai_state_dict(self, state_dict: Mapping[str, Tensor], *, source: str | Path = "<state dict>") -> None:
        """Load `encoder.*` keys strictly (other keys, e.g. the decoder's, are ignored).

        A missing `encoder.positional_embedding` is filled with the sinusoids it
        always holds in Whisper (a warning is logged); any other missing,
        unexpected or mis-shaped encoder key raises `CheckpointError`.
        """
        own = self.state_dict()
        encoder_items = {
            key[len(STATE_DICT_PREFIX):]: value for key, value in state_dict.items() if key.startswith(STATE_DICT_PREFIX)
        }
        if not encoder_items:
            raise CheckpointError(
                "holds no Whisper encoder weights (no key starts with 'encoder.')",
                path=source,
                hint="expected an OpenAI Whisper checkpoint such as whisper/tiny.pt",
            )
        if "positional_embedding" not in encoder_items:
            logger.warning("{}: no encoder.positional_embedding; using Whisper's fixed sinusoids", source)
            encoder_items["positional_embedding"] = own["positional_embedding"]
        missing = sorted(own.keys() - encoder_items.keys())
        unexpected = sorted(encoder_items.keys() - own.keys())
        if missing or unexpected:
            raise CheckpointError(
                f"encoder keys do not match the {self.config} layout: "
                f"missing {_preview(missing)}, unexpected {_preview(unexpected)}",
                path=source,
                hint="is this a Whisper checkpoint of the expected size (tiny for LatentSync)?",
            )
        for key, value in encoder_items.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise CheckpointError(
                    f"encoder.{key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}",
                    path=source,
                )
        # load_state_dict copies into the existing float32 tensors, so float16 files load as float32.
        self.load_state_dict(encoder_items, strict=True)


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(STATE_DICT_PREFIX + k for k in keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"[{shown}]{more}"


def random_whisper_encoder(
    config: WhisperEncoderConfig | Mapping[str, Any] = WHISPER_TINY,
    *,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WhisperEncoder:
    """An encoder with random weights (tests, `weights: random`). Its output means nothing."""
    generator_state = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        encoder = WhisperEncoder.from_config(config)
    finally:
        torch.random.set_rng_state(generator_state)
    logger.warning("Whisper encoder has RANDOM weights: audio features carry no speech information")
    return encoder.to(device=device, dtype=dtype).eval()


def load_whisper_encoder(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WhisperEncoder:
    """Load an OpenAI-format `tiny.pt` (`{"dims", "model_state_dict"}`) or a `.safetensors` file.

    `.pt` files are read with `torch.load(weights_only=True)` (no code runs);
    safetensors files carry the dims as JSON (or a Python literal) under the
    metadata key `dims`, or the dims are inferred from the tensor shapes.
    Parameters are loaded into float32 and then cast to `dtype`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("Whisper checkpoint not found", path=path, hint="expected whisper/tiny.pt in the weights folder")
    if path.suffix == ".safetensors":
        dims, state_dict = _read_safetensors(path)
    else:
        dims, state_dict = _read_openai_checkpoint(path)
    try:
        config = WhisperEncoderConfig.from_dict(dims)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"bad Whisper dims {dims!r}: {error}", path=path) from error
    encoder = WhisperEncoder(config)
    encoder.load_openai_state_dict(state_dict, source=path)
    logger.info("loaded Whisper encoder {} from {}", config.to_dict(), path)
    return encoder.to(device=device, dtype=dtype).eval()


def _read_openai_checkpoint(path: Path) -> tuple[Mapping[str, Any], Mapping[str, Tensor]]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"cannot be read as a torch checkpoint ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})",
            path=path,
            hint="the file may be truncated or not a Whisper checkpoint; download it again",
        ) from error
    if not isinstance(checkpoint, Mapping) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        found = sorted(checkpoint.keys())[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(
            f"is not an OpenAI Whisper checkpoint: expected keys 'dims' and 'model_state_dict', found {found}",
            path=path,
        )
    dims, state_dict = checkpoint["dims"], checkpoint["model_state_dict"]
    if not isinstance(dims, Mapping) or not isinstance(state_dict, Mapping):
        raise CheckpointError("'dims' and 'model_state_dict' must both be dictionaries", path=path)
    return dims, state_dict


def _read_safetensors(path: Path) -> tuple[Mapping[str, Any], Mapping[str, Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot be read as safetensors ({error})", path=path) from error
    dims_text = metadata.get("dims")
    if dims_text is None:
        return _infer_dims(state_dict, path), state_dict
    try:
        dims = json.loads(dims_text)
    except json.JSONDecodeError:
        try:
            dims = ast.literal_eval(dims_text)  # the reference fixture writes a Python dict repr
        except (ValueError, SyntaxError) as error:
            raise CheckpointError(f"metadata 'dims' is neither JSON nor a literal: {dims_text[:80]!r}", path=path) from error
    if not isinstance(dims, Mapping):
        raise CheckpointError(f"metadata 'dims' is not a mapping: {dims_text[:80]!r}", path=path)
    return dims, state_dict


def _infer_dims(state_dict: Mapping[str, Tensor], path: Path) -> dict[str, int]:
    try:
        conv1 = state_dict["encoder.conv1.weight"]
        positions = state_dict["encoder.positional_embedding"]
    except KeyError as error:
        raise CheckpointError(f"no 'dims' metadata and no {error.args[0]} to infer them from", path=path) from error
    n_layer = len({key.split(".")[2] for key in state_dict if key.startswith("encoder.blocks.")})
    n_state = int(conv1.shape[0])
    # Every Whisper size uses 64-dimensional heads.
    logger.warning("{}: no 'dims' metadata; inferred the encoder layout from tensor shapes (64-d heads)", path)
    return {"n_mels": int(conv1.shape[1]), "n_audio_ctx": int(positions.shape[0]), "n_audio_state": n_state,
            "n_audio_head": n_state // 64, "n_audio_layer": n_layer}
