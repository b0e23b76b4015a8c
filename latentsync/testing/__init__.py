"""Stand-ins for tests and benchmarks: no model, no GPU, same interfaces as the real thing.

    latentsync.testing.fake_pipeline   FakePipeline (run_job's stand-in), fake_load_ruleset,
                                       make_fake_video / make_fake_audio, expected_fake_output
    latentsync.testing.crash_pipeline  CrashOncePipeline: kills its Ray worker on a clip's first attempt

Not used by the library itself; the CLI reaches them only when told to
(`--executor latentsync.testing.fake_pipeline:FakePipeline()`). Importing this
package is cheap (no torch).
"""
from .crash_pipeline import CrashOncePipeline
from .fake_pipeline import (
    FakePipeline,
    FakeRuleSet,
    expected_fake_output,
    fake_load_ruleset,
    make_fake_audio,
    make_fake_video,
    sha256_file,
    slow_fake_pipeline,
)

__all__ = [
    "CrashOncePipeline",
    "FakePipeline",
    "FakeRuleSet",
    "expected_fake_output",
    "fake_load_ruleset",
    "make_fake_audio",
    "make_fake_video",
    "sha256_file",
    "slow_fake_pipeline",
]
