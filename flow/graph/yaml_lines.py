"""YAML read with the source line of every mapping key and sequence item (1-based), so that every
`ConfigError` of a pipeline file can name its line; `plain` turns the line-carrying containers back
into dict and list.
"""

from __future__ import annotations

from typing import Any

import yaml


class Map(dict):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int = 1
    key_lines: dict
    duplicates: list


class Seq(list):
    """A YAML sequence that remembers its own line and the line of each item."""

    line: int = 1
    item_lines: list


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry source lines (1-based)."""


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> Map:
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # merged (<<: *anchor) pairs come first; own keys override them
    merged = len(node.value) - own
    out = Map()
    out.line, out.key_lines, out.duplicates = node.start_mark.line + 1, {}, []
    own_keys: set = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            )
        line = key_node.start_mark.line + 1
        if index >= merged:
            if key in own_keys:
                out.duplicates.append((key, line, out.key_lines[key]))
            own_keys.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> Seq:
    out = Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def plain(value: Any) -> Any:
    """Loaded YAML with the line-carrying containers turned back into dict and list."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
