"""Gene reports as table rows: decode only the keys some fields need, pull each field's values.

``GeneDecoder`` builds msgspec Struct types holding exactly the keys the chosen fields'
paths name, so a line of NDJSON is scanned once and only those values become Python
objects (a COMPLETE report is 1-8 KB; ten fields are a few dozen bytes of it). A line
whose shape the Structs refuse (a value of another JSON type than NCBI's schema says) is
decoded in full instead: ``values`` walks Structs and dicts alike, so the result is the
same. ``cell_text`` is how a TSV cell shows the values, for the emulator and for export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import orjson

from bulkgene.ncbi.fields import GeneField

Node = Any  # a decoded Struct, a dict, a list or a JSON scalar


def _walk(node: Node, segments: tuple[tuple[str, bool], ...], start: int, out: list[Any]) -> None:
    for position in range(start, len(segments)):
        if node is None:
            return
        key, many = segments[position]
        node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
        if many:
            if isinstance(node, list):
                for item in node:
                    _walk(item, segments, position + 1, out)
            return
    if node is not None:
        out.append(node)


def values(node: Node, segments: tuple[tuple[str, bool], ...]) -> list[Any]:
    """The values at ``segments`` under ``node`` (a gene, or an item of one of its lists)."""
    out: list[Any] = []
    _walk(node, segments, 0, out)
    return out


def items(node: Node, segments: tuple[tuple[str, bool], ...]) -> Iterator[tuple[Node, ...]]:
    """Each item of the innermost list of ``segments`` (which ends with a list key), with the
    items of the enclosing lists it lies in: the rows ``--explode`` makes."""
    def descend(current: Node, start: int, chain: tuple[Node, ...]) -> Iterator[tuple[Node, ...]]:
        for position in range(start, len(segments)):
            if current is None:
                return
            key, many = segments[position]
            current = (current.get(key) if isinstance(current, dict)
                       else getattr(current, key, None))
            if many:
                for item in current if isinstance(current, list) else ():
                    yield from descend(item, position + 1, (*chain, item))
                return
        yield chain
    yield from descend(node, 0, ())


def cell(node: Node, item: GeneField) -> Any:
    """``item``'s cell for the gene ``node``: its values as a list for a list field, else the
    one value (None when absent)."""
    found = values(node, item.segments)
    if item.is_list:
        return found
    return found[0] if found else None


def getter(item: GeneField) -> Callable[[Node], Any]:
    """``cell`` for ``item``, fast on the Structs ``GeneDecoder`` makes (attribute lookups
    instead of a path walk); a gene decoded whole (a dict) takes the walk."""
    segments = item.segments
    keys = [key for key, _ in segments]
    plain = not item.is_list
    leaf_list = item.is_list and not any(many for _, many in segments[:-1])

    def slow(node: Node) -> Any:
        return cell(node, item)

    if not (plain or leaf_list):
        return slow
    if len(keys) == 1:
        key = keys[0]
        if plain:
            def one(node: Node) -> Any:
                if isinstance(node, dict):
                    return node.get(key)
                return getattr(node, key, None)
            return one

        def many(node: Node) -> Any:
            if isinstance(node, dict):
                return slow(node)
            found = getattr(node, key, None)
            return [] if found is None else found
        return many

    def chain(node: Node) -> Any:
        if isinstance(node, dict):
            return slow(node)
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
            if node is None:
                return [] if leaf_list else None
        return node
    return chain


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value, default=msgspec.to_builtins).decode()


def cell_text(value: Any, separator: str) -> str:
    """A TSV cell: the value (or a list's values joined by ``separator``) as text; tabs and
    line breaks become spaces, so that a cell never splits a row."""
    if value is None:
        return ""
    if type(value) is str:
        text = value
    elif isinstance(value, list):
        text = separator.join(map(_scalar_text, value))
    else:
        text = _scalar_text(value)
    if "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    return text


def _trie(fields: list[GeneField]) -> dict[str, Any]:
    """The keys the fields' paths name, as nested dicts: key -> (holds a list, children)."""
    root: dict[str, Any] = {}
    for item in fields:
        level = root
        segments = item.segments
        for position, (key, many) in enumerate(segments):
            leaf = position == len(segments) - 1
            entry = level.get(key)
            if entry is None:
                entry = level[key] = [many, None if leaf else {}]
            elif leaf or entry[1] is None:
                entry[1] = None  # wanted whole (as a leaf) by some field: decode it all
            if leaf or entry[1] is None:
                break
            level = entry[1]
    return root


def _struct_type(name: str, trie: dict[str, Any]) -> type[msgspec.Struct]:
    members: list[tuple[str, Any, Any]] = []
    for position, (key, (many, children)) in enumerate(sorted(trie.items())):
        kind: Any = Any if children is None else _struct_type(f"{name}_{position}", children)
        if many:
            kind = list[kind]
        members.append((key, kind | None if kind is not Any else Any, None))
    return msgspec.defstruct(name, members)


class GeneDecoder:
    """Decodes NDJSON lines (report matches or bare genes) into just what ``fields`` need."""

    def __init__(self, fields: list[GeneField], gene_only: bool) -> None:
        self.gene_only = gene_only
        gene_type = _struct_type("Gene", _trie(fields))
        wrapper = gene_type if gene_only else msgspec.defstruct(
            "Report", [("gene", gene_type | None, None)])
        self._decoder = msgspec.json.Decoder(wrapper)
        self._unwrap: Callable[[Any], Node] = ((lambda line: line) if gene_only
                                               else (lambda line: line.gene))

    def decode(self, line: bytes) -> Node:
        """The gene of one line, or None for a line without one (a query-only match)."""
        try:
            return self._unwrap(self._decoder.decode(line))
        except msgspec.ValidationError:
            whole = orjson.loads(line)
            return whole if self.gene_only else whole.get("gene")

    def decode_lines(self, block: bytes) -> list[Node]:
        """The genes of a block of whole lines; each line in full where its shape is odd."""
        try:
            return [self._unwrap(line) for line in self._decoder.decode_lines(block)]
        except msgspec.ValidationError:
            return [self.decode(line) for line in block.splitlines() if line.strip()]
