"""The original SyncNet, its MFCCs and LSE-C / LSE-D against upstream's own code.

`tests/fixtures/syncnet_v2/` holds what upstream's `eval/syncnet` (bytedance/LatentSync a229c39)
computed with seeded weights on a synthetic 60-frame clip (README there says how it was made).

Tolerances. Our network in float32 reproduced upstream's embeddings bit for bit on the host that
made the fixture; the same network in float64 differs from them by at most 9e-7 of the largest
embedding value, and its distances by 3e-7 relative, LSE-D by 8e-8 relative. Other CPUs (other
BLAS / oneDNN kernels) may round differently, so the float tolerances are 1e-5 relative, about ten
times the float32-vs-float64 spread. LSE-C is a difference of two means on LSE-D's scale (24004
here), so its error is bounded by LSE-D's: 1e-5 x LSE-D. The MFCCs (float64 both sides; the DCT
here is a matrix product, upstream's scipy.fftpack) differ by 1.3e-12: tolerance 1e-9.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentsync.models.syncnet_v2 import TOWERS, SyncNetV2, expected_shapes, seeded_state_dict
from latentsync.quality.lse import LseScorer, audio_batch, lip_batch, lse_distances, lse_summary
from latentsync.quality.mfcc import mfcc

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "syncnet_v2"
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cases() -> dict:
    with np.load(FIXTURE / "cases.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model(manifest) -> SyncNetV2:
    net = SyncNetV2.from_config()
    net.load_state_dict(seeded_state_dict(manifest["seed"]), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def embeddings(model, cases, manifest):
    scorer = LseScorer(model, name="fixture", random_weights=True)
    rows = mfcc(cases["wave_clip"])
    return scorer.embed(cases["frames_rgb"], rows, manifest["windows"], 25.0)


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())


def test_every_state_dict_key_shape_and_dtype_in_upstream_order(manifest):
    ours = SyncNetV2.from_config(meta=True).state_dict()
    assert [[key, list(value.shape), str(value.dtype).replace("torch.", "")] for key, value in ours.items()] \
        == manifest["state_dict"]
    assert len(manifest["state_dict"]) == len(expected_shapes())
    counts = {tower: sum(p.numel() for p in getattr(SyncNetV2.from_config(meta=True), tower).parameters())
              for tower in TOWERS}
    assert counts == manifest["parameters"]
    assert manifest["wrapper_keys_sample"][0].startswith("__S__.")  # upstream's wrapper prefix, which we strip


def test_seeded_weights_are_the_fixture_weights(manifest):
    weights = seeded_state_dict(manifest["seed"])
    digests = {key: hashlib.sha256(np.ascontiguousarray(value.numpy()).tobytes()).hexdigest()
               for key, value in weights.items()}
    assert digests == manifest["weights_sha256"]


@pytest.mark.parametrize("name", ["clip", "odd", "tiny"])
def test_mfcc_matches_python_speech_features(cases, name):
    ours = mfcc(cases[f"wave_{name}"])
    theirs = cases[f"mfcc_{name}"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-9


def test_network_inputs_are_upstreams(cases, manifest):
    windows = range(manifest["windows"])
    table = torch.from_numpy(np.ascontiguousarray(mfcc(cases["wave_clip"]).T, dtype=np.float32))
    audio_in = audio_batch(table, windows, 25.0).numpy()
    assert audio_in.shape == cases["audio_windows"].shape
    assert np.abs(audio_in - cases["audio_windows"]).max() <= 1e-5 * np.abs(cases["audio_windows"]).max()
    lips = lip_batch(torch.from_numpy(cases["frames_rgb"]), windows)
    assert lips.shape == (manifest["windows"], 3, 5, 224, 224)
    # integer pixel values summed in float64: exact, and the BGR order matters only to the network,
    # so check the first channel is blue on one window too
    np.testing.assert_array_equal(lips.double().sum(dim=(1, 2, 3, 4)).numpy(), cases["lip_in_sums"])
    assert torch.equal(lips[0, 0, 0], torch.from_numpy(cases["frames_rgb"][0, :, :, 2]).float())


def test_embeddings_match_upstream(embeddings, cases):
    lip, audio = embeddings
    assert _relative(lip, cases["lip_embeddings"]) < RELATIVE
    assert _relative(audio, cases["audio_embeddings"]) < RELATIVE


def test_distances_match_upstream_calc_pdist(embeddings, cases):
    ours = lse_distances(*embeddings, vshift=15)
    assert ours.shape == cases["dists_vshift_15"].shape
    assert _relative(ours, cases["dists_vshift_15"]) < RELATIVE
    # fed upstream's own embeddings, the arithmetic alone agrees more tightly still
    again = lse_distances(cases["lip_embeddings"], cases["audio_embeddings"], vshift=15)
    assert _relative(again, cases["dists_vshift_15"]) < 1e-6


@pytest.mark.parametrize("vshift", [15, 3])
def test_lse_of_the_clip_matches_upstream_evaluate(model, cases, manifest, vshift):
    expected = manifest["results"][f"vshift_{vshift}"]
    scorer = LseScorer(model, name="fixture", random_weights=True, vshift=vshift)
    samples = cases["wave_clip"].astype(np.float32) / 32768.0  # what load_audio returns for these int16 samples
    score = scorer.score_crops(cases["frames_rgb"], samples, fps=25.0)
    assert score.av_offset == expected["av_offset"] and score.best_offset == -expected["av_offset"]
    assert abs(score.lse_d - expected["lse_d"]) <= RELATIVE * expected["lse_d"]
    assert abs(score.lse_c - expected["lse_c"]) <= RELATIVE * expected["lse_d"]
    assert score.windows == manifest["windows"] and len(score.tracks) == 1
    # upstream's summary of its own distances, through our lse_summary
    if vshift == 15:
        av_offset, lse_d, lse_c, _ = lse_summary(cases["dists_vshift_15"], 15)
        assert av_offset == expected["av_offset"]
        assert abs(lse_d - expected["lse_d"]) <= 1e-6 * expected["lse_d"]
        assert abs(lse_c - expected["lse_c"]) <= 1e-6 * expected["lse_d"]
