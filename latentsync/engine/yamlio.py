"""YAML in, with line numbers kept and every limit enforced before the document is built.

`yaml.safe_load` forgets where things were; composing the node tree first keeps the
marks, and the same tree is then constructed with the safe constructor. PyYAML
silently keeps the last of two equal keys; here that is an error.

Every plan and rule file is read through `load_yaml`, with the limits of
`latentsync.engine.limits` (size, nesting depth, nodes after alias expansion): a
first pass over the parser's events counts them without building anything, so a
deeply nested file cannot exhaust the stack and an alias bomb cannot exhaust time or
memory. Numbers must be finite (`.nan`, `.inf` and overflowing literals are refused).
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..contracts import PathPart, format_field
from .errors import Problem
from .limits import RULES_LIMITS, YamlLimits

# libyaml when available: the event pass and composition in C (a 1 MiB plan in about a
# second instead of ten); the constructor is PyYAML's safe one either way.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class YamlLimitError(Exception):
    """A YAML document breaks one of the limits (raised by the event pass)."""

    def __init__(self, message: str, line: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class YamlDocument:
    path: Path
    label: str  # how messages name the file
    data: Any
    root: Optional[yaml.Node]

    def line_of(self, parts: Sequence[PathPart]) -> Optional[int]:
        """1-based line of the deepest node on `parts` that exists (the key's line for mappings)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in parts:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        line = key_node.start_mark.line + 1
                        node = value_node
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _line(event: Any) -> Optional[int]:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def check_yaml_limits(text: Union[str, bytes], limits: YamlLimits) -> None:
    """Walk the parser's events once: nesting depth and node count with every alias expanded.

    Raises YamlLimitError on the first limit broken (or on an alias that refers to
    the collection it sits in), yaml.YAMLError on invalid YAML. Nothing is built."""
    loader = _Loader(text)
    try:
        # One entry per open collection: [anchor, node count at its start, height below it].
        stack: list[list[Any]] = []
        sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of the finished subtree
        open_anchors: set[str] = set()
        nodes = 0

        def grow(count: int, height: int, event: Any) -> None:
            nonlocal nodes
            nodes += count
            if nodes > limits.max_nodes:
                raise YamlLimitError(f"the {limits.kind} expands to more than {limits.max_nodes:,} YAML nodes "
                                     f"(aliases counted each time they are used)", _line(event))
            depth = len(stack) + height
            if depth > limits.max_depth:
                raise YamlLimitError(f"the {limits.kind} nests deeper than {limits.max_depth} levels", _line(event))
            for index, entry in enumerate(stack):
                relative = depth - index - 1
                if relative > entry[2]:
                    entry[2] = relative

        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in open_anchors:
                    raise YamlLimitError(f"alias *{event.anchor} refers to the collection it is part of "
                                         "(a recursive structure)", _line(event))
                count, height = sizes.get(event.anchor, (1, 0))
                grow(count, height, event)
            elif isinstance(event, yaml.ScalarEvent):
                grow(1, 0, event)
                if event.anchor is not None:
                    sizes[event.anchor] = (1, 0)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                grow(1, 0, event)
                stack.append([event.anchor, nodes, 0])
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                if len(stack) > limits.max_depth:
                    raise YamlLimitError(f"the {limits.kind} nests deeper than {limits.max_depth} levels",
                                         _line(event))
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, start, height = stack.pop()
                if anchor is not None:
                    open_anchors.discard(anchor)
                    sizes[anchor] = (nodes - start + 1, height + 1)
    finally:
        loader.dispose()


def _duplicate_keys(node: Optional[yaml.Node], label: str, trail: list[PathPart], seen_nodes: set[int]) -> list[Problem]:
    """Keys given twice in one mapping; a subtree reached again through an alias is checked once."""
    problems: list[Problem] = []
    if node is None or id(node) in seen_nodes:
        return problems
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                problems.append(Problem(label, f"duplicate key {key!r} (first at line {seen[key]})",
                                        line=key_node.start_mark.line + 1, field=format_field(trail + [key])))
            elif key is not None:
                seen[key] = key_node.start_mark.line + 1
            problems += _duplicate_keys(value_node, label, trail + [key if key is not None else "?"], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, label, trail + [index], seen_nodes)
    return problems


def _non_finite(node: Optional[yaml.Node], loader: Any, label: str, trail: list[PathPart],
                seen_nodes: set[int]) -> list[Problem]:
    """Float scalars that are not finite numbers (.nan, .inf, 1e999)."""
    problems: list[Problem] = []
    if node is None or id(node) in seen_nodes:
        return problems
    seen_nodes.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _FLOAT_TAG:
            try:
                value = loader.construct_yaml_float(node)
            except (ValueError, OverflowError):
                value = math.nan
            if not math.isfinite(value):
                problems.append(Problem(label, f"{node.value!r} is not a finite number; numbers must be finite "
                                        "(no .nan or .inf)", line=node.start_mark.line + 1,
                                        field=format_field(trail) or None))
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            problems += _non_finite(key_node, loader, label, trail + [key], seen_nodes)
            problems += _non_finite(value_node, loader, label, trail + [key], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _non_finite(item, loader, label, trail + [index], seen_nodes)
    return problems


def read_bounded(path: Path, limits: YamlLimits, label: str) -> tuple[Optional[bytes], list[Problem]]:
    """The bytes of a regular file no larger than the limit (links followed: callers that
    forbid links check for them first); otherwise a problem naming the file."""
    try:
        info = os.stat(path)
    except OSError as error:
        return None, [Problem(label, f"cannot read file ({error.strerror or error})")]
    if not stat.S_ISREG(info.st_mode):
        return None, [Problem(label, "not a regular file")]
    if info.st_size > limits.max_bytes:
        return None, [Problem(label, f"the {limits.kind} is {info.st_size:,} bytes; the limit is "
                                     f"{limits.max_bytes:,} bytes (see docs/limits.md)")]
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except OSError as error:
        return None, [Problem(label, f"cannot read file ({error.strerror or error})")]
    if len(raw) > limits.max_bytes:
        return None, [Problem(label, f"the {limits.kind} is over {limits.max_bytes:,} bytes (it grew while "
                                     "being read); see docs/limits.md")]
    return raw, []


def parse_yaml_text(raw: bytes, label: str, limits: YamlLimits, path: Optional[Path] = None
                    ) -> tuple[Optional[YamlDocument], list[Problem]]:
    """Parse bytes already read (UTF-8) under `limits`. Returns (document, problems)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, [Problem(label, f"not UTF-8 text ({error.reason} at byte {error.start})")]
    try:
        check_yaml_limits(text, limits)
    except YamlLimitError as error:
        return None, [Problem(label, error.message + "; see docs/limits.md", line=error.line)]
    except yaml.YAMLError as error:
        return None, [_yaml_problem(error, label)]
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        non_finite = _non_finite(root, loader, label, [], set())
        if non_finite:
            return None, non_finite
        problems = _duplicate_keys(root, label, [], set())
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        return None, [_yaml_problem(error, label)]
    except (ValueError, OverflowError, TypeError, RecursionError) as error:
        # The safe constructor's own failures: a 5,000-digit integer, a date like 2020-13-45.
        return None, [Problem(label, f"invalid value: {str(error).splitlines()[0] if str(error) else type(error).__name__}")]
    finally:
        loader.dispose()
    return YamlDocument(Path(path) if path is not None else Path(label), label, data, root), problems


def _yaml_problem(error: yaml.YAMLError, label: str) -> Problem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    message = f"invalid YAML: {reason}" + (f" ({context})" if context else "")
    return Problem(label, message, line=mark.line + 1 if mark else None)


def load_yaml(path: Path, label: Optional[str] = None, *, limits: YamlLimits = RULES_LIMITS
              ) -> tuple[Optional[YamlDocument], list[Problem]]:
    """Parse one file under `limits`. Returns (document, problems); document is None when it
    cannot be parsed or breaks a limit."""
    label = label or str(path)
    raw, problems = read_bounded(Path(path), limits, label)
    if raw is None:
        return None, problems
    return parse_yaml_text(raw, label, limits, Path(path))
