"""The results file of the time-to-result benchmarks (cold_start, model_load,
watch_first_chunk): the rows with the date, torch version and card they were measured on,
written atomically (a benchmark cut off mid-write leaves the previous file, not half a new one)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_results(path: Path, rows: list, **meta) -> Path:
    import torch

    from latentsync.atomic import atomic_write_json

    header = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"meta": header, "rows": rows}, indent=1)
