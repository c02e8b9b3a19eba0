"""Reading yaml configs: ``yaml.safe_load`` that refuses a key written twice.

PyYAML keeps the last of two equal keys in a mapping and says nothing, so a config
with ``lr: 0.01`` near the top and ``lr: 0.1`` further down trains with 0.1 while
its reader sees 0.01. :func:`safe_load` reads the same documents as
``yaml.safe_load`` but raises :class:`DuplicateKeyError` naming the key's full
path and both lines. Keys brought in by a merge (``<<: *base``) may be overridden
by an explicit key, as the YAML merge-key rules say; only keys written out twice in
one mapping are refused. Every config reader of pyspk goes through here.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError, ValueError):
    """A mapping of a yaml document holds the same key twice (a ValueError too, so the tools
    that report a bad config's ValueError in one line report this one alike)."""


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that checks every mapping for repeated keys before building it."""

    def construct_document(self, node):
        self._check_duplicates(node, "", set())
        return super().construct_document(node)

    def _check_duplicates(self, node, path: str, seen: set) -> None:
        if id(node) in seen:  # an alias: its anchor was checked where it was defined
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self._check_duplicates(value_node, path, seen)
                    continue
                key = self._key(key_node)
                where = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key is not None and key in lines:
                    name = key_node.start_mark.name
                    source = "" if name.startswith("<") else f"{name}: "
                    raise DuplicateKeyError(
                        f"{source}key '{where}' appears twice, on line {lines[key]} and on "
                        f"line {line} (yaml would silently keep the second); delete one"
                    )
                if key is not None:
                    lines[key] = line
                self._check_duplicates(value_node, where, seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_duplicates(item, f"{path}[{i}]", seen)

    def _key(self, key_node) -> Any:
        """The key as yaml would build it (``1`` and ``01`` are the same int); None for a
        key that is itself a mapping or sequence (not checked)."""
        if not isinstance(key_node, yaml.ScalarNode):
            return None
        try:
            key = self.construct_object(key_node, deep=True)
            hash(key)
            return key
        except Exception:  # an unhashable or bad key: the constructor reports it
            return None


def safe_load(stream) -> Any:
    """``yaml.safe_load(stream)``, with :class:`DuplicateKeyError` for a key written twice."""
    loader = StrictSafeLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
