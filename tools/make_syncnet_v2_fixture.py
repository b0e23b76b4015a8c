"""Make tests/fixtures/syncnet_v2/: outputs of upstream's own SyncNet code on seeded weights.

    python tools/make_syncnet_v2_fixture.py --upstream DIR --speech-features SITE_PACKAGES \
        --commit SHA --out tests/fixtures/syncnet_v2

DIR holds a copy of upstream's `eval/syncnet/` package (bytedance/LatentSync: `__init__.py`,
`syncnet.py`, `syncnet_eval.py`) and a stub `latentsync/utils/util.py` defining a no-op
`check_model_and_download` (upstream's module imports it; the generator never downloads).
SITE_PACKAGES holds `python_speech_features` (0.6, upstream's pin). This script contains none
of upstream's code: it imports upstream's modules from DIR and runs them:

- `SyncNetEval().__S__` (the network "S") gets weights drawn by the rule below, saved to a
  temporary torch file and loaded with upstream's own `loadParameters`;
- `SyncNetEval.evaluate` runs unchanged on a synthetic clip: its two ffmpeg calls are replaced
  by writing the clip's frames (lossless PNG bytes under the `%06d.jpg` names it globs; OpenCV
  reads by content) and a 16 kHz int16 wav, so upstream's own loading, windowing, MFCC,
  batching, `calc_pdist` and LSE arithmetic produce the numbers; the network's inputs and
  outputs are recorded on the way;
- `python_speech_features.mfcc` on three waveforms.

Weights rule (the project's `latentsync.models.syncnet_v2.seeded_state_dict` draws the same):
numpy default_rng(seed), per state-dict key in order: `num_batches_tracked` 0 (no draw);
running_mean normal(0, 0.1); running_var uniform(0.5, 1.5); bias uniform(-0.1, 0.1); other 1-D
(BatchNorm weight) uniform(0.5, 1.5); else normal(0, sqrt(2 / fan_in)); float64 -> float32; then
every `netfcaud.*` tensor is replaced by the `netfclip.*` one (identical heads make the audio and
lip embeddings comparable, so distances to real audio, not to upstream's zero padding, decide the
minimum).
This script must not import the project (DIR's stub `latentsync` package shadows it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

SEED = 20250
FRAMES = 60
AUDIO_SAMPLES = 37400  # 2.34 s: shorter than the 2.4 s of video, so upstream's min_length cuts at the audio
SAMPLE_RATE = 16000


def draw_weights(shapes: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith(".num_batches_tracked"):
            out[key] = np.zeros((), dtype=np.int64)
            continue
        if key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bias"):
            value = rng.uniform(-0.1, 0.1, shape)
        elif len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)  # a BatchNorm weight
        else:
            value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[1:])), shape)
        out[key] = np.asarray(value, dtype=np.float32)
    for key in list(out):  # the audio head takes the lip head's values: comparable embeddings
        if key.startswith("netfclip."):
            out["netfcaud." + key[len("netfclip."):]] = out[key].copy()
    return out


def synthetic_frames() -> np.ndarray:
    """(60, 224, 224, 3) uint8 RGB: a coloured gradient and a dark 'mouth' ellipse whose opening
    changes frame to frame, drawn at 56 px and repeated 4x (smooth, so it compresses well)."""
    yy, xx = np.mgrid[0:56, 0:56].astype(np.float64)
    frames = []
    for f in range(FRAMES):
        opening = 2.0 + 6.0 * abs(math.sin(0.7 * f))
        base = np.stack([80 + 2.0 * xx, 60 + 2.5 * yy, 120 + 1.5 * (xx - yy) + 3 * f], axis=-1)
        inside = ((xx - 28) / 12.0) ** 2 + ((yy - 38) / opening) ** 2 <= 1.0
        base[inside] = (40, 10, 20)
        small = np.clip(np.round(base), 0, 255).astype(np.uint8)
        frames.append(np.repeat(np.repeat(small, 4, axis=0), 4, axis=1))
    return np.stack(frames)


def synthetic_audio(samples: int, seed: int) -> np.ndarray:
    """int16 'speech-like' waveform: harmonics of 140 Hz under a 4 Hz syllable envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    voice = sum(np.sin(2 * np.pi * 140.0 * k * t + k) / k for k in range(1, 8))
    wave = 6000.0 * envelope * voice + 300.0 * rng.standard_normal(samples)
    return np.clip(np.round(wave), -32768, 32767).astype(np.int16)


