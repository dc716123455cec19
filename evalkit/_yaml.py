"""YAML loading that remembers the line of every mapping key and sequence item.

pydantic reports errors by field path (e.g. ``candidates.base.model``); ``LineMap`` turns such a
path back into the line of the YAML file the user has to edit.

Suite and golden files may come from a pull request, so loading is linear in the file: the text
is parsed once, and aliases may add at most ``MAX_ALIAS_NODES`` nodes beyond the file's own (a
"billion laughs" bomb of 322 bytes would otherwise expand to gigabytes in every later step that
walks the data). Merge keys (``<<: *defaults``) work; a UTF-8 byte-order mark is skipped, as in
the JSONL and CSV readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import SpecError

PathKey = tuple[str | int, ...]

MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may add beyond the nodes written in the file."""
MERGE_TAG = "tag:yaml.org,2002:merge"


class LineMap:
    """Field path -> 1-based line number, filled while composing the YAML node tree."""

    def __init__(self) -> None:
        self._lines: dict[PathKey, int] = {}

    def add(self, path: PathKey, line: int) -> None:
        self._lines.setdefault(path, line)

    def line_of(self, path: PathKey) -> int | None:
        """Line of the deepest known prefix of ``path`` (the field itself, or its parent)."""
        for end in range(len(path), -1, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _walk(root: yaml.Node, lines: LineMap) -> None:
    # Iterative: nesting is bounded by the parser's recursion, not by this walk.
    stack: list[tuple[yaml.Node, PathKey]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.add(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (
                    key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                )
                lines.add((*path, key), key_node.start_mark.line + 1)
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, index)) for index, item in enumerate(node.value))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose aliases expand it by more than MAX_ALIAS_NODES nodes.

    Sizes are memoised per node object, so this costs one visit per distinct node however
    often aliases repeat it; an alias to a node still being composed is a recursive structure.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if id(node) in size:
            continue
        if id(node) in open_nodes:
            raise SpecError(
                "a YAML alias refers to a node that contains it (a recursive structure); "
                "write the data out instead",
                path=path,
                line=node.start_mark.line + 1,
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_NODES:
        raise SpecError(
            f"YAML aliases (*name) expand this file by {added:,} nodes, over the limit of "
            f"{MAX_ALIAS_NODES:,} (an alias bomb?); write the repeated data out or use fewer "
            "aliases",
            path=path,
        )


MAX_DEPTH = 100
"""Nesting levels a document may have (the composer recurses once per level)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last,
    and documents nested deeper than MAX_DEPTH (before Python's recursion limit is reached)."""

    _depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner keeps a pending simple key per open bracket and rescans them all on every
        # token: 5,000 nested '[' take 45 s in PyYAML. Stop at the depth the composer allows.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels; flatten the data",
                self.get_mark(),  # type: ignore[no-untyped-call]
            )  # fmt: skip
        super().fetch_flow_collection_start(token_class)  # type: ignore[misc]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels; flatten the data",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )  # fmt: skip
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    # Explicit keys must be unique; keys brought in by a merge key (<<) may be overridden.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping names it below
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=deep)


def _construct_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)  # type: ignore[no-untyped-call,no-any-return]
    except ValueError:  # over Python's 4,300-digit conversion limit
        raise yaml.constructor.ConstructorError(
            None, None, f"the number {str(node.value)[:20]}... is too long; quote it as a string",
            node.start_mark,
        ) from None  # fmt: skip


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)  # type: ignore[arg-type]


def read_text(path: Path) -> str:
    """The file as text, or a SpecError naming the line of the first byte that is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read file ({exc.strerror})", path=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            path=path,
            line=raw.count(b"\n", 0, exc.start) + 1,
        ) from None


def load_yaml(path: Path) -> tuple[Any, LineMap]:
    """Parse a YAML file into Python data plus a LineMap; syntax errors become SpecError."""
    text = read_text(path)
    lines = LineMap()
    loader: _UniqueKeyLoader | None = None
    try:
        loader = _UniqueKeyLoader(text)
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        if node is None:
            return None, lines
        _check_expansion(node, path)
        _walk(node, lines)
        data = loader.construct_document(node)  # type: ignore[no-untyped-call]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise SpecError(f"invalid YAML: {problem}", path=path, line=line) from None
    except yaml.YAMLError as exc:  # a reader error (a control character), unmarked
        raise SpecError(f"invalid YAML: {exc}", path=path) from None
    except RecursionError:
        raise SpecError("the YAML nests too deeply to read; flatten the data", path=path) from None
    finally:
        if loader is not None:
            loader.dispose()  # type: ignore[no-untyped-call]
    return data, lines
