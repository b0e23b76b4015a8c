"""Every limit on what a plan, a rule file or a dropped file may make this program do, in one place.

A plan or a rules folder is input, sometimes from someone else (a shared drop
folder): reading it must take bounded time and memory and say clearly which limit
a file broke. `docs/limits.md` lists these values for users; a test keeps the two
in step.

YAML limits count *nodes*: every mapping, sequence and scalar, each time it is
used, so an alias (`*name`) counts the whole subtree it stands for. A 600-byte
"billion laughs" document that expands to 10^9 nodes is refused after counting,
without ever being expanded.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB, MIB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class YamlLimits:
    """What one YAML file may hold."""

    kind: str  # how messages name the file ("plan", "rule file")
    max_bytes: int
    max_depth: int  # nesting of mappings and sequences, aliases followed
    max_nodes: int  # nodes the document expands to, aliases counted at each use


# A plan is a few lines; `jobs:` lists of a few thousand clips stay far below these.
PLAN_LIMITS = YamlLimits(kind="plan", max_bytes=1 * MIB, max_depth=32, max_nodes=200_000)
# Rule files, GPU profiles and policy tests: 5,000 rules take about 1 MiB and 100,000 nodes.
RULES_LIMITS = YamlLimits(kind="rule file", max_bytes=8 * MIB, max_depth=32, max_nodes=1_000_000)

# Problems listed in one error (the count of the rest is given): a broken 10 MB file
# must not print 16 MB of messages.
MAX_REPORTED_PROBLEMS = 50

# Numbers: YAML's .nan / .inf (and 1e999, which is .inf) are refused in plans and
# rules; the schemas' `number` means a finite number.

# Rules evaluated by durable-rules are compiled into several rulesets per stage, each
# holding at most this many condition tests (an upper bound on the nodes of its
# network: `any:` and `in:` branches each count, and multiply what follows them).
# Measured with durable-rules 2.0.28: `create_ruleset` hangs for ever once a node has
# more than 512 children (513 rules testing one fact), refuses (error 108) more than
# 256 rules ending at one node, and a fact passing more than 64 tests of one ruleset
# corrupts the C heap (the process aborts: `free(): invalid size`). 48 tests per
# ruleset stays below all three.
DURABLE_CHUNK_NODES = 48
# Above this many rulesets for one stage (about 5,000 two-test rules), or for a single
# rule with more tests than one ruleset holds, the built-in evaluator (which agrees
# with durable-rules on every rule; the property tests hold them equal) evaluates the
# rules, and `explain` and every run plan say so.
DURABLE_MAX_CHUNKS = 200

# The static clash check (equal-priority rules that could set one key to two values)
# and the unsatisfiable-rule check try at most this many fact combinations in all,
# so a rules folder of any size validates in seconds; what they could not cover is
# said in a warning (a clash that happens is still refused when a plan is resolved).
RULE_CHECK_BUDGET = 400_000

# File names: most file systems allow 255 bytes per name. Names the drop folder
# derives (NAME-2.mp4, NAME.error.json, NAME.mp4.report.json) are shortened to fit.
MAX_NAME_BYTES = 255
# A dropped plan's `output:` name (the report adds `.report.json`, a repeat `-N`).
MAX_OUTPUT_NAME_BYTES = 200
