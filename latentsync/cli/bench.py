"""`latentsync-bench`: time the real pipeline on this GPU; the measurements feed `auto`.

    latentsync-bench                  quick benchmark (default): the plans auto, each goal and the
                                      speed modes pick here (about 1-2 minutes on a mid-range GPU)
    latentsync-bench --full           also every quality preset x speed mode x DeepCache on/off,
                                      torch.compile included (long: compiles take minutes)
    latentsync-bench --stress         quick, then the largest frames_per_batch that fits
    latentsync-bench --clear          drop this GPU's cached results (add --quick etc. to re-measure)
    latentsync-bench --quality CLIP --weights DIR [--audio A]
                                      run each goal on your clip, score its lip sync (StableSyncNet:
                                      DIR/stable_syncnet.pt), store the drops `auto` respects (docs/quality.md)

Results go to the benchmark cache (~/.cache/latentsync-runner/benchmark.json,
$XDG_CACHE_HOME or $LATENTSYNC_BENCH_CACHE move it), which `latentsync-run` and
`latentsync-rules explain` read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from loguru import logger

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import LatentSyncError

EXIT_OK, EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = ("exit codes: 0 measured and cached, 1 nothing fitted in memory, 2 invalid input, "
              "130 interrupted (the cache is left as it was)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentsync-bench", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", dest="mode", action="store_const", const="quick", help="quick benchmark (default)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="presets x speed modes x DeepCache, torch.compile included")
    modes.add_argument("--stress", dest="mode", action="store_const", const="stress",
                       help="quick, then search the largest frames_per_batch that fits and the headroom")
    modes.add_argument("--quality", metavar="CLIP", dest="quality_clip",
                       help="run each goal on CLIP (a video with a face), score the outputs' lip sync and store "
                            "per goal s/video-s, sync scores, sync drop and PSNR against the quality goal")
    parser.add_argument("--audio", metavar="A", help="--quality: the driving audio (default: CLIP's own track)")
    parser.add_argument("--outputs", metavar="DIR", help="--quality: keep each goal's output video in DIR")
    parser.add_argument("--clear", action="store_true", help="drop this GPU's cached results first")
    parser.add_argument("--resolution", choices=["256", "512", "auto"], default="auto",
                        help="face crop size: 256 (LatentSync 1.5), 512 (1.6), auto follows the weights")
    parser.add_argument("--weights", metavar="DIR", help="official weights folder (default: random weights of the "
                        "official architecture; timing does not depend on weight values)")
    parser.add_argument("--cache", metavar="PATH", help="benchmark cache file")
    parser.add_argument("--rules", metavar="DIR", help="rules folder (default: the bundled rules/v1)")
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-",
                        help="write the full report as JSON to PATH (no PATH: to stdout, instead of the text)")
    parser.add_argument("--report", metavar="PATH", help="also write the text report to PATH")
    parser.add_argument("--summary", metavar="PATH", help="also write the one-screen summary to PATH")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib: the 'plot' extra)")
    parser.add_argument("--reps", type=int, metavar="N", help="timed repetitions per plan (default 3)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="cap denoising steps (smoke runs only; the numbers stop being representative)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run for CI: 1 repetition, 2 steps, 2-frame chunks (not representative)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quality_clip is None and (args.audio or args.outputs):
        parser.error("--audio and --outputs go with --quality CLIP")
    if args.quality_clip is not None and args.clear:
        parser.error("--clear does not combine with --quality (it would drop the speed measurements)")
    show_bar = not args.no_progress and sys.stderr.isatty()
    bar = None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; a bare environment still gets its numbers
        tqdm = None  # type: ignore[assignment]
    logger.remove()
    level = "DEBUG" if args.verbose else "INFO"
    fmt = "{time:HH:mm:ss} {level: <7} {message}"
    def quiet_cache_reads(record) -> bool:
        # Planning reads the cache once per plan; its "unavailable" info lines would drown the output.
        return args.verbose or record["level"].no >= 30 or not record["name"].endswith("facts.benchmark")

    if tqdm is not None and not args.no_progress:
        logger.add(lambda message: tqdm.write(message, end="", file=sys.stderr), level=level, format=fmt,
                   filter=quiet_cache_reads)
    else:
        logger.add(sys.stderr, level=level, format=fmt, filter=quiet_cache_reads)

    try:
        from ..bench import BenchmarkOptions, clear_cached_results, run_benchmark, run_quality_benchmark, write_plot
        from ..facts.gpu import probe_gpu

        if args.clear and args.mode is None:
            removed = clear_cached_results(Path(args.cache) if args.cache else None, probe_gpu())
            print(f"dropped {removed} cached benchmark entr{'y' if removed == 1 else 'ies'} for this GPU")
            return EXIT_OK
        options = BenchmarkOptions.tiny() if args.tiny else BenchmarkOptions()
        options.resolution = args.resolution
        options.rules = Path(args.rules) if args.rules else None
        if args.reps is not None:
            options.reps = max(1, args.reps)
        if args.max_steps is not None:
            options.max_steps = max(1, args.max_steps)

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal bar
            if tqdm is None or args.no_progress:
                return
            if bar is None:
                bar = tqdm(total=total, desc="latentsync-bench", unit="run", file=sys.stderr,
                           disable=not show_bar and not sys.stderr.isatty())
            bar.total = total
            bar.set_postfix_str(stage)
            bar.n = done
            bar.refresh()

        if args.quality_clip is not None:
            report = run_quality_benchmark(args.quality_clip, audio=args.audio, weights=args.weights,
                                           cache_path=args.cache, progress=progress, options=options,
                                           outputs=args.outputs)
        else:
            report = run_benchmark(args.mode or "quick", clear=args.clear, cache_path=args.cache,
                                   weights=args.weights, progress=progress, options=options)
    except KeyboardInterrupt:
        print("interrupted: the benchmark cache was left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LatentSyncError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        if bar is not None:
            bar.close()

    data = report.to_dict()
    if args.json == "-":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(report.text)
        if args.json:
            atomic_write_json(args.json, data)
    if args.report:
        atomic_write_text(args.report, report.text + "\n")
    if args.summary:
        atomic_write_text(args.summary, report.summary + "\n")
    if args.plot and args.quality_clip is not None:
        print("no plot for --quality", file=sys.stderr)
    elif args.plot:
        if write_plot(data, Path(args.plot)) is None:
            print("no plot written (matplotlib missing: pip install 'latentsync-runner[plot]')", file=sys.stderr)
    return EXIT_OK if report.entry is not None else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
