"""The benchmark as a picture: seconds per video-second per plan, and peak VRAM (matplotlib, optional)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from loguru import logger


def write_plot(report: dict[str, Any], path: Path) -> Optional[Path]:
    """Write a PNG from a report dict (`BenchmarkReport.to_dict()` or its JSON). None when matplotlib is
    missing (the optional extra "plot": pip install 'latentsync-runner[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("no plot: matplotlib is not installed (pip install 'latentsync-runner[plot]')")
        return None
    from .cases import describe

    cases = [case for case in report["cases"] if case["status"] == "ok"]
    if not cases:
        logger.warning("no plot: no plan was timed")
        return None
    names = [describe(case["settings"]) + ("\n" + ", ".join(case["labels"][:3]) if case["labels"] else "")
             for case in cases]
    rates = [case["seconds_per_video_second"] for case in cases]
    peaks = [case["peak_vram_gib"] or 0.0 for case in cases]
    height = 1.2 + 0.55 * len(cases)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, height), sharey=True,
                                         gridspec_kw={"width_ratios": [3, 2]})
    positions = list(range(len(cases)))
    left.barh(positions, rates, color="#3b7dd8")
    for y, value in zip(positions, rates):
        left.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    left.set_yticks(positions, names, fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("GPU seconds per second of 25 fps video (lower is faster)")
    right.barh(positions, peaks, color="#d8843b")
    total = report["gpu"].get("vram_total_gib") or 0.0
    if total:
        right.axvline(total, color="black", linestyle="--", linewidth=1)
        right.text(total, -0.6, " VRAM", fontsize=8)
    right.set_xlabel("peak VRAM, GiB")
    software = report.get("options", {}).get("software", {})
    figure.suptitle(f"latentsync-bench --{report['mode']}: {report['gpu']['name']}, {report['weights']} weights, "
                    f"{report['resolution']} px {report['precision']}, torch {software.get('torch')}", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial.png")
    figure.savefig(temp, dpi=120)
    plt.close(figure)
    temp.replace(path)
    return path
