"""The layers stay apart. The facts validate the benchmark cache against the schemas without
the rules engine (which imports the facts); distributed/ builds on the library's shared pieces,
not on the drop-folder watcher. Checked in a fresh interpreter, after running the code paths
that used to reach across (their imports were lazy, so importing alone would prove nothing)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from latentsync.paths import REPO_ROOT

FACTS_WITHOUT_ENGINE = """
import json, sys
from pathlib import Path
from latentsync.facts import GpuFacts, benchmark_key, read_benchmark_cache, update_benchmark_cache

gpu = GpuFacts(device="cuda", name="RTX 4090", uuid="GPU-1", vram_total_gib=23.99, vram_free_gib=22.0,
               compute_capability=8.9, bf16=True, driver="560.1", device_count=1, source="nvml")
entry = {"key": benchmark_key(gpu), "measured_at": "2026-11-26T10:00:00", "max_frames_per_batch": 48,
         "peak_vram_gib": 20.5, "modes": {"normal": {"seconds_per_video_second": 7.5, "peak_vram_gib": 20.5}}}
cache = Path(sys.argv[1]) / "bench.json"
update_benchmark_cache(cache, entry)
facts = read_benchmark_cache(cache, gpu)
print(json.dumps({"available": facts.available, "modules": sorted(sys.modules)}))
"""

DISTRIBUTED_WITHOUT_WATCHER = """
import json, sys
from pathlib import Path
from latentsync.distributed import batch, tasks
from latentsync.errors import MediaError
from latentsync.jobs import JobSpec

folder = Path(sys.argv[1])
spec = JobSpec(video=folder / "clip.mp4", output=folder / "out" / "clip.mp4")

def broken_input(spec, **_kwargs):
    raise MediaError("not a video", path=str(spec.video))

def device_error(spec, **_kwargs):
    raise RuntimeError("CUDA error: an illegal memory access")

failed = tasks.run_clip("k1", spec.to_dict(), None, broken_input)  # permanent: classified, recorded
try:
    tasks.run_clip("k2", spec.to_dict(), None, device_error)  # transient: raised for Ray to retry
    retried = None
except tasks.TransientClipError as error:
    retried = error.record
error_file = batch.write_error_file(folder / "failed", "clip", spec, dict(failed["error"], attempts=1))
print(json.dumps({"failed": failed, "retried": retried, "error_file": json.loads(error_file.read_text()),
                  "modules": sorted(sys.modules)}))
"""


def run_isolated(code: str, folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, cwd=str(REPO_ROOT),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def under(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


def test_facts_read_and_write_the_benchmark_cache_without_the_engine(tmp_path: Path):
    result = run_isolated(FACTS_WITHOUT_ENGINE, tmp_path)
    assert result["available"] is True
    assert "latentsync.contracts" in result["modules"]
    assert under(result["modules"], "latentsync.engine") == []


def test_distributed_batch_and_tasks_do_not_import_the_watcher(tmp_path: Path):
    result = run_isolated(DISTRIBUTED_WITHOUT_WATCHER, tmp_path)
    assert under(result["modules"], "latentsync.watch") == []
    # The records are the shared ones (latentsync.failures), fields as before.
    failed = result["failed"]
    assert failed["status"] == "failed"
    assert {k: failed["error"][k] for k in ("type", "message", "hint", "transient")} == {
        "type": "MediaError", "message": "not a video", "hint": None, "transient": False}
    assert result["retried"]["type"] == "RuntimeError" and result["retried"]["transient"] is True
    assert result["error_file"]["error"]["type"] == "MediaError"
    assert result["error_file"]["why"] == "clip.mp4: not a video"
