"""`fetch-weights` against a local fake hub fetches the StableSyncNet checkpoint, and it scores."""
from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import torch

from latentsync import weights as weights_mod
from latentsync.models.stable_syncnet import StableSyncNet, seeded_initialisation
from latentsync.quality import SyncScorer


def _fake_hub(root: Path, *, with_syncnet: bool) -> dict[str, Path]:
    """Stand-ins for the hub repositories: placeholder runner files, a real small SyncNet."""
    lipsync, vae = root / "lipsync", root / "vae"
    (lipsync / "whisper").mkdir(parents=True)
    vae.mkdir()
    (lipsync / "latentsync_unet.pt").write_bytes(b"placeholder")
    (lipsync / "whisper" / "tiny.pt").write_bytes(b"placeholder")
    (vae / "config.json").write_text("{}")
    if with_syncnet:
        model = seeded_initialisation(StableSyncNet.from_config("small"), 7)
        torch.save({"state_dict": model.state_dict(), "global_step": 1}, lipsync / "stable_syncnet.pt")
    (lipsync / "README.md").write_text("not wanted\n")
    return {weights_mod.HUB_REPOS["1.6"]: lipsync, weights_mod.HUB_VAE_REPO: vae}


def _download_from(hub):
    def download(repo_id, local_dir, allow_patterns):
        source = hub[repo_id]
        for path in source.rglob("*"):
            rel = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(rel, pattern) for pattern in allow_patterns):
                target = Path(local_dir) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return local_dir

    return download


def test_fetch_weights_fetches_the_syncnet_and_it_loads(tmp_path):
    hub = _fake_hub(tmp_path / "hub", with_syncnet=True)
    dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=_download_from(hub))
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
        dest = weights_mod.fetch_weights(tmp_path / "weights", snapshot_download=_download_from(hub))
    finally:
        logger.remove(handler)
    assert (dest / "latentsync_unet.pt").is_file() and not (dest / "stable_syncnet.pt").exists()
    assert any("stable_syncnet.pt" in message for message in messages)
