"""The benchmark's words: a full text report and a one-screen summary of what auto now picks."""
from __future__ import annotations

from typing import Any, Optional

from .cases import describe


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def _header(report) -> list[str]:
    gpu = report.gpu
    memory = f", {gpu['vram_total_gib']:.1f} GiB" if gpu["device"] == "cuda" else ""
    driver = f", driver {gpu['driver']}" if gpu.get("driver") else ""
    software = report.options.get("software", {})
    return [
        f"latentsync-bench --{report.mode}: {gpu['name']}{memory}{driver}; torch {software.get('torch')}, "
        f"latentsync-runner {software.get('package')}",
        f"weights {report.weights}, {report.resolution} px, {report.precision}; "
        f"{report.options['warmup']} warm-up + {report.options['reps']} timed runs per plan (median); "
        f"took {report.seconds:.0f} s",
    ]


def format_report(report) -> str:
    lines = _header(report)
    lines += ["", "Seconds per video-second: GPU stages only (VAE encode of masked + reference faces, denoising "
              "loop, VAE decode, host copies), one batch of frames_per_batch frames, 25 fps. Face detection, "
              "decoding and encoding run on other threads and are not included.", ""]
    rows = [("plan", "s/video-s", "enc/chunk", "denoise/chunk", "dec/chunk", "peak GiB", "UNet calls",
             "status", "used by")]
    for case in report.cases:
        calls = "-" if case.unet_calls_per_batch is None else \
            f"{case.unet_calls_per_batch} ({case.cached_calls_per_batch} cached)"
        status = case.status + (f" after {', '.join(case.fallbacks_applied)}" if case.fallbacks_applied else "")
        rows.append((describe(case.settings), _num(case.seconds_per_video_second), _num(case.vae_encode_s_per_chunk, 3),
                     _num(case.denoise_s_per_chunk, 3), _num(case.vae_decode_s_per_chunk, 3),
                     _num(case.peak_vram_gib), calls, status, "; ".join(case.labels)))
    lines += _table(rows)
    for case in report.cases:
        if case.error:
            lines.append(f"  {describe(case.settings)}: {case.error}")
    if report.stress:
        lines += ["", "Stress: largest frames_per_batch that fits (capped-step run of the most memory-hungry plan):"]
        total = report.gpu.get("vram_total_gib") or 0.0
        stress_rows = [("frames_per_batch", "fits", "peak GiB", "headroom GiB")]
        for step in report.stress:
            headroom = None if step.peak_vram_gib is None or not total else total - step.peak_vram_gib
            stress_rows.append((str(step.frames_per_batch), "yes" if step.fits else "OUT OF MEMORY",
                                _num(step.peak_vram_gib), _num(headroom)))
        lines += _table(stress_rows)
        lines.append("Clip length does not change peak memory: the runner streams chunk by chunk, so the longest "
                     "run that fits is bounded by disk, not VRAM.")
    if report.entry is not None:
        entry = report.entry
        modes = ", ".join(f"{name} {item['seconds_per_video_second']:.2f}" for name, item in entry["modes"].items())
        lines += ["", f"cache: {report.cache_path}", f"  modes (s/video-s): {modes or '-'}",
                  f"  max_frames_per_batch {entry['max_frames_per_batch']}, peak VRAM {entry['peak_vram_gib']} GiB",
                  f"  note: {entry['note']}"]
    if report.notes:
        lines.append("")
        lines += [f"note: {note}" for note in report.notes]
    lines += ["", report.summary or format_summary(report)]
    return "\n".join(lines)


def _settings_cell(settings: dict[str, Any]) -> str:
    vae = "vae tiled" if settings.get("vae_tiling") else ("vae sliced" if settings.get("vae_slicing") else "")
    return describe(settings) + (f" {vae}/{settings['vae_batch']}" if vae else "")


def format_summary(report) -> str:
    """One screen: per goal and clip length, what auto runs now and what the measurements changed."""
    gpu = report.gpu
    smoke = " SMOKE RUN: timings not representative." if report.options.get("max_steps") or \
        report.options.get("chunk_frames") else ""
    lines = [f"Recommended settings on {gpu['name']} (rules re-resolved after the benchmark).{smoke}"]
    rows = [("goal", "clip", "runs as", "settings", "s/video-s", "GPU time", "changed by the benchmark")]
    for row in report.summary_rows:
        rate = row.seconds_per_video_second
        changed = ", ".join(f"{key} {old}->{new}" for key, (old, new) in row.changed.items())
        if row.benchmark_rules:
            changed = (changed + " " if changed else "") + f"({', '.join(row.benchmark_rules)})"
        rows.append((row.goal, f"{row.clip_s:g} s", row.goal_effective, _settings_cell(row.settings),
                     _num(rate), "-" if rate is None else f"{rate * row.clip_s:.0f} s", changed or "-"))
    lines += _table(rows)
    lines.append("s/video-s: measured GPU seconds per second of 25 fps video ('-': plan not timed in this mode).")
    return "\n".join(lines)
