"""`fetch-weights` against a local fake hub fetches the StableSyncNet checkpoint and the original
SyncNet (`auxiliary/syncnet_v2.model`), and they load."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentsync import weights as weights_mod
from latentsync.models.stable_syncnet import StableSyncNet, seeded_initialisation
from latentsync.models.syncnet_v2 import seeded_state_dict
from latentsync.quality import SyncScorer
from latentsync.quality.lse import LseScorer
from latentsync.testing.fake_hub import fake_snapshot_download


def _fake_hub(root: Path, *, with_syncnet: bool, syncnet_v2_in: str | None = "1.5") -> dict[str, Path]:
    """Stand-ins for the hub repositories: placeholder runner files, a real small SyncNet, and a
    seeded original SyncNet under auxiliary/ in the repository `syncnet_v2_in` (None: nowhere)."""
    lipsync, vae, older = root / "lipsync", root / "vae", root / "lipsync-1.5"
    (lipsync / "whisper").mkdir(parents=True)
    vae.mkdir()
    (lipsync / "latentsync_unet.pt").write_bytes(b"placeholder")
    (lipsync / "whisper" / "tiny.pt").write_bytes(b"placeholder")
    (vae / "config.json").write_text("{}")
    if with_syncnet:
        model = seeded_initialisation(StableSyncNet.from_config("small"), 7)
        torch.save({"state_dict": model.state_dict(), "global_step": 1}, lipsync / "stable_syncnet.pt")
    (lipsync / "README.md").write_text("not wanted\n")
    older.mkdir()
    if syncnet_v2_in is not None:
        target = (lipsync if syncnet_v2_in == "1.6" else older) / weights_mod.SYNCNET_V2_HUB_PATH
        target.parent.mkdir(parents=True)
        torch.save(seeded_state_dict(3), target)
    return {weights_mod.HUB_REPOS["1.6"]: lipsync, weights_mod.HUB_VAE_REPO: vae, weights_mod.HUB_REPOS["1.5"]: older}


def test_fetch_weights_fetches_the_syncnet_and_it_loads(tmp_path):
    hub = _fake_hub(tmp_path / "hub", with_syncnet=True)
    dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=fake_snapshot_download(hub))
    assert (dest / "stable_syncnet.pt").is_file()
    assert not (dest / "README.md").exists()
    scorer = SyncScorer.from_weights(dest, config="small")
    assert not scorer.random_weights and scorer.name == "stable_syncnet.pt"
    expected = torch.load(hub[weights_mod.HUB_REPOS["1.6"]] / "stable_syncnet.pt", weights_only=True)["state_dict"]
    for key, value in expected.items():
        assert torch.equal(scorer.model.state_dict()[key], value)


def test_a_hub_without_the_syncnet_still_fetches_the_runner_weights(tmp_path):
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        hub = _fake_hub(tmp_path / "hub", with_syncnet=False)
        dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=fake_snapshot_download(hub))
    finally:
        logger.remove(handler)
    assert (dest / "latentsync_unet.pt").is_file() and not (dest / "stable_syncnet.pt").exists()
    assert any("stable_syncnet.pt" in message for message in messages)


@pytest.mark.parametrize("where", ["1.5", "1.6"])
def test_fetch_weights_fetches_syncnet_v2_and_it_loads(tmp_path, where):
    """From the version's repository when it has it, else from 1.5's (upstream's default source)."""
    hub = _fake_hub(tmp_path / "hub", with_syncnet=True, syncnet_v2_in=where)
    dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=fake_snapshot_download(hub))
    assert (dest / "auxiliary" / "syncnet_v2.model").is_file()
    scorer = LseScorer.from_weights(dest)
    assert scorer.name == "syncnet_v2.model" and not scorer.random_weights
    assert torch.equal(scorer.model.netfclip[0].weight, seeded_state_dict(3)["netfclip.0.weight"])


def test_a_hub_without_syncnet_v2_warns_and_still_fetches(tmp_path):
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        hub = _fake_hub(tmp_path / "hub", with_syncnet=True, syncnet_v2_in=None)
        dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=fake_snapshot_download(hub))
    finally:
        logger.remove(handler)
    assert (dest / "stable_syncnet.pt").is_file() and not (dest / "auxiliary").exists()
    assert any("syncnet_v2.model" in message for message in messages)
