"""uncond_audio_attention: bias and cfg_shared_prefix on the GPU, full-size 1.6 in fp16,
eager and compiled: the CFG batch's output stays as close to an fp32 forward as upstream's
way of computing it does (the settings change the work, not the math)."""
import pytest
import torch

from gpu_testlib import cuda_unet_and_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("compiled", [False, True])
def test_cfg_halves_at_full_size_stay_as_close_to_fp32_as_upstreams_way(compiled, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    unet, sample, audio = cuda_unet_and_inputs("1.6", latent=64)
    sample = torch.cat([sample[1:], sample[1:]])  # CFG: the same input twice, zero audio first
    audio = torch.cat([torch.zeros_like(audio[16:]), audio[16:]])
    with torch.no_grad():
        plain = unet(sample, 500, encoder_hidden_states=audio).sample
        model = torch.compile(unet, dynamic=False) if compiled else unet
        shortcut = model(sample, 500, encoder_hidden_states=audio, silent_audio_batch=1,
                         cfg_shared_prefix=True).sample
        reference = unet.float()(sample.float(), 500, encoder_hidden_states=audio.float()).sample
    assert shortcut.shape == plain.shape
    upstream_error, shortcut_error = _rel(plain, reference), _rel(shortcut, reference)
    print(f"vs fp32: upstream's way {upstream_error:.2e}, shortcuts {shortcut_error:.2e}; "
          f"between them {_rel(shortcut, plain):.2e}")
    assert shortcut_error < 1.5 * upstream_error + 1e-4
    assert _rel(shortcut, plain) < 5e-3
