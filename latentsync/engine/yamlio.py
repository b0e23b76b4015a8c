"""YAML in, with line numbers kept: errors can point at the line of the field at fault.

`yaml.safe_load` forgets where things were; composing the node tree first keeps the
marks, and the same tree is then constructed with the safe constructor. PyYAML
silently keeps the last of two equal keys; here that is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ..contracts import PathPart, format_field
from .errors import Problem


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


def _duplicate_keys(node: Optional[yaml.Node], label: str, trail: list[PathPart]) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                problems.append(Problem(label, f"duplicate key {key!r} (first at line {seen[key]})",
                                        line=key_node.start_mark.line + 1, field=format_field(trail + [key])))
            elif key is not None:
                seen[key] = key_node.start_mark.line + 1
            problems += _duplicate_keys(value_node, label, trail + [key if key is not None else "?"])
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, label, trail + [index])
    return problems


def load_yaml(path: Path, label: Optional[str] = None) -> tuple[Optional[YamlDocument], list[Problem]]:
    """Parse one file. Returns (document, problems); document is None when it cannot be parsed."""
    label = label or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(label, f"cannot read file ({error})")]
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        problems = _duplicate_keys(root, label, [])
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        context = getattr(error, "context", None)
        message = f"invalid YAML: {reason}" + (f" ({context})" if context else "")
        return None, [Problem(label, message, line=mark.line + 1 if mark else None)]
    finally:
        loader.dispose()
    return YamlDocument(Path(path), label, data, root), problems
