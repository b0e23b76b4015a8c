"""`latentsync-eval`: lip-sync scores of a video (StableSyncNet), on the command line.

    latentsync-eval VIDEO [--audio AUDIO] [--weights DIR|random|random-small] [--json OUT]
                    [--lse auto|on|off] [--syncnet-v2 FILE]

Scores VIDEO's faces against its own audio track, or against AUDIO when given. `--weights`
is the folder `latentsync-run fetch-weights` fills (it must hold `stable_syncnet.pt`) or a
checkpoint file; `random-small` / `random` run the same code on seeded random weights (the
numbers are then meaningless). Prints a summary; `--json OUT` writes every number
(`-` for stdout). LSE-C / LSE-D (the original SyncNet, `latentsync.quality.lse`) come too when
the weights folder holds `syncnet_v2.model` (top level or `auxiliary/`, where fetch-weights puts
it), or with `--lse on` / `--syncnet-v2 FILE`. Definitions: docs/quality.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from loguru import logger

from ..errors import InvalidInputError, LatentSyncError

EXIT_CODES = "exit codes: 0 ok, 1 scoring failed, 2 invalid input (files, weights)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentsync-eval",
        description="Lip-sync scores of a video: StableSyncNet sync probability, best audio-video offset "
        "(+-15 frames) and confidence.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("video", metavar="VIDEO", help="the video to score")
    parser.add_argument("--audio", metavar="AUDIO", help="score against this audio (default: VIDEO's own track)")
    parser.add_argument("--weights", metavar="DIR", default=None,
                        help="weights folder holding stable_syncnet.pt, a checkpoint file, or random / random-small "
                             "(meaningless scores); required")
    parser.add_argument("--config", default="auto", choices=["auto", "syncnet_16_pixel_attn", "syncnet_16_pixel"],
                        help="the SyncNet architecture of a checkpoint (default: told from its keys; "
                             "LatentSync 1.6: syncnet_16_pixel_attn)")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON to OUT ('-': stdout)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="SyncNet precision (upstream runs it in float16 on GPUs; default float32)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per SyncNet call (default 8)")
    parser.add_argument("--face-backend", default="auto", help="auto, mediapipe or insightface")
    parser.add_argument("--stride", type=int, default=1, help="score every STRIDE-th 16-frame window (default 1)")
    parser.add_argument("--lse", default="auto", choices=["auto", "on", "off"],
                        help="LSE-C / LSE-D with the original SyncNet: auto (when the weights folder holds "
                             "syncnet_v2.model), on (required; random weights: a seeded SyncNet), off")
    parser.add_argument("--syncnet-v2", metavar="FILE", default=None,
                        help="the original SyncNet's checkpoint (syncnet_v2.model) for LSE; implies --lse on")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def _lse_summary(lse) -> list[str]:
    lines = []
    if lse.random_weights:
        lines.append("WARNING: random SyncNet weights for LSE: LSE-C / LSE-D are meaningless")
    lines += [
        f"LSE-C             {lse.lse_c:.4f}   (original SyncNet {lse.model}; higher is better)",
        f"LSE-D             {lse.lse_d:.4f}   (lower is better); AV offset {lse.av_offset:+d} frames (upstream's sign), "
        f"{len(lse.tracks)} face track(s), {lse.windows} windows, {lse.seconds:.2f} s",
    ]
    return lines


def _summary(score) -> str:
    lines = []
    if score.random_weights:
        lines.append(f"WARNING: random weights ({score.model}): these numbers are meaningless")
    lines += [
        f"model             {score.model}",
        f"frames            {score.frames} at {score.fps:g} fps; {score.windows} windows scored, "
        f"{score.skipped_windows} skipped; {score.frames_without_face} frames without a face",
        f"sync probability  {score.sync_probability:.4f}   (mean cosine similarity at offset 0; > 0.5 in sync)",
        f"best offset       {score.best_offset:+d} frames   (> 0: the sound lags the picture)",
        f"min distance      {score.min_distance:.4f}   (mean 1 - cosine at the best offset)",
        f"confidence        {score.confidence:.4f}   (median minus minimum distance over offsets)",
        f"time              {score.seconds:.2f} s   ("
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in score.stages.items()) + ")",
    ]
    return "\n".join(lines)


def _check_output(out: str, inputs: Sequence[Optional[str]]) -> None:
    if out == "-":
        return
    target = Path(out).resolve()
    for given in inputs:
        if given and Path(given).resolve() == target:
            raise InvalidInputError("the JSON output would overwrite an input", path=out,
                                    hint="choose another --json path")


def _lse_scorer(args, torch):
    """The LseScorer `--lse` / `--syncnet-v2` ask for, or None."""
    from ..quality.lse import LseScorer, lse_scorer_for

    options = dict(device=args.device, dtype=getattr(torch, args.dtype), seed=args.seed, face_backend=args.face_backend)
    if args.syncnet_v2:
        return LseScorer.from_weights(args.syncnet_v2, **options)
    if args.lse == "off":
        return None
    return lse_scorer_for(args.weights, required=args.lse == "on", **options)


def _lse_score(lse_scorer, args):
    """LSE of the video; with `--lse auto` a clip LSE cannot score is a warning, not an error."""
    if lse_scorer is None:
        return None
    try:
        return lse_scorer.score_video(args.video, args.audio)
    except LatentSyncError as error:
        if args.lse == "on" or args.syncnet_v2:
            raise
        logger.warning("LSE not computed: {}", error)
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "WARNING", format="{level: <7} {message}")
    try:
        if args.weights is None:
            raise InvalidInputError(
                "--weights is required",
                hint="pass the folder `latentsync-run fetch-weights DIR` filled (it holds stable_syncnet.pt), "
                "or --weights random-small to exercise the code path",
            )
        _check_output(args.json, [args.video, args.audio]) if args.json else None
        from ..quality.sync import SyncScorer

        import torch

        if args.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {args.batch_size}")
        scorer = SyncScorer.from_weights(args.weights, device=args.device, dtype=getattr(torch, args.dtype),
                                         config=args.config, seed=args.seed, face_backend=args.face_backend,
                                         batch_size=args.batch_size)
        lse_scorer = _lse_scorer(args, torch)  # before scoring: a missing or bad file fails fast
        score = scorer.score_video(args.video, args.audio, stride=args.stride)
        lse = _lse_score(lse_scorer, args)
        data = {"video": str(args.video), "audio": str(args.audio) if args.audio else None, **score.to_dict(),
                "lse": lse.to_dict() if lse is not None else None}
        if args.json == "-":
            print(json.dumps(data, indent=1))
        else:
            print(_summary(score))
            if lse is not None:
                print("\n".join(_lse_summary(lse)))
            if args.json:
                from ..atomic import atomic_write_text

                atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except LatentSyncError as error:
        if args.verbose:
            logger.exception("failed")
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # noqa: BLE001 — one clear line, not a traceback
        if args.verbose:
            logger.exception("failed")
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
