"""The keyed compile/kernel cache: a changed card or torch makes it cold, corrupt entries are
ignored with a warning and rebuilt, never a crash; runs record what they warmed."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from latentsync.pipeline import compile_cache, warm_start
from latentsync.pipeline.compile_cache import CacheKey, CompileCache, graph_key
from latentsync.testing.pipeline_helpers import default_settings

KEY = CacheKey(device_name="NVIDIA H200", compute_capability="9.0", torch="2.11.0+cu130", triton="3.6.0",
               cuda="13.0", package="0.1.0")


@pytest.fixture
def warnings_seen():
    from loguru import logger

    seen: list[str] = []
    handle = logger.add(lambda message: seen.append(str(message)), level="WARNING")
    yield seen
    logger.remove(handle)


def warm_cache(tmp_path, key=KEY) -> CompileCache:
    cache = CompileCache(key, tmp_path)
    cache.record("g1", goal="quality", compiled=True, model_version="1.6", warmup_seconds=12.5,
                 settings={"compile": "default"}, started_warm=True)
    return cache


@pytest.mark.parametrize("change", [
    dict(torch="2.12.0+cu130"), dict(device_name="NVIDIA H100 80GB HBM3"), dict(compute_capability="8.9"),
    dict(triton="3.7.0"), dict(package="0.2.0"), dict(cuda="12.8"),
])
def test_a_changed_torch_gpu_or_package_makes_the_cache_cold(tmp_path, change):
    warm = warm_cache(tmp_path)
    assert warm.is_warm("g1")
    other = CompileCache(replace(KEY, **change), tmp_path)
    assert other.folder != warm.folder
    assert not other.is_warm("g1")
    assert other.environment()["TORCHINDUCTOR_CACHE_DIR"] != warm.environment()["TORCHINDUCTOR_CACHE_DIR"]


def test_the_same_key_finds_the_warm_entry_in_another_process_object(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    warm_cache(tmp_path)
    again = CompileCache(KEY, tmp_path)
    assert again.is_warm("g1") and again.entry("g1")["warmup_seconds_warm"] == 12.5
    assert again.warm_goals(compiled=True)["quality"]["model_version"] == "1.6"
    assert again.warm_goals(compiled=False) == {}
    assert json.loads((again.folder / "key.json").read_text())["torch"] == KEY.torch
    env = again.environment()
    assert env == {"TORCHINDUCTOR_CACHE_DIR": str(again.folder / "inductor"),
                   "TRITON_CACHE_DIR": str(again.folder / "triton")}


def test_the_current_key_reads_this_process(monkeypatch):
    key = CacheKey.current("cpu")
    assert key.torch == torch.__version__ and key.device_name == "cpu"
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert CacheKey.current("cpu").digest() != key.digest()


def test_graph_keys_follow_shaping_settings_only():
    base = default_settings()
    assert graph_key(base.to_dict(), "1.6") == graph_key(base.replace(seed=7, encoder_crf=23).to_dict(), "1.6")
    assert graph_key(base.to_dict(), "1.6") != graph_key(base.replace(frames_per_batch=32).to_dict(), "1.6")
    assert graph_key(base.to_dict(), "1.6") != graph_key(base.to_dict(), "1.5")


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99, "entries": {}}', b"[1, 2]", b"\xff\xfe"])
def test_a_corrupt_manifest_is_ignored_with_a_warning_and_rebuilt(tmp_path, content, warnings_seen):
    cache = warm_cache(tmp_path)
    (cache.folder / "warm.json").write_bytes(content)
    assert not cache.is_warm("g1")
    assert any("warm.json" in w and "rebuilt" in w for w in warnings_seen)
    cache.record("g2", goal="preview", compiled=False, model_version="1.6", warmup_seconds=None, settings={})
    assert cache.is_warm("g2") and json.loads((cache.folder / "warm.json").read_text())["version"] == 1


def test_a_corrupt_artifact_is_ignored_with_a_warning_and_removed(tmp_path, warnings_seen):
    cache = warm_cache(tmp_path)
    cache.ensure()
    cache.artifact_path("g1").write_bytes(b"\x00garbage from a killed writer")
    assert cache.load_artifacts("g1") is False
    assert not cache.artifact_path("g1").exists() and not cache.is_warm("g1")
    assert any("corrupt artifact" in w for w in warnings_seen)
    assert cache.load_artifacts("nothing-here") is False  # no file: not an error


def test_artifacts_round_trip_through_torch(tmp_path, monkeypatch):
    """What torch hands over is what it gets back (torch's own format; a fake compiler here)."""
    calls = {}
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"torch-bytes", object()))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts",
                        lambda data: calls.setdefault("loaded", data) and object())
    cache = CompileCache(KEY, tmp_path)
    assert cache.save_artifacts("g1") == cache.artifact_path("g1")
    assert cache.load_artifacts("g1") is True and calls["loaded"] == b"torch-bytes"
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)  # nothing compiled
    assert cache.save_artifacts("g2") is None


def test_users_cache_folders_win(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    cache = CompileCache(KEY, tmp_path)
    assert cache.user_managed()
    assert "TORCHINDUCTOR_CACHE_DIR" not in cache.environment()


def test_first_batch_warmup_needs_steady_batches():
    assert warm_start.first_batch_warmup([9.0, 2.0]) is None
    assert warm_start.first_batch_warmup([9.0, 2.0, 2.2, 0.5]) == pytest.approx(6.9)
    assert warm_start.first_batch_warmup([2.0, 2.1, 2.2, 0.5]) == 0.0


def test_the_default_root_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.cache_root() == tmp_path / "latentsync-runner" / "compile"


def test_torchs_own_default_folder_is_not_the_users_choice(tmp_path, monkeypatch):
    """torch writes its default into TORCHINDUCTOR_CACHE_DIR when dynamo is imported: that
    must not stop runs from using the keyed folder."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    monkeypatch.setenv("TRITON_CACHE_DIR", default_cache_dir() + "/triton/0")
    cache = CompileCache(KEY, tmp_path)
    assert not cache.user_managed()
    assert cache.environment()["TORCHINDUCTOR_CACHE_DIR"] == str(cache.inductor_dir)
    assert cache.environment()["TRITON_CACHE_DIR"] == str(cache.triton_dir)


def test_an_unusable_cache_folder_costs_speed_never_the_run(tmp_path, monkeypatch, warnings_seen):
    from latentsync.pipeline import levers

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    cache = CompileCache.for_device("cpu")
    with levers.run_scope(default_settings(), torch.device("cpu"), cache):
        assert "TRITON_CACHE_DIR" not in __import__("os").environ
    assert any("unusable" in w for w in warnings_seen)
    assert not cache.is_warm("anything")  # reading an impossible folder is just cold
    with pytest.raises(OSError):
        cache.record("g", goal=None, compiled=False, model_version="1.6", warmup_seconds=None, settings={})