def sha256_of(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, type=Path)
    parser.add_argument("--speech-features", required=True, type=Path)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path[:0] = [str(args.upstream), str(args.speech_features)]

    import cv2
    import python_speech_features
    import torch
    from scipy.io import wavfile

    import eval.syncnet.syncnet_eval as upstream_eval
    from eval.syncnet import SyncNetEval

    torch.set_num_threads(2)
    net = SyncNetEval(device="cpu")
    shapes = {key: tuple(value.shape) for key, value in net.__S__.state_dict().items()}
    weights = draw_weights(shapes, SEED)
    work = Path(tempfile.mkdtemp(prefix="syncnet_v2_fixture_"))
    checkpoint = work / "seeded_syncnet_v2.model"
    torch.save({key: torch.from_numpy(np.asarray(value)) for key, value in weights.items()}, checkpoint)
    net.loadParameters(str(checkpoint))  # upstream's loader: copies every key of the file

    frames = synthetic_frames()
    audio = synthetic_audio(AUDIO_SAMPLES, SEED + 1)
    temp_dir = work / "evaluate"

    def fake_ffmpeg(command, shell=True, stdout=None):  # stands in for evaluate's two ffmpeg calls
        if "%06d.jpg" in command:
            for index, frame in enumerate(frames, start=1):
                ok, png = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))  # OpenCV writes BGR
                assert ok
                (temp_dir / f"{index:06d}.jpg").write_bytes(png.tobytes())
        elif "audio.wav" in command:
            wavfile.write(str(temp_dir / "audio.wav"), SAMPLE_RATE, audio)
        else:
            raise AssertionError(f"unexpected command {command}")
        return 0

    upstream_eval.subprocess.call = fake_ffmpeg
    recorded = {"lip_in_sums": [], "lip_out": [], "audio_in": [], "audio_out": []}
    forward_lip, forward_aud = net.__S__.forward_lip, net.__S__.forward_aud

    def record_lip(x):
        out = forward_lip(x)
        recorded["lip_in_sums"].append(x.double().sum(dim=(1, 2, 3, 4)).numpy())
        recorded["lip_out"].append(out.detach().numpy())
        return out

    def record_aud(x):
        out = forward_aud(x)
        recorded["audio_in"].append(x.detach().numpy())
        recorded["audio_out"].append(out.detach().numpy())
        return out

    net.__S__.forward_lip, net.__S__.forward_aud = record_lip, record_aud
    with torch.no_grad():
        results = {}
        for vshift in (15, 3):
            av_offset, min_dist, conf = net.evaluate(str(work / "clip.mp4"), temp_dir=str(temp_dir), vshift=vshift)
            results[f"vshift_{vshift}"] = {"av_offset": int(av_offset), "lse_d": float(min_dist), "lse_c": float(conf)}
            if vshift == 15:
                lip = torch.from_numpy(np.concatenate(recorded["lip_out"]))
                aud = torch.from_numpy(np.concatenate(recorded["audio_out"]))
                dists = torch.stack(upstream_eval.calc_pdist(lip, aud, vshift=15), 0).numpy()  # (windows, 31)
                cases = {
                    "lip_in_sums": np.concatenate(recorded["lip_in_sums"]),
                    "lip_embeddings": lip.numpy(),
                    "audio_windows": np.concatenate(recorded["audio_in"]),
                    "audio_embeddings": aud.numpy(),
                    "dists_vshift_15": dists,
                }

    waveforms = {
        "clip": audio,
        "odd": np.concatenate([np.zeros(1000, np.int16), synthetic_audio(4003, SEED + 2)]),  # silent frames: eps branch
        "tiny": synthetic_audio(300, SEED + 3),  # shorter than one 400-sample frame
    }
    for name, wave in waveforms.items():
        cases[f"wave_{name}"] = wave
        cases[f"mfcc_{name}"] = python_speech_features.mfcc(wave, SAMPLE_RATE)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "cases.npz", frames_rgb=frames, **cases)

    full = net.state_dict()  # the wrapper's keys carry the "__S__." prefix
    manifest = {
        "upstream": {"repository": "bytedance/LatentSync", "commit": args.commit,
                     "files": ["eval/syncnet/syncnet.py", "eval/syncnet/syncnet_eval.py"]},
        "generator": "tools/make_syncnet_v2_fixture.py",
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
                     "python_speech_features": "0.6", "python": platform.python_version()},
        "seed": SEED,
        "frames": FRAMES,
        "audio_samples": AUDIO_SAMPLES,
        "state_dict": [[key, list(value.shape), str(value.dtype).replace("torch.", "")]
                       for key, value in net.__S__.state_dict().items()],
        "wrapper_keys_sample": list(full)[:3],
        "parameters": {tower: sum(p.numel() for p in getattr(net.__S__, tower).parameters())
                       for tower in ("netcnnaud", "netfcaud", "netfclip", "netcnnlip")},
        "weights_sha256": {key: sha256_of(value) for key, value in weights.items()},
        "results": results,
        "windows": int(cases["lip_embeddings"].shape[0]),
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
