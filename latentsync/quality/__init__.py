"""Quality you can measure: lip-sync scores (StableSyncNet) for inputs and outputs.

    from latentsync.quality import SyncScorer
    scorer = SyncScorer.from_weights("WEIGHTS_DIR")      # holds stable_syncnet.pt
    score = scorer.score_video("out.mp4")                 # or score_video(video, audio)
    score.sync_probability, score.best_offset, score.confidence

`random-small` / `random` give seeded random weights: the code path is real, the numbers
are meaningless. Definitions: latentsync/quality/sync.py and docs/quality.md.
"""
from .report import SyncEvaluation, evaluate_sync, sync_drop, sync_table
from .sync import (
    MAX_OFFSET,
    SYNCNET_FILE,
    SyncScore,
    SyncScorer,
    offset_distances,
    score_video,
    summarise,
)

__all__ = ["MAX_OFFSET", "SYNCNET_FILE", "SyncEvaluation", "SyncScore", "SyncScorer", "evaluate_sync",
           "offset_distances", "score_video", "summarise", "sync_drop", "sync_table"]
